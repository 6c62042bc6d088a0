"""Reasoning methods on word problems: direct, chain of thought, program of thought, self-consistency.

    from llmlab.agents.reasoning import read_problems, solve
    problems = read_problems("bundled:arith-word-test.jsonl")[:50]
    result = solve(llm, problems, "cot-sc", n=8)     # llm: an llmlab.engine.LLM
    result.accuracy, result.completion_tokens, result.seconds

Methods: greedy (answer directly), cot (think step by step, greedy), cot-sc (n sampled chains, the
majority answer wins), pot (the model writes a program; the sandbox runs it; the last number it
prints is the answer), pot-sc (n programs, majority over what they print). The n samples of a
problem are one engine request with `SamplingParams(n=...)`, so they share the prompt's KV blocks.
Prompts are YAML files under llmlab/prompts/reason/ (`method`, `system`, `user` with {question},
optional `prefill` that starts the model's reply and `stop` strings).
"""

from __future__ import annotations

import ast
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from llmlab.agents.prompts import list_prompts, load_prompt
from llmlab.errors import LlmlabError

METHODS = {  # name → (prompt family, sampled n times and voted)
    "greedy": ("greedy", False),
    "cot": ("cot", False),
    "cot-sc": ("cot", True),
    "pot": ("pot", False),
    "pot-sc": ("pot", True),
}
DEFAULT_PROMPT = {"greedy": "direct", "cot": "cot", "pot": "pot"}
MAX_TOKENS = {"greedy": 24, "cot": 160, "pot": 128}
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
ANSWER_IS = re.compile(r"answer\s+is\s*[:$]*\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)
PROGRAM_TIMEOUT_S = 5.0
PROGRAM_MEMORY_MB = 256


def read_problems(name: str) -> list[dict]:
    """A jsonl of {"question", "answer"} lines (or `bundled:arith-word-test.jsonl`)."""
    import json

    from llmlab.bundled import resolve_bundled

    path = resolve_bundled(name, "reasoning", "problem file")
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LlmlabError(f"{name}: line {number} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "question" not in row or "answer" not in row:
            raise LlmlabError(f"{name}: line {number} needs 'question' and 'answer'")
        problems.append(row)
    if not problems:
        raise LlmlabError(f"{name}: no problems")
    return problems


def normalize(value) -> str | None:
    """'1,200' / '1200.0' / 1200 → '1200'; None for anything that is not a number."""
    if value is None:
        return None
    try:
        number = float(str(value).replace(",", "").strip())
    except ValueError:
        return None
    if number != number or abs(number) > 1e15:  # NaN or absurd
        return None
    return str(int(number)) if number.is_integer() else f"{number:.6g}"


def extract_answer(text: str) -> str | None:
    """'The answer is N' if present, else the last number in the text."""
    said = ANSWER_IS.findall(text)
    if said:
        return normalize(said[-1])
    numbers = NUMBER.findall(text)
    return normalize(numbers[-1]) if numbers else None


def majority_vote(answers: list[str | None]) -> tuple[str | None, int]:
    """The most frequent non-empty answer and its count; ties go to the one seen first."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0
    return counts.most_common(1)[0]


def extract_code(text: str) -> str:
    """The first fenced code block (closed or cut off), else the whole reply."""
    match = CODE_BLOCK.search(text)
    return (match.group(1) if match else text).strip()


def add_print(code: str) -> str:
    """Programs that compute but never print get `print(<last assigned name or expression>)`."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code  # the sandbox reports the error
    if "print(" in code or not tree.body:
        return code
    last = tree.body[-1]
    if isinstance(last, ast.Expr):
        return code + f"\nprint({ast.unparse(last.value)})"
    if isinstance(last, ast.Assign) and isinstance(last.targets[0], ast.Name):
        return code + f"\nprint({last.targets[0].id})"
    return code


def run_program(code: str) -> str | None:
    """The last number a program prints, run in the sandbox (never in this process); None when it
    prints none, fails, times out, or does not even parse (checked first: no sandbox start for it)."""
    from llmlab.agents.sandbox import run_python

    try:
        ast.parse(code)  # parsing executes nothing; it only spares the sandbox's ~0.2 s start
    except (SyntaxError, ValueError):
        return None
    result = run_python(code, timeout_s=PROGRAM_TIMEOUT_S, memory_mb=PROGRAM_MEMORY_MB)
    numbers = NUMBER.findall(result.stdout) if result.reason == "ok" else []
    return normalize(numbers[-1]) if numbers else None


def program_answer(reply: str) -> str | None:
    """What a PoT reply's program prints: its code block (print added if missing), sandboxed."""
    return run_program(add_print(extract_code(reply)))


def program_answers(programs: list[str], workers: int = 4) -> list[str | None]:
    """Run each program in the sandbox (identical programs once); the last printed number each."""
    unique = list(dict.fromkeys(programs))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        answers = dict(zip(unique, pool.map(run_program, unique)))
    return [answers[p] for p in programs]


@dataclass
class MethodResult:
    method: str
    prompt: str
    n: int
    correct: int
    total: int
    prompt_tokens: int  # once per problem: the n samples share the prompt's KV blocks
    completion_tokens: int  # all samples
    seconds: float  # generation + sandbox
    sandbox_seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.total, 1)

    def summary(self) -> dict:
        return {
            "method": self.method,
            "prompt": self.prompt,
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "correct": self.correct,
            "total": self.total,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_per_problem": round(
                (self.prompt_tokens + self.completion_tokens) / max(self.total, 1), 1
            ),
            "seconds": round(self.seconds, 2),
            "seconds_per_problem": round(self.seconds / max(self.total, 1), 3),
            "sandbox_seconds": round(self.sandbox_seconds, 2),
        }


def render(tokenizer, prompt: dict, question: str) -> list[int]:
    """Chat-template ids; a prompt's `prefill` (e.g. an opening code fence) starts the reply."""
    from llmlab.tokenize.tokenizer import apply_chat

    messages = [{"role": "user", "content": prompt["user"].format(question=question).strip()}]
    if prompt.get("system"):
        messages.insert(0, {"role": "system", "content": prompt["system"]})
    ids = apply_chat(tokenizer, messages)
    if prompt.get("prefill"):
        ids += tokenizer.encode(prompt["prefill"], add_special_tokens=False)
    return ids


def stop_strings(template: dict, tokenizer) -> list[str]:
    """The prompt's own stops, else the chat format's: a base model in the question/answer frame
    (Gemma 3 270M) never ends its turn, so "\nQuestion:" / blank line end it, as in `llmlab chat`."""
    own = list(template.get("stop") or [])
    if own:
        return own
    stops = list(getattr(tokenizer, "chat_stop_strings", None) or [])
    if "\nQuestion:" in stops:  # the Q/A frame: a new "Answer:" line is another turn, too
        stops.append("\nAnswer:")  # (Gemma 3 base repeats "10\nAnswer: 11\nAnswer: 12 ...")
    return stops


def solve(
    llm,
    problems: list[dict],
    method: str,
    n: int = 8,
    prompt: str | None = None,
    temperature: float = 0.7,
    max_tokens: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> MethodResult:
    """Run one method over the problems with the engine; score against each problem's answer."""
    from llmlab.engine import SamplingParams

    if method not in METHODS:
        raise LlmlabError(f"unknown method '{method}' (choose {', '.join(METHODS)})")
    family, voted = METHODS[method]
    template = load_prompt("reason", prompt or DEFAULT_PROMPT[family])
    if template.get("method", family) != family:
        raise LlmlabError(f"prompt '{template['name']}' is for {template['method']}, not {family}")
    samples = n if voted else 1
    if samples < 1:
        raise LlmlabError(f"--n must be at least 1, got {n}")
    params = SamplingParams(
        n=samples,
        temperature=temperature if voted else 0.0,
        max_tokens=max_tokens or MAX_TOKENS[family],
        seed=seed,
        stop=stop_strings(template, llm.tokenizer),
    )
    start = time.monotonic()
    ids = [render(llm.tokenizer, template, p["question"]) for p in problems]
    outputs = llm.generate(ids, params, progress=progress)
    prefill = template.get("prefill") or ""
    texts = [[prefill + o.text for o in out.outputs] for out in outputs]
    sandbox_start = time.monotonic()
    if family == "pot":
        programs = [add_print(extract_code(t)) for group in texts for t in group]
        flat = program_answers(programs)
        answers = [flat[i * samples : (i + 1) * samples] for i in range(len(problems))]
    else:
        answers = [[extract_answer(t) for t in group] for group in texts]
    sandbox_seconds = time.monotonic() - sandbox_start if family == "pot" else 0.0
    result = MethodResult(
        method,
        template["name"],
        samples,
        0,
        len(problems),
        sum(len(i) for i in ids),
        sum(len(o.token_ids) for out in outputs for o in out.outputs),
        0.0,
        sandbox_seconds,
    )
    for problem, group, votes in zip(problems, texts, answers):
        chosen, count = majority_vote(votes)
        right = chosen is not None and chosen == normalize(problem["answer"])
        result.correct += right
        result.rows.append(
            {
                "question": problem["question"],
                "answer": str(problem["answer"]),
                "predicted": chosen,
                "votes": count,
                "answers": votes,
                "correct": right,
                "sample": group[0],
            }
        )
    result.seconds = time.monotonic() - start
    return result


def search_prompts(
    llm, dev: list[dict], test: list[dict], method: str, n: int = 8, **options
) -> dict:
    """Score every candidate prompt of the method's family on dev; the best one on test."""
    family = METHODS[method][0] if method in METHODS else None
    if family is None:
        raise LlmlabError(f"unknown method '{method}' (choose {', '.join(METHODS)})")
    candidates = list_prompts("reason", method=family)
    if not candidates:
        raise LlmlabError(f"no prompt files for {family} under llmlab/prompts/reason/")
    scored = [solve(llm, dev, method, n, prompt=name, **options) for name in candidates]
    best = max(scored, key=lambda r: (r.accuracy, -r.completion_tokens))
    final = solve(llm, test, method, n, prompt=best.prompt, **options)
    return {
        "method": method,
        "dev": [r.summary() for r in scored],
        "best": best.prompt,
        "test": final.summary(),
    }
