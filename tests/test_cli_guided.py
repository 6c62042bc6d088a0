"""`llmlab generate --json-schema / --regex / --choice / --grammar` on a tiny saved model: the
output matches the constraint; a bad schema file or regex is one error line."""

import json
import re

import jsonschema
import pytest
from test_cli import assert_one_line_error, run_cli
from tiny import save_tiny_llama

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 3}},
    "required": ["ok", "n"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guided") / "tiny"
    save_tiny_llama(folder, max_position_embeddings=128)
    return folder


def test_generate_json_schema(capsys, tiny_folder, tmp_path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    for seed in range(3):
        code, out, _ = run_cli(
            capsys, "generate", "--model", str(tiny_folder), "--json-schema", str(schema_file),
            "--temperature", "1", "--seed", str(seed), "--max-tokens", "60", "The quick",
        )  # fmt: skip
        assert code == 0
        jsonschema.validate(json.loads(out), SCHEMA)


def test_generate_regex_and_choice(capsys, tiny_folder):
    code, out, _ = run_cli(
        capsys, "generate", "--model", str(tiny_folder), "--regex", "[a-c]{2}[0-9]{3}",
        "--max-tokens", "10", "The quick",
    )  # fmt: skip
    assert code == 0 and re.fullmatch(r"[a-c]{2}[0-9]{3}\n", out)
    code, out, _ = run_cli(
        capsys, "generate", "--model", str(tiny_folder), "--choice", "left", "--choice", "right",
        "--max-tokens", "10", "The quick",
    )  # fmt: skip
    assert code == 0 and out in ("left\n", "right\n")


def test_generate_bad_constraints_are_one_line(capsys, tiny_folder, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli(
        capsys, "generate", "--model", str(tiny_folder), "--json-schema", str(bad), "x"
    )
    assert_one_line_error(code, err, "bad.json", "not valid JSON")
    code, _, err = run_cli(capsys, "generate", "--model", str(tiny_folder), "--regex", "a(b", "x")
    assert_one_line_error(code, err, "invalid regex", "unclosed group")
    code, _, err = run_cli(
        capsys, "generate", "--model", str(tiny_folder), "--json-schema", str(tmp_path / "no"), "x"
    )
    assert_one_line_error(code, err, "cannot read")
