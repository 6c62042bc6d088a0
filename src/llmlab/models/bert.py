"""The BERT encoder family in one file: config, embeddings, post-LN encoder, pooler, MLM/NSP heads,
a classification head and sentence-transformers style mean-pooled embeddings.

    import json, safetensors.torch
    from llmlab.models.bert import model_from_hf, embed
    model = model_from_hf(json.load(open("config.json")), safetensors.torch.load_file("model.safetensors"))
    vectors = embed(["a sentence", "another"], tokenizer, model)      # [2, hidden], unit length

Parameter names follow Hugging Face's `modeling_bert` exactly (the ModuleDicts below exist only to
reproduce names like `encoder.layer.0.attention.self.query.weight`), so HF safetensors load as-is
and our state dicts load into `transformers.BertModel`. The forward pass of one layer is
`BertLayer.forward`; the model is `BertModel.encode`. Tests: `pytest tests/test_bert.py`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import ContextLengthError, LlmlabError, UnsupportedArchitectureError
from llmlab.nn.activations import get_activation

MODEL_TYPES = ("bert",)


# ----------------------------------------------------------------------------------------- config
@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    classifier_dropout: float | None = None  # None: use hidden_dropout_prob, as HF does
    num_labels: int = 2
    tie_word_embeddings: bool = True
    architectures: list[str] = field(default_factory=lambda: ["BertModel"])

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "num_labels",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise LlmlabError(f"BERT config: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise LlmlabError(
                f"BERT config: hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        get_activation(self.hidden_act)  # fail now, not in the first forward pass

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, config: dict) -> BertConfig:
        """Read a Hugging Face config.json dict; refuse variants this file does not implement."""
        model_type = config.get("model_type", "bert")
        if model_type not in MODEL_TYPES:
            raise UnsupportedArchitectureError(f"model_type '{model_type}' is not a BERT model")
        position_type = config.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise UnsupportedArchitectureError(
                f"BERT position_embedding_type '{position_type}' is not supported (only 'absolute')"
            )
        if config.get("is_decoder") or config.get("add_cross_attention"):
            raise UnsupportedArchitectureError(
                "BERT as a decoder / with cross-attention is not supported"
            )
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.items() if k in known and v is not None}
        if "num_labels" not in values and isinstance(config.get("id2label"), dict):
            values["num_labels"] = len(config["id2label"])
        return cls(**values)

    def to_hf(self) -> dict:
        """A config.json dict that `transformers.BertConfig.from_dict` (and our from_hf) accept.
        Each model class stores a copy whose `architectures` names that class."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "num_labels"}
        out.update(model_type="bert", position_embedding_type="absolute")
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(self.num_labels)}
        return out


# ---------------------------------------------------------------------------------------- modules
class BertEmbeddings(nn.Module):
    """word + absolute position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id
        )
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        seq_len = input_ids.shape[1]
        max_len = self.position_embeddings.num_embeddings
        if seq_len > max_len:
            raise ContextLengthError(
                f"input of {seq_len} tokens is longer than this BERT's {max_len} positions"
            )
        if position_ids is None:
            position_ids = torch.arange(seq_len, device=input_ids.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


class BertLayer(nn.Module):
    """Post-LN transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        h, i, eps = cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.attention_dropout = cfg.attention_probs_dropout_prob
        self.attention = nn.ModuleDict(
            {
                "self": nn.ModuleDict(
                    {"query": nn.Linear(h, h), "key": nn.Linear(h, h), "value": nn.Linear(h, h)}
                ),
                "output": nn.ModuleDict(
                    {"dense": nn.Linear(h, h), "LayerNorm": nn.LayerNorm(h, eps=eps)}
                ),
            }
        )
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(h, i)})
        self.output = nn.ModuleDict(
            {"dense": nn.Linear(i, h), "LayerNorm": nn.LayerNorm(h, eps=eps)}
        )
        self.act = get_activation(cfg.hidden_act)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor | None) -> torch.Tensor:
        batch, seq, hidden = x.shape
        qkv, out = self.attention["self"], self.attention["output"]

        def split_heads(t):  # [b, s, h] -> [b, heads, s, head_dim]
            return t.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = (split_heads(qkv[name](x)) for name in ("query", "key", "value"))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep_mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(batch, seq, hidden)
        x = out["LayerNorm"](x + self.dropout(out["dense"](y)))
        ffn = self.output["dense"](self.act(self.intermediate["dense"](x)))
        return self.output["LayerNorm"](x + self.dropout(ffn))


class BertEncoderOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # [batch, seq, hidden]
    pooled_output: torch.Tensor | None  # [batch, hidden]; None without a pooler
    hidden_states: tuple[torch.Tensor, ...] | None  # embeddings + every layer, when asked for


class PreTrainingOutput(NamedTuple):
    mlm_logits: torch.Tensor  # [batch, seq, vocab]
    nsp_logits: torch.Tensor  # [batch, 2]; class 0 = "B follows A", as in HF


def init_bert_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: N(0, std) weights, zero biases, identity LayerNorms, zero padding row."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BertModel(nn.Module):
    """The encoder. `model(input_ids, attention_mask, token_type_ids)` -> last hidden state."""

    tied_weight_keys: dict[str, str] = {}

    def __init__(self, cfg: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = replace(cfg, architectures=["BertModel"])
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = nn.ModuleDict(
            {"layer": nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))}
        )
        self.pooler = (
            nn.ModuleDict({"dense": nn.Linear(cfg.hidden_size, cfg.hidden_size)})
            if add_pooling_layer
            else None
        )
        self.apply(lambda m: init_bert_weights(m, cfg.initializer_range))

    def encode(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        output_hidden_states: bool = False,
    ) -> BertEncoderOutput:
        # attention_mask [b, s]: 1 = real token, 0 = padding. SDPA wants True = may attend, shaped to
        # broadcast over heads and query positions.
        keep_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        all_states = [x]
        for layer in self.encoder["layer"]:
            x = layer(x, keep_mask)
            all_states.append(x)
        pooled = torch.tanh(self.pooler["dense"](x[:, 0])) if self.pooler is not None else None
        return BertEncoderOutput(x, pooled, tuple(all_states) if output_hidden_states else None)

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None
    ) -> torch.Tensor:
        return self.encode(
            input_ids, attention_mask, token_type_ids, position_ids
        ).last_hidden_state


class BertLMPredictionHead(nn.Module):
    """MLM head: dense + act + LayerNorm, then a decoder that shares the word-embedding matrix."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.transform = nn.ModuleDict(
            {
                "dense": nn.Linear(cfg.hidden_size, cfg.hidden_size),
                "LayerNorm": nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps),
            }
        )
        self.act = get_activation(cfg.hidden_act)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.bias = self.decoder.bias  # HF names the output bias both `bias` and `decoder.bias`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform["LayerNorm"](self.act(self.transform["dense"](x)))
        return self.decoder(x)


class _BertWithMLMHead(nn.Module):
    """Shared by BertForPreTraining / BertForMaskedLM: `bert` + `cls.predictions` (+ tying)."""

    def _build(self, cfg: BertConfig, add_pooling_layer: bool, nsp: bool):
        self.config = replace(cfg, architectures=[type(self).__name__])
        self.bert = BertModel(cfg, add_pooling_layer=add_pooling_layer)
        heads = {"predictions": BertLMPredictionHead(cfg)}
        if nsp:
            heads["seq_relationship"] = nn.Linear(cfg.hidden_size, 2)
        self.cls = nn.ModuleDict(heads)
        self.cls.apply(lambda m: init_bert_weights(m, cfg.initializer_range))
        self.tied_weight_keys = {"cls.predictions.decoder.bias": "cls.predictions.bias"}
        if cfg.tie_word_embeddings:
            self.cls["predictions"].decoder.weight = self.bert.embeddings.word_embeddings.weight
            self.tied_weight_keys["cls.predictions.decoder.weight"] = (
                "bert.embeddings.word_embeddings.weight"
            )


class BertForPreTraining(_BertWithMLMHead):
    """BERT with the masked-LM head and the next-sentence head (on the pooled [CLS])."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self._build(cfg, add_pooling_layer=True, nsp=True)

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None
    ) -> PreTrainingOutput:
        hidden, pooled, _ = self.bert.encode(
            input_ids, attention_mask, token_type_ids, position_ids
        )
        return PreTrainingOutput(
            self.cls["predictions"](hidden), self.cls["seq_relationship"](pooled)
        )


class BertForMaskedLM(_BertWithMLMHead):
    """BERT with only the masked-LM head; `model(input_ids)` -> logits [batch, seq, vocab]."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self._build(cfg, add_pooling_layer=False, nsp=False)

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None
    ) -> torch.Tensor:
        return self.cls["predictions"](
            self.bert(input_ids, attention_mask, token_type_ids, position_ids)
        )


class BertForSequenceClassification(nn.Module):
    """pooled [CLS] -> dropout -> linear; `model(input_ids, attention_mask)` -> logits [batch, num_labels]."""

    tied_weight_keys: dict[str, str] = {}

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = replace(cfg, architectures=["BertForSequenceClassification"])
        self.bert = BertModel(cfg)
        p = (
            cfg.classifier_dropout
            if cfg.classifier_dropout is not None
            else cfg.hidden_dropout_prob
        )
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_labels)
        init_bert_weights(self.classifier, cfg.initializer_range)

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None
    ) -> torch.Tensor:
        pooled = self.bert.encode(
            input_ids, attention_mask, token_type_ids, position_ids
        ).pooled_output
        return self.classifier(self.dropout(pooled))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "BertModel": BertModel,
    "BertForPreTraining": BertForPreTraining,
    "BertForMaskedLM": BertForMaskedLM,
    "BertForSequenceClassification": BertForSequenceClassification,
}


# ------------------------------------------------------------------------------ sentence embeddings
def mean_pooled_embeddings(
    model: nn.Module, input_ids, attention_mask, normalize: bool = True, token_type_ids=None
) -> torch.Tensor:
    """sentence-transformers pooling: average the last hidden states over real (non-padding) tokens,
    then (optionally) scale to unit length. Works on BertModel or any model with a `.bert`."""
    encoder = getattr(model, "bert", model)
    hidden = encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1) if normalize else pooled


@torch.inference_mode()
def embed(
    texts: str | list[str],
    tokenizer,
    model: nn.Module,
    batch_size: int = 32,
    normalize: bool = True,
    max_length: int | None = None,
) -> torch.Tensor:
    """Embed texts with a HF tokenizer and a BERT: returns [len(texts), hidden] on the model's device.

    Texts are batched in length order (less padding, same result) and returned in input order."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    encoder = getattr(model, "bert", model)
    device = next(encoder.parameters()).device
    limit = encoder.config.max_position_embeddings
    max_length = min(
        max_length or limit, limit, getattr(tokenizer, "model_max_length", limit) or limit
    )
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), encoder.config.hidden_size, device=device)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in index],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batch = {
            k: v.to(device)
            for k, v in batch.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        out[index] = mean_pooled_embeddings(encoder, normalize=normalize, **batch).float()
    return out


# ---------------------------------------------------------------------------------------- loading
_OPTIONAL_PREFIXES = ("pooler.", "cls.", "classifier.")  # heads a checkpoint may legitimately lack


def _strip_bert(key: str) -> str:
    return key[len("bert.") :] if key.startswith("bert.") else key


def load_hf_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Copy HF-named weights into `model`, with or without the `bert.` prefix.

    Missing encoder weights or unknown tensors raise LlmlabError; missing pooler/heads are left at
    their initialisation, reported with a warning and returned (also kept in `model.missing_weights`).
    """
    expected = model.state_dict()
    tied = getattr(model, "tied_weight_keys", {})
    by_bare_name = {_strip_bert(k): k for k in expected}
    loaded: dict[str, torch.Tensor] = {}
    unexpected, dropped_heads = [], []
    for key, tensor in state_dict.items():
        # TF-era checkpoints call LayerNorm parameters gamma/beta.
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias"
        )
        if key.endswith(("position_ids", "embeddings.token_type_ids")):
            continue  # index buffers HF sometimes saves; we compute them
        if key in tied:
            if tied[key] not in state_dict:
                loaded[tied[key]] = (
                    tensor  # only the alias was saved; it feeds the shared parameter
                )
            continue
        target = key if key in expected else by_bare_name.get(_strip_bert(key))
        if target is None:
            (
                dropped_heads if _strip_bert(key).startswith(_OPTIONAL_PREFIXES) else unexpected
            ).append(key)
            continue
        if tuple(tensor.shape) != tuple(expected[target].shape):
            raise LlmlabError(
                f"weight '{key}' has shape {tuple(tensor.shape)} but the config implies "
                f"{tuple(expected[target].shape)}"
            )
        loaded[target] = tensor
    if unexpected:
        raise LlmlabError(
            f"checkpoint has {len(unexpected)} tensors this BERT does not use, e.g. '{unexpected[0]}'"
        )
    missing = [k for k in expected if k not in loaded and k not in tied]
    required = [k for k in missing if not _strip_bert(k).startswith(_OPTIONAL_PREFIXES)]
    if required:
        raise LlmlabError(
            f"checkpoint is missing {len(required)} encoder weights, e.g. '{required[0]}'"
        )
    model.load_state_dict(loaded, strict=False)
    if missing:
        warnings.warn(
            f"BERT checkpoint has no weights for {', '.join(sorted({k.rsplit('.', 1)[0] for k in missing}))}; "
            "they are randomly initialised (fine for embeddings; fine-tune before using those heads)",
            stacklevel=2,
        )
    if dropped_heads:
        warnings.warn(
            f"ignored {len(dropped_heads)} checkpoint tensors for heads this architecture does not "
            f"have, e.g. '{dropped_heads[0]}'",
            stacklevel=2,
        )
    model.missing_weights = missing
    return missing


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict ready for `safetensors.torch.save_file`: tied aliases dropped, tensors contiguous
    (HF fills the aliases back in when loading, as does `load_hf_weights`)."""
    tied = getattr(model, "tied_weight_keys", {})
    return {k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}


def model_from_hf(config: dict, state_dict: dict[str, torch.Tensor] | None) -> nn.Module:
    """Build the class named by config['architectures'] (BertModel when absent), load the weights
    (if given) and return the model in eval mode. Entry point for `llmlab.load`."""
    cfg = BertConfig.from_hf(config)
    names = config.get("architectures") or ["BertModel"]
    name = names[0]
    if name not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"BERT architecture '{name}' is not supported (supported: {', '.join(ARCHITECTURES)})"
        )
    model = ARCHITECTURES[name](cfg)
    if state_dict is not None:
        load_hf_weights(model, state_dict)
    return model.eval()
