"""Next tokens for a batch of sequences, each with its own SamplingParams.

Per row, in order: repetition penalty (prompt + output, CTRL-style, shared with the reference
generator) → presence/frequency penalties (output only, OpenAI-style) → greedy argmax, or
temperature → top-k → top-p → min-p → a draw from the sequence's own generator (seeded per request).
Log-probabilities, when asked for, are the model's own (before any penalty or filter).
When every row is plain greedy the whole batch is one argmax.
"""

from __future__ import annotations

import torch

from llmlab.engine.sequence import Sequence
from llmlab.sampling import apply_repetition_penalty, top_k_filter, top_p_filter


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p × the most likely token's probability."""
    if min_p <= 0:
        return logits
    probs = logits.softmax(-1)
    return logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, float("-inf"))


def apply_presence_frequency(logits: torch.Tensor, output_ids: list[int], presence: float, frequency: float):
    if (presence == 0 and frequency == 0) or not output_ids:
        return logits
    counts = torch.bincount(torch.tensor(output_ids, device=logits.device), minlength=logits.shape[-1]).to(logits.dtype)
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def _logprob_entry(logprobs: torch.Tensor, token: int, top_n: int) -> dict:
    entry = {"token_id": token, "logprob": float(logprobs[token]), "top": []}
    if top_n:
        values, ids = torch.topk(logprobs, top_n)
        entry["top"] = list(zip(ids.tolist(), values.tolist()))
    return entry


def sample_row(logits: torch.Tensor, seq: Sequence) -> int:
    p = seq.params
    if p.repetition_penalty != 1:
        logits = apply_repetition_penalty(logits, torch.tensor(seq.token_ids, device=logits.device), p.repetition_penalty)
    logits = apply_presence_frequency(logits, seq.output_token_ids, p.presence_penalty, p.frequency_penalty)
    if p.greedy:
        return int(logits.argmax(-1))
    logits = min_p_filter(top_p_filter(top_k_filter(logits / p.temperature, p.top_k), p.top_p), p.min_p)
    probs = logits.softmax(-1)
    generator = seq.generator
    if generator is not None and generator.device != probs.device:
        probs = probs.cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> list[tuple[int, dict | None]]:
    """logits [len(seqs), vocab] (float32) → (token id, logprob entry or None) per sequence."""
    if all(s.params.greedy and not s.params.needs_history and s.params.logprobs is None for s in seqs):
        return [(t, None) for t in logits.argmax(-1).tolist()]
    results = []
    for row, seq in zip(logits, seqs):
        token = sample_row(row, seq)
        entry = None
        if seq.params.logprobs is not None:
            entry = _logprob_entry(row.log_softmax(-1), token, seq.params.logprobs)
        results.append((token, entry))
    return results
