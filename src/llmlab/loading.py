"""`llmlab.load(name_or_path)`: a packaged model name, a Hugging Face folder or a .gguf file →
(model, tokenizer).

    model, tokenizer = llmlab.load("smollm2-135m-instruct")
    logits = model(input_ids)            # [batch, seq, vocab] for decoders

The architecture comes from `model_type` (config.json) or `general.architecture` (GGUF), and picks
the model family: one file per family under `llmlab/models/`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from llmlab.device import pick_device, pick_dtype
from llmlab.errors import UnsupportedArchitectureError
from llmlab.registry import resolve

FAMILIES = {
    "llama": "llmlab.models.llama",
    "mistral": "llmlab.models.llama",
    "qwen2": "llmlab.models.llama",
    "bert": "llmlab.models.bert",
}


def family_for(config: dict):
    """The models/ module that implements this config.json's model_type."""
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        architectures = ", ".join(config.get("architectures") or []) or "none listed"
        raise UnsupportedArchitectureError(
            f"unsupported architecture: model_type '{model_type}' ({architectures}); "
            f"supported: {', '.join(sorted(FAMILIES))}"
        )
    return importlib.import_module(FAMILIES[model_type])


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json dict, state dict with Hugging Face names) from a folder or a .gguf file."""
    if path.suffix == ".gguf":
        from llmlab.formats.gguf import read_gguf

        return read_gguf(path)
    from llmlab.formats.hf import read_config, read_hf_folder

    family_for(read_config(path))  # refuse an unknown architecture before reading gigabytes
    return read_hf_folder(path)


def load(name_or_path: str | Path, device=None, dtype=None, tokenizer: bool = True):
    """Load a model (and its tokenizer) by packaged name or local path. See the module docstring."""
    from llmlab.tokenize.tokenizer import load_tokenizer

    path = resolve(name_or_path)
    config, state_dict = read_checkpoint(path)
    model = family_for(config).model_from_hf(config, state_dict)
    device = pick_device(device)
    model = model.to(device=device, dtype=pick_dtype(dtype, device)).eval()
    model.source_path = str(path)
    return model, (load_tokenizer(path) if tokenizer else None)
