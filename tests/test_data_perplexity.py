"""perplexity_filter on a tiny random Llama saved as a Hugging Face folder and loaded by llmlab.load;
the perplexity is checked against transformers' own loss on the same weights."""

from __future__ import annotations

import math

import torch

from llmlab.data.ops import build_op
from llmlab.data.ops.base import TraceHook


def tiny_llama_folder(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {
        "<unk>": 0,
        "<s>": 1,
        "</s>": 2,
        **{w: i + 3 for i, w in enumerate("the cat sat on a mat dog ran far away".split())},
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return model, fast


def test_perplexity_matches_transformers_and_filters(tmp_path):
    reference, tokenizer = tiny_llama_folder(tmp_path)
    texts = ["the cat sat on a mat", "dog ran far away the cat"]
    op = build_op("perplexity_filter", {"model": str(tmp_path), "max": None})
    for text in texts:
        ids = torch.tensor(
            [[tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]]
        )
        with torch.no_grad():
            loss = reference(ids, labels=ids).loss.item()
        assert abs(op.statistic(text) - math.exp(loss)) / math.exp(loss) < 1e-3
    scores = [op.statistic(t) for t in texts]
    cut = build_op("perplexity_filter", {"model": str(tmp_path), "max": min(scores) + 1e-6})
    kept = cut.process([{"text": t} for t in texts], TraceHook())
    assert [r["text"] for r in kept] == [texts[scores.index(min(scores))]]


def test_perplexity_filter_scores_one_field_of_model_written_records_only(tmp_path):
    """`field` + `origin`: only self-instruct pairs are scored (on their question), seeds pass
    unscored, and each score is kept on its record."""
    tiny_llama_folder(tmp_path)
    records = [
        {"origin": "seed", "instruction": "dog dog dog", "text": "x"},
        {"origin": "self_instruct:paraphrase", "instruction": "the cat sat on a mat", "text": "x"},
        {"origin": "self_instruct:paraphrase", "instruction": "away far ran dog", "text": "x"},
    ]
    probe = build_op("perplexity_filter", {"model": str(tmp_path), "max": None})
    scores = [probe.statistic(r["instruction"]) for r in records[1:]]
    cut = build_op(
        "perplexity_filter",
        {"model": str(tmp_path), "field": "instruction", "origin": "self_instruct",
         "max": min(scores) + 1e-6},
    )  # fmt: skip
    kept = cut.process([dict(r) for r in records], TraceHook())
    best = records[1 + scores.index(min(scores))]["instruction"]
    assert [r["instruction"] for r in kept] == ["dog dog dog", best]
    assert "perplexity" not in kept[0] and abs(kept[1]["perplexity"] - min(scores)) < 1e-2
