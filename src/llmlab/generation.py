"""Reference generation: one sequence at a time, contiguous KV cache, every sampling option.

This is the correctness reference the serving engine is tested against: simple before fast.

    model, tok = llmlab.load("smollm2-135m-instruct")
    result = generate(model, tok, "The capital of France is", GenerationConfig(max_tokens=20))
    for piece in stream(model, tok, prompt_ids, GenerationConfig(temperature=0.7, seed=1)):
        print(piece, end="", flush=True)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from llmlab.errors import ContextLengthError, LlmlabError
from llmlab.models.llama import KVCache
from llmlab.sampling import sample_next_token


@dataclass
class GenerationConfig:
    max_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)  # added to the tokenizer's EOS
    stop: list[str] = field(default_factory=list)  # stop strings (not included in the text)

    def __post_init__(self):
        if self.max_tokens < 1:
            raise LlmlabError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise LlmlabError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LlmlabError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise LlmlabError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise LlmlabError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (EOS, stop id or stop string) or "length"


def eos_token_ids(tokenizer, config: GenerationConfig) -> set[int]:
    """Token ids that end generation: the tokenizer's EOS plus the caller's stop ids."""
    ids = set(config.stop_token_ids)
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def generate_token_ids(
    model, prompt_ids: list[int], config: GenerationConfig, stop_ids: set[int]
) -> Iterator[int]:
    """Yield new token ids one by one; the last is a stop id when generation ended on one."""
    if not prompt_ids:
        raise LlmlabError("the prompt is empty")
    context = model.max_context
    if len(prompt_ids) >= context:
        raise ContextLengthError(
            f"the prompt is {len(prompt_ids)} tokens but the model's context is {context}"
        )
    max_new = min(config.max_tokens, context - len(prompt_ids))
    device = model.lm_head.weight.device
    cache = KVCache.for_model(model, batch_size=1, max_length=len(prompt_ids) + max_new)
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    seen = torch.tensor(prompt_ids, device=device)
    logits = model(seen[None], cache)[0, -1]
    for _ in range(max_new):
        token = sample_next_token(
            logits,
            seen,
            config.temperature,
            config.top_k,
            config.top_p,
            config.repetition_penalty,
            generator,
        )
        yield token
        if token in stop_ids:
            return
        seen = torch.cat([seen, seen.new_tensor([token])])
        logits = model(seen[-1:][None], cache)[0, -1]


class Detokenizer:
    """Token ids in, text deltas out. Holds back an incomplete UTF-8 character and any tail that
    could still become a stop string, so streamed text never has to be taken back."""

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""  # final text so far (cut at a stop string once one is seen)
        self.emitted = 0
        self.stopped = False

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""  # the rest of a multi-byte character is in the next token
        for s in self.stop:
            at = text.find(s, max(0, self.emitted - len(s)))
            if at != -1:
                self.text, self.stopped = text[:at], True
                return self._emit(len(self.text))
        self.text = text
        hold = max(
            (k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0
        )
        return self._emit(len(text) - hold)

    def flush(self) -> str:
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        delta, self.emitted = self.text[self.emitted : upto], upto
        return delta


def stream(
    model, tokenizer, prompt_ids: list[int], config: GenerationConfig, result: dict | None = None
) -> Iterator[str]:
    """Yield text pieces as they are generated. If `result` is a dict, it is filled with the
    GenerationResult's fields when the stream ends."""
    stop_ids = eos_token_ids(tokenizer, config)
    detok = Detokenizer(tokenizer, config.stop)
    finish_reason = "length"
    for token in generate_token_ids(model, prompt_ids, config, stop_ids):
        if token in stop_ids:
            finish_reason = "stop"
            break
        piece = detok.add(token)
        if piece:
            yield piece
        if detok.stopped:
            finish_reason = "stop"
            break
    tail = detok.flush()
    if tail:
        yield tail
    if result is not None:
        result.update(
            text=detok.text,
            token_ids=detok.ids,
            prompt_tokens=len(prompt_ids),
            finish_reason=finish_reason,
        )


def generate(
    model, tokenizer, prompt: str | list[int], config: GenerationConfig | None = None
) -> GenerationResult:
    """Generate a completion for a text prompt (tokenized as is) or a list of token ids."""
    config = config or GenerationConfig()
    prompt_ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    result: dict = {}
    for _ in stream(model, tokenizer, prompt_ids, config, result):
        pass
    return GenerationResult(**result)
