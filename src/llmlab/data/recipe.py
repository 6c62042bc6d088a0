"""Recipes: YAML files that say where records come from, what happens to them, and where they go.

    project: notes-qa
    work_dir: runs/notes          # report, trace/, quarantine.jsonl, checkpoint/
    batch_size: 256               # records per batch (memory is bounded by this)
    np: 1                         # worker processes for stateless operators
    tracer: true                  # keep up to trace_samples changed/removed records per operator
    trace_samples: 10
    checkpoint: true              # commit after every batch so `--resume` continues exactly
    strict: false                 # true: a bad record fails the run (nothing is published)
    text_key: text
    executor: local               # or `ray`: operators run on Ray Data (pip install llmlab[ray])
    sources:
      - {type: text, path: "pkg://llmlab/data/assets/ml-interview-notes.raw.md"}
    process:
      - repair_mojibake: {}
      - text_length_filter: {min: 20}
    sinks:
      - {type: jsonl, path: runs/notes/qa.jsonl}

`pkg://PACKAGE/PATH` names a file shipped inside an installed package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

# the package, not ops.base: importing it registers every operator build_op may be asked for
from llmlab.data.ops import RecipeError, build_op
from llmlab.data.paths import resolve_path

_KEYS = {"project", "work_dir", "batch_size", "np", "tracer", "trace_samples", "checkpoint", "text_key",
         "sources", "process", "sinks", "executor", "strict"}  # fmt: skip


@dataclass
class Recipe:
    project: str
    sources: list[dict]
    process: list[tuple[str, dict]]
    sinks: list[dict]
    work_dir: str
    batch_size: int = 256
    np: int = 1
    tracer: bool = True
    trace_samples: int = 10
    checkpoint: bool = True
    text_key: str = "text"
    executor: str = "local"
    strict: bool = False
    raw: dict = field(default_factory=dict)

    def build_ops(self):
        ops = [build_op(name, args) for name, args in self.process]
        for op in ops:
            op.text_key = self.text_key
        return ops


def parse_recipe(data: Any, name: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{name}: a recipe is a YAML mapping with sources, process and sinks")
    unknown = set(data) - _KEYS
    if unknown:
        raise RecipeError(
            f"{name}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}"
        )
    for key in ("sources", "sinks"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise RecipeError(f"{name}: `{key}` must be a non-empty list")
        for spec in data[key]:
            if not isinstance(spec, dict) or "type" not in spec:
                raise RecipeError(f"{name}: each entry of `{key}` needs a `type`, got {spec!r}")
            if "path" in spec:
                spec["path"] = resolve_path(str(spec["path"]))
    process = []
    for step in data.get("process") or []:
        if isinstance(step, str):
            step = {step: {}}
        if not isinstance(step, dict) or len(step) != 1:
            raise RecipeError(f"{name}: each process step is `- op_name: {{args}}`, got {step!r}")
        ((op, args),) = step.items()
        if args is not None and not isinstance(args, dict):
            raise RecipeError(f"{name}: arguments of {op!r} must be a mapping, got {args!r}")
        process.append((op, args or {}))
    if data.get("executor", "local") not in ("local", "ray"):
        raise RecipeError(
            f"{name}: executor {data['executor']!r} is not available; use `local` or `ray`"
        )
    project = str(data.get("project", "data-run"))
    recipe = Recipe(
        project=project, sources=data["sources"], process=process, sinks=data["sinks"],
        work_dir=str(data.get("work_dir", os.path.join("runs", project))),
        batch_size=int(data.get("batch_size", 256)), np=int(data.get("np", 1)),
        tracer=bool(data.get("tracer", True)), trace_samples=int(data.get("trace_samples", 10)),
        checkpoint=bool(data.get("checkpoint", True)), text_key=str(data.get("text_key", "text")),
        executor=str(data.get("executor", "local")), strict=bool(data.get("strict", False)), raw=data,
    )  # fmt: skip
    if recipe.batch_size < 1 or recipe.np < 1:
        raise RecipeError(f"{name}: batch_size and np must be positive")
    recipe.build_ops()  # fail now, with the operator's own message, not mid-run
    return recipe


def load_recipe(path: str) -> Recipe:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_recipe(data, path)
