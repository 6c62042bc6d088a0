"""`llmlab eval assistant` (issue 19): each metric on hand-made strings with values worked out by
hand, the pairwise judge's blindness, and the command's JSON report on a tiny random Gemma 3 with a
tiny LoRA adapter and a BM25 index of a small notes file.

    pytest tests/test_assistant_eval.py -q
"""

from __future__ import annotations

import json
import random

import pytest

from llmlab.posttrain import assistant_metrics as m

DROPOUT = "Dropout 在训练时随机丢弃神经元，防止模型过拟合。"
RESIDUAL = "残差连接让梯度直接传到浅层。"  # content words: 残差 连接 梯度 直接 传到 浅层


def test_content_words_drop_stop_words_single_characters_numbers_and_punctuation():
    # 在, 时, 过 are single characters; ，。 punctuation
    assert m.content_words(DROPOUT) == [
        "dropout",
        "训练",
        "随机",
        "丢弃",
        "神经元",
        "防止",
        "模型",
        "拟合",
    ]
    assert m.content_words("1. 这 the 可以 什么 10") == []  # numbers and stop words only


def test_key_point_recall_by_hand():
    assert m.key_points(RESIDUAL) == ["残差", "连接", "梯度", "直接", "传到", "浅层"]
    # the answer holds 残差, 连接, 梯度 of the six
    assert m.key_point_recall("残差连接可以缓解梯度消失。", RESIDUAL) == pytest.approx(3 / 6)
    # words of the question are not key points: 残差, 连接 leave; 梯度 of 梯度 直接 传到 浅层
    question = "什么是残差连接？"
    assert m.key_points(RESIDUAL, question) == ["梯度", "直接", "传到", "浅层"]
    assert m.key_point_recall("残差连接可以缓解梯度消失。", RESIDUAL, question) == 0.25
    assert m.key_point_recall("残差连接", RESIDUAL, question) == 0.0  # repeating the question
    # Latin key points match whole words only: "batch" is not found inside "BatchNorm"
    assert m.key_points("LayerNorm 不依赖 batch。") == ["layernorm", "依赖", "batch"]
    assert m.key_point_recall("BatchNorm 依赖 LAYERNORM", "LayerNorm 不依赖 batch。") == 2 / 3


def test_faithfulness_by_hand():
    passage = "Dropout 在训练时随机丢弃神经元。它能防止过拟合。"
    answer = "Dropout 随机丢弃神经元。Dropout 可以加快推理速度。好的。"
    # sentence 1: dropout 随机 丢弃 神经元, all in the passage → supported;
    # sentence 2: dropout 加快 推理 速度, 1 of 4 = 0.25 → not; 好的 has no content word → not counted
    assert m.sentences(answer) == ["Dropout 随机丢弃神经元", "Dropout 可以加快推理速度", "好的"]
    assert m.sentence_support("Dropout 可以加快推理速度", passage) == 0.25
    assert m.faithfulness(answer, passage) == 0.5
    assert m.faithfulness(answer, passage, threshold=0.25) == 1.0
    assert m.faithfulness("", passage) == 0.0
    # with the question "什么是 dropout": sentence 2 keeps 加快 推理 速度, 0 of 3 → still not supported
    assert m.sentence_support("Dropout 可以加快推理速度", passage, "什么是 dropout") == 0.0
    assert m.faithfulness("Dropout", passage, question="什么是 dropout") == 0.0  # only the question
    # Markdown list marks and emphasis are not words; English sentences end at ". "
    assert m.sentences("1. **LSTM** 有三个门\n- GRU 有两个。Yes. It is.") == [
        "LSTM 有三个门",
        "GRU 有两个",
        "Yes.",
        "It is.",
    ]


def test_answer_language():
    assert m.answers_in_language("什么是 dropout？", "Dropout 随机丢弃神经元。")
    assert not m.answers_in_language("什么是 dropout？", "Dropout drops units at random.")
    assert not m.answers_in_language("What is dropout?", "随机丢弃神经元。")
    assert m.answers_in_language("Transformer", "A model built on attention.")  # a bare term
    assert m.answers_in_language("Transformer", "基于注意力的模型。")
    assert not m.answers_in_language("什么是 dropout？", "")


def test_overlap_f1_by_hand():
    # answer words 残差 连接 缓解 梯度 消失 (5), reference 6, common 3: P = 3/5, R = 3/6
    assert m.overlap_f1("残差连接缓解梯度消失。", RESIDUAL) == pytest.approx(
        2 * 0.6 * 0.5 / (0.6 + 0.5)
    )
    assert m.overlap_f1("天气很好。", RESIDUAL) == 0.0


GOOD, BAD = "残差连接让梯度直接到达浅层。", "残差网络很深。"


def test_the_pairwise_judge_is_blind_to_order_and_names():
    assert m.judge_pair(RESIDUAL, GOOD, BAD) == "first"
    assert m.judge_pair(RESIDUAL, BAD, GOOD) == "second"  # swapped order → same answer wins
    assert m.judge_pair(RESIDUAL, GOOD, GOOD) == "tie"
    for seed in range(20):
        assert m.blind_compare(RESIDUAL, GOOD, BAD, random.Random(seed)) == "a"
        assert m.blind_compare(RESIDUAL, BAD, GOOD, random.Random(seed)) == "b"
        assert m.blind_compare(RESIDUAL, BAD, BAD, random.Random(seed)) == "tie"


def test_blind_compare_shows_both_orders(monkeypatch):
    shown = []
    real = m.judge_pair

    def spy(reference, first, second, question=""):
        shown.append(first)
        return real(reference, first, second, question)

    monkeypatch.setattr(m, "judge_pair", spy)
    verdicts = [m.blind_compare(RESIDUAL, GOOD, BAD, random.Random(s)) for s in range(20)]
    assert verdicts == ["a"] * 20
    assert GOOD in shown and BAD in shown  # the order really is random


# --- the command, on a tiny random Gemma 3 ------------------------------------------------------

NOTES = """# 基础知识点

## 残差连接的作用

残差连接让梯度直接传到浅层，缓解梯度消失。

## dropout的作用是什么

Dropout 在训练时随机丢弃神经元，防止模型过拟合。
"""


def _tiny_gemma_folder(folder):
    """A random tiny Gemma 3 saved as an HF folder with a byte-level tokenizer that has Gemma's
    turn tokens (ids 0–4: pad, eos, bos, start/end of turn, as tiny_hf_gemma's config expects)."""
    import transformers
    from test_gemma3 import tiny_hf_gemma
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from llmlab.formats.hf import save_hf_folder
    from llmlab.models.gemma3 import model_from_hf
    from llmlab.tokenize.tokenizer import QA_FRAME_TEMPLATE

    specials = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([NOTES] * 4, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    tokenizer.chat_template = QA_FRAME_TEMPLATE
    hf = tiny_hf_gemma(vocab_size=tok.get_vocab_size(), max_position_embeddings=4096)
    ours = model_from_hf(hf.config.to_dict(), dict(hf.state_dict())).eval()
    save_hf_folder(ours, folder, tokenizer=tokenizer)
    return ours


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    import torch

    from llmlab.adapters import save_adapter
    from llmlab.nn.lora import add_lora
    from llmlab.rag import Index
    from llmlab.tokenize.tokenizer import GEMMA_TEMPLATE

    root = tmp_path_factory.mktemp("assistant")
    model = _tiny_gemma_folder(root / "model")
    add_lora(model, r=2, alpha=4)
    with torch.no_grad():  # B starts at 0; a random B makes the "SFT" model differ from the base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    # saved with Gemma's chat template, as an SFT run with model.chat_format: gemma does
    save_adapter(
        model,
        root / "adapter",
        base_model_name_or_path=str(root / "model"),
        chat_template=GEMMA_TEMPLATE,
    )
    Index.from_markdown(NOTES, source="notes.md", embedder=None).save(root / "index")
    pairs = [
        (
            "残差连接有什么用？",
            "残差连接让梯度直接传到浅层。",
            "test",
            "基础知识点 > 残差连接的作用",
        ),
        (
            "Dropout 为什么能防止过拟合？",
            "随机丢弃神经元，防止过拟合。",
            "test",
            "基础知识点 > dropout",
        ),
        ("什么是梯度？", "梯度是导数。", "train", "基础知识点 > 梯度"),
    ]
    data = root / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"instruction": q, "response": a, "split": s, "section": sec, "passage": a},
                ensure_ascii=False,
            )
            + "\n"
            for q, a, s, sec in pairs
        ),
        encoding="utf-8",
    )
    return root


def _run(capsys, *argv):
    from llmlab.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_reports_base_and_sft_with_and_without_passages(tiny_setup, capsys, one_thread):
    root = tiny_setup
    out_file = root / "report.json"
    code, out, err = _run(
        capsys, "eval", "assistant", "--model", str(root / "model"),
        "--adapter", str(root / "adapter"), "--data", str(root / "pairs.jsonl"),
        "--index", str(root / "index"), "--k", "1", "--max-tokens", "4", "--json",
        "--out", str(out_file),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report == json.loads(out_file.read_text(encoding="utf-8"))
    assert report["questions"] == 2 and report["split"] == "test"
    assert report["conditions"] == ["no-rag", "rag"]
    assert set(report["summary"]) == {"base", "sft"}
    for by_condition in report["summary"].values():
        assert set(by_condition) == {"no-rag", "rag"}
        for scores in by_condition.values():
            assert set(scores) == {"key_point_recall", "faithfulness", "language"}
            assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert [(p["a"], p["b"]) for p in report["pairwise"]] == [
        ("sft/no-rag", "base/no-rag"),
        ("sft/rag", "base/rag"),
    ]
    for p in report["pairwise"]:
        assert p["a_wins"] + p["b_wins"] + p["ties"] == 2
    first = report["items"][0]
    assert first["question"] == "残差连接有什么用？"
    assert first["retrieved"] == ["基础知识点 > 残差连接的作用"]  # BM25's top passage, k = 1
    assert set(first["answers"]) == {"base/no-rag", "base/rag", "sft/no-rag", "sft/rag"}
    # the summary is the mean of the items' scores
    mean = sum(i["answers"]["sft/rag"]["faithfulness"] for i in report["items"]) / 2
    assert report["summary"]["sft"]["rag"]["faithfulness"] == pytest.approx(mean, abs=1e-4)
    # the adapter changes the answers (its B is random), so the SFT rows are its own
    assert [i["answers"]["sft/no-rag"]["text"] for i in report["items"]] != [
        i["answers"]["base/no-rag"]["text"] for i in report["items"]
    ]
    assert report["reused_base_answers"] == 0

    # --reuse: the base answers come from the report (same settings), the SFT model is asked again
    code, out, err = _run(
        capsys, "eval", "assistant", "--model", str(root / "model"),
        "--adapter", str(root / "adapter"), "--data", str(root / "pairs.jsonl"),
        "--index", str(root / "index"), "--k", "1", "--max-tokens", "4", "--json",
        "--reuse", str(out_file),
    )  # fmt: skip
    assert code == 0, err
    again = json.loads(out)
    assert again["reused_base_answers"] == 4 and err.count("loading") == 1  # only the SFT model
    assert again["items"] == report["items"] and again["summary"] == report["summary"]
    # other settings: nothing is reused
    code, out, err = _run(
        capsys, "eval", "assistant", "--model", str(root / "model"), "--no-rag",
        "--data", str(root / "pairs.jsonl"), "--max-tokens", "3", "--json", "--reuse", str(out_file),
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["reused_base_answers"] == 0


def test_cli_base_only_without_passages_needs_no_index(tiny_setup, capsys, one_thread):
    root = tiny_setup
    code, out, err = _run(
        capsys, "eval", "assistant", "--model", str(root / "model"), "--no-rag",
        "--data", str(root / "pairs.jsonl"), "--split", "train", "--max-tokens", "3",
        "--examples", "5",
    )  # fmt: skip
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| base")]
    assert (
        out.startswith("1 questions") and len(rows) == 1 and rows[0].startswith("| base | no-rag |")
    )
    assert "pairwise" not in out  # one system in one condition: nothing to compare
    table = out[out.index("| question |") :].strip().splitlines()
    assert table[0] == "| question | context | reference | base |"
    assert len(table) == 3 and table[2].startswith("| 什么是梯度？ | no-rag | 梯度是导数。 | ")


def test_cli_bad_input_is_one_line_error(tiny_setup, capsys, tmp_path):
    root = tiny_setup
    code, _, err = _run(capsys, "eval", "assistant", "--data", str(tmp_path / "none.jsonl"))
    assert code != 0 and err.strip().startswith("error: ") and "recipes/notes-instruct.yaml" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = _run(
        capsys, "eval", "assistant", "--data", str(root / "pairs.jsonl"), "--split", "dev"
    )
    assert code != 0 and "no pairs in split 'dev'" in err
    code, _, err = _run(
        capsys, "eval", "assistant", "--data", str(root / "pairs.jsonl"), "--split", "dev,tset"
    )
    assert code != 0 and "--split 'dev,tset'" in err
    code, _, err = _run(
        capsys, "eval", "assistant", "--data", str(root / "pairs.jsonl"), "--no-rag",
        "--adapter", "bundled:no-such-adapter",
    )  # fmt: skip
    assert code != 0 and "not a LoRA adapter folder" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "q"}\n', encoding="utf-8")
    code, _, err = _run(capsys, "eval", "assistant", "--data", str(bad))
    assert code != 0 and "bad.jsonl:1" in err


def test_splits_are_read_by_name_several_or_all(tiny_setup):
    from llmlab.posttrain.assistant_eval import load_items

    data = tiny_setup / "pairs.jsonl"
    assert [i.question for i in load_items(data, "train")] == ["什么是梯度？"]
    assert len(load_items(data, "test")) == 2
    assert len(load_items(data, "dev,test")) == 2 and len(load_items(data, "train, test")) == 3
    assert len(load_items(data, "all")) == 3
    first = load_items(data, "test")[0]
    assert (first.reference, first.section) == (
        "残差连接让梯度直接传到浅层。",
        "基础知识点 > 残差连接的作用",
    )


def test_rag_ask_runs_the_assistant_with_its_adapter(tiny_setup, capsys, one_thread):
    """`make demo`'s command shape: rag ask with a Gemma base + an adapter carrying Gemma's
    template, on an index; the answer comes with the numbered passages it was given."""
    root = tiny_setup
    code, out, err = _run(
        capsys, "rag", "ask", "残差连接有什么用？", "--model", str(root / "model"),
        "--adapter", str(root / "adapter"), "--index", str(root / "index"), "--mode", "bm25",
        "--k", "2", "--max-tokens", "4", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert isinstance(result["answer"], str)
    assert [c["n"] for c in result["citations"]] == [1, 2]
    assert result["citations"][0]["heading"] == "基础知识点 > 残差连接的作用"
