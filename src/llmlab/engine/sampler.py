"""Next tokens for a batch of sequences, each with its own SamplingParams.

Per row, in order: the grammar mask of a constrained row (disallowed tokens get -inf), repetition penalty (prompt + output, CTRL-style, shared with the reference
generator) → presence/frequency penalties (output only, OpenAI-style) → greedy argmax, or
temperature → top-k → top-p → min-p → a draw from the sequence's own generator (seeded per request).
Log-probabilities, when asked for, are the model's own (before any mask, penalty or filter).

Vectorised across the batch: when every row is plain greedy the whole batch is one argmax;
otherwise penalties run only on the rows that use them, greedy rows share one argmax, and rows with
equal sampling settings (e.g. all rollouts of an RL batch) are filtered and softmaxed as one
matrix; only the draw of a seeded row is per row (it uses that request's own generator).
"""

from __future__ import annotations

import torch

from llmlab.engine.sequence import Sequence
from llmlab.sampling import (
    apply_repetition_penalty,
    greedy_tokens,
    top_k_filter,
    top_p_filter,
)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p × the most likely token's probability."""
    if min_p <= 0:
        return logits
    probs = logits.softmax(-1)
    return logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, float("-inf"))


def apply_presence_frequency(
    logits: torch.Tensor, output_ids: list[int], presence: float, frequency: float
):
    if (presence == 0 and frequency == 0) or not output_ids:
        return logits
    counts = torch.bincount(
        torch.tensor(output_ids, device=logits.device), minlength=logits.shape[-1]
    ).to(logits.dtype)
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def _logprob_entry(logprobs: torch.Tensor, token: int, top_n: int) -> dict:
    entry = {"token_id": token, "logprob": float(logprobs[token]), "top": []}
    if top_n:
        values, ids = torch.topk(logprobs, top_n)
        entry["top"] = list(zip(ids.tolist(), values.tolist()))
    return entry


def _penalized(row: torch.Tensor, seq: Sequence) -> torch.Tensor:
    p = seq.params
    if p.repetition_penalty != 1:
        row = apply_repetition_penalty(
            row, torch.tensor(seq.token_ids, device=row.device), p.repetition_penalty
        )
    return apply_presence_frequency(
        row, seq.output_token_ids, p.presence_penalty, p.frequency_penalty
    )


def _draw(probs: torch.Tensor, seqs: list[Sequence]) -> list[int]:
    """One token per row of probs [n, vocab]: unseeded rows in one multinomial call, seeded rows
    each from its own generator."""
    tokens = [0] * len(seqs)
    free = [i for i, s in enumerate(seqs) if s.generator is None]
    if free:
        drawn = (
            torch.multinomial(probs[free] if len(free) < len(seqs) else probs, 1).view(-1).tolist()
        )
        for i, t in zip(free, drawn):
            tokens[i] = t
    for i, seq in enumerate(seqs):
        if seq.generator is not None:
            row = probs[i] if seq.generator.device == probs.device else probs[i].cpu()
            tokens[i] = int(torch.multinomial(row, 1, generator=seq.generator))
    return tokens


def sample(
    logits: torch.Tensor,
    seqs: list[Sequence],
    masked_rows: list[int] | None = None,
    allowed: torch.Tensor | None = None,
) -> list[tuple[int, dict | None]]:
    """logits [len(seqs), vocab] (float32) → (token id, logprob entry or None) per sequence.
    `allowed` [len(masked_rows), vocab] (bool): the only tokens those rows may pick."""
    raw = logits
    if masked_rows:
        logits = logits.clone()
        allowed = allowed.to(logits.device, non_blocking=True)  # masks are built on the CPU
        logits[masked_rows] = logits[masked_rows].masked_fill(~allowed, float("-inf"))
    if all(
        s.params.greedy and not s.params.needs_history and s.params.logprobs is None for s in seqs
    ):
        return [(t, None) for t in greedy_tokens(logits).tolist()]
    history = [i for i, s in enumerate(seqs) if s.params.needs_history]
    if history:
        logits = logits.clone()
        for i in history:
            logits[i] = _penalized(logits[i], seqs[i])
    tokens = [0] * len(seqs)
    greedy = [i for i, s in enumerate(seqs) if s.params.greedy]
    if greedy:
        for i, t in zip(greedy, greedy_tokens(logits[greedy]).tolist()):
            tokens[i] = t
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(seqs):
        if not s.params.greedy:
            p = s.params
            groups.setdefault((p.temperature, p.top_k, p.top_p, p.min_p), []).append(i)
    for (temperature, top_k, top_p, min_p), rows in groups.items():
        group = logits[rows] / temperature
        probs = min_p_filter(top_p_filter(top_k_filter(group, top_k), top_p), min_p).softmax(-1)
        for i, t in zip(rows, _draw(probs, [seqs[i] for i in rows])):
            tokens[i] = t
    results = [(t, None) for t in tokens]
    wanted = [i for i, s in enumerate(seqs) if s.params.logprobs is not None]
    if wanted:
        logprobs = raw[wanted].log_softmax(-1)
        for row, i in enumerate(wanted):
            results[i] = (
                tokens[i],
                _logprob_entry(logprobs[row], tokens[i], seqs[i].params.logprobs),
            )
    return results
