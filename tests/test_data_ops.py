"""Every data operator on small hand-made records (mappers, filters, selectors, formatters)."""

from __future__ import annotations

import pytest

from llmlab.data.ops import OPS, RecipeError, build_op
from llmlab.data.ops.base import TraceHook


class Hook(TraceHook):
    def __init__(self):
        self.changes, self.removals, self.failures = [], [], []

    def changed(self, before, after):
        self.changes.append((before, after))

    def removed(self, record, why):
        self.removals.append((record, why))

    def failed(self, record, reason):
        self.failures.append((record, reason))


def run(name, texts, **args):
    op = build_op(name, args)
    hook = Hook()
    out = op.process([{"text": t} if isinstance(t, str) else t for t in texts], hook)
    out += op.finish(hook)
    return out, hook


def texts(name, inputs, **args):
    return [r["text"] for r in run(name, inputs, **args)[0]]


def test_registry_has_30_documented_operators():
    assert len(OPS) >= 30
    for name, cls in OPS.items():
        assert cls.__doc__ and cls.__doc__.strip(), name


def test_unknown_operator_and_bad_argument_are_one_line_errors():
    with pytest.raises(RecipeError, match="unknown operator 'clean_htm'"):
        build_op("clean_htm", {})
    with pytest.raises(RecipeError, match="has no argument 'maxx'"):
        build_op("text_length_filter", {"maxx": 3})
    with pytest.raises(RecipeError, match="needs argument"):
        build_op("topk_selector", {"k": 2})
    with pytest.raises(RecipeError, match="larger than max"):
        build_op("text_length_filter", {"min": 5, "max": 1})


def test_fix_unicode_keeps_chinese_punctuation():
    assert texts("fix_unicode", ["cafÃ© &amp; 你好，世界"]) == ["café & 你好，世界"]


def test_whitespace_and_punctuation_normalization():
    assert texts("whitespace_normalization", ["a \t b\u3000c  \n\n\n\n d "]) == ["a b c\n\nd"]
    assert texts("punctuation_normalization", ["\u201chi\u201d \u2014 ok\u2026"]) == [
        '"hi" - ok...'
    ]
    assert texts("punctuation_normalization", ["（你好）"], fullwidth=True) == ["(你好)"]


def test_clean_html_links_email_ip():
    assert texts("clean_html", ["<p>Hi <b>there</b></p><script>x()</script>&lt;3"]) == [
        "Hi there\n<3"
    ]
    assert texts("clean_links", ["see https://a.b/c?d=1 and www.x.org now"]) == ["see  and  now"]
    assert texts("clean_email", ["mail me: bob.smith@example.com!"], repl="[EMAIL]") == [
        "mail me: [EMAIL]!"
    ]
    assert texts("clean_ip", ["hosts 10.0.0.1 and fe80:0:0:0:0:0:0:1 but not 1.2.3.456"]) == [
        "hosts  and  but not 1.2.3.456"
    ]


def test_remove_copyright_header_only_when_it_mentions_copyright():
    code = "# Copyright 2024 ACME\n# Licensed under MIT\nimport os\n"
    assert texts("remove_copyright_header", [code]) == ["import os\n"]
    plain = "# a comment\nimport os"
    assert texts("remove_copyright_header", [plain]) == [plain]
    assert texts("remove_copyright_header", ["/* (c) 2020 X */\nint x;"]) == ["int x;"]


def test_sentence_split_lowercase():
    assert texts("sentence_split", ["你好。今天很好！Yes. Next one"]) == [
        "你好。\n今天很好！\nYes.\nNext one"
    ]
    assert texts("lowercase", ["Hello 世界"]) == ["hello 世界"]


def test_repair_mojibake_operator():
    from llmlab.data.mojibake import corrupt

    assert texts("repair_mojibake", [corrupt("反向传播和训练中的梯度")]) == [
        "反向传播和训练中的梯度"
    ]
    assert texts("repair_mojibake", ["plain ascii"]) == ["plain ascii"]


def test_length_and_word_count_filters_trace_removed_records():
    out, hook = run("text_length_filter", ["short", "long enough text"], min=6)
    assert [r["text"] for r in out] == ["long enough text"] and hook.removals[0][1] == 5
    assert texts("word_count_filter", ["我们在学习机器学习", "one two"], min=3) == [
        "我们在学习机器学习"
    ]


def test_ratio_and_repetition_filters():
    assert texts("alnum_ratio_filter", ["abc123", "!!!???"], min=0.5) == ["abc123"]
    assert texts("special_char_ratio_filter", ["normal text", "$$$ ### @@@"], max=0.2) == [
        "normal text"
    ]
    assert texts(
        "char_repetition_filter", ["abcdefghijklmnopqrstuvwxyz0123", "ha" * 30], n=4, max=0.5
    ) == ["abcdefghijklmnopqrstuvwxyz0123"]
    # A lone surrogate (JSON's "\ud800" decodes to one) is a character like any other, not a crash.
    assert texts(
        "char_repetition_filter", ["\ud800" * 30, "ok \ud800 fine text"], n=4, max=0.5
    ) == ["ok \ud800 fine text"]
    spam = "buy now " * 20
    assert texts(
        "word_repetition_filter", ["the cat sat on the mat by the door today", spam], n=2, max=0.5
    )[0].startswith("the cat")


def test_language_stopword_flagged_filters():
    kept = texts(
        "language_filter",
        ["这是一个关于机器学习的中文句子。", "Ceci est une phrase en français."],
        languages=["zh"],
    )
    assert kept == ["这是一个关于机器学习的中文句子。"]
    assert texts("stopword_ratio_filter", ["the cat is on the mat", "xq7 zzv qqq"], min=0.2) == [
        "the cat is on the mat"
    ]
    assert texts(
        "flagged_words_filter", ["a clean sentence here", "this shit is bad"], max=0.0
    ) == ["a clean sentence here"]


def test_field_and_suffix_filters():
    recs = [
        {"text": "a", "lang": "zh", "source": "x.md"},
        {"text": "b", "lang": "en", "source": "y.txt"},
    ]
    assert [r["text"] for r in run("field_filter", recs, field="lang", values=["zh"])[0]] == ["a"]
    assert [r["text"] for r in run("suffix_filter", recs, suffixes=[".txt"])[0]] == ["b"]
    assert [
        r["text"]
        for r in run("field_filter", recs + [{"text": "c"}], field="lang", exists=False)[0]
    ] == ["c"]


def test_selectors_topk_and_random_are_bounded_and_deterministic():
    recs = [{"text": "x" * n, "score": n} for n in [3, 9, 1, 7, 5]]
    assert [r["score"] for r in run("topk_selector", recs, stat="score", k=2)[0]] == [9, 7]
    assert [
        r["score"] for r in run("topk_selector", recs, stat="text_length", k=2, largest=False)[0]
    ] == [1, 3]
    a = run("random_selector", [{"text": str(i)} for i in range(100)], n=10, seed=3)[0]
    b = run("random_selector", [{"text": str(i)} for i in range(100)], n=10, seed=3)[0]
    assert (
        a == b and len(a) == 10 and [int(r["text"]) for r in a] == sorted(int(r["text"]) for r in a)
    )


def test_formatters():
    rec = {"text": "p1\n\np2 long", "question": "q?", "answer": "a."}
    assert run("rename_fields", [rec], mapping={"text": "body"})[0][0]["body"] == rec["text"]
    assert run("keep_fields", [rec], fields=["question"])[0] == [{"question": "q?"}]
    ids = [
        r["id"] for r in run("add_id", [{"text": "same"}, {"text": "same"}, {"text": "other"}])[0]
    ]
    assert ids[0] == ids[1] != ids[2]
    assert [r["text"] for r in run("split_paragraphs", [rec], min_chars=3)[0]] == ["p2 long"]
    chat = run("qa_to_chat", [rec], system="be brief")[0][0]["messages"]
    assert [m["role"] for m in chat] == ["system", "user", "assistant"] and chat[2][
        "content"
    ] == "a."


def test_mapper_failure_goes_to_quarantine_not_crash():
    out, hook = run("topk_selector", [{"text": "a"}, {"text": "b", "score": 2}], stat="score", k=5)
    assert [r["text"] for r in out] == ["b"] and "missing or not a number" in hook.failures[0][1]
