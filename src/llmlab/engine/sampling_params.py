"""`SamplingParams`: how one request turns logits into tokens and when it stops.

    SamplingParams(max_tokens=64)                                  # greedy
    SamplingParams(temperature=0.8, top_p=0.95, seed=1, n=2, stop=["\\n\\n"], logprobs=3)
    SamplingParams(json_schema={"type": "object"})     # or regex=, choice=[...], grammar= (Lark)

Validation raises LlmlabError with one line, which the server turns into a 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmlab.errors import LlmlabError


@dataclass
class SamplingParams:
    n: int = 1  # completions per prompt; they share the prompt's KV blocks
    max_tokens: int = 16
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # drop tokens below min_p × the top token's probability (0 = off)
    repetition_penalty: float = 1.0  # CTRL-style, over prompt and output (1 = off)
    presence_penalty: float = 0.0  # OpenAI-style, over output tokens only
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # stop strings (cut from the text)
    stop_token_ids: list[int] = field(default_factory=list)  # in addition to the tokenizer's EOS
    ignore_eos: bool = False
    logprobs: int | None = None  # return the chosen token's logprob and this many top alternatives
    # Constrained decoding (at most one; see guided.py): output must match the constraint.
    json_schema: dict | str | bool | None = None  # a JSON Schema (True: any JSON object)
    regex: str | None = None
    choice: list[str] | None = None  # exactly one of these strings
    grammar: str | None = None  # a Lark grammar (llguidance's dialect)

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        checks = [
            (self.n >= 1, f"n must be at least 1, got {self.n}"),
            (self.max_tokens >= 1, f"max_tokens must be at least 1, got {self.max_tokens}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}"),
            (
                self.repetition_penalty > 0,
                f"repetition_penalty must be > 0, got {self.repetition_penalty}",
            ),
            (
                -2 <= self.presence_penalty <= 2,
                f"presence_penalty must be in [-2, 2], got {self.presence_penalty}",
            ),
            (
                -2 <= self.frequency_penalty <= 2,
                f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}",
            ),
            (
                self.logprobs is None or 0 <= self.logprobs <= 20,
                f"logprobs must be in [0, 20], got {self.logprobs}",
            ),
        ]
        constraints = [
            name
            for name in ("json_schema", "regex", "choice", "grammar")
            if getattr(self, name) is not None
        ]
        checks += [
            (
                len(constraints) <= 1,
                f"use one of json_schema, regex, choice, grammar, got {', '.join(constraints)}",
            ),
            (
                self.choice is None
                or (
                    isinstance(self.choice, list)
                    and self.choice
                    and all(isinstance(c, str) and c for c in self.choice)
                ),
                "choice must be a non-empty list of non-empty strings",
            ),
            (
                self.json_schema is not False,
                "json_schema must be a schema, a JSON string or True (any JSON object)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise LlmlabError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def guided(self) -> bool:
        """Whether the output is constrained (by a schema, regex, choice list or grammar)."""
        return any(
            getattr(self, name) is not None
            for name in ("json_schema", "regex", "choice", "grammar")
        )

    @property
    def needs_history(self) -> bool:
        """Whether sampling looks at the tokens seen so far (penalties)."""
        return (
            self.repetition_penalty != 1
            or self.presence_penalty != 0
            or self.frequency_penalty != 0
        )
