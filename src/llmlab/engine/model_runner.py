"""Runs the model over one scheduled step: a flat batch of tokens from many sequences, with
their K/V written to and read from the paged cache.

Inputs per step (built by `prepare`): token ids and positions of every new token, one after the
other; a slot per token (block_table[pos // bs] · bs + pos % bs) where its K/V are stored; and, per
sequence, the slots of all its tokens so far (its block table unrolled) to attend over.

Attention is PyTorch's scaled_dot_product_attention (flash/efficient kernels on CUDA, fused on
CPU) in two groups: all decoding sequences (one query each) in one padded batch, and each
prefill chunk on its own (causal, offset by the tokens already cached). Each layer's K and V
share one cache tensor [slots, 2 · kv_heads, head_dim], so a step writes and gathers both at once.

Two forward paths, same results: the default packed path (`packed_weights.py`: fused q/k/v and
gate/up matmuls, transposed float weights, rotary as one complex multiply, fused RMSNorm, in-place
residual adds — about a dozen ops per layer) and the plain path (`pack_weights=False`), which calls
the Llama modules' own projections as they are. The packed path holds a copy of the projection
weights and repacks when the model's weights change (checked by `sync_weights`). An int4 or W8A8
Llama's single-sequence decode steps go through `native_decode.py` instead: one native call per
layer.

    runner = ModelRunner(model, num_blocks=None, kv_memory="512MiB")   # block count logged
    logits = runner.run(batch.seqs, batch.num_new_tokens)              # [sampled seqs, vocab]
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmlab.engine.native_decode import NativeDecode
from llmlab.engine.packed_weights import (
    PackedWeights,
    fingerprint,
    gemma_norm_weight,
    pair_rotary_order,
    rotate_pairs_,
)
from llmlab.errors import LlmlabError
from llmlab.models.llama import attention_mask
from llmlab.nn import native
from llmlab.nn.rotary import apply_rotary

log = logging.getLogger("llmlab.engine")

_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 10**3,
    "kib": 2**10,
    "m": 2**20,
    "mb": 10**6,
    "mib": 2**20,
    "g": 2**30,
    "gb": 10**9,
    "gib": 2**30,
}


def parse_bytes(text: str | int) -> int:
    """'512MiB', '1GB', '2g' or a plain number of bytes → bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise LlmlabError(f"cannot read '{text}' as a memory size (try 512MiB or 2GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


# Tokens of context the compiled decode step is first traced with. A prime: a length equal to a model
# dimension would be tied to it by dynamo's duck sizing, and every other length would recompile.
WARMUP_CONTEXT = 97


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    slot_mapping: torch.Tensor  # [T] where each new token's K/V goes
    logit_indices: torch.Tensor | None  # rows whose next-token logits we need; None = every row
    decode_token_index: torch.Tensor | None  # [B] rows of the flat batch that are decodes
    decode_slots: torch.Tensor | None  # [B, Lmax] slots each decode attends over (padded)
    decode_mask: torch.Tensor | None  # [B, 1, 1, Lmax] True = attend; None when no padding
    prefills: list  # (start, end, slots [ctx], mask [k, ctx] or None for plain causal)
    only_decodes: bool = False  # every row is a decode, in order: attention output needs no scatter
    # Gemma's sliding-window layers: their decode mask, and per prefill chunk its windowed mask
    # (None where the context is within the window: the same as the global layers' mask).
    decode_mask_local: torch.Tensor | None = None
    prefill_masks_local: list | None = None


def _native_eager(x: torch.Tensor) -> bool:
    """An eager float32 CPU step with llmlab's native kernels built (nn/native.py); compiled steps
    keep PyTorch's ops, which Inductor fuses itself."""
    return (
        x.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and native.available()
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """F.rms_norm over the last dimension; eager float32 on the CPU through llmlab's one-pass kernel
    (PyTorch's CPU rms_norm is six dispatches, more than its arithmetic on a decode step's rows)."""
    if _native_eager(x) and weight.dtype == torch.float32:
        return native.rms_norm(x, weight, eps)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def geglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gelu(gate, tanh approximation) · up; eager float32 on the CPU in one native pass."""
    if _native_eager(gate) and gate.dim() == 2:
        return native.gelu_tanh_mul(gate, up)
    return F.gelu(gate, approximate="tanh") * up


def _guard_only_step_inputs(guards) -> list[bool]:
    """torch.compile's guards to keep for the decode step: those on its `inputs` argument and on
    global state (grad mode, threads, the shape environment); not those on the runner (config,
    packed weights, KV cache, model modules) nor on module-level functions. Checking those took
    more time per step than the step's norms and rotary together, and they cannot change under a
    runner without sync_weights seeing it, which compiles again when modules or tensors are
    swapped (in-place weight updates keep the graph: it reads the tensors)."""
    return [guard.name == "" or guard.name.startswith("inputs") for guard in guards]


class ModelRunner:
    def __init__(
        self,
        model,
        block_size: int = 16,
        num_blocks: int | None = None,
        kv_memory="512MiB",
        pack_weights: bool = True,
    ):
        self.model = model
        self.config = c = model.config
        self.block_size = block_size
        weight = model.model.embed_tokens.weight
        self.device, self.dtype = weight.device, weight.dtype
        bytes_per_block = (
            2
            * c.num_hidden_layers
            * block_size
            * c.num_key_value_heads
            * c.head_dim
            * weight.element_size()
        )
        if num_blocks is None:
            num_blocks = parse_bytes(kv_memory) // bytes_per_block
        if num_blocks < 1:
            raise LlmlabError(
                f"--kv-memory {kv_memory} holds no {block_size}-token KV block "
                f"(one needs {bytes_per_block} bytes)"
            )
        self.num_blocks = num_blocks
        slots = num_blocks * block_size
        shape = (
            slots,
            2 * c.num_key_value_heads,
            c.head_dim,
        )  # keys, then values, of every kv head
        self.kv_cache = [
            torch.zeros(shape, device=self.device, dtype=self.dtype)
            for _ in range(c.num_hidden_layers)
        ]
        log.info(
            "KV cache: %d blocks × %d tokens = %d tokens, %.1f MiB",
            num_blocks,
            block_size,
            slots,
            num_blocks * bytes_per_block / 2**20,
        )
        # Gemma 3 (models/gemma3.py): sliding-window and global layers interleave, so a step carries
        # two sets of masks; its scores are scaled by query_pre_attn_scalar^-0.5.
        self.gemma = getattr(c, "layer_types", None) is not None
        self.local_window = c.sliding_window if self.gemma else None
        self.layer_is_local = [self.gemma and c.is_sliding(i) for i in range(c.num_hidden_layers)]
        self.scale = c.attention_scale if self.gemma else c.head_dim**-0.5
        self.packed = PackedWeights(model) if pack_weights else None
        self._fingerprint = fingerprint(model)
        if self.gemma:
            self.step_fn = self._forward_gemma
        else:
            self.step_fn = self._forward_packed if pack_weights else self._forward
        self.native_decode = NativeDecode.build(model, self.packed, self.scale)
        self.compiled_decode_fn = None
        self.compile_requested = False
        self._norm_weights: dict = {}  # Gemma's (1 + w) norm weights, for eager steps

    def enable_compile(self):
        """torch.compile the forward of single-sequence decode steps, and compile it now (a minute or
        two on a small CPU) rather than on the first request. Inductor fuses the small ops between the
        matmuls (norms, dtype casts, rotary, attention's softmax) into a few C++ loops (docs/serving.md
        has the measurements). Batched decode is matmul-bound (at 16 sequences the compiled step was
        slower) and each new batch size would cost another compile, so batches and prefill chunks
        stay eager. An int4 or W8A8 Llama's single-stream steps run through native_decode.py instead
        (faster than the compiled step): nothing is compiled for it, unless sync_weights finds that
        no longer applies."""
        self.compile_requested = True
        self.compiled_decode_fn = None
        if self.native_decode is not None:
            log.info(
                "single-stream decode runs through the native decode layer: nothing to compile"
            )
            return
        self.compiled_decode_fn = torch.compile(
            self.step_fn,
            options={"guard_filter_fn": _guard_only_step_inputs},
        )
        # Warm up on the (still empty) cache with a typical context. Only the context length is
        # symbolic (mark_dynamic): with dynamic=True every weight's and cache's size would be too, and
        # checking the guards that relate them took 1.2 ms per step. Inductor picks its kernels for the
        # length it sees (warmed at 2 tokens, a step at 100 ran 15 % slower).
        context = min(WARMUP_CONTEXT, self.num_blocks * self.block_size)
        with torch.inference_mode():  # made like run()'s inputs, or the guards would not match them
            ids, position, slot, row = (
                torch.full((1,), v, device=self.device) for v in (0, context - 1, context - 1, 0)
            )
            slots = torch.arange(context, device=self.device)[None]
            torch._dynamo.mark_dynamic(slots, 1)
            inputs = StepInputs(ids, position, slot, None, row, slots, None, [], only_decodes=True)
            if self.local_window is not None:
                inputs.decode_mask_local = self._full_local_mask(context)
                torch._dynamo.mark_dynamic(inputs.decode_mask_local, 3)
            self.compiled_decode_fn(inputs)

    def _full_local_mask(self, context: int) -> torch.Tensor:
        """An all-True sliding-window decode mask for one sequence whose context is within the
        window: the compiled step always gets a mask (a None would be a second graph)."""
        return torch.ones(1, 1, 1, context, dtype=torch.bool, device=self.device)

    def sync_weights(self) -> bool:
        """Repack if the model's weights were changed or swapped since the last check. Returns True
        when they were: K/V cached under the old weights (the prefix cache) are stale then."""
        current = fingerprint(self.model)
        if current == self._fingerprint:
            return False
        swapped = current.identities != self._fingerprint.identities
        self._fingerprint = current
        if self.packed is not None:
            self.packed = PackedWeights(self.model)
        self.native_decode = NativeDecode.build(self.model, self.packed, self.scale)
        self._norm_weights.clear()
        if swapped and self.compile_requested:
            self.enable_compile()  # its guards on the runner are off (_guard_only_step_inputs)
        return True

    # ---- inputs ---------------------------------------------------------------------------
    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def _context_slots(self, tables: list[list[int]], lengths: list[int]) -> torch.Tensor:
        """[B, max length] slots of each sequence's first `length` tokens (padded with slot 0),
        from the block tables by tensor arithmetic rather than per-token Python."""
        bs, longest = self.block_size, max(lengths)
        width = -(-longest // bs)
        padded = torch.tensor([t[:width] + [0] * (width - len(t[:width])) for t in tables])
        slots = (padded[:, :, None] * bs + torch.arange(bs)).view(len(tables), -1)
        # flatten → view gives plain row-major strides even for one row (which .contiguous() leaves as
        # they are): torch.compile guards on strides.
        return slots[:, :longest].flatten().view(len(tables), longest)

    def prepare(self, seqs, num_new_tokens) -> StepInputs:
        bs = self.block_size
        ids, positions, slot_mapping, logit_indices = [], [], [], []
        decode_rows, decode_tables, decode_lengths, prefills = [], [], [], []
        window = None if self.gemma else self.config.sliding_window
        local = self.local_window
        local_masks = []
        dev = self.device
        for seq, k in zip(seqs, num_new_tokens):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + k
            row, table = len(ids), seq.block_table
            if end == seq.num_tokens:  # the chunk reaches the last known token: sample after it
                logit_indices.append(row + k - 1)
            if k == 1:
                ids.append(seq.token_ids[start])
                positions.append(start)
                slot_mapping.append(table[start // bs] * bs + start % bs)
                decode_rows.append(row)
                decode_tables.append(table)
                decode_lengths.append(end)
                continue
            ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            slot_mapping.extend(self._slots(table, start, end))
            mask = None
            if start > 0 or window is not None:
                mask = attention_mask(torch.arange(start, end), torch.arange(end), window).to(dev)
            if local is not None:
                local_masks.append(
                    attention_mask(torch.arange(start, end), torch.arange(end), local).to(dev)
                    if end > local
                    else mask
                )
            prefills.append((row, row + k, self._context_slots([table], [end])[0].to(dev), mask))
        total = len(ids)
        flat = torch.tensor([ids, positions, slot_mapping], device=dev)
        every_row = (
            len(logit_indices) == total
        )  # only decodes (or one-token chunks): all rows sampled
        inputs = StepInputs(
            flat[0],
            flat[1],
            flat[2],
            None if every_row else torch.tensor(logit_indices, dtype=torch.long, device=dev),
            None,
            None,
            None,
            prefills,
            only_decodes=not prefills,
            prefill_masks_local=local_masks if local is not None else None,
        )
        if decode_rows:
            inputs.decode_token_index = torch.tensor(decode_rows, device=dev)
            inputs.decode_slots = self._context_slots(decode_tables, decode_lengths).to(dev)
            longest = max(decode_lengths)
            if window is not None or min(decode_lengths) != longest:
                lengths = torch.tensor(decode_lengths)
                key_pos = torch.arange(longest)
                allowed = key_pos[None, :] < lengths[:, None]
                if window is not None:
                    allowed &= key_pos[None, :] > (lengths[:, None] - 1 - window)
                if not bool(allowed.all()):
                    inputs.decode_mask = allowed[:, None, None, :].to(dev)
            if local is not None and longest > local:
                lengths = torch.tensor(decode_lengths)
                key_pos = torch.arange(longest)
                allowed = (key_pos[None, :] < lengths[:, None]) & (
                    key_pos[None, :] > lengths[:, None] - 1 - local
                )
                inputs.decode_mask_local = allowed[:, None, None, :].to(dev)
            elif local is not None:
                inputs.decode_mask_local = inputs.decode_mask
        return inputs

    # ---- attention ------------------------------------------------------------------------
    def _attention(self, q, layer: int, inputs: StepInputs) -> torch.Tensor:
        """q [T, heads, head_dim] (any strides) → attention output [T, heads · head_dim] over the
        paged cache of this layer (this step's K/V already written)."""
        total, heads, head_dim = q.shape
        kv_heads = self.config.num_key_value_heads
        gqa = (
            kv_heads != self.config.num_attention_heads
        )  # from the config: a plain bool under torch.compile
        cache = self.kv_cache[layer]
        is_local = self.layer_is_local[layer]
        decode_mask = inputs.decode_mask_local if is_local else inputs.decode_mask
        out = None if inputs.only_decodes else q.new_empty(total, heads, head_dim)
        if inputs.decode_token_index is not None:
            qd = q if inputs.only_decodes else q[inputs.decode_token_index]
            batch, longest = inputs.decode_slots.shape
            # Grouped-query decode without expanding K/V: the query heads that share a kv head are
            # that head's "query positions" ([B, kv_heads, group, hd]); nothing is causal at decode.
            qd = qd.view(batch, kv_heads, -1, head_dim)
            # One gather for keys and values; index_select is much cheaper than fancy indexing.
            kv = cache.index_select(0, inputs.decode_slots.view(-1)).view(
                batch, longest, *cache.shape[1:]
            )
            if torch.compiler.is_compiling():
                # Inductor fuses this (gather, scale, mask, softmax) around two batched matmuls; its SDPA is a
                # fallback call that costs more than the whole product at one query. The softmax is
                # spelled as exp(s − logsumexp s) so that Inductor's attention pattern matcher does not
                # turn it back into SDPA (with a symbolic context length that rewrite fails to compile).
                scores = torch.matmul(qd, kv[:, :, :kv_heads].permute(0, 2, 3, 1)) * self.scale
                if decode_mask is not None:
                    scores = scores.masked_fill(~decode_mask, float("-inf"))
                weights = (scores - scores.logsumexp(-1, keepdim=True)).exp()
                od = torch.matmul(weights, kv[:, :, kv_heads:].transpose(1, 2))
            else:
                kv = kv.transpose(1, 2)
                od = F.scaled_dot_product_attention(
                    qd, kv[:, :kv_heads], kv[:, kv_heads:], attn_mask=decode_mask, scale=self.scale
                )
            if inputs.only_decodes:
                return od.view(total, heads * head_dim)
            out[inputs.decode_token_index] = od.view(batch, heads, head_dim)
        for index, (start, end, slots, mask) in enumerate(inputs.prefills):
            if is_local:
                mask = inputs.prefill_masks_local[index]
            qp = q[start:end].transpose(0, 1).unsqueeze(0)
            kv = cache.index_select(0, slots).transpose(0, 1).unsqueeze(0)  # [1, 2·kvh, ctx, hd]
            op = F.scaled_dot_product_attention(
                qp,
                kv[:, :kv_heads],
                kv[:, kv_heads:],
                attn_mask=mask,
                is_causal=mask is None,
                scale=self.scale,
                enable_gqa=gqa,
            )
            out[start:end] = op[0].transpose(0, 1)
        return out.view(total, heads * head_dim)

    def _native_step(self, inputs: StepInputs) -> bool:
        """One sequence decoding, on a model native_decode.py runs: one native call per layer."""
        return (
            self.native_decode is not None
            and inputs.only_decodes
            and inputs.input_ids.shape[0] == 1
        )

    # ---- forward: packed (default) ------------------------------------------------------------
    def _forward_packed(self, inputs: StepInputs) -> torch.Tensor:
        c, model, packed = self.config, self.model.model, self.packed
        heads, kv_heads, head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        total, inter = inputs.input_ids.shape[0], c.intermediate_size
        angles = inputs.positions.float()[:, None] * model.rotary.inv_freq
        cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]  # [T, 1, head_dim / 2]
        rotation = None if torch.compiler.is_compiling() else torch.complex(cos, sin)
        x = model.embed_tokens(inputs.input_ids)  # a fresh tensor: the residual adds go in place
        if self._native_step(inputs):
            self.native_decode(x, self.kv_cache, {False: (cos, sin)}, inputs)  # a call per layer
        else:
            for i, (layer, module) in enumerate(zip(packed.layers, model.layers)):
                norm = module.input_layernorm
                qkv = layer.qkv(rms_norm(x, norm.weight, norm.eps)).view(total, -1, head_dim)
                rotate_pairs_(qkv[:, : heads + kv_heads], cos, sin, rotation)
                self.kv_cache[i].index_copy_(0, inputs.slot_mapping, qkv[:, heads:])
                # add_ promotes a bf16 product into the float residual
                x.add_(layer.o.native(self._attention(qkv[:, :heads], i, inputs)))
                norm = module.post_attention_layernorm
                # SiLU·up in full precision
                gate_up = layer.gate_up(rms_norm(x, norm.weight, norm.eps))
                x.add_(layer.down.native(F.silu(gate_up[:, :inter]).mul_(gate_up[:, inter:])))
        if inputs.logit_indices is not None:
            x = x[inputs.logit_indices]  # only rows we sample from reach the LM head
        return packed.head(rms_norm(x, model.norm.weight, model.norm.eps)).float()

    # ---- forward: plain (the model's own modules) -----------------------------------------------
    def _forward(self, inputs: StepInputs) -> torch.Tensor:
        c, model = self.config, self.model.model
        total, kv_heads = inputs.input_ids.shape[0], c.num_key_value_heads
        x = model.embed_tokens(inputs.input_ids)
        cos, sin = model.rotary(inputs.positions)  # [T, head_dim], broadcast over heads
        for i, layer in enumerate(model.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(total, c.num_attention_heads, c.head_dim).transpose(0, 1)
            k = attn.k_proj(h).view(total, kv_heads, c.head_dim).transpose(0, 1)
            v = attn.v_proj(h).view(total, kv_heads, c.head_dim)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            cache = self.kv_cache[i]
            cache[:, :kv_heads].index_copy_(0, inputs.slot_mapping, k.transpose(0, 1))
            cache[:, kv_heads:].index_copy_(0, inputs.slot_mapping, v)
            x = x + attn.o_proj(self._attention(q.transpose(0, 1), i, inputs))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        if inputs.logit_indices is not None:
            x = x[inputs.logit_indices]
        return self.model.lm_head(model.norm(x)).float()

    # ---- forward: Gemma 3 -----------------------------------------------------------------------
    def _forward_gemma(self, inputs: StepInputs) -> torch.Tensor:
        """Gemma 3's layer (models/gemma3.py) over the paged cache: (1 + w) norms before and after
        attention and MLP, per-head QK-norm, two rotary tables (local / global layers), GeGLU.
        With packed weights it uses the fused q/k/v and gate/up projections, whose q/k rows are in
        rotary-pair order: the QK-norm weights are put in that order too (a norm over one head is
        indifferent to the order of its dimensions, only its weights must follow)."""
        c, model, packed = self.config, self.model.model, self.packed
        heads, kv_heads, head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        total, inter = inputs.input_ids.shape[0], c.intermediate_size
        compiling = torch.compiler.is_compiling()
        tables = {}
        for local, rotary in ((False, model.rotary), (True, model.rotary_local)):
            angles = inputs.positions.float()[:, None] * rotary.inv_freq
            cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
            if packed is None:  # half-split layout of the model's own projections
                cos, sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
            tables[local] = (cos, sin, None if compiling else torch.complex(cos, sin))
        pair_order = pair_rotary_order(1, head_dim).to(self.device)

        def norm(module, t, order=None):
            key = (id(module), order is not None)
            weight = None if compiling else self._norm_weights.get(key)
            if weight is None:
                weight = gemma_norm_weight(module, order)
                if not compiling:  # eager steps reuse it until the weights change (sync_weights)
                    self._norm_weights[key] = weight
            return rms_norm(t.float(), weight, module.eps).to(t.dtype)

        x = model.embed(inputs.input_ids)
        if self._native_step(inputs):
            tables = {local: table[:2] for local, table in tables.items()}
            self.native_decode(x, self.kv_cache, tables, inputs)  # one native call per layer
        else:
            for i, module in enumerate(model.layers):
                attn, mlp = module.self_attn, module.mlp
                cos, sin, rotation = tables[self.layer_is_local[i]]
                h = norm(module.input_layernorm, x)
                if packed is not None:
                    qkv = packed.layers[i].qkv(h).view(total, -1, head_dim)
                    q = norm(attn.q_norm, qkv[:, :heads], pair_order)
                    k = norm(attn.k_norm, qkv[:, heads : heads + kv_heads], pair_order)
                    qk = torch.cat([q, k], 1)
                    rotate_pairs_(qk, cos, sin, rotation)
                    q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads :]
                else:
                    q = norm(attn.q_norm, attn.q_proj(h).view(total, heads, head_dim))
                    k = norm(attn.k_norm, attn.k_proj(h).view(total, kv_heads, head_dim))
                    v = attn.v_proj(h).view(total, kv_heads, head_dim)
                    q = apply_rotary(q.transpose(0, 1), cos[:, 0], sin[:, 0]).transpose(0, 1)
                    k = apply_rotary(k.transpose(0, 1), cos[:, 0], sin[:, 0]).transpose(0, 1)
                self.kv_cache[i].index_copy_(0, inputs.slot_mapping, torch.cat([k, v], 1))
                o = self._attention(q, i, inputs)
                o = packed.layers[i].o(o) if packed is not None else attn.o_proj(o)
                x = x + norm(module.post_attention_layernorm, o)
                h = norm(module.pre_feedforward_layernorm, x)
                if packed is not None:
                    gate_up = packed.layers[i].gate_up(h)
                    gate, up = gate_up[:, :inter], gate_up[:, inter:]
                else:
                    gate, up = mlp.gate_proj(h), mlp.up_proj(h)
                y = geglu(gate, up)
                y = packed.layers[i].down(y) if packed is not None else mlp.down_proj(y)
                x = x + norm(module.post_feedforward_layernorm, y)
        if inputs.logit_indices is not None:
            x = x[inputs.logit_indices]
        x = norm(model.norm, x)
        if packed is not None:
            logits = packed.head(x).float()
            cap = c.final_logit_softcapping
            return logits if cap is None else torch.tanh(logits / cap) * cap
        return self.model.logits(x)

    @torch.inference_mode()
    def run(self, seqs, num_new_tokens) -> torch.Tensor:
        """Compute one step; return next-token logits for the sequences whose chunk ends at their
        last token (in batch order)."""
        inputs = self.prepare(seqs, num_new_tokens)
        if self.compiled_decode_fn is not None and inputs.only_decodes and len(seqs) == 1:
            if self.local_window is not None and inputs.decode_mask_local is None:
                inputs.decode_mask_local = self._full_local_mask(inputs.decode_slots.shape[1])
            return self.compiled_decode_fn(inputs)
        return self.step_fn(inputs)
