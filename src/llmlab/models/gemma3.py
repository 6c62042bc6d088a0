"""The Gemma 3 text decoder (Gemma 3 270M and the text half of the larger Gemma 3 models).

Built like `models/llama.py`, with Gemma's differences spelled out:

    x = embed(ids) · √d                                  # scaled in the model dtype, as HF does
    h = x + PostNorm(Attention(PreNorm(x)))              # norms before AND after each sub-block
    y = h + PostNorm(GeGLU(PreNorm(h)))                  # down(gelu_tanh(gate(h)) * up(h))

- RMSNorm multiplies by (1 + w): the checkpoint stores w around 0 (llama.cpp's converter stores
  1 + w; formats/gguf.py subtracts the 1 again, as transformers does);
- QK-norm: queries and keys get their own per-head RMSNorm before rotary;
- attention scores are scaled by query_pre_attn_scalar^-0.5 (not head_dim^-0.5 in general);
- layers alternate: `sliding_attention` layers see only the last `sliding_window` tokens and use
  RoPE base `rope_local_base_freq` (10k); every sixth layer is `full_attention` with base
  `rope_theta` (1M). `config.layer_types` lists them;
- the LM head is tied to the embedding; logits are soft-capped only if the config asks.

Parameter names are Hugging Face's (`Gemma3ForCausalLM`), so a state dict loads as is.

    model = Gemma3ForCausalLM(Gemma3Config(vocab_size=..., ...))
    logits = model(input_ids)                              # [batch, seq, vocab] float32
    cache = KVCache.for_model(model, batch_size=1, max_length=256)
    logits = model(prompt_ids, cache=cache)                # then one token at a time
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import CorruptFileError, UnsupportedArchitectureError
from llmlab.models.llama import KVCache, attention_mask, decoder_forward
from llmlab.nn.rotary import RotaryEmbedding, apply_rotary

MODEL_TYPES = ("gemma3_text", "gemma3")
SLIDING, FULL = "sliding_attention", "full_attention"

__all__ = ["Gemma3Config", "Gemma3ForCausalLM", "KVCache", "model_from_hf"]


@dataclass
class Gemma3Config:
    vocab_size: int = 262144
    hidden_size: int = 640
    intermediate_size: int = 2048
    num_hidden_layers: int = 18
    num_attention_heads: int = 4
    num_key_value_heads: int = 1
    head_dim: int = 256
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0  # full-attention layers
    rope_local_base_freq: float = 10_000.0  # sliding-window layers
    rope_scaling: dict | None = None  # full-attention layers only (as in transformers)
    query_pre_attn_scalar: float = 256
    sliding_window: int = 512
    layer_types: list[str] | None = None  # None: five sliding layers, then one full, repeated
    final_logit_softcapping: float | None = None
    attn_logit_softcapping: float | None = None
    attention_bias: bool = False
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 1
    pad_token_id: int | None = 0
    model_type: str = "gemma3_text"
    extra: dict = field(default_factory=dict)  # other config.json keys, written back on save

    def __post_init__(self):
        if self.layer_types is None:
            self.layer_types = [
                FULL if (i + 1) % 6 == 0 else SLIDING for i in range(self.num_hidden_layers)
            ]
        if len(self.layer_types) != self.num_hidden_layers or set(self.layer_types) - {
            SLIDING,
            FULL,
        }:
            raise UnsupportedArchitectureError(
                f"layer_types must list {self.num_hidden_layers} of '{SLIDING}'/'{FULL}', "
                f"got {self.layer_types}"
            )
        if self.attn_logit_softcapping is not None:
            raise UnsupportedArchitectureError(
                "attn_logit_softcapping is not supported (Gemma 2 only; Gemma 3 uses QK-norm)"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise UnsupportedArchitectureError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types[layer] == SLIDING

    @property
    def attention_scale(self) -> float:
        return self.query_pre_attn_scalar**-0.5

    @classmethod
    def from_hf(cls, hf: dict) -> Gemma3Config:
        """Build from a config.json dict (transformers 4 `rope_theta`/`rope_local_base_freq` or 5
        `rope_parameters` per layer type)."""
        model_type = hf.get("model_type", "gemma3_text")
        if model_type not in MODEL_TYPES:
            raise UnsupportedArchitectureError(f"model_type '{model_type}' is not Gemma 3")
        if "text_config" in hf:  # the multimodal wrapper: its text half is what we run
            return cls.from_hf({**hf["text_config"], "model_type": "gemma3_text"})
        activation = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
        if activation not in ("gelu_pytorch_tanh", "gelu_tanh"):
            raise UnsupportedArchitectureError(
                f"hidden_activation '{activation}' is not supported (only gelu_pytorch_tanh)"
            )
        if hf.get("use_bidirectional_attention"):
            raise UnsupportedArchitectureError("use_bidirectional_attention=true is not supported")
        rope = hf.get("rope_parameters") or {}
        full, local = dict(rope.get(FULL) or {}), dict(rope.get(SLIDING) or {})
        theta = hf.get("rope_theta", full.pop("rope_theta", 1_000_000.0))
        local_theta = hf.get("rope_local_base_freq", local.pop("rope_theta", 10_000.0))
        if local.get("rope_type", "default") != "default":
            raise UnsupportedArchitectureError(
                "rope scaling on sliding-window layers is not supported"
            )
        scaling = hf.get("rope_scaling") or (
            full if full.get("rope_type", "default") != "default" else None
        )
        layer_types = hf.get("layer_types")
        if layer_types is None and hf.get("sliding_window_pattern"):
            pattern = int(hf["sliding_window_pattern"])
            layer_types = [
                FULL if (i + 1) % pattern == 0 else SLIDING for i in range(hf["num_hidden_layers"])
            ]
        known = {
            f
            for f in cls.__dataclass_fields__
            if f not in ("extra", "rope_theta", "rope_local_base_freq", "rope_scaling")
        }
        kwargs = {k: hf[k] for k in known if hf.get(k) is not None}
        kwargs.update(
            rope_theta=theta,
            rope_local_base_freq=local_theta,
            rope_scaling=scaling,
            layer_types=layer_types,
            model_type="gemma3_text",
        )
        extra = {k: v for k, v in hf.items() if k not in known and k not in _DERIVED_HF_KEYS}
        return cls(**kwargs, extra=extra)

    def to_hf(self) -> dict:
        """A config.json dict that `transformers.Gemma3TextConfig` reads back to the same model."""
        hf = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("extra", "rope_theta", "rope_local_base_freq", "rope_scaling")
        }
        hf.update(self.extra)
        hf["architectures"] = ["Gemma3ForCausalLM"]
        hf["hidden_activation"] = "gelu_pytorch_tanh"
        full = {"rope_type": "default", **(self.rope_scaling or {}), "rope_theta": self.rope_theta}
        hf["rope_parameters"] = {
            FULL: full,
            SLIDING: {"rope_type": "default", "rope_theta": self.rope_local_base_freq},
        }
        return hf


_DERIVED_HF_KEYS = {
    "rope_theta",
    "rope_local_base_freq",
    "rope_scaling",
    "rope_parameters",
    "sliding_window_pattern",
    "architectures",
    "hidden_activation",
    "hidden_act",
    "model_type",
    "use_bidirectional_attention",
}


class Gemma3RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · (1 + weight), in float32, rounded once at the end (as HF)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: Gemma3Config, layer_index: int):
        super().__init__()
        c = config
        self.layer_index = layer_index
        self.num_heads, self.num_kv_heads, self.head_dim = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
        )
        self.sliding_window = c.sliding_window if c.is_sliding(layer_index) else None
        self.scale = c.attention_scale
        bias = c.attention_bias
        self.q_proj = nn.Linear(c.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(c.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(c.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, c.hidden_size, bias=bias)
        self.q_norm = Gemma3RMSNorm(c.head_dim, c.rms_norm_eps)
        self.k_norm = Gemma3RMSNorm(c.head_dim, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache: KVCache | None):
        batch, length, _ = x.shape
        shape = (batch, length, -1, self.head_dim)
        q = self.q_norm(self.q_proj(x).view(shape)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(shape)).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.store(self.layer_index, k, v)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None and length > 1,
            scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class MLP(nn.Module):
    """GeGLU feed-forward: down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, config: Gemma3Config):
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: Gemma3Config, layer_index: int):
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.is_sliding = config.is_sliding(layer_index)
        self.input_layernorm = Gemma3RMSNorm(h, eps)
        self.self_attn = Attention(config, layer_index)
        self.post_attention_layernorm = Gemma3RMSNorm(h, eps)
        self.pre_feedforward_layernorm = Gemma3RMSNorm(h, eps)
        self.mlp = MLP(config)
        self.post_feedforward_layernorm = Gemma3RMSNorm(h, eps)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.post_attention_layernorm(
            self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        )
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


def rotary_pair(config: Gemma3Config) -> tuple[RotaryEmbedding, RotaryEmbedding]:
    """(global, local) rotary tables: full-attention layers use rope_theta (and any scaling),
    sliding-window layers rope_local_base_freq."""
    return (
        RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling),
        RotaryEmbedding(config.head_dim, config.rope_local_base_freq),
    )


class Gemma3Model(nn.Module):
    """Scaled embedding → decoder layers → final norm. Returns hidden states."""

    def __init__(self, config: Gemma3Config):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = Gemma3RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary, self.rotary_local = rotary_pair(config)

    @property
    def embed_scale(self) -> float:
        return math.sqrt(self.config.hidden_size)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        # √d rounded to the weight dtype first, as transformers does (√640 in bf16 is 25.25).
        weight = self.embed_tokens.weight
        return self.embed_tokens(input_ids) * torch.tensor(self.embed_scale, dtype=weight.dtype)

    def layer_inputs(self, start: int, length: int, device=None) -> list[tuple]:
        """Per decoder layer, the (cos, sin, mask) for `length` tokens after `start` cached ones:
        local or global rotary and windowed or causal mask by the layer's type (layer-by-layer
        calibration calls this too)."""
        c = self.config
        positions = torch.arange(start, start + length, device=device)
        key_positions = torch.arange(start + length, device=device)
        tables = {FULL: self.rotary(positions), SLIDING: self.rotary_local(positions)}
        # Plain causal attention from position 0 is SDPA's is_causal fast path (mask None).
        full_mask = (
            attention_mask(positions, key_positions, None) if start > 0 and length > 1 else None
        )
        masks = {FULL: full_mask}
        if SLIDING in c.layer_types:
            masks[SLIDING] = (
                attention_mask(positions, key_positions, c.sliding_window)
                if start + length > c.sliding_window
                else full_mask
            )
        return [(*tables[kind], masks[kind]) for kind in c.layer_types]

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return decoder_forward(self, input_ids, cache)


class Gemma3ForCausalLM(nn.Module):
    def __init__(self, config: Gemma3Config):
        super().__init__()
        self.config = config
        self.model = Gemma3Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def max_context(self) -> int:
        return self.config.max_position_embeddings

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head (+ the optional final soft-cap cap · tanh(logits / cap)), float32."""
        logits = self.lm_head(hidden).float()
        cap = self.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """input_ids [batch, seq] → logits [batch, seq, vocab] (float32)."""
        return self.logits(self.model(input_ids, cache))


def model_from_hf(
    config: dict, state_dict: dict[str, torch.Tensor] | None = None
) -> Gemma3ForCausalLM:
    """Build a model from a config.json dict and (optionally) a Hugging Face state dict."""
    model_config = Gemma3Config.from_hf(config)
    if state_dict is None:
        return Gemma3ForCausalLM(model_config)
    with torch.device("meta"):  # skip random init: every weight comes from the checkpoint
        model = Gemma3ForCausalLM(model_config)
    # The multimodal checkpoint prefixes its text half; the text-only one does not.
    state_dict = {
        k.replace("language_model.model.", "model.").replace("model.language_model.", "model."): v
        for k, v in state_dict.items()
        if "rotary_emb" not in k and "vision" not in k and "multi_modal" not in k
    }
    if model_config.tie_word_embeddings:
        state_dict.pop("lm_head.weight", None)
        state_dict["lm_head.weight"] = state_dict.get("model.embed_tokens.weight")
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    if missing or unexpected:
        raise CorruptFileError(
            f"checkpoint does not match the Gemma 3 config: missing {sorted(missing)[:3]}"
            f"{'…' if len(missing) > 3 else ''}, unexpected {sorted(unexpected)[:3]}"
            f"{'…' if len(unexpected) > 3 else ''}"
        )
    if model_config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return rebuild_buffers(model).eval()


def rebuild_buffers(model: Gemma3ForCausalLM) -> Gemma3ForCausalLM:
    """Buffers are not in a checkpoint: recompute the rotary tables off the meta device."""
    model.model.rotary, model.model.rotary_local = rotary_pair(model.config)
    return model
