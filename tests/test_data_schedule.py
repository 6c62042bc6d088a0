"""`llmlab data schedule`: cron fire times, run history, failure log, skipped fire times, the lock,
and the CLI with a schedule that fires every second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest
import yaml

from llmlab.data.ops.base import RecipeError
from llmlab.data.schedule import CronSchedule, Scheduler, _Lock, read_history

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_recipe(tmp_path, n=30):
    rows = [{"id": i, "text": f"record number {i} " + "word " * (i % 7)} for i in range(n)]
    rows[4]["text"] = rows[3]["text"]  # one exact duplicate
    (tmp_path / "in.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    recipe = {"project": "nightly", "work_dir": str(tmp_path / "work"), "batch_size": 8,
              "sources": [{"type": "jsonl", "path": str(tmp_path / "in.jsonl")}],
              "process": [{"whitespace_normalization": {}}, {"exact_dedup": {}}],
              "sinks": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}]}  # fmt: skip
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


class FakeClock:
    def __init__(self, start: datetime, on_sleep=None):
        self.now, self.slept, self.on_sleep = start, 0.0, on_sleep

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.slept += seconds
        if self.on_sleep:
            self.on_sleep(self.now)


def test_cron_fire_times_and_bad_expressions():
    nightly = CronSchedule("0 1 * * *")
    assert nightly.next_after(datetime(2026, 3, 1, 0, 59, 59)) == datetime(2026, 3, 1, 1, 0)
    assert nightly.next_after(datetime(2026, 3, 1, 1, 0)) == datetime(2026, 3, 2, 1, 0)
    weekdays = CronSchedule("30 9 * * mon-fri")
    assert weekdays.next_after(datetime(2026, 11, 27, 10, 0)) == datetime(
        2026, 11, 30, 9, 30
    )  # Fri → Mon
    assert CronSchedule("*/15 * * * *").next_after(datetime(2026, 1, 1, 0, 16)) == datetime(
        2026, 1, 1, 0, 30
    )
    assert CronSchedule("* * * * * */10").next_after(datetime(2026, 1, 1, 0, 0, 1)) == datetime(
        2026, 1, 1, 0, 0, 10
    )
    for bad in ("0 1 * *", "61 * * * *", "every day", "0 0 * * * * 2026"):
        with pytest.raises(RecipeError, match="invalid cron expression"):
            CronSchedule(bad)
    with pytest.raises(RecipeError, match="never fires"):
        CronSchedule("0 0 30 2 *")


def test_a_missing_recipe_is_an_error_at_start(tmp_path):
    with pytest.raises(RecipeError, match="recipe .*nope.yaml does not exist"):
        Scheduler(str(tmp_path / "nope.yaml"), "0 1 * * *", state_dir=str(tmp_path / "st"))


def test_nightly_runs_history_and_a_failure_that_does_not_stop_the_schedule(tmp_path):
    recipe = write_recipe(tmp_path)
    source = tmp_path / "in.jsonl"
    saved = source.read_bytes()

    def break_day_two(now):  # the input vanishes for the second night's run, then comes back
        if now.day == 2 and source.exists():
            source.unlink()
        elif now.day == 3 and not source.exists():
            source.write_bytes(saved)

    clock = FakeClock(datetime(2026, 1, 1, 0, 59, 30), break_day_two)
    logged = []
    scheduler = Scheduler(
        str(recipe), "0 1 * * *", clock=clock, sleep=clock.sleep, log=logged.append
    )
    entries = scheduler.loop(max_runs=3)
    assert [e["status"] for e in entries] == ["succeeded", "failed", "succeeded"]
    assert [e["scheduled"] for e in entries] == [f"2026-01-0{d}T01:00:00" for d in (1, 2, 3)]
    assert clock.slept == pytest.approx(30 + 2 * 86400)
    assert (
        read_history(scheduler.state_dir) == entries
    )  # the history file is the record of the runs
    assert scheduler.state_dir == str(tmp_path / "work" / "schedule")
    ok = entries[0]
    assert ok["records_read"] == 30 and ok["records_written"] == 29 and ok["quarantined"] == 0
    report = json.load(
        open(os.path.join(os.path.dirname(ok["report"]), "report.json"), encoding="utf-8")
    )
    assert report["records_written"] == 29 and open(
        ok["report"], encoding="utf-8"
    ).read().startswith("# Data run report")
    assert entries[2]["report"] != ok["report"]  # every run keeps its own report
    failures = [json.loads(line) for line in open(scheduler.failures_path, encoding="utf-8")]
    assert len(failures) == 1 and failures[0]["run_id"] == entries[1]["run_id"] == "20260102-010000"
    assert "in.jsonl" in failures[0]["error"] and "\n" not in failures[0]["error"]
    assert "Traceback" in failures[0]["traceback"] and entries[1]["error"] == failures[0]["error"]
    assert any("failed" in line and "error:" in line for line in logged)


def test_fire_times_passed_during_a_long_run_are_skipped(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path)
    clock = FakeClock(datetime(2026, 1, 1, 0, 30))

    def slow_run(recipe, **kwargs):  # 2.5 hours pass while the run works
        clock.now += timedelta(hours=2, minutes=30)
        return {"records_read": 1, "records_written": 1, "quarantined": 0}

    monkeypatch.setattr("llmlab.data.executor.run_recipe", slow_run)
    scheduler = Scheduler(
        str(recipe),
        "0 * * * *",
        state_dir=str(tmp_path / "st"),
        clock=clock,
        sleep=clock.sleep,
        log=lambda _: None,
    )
    first, second = scheduler.loop(max_runs=2)
    assert first["scheduled"] == "2026-01-01T01:00:00" and first["seconds"] == 9000
    assert (
        second["scheduled"] == "2026-01-01T04:00:00" and second["skipped"] == 2
    )  # 02:00 and 03:00
    assert [e["status"] for e in (first, second)] == ["succeeded", "succeeded"]


def test_two_schedulers_cannot_share_a_state_folder(tmp_path):
    with _Lock(str(tmp_path / "schedule.lock")):
        with pytest.raises(RecipeError, match="another scheduler"):
            _Lock(str(tmp_path / "schedule.lock")).__enter__()
    with _Lock(str(tmp_path / "schedule.lock")):  # released on exit
        pass


def test_cli_every_second_then_history(tmp_path):
    recipe = write_recipe(tmp_path)
    state = tmp_path / "state"
    cli = [
        sys.executable,
        "-m",
        "llmlab",
        "data",
        "schedule",
        str(recipe),
        "--state-dir",
        str(state),
    ]
    ran = subprocess.run(
        cli + ["--cron", "* * * * * *", "--max-runs", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    history = read_history(str(state))
    assert [e["status"] for e in history] == ["succeeded", "succeeded"] and history[0][
        "run_id"
    ] != history[1]["run_id"]
    assert datetime.fromisoformat(history[1]["scheduled"]) > datetime.fromisoformat(
        history[0]["scheduled"]
    )
    assert "2 run(s), 0 failed" in ran.stdout
    shown = subprocess.run(
        cli + ["--history"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert (
        shown.returncode == 0
        and history[1]["run_id"] in shown.stdout
        and "succeeded" in shown.stdout
    )
    bad = subprocess.run(
        cli + ["--cron", "0 25 * * *"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert bad.returncode == 1 and bad.stderr.startswith(
        "error: invalid cron expression '0 25 * * *'"
    )
