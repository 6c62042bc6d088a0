"""SFT data: OpenAI-style conversations (jsonl) → chat-template tokens with a loss mask on assistant turns.

    conversations = read_conversations("bundled:notes-qa.jsonl")       # [{"messages": [...]}, ...]
    example = render_conversation(tokenizer, conversation["messages"], system="Be brief.")
    example.input_ids, example.loss_mask                                  # mask 1 on assistant tokens only
    batches = SFTBatches(examples, batch_size=8, seq_len=256, pad_id=0, pack=True, seed=0)
    batches.next_batch()    # {"input_ids": [B, L+1], "loss_mask": [B, L+1]}; inputs = [:, :-1], targets = [:, 1:]

Each line is {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]} (a top-level
"system" string is also accepted). Assistant spans are found by rendering the template twice per
assistant turn: with the history plus the generation prompt (where the answer starts) and with the
answer included (where it ends, end-of-turn marker included, so the model learns to stop). The
rendered text is tokenized once and a token is trained on when its first character lies in a span.

Packing concatenates examples into full rows (no padding, so more tokens per step); attention then
crosses example boundaries, which is the usual trade for short SFT examples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from llmlab.bundled import resolve_bundled
from llmlab.errors import LlmlabError
from llmlab.train.data import ShuffledSource


class SFTDataError(LlmlabError):
    pass


ROLES = ("system", "user", "assistant")


def resolve_asset(name: str) -> Path:
    """A path, or `bundled:NAME` for a file shipped in llmlab/assets/posttrain/"""
    return resolve_bundled(name, "posttrain", "data file", SFTDataError)


def read_jsonl(name: str) -> list[dict]:
    path = resolve_asset(name)
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SFTDataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    return rows


def read_conversations(name: str, split: str | None = None) -> list[list[dict]]:
    """Message lists from a jsonl of {"messages": [...]} (plus optional "system") objects; with
    `split`, only the rows whose "split" field equals it (e.g. a data recipe's train rows)."""
    conversations = []
    rows = read_jsonl(name)
    if split is not None:
        kept = [(n, r) for n, r in enumerate(rows, 1) if r.get("split") == split]
        if not kept:
            found = sorted({str(r.get("split")) for r in rows})
            raise SFTDataError(f"{name}: no rows with split '{split}' (found: {', '.join(found)})")
    else:
        kept = list(enumerate(rows, 1))
    for number, row in kept:
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise SFTDataError(f"{name}: line {number} has no 'messages' list")
        for m in messages:
            if (
                not isinstance(m, dict)
                or m.get("role") not in ROLES
                or not isinstance(m.get("content"), str)
            ):
                raise SFTDataError(
                    f"{name}: line {number}: each message needs a role ({', '.join(ROLES)}) and content"
                )
        if row.get("system") and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": row["system"]}] + messages
        conversations.append(messages)
    return conversations


@dataclass
class SFTExample:
    input_ids: list[int]
    loss_mask: list[int]


def _render(tokenizer, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character spans of its assistant turns."""
    text = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
        prefix = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not text.startswith(prefix):
            raise SFTDataError(
                "the chat template does not render conversations prefix by prefix; "
                "cannot locate assistant turns"
            )
        spans.append((start, len(prefix)))
    return text, spans


def render_conversation(
    tokenizer, messages: list[dict], system: str | None = None, max_length: int | None = None
) -> SFTExample:
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + list(messages)
    if not any(m["role"] == "assistant" for m in messages):
        raise SFTDataError("a conversation has no assistant turn to learn from")
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    mask = [int(any(s <= start < e for s, e in spans)) for start, _ in offsets]
    if max_length:
        ids, mask = ids[:max_length], mask[:max_length]
    return SFTExample(ids, mask)


def render_all(
    tokenizer, conversations, system: str | None = None, max_length: int | None = None
) -> list[SFTExample]:
    examples = [render_conversation(tokenizer, m, system, max_length) for m in conversations]
    return [e for e in examples if sum(e.loss_mask)]  # truncation may cut every answer token


def pack(examples: list[SFTExample], seq_len: int, eos_id: int | None) -> list[SFTExample]:
    """Concatenate examples (EOS between them) and cut into rows of seq_len + 1 tokens."""
    ids, mask = [], []
    for e in examples:
        ids += e.input_ids
        mask += e.loss_mask
        if eos_id is not None and (not e.input_ids or e.input_ids[-1] != eos_id):
            ids.append(eos_id)
            mask.append(0)
    row = seq_len + 1
    return [
        SFTExample(ids[i : i + row], mask[i : i + row]) for i in range(0, len(ids) - row + 1, row)
    ]


def collate(examples: list[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding is masked out of the loss."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[i, : len(e.loss_mask)] = torch.tensor(e.loss_mask)
    return {"input_ids": ids, "loss_mask": mask}


class ShuffledBatches(ShuffledSource):
    """Endless batches over a list of items, reshuffled each epoch (seeded by seed + epoch); resumable."""

    def __init__(self, items: list, batch_size: int, collate_fn, seed: int = 0):
        if not items:
            raise SFTDataError("no training examples (empty file, or every example was cut away)")
        self.items, self.collate_fn = items, collate_fn
        super().__init__(len(items), batch_size, seed)

    def _rng_seed(self):
        return self.seed + self.epoch  # as before the shared base: resumed runs keep their order

    def next_batch(self) -> dict:
        return self.collate_fn([self.items[i] for i in self.next_items()])

    def __iter__(self):  # one pass in file order, for evaluation
        for i in range(0, len(self.items), self.batch_size):
            yield self.collate_fn(self.items[i : i + self.batch_size])


def sft_batches(
    examples: list[SFTExample],
    batch_size: int,
    seq_len: int,
    pad_id: int,
    eos_id: int | None,
    packing: bool,
    seed: int = 0,
) -> ShuffledBatches:
    rows = (
        pack(examples, seq_len, eos_id)
        if packing
        else [SFTExample(e.input_ids[: seq_len + 1], e.loss_mask[: seq_len + 1]) for e in examples]
    )
    if packing and not rows:
        raise SFTDataError(
            f"not enough tokens to fill one packed row of {seq_len + 1}; lower data.seq_len"
        )
    return ShuffledBatches(rows, batch_size, lambda items: collate(items, pad_id), seed)
