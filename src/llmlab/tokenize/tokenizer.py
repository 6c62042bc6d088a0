"""Load a Hugging Face tokenizer from a model folder or a GGUF file, and render chats with it.

    from llmlab.tokenize.tokenizer import load_tokenizer, apply_chat
    tokenizer = load_tokenizer("path/to/model.gguf")          # or a folder with tokenizer.json
    ids = apply_chat(tokenizer, [{"role": "user", "content": "Hi"}], system="Be brief.")

Every tokenizer this returns has a chat template (the model's own, else ChatML — or, for a base
model with no template such as Gemma 3 270M, the question/answer frame below), an EOS token and a
pad token, so generation and batching code never has to check. Gemma GGUFs get a tokenizer built
from their metadata by `gguf_sentencepiece.py` (same ids as transformers, ~5x faster to load).

The question/answer frame for base models (QA_FRAME_TEMPLATE): a plain-text dialogue a base model
continues naturally, ending where it should write the answer —

    <bos>{system}\n\nQuestion: {user}\nAnswer: {assistant}\n\nQuestion: {user}\nAnswer:

A base model does not stop by itself (and often writes the next question itself), so
`tokenizer.chat_stop_strings` = ["\nQuestion:", "\n\n"] ends an answer after one paragraph;
`llmlab chat` and the server's /v1/chat/completions add them to the request.

The Gemma chat format (GEMMA_TEMPLATE), for instruction-tuned Gemma models and our notes-assistant
SFT of Gemma 3 270M (`load_tokenizer(path, chat_format="gemma")` or `use_chat_format(tok, "gemma")`):

    <bos><start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n{assistant}<end_of_turn>\n

Gemma has no system role: the system prompt is folded into the first user turn, as Gemma's own
template does; roles must alternate user/model; each content is stripped. Generation stops on
`<end_of_turn>` (made the EOS token).
"""

from __future__ import annotations

import os
from pathlib import Path

from llmlab.errors import LlmlabError

# ChatML, the format SmolLM2, Qwen and many small chat models use; the fallback for tokenizers
# that ship no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

QA_FRAME_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'Question: ' + message['content'] + '\nAnswer:' }}"
    "{% else %}{{ ' ' + message['content'] + '\n\n' }}{% endif %}"
    "{% endfor %}"
)
QA_FRAME_STOP = ["\nQuestion:", "\n\n"]  # a base model runs on into the next question

GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Gemma chats must alternate user/assistant turns, starting with user') }}"
    "{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Named chat formats a caller may ask for instead of the model's own: (template, stop strings).
CHAT_FORMATS = {
    "chatml": (CHATML_TEMPLATE, []),
    "qa": (QA_FRAME_TEMPLATE, QA_FRAME_STOP),
    "gemma": (GEMMA_TEMPLATE, []),
}

# Used as EOS when a tokenizer names none, in order of preference.
_FALLBACK_EOS_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[SEP]")


def _load_transformers_tokenizer(path: Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        if path.is_dir():
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        # The fast tokenizer class builds straight from the GGUF vocabulary. AutoTokenizer would
        # first parse the whole file again to pick a class from its config: ~8x slower, same result.
        return PreTrainedTokenizerFast.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise LlmlabError(f"{path}: cannot load a tokenizer: {first_line}") from error


def _ensure_special_tokens(tokenizer, path: Path) -> None:
    from llmlab.formats.gguf import end_of_turn_token_id

    vocab = tokenizer.get_vocab()
    tokens_by_id = [None] * (max(vocab.values()) + 1) if vocab else []
    for token, index in vocab.items():
        tokens_by_id[index] = token
    # Stop on the template's end-of-turn token (see end_of_turn_token_id for why).
    eos_id = end_of_turn_token_id(tokens_by_id, tokenizer.chat_template, tokenizer.eos_token_id)
    if eos_id is None:
        eos_id = next((vocab[t] for t in _FALLBACK_EOS_TOKENS if t in vocab), None)
    if eos_id is None:
        raise LlmlabError(
            f"{path}: the tokenizer has no end-of-sequence token, so generation could not stop"
        )
    if eos_id != tokenizer.eos_token_id:
        tokenizer.eos_token = tokens_by_id[eos_id]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _gemma_gguf_tokenizer(path: Path):
    """Our own tokenizer for a Gemma GGUF (None for other files: transformers builds those)."""
    from llmlab.formats.gguf import open_gguf

    metadata = open_gguf(path).metadata
    if not str(metadata.get("general.architecture", "")).startswith("gemma"):
        return None
    if metadata.get("tokenizer.ggml.model") != "llama":
        return None
    from llmlab.tokenize.gguf_sentencepiece import gemma_tokenizer_from_metadata

    return gemma_tokenizer_from_metadata(metadata, str(path))


def use_chat_format(tokenizer, chat_format: str) -> None:
    """Give `tokenizer` one of CHAT_FORMATS' templates, its stop strings and its end-of-turn EOS."""
    if chat_format not in CHAT_FORMATS:
        raise LlmlabError(
            f"unknown chat format {chat_format!r}; choose one of {', '.join(CHAT_FORMATS)}"
        )
    template, stops = CHAT_FORMATS[chat_format]
    vocab = tokenizer.get_vocab()
    needed = {
        "gemma": ("<start_of_turn>", "<end_of_turn>"),
        "chatml": ("<|im_start|>", "<|im_end|>"),
    }
    missing = [t for t in needed.get(chat_format, ()) if t not in vocab]
    if missing:
        raise LlmlabError(
            f"chat format {chat_format!r} needs token(s) {', '.join(missing)}, "
            "which this tokenizer's vocabulary lacks"
        )
    tokenizer.chat_template = template
    tokenizer.chat_stop_strings = list(stops)
    from llmlab.formats.gguf import END_OF_TURN_TOKENS

    end = next((t for t in END_OF_TURN_TOKENS if t in template and t in vocab), None)
    if end is not None:
        tokenizer.eos_token = end


def use_chat_template(tokenizer, template: str) -> None:
    """Give `tokenizer` a template text, e.g. the `chat_template.jinja` an SFT adapter was trained
    with: a named format's template gets that format's stops and EOS, any other its end-of-turn EOS."""
    name = next((n for n, (t, _) in CHAT_FORMATS.items() if t == template), None)
    if name is not None:
        use_chat_format(tokenizer, name)
        return
    from llmlab.formats.gguf import END_OF_TURN_TOKENS

    tokenizer.chat_template = template
    tokenizer.chat_stop_strings = []
    vocab = tokenizer.get_vocab()
    end = next((t for t in END_OF_TURN_TOKENS if t in template and t in vocab), None)
    if end is not None:
        tokenizer.eos_token = end


def load_tokenizer(path: str | os.PathLike, chat_format: str | None = None):
    """A `transformers` tokenizer from a model folder or a `.gguf` file, with chat template, EOS and pad set.

    `chat_format` ("gemma", "chatml", "qa") replaces the model's own template, e.g. "gemma" for a
    Gemma 3 270M base being fine-tuned into a chat model."""
    path = Path(path)
    if not path.exists():
        raise LlmlabError(f"{path}: no such tokenizer folder or GGUF file")
    if path.is_file() and path.suffix != ".gguf":
        raise LlmlabError(f"{path}: expected a folder with tokenizer files or a .gguf file")
    tokenizer = _gemma_gguf_tokenizer(path) if path.is_file() else None
    if tokenizer is None:
        tokenizer = _load_transformers_tokenizer(path)
        tokenizer.chat_stop_strings = []
    elif not tokenizer.chat_template:  # a base model: the question/answer frame
        tokenizer.chat_template = QA_FRAME_TEMPLATE
        tokenizer.chat_stop_strings = list(QA_FRAME_STOP)
    else:
        tokenizer.chat_stop_strings = []
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    _ensure_special_tokens(tokenizer, path)
    if chat_format is not None:
        use_chat_format(tokenizer, chat_format)
    return tokenizer


def _message_text(content) -> str:
    """OpenAI content is a string or a list of parts; keep the text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type", "text") == "text"
        ]
        return "".join(parts)
    if content is None:
        return ""
    raise LlmlabError(
        f"message content must be a string or a list of text parts, got {type(content).__name__}"
    )


def normalize_messages(messages, system: str | None = None) -> list[dict]:
    """Validated `{"role", "content": str}` dicts, with `system` prepended unless one is present."""
    normalized = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise LlmlabError(f"message {index} must be a dict with 'role' and 'content'")
        normalized.append({**message, "content": _message_text(message.get("content"))})
    if system is not None and not (normalized and normalized[0]["role"] == "system"):
        normalized.insert(0, {"role": "system", "content": system})
    return normalized


def render_chat(
    tokenizer, messages, system: str | None = None, add_generation_prompt: bool = True
) -> str:
    """The prompt text the chat template produces for these messages."""
    try:
        return tokenizer.apply_chat_template(
            normalize_messages(messages, system),
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    except Exception as error:  # jinja2 raises its own types, templates call raise_exception()
        if isinstance(error, LlmlabError):
            raise
        raise LlmlabError(f"chat template failed: {error}") from error


def apply_chat(
    tokenizer, messages, system: str | None = None, add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of the rendered chat, as a plain list of ints.

    We render to text and encode without extra special tokens, as `apply_chat_template(tokenize=True)`
    does: the template already writes any BOS it wants. This also sidesteps the return type of
    `apply_chat_template`, which changed across transformers versions.
    """
    text = render_chat(tokenizer, messages, system, add_generation_prompt)
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]
