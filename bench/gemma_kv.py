"""Gemma 3 KV-cache memory at a long context: what the engine holds vs what the layers can read.

    .venv/bin/python bench/gemma_kv.py [--context 4096] [--block-size 16]

The engine's paged cache gives every layer a slot for every token of a sequence (one block table
per sequence, shared by all layers). Gemma 3 270M's 15 sliding-window layers (of 18) only ever
read the last 512 tokens, so for them everything older is dead weight: the engine does NOT free
those blocks (a per-layer-group block table would be needed), and this script measures how much
memory that costs. It runs the real engine on a model with Gemma 3 270M's layer pattern, window
and KV shape (1 kv head × 256 dims) but a tiny hidden size, prefills --context tokens, reads the
number of blocks the block manager has in use, and converts them to bytes for Gemma 3 270M. The
"windowed" figure is what per-layer freeing would keep: global layers all blocks, sliding layers
the blocks overlapping their last `window` tokens.
"""

from __future__ import annotations

import argparse
import os

import torch

from llmlab.engine import LLM, SamplingParams
from llmlab.models.gemma3 import Gemma3Config, Gemma3ForCausalLM


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--block-size", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    # Gemma 3 270M's attention shape and layer pattern; small hidden/MLP/vocab so prefill is quick.
    config = Gemma3Config(
        vocab_size=512, hidden_size=64, intermediate_size=64, max_position_embeddings=32768
    )
    model = Gemma3ForCausalLM(config).eval()
    bs = args.block_size
    llm = LLM(model, _Tokenizer(), block_size=bs, num_kv_blocks=args.context // bs + 8)
    engine = llm.engine
    # context - 1 prompt tokens and two new ones: the sequence is still alive (its blocks held)
    # when the step after prefill has written the token at position context - 1.
    prompt = torch.randint(3, 512, (args.context - 1,)).tolist()
    engine.add_request("long", prompt, SamplingParams(max_tokens=2, ignore_eos=True))
    used = 0
    while engine.has_unfinished():
        engine.step()
        used = max(used, engine.block_manager.num_used_blocks)
    layers, window = config.num_hidden_layers, config.sliding_window
    local = sum(config.is_sliding(i) for i in range(layers))
    per_token_layer = 2 * config.num_key_value_heads * config.head_dim  # K and V values
    for dtype, size in (("float32", 4), ("bfloat16", 2)):
        held = used * bs * layers * per_token_layer * size
        window_blocks = min(used, -(-(window - 1) // bs) + 1)  # the blocks a window can overlap
        needed = (used * (layers - local) + window_blocks * local) * bs * per_token_layer * size
        print(
            f"{dtype}: context {args.context}, {used} blocks of {bs} in use: engine holds "
            f"{held / 2**20:.1f} MiB; windowed freeing would keep {needed / 2**20:.1f} MiB "
            f"({100 * (1 - needed / held):.0f}% less; {local} of {layers} layers slide, window {window})"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


class _Tokenizer:
    """Just enough tokenizer for the engine's detokenizer: ids only."""

    eos_token_id = 1
    pad_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return ""

    def convert_ids_to_tokens(self, ids):
        return [""] * len(ids)


if __name__ == "__main__":
    main()
