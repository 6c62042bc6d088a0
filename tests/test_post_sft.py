"""SFT: chat-template rendering with an assistant-only loss mask, packing, and LoRA SFT through the Trainer."""

import json

import pytest
import torch
from tiny import tiny_tokenizer

from llmlab.errors import LlmlabError
from llmlab.train.objectives.sft import SFTObjective
from llmlab.train.sft_data import (
    assistant_spans,
    pack,
    read_conversations,
    render_all,
    render_conversation,
    sft_batches,
)

CONVERSATION = [
    {"role": "system", "content": "You answer in one line."},
    {"role": "user", "content": "What does dropout do?"},
    {"role": "assistant", "content": "It zeroes random activations while training."},
    {"role": "user", "content": "And residual connections?"},
    {"role": "assistant", "content": "They let gradients flow through deep networks."},
]


def masked_runs(ids, mask):
    runs, current = [], []
    for token, keep in zip(ids, mask):
        if keep:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_mask_covers_exactly_the_assistant_turns():
    tok = tiny_tokenizer()
    example = render_conversation(tok, CONVERSATION)
    text, spans = assistant_spans(tok, CONVERSATION)
    decoded = [tok.decode(run) for run in masked_runs(example.input_ids, example.loss_mask)]
    assert decoded == [text[s:e] for s, e in spans]
    assert (
        decoded[0].startswith("It zeroes") and "<|im_end|>" in decoded[0]
    )  # the end-of-turn token is learned
    unmasked = tok.decode([t for t, m in zip(example.input_ids, example.loss_mask) if not m])
    assert "What does dropout do?" in unmasked and "You answer in one line." in unmasked
    assert "They let" not in unmasked


def test_system_prompt_option_and_file_reading(tmp_path):
    tok = tiny_tokenizer()
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps({"messages": CONVERSATION[1:3]}) for _ in range(2)) + "\n")
    conversations = read_conversations(str(path))
    example = render_conversation(tok, conversations[0], system="Be brief.")
    assert "Be brief." in tok.decode(example.input_ids)
    path.write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    with pytest.raises(LlmlabError, match="role"):
        read_conversations(str(path))
    with pytest.raises(LlmlabError, match="no assistant turn"):
        render_conversation(tok, CONVERSATION[:2])


def test_packing_fills_rows_and_keeps_masks_aligned():
    tok = tiny_tokenizer()
    examples = render_all(tok, [CONVERSATION, CONVERSATION[1:3], CONVERSATION[3:]] * 4)
    rows = pack(examples, seq_len=31, eos_id=tok.eos_token_id)
    assert rows and all(len(r.input_ids) == 32 == len(r.loss_mask) for r in rows)
    flat_ids = [t for e in examples for t in e.input_ids]
    assert rows[0].input_ids[:20] == flat_ids[:20]
    batches = sft_batches(
        examples,
        batch_size=3,
        seq_len=31,
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
        packing=True,
    )
    batch = batches.next_batch()
    assert batch["input_ids"].shape == (3, 32) and batch["loss_mask"].sum() > 0
    unpacked = sft_batches(
        examples, batch_size=4, seq_len=200, pad_id=tok.pad_token_id, eos_id=None, packing=False
    ).next_batch()
    lengths = unpacked["input_ids"].ne(tok.pad_token_id).sum(1)
    assert lengths.min() < lengths.max()  # right-padded to the longest; pads are never trained on
    assert int((unpacked["loss_mask"] * unpacked["input_ids"].eq(tok.pad_token_id)).sum()) == 0


def test_sft_objective_ignores_unmasked_targets():
    logits_seen = {}

    def model(ids):
        torch.manual_seed(0)
        logits = torch.randn(*ids.shape, 50, requires_grad=True)
        logits_seen["x"] = logits
        return logits

    ids = torch.randint(0, 50, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]])
    loss, metrics = SFTObjective()(model, {"input_ids": ids, "loss_mask": mask})
    logits = logits_seen["x"]
    targets, keep = ids[:, 1:], mask[:, 1:].bool()
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    assert abs(float(loss.detach() - expected.detach())) < 1e-6 and metrics[
        "trained_tokens"
    ] == int(keep.sum())
