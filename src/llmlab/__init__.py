"""llmlab: a compact, hackable, full-stack LLM system.

import llmlab
model, tokenizer = llmlab.load("smollm2-135m-instruct")
"""

__version__ = "0.1.0"


def load(name_or_path, device=None, dtype=None, tokenizer: bool = True):
    """(model, tokenizer) for a packaged model name, a Hugging Face folder or a .gguf path."""
    from llmlab.loading import load as _load

    return _load(name_or_path, device=device, dtype=dtype, tokenizer=tokenizer)


__all__ = ["load", "__version__"]
