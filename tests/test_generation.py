"""Reference generation: logits processors equal transformers', greedy decoding equals HF generate,
seeded sampling is reproducible, stop strings and streaming detokenization behave."""

import pytest
import torch
import transformers
from tiny import tiny_llama_config, tiny_tokenizer
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llmlab.errors import ContextLengthError, LlmlabError
from llmlab.generation import Detokenizer, GenerationConfig, generate, stream
from llmlab.models.llama import model_from_hf
from llmlab.sampling import apply_repetition_penalty, top_k_filter, top_p_filter


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(tiny_llama_config(max_position_embeddings=64)).eval()
    return (
        reference,
        model_from_hf(reference.config.to_dict(), reference.state_dict()),
        tiny_tokenizer(),
    )


def test_processors_match_transformers():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 100, generator=g) * 3
    previous = torch.tensor([[3, 7, 7, 50]])
    assert torch.equal(top_k_filter(logits, 10), TopKLogitsWarper(10)(previous, logits.clone()))
    for p in (0.3, 0.9):
        ours, theirs = top_p_filter(logits, p), TopPLogitsWarper(p)(previous, logits.clone())
        assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.allclose(
        apply_repetition_penalty(logits, previous, 1.3),
        RepetitionPenaltyLogitsProcessor(1.3)(previous, logits.clone()),
    )


def test_greedy_matches_hf_generate(models):
    reference, ours, tokenizer = models
    for prompt in ([5, 9, 100, 3], [42] * 7, list(range(10, 30))):
        expected = reference.generate(
            torch.tensor([prompt]),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(prompt) :].tolist()
        tokens = list(_token_ids(ours, prompt, GenerationConfig(max_tokens=20)))
        assert tokens == expected


def _token_ids(model, prompt, config):
    from llmlab.generation import generate_token_ids

    return generate_token_ids(model, prompt, config, stop_ids=set())


def test_generate_result_and_repetition_penalty_match_hf(models):
    reference, ours, tokenizer = models
    prompt = tokenizer.encode("The quick brown fox")
    expected = reference.generate(
        torch.tensor([prompt]),
        max_new_tokens=12,
        do_sample=False,
        repetition_penalty=1.5,
        eos_token_id=None,
        pad_token_id=0,
    )[0, len(prompt) :]
    config = GenerationConfig(max_tokens=12, repetition_penalty=1.5)
    assert list(_token_ids(ours, prompt, config)) == expected.tolist()
    result = generate(ours, tokenizer, "The quick brown fox", config)
    assert result.prompt_tokens == len(prompt)
    stop_id = tokenizer.eos_token_id
    cut = expected.tolist().index(stop_id) if stop_id in expected.tolist() else len(expected)
    assert result.token_ids == expected.tolist()[:cut]
    assert result.text == tokenizer.decode(result.token_ids, skip_special_tokens=True)
    assert result.finish_reason == ("stop" if cut < len(expected) else "length")


def test_seeded_sampling_is_reproducible_and_varies_with_seed(models):
    _, ours, tokenizer = models
    runs = [
        generate(
            ours,
            tokenizer,
            "Dropout",
            GenerationConfig(max_tokens=16, temperature=1.5, top_k=50, top_p=0.95, seed=s),
        ).token_ids
        for s in (1, 1, 2, 3)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2] or runs[0] != runs[3]


def test_top_k_one_equals_greedy(models):
    _, ours, tokenizer = models
    greedy = generate(ours, tokenizer, "Attention", GenerationConfig(max_tokens=10)).token_ids
    sampled = generate(
        ours,
        tokenizer,
        "Attention",
        GenerationConfig(max_tokens=10, temperature=1.0, top_k=1, seed=5),
    )
    assert sampled.token_ids == greedy


def test_stop_string_cuts_text_and_stream_never_takes_back(models):
    _, ours, tokenizer = models
    full = generate(ours, tokenizer, "Residual", GenerationConfig(max_tokens=30))
    assert len(full.text) > 6, "the tiny model should produce some text"
    stop = full.text[3:6]
    result: dict = {}
    pieces = list(
        stream(
            ours,
            tokenizer,
            tokenizer.encode("Residual"),
            GenerationConfig(max_tokens=30, stop=[stop]),
            result,
        )
    )
    assert "".join(pieces) == result["text"] == full.text[: full.text.find(stop)]
    assert result["finish_reason"] == "stop"


def test_detokenizer_holds_back_partial_characters():
    tokenizer = tiny_tokenizer()
    text = "梯度消失 gradients"
    detok = Detokenizer(tokenizer, stop=[])
    pieces = [detok.add(t) for t in tokenizer.encode(text)] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_bad_inputs(models):
    _, ours, tokenizer = models
    with pytest.raises(ContextLengthError, match="context is 64"):
        generate(ours, tokenizer, list(range(1, 70)), GenerationConfig(max_tokens=5))
    with pytest.raises(LlmlabError, match="prompt is empty"):
        generate(ours, tokenizer, [], GenerationConfig())
    for bad in (dict(max_tokens=0), dict(temperature=-1), dict(top_p=0), dict(top_k=-2)):
        with pytest.raises(LlmlabError):
            GenerationConfig(**bad)


def test_generation_stops_at_context_end(models):
    _, ours, tokenizer = models
    result = generate(ours, tokenizer, list(range(1, 60)), GenerationConfig(max_tokens=50))
    assert len(result.token_ids) <= 64 - 59
