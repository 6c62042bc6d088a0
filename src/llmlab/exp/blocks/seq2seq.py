"""The original encoder-decoder Transformer ("Attention is all you need"), small and readable.

    from llmlab.exp.blocks.seq2seq import Seq2SeqTransformer, seq2seq_loss, greedy_decode
    model = Seq2SeqTransformer(src_vocab=16, tgt_vocab=16, d_model=64, n_heads=4, n_layers=2)
    loss = seq2seq_loss(model, src, tgt)          # teacher forcing: predict tgt[:, 1:] from tgt[:, :-1]
    out = greedy_decode(model, src, bos_id=1, max_len=12)

Encoder layer: multi-head self-attention → FFN; decoder layer: masked (causal) self-attention →
encoder-decoder (cross) attention over the encoder output → FFN. Every sub-layer is wrapped as
x = LayerNorm(x + Dropout(sublayer(x))) (post-LN, as in the paper and torch's default), so an
`EncoderLayer`/`DecoderLayer` matches torch.nn.TransformerEncoderLayer/DecoderLayer with copied
weights (tests/test_lab_seq2seq.py). Positions: sinusoidal (default), learned, or rotary (RoPE
applied to queries and keys of self-attention; cross-attention has no shared position axis).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.exp.blocks.norms import LayerNorm
from llmlab.nn.rotary import RotaryEmbedding, apply_rotary

POSITION_KINDS = ("sinusoidal", "learned", "rotary")


def attention_weights(q, k, mask=None, scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) with scale = 1/√d_k by default; mask is additive (−inf = hidden).
    Without the scale the logits' spread grows like √d_k and the softmax saturates
    (`llmlab exp run attention`)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1)


def causal_mask(length: int, device=None) -> torch.Tensor:
    """[T, T] additive mask: position t may attend to positions ≤ t only."""
    return torch.full((length, length), float("-inf"), device=device).triu(1)


def padding_mask(pad: torch.Tensor | None) -> torch.Tensor | None:
    """[B, S] bool (True = padding) → additive [B, 1, 1, S] mask over keys."""
    if pad is None:
        return None
    return torch.zeros(pad.shape, device=pad.device).masked_fill(pad, float("-inf"))[
        :, None, None, :
    ]


class MultiHeadAttention(nn.Module):
    """Project to n_heads subspaces, attend in each, concatenate, project back."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, rotary: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(d_model, d_model) for _ in range(4)
        )
        self.dropout = nn.Dropout(dropout)
        self.rotary = RotaryEmbedding(self.head_dim, theta=10000.0) if rotary else None
        self.last_weights: torch.Tensor | None = None  # [B, heads, Tq, Tk], kept for inspection

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, query, key, value, mask=None):
        q, k, v = (
            self._split(self.q_proj(query)),
            self._split(self.k_proj(key)),
            self._split(self.v_proj(value)),
        )
        if self.rotary is not None:
            q = apply_rotary(q, *self.rotary(torch.arange(q.shape[2], device=q.device)))
            k = apply_rotary(k, *self.rotary(torch.arange(k.shape[2], device=k.device)))
        weights = attention_weights(q, k, mask)
        self.last_weights = weights.detach()
        out = self.dropout(weights) @ v
        return self.out_proj(out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1))


class FeedForward(nn.Module):
    """Position-wise FFN: Linear → ReLU → Dropout → Linear."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, rotary: bool = False
    ):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, rotary)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = LayerNorm(d_model), LayerNorm(d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x, mask=None):
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, mask)))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class DecoderLayer(nn.Module):
    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, rotary: bool = False
    ):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, rotary)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.norm3 = (
            LayerNorm(d_model),
            LayerNorm(d_model),
            LayerNorm(d_model),
        )
        self.dropout1, self.dropout2, self.dropout3 = (
            nn.Dropout(dropout),
            nn.Dropout(dropout),
            nn.Dropout(dropout),
        )

    def forward(self, x, memory, self_mask=None, memory_mask=None):
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, self_mask)))
        x = self.norm2(x + self.dropout2(self.cross_attn(x, memory, memory, memory_mask)))
        return self.norm3(x + self.dropout3(self.ffn(x)))


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d))."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    frequency = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


class Seq2SeqTransformer(nn.Module):
    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 256,
        dropout: float = 0.0,
        positions: str = "sinusoidal",
        max_len: int = 512,
    ):
        super().__init__()
        if positions not in POSITION_KINDS:
            raise ValueError(f"positions must be one of {POSITION_KINDS}, got {positions!r}")
        self.d_model, self.positions = d_model, positions
        self.src_embed, self.tgt_embed = (
            nn.Embedding(src_vocab, d_model),
            nn.Embedding(tgt_vocab, d_model),
        )
        if positions == "sinusoidal":
            self.register_buffer(
                "position_table", sinusoidal_positions(max_len, d_model), persistent=False
            )
        elif positions == "learned":
            self.position_embed = nn.Embedding(max_len, d_model)
        rotary = positions == "rotary"
        self.encoder = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, rotary) for _ in range(n_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(d_model, n_heads, d_ff, dropout, rotary) for _ in range(n_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.lm_head = nn.Linear(d_model, tgt_vocab)

    def _embed(self, embedding: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        x = embedding(ids) * math.sqrt(self.d_model)  # the paper's scaling keeps tokens ≫ positions
        if self.positions == "sinusoidal":
            x = x + self.position_table[: ids.shape[1]]
        elif self.positions == "learned":
            x = x + self.position_embed(torch.arange(ids.shape[1], device=ids.device))
        return self.dropout(x)

    def encode(self, src: torch.Tensor, src_pad: torch.Tensor | None = None) -> torch.Tensor:
        x, mask = self._embed(self.src_embed, src), padding_mask(src_pad)
        for layer in self.encoder:
            x = layer(x, mask)
        return x

    def decode(
        self, tgt: torch.Tensor, memory: torch.Tensor, src_pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        x, self_mask = self._embed(self.tgt_embed, tgt), causal_mask(tgt.shape[1], tgt.device)
        for layer in self.decoder:
            x = layer(x, memory, self_mask, padding_mask(src_pad))
        return self.lm_head(x)

    def forward(self, src, tgt_in, src_pad=None):
        """src [B, S], tgt_in [B, T] → logits [B, T, tgt_vocab]."""
        return self.decode(tgt_in, self.encode(src, src_pad), src_pad)


def seq2seq_loss(
    model: Seq2SeqTransformer, src, tgt, src_pad=None, pad_id: int = -100
) -> torch.Tensor:
    """Teacher forcing: feed tgt[:, :-1] (starting with BOS), predict tgt[:, 1:]; pad_id is ignored."""
    logits = model(src, tgt[:, :-1], src_pad)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=pad_id
    )


@torch.no_grad()
def greedy_decode(
    model: Seq2SeqTransformer, src, bos_id: int, max_len: int, src_pad=None
) -> torch.Tensor:
    """Generate max_len tokens after BOS, one at a time, each the argmax of the next-token logits."""
    memory = model.encode(src, src_pad)
    out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
    for _ in range(max_len):
        next_id = model.decode(out, memory, src_pad)[:, -1].argmax(dim=-1, keepdim=True)
        out = torch.cat([out, next_id], dim=1)
    return out[:, 1:]
