"""Recipes, the local executor (batches, workers, quarantine, trace, report), kill-and-resume,
`llmlab data` commands, and the bundled notes recipe."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import yaml

from llmlab.data.executor import run_recipe
from llmlab.data.io.sources import open_source
from llmlab.data.ops.base import RecipeError
from llmlab.data.recipe import parse_recipe

VOCAB = "data records filter clean model token batch stream sink source recipe operator trace report quarantine".split()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corpus(path, n=300):
    lines = []
    for i in range(n):
        if i % 50 == 7:
            lines.append("{broken json")
        elif i % 50 == 11:
            lines.append(json.dumps({"title": "no text field"}))
        else:
            dup = i % 10 == 3  # every tenth record repeats an earlier one
            rng = random.Random(i - 1 if dup else i)
            words = " ".join(rng.choice(VOCAB) for _ in range(30))
            body = f"Document {i - 1 if dup else i}: {words}. Visit https://x.org/{i}."
            lines.append(json.dumps({"id": i, "text": body}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def recipe_dict(tmp_path, **extra):
    data = {
        "project": "t", "work_dir": str(tmp_path / "work"), "batch_size": 32, "trace_samples": 3,
        "sources": [{"type": "jsonl", "path": str(tmp_path / "in.jsonl")}],
        "process": [{"clean_links": {}}, {"whitespace_normalization": {}}, {"text_length_filter": {"min": 20}},
                    {"exact_dedup": {}}, {"minhash_dedup": {"threshold": 0.9}}, {"word_count_filter": {"min": 3}}],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}, {"type": "parquet", "path": str(tmp_path / "out.parquet")}],
    }  # fmt: skip
    data.update(extra)
    return data


def test_recipe_errors_are_one_line(tmp_path):
    with pytest.raises(RecipeError, match="unknown operator 'nope'"):
        parse_recipe(recipe_dict(tmp_path, process=[{"nope": {}}]))
    with pytest.raises(RecipeError, match="unknown key"):
        parse_recipe(recipe_dict(tmp_path, procss=[]))
    with pytest.raises(RecipeError, match="non-empty list"):
        parse_recipe(recipe_dict(tmp_path, sinks=[]))


def test_run_quarantines_traces_and_reports(tmp_path):
    corpus(tmp_path / "in.jsonl")
    report = run_recipe(parse_recipe(recipe_dict(tmp_path)), progress=False)
    out = [json.loads(x) for x in open(tmp_path / "out.jsonl", encoding="utf-8")]
    assert report["records_read"] == 300 and report["quarantined"] == 12
    assert (
        report["records_written"] == len(out) == 300 - 12 - 30
    )  # every tenth record repeats the one before it
    assert all("https://" not in r["text"] for r in out)
    q = [json.loads(x) for x in open(tmp_path / "work" / "quarantine.jsonl", encoding="utf-8")]
    assert {r["reason"].split(":")[0] for r in q} == {"invalid JSON", "missing text field"}
    ops = {o["name"]: o for o in report["operators"]}
    assert ops["exact_dedup"]["removed"] == 30 and ops["clean_links"]["records_in"] == 288
    trace = [
        json.loads(x)
        for x in open(tmp_path / "work" / "trace" / "exact_dedup.jsonl", encoding="utf-8")
    ]
    assert len(trace) == 3 and trace[0]["event"] == "removed"
    assert "| `minhash_dedup` |" in open(tmp_path / "work" / "report.md", encoding="utf-8").read()
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out.parquet").column("id").to_pylist() == [
        r["id"] for r in out
    ]


def test_workers_give_the_same_output(tmp_path):
    corpus(tmp_path / "in.jsonl", 120)
    run_recipe(parse_recipe(recipe_dict(tmp_path)), progress=False)
    single = open(tmp_path / "out.jsonl", encoding="utf-8").read()
    run_recipe(parse_recipe(recipe_dict(tmp_path, np=2)), progress=False)
    assert open(tmp_path / "out.jsonl", encoding="utf-8").read() == single


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "llmlab", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=300)  # fmt: skip


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    corpus(tmp_path / "in.jsonl", 400)
    data = recipe_dict(
        tmp_path,
        process=recipe_dict(tmp_path)["process"] + [{"random_selector": {"n": 150, "seed": 1}}],
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    run_recipe(str(recipe), progress=False)
    expected = open(tmp_path / "out.jsonl", "rb").read()
    expected_q = open(tmp_path / "work" / "quarantine.jsonl", "rb").read()
    killed = _cli(
        "data", "run", str(recipe), "--no-progress", env={"LLMLAB_DATA_KILL_AT_BATCH": "6"}
    )
    assert killed.returncode == -9  # SIGKILL after writing batch 6, before its checkpoint
    assert open(tmp_path / "out.jsonl", "rb").read() == expected  # the last good output stands
    assert open(tmp_path / "work" / "quarantine.jsonl", "rb").read() == expected_q
    resumed = _cli("data", "run", str(recipe), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert open(tmp_path / "out.jsonl", "rb").read() == expected
    assert open(tmp_path / "work" / "quarantine.jsonl", "rb").read() == expected_q
    assert json.load(open(tmp_path / "work" / "report.json"))["records_written"] == 150


def test_failed_runs_leave_the_last_good_output_untouched(tmp_path):
    corpus(tmp_path / "in.jsonl", 100)
    db = f"sqlite:///{tmp_path / 'out.sqlite'}"
    sinks = recipe_dict(tmp_path)["sinks"] + [{"type": "sql", "url": db, "table": "docs"}]
    run_recipe(parse_recipe(recipe_dict(tmp_path, sinks=sinks)), progress=False)
    outputs = [
        tmp_path / "out.jsonl",
        tmp_path / "out.parquet",
        tmp_path / "work" / "quarantine.jsonl",
    ]
    before = [p.read_bytes() for p in outputs]
    rows = sorted(r["id"] for r in open_source({"type": "sql", "url": db, "table": "docs"}))
    assert rows and before[0]
    # A mistyped source path: one-line error, nothing published is touched.
    typo = recipe_dict(
        tmp_path, sinks=sinks, sources=[{"type": "jsonl", "path": str(tmp_path / "inn.jsonl")}]
    )
    with pytest.raises(RecipeError, match="matches no files"):
        run_recipe(parse_recipe(typo), progress=False)
    # Strict mode: the corpus has unparseable lines, so the run fails mid-way (after batches were written).
    with pytest.raises(RecipeError, match="strict mode: bad record at .*in.jsonl:8: invalid JSON"):
        run_recipe(
            parse_recipe(recipe_dict(tmp_path, sinks=sinks, strict=True, batch_size=4)),
            progress=False,
        )
    assert [p.read_bytes() for p in outputs] == before
    assert sorted(r["id"] for r in open_source({"type": "sql", "url": db, "table": "docs"})) == rows
    cli = _cli("data", "run", str(_write_yaml(tmp_path / "typo.yaml", typo)), "--no-progress")
    assert (
        cli.returncode == 1
        and cli.stderr.strip().count("\n") == 0
        and "matches no files" in cli.stderr
    )
    assert [p.read_bytes() for p in outputs] == before


def _write_yaml(path, data):
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_cli_ops_and_error_line(tmp_path):
    ops = _cli("data", "ops")
    assert ops.returncode == 0 and "minhash_dedup" in ops.stdout and "markdown_to_qa" in ops.stdout
    # every filter's range survives the table (rich markup once ate "[min, max]")
    assert ops.stdout.count("within [min, max]") >= 7 and "within ." not in ops.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(recipe_dict(tmp_path, process=[{"text_length_filter": {"maxx": 1}}])),
        encoding="utf-8",
    )
    result = _cli("data", "run", str(bad))
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "error: operator 'text_length_filter' has no argument 'maxx'; it takes: min, max"
    ]


def test_analyze_writes_stats_histograms_markdown(tmp_path):
    from llmlab.data.analyze import analyze

    rows = [{"text": "机器学习" * (i + 1), "score": i / 10} for i in range(20)] + [
        {"text": "short english text"}
    ]
    (tmp_path / "d.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8"
    )
    report = analyze(str(tmp_path / "d.jsonl"), str(tmp_path / "an"))
    assert report["records"] == 21 and report["fields"]["text.text_length"]["max"] == 80
    assert (
        report["fields"]["score"]["count"] == 20
        and abs(report["fields"]["score"]["mean"] - 0.95) < 1e-9
    )
    assert report["languages"]["zh"] == 20
    assert os.path.getsize(tmp_path / "an" / report["histograms"]["score"]) > 1000
    assert "| score | 20 |" in open(tmp_path / "an" / "analysis.md", encoding="utf-8").read()


def test_notes_recipe_produces_clean_qa(tmp_path):
    data = yaml.safe_load(open(os.path.join(ROOT, "recipes", "notes.yaml"), encoding="utf-8"))
    data["work_dir"] = str(tmp_path / "work")
    data["sinks"] = [{"type": "jsonl", "path": str(tmp_path / "qa.jsonl")},
                     {"type": "sql", "url": f"sqlite:///{tmp_path / 'qa.sqlite'}", "table": "qa", "id_field": "id"}]  # fmt: skip
    report = run_recipe(parse_recipe(data), progress=False)
    qa = [json.loads(x) for x in open(tmp_path / "qa.jsonl", encoding="utf-8")]
    assert (
        len(qa) == report["records_written"] >= 20
    )  # 23 entries have content; the LLM headings are empty
    questions = {r["question"] for r in qa}
    assert "*args, **kwargs 的用法" in questions
    assert (
        "梯度消失和梯度爆炸的原因是什么" in questions
        and "BatchNorm和LayerNorm有什么区别" in questions
    )
    first = next(r for r in qa if r["question"] == "梯度消失和梯度爆炸的原因是什么")
    assert first["answer"].startswith("梯度消失和梯度爆炸都是因为反向传播过程中")
    assert "问题分析" not in first["analysis"] and "面试回答" not in first["answer"]
    assert all("å" not in r["text"] and "ç" not in r["text"] for r in qa)  # no mojibake left
    # Fine-grained: a record per follow-up and tutorial step, each with heading path and lines.
    assert {r["kind"] for r in qa} == {"question", "follow_up", "step"} and len(qa) >= 45
    assert "基础知识点 > 归一化的作用" in {r["source"] for r in qa}
    assert all(1 <= r["lines"][0] <= r["lines"][1] for r in qa)
    dropout = next(r for r in qa if r["question"].startswith("dropout"))
    assert dropout["follow_ups"] and dropout["follow_ups"][0]["question"].startswith(
        "为什么 Dropout"
    )
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'qa.sqlite'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM qa")).scalar() == len(qa)
    engine.dispose()
