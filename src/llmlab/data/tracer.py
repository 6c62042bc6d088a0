"""Per-operator counters and samples, plus the run report (Markdown + JSON).

Each operator gets records in/out/removed/failed, seconds spent, and up to N samples of what it
changed (before/after) or removed (record + why), written to `trace/<op>.jsonl`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from llmlab.data.ops.base import TraceHook


class OpTrace(TraceHook):
    """Collects one operator's events for one batch (picklable, so workers can return it)."""

    def __init__(self, max_samples: int):
        self.max_samples = max_samples
        self.removed_count = 0
        self.samples: list[dict] = []
        self.failures: list[tuple[dict, str]] = []

    def changed(self, before, after):
        if len(self.samples) < self.max_samples:
            self.samples.append({"event": "changed", "before": before, "after": after})

    def removed(self, record, why):
        self.removed_count += 1
        if len(self.samples) < self.max_samples:
            self.samples.append({"event": "removed", "record": record, "why": why})

    def failed(self, record, reason):
        self.failures.append((record, reason))


@dataclass
class OpStats:
    name: str
    kind: str
    records_in: int = 0
    records_out: int = 0
    removed: int = 0
    failed: int = 0
    seconds: float = 0.0
    samples: list = field(default_factory=list)


class Tracer:
    def __init__(self, ops, max_samples: int, enabled: bool = True):
        self.max_samples = max_samples if enabled else 0
        self.stats = [OpStats(op.name, op.kind) for op in ops]

    def new_hook(self) -> OpTrace:
        return OpTrace(self.max_samples)

    def record(self, index: int, n_in: int, n_out: int, hook: OpTrace, seconds: float) -> None:
        s = self.stats[index]
        s.records_in += n_in
        s.records_out += n_out
        s.removed += hook.removed_count
        s.failed += len(hook.failures)
        s.seconds += seconds
        room = self.max_samples - len(s.samples)
        if room > 0:
            s.samples.extend(hook.samples[:room])

    def state(self):
        return [asdict(s) for s in self.stats]

    def load_state(self, state):
        self.stats = [OpStats(**s) for s in state]

    def write(self, work_dir: str, summary: dict) -> dict:
        """trace/<op>.jsonl, report.json and report.md; returns the report."""
        trace_dir = os.path.join(work_dir, "trace")
        os.makedirs(trace_dir, exist_ok=True)
        names: dict[str, int] = {}
        rows = []
        for s in self.stats:
            names[s.name] = names.get(s.name, 0) + 1
            file = s.name if names[s.name] == 1 else f"{s.name}_{names[s.name]}"
            with open(os.path.join(trace_dir, f"{file}.jsonl"), "w", encoding="utf-8") as fh:
                for sample in s.samples:
                    fh.write(json.dumps(sample, ensure_ascii=False, default=str) + "\n")
            row = {k: v for k, v in asdict(s).items() if k != "samples"}
            row["trace"] = f"trace/{file}.jsonl"
            rows.append(row)
        report = {**summary, "operators": rows}
        with open(os.path.join(work_dir, "report.json"), "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, ensure_ascii=False)
        with open(os.path.join(work_dir, "report.md"), "w", encoding="utf-8") as fh:
            fh.write(markdown_report(report))
        return report


def markdown_report(report: dict) -> str:
    lines = [
        f"# Data run report: {report['project']}", "",
        f"- records read: {report['records_read']}", f"- records written: {report['records_written']}",
        f"- quarantined: {report['quarantined']} (see `quarantine.jsonl`)", f"- seconds: {report['seconds']:.2f}",
        f"- records/s: {report['records_per_second']:.1f}", f"- sinks: {', '.join(report['sinks'])}", "",
        "| # | operator | kind | in | out | removed | failed | seconds | trace |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for i, r in enumerate(report["operators"], 1):
        lines.append(
            f"| {i} | `{r['name']}` | {r['kind']} | {r['records_in']} | {r['records_out']} | {r['removed']} | {r['failed']} | {r['seconds']:.3f} | {r['trace']} |"
        )
    return "\n".join(lines) + "\n"
