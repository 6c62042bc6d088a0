"""Quantization: observers, fake quantization, and the flows that turn a float model into one with
quantized linear layers (the layers themselves are in `llmlab.nn.quantized_linear`).

    from llmlab.quant import quantize_model_with
    model = quantize_model_with(model, tokenizer, method="gptq", bits=4, group_size=64,
                                calib=["bundled:stories-en.txt"])
    save_quantized(model, "runs/smollm2-gptq4", tokenizer, info)     # quant/save.py

| method | bits | what |
|---|---|---|
| rtn | 8, 4 | round to nearest: int8 per channel / int4 per group, weight-only (`rtn.py`) |
| gptq | 4 | int4 per group, weight-only, error-compensated with calibration data (`gptq.py`) |
| static | 8 | W8A8, activation (scale, zero point) per layer from calibration observers (`ptq.py`) |
| dynamic | 8 | W8A8, activation scale per token at run time (`ptq.py`) |
| qat | 4 | int4 weight-only after fine-tuning with fake quantization + STE (`qat.py`) |

See docs/quantization.md for what each measured.
"""

from llmlab.quant.flows import METHODS, quantize_model_with

__all__ = ["METHODS", "quantize_model_with"]
