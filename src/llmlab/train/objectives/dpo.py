"""DPO objective: push the policy's log-ratio to the reference up on chosen, down on rejected.

Batch: input_ids / completion_mask [2B, T] — the B chosen rows, then the B rejected rows (prompt +
completion, right-padded; mask 1 on completion tokens). Reference log-probs come from the batch
(`ref_logps` [2B], precomputed once) or, when absent, from the Reference (adapters off or a frozen copy).
"""

from __future__ import annotations

from llmlab.train.losses import dpo_loss, dpo_metrics, token_logps
from llmlab.train.objectives.clm import logits_of


def sequence_logps(per_token, completion_mask):
    return (per_token * completion_mask[:, 1:].to(per_token.dtype)).sum(-1)


class DPOObjective:
    def __init__(self, reference=None, beta: float = 0.1, loss_type: str = "sigmoid"):
        self.reference, self.beta, self.loss_type = reference, beta, loss_type

    def __call__(self, model, batch: dict):
        ids, mask = batch["input_ids"], batch["completion_mask"]
        policy = sequence_logps(token_logps(logits_of(model(ids[:, :-1])), ids[:, 1:]), mask)
        ref = batch.get("ref_logps")
        if ref is None:
            ref = sequence_logps(self.reference.token_logps(ids), mask)
        pc, pr = policy.chunk(2)
        rc, rr = ref.chunk(2)
        lc, lr = mask[:, 1:].sum(-1).chunk(2)
        loss = dpo_loss(pc, pr, rc, rr, self.beta, self.loss_type, lc, lr)
        return loss, {**dpo_metrics(pc, pr, rc, rr, self.beta), "tokens": int(ids.numel())}
