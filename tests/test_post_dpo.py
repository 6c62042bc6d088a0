"""DPO plumbing: completion-only log-probs and precomputed reference log-probs match the plain paths."""

import random

import pytest
import torch
import transformers
from tiny import tiny_llama_config

from llmlab.errors import LlmlabError
from llmlab.models.llama import model_from_hf
from llmlab.nn.lora import add_lora
from llmlab.posttrain.data import Pair, dpo_collate, precompute_reference_logps
from llmlab.train.config import TrainerConfig
from llmlab.train.losses import token_logps
from llmlab.train.objectives.dpo import DPOObjective
from llmlab.train.objectives.reference import Reference, completion_logps
from llmlab.train.sft_data import ShuffledBatches
from llmlab.train.shared_prefix import shared_prefix_logps, supports_shared_prefix
from llmlab.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_pair(seed=0):
    torch.manual_seed(seed)
    config = tiny_llama_config()
    reference = transformers.LlamaForCausalLM(config).eval()
    return reference, model_from_hf(
        config.to_dict(), {k: v.clone() for k, v in reference.state_dict().items()}
    )


def random_pairs(n, seed=0):
    rng = random.Random(seed)
    draw = lambda k: [rng.randrange(3, 320) for _ in range(k)]  # noqa: E731
    return [
        Pair(draw(rng.randint(3, 9)), draw(rng.randint(2, 7)), draw(rng.randint(2, 7)))
        for _ in range(n)
    ]


def test_completion_logps_equals_the_full_logits_sum():
    hf, ours = tiny_pair()
    batch = dpo_collate(random_pairs(5), pad_id=0)
    ids, mask = batch["input_ids"], batch["completion_mask"]
    with torch.no_grad():
        plain = (token_logps(hf(ids[:, :-1]).logits, ids[:, 1:]) * mask[:, 1:]).sum(-1)
        fast = completion_logps(ours, ids, mask)  # only completion positions reach the LM head
        fallback = completion_logps(hf, ids, mask)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fallback, plain, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("lora", [False, True])
def test_precomputed_reference_gives_the_same_training_as_on_the_fly(lora):
    def run(precompute):
        _, model = tiny_pair()
        if lora:
            add_lora(model, r=4, alpha=8)
        pairs = random_pairs(12, seed=1)
        reference = Reference(model)
        if precompute:
            precompute_reference_logps(
                reference, pairs, pad_id=0, batch_size=5
            )  # other padding than training
            reference = None
        source = ShuffledBatches(pairs, 4, lambda rows: dpo_collate(rows, 0), seed=3)
        c = TrainerConfig(run_dir="")
        c.train.steps, c.train.device, c.train.progress, c.diagnostics.every = 4, "cpu", False, 0
        c.optim.lr = 1e-2
        trainer = Trainer(model, DPOObjective(reference, beta=0.1), source, c)
        trainer.fit()
        if precompute:
            assert "ref_logps" in dpo_collate(pairs[:2], 0)
        return [r["loss"] for r in trainer.history], [r["rewards/margins"] for r in trainer.history]

    losses, margins = run(False)
    pre_losses, pre_margins = run(True)
    assert (
        losses[-1] < losses[0]
    )  # the run learns, so equal histories mean equal updates, not a no-op
    assert pre_losses == pytest.approx(losses, abs=1e-5)
    assert pre_margins == pytest.approx(margins, abs=1e-5)


def test_objective_without_reference_or_precomputed_logps_fails():
    _, model = tiny_pair()
    with pytest.raises(LlmlabError, match="ref_logps"):
        DPOObjective(None)(model, dpo_collate(random_pairs(2), 0))


@pytest.mark.parametrize("lora", [False, True])
def test_prefix_shared_forward_matches_the_plain_forward_values_and_gradients(lora):
    _, model = tiny_pair()
    if lora:
        add_lora(model, r=4, alpha=8)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.1)
    batch = dpo_collate(random_pairs(6, seed=2), pad_id=0)
    assert supports_shared_prefix(model, batch)
    shared = shared_prefix_logps(model, batch)
    plain = completion_logps(model, batch["input_ids"], batch["completion_mask"])
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    weights = [p for p in model.parameters() if p.requires_grad]
    grads_shared = torch.autograd.grad(shared.sum(), weights)
    grads_plain = torch.autograd.grad(plain.sum(), weights)
    for a, b in zip(grads_shared, grads_plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
