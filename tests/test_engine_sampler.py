"""The batched sampler against a row-by-row reference built from `llmlab.sampling`'s filters: greedy,
penalised, seeded temperature/top-k/top-p/min-p rows give the same tokens; unseeded rows that
share settings (drawn together) stay inside their filter; logprobs are the model's own."""

import torch

from llmlab.engine.sampler import apply_presence_frequency, min_p_filter, sample
from llmlab.engine.sampling_params import SamplingParams
from llmlab.engine.sequence import Sequence
from llmlab.sampling import apply_repetition_penalty, top_k_filter, top_p_filter

VOCAB = 50


def _reference(row: torch.Tensor, seq: Sequence, generator) -> int:
    p = seq.params
    if p.repetition_penalty != 1:
        row = apply_repetition_penalty(row, torch.tensor(seq.token_ids), p.repetition_penalty)
    row = apply_presence_frequency(
        row, seq.output_token_ids, p.presence_penalty, p.frequency_penalty
    )
    if p.greedy:
        return int(row.argmax())
    row = min_p_filter(top_p_filter(top_k_filter(row / p.temperature, p.top_k), p.top_p), p.min_p)
    return int(torch.multinomial(row.softmax(-1), 1, generator=generator))


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
