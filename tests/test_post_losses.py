"""Post-training losses against TRL's own loss code on the same tensors, plus GAE/GRPO by hand.

TRL's losses live inside its trainers' compute_loss methods; we call those methods on a stand-in
`self` (a namespace with the attributes they read) and a stand-in model that returns fixed outputs,
so TRL's exact code runs on exactly our tensors.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl.trainer.dpo_trainer import DPOTrainer
from trl.trainer.reward_trainer import RewardTrainer

from llmlab.train.losses import (
    clipped_policy_loss,
    clipped_value_loss,
    dpo_loss,
    dpo_metrics,
    gae,
    grpo_advantages,
    kl_estimate,
    reward_loss,
    token_logps,
    whiten,
)


class IdentityAccelerator:
    device = torch.device("cpu")

    def gather(self, x):
        return x

    gather_for_metrics = gather


def fake_trainer(**attrs):
    base = dict(
        model=SimpleNamespace(training=True),
        accelerator=IdentityAccelerator(),
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
        aux_loss_enabled=False,
    )
    base.update(attrs)
    return SimpleNamespace(**base)


def trl_dpo(per_token_policy, per_token_ref, completion_mask, beta, loss_type):
    """TRL's DPOTrainer._compute_loss on given per-token log-probs (batch = [chosen; rejected])."""
    batch, length = completion_mask.shape
    ref_logps = per_token_ref.sum(1)
    trainer = fake_trainer(
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        use_weighting=False,
        label_smoothing=0.0,
        ref_model=None,
        args=SimpleNamespace(gradient_checkpointing_kwargs=None),
    )

    def model(**kwargs):
        shape = (batch, length - 1)
        return SimpleNamespace(
            log_probs=per_token_policy,
            entropy=torch.zeros(shape),
            mean_logits=torch.zeros(shape),
            is_top1=torch.zeros(shape, dtype=torch.bool),
        )

    half = batch // 2
    inputs = {
        "input_ids": torch.zeros(batch, length, dtype=torch.long),
        "attention_mask": torch.ones(batch, length),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_logps[:half],
        "ref_rejected_logps": ref_logps[half:],
    }
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, {k: v[0] for k, v in trainer._metrics["train"].items()}


def random_pairs(seed, pairs=6, length=9):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(2 * pairs, length, generator=g) > 0.3).long()
    mask[:, 0] = 0  # the first token is prompt
    mask[:, 1] = 1
    shift = mask[:, 1:].double()
    policy = -torch.rand(2 * pairs, length - 1, generator=g, dtype=torch.float64) * 3 * shift
    ref = -torch.rand(2 * pairs, length - 1, generator=g, dtype=torch.float64) * 3 * shift
    return policy, ref, mask


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_sigmoid_loss_and_metrics_match_trl(beta):
    policy, ref, mask = random_pairs(0)
    expected, metrics = trl_dpo(policy, ref, mask, beta, "sigmoid")
    pc, pr = policy.sum(1).chunk(2)
    rc, rr = ref.sum(1).chunk(2)
    ours = dpo_loss(pc, pr, rc, rr, beta)
    assert abs(float(ours) - float(expected)) < 1e-6
    for key, value in dpo_metrics(pc, pr, rc, rr, beta).items():
        assert abs(value - metrics[key]) < 1e-6, key


def test_ipo_loss_matches_trl():
    policy, ref, mask = random_pairs(1)
    expected, _ = trl_dpo(policy, ref, mask, 0.3, "ipo")
    pc, pr = policy.sum(1).chunk(2)
    rc, rr = ref.sum(1).chunk(2)
    lc, lr = mask[:, 1:].sum(1).chunk(2)
    ours = dpo_loss(pc, pr, rc, rr, 0.3, loss_type="ipo", chosen_lengths=lc, rejected_lengths=lr)
    assert abs(float(ours) - float(expected)) < 1e-6


@pytest.mark.parametrize("with_margin", [False, True])
def test_reward_loss_matches_trl(with_margin):
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(16, 1, generator=g, dtype=torch.float64) * 2
    trainer = fake_trainer(args=SimpleNamespace(center_rewards_coefficient=None))
    inputs = {
        "input_ids": torch.zeros(16, 4, dtype=torch.long),
        "attention_mask": torch.ones(16, 4),
    }
    margin = torch.rand(8, generator=g, dtype=torch.float64) if with_margin else None
    if with_margin:
        inputs["margin"] = margin
    expected = RewardTrainer.compute_loss(
        trainer, lambda **kw: SimpleNamespace(logits=scores), inputs
    )
    chosen, rejected = scores.squeeze(-1).chunk(2)
    assert abs(float(reward_loss(chosen, rejected, margin)) - float(expected)) < 1e-6


def test_token_logps_equals_log_softmax_gather():
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    expected = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(token_logps(logits, targets), expected)


def test_gae_matches_a_direct_sum():
    g = torch.Generator().manual_seed(3)
    rewards, values = torch.randn(2, 6, generator=g), torch.randn(2, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    for row in range(2):
        n = int(mask[row].sum())
        v = torch.cat([values[row, :n], torch.zeros(1)])
        deltas = [rewards[row, t] + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            expected = sum((gamma * lam) ** (k - t) * deltas[k] for k in range(t, n))
            assert abs(float(advantages[row, t] - expected)) < 1e-5
        assert torch.all(advantages[row, n:] == 0)
    torch.testing.assert_close(returns * mask, (advantages + values) * mask)


def test_grpo_advantages_are_group_normalised():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv = grpo_advantages(rewards, group_size=4)
    g0 = rewards[:4]
    torch.testing.assert_close(adv[:4], (g0 - g0.mean()) / (g0.std() + 1e-4))
    assert torch.all(adv[4:] == 0)  # a group where all answers score the same teaches nothing


def test_clipped_losses_kl_and_whiten():
    logps = torch.tensor([[0.0, -1.0, -2.0]])
    old = torch.tensor([[-0.5, -1.0, -1.0]])  # ratios e^0.5 ≈ 1.65, 1, e^-1 ≈ 0.37
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    mask = torch.ones(1, 3)
    loss, clipfrac = clipped_policy_loss(logps, old, adv, mask, clip=0.2)
    # token 0: min(1.65, 1.2)=1.2 ; token 1: 1 ; token 2: min(-0.37, -0.8) = -0.8
    assert (
        abs(float(loss) - (-(1.2 + 1.0 - 0.8) / 3)) < 1e-5 and abs(float(clipfrac) - 2 / 3) < 1e-6
    )
    v_loss = clipped_value_loss(
        torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]), torch.ones(1, 1), 0.2
    )
    assert abs(float(v_loss) - 0.5 * max(1.0, 1.8**2)) < 1e-6
    lp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    torch.testing.assert_close(kl_estimate(lp, ref, "k1"), lp - ref)
    k3 = kl_estimate(lp, ref, "k3")
    assert torch.all(k3 >= 0)
    w = whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1, 1, 1, 0]]))
    assert abs(float(w[0, :3].mean())) < 1e-6 and float(w[0, 3]) == 0
