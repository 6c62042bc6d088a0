"""repair_mojibake measured where the truth is known.

1. Held-out clean Chinese news text (never counted by the language model) plus English, corrupted
   exactly like the notes; we count how many damaged characters come back.
2. A hand-checked sample of the notes themselves (each truth line, corrupted, reproduces the raw
   line byte for byte), compared with the rough repair of the same lines (bundled as
   tests/mojibake_rough_repair_sample.json).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from llmlab.data import charlm
from llmlab.data.mojibake import DROPPED, corrupt, repair

# Hand-checked truth for lines of ml-interview-notes.raw.md (0-based line numbers).
NOTES_TRUTH = {
    3: "梯度消失（Vanishing Gradient）和梯度爆炸（Exploding Gradient）本质上都是在深层神经网络中反向传播过程中，梯度在多层传播时逐渐缩小或放大的问题，导致模型难以有效训练。",
    7: "在反向传播时，梯度是各层导数的连乘。如果激活函数（如sigmoid或tanh）的导数小于1，连续相乘后梯度迅速趋近0，导致前面层几乎不更新（学习停滞）。",
    9: "比如sigmoid在输入过大或过小时梯度接近0，进一步加剧梯度消失。",
    11: "初始化权重过小也会导致信号逐步缩小。",
    15: "如果激活函数的导数或权重大于1，连乘后梯度指数级增大，导致模型权重更新剧烈，甚至数值溢出。",
    17: "初始权重分布过大放大了信号。",
    20: "> 梯度消失和梯度爆炸都是因为反向传播过程中梯度在多层传播时不断连乘，如果连乘的导数小于1就导致梯度消失，大于1则导致梯度爆炸。典型原因包括激活函数饱和（比如sigmoid）、权重初始化不合理和网络过深。",
    25: "**“梯度消失和梯度爆炸是神经网络训练中常见的问题，主要出现在深层网络或RNN中。针对这两个问题，通常从以下几个方面入手进行处理：”**",
    45: "+ 使用残差连接（Residual Connection），如 ResNet，有效缓解梯度消失。",
    51: "> 面对梯度问题，可以从初始化、激活函数、归一化、结构设计等多方面综合考虑，确保网络训练稳定高效。",
    57: "残差连接是在神经网络中引入的一种跳跃式连接方式，其公式为：",
}


def damaged_positions(text: str) -> list[int]:
    return [i for i, c in enumerate(text) if any(b in DROPPED for b in c.encode())]


def recovered(truth: str, guess: str) -> float:
    positions = damaged_positions(truth)
    assert len(guess) == len(truth)
    return sum(guess[i] == truth[i] for i in positions) / len(positions)


def test_corruption_round_trip_is_exact_without_damage():
    # characters none of whose UTF-8 bytes was dropped (中 = E4 B8 AD would be: AD is)
    text = "Plain English and 我们的人 with no lost bytes: 一个"
    assert damaged_positions(text) == []
    assert repair(corrupt(text)) == text
    assert repair("already fine 中文") == "already fine 中文"  # not mojibake: untouched


def test_heldout_chinese_english_recovery_rate():
    clean = (
        charlm.heldout_text(4000) + "\nThe English parts pass through untouched, 100% of them.\n"
    )
    out = repair(corrupt(clean))
    rate = recovered(clean, out)
    print(f"held-out damaged characters: {len(damaged_positions(clean))}, recovered: {rate:.4f}")
    # Measured 0.973 here and 0.972 on the first 40k held-out characters (docs/data.md); the
    # issue's target of 0.99 is not reached.
    assert rate >= 0.96
    undamaged = [i for i in range(len(clean)) if i not in set(damaged_positions(clean))]
    assert all(out[i] == clean[i] for i in undamaged)
    # Counted over every character of the text (the looser reading of the 99 %): measured 0.994,
    # against 0.77 with no repair.
    assert sum(a == b for a, b in zip(out, clean)) / len(clean) >= 0.99


def test_beats_rough_repair_on_hand_checked_notes_sample():
    raw_text = (
        resources.files("llmlab.data")
        .joinpath("assets", "ml-interview-notes.raw.md")
        .read_text(encoding="utf-8")
    )
    raw = raw_text.split("\n")
    rough = open_rough()
    ours_total = rough_total = n = 0
    for line, truth in NOTES_TRUTH.items():
        assert corrupt(truth) == raw[line].rstrip()  # the truth really is what was corrupted
        positions = damaged_positions(truth)
        ours = repair(raw[line].rstrip())
        ours_total += sum(ours[i] == truth[i] for i in positions)
        rough_total += sum(rough[line][i] == truth[i] for i in positions)
        n += len(positions)
    print(
        f"notes sample: {n} damaged characters; ours {ours_total / n:.3f}, rough repair {rough_total / n:.3f}"
    )
    assert ours_total > rough_total
    assert ours_total / n >= 0.93  # measured 0.957 (rough repair: 0.612)


def open_rough() -> dict[int, str]:
    """The rough repair's version of the hand-checked lines, bundled beside this test."""
    sample = Path(__file__).with_name("mojibake_rough_repair_sample.json")
    return {int(k): v for k, v in json.loads(sample.read_text(encoding="utf-8"))["lines"].items()}


def test_brackets_pair_up_inside_one_group_of_damaged_characters():
    # 『, 城 and 』 are all damaged and within one n-gram of each other, so they are decided jointly:
    # the closer must see the opener chosen by the same hypothesis.
    text = "了打击票贩的『京城会战』。他们专门抽调警力"
    assert repair(corrupt(text)) == text


def test_char_ngram_model_is_a_normalized_kneser_ney_distribution():
    text = "深度学习需要数据\n机器学习需要模型\n深度模型需要训练\n学习率需要调整"
    lm = charlm.CharNgramModel(text, order=4)
    vocab = lm.uni_chars
    for history in ("深度学", "需要", "\n\n\n", "未见过"):
        h = np.array([[ord(c) for c in history]] * len(vocab))
        total = float(np.exp(lm.logp(h, vocab)).sum())
        # The unigram level keeps add-0.5 mass for 1000 unseen characters, each equally likely.
        unseen = float(np.exp(lm.logp(h[:1], np.array([ord("龘")])))[0])
        assert abs(total + 1000 * unseen - 1.0) < 1e-9, history
    # The longer context decides: after 深度学 the model is sure of 习, after 学 less so.
    p_long = lm.logp(np.array([[ord(c) for c in "深度学"]]), np.array([ord("习")]))[0]
    p_short = lm.logp(np.array([[ord("学")]]), np.array([ord("习")]))[0]
    assert p_long > p_short > np.log(0.3)
    assert lm.score("深度学习需要数据") > lm.score("数据需要学习深度")


def test_extra_corpus_teaches_the_model_the_names_of_its_domain(tmp_path):
    """More clean text of the domain is the lever (docs/data.md: the learning curve): two other lines
    naming the ambassador are enough to repair the name where the bundled news alone cannot."""
    from llmlab.data.ops.base import build_op

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "names.txt").write_text(
        "赵宝珍大使会见了代表团。\n大使赵宝珍说，两国关系发展顺利。\n", encoding="utf-8"
    )
    (folder / "ignored.bin").write_bytes(b"\xff\xfe not text")  # only .txt/.md files are read
    sentence = "中国驻马大使赵宝珍和马来西亚卫生部长"
    assert repair(corrupt(sentence)) != sentence  # 赵宏班: the name is not in the bundled text
    op = build_op("repair_mojibake", {"extra_corpus": str(folder)})
    assert op.map(corrupt(sentence)) == sentence


def test_extra_corpus_errors_are_one_line(tmp_path):
    from llmlab.data.ops.base import RecipeError, build_op

    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "empty").mkdir()
    for path, message in [
        (tmp_path / "missing.txt", "does not exist"),
        (tmp_path / "latin1.txt", "is not UTF-8 text"),
        (tmp_path / "empty", "has no .txt or .md files"),
    ]:
        with pytest.raises(RecipeError, match=message):
            build_op("repair_mojibake", {"extra_corpus": [str(path)]})


def test_mojibake_runs_are_repaired_beside_text_that_does_not_map_back():
    """A line mixing real Chinese (outside both code pages) with mojibake: the mojibake run is
    repaired, the rest kept. The heading (6 of its 8 characters lost a byte) comes back alone too."""
    heading = "权重初始化不合理"
    assert repair(f"+ **{corrupt(heading)}**  ") == f"+ **{heading}**  "
    line = f"已经修好的标题：{corrupt(heading)}，café 与 naïve 照旧"
    assert repair(line) == f"已经修好的标题：{heading}，café 与 naïve 照旧"
    assert repair("café naïve") == "café naïve"  # Latin-1 text: no lead byte with a continuation


# --- the language model picks among the n-gram's proposals (data/lm_repair.py) ---------------


class CharTokenizer:
    """One token per character of a fixed alphabet (id 0 = BOS) — enough to drive a tiny Gemma 3."""

    bos_token_id = 0

    def __init__(self, alphabet: str):
        self.ids = {c: i + 1 for i, c in enumerate(sorted(set(alphabet)))}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.ids[c] for c in text]


def tiny_gemma(vocab: int, seed: int = 0):
    import torch

    from llmlab.models.gemma3 import Gemma3Config, Gemma3ForCausalLM

    torch.manual_seed(seed)
    config = Gemma3Config(
        vocab_size=vocab, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=24, query_pre_attn_scalar=24,
        sliding_window=16, max_position_embeddings=256,
    )  # fmt: skip
    return Gemma3ForCausalLM(config)


def test_lm_scorer_with_shared_prefix_cache_equals_a_full_forward():
    import torch

    from llmlab.data.lm_repair import GemmaScorer

    texts = ["梯度在多层传播时不断连乘", "梯度在多层传播时中断连乘", "梯度在多层传播时与断连乘乘"]
    tokenizer = CharTokenizer("".join(texts))
    model = tiny_gemma(len(tokenizer.ids) + 1)
    scores = GemmaScorer(model, tokenizer).score(texts)
    shared = 1 + len("梯度在多层传播时")  # BOS + the common characters: run once, not scored
    with torch.no_grad():
        for text, got in zip(texts, scores):
            ids = torch.tensor([[0, *tokenizer.encode(text)]])
            logp = torch.log_softmax(model(ids), -1)[0]
            want = sum(float(logp[j - 1, ids[0, j]]) for j in range(shared, ids.shape[1]))
            assert abs(got - want) < 1e-4, (text, got, want)
    assert len(set(np.round(scores, 3))) == 3  # the texts really score differently


def test_language_model_overrules_the_ngram_on_a_crafted_case():
    """The n-gram model (bundled news) repairs the ambassador's name as 赵宏班; a tiny Gemma 3 that
    has read the sentence picks 赵宝珍 from the n-gram's own top candidates."""
    import torch

    from llmlab.data.lm_repair import GemmaScorer, repair_with_lm
    from llmlab.data.mojibake import expand

    sentence = "中国驻马大使赵宝珍和马来西亚卫生部长"
    broken = corrupt(sentence)
    assert repair(broken) != sentence
    _, damaged = expand(broken)
    tokenizer = CharTokenizer(sentence + "".join("".join(o) for o in damaged.values()))
    model = tiny_gemma(len(tokenizer.ids) + 1, seed=1)
    ids = torch.tensor([[0, *tokenizer.encode(sentence)]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # memorize the one sentence
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1])[0], ids[0, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    scorer = GemmaScorer(model, tokenizer)
    assert repair_with_lm(broken, scorer, margin=float("inf")) == sentence
    # With a margin of 0 no character is unsure enough: the n-gram's answer stands.
    assert repair_with_lm(broken, scorer, margin=0.0) == repair(broken)


def test_missing_language_model_falls_back_to_the_ngram_with_a_warning():
    from llmlab.data.ops.base import build_op

    op = build_op("repair_mojibake", {"lm": "no-such-model"})
    text = corrupt("梯度消失和梯度爆炸")
    with pytest.warns(UserWarning, match="falling back to the character n-gram repair"):
        assert op.map(text) == repair(text)


@pytest.mark.slow
def test_gemma3_repairs_the_terms_the_ngram_gets_wrong():
    """The packaged Gemma 3 270M (llmlab's own forward) fixes what the n-gram gets wrong in the
    notes: 后/不 (n-gram: 坐/与), 均值 (升值), "mini-batch 中特征" (不特征), 内部协变量偏移 (协存量后移),
    all in one pass; and what the first version of the LM repair still got wrong: 连乘后 in line 16
    (joint round: 连 and 后 change together) and 反向传播 in line 4 (the beam's choice is offered).
    Fragments of hand-checked notes lines, corrupted as the raw file is (see the round trip above)."""
    from llmlab.data.lm_repair import repair_with_lm, scorer_or_none

    scorer = scorer_or_none("gemma3-270m")
    assert scorer is not None, "gemma3-270m is not installed (pip install its five wheels)"
    cases = [
        ("连续相乘后梯度迅速趋近0，导致前面层几乎不更新", 1, ("连续相乘坐", "几乎与更新")),
        ("→ 结果：让激活值分布均值为 0，方差为 1。", 1, ("分布升值",)),
        (".svg) 是 mini-batch 中特征的均值和方差。", 1, ("mini-batch 不特征",)),
        ("+ **降低内部协变量偏移（Internal Covariate Shift）**", 1, ("协存量后移",)),
        (NOTES_TRUTH[15], 1, ("连乘坐",)),  # line 16 of the notes
    ]
    for truth, passes, ngram_wrong in cases:
        ngram = repair(corrupt(truth))
        assert all(w in ngram for w in ngram_wrong), ngram  # the n-gram alone gets these wrong
        assert repair_with_lm(corrupt(truth), scorer, passes=passes) == truth
    # The n-gram gets 反 right here, but one character at a time it ranked it 7th: Gemma chose 后.
    truth = "本质上都是在深层神经网络中反向传播过程中"
    assert repair_with_lm(corrupt(truth), scorer) == truth
