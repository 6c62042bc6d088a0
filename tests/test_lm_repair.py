"""How the language-model repair (data/lm_repair.py) asks its questions: the beam's own choice is
always a candidate, nearby damaged characters are also chosen together, and the joint candidates
are the n-gram's best combinations (checked against scoring every combination one by one).

A dictionary scorer stands in for Gemma (the real model is tested, slow, in test_data_mojibake.py):
it scores a text by the phrases it contains, so the tests say exactly which choice should win."""

from __future__ import annotations

import itertools

import numpy as np

from llmlab.data.charlm import model
from llmlab.data.lm_repair import TOP, _groups, _joint_best, _proposals, repair_with_lm
from llmlab.data.mojibake import BEAM, LM_ORDER, _Decoder, corrupt, expand, repair


class PhraseScorer:
    def __init__(self, weights: dict[str, float]):
        self.weights = weights

    def score(self, texts):
        return np.array([sum(w for p, w in self.weights.items() if p in t) for t in texts])


def ngram_choices(text: str):
    chars, damaged = expand(corrupt(text))
    ngram = model(LM_ORDER)
    _Decoder(chars, damaged, BEAM, ngram).run()
    return chars, damaged, ngram


def test_groups_join_nearby_damaged_characters():
    assert _groups([3, 5, 6, 9, 20, 21, 22, 23]) == [[3, 5, 6], [9], [20, 21, 22], [23]]
    assert _groups([]) == []


def test_the_beams_choice_is_a_candidate_even_when_the_per_character_list_misses_it():
    truth = "本质上都是在深层神经网络中反向传播过程中"
    chars, damaged, ngram = ngram_choices(truth)
    i = truth.index("反")
    assert chars[i] == "反"  # the beam gets it right ...
    options, _ = _proposals(chars, i, damaged[i], ngram, TOP)
    assert "反" not in options  # ... but one character at a time the n-gram ranks it 7th
    # A scorer that knows the term can only pick it if it is offered.
    assert repair_with_lm(corrupt(truth), PhraseScorer({"反向传播": 1.0})) == truth


def test_nearby_characters_are_also_chosen_together():
    truth = "如果激活函数的导数或权重大于1，连乘后梯度指数级增大"
    assert "连乘坐" in repair(corrupt(truth))  # the n-gram alone
    # 运乘坐 is a trap for one-at-a-time choices: with 坐 standing to its right, 运 scores best
    # for the first character, and with 运 to its left no choice of the second makes 连乘后.
    scorer = PhraseScorer({"运乘坐": 0.5, "连乘后": 1.0})
    one_at_a_time = repair_with_lm(corrupt(truth), scorer, joint=0, margin=float("inf"))
    assert "运乘坐" in one_at_a_time
    assert repair_with_lm(corrupt(truth), scorer, margin=float("inf")) == truth


def test_joint_candidates_are_the_best_combinations_by_brute_force():
    truth = "在多层传播时不断连乘，如果连乘的导数小于1"
    chars, damaged, ngram = ngram_choices(truth)
    positions = sorted(damaged)[:3]
    options = {i: _proposals(chars, i, damaged[i], ngram, 4)[0] for i in positions}
    got = _joint_best(chars, positions, options, ngram, 5)
    n = ngram.order - 1

    def total(combo):  # one character at a time, history from the text as it would read
        text = list(chars)
        for i, c in zip(positions, combo):
            text[i] = c
        codes = [ord(text[j]) if 0 <= j < len(text) else 10 for j in range(-n, len(text) + n)]
        lo, hi = positions[0], positions[-1] + n  # first changed character .. order-1 past the last
        return sum(
            float(ngram.logp(np.array([codes[j : j + n]]), np.array([codes[j + n]]))[0])
            for j in range(lo, hi + 1)
        )

    combos = list(itertools.product(*(options[i] for i in positions)))
    scores = {c: total(c) for c in combos}
    want = sorted(combos, key=lambda c: -scores[c])[:5]
    assert [scores[c] for c in got] == [scores[c] for c in want]  # same scores, best first
    assert got[0] == want[0]
