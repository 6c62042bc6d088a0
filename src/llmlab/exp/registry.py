"""Experiment names → modules, in the order the notes make the claims.

Each module lives in `llmlab/exp/<name with underscores>.py` and defines NAME, TITLE, CLAIM and
`run(fast) -> Outcome` (see llmlab.exp.common). Modules are imported only when needed.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from llmlab.errors import LlmlabError

EXPERIMENTS = [
    "vanishing-gradients",
    "exploding-gradients",
    "sigmoid-saturation",
    "bn-vs-ln",
    "dropout",
    "pooling-invariance",
    "attention",
    "rnn-vs-transformer-parallel",
    "long-range-memory",
    "embeddings",
    "optimizers",
    "bert-mlm-nsp",
]


class ExperimentUnavailable(LlmlabError):
    """A listed experiment whose module (or what it builds on) is not there yet."""


def load(name: str) -> ModuleType:
    if name not in EXPERIMENTS:
        raise LlmlabError(
            f"unknown experiment '{name}' (run `llmlab exp list`; known: {', '.join(EXPERIMENTS)})"
        )
    try:
        return importlib.import_module(f"llmlab.exp.{name.replace('-', '_')}")
    except ImportError as exc:
        raise ExperimentUnavailable(f"experiment '{name}' is not available: {exc}") from None


def available() -> list[str]:
    """Experiments whose module imports (an experiment can build on other subsystems, e.g. bert-mlm-nsp on
    llmlab.train.bert and llmlab.models.bert)."""
    names = []
    for name in EXPERIMENTS:
        try:
            load(name)
        except ExperimentUnavailable:
            continue
        names.append(name)
    return names
