"""The batched sampler against a row-by-row reference written independently of the engine: the
penalties and filters are Hugging Face's logits processors (repetition penalty, top-k, top-p,
min-p) and OpenAI's presence/frequency formula written out here, so a bug shared by the engine's
filters and the reference cannot pass. Greedy, penalised, seeded temperature/top-k/top-p/min-p rows
give the same tokens; unseeded rows that share settings (drawn together) stay inside their
filter; logprobs are the model's own."""

from collections import Counter

import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llmlab.engine.sampler import sample
from llmlab.engine.sampling_params import SamplingParams
from llmlab.engine.sequence import Sequence

VOCAB = 50


def _presence_frequency(row: torch.Tensor, output_ids, presence, frequency) -> torch.Tensor:
    """OpenAI's definition: logit − frequency·count − presence·[count > 0], over generated tokens."""
    row = row.clone()
    for token, count in Counter(output_ids).items():
        row[token] -= frequency * count + presence
    return row


def _reference(row: torch.Tensor, seq: Sequence, generator) -> int:
    p = seq.params
    ids = torch.tensor([seq.token_ids])
    scores = row[None].clone()
    if p.repetition_penalty != 1:
        scores = RepetitionPenaltyLogitsProcessor(p.repetition_penalty)(ids, scores)
    scores = _presence_frequency(
        scores[0], seq.output_token_ids, p.presence_penalty, p.frequency_penalty
    )[None]
    if p.greedy:
        return int(scores.argmax())
    scores = TemperatureLogitsWarper(p.temperature)(ids, scores)
    if p.top_k > 0:
        scores = TopKLogitsWarper(p.top_k)(ids, scores)
    if p.top_p < 1:
        scores = TopPLogitsWarper(p.top_p)(ids, scores)
    if p.min_p > 0:
        scores = MinPLogitsWarper(p.min_p)(ids, scores)
    return int(torch.multinomial(scores[0].softmax(-1), 1, generator=generator))


def _seq(params: SamplingParams, history=(3, 4, 4, 9)) -> Sequence:
    seq = Sequence("r", 0, [1, 2, 3], params)
    for t in history:
        seq.append_token(t)
    return seq


def test_batched_sampler_equals_row_by_row():
    torch.manual_seed(0)
    logits = torch.randn(8, VOCAB) * 3
    params = [
        SamplingParams(),
        SamplingParams(repetition_penalty=1.5, presence_penalty=1.0),
        SamplingParams(temperature=0.8, top_k=5, seed=1),
        SamplingParams(temperature=1.2, top_p=0.7, seed=2),
        SamplingParams(temperature=1.0, min_p=0.2, seed=3, frequency_penalty=0.5),
        SamplingParams(temperature=1.0, top_k=3, seed=4, logprobs=2),
    ]
    shared = SamplingParams(temperature=0.7, top_k=4)  # two unseeded rows with the same settings
    seqs = [_seq(p) for p in params] + [_seq(shared), _seq(shared)]
    results = sample(logits, seqs)
    for i, (seq, p) in enumerate(zip(seqs[:6], params)):
        generator = torch.Generator().manual_seed(p.seed) if p.seed is not None else None
        assert results[i][0] == _reference(logits[i], seq, generator)
    for i in (6, 7):
        assert results[i][0] in torch.topk(logits[i], 4).indices.tolist()
    entry = results[5][1]
    expected = logits[5].log_softmax(-1)
    assert abs(entry["logprob"] - float(expected[entry["token_id"]])) < 1e-6
    assert [t for t, _ in entry["top"]] == torch.topk(expected, 2).indices.tolist()
    assert all(r[1] is None for r in results[:5])


def test_greedy_tokens_equal_argmax_with_ties_nan_and_odd_widths():
    from llmlab.sampling import greedy_tokens

    torch.manual_seed(0)
    for vocab in (49152, 262144, 20000):  # blocked, blocked, plain argmax (1024 does not divide)
        logits = torch.randn(6, vocab)
        logits[1, 7] = logits[1, vocab - 3] = logits[1].max() + 1  # a tie: the first one wins
        logits[2, 5000] = logits[2, 4999] = float("nan")  # NaN counts as the maximum
        logits[3] = float("-inf")
        logits[3, vocab - 1] = 0.0
        logits[4] = 1.0  # all equal: index 0
        assert torch.equal(greedy_tokens(logits), logits.argmax(-1)), vocab
        assert torch.equal(greedy_tokens(logits[[5, 1]]), logits[[5, 1]].argmax(-1))
