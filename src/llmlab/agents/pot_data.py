"""Program-of-thought training data by rejection sampling: sample programs, keep those the sandbox verifies.

    llmlab reason --build-pot-data runs/pot/verified.jsonl --problems bundled:arith-word-train.jsonl \\
        --limit 200 --n 8 --shots pot-shots --temperature 0.8
    llmlab train lora --config recipes/sft-pot-smollm2.yaml          # SFT on what was kept

    from llmlab.agents.pot_data import build_pot_data
    stats = build_pot_data("smollm2-135m-instruct", problems, "verified.jsonl", n=8)

The notes' recipe: for each training problem the model writes `n` programs at temperature > 0
(llmlab.posttrain.best_of_n: one engine request with n samples per problem); each runs in
llmlab.agents.sandbox through the `program_answer` reward; a program is kept only when the last
number it prints equals the problem's answer. Worked programs (`--shots`, a prompts/reason file
with `method: pot-shots`) can precede the question as earlier chat turns, since a 135M model rarely
writes a working program unaided; the kept rows carry only the plain `pot` prompt (system + the
question's user turn), so the trained model learns to write the program without the examples.
The assistant turn is the verified program itself, in a code fence: exactly the code that ran.

`teacher_rows` gives programs from the problem generator's own arithmetic (src/llmlab/assets/
reasoning/build.py knows each template's computation and writes arith-word-train-programs.jsonl),
checked in the sandbox too and labelled `"source": "teacher"`: a separate set, never counted as
what the model found, for when the model's own yield is too small to train on.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from llmlab.agents.prompts import load_prompt
from llmlab.agents.reasoning import add_print, extract_code
from llmlab.errors import LlmlabError

TEACHER_FILE = "bundled:arith-word-train-programs.jsonl"  # written by assets/reasoning/build.py


def fence(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


def pot_turns(prompt: dict, question: str) -> dict:
    return {"role": "user", "content": prompt["user"].format(question=question).strip()}


def shot_turns(prompt: dict, shots: str | None) -> list[dict]:
    """Worked examples as alternating user / assistant turns (empty without shots)."""
    if not shots:
        return []
    data = load_prompt("reason", shots)
    if data.get("method") != "pot-shots" or not isinstance(data.get("shots"), list):
        raise LlmlabError(f"prompt '{data['name']}' is not a pot-shots file (method: pot-shots)")
    turns = []
    for shot in data["shots"]:
        turns += [pot_turns(prompt, shot["question"])]
        turns += [{"role": "assistant", "content": fence(shot["program"])}]
    return turns


def prompt_rows(problems: list[dict], prompt: str = "pot", shots: str | None = None) -> list[dict]:
    """best-of-n prompt lines: the shots, then the problem in the `prompt` template's user turn."""
    template = load_prompt("reason", prompt)
    before = shot_turns(template, shots)
    return [
        {"prompt": before + [pot_turns(template, p["question"])], "answer": str(p["answer"])}
        for p in problems
    ]


def verified_program(text: str) -> str:
    """The program the sandbox ran for this reply (its code block, a print added if missing)."""
    return add_print(extract_code(text))


def build_pot_data(
    model: str,
    problems: list[dict],
    out: str,
    n: int = 8,
    keep: int = 1,
    prompt: str = "pot",
    shots: str | None = "pot-shots",
    temperature: float = 0.8,
    max_new_tokens: int = 96,
    seed: int = 0,
    adapter: str = "",
) -> dict:
    """Rejection-sample PoT programs for `problems`; write the verified ones to `out` as SFT rows."""
    from llmlab.posttrain.best_of_n import best_of_n

    if not problems:
        raise LlmlabError("no problems to sample programs for")
    template = load_prompt("reason", prompt)
    if template.get("method") != "pot":
        raise LlmlabError(f"prompt '{template['name']}' is not a pot prompt")
    if template.get("prefill"):
        # best-of-n samples whole replies; a prefilled fence would be missing from the kept text
        raise LlmlabError(f"prompt '{template['name']}' prefills the reply; use one without")
    rows = prompt_rows(problems, prompt, shots)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llmlab-pot-") as scratch:  # prompts, raw kept rows
        prompts_file = os.path.join(scratch, "prompts.jsonl")
        sampled = os.path.join(scratch, "kept.jsonl")
        with open(prompts_file, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        stats = best_of_n(
            model,
            prompts_file,
            sampled,
            n=n,
            keep=keep,
            reward="program_answer",
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            system=template.get("system"),
            adapter=adapter,
            seed=seed,
        )
        kept = [json.loads(line) for line in Path(sampled).read_text(encoding="utf-8").splitlines()]
    for row in kept:  # the assistant turn becomes exactly the program that passed
        row["messages"][-1]["content"] = fence(verified_program(row["messages"][-1]["content"]))
        row["source"] = "model"
    write_rows(out, kept)
    return {
        "model": model,
        "problems": len(problems),
        "samples": stats["samples"],
        "n": n,
        "shots": shots or None,
        "prompt": prompt,
        "temperature": temperature,
        "programs_kept": len(kept),
        "problems_solved": stats["prompts"] - stats["prompts_without_acceptable_sample"],
        "yield": round(len(kept) / max(len(problems), 1), 4),
        "samples_correct": round(stats["mean_reward_all"], 4),  # the reward is 0/1
        "out": out,
    }


def write_rows(out: str, rows: list[dict]) -> None:
    """Write jsonl through a temporary file, so a failed run never leaves half a file at `out`."""
    staged = f"{out}.partial"
    with open(staged, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(staged, out)


def teacher_rows(
    problems: list[dict], prompt: str = "pot", program_file: str = TEACHER_FILE
) -> list[dict]:
    """The problem generator's own programs for these problems (matched by question), checked in
    the sandbox like the model's and labelled `"source": "teacher"`."""
    from llmlab.agents.reasoning import normalize, program_answers, read_problems

    template = load_prompt("reason", prompt)
    known = {row["question"]: row for row in read_problems(program_file) if row.get("program")}
    chosen = [known[p["question"]] for p in problems if p["question"] in known]
    if not chosen:
        raise LlmlabError(f"{program_file} has a program for none of these problems")
    printed = program_answers([row["program"] for row in chosen])
    system = [{"role": "system", "content": template["system"]}] if template.get("system") else []
    return [
        {
            "messages": system
            + [pot_turns(template, row["question"])]
            + [{"role": "assistant", "content": fence(row["program"])}],
            "source": "teacher",
        }
        for row, answer in zip(chosen, printed)
        if answer is not None and answer == normalize(row["answer"])
    ]
