"""`llmlab data analyze`: per-field statistics, histograms (PNG) and a Markdown report.

Streams the input once; numeric values are kept in a bounded reservoir (100k per field) for
quantiles and histograms, so memory stays bounded whatever the size of the file.
"""

from __future__ import annotations

import json
import os
import random

from llmlab.data import textstats
from llmlab.data.io.sources import BadRecord, open_source
from llmlab.data.ops.base import RecipeError

_RESERVOIR = 100_000
_TEXT_STATS = ("text_length", "word_count", "alnum_ratio", "special_char_ratio")


class _Numbers:
    def __init__(self, seed: int):
        self.values: list[float] = []
        self.count, self.total = 0, 0.0
        self.lo, self.hi = float("inf"), float("-inf")
        self.rng = random.Random(seed)

    def add(self, x: float) -> None:
        self.count += 1
        self.total += x
        self.lo, self.hi = min(self.lo, x), max(self.hi, x)
        if len(self.values) < _RESERVOIR:
            self.values.append(x)
        else:
            j = self.rng.randrange(self.count)
            if j < _RESERVOIR:
                self.values[j] = x

    def summary(self) -> dict:
        v = sorted(self.values)
        q = lambda p: v[min(len(v) - 1, int(p * len(v)))]  # noqa: E731
        return {"count": self.count, "mean": self.total / self.count, "min": self.lo, "p10": q(0.1),
                "p50": q(0.5), "p90": q(0.9), "max": self.hi}  # fmt: skip


def _source_for(path: str) -> dict:
    ext = path.rsplit(".", 1)[-1].lower()
    kinds = {"jsonl": "jsonl", "json": "json", "csv": "csv", "tsv": "tsv", "parquet": "parquet"}
    if ext not in kinds:
        raise RecipeError(
            f"cannot analyze {path}: use a .jsonl, .json, .csv, .tsv or .parquet file"
        )
    if not os.path.exists(path):
        raise RecipeError(f"{path} does not exist")
    return {"type": kinds[ext], "path": path}


def analyze(path: str, out_dir: str, text_key: str = "text") -> dict:
    numbers: dict[str, _Numbers] = {}
    presence: dict[str, int] = {}
    languages: dict[str, int] = {}
    records = bad = 0
    for item in open_source(_source_for(path)):
        if isinstance(item, BadRecord):
            bad += 1
            continue
        records += 1
        for key, value in item.items():
            presence[key] = presence.get(key, 0) + 1
            if isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                numbers.setdefault(key, _Numbers(len(numbers))).add(float(value))
            elif isinstance(value, str) and key != text_key:
                numbers.setdefault(f"{key}.length", _Numbers(len(numbers))).add(len(value))
        text = item.get(text_key)
        if isinstance(text, str):
            for stat in _TEXT_STATS:
                numbers.setdefault(f"{text_key}.{stat}", _Numbers(len(numbers))).add(
                    float(textstats.STATISTICS[stat](text))
                )
            code, _ = textstats.language(text[:2000])
            languages[code] = languages.get(code, 0) + 1
    if not records:
        raise RecipeError(f"{path} holds no readable records")
    os.makedirs(out_dir, exist_ok=True)
    fields = {name: n.summary() for name, n in numbers.items()}
    plots = {name: _histogram(n.values, name, out_dir) for name, n in numbers.items()}
    report = {"input": path, "records": records, "unreadable": bad, "field_presence": presence,
              "languages": languages, "fields": fields, "histograms": plots}  # fmt: skip
    with open(os.path.join(out_dir, "analysis.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, ensure_ascii=False)
    with open(os.path.join(out_dir, "analysis.md"), "w", encoding="utf-8") as fh:
        fh.write(_markdown(report))
    return report


def _histogram(values: list[float], name: str, out_dir: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    file = f"hist_{name.replace('/', '_')}.png"
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(values, bins=min(50, max(5, len(set(values)))))
    ax.set_title(name)
    ax.set_ylabel("records")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, file), dpi=80)
    plt.close(fig)
    return file


def _markdown(report: dict) -> str:
    lines = [f"# Analysis of {report['input']}", "", f"- records: {report['records']} (unreadable: {report['unreadable']})",
             f"- languages: {', '.join(f'{k}: {v}' for k, v in sorted(report['languages'].items(), key=lambda kv: -kv[1]))}",
             "", "| field | count | mean | min | p10 | p50 | p90 | max |", "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, s in report["fields"].items():
        lines.append(
            f"| {name} | {s['count']} | {s['mean']:.3g} | {s['min']:.3g} | {s['p10']:.3g} | {s['p50']:.3g} | {s['p90']:.3g} | {s['max']:.3g} |"
        )
    lines.append("")
    lines.extend(f"![{name}]({file})" for name, file in report["histograms"].items())
    return "\n".join(lines) + "\n"
