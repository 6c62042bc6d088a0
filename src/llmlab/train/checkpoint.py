"""Training checkpoints: atomic writes, keep the last k, exact resume.

A checkpoint is one `step_00000042.pt` file in `<run_dir>/checkpoints/` holding the model, optimizer
and scheduler states, the RNG states (torch, CUDA, numpy, python — one set per process) and the data
position, so a resumed run replays exactly the batches and random draws an uninterrupted run would.
Files are written under a temporary name and renamed, so a run killed mid-save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from llmlab.errors import CorruptFileError

_NAME = re.compile(r"^step_(\d+)\.pt$")


def list_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def save_checkpoint(folder: str | Path, step: int, state: dict, keep: int = 2) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}.pt"
    tmp = folder / f".{final.name}.tmp"
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(
            handle.fileno()
        )  # the bytes are on disk before the rename makes them "the" checkpoint
    os.replace(tmp, final)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: str | Path) -> dict:
    try:
        # Our own files: they hold numpy RNG tuples and python objects, not only tensors.
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise CorruptFileError(
            f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]})"
        ) from None


def capture_rng() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
