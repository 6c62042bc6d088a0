"""Runs the model over one scheduled step: a flat batch of tokens from many sequences, with
their K/V written to and read from the paged cache.

Inputs per step (built by `prepare`): token ids and positions of every new token, one after the
other; a slot per token (block_table[pos // bs] · bs + pos % bs) where its K/V are stored; and, per
sequence, the slots of all its tokens so far (its block table unrolled) to attend over.

Attention is PyTorch's scaled_dot_product_attention (flash/efficient kernels on CUDA, fused on
CPU) in two groups: all decoding sequences (one query each) in one padded batch, and each
prefill chunk on its own (causal, offset by the tokens already cached). The forward pass below
reuses the Llama modules' weights as they are, so a quantized projection drops in unchanged.

    runner = ModelRunner(model, num_blocks=None, kv_memory="512MiB")   # block count logged
    logits = runner.run(batch.seqs, batch.num_new_tokens)              # [sampled seqs, vocab]
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmlab.errors import LlmlabError
from llmlab.models.llama import attention_mask
from llmlab.nn.rotary import apply_rotary

log = logging.getLogger("llmlab.engine")

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30}


def parse_bytes(text: str | int) -> int:
    """'512MiB', '1GB', '2g' or a plain number of bytes → bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise LlmlabError(f"cannot read '{text}' as a memory size (try 512MiB or 2GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    slot_mapping: torch.Tensor  # [T] where each new token's K/V goes
    logit_indices: torch.Tensor  # rows of the flat batch whose next-token logits we need
    decode_token_index: torch.Tensor | None  # [B] rows of the flat batch that are decodes
    decode_slots: torch.Tensor | None  # [B, Lmax] slots each decode attends over (padded)
    decode_mask: torch.Tensor | None  # [B, 1, 1, Lmax] True = attend; None when no padding
    prefills: list  # (start, end, slots [ctx], mask [k, ctx] or None for plain causal)


class ModelRunner:
    def __init__(self, model, block_size: int = 16, num_blocks: int | None = None, kv_memory="512MiB"):
        self.model = model
        self.config = c = model.config
        self.block_size = block_size
        weight = model.model.embed_tokens.weight
        self.device, self.dtype = weight.device, weight.dtype
        bytes_per_block = 2 * c.num_hidden_layers * block_size * c.num_key_value_heads * c.head_dim * weight.element_size()
        if num_blocks is None:
            num_blocks = parse_bytes(kv_memory) // bytes_per_block
        if num_blocks < 1:
            raise LlmlabError(f"--kv-memory {kv_memory} holds no {block_size}-token KV block "
                              f"(one needs {bytes_per_block} bytes)")
        self.num_blocks = num_blocks
        slots = num_blocks * block_size
        shape = (slots, c.num_key_value_heads, c.head_dim)
        self.key_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(c.num_hidden_layers)]
        self.value_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(c.num_hidden_layers)]
        log.info("KV cache: %d blocks × %d tokens = %d tokens, %.1f MiB", num_blocks, block_size, slots,
                 num_blocks * bytes_per_block / 2**20)
        self.step_fn = self._forward

    def enable_compile(self):
        """torch.compile the per-step forward (dynamic shapes: the batch changes every step)."""
        self.step_fn = torch.compile(self._forward, dynamic=True)

    # ---- inputs ---------------------------------------------------------------------------
    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def prepare(self, seqs, num_new_tokens) -> StepInputs:
        ids, positions, slot_mapping, logit_indices = [], [], [], []
        decode_rows, decode_contexts, prefills = [], [], []
        window = self.config.sliding_window
        for seq, k in zip(seqs, num_new_tokens):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + k
            row = len(ids)
            ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            slot_mapping.extend(self._slots(seq.block_table, start, end))
            if end == seq.num_tokens:  # the chunk reaches the last known token: sample after it
                logit_indices.append(row + k - 1)
            context = self._slots(seq.block_table, 0, end)
            if k == 1:
                decode_rows.append(row)
                decode_contexts.append(context)
            else:
                mask = None
                if start > 0 or window is not None:
                    mask = attention_mask(torch.arange(start, end), torch.arange(end), window).to(self.device)
                prefills.append((row, row + k, torch.tensor(context, device=self.device), mask))
        dev = self.device
        inputs = StepInputs(torch.tensor(ids, device=dev), torch.tensor(positions, device=dev),
                            torch.tensor(slot_mapping, device=dev), torch.tensor(logit_indices, device=dev),
                            None, None, None, prefills)
        if decode_rows:
            longest = max(len(c) for c in decode_contexts)
            lengths = torch.tensor([len(c) for c in decode_contexts])
            inputs.decode_token_index = torch.tensor(decode_rows, device=dev)
            inputs.decode_slots = torch.tensor([c + [0] * (longest - len(c)) for c in decode_contexts], device=dev)
            key_pos = torch.arange(longest)
            allowed = key_pos[None, :] < lengths[:, None]
            if window is not None:
                allowed &= key_pos[None, :] > (lengths[:, None] - 1 - window)
            if not bool(allowed.all()):
                inputs.decode_mask = allowed[:, None, None, :].to(dev)
        return inputs

    # ---- forward --------------------------------------------------------------------------
    def _attention(self, q, layer: int, inputs: StepInputs) -> torch.Tensor:
        """q [heads, T, head_dim] → attention output [T, heads · head_dim] over the paged cache."""
        heads, total, head_dim = q.shape
        gqa = self.config.num_key_value_heads != heads
        out = q.new_empty(total, heads, head_dim)
        keys, values = self.key_cache[layer], self.value_cache[layer]
        if inputs.decode_token_index is not None:
            rows = inputs.decode_token_index
            qd = q[:, rows].transpose(0, 1).unsqueeze(2)  # [B, heads, 1, hd]
            batch, longest = inputs.decode_slots.shape
            flat = inputs.decode_slots.view(-1)  # index_select: much cheaper than fancy indexing
            kd = keys.index_select(0, flat).view(batch, longest, *keys.shape[1:]).transpose(1, 2)  # [B, kvh, L, hd]
            vd = values.index_select(0, flat).view(batch, longest, *keys.shape[1:]).transpose(1, 2)
            od = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=inputs.decode_mask, enable_gqa=gqa)
            out[rows] = od.squeeze(2)
        for start, end, slots, mask in inputs.prefills:
            qp = q[:, start:end].unsqueeze(0)
            kp = keys.index_select(0, slots).transpose(0, 1).unsqueeze(0)
            vp = values.index_select(0, slots).transpose(0, 1).unsqueeze(0)
            op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa)
            out[start:end] = op[0].transpose(0, 1)
        return out.reshape(total, heads * head_dim)

    def _forward(self, inputs: StepInputs) -> torch.Tensor:
        c, model = self.config, self.model.model
        total = inputs.input_ids.shape[0]
        x = model.embed_tokens(inputs.input_ids)
        cos, sin = model.rotary(inputs.positions)  # [T, head_dim], broadcast over heads
        for i, layer in enumerate(model.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(total, c.num_attention_heads, c.head_dim).transpose(0, 1)
            k = attn.k_proj(h).view(total, c.num_key_value_heads, c.head_dim).transpose(0, 1)
            v = attn.v_proj(h).view(total, c.num_key_value_heads, c.head_dim)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            self.key_cache[i].index_copy_(0, inputs.slot_mapping, k.transpose(0, 1))
            self.value_cache[i].index_copy_(0, inputs.slot_mapping, v)
            x = x + attn.o_proj(self._attention(q, i, inputs))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        x = model.norm(x[inputs.logit_indices])  # only rows we sample from reach the LM head
        return self.model.lm_head(x).float()

    @torch.inference_mode()
    def run(self, seqs, num_new_tokens) -> torch.Tensor:
        """Compute one step; return next-token logits for the sequences whose chunk ends at their
        last token (in batch order)."""
        return self.step_fn(self.prepare(seqs, num_new_tokens))
