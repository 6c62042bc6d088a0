"""Hugging Face model folders: config.json + safetensors (single file or sharded) + tokenizer files.

    config, state_dict = read_hf_folder("path/to/model")
    save_hf_folder(model, "out/model", tokenizer=tokenizer)   # transformers loads it back

Broken inputs (missing or truncated files, a config that is not JSON) raise CorruptFileError with
one line naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from llmlab.errors import CorruptFileError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: missing config.json") from None
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a folder, following the shard index when there is one."""
    folder = Path(folder)
    index = folder / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CorruptFileError(f"{index}: unreadable shard index ({exc})") from None
        return [folder / name for name in sorted(set(weight_map.values()))]
    if (folder / SINGLE_FILE).exists():
        return [folder / SINGLE_FILE]
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        raise CorruptFileError(
            f"{folder}: no .safetensors weights found (pytorch_model.bin is not supported)"
        )
    return found


def read_safetensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load one safetensors file, turning the library's errors into one clear line."""
    if not path.exists():
        raise CorruptFileError(f"{path}: missing weight file (listed in the shard index)")
    tensors = {}
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CorruptFileError(
            f"{path}: unreadable safetensors file, truncated or corrupt ({exc})"
        ) from None
    return tensors


def read_hf_folder(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config = read_config(folder)
    state_dict: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        state_dict.update(read_safetensors(path))
    return config, state_dict


def save_hf_folder(
    model: torch.nn.Module, folder: str | Path, tokenizer=None, max_shard_bytes: int = 2 * 1024**3
):
    """Write config.json, safetensors weights (sharded above max_shard_bytes) and the tokenizer.

    Tied weights are written once, under the name Hugging Face expects (the embedding)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_hf()
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue  # a tied weight (lm_head, BERT's MLM decoder): transformers re-ties it on load
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().to("cpu").contiguous()
    config["torch_dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    shards = _split_into_shards(tensors, max_shard_bytes)
    for stale in list(folder.glob("model*.safetensors")) + [folder / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        _atomic_save(shards[0], folder / SINGLE_FILE)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            _atomic_save(shard, folder / name)
            weight_map.update({key: name for key in shard})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2))
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


def _split_into_shards(
    tensors: dict[str, torch.Tensor], max_bytes: int
) -> list[dict[str, torch.Tensor]]:
    shards, current, size = [], {}, 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
    return shards + [current]


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path):
    """Write to a temporary name, then rename: a crash never leaves a half-written weight file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
