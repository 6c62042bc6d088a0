"""One training loop for every objective (pretraining now; SFT, reward, DPO, PPO, GRPO later).

    trainer = Trainer(model, CausalLMObjective(), train_batches, config, eval_batches=val_batches)
    summary = trainer.fit()        # → {"step": ..., "loss": ..., "eval_loss": ..., "tokens_per_s": ...}

The pieces it plugs together:
- an **objective**: `objective(model, batch) -> (loss, metrics)`; metrics is a dict of floats, and a
  "tokens" entry, when present, is what tokens/s counts (see `train/objectives/`);
- a **batch source**: `next_batch() -> dict of tensors` for this process, plus `state_dict()` /
  `load_state_dict()` so a resumed run continues at the same data position (see `train/data.py`);
- eval batches: any re-iterable of batches (a list, or an object with `__iter__`).

Each step: micro-batches (gradient accumulation, DDP gradient sync only on the last) under
autocast → NaN/inf guard (skips the step) → clip by value and/or global norm → optimizer and
scheduler step → diagnostics every N steps → metrics JSONL, live progress line, eval, checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import yaml
from torch import nn

from llmlab.errors import LlmlabError
from llmlab.train import diagnostics as diag
from llmlab.train.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from llmlab.train.config import ConfigError, TrainerConfig, to_dict, validate
from llmlab.train.distributed import (
    DistContext,
    all_gather_object,
    all_mean,
    full_state_dicts,
    init_distributed,
    load_full_state_dicts,
    unwrap,
    wrap_model,
)
from llmlab.train.optim import apply_init, build_optimizer, build_scheduler


class RunAlreadyComplete(LlmlabError):
    """Resuming a run whose last checkpoint is already at train.steps."""


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]: ...


class BatchSource(Protocol):
    def next_batch(self) -> dict: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class RunLog:
    """metrics.jsonl in the run folder (rank 0 only); one JSON object per line, flushed each write."""

    def __init__(self, run_dir: Path | None, enabled: bool):
        self.handle = None
        if run_dir is not None and enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.handle = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")

    def write(self, record: dict):
        if self.handle:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()

    def close(self):
        if self.handle:
            self.handle.close()


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        train_data: BatchSource,
        config: TrainerConfig,
        eval_data: Iterable | None = None,
        callbacks: Iterable[Callable] = (),
        ctx: DistContext | None = None,
    ):
        validate(config)
        self.config = config
        self.objective = objective
        self.train_data = train_data
        self.eval_data = eval_data
        self.callbacks = list(callbacks)
        loop = config.train
        self.device = resolve_device(loop.device)
        self.ctx = ctx or init_distributed(
            config.distributed.strategy, config.distributed.backend, self.device
        )
        if loop.deterministic:
            # CPU kernels are already deterministic for a fixed thread count; on CUDA pin the
            # algorithms (the call imports torch._inductor, ~10 s, so only where it matters).
            torch.backends.cudnn.benchmark = False
            if self.device.startswith("cuda"):
                torch.use_deterministic_algorithms(True)
        torch.manual_seed(loop.seed)
        np.random.seed(loop.seed)
        apply_init(model, loop.init, loop.init_std)
        model.to(self.device)
        self.raw_model = model
        self.model = wrap_model(model, self.ctx, self.device)
        if loop.compile:
            self.model = torch.compile(self.model)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, loop.steps)
        if loop.precision == "fp16" and not self.device.startswith("cuda"):
            raise ConfigError("train.precision fp16 needs CUDA (use bf16 on CPU)")
        self.scaler = torch.amp.GradScaler("cuda") if loop.precision == "fp16" else None
        d = config.diagnostics
        self.exploding = diag.ExplodingDetector(d.exploding_norm, d.spike_factor, d.window)
        self.loss_spikes = diag.LossSpikeDetector(d.loss_spike_factor, d.window)
        self.run_dir = Path(config.run_dir) if config.run_dir else None
        self.step = 0
        self.warnings: list[str] = []
        self.history: list[dict] = []  # train records of this process (tests and callers read it)
        self.log = RunLog(self.run_dir, self.ctx.is_main)
        if self.run_dir is not None and self.ctx.is_main:
            (self.run_dir / "config.yaml").write_text(
                yaml.safe_dump(to_dict(config), sort_keys=False)
            )

    # ---- pieces of a step -------------------------------------------------------------------
    def _autocast(self):
        precision = self.config.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(
            device_type="cuda" if self.device.startswith("cuda") else "cpu", dtype=dtype
        )

    def _grad_sync(self, enabled: bool):
        """Skip DDP's all-reduce on all but the last micro-batch (FSDP2: see train_step)."""
        if enabled or not self.ctx.enabled or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _to_device(self, batch: dict) -> dict:
        return {
            k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }

    def _total_norm(self) -> float:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        norm = torch.nn.utils.get_total_norm(grads)
        if hasattr(norm, "full_tensor"):  # FSDP2: a sharded DTensor
            norm = norm.full_tensor()
        return float(norm)

    def _warn(self, message: str):
        self.warnings.append(f"step {self.step}: {message}")
        if self.ctx.is_main:
            self.log.write({"kind": "warning", "step": self.step, "message": message})
            print(f"warning: step {self.step}: {message}", file=sys.stderr)

    def train_step(self) -> dict:
        loop, d = self.config.train, self.config.diagnostics
        diag_step = d.every > 0 and (self.step % d.every == 0 or self.step == loop.steps - 1)
        saturation = (
            diag.SaturationMonitor(unwrap(self.model)).attach()
            if diag_step and d.saturation
            else None
        )
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses, metric_sums, tokens = [], {}, 0
        for micro in range(loop.grad_accum):
            batch = self._to_device(self.train_data.next_batch())
            if self.ctx.enabled and hasattr(self.model, "set_requires_gradient_sync"):
                self.model.set_requires_gradient_sync(micro == loop.grad_accum - 1)
            with self._grad_sync(micro == loop.grad_accum - 1):
                with self._autocast():
                    loss, metrics = self.objective(self.model, batch)
                scaled = loss / loop.grad_accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            losses.append(float(loss.detach()))
            tokens += int(
                metrics.get("tokens", batch["input_ids"].numel() if "input_ids" in batch else 0)
            )
            for key, value in metrics.items():
                if key != "tokens":
                    metric_sums[key] = metric_sums.get(key, 0.0) + float(value)
        if saturation:
            saturation.detach()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)

        record = {"kind": "train", "step": self.step + 1}
        raw_norm = self._total_norm()
        loss_value = sum(losses) / len(losses)
        layer_norms = diag.layer_grad_norms(unwrap(self.model)) if diag_step else None
        if not (math.isfinite(raw_norm) and math.isfinite(loss_value)):
            bad = diag.nonfinite_layers(unwrap(self.model))
            self._warn(
                f"non-finite loss/gradient (loss {loss_value}, grad norm {raw_norm}) in "
                f"{', '.join(bad[:5]) or 'the loss'}; step skipped"
            )
            if self.scaler:
                self.scaler.step(self.optimizer)  # the scaler skips it and lowers its scale
                self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            record["skipped"] = True
            applied = raw_norm
        else:
            if loop.clip_grad_value is not None:
                torch.nn.utils.clip_grad_value_(self.model.parameters(), loop.clip_grad_value)
            applied = self._total_norm() if loop.clip_grad_value is not None else raw_norm
            if loop.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), loop.clip_grad_norm)
                applied = min(applied, loop.clip_grad_norm)
            before = diag.snapshot_weights(unwrap(self.model)) if diag_step else None
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if diag_step:
                self._diagnose(
                    layer_norms, diag.update_weight_ratios(unwrap(self.model), before), saturation
                )
        lr = self.optimizer.param_groups[0]["lr"]
        if not record.get("skipped"):
            self.scheduler.step()  # a skipped step made no update, so the schedule waits too
        self.step += 1
        for message in (self.exploding.check(applied), self.loss_spikes.check(loss_value)):
            if message:
                if message.startswith("exploding") and layer_norms:
                    message += f" (largest layers: {diag.largest_layers(layer_norms)})"
                self._warn(message)
        record.update(
            loss=all_mean(loss_value, self.ctx),
            lr=lr,
            grad_norm=raw_norm,
            grad_norm_applied=applied,
            tokens=tokens * self.ctx.world_size,
        )
        record.update(
            {
                k: all_mean(v / loop.grad_accum, self.ctx)
                for k, v in metric_sums.items()
                if k != "loss"
            }
        )
        return record

    def _diagnose(self, layer_norms: dict, ratios: dict, saturation):
        d = self.config.diagnostics
        record = {
            "kind": "diag",
            "step": self.step + 1,
            "grad_norms": layer_norms,
            "update_ratios": ratios,
        }
        message = diag.find_vanishing(layer_norms, d.vanishing_ratio, unwrap(self.model))
        if message:
            self._warn(message)
        if saturation:
            record["saturation"] = saturation.stats()
            message = diag.saturation_warning(record["saturation"])
            if message:
                self._warn(message)
        self.log.write(record)

    # ---- eval, checkpoints ------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        if self.eval_data is None:
            return {}
        self.model.eval()
        totals, count = {}, 0
        for i, batch in enumerate(self.eval_data):
            if i >= self.config.train.eval_batches:
                break
            with self._autocast():
                loss, metrics = self.objective(self.model, self._to_device(batch))
            totals["loss"] = totals.get("loss", 0.0) + float(loss)
            for key, value in metrics.items():
                if key not in ("tokens", "loss"):
                    totals[key] = totals.get(key, 0.0) + float(value)
            count += 1
        self.model.train()
        result = {f"eval_{k}": v / max(count, 1) for k, v in totals.items()}
        if self.ctx.is_main:
            self.log.write({"kind": "eval", "step": self.step, **result})
        return result

    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir else None

    def save_checkpoint(self):
        model_state, optim_state = full_state_dicts(
            self.model, self.optimizer, self.ctx
        )  # collective
        rng = all_gather_object(capture_rng(), self.ctx)
        data = all_gather_object(self.train_data.state_dict(), self.ctx)
        if self.ctx.is_main and self.checkpoint_dir():
            state = {
                "step": self.step,
                "model": model_state,
                "optimizer": optim_state,
                "scheduler": self.scheduler.state_dict(),
                "rng": rng,
                "data": data,
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "detectors": [
                    self.exploding.history.state_dict(),
                    self.loss_spikes.history.state_dict(),
                ],
            }
            save_checkpoint(self.checkpoint_dir(), self.step, state, self.config.checkpoint.keep)

    def resume(self) -> bool:
        path = latest_checkpoint(self.checkpoint_dir()) if self.checkpoint_dir() else None
        if path is None:
            return False
        state = load_checkpoint(path)
        load_full_state_dicts(
            self.model, self.optimizer, state["model"], state["optimizer"], self.ctx
        )
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rank = min(self.ctx.rank, len(state["rng"]) - 1)
        restore_rng(state["rng"][rank])
        self.train_data.load_state_dict(state["data"][rank])
        self.exploding.history.load_state_dict(state["detectors"][0])
        self.loss_spikes.history.load_state_dict(state["detectors"][1])
        self.step = state["step"]
        if self.ctx.is_main:
            self.log.write({"kind": "resume", "step": self.step, "checkpoint": path.name})
        return True

    def full_model_state(self) -> dict:
        """The unsharded model state dict (collective under FSDP), e.g. to save an HF folder."""
        return full_state_dicts(self.model, self.optimizer, self.ctx)[0]

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        loop, ckpt = self.config.train, self.config.checkpoint
        if ckpt.resume and self.resume() and self.step >= loop.steps:
            # Nothing left to train: say so instead of logging a summary with no loss in it.
            raise RunAlreadyComplete(
                f"run already complete at step {self.step} in {self.run_dir}; "
                "pick a new run_dir or --set checkpoint.resume=false"
            )
        progress = _Progress(loop.steps, self.step, enabled=loop.progress and self.ctx.is_main)
        summary: dict = {}
        started, tokens_seen = time.perf_counter(), 0
        try:
            while self.step < loop.steps:
                t0 = time.perf_counter()
                record = self.train_step()
                record["step_time"] = time.perf_counter() - t0
                record["tokens_per_s"] = record["tokens"] / max(record["step_time"], 1e-9)
                tokens_seen += record["tokens"]
                self.history.append(record)
                if self.ctx.is_main and (
                    self.step % loop.log_every == 0 or self.step == loop.steps
                ):
                    self.log.write(record)
                progress.update(self.step, record)
                if loop.eval_every and self.step % loop.eval_every == 0 and self.step < loop.steps:
                    summary.update(self.evaluate())
                if ckpt.every and self.step % ckpt.every == 0:
                    self.save_checkpoint()
                for callback in self.callbacks:
                    callback(self, record)
        finally:
            progress.close()
        summary.update(self.evaluate())
        elapsed = time.perf_counter() - started
        last = self.history[-1] if self.history else {}
        summary.update(
            step=self.step,
            loss=last.get("loss"),
            tokens_per_s=tokens_seen / max(elapsed, 1e-9),
            warnings=len(self.warnings),
        )
        if self.ctx.is_main:
            self.log.write({"kind": "summary", **summary})
        return summary

    def close(self):
        self.log.close()


class _Progress:
    """Live rich line on a terminal (step, loss, lr, grad norm, tokens/s, ETA); plain lines otherwise."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.enabled, self.bar = total, enabled, None
        self.every = max(1, total // 20)
        if not enabled:
            return
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("step"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=console,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    # What an RL step is judged by (its loss sits near 0 by construction): shown when present.
    RL_METRICS = (
        ("reward", "reward"),
        ("objective/scores", "reward"),
        ("kl", "kl"),
        ("objective/kl", "kl"),
        ("policy/clipfrac", "clipped"),
    )

    def update(self, step: int, record: dict):
        if not self.enabled:
            return
        rl = "  ".join(
            f"{label} {record[key]:.4g}" for key, label in self.RL_METRICS if key in record
        )
        info = (
            f"loss {record['loss']:.4f}  {rl + '  ' if rl else ''}lr {record['lr']:.2e}  "
            f"gnorm {record['grad_norm']:.3g}  {record['tokens_per_s']:,.0f} tok/s"
        )
        if self.bar:
            self.bar.update(self.task, completed=step, info=info)
        elif step % self.every == 0 or step == self.total:
            print(f"step {step}/{self.total}  {info}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar:
            self.bar.stop()
