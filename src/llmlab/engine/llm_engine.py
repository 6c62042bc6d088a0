"""The engine loop: requests in, one scheduled step at a time, text deltas out.

    engine = LLMEngine(model, tokenizer, max_num_seqs=32)
    engine.add_request("r1", "Hello", SamplingParams(max_tokens=20))
    while engine.has_unfinished():
        for out in engine.step():          # RequestOutput per request that changed this step
            print(out.request_id, out.outputs[0].delta, out.finished)

Constrained requests (`SamplingParams(json_schema=…)` etc.) carry a grammar matcher per sequence;
each step fills the masks of the constrained rows in a worker thread while the model runs, the
sampler applies them, and each sampled token advances its matcher (guided.py). A sequence whose
grammar is complete stops at once with finish_reason "stop".

Not thread-safe: one thread drives it (the offline `LLM` or the async engine's worker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llmlab.engine.block_manager import BlockManager
from llmlab.engine.guided import Guide
from llmlab.engine.model_runner import ModelRunner
from llmlab.engine.sampler import sample
from llmlab.engine.sampling_params import SamplingParams
from llmlab.engine.scheduler import Scheduler
from llmlab.engine.sequence import Sequence
from llmlab.errors import ContextLengthError, LlmlabError
from llmlab.generation import Detokenizer

log = logging.getLogger("llmlab.engine")


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop", "length" or "abort"
    logprobs: list[dict] = field(default_factory=list)
    delta: str = ""  # text added by the latest step


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    prompt: str | None = None

    # The first completion's text and tokens: what `LLM.generate` callers usually want.
    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def num_generated_tokens(self) -> int:
        return sum(len(o.token_ids) for o in self.outputs)


class _Request:
    def __init__(self, request_id, prompt, prompt_ids, seqs, tokenizer):
        self.request_id, self.prompt, self.prompt_ids, self.seqs = (
            request_id,
            prompt,
            prompt_ids,
            seqs,
        )
        self.detoks = [Detokenizer(tokenizer, s.params.stop) for s in seqs]
        self.outputs = [CompletionOutput(index=s.index) for s in seqs]


class LLMEngine:
    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 512,
        block_size: int = 16,
        kv_memory="512MiB",
        num_kv_blocks: int | None = None,
        enable_prefix_caching: bool = True,
        compile: bool = False,
        pack_weights: bool = True,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_model_len = model.max_context
        self.runner = ModelRunner(model, block_size, num_kv_blocks, kv_memory, pack_weights)
        if compile:
            self.runner.enable_compile()
        self.block_manager = BlockManager(self.runner.num_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs, max_num_batched_tokens)
        self.requests: dict[str, _Request] = {}
        # A sequence stops at the context length, or when it alone would fill the whole KV pool.
        self.max_seq_tokens = min(self.max_model_len, self.block_manager.num_blocks * block_size)
        self.eos_ids = (
            {tokenizer.eos_token_id}
            if tokenizer is not None and tokenizer.eos_token_id is not None
            else set()
        )
        self.guide = Guide(tokenizer, model.config.vocab_size)
        self.generated_tokens = 0
        self.on_token: Callable[[Sequence, bool, float], None] | None = (
            None  # (seq, first?, seconds)
        )

    # ---- requests -------------------------------------------------------------------------
    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        return [int(t) for t in prompt]

    def check_prompt(self, prompt_ids: list[int]):
        """Raise (LlmlabError / ContextLengthError) if this prompt can never be served."""
        if not prompt_ids:
            raise LlmlabError("the prompt is empty")
        if len(prompt_ids) >= self.max_model_len:
            raise ContextLengthError(
                f"the prompt is {len(prompt_ids)} tokens but the model's context is "
                f"{self.max_model_len}"
            )
        blocks = -(-(len(prompt_ids) + 1) // self.block_manager.block_size)
        if blocks > self.block_manager.num_blocks:
            raise ContextLengthError(
                f"the prompt needs {blocks} KV blocks but the cache has only "
                f"{self.block_manager.num_blocks} (raise --kv-memory)"
            )

    def add_request(
        self, request_id: str, prompt: str | list[int], params: SamplingParams
    ) -> list[Sequence]:
        if request_id in self.requests:
            raise LlmlabError(f"request id '{request_id}' is already in use")
        prompt_ids = self.encode(prompt)
        self.check_prompt(prompt_ids)
        matcher = self.guide.compile(params) if params.guided else None
        seqs: list[Sequence] = []
        for i in range(params.n):
            seqs.append(
                Sequence(request_id, i, prompt_ids, params, leader=seqs[0] if seqs else None)
            )
            if matcher is not None:  # each of the n completions walks the grammar on its own
                seqs[-1].matcher = matcher if i == 0 else matcher.deep_copy()
        for seq in seqs:
            self.scheduler.add(seq)
        self.requests[request_id] = _Request(
            request_id,
            prompt if isinstance(prompt, str) else None,
            prompt_ids,
            seqs,
            self.tokenizer,
        )
        return seqs

    def abort(self, request_id: str) -> bool:
        """Stop a request now and free its blocks. Returns False if it is not (or no longer) here."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return False
        for seq, out in zip(request.seqs, request.outputs):
            self.scheduler.finish(seq, "abort")
            out.finish_reason = out.finish_reason or "abort"
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    # ---- one step -------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        if not self.scheduler.running:  # nothing cached in flight: e.g. RL updated the policy since
            if self.runner.sync_weights():
                self.block_manager.reset_prefix_cache()
        batch = self.scheduler.schedule()
        if batch.is_empty:
            return []
        sampling_seqs = [
            seq
            for seq, k in zip(batch.seqs, batch.num_new_tokens)
            if seq.num_computed_tokens + k == seq.num_tokens
        ]
        masked_rows = [i for i, seq in enumerate(sampling_seqs) if seq.matcher is not None]
        masks = (  # computed while the model runs
            self.guide.start_masks([sampling_seqs[i].matcher for i in masked_rows])
            if masked_rows
            else None
        )
        logits = self.runner.run(batch.seqs, batch.num_new_tokens)
        for seq, k in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += k
            self.block_manager.register_full_blocks(seq)
        allowed = self._allowed(masks.result()) if masks is not None else None
        touched: dict[str, _Request] = {}
        sampled = sample(logits, sampling_seqs, masked_rows, allowed)
        for seq, (token, logprob) in zip(sampling_seqs, sampled):
            first = seq.first_token_time is None
            previous = seq.last_token_time
            seq.append_token(token, logprob)
            self.generated_tokens += 1
            if self.on_token is not None:
                self.on_token(
                    seq, first, seq.last_token_time - (seq.arrival_time if first else previous)
                )
            request = self.requests[seq.request_id]
            touched[seq.request_id] = request
            self._process_token(request, seq, token, logprob)
        return [self._snapshot(r) for r in touched.values()]

    def _allowed(self, bitmask):
        """Bitmask rows → bool [rows, vocab]; a row allowing nothing (a matcher in error) gets
        EOS, so the request ends instead of drawing from an all -inf row."""
        allowed = self.guide.allowed(bitmask)
        empty = ~allowed.any(-1)
        if bool(empty.any()):
            for eos in self.eos_ids:
                allowed[empty, eos] = True
        return allowed

    def _grammar_complete(self, seq: Sequence, token: int) -> bool:
        """Advance a constrained sequence's grammar; True once nothing but EOS may follow."""
        try:
            return not self.guide.advance(seq.matcher, token)
        except LlmlabError as error:  # should not happen (the mask allowed the token): end it
            log.warning("request %s: %s", seq.request_id, error)
            return True

    def _process_token(self, request: _Request, seq: Sequence, token: int, logprob):
        out, detok, p = request.outputs[seq.index], request.detoks[seq.index], seq.params
        stop_ids = set(p.stop_token_ids) | (set() if p.ignore_eos else self.eos_ids)
        if token in stop_ids:
            self.scheduler.finish(seq, "stop")
        else:
            out.delta += detok.add(token)
            if logprob is not None:
                out.logprobs.append(logprob)
            complete = seq.matcher is not None and self._grammar_complete(seq, token)
            if detok.stopped or complete:
                self.scheduler.finish(seq, "stop")
            elif len(seq.output_token_ids) >= p.max_tokens or seq.num_tokens >= self.max_seq_tokens:
                self.scheduler.finish(seq, "length")
        if seq.is_finished:
            seq.matcher = None
            out.delta += detok.flush()
            out.finish_reason = seq.finish_reason
        out.text, out.token_ids = detok.text, list(detok.ids)

    def _snapshot(self, request: _Request) -> RequestOutput:
        """A copy of the request's outputs (deltas reset for the next step); forget finished requests."""
        finished = all(s.is_finished for s in request.seqs)
        outputs = []
        for out in request.outputs:
            outputs.append(
                CompletionOutput(
                    out.index,
                    out.text,
                    list(out.token_ids),
                    out.finish_reason,
                    list(out.logprobs),
                    out.delta,
                )
            )
            out.delta = ""
        if finished:
            self.requests.pop(request.request_id, None)
        return RequestOutput(
            request.request_id, request.prompt_ids, outputs, finished, request.prompt
        )

    def stats(self) -> dict:
        bm = self.block_manager
        return {
            "running": len(self.scheduler.running),
            "waiting": len(self.scheduler.waiting),
            "kv_blocks_used": bm.num_used_blocks,
            "kv_blocks_free": bm.num_free_blocks,
            "kv_blocks_total": bm.num_blocks,
            "prefix_cache_hit_rate": bm.prefix_hit_rate,
            "prefix_cache_hit_tokens": bm.prefix_hit_tokens,
            "prefix_cache_query_tokens": bm.prefix_query_tokens,
            "generated_tokens": self.generated_tokens,
            "preemptions": self.scheduler.num_preemptions,
            "guided_masks": self.guide.mask_rows,
            "guided_mask_seconds": self.guide.mask_seconds,
            "time": time.time(),
        }
