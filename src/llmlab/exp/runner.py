"""Run an experiment and write its folder: result.json, plot.png, report.md.

    from llmlab.exp.runner import run_experiment
    result = run_experiment("dropout", out_dir="runs/lab", fast=True)   # → runs/lab/fast/dropout/

Fast mode runs tiny sizes: its verdicts are indicative only (the sizes are too small to test
several claims), so its results go to OUT/fast/NAME and never replace a full run's OUT/NAME.

Seeds are fixed and PyTorch runs on one thread while an experiment runs (tiny models are faster
that way on a shared CPU, and reductions then happen in one fixed order), so a rerun gives the same
numbers bit for bit — except the entries under "timings", which are wall-clock measurements.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from llmlab.exp import registry
from llmlab.exp.common import Outcome, rounded, seed_everything

SEED = 0
FAST_NOTE = "fast mode: tiny sizes, verdict indicative only"


def results_dir(out_dir: str | Path, fast: bool) -> Path:
    """Where a run's experiment folders go: fast results beside, never over, full ones."""
    return Path(out_dir) / "fast" if fast else Path(out_dir)


def verdict_label(result: dict) -> str:
    """The verdict as shown to a reader: a fast run's is marked indicative."""
    return f"{result['verdict']} ({FAST_NOTE})" if result.get("fast") else result["verdict"]


def run_experiment(name: str, out_dir: str | Path, fast: bool = False, seed: int = SEED) -> dict:
    module = registry.load(name)
    folder = results_dir(out_dir, fast) / name
    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seed_everything(seed)
    start = time.perf_counter()
    try:
        outcome: Outcome = module.run(fast=fast)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    outcome.figure.savefig(folder / "plot.png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(outcome.figure)
    result = {
        "name": name,
        "title": module.TITLE,
        "claim": {"section": module.CLAIM.section, "zh": module.CLAIM.zh, "en": module.CLAIM.en},
        "fast": fast,
        "seed": seed,
        "verdict": "held" if outcome.held else "did not hold",
        "stated_checks": list(module.CHECKS),  # written before measuring, in the module
        "history": getattr(module, "HISTORY", ""),
        "checks": [{"text": c.text, "held": bool(c.held)} for c in outcome.checks],
        "numbers": rounded(outcome.numbers),
        "discussion": outcome.discussion,
        "timings": rounded({**outcome.timings, "total_seconds": seconds}, 4),
    }
    (folder / "result.json").write_text(
        json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (folder / "report.md").write_text(render_report(result), encoding="utf-8")
    return result


def render_report(result: dict, image: str = "plot.png") -> str:
    claim = result["claim"]
    lines = [
        f"# {result['name']}: {result['title']}",
        "",
        f"**Claim** (notes, §{claim['section']}):",
        "",
        f"> {claim['zh']}",
        ">",
        f"> *{claim['en']}*",
        "",
        "**Checks, stated before measuring:**",
        "",
        *[f"- {text}" for text in result.get("stated_checks", [])],
        "",
        f"**Verdict: {verdict_label(result)}**",
        "",
        "## Measured",
        "",
    ]
    lines += [f"- {'✅' if c['held'] else '❌'} {c['text']}" for c in result["checks"]]
    if result["discussion"]:
        lines += ["", "## Discussion", "", result["discussion"]]
    if result.get("history"):
        lines += ["", "## What did not hold, and what changed", "", result["history"]]
    lines += [
        "",
        f"![{result['name']}]({image})",
        "",
        f"Seed {result['seed']}; took "
        f"{result['timings']['total_seconds']:.1f} s. All numbers: `result.json`.",
        "",
    ]
    return "\n".join(lines)
