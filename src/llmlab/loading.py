"""`llmlab.load`: the one path from a name or path to a model. Engine, server, post-training
runners and the CLI all call it.

    model, tokenizer = llmlab.load("smollm2-135m-instruct")
    model, tokenizer = llmlab.load("path/to/hf-folder", dtype="bfloat16")
    model, tokenizer = llmlab.load("model.gguf", quant="int4", group_size=32)
    model, tokenizer = llmlab.load("smollm2-135m-instruct", adapters=["runs/sft/adapter"])
    logits = model(input_ids)            # [batch, seq, vocab] for decoders

Sources: a packaged name (registry.py), a Hugging Face folder (config.json + safetensors), a
.gguf file, or a PEFT adapter folder whose adapter_config.json names a base that resolves here
(a packaged name or a local path) — that base is loaded and the adapter put on top. The
architecture comes from `model_type` (config.json) or `general.architecture` (GGUF) and picks
the model family: one file per family under `llmlab/models/` (FAMILIES below).

Precision: `dtype` float32 / bfloat16 / float16 (default float32 on CPU, bfloat16 elsewhere).
`quant` "int8" (per output row) or "int4" (groups of `group_size` inputs) replaces the linear
layers by weight-only quantized ones (llmlab/nn/quantized_linear.py). A Q4_1 GGUF loaded with
quant="int4" on the CPU keeps the file's own 4-bit blocks packed (formats/gguf_int4.py), never
expanding them to floats; with adapters it loads floats instead, since a merged LoRA update has
to go into float weights before they are quantized.

Adapters: each PEFT folder in `adapters` is added under its folder's name (all active, their
updates summed). `merge_adapters=True` (implied by `quant`) folds them into the weights and puts
plain linear layers back: decoding then costs what the base costs, and the engine packs them.
`bundled:NAME` names an adapter shipped in llmlab/assets/adapters/ (`bundled:notes-gemma3`).
An adapter folder holding `chat_template.jinja` (an SFT run with `model.chat_format`) gives the
tokenizer that template: Gemma 3 270M + the notes adapter chats in Gemma's turns.

Quantized folders (hook): a folder whose config.json carries a `quantization_config` with a
`quant_method` is read by the reader registered for that method in QUANTIZED_FOLDER_READERS
("module:function", imported on use). The reader gets (folder, config dict) and returns
(config dict, float state dict, {module path: quantized nn.Module}); the float part is loaded as
usual and each quantized module is set in place. A method with no reader fails with one line.

`kind_of(name_or_path)` says chat / base / embedding without reading weights.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch

from llmlab.device import pick_device, pick_dtype
from llmlab.errors import LlmlabError, UnknownModelError, UnsupportedArchitectureError
from llmlab.registry import PACKAGED_MODELS, resolve

log = logging.getLogger("llmlab.loading")

FAMILIES = {
    "llama": "llmlab.models.llama",
    "mistral": "llmlab.models.llama",
    "qwen2": "llmlab.models.llama",
    "bert": "llmlab.models.bert",
    "gemma3_text": "llmlab.models.gemma3",
    "gemma3": "llmlab.models.gemma3",
}

# model_type values whose models turn text into vectors rather than generate text.
EMBEDDING_TYPES = ("bert",)

# quantization_config.quant_method → "module:function" reading such a folder (see the docstring).
QUANTIZED_FOLDER_READERS: dict[str, str] = {
    "llmlab": "llmlab.formats.quantized:read_quantized_folder",  # `llmlab quantize` (quant/)
}


def family_for(config: dict):
    """The models/ module that implements this config.json's model_type."""
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        architectures = ", ".join(config.get("architectures") or []) or "none listed"
        raise UnsupportedArchitectureError(
            f"unsupported architecture: model_type '{model_type}' ({architectures}); "
            f"supported: {', '.join(sorted(FAMILIES))}"
        )
    return importlib.import_module(FAMILIES[model_type])


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json dict, state dict with Hugging Face names) from a folder or a .gguf file."""
    if path.suffix == ".gguf":
        from llmlab.formats.gguf import read_gguf

        return read_gguf(path)
    from llmlab.formats.hf import read_config, read_hf_folder

    family_for(read_config(path))  # refuse an unknown architecture before reading gigabytes
    return read_hf_folder(path)


def adapter_folder(name: str | Path) -> Path:
    """An adapter folder: a path, or `bundled:NAME` for one shipped in llmlab/assets/adapters/
    (e.g. `bundled:notes-gemma3`, the notes assistant's LoRA of Gemma 3 270M)."""
    text = str(name)
    if text.startswith("bundled:"):
        from importlib import resources

        return Path(
            str(resources.files("llmlab") / "assets" / "adapters" / text[len("bundled:") :])
        )
    return Path(text).expanduser()


def resolve_with_adapters(
    name_or_path: str | Path, adapters=()
) -> tuple[Path, list[Path], str | None]:
    """(model path, adapter folders, packaged name or None). A PEFT folder given as the model
    becomes its base (from adapter_config.json) plus itself as the first adapter."""
    from llmlab.formats.peft import is_adapter_folder, read_adapter_config

    text = str(name_or_path)
    adapter_paths = [adapter_folder(a) for a in adapters]
    if text.startswith("bundled:"):
        text = str(adapter_folder(text))
    for adapter in adapter_paths:
        if not is_adapter_folder(adapter):
            raise UnknownModelError(
                f"adapter '{adapter}' is not a PEFT adapter folder (needs adapter_config.json)"
            )
    if is_adapter_folder(Path(text).expanduser()):
        base = read_adapter_config(Path(text).expanduser()).get("base_model_name_or_path")
        if not base or not (base in PACKAGED_MODELS or Path(base).expanduser().exists()):
            raise UnknownModelError(
                f"'{text}' is a LoRA adapter folder, not a model, and its base "
                f"'{base}' is not here: use --model BASE --adapter {text}"
            )
        log.info("%s is an adapter folder: loading its base %s with it", text, base)
        return resolve(base), [Path(text).expanduser(), *adapter_paths], _packaged(base)
    return resolve(text), adapter_paths, _packaged(text)


def _packaged(text: str) -> str | None:
    return text if text in PACKAGED_MODELS else None


def kind_of(name_or_path: str | Path) -> str:
    """ "chat", "base" or "embedding", read from the registry or the files (no weights loaded)."""
    path, _, packaged = resolve_with_adapters(name_or_path)
    if packaged:
        return PACKAGED_MODELS[packaged].kind
    if path.suffix == ".gguf":
        from llmlab.formats.gguf import open_gguf, read_metadata

        metadata = read_metadata(open_gguf(path))
        if metadata.get("general.architecture") in EMBEDDING_TYPES:
            return "embedding"
        return "chat" if metadata.get("tokenizer.chat_template") else "base"
    from llmlab.formats.hf import read_config

    if read_config(path).get("model_type") in EMBEDDING_TYPES:
        return "embedding"
    return "chat" if _has_chat_template(path) else "base"


def _has_chat_template(folder: Path) -> bool:
    import json

    if (folder / "chat_template.jinja").exists() or (folder / "chat_template.json").exists():
        return True
    config = folder / "tokenizer_config.json"
    try:
        return bool(json.loads(config.read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def load(
    name_or_path: str | Path,
    device=None,
    dtype=None,
    quant: str | None = None,
    group_size: int = 32,
    adapters=(),
    merge_adapters: bool = False,
    tokenizer: bool = True,
):
    """(model, tokenizer or None) by packaged name or local path. See the module docstring."""
    from llmlab.nn.quantized_linear import check_quant

    check_quant(quant, group_size)
    path, adapter_paths, _ = resolve_with_adapters(name_or_path, adapters)
    device = pick_device(device)
    target_dtype = pick_dtype(dtype, device)
    model = None
    if quant == "int4" and path.suffix == ".gguf" and device.type == "cpu" and not adapter_paths:
        model = _gguf_int4_model(path, target_dtype, group_size)  # None: not a Llama-family file
    if model is None:
        model = _float_model(path, quant).to(device=device, dtype=target_dtype)
        if adapter_paths:
            _add_adapters(model, adapter_paths, merge=merge_adapters or bool(quant))
        if quant:
            from llmlab.nn.quantized_linear import quantize_model

            quantize_model(model, quant, group_size)
    model = model.eval()
    model.source_path = str(path)
    model.adapter_paths = [str(a) for a in adapter_paths]
    if not tokenizer:
        return model, None
    from llmlab.tokenize.tokenizer import load_tokenizer

    return model, _adapter_template(load_tokenizer(path), adapter_paths)


def _adapter_template(tokenizer, adapter_paths: list[Path]):
    """The tokenizer with the chat template an adapter was trained with (the first one naming one)."""
    from llmlab.formats.peft import read_chat_template
    from llmlab.tokenize.tokenizer import use_chat_template

    for folder in adapter_paths:
        template = read_chat_template(folder)
        if template:
            use_chat_template(tokenizer, template)
            break
    return tokenizer


def _float_model(path: Path, quant: str | None = None) -> torch.nn.Module:
    if path.is_dir():
        from llmlab.formats.hf import read_config

        quantization = read_config(path).get("quantization_config")
        if quantization:
            if quant:
                raise LlmlabError(f"{path} is already quantized: drop --quant {quant}")
            return _quantized_folder_model(path, quantization)
    config, state_dict = read_checkpoint(path)
    return family_for(config).model_from_hf(config, state_dict)


def _quantized_folder_model(path: Path, quantization: dict) -> torch.nn.Module:
    """The hook for folders written by a quantizer (see the module docstring)."""
    from llmlab.formats.hf import read_config

    method = quantization.get("quant_method")
    if method not in QUANTIZED_FOLDER_READERS:
        known = ", ".join(sorted(QUANTIZED_FOLDER_READERS)) or "none yet"
        raise UnsupportedArchitectureError(
            f"{path}: quantization_config.quant_method '{method}' has no reader (known: {known})"
        )
    module_name, _, function = QUANTIZED_FOLDER_READERS[method].partition(":")
    reader = getattr(importlib.import_module(module_name), function)
    config, floats, quantized = reader(path, read_config(path))
    return _assemble(config, floats, quantized)


def _assemble(
    config: dict, floats: dict[str, torch.Tensor], quantized: dict[str, torch.nn.Module]
) -> torch.nn.Module:
    """A model from float tensors plus ready-made (quantized) modules set at their paths."""
    from llmlab.errors import CorruptFileError

    family = family_for(config)
    with torch.device("meta"):
        model = family.model_from_hf(config, None)
    if getattr(model.config, "tie_word_embeddings", False) and "lm_head" in quantized:
        model.config.tie_word_embeddings = False  # the head is its own quantized layer
    for name, module in quantized.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, module)
    if "lm_head" not in quantized and "lm_head.weight" not in floats:
        floats = {**floats, "lm_head.weight": floats["model.embed_tokens.weight"]}
    missing, unexpected = model.load_state_dict(floats, strict=False, assign=True)
    missing = [k for k in missing if not any(k.startswith(p + ".") for p in quantized)]
    missing = [k for k in missing if not k.endswith("inv_freq")]
    if missing or unexpected:
        raise CorruptFileError(
            f"tensors do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    rebuild = getattr(family, "rebuild_buffers", None)  # e.g. rotary tables, left on meta
    return rebuild(model) if rebuild else model


def _gguf_int4_model(path: Path, dtype: torch.dtype, group_size: int) -> torch.nn.Module | None:
    """A Q4_1 GGUF with its blocks kept packed: int4 layers straight from the file's codes."""
    from llmlab.formats.gguf_int4 import Q4_1_GROUP, read_gguf_int4
    from llmlab.nn.quantized_linear import Int4Linear, regroup

    parts = read_gguf_int4(path)
    if parts is None:
        return None
    config, floats, packed = parts
    layers = {}
    for name, parts in packed.items():
        layer = Int4Linear(*parts, group_size=Q4_1_GROUP)
        if group_size != Q4_1_GROUP and layer.in_features % group_size:
            log.warning(
                "int4 group size %d does not divide %s's %d inputs: keeping the file's group of 32",
                group_size,
                name,
                layer.in_features,
            )
        layers[name] = regroup(layer, group_size)
    if "lm_head" not in layers:  # a tied (or float) head gets its own int4 copy
        head = floats.pop("lm_head.weight", floats["model.embed_tokens.weight"])
        fits = head.shape[1] % group_size == 0
        layers["lm_head"] = Int4Linear.from_weight(head, group_size if fits else Q4_1_GROUP)
    floats = {k: v.to(dtype) for k, v in floats.items()}
    return _assemble(config, floats, layers)


def _add_adapters(model: torch.nn.Module, folders: list[Path], merge: bool) -> None:
    from llmlab.adapters import load_adapter
    from llmlab.nn.lora import merge_and_unload, set_adapter

    names = []
    for folder in folders:
        name = folder.resolve().name or "default"
        while name in names:
            name += "_"
        load_adapter(model, folder, adapter_name=name)
        names.append(name)
    set_adapter(model, names, trainable=False)
    if merge:
        merge_and_unload(model)
        for p in model.parameters():
            p.requires_grad_(False)


def require_generative(name_or_path: str | Path, command: str) -> str:
    """The model's kind, or a one-line error when it cannot generate text (an embedding model)."""
    kind = kind_of(name_or_path)
    if kind == "embedding":
        raise LlmlabError(
            f"'{name_or_path}' is an embedding model: it turns text into vectors and cannot "
            f"{command}; use `llmlab embed --model {name_or_path}` instead"
        )
    return kind
