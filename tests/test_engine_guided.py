"""Constrained decoding in the engine (tiny random model, byte-level BPE tokenizer): JSON Schema
outputs validate with `jsonschema` over 20 seeds at temperature 1 (nested objects, arrays with
minItems/maxItems, enums, number bounds, patterns, optional fields, additionalProperties false,
`required` enforced); regex, choice and Lark grammar outputs match; constrained and free requests
in one batch equal each run alone; n > 1, prefix caching, preemption, stop strings and max_tokens
("length") behave; invalid constraints are one-line errors naming the problem."""

import json
import re

import jsonschema
import pytest
from engine_helpers import random_prompts, tiny_model, tiny_tokenizer

from llmlab.engine import LLM, SamplingParams
from llmlab.errors import LlmlabError

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Z][a-z]{1,8}$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "score": {"type": "number", "minimum": -1.5, "maximum": 2.5},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {
            "type": "array",
            "items": {"type": "string", "maxLength": 6},
            "minItems": 1,
            "maxItems": 3,
        },
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 10},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "nickname": {"type": "string", "maxLength": 8},  # optional
    },
    "required": ["name", "age", "score", "color", "tags", "address"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm():
    return LLM(tiny_model(), tiny_tokenizer(), num_kv_blocks=256)


def test_json_schema_outputs_validate_over_20_seeds(llm):
    prompts = random_prompts([5] * 20)
    params = [
        SamplingParams(max_tokens=300, temperature=1.0, seed=s, json_schema=SCHEMA)
        for s in range(20)
    ]
    outputs = llm.generate(prompts, params)
    seen_optional = 0
    for out in outputs:
        completion = out.outputs[0]
        assert completion.finish_reason == "stop", completion.text
        value = json.loads(completion.text)
        jsonschema.validate(value, SCHEMA)
        seen_optional += "nickname" in value
    # 20 different outputs, and the optional field is neither always nor never written.
    assert len({o.text for o in outputs}) == 20
    assert 0 < seen_optional < 20
    assert llm.engine.guide.mask_rows > 0


def test_required_is_not_narrowed_away(llm):
    schema = {
        "type": "object",
        "properties": {f"k{i}": {"type": "boolean"} for i in range(4)},
        "required": ["k1", "k3"],
        "additionalProperties": False,
    }
    outputs = llm.generate(
        random_prompts([4] * 8, seed=3),
        [
            SamplingParams(max_tokens=120, temperature=1.0, seed=s, json_schema=schema)
            for s in range(8)
        ],
    )
    for out in outputs:
        assert out.outputs[0].finish_reason == "stop", out.text
        value = json.loads(out.text)
        assert {"k1", "k3"} <= set(value), out.text
        jsonschema.validate(value, schema)


def test_any_json_object(llm):
    out = llm.generate(
        random_prompts([6], seed=9),
        SamplingParams(max_tokens=200, temperature=1.0, seed=0, json_schema=True),
    )[0]
    if out.outputs[0].finish_reason == "stop":
        assert isinstance(json.loads(out.text), dict)
    else:  # cut by max_tokens: still the start of an object
        assert out.text.startswith("{")


def test_regex_choice_and_grammar_outputs_match(llm):
    prompts = random_prompts([3] * 10, seed=4)
    regex = r"[a-z]{3}-[0-9]{2,4}"
    outs = llm.generate(
        prompts,
        [SamplingParams(max_tokens=20, temperature=1.0, seed=s, regex=regex) for s in range(10)],
    )
    assert all(re.fullmatch(regex, o.text) for o in outs), [o.text for o in outs]
    choices = ["yes", "no", "maybe not", 'say "hi"']
    outs = llm.generate(
        prompts,
        [SamplingParams(max_tokens=20, temperature=1.0, seed=s, choice=choices) for s in range(10)],
    )
    assert all(o.text in choices and o.outputs[0].finish_reason == "stop" for o in outs)
    assert len({o.text for o in outs}) > 1
    grammar = 'start: "(" expr ")"\nexpr: NUM (("+" | "*") NUM)*\nNUM: /[1-9][0-9]?/'
    outs = llm.generate(
        prompts,
        [
            SamplingParams(max_tokens=40, temperature=1.0, seed=s, grammar=grammar)
            for s in range(10)
        ],
    )
    for o in outs:
        if o.outputs[0].finish_reason == "stop":
            assert re.fullmatch(r"\((?:[1-9][0-9]?)(?:[+*][1-9][0-9]?)*\)", o.text), o.text


def test_mixed_batch_equals_each_request_alone(llm):
    prompts = random_prompts([7, 30, 12, 4], seed=11)
    params = [
        SamplingParams(max_tokens=60, json_schema=SCHEMA),
        SamplingParams(max_tokens=20),
        SamplingParams(max_tokens=12, regex=r"[0-9]+(\.[0-9]+)?"),
        SamplingParams(max_tokens=16),
    ]
    together = llm.generate(prompts, params)
    alone = [llm.generate([p], q)[0] for p, q in zip(prompts, params)]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]
    assert [o.outputs[0].finish_reason for o in together] == [
        o.outputs[0].finish_reason for o in alone
    ]
    # The free rows really are free: the same as an engine that never saw a constraint.
    fresh = LLM(llm.engine.model, llm.tokenizer, num_kv_blocks=256)
    assert fresh.generate(prompts[1], params[1])[0].token_ids == together[1].token_ids


def test_n_greater_than_one_each_completion_is_valid(llm):
    out = llm.generate(
        random_prompts([40], seed=12),
        SamplingParams(n=4, max_tokens=300, temperature=1.0, seed=5, json_schema=SCHEMA),
    )[0]
    assert len(out.outputs) == 4
    for completion in out.outputs:
        jsonschema.validate(json.loads(completion.text), SCHEMA)
    assert len({c.text for c in out.outputs}) == 4


def test_prefix_cache_and_preemption_keep_the_grammar_state(llm):
    prompt = random_prompts([48], seed=13)[0]
    params = SamplingParams(max_tokens=300, json_schema=SCHEMA)
    first = llm.generate(prompt, params)[0]
    hits = llm.engine.block_manager.prefix_hit_tokens
    second = llm.generate(prompt, params)[0]
    assert llm.engine.block_manager.prefix_hit_tokens > hits
    assert second.token_ids == first.token_ids
    jsonschema.validate(json.loads(first.text), SCHEMA)
    small = LLM(llm.engine.model, llm.tokenizer, num_kv_blocks=12, max_num_batched_tokens=32)
    prompts = random_prompts([20] * 4, seed=14)
    params = SamplingParams(max_tokens=60, json_schema=SCHEMA)
    outs = small.generate(prompts, params)
    assert small.engine.scheduler.num_preemptions > 0
    alone = [llm.generate(p, params)[0] for p in prompts]
    assert [o.token_ids for o in outs] == [o.token_ids for o in alone]


def test_max_tokens_cuts_json_with_length_and_stop_strings_apply(llm):
    prompt = random_prompts([5], seed=15)[0]
    cut = llm.generate(prompt, SamplingParams(max_tokens=8, json_schema=SCHEMA))[0]
    assert cut.outputs[0].finish_reason == "length"
    assert len(cut.token_ids) == 8 and cut.text.startswith('{"name"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.text)
    stopped = llm.generate(
        prompt, SamplingParams(max_tokens=300, json_schema=SCHEMA, stop=['"age"'])
    )[0]
    assert stopped.outputs[0].finish_reason == "stop"
    assert stopped.text.startswith('{"name": "') and '"age"' not in stopped.text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(json_schema={"type": "object", "properties": {"a": {"$ref": "#/x"}}}), "json_schema"),
        (dict(json_schema={"type": "string", "format": "bogus"}), "bogus"),
        (dict(json_schema={"type": "array", "uniqueItems": True}), "uniqueItems"),  # not dropped
        (dict(json_schema="{not json"), "not valid JSON"),
        (dict(regex="a(b"), "regex"),
        (dict(grammar="start: missing_rule"), "missing_rule"),
        (dict(regex="a", choice=["a"]), "use one of"),
        (dict(choice=[]), "choice"),
    ],
)
def test_invalid_constraints_are_one_line_errors(llm, kwargs, message):
    with pytest.raises(LlmlabError, match=re.escape(message)) as info:
        llm.generate([5, 6, 7], SamplingParams(max_tokens=4, **kwargs))
    assert "\n" not in str(info.value)
    assert not llm.engine.has_unfinished()


@pytest.mark.slow
def test_gemma3_tokenizer_bridged():
    """The real Gemma 3 270M (262k-token vocabulary, SentencePiece-style pieces): a schema with
    Chinese keys validates at temperature 1, and a choice list includes a Chinese option."""
    import llmlab

    model, tokenizer = llmlab.load("gemma3-270m")
    llm = LLM(model, tokenizer, kv_memory="64MiB")
    schema = {
        "type": "object",
        "properties": {
            "城市": {"type": "string", "maxLength": 8},
            "温度": {"type": "integer", "minimum": -30, "maximum": 50},
        },
        "required": ["城市", "温度"],
        "additionalProperties": False,
    }
    prompts = ["北京今天的天气，用JSON表示：", "The weather in Paris as JSON:"]
    outs = llm.generate(
        prompts,
        [
            SamplingParams(max_tokens=40, temperature=1.0, seed=s, json_schema=schema)
            for s in (0, 1)
        ],
    )
    for out in outs:
        assert out.outputs[0].finish_reason == "stop", out.text
        jsonschema.validate(json.loads(out.text), schema)
    choices = ["yes", "no", "是的"]
    out = llm.generate("天空是蓝色的吗？回答：", SamplingParams(max_tokens=5, choice=choices))[0]
    assert out.text in choices
