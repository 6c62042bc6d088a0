"""The serving engine: paged KV cache, continuous batching, prefix caching (see docs/serving.md).

from llmlab.engine import LLM, SamplingParams
"""

from llmlab.engine.llm import LLM
from llmlab.engine.llm_engine import CompletionOutput, LLMEngine, RequestOutput
from llmlab.engine.sampling_params import SamplingParams

__all__ = ["LLM", "LLMEngine", "SamplingParams", "RequestOutput", "CompletionOutput"]
