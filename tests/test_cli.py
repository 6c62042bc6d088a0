"""The `llmlab` command line: bad input gives one clear line and a non-zero exit; chat works."""

import json
import os
import subprocess
import sys

import pytest
from tiny import save_tiny_llama

from llmlab.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def tiny_folder(tmp_path):
    save_tiny_llama(tmp_path / "tiny", max_position_embeddings=32)
    return tmp_path / "tiny"


def test_unknown_model(capsys):
    code, _, err = run_cli(capsys, "chat", "--model", "no-such-model", "hi")
    assert_one_line_error(code, err, "unknown model 'no-such-model'", "smollm2-135m-instruct")


def test_truncated_safetensors(capsys, tiny_folder):
    weights = tiny_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, _, err = run_cli(capsys, "generate", "--model", str(tiny_folder), "hello")
    assert_one_line_error(code, err, "model.safetensors", "truncated or corrupt")


def test_truncated_gguf(capsys, tmp_path):
    from llmlab.registry import resolve

    broken = tmp_path / "broken.gguf"
    with open(resolve("smollm2-135m-instruct"), "rb") as f:
        broken.write_bytes(f.read(5_000_000))
    code, _, err = run_cli(capsys, "chat", "--model", str(broken), "hi")
    assert_one_line_error(code, err, "broken.gguf")


def test_unsupported_architecture(capsys, tiny_folder):
    config = json.loads((tiny_folder / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (tiny_folder / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "chat", "--model", str(tiny_folder), "hi")
    assert_one_line_error(code, err, "unsupported architecture", "gpt2")


def test_prompt_longer_than_context(capsys, tiny_folder):
    code, _, err = run_cli(capsys, "generate", "--model", str(tiny_folder), "dropout " * 40)
    assert_one_line_error(code, err, "context is 32")


def test_debug_shows_traceback(capsys):
    with pytest.raises(Exception, match="unknown model"):
        main(["chat", "--debug", "--model", "no-such-model", "hi"])


def test_generate_on_tiny_model(capsys, tiny_folder):
    code, out, err = run_cli(
        capsys, "generate", "--model", str(tiny_folder), "--max-tokens", "5", "The quick"
    )
    assert code == 0 and out.endswith("\n")


def test_models_lists_packaged_models(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["smollm2-135m-instruct"]["architecture"] == "llama"
    assert rows["smollm2-135m-instruct"]["path"].endswith(".gguf")
    assert rows["minilm-l6-v2"]["size_bytes"] > 50_000_000
    gemma = rows["gemma3-270m"]
    assert gemma["architecture"] == "gemma3" and gemma["licence"] == "Gemma Terms of Use"
    assert gemma["licence_file"].endswith("GEMMA_TERMS.html") and gemma["size_bytes"] > 250_000_000


@pytest.mark.slow
def test_chat_with_smollm2_answers_coherently():
    """`make chat`'s command, as a user runs it (a subprocess with the real packaged model)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmlab",
            "chat",
            "--model",
            "smollm2-135m-instruct",
            "--max-tokens",
            "60",
            "What is dropout?",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    answer = proc.stdout.lower()
    assert len(answer.split()) >= 15
    # a coherent answer about dropout talks about the network / training / neurons / overfitting
    assert any(
        word in answer for word in ("neural", "network", "training", "neuron", "overfit", "model")
    )
