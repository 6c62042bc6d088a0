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


# --- notes-instruct recipe operators ----------------------------------------------------------

NOTES = """# 基础知识点
## 归一化的作用
### 问题分析
归一化把每层输入缩放到均值为 0、方差为 1 的分布，激活值保持在合理范围。
### 面试回答
> 归一化让每层输入的分布更稳定，防止梯度消失或梯度爆炸，并加速收敛。

### 如果面试官追问「为什么 BN 依赖 batch？」
> 因为 BN 的均值和方差是在一个 batch 上统计的。

## dropout的作用是什么
### 面试回答
> Dropout 在训练时随机丢弃神经元，减少神经元之间的共适应，从而防止过拟合。

## 只有分析没有回答
### 问题分析
这里没有面试回答。
# Python知识点
## 深拷贝和浅拷贝的区别
### 面试回答
> 浅拷贝只复制对象本身，内部的子对象仍然共享；深拷贝递归复制所有子对象，互不影响。

# LoRA 详细步骤
## 1. LoRA 简介
低秩适配。
"""


class Trace:
    """Collects what operators report, to check removals and failures."""

    def __init__(self):
        self.removed_records, self.failures = [], []

    def changed(self, before, after):
        pass

    def removed(self, record, why):
        self.removed_records.append((record, why))

    def failed(self, record, reason):
        self.failures.append((record, reason))


def run_ops(records, *steps):
    from llmlab.data.ops import build_op

    trace = Trace()
    for name, args in steps:
        op = build_op(name, args)
        records = op.process(records, trace) + op.finish(trace)
    return records, trace


def seed_pairs(**args):
    records, _ = run_ops([{"text": NOTES}], ("markdown_to_qa", {}), ("notes_seed_pairs", args))
    return records


def test_seed_pairs_from_notes_qa_records():
    pairs = seed_pairs()
    assert [p["instruction"] for p in pairs] == [
        "归一化的作用",
        "为什么 BN 依赖 batch？",
        "dropout的作用是什么",
        "深拷贝和浅拷贝的区别",
    ]  # the analysis-only question and the tutorial step give no pair
    norm, follow_up = pairs[0], pairs[1]
    assert norm["response"].startswith("归一化让每层输入的分布更稳定")
    assert norm["analysis"].startswith("归一化把每层输入缩放")
    assert norm["passage"] == norm["analysis"] + "\n\n" + norm["response"]
    assert norm["text"] == norm["instruction"] + "\n" + norm["response"]
    assert norm["origin"] == "seed" and norm["source"] == "基础知识点 > 归一化的作用"
    # a follow-up belongs to its question's section (they must land in the same split)
    assert follow_up["section"] == norm["section"] == "基础知识点 > 归一化的作用"
    assert pairs[3]["section"] == "Python知识点 > 深拷贝和浅拷贝的区别"
    assert len({p["id"] for p in pairs}) == 4

    with_analysis = seed_pairs(with_analysis=True, section_level=1)[0]
    assert with_analysis["response"] == norm["analysis"] + "\n\n" + norm["response"]
    assert with_analysis["section"] == "基础知识点"


def pair(instruction, response, passage="", **fields):
    from llmlab.data.ops.instruct import make_pair

    return make_pair(instruction, response, passage=passage, **fields)


def test_pair_length_filter():
    records = [pair("问", "太短"), pair("什么是过拟合？", "模型在训练集上表现好、在新数据上表现差。"),
               pair("x" * 50, "一个足够长的回答。")]  # fmt: skip
    kept, trace = run_ops(
        records,
        ("pair_length_filter", {"instruction_min": 2, "instruction_max": 40, "response_min": 5}),
    )
    assert kept == [records[1]]
    assert [why for _, why in trace.removed_records] == [
        {"instruction_chars": 1, "response_chars": 2},
        {"instruction_chars": 50, "response_chars": 9},
    ]


def test_pair_language_filter_keeps_answers_in_the_question_language():
    from llmlab.data.ops.instruct import pair_language

    assert pair_language("为什么 Dropout 能防止过拟合？") == "zh"  # English terms in Chinese text
    assert pair_language("BatchNorm和LayerNorm有什么区别") == pair_language("LSTM和GRU") == "zh"
    assert pair_language("Why does Dropout prevent overfitting?") == "en"
    assert pair_language("LSTM") == "term" and pair_language("42") == "other"
    records = [
        pair(
            "为什么 Dropout 能防止过拟合？",
            "Dropout 让网络不依赖单个神经元，相当于集成多个子模型。",
        ),
        pair("为什么 Dropout 能防止过拟合？", "Because it stops units from co-adapting."),
        pair("What is dropout?", "It zeroes random activations during training."),
        pair("What is dropout?", "训练时随机把一部分激活置零。"),
        pair("1 + 1 = ?", "2"),
        pair("Transformer", "Transformer 完全基于注意力机制，可以并行计算。"),
    ]
    kept, trace = run_ops(records, ("pair_language_filter", {}))
    assert kept == [records[0], records[2], records[5]]
    assert [why for _, why in trace.removed_records][-1] == {
        "instruction": "other",
        "response": "other",
    }
    kept, _ = run_ops(records, ("pair_language_filter", {"languages": ["zh"]}))
    assert kept == [records[0], records[5]]


def test_passage_overlap_filter_checks_answers_against_their_passage():
    passage = "Dropout 在训练时随机丢弃神经元，减少神经元之间的共适应，从而防止过拟合。"
    faithful = pair("dropout的作用", "Dropout 随机丢弃神经元，防止过拟合。", passage)
    unrelated = pair("dropout的作用", "学习率太大会让损失震荡甚至发散。", passage)
    general = pair("一年有多少个月？", "一年有十二个月。")
    kept, trace = run_ops([faithful, unrelated, general], ("passage_overlap_filter", {"min": 0.5}))
    assert kept == [faithful, general]
    ((removed, share),) = trace.removed_records
    assert removed is unrelated and share < 0.5
    kept, _ = run_ops([faithful, general], ("passage_overlap_filter", {"require_passage": True}))
    assert kept == [faithful]


def test_near_duplicates_removed_against_seeds_and_each_other():
    seed = pair("什么是梯度消失？", "反向传播时梯度逐层变小，靠前的层几乎学不到东西。")
    near = pair("什么是梯度消失?", "反向传播时梯度逐层变小，靠前的层几乎学不到东西。")
    other = pair("什么是梯度爆炸？", "梯度逐层变大，更新过大导致训练发散。")
    kept, trace = run_ops(
        [seed, near, other, dict(other)],
        ("exact_dedup", {}),
        ("minhash_dedup", {"threshold": 0.8, "ngram": 3}),
    )
    assert kept == [seed, other]  # the seed (first in the stream) wins over its paraphrase
    assert len(trace.removed_records) == 2


def test_split_by_section_never_leaks_a_section():
    import random

    rng = random.Random(0)
    sections = [f"基础知识点 > 问题{i}" for i in range(40)]
    records = [
        pair(f"问题{i}-{j}？", f"回答{i}-{j}。", section=sections[i])
        for i in range(40)
        for j in range(rng.randint(1, 4))
    ]
    general = pair(
        "一年有多少个月？",
        "一年有十二个月。",
        section="general/zh",
        split="train",
        origin="general",
    )
    rng.shuffle(records)
    out, trace = run_ops(records + [general], ("split_by_section", {"dev": 0.2, "test": 0.2}))
    assert len(out) == len(records) + 1 and not trace.failures
    splits_of: dict[str, set] = {}
    for r in out:
        splits_of.setdefault(r["section"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values()), "a section appears in two splits"
    sections_in = {
        name: {k for k, v in splits_of.items() if name in v} for name in ("train", "dev", "test")
    }
    assert len(sections_in["test"] - {"general/zh"}) == 8 and len(sections_in["dev"]) == 8
    assert next(r for r in out if r["section"] == "general/zh")["split"] == "train"
    # deterministic: same input in another order, same assignment
    again, _ = run_ops(list(reversed(records)), ("split_by_section", {"dev": 0.2, "test": 0.2}))
    assert {r["id"]: r["split"] for r in again} == {
        r["id"]: r["split"] for r in out if r is not general and r["section"] != "general/zh"
    }
    # few sections: still one for test and one for dev, the rest train
    few, _ = run_ops(seed_pairs(), ("split_by_section", {"dev": 0.1, "test": 0.1}))
    assert sorted(r["split"] for r in few).count("train") >= 1
    assert {r["split"] for r in few} == {"train", "dev", "test"}
    by_section = {}
    for r in few:
        by_section.setdefault(r["section"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_section.values())
    # a record without a section is reported, not silently put somewhere
    _, trace = run_ops([pair("a?", "b.")], ("split_by_section", {}))
    assert "no 'section'" in trace.failures[0][1]


def test_general_mix_bundled_pairs_pass_the_filters():
    from llmlab.data.ops import RecipeError, build_op

    out, _ = run_ops([seed_pairs()[0]], ("general_mix", {}))
    general = [r for r in out if r["origin"] == "general"]
    assert out[0]["origin"] == "seed" and len(general) >= 30
    langs = [r["section"] for r in general]
    assert langs.count("general/zh") >= 15 and langs.count("general/en") >= 15
    assert all(r["split"] == "train" for r in general)
    kept, trace = run_ops(
        general, ("pair_length_filter", {}), ("pair_language_filter", {}),
        ("passage_overlap_filter", {}), ("exact_dedup", {}), ("minhash_dedup", {"threshold": 0.8}),
    )  # fmt: skip
    assert kept == general, trace.removed_records
    with pytest.raises(RecipeError, match="cannot read general pairs"):
        build_op("general_mix", {"path": "/nonexistent/general.jsonl"})


def test_notes_instruct_recipe_runs_end_to_end(tmp_path):
    import json
    from pathlib import Path

    import yaml

    from llmlab.data.executor import run_recipe
    from llmlab.data.recipe import parse_recipe

    recipe = yaml.safe_load(
        (Path(__file__).parent.parent / "recipes/notes-instruct.yaml").read_text()
    )
    # model steps, if switched on, have their own tests on tiny models
    model_ops = {"self_instruct", "perplexity_filter"}
    recipe["process"] = [s for s in recipe["process"] if next(iter(s)) not in model_ops]
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES, encoding="utf-8")
    recipe["sources"] = [{"type": "text", "path": str(notes)}]
    recipe["work_dir"] = str(tmp_path / "work")
    out = tmp_path / "out.jsonl"
    recipe["sinks"] = [{"type": "jsonl", "path": str(out)}]
    run_recipe(parse_recipe(recipe), progress=False)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    seeds = [r for r in rows if r["origin"] == "seed"]
    rag = [r for r in rows if r["origin"] == "rag"]
    assert len(seeds) == 4 and len(rows) - 4 - len(rag) >= 30
    assert {r["split"] for r in seeds} == {"train", "dev", "test"}
    assert all(r["split"] == "train" for r in rows if r["origin"] in ("general", "rag"))
    # rag_pairs: one per train seed, and no section (nor its passage text) crosses splits
    train_seeds = [r for r in seeds if r["split"] == "train"]
    assert sorted(r["section"] for r in rag) == sorted(r["section"] for r in train_seeds)
    split_of = {}
    for row in rows:
        assert split_of.setdefault(row["section"], row["split"]) == row["split"]
    held_out = [r["passage"] for r in seeds if r["split"] != "train"]
    for row in rag:
        _, user, model = row["messages"]
        assert user["content"].endswith("问题：" + row["instruction"])
        assert row["passage"] in user["content"] and model["content"] == row["response"]
        assert not any(p in user["content"] for p in held_out)
    for row in (r for r in rows if r["origin"] != "rag"):
        system, user, model = row["messages"]
        assert system["role"] == "system" and user == {
            "role": "user",
            "content": row["instruction"],
        }
        assert model == {"role": "assistant", "content": row["response"]}


def test_self_instruct_plumbing_on_a_tiny_random_model(one_thread):
    """Plumbing only (a random model writes noise): every task yields its pairs, each keeping its
    seed's section and passage, and the answers are the engine's own generations."""
    from engine_helpers import tiny_model
    from tiny import tiny_tokenizer

    from llmlab.data.ops import RecipeError, build_op
    from llmlab.data.ops.self_instruct import ANSWER_PROMPT, RAG_INSTRUCTION
    from llmlab.engine import LLM, SamplingParams

    seeds = [
        pair(
            "What is dropout?",
            "It zeroes random units.",
            "Dropout zeroes random units.",
            section="s1",
        ),
        pair("What is BN?", "It normalizes a batch.", "BN normalizes each batch.", section="s2"),
    ]
    llm = LLM(tiny_model(max_position_embeddings=1024), tiny_tokenizer(), num_kv_blocks=128)

    def expand():
        op = build_op("self_instruct", {"max_tokens": 6, "temperature": 0.0})
        op.llm = llm
        trace = Trace()
        return op.process(list(seeds), trace), trace

    out, trace = expand()
    assert out[:2] == seeds  # seeds pass through unchanged
    new = out[2:]
    by_task: dict[str, list] = {}
    for record in new:
        by_task.setdefault(record["origin"].split(":")[1], []).append(record)
    assert {len(by_task.get(t, [])) for t in ("beginner", "compare", "rag")} == {2}
    assert (
        len(by_task.get("paraphrase", []))
        + len(by_task.get("follow_up", []))
        + len(trace.removed_records)
        == 4
    )  # a question the model left empty is reported, not kept
    seed_of = {s["id"]: s for s in seeds}
    for record in new:
        seed = seed_of[record["seed_id"]]
        assert record["section"] == seed["section"] and seed["passage"] in record["passage"]
    for record in by_task.get("paraphrase", []):
        assert record["response"] == seed_of[record["seed_id"]]["response"]
    rag = by_task["rag"][0]
    assert rag["instruction"] == RAG_INSTRUCTION.format(
        q=seeds[0]["instruction"], p=seeds[0]["passage"]
    )
    direct = llm.generate(
        [ANSWER_PROMPT.format(p=rag["passage"], q=rag["instruction"])],
        SamplingParams(max_tokens=6, temperature=0.0, stop=["\n\n"]),
    )
    assert rag["response"] == direct[0].text.strip()
    again, _ = expand()
    assert again == out  # greedy: the same pairs again
    op = build_op("self_instruct", {"tasks": ["rag"], "samples": 3, "max_tokens": 4})
    op.llm = llm
    assert len(op.process(list(seeds), Trace())) == 2 + 3 * 2  # `samples` pairs per seed and task
    with pytest.raises(RecipeError, match="unknown task"):
        build_op("self_instruct", {"tasks": ["poem"]})
