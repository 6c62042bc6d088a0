"""A Hugging Face `tokenizers` tokenizer built from a GGUF's SentencePiece-style vocabulary (Gemma).

    from llmlab.tokenize.gguf_sentencepiece import gemma_tokenizer_from_metadata
    tokenizer = gemma_tokenizer_from_metadata(metadata)    # a transformers PreTrainedTokenizerFast

A GGUF with `tokenizer.ggml.model = "llama"` stores the vocabulary (tokens, scores, token types)
but no merges and no tokenizer.json. We rebuild what transformers builds for Gemma files, so the
ids are the same (tests/test_gemma3.py checks it on Chinese, English, code and emoji):

- text: spaces become "▁" (no prefix space), split after each "▁" (SentencePiece pieces never
  span a space boundary in the middle);
- model: BPE whose merges come from the vocabulary itself: every way to cut a token into two
  tokens is a merge, ranked by the token's position in the file (Gemma's scores do not follow the
  merge order, its file order does), longer left halves first; unknown characters fall back to
  their UTF-8 bytes (`<0xE4>` tokens);
- whitespace-run tokens are stored with real spaces ("  "): respelled "▁▁" to match the text;
- control tokens (type 3: `<bos>`, `<start_of_turn>`, …) are special added tokens, user-defined
  ones (type 4) plain added tokens: both match whole in the text, never cut into pieces;
- BOS is prepended when `tokenizer.ggml.add_bos_token` says so (as `encode` does in llama.cpp).
"""

from __future__ import annotations

from llmlab.errors import LlmlabError

CONTROL, USER_DEFINED = 3, 4
SPACE = "\u2581"


def _respell(token: str) -> str:
    return SPACE * len(token) if token and " " in token and not token.strip() else token


def merges_from_vocabulary(tokens: list[str]) -> list[tuple[str, str]]:
    """Every (left, right) cut of a token whose halves are both tokens, best first: by the merged
    token's position in the file, then longer left half first."""
    vocab = set(tokens)
    merges = []
    for token in tokens:
        for cut in range(len(token) - 1, 0, -1):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                merges.append((left, right))
    return merges


def gemma_tokenizer_from_metadata(metadata: dict, source: str = "GGUF"):
    """A PreTrainedTokenizerFast for a Gemma GGUF (see the module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    raw_tokens = metadata.get("tokenizer.ggml.tokens")
    if not raw_tokens:
        raise LlmlabError(f"{source}: no tokenizer.ggml.tokens in the GGUF metadata")
    tokens = [_respell(t) for t in raw_tokens]
    types = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {token: index for index, token in enumerate(tokens)}

    def token_for(key: str) -> str | None:
        index = metadata.get(f"tokenizer.ggml.{key}")
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    unk = token_for("unknown_token_id")
    model = models.BPE(
        vocab,
        merges_from_vocabulary(tokens),
        unk_token=unk,
        byte_fallback=True,
        fuse_unk=True,
    )
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Replace(" ", SPACE)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tokenizer.add_special_tokens(
        [
            AddedToken(t, normalized=False, special=True)
            for t, kind in zip(raw_tokens, types)
            if kind == CONTROL and t in vocab
        ]
    )
    # Matched whole against the raw text, so under the file's own spelling: a user-defined run of
    # spaces ("  ") is not a token under that spelling and stays with BPE (as in transformers).
    tokenizer.add_tokens(
        [
            AddedToken(t, normalized=False, special=False)
            for t, kind in zip(raw_tokens, types)
            if kind == USER_DEFINED and t in vocab
        ]
    )
    bos = token_for("bos_token_id")
    if metadata.get("tokenizer.ggml.add_bos_token", True) and bos is not None:
        tokenizer.post_processor = TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    # Handing the backend over as `tokenizer_object=` would deep-copy it (a pickle round trip of
    # 262k tokens and merges: ~10 s); set it first, and __init__ keeps the one it finds.
    wrapper = PreTrainedTokenizerFast.__new__(PreTrainedTokenizerFast)
    wrapper._tokenizer = tokenizer
    wrapper.__init__(
        bos_token=bos,
        eos_token=token_for("eos_token_id"),
        unk_token=unk,
        pad_token=token_for("padding_token_id"),
        chat_template=metadata.get("tokenizer.chat_template"),
    )
    if wrapper.backend_tokenizer is not tokenizer:
        raise LlmlabError("transformers replaced the tokenizer backend: update gguf_sentencepiece")
    return wrapper
