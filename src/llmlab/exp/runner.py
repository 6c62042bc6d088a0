"""Run an experiment and write its folder: result.json, plot.png, report.md.

    from llmlab.exp.runner import run_experiment
    result = run_experiment("dropout", out_dir="runs/lab", fast=True)

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


def run_experiment(name: str, out_dir: str | Path, fast: bool = False, seed: int = SEED) -> dict:
    module = registry.load(name)
    folder = Path(out_dir) / name
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
        f"**Verdict: {result['verdict']}**"
        + (" (fast mode: tiny sizes)" if result["fast"] else ""),
        "",
        "## Measured",
        "",
    ]
    lines += [f"- {'✅' if c['held'] else '❌'} {c['text']}" for c in result["checks"]]
    if result["discussion"]:
        lines += ["", "## Discussion", "", result["discussion"]]
    lines += [
        "",
        f"![{result['name']}]({image})",
        "",
        f"Seed {result['seed']}; took "
        f"{result['timings']['total_seconds']:.1f} s. All numbers: `result.json`.",
        "",
    ]
    return "\n".join(lines)
