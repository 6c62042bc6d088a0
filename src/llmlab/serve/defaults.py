"""Sampling defaults for requests that leave temperature/top_p/top_k/min_p/repetition_penalty
unset: the model's own generation settings where it has them, else a documented fallback.

    defaults = sampling_defaults("smollm2-135m-instruct")    # or an HF folder / .gguf path
    print(defaults.describe())    # "temperature 0.7, top_p 0.9, top_k off, ... (fallback: ...)"

Where they come from, first match wins per field (vLLM's `--generation-config auto` does the same
for HF folders):
- an HF folder's generation_config.json: temperature, top_p, top_k, min_p, repetition_penalty;
- a GGUF's `general.sampling.*` metadata (temp, top_p, top_k, min_p, penalty_repeat);
- FALLBACK for the rest. OpenAI's own default, temperature 1.0 with no top_p cut, samples from
  the whole distribution, and small models answer that with gibberish (SmolLM2-135M-Instruct's
  generation_config.json sets no sampling fields at all; its model card samples at temperature
  0.2, top_p 0.9), so the fallback is a moderate temperature with a nucleus cut.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger("llmlab.serve")

FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
_GGUF_KEYS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_p": "top_p",
    "general.sampling.top_k": "top_k",
    "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repetition_penalty",
}


@dataclass(frozen=True)
class SamplingDefaults:
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    sources: dict = field(default_factory=dict, compare=False)  # field -> where it came from

    def describe(self) -> str:
        parts = []
        for name in FIELDS:
            value = getattr(self, name)
            shown = "off" if (name == "top_k" and value == 0) else f"{value:g}"
            parts.append(f"{name} {shown} ({self.sources.get(name, 'fallback')})")
        return ", ".join(parts)


FALLBACK = SamplingDefaults()


def _from_generation_config(folder: Path) -> dict:
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return {}
    return {k: config[k] for k in FIELDS if isinstance(config.get(k), (int, float))}


def _from_gguf(path: Path) -> dict:
    from llmlab.formats.gguf import open_gguf, read_metadata

    metadata = read_metadata(open_gguf(path))  # the header only; tensors stay unread
    return {name: metadata[key] for key, name in _GGUF_KEYS.items() if key in metadata}


def _valid(name: str, value) -> bool:
    """The same ranges the API accepts, so a strange config cannot break every request."""
    checks = {
        "temperature": lambda v: 0 <= v <= 2,
        "top_p": lambda v: 0 <= v <= 1,
        "top_k": lambda v: v >= 0 and float(v).is_integer(),
        "min_p": lambda v: 0 <= v <= 1,
        "repetition_penalty": lambda v: 0.01 <= v <= 10,
    }
    return checks[name](value)


def sampling_defaults(name_or_path) -> SamplingDefaults:
    """The defaults for this model (see the module docstring); never raises for a model that
    loaded: unreadable or out-of-range settings are logged and the fallback is used."""
    from llmlab.registry import resolve

    try:
        path = resolve(name_or_path)
        found = _from_generation_config(path) if path.is_dir() else _from_gguf(path)
        where = f"{path.name}: {'generation_config.json' if path.is_dir() else 'GGUF metadata'}"
    except Exception as exc:  # noqa: BLE001 - defaults must not stop a server whose model loaded
        log.warning("sampling defaults: cannot read %s (%s); using the fallback", name_or_path, exc)
        return FALLBACK
    values, sources = {}, {}
    for name, value in found.items():
        if _valid(name, value):
            values[name] = int(value) if name == "top_k" else float(value)
            sources[name] = where
        else:
            log.warning(
                "sampling defaults: ignoring %s=%r from %s (out of range)", name, value, where
            )
    return replace(FALLBACK, **values, sources=sources)
