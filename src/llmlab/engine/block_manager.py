"""The paged KV cache's bookkeeping: fixed-size blocks, reference counts, a free list, and a
prefix cache.

A sequence's KV lives in `block_size`-token blocks listed in its block table (block i holds
tokens i·bs … i·bs+bs-1). Once a block is full its content is identified by a chained hash,
hash(parent block's hash, its tokens), so equal hashes mean equal prefixes. A new sequence
whose leading blocks hash to cached ones reuses them (reference count +1) instead of computing
them again; each hit is checked against the stored tokens, so a hash collision is a miss, not a
wrong answer. Blocks nobody references go to a free list; those still holding a cached prefix
stay findable until a new block is needed, then the least recently freed one is evicted (LRU).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from llmlab.engine.sequence import Sequence


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.token_ids: tuple[int, ...] = ()


def chain_hash(parent: int | None, token_ids) -> int:
    return hash((parent, tuple(token_ids)))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int = 16, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: deque[int] = deque(
            range(num_blocks)
        )  # unreferenced, holding nothing reusable
        self.evictable: OrderedDict[int, None] = (
            OrderedDict()
        )  # unreferenced but cached, oldest first
        self.hash_to_block: dict[int, int] = {}
        self.prefix_query_tokens = 0  # counted by the scheduler when a sequence is admitted
        self.prefix_hit_tokens = 0

    # ---- capacity -------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_ids) + len(self.evictable)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def prefix_hit_rate(self) -> float:
        return (
            self.prefix_hit_tokens / self.prefix_query_tokens if self.prefix_query_tokens else 0.0
        )

    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        total = -(-(seq.num_computed_tokens + num_new_tokens) // self.block_size)
        return max(0, total - len(seq.block_table))

    # ---- allocation -----------------------------------------------------------------------
    def _take_block(self) -> int:
        if self.free_ids:
            block_id = self.free_ids.popleft()
        else:
            block_id, _ = self.evictable.popitem(last=False)  # evict the least recently freed
            block = self.blocks[block_id]
            if self.hash_to_block.get(block.hash) == block_id:
                del self.hash_to_block[block.hash]
            block.hash, block.token_ids = None, ()
        self.blocks[block_id].ref_count = 1
        return block_id

    def _acquire(self, block_id: int):
        block = self.blocks[block_id]
        if block.ref_count == 0:
            self.evictable.pop(block_id, None)
        block.ref_count += 1

    def match_prefix(self, seq: Sequence):
        """Reuse cached blocks for the leading full blocks of a sequence that holds no blocks yet.
        At least one token is left to compute: its logits give the next token."""
        assert not seq.block_table and seq.num_computed_tokens == 0
        bs = self.block_size
        candidates = (seq.num_tokens - 1) // bs
        if not self.enable_prefix_caching:
            return
        parent = None
        for i in range(candidates):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = chain_hash(parent, tokens)
            block_id = self.hash_to_block.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break  # a miss (or a hash collision: the stored tokens differ)
            self._acquire(block_id)
            seq.block_table.append(block_id)
            seq.block_hashes.append(h)
            parent = h
        seq.num_hashed_blocks = len(seq.block_table)
        seq.num_computed_tokens = len(seq.block_table) * bs

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self.blocks_needed(seq, num_new_tokens) <= self.num_free_blocks

    def allocate(self, seq: Sequence, num_new_tokens: int):
        """Grow the block table to hold `num_new_tokens` more tokens (check can_allocate first)."""
        for _ in range(self.blocks_needed(seq, num_new_tokens)):
            seq.block_table.append(self._take_block())

    def register_full_blocks(self, seq: Sequence):
        """After a step: make the sequence's newly completed blocks findable by later requests."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for i in range(seq.num_hashed_blocks, seq.num_computed_tokens // bs):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = chain_hash(seq.block_hashes[-1] if seq.block_hashes else None, tokens)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if h not in self.hash_to_block:  # an equal block cached elsewhere keeps serving hits
                block.hash, block.token_ids = h, tokens
                self.hash_to_block[h] = block.block_id
            seq.num_hashed_blocks = i + 1

    def reset_prefix_cache(self):
        """Forget every cached block (their K/V came from weights that have since changed)."""
        for block in self.blocks:
            block.hash, block.token_ids = None, ()
        self.free_ids.extend(self.evictable)
        self.evictable.clear()
        self.hash_to_block.clear()

    def free(self, seq: Sequence):
        """Release a sequence's blocks. Tail blocks are freed first so that, under LRU eviction,
        shared prefix heads outlive the tails that hang off them."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0, "block freed twice"
            if block.ref_count == 0:
                if block.hash is not None:
                    self.evictable[block_id] = None
                else:
                    self.free_ids.append(block_id)
        seq.block_table = []
