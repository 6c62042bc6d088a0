"""One sequence's state inside the engine: its tokens, KV block table, progress and status.

A request with `n > 1` becomes n sequences of one group; they share the prompt's full KV blocks
through the prefix cache. Every forward step computes `token_ids[num_computed_tokens : +k]`; when
that reaches the last known token the step also samples the next one. Prefill, chunked prefill,
decode and recompute after preemption are all this one rule.
"""

from __future__ import annotations

import enum
import itertools
import time

import torch

from llmlab.engine.sampling_params import SamplingParams

_ids = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    def __init__(
        self,
        request_id: str,
        index: int,
        prompt_token_ids: list[int],
        params: SamplingParams,
        leader: Sequence | None = None,
    ):
        self.seq_id = next(_ids)
        self.request_id, self.index = request_id, index
        self.prompt_token_ids = list(prompt_token_ids)
        self.token_ids = list(prompt_token_ids)  # prompt + output
        self.params = params
        self.leader = leader  # for n > 1: the sibling whose prefill fills the shared prompt blocks
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.num_computed_tokens = 0  # tokens whose K/V are in the cache
        self.num_hashed_blocks = 0  # leading full blocks registered in the prefix cache
        self.block_hashes: list[int] = []
        self.finish_reason: str | None = None
        self.logprobs: list[dict] = []
        self.arrival_time = time.monotonic()
        self.first_token_time: float | None = None
        self.last_token_time: float | None = None
        self.num_preemptions = 0
        self.matcher = (
            None  # constrained decoding: the grammar state, advanced per token (guided.py)
        )
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator().manual_seed(params.seed + index)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    @property
    def prefill_done(self) -> bool:
        """True once every prompt token's K/V is cached (decoding from here on)."""
        return self.num_computed_tokens >= self.num_prompt_tokens

    def append_token(self, token_id: int, logprob: dict | None = None):
        now = time.monotonic()
        if self.first_token_time is None:
            self.first_token_time = now
        self.last_token_time = now
        self.token_ids.append(token_id)
        if logprob is not None:
            self.logprobs.append(logprob)

    def reset_for_recompute(self):
        """Preemption by recompute: drop the cache state; prompt + output are prefilled again later."""
        self.status = SequenceStatus.WAITING
        self.block_table = []
        self.num_computed_tokens = 0
        self.num_hashed_blocks = 0
        self.block_hashes = []
        self.num_preemptions += 1

    def __repr__(self):
        return (
            f"Sequence({self.request_id}#{self.index}, {self.status.value}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})"
        )
