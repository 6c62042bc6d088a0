"""Run a recipe on a cron schedule, keeping a run history and a failure log.

    llmlab data schedule recipes/notes.yaml --cron "0 1 * * *"           # every night at 01:00
    llmlab data schedule recipes/notes.yaml --cron "*/10 * * * *" --run-now --max-runs 3
    llmlab data schedule recipes/notes.yaml --history                    # past runs, then exit

`--cron` takes the 5 standard fields (minute hour day-of-month month day-of-week; `*`, lists,
ranges, steps, names such as `mon` or `jan`), in local time, parsed by `croniter`. A 6th field
adds seconds (`* * * * * */10` fires every 10 s), handy for tests.

The state folder (default `<work_dir>/schedule`) holds:

    history.jsonl    one line per run: run_id, scheduled, start, end, status (succeeded|failed),
                     records_read, records_written, quarantined, seconds, report, skipped
    failures.jsonl   one line per failed run: run_id, start, end, error (one line), traceback
    runs/<run_id>/   the run's own work_dir: report.md/json, trace/, quarantine.jsonl, checkpoint/
    schedule.lock    held while a scheduler runs, so two schedulers never share the folder

The recipe is re-read before every run, so edits take effect at the next run, and a recipe broken
in the meantime gives a failed run in the log, not a dead scheduler. Runs never overlap: fire times
missed while a run was still going are skipped (counted in the next history line's `skipped`).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from datetime import datetime

from llmlab.data.ops.base import RecipeError
from llmlab.data.recipe import load_recipe


class CronSchedule:
    """Fire times of a cron expression (5 fields, or 6 with seconds last)."""

    def __init__(self, expression: str):
        from croniter import croniter

        fields = expression.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(expression):
            raise RecipeError(f"invalid cron expression {expression!r}: expected 5 fields "
                              "(minute hour day-of-month month day-of-week), e.g. \"0 1 * * *\"")  # fmt: skip
        self.expression = expression
        try:  # an expression that can never fire (e.g. "0 0 30 2 *") is an error now, not at 01:00
            self.next_after(datetime(2000, 1, 1))
        except Exception:
            raise RecipeError(f"cron expression {expression!r} never fires") from None

    def next_after(self, moment: datetime) -> datetime:
        from croniter import croniter

        return croniter(self.expression, moment).get_next(datetime)


def _append_line(path: str, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_history(state_dir: str) -> list[dict]:
    path = os.path.join(state_dir, "history.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def one_line(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class Scheduler:
    """Runs `recipe_path` at every fire time of `cron`. `clock` and `sleep` can be replaced (tests)."""

    def __init__(self, recipe_path: str, cron: str, state_dir: str | None = None, executor: str | None = None,
                 clock: Callable[[], datetime] = datetime.now, sleep: Callable[[float], None] = time.sleep,
                 log: Callable[[str], None] = print):  # fmt: skip
        self.schedule = CronSchedule(cron)
        self.recipe_path = recipe_path
        recipe = load_recipe(
            recipe_path
        )  # a broken recipe is an error now, not at the first fire time
        self.state_dir = state_dir or os.path.join(recipe.work_dir, "schedule")
        self.executor = executor
        self.clock, self.sleep, self.log = clock, sleep, log
        self.history_path = os.path.join(self.state_dir, "history.jsonl")
        self.failures_path = os.path.join(self.state_dir, "failures.jsonl")

    def run_once(self, scheduled: datetime, skipped: int = 0) -> dict:
        """One run into `runs/<run_id>/`; never raises: a failure is logged and returned."""
        from llmlab.data.executor import run_recipe

        run_id = scheduled.strftime("%Y%m%d-%H%M%S")
        work_dir = os.path.join(self.state_dir, "runs", run_id)
        suffix = 1
        while os.path.exists(work_dir):  # a second run in the same second (run-now + schedule)
            suffix += 1
            work_dir = os.path.join(self.state_dir, "runs", f"{run_id}-{suffix}")
        run_id = os.path.basename(work_dir)
        start = self.clock()
        entry = {"run_id": run_id, "scheduled": scheduled.isoformat(timespec="seconds"),
                 "start": start.isoformat(timespec="seconds"), "skipped": skipped}  # fmt: skip
        try:
            recipe = load_recipe(self.recipe_path)  # re-read: edits apply from the next run on
            report = run_recipe(recipe, progress=False, work_dir=work_dir, executor=self.executor)
            entry.update(status="succeeded", records_read=report["records_read"], records_written=report["records_written"],
                         quarantined=report["quarantined"], report=os.path.join(work_dir, "report.md"))  # fmt: skip
        except Exception as exc:  # the schedule goes on; the failure log keeps the details
            entry.update(status="failed", error=one_line(exc))
            failure = {
                "run_id": run_id,
                "start": entry["start"],
                "error": entry["error"],
                "traceback": traceback.format_exc(),
            }
        end = self.clock()
        entry.update(
            end=end.isoformat(timespec="seconds"), seconds=round((end - start).total_seconds(), 3)
        )
        if entry["status"] == "failed":
            _append_line(self.failures_path, {**failure, "end": entry["end"]})
        _append_line(self.history_path, entry)
        return entry

    def loop(self, max_runs: int | None = None, run_now: bool = False) -> list[dict]:
        """Run at each fire time until `max_runs` runs are done (forever when None)."""
        os.makedirs(self.state_dir, exist_ok=True)
        with _Lock(os.path.join(self.state_dir, "schedule.lock")):
            entries: list[dict] = []
            due = self.clock() if run_now else self.schedule.next_after(self.clock())
            skipped = 0
            while max_runs is None or len(entries) < max_runs:
                self.log(
                    f"next run at {due.isoformat(timespec='seconds')} ({self.schedule.expression})"
                )
                while (wait := (due - self.clock()).total_seconds()) > 0:
                    self.sleep(min(wait, 60.0))  # short naps follow wall-clock jumps (suspend, DST)
                entry = self.run_once(due, skipped)
                entries.append(entry)
                outcome = (f"read {entry['records_read']}, wrote {entry['records_written']} → {entry['report']}"
                           if entry["status"] == "succeeded" else f"error: {entry['error']}")  # fmt: skip
                self.log(
                    f"run {entry['run_id']} {entry['status']} in {entry['seconds']:.1f}s: {outcome}"
                )
                due, skipped = self.schedule.next_after(due), 0
                now = self.clock()
                while due <= now:  # fire times that passed during the run are skipped, not queued
                    due, skipped = self.schedule.next_after(due), skipped + 1
            return entries


class _Lock:
    """An exclusive lock file (flock), released when the process dies, whatever the reason."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        import fcntl

        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise RecipeError(
                f"another scheduler is using {os.path.dirname(self.path)} (lock {self.path})"
            ) from None
        return self

    def __exit__(self, *exc):
        self.fh.close()
        return False
