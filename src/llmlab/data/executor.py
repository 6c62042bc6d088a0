"""The local executor: stream sources in batches through the operators into the sinks.

    from llmlab.data import run_recipe
    report = run_recipe("recipes/notes.yaml", resume=False)

Per batch: bad input and records without a text field go to `quarantine.jsonl`; stateless
operators run in `np` worker processes (the batch is split, order kept); stateful ones
(deduplicators, selectors) run here. After each batch the sinks are flushed and a checkpoint is
committed atomically (input position, operator states, sink positions, tracer counters). `resume`
cuts the sinks back to the last checkpoint and skips the input already consumed, so a run killed
at any moment and resumed writes exactly what an uninterrupted run writes.

Nothing a previous run published is lost when this one fails: sources are checked before any
output is opened, sinks (and the quarantine file) write to staged targets, and only a run that
reaches its end publishes them (`commit`). `strict: true` makes a bad record fail the run instead
of going to quarantine.

`executor: ray` (or `run_recipe(..., executor="ray")`) swaps in `ray_executor.RayExecutor`, which
keeps this loop and runs the operators' work on Ray Data.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import pickle
import shutil
import signal
import time
from multiprocessing import get_context

from llmlab.data.io.sinks import _jsonable, open_sink, staged_path
from llmlab.data.io.sources import BadRecord, check_source, open_source
from llmlab.data.ops.base import RecipeError
from llmlab.data.recipe import Recipe, load_recipe
from llmlab.data.tracer import OpTrace, Tracer

_CHECKPOINT = "state.pkl"
_worker_ops: list = []


def _init_worker(ops_blob: bytes) -> None:
    global _worker_ops
    _worker_ops = pickle.loads(ops_blob)


def run_segment(ops, indices: list[int], records: list[dict], max_samples: int):
    """Run consecutive operators over records; returns records and (index, in, out, hook, secs) per op."""
    results = []
    for i in indices:
        hook = OpTrace(max_samples)
        start = time.perf_counter()
        n_in = len(records)
        records = ops[i].process(records, hook)
        results.append((i, n_in, len(records), hook, time.perf_counter() - start))
    return records, results


def _worker_segment(args):
    indices, records, max_samples = args
    return run_segment(_worker_ops, indices, records, max_samples)


class LocalExecutor:
    executor_name = "local"

    def __init__(self, recipe: Recipe, progress: bool = True, on_progress=None):
        self.recipe = recipe
        self.ops = recipe.build_ops()
        self.tracer = Tracer(self.ops, recipe.trace_samples, recipe.tracer)
        self.progress = progress
        self.on_progress = on_progress  # called after every batch with the running counts
        self.work_dir = recipe.work_dir
        self.ckpt_dir = os.path.join(self.work_dir, "checkpoint")
        self.segments = self._plan()

    def _plan(self) -> list[tuple[bool, list[int]]]:
        """Consecutive stateless operators form one segment that workers can run."""
        segments: list[tuple[bool, list[int]]] = []
        for i, op in enumerate(self.ops):
            parallel = op.stateless and self.recipe.np > 1
            if segments and segments[-1][0] == parallel and parallel:
                segments[-1][1].append(i)
            else:
                segments.append((parallel, [i]))
        return segments

    def _make_pool(self):
        if self.recipe.np > 1 and any(p for p, _ in self.segments):
            return get_context("spawn").Pool(
                self.recipe.np, _init_worker, (pickle.dumps(self.ops),)
            )
        return None

    # -- checkpoint ---------------------------------------------------------------------------
    def _save(self, state: dict) -> None:
        os.makedirs(self.ckpt_dir, exist_ok=True)
        tmp = os.path.join(self.ckpt_dir, _CHECKPOINT + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(self.ckpt_dir, _CHECKPOINT))

    def _load(self) -> dict | None:
        path = os.path.join(self.ckpt_dir, _CHECKPOINT)
        if not os.path.exists(path):
            return None
        with open(path, "rb") as fh:
            return pickle.load(fh)

    # -- run ----------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        recipe = self.recipe
        os.makedirs(self.work_dir, exist_ok=True)
        state = self._load() if resume else None
        if resume and state is None:
            raise RecipeError(f"nothing to resume: no checkpoint in {self.ckpt_dir}")
        if state and state.get("done"):
            return json.load(open(os.path.join(self.work_dir, "report.json"), encoding="utf-8"))
        for spec in recipe.sources:
            check_source(spec)
        if not resume:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        sinks = [open_sink(spec) for spec in recipe.sinks]
        quarantine_path = os.path.join(self.work_dir, "quarantine.jsonl")
        quarantine = open(staged_path(quarantine_path), "ab")
        consumed, written, quarantined, batches, elapsed = 0, 0, 0, 0, 0.0
        if state:
            for op, op_state in zip(self.ops, state["ops"]):
                op.load_state(op_state)
            self.tracer.load_state(state["tracer"])
            consumed, written, quarantined = (
                state["consumed"],
                state["written"],
                state["quarantined"],
            )
            batches, elapsed = state["batches"], state["elapsed"]
        for sink, pos in zip(sinks, state["sinks"] if state else [None] * len(sinks)):
            sink.truncate(pos)  # a fresh run starts empty; a resumed one drops uncommitted output
        quarantine.truncate(state["quarantine"] if state else 0)
        quarantine.seek(0, os.SEEK_END)

        stream = itertools.islice(
            itertools.chain.from_iterable(open_source(s) for s in recipe.sources), consumed, None
        )
        pool = self._make_pool()
        kill_at = int(os.environ.get("LLMLAB_DATA_KILL_AT_BATCH", "-1"))  # crash-test hook
        started = time.perf_counter() - elapsed
        bar = _progress(self.progress)
        try:
            with bar:
                task = bar.add_task(recipe.project, total=None, completed=consumed) if bar else None
                while True:
                    raw = list(itertools.islice(stream, recipe.batch_size))
                    if not raw:
                        break
                    records, bad = self._admit(raw, consumed)
                    out, failures = self._process(records, pool)
                    bad += failures
                    if bad and recipe.strict:
                        _refuse(bad[0])
                    for sink in sinks:
                        sink.write(out)
                    quarantine.write(
                        b"".join(
                            json.dumps(_jsonable(b), ensure_ascii=False).encode() + b"\n"
                            for b in bad
                        )
                    )
                    consumed += len(raw)
                    written += len(out)
                    quarantined += len(bad)
                    batches += 1
                    if batches == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)  # after writing, before committing
                    if recipe.checkpoint:
                        self._commit(
                            sinks, quarantine, consumed, written, quarantined, batches, started
                        )
                    if bar:
                        bar.update(task, completed=consumed)
                    if self.on_progress:
                        self.on_progress({"records_read": consumed, "records_written": written,
                                          "quarantined": quarantined, "batches": batches})  # fmt: skip
                tail, failures = self._finish(pool)
                if failures and recipe.strict:
                    _refuse(failures[0])
                for sink in sinks:
                    sink.write(tail)
                written += len(tail)
                quarantined += len(failures)
                quarantine.write(
                    b"".join(
                        json.dumps(_jsonable(b), ensure_ascii=False).encode() + b"\n"
                        for b in failures
                    )
                )
            for sink in sinks:
                sink.commit()
            quarantine.close()
            os.replace(staged_path(quarantine_path), quarantine_path)
        finally:
            if pool:
                pool.terminate()
            for sink in sinks:
                sink.close()
            quarantine.close()
        seconds = time.perf_counter() - started
        summary = {
            "project": recipe.project, "executor": self.executor_name, "records_read": consumed, "records_written": written,
            "quarantined": quarantined, "batches": batches, "seconds": seconds,
            "records_per_second": consumed / seconds if seconds > 0 else 0.0,
            "sinks": [s.get("path") or f"{s.get('table')} @ {s.get('url', '').split('@')[-1]}" for s in recipe.sinks],
        }  # fmt: skip
        report = self.tracer.write(self.work_dir, summary)
        if recipe.checkpoint:
            self._save({"done": True})
        return report

    def _admit(self, raw: list, offset: int) -> tuple[list[dict], list[dict]]:
        records, bad = [], []
        key = self.recipe.text_key
        for n, item in enumerate(raw):
            if isinstance(item, BadRecord):
                bad.append({"reason": item.reason, "location": item.location, "raw": item.raw})
            elif not isinstance(item.get(key), str):
                why = (
                    "missing text field"
                    if key not in item
                    else f"text field {key!r} is not a string"
                )
                bad.append({"reason": why, "location": f"record {offset + n}", "raw": item})
            else:
                records.append(item)
        return records, bad

    def _process(
        self, records: list[dict], pool, start_segment: int = 0
    ) -> tuple[list[dict], list[dict]]:
        failures: list[dict] = []
        for parallel, indices in self.segments[start_segment:]:
            if parallel and pool and len(records) > 1:
                size = -(-len(records) // self.recipe.np)
                chunks = [
                    (indices, records[i : i + size], self.tracer.max_samples)
                    for i in range(0, len(records), size)
                ]
                parts = pool.map(_worker_segment, chunks)
                records = [r for part, _ in parts for r in part]
                results = [res for _, rs in parts for res in rs]
            else:
                records, results = run_segment(self.ops, indices, records, self.tracer.max_samples)
            self._record(results, failures)
        return records, failures

    def _record(self, results, failures: list[dict]) -> None:
        """Add run_segment results to the tracer; records an operator failed on join `failures`."""
        for i, n_in, n_out, hook, secs in results:
            self.tracer.record(i, n_in, n_out, hook, secs)
            failures.extend(
                {"reason": why, "location": f"operator {self.ops[i].name}", "raw": rec}
                for rec, why in hook.failures
            )

    def _finish(self, pool) -> tuple[list[dict], list[dict]]:
        """Flush held-back records (selectors) through the operators after them."""
        out, failures = [], []
        for s, (_, indices) in enumerate(self.segments):
            for i in indices:
                hook = OpTrace(self.tracer.max_samples)
                held = self.ops[i].finish(hook)
                self.tracer.record(i, 0, len(held), hook, 0.0)
                if not held:
                    continue
                position = indices.index(i)
                rest = indices[position + 1 :]
                if rest:
                    held, results = run_segment(self.ops, rest, held, self.tracer.max_samples)
                    for j, n_in, n_out, h, secs in results:
                        self.tracer.record(j, n_in, n_out, h, secs)
                held, more = self._process(held, pool, s + 1)
                out.extend(held)
                failures.extend(more)
        return out, failures

    def _commit(self, sinks, quarantine, consumed, written, quarantined, batches, started) -> None:
        for sink in sinks:
            sink.flush()
        quarantine.flush()
        os.fsync(quarantine.fileno())
        self._save({
            "consumed": consumed, "written": written, "quarantined": quarantined, "batches": batches,
            "elapsed": time.perf_counter() - started, "sinks": [s.position() for s in sinks],
            "quarantine": quarantine.tell(), "ops": [op.state() for op in self.ops], "tracer": self.tracer.state(),
        })  # fmt: skip


def _refuse(bad: dict) -> None:
    raise RecipeError(
        f"strict mode: bad record at {bad['location']}: {bad['reason']} "
        "(nothing was published; set strict: false to quarantine bad records instead)"
    )


def _progress(enabled: bool):
    if not enabled:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class RateColumn(TextColumn):
        def __init__(self):
            super().__init__("")

        def render(self, task):
            speed = task.speed or (task.completed / task.elapsed if task.elapsed else 0)
            return f"{speed:,.0f} records/s"

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
    )


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __bool__(self):
        return False


def run_recipe(
    path_or_recipe,
    resume: bool = False,
    progress: bool = True,
    work_dir: str | None = None,
    executor: str | None = None,
    on_progress=None,
) -> dict:
    """Run a recipe (path or `Recipe`); `executor` overrides the recipe's `local` or `ray`."""
    recipe = load_recipe(path_or_recipe) if isinstance(path_or_recipe, str) else path_or_recipe
    if work_dir:
        recipe.work_dir = work_dir
    return executor_class(executor or recipe.executor)(recipe, progress, on_progress).run(
        resume=resume
    )


# Executors by name, as "module:class" imported on first use: RayExecutor subclasses LocalExecutor,
# so this module must not import ray_executor (that was an import cycle), and local runs never
# load it. A new executor adds a line here.
EXECUTORS = {
    "local": "llmlab.data.executor:LocalExecutor",
    "ray": "llmlab.data.ray_executor:RayExecutor",
}


def executor_class(kind: str):
    """The executor class registered under `kind` (a recipe's `executor:` field)."""
    if kind not in EXECUTORS:
        raise RecipeError(f"unknown executor {kind!r}; use one of: {', '.join(EXECUTORS)}")
    module, name = EXECUTORS[kind].split(":")
    return getattr(importlib.import_module(module), name)
