"""`perplexity_filter`: score each text with a causal LM loaded by `llmlab.load` and keep fluent ones.

Perplexity = exp(mean next-token negative log-likelihood) over the first `max_tokens` tokens.
The model loads lazily, once per process, so recipes that never reach this op pay nothing.

`field` scores that field instead of the recipe's text; `origin` scores only the records whose
`origin` starts with it (e.g. "self_instruct": model-written pairs) and passes the others through.
Each scored record keeps its score in `perplexity`, so a run with `max: null` shows the
distribution a threshold is then chosen from (recipes/notes-instruct.yaml, docs/post-training.md).
"""

from __future__ import annotations

import functools
import math

from llmlab.data.ops.base import RangeFilter, register


@functools.lru_cache(maxsize=2)
def _load(model: str):
    import llmlab

    net, tokenizer = llmlab.load(model)
    net.eval()
    return net, tokenizer


def perplexity(text: str, model: str, max_tokens: int = 512) -> float:
    import torch
    import torch.nn.functional as F

    net, tokenizer = _load(model)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    if tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids[: max_tokens - 1]
    if len(ids) < 2:
        return math.inf
    device = next(net.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    with torch.no_grad():
        logits = net(input_ids)
        logits = getattr(logits, "logits", logits)
        nll = F.cross_entropy(logits[0, :-1].float(), input_ids[0, 1:])
    return math.exp(nll.item())


@register("perplexity_filter")
class PerplexityFilter(RangeFilter):
    """Keep records whose perplexity under `model` (any name/path `llmlab.load` accepts) is within [min, max]."""

    def __init__(self, *, model: str = "smollm2-135m-instruct", max: float | None = 1000.0,
                 min: float | None = None, max_tokens: int = 512, field: str = "",
                 origin: str = ""):  # fmt: skip
        super().__init__(min=min, max=max)
        self.model, self.max_tokens = model, max_tokens
        self.field, self.origin = field, origin

    def compute(self, record):
        if self.origin and not str(record.get("origin", "")).startswith(self.origin):
            return None  # not scored: kept as it is
        text = str(record.get(self.field or self.text_key) or "")
        value = self.statistic(text)
        record["perplexity"] = round(value, 3)
        return value

    def keep(self, stat):
        return stat is None or super().keep(stat)

    def statistic(self, text):
        return perplexity(text, self.model, self.max_tokens)
