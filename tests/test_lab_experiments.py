"""Every foundations-lab experiment runs end to end in fast mode through the CLI; reruns with the
same seed give the same numbers; verdicts follow the checks; docs are generated from results."""

import json

import pytest

from llmlab import cli
from llmlab.exp import registry
from llmlab.exp.runner import run_experiment


@pytest.fixture(scope="module")
def fast_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    assert cli.main(["exp", "run", "--all", "--fast", "--out", str(out)]) == 0
    return out


def test_every_available_experiment_writes_its_folder(fast_results):
    names = registry.available()
    assert len(names) == len(registry.EXPERIMENTS) == 12
    for name in names:
        folder = fast_results / name
        result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        assert (folder / "plot.png").stat().st_size > 1000
        report = (folder / "report.md").read_text(encoding="utf-8")
        assert result["claim"]["zh"] in report and result["claim"]["en"] in report
        assert result["checks"], name
        # the verdict is the conjunction of the measured checks, never set on its own
        assert result["verdict"] == (
            "held" if all(c["held"] for c in result["checks"]) else "did not hold"
        )
        assert result["verdict"] in report
    assert "| experiment |" in (fast_results / "summary.md").read_text(encoding="utf-8")


def test_docs_are_generated_from_results(fast_results, tmp_path):
    doc = tmp_path / "lab.md"
    assert cli.main(["exp", "docs", "--results", str(fast_results), "--doc", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    for name in registry.available():
        assert f"## {name}" in text
        assert (tmp_path / "lab" / f"{name}.png").exists()


@pytest.mark.parametrize(
    "name", ["exploding-gradients", "pooling-invariance", "embeddings", "bert-mlm-nsp"]
)
def test_same_seed_same_numbers(fast_results, tmp_path, name):
    first = json.loads((fast_results / name / "result.json").read_text(encoding="utf-8"))
    again = run_experiment(name, tmp_path, fast=True)
    assert again["numbers"] == first["numbers"]
    assert [c["text"] for c in again["checks"]] == [c["text"] for c in first["checks"]]


def test_timings_are_kept_apart_from_numbers(fast_results, tmp_path):
    result = json.loads(
        (fast_results / "rnn-vs-transformer-parallel" / "result.json").read_text(encoding="utf-8")
    )
    for timing in ("seconds", "parallel_seconds", "two_thread_speedup"):
        assert timing in result["timings"] and timing not in result["numbers"]
    assert result["numbers"]["parameters"]["torch.nn.LSTM"] == 4 * (64 * 64 * 2 + 2 * 64)
    # everything outside "timings" (graph depths, parameter counts, kernels used) is exact: reruns match
    again = run_experiment("rnn-vs-transformer-parallel", tmp_path, fast=True)
    assert again["numbers"] == result["numbers"]


def test_unknown_experiment_is_a_clear_error(capsys):
    assert cli.main(["exp", "run", "no-such-thing", "--fast"]) == 1
    assert "unknown experiment 'no-such-thing'" in capsys.readouterr().err
    assert cli.main(["exp", "run", "--fast"]) == 1
