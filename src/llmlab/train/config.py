"""Training configuration: dataclasses loaded from YAML, with `--set key=value` overrides.

    config = load_config(PretrainConfig, "recipes/pretrain-tiny.yaml", ["optim.lr=1e-3", "train.steps=50"])

Every section is a dataclass, so the keys a run accepts are written down in one place. A key that is
not a field (a typo like `optim.lr_rate`) is an error that names the key and the keys that exist.
Override values are parsed as YAML (`train.clip_grad_norm=null`, `data.corpus=[a.txt,b.txt]`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmlab.errors import LlmlabError


class ConfigError(LlmlabError):
    pass


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adam | sgd | rmsprop
    lr: float = 3e-4
    weight_decay: float = 0.0  # AdamW: applied to matrices only (not norms or biases)
    betas: tuple = (0.9, 0.95)
    eps: float = 1e-8
    momentum: float = 0.9  # sgd and rmsprop
    fused: bool = False  # torch's fused AdamW/Adam kernel (CPU and CUDA)
    schedule: str = "cosine"  # cosine | linear | constant (each after a linear warmup)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine/linear decay ends at lr * min_lr_ratio


@dataclass
class LoopConfig:
    steps: int = 100
    batch_size: int = 8  # sequences per micro-batch, summed over all processes
    grad_accum: int = 1  # micro-batches per optimizer step
    clip_grad_norm: float | None = 1.0  # clip the global gradient norm; null turns it off
    clip_grad_value: float | None = None  # clamp every gradient element to ±value
    precision: str = (
        "fp32"  # fp32 | bf16 (autocast, CPU and CUDA) | fp16 (autocast + grad scaler, CUDA)
    )
    init: str = "model"  # model (the model's own init) | normal | xavier | kaiming
    init_std: float = 0.02  # std of the `normal` init
    compile: bool = False  # torch.compile the model
    eval_every: int = 0  # 0: only at the end
    eval_batches: int = 8
    log_every: int = 1
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda
    deterministic: bool = False  # torch.use_deterministic_algorithms (bitwise-repeatable runs)
    progress: bool = True  # live rich progress line (plain lines when not a terminal)


@dataclass
class DiagnosticsConfig:
    every: int = 10  # per-layer gradient norms and update/weight ratios every N steps (0: off)
    vanishing_ratio: float = 1e-3  # warn when early layers' grad norm < ratio × the last layers'
    exploding_norm: float = 100.0  # warn when the applied (post-clip) gradient norm exceeds this
    spike_factor: float = 10.0  # ... or jumps above factor × its recent median
    loss_spike_factor: float = 2.0  # warn when the loss exceeds factor × its recent median
    window: int = 20  # steps of history for the medians above
    saturation: bool = True  # share of sigmoid/tanh inputs in the flat region (forward hooks)


@dataclass
class CheckpointConfig:
    every: int = 0  # save every N steps (0: only the final model)
    keep: int = 2  # keep the last k checkpoints
    resume: bool = True  # continue from the newest checkpoint in the run folder


@dataclass
class DistributedConfig:
    strategy: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard); used only under torchrun
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | gloo | nccl


@dataclass
class TrainerConfig:
    """What the trainer itself needs; objectives add their own sections around it."""

    run_dir: str = "runs/run"
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


@dataclass
class DataConfig:
    corpus: list = field(
        default_factory=list
    )  # .txt / .jsonl / .parquet files; "bundled:NAME" for bundled ones
    tokenizer: str = ""  # a tokenizer folder (tokenizer.json), e.g. from `llmlab train tokenizer`
    seq_len: int = 128
    val_fraction: float = 0.05
    text_field: str = "text"  # jsonl/parquet column holding the text
    cache_dir: str = ""  # where token files go ("" → <run_dir>/data)


@dataclass
class PretrainConfig(TrainerConfig):
    model: dict = field(default_factory=dict)  # Hugging Face config.json keys of the model
    data: DataConfig = field(default_factory=DataConfig)


@dataclass
class BertDataConfig(DataConfig):
    mlm_probability: float = 0.15
    classification: list = field(default_factory=list)  # jsonl with text + label for the fine-tune
    finetune_steps: int = 200
    finetune_lr: float = 1e-3


@dataclass
class BertPretrainConfig(TrainerConfig):
    model: dict = field(default_factory=dict)
    data: BertDataConfig = field(default_factory=BertDataConfig)


def from_dict(cls, values: dict, prefix: str = ""):
    """Build dataclass `cls` from a nested dict; unknown keys raise ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(
            f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {values!r}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known: {', '.join(names)})")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint, value, name: str):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value or {}, name + ".")
    if value is None:
        return None
    allowed = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    for kind in allowed:
        if kind is bool:
            if isinstance(value, bool):
                return value
            continue
        if kind in (int, float):
            try:
                number = kind(value) if not isinstance(value, bool) else None
            except (TypeError, ValueError):
                continue
            if number is not None and (kind is float or float(value) == number):
                return number
            continue
        origin = typing.get_origin(kind) or kind
        if origin in (list, tuple):
            items = value if isinstance(value, (list, tuple)) else [value]
            return origin(items)
        if origin is dict:
            if isinstance(value, dict):
                return value
            continue
        if origin is str:
            return str(value)
        return value
    raise ConfigError(f"config key '{name}' expects {hint}, got {value!r}")


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` strings to a nested dict (values parsed as YAML)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")
        key, raw = item.split("=", 1)
        parsed = yaml.safe_load(raw) if raw.strip() else ""
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = parsed
    return values


def load_config(cls, path: str | Path | None = None, overrides: list[str] | None = None):
    values: dict = {}
    if path:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return from_dict(cls, apply_overrides(values, overrides or []))


def to_dict(config) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON dumps."""

    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def validate(config: TrainerConfig):
    """Catch bad values before any work starts."""
    o, t = config.optim, config.train
    checks = [
        (
            o.name in ("adamw", "adam", "sgd", "rmsprop"),
            f"optim.name '{o.name}' (choose adamw, adam, sgd, rmsprop)",
        ),
        (
            o.schedule in ("cosine", "linear", "constant"),
            f"optim.schedule '{o.schedule}' (choose cosine, linear, constant)",
        ),
        (o.lr > 0, f"optim.lr must be > 0, got {o.lr}"),
        (
            t.precision in ("fp32", "bf16", "fp16"),
            f"train.precision '{t.precision}' (choose fp32, bf16, fp16)",
        ),
        (
            t.init in ("model", "normal", "xavier", "kaiming"),
            f"train.init '{t.init}' (choose model, normal, xavier, kaiming)",
        ),
        (
            t.steps > 0 and t.batch_size > 0 and t.grad_accum > 0,
            "train.steps, batch_size and grad_accum must be > 0",
        ),
        (
            config.distributed.strategy in ("ddp", "fsdp"),
            f"distributed.strategy '{config.distributed.strategy}' (choose ddp, fsdp)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"bad config value: {message}")
