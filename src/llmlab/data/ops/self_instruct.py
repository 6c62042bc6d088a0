"""`self_instruct`: expand seed pairs with the model itself (issue 19's self-instruct step).

For each seed pair (instruction, response, passage, section) it asks a causal LM, through
`llmlab.engine.LLM` (batched), for new pairs of these kinds (`tasks`):

    paraphrase  the question said another way            → the seed's answer
    follow_up   a follow-up question on the passage      → an answer generated from the passage
    beginner    "用通俗的语言向初学者解释：Q"                → an explanation generated from the passage
    compare     "比较 A 和 B" with the next seed of the batch → an answer generated from both passages
    rag         passage + question, asking to cite it     → an answer generated from the passage

Prompts are plain text a base model continues (no chat template), cut at a blank line. Every new
pair keeps its seed's `section` (so the section split keeps it with its seed) and `passage` (so
`passage_overlap_filter` can check it), with `origin` = "self_instruct:<task>"; run the filters and
deduplicators after it. Seeds pass through unchanged. The model loads lazily, once per process.

Recipe form: `- self_instruct: {model: gemma3-270m, tasks: [paraphrase, rag], max_tokens: 160}`
(`samples: N`: N sampled pairs per seed and task, each prompt with its own seed.)
"""

from __future__ import annotations

import functools

from llmlab.data.ops.base import Op, register
from llmlab.data.ops.instruct import make_pair

TASKS = ("paraphrase", "follow_up", "beginner", "compare", "rag")

# {q}: the seed question, {p}: its passage; the model writes what follows the last colon.
QUESTION_PROMPTS = {
    "paraphrase": "把下面的面试问题换一种说法，意思不变。\n原问题：{q}\n新问题：",
    "follow_up": "阅读笔记，提出一个面试官可能追问的问题。\n笔记：{p}\n原问题：{q}\n追问：",
}
ANSWER_PROMPT = "笔记：{p}\n问题：{q}\n根据笔记回答："
BEGINNER_INSTRUCTION = "用通俗的语言向初学者解释：{q}"
COMPARE_INSTRUCTION = "比较「{a}」和「{b}」的区别与联系。"
RAG_INSTRUCTION = "根据下面的资料回答问题，并引用资料中的原话。\n资料：{p}\n问题：{q}"


@functools.lru_cache(maxsize=1)
def _load_llm(model: str):
    from llmlab.engine import LLM

    return LLM(model, kv_memory="256MiB")


@register("self_instruct")
class SelfInstruct(Op):
    """Add model-written pairs (paraphrase, follow-up, explain-to-a-beginner, compare, RAG-style) for each seed pair."""

    kind = "formatter"
    stateless = False  # one model in the main process

    def __init__(
        self,
        *,
        model: str = "gemma3-270m",
        tasks: list[str] = TASKS,
        max_tokens: int = 160,
        temperature: float = 0.7,
        seed: int = 0,
        max_passage_chars: int = 600,
        progress: bool = True,
        samples: int = 1,
    ):
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(
                f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}"
            )
        if max_tokens < 1 or max_passage_chars < 1 or samples < 1:
            raise ValueError("max_tokens, max_passage_chars and samples must be positive")
        self.model, self.tasks = model, list(tasks)
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed
        self.max_passage_chars = max_passage_chars
        self.progress = progress  # the engine's bar per generation stage (the run takes minutes)
        self.samples = samples  # pairs per seed and task (sampled; the deduplicators drop repeats)
        self.llm = None  # set lazily from `model`, or by a caller holding an LLM already

    def _generate(self, prompts: list[str], max_tokens: int) -> list[str]:
        from llmlab.engine import SamplingParams

        if not prompts:
            return []
        if self.llm is None:
            self.llm = _load_llm(self.model)
        params = [
            SamplingParams(
                max_tokens=max_tokens,
                temperature=self.temperature,
                seed=self.seed + i,
                stop=["\n\n"],
            )  # fmt: skip
            for i in range(len(prompts))
        ]
        return [
            out.text.strip() for out in self.llm.generate(prompts, params, progress=self.progress)
        ]

    def process(self, batch, trace):
        seeds = [r for r in batch if r.get("instruction") and r.get("response")]
        jobs = []  # (task, seed, instruction or None, passage, question prompt or None)
        for i, seed in enumerate(seeds):
            q = seed["instruction"]
            p = str(seed.get("passage") or seed["response"])[: self.max_passage_chars]
            for task in [t for t in self.tasks for _ in range(self.samples)]:
                if task in QUESTION_PROMPTS:
                    jobs.append((task, seed, None, p, QUESTION_PROMPTS[task].format(q=q, p=p)))
                elif task == "beginner":
                    jobs.append((task, seed, BEGINNER_INSTRUCTION.format(q=q), p, None))
                elif task == "rag":
                    jobs.append((task, seed, RAG_INSTRUCTION.format(q=q, p=p), p, None))
                elif task == "compare" and len(seeds) > 1:
                    other = seeds[(i + 1) % len(seeds)]
                    both = f"{p}\n{str(other.get('passage') or other['response'])[: self.max_passage_chars]}"
                    instruction = COMPARE_INSTRUCTION.format(a=q, b=other["instruction"])
                    jobs.append((task, seed, instruction, both, None))
        # Stage 1: the questions the model writes (paraphrase, follow-up), one line each.
        asked = [j for j in jobs if j[4] is not None]
        questions = self._generate([j[4] for j in asked], min(self.max_tokens, 64))
        written = {id(j): q.split("\n")[0].strip() for j, q in zip(asked, questions, strict=True)}
        # Stage 2: answers, except for paraphrases, which keep the seed's answer.
        ready = []
        for job in jobs:
            task, seed, instruction, passage, _ = job
            instruction = written.get(id(job), instruction)
            if not instruction:
                trace.removed(
                    {"seed_id": seed.get("id"), "task": task}, "the model wrote no question"
                )
                continue
            ready.append((task, seed, instruction, passage))
        to_answer = [r for r in ready if r[0] != "paraphrase"]
        answers = self._generate(
            [ANSWER_PROMPT.format(p=r[3], q=r[2]) for r in to_answer], self.max_tokens
        )
        answer_of = {id(r): a for r, a in zip(to_answer, answers, strict=True)}
        out = list(batch)
        for item in ready:
            task, seed, instruction, passage = item
            response = seed["response"] if task == "paraphrase" else answer_of[id(item)]
            new = make_pair(instruction, response, analysis="", passage=passage,
                            section=seed.get("section", ""), source=seed.get("source", ""),
                            origin=f"self_instruct:{task}", seed_id=seed.get("id"))  # fmt: skip
            trace.changed(seed, new)
            out.append(new)
        return out
