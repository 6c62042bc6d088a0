"""Operator base classes and the name → class registry.

An operator is one small class registered by name with `@register("name")`. Its constructor's
keyword arguments are the recipe arguments (`- name: {arg: value}`), and its docstring's first line
is what `llmlab data ops` prints. Five kinds:

- Mapper: `map(text) -> text` on the text field (or `map_record(record) -> record`).
- Filter: `compute(record) -> stat` and `keep(stat) -> bool`; removed records are traced with the stat.
- Deduplicator: stateful over the whole stream; `process(batch) -> kept`, with `state()`/`load_state()`
  so checkpoints can resume it exactly.
- Selector: consumes the stream, emits at `finish()` (top-k, reservoir sample) in bounded memory.
- Formatter: reshapes records (one in, any number out), e.g. markdown → Q&A records.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from llmlab.errors import LlmlabError

OPS: dict[str, type[Op]] = {}


class RecipeError(LlmlabError):
    """A recipe names an unknown operator, a bad argument, or an unreadable source."""


def register(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        if name in OPS:
            raise RuntimeError(f"operator {name!r} registered twice")
        cls.name = name
        OPS[name] = cls
        return cls

    return wrap


def op_arguments(cls: type) -> dict[str, Any]:
    """Constructor arguments and their defaults (`inspect.Parameter.empty` when required)."""
    params = inspect.signature(cls.__init__).parameters
    return {n: p.default for n, p in params.items() if n != "self" and p.kind is p.KEYWORD_ONLY}


def build_op(name: str, args: dict[str, Any] | None) -> Op:
    """Instantiate a registered operator, with one-line errors for unknown names or arguments."""
    if name not in OPS:
        close = [n for n in OPS if n.split("_")[0] == name.split("_")[0]][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see `llmlab data ops`)"
        raise RecipeError(f"unknown operator {name!r}{hint}")
    cls = OPS[name]
    args = dict(args or {})
    known = op_arguments(cls)
    for key in args:
        if key not in known:
            raise RecipeError(
                f"operator {name!r} has no argument {key!r}; it takes: {', '.join(known) or 'none'}"
            )
    missing = [k for k, v in known.items() if v is inspect.Parameter.empty and k not in args]
    if missing:
        raise RecipeError(f"operator {name!r} needs argument(s): {', '.join(missing)}")
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"operator {name!r}: {exc}") from None


class Op:
    """Base of all operators."""

    name = "op"
    kind = "op"
    #: stateless operators may run in worker processes; stateful ones run in the main process.
    stateless = True
    text_key = "text"

    def process(self, batch: list[dict], trace: TraceHook) -> list[dict]:
        raise NotImplementedError

    def finish(self, trace: TraceHook) -> list[dict]:
        """Records held back until the end of the stream (selectors)."""
        return []

    def state(self) -> Any:
        return None

    def load_state(self, state: Any) -> None:
        pass


class HoldAllOp(Op):
    """An operator that needs the whole stream before it can emit anything (a split by section,
    pairs drawn across records): it holds every record and does its work in `finish`. Its state is
    the held records, so a resumed run holds the same ones."""

    stateless = False

    def __init__(self):
        self.held: list[dict] = []

    def process(self, batch, trace):
        self.held.extend(batch)
        return []

    def state(self):
        return {"held": self.held}

    def load_state(self, state):
        self.held = list(state["held"])


class TraceHook:
    """What an operator reports while it runs; the executor's tracer implements it."""

    def changed(self, before: dict, after: dict) -> None: ...

    def removed(self, record: dict, why: Any) -> None: ...

    def failed(self, record: dict, reason: str) -> None: ...


class Mapper(Op):
    """Rewrites each record's text; records are never removed."""

    kind = "mapper"

    def map(self, text: str) -> str:
        raise NotImplementedError

    def map_record(self, record: dict) -> dict:
        text = record.get(self.text_key)
        if not isinstance(text, str):
            return record
        new = self.map(text)
        if new == text:
            return record
        out = dict(record)
        out[self.text_key] = new
        return out

    def process(self, batch, trace):
        out = []
        for record in batch:
            try:
                new = self.map_record(record)
            except Exception as exc:  # a bad record is quarantined, the run goes on
                trace.failed(record, f"{self.name}: {type(exc).__name__}: {exc}")
                continue
            if new is not record:
                trace.changed(record, new)
            out.append(new)
        return out


class Filter(Op):
    """Keeps records whose statistic passes `keep`; the statistic is traced for removed ones."""

    kind = "filter"

    def compute(self, record: dict) -> Any:
        raise NotImplementedError

    def keep(self, stat: Any) -> bool:
        raise NotImplementedError

    def process(self, batch, trace):
        out = []
        for record in batch:
            try:
                stat = self.compute(record)
            except Exception as exc:
                trace.failed(record, f"{self.name}: {type(exc).__name__}: {exc}")
                continue
            if self.keep(stat):
                out.append(record)
            else:
                trace.removed(record, stat)
        return out


class RangeFilter(Filter):
    """A filter keeping records whose numeric statistic lies in [min, max]."""

    def __init__(self, *, min: float | None = None, max: float | None = None):
        if min is not None and max is not None and min > max:
            raise ValueError(f"min ({min}) is larger than max ({max})")
        self.min, self.max = min, max

    def keep(self, stat: float) -> bool:
        return (self.min is None or stat >= self.min) and (self.max is None or stat <= self.max)

    def compute(self, record):
        return self.statistic(str(record.get(self.text_key) or ""))

    def statistic(self, text: str) -> float:
        raise NotImplementedError


class Formatter(Op):
    """Turns each record into zero or more records of a new shape."""

    kind = "formatter"

    def format(self, record: dict) -> Iterable[dict]:
        raise NotImplementedError

    def process(self, batch, trace):
        out = []
        for record in batch:
            try:
                produced = list(self.format(record))
            except Exception as exc:
                trace.failed(record, f"{self.name}: {type(exc).__name__}: {exc}")
                continue
            if not produced:
                trace.removed(record, "produced no records")
            elif len(produced) != 1 or produced[0] != record:
                trace.changed(record, {"produced": len(produced), "first": produced[0]})
            out.extend(produced)
        return out
