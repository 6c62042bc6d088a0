"""`pkg://PACKAGE/PATH`: a file shipped inside an installed package, as recipes and operators
name their inputs (e.g. `pkg://llmlab/data/assets/ml-interview-notes.raw.md`)."""

from __future__ import annotations

from importlib import resources

from llmlab.data.ops.base import RecipeError


def resolve_path(path: str) -> str:
    """`pkg://package/relative/path` → the file inside the installed package; other paths as given."""
    if not path.startswith("pkg://"):
        return path
    package, _, rel = path[len("pkg://") :].partition("/")
    try:
        return str(resources.files(package).joinpath(rel))
    except ModuleNotFoundError:
        raise RecipeError(f"{path}: package {package!r} is not installed") from None
