"""Optimizers, learning-rate schedules and weight-init schemes, each chosen by name in the config.

optimizer = build_optimizer(model, OptimConfig(name="adamw", lr=3e-4, weight_decay=0.1))
scheduler = build_scheduler(optimizer, config.optim, total_steps=1000)
apply_init(model, "kaiming")          # or normal (std), xavier, model (leave as built)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmlab.train.config import OptimConfig


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.name == "adamw":
        # Decay matrices only: shrinking norm gains and biases toward zero only hurts.
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        return torch.optim.AdamW(
            groups,
            lr=config.lr,
            betas=tuple(config.betas),
            eps=config.eps,
            fused=config.fused or None,
        )
    if config.name == "adam":
        return torch.optim.Adam(
            params,
            lr=config.lr,
            betas=tuple(config.betas),
            eps=config.eps,
            weight_decay=config.weight_decay,
            fused=config.fused or None,
        )
    if config.name == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=config.lr,
            momentum=config.momentum,
            eps=config.eps,
            weight_decay=config.weight_decay,
        )
    raise ValueError(f"unknown optimizer {config.name}")


def lr_multiplier(step: int, config: OptimConfig, total_steps: int) -> float:
    """Linear warmup to 1, then cosine / linear decay to min_lr_ratio, or constant."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    floor = config.min_lr_ratio
    if config.schedule == "linear":
        return floor + (1 - floor) * (1 - progress)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer, config: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, config, total_steps)
    )


def apply_init(model: nn.Module, scheme: str, std: float = 0.02):
    """Re-initialise Linear/Embedding/Conv weights; biases to zero; norm layers untouched.

    normal: N(0, std) (GPT-2 style 0.02); xavier: Glorot normal, keeps variance for tanh/sigmoid;
    kaiming: He normal, keeps variance through ReLU."""
    if scheme == "model":
        return model
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)):
            continue
        with torch.no_grad():
            if scheme == "normal":
                nn.init.normal_(module.weight, std=std)
            elif scheme == "xavier":
                nn.init.xavier_normal_(module.weight)
            elif scheme == "kaiming":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                raise ValueError(f"unknown init scheme {scheme}")
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    return model
