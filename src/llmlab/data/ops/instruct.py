"""Instruction-data operators for the notes assistant (`recipes/notes-instruct.yaml`, issue 19).

Records they produce and read — one instruction pair each:
    {id, instruction, response, analysis, passage, section, source, origin, text}
`passage` is the notes text the response must stay faithful to (empty for general pairs), `section`
the notes section the pair comes from (the unit the dev/test split keeps apart), `origin` "seed" or
"general", and `text` = instruction + "\\n" + response so the text filters and deduplicators apply.

    notes_seed_pairs        markdown_to_qa records → question → answer pairs (with the analysis)
    pair_length_filter      instruction and response lengths within bounds
    pair_language_filter    the response is in the instruction's language (zh / en)
    passage_overlap_filter  share of the response's words found in its passage
    general_mix             adds the bundled general instruction pairs (zh + en) at the end:
                            src/llmlab/assets/posttrain/general-mix.jsonl, 36 everyday pairs
                            (18 Chinese, 18 English) written by hand for this project, so the
                            assistant does not only parrot the notes
    split_by_section        train / dev / test by section, so no section is in two splits
"""

from __future__ import annotations

import hashlib
import json
import math
import re

from llmlab.data import textstats
from llmlab.data.ops.base import Filter, Formatter, HoldAllOp, Op, register
from llmlab.data.ops.markdown_qa import PATH_SEPARATOR
from llmlab.data.paths import resolve_path

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def pair_language(text: str) -> str:
    """ "zh", "en", "term" (a bare English term such as "Transformer": no language) or "other".

    Chinese when it has CJK characters and at least as many of them as English words, or too few
    English words to make a sentence ("LSTM和GRU"): Chinese technical text
    is full of English terms ("BatchNorm和LayerNorm有什么区别"), which fool whole-text language
    identifiers on short strings; counting scripts does not."""
    cjk, latin = len(_CJK.findall(text)), len(_LATIN_WORD.findall(text))
    if cjk and (cjk >= latin or latin <= 3):
        return "zh"
    if latin == 0:
        return "other"
    if not cjk and latin <= 3 and not re.search(r"[?.!:;,]", text):
        return "term"
    return "en"


def make_pair(instruction: str, response: str, **fields) -> dict:
    """A pair record with its `text` and id (a hash of instruction and response)."""
    instruction, response = instruction.strip(), response.strip()
    digest = hashlib.sha1(f"{instruction}\n{response}".encode()).hexdigest()[:16]
    record = {"id": digest, "instruction": instruction, "response": response, "analysis": "",
              "passage": "", "section": "", "source": "", "origin": "seed"}  # fmt: skip
    record.update(fields)
    record["text"] = f"{instruction}\n{response}"
    return record


@register("notes_seed_pairs")
class NotesSeedPairs(Formatter):
    """Turn markdown_to_qa records into question → answer pairs (analysis kept; passage = analysis + answer)."""

    def __init__(
        self,
        *,
        kinds: list[str] = ("question", "follow_up"),
        with_analysis: bool = False,
        section_level: int = 2,
    ):
        if section_level < 1:
            raise ValueError(f"section_level must be ≥ 1, got {section_level}")
        self.kinds = set(kinds)
        self.with_analysis = with_analysis
        self.section_level = section_level

    def format(self, record):
        if record.get("kind") not in self.kinds:
            return
        question = str(record.get("question") or "").strip()
        answer = str(record.get("answer") or "").strip()
        analysis = str(record.get("analysis") or "").strip()
        if not question or not answer:
            return
        response = f"{analysis}\n\n{answer}" if self.with_analysis and analysis else answer
        source = str(record.get("source") or record.get("section") or "")
        # A follow-up's path runs through its parent question, so level 2 keeps the two together.
        section = PATH_SEPARATOR.join(source.split(PATH_SEPARATOR)[: self.section_level])
        passage = "\n\n".join(x for x in (analysis, answer) if x)
        yield make_pair(question, response, analysis=analysis, passage=passage, section=section,
                        source=source, origin="seed")  # fmt: skip


@register("pair_length_filter")
class PairLengthFilter(Filter):
    """Keep pairs whose instruction and response lengths (characters) lie within the bounds."""

    def __init__(
        self,
        *,
        instruction_min: int = 2,
        instruction_max: int = 1000,
        response_min: int = 4,
        response_max: int = 4000,
    ):
        if instruction_min > instruction_max or response_min > response_max:
            raise ValueError("a minimum is larger than its maximum")
        self.bounds = (instruction_min, instruction_max, response_min, response_max)

    def compute(self, record):
        return {
            "instruction_chars": len(str(record.get("instruction") or "").strip()),
            "response_chars": len(str(record.get("response") or "").strip()),
        }

    def keep(self, stat):
        imin, imax, rmin, rmax = self.bounds
        return imin <= stat["instruction_chars"] <= imax and rmin <= stat["response_chars"] <= rmax


@register("pair_language_filter")
class PairLanguageFilter(Filter):
    """Keep pairs whose response is in the instruction's language (zh / en); a bare-term instruction takes any."""

    def __init__(self, *, languages: list[str] = ("zh", "en")):
        self.languages = set(languages)

    def compute(self, record):
        return {
            "instruction": pair_language(str(record.get("instruction") or "")),
            "response": pair_language(str(record.get("response") or "")),
        }

    def keep(self, stat):
        same = stat["instruction"] in (stat["response"], "term")
        return same and stat["response"] in self.languages


@register("passage_overlap_filter")
class PassageOverlapFilter(Filter):
    """Keep pairs whose response words (jieba for Chinese) are at least `min` found in their passage."""

    def __init__(self, *, min: float = 0.5, require_passage: bool = False):
        if not 0 <= min <= 1:
            raise ValueError(f"min must be in [0, 1], got {min}")
        self.min, self.require_passage = min, require_passage

    def compute(self, record):
        passage = str(record.get("passage") or "")
        if not passage.strip():
            return None  # a general pair: nothing to be faithful to
        response = textstats.words(str(record.get("response") or "").lower())
        if not response:
            return 0.0
        vocabulary = set(textstats.words(passage.lower()))
        return round(sum(w in vocabulary for w in response) / len(response), 4)

    def keep(self, stat):
        if stat is None:
            return not self.require_passage
        return stat >= self.min


@register("general_mix")
class GeneralMix(Op):
    """Pass the stream through and add the bundled general instruction pairs (zh + en) at its end."""

    kind = "selector"  # emits at finish(); the operators after it see these records too
    stateless = False

    def __init__(
        self, *, path: str = "pkg://llmlab/assets/posttrain/general-mix.jsonl", split: str = "train"
    ):
        self.path, self.split = resolve_path(path), split
        try:
            with open(self.path, encoding="utf-8") as handle:
                rows = [json.loads(line) for line in handle if line.strip()]
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read general pairs {path}: {exc}") from None
        bad = [
            i + 1 for i, r in enumerate(rows) if not (r.get("instruction") and r.get("response"))
        ]
        if bad:
            raise ValueError(f"{path}: line {bad[0]} needs 'instruction' and 'response'")
        self.rows = rows

    def process(self, batch, trace):
        return batch

    def finish(self, trace):
        return [
            make_pair(
                r["instruction"],
                r["response"],
                section=f"general/{r.get('lang', '')}",
                origin="general",
                split=self.split,
            )  # fmt: skip
            for r in self.rows
        ]


@register("split_by_section")
class SplitBySection(HoldAllOp):
    """Assign split = train / dev / test by `key` (the section), never putting one section in two splits."""

    kind = "selector"

    def __init__(
        self, *, dev: float = 0.15, test: float = 0.15, key: str = "section", seed: int = 0
    ):
        if dev < 0 or test < 0 or dev + test >= 1:
            raise ValueError(f"dev ({dev}) and test ({test}) must be ≥ 0 and sum below 1")
        self.dev, self.test, self.key, self.seed = dev, test, key, seed
        # Held until the end: the split needs the number of sections. The notes give a few hundred
        # pairs at most, so holding them is cheap.
        super().__init__()

    def assignment(self, sections: list[str]) -> dict[str, str]:
        """Section → split: sections in a seeded hash order, the first ones to test, then dev."""
        order = sorted(
            set(sections), key=lambda s: hashlib.sha1(f"{self.seed}:{s}".encode()).hexdigest()
        )
        n = len(order)

        def count(fraction: float) -> int:
            return (
                min(n - 1, max(1, math.floor(fraction * n + 0.5))) if fraction > 0 and n > 1 else 0
            )

        n_test = count(self.test)
        n_dev = min(count(self.dev), n - 1 - n_test)
        return {
            s: "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
            for i, s in enumerate(order)
        }

    def finish(self, trace):
        to_split = [r for r in self.held if not r.get("split")]
        missing = [r for r in to_split if not r.get(self.key)]
        for record in missing:
            trace.failed(record, f"{self.name}: record has no {self.key!r} to split by")
        to_split = [r for r in to_split if r.get(self.key)]
        assignment = self.assignment([str(r[self.key]) for r in to_split])
        out = []
        for record in self.held:
            if record.get("split"):
                out.append(record)
            elif record.get(self.key):
                out.append({**record, "split": assignment[str(record[self.key])]})
        self.held = []
        return out
