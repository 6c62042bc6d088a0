"""Every `llmlab …` command in the README's and the docs' shell blocks parses with today's CLI, and
the recipe files they name exist — so a renamed flag or file breaks a test, not a new user's first
try. (The commands' behaviour is tested where each subsystem is; running them all here would take
hours: several train for minutes.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from llmlab.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_commands(page: Path) -> list[tuple[int, str]]:
    """(line number, command) of each `llmlab` line inside a ```bash block."""
    found, fenced = [], False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fenced = line.strip() in ("```bash", "```sh", "```console") if not fenced else False
            continue
        text = re.split(r"\s+#\s", line.strip(), maxsplit=1)[0].strip()
        for part in re.split(r"&&|;", text):  # `a && b`, `a; b`: each command on its own
            part = part.strip()
            if fenced and part.startswith("llmlab ") and not any(c in part for c in "|<>\\$"):
                found.append((number, part))
    return found


COMMANDS = [(page.name, n, cmd) for page in PAGES for n, cmd in shell_commands(page)]


def test_the_pages_have_commands():
    assert len(COMMANDS) > 60 and any(p == "README.md" for p, _, _ in COMMANDS)


@pytest.mark.parametrize("page,line,command", COMMANDS, ids=[f"{p}:{n}" for p, n, _ in COMMANDS])
def test_command_parses_and_its_files_exist(page, line, command):
    words = shlex.split(command)[1:]
    try:
        build_parser().parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"{page}:{line}: `{command}` does not parse (exit {exc.code})")
    for word in words:
        if word.startswith("recipes/") and word.endswith((".yaml", ".yml")):
            assert (ROOT / word).is_file(), f"{page}:{line}: {word} does not exist"
