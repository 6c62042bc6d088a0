"""DPO objective: push the policy's log-ratio to the reference up on chosen, down on rejected.

Batch: input_ids / completion_mask [2B, T] — the B chosen rows, then the B rejected rows (prompt +
completion, right-padded; mask 1 on completion tokens), so policy log-probs of both take one
forward pass. Reference log-probs come from the batch (`ref_logps` [2B], precomputed once over the
dataset by `posttrain.data.precompute_reference_logps`) or, when absent, from the Reference (adapters off or a
frozen copy) on the fly.

    precompute_reference_logps(Reference(model), pairs, pad_id)   # fills pair.ref_chosen / ref_rejected
    loss, metrics = DPOObjective(beta=0.1)(model, dpo_collate(pairs[:4], pad_id))
"""

from __future__ import annotations

from llmlab.errors import LlmlabError
from llmlab.train.losses import dpo_loss, dpo_metrics
from llmlab.train.objectives.reference import pair_logps


class DPOObjective:
    def __init__(self, reference=None, beta: float = 0.1, loss_type: str = "sigmoid"):
        self.reference, self.beta, self.loss_type = reference, beta, loss_type

    def __call__(self, model, batch: dict):
        ids, mask = batch["input_ids"], batch["completion_mask"]
        policy = pair_logps(
            model, batch
        )  # chosen and rejected in one forward, each prompt computed once
        ref = batch.get("ref_logps")
        if ref is None:
            if self.reference is None:
                raise LlmlabError(
                    "DPO batch has no precomputed ref_logps and no reference model was given"
                )
            ref = self.reference.pair_logps(batch)
        pc, pr = policy.chunk(2)
        rc, rr = ref.to(policy.dtype).chunk(2)
        lc, lr = mask[:, 1:].sum(-1).chunk(2)
        loss = dpo_loss(pc, pr, rc, rr, self.beta, self.loss_type, lc, lr)
        return loss, {**dpo_metrics(pc, pr, rc, rr, self.beta), "tokens": int(ids.numel())}
