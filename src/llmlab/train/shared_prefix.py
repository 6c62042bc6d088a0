"""Prefix-shared forward for preference pairs: each prompt runs once, its chosen and rejected
completions both attend to it.

    logps = shared_prefix_logps(model, batch)   # [2B]: Σ log p(completion), chosen rows then rejected

A DPO batch repeats every prompt twice (prompt + chosen, prompt + rejected), and pads every row to
the longest. Here every layer's linear maps, norms and MLP see each prompt once and each completion
once, real tokens only, flattened into one token batch (one matmul per projection); attention then
runs on padded views in two groups: the prompts causally, and the completions over [their own
prompt's keys/values (indexed, not recomputed) ; their own earlier tokens]. The first completion
token is predicted from the prompt's last hidden state, the rest from the completion's, and only
those states reach the LM head. Same math as the plain forward over the concatenated rows (tested
to 1e-5), with fewer tokens through every layer: with 20-token prompts and 10-token answers a
third fewer, more when chosen and rejected differ in length (the idea of "prefix sharing" for DPO).
Only llmlab Llama decoders without a sliding window take this path (LoRA layers are fine: they are called as modules).

Batch keys (from `dpo_collate`): prompt_ids [B, P] and prompt_lengths [B]; completion_ids [2B, C]
and completion_lengths [2B], right-padded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmlab.models.llama import LlamaForCausalLM
from llmlab.nn.rotary import apply_rotary
from llmlab.train.losses import summed_logps


def supports_shared_prefix(model, batch: dict) -> bool:
    return (
        isinstance(model, LlamaForCausalLM)
        and model.config.sliding_window is None
        and "prompt_ids" in batch
    )


def _padded(flat: torch.Tensor, slots: torch.Tensor, rows: int, length: int) -> torch.Tensor:
    """Real tokens [t, heads, hd] → padded [rows, heads, length, hd] (zeros in the padding)."""
    out = flat.new_zeros(rows * length, *flat.shape[1:]).index_copy(0, slots, flat)
    return out.view(rows, length, *flat.shape[1:]).transpose(1, 2)


def _unpadded(x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Padded attention output [rows, heads, length, hd] → real tokens [t, heads·hd]."""
    rows, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(rows * length, heads * dim).index_select(0, slots)


def shared_prefix_logps(model: LlamaForCausalLM, batch: dict) -> torch.Tensor:
    prompts, prompt_lengths = batch["prompt_ids"], batch["prompt_lengths"]
    completions, completion_lengths = batch["completion_ids"], batch["completion_lengths"]
    decoder, device = model.model, prompts.device
    (b, p), (n, c) = prompts.shape, completions.shape
    owner = (
        torch.arange(n, device=device) % b
    )  # completion row → its prompt (chosen rows, then rejected)
    owner_lengths = prompt_lengths[owner]
    # Only real tokens go through the linear layers: flat index ("slot") of each in the padded layouts.
    p_slots = (
        (torch.arange(p, device=device)[None] < prompt_lengths[:, None])
        .flatten()
        .nonzero()
        .squeeze(1)
    )
    c_slots = (
        (torch.arange(c, device=device)[None] < completion_lengths[:, None])
        .flatten()
        .nonzero()
        .squeeze(1)
    )
    tp = len(p_slots)
    positions = torch.cat(
        [
            (p_slots % p),
            (owner_lengths[:, None] + torch.arange(c, device=device)).flatten()[c_slots],
        ]
    )
    cos, sin = decoder.rotary(positions)
    cos, sin = cos[:, None], sin[:, None]  # [tokens, 1, hd]: broadcast over heads
    prompt_visible = torch.arange(p, device=device)[None, :] < owner_lengths[:, None]  # [2B, P]
    causal = torch.ones(c, c, dtype=torch.bool, device=device).tril()
    mask = torch.cat([prompt_visible[:, None, :].expand(n, c, p), causal.expand(n, c, c)], -1)[
        :, None
    ]
    x = decoder.embed_tokens(
        torch.cat([prompts.flatten()[p_slots], completions.flatten()[c_slots]])
    )  # [tokens, H]
    total = len(x)
    for layer in decoder.layers:
        attn = layer.self_attn
        heads, kv_heads, dim = attn.num_heads, attn.num_kv_heads, attn.head_dim
        h = layer.input_layernorm(x)
        q = apply_rotary(attn.q_proj(h).view(total, heads, dim), cos, sin)
        k = apply_rotary(attn.k_proj(h).view(total, kv_heads, dim), cos, sin)
        v = attn.v_proj(h).view(total, kv_heads, dim)
        qp, kp, vp = (_padded(t[:tp], p_slots, b, p) for t in (q, k, v))
        qc, kc, vc = (_padded(t[tp:], c_slots, n, c) for t in (q, k, v))
        gqa = kv_heads != heads
        out_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=gqa)
        out_c = F.scaled_dot_product_attention(
            qc,
            torch.cat([kp[owner], kc], 2),
            torch.cat([vp[owner], vc], 2),
            attn_mask=mask,
            enable_gqa=gqa,
        )
        x = x + attn.o_proj(torch.cat([_unpadded(out_p, p_slots), _unpadded(out_c, c_slots)]))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    # Completion token j is predicted by the state before it: its prompt's last state for j = 0.
    p_row = torch.full((b * p,), -1, dtype=torch.long, device=device).index_copy(
        0, p_slots, torch.arange(tp, device=device)
    )
    c_row = torch.full((n * c,), -1, dtype=torch.long, device=device).index_copy(
        0, c_slots, torch.arange(tp, total, device=device)
    )
    rows, cols = c_slots // c, c_slots % c
    last_prompt = p_row[owner * p + owner_lengths - 1]
    predictors = torch.where(cols == 0, last_prompt[rows], c_row[(c_slots - 1).clamp(min=0)])
    return summed_logps(
        model.lm_head(decoder.norm(x[predictors])), completions[rows, cols], rows, n
    )
