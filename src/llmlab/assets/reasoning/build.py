"""Regenerate the bundled arithmetic word problems (deterministic): python src/llmlab/assets/reasoning/build.py

Templated one- and two-step problems (add, subtract, multiply, divide evenly, change from a note,
buy packs, spend twice) with small integers, names and objects drawn from fixed lists, so every
answer is a whole number a 135M model could reach. Seeded; the three splits are drawn from
separate random streams and no question text appears in two splits:

    arith-word-train.jsonl   400   for building PoT training data (rejection sampling)
    arith-word-dev.jsonl     100   for choosing prompts (`llmlab reason --search-prompts`)
    arith-word-test.jsonl    200   for reporting (docs/agents.md uses the first 50 or 100)
    arith-word-train-programs.jsonl   the train split with the generator's own program for each
                             problem ("program"): a clearly labelled teacher set for PoT SFT
                             (`llmlab reason --build-pot-data ... --teacher`), apart from what
                             the model finds by rejection sampling

Each line: {"question": ..., "answer": "N", "kind": template name, "steps": 1 or 2}.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivan", "Jo", "Kofi", "Lena",
         "Mei", "Nils", "Omar", "Pia", "Ravi", "Sara", "Tom", "Uma"]
ITEMS = ["apple", "pencil", "marble", "sticker", "book", "cookie", "stamp", "shell", "card", "egg"]


def add(r, name, item):
    a, b = r.randint(3, 60), r.randint(2, 40)
    return (f"{name} has {a} {item}s and buys {b} more. How many {item}s does {name} have now?", a + b, 1,
            f"{item}s = {a}\nbought = {b}\nprint({item}s + bought)")


def subtract(r, name, item):
    a = r.randint(10, 90)
    b = r.randint(1, a - 1)
    return (f"{name} has {a} {item}s and gives {b} of them to a friend. How many {item}s are left?", a - b, 1,
            f"{item}s = {a}\ngiven = {b}\nprint({item}s - given)")


def multiply(r, name, item):
    a, b = r.randint(2, 12), r.randint(2, 12)
    return (f"There are {a} boxes with {b} {item}s in each box. How many {item}s are there in total?", a * b, 1,
            f"boxes = {a}\nper_box = {b}\nprint(boxes * per_box)")


def divide(r, name, item):
    each, friends = r.randint(2, 12), r.randint(2, 9)
    return (f"{name} shares {each * friends} {item}s equally among {friends} friends. "
            f"How many {item}s does each friend get?", each, 1,
            f"{item}s = {each * friends}\nfriends = {friends}\nprint({item}s // friends)")


def packs(r, name, item):
    a, packs_, size = r.randint(1, 30), r.randint(2, 6), r.randint(2, 10)
    return (f"{name} has {a} {item}s and buys {packs_} packs with {size} {item}s in each pack. "
            f"How many {item}s does {name} have now?", a + packs_ * size, 2,
            f"{item}s = {a}\npacks = {packs_}\nper_pack = {size}\nprint({item}s + packs * per_pack)")


def spend(r, name, item):
    a = r.randint(20, 100)
    b = r.randint(1, a // 2)
    c = r.randint(1, a - b - 1)
    return (f"{name} had {a} dollars, spent {b} dollars on a book and {c} dollars on lunch. "
            f"How many dollars does {name} have left?", a - b - c, 2,
            f"money = {a}\nbook = {b}\nlunch = {c}\nprint(money - book - lunch)")


def change(r, name, item):
    price, count = r.randint(1, 9), r.randint(2, 6)
    note = next(n for n in (10, 20, 50, 100) if n > price * count)
    return (f"A {item} costs {price} dollars. {name} buys {count} {item}s and pays with a "
            f"{note}-dollar note. How many dollars of change does {name} get?", note - price * count, 2,
            f"price = {price}\ncount = {count}\nnote = {note}\nprint(note - price * count)")


TEMPLATES = [add, subtract, multiply, divide, packs, spend, change]
SPLITS = {"train": (400, 1), "dev": (100, 2), "test": (200, 3)}


def main():
    seen = set()
    for split, (count, seed) in SPLITS.items():
        r = random.Random(seed)
        rows = []
        while len(rows) < count:
            template = TEMPLATES[len(rows) % len(TEMPLATES)]
            question, answer, steps, program = template(r, r.choice(NAMES), r.choice(ITEMS))
            if question in seen:
                continue
            seen.add(question)
            rows.append({"question": question, "answer": str(answer), "kind": template.__name__,
                         "steps": steps, "program": program})
        write(f"arith-word-{split}.jsonl", [{k: v for k, v in row.items() if k != "program"}
                                             for row in rows])
        if split == "train":  # the generator's own programs: a labelled "teacher" set for PoT SFT
            write("arith-word-train-programs.jsonl", rows)


def write(name, rows):
    with open(HERE / name, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
