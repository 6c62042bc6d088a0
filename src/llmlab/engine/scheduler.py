"""Continuous batching: which sequences run in the next step, and how many tokens each.

Every step has a token budget (`max_num_batched_tokens`). Running sequences go first, decodes
(1 token each) before unfinished prefills, so a long prompt never stalls everyone's next token;
prompts are cut into chunks that fit the budget (chunked prefill) and mixed with the decodes.
Waiting requests are admitted first-come-first-served while the budget, `max_num_seqs` and the
free KV blocks allow. When a running sequence needs a block and none is free, the most recently
arrived running sequence is preempted by recompute: its blocks are freed and it returns to the
front of the waiting queue, to be prefilled again (prompt + output so far) later.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from llmlab.engine.block_manager import BlockManager
from llmlab.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    def add(self, seq: Sequence, k: int):
        self.seqs.append(seq)
        self.num_new_tokens.append(k)

    @property
    def is_empty(self) -> bool:
        return not self.seqs


class Scheduler:
    def __init__(
        self, block_manager: BlockManager, max_num_seqs: int = 64, max_num_batched_tokens: int = 512
    ):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max(max_num_batched_tokens, max_num_seqs)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence):
        self.waiting.append(seq)

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        # Decodes first, then chunked prefills; each group in arrival order (seq_id grows).
        queue = sorted(self.running, key=lambda s: (not s.prefill_done, s.seq_id))
        still_running = []
        while queue:
            seq = queue.pop(0)
            k = min(seq.num_uncomputed_tokens, budget)
            if k == 0:
                still_running.append(seq)
                continue
            while not self.block_manager.can_allocate(seq, k):
                victim = max(queue, key=lambda s: s.seq_id) if queue else seq
                if victim is not seq:
                    queue.remove(victim)
                self._preempt(victim, batch)
                if victim is seq:
                    break
            else:
                self.block_manager.allocate(seq, k)
                batch.add(seq, k)
                budget -= k
                still_running.append(seq)
        self.running = still_running
        if not batch.preempted:  # when memory is short, don't admit anyone new
            self._admit_waiting(batch, budget)
        return batch

    def _admit_waiting(self, batch: ScheduledBatch, budget: int):
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            leader = seq.leader
            if leader is not None and not leader.is_finished and not leader.prefill_done:
                break  # n > 1: wait until the leader's prompt blocks are cached, then share them
            bm.match_prefix(seq)
            k = min(seq.num_uncomputed_tokens, budget)
            if not bm.can_allocate(seq, k):
                bm.free(seq)  # give back the prefix blocks just matched; try again next step
                seq.num_computed_tokens, seq.num_hashed_blocks, seq.block_hashes = 0, 0, []
                break
            bm.allocate(seq, k)
            bm.prefix_query_tokens += seq.num_tokens
            bm.prefix_hit_tokens += seq.num_computed_tokens
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.add(seq, k)
            budget -= k

    def _preempt(self, seq: Sequence, batch: ScheduledBatch):
        self.block_manager.free(seq)
        seq.reset_for_recompute()
        self.waiting.appendleft(seq)
        batch.preempted.append(seq)
        self.num_preemptions += 1

    def finish(self, seq: Sequence, reason: str):
        """Take a sequence out of the queues (done, stopped or aborted) and free its blocks."""
        if seq.status == SequenceStatus.FINISHED:
            return
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
