"""Evaluate the notes assistant: base vs SFT, with and without retrieved passages.

    llmlab eval assistant --model gemma3-270m --adapter bundled:notes-gemma3 --split dev,test

    from llmlab.posttrain.assistant_eval import load_items, evaluate
    report = evaluate(load_items(path, "test"), "gemma3-270m", adapter="DIR", index=index)

Every question of the split is asked to each system (the base model; the base + LoRA adapter when
one is given) in each condition: **no-rag** (the question under the SFT data's system prompt) and
**rag** (the top-k passages of the notes index, numbered, under the RAG answer prompt of
rag/answer.py). Each system renders those same messages with its own chat format, as `llmlab
chat` would: the base with the tokenizer's own (for Gemma 3 270M the question/answer frame, which a
base model continues), the SFT model with the template saved beside its adapter
(`chat_template.jinja`: Gemma's chat turns for the notes adapter). Greedy decoding, at most `max_tokens` new
tokens, all prompts of a system in one engine batch (llmlab.engine.LLM, with a progress bar).

Scores (posttrain/assistant_metrics.py): key-point recall against the reference answer,
faithfulness to the passage the model was given (the retrieved passages with rag; without, the
notes passage the reference answer comes from), the answer-in-the-question's-language rate, and a
blind pairwise comparison: SFT vs base in each condition when there is an adapter, else base with
vs without passages.
"""

from __future__ import annotations

import gc
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from llmlab.errors import LlmlabError
from llmlab.posttrain import assistant_metrics as metrics

# The SFT data's system prompt (recipes/notes-instruct.yaml, qa_to_chat), used without passages.
SYSTEM = "你是机器学习面试助手。回答要准确、简洁，并以提供的笔记为依据。"
CONDITIONS = ("no-rag", "rag")


@dataclass
class Item:
    question: str
    reference: str
    passage: str = ""
    section: str = ""
    hits: list = field(default_factory=list)  # retrieved passages (rag condition)

    @property
    def context(self) -> str:
        return "\n\n".join(f"{h.heading}\n{h.text}" for h in self.hits)


SPLITS = ("train", "dev", "test")


def parse_splits(text: str) -> set[str]:
    """ "test", "dev,test" or "all" → the set of split names."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {"all"}:
        return set(SPLITS)
    unknown = names - set(SPLITS)
    if unknown or not names:
        raise LlmlabError(
            f"--split {text!r}: choose among {', '.join(SPLITS)} (comma-separated) or all"
        )
    return names


def load_items(path: str | Path, split: str = "test") -> list[Item]:
    """The pairs of `split` ("test", "dev,test", "all") of an instruction-data jsonl
    (`llmlab data run recipes/notes-instruct.yaml`: instruction, response, passage, section, split)."""
    splits = parse_splits(split)
    path = Path(path)
    if not path.is_file():
        raise LlmlabError(
            f"{path}: no such data file (make it with `llmlab data run recipes/notes-instruct.yaml`)"
        )
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise LlmlabError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict) or not row.get("instruction") or not row.get("response"):
            raise LlmlabError(f"{path}:{number}: needs 'instruction' and 'response'")
        if row.get("split") not in splits:
            continue
        items.append(
            Item(
                str(row["instruction"]),
                str(row["response"]),
                str(row.get("passage") or ""),
                str(row.get("section") or ""),
            )
        )
    if not items:
        raise LlmlabError(f"{path}: no pairs in split '{split}'")
    return items


def retrieve(items: list[Item], index, k: int) -> None:
    mode = "hybrid" if index.vectors is not None else "bm25"  # a BM25-only index has no dense side
    for item in items:
        item.hits = index.search(item.question, k=k, mode=mode)


def messages(item: Item, condition: str) -> list[dict]:
    if condition == "rag":
        from llmlab.rag.answer import build_messages

        return build_messages(item.question, item.hits)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": item.question}]


def generate_answers(
    model: str,
    adapter: str | None,
    prompts: list[list[dict]],
    max_tokens: int,
    dtype: str | None = None,
    log=None,
) -> list[str]:
    """Greedy answers of `model` (+ `adapter`, merged) to each chat, in one engine batch. The
    tokenizer `llmlab.load` gives renders the chats (an adapter's own template when it has one)."""
    import llmlab
    from llmlab.engine import LLM, SamplingParams
    from llmlab.loading import require_generative
    from llmlab.tokenize.tokenizer import apply_chat

    log = log or sys.stderr
    require_generative(model, "answer questions")
    name = f"{model} + {adapter}" if adapter else model
    print(f"loading {name} …", file=log, flush=True)
    net, tokenizer = llmlab.load(
        model, device="cpu", dtype=dtype, adapters=[adapter] if adapter else [], merge_adapters=True
    )
    llm = LLM(net, tokenizer, kv_memory="256MiB")
    params = SamplingParams(
        temperature=0.0, max_tokens=max_tokens, stop=list(tokenizer.chat_stop_strings)
    )
    ids = [apply_chat(tokenizer, chat) for chat in prompts]
    print(f"{name}: {len(ids)} prompts, at most {max_tokens} new tokens each", file=log, flush=True)
    outputs = llm.generate(ids, params, progress=True)
    del llm, net
    gc.collect()
    return [out.text.strip() for out in outputs]


def score(item: Item, condition: str, answer: str, threshold: float) -> dict:
    passage = item.context if condition == "rag" else item.passage
    return {
        "key_point_recall": metrics.key_point_recall(answer, item.reference, item.question),
        "faithfulness": metrics.faithfulness(answer, passage, threshold, item.question),
        "language": float(metrics.answers_in_language(item.question, answer)),
    }


def _mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else 0.0


def evaluate(
    items: list[Item],
    model: str,
    adapter: str | None = None,
    index=None,
    conditions=CONDITIONS,
    k: int = 3,
    max_tokens: int = 160,
    threshold: float = metrics.THRESHOLD,
    seed: int = 0,
    dtype: str | None = None,
    log=None,
    reuse: dict | None = None,
) -> dict:
    """The report: settings, per-system/condition means, pairwise counts and every answer.

    `reuse`, an earlier report, supplies the base model's answers where it asked the same model
    the same question with the same passages and settings (greedy decoding gives the same answer
    again); the SFT model is always asked afresh, since its adapter may have changed."""
    conditions = [c for c in CONDITIONS if c in conditions]
    if not conditions:
        raise LlmlabError("nothing to evaluate: choose rag, no-rag or both")
    if "rag" in conditions:
        if index is None:
            raise LlmlabError("the rag condition needs an index")
        retrieve(items, index, k)
    systems = {"base": None, **({"sft": adapter} if adapter else {})}
    asked = [(item, c) for c in conditions for item in items]
    settings = {"model": model, "k": k, "max_tokens": max_tokens, "dtype": dtype}
    cached = _cached_answers(reuse, settings)
    answers: dict[tuple[str, str], list[str]] = {}
    reused = 0
    for system, system_adapter in systems.items():
        texts = [cached.get(_key(item, c)) if system == "base" else None for item, c in asked]
        missing = [n for n, text in enumerate(texts) if text is None]
        reused += len(texts) - len(missing)
        if missing:
            chats = [messages(*asked[n]) for n in missing]
            new = generate_answers(model, system_adapter, chats, max_tokens, dtype, log)
            for n, text in zip(missing, new, strict=True):
                texts[n] = text
        for n, condition in enumerate(conditions):
            answers[system, condition] = texts[n * len(items) : (n + 1) * len(items)]

    rows, summary = [], {}
    for i, item in enumerate(items):
        row = {"question": item.question, "reference": item.reference, "section": item.section}
        row["retrieved"] = [h.heading for h in item.hits]
        row["answers"] = {}
        for (system, condition), texts in answers.items():
            row["answers"][f"{system}/{condition}"] = {
                "text": texts[i],
                **score(item, condition, texts[i], threshold),
            }
        rows.append(row)
    for system in systems:
        summary[system] = {}
        for condition in conditions:
            key = f"{system}/{condition}"
            summary[system][condition] = {
                m: _mean(r["answers"][key][m] for r in rows)
                for m in ("key_point_recall", "faithfulness", "language")
            }

    pairwise = []
    if adapter:
        pairs = [(f"sft/{c}", f"base/{c}") for c in conditions]
    elif len(conditions) == 2:
        pairs = [("base/rag", "base/no-rag")]
    else:
        pairs = []
    for a, b in pairs:
        rng = random.Random(f"{seed}|{a}|{b}")  # a seeded order per comparison
        verdicts = [
            metrics.blind_compare(
                r["reference"], r["answers"][a]["text"], r["answers"][b]["text"], rng, r["question"]
            )
            for r in rows
        ]
        pairwise.append(
            {
                "a": a,
                "b": b,
                "a_wins": verdicts.count("a"),
                "b_wins": verdicts.count("b"),
                "ties": verdicts.count("tie"),
            }
        )
        for r, v in zip(rows, verdicts, strict=True):
            r.setdefault("pairwise", {})[f"{a} vs {b}"] = {"a": a, "b": b, "tie": "tie"}[v]
    return {
        "model": model,
        "adapter": adapter,
        "questions": len(items),
        "conditions": list(conditions),
        "k": k,
        "max_tokens": max_tokens,
        "dtype": dtype,
        "reused_base_answers": reused,
        "support_threshold": threshold,
        "seed": seed,
        "summary": summary,
        "pairwise": pairwise,
        "items": rows,
    }


def _key(item: Item, condition: str) -> tuple:
    retrieved = tuple(h.heading for h in item.hits) if condition == "rag" else ()
    return (condition, item.question, retrieved)


def _cached_answers(report: dict | None, settings: dict) -> dict:
    """Base answers of an earlier report made with the same settings, by (condition, question,
    retrieved headings); empty when there is none or its settings differ."""
    if not report or any(report.get(name) != value for name, value in settings.items()):
        return {}
    cached = {}
    for row in report.get("items", []):
        for key, answer in row.get("answers", {}).items():
            system, _, condition = key.partition("/")
            if system == "base":
                retrieved = tuple(row.get("retrieved", [])) if condition == "rag" else ()
                cached[condition, row["question"], retrieved] = answer["text"]
    return cached


def format_table(report: dict) -> str:
    """The summary as a Markdown table plus one line per pairwise comparison."""
    lines = [
        "| system | context | key-point recall | faithfulness | answers in question's language |",
        "|---|---|---:|---:|---:|",
    ]
    for system, by_condition in report["summary"].items():
        for condition, m in by_condition.items():
            lines.append(
                f"| {system} | {condition} | {m['key_point_recall']:.3f} | "
                f"{m['faithfulness']:.3f} | {m['language']:.3f} |"
            )
    if report["pairwise"]:
        lines.append("")  # a line right under a Markdown table would become one of its rows
    for p in report["pairwise"]:
        lines.append(
            f"Pairwise, {p['a']} vs {p['b']}: {p['a_wins']} wins, {p['b_wins']} losses, "
            f"{p['ties']} ties (blind judge: content-word F1 with the reference)."
        )
    return "\n".join(lines)


def _cell(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one table row: line breaks become spaces
    if len(text) > limit:
        text = text[:limit].rstrip() + " …"
    return (text or "(empty)").replace("|", "\\|")


def format_examples(report: dict, n: int = 10, limit: int = 160) -> str:
    """`n` answers side by side as a Markdown table — question, context, reference, base, SFT —
    each question in every condition before the next question; cells cut at `limit` characters."""
    systems = list(report["summary"])
    header = "| question | context | reference | " + " | ".join(systems) + " |"
    lines = [header, "|" + "---|" * (3 + len(systems))]
    rows = [(item, c) for item in report["items"] for c in report["conditions"]][:n]
    for item, condition in rows:
        cells = [_cell(item["question"], limit), condition, _cell(item["reference"], limit)]
        cells += [_cell(item["answers"][f"{s}/{condition}"]["text"], limit) for s in systems]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
