"""The Ray executor: the local executor's batches, checkpoints and sinks, with the operators on Ray Data.

    executor: ray                                  # in the recipe, or:
    llmlab data run RECIPE --executor ray          # pip install 'llmlab[ray]'

Each batch (`batch_size` records; use large batches, e.g. 10k, on a cluster) becomes a Ray Dataset
cut into partitions (`np` of them, or one per CPU of the cluster). Per partition, `map_batches`
runs the stateless operators (mappers, filters, formatters) and then the `prepare` step of the
deduplicators that follow them: exact digests, MinHash signatures with their LSH band keys,
SimHashes — the expensive part of deduplication. The decision ("does a kept document already own
one of these band keys?") needs the whole stream's index, so it runs once, in the driver, in
stream order, against the global band buckets: the kept set is exactly the local executor's
whatever the partitioning. Selectors run in the driver too.

The driver keeps the local executor's loop, so quarantine, tracing, reports, per-batch checkpoints
and `--resume` behave the same (a run killed under one executor can be resumed under the other).
Ray is started locally (`num_cpus=np` when np > 1) unless it is already initialized or
`RAY_ADDRESS` names a cluster; a Ray started here is shut down at the end.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time

from llmlab.data.executor import LocalExecutor, run_segment
from llmlab.data.ops.base import RecipeError
from llmlab.data.tracer import OpTrace

_ops_cache: dict[str, list] = {}  # per Ray worker process: ops unpickled once per run


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RecipeError(
            "executor 'ray' needs Ray Data: pip install 'llmlab[ray]' (or 'ray[data]')"
        ) from None
    return ray


class _RaySession:
    """Starts a local Ray if none is running and shuts it down when the last run using it ends
    (runs may overlap, e.g. under `llmlab data serve`). A Ray started by the caller is left alone."""

    lock = threading.Lock()
    users = 0
    owned = False

    def __init__(self, np: int):
        self.np = np

    def __enter__(self):
        ray = _import_ray()
        cls = type(self)
        with cls.lock:
            if not ray.is_initialized():
                quiet = {"log_to_driver": False, "configure_logging": False}
                if os.environ.get("RAY_ADDRESS"):  # join the cluster it names
                    ray.init(**quiet)
                else:  # "local": a fresh Ray, never one a stray `ray start` left running
                    ray.init(
                        address="local",
                        num_cpus=self.np if self.np > 1 else None,
                        include_dashboard=False,
                        **quiet,
                    )
                cls.owned = True
            cls.users += 1

    def __exit__(self, *exc):
        import ray

        cls = type(self)
        with cls.lock:
            cls.users -= 1
            if cls.users == 0 and cls.owned:
                ray.shutdown()
                cls.owned = False
        return False


def _preparable(op) -> bool:
    """A stateful operator whose per-record keys can be computed apart from its state."""
    return callable(getattr(op, "prepare", None)) and callable(getattr(op, "admit", None))


def _worker_ops(ops_ref) -> list:
    import ray

    key = ops_ref.hex()
    if key not in _ops_cache:
        _ops_cache.clear()
        _ops_cache[key] = pickle.loads(ray.get(ops_ref))
    return _ops_cache[key]


def _ray_stage(
    batch: dict, ops_box: list, mapped: list[int], prepared: list[int], max_samples: int
) -> dict:
    """One partition: run `mapped` operators, then compute the keys of the `prepared` deduplicators.

    Returns one row per output record (`blob` = pickled (record, [keys per prepared op])) plus one
    row with `sub = -1` carrying the trace results, all tagged with the partition's first input
    sequence number so the driver can restore stream order."""
    if len(batch["blob"]) == 0:
        return {"seq": [], "sub": [], "blob": []}
    ops = _worker_ops(ops_box[0])  # boxed so Ray does not resolve the reference for us
    records = [pickle.loads(b) for b in batch["blob"]]
    records, results = run_segment(ops, mapped, records, max_samples)
    keys, seconds = [], []
    for i in prepared:
        start = time.perf_counter()
        keys.append(ops[i].prepare(records))
        seconds.append(time.perf_counter() - start)
    blobs = [pickle.dumps((results, seconds, os.getpid()), protocol=pickle.HIGHEST_PROTOCOL)]
    blobs += [
        pickle.dumps((r, [k[n] for k in keys]), protocol=pickle.HIGHEST_PROTOCOL)
        for n, r in enumerate(records)
    ]
    first = int(batch["seq"][0])
    return {"seq": [first] * len(blobs), "sub": list(range(-1, len(records))), "blob": blobs}


class RayExecutor(LocalExecutor):
    executor_name = "ray"

    def _plan(self) -> list[tuple[bool, list[int]]]:
        """Ray stages (True): stateless operators followed by the deduplicators they prepare keys for.
        Driver stages (False): other stateful operators (selectors), one each."""
        segments: list[tuple[bool, list[int]]] = []
        for i, op in enumerate(self.ops):
            last = segments[-1] if segments else (False, [])
            stage_open = last[0] and not any(not self.ops[j].stateless for j in last[1])
            if (op.stateless and stage_open) or (_preparable(op) and last[0]):
                last[1].append(i)
            elif op.stateless or _preparable(op):
                segments.append((True, [i]))
            else:
                segments.append((False, [i]))
        return segments

    def _make_pool(self):
        return None  # Ray replaces the process pool

    def run(self, resume: bool = False) -> dict:
        with _RaySession(self.recipe.np):
            return self._run_on_ray(resume)

    def _run_on_ray(self, resume: bool) -> dict:
        import ray

        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False  # our own progress bar reports records/s
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.partitions = max(1, self.recipe.np if self.recipe.np > 1 else cpus)
        self.ops_ref = ray.put(pickle.dumps(self.ops, protocol=pickle.HIGHEST_PROTOCOL))
        self.worker_pids: set[int] = set()  # Ray worker processes that ran a partition
        try:
            return super().run(resume=resume)
        finally:
            del self.ops_ref

    def _process(
        self, records: list[dict], pool, start_segment: int = 0
    ) -> tuple[list[dict], list[dict]]:
        failures: list[dict] = []
        for on_ray, indices in self.segments[start_segment:]:
            if on_ray and records:
                records = self._ray_segment(records, indices, failures)
            else:
                records, results = run_segment(self.ops, indices, records, self.tracer.max_samples)
                self._record(results, failures)
        return records, failures

    def _ray_segment(
        self, records: list[dict], indices: list[int], failures: list[dict]
    ) -> list[dict]:
        import ray

        mapped = [i for i in indices if self.ops[i].stateless]
        prepared = [i for i in indices if not self.ops[i].stateless]
        rows = [
            {"seq": n, "blob": pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL)}
            for n, r in enumerate(records)
        ]
        dataset = ray.data.from_items(rows, override_num_blocks=min(self.partitions, len(rows)))
        kwargs = {
            "ops_box": [self.ops_ref],
            "mapped": mapped,
            "prepared": prepared,
            "max_samples": self.tracer.max_samples,
        }
        out = dataset.map_batches(
            _ray_stage, batch_size=None, batch_format="numpy", fn_kwargs=kwargs
        ).take_all()
        out.sort(key=lambda row: (int(row["seq"]), int(row["sub"])))
        records, keys = [], []
        prepare_seconds = [0.0] * len(prepared)
        for row in out:
            if int(row["sub"]) == -1:  # a partition's trace, in stream order like the local pool's
                results, seconds, pid = pickle.loads(row["blob"])
                self.worker_pids.add(pid)
                self._record(results, failures)
                prepare_seconds = [a + b for a, b in zip(prepare_seconds, seconds)]
            else:
                record, record_keys = pickle.loads(row["blob"])
                records.append(record)
                keys.append(record_keys)
        for k, i in enumerate(
            prepared
        ):  # global, ordered decisions against the whole stream's index
            hook = OpTrace(self.tracer.max_samples)
            start = time.perf_counter()
            kept = self.ops[i].admit(records, [rk[k] for rk in keys], hook)
            self.tracer.record(
                i, len(records), len(kept), hook, prepare_seconds[k] + time.perf_counter() - start
            )
            survivors = {id(r) for r in kept}
            keys = [rk for r, rk in zip(records, keys) if id(r) in survivors]
            records = kept
        return records
