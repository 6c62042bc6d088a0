"""llmlab: a compact, hackable, full-stack LLM system.

import llmlab
model, tokenizer = llmlab.load("smollm2-135m-instruct")
"""

__version__ = "0.1.0"


def load(
    name_or_path,
    device=None,
    dtype=None,
    quant=None,
    group_size: int = 32,
    adapters=(),
    merge_adapters: bool = False,
    tokenizer: bool = True,
):
    """(model, tokenizer) for a packaged model name, a Hugging Face folder, a .gguf path or a PEFT
    adapter folder; dtype float32/bfloat16, quant int8/int4, LoRA adapters on top. The only
    loader: see llmlab/loading.py."""
    from llmlab.loading import load as _load

    return _load(
        name_or_path,
        device=device,
        dtype=dtype,
        quant=quant,
        group_size=group_size,
        adapters=adapters,
        merge_adapters=merge_adapters,
        tokenizer=tokenizer,
    )


__all__ = ["load", "__version__"]
