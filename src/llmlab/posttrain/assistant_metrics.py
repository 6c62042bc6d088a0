"""Scores for the notes assistant's answers (`llmlab eval assistant`, docs/post-training.md).

    from llmlab.posttrain.assistant_metrics import (
        key_point_recall, faithfulness, answers_in_language, judge_pair, blind_compare)
    key_point_recall("Dropout 随机丢弃神经元，降低过拟合", reference, question)   # 0..1
    faithfulness(answer, passage, question=question)                          # 0..1
    answers_in_language("什么是 dropout？", answer)                    # True / False
    blind_compare(reference, base_answer, sft_answer, random.Random(0))   # "a" | "b" | "tie"

Definitions (all on lower-cased text):

- **content words** of a text: jieba's precise-mode words made of letters, digits or CJK characters,
  at least two characters long (Chinese single characters are mostly particles: 的, 对, 层 …),
  not all digits (list numbers), and not in llmlab's stop-word list (`data/assets/stopwords.txt`:
  是, 可以, 什么, the, is …).
- **key points** of a reference answer: its distinct content words that are not in the question
  (repeating the question earns nothing). **Key-point recall** = the share of them that occur in
  the answer (as a substring for a Chinese word, as a whole word for a Latin one — substring
  matching does not depend on how jieba happens to cut the answer).
- **faithfulness**: the answer is cut into sentences (at 。！？!?；; line breaks and ". "); a
  sentence's words are its content words not in the question; a sentence with such words is
  **supported** when at least `threshold` (default 0.5) of them occur in the passage (same
  matching); faithfulness = supported sentences / sentences with such words. An answer with none
  (empty, or only the question repeated) scores 0 — saying nothing is not faithful.
- **language**: the answer is in the question's language by script counts (`pair_language` of the
  instruction-data filters); a bare-term question ("Transformer") accepts Chinese or English.
- **pairwise judge**: each answer's content-word F1 against the reference's content words (set
  overlap, question words left out: precision punishes rambling, recall rewards coverage); the
  higher wins, equal is a tie.
  `blind_compare` shows the judge the two answers in a seeded random order, without names, and maps
  its verdict back — the judge never knows which system wrote which answer.
"""

from __future__ import annotations

import random
import re

from llmlab.data.textstats import word_list

THRESHOLD = 0.5  # share of a sentence's content words found in the passage for it to be supported

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORDLIKE = re.compile(r"^[\w\u3400-\u4dbf\u4e00-\u9fff]+$")
_SENTENCE_END = re.compile(r"[。！？!?；;\n]+|(?<=[.])\s+")
_MARKUP = re.compile(r"\*\*|__|`+|^#+\s*|^\s*(?:[-*+]|\d+[.、)])\s+", re.M)


def content_words(text: str) -> list[str]:
    """The content words of `text`, in order, repeats kept (see the module docstring)."""
    import jieba

    jieba.setLogLevel(60)  # its "building prefix dict" chatter goes to stderr otherwise
    stop = word_list("stopwords")
    out = []
    for token in jieba.lcut(text.lower()):
        token = token.strip()
        if len(token) < 2 or token.isdigit() or token in stop or not _WORDLIKE.match(token):
            continue
        out.append(token)
    return out


def key_points(reference: str, question: str = "") -> list[str]:
    """The reference's distinct content words not in the question, in order of first appearance."""
    asked = set(content_words(question))
    return [w for w in dict.fromkeys(content_words(reference)) if w not in asked]


def occurs(word: str, text: str) -> bool:
    """`word` in lower-cased `text`: a substring for Chinese, a whole word for Latin script."""
    text = text.lower()
    if _CJK.search(word):
        return word in text
    return re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", text) is not None


def key_point_recall(answer: str, reference: str, question: str = "") -> float:
    points = key_points(reference, question)
    if not points:
        return 0.0
    return sum(occurs(p, answer) for p in points) / len(points)


def sentences(text: str) -> list[str]:
    """`text` cut into sentences, Markdown emphasis, list marks and headings removed."""
    plain = _MARKUP.sub("", text)
    return [s.strip() for s in _SENTENCE_END.split(plain) if s.strip()]


def sentence_support(sentence: str, passage: str, question: str = "") -> float | None:
    """Share of the sentence's content words (those not in the question) found in the passage;
    None when it has none."""
    asked = set(content_words(question))
    words = [w for w in content_words(sentence) if w not in asked]
    if not words:
        return None
    return sum(occurs(w, passage) for w in words) / len(words)


def faithfulness(
    answer: str, passage: str, threshold: float = THRESHOLD, question: str = ""
) -> float:
    supports = [sentence_support(x, passage, question) for x in sentences(answer)]
    supports = [s for s in supports if s is not None]
    if not supports:
        return 0.0
    return sum(s >= threshold for s in supports) / len(supports)


def answers_in_language(question: str, answer: str) -> bool:
    from llmlab.data.ops.instruct import pair_language

    asked, answered = pair_language(question), pair_language(answer)
    if asked == "term":
        return answered in ("zh", "en")
    return answered == asked


def overlap_f1(answer: str, reference: str, question: str = "") -> float:
    """F1 of the answer's distinct content words against the reference's (question words left out)."""
    asked = set(content_words(question))
    ours = set(content_words(answer)) - asked
    theirs = set(content_words(reference)) - asked
    common = len(ours & theirs)
    if not common:
        return 0.0
    precision, recall = common / len(ours), common / len(theirs)
    return 2 * precision * recall / (precision + recall)


def judge_pair(reference: str, first: str, second: str, question: str = "") -> str:
    """ "first", "second" or "tie": the answer closer to the reference by overlap_f1."""
    one, two = overlap_f1(first, reference, question), overlap_f1(second, reference, question)
    if abs(one - two) < 1e-12:
        return "tie"
    return "first" if one > two else "second"


def blind_compare(reference: str, a: str, b: str, rng: random.Random, question: str = "") -> str:
    """ "a", "b" or "tie": the judge sees a and b in random order (drawn from `rng`), unnamed."""
    swapped = rng.random() < 0.5
    first, second = (b, a) if swapped else (a, b)
    verdict = judge_pair(reference, first, second, question)
    if verdict == "tie":
        return "tie"
    return "a" if (verdict == "first") != swapped else "b"
