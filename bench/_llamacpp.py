"""Native llama.cpp as a benchmark peer, through its C API (llama-cpp-python's ctypes bindings).

A helper for bench/engine.py and bench/quant.py, not a bench script (the leading underscore keeps it
out of `make bench`'s BENCH_SCRIPTS rule). It drives llama.cpp the way its own `batched` example
does — `llama_model_load_from_file`, `llama_init_from_model`, one `llama_batch` per step holding one
token of every sequence under distinct `seq_id`s, `llama_decode`, greedy argmax over the logits —
so no Python generate loop or sampler chain sits between the timer and llama.cpp (the high-level
`Llama.generate` added ~10 % per token here).

    import sys; sys.path.insert(0, "bench")
    from _llamacpp import LlamaCpp, convert_gguf
    peer = LlamaCpp("model.gguf", threads=2, n_seq=16, n_ctx_per_seq=256)
    made, first = peer.generate([prompt_ids] * 16, tokens=64)   # greedy, EOS ignored
    peer.close()
    bf16 = convert_gguf("model.gguf", "model-bf16.gguf", "bf16")  # llama.cpp's own conversion

Timing matches our engine's rows: `generate` includes the prompt's prefill (all prompts packed into
`n_batch`-token decode calls), the first new token comes from the prefill logits, every later one
from one decode step, and the last token is not fed back. The KV cache is cleared before each call
(no prompt reuse: our engine runs with its prefix cache off). Requires `llama_cpp` (`make
bench-peers` builds it for this CPU); `available()` says whether it imports.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

FTYPES = {
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
}
_LOG_SINK = None  # the ctypes callback must outlive every llama.cpp call that may log


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    import llama_cpp

    return llama_cpp.__version__


def system_info() -> str:
    return _lib().llama_print_system_info().decode()


def amx_build() -> bool:
    """Whether this llama.cpp was built with its AMX kernels. They crash here in the first
    matmul (`ggml_backend_amx_mul_mat`, the crash of llama.cpp issue #20824, which got no fix), and the only
    run-time switch, `use_extra_bufts = False`, also turns off the CPU weight repacking (Q4_0, Q4_K,
    Q5_K, Q6_K, Q8_0; not Q4_1). A build without AMX keeps the repacking:
    `CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON ..." pip install llama-cpp-python` (Makefile)."""
    return "AMX_INT8 = 1" in system_info()


def _lib():
    """The bindings, with the backend initialised once and llama.cpp's log silenced."""
    global _LOG_SINK
    import llama_cpp as lib

    if _LOG_SINK is None:
        _LOG_SINK = lib.llama_log_callback(lambda level, text, data: None)
        lib.llama_log_set(_LOG_SINK, ctypes.c_void_p())
        lib.llama_backend_init()
    return lib


def batch_layout(
    sequences: list[list[int]], start: list[int], logits_last: bool = True
) -> list[tuple[int, int, int, bool]]:
    """(token, position, seq_id, wants logits) rows for one or more decode calls: every token of
    each sequence at positions start[s], start[s] + 1, ...; only each sequence's last token asks
    for logits (the one whose next token we sample)."""
    rows = []
    for seq, tokens in enumerate(sequences):
        for i, token in enumerate(tokens):
            rows.append((token, start[seq] + i, seq, logits_last and i == len(tokens) - 1))
    return rows


class LlamaCpp:
    """One llama.cpp model and context: `n_seq` parallel sequences of at most `n_ctx_per_seq`
    tokens, `threads` threads for both single-token and batch decoding (n_threads and
    n_threads_batch)."""

    def __init__(self, path, threads: int, n_seq: int = 1, n_ctx_per_seq: int = 512):
        lib = self.lib = _lib()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF at {path}")
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.use_extra_bufts = self.extra_bufts = not amx_build()
        self.model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.n_seq, self.n_batch = n_seq, max(512, n_seq)
        cparams = lib.llama_context_default_params()
        # One KV stream per sequence (kv_unified off, llama.cpp's default and the faster layout
        # for independent sequences), each n_ctx_per_seq long.
        cparams.n_ctx = n_seq * n_ctx_per_seq
        cparams.n_batch = self.n_batch
        cparams.n_seq_max = n_seq
        cparams.n_threads = cparams.n_threads_batch = threads
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context (KV cache too large?)")
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.batch = lib.llama_batch_init(self.n_batch, 0, 1)
        self.threads, self.path = threads, path

    def _decode(self, rows) -> np.ndarray:
        """Decode `rows` (see batch_layout) in n_batch-sized calls; → argmax token of every row
        that asked for logits, in row order."""
        lib, batch, picked = self.lib, self.batch, []
        for at in range(0, len(rows), self.n_batch):
            chunk = rows[at : at + self.n_batch]
            outputs = 0
            for i, (token, pos, seq, wants) in enumerate(chunk):
                batch.token[i], batch.pos[i] = token, pos
                batch.n_seq_id[i], batch.seq_id[i][0] = 1, seq
                batch.logits[i] = wants
                outputs += wants
            batch.n_tokens = len(chunk)
            status = lib.llama_decode(self.ctx, batch)
            if status != 0:
                raise RuntimeError(f"llama_decode returned {status}")
            if outputs:  # the logits of the rows that asked, contiguous, in batch order
                logits = np.ctypeslib.as_array(
                    lib.llama_get_logits(self.ctx), shape=(outputs, self.n_vocab)
                )
                picked.append(logits.argmax(axis=1))
        return np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)

    def generate(self, prompts: list[list[int]], tokens: int) -> tuple[int, list[int]]:
        """Greedy continuation of each prompt (at most n_seq), EOS ignored, exactly `tokens` new
        tokens each → (tokens made in all, the first sequence's tokens)."""
        if len(prompts) > self.n_seq:
            raise ValueError(f"{len(prompts)} prompts for a context of {self.n_seq} sequences")
        lib = self.lib
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        made = [[int(t)] for t in self._decode(batch_layout(prompts, [0] * len(prompts)))]
        lengths = [len(p) for p in prompts]
        for step in range(tokens - 1):
            rows = [(out[-1], lengths[s] + step, s, True) for s, out in enumerate(made)]
            for out, token in zip(made, self._decode(rows)):
                out.append(int(token))
        return sum(len(out) for out in made), made[0]

    def close(self) -> None:
        if self.ctx is None:
            return
        lib = self.lib
        lib.llama_batch_free(self.batch)
        lib.llama_free(self.ctx)
        lib.llama_model_free(self.model)
        self.ctx = self.model = None


def convert_gguf(source, target, ftype: str, threads: int = 2) -> Path:
    """Write `source` re-encoded as `ftype` (f16, bf16 or q8_0) with llama.cpp's own quantizer
    (`llama_model_quantize`, dequantizing the source's blocks first), once: an existing target is
    reused. Written to a temporary name and renamed, so a failed conversion leaves no file."""
    target = Path(target)
    if target.is_file():
        return target
    lib = _lib()
    params = lib.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = getattr(lib, FTYPES[ftype])
    params.allow_requantize = True
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    status = lib.llama_model_quantize(
        str(source).encode(), str(partial).encode(), ctypes.byref(params)
    )
    if status != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize({source} → {ftype}) returned {status}")
    partial.rename(target)
    return target
