"""markdown_to_qa: fine-grained records (questions, follow-ups, tutorial steps) with heading path
and line range, on a hand-made document and on the bundled repaired notes."""

from __future__ import annotations

from llmlab.data.ops.markdown_qa import clean_heading, qa_records

DOC = """# 基础知识点
## 归一化的作用
### 问题分析
均值为 0、方差为 1。
![image](https://cdn.example/formula.svg)
### 面试回答
> 归一化稳定训练。

### 如果面试官追问「为什么 BN 依赖 batch？」
> 因为统计量来自一个 batch。

## 空标题
# LoRA 详细步骤
## 1. LoRA 简介
低秩适配。
## 2. LoRA 训练步骤
训练分几步。
### Step 1: 冻结预训练模型
冻结参数。
### 代码示例
```python
# 冻结
p.requires_grad = False
```
# CUDA 和 cuDNN
两个 NVIDIA 技术。
### 1. CUDA
并行计算平台。
### 2. cuDNN
深度学习库。
"""


def test_one_record_per_question_follow_up_and_step():
    records = qa_records(DOC)
    lines = DOC.split("\n")
    by_source = {r["source"]: r for r in records}
    assert list(by_source) == [
        "基础知识点 > 归一化的作用",
        "基础知识点 > 归一化的作用 > 如果面试官追问「为什么 BN 依赖 batch？」",
        "LoRA 详细步骤 > 1. LoRA 简介",
        "LoRA 详细步骤 > 2. LoRA 训练步骤",
        "LoRA 详细步骤 > 2. LoRA 训练步骤 > Step 1: 冻结预训练模型",
        "CUDA 和 cuDNN",
        "CUDA 和 cuDNN > 1. CUDA",
        "CUDA 和 cuDNN > 2. cuDNN",
    ]
    norm = by_source["基础知识点 > 归一化的作用"]
    assert norm["kind"] == "question" and norm["question"] == "归一化的作用"
    assert norm["analysis"].startswith("均值为 0") and norm["answer"] == "归一化稳定训练。"
    assert "![image](https://cdn.example/formula.svg)" in norm["analysis"]  # images stay links
    assert norm["follow_ups"] == [{"question": "为什么 BN 依赖 batch？", "answer": "因为统计量来自一个 batch。"}]  # fmt: skip
    follow = records[1]
    assert follow["kind"] == "follow_up" and follow["question"] == "为什么 BN 依赖 batch？"
    step1 = by_source["LoRA 详细步骤 > 2. LoRA 训练步骤 > Step 1: 冻结预训练模型"]
    # The unnumbered "代码示例" belongs to the step, and the code comment is not a heading.
    assert "### 代码示例" in step1["answer"] and "# 冻结" in step1["answer"]
    for r in records:
        first, last = r["lines"]
        assert first <= last
        assert lines[first - 1].lstrip("#").strip().replace("**", "") in r["source"] or first == 1
        assert lines[last - 1].strip()  # ends on text, not on a blank line
    assert norm["lines"] == [2, 7] and follow["lines"] == [9, 10]
    assert step1["lines"] == [18, 24]  # through the closing code fence
    assert len({r["id"] for r in records}) == len(records)


def test_bundled_notes_give_fine_grained_records():
    from llmlab.bundled import resolve_bundled

    text = resolve_bundled("bundled:notes-zh.md", "corpus").read_text(encoding="utf-8")
    lines = text.split("\n")
    records = qa_records(text)
    sources = [r["source"] for r in records]
    assert len(records) >= 50
    # The LoRA, Data-Juicer and CUDA sections were one record each; now one per step.
    assert sum(s.startswith("LoRA") for s in sources) >= 10
    assert sum(s.startswith("Data-Juicer") for s in sources) >= 9
    assert sum(s.startswith("CUDA") for s in sources) >= 5
    assert "基础知识点 > 归一化的作用" in sources
    assert sum(r["kind"] == "follow_up" for r in records) == 2
    for r in records:
        first = lines[r["lines"][0] - 1]  # the record's own heading line
        assert (
            first.startswith("#")
            and clean_heading(first.lstrip("#")) == r["source"].split(" > ")[-1]
        )
