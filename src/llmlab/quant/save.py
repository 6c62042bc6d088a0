"""Write a quantized model as a folder that `llmlab.load`, the engine and `llmlab serve` read.

    save_quantized(model, "runs/smollm2-gptq4", tokenizer, {"method": "gptq", "bits": 4, ...})

The layout is described in `llmlab/formats/quantized.py`. Tensors that stay float (embedding,
norms) are stored in `float_dtype` (bfloat16 by default: the embedding is most of a 4-bit model's
size otherwise). The folder is written under a temporary name and swapped in at the end, so a
failed run never leaves a half-written folder or destroys the previous one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from llmlab.errors import LlmlabError
from llmlab.formats.quantized import QUANT_METHOD, layer_tensors
from llmlab.nn.quantized_linear import Int4Linear, Int8Linear, W8A8Linear

QUANTIZED_TYPES = (Int4Linear, Int8Linear, W8A8Linear)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QUANTIZED_TYPES)}


def save_quantized(
    model: nn.Module,
    folder: str | Path,
    tokenizer=None,
    info: dict | None = None,
    float_dtype: torch.dtype = torch.bfloat16,
) -> Path:
    folder = Path(folder)
    layers = quantized_layers(model)
    if not layers:
        raise LlmlabError("the model has no quantized layers to save")
    tensors: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    for name, layer in layers.items():
        kinds[name], stored = layer_tensors(name, layer)
        tensors.update(stored)
    prefixes = tuple(f"{name}." for name in layers)
    seen = set()
    for name, tensor in model.state_dict().items():
        if name.startswith(prefixes) or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        value = tensor.detach().cpu()
        tensors[name] = (value.to(float_dtype) if value.is_floating_point() else value).contiguous()
    config = model.config.to_hf()
    config["tie_word_embeddings"] = False  # the head, if quantized, is its own layer
    config["torch_dtype"] = str(float_dtype).removeprefix("torch.")
    config["quantization_config"] = {"quant_method": QUANT_METHOD, **(info or {}), "layers": kinds}

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + ".tmp-quantize")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if folder.exists():
            old = folder.with_name(folder.name + ".old-quantize")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def folder_bytes(folder: str | Path) -> int:
    """Size on disk of the weight files (safetensors / gguf) of a folder or file."""
    path = Path(folder)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))
