"""Tiny models, tokenizer and prompts shared by the engine and server tests."""

from __future__ import annotations

import torch
from tiny import tiny_tokenizer

from llmlab.models.llama import LlamaConfig, LlamaForCausalLM


def tiny_model(seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A 2-layer GQA Llama whose weights are large enough that greedy picks are never near-ties."""
    torch.manual_seed(seed)
    values = dict(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,
        bos_token_id=1,
        eos_token_id=2,
    )
    values.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**values)).eval()


def random_prompts(lengths, seed: int = 1, vocab: int = 320) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


__all__ = ["tiny_model", "random_prompts", "tiny_tokenizer"]
