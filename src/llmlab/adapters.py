"""LoRA adapters onto and off a model, as PEFT folders (the loading layer: formats + nn).

    from llmlab.adapters import load_adapter, save_adapter
    save_adapter(model, "out/adapter")                     # adapter_config.json + adapter_model.safetensors
    load_adapter(model, "out/adapter", adapter_name="b")   # adds (or fills) adapter "b"

`llmlab.load(NAME, adapters=[DIR, ...])` calls `load_adapter` for each folder. The file format
itself (keys, config fields, what is refused) is `llmlab/formats/peft.py`; the LoRA layers are
`llmlab/nn/lora.py`. This module joins the two, so neither has to import the other upwards.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from llmlab.errors import CorruptFileError
from llmlab.formats.peft import read_adapter, write_adapter
from llmlab.nn.lora import LoraError, add_lora, lora_layers


def save_adapter(
    model: torch.nn.Module,
    folder: str | Path,
    adapter_name: str = "default",
    base_model_name_or_path: str | None = None,
    chat_template: str | None = None,
) -> Path:
    """Write adapter `adapter_name` of `model` as a PEFT folder that `peft` loads (with the chat
    template it was trained with, when given, so `llmlab.load` gives the tokenizer that template)."""
    layers = lora_layers(model)
    config = getattr(model, "lora_configs", {}).get(adapter_name)
    if config is None or not layers:
        raise LoraError(f"the model has no adapter named '{adapter_name}'")
    weights = {
        name: {
            "lora_A": layer.lora_A[adapter_name].weight,
            "lora_B": layer.lora_B[adapter_name].weight,
        }
        for name, layer in layers.items()
        if adapter_name in layer.lora_A
    }
    base = base_model_name_or_path or getattr(model, "source_path", None)
    return write_adapter(folder, config, weights, base, chat_template)


def load_adapter(
    model: torch.nn.Module,
    folder: str | Path,
    adapter_name: str = "default",
    base_dtype: str | None = None,
) -> torch.nn.Module:
    """Add adapter `adapter_name` from a PEFT folder (ours or peft's), creating its LoRA layers."""
    config, weights = read_adapter(folder)
    # Target exactly the modules the file holds: its target_modules may be broader than what was saved.
    config.target_modules = "|".join(re.escape(m) for m in weights)
    add_lora(model, config, adapter_name=adapter_name, base_dtype=base_dtype)
    layers = lora_layers(model)
    for module, pair in weights.items():
        layer = layers.get(module)
        if layer is None:
            raise CorruptFileError(f"{folder}: adapter weights for {module} do not fit the model")
        for kind, tensor in pair.items():
            target = getattr(layer, kind)[adapter_name].weight
            if target.shape != tensor.shape:
                raise CorruptFileError(
                    f"{folder}: {module}.{kind} has shape {tuple(tensor.shape)}, "
                    f"the model needs {tuple(target.shape)}"
                )
            with torch.no_grad():
                target.copy_(tensor)
    model.lora_configs[adapter_name].target_modules = sorted(
        {m.rsplit(".", 1)[-1] for m in weights}
    )
    return model
