"""Charts of a run folder's metrics.jsonl: loss, learning rate, gradient norm, per-layer gradient flow.

    llmlab plot runs/pretrain-tiny          # → runs/pretrain-tiny/training.png, gradient_flow.png

training.png: train (and eval) loss, learning rate and global gradient norm against the step.
gradient_flow.png: per-layer gradient norm (log scale) from the first to the last layer, one line per
diagnostics step — a healthy network's lines are flat-ish; vanishing gradients slope up to the right.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmlab.errors import LlmlabError


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise LlmlabError(f"no metrics.jsonl in {run_dir} (is it a training run folder?)")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
    return records


def latest_per_step(records: list[dict], kind: str) -> list[dict]:
    """One record per step (after a resume, the re-run steps replace the killed run's)."""
    by_step = {r["step"]: r for r in records if r.get("kind") == kind}
    return [by_step[s] for s in sorted(by_step)]


def plot_run(run_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    train, evals, diags = (latest_per_step(records, k) for k in ("train", "eval", "diag"))
    if not train:
        raise LlmlabError(f"{run_dir}/metrics.jsonl has no training steps yet")
    written = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss"] for r in train], label="train")
    if evals:
        axes[0].plot(
            [r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval"
        )
    axes[0].set(title="loss", xlabel="step")
    axes[0].legend()
    axes[1].plot(steps, [r["lr"] for r in train])
    axes[1].set(title="learning rate", xlabel="step")
    raw = [r["grad_norm"] for r in train]
    applied = [r.get("grad_norm_applied", r["grad_norm"]) for r in train]
    axes[2].plot(steps, raw, label="raw")
    axes[2].plot(steps, applied, label="applied (clipped)")
    # A log axis needs a positive value (an RL objective can log zero norms throughout);
    # asking for one anyway only earns a matplotlib warning on the user's terminal.
    positive = any(v is not None and v > 0 for v in raw + applied)
    axes[2].set(
        title="gradient norm" if positive else "gradient norm (no positive value)",
        xlabel="step",
        yscale="log" if positive else "linear",
    )
    axes[2].legend()
    fig.tight_layout()
    written.append(run_dir / "training.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    if diags:
        layers = list(diags[-1]["grad_norms"])
        fig, ax = plt.subplots(figsize=(max(8, len(layers) * 0.25), 5))
        cmap = plt.get_cmap("viridis")
        for i, record in enumerate(diags):
            norms = [max(record["grad_norms"].get(n, float("nan")), 1e-20) for n in layers]
            ax.plot(
                range(len(layers)),
                norms,
                color=cmap(i / max(1, len(diags) - 1)),
                label=f"step {record['step']}",
            )
        ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
        ax.set(yscale="log", ylabel="gradient norm", title="gradient flow (first layer → last)")
        if len(diags) <= 12:
            ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(run_dir / "gradient_flow.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written
