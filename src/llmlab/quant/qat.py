"""Quantization-aware training (int4 weights): fake-quantize in the forward, STE in the backward,
train with the ordinary Trainer, then convert to real Int4Linear layers.

    prepare_qat(model, group_size=32)                     # nn.Linear → QATLinear (same weights)
    train_qat(model, calibration_ids, steps=100, lr=1e-4)  # Trainer + causal-LM objective
    convert_qat(model)                                     # QATLinear → Int4Linear (the same grid)

The grid is RTN's (per-group min/max, float16 scale and minimum), recomputed from the weights each
forward, so what the model trained against is exactly what `convert_qat` stores.
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.nn.quantized_linear import Int4Linear
from llmlab.quant.fake_quant import QATLinear
from llmlab.quant.rtn import (
    group_size_for,
    int4_group_params,
    levels_for,
    linear_targets,
    replace_module,
    untie_head,
)


def prepare_qat(model: nn.Module, group_size: int = 32, bits: int = 4) -> nn.Module:
    """bits 3 or 2: the int4 layout with fewer codes (see rtn.levels_for)."""
    levels = levels_for(bits)
    for name, linear in linear_targets(model):
        g = group_size_for(linear.in_features, group_size)
        replace_module(model, name, QATLinear.from_linear(linear, g, levels=levels))
    return model


class WindowBatches:
    """Random [batch, seq + 1] windows of a token tensor [n, seq + 1] (a Trainer batch source)."""

    def __init__(self, ids: torch.Tensor, batch_size: int, seed: int = 0):
        self.ids, self.batch_size, self.step, self.seed = ids, batch_size, 0, seed

    def next_batch(self) -> dict:
        g = torch.Generator().manual_seed(self.seed + self.step)
        self.step += 1
        rows = torch.randint(len(self.ids), (self.batch_size,), generator=g)
        return {"input_ids": self.ids[rows]}

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


def train_qat(
    model: nn.Module,
    token_windows: torch.Tensor,
    steps: int = 100,
    lr: float = 1e-4,
    batch_size: int = 8,
    run_dir: str | None = None,
) -> dict:
    """Fine-tune the prepared model on windows [n, seq + 1] with the Trainer; returns its summary."""
    from llmlab.train.config import CheckpointConfig, LoopConfig, OptimConfig, TrainerConfig
    from llmlab.train.objectives.clm import CausalLMObjective
    from llmlab.train.trainer import Trainer

    config = TrainerConfig(
        run_dir=run_dir,
        optim=OptimConfig(lr=lr, schedule="cosine", warmup_steps=min(10, steps // 10)),
        train=LoopConfig(
            steps=steps, batch_size=batch_size, device="cpu", progress=False, eval_batches=0
        ),
        checkpoint=CheckpointConfig(every=0, resume=False),
    )
    config.diagnostics.every = 0
    trainer = Trainer(model, CausalLMObjective(), WindowBatches(token_windows, batch_size), config)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    model.eval()
    return summary


@torch.no_grad()
def convert_qat(model: nn.Module) -> nn.Module:
    for name, module in [(n, m) for n, m in model.named_modules() if isinstance(m, QATLinear)]:
        weight = module.weight.detach()
        codes, scales, minimums = int4_group_params(weight, module.group_size, module.levels)
        replace_module(
            model, name, Int4Linear(codes, scales, minimums, module.group_size, module.bias)
        )
    untie_head(model)
    return model
