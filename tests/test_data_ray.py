"""The Ray executor (`executor: ray`) against the local one: same records kept (near-duplicates
planted across partitions), same per-operator counts and trace, selectors, and a run killed under
the local executor resumed on Ray. One local Ray with 2 CPUs serves the whole module."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import ray
import yaml

from llmlab.data.executor import run_recipe
from llmlab.data.ray_executor import RayExecutor
from llmlab.data.recipe import parse_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud field "
         "garden silver copper window engine signal market letter harbor orbit").split()  # fmt: skip


def planted_corpus(path, n=240):
    """Documents with exact repeats (case/space changes) and near-duplicates (2 words changed) of
    documents far earlier, so copy and original land in different partitions. Returns the ids of
    the planted exact and near copies."""
    rng = random.Random(7)
    bases = [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(n)]
    lines, exact, near = [], [], []
    for i in range(n):
        text = bases[i]
        if i % 40 == 39:
            lines.append("{not json")
            continue
        if i >= 120 and i % 12 == 0:  # near copy of a document 120 positions back
            words = bases[i - 120].split()
            words[5], words[30] = "zzyzx", "quokka"
            text = " ".join(words)
            near.append(i)
        elif (
            i >= 120 and i % 12 == 6 and (i - 115) % 40 != 39
        ):  # exact copy, up to case and spacing
            text = "  " + bases[i - 115].upper().replace(" ", "   ")
            exact.append(i)
        lines.append(json.dumps({"id": i, "text": f"{text} https://example.org/{i % 7}"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return exact, near


def recipe_dict(tmp_path, name, **extra):
    data = {
        "project": name, "work_dir": str(tmp_path / name), "batch_size": 100, "trace_samples": 4,
        "sources": [{"type": "jsonl", "path": str(tmp_path / "in.jsonl")}],
        "process": [{"clean_links": {}}, {"whitespace_normalization": {}}, {"text_length_filter": {"min": 20}},
                    {"exact_dedup": {}}, {"minhash_dedup": {"threshold": 0.7}}, {"word_count_filter": {"min": 5}}],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / f"{name}.jsonl")}],
    }  # fmt: skip
    data.update(extra)
    return data


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def _records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_plan_puts_dedup_keys_on_ray_and_selectors_on_the_driver(tmp_path):
    recipe = parse_recipe(recipe_dict(tmp_path, "plan", process=[
        {"clean_links": {}}, {"exact_dedup": {}}, {"minhash_dedup": {}}, {"text_length_filter": {"min": 1}},
        {"topk_selector": {"k": 3, "stat": "text_length"}}, {"simhash_dedup": {}}]))  # fmt: skip
    assert RayExecutor(recipe, progress=False).segments == [
        (True, [0, 1, 2]),
        (True, [3]),
        (False, [4]),
        (True, [5]),
    ]


def test_ray_keeps_exactly_what_local_keeps(tmp_path, local_ray):
    exact, near = planted_corpus(tmp_path / "in.jsonl")
    local = run_recipe(parse_recipe(recipe_dict(tmp_path, "local")), progress=False)
    on_ray = run_recipe(parse_recipe(recipe_dict(tmp_path, "ray", executor="ray")), progress=False)
    kept_local, kept_ray = _records(tmp_path / "local.jsonl"), _records(tmp_path / "ray.jsonl")
    assert kept_ray == kept_local  # same records, same order
    ids = {r["id"] for r in kept_ray}
    assert (
        not ids & set(exact) and not ids & set(near) and len(near) >= 8
    )  # planted copies all caught
    assert len(kept_ray) == 240 - 6 - len(exact) - len(near)  # 6 broken lines quarantined
    assert (
        on_ray["executor"] == "ray" and local["executor"] == "local" and on_ray["quarantined"] == 6
    )

    def counts(report):
        return [
            (o["name"], o["records_in"], o["records_out"], o["removed"])
            for o in report["operators"]
        ]

    assert counts(on_ray) == counts(local)
    for op in ("minhash_dedup", "exact_dedup", "clean_links"):
        trace = [
            open(tmp_path / d / "trace" / f"{op}.jsonl", encoding="utf-8").read()
            for d in ("local", "ray")
        ]
        assert trace[0] == trace[1] and trace[0].count("\n") == 4
    assert "| `minhash_dedup` |" in open(tmp_path / "ray" / "report.md", encoding="utf-8").read()


def test_ray_selector_and_simhash_match_local(tmp_path, local_ray):
    planted_corpus(tmp_path / "in.jsonl", 160)
    process = [{"whitespace_normalization": {}}, {"simhash_dedup": {"max_distance": 6}},
               {"topk_selector": {"k": 20, "stat": "text_length"}}, {"lowercase": {}}]  # fmt: skip
    run_recipe(parse_recipe(recipe_dict(tmp_path, "local", process=process)), progress=False)
    executor = RayExecutor(
        parse_recipe(recipe_dict(tmp_path, "ray", process=process, np=2)), progress=False
    )
    assert executor.run()["executor"] == "ray"
    assert (
        executor.worker_pids and os.getpid() not in executor.worker_pids
    )  # partitions ran in Ray workers
    kept = _records(tmp_path / "ray.jsonl")
    assert kept == _records(tmp_path / "local.jsonl") and len(kept) == 20
    assert all(r["text"] == r["text"].lower() for r in kept)  # the operator after the selector ran


def test_run_killed_locally_resumes_on_ray_from_the_cli(tmp_path):
    """The CLI starts (and stops) its own Ray here, beside the module's."""
    planted_corpus(tmp_path / "in.jsonl")
    run_recipe(parse_recipe(recipe_dict(tmp_path, "local")), progress=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(tmp_path, "ray", batch_size=40)), encoding="utf-8")
    cli = [sys.executable, "-m", "llmlab", "data", "run", str(recipe), "--no-progress"]
    killed = subprocess.run(
        cli,
        cwd=ROOT,
        env={**os.environ, "LLMLAB_DATA_KILL_AT_BATCH": "3"},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -9  # local executor, killed after writing batch 3
    resumed = subprocess.run(
        cli + ["--resume", "--executor", "ray"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert open(tmp_path / "ray.jsonl", "rb").read() == open(tmp_path / "local.jsonl", "rb").read()
    report = json.load(open(tmp_path / "ray" / "report.json", encoding="utf-8"))
    assert report["executor"] == "ray" and report["records_read"] == 240
