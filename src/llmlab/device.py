"""Choosing where and in what precision a model runs.

`pick_device(None)` prefers CUDA, then Apple's MPS, then the CPU. `pick_dtype(None, device)` is
float32 on the CPU (fastest and exact there) and bfloat16 on accelerators.
"""

from __future__ import annotations

import torch

from llmlab.errors import LlmlabError

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LlmlabError("--device cuda was asked for but no CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LlmlabError("--device mps was asked for but MPS is not available")
    return device


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if dtype not in DTYPES:
        raise LlmlabError(f"unknown dtype '{dtype}' (choose from float32, bfloat16, float16)")
    return DTYPES[dtype]


def set_threads(threads: int | None):
    if threads:
        torch.set_num_threads(threads)
