"""One entry point for every method: `quantize_model_with(model, tokenizer, method, bits, ...)`,
used by `llmlab quantize` and bench/quant.py. Validates the combination, builds calibration data
from the train split of the given texts (see text_data.py), runs the flow, returns the model and
a dict describing what was done (stored in the folder's quantization_config)."""

from __future__ import annotations

import logging

from llmlab.errors import LlmlabError

log = logging.getLogger("llmlab.quant")

# 3 and 2 bits (rtn, qat): the int4 layout with fewer codes — no smaller file; for studying
# what fewer levels cost (and what QAT wins back where 4 bits cost nothing measurable)
METHODS = {"rtn": (8, 4, 3, 2), "gptq": (4,), "static": (8,), "dynamic": (8,), "qat": (4, 3, 2)}
DEFAULT_CALIB = ["bundled:stories-en.txt", "bundled:notes-zh.txt"]


def check_method(method: str, bits: int):
    if method not in METHODS:
        raise LlmlabError(f"unknown method '{method}' (choose {', '.join(METHODS)})")
    if bits not in METHODS[method]:
        allowed = " or ".join(str(b) for b in METHODS[method])
        raise LlmlabError(f"--method {method} supports --bits {allowed}, got {bits}")


def quantize_model_with(
    model,
    tokenizer,
    method: str,
    bits: int,
    group_size: int = 128,
    calib: list[str] | None = None,
    samples: int = 16,
    seq_len: int = 256,
    observer: str = "histogram-mse",
    smooth: float | str | None = "search",
    keep_float: int = 0,
    weights: str = "rtn",
    activations: str = "symmetric",
    float_layers=(),
    outliers: int = 0,
    activation_group_size: int | None = None,
    qat_steps: int = 100,
    qat_lr: float = 1e-4,
):
    """(model quantized in place, info dict). W8A8 (static, dynamic): `smooth` is SmoothQuant's α,
    "search" (per layer group, on the calibration split) or None; `keep_float` groups of linears
    with the largest calibration error stay float (mixed precision), and so do `outliers` input
    channels of every linear (LLM.int8()'s decomposition: outliers.py). `activation_group_size`
    (dynamic): one activation grid per run of that many input channels of a token."""
    check_method(method, bits)
    if (keep_float or float_layers) and method not in ("static", "dynamic"):
        raise LlmlabError("--keep-float applies to --method static and dynamic only")
    if outliers and method not in ("static", "dynamic"):
        raise LlmlabError("--outliers applies to --method static and dynamic only")
    if activation_group_size and method != "dynamic":
        raise LlmlabError("--activation-group-size applies to --method dynamic only")
    if weights != "rtn" and method != "dynamic":
        raise LlmlabError("--weights gptq applies to --method dynamic only")
    if activations not in ("symmetric", "asymmetric"):
        raise LlmlabError(f"--activations must be symmetric or asymmetric, got '{activations}'")
    if activations != "symmetric" and method != "dynamic":
        raise LlmlabError("--activations asymmetric applies to --method dynamic only")
    calib = calib or DEFAULT_CALIB
    info = {"method": method, "bits": bits}
    if bits <= 4:
        info["group_size"] = group_size
    seq_len = min(seq_len, getattr(model, "max_context", seq_len))

    def calibration(length=seq_len):
        from llmlab.quant.text_data import calibration_batch

        info["calibration"] = {
            "texts": calib,
            "split": "train",
            "samples": samples,
            "seq_len": length,
        }
        return calibration_batch(tokenizer, calib, samples, length)

    if method == "rtn":
        from llmlab.quant.rtn import quantize_rtn

        quantize_rtn(model, bits, group_size)
        info["activations"] = None
    elif method == "gptq":
        from llmlab.quant.gptq import quantize_gptq

        quantize_gptq(model, calibration(), group_size)
        info["activations"] = None
    elif method in ("static", "dynamic"):
        from llmlab.quant.ptq import (
            PER_TOKEN_ASYMMETRIC,
            plan_w8a8,
            quantize_dynamic,
            quantize_static,
        )

        static = method == "static"
        needs_text = static or smooth or keep_float or outliers or weights == "gptq"
        ids = calibration() if needs_text else None
        asymmetric = activations == "asymmetric"
        observer_for = observer if static else PER_TOKEN_ASYMMETRIC if asymmetric else None
        plan = plan_w8a8(model, ids, smooth, observer_for, keep_float, float_layers, outliers)
        if static:
            quantize_static(model, ids, observer, plan=plan)
            info.update(activations="static", observer=observer)
        else:
            quantize_dynamic(
                model, ids, plan=plan, weights=weights, asymmetric=asymmetric,
                input_group_size=activation_group_size,
            )  # fmt: skip
            info.update(activations="dynamic", activation_grid=activations, weights=weights)
            if activation_group_size:
                info["activation_group_size"] = activation_group_size
        info.update(plan.describe())
    else:  # qat
        from llmlab.quant.qat import convert_qat, prepare_qat, train_qat

        windows = calibration(seq_len + 1)
        prepare_qat(model, group_size, bits)
        summary = train_qat(model, windows, steps=qat_steps, lr=qat_lr)
        convert_qat(model)
        info.update(
            activations=None, qat={"steps": qat_steps, "lr": qat_lr, "loss": summary.get("loss")}
        )
    return model, info
