"""Interactive `llmlab chat` driven through a pseudo-terminal, as a user meets it: Ctrl-C stops the
answer but not the session, /reset confirms, a history beyond the context drops its oldest turns
and says so, and a message too long for the context is an error line after which the session
goes on."""

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from tiny import save_tiny_llama

SRC = str(Path(__file__).resolve().parent.parent / "src")


def tiny_without_eos(folder: Path, context: int) -> Path:
    """A random tiny Llama that never ends an answer by itself (its end-of-turn logit is 0 while
    some other logit is positive), so an answer runs to --max-tokens."""
    _, tokenizer = save_tiny_llama(folder, max_position_embeddings=context, initializer_range=0.3)
    weights = load_file(folder / "model.safetensors")
    weights["lm_head.weight"][tokenizer.eos_token_id] = 0
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _sigint_as_in_a_terminal():
    # A process started in the background (e.g. `nohup make test &`) inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: the chat in a user's terminal has the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """`llmlab chat ...` on a pty: type lines, send signals, wait for text."""

    def __init__(self, *argv):
        self.master, slave = pty.openpty()
        env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmlab", "chat", *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
            preexec_fn=_sigint_as_in_a_terminal,
        )
        os.close(slave)
        self.output, self.cursor = "", 0

    def expect(self, pattern: str, timeout: float = 60) -> re.Match:
        """Wait for `pattern` after the last match; fail with what was seen."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.output, self.cursor)
            if match:
                self.cursor = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {pattern!r} within {timeout}s; output:\n{self.output[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    self.output += os.read(self.master, 65536).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    pytest.fail(f"chat ended while waiting for {pattern!r}:\n{self.output[-3000:]}")

    def type(self, text: str):
        os.write(self.master, text.encode())

    def close(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.master)


def test_ctrl_c_stops_the_answer_not_the_session_and_reset_confirms(tmp_path):
    folder = tiny_without_eos(tmp_path / "m", context=4096)
    term = Terminal("--model", str(folder), "--max-tokens", "4000", "--threads", "1")
    try:
        term.expect("you> ")
        term.type("hello\n")
        term.expect("bot> ")
        term.expect(r"[\s\S]{20}")  # the answer is being written (4000 tokens take a while)
        term.proc.send_signal(signal.SIGINT)
        term.expect(r"\(answer stopped\)", timeout=30)
        term.expect("you> ")
        assert term.proc.poll() is None  # still running: the session survived Ctrl-C
        term.type("/reset\n")
        term.expect(r"\(history cleared\)")
        term.expect("you> ")
        term.type("/exit\n")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_long_history_is_trimmed_with_a_note_and_errors_keep_the_session(tmp_path):
    folder = tiny_without_eos(tmp_path / "m", context=128)
    term = Terminal("--model", str(folder), "--max-tokens", "24", "--threads", "1")
    try:
        term.expect("you> ")
        for turn in range(6):
            term.type(f"tell me about dropout, turn {turn}\n")
            term.expect("bot> ")
            before = term.cursor
            term.expect("you> ")
            if "history trimmed" in term.output[before : term.cursor]:
                break
        else:
            pytest.fail(f"six turns in a 128-token context and no trim note:\n{term.output}")
        note = re.search(r"\(history trimmed: the (\d+) oldest turns? dropped", term.output)
        assert note and int(note.group(1)) >= 1 and "context of 128 tokens" in term.output
        term.type("dropout " * 200 + "\n")  # longer than the whole context
        term.expect(r"error: this message is \d+ tokens with the chat frame; the model's context")
        term.expect("you> ")
        term.type("still there?\n")  # the session goes on after the error
        term.expect("bot> ")
        term.expect("you> ")
        term.type("\x04")  # Ctrl-D quits
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
