"""The notes assistant's first pieces (issue 19): the Gemma chat template against Gemma 3's official
template, and the `recipes/notes-instruct.yaml` operators (seed pairs, split by section, filters,
general mix).

    PYTHONPATH=$PWD/src python -m pytest tests/test_notes_instruct.py -q
"""

from __future__ import annotations

import pytest

from llmlab.errors import LlmlabError
from llmlab.tokenize.tokenizer import apply_chat, render_chat, use_chat_format

# Gemma 3's official chat template (tokenizer_config.json of google/gemma-3-*-it), the reference our
# GEMMA_TEMPLATE must reproduce; only the string-content branch matters to us.
OFFICIAL_GEMMA3_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)

CHATS = [
    [{"role": "user", "content": "什么是梯度消失？"}],
    [
        {"role": "system", "content": "你是机器学习面试助手，请用中文回答。"},
        {"role": "user", "content": "  什么是梯度消失？ "},
        {"role": "assistant", "content": "反向传播时梯度逐层变小。\n"},
        {"role": "user", "content": "How do residual connections help?"},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ],
]


def _tiny_gemma_tokenizer():
    from tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_special_tokens(
        {"bos_token": "<bos>", "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}
    )
    return tok


def _reference_ids(tok, messages, add_generation_prompt):
    text = tok.apply_chat_template(
        messages,
        chat_template=OFFICIAL_GEMMA3_TEMPLATE,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    return text, tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("chat", range(len(CHATS)))
def test_gemma_template_matches_official_template(chat, add_generation_prompt):
    tok = _tiny_gemma_tokenizer()
    use_chat_format(tok, "gemma")
    messages = CHATS[chat]
    text, ids = _reference_ids(tok, messages, add_generation_prompt)
    assert render_chat(tok, messages, add_generation_prompt=add_generation_prompt) == text
    assert apply_chat(tok, messages, add_generation_prompt=add_generation_prompt) == ids


def test_gemma_template_literal_format_and_stop_token():
    tok = _tiny_gemma_tokenizer()
    use_chat_format(tok, "gemma")
    text = render_chat(tok, CHATS[1][1:3], system="Be brief.", add_generation_prompt=False)
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\n什么是梯度消失？<end_of_turn>\n"
        "<start_of_turn>model\n反向传播时梯度逐层变小。<end_of_turn>\n"
    )
    ids = apply_chat(tok, CHATS[0])
    turn = tok.convert_tokens_to_ids("<start_of_turn>")
    assert ids[0] == tok.convert_tokens_to_ids("<bos>") and ids[1] == turn
    assert ids.count(turn) == 2  # the user turn and the model's generation prompt, one id each
    assert tok.eos_token == "<end_of_turn>"  # generation stops at the end of the model's turn


def test_gemma_template_refusals():
    tok = _tiny_gemma_tokenizer()
    use_chat_format(tok, "gemma")
    with pytest.raises(LlmlabError, match="alternate"):
        render_chat(tok, [{"role": "assistant", "content": "x"}])
    with pytest.raises(LlmlabError, match="unknown chat format 'llama9'"):
        use_chat_format(tok, "llama9")
    from tiny import tiny_tokenizer

    with pytest.raises(LlmlabError, match="<start_of_turn>"):
        use_chat_format(tiny_tokenizer(), "gemma")


@pytest.mark.slow
def test_real_gemma3_tokenizer_gemma_format_ids():
    from llmlab.registry import resolve
    from llmlab.tokenize.tokenizer import load_tokenizer

    tok = load_tokenizer(resolve("gemma3-270m"), chat_format="gemma")
    messages = CHATS[1]
    _, ids = _reference_ids(tok, messages, True)
    assert apply_chat(tok, messages) == ids
    assert ids[:2] == [
        tok.convert_tokens_to_ids("<bos>"),
        tok.convert_tokens_to_ids("<start_of_turn>"),
    ]
    assert tok.eos_token == "<end_of_turn>" and tok.chat_stop_strings == []
