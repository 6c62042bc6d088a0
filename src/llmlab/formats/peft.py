"""LoRA adapters in PEFT's folder format, so `peft.PeftModel.from_pretrained` reads ours and we read theirs.

    save_adapter(model, "out/adapter")                     # adapter_config.json + adapter_model.safetensors
    load_adapter(model, "out/adapter", adapter_name="b")   # adds (or fills) adapter "b"

Weights are keyed `base_model.model.<module path>.lora_A.weight` / `.lora_B.weight` (no adapter
name inside the key); the config carries r, lora_alpha, lora_dropout, target_modules, use_rslora.
Only plain LoRA is read: DoRA, bias training, per-module rank/alpha patterns and modules_to_save
are refused with a message naming the option.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmlab.errors import CorruptFileError
from llmlab.nn.lora import LoraConfig, LoraError, add_lora, lora_layers

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."


def peft_config_dict(config: LoraConfig, base_model_name_or_path: str | None = None) -> dict:
    targets = (
        config.target_modules
        if isinstance(config.target_modules, str)
        else sorted(config.target_modules)
    )
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": targets,
        "use_rslora": config.use_rslora,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def config_from_peft(raw: dict, path: Path) -> LoraConfig:
    if raw.get("peft_type", "LORA") != "LORA":
        raise CorruptFileError(f"{path}: peft_type {raw.get('peft_type')} is not LORA")
    unsupported = {
        "use_dora": raw.get("use_dora"),
        "bias": raw.get("bias", "none") != "none",
        "rank_pattern": raw.get("rank_pattern"),
        "alpha_pattern": raw.get("alpha_pattern"),
        "modules_to_save": raw.get("modules_to_save"),
        "fan_in_fan_out": raw.get("fan_in_fan_out"),
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise LoraError(f"{path}: adapter option(s) not supported: {', '.join(bad)}")
    return LoraConfig(
        r=int(raw["r"]),
        alpha=float(raw.get("lora_alpha", 8)),
        dropout=float(raw.get("lora_dropout", 0.0)),
        target_modules=raw.get("target_modules") or "all-linear",
        use_rslora=bool(raw.get("use_rslora")),
    )


def save_adapter(
    model: torch.nn.Module,
    folder: str | Path,
    adapter_name: str = "default",
    base_model_name_or_path: str | None = None,
) -> Path:
    folder = Path(folder)
    layers = lora_layers(model)
    config = getattr(model, "lora_configs", {}).get(adapter_name)
    if config is None or not layers:
        raise LoraError(f"the model has no adapter named '{adapter_name}'")
    tensors = {}
    for name, layer in layers.items():
        if adapter_name in layer.lora_A:
            tensors[f"{PREFIX}{name}.lora_A.weight"] = (
                layer.lora_A[adapter_name].weight.detach().cpu().contiguous()
            )
            tensors[f"{PREFIX}{name}.lora_B.weight"] = (
                layer.lora_B[adapter_name].weight.detach().cpu().contiguous()
            )
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    base = base_model_name_or_path or getattr(model, "source_path", None)
    (folder / CONFIG_FILE).write_text(json.dumps(peft_config_dict(config, base), indent=2))
    return folder


def read_adapter(folder: str | Path) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.exists() or not weights_path.exists():
        raise CorruptFileError(
            f"{folder}: not a PEFT adapter folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{config_path}: not valid JSON ({exc.msg})") from None
    return config_from_peft(raw, config_path), load_file(str(weights_path))


def load_adapter(
    model: torch.nn.Module,
    folder: str | Path,
    adapter_name: str = "default",
    base_dtype: str | None = None,
) -> torch.nn.Module:
    """Add adapter `adapter_name` from a PEFT folder (creating the LoRA layers it names)."""
    config, tensors = read_adapter(folder)
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if not key.startswith(PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise CorruptFileError(f"{folder}: unexpected adapter key {key}")
        module, kind = key[len(PREFIX) :].rsplit(".", 2)[0], key.rsplit(".", 2)[1]
        weights.setdefault(module, {})[kind] = tensor
    # Target exactly the modules the file holds: its target_modules may be broader than what was saved.
    config.target_modules = "|".join(re.escape(m) for m in weights)
    add_lora(model, config, adapter_name=adapter_name, base_dtype=base_dtype)
    layers = lora_layers(model)
    for module, pair in weights.items():
        layer = layers.get(module)
        if layer is None or set(pair) != {"lora_A", "lora_B"}:
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
