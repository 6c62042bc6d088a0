"""System prompts and templates as data: YAML files under `llmlab/prompts/<kind>/<name>.yaml`.

    load_prompt("agent", "react")          # {"system": ..., "user": ...}
    list_prompts("reason", method="cot")   # names of the candidate CoT templates

A file may also be a path to a YAML file of the same shape.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from llmlab.errors import LlmlabError


def prompt_dir(kind: str) -> Path:
    return Path(str(resources.files("llmlab") / "prompts" / kind))


def load_prompt(kind: str, name: str) -> dict:
    path = Path(name) if name.endswith((".yaml", ".yml")) else prompt_dir(kind) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_prompts(kind)) or "none"
        raise LlmlabError(f"unknown {kind} prompt '{name}' (known: {known})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise LlmlabError(f"prompt file {path} must be a YAML mapping")
    data.setdefault("name", path.stem)
    return data


def list_prompts(kind: str, method: str | None = None) -> list[str]:
    names = sorted(p.stem for p in prompt_dir(kind).glob("*.yaml"))
    if method is None:
        return names
    return [n for n in names if load_prompt(kind, n).get("method") == method]
