"""Progress for long commands: a live rich bar on a terminal, plain lines in a pipe or a log.

    with progress_bar("best-of-n", total=len(prompts), unit="prompts") as bar:
        for chunk in chunks:
            ...
            bar.advance(len(chunk))

Both go to stderr, so a command's result on stdout (JSON, a table) stays clean. Off a terminal a
line such as `best-of-n: 16/64 prompts (25%), 0:41 elapsed, ~2:03 left` is printed each time
another `every_percent` of the work is done, so a command never sits silent in CI or under nohup.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _PlainLines:
    def __init__(self, description: str, total: int, unit: str, every_percent: float, stream):
        self.description, self.total, self.unit, self.stream = description, total, unit, stream
        self.step = max(1.0, total * every_percent / 100)
        self.done, self.next_report, self.started = 0, self.step, time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self.next_report or self.done >= self.total:
            while self.next_report <= self.done:
                self.next_report += self.step
            elapsed = time.monotonic() - self.started
            left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            print(
                f"{self.description}: {self.done}/{self.total} {self.unit} "
                f"({100 * self.done / max(self.total, 1):.0f}%), {_clock(elapsed)} elapsed, "
                f"~{_clock(left)} left",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        pass


class _RichBar:
    def __init__(self, description: str, total: int, unit: str, stream):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
            transient=True,
        )
        self.task = self.bar.add_task(description, total=total)
        self.bar.start()

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def close(self) -> None:
        self.bar.stop()


class progress_bar:  # noqa: N801 (used like a function in `with`)
    """`with progress_bar(description, total, unit) as bar: bar.advance(n)`; `enabled=False` is silent."""

    def __init__(
        self,
        description: str,
        total: int,
        unit: str = "items",
        every_percent: float = 5.0,
        enabled: bool = True,
        stream=None,
    ):
        stream = stream or sys.stderr
        if not enabled:
            self.impl = None
        elif stream.isatty():
            self.impl = _RichBar(description, total, unit, stream)
        else:
            self.impl = _PlainLines(description, total, unit, every_percent, stream)

    def __enter__(self):
        return self

    def advance(self, n: int = 1) -> None:
        if self.impl:
            self.impl.advance(n)

    def __exit__(self, *exc):
        if self.impl:
            self.impl.close()
        return False
