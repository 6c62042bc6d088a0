"""BERT objectives: masked LM + next-sentence prediction, and sequence classification.

MLM (Devlin et al.): pick 15% of the non-special tokens; of those, 80% become [MASK], 10% a random
token, 10% stay as they are; the loss is cross-entropy on the picked positions only. Masks are
drawn fresh each step (dynamic masking) from the torch RNG, which checkpoints restore.
NSP: the pooled [CLS] says whether segment B really followed A (label 0, HF's convention) or is a
random sentence from elsewhere (label 1); pairs are built 50/50 in train/bert.py.

Batches: input_ids, attention_mask, token_type_ids [batch, seq]; nsp_labels [batch] (MLM+NSP) or
labels [batch] (classification).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
):
    """Return (masked input_ids, labels); labels are IGNORE except at the picked positions."""
    picked = (
        torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < probability
    ) & ~special_mask
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, IGNORE))
    roll = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    to_mask = picked & (roll < 0.8)
    to_random = picked & (roll >= 0.8) & (roll < 0.9)
    random_tokens = torch.randint(
        vocab_size, input_ids.shape, generator=generator, device=input_ids.device
    )
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_tokens, masked)
    return masked, labels


class MlmNspObjective:
    def __init__(
        self, mask_id: int, vocab_size: int, special_ids: list[int], probability: float = 0.15
    ):
        self.mask_id, self.vocab_size, self.probability = mask_id, vocab_size, probability
        self.special_ids = torch.tensor(sorted(set(special_ids)))

    def __call__(self, model, batch: dict):
        ids = batch["input_ids"]
        special = torch.isin(ids, self.special_ids.to(ids.device))
        masked, labels = mask_tokens(ids, special, self.mask_id, self.vocab_size, self.probability)
        mlm_logits, nsp_logits = model(masked, batch["attention_mask"], batch["token_type_ids"])
        mlm_loss = F.cross_entropy(
            mlm_logits.float().reshape(-1, mlm_logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=IGNORE,
        )
        nsp_loss = F.cross_entropy(nsp_logits.float(), batch["nsp_labels"])
        picked = labels != IGNORE
        metrics = {
            "mlm_loss": float(mlm_loss.detach()),
            "nsp_loss": float(nsp_loss.detach()),
            "mlm_acc": float((mlm_logits.argmax(-1)[picked] == labels[picked]).float().mean())
            if picked.any()
            else 0.0,
            "nsp_acc": float((nsp_logits.argmax(-1) == batch["nsp_labels"]).float().mean()),
            "tokens": int(batch["attention_mask"].sum()),
        }
        return mlm_loss + nsp_loss, metrics


class SequenceClassificationObjective:
    def __call__(self, model, batch: dict):
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        loss = F.cross_entropy(logits.float(), batch["labels"])
        accuracy = float((logits.argmax(-1) == batch["labels"]).float().mean())
        return loss, {"accuracy": accuracy, "tokens": int(batch["attention_mask"].sum())}
