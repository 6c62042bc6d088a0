"""Tokenizer loading and chat rendering: the SmolLM2 GGUF tokenizer against transformers' own GGUF
tokenizer, its chat template from metadata, ChatML for folders without a template, system prompts.

    .venv/bin/python -m pytest tests/test_tokenizer.py -q
"""

from __future__ import annotations

import pytest

from llmlab.errors import LlmlabError
from llmlab.registry import resolve
from llmlab.tokenize.tokenizer import CHATML_TEMPLATE, apply_chat, load_tokenizer, render_chat

TEXTS = [
    "Hello world",
    "你好，世界！今天天气很好。",
    "  leading spaces\n\ttabs and <|im_start|>special<|im_end|> tokens",
    "def square(x):\n    return x ** 2  # 12345 émigré naïve",
]


@pytest.fixture(scope="module")
def smollm2_tokenizers():
    """(ours, transformers' AutoTokenizer on the same GGUF), loaded once."""
    from transformers import AutoTokenizer

    path = resolve("smollm2-135m-instruct")
    reference = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return load_tokenizer(path), reference


@pytest.mark.slow
def test_gguf_tokenizer_encodes_and_decodes_like_transformers(smollm2_tokenizers):
    ours, reference = smollm2_tokenizers
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == reference.encode(text), text
        assert ours.decode(ids) == reference.decode(ids) == text
    assert len(ours) == len(reference) == 49152
    assert ours.eos_token == "<|im_end|>" and ours.pad_token is not None


@pytest.mark.slow
def test_gguf_chat_template_from_metadata_renders_smollm2_format(smollm2_tokenizers):
    ours, reference = smollm2_tokenizers
    messages = [{"role": "user", "content": "What is dropout?"}]
    assert ours.chat_template == reference.chat_template != CHATML_TEMPLATE
    text = render_chat(ours, messages)
    assert text == reference.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    # SmolLM2's template adds its own default system turn and ends with the assistant header
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nWhat is dropout?<|im_end|>\n<|im_start|>assistant\n")

    ids = apply_chat(ours, messages, system="Answer in one sentence.")
    expected = reference.apply_chat_template(
        [{"role": "system", "content": "Answer in one sentence."}, *messages],
        tokenize=True,
        add_generation_prompt=True,
        return_dict=True,
    )["input_ids"]
    assert ids == list(expected) and all(type(i) is int for i in ids)
    assert "You are a helpful AI assistant" not in ours.decode(ids)


@pytest.fixture(scope="module")
def folder_without_template(tmp_path_factory):
    """A tiny BPE tokenizer saved as a HF folder: no chat template, no EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(
        ["the cat sat on the mat", "a system prompt", "hello there user"] * 5, trainer
    )
    folder = tmp_path_factory.mktemp("tiny_tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=backend).save_pretrained(folder)
    return folder


def test_folder_without_template_gets_chatml_and_eos(folder_without_template):
    tokenizer = load_tokenizer(folder_without_template)
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|im_end|>"
    messages = [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "the cat"},
    ]
    text = render_chat(tokenizer, messages, system="a system prompt", add_generation_prompt=False)
    turns = [("system", "a system prompt"), ("user", "hello there"), ("assistant", "the cat")]
    assert text == "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    assert render_chat(tokenizer, messages).endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_apply_chat_system_prompt_and_openai_content_parts(folder_without_template):
    tokenizer = load_tokenizer(folder_without_template)
    parts = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}],
        }
    ]
    with_system = apply_chat(tokenizer, parts, system="a system prompt")
    text = tokenizer.decode(with_system)
    assert text.startswith(
        "<|im_start|>system\na system prompt<|im_end|>\n<|im_start|>user\nhello there"
    )
    assert with_system == tokenizer.encode(text, add_special_tokens=False)
    # a conversation that already has a system turn keeps it and gets no second one
    own_system = [{"role": "system", "content": "the cat"}, *parts]
    assert (
        tokenizer.decode(apply_chat(tokenizer, own_system, system="ignored")).count("system") == 1
    )
    assert apply_chat(tokenizer, parts) != with_system


def test_tokenizer_errors_are_one_line(tmp_path, folder_without_template):
    with pytest.raises(LlmlabError, match="no such tokenizer folder"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "model.bin").write_bytes(b"\0")
    with pytest.raises(LlmlabError, match="expected a folder with tokenizer files or a .gguf file"):
        load_tokenizer(tmp_path / "model.bin")
    tokenizer = load_tokenizer(folder_without_template)
    tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(LlmlabError, match="chat template failed: roles must alternate"):
        apply_chat(tokenizer, [{"role": "user", "content": "hi"}])
    with pytest.raises(LlmlabError, match="message 0 must be a dict"):
        apply_chat(tokenizer, ["hi"])
