"""Files shipped inside the package: `bundled:NAME` names a file under `llmlab/assets/<folder>/`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from llmlab.errors import LlmlabError


def resolve_bundled(
    name: str, folder: str, what: str = "file", error: type[LlmlabError] = LlmlabError
) -> Path:
    """A path, or `bundled:NAME` for a file shipped in llmlab/assets/<folder>/; must exist."""
    if name.startswith("bundled:"):
        path = Path(
            str(resources.files("llmlab") / "assets" / folder / name.removeprefix("bundled:"))
        )
    else:
        path = Path(name).expanduser()
    if not path.is_file():
        raise error(f"{what} not found: {name}")
    return path
