"""`rag_pairs` (src/llmlab/data/ops/rag_pairs.py): RAG-style SFT pairs prompted as `llmlab rag ask`.

PYTHONPATH=src python -m pytest tests/test_rag_pairs.py -q
"""

from __future__ import annotations

import re

import pytest

from llmlab.data.ops import RecipeError, build_op
from llmlab.data.ops.instruct import make_pair


class Trace:
    def failed(self, record, reason):
        raise AssertionError(reason)


def toy_records() -> list[dict]:
    """Six train seed pairs in six sections, one test pair, one general pair (no passage)."""
    records = []
    for n in range(6):
        answer = f"答案{n}：第{n}节的要点是甲{n}乙{n}。"
        records.append(
            make_pair(
                f"问题{n}是什么",
                answer,
                passage=f"分析{n}的内容。\n\n{answer}",
                section=f"节{n}",
                source=f"节{n} > 问题{n}",
                split="train",
            )  # fmt: skip
        )
    records.append(make_pair("测试问题", "测试答案。", passage="测试段落。\n\n测试答案。",
                             section="测试节", source="测试节", split="test"))  # fmt: skip
    records.append(
        make_pair("Say hi", "Hi!", origin="general", section="general/en", split="train")
    )
    return records


def run(records, **args):
    op = build_op("rag_pairs", {"seed": 0, **args})
    return op.process(list(records), Trace()) + op.finish(Trace())


def passages_of(prompt: str) -> dict[int, tuple[str, str]]:
    """[n] → (heading, text) parsed back out of the user prompt."""
    body = prompt.split("资料：\n", 1)[1].rsplit("\n\n问题：", 1)[0]
    blocks = re.split(r"(?:^|\n\n)\[(\d+)\] ", body)[1:]
    return {int(n): tuple(text.split("\n", 1)) for n, text in zip(blocks[::2], blocks[1::2])}


def test_rag_pairs_cite_the_gold_passage_among_distractors_from_other_sections():
    from llmlab.rag.answer import build_messages
    from llmlab.rag.index import Hit

    records = toy_records()
    out = run(records)
    assert out[: len(records)] == records  # the plain pairs stay, unchanged
    rag = [r for r in out if r["origin"] == "rag"]
    assert len(rag) == 6  # one per train seed pair; not the test pair, not the general one
    by_section = {r["section"]: r for r in records}
    positions, counts = set(), set()
    for pair in rag:
        seed = by_section[pair["section"]]
        system, user, model = pair["messages"]
        assert (system["role"], user["role"], model["role"]) == ("system", "user", "assistant")
        assert user["content"].endswith(f"问题：{seed['instruction']}")
        passages = passages_of(user["content"])
        gold = pair["gold"]
        assert passages[gold] == (seed["source"], seed["passage"])  # gold passage, whole
        assert model["content"] == f"{seed['response']} [{gold}]" == pair["response"]
        others = [p for n, p in passages.items() if n != gold]
        assert 1 <= len(others) <= 2
        sources = {r["source"]: r for r in records if r["split"] == "train" and r["passage"]}
        for heading, text in others:  # distractors: other train sections' passages
            assert heading in sources and heading != seed["source"]
            assert text == sources[heading]["passage"]
        # the same prompt text as `rag ask` builds (its own builder, not a copy)
        hits = [Hit("x", h, 0.0, t, (0, 0)) for _, (h, t) in sorted(passages.items())]
        assert build_messages(seed["instruction"], hits) == [system, user]
        assert pair["split"] == seed["split"] and pair["id"] != seed["id"]
        positions.add(gold)
        counts.add(len(passages))
    assert len(positions) > 1 and counts == {2, 3}  # the gold position and count vary
    assert run(records) == out  # seeded: the same output on a rerun
    assert len({r["id"] for r in out}) == len(out)


def test_rag_pairs_keep_the_answer_in_a_cut_passage_and_refuse_bad_settings():
    from llmlab.data.ops.rag_pairs import passage_text

    answer = "短答案。"
    record = make_pair("问", answer, passage="很长的分析。" * 50 + "\n\n" + answer)
    cut = passage_text(record, 60)
    assert len(cut) <= 60 and cut.endswith(answer) and cut.startswith("很长的分析")
    out = run(toy_records(), distractors=[2], max_chars=30)
    for pair in (r for r in out if r["origin"] == "rag"):
        passages = passages_of(pair["messages"][1]["content"])
        assert len(passages) == 3
        assert passages[pair["gold"]][1].endswith(pair["response"].rsplit(" [", 1)[0])
    for bad in ({"distractors": [2, 1]}, {"distractors": [1, 2, 3]}, {"max_chars": 5}):
        with pytest.raises(RecipeError, match="rag_pairs"):
            build_op("rag_pairs", bad)
