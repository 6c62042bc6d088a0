"""Sampling defaults (issue 21.2): a request that leaves temperature/top_p/top_k/min_p/
repetition_penalty unset gets the model's own generation settings (an HF folder's
generation_config.json, a GGUF's general.sampling.* metadata) or the documented fallback; the
server logs them at start-up; and the serving docs' `openai` example, sent as written to a live
server on SmolLM2, answers with an English sentence about the question."""

import json
import logging
import re
from pathlib import Path

import openai
import pytest
from serve_helpers import MODEL, LiveServer, start

from llmlab.generation import GenerationConfig, generate
from llmlab.serve.defaults import FALLBACK, SamplingDefaults, sampling_defaults

DOCS = Path(__file__).resolve().parents[1] / "docs" / "serving.md"


def test_fallback_is_the_documented_one():
    assert (FALLBACK.temperature, FALLBACK.top_p, FALLBACK.top_k) == (0.7, 0.9, 0)
    assert "**temperature 0.7, top_p 0.9**" in DOCS.read_text()


def test_generation_config_json_of_an_hf_folder(tmp_path, caplog):
    (tmp_path / "config.json").write_text("{}")
    generation = {"temperature": 0.3, "top_k": 20, "top_p": 7.5, "do_sample": True}
    (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    with caplog.at_level(logging.WARNING, logger="llmlab.serve"):
        defaults = sampling_defaults(str(tmp_path))
    assert (defaults.temperature, defaults.top_k) == (0.3, 20)
    assert defaults.top_p == FALLBACK.top_p  # 7.5 is out of range: logged, not used
    assert "top_p=7.5" in caplog.text
    assert defaults.sources["temperature"].endswith("generation_config.json")
    assert "temperature 0.3 (" in defaults.describe() and "top_p 0.9 (fallback)" in (
        defaults.describe()
    )


def test_gguf_sampling_metadata(tmp_path):
    gguf = pytest.importorskip("gguf", reason="the gguf package is a main dependency")
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_float32("general.sampling.temp", 0.4)
    writer.add_float32("general.sampling.top_p", 0.8)
    writer.add_int32("general.sampling.top_k", 40)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    defaults = sampling_defaults(str(path))
    assert (round(defaults.temperature, 6), round(defaults.top_p, 6), defaults.top_k) == (
        0.4,
        0.8,
        40,
    )
    assert defaults.min_p == FALLBACK.min_p and "min_p" not in defaults.sources


def test_packaged_smollm2_sets_none_so_the_fallback_applies():
    # Its GGUF carries no general.sampling.* keys (upstream's generation_config.json has none).
    defaults = sampling_defaults("smollm2-135m-instruct")
    assert defaults == FALLBACK and defaults.sources == {}


def test_unset_fields_take_the_server_defaults_and_are_logged(caplog):
    greedy = SamplingDefaults(temperature=0.0)
    with caplog.at_level(logging.INFO, logger="llmlab.serve"):
        async_engine, server, model, tokenizer = start(sampling_defaults=greedy)
    assert "sampling defaults for unset request fields: temperature 0 (fallback)" in caplog.text
    prompt = "Residual connections"
    expected = generate(model, tokenizer, prompt, GenerationConfig(max_tokens=12)).text
    with server as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        unset = [
            client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, seed=s)
            .choices[0]
            .text
            for s in range(3)
        ]
        assert unset == [expected] * 3  # temperature 0 from the defaults: greedy whatever the seed
        hot = [
            client.completions.create(
                model=MODEL, prompt=prompt, max_tokens=12, seed=s, temperature=2.0
            )
            .choices[0]
            .text
            for s in range(3)
        ]
        assert any(text != expected for text in hot)  # a request's own value still wins


def _docs_example() -> dict:
    """The chat.completions.create(...) keyword arguments of docs/serving.md's openai example."""
    text = DOCS.read_text()
    call = re.search(r"c\.chat\.completions\.create\((.*?)\)\.choices", text, re.S)
    assert call, "docs/serving.md lost its openai example"
    return eval(f"dict({call.group(1)})")  # the docs' own literal, nothing else


@pytest.mark.slow
def test_docs_openai_example_answers_in_english_on_smollm2():
    import llmlab
    from llmlab.engine import LLMEngine
    from llmlab.engine.async_engine import AsyncEngine
    from llmlab.serve.app import create_app

    kwargs = _docs_example()
    assert "temperature" not in kwargs and "top_p" not in kwargs  # the defaults are under test
    question = kwargs["messages"][-1]["content"]
    keywords = [w for w in re.findall(r"[a-z]+", question.lower()) if len(w) > 4]
    name = "smollm2-135m-instruct"
    model, tokenizer = llmlab.load(name)
    engine = AsyncEngine(LLMEngine(model, tokenizer, kv_memory="64MiB", max_num_seqs=4))
    app = create_app(engine, tokenizer, name, sampling_defaults=sampling_defaults(name))
    with LiveServer(app) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)
        reply = c.chat.completions.create(**kwargs, n=3)  # three samples, one batch
        answers = [choice.message.content for choice in reply.choices]
    for answer in answers:  # sampled (no seed, as in the docs): every one must read as English
        words = answer.split()
        assert len(words) >= 8, answer
        assert sum(ch.isascii() for ch in answer) / len(answer) >= 0.98, answer
        wordlike = [w for w in words if re.fullmatch(r"[\"'(]*[A-Za-z][a-z'-]*[.,:;!?\")]*", w)]
        assert len(wordlike) / len(words) >= 0.8, answer
        assert any(k in answer.lower() for k in keywords), (keywords, answer)
