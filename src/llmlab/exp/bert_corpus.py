"""Data for the bert-mlm-nsp experiment: a bundled pretraining corpus, a word-level tokenizer and a
small labelled topic task whose test words never appear in the labelled training set.

    from llmlab.exp.bert_corpus import write_corpus, word_tokenizer, topic_task
    write_corpus()                      # regenerates llmlab/assets/lab_bert_corpus.txt (deterministic)

The corpus is a set of short documents, each about one thing (a goat, a plum, a truck, a hammer):
sentences that say what it does ("the goat eats grass.") mixed with neutral sentences that could be
about anything ("i saw the goat yesterday."). Documents are separated by blank lines, which is the
document format `llmlab.train.bert.build_nsp_pairs` reads; consecutive sentences share their
subject, so next-sentence prediction is learnable.

The downstream task labels *neutral* sentences with the topic of the thing they mention. Its
labelled training rows use half of each topic's words; the test rows use the other half, so the
label can only come from what the encoder learned about those words from unlabelled text.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

CORPUS = Path(__file__).resolve().parent.parent / "assets" / "lab_bert_corpus.txt"
SPECIALS = ["<|pad|>", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

TOPICS = {  # topic: (words — first half labelled in fine-tuning, second half only tested; what they do)
    "animal": (
        ["cat", "dog", "horse", "cow", "sheep", "goat", "pig", "duck"],
        [
            "eats grass",
            "runs in the field",
            "sleeps in the barn",
            "has four legs",
            "drinks from the river",
            "lives on the farm",
        ],
    ),
    "fruit": (
        ["apple", "banana", "orange", "grape", "pear", "plum", "cherry", "peach"],
        [
            "is sweet",
            "grows on a tree",
            "is eaten fresh",
            "is sold at the market",
            "has a thin skin",
            "is ripe in summer",
        ],
    ),
    "vehicle": (
        ["car", "bus", "truck", "train", "bike", "boat", "van", "taxi"],
        [
            "drives on the road",
            "has four wheels",
            "needs fuel",
            "carries people",
            "is parked outside",
            "goes very fast",
        ],
    ),
    "tool": (
        ["hammer", "chisel", "drill", "knife", "axe", "wrench", "shovel", "ladder"],
        [
            "cuts the wood",
            "is kept in the shed",
            "has a handle",
            "fixes the fence",
            "is made of steel",
            "helps the builder",
        ],
    ),
}
NEUTRAL = [
    "i saw the {} yesterday",
    "we talked about the {}",
    "there is a {} near the house",
    "my friend likes the {}",
    "she drew a picture of the {}",
    "the story was about a {}",
]
LABELLED_TEMPLATES = NEUTRAL[:4]  # fine-tuning rows; the test for seen words uses the other two


def write_corpus(path: Path = CORPUS, documents: int = 1600, seed: int = 0) -> None:
    """Deterministic corpus: documents of 4–7 sentences about one word, blank-line separated."""
    rng = random.Random(seed)
    docs = []
    for _ in range(documents):
        topic = rng.choice(list(TOPICS))
        words, facts = TOPICS[topic]
        word = rng.choice(words)
        sentences = []
        for fact in rng.sample(facts, rng.randint(3, 5)):
            sentences.append(f"the {word} {fact}.")
        for template in rng.sample(NEUTRAL, rng.randint(1, 2)):
            sentences.insert(rng.randrange(len(sentences) + 1), template.format(word) + ".")
        docs.append(" ".join(sentences))
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")


def word_tokenizer(text: str):
    """A `tokenizers.Tokenizer`: one id per word or punctuation mark of `text`, plus the BERT specials
    `llmlab.train.bert.PairEncoder` looks up ([CLS] [SEP] [MASK] <|pad|>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted(set(re.findall(r"\w+|[^\w\s]", text)))
    vocab = {token: i for i, token in enumerate(SPECIALS + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(SPECIALS)
    return tokenizer


def topic_task() -> dict[str, list[tuple[str, int]]]:
    """(sentence, topic index) rows: 'train' (labelled words, 4 templates), 'test_seen' (labelled
    words, the 2 other templates) and 'test_unseen' (the other words, all templates)."""
    rows = {"train": [], "test_seen": [], "test_unseen": []}
    for label, (words, _) in enumerate(TOPICS.values()):
        half = len(words) // 2
        for word in words[:half]:
            rows["train"] += [(t.format(word), label) for t in LABELLED_TEMPLATES]
            rows["test_seen"] += [
                (t.format(word), label) for t in NEUTRAL if t not in LABELLED_TEMPLATES
            ]
        for word in words[half:]:
            rows["test_unseen"] += [(t.format(word), label) for t in NEUTRAL]
    return rows
