"""`perplexity_filter`: score each text with a causal LM loaded by `llmlab.load` and keep fluent ones.

Perplexity = exp(mean next-token negative log-likelihood) over the first `max_tokens` tokens.
The model loads lazily, once per process, so recipes that never reach this op pay nothing.
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
                 min: float | None = None, max_tokens: int = 512):  # fmt: skip
        super().__init__(min=min, max=max)
        self.model, self.max_tokens = model, max_tokens

    def statistic(self, text):
        return perplexity(text, self.model, self.max_tokens)
