"""LoRA adapters in PEFT's folder format, so `peft.PeftModel.from_pretrained` reads ours and we read theirs.

    config, weights = read_adapter("out/adapter")   # LoraConfig, {module: {"lora_A", "lora_B"}}
    write_adapter("out/copy", config, weights, base_model_name_or_path="smollm2-135m-instruct")

Tensors and configs only: putting an adapter onto a model (and taking it off one) is
`llmlab.adapters.load_adapter` / `save_adapter`.

Weights are keyed `base_model.model.<module path>.lora_A.weight` / `.lora_B.weight` (no adapter
name inside the key); the config carries r, lora_alpha, lora_dropout, target_modules, use_rslora.
Only plain LoRA is read: DoRA, bias training, per-module rank/alpha patterns and modules_to_save
are refused with a message naming the option.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmlab.errors import CorruptFileError
from llmlab.nn.lora import LoraConfig, LoraError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# The chat template an SFT adapter was trained with (transformers' file name for a tokenizer's
# template; peft ignores it): loading the adapter gives the tokenizer this template, so e.g. a Gemma
# 3 base with the notes adapter chats in Gemma's turns, not the base model's question/answer frame.
TEMPLATE_FILE = "chat_template.jinja"
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


def write_adapter(
    folder: str | Path,
    config: LoraConfig,
    tensors: dict[str, torch.Tensor],
    base_model_name_or_path: str | None = None,
    chat_template: str | None = None,
) -> Path:
    """Write a PEFT folder from `{module path: {"lora_A": A, "lora_B": B}}` and its LoraConfig
    (plus TEMPLATE_FILE when a chat template is given)."""
    folder = Path(folder)
    flat = {
        f"{PREFIX}{module}.{kind}.weight": tensor.detach().cpu().contiguous()
        for module, pair in tensors.items()
        for kind, tensor in pair.items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(
        json.dumps(peft_config_dict(config, base_model_name_or_path), indent=2)
    )
    if chat_template:
        (folder / TEMPLATE_FILE).write_text(chat_template, encoding="utf-8")
    return folder


def read_chat_template(folder: str | Path) -> str | None:
    """The adapter folder's chat template (TEMPLATE_FILE), or None when it has none."""
    path = Path(folder) / TEMPLATE_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else None


def is_adapter_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).exists()


def read_adapter_config(folder: str | Path) -> dict:
    """adapter_config.json as a dict (e.g. for its base_model_name_or_path)."""
    path = Path(folder) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptFileError(f"{folder}: not a PEFT adapter folder (no {CONFIG_FILE})") from None
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: not valid JSON ({exc.msg})") from None


def read_adapter(folder: str | Path) -> tuple[LoraConfig, dict[str, dict[str, torch.Tensor]]]:
    """(LoraConfig, {module path: {"lora_A": A, "lora_B": B}}) from a PEFT folder (ours or peft's)."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.exists() or not weights_path.exists():
        raise CorruptFileError(
            f"{folder}: not a PEFT adapter folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    config = config_from_peft(read_adapter_config(folder), config_path)
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(weights_path)).items():
        if not key.startswith(PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise CorruptFileError(f"{folder}: unexpected adapter key {key}")
        module, kind = key[len(PREFIX) :].rsplit(".", 2)[0], key.rsplit(".", 2)[1]
        weights.setdefault(module, {})[kind] = tensor
    for module, pair in weights.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise CorruptFileError(f"{folder}: adapter weights for {module} lack lora_A or lora_B")
    return config, weights
