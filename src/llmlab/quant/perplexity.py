"""Sliding-window perplexity of a causal LM on a text, with tokens/s.

    result = perplexity(model, tokenizer, text, window=512, stride=256)
    print(result.perplexity, result.tokens, result.tokens_per_s)

The text is tokenized once; the first window scores its `window` tokens, then each next window
moves `stride` tokens on and scores only those new ones, with the window − stride tokens before
them as context (the Hugging Face recipe, except that no token is skipped at a window start:
every token after the first is scored exactly once). stride = window gives disjoint chunks
(fastest, least context).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmlab.errors import LlmlabError


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # tokens scored
    seconds: float
    tokens_per_s: float
    window: int
    stride: int


@torch.inference_mode()
def perplexity(
    model, tokenizer, text: str, window: int = 512, stride: int | None = None, max_tokens=None
) -> PerplexityResult:
    ids = tokenizer(text)["input_ids"]
    if max_tokens:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise LlmlabError("perplexity needs at least 2 tokens of text")
    limit = getattr(model, "max_context", None)
    window = min(window, limit) if limit else window
    stride = stride or window // 2
    if not 0 < stride <= window:
        raise LlmlabError(f"--stride must be between 1 and the window ({window}), got {stride}")
    ids = torch.tensor(ids)
    targets_total, scored, total_nll = len(ids) - 1, 0, 0.0
    start_time = time.perf_counter()
    while scored < targets_total:
        # Score targets ids[scored + 1 … stop] from the window of inputs ending just before them.
        stop = min((scored + stride) if scored else window, targets_total)
        begin = max(0, stop - window)
        logits = model(ids[begin:stop][None])[0].float()
        new = stop - scored
        total_nll += float(
            F.cross_entropy(logits[-new:], ids[stop - new + 1 : stop + 1], reduction="sum")
        )
        scored = stop
    seconds = time.perf_counter() - start_time
    nll = total_nll / scored
    return PerplexityResult(
        math.exp(nll), nll, scored, seconds, scored / max(seconds, 1e-9), window, stride
    )
