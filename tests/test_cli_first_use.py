"""What a new user meets running the README's training and data commands (issue 21.9): the
tokenizer says why it has fewer tokens than asked, `train bert` without its tokenizer names the
`--bert` command, and the README runs things in an order that works on the files it names."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def llmlab(*argv, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "llmlab", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_tokenizer_says_why_it_is_smaller_than_asked(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("the cat sat on the mat. " * 50 + "a dog ran.\n\n" * 20, encoding="utf-8")
    out = llmlab(
        "train", "tokenizer", "--corpus", str(corpus), "--vocab-size", "4096",
        "--out", "tok", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    size = int(re.search(r"tokenizer with (\d+) tokens", out.stdout).group(1))
    assert size < 4096
    assert "fewer than --vocab-size 4096" in out.stdout and "--min-frequency 2" in out.stdout


def test_train_bert_without_tokenizer_names_the_bert_command(tmp_path):
    config = yaml.safe_load((ROOT / "recipes" / "bert-tiny.yaml").read_text())
    config["data"]["tokenizer"] = str(tmp_path / "missing-tokenizer")
    (tmp_path / "bert.yaml").write_text(yaml.safe_dump(config))
    out = llmlab("train", "bert", "--config", "bert.yaml", cwd=tmp_path)
    assert out.returncode != 0
    assert "tokenizer not found" in out.stderr
    assert "llmlab train tokenizer --bert" in out.stderr
    assert "Traceback" not in out.stderr


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]


def test_readme_trains_the_bert_tokenizer_before_bert():
    commands = readme_commands()
    bert = next(i for i, c in enumerate(commands) if c.startswith("llmlab train bert"))
    config = yaml.safe_load((ROOT / "recipes" / "bert-tiny.yaml").read_text())
    tokenizer_runs = [
        i
        for i, c in enumerate(commands[:bert])
        if c.startswith("llmlab train tokenizer")
        and "--bert" in c.split()
        and f"--out {config['data']['tokenizer']}" in c
    ]
    assert tokenizer_runs, "README runs `llmlab train bert` before training its --bert tokenizer"


def test_readme_analyzes_a_file_its_recipe_writes():
    commands = readme_commands()
    analyze = [c.split()[3] for c in commands if c.startswith("llmlab data analyze")]
    recipe = next(c.split()[3] for c in commands if c.startswith("llmlab data run"))
    sinks = [s.get("path") for s in yaml.safe_load((ROOT / recipe).read_text())["sinks"]]
    assert analyze and all(path in sinks for path in analyze), (analyze, sinks)


def test_plot_prints_no_library_warnings(tmp_path):
    """A run whose gradient norms are all zero (RL objectives can log that) used to print
    matplotlib's "Data has no positive values, and therefore cannot be log-scaled"."""
    import json

    run = tmp_path / "run"
    run.mkdir()
    records = [
        {"kind": "train", "step": s, "loss": 0.0, "lr": 1e-3, "grad_norm": 0.0} for s in (1, 2, 3)
    ]
    records.append({"kind": "diag", "step": 2, "grad_norms": {"a.weight": 0.0, "b.weight": 0.1}})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    env = {**os.environ, "PYTHONWARNINGS": "default", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    out = subprocess.run(
        [sys.executable, "-m", "llmlab", "plot", str(run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(run / "training.png"), str(run / "gradient_flow.png")]
    assert out.stderr == ""
