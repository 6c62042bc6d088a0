"""LoRA SFT of Gemma 3 (the notes assistant's training, issue 19) on a tiny random Gemma 3 config:
assistant-only loss masks on Gemma's template, `llmlab train lora` with recipes/sft-notes-gemma3.yaml
lowering the loss, and the adapter loading with its chat template in `llmlab.load` (LoRA layers
and merged) and in peft with the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmlab.tokenize.tokenizer import GEMMA_TEMPLATE, use_chat_format
from llmlab.train.sft_data import SFTDataError, read_conversations, render_conversation

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = Path(__file__).parent.parent / "recipes" / "sft-notes-gemma3.yaml"


def gemma_tokenizer():
    """The tiny BPE tokenizer with Gemma's special tokens and chat format."""
    from tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_special_tokens(
        {"bos_token": "<bos>", "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}
    )
    use_chat_format(tok, "gemma")
    return tok


def tiny_gemma(vocab_size: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():  # norms start at 0: randomize all
            parameter.normal_(0, 0.3 if "norm" in name else 0.1)
    return model


CHATS = [
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is dropout?"},
        {"role": "assistant", "content": "It zeroes random units while training."},
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "So units do not co-adapt."},
    ],
    [
        {"role": "user", "content": "Name a norm layer."},
        {"role": "assistant", "content": "LayerNorm."},
    ],
]


@pytest.mark.parametrize("chat", CHATS, ids=["system+two-turns", "one-turn"])
def test_gemma_loss_mask_covers_only_model_turns(chat):
    tok = gemma_tokenizer()
    example = render_conversation(tok, chat)
    text = tok.decode(example.input_ids)
    trained = tok.decode([i for i, m in zip(example.input_ids, example.loss_mask) if m])
    # Exactly each answer plus its end-of-turn (so the model learns to stop), nothing of the user
    # turns, the system prompt or the `<start_of_turn>model` header.
    answers = [m["content"] for m in chat if m["role"] == "assistant"]
    assert trained == "".join(f"{a}<end_of_turn>\n" for a in answers)
    assert text.startswith("<bos><start_of_turn>user\n")
    end_id = tok.convert_tokens_to_ids("<end_of_turn>")
    ends = [m for i, m in zip(example.input_ids, example.loss_mask) if i == end_id]
    # every user turn's end marker is untrained, every model turn's is trained
    assert ends == [0, 1] * len(answers)


def test_sft_rows_filtered_by_split(tmp_path):
    rows = [
        {
            "split": s,
            "messages": [{"role": "user", "content": s}, {"role": "assistant", "content": "x"}],
        }
        for s in ("train", "train", "dev", "test")
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert [c[0]["content"] for c in read_conversations(str(path), "train")] == ["train", "train"]
    assert len(read_conversations(str(path))) == 4
    with pytest.raises(SFTDataError, match="no rows with split 'valid'.*dev, test, train"):
        read_conversations(str(path), "valid")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """recipes/sft-notes-gemma3.yaml on a tiny Gemma 3 folder and a few conversations."""
    from llmlab.cli import main

    root = tmp_path_factory.mktemp("sft-gemma")
    tok = gemma_tokenizer()
    hf = tiny_gemma(len(tok))
    hf.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rows = [{"split": "train", "messages": CHATS[i % 2]} for i in range(8)] + [
        {"split": "dev", "messages": CHATS[i % 2]} for i in range(4)
    ]
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    settings = {
        "run_dir": root / "run",
        "model.name": root / "model",
        "model.threads": 1,
        "data.train": root / "pairs.jsonl",
        "data.seq_len": 48,
        "train.steps": 12,
        "train.batch_size": 2,
        "train.eval_every": 0,
        "train.progress": "false",
        "optim.lr": 0.02,
        "optim.warmup_steps": 0,
    }
    args = ["train", "lora", "--config", str(RECIPE)]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    return root


def test_lora_sft_on_tiny_gemma_lowers_the_loss(trained):
    root = trained
    steps = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in steps if r.get("kind") == "train"]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    evals = [r for r in steps if "eval_loss" in r]
    assert evals, "the dev split was not evaluated"
    adapter = root / "run" / "adapter"
    assert (adapter / "chat_template.jinja").read_text(encoding="utf-8") == GEMMA_TEMPLATE


@pytest.mark.parametrize("merge", [False, True], ids=["lora-layers", "merged"])
def test_gemma_adapter_loads_with_its_template_and_equals_peft(trained, merge):
    import peft
    from transformers import Gemma3ForCausalLM

    import llmlab

    root = trained
    hf = Gemma3ForCausalLM.from_pretrained(root / "model", attn_implementation="eager").eval()
    adapter = root / "run" / "adapter"
    ours, tok = llmlab.load(
        root / "model", device="cpu", dtype="float32", adapters=[adapter], merge_adapters=merge
    )
    assert tok.chat_template == GEMMA_TEMPLATE and tok.eos_token == "<end_of_turn>"
    text = tok.apply_chat_template(CHATS[0][:4], tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        base = hf(ids).logits
        theirs = peft.PeftModel.from_pretrained(hf, str(adapter)).eval()  # wraps hf in place
        expected = theirs(ids).logits
        got = ours(ids)
    assert (expected - base).abs().max() > 1e-2  # the adapter changes the model ...
    assert (got - expected).abs().max() < 1e-4  # ... and both load it the same


def test_bad_chat_format_is_refused_before_loading(capsys):
    from llmlab.cli import main

    args = ["train", "lora", "--config", str(RECIPE), "--set", "model.chat_format=gemma4"]
    assert main(args) == 1
    assert "model.chat_format 'gemma4' (choose chatml, qa, gemma)" in capsys.readouterr().err


def test_bundled_adapter_names_resolve_to_the_package_folder(tmp_path):
    from llmlab.commands.serve import adapter_name
    from llmlab.loading import adapter_folder

    folder = adapter_folder("bundled:notes-gemma3")
    assert folder.parts[-3:] == ("assets", "adapters", "notes-gemma3")
    assert adapter_folder(tmp_path) == tmp_path
    assert adapter_name("bundled:notes-gemma3") == "notes-gemma3"


# --- the shipped adapter (src/llmlab/assets/adapters/notes-gemma3) ------------------------------


def test_bundled_notes_adapter_is_a_small_gemma_peft_folder():
    from safetensors import safe_open

    from llmlab.formats.peft import read_adapter_config
    from llmlab.loading import adapter_folder

    folder = adapter_folder("bundled:notes-gemma3")
    weights = folder / "adapter_model.safetensors"
    assert weights.is_file(), f"{folder} is missing: regenerate it (docs/post-training.md)"
    assert weights.stat().st_size <= 8 * 2**20
    config = read_adapter_config(folder)
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "gemma3-270m"
    assert (folder / "chat_template.jinja").read_text(encoding="utf-8") == GEMMA_TEMPLATE
    with safe_open(str(weights), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    # Gemma 3 270M: 18 layers, hidden 640, 4 query heads × 256
    r = config["r"]
    assert shapes["base_model.model.model.layers.17.self_attn.q_proj.lora_A.weight"] == (r, 640)
    assert shapes["base_model.model.model.layers.17.self_attn.q_proj.lora_B.weight"] == (1024, r)


@pytest.mark.slow
def test_bundled_notes_adapter_lowers_the_loss_on_its_training_answers():
    """On the real Gemma 3 270M: the answer tokens of a training conversation (a notes question)
    cost less with the adapter than without, and the adapter brings Gemma's chat format."""
    import llmlab

    chat = [
        {"role": "system", "content": "你是机器学习面试助手。回答要准确、简洁，并以提供的笔记为依据。"},
        {"role": "user", "content": "梯度消失和梯度爆炸的原因是什么"},
        {"role": "assistant", "content": "梯度消失和梯度爆炸都是因为反向传播过程中梯度在多层传播时不断连乘，如果连乘的导数小于1就导致梯度消失，大于1则导致梯度爆炸。"},
    ]  # fmt: skip
    tuned, tok = llmlab.load("gemma3-270m", adapters=["bundled:notes-gemma3"], merge_adapters=True)
    assert tok.chat_template == GEMMA_TEMPLATE and tok.eos_token == "<end_of_turn>"
    example = render_conversation(tok, chat)
    ids = torch.tensor([example.input_ids])
    mask = torch.tensor(example.loss_mask[1:], dtype=torch.bool)

    def answer_loss(model):
        with torch.no_grad():
            logits = model(ids[:, :-1])[0]
        return torch.nn.functional.cross_entropy(logits[mask], ids[0, 1:][mask]).item()

    base, _ = llmlab.load("gemma3-270m", tokenizer=False)
    assert answer_loss(tuned) < answer_loss(base) - 0.3
