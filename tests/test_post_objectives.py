"""Each post-training objective moves its metric the right way on a tiny model and a held-out synthetic task.

Token ids 4..33 are "good" and 34..63 "bad": reward models must prefer mostly-good sequences, DPO
prefers good completions, and GRPO/PPO are rewarded for the share of good tokens they sample.
"""

import pytest
import torch

from llmlab.models.llama import LlamaConfig, LlamaForCausalLM
from llmlab.nn.lora import add_lora
from llmlab.posttrain.heads import PolicyWithValue, RewardModel
from llmlab.posttrain.rollout import RolloutSource, collect
from llmlab.train.config import TrainerConfig
from llmlab.train.objectives.dpo import DPOObjective
from llmlab.train.objectives.grpo import GRPOObjective, prepare_grpo
from llmlab.train.objectives.ppo import PPOObjective, prepare_ppo
from llmlab.train.objectives.reference import Reference
from llmlab.train.objectives.reward import RewardObjective
from llmlab.train.trainer import Trainer

GOOD, BAD = (4, 34), (34, 64)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    )


def config(steps, lr):
    c = TrainerConfig(run_dir="")
    c.train.steps, c.train.device, c.train.progress = steps, "cpu", False
    c.diagnostics.every = 0
    c.optim.lr, c.optim.schedule = lr, "constant"
    return c


class Fixed:
    """A batch source that draws fresh synthetic batches from a function."""

    def __init__(self, make):
        self.make, self.step = make, 0

    def next_batch(self):
        self.step += 1
        return self.make(self.step)

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = state["step"]


def mixed(g, n, length, main, other, share=0.75):
    take_main = torch.rand(n, length, generator=g) < share
    return torch.where(
        take_main,
        torch.randint(*main, (n, length), generator=g),
        torch.randint(*other, (n, length), generator=g),
    )


def reward_batch(seed, pairs=16):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 13, (2, pairs), generator=g)
    return {
        "chosen_ids": mixed(g, pairs, 12, GOOD, BAD),
        "rejected_ids": mixed(g, pairs, 12, BAD, GOOD),
        "chosen_lengths": lengths[0],
        "rejected_lengths": lengths[1],
    }


def test_reward_model_reaches_high_pairwise_accuracy_on_held_out_pairs():
    model = RewardModel(tiny_model())
    held_out = reward_batch(10_000, pairs=200)
    trainer = Trainer(model, RewardObjective(), Fixed(reward_batch), config(steps=60, lr=3e-3))
    trainer.fit()
    model.eval()
    with torch.no_grad():
        _, metrics = RewardObjective()(model, held_out)
    assert metrics["accuracy"] > 0.9, metrics


def dpo_batch(seed, pairs=8):
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(4, 64, (pairs, 4), generator=g)
    chosen = torch.cat([prompts, torch.randint(*GOOD, (pairs, 5), generator=g)], 1)
    rejected = torch.cat([prompts, torch.randint(*BAD, (pairs, 5), generator=g)], 1)
    mask = torch.zeros(2 * pairs, 9, dtype=torch.long)
    mask[:, 4:] = 1
    return {"input_ids": torch.cat([chosen, rejected]), "completion_mask": mask}


def test_dpo_with_lora_raises_the_held_out_margin():
    model = add_lora(tiny_model(), r=8, alpha=16, target_modules="all-linear")
    objective = DPOObjective(Reference(model), beta=0.5)
    held_out = dpo_batch(10_000, pairs=64)
    with torch.no_grad():
        _, before = objective(model, held_out)
    Trainer(model, objective, Fixed(dpo_batch), config(steps=40, lr=2e-2)).fit()
    with torch.no_grad():
        _, after = objective(model, held_out)
    assert abs(before["rewards/margins"]) < 1e-6  # the policy starts as its own reference
    assert after["rewards/margins"] > 0.3 and after["rewards/accuracies"] > 0.9, after


def good_share(text, ids, prompt):
    return sum(GOOD[0] <= t < GOOD[1] for t in ids) / max(len(ids), 1)


def prompts(seed, n):
    g = torch.Generator().manual_seed(seed)
    return [{"prompt_ids": torch.randint(4, 64, (4,), generator=g).tolist()} for _ in range(n)]


def mean_reward(model, items):
    batch = collect(
        model,
        items,
        good_share,
        group_size=8,
        max_new_tokens=8,
        temperature=1.0,
        eos_id=None,
        pad_id=0,
        generator=torch.Generator().manual_seed(5),
    )
    return float(batch["scores"].mean())


def test_grpo_raises_mean_reward():
    model = tiny_model(1)
    held_out = prompts(10_000, 8)
    before = mean_reward(model, held_out)
    reference = Reference(model)
    source = RolloutSource(
        model,
        prompts(0, 64),
        good_share,
        prepare_grpo(model, reference, 8, kl_beta=0.01),
        prompts_per_step=4,
        group_size=8,
        max_new_tokens=8,
        temperature=1.0,
        eos_id=None,
        pad_id=0,
        reuse=2,
    )
    trainer = Trainer(
        model, GRPOObjective(clip=0.2, kl_beta=0.01), source, config(steps=30, lr=3e-3)
    )
    trainer.fit()
    after = mean_reward(model, held_out)
    assert after > before + 0.2, (before, after)
    assert "kl" in trainer.history[-1] and "policy/clipfrac" in trainer.history[-1]


def test_ppo_raises_mean_reward():
    policy = PolicyWithValue(tiny_model(2))
    held_out = prompts(10_000, 8)
    before = mean_reward(policy.policy, held_out)
    reference = Reference(policy.policy)
    source = RolloutSource(
        policy,
        prompts(1, 64),
        good_share,
        prepare_ppo(policy, reference, kl_coef=0.01, kl_estimator="k3"),
        prompts_per_step=4,
        group_size=8,
        max_new_tokens=8,
        temperature=1.0,
        eos_id=None,
        pad_id=0,
        reuse=2,
        sampler_model=policy.policy,
    )
    trainer = Trainer(policy, PPOObjective(), source, config(steps=30, lr=3e-3))
    trainer.fit()
    after = mean_reward(policy.policy, held_out)
    assert after > before + 0.2, (before, after)
    last = trainer.history[-1]
    assert all(
        k in last
        for k in (
            "objective/kl",
            "objective/scores",
            "policy/clipfrac",
            "loss/policy",
            "loss/value",
        )
    )
