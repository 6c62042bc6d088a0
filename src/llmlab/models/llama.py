"""The Llama decoder family: Llama 2/3, Mistral, Qwen2 (q/k/v bias) and SmolLM2.

One pre-norm block, repeated:

    h = x + Attention(RMSNorm(x))        # rotary positions, grouped-query attention, causal
    y = h + SwiGLU(RMSNorm(h))           # down(silu(gate(h)) * up(h))

then a final RMSNorm and the LM head (optionally tied to the token embedding). Parameter names are
Hugging Face's, so a checkpoint's state dict loads as is and ours saves as theirs.

    model = LlamaForCausalLM(LlamaConfig(vocab_size=..., ...))
    logits = model(input_ids)                         # [batch, seq, vocab]
    cache = KVCache.for_model(model, batch_size=1, max_length=256)
    logits = model(prompt_ids, cache=cache)           # prefill, then one token at a time
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import CorruptFileError, UnsupportedArchitectureError
from llmlab.nn.rotary import RotaryEmbedding, apply_rotary, rope_inverse_frequencies

MODEL_TYPES = ("llama", "mistral", "qwen2")
_ARCHITECTURE_NAMES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}


@dataclass
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: as many as query heads (no GQA)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    attention_bias: bool = False  # q/k/v/o biases (Llama option)
    qkv_bias: bool = False  # q/k/v biases only (Qwen2)
    mlp_bias: bool = False
    sliding_window: int | None = None  # Mistral: attend to at most this many previous tokens
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    model_type: str = "llama"
    extra: dict = field(default_factory=dict)  # other config.json keys, written back on save

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise UnsupportedArchitectureError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        rope_inverse_frequencies(
            self.head_dim, self.rope_theta, self.rope_scaling
        )  # validates scaling

    @classmethod
    def from_hf(cls, hf: dict) -> LlamaConfig:
        """Build from a Hugging Face config.json dict (transformers 4 or 5 spelling)."""
        model_type = hf.get("model_type", "llama")
        if model_type not in MODEL_TYPES:
            raise UnsupportedArchitectureError(
                f"model_type '{model_type}' is not a Llama-family decoder"
            )
        if hf.get("hidden_act", "silu") != "silu":
            raise UnsupportedArchitectureError(
                f"hidden_act '{hf['hidden_act']}' is not supported (only silu)"
            )
        rope = dict(hf.get("rope_parameters") or {})  # transformers 5 keeps theta and scaling here
        theta = hf.get("rope_theta", rope.pop("rope_theta", 10000.0))
        scaling = hf.get("rope_scaling") or (
            rope if rope.get("rope_type", "default") != "default" else None
        )
        sliding_window = hf.get("sliding_window")
        if model_type == "qwen2":
            if hf.get("use_sliding_window"):
                raise UnsupportedArchitectureError(
                    "Qwen2 with use_sliding_window=true is not supported"
                )
            sliding_window = None
        known = {
            f
            for f in cls.__dataclass_fields__
            if f not in ("extra", "rope_theta", "rope_scaling", "sliding_window")
        }
        kwargs = {k: hf[k] for k in known if hf.get(k) is not None}
        kwargs.update(
            rope_theta=theta,
            rope_scaling=scaling,
            sliding_window=sliding_window,
            model_type=model_type,
        )
        kwargs["qkv_bias"] = model_type == "qwen2"
        extra = {k: v for k, v in hf.items() if k not in known and k not in _DERIVED_HF_KEYS}
        return cls(**kwargs, extra=extra)

    def to_hf(self) -> dict:
        """A config.json dict that `transformers.AutoConfig` reads back to the same model."""
        hf = {k: v for k, v in asdict(self).items() if k not in ("extra", "qkv_bias")}
        hf.update(self.extra)
        hf["architectures"] = [_ARCHITECTURE_NAMES[self.model_type]]
        hf["hidden_act"] = "silu"
        if self.model_type == "qwen2":
            hf.pop("attention_bias")
            hf["use_sliding_window"] = False
        return hf


# Keys of config.json that from_hf interprets (or that to_hf rewrites) instead of passing through.
_DERIVED_HF_KEYS = {
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "sliding_window",
    "use_sliding_window",
    "architectures",
    "hidden_act",
    "model_type",
}


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · weight, computed in float32 for stability."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class KVCache:
    """Contiguous key/value buffers, one [batch, kv_heads, max_length, head_dim] pair per layer.

    `length` counts the tokens already stored; the model advances it after each forward pass.
    (The serving engine replaces this with a paged cache shared by many requests.)
    """

    def __init__(
        self,
        num_layers,
        batch_size,
        kv_heads,
        head_dim,
        max_length,
        device=None,
        dtype=torch.float32,
    ):
        shape = (batch_size, kv_heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.max_length = max_length
        self.length = 0

    @classmethod
    def for_model(cls, model: LlamaForCausalLM, batch_size: int, max_length: int) -> KVCache:
        c = model.config
        weight = model.model.embed_tokens.weight
        return cls(
            c.num_hidden_layers,
            batch_size,
            c.num_key_value_heads,
            c.head_dim,
            max_length,
            weight.device,
            weight.dtype,
        )

    def store(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's k/v for one layer; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache overflow: {end} tokens > max_length {self.max_length}")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def attention_mask(
    q_positions: torch.Tensor, k_positions: torch.Tensor, sliding_window: int | None
):
    """Boolean [Tq, Tk] mask, True where a query may attend: causal, optionally windowed."""
    distance = q_positions[:, None] - k_positions[None, :]
    allowed = distance >= 0
    if sliding_window is not None:
        allowed &= distance < sliding_window
    return allowed


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_index: int):
        super().__init__()
        c = config
        self.layer_index = layer_index
        self.num_heads, self.num_kv_heads, self.head_dim = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
        )
        qkv_bias = c.attention_bias or c.qkv_bias
        self.q_proj = nn.Linear(c.hidden_size, self.num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(
            self.num_heads * self.head_dim, c.hidden_size, bias=c.attention_bias
        )

    def forward(self, x, cos, sin, mask, cache: KVCache | None):
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.store(self.layer_index, k, v)
        # Grouped-query attention: each K/V head serves num_heads / num_kv_heads query heads.
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None and length > 1,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        h, i, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(h, i, bias=bias)
        self.up_proj = nn.Linear(h, i, bias=bias)
        self.down_proj = nn.Linear(i, h, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_index: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_index)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


def decoder_forward(decoder: nn.Module, input_ids: torch.Tensor, cache: KVCache | None):
    """embed → each layer with its own (cos, sin, mask) from `decoder.layer_inputs` → final norm:
    the forward of the Llama-family and the Gemma 3 decoders."""
    start = cache.length if cache is not None else 0
    length = input_ids.shape[1]
    x = decoder.embed(input_ids)
    for layer, (cos, sin, mask) in zip(
        decoder.layers, decoder.layer_inputs(start, length, input_ids.device)
    ):
        x = layer(x, cos, sin, mask, cache)
    if cache is not None:
        cache.length += length
    return decoder.norm(x)


class LlamaModel(nn.Module):
    """Embedding → decoder layers → final norm. Returns hidden states."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def layer_inputs(self, start: int, length: int, device=None) -> list[tuple]:
        """Per decoder layer, the (cos, sin, mask) for `length` tokens after `start` cached ones
        (the same for every layer here; layer-by-layer calibration calls this too)."""
        positions = torch.arange(start, start + length, device=device)
        cos, sin = self.rotary(positions)
        mask = None  # plain causal attention from position 0 is SDPA's is_causal fast path
        if (start > 0 and length > 1) or self.config.sliding_window is not None:
            mask = attention_mask(
                positions,
                torch.arange(start + length, device=device),
                self.config.sliding_window,
            )
        return [(cos, sin, mask)] * len(self.layers)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return decoder_forward(self, input_ids, cache)


class LlamaForCausalLM(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
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

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """input_ids [batch, seq] → logits [batch, seq, vocab] (float32)."""
        return self.lm_head(self.model(input_ids, cache)).float()


def model_from_hf(
    config: dict, state_dict: dict[str, torch.Tensor] | None = None
) -> LlamaForCausalLM:
    """Build a model from a config.json dict and (optionally) load a Hugging Face state dict."""
    model_config = LlamaConfig.from_hf(config)
    if state_dict is None:
        return LlamaForCausalLM(model_config)
    with torch.device("meta"):  # skip random init: every weight comes from the checkpoint
        model = LlamaForCausalLM(model_config)
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith("rotary_emb.inv_freq")}
    if model_config.tie_word_embeddings and "model.embed_tokens.weight" in state_dict:
        state_dict["lm_head.weight"] = state_dict["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    if missing or unexpected:
        raise CorruptFileError(
            f"checkpoint does not match the config: missing {sorted(missing)[:3]}{'…' if len(missing) > 3 else ''}, "
            f"unexpected {sorted(unexpected)[:3]}{'…' if len(unexpected) > 3 else ''}"
        )
    if model_config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return rebuild_buffers(model).eval()


def rebuild_buffers(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """Buffers are not in a checkpoint: recompute them off the meta device after loading weights."""
    config = model.config
    model.model.rotary = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling)
    return model
