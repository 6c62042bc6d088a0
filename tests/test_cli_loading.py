"""The one loader from the command line: model kinds (chat / base / embedding) and `llmlab embed`,
LoRA adapters on chat/generate/serve (`--adapter DIR`, or an adapter folder as --model), impossible
numbers refused at parse time with one line, --help texts free of internal notes, and tables that
keep full names and paths when printed through a pipe."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import save_tiny_llama

import llmlab
from llmlab.adapters import save_adapter
from llmlab.cli import build_parser, main
from llmlab.generation import GenerationConfig, generate
from llmlab.nn.lora import add_lora, merge_and_unload
from llmlab.registry import PACKAGED_MODELS, list_models

SRC = str(Path(__file__).resolve().parent.parent / "src")


def cli(*argv, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m llmlab ARGV` as a user runs it: stdout and stderr are pipes, not a terminal."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "COLUMNS": "60"}
    return subprocess.run(
        [sys.executable, "-m", "llmlab", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_with_adapter(tmp_path_factory):
    """A tiny Llama folder and a LoRA adapter for it whose update changes greedy output."""
    root = tmp_path_factory.mktemp("adapter")
    save_tiny_llama(root / "base", initializer_range=0.3)
    model, _ = llmlab.load(root / "base", device="cpu", tokenizer=False)
    add_lora(model, r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    save_adapter(model, root / "adapter", base_model_name_or_path=str(root / "base"))
    return root / "base", root / "adapter"


# ----------------------------------------------------------------------------------- model kinds
def test_models_lists_kinds_and_never_cuts_names_or_paths_in_a_pipe():
    result = cli("models")
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    for row in list_models():
        line = next(line for line in result.stdout.splitlines() if row["name"] in line)
        assert row["kind"] in line
        if row["path"]:
            assert row["path"] in line  # the whole path on one line, though COLUMNS=60
    assert PACKAGED_MODELS["minilm-l6-v2"].kind == "embedding"
    assert PACKAGED_MODELS["smollm2-135m-instruct"].kind == "chat"


@pytest.mark.parametrize(
    "argv",
    [
        ["chat", "--model", "minilm-l6-v2", "hi"],
        ["generate", "--model", "minilm-l6-v2", "hi"],
        ["serve", "--model", "minilm-l6-v2", "--port", "1"],
    ],
)
def test_generating_commands_refuse_an_embedding_model(capsys, argv):
    code = main(argv)
    line = one_error_line(capsys.readouterr().err)
    assert code == 1 and "embedding model" in line and "llmlab embed" in line


def test_the_engine_refuses_an_embedding_model():
    from llmlab.engine import LLM
    from llmlab.errors import LlmlabError

    with pytest.raises(LlmlabError, match="embedding model.*llmlab embed"):
        LLM("minilm-l6-v2")


def test_embed_reads_stdin_and_writes_jsonl_in_line_order():
    lines = ["What is dropout?", "", "梯度消失是什么？", "A cat sat on the mat."]
    result = cli("embed", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == lines
    vectors = torch.tensor([r["embedding"] for r in rows])
    assert vectors.shape == (4, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(4), atol=1e-4)
    # Row i is line i's vector: the CLI batches by length, so compare against texts one by one.
    from llmlab.models.bert import embed

    model, tokenizer = llmlab.load("minilm-l6-v2", device="cpu")
    for text, vector in zip(lines, vectors):
        assert torch.allclose(embed([text], tokenizer, model)[0], vector, atol=1e-4)


def test_embed_writes_npy_and_refuses_bad_input(capsys, tmp_path, tiny_with_adapter):
    texts = tmp_path / "texts.txt"
    texts.write_text("first line\nsecond line\n")
    out = tmp_path / "vectors.npy"
    assert main(["embed", str(texts), "--out", str(out)]) == 0
    vectors = np.load(out)
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert not np.allclose(vectors[0], vectors[1])
    capsys.readouterr()
    before = out.read_bytes()
    for argv, needle in [
        (["embed", str(tmp_path / "missing.txt"), "--out", str(out)], "no such file"),
        (["embed", str(texts), "--out", str(tmp_path / "v.csv")], ".npy or .jsonl"),
        (["embed", str(texts), "--model", str(tiny_with_adapter[0])], "not an embedding model"),
    ]:
        assert main(argv) == 1
        assert needle in one_error_line(capsys.readouterr().err)
    assert out.read_bytes() == before  # a failed run left the earlier output alone


# ------------------------------------------------------------------------------------- adapters
def _reference(base, adapter, prompt="Dropout randomly", tokens=12):
    model, tokenizer = llmlab.load(base, device="cpu")
    plain = generate(model, tokenizer, prompt, GenerationConfig(max_tokens=tokens)).text
    from llmlab.adapters import load_adapter

    merge_and_unload(load_adapter(model, adapter))
    return plain, generate(model, tokenizer, prompt, GenerationConfig(max_tokens=tokens)).text


def test_generate_and_chat_apply_an_adapter(capsys, tiny_with_adapter):
    base, adapter = tiny_with_adapter
    plain, adapted = _reference(base, adapter)
    assert plain != adapted  # the adapter matters, so the checks below can tell
    argv = ["generate", "Dropout randomly", "--max-tokens", "12", "--model", str(base)]
    assert main([*argv, "--adapter", str(adapter)]) == 0
    assert capsys.readouterr().out == adapted + "\n"
    # An adapter folder as --model: its adapter_config.json names the base, which is here.
    assert (
        main(["generate", "Dropout randomly", "--max-tokens", "12", "--model", str(adapter)]) == 0
    )
    assert capsys.readouterr().out == adapted + "\n"
    assert main(["chat", "Hi", "--model", str(base), "--adapter", str(adapter)]) == 0
    assert capsys.readouterr().out.strip()


def test_adapter_errors_are_one_line(capsys, tmp_path, tiny_with_adapter):
    base, adapter = tiny_with_adapter
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in adapter.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/nowhere/base"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    assert main(["generate", "hi", "--model", str(moved)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "adapter folder" in line and f"--model BASE --adapter {moved}" in line
    assert main(["chat", "hi", "--model", str(base), "--adapter", str(base)]) == 1
    assert "not a PEFT adapter folder" in one_error_line(capsys.readouterr().err)


def test_engine_and_quantized_load_apply_the_adapter(tiny_with_adapter):
    from llmlab.engine import LLM, SamplingParams

    base, adapter = tiny_with_adapter
    _, adapted = _reference(base, adapter)
    llm = LLM(str(base), adapters=[str(adapter)], num_kv_blocks=32)
    assert llm.generate(["Dropout randomly"], SamplingParams(max_tokens=12))[0].text == adapted
    merged, _ = llmlab.load(base, device="cpu", adapters=[adapter], merge_adapters=True)
    int8, _ = llmlab.load(base, device="cpu", adapters=[adapter], quant="int8", tokenizer=False)
    plain, _ = llmlab.load(base, device="cpu", tokenizer=False)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    expected = merged(ids)
    tolerance = 0.05 * expected.abs().max()
    assert (plain(ids) - expected).abs().max() > 4 * tolerance  # the adapter is visible ...
    assert (int8(ids) - expected).abs().max() <= tolerance  # ... and int8 keeps it


def test_serve_with_an_adapter_lists_it_and_answers_with_its_weights(tiny_with_adapter):
    from fastapi.testclient import TestClient

    from llmlab.commands.serve import build_app

    base, adapter = tiny_with_adapter
    _, adapted = _reference(base, adapter)
    args = build_parser().parse_args(
        ["serve", "--model", str(base), "--adapter", str(adapter), "--kv-memory", "16MiB"]
    )
    with TestClient(build_app(args)) as client:
        served = [card["id"] for card in client.get("/v1/models").json()["data"]]
        assert served == [adapter.parent.name]  # runs/NAME/adapter is served as NAME
        body = {"prompt": "Dropout randomly", "max_tokens": 12, "temperature": 0}
        reply = client.post("/v1/completions", json={**body, "model": served[0]})
        assert reply.status_code == 200 and reply.json()["choices"][0]["text"] == adapted
        by_path = client.post("/v1/completions", json={**body, "model": str(adapter)})
        assert by_path.json()["choices"][0]["text"] == adapted
        base_request = client.post("/v1/completions", json={**body, "model": str(base)})
        assert base_request.status_code == 404  # the base weights are not what this server holds


def _int8_folder_reader(folder, config):
    """A stand-in quantized-folder reader: one projection comes back as an Int8Linear."""
    from llmlab.formats.hf import read_hf_folder
    from llmlab.nn.quantized_linear import Int8Linear

    config, state = read_hf_folder(folder)
    weight = state.pop("model.layers.0.mlp.down_proj.weight")
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight.data = weight
    return config, state, {"model.layers.0.mlp.down_proj": Int8Linear.from_linear(linear)}


def test_quantized_folder_hook_dispatches_on_quant_method(tmp_path, monkeypatch):
    from llmlab.errors import UnsupportedArchitectureError
    from llmlab.loading import QUANTIZED_FOLDER_READERS
    from llmlab.nn.quantized_linear import Int8Linear

    save_tiny_llama(tmp_path / "m", initializer_range=0.3)
    plain, _ = llmlab.load(tmp_path / "m", device="cpu", tokenizer=False)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "test-int8"}
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError, match="'test-int8' has no reader"):
        llmlab.load(tmp_path / "m", device="cpu", tokenizer=False)
    reader = f"{__name__}:_int8_folder_reader"
    monkeypatch.setitem(QUANTIZED_FOLDER_READERS, "test-int8", reader)
    model, _ = llmlab.load(tmp_path / "m", device="cpu", tokenizer=False)
    assert isinstance(model.model.layers[0].mlp.down_proj, Int8Linear)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    expected = plain(ids)
    assert (model(ids) - expected).abs().max() <= 0.02 * expected.abs().max()


# --------------------------------------------------------------------------------- CLI hygiene
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["chat", "--threads", "0", "hi"], "argument --threads: must be at least 1, got 0"),
        (["generate", "--max-tokens", "-5", "hi"], "argument --max-tokens: must be at least 1"),
        (["generate", "--top-p", "1.5", "hi"], "argument --top-p: must be in (0, 1]"),
        (["chat", "--top-p", "0", "hi"], "argument --top-p: must be in (0, 1]"),
        (["chat", "--temperature", "-1", "hi"], "argument --temperature: must be 0 or more"),
        (["chat", "--top-k", "-1", "hi"], "argument --top-k: must be 0 or more"),
        (["generate", "--repetition-penalty", "0", "hi"], "--repetition-penalty: must be more"),
        (["generate", "--threads", "two", "hi"], "argument --threads: expected an integer"),
        (["serve", "--threads", "0"], "argument --threads: must be at least 1"),
        (["serve", "--port", "70000"], "argument --port: must be a port number"),
        (["serve", "--max-num-seqs", "0"], "argument --max-num-seqs: must be at least 1"),
        (["embed", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["sample", "best-of-n", "--n", "0"], "argument --n: must be at least 1"),
        (["train", "tokenizer", "--vocab-size", "-3"], "argument --vocab-size: must be at least 1"),
        (["data", "serve", "--port", "0"], "argument --port: must be a port number"),
        (["agent", "run", "--max-steps", "0"], "argument --max-steps: must be at least 1"),
    ],
)
def test_impossible_numbers_are_refused_in_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert needle in line and f"llmlab {argv[0]}" in line


def test_data_ops_table_keeps_every_description_whole_off_a_terminal(capsys):
    from llmlab.data.ops import OPS

    assert main(["data", "ops"]) == 0  # stdout is captured: not a terminal
    out = capsys.readouterr().out
    assert "…" not in out
    for name, cls in OPS.items():
        line = next(line for line in out.splitlines() if f" {name} " in line)
        assert (cls.__doc__ or "").strip().splitlines()[0] in line


def test_every_numeric_option_is_checked_at_parse_time():
    """A bare int/float type lets `--k 0` or `--max-tokens -5` through to a crash or a silent no-op:
    options use the checking types in commands/common.py, or choices. Seeds may be any integer,
    and a reward threshold any number."""
    free = {"--seed", "--min-reward"}
    unchecked = sorted(
        f"{parser.prog} {action.option_strings[0]}"
        for parser in _all_parsers(build_parser())
        for action in parser._actions
        if action.type in (int, float)
        and not action.choices
        and action.option_strings
        and action.option_strings[0] not in free
    )
    assert not unchecked, f"use positive_int/probability/... from commands/common.py: {unchecked}"


def _all_parsers(parser, seen=None):
    seen = seen if seen is not None else []
    seen.append(parser)
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for sub in action.choices.values():
                if sub not in seen:
                    _all_parsers(sub, seen)
    return seen


def _source_function_names() -> set[str]:
    import ast

    names = set()
    for path in (Path(SRC) / "llmlab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and "_" in node.name:
                names.add(node.name)
    return names


def test_help_texts_carry_no_internal_notes():
    """No help points at our own functions (`add_posttrain_subcommands`), source files or TODOs."""
    parsers = _all_parsers(build_parser())
    assert len(parsers) > 20  # every subcommand, nested ones included
    functions = _source_function_names()
    assert "add_posttrain_subcommands" in functions  # what the old `train sft --help` named
    internal = re.compile(r"\b[a-z_]+/[a-z_/]+\.py\b|\bTODO\b|\bFIXME\b")
    found = {}
    for parser in parsers:
        text = parser.format_help()
        quoted = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text))  # a name shown as code
        hits = internal.findall(text) + sorted(quoted & functions)
        if hits:
            found[parser.prog] = hits
    assert not found, found
