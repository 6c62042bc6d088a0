"""Process groups for `torchrun`: DDP (gloo on CPU, NCCL on CUDA) or FSDP2 `fully_shard`.

    torchrun --nproc_per_node 2 -m llmlab.train pretrain --config recipes/pretrain-tiny.yaml

Outside torchrun (no WORLD_SIZE in the environment) everything here is a no-op with world size 1.
Only rank 0 logs and saves; every rank computes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "none"  # none | ddp | fsdp

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()


def init_distributed(
    strategy: str = "ddp", backend: str = "auto", device: str = "cpu"
) -> DistContext:
    """Join the torchrun process group if launched by torchrun; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistContext()
    if not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, strategy)


def wrap_model(model: nn.Module, ctx: DistContext, device: str) -> nn.Module:
    if not ctx.enabled:
        return model
    if ctx.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # Shard each repeated block, then the root (embeddings, head): the FSDP2 recipe.
        blocks = getattr(getattr(model, "model", model), "layers", None) or []
        for block in blocks:
            fully_shard(block)
        return fully_shard(model)
    device_ids = [ctx.local_rank] if device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module under DDP / torch.compile wrappers (FSDP2 shards in place, no wrapper)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def full_state_dicts(model: nn.Module, optimizer, ctx: DistContext) -> tuple[dict, dict]:
    """Unsharded model/optimizer state on CPU (collective under FSDP: call on every rank)."""
    if ctx.strategy == "fsdp" and ctx.enabled:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(
            model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    return unwrap(model).state_dict(), optimizer.state_dict()


def load_full_state_dicts(
    model: nn.Module, optimizer, model_state: dict, optim_state: dict, ctx: DistContext
):
    if ctx.strategy == "fsdp" and ctx.enabled:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(
            model,
            optimizer,
            model_state_dict=model_state,
            optim_state_dict=optim_state,
            options=StateDictOptions(full_state_dict=True),
        )
        return
    unwrap(model).load_state_dict(model_state)
    optimizer.load_state_dict(optim_state)


def all_mean(value: float, ctx: DistContext) -> float:
    """Mean of a scalar over ranks (for logging the global loss)."""
    if not ctx.enabled:
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces only device tensors
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor) / ctx.world_size


def all_gather_object(obj, ctx: DistContext) -> list:
    if not ctx.enabled:
        return [obj]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: DistContext):
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext):
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
