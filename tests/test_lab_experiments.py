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
        folder = fast_results / "fast" / name
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
        # the checks are stated in the module before measuring, one per measured check
        module = registry.load(name)
        assert result["stated_checks"] == list(module.CHECKS)
        assert len(module.CHECKS) == len(result["checks"]), name
        assert "Checks, stated before measuring" in report
    for name in ("attention", "long-range-memory", "rnn-vs-transformer-parallel"):
        result = json.loads((fast_results / "fast" / name / "result.json").read_text("utf-8"))
        history = " ".join(result["history"].split())
        assert "First design" in history and "What changed" in history
    assert "| experiment |" in (fast_results / "fast" / "summary.md").read_text(encoding="utf-8")


def test_docs_are_generated_from_results(fast_results, tmp_path):
    doc = tmp_path / "lab.md"
    assert (
        cli.main(["exp", "docs", "--results", str(fast_results / "fast"), "--doc", str(doc)]) == 0
    )
    text = doc.read_text(encoding="utf-8")
    for name in registry.available():
        assert f"## {name}" in text
        assert (tmp_path / "lab" / f"{name}.png").exists()


@pytest.mark.parametrize(
    "name", ["exploding-gradients", "pooling-invariance", "embeddings", "bert-mlm-nsp"]
)
def test_same_seed_same_numbers(fast_results, tmp_path, name):
    first = json.loads((fast_results / "fast" / name / "result.json").read_text(encoding="utf-8"))
    again = run_experiment(name, tmp_path, fast=True)
    assert again["numbers"] == first["numbers"]
    assert [c["text"] for c in again["checks"]] == [c["text"] for c in first["checks"]]


def test_timings_are_kept_apart_from_numbers(fast_results, tmp_path):
    result = json.loads(
        (fast_results / "fast" / "rnn-vs-transformer-parallel" / "result.json").read_text(
            encoding="utf-8"
        )
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


def test_fast_mode_says_so_everywhere_and_keeps_full_results(tmp_path):
    """`llmlab exp run NAME --fast` (issue 21.6): every output line says fast mode, the verdict is
    labelled indicative, and the results go to OUT/fast/NAME, never over a full run's OUT/NAME."""
    import os
    import subprocess
    import sys

    full = tmp_path / "pooling-invariance"
    full.mkdir()
    (full / "result.json").write_text('{"full-mode": "result"}')
    out = subprocess.run(
        [sys.executable, "-m", "llmlab", "exp", "run", "pooling-invariance", "--fast"]
        + ["--out", str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    assert (full / "result.json").read_text() == '{"full-mode": "result"}'
    folder = tmp_path / "fast" / "pooling-invariance"
    assert json.loads((folder / "result.json").read_text(encoding="utf-8"))["fast"] is True
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 2 and all("fast mode" in line for line in lines), lines
    assert "indicative" in lines[-1] and str(folder / "report.md") in lines[-1]
    assert "fast mode: tiny sizes, verdict indicative only" in (folder / "report.md").read_text(
        encoding="utf-8"
    )


def test_every_module_docstring_states_its_checks():
    for name in registry.EXPERIMENTS:
        module = registry.load(name)
        doc = " ".join(module.__doc__.split())
        assert "Checks, stated before measuring" in doc, name
        for check in module.CHECKS:
            assert " ".join(check.split()) in doc, (name, check)
