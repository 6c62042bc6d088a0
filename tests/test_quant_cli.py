"""Every `llmlab quantize` flow end to end on a tiny model (folder written, loaded by
`llmlab.load`, close to the float model, greedy engine output equal to the reference generator on
the same quantized model), `llmlab eval perplexity`, the engine's w8a8 path, and a quantized
folder served by `llmlab serve`."""

import json

import pytest
import torch
from tiny import save_tiny_llama

import llmlab
import llmlab.cli
from llmlab.engine import LLM, SamplingParams
from llmlab.formats.hf import read_config
from llmlab.formats.quantized import is_quantized_config
from llmlab.generation import GenerationConfig, generate

CALIB = ["--calib", "bundled:stories-en.txt", "--samples", "4", "--seq-len", "32"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_tiny_llama(folder, hidden_size=64, intermediate_size=128)
    return folder


def _quantize(tiny_folder, out, *args):
    return llmlab.cli.main(
        ["quantize", "--model", str(tiny_folder), "--out", str(out), *CALIB, *args]
    )


@pytest.mark.parametrize(
    "method, bits, kind, max_error",
    [
        ("rtn", "8", "int8", 0.05),
        ("rtn", "4", "int4", 0.5),
        ("gptq", "4", "int4", 0.5),
        ("static", "8", "w8a8", 0.1),
        ("dynamic", "8", "w8a8", 0.05),
        ("dynamic", "8", "w8a8-asym", 0.05),
        ("qat", "4", "int4", 0.5),
    ],
)
def test_quantize_flow_writes_a_loadable_folder(
    tiny_folder, tmp_path, one_thread, method, bits, kind, max_error
):
    out = tmp_path / f"{method}{bits}"
    extra = ["--group-size", "32"] + (["--qat-steps", "3"] if method == "qat" else [])
    if kind == "w8a8-asym":
        extra += ["--activations", "asymmetric", "--weights", "gptq"]
    assert _quantize(tiny_folder, out, "--method", method, "--bits", bits, *extra) == 0
    config = read_config(out)
    q = config["quantization_config"]
    assert is_quantized_config(config) and q["method"] == method and q["bits"] == int(bits)
    assert len(q["layers"]) == 2 * 7 + 1 and set(q["layers"].values()) == {kind}
    model, tokenizer = llmlab.load(out)
    reference, _ = llmlab.load(tiny_folder)
    ids = torch.tensor([tokenizer.encode("The quick brown fox jumps over the lazy dog.")])
    with torch.no_grad():
        error = (model(ids) - reference(ids)).abs().max().item()
    assert 0 < error < max_error  # quantized (not identical), and close
    prompt = tokenizer.encode("Dropout randomly zeroes")
    expected = generate(model, tokenizer, prompt, GenerationConfig(max_tokens=8)).token_ids
    outputs = LLM(out).generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))
    assert outputs[0].token_ids == expected


def test_mixed_w8a8_folder_keeps_the_chosen_layers_float(tiny_folder, tmp_path, one_thread):
    out = tmp_path / "mixed"
    args = ["--method", "dynamic", "--bits", "8", "--keep-float", "1", "--weights", "gptq"]
    assert _quantize(tiny_folder, out, *args, "--float-layers", "lm_head") == 0
    q = read_config(out)["quantization_config"]
    kept = q["float_layers"]
    assert q["smooth"] == "search" and q["weights"] == "gptq"
    assert len(q["alphas"]) == 2 * 4 + 1  # q/k/v, o, gate/up, down per layer; the head
    assert "lm_head" in kept and 2 <= len(kept) <= 4 and not set(kept) & set(q["layers"])
    assert len(q["layers"]) + len(kept) == 2 * 7 + 1
    model, tokenizer = llmlab.load(out)
    assert all(type(model.get_submodule(name)) is torch.nn.Linear for name in kept)
    prompt = tokenizer.encode("Dropout randomly zeroes")
    expected = generate(model, tokenizer, prompt, GenerationConfig(max_tokens=8)).token_ids
    outputs = LLM(out).generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))
    assert outputs[0].token_ids == expected


@pytest.mark.parametrize(
    "method, extra",
    [
        ("dynamic", ["--outliers", "4", "--weights", "gptq", "--activations", "asymmetric"]),
        ("static", ["--outliers", "4"]),
        ("dynamic", ["--activation-group-size", "32", "--activations", "asymmetric"]),
    ],
)
def test_w8a8_folder_with_outlier_channels_or_activation_groups(
    tiny_folder, tmp_path, one_thread, method, extra
):
    """--outliers 4: every linear keeps 4 input channels in float (the same 4 across q/k/v and
    gate/up, so the engine still fuses them, outliers and all); --activation-group-size 32: a grid
    per 32 inputs of a token. Both through the folder and the engine's fused path."""
    from llmlab.nn.quantized_linear import W8A8Linear

    out = tmp_path / "w8a8"
    assert _quantize(tiny_folder, out, "--method", method, "--bits", "8", *extra) == 0
    q = read_config(out)["quantization_config"]
    assert len(q["layers"]) == 2 * 7 + 1
    model, tokenizer = llmlab.load(out)
    layers = [m for m in model.modules() if isinstance(m, W8A8Linear)]
    assert len(layers) == 2 * 7 + 1
    if "--outliers" in extra:
        assert q["outlier_channels"] == 4
        assert all(m.has_outliers and len(m.outlier_index) == 4 for m in layers)
        attn = model.model.layers[0].self_attn
        assert torch.equal(attn.q_proj.outlier_index, attn.v_proj.outlier_index)
    else:
        assert q["activation_group_size"] == 32
        assert all(m.input_group_size == 32 and not m.has_outliers for m in layers)
    prompt = tokenizer.encode("Dropout randomly zeroes")
    expected = generate(model, tokenizer, prompt, GenerationConfig(max_tokens=8)).token_ids
    llm = LLM(out)
    fused = llm.engine.runner.packed.layers[0].qkv.quantized
    assert isinstance(fused, W8A8Linear)
    assert (fused.has_outliers, fused.input_group_size) == (
        layers[0].has_outliers,
        layers[0].input_group_size,
    )
    outputs = llm.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))
    assert outputs[0].token_ids == expected


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "rtn", "--bits", "8", "--outliers", "2"], "--outliers applies"),
        (
            ["--method", "static", "--bits", "8", "--activation-group-size", "32"],
            "applies to --method dynamic",
        ),
        (
            ["--method", "dynamic", "--bits", "8", "--activation-group-size", "48"],
            "does not divide the 64",
        ),
    ],
)
def test_outlier_and_group_options_where_they_do_not_apply(
    tiny_folder, tmp_path, capsys, args, message
):
    assert _quantize(tiny_folder, tmp_path / "bad", *args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_gptq_beats_rtn_on_held_out_text_of_a_tiny_model(tiny_folder, tmp_path, one_thread):
    from llmlab.quant.perplexity import perplexity
    from llmlab.quant.text_data import split_text

    reference, tokenizer = llmlab.load(tiny_folder)
    text = split_text("bundled:stories-en.txt", "heldout")[:3000]
    base = perplexity(reference, tokenizer, text, 128, 128).nll
    errors = {}
    for method in ("rtn", "gptq"):
        out = tmp_path / method
        common = ["--method", method, "--bits", "4", "--group-size", "64", "--samples", "16"]
        assert _quantize(tiny_folder, out, *common, "--seq-len", "128") == 0
        model, _ = llmlab.load(out, dtype="float32")
        errors[method] = abs(perplexity(model, tokenizer, text, 128, 128).nll - base)
    assert errors["gptq"] < errors["rtn"], errors


def test_eval_perplexity_cli(tiny_folder, capsys, one_thread):
    code = llmlab.cli.main(
        [
            "eval",
            "perplexity",
            "--model",
            str(tiny_folder),
            "--data",
            "bundled:notes-zh.txt",
            "--split",
            "heldout",
            "--window",
            "64",
            "--max-tokens",
            "300",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == 299 and result["perplexity"] > 1 and result["tokens_per_s"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "gptq", "--bits", "8"], "supports --bits 4"),
        (["--method", "static", "--bits", "4"], "supports --bits 8"),
        (["--method", "rtn", "--bits", "4", "--group-size", "100"], "group size"),
        (["--method", "static", "--bits", "8", "--calib", "no-such.txt"], "not found"),
        (["--method", "rtn", "--bits", "8", "--keep-float", "1"], "static and dynamic only"),
        (["--method", "static", "--bits", "8", "--weights", "gptq"], "dynamic only"),
        (["--method", "static", "--bits", "8", "--activations", "asymmetric"], "dynamic only"),
    ],
)
def test_quantize_bad_input_is_one_line_error(tiny_folder, tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert llmlab.cli.main(["quantize", "--model", str(tiny_folder), "--out", str(out), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("value", ["auto", "1.5", "-0.1", "nan"])
def test_bad_smooth_value_stops_at_parse_time(tiny_folder, tmp_path, capsys, value):
    args = ["quantize", "--model", str(tiny_folder), "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit) as stop:
        llmlab.cli.main([*args, "--method", "dynamic", "--bits", "8", "--smooth", value])
    assert stop.value.code == 2
    assert "--smooth: must be 'search' or between 0 and 1" in capsys.readouterr().err


def test_requantizing_a_quantized_folder_and_quant_on_top_are_refused(
    tiny_folder, tmp_path, capsys
):
    out = tmp_path / "dyn"
    assert _quantize(tiny_folder, out, "--method", "dynamic", "--bits", "8") == 0
    capsys.readouterr()
    assert _quantize(out, tmp_path / "again", "--method", "rtn", "--bits", "8") == 1
    assert "already quantized" in capsys.readouterr().err
    with pytest.raises(llmlab.errors.LlmlabError, match="already quantized"):
        LLM(out, quant="int4")


def test_failed_quantize_keeps_the_previous_folder(tiny_folder, tmp_path, monkeypatch):
    out = tmp_path / "keep"
    assert _quantize(tiny_folder, out, "--method", "rtn", "--bits", "8") == 0
    before = (out / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("llmlab.quant.save.save_file", boom)
    assert _quantize(tiny_folder, out, "--method", "rtn", "--bits", "4", "--group-size", "32") == 1
    assert (out / "model.safetensors").read_bytes() == before
    assert not list(tmp_path.glob("*.tmp-quantize"))


def test_engine_w8a8_matches_the_reference_generator(one_thread):
    from engine_helpers import random_prompts, tiny_model, tiny_tokenizer

    from llmlab.nn.quantized_linear import quantize_model

    model = quantize_model(tiny_model(), "w8a8")
    prompts = random_prompts([5, 9, 14])
    expected = [
        generate(model, tiny_tokenizer(), p, GenerationConfig(max_tokens=10)).token_ids
        for p in prompts
    ]
    for pack in (True, False):
        llm = LLM(model, tokenizer=tiny_tokenizer(), num_kv_blocks=64, pack_weights=pack)
        outs = llm.generate(prompts, SamplingParams(max_tokens=10, ignore_eos=True))
        assert [o.token_ids for o in outs] == expected


def test_serve_loads_a_quantized_folder(tiny_folder, tmp_path, monkeypatch, one_thread):
    from starlette.testclient import TestClient

    out = tmp_path / "served"
    assert _quantize(tiny_folder, out, "--method", "gptq", "--bits", "4", "--group-size", "32") == 0
    replies = []

    def fake_run(app, **kwargs):  # instead of listening: one request through the real app
        with TestClient(app) as client:
            replies.append(
                client.post(
                    "/v1/completions",
                    json={
                        "model": str(out),
                        "prompt": "The quick",
                        "max_tokens": 4,
                        "temperature": 0,
                        "ignore_eos": True,
                    },
                )
            )

    monkeypatch.setattr("uvicorn.run", fake_run)
    assert llmlab.cli.main(["serve", "--model", str(out), "--kv-memory", "4MiB"]) == 0
    reply = replies[0]
    assert reply.status_code == 200, reply.text
    body = reply.json()
    model, tokenizer = llmlab.load(out)
    expected = generate(model, tokenizer, "The quick", GenerationConfig(max_tokens=4)).text
    assert body["choices"][0]["text"] == expected and body["usage"]["completion_tokens"] == 4
