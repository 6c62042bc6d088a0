"""Training throughput: llmlab's Trainer + Llama beside HF `LlamaForCausalLM` in a plain loop.

    python bench/train.py                   # 6 layers, d=384, 6 heads, FFN 1024, vocab 8192, seq 256, batch 8
    python bench/train.py --steps 5 --compile --json out.json

Both models start from the same weights (ours are copied into HF's; the parameter names match) and
see the same batches of the bundled corpus, so their loss curves should agree step by step in fp32.
Rows: HF in a plain loop (AdamW, clip 1.0) in fp32 and with the same bf16 autocast + fused AdamW
our bf16 row uses; llmlab fp32, llmlab bf16 autocast + fused AdamW, and optionally + torch.compile.
Every row is compared with HF at the same precision, and the first --warmup steps of every side
run untimed. MFU = achieved model FLOP/s ÷ the measured matmul peak of this machine
(best of 3 timings of a 2048² matmul in the same dtype), with model FLOPs per token =
6·(parameters except the input embedding) + 12·layers·d·seq.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from llmlab.models.llama import LlamaConfig, LlamaForCausalLM
from llmlab.train.config import TrainerConfig, from_dict
from llmlab.train.data import PackedBatches, TokenFile, split_sequences, tokenize_corpus
from llmlab.train.objectives.clm import CausalLMObjective
from llmlab.train.tokenizer_training import train_tokenizer
from llmlab.train.trainer import Trainer

HF_ROWS = {
    "fp32": "HF LlamaForCausalLM, plain loop, fp32",
    "bf16": "HF LlamaForCausalLM, bf16 autocast + fused AdamW",
}
SHAPE = dict(
    vocab_size=8192,
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=6,
    intermediate_size=1024,
    max_position_embeddings=256,
    tie_word_embeddings=False,
)


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5, trials: int = 3) -> float:
    """Best of `trials` timings of a square matmul: what this CPU (and its load) can deliver."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def flops_per_token(model, seq_len: int) -> float:
    """6 FLOPs per weight (forward 2, backward 4) for every matmul weight — the input embedding is a
    lookup, not a matmul — plus attention scores and values: 12·layers·d·seq."""
    params = sum(p.numel() for p in model.parameters()) - model.model.embed_tokens.weight.numel()
    c = model.config
    return 6 * params + 12 * c.num_hidden_layers * c.hidden_size * seq_len


def hf_plain_loop(
    state: dict, batches: list, lr: float, precision: str, warmup: int
) -> tuple[list[float], float]:
    """HF's model in a plain loop with the recipe our Trainer row uses at the same precision:
    bf16 autocast over fp32 master weights and fused AdamW for bf16, plain AdamW for fp32. The
    first `warmup` steps (allocator, kernel choice) are run but not timed, as on our side."""
    import contextlib

    import transformers

    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE, rms_norm_eps=1e-6))
    hf.load_state_dict({k: v for k, v in state.items() if k in hf.state_dict()}, strict=False)
    optimizer = torch.optim.AdamW(
        hf.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0, fused=precision == "bf16"
    )
    losses, timed = [], 0.0
    for step, batch in enumerate(batches):
        start = time.perf_counter()
        ids = batch["input_ids"]
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if precision == "bf16"
            else contextlib.nullcontext()
        )
        with autocast:
            logits = hf(ids[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if step >= warmup:
            timed += time.perf_counter() - start
    return losses, timed * len(batches) / max(1, len(batches) - warmup)


class ListBatches:
    """Replays a fixed list of batches (so every contender sees the same data)."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next_batch(self):
        self.i += 1
        return self.batches[self.i - 1]

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


def ours(
    state: dict,
    batches: list,
    lr: float,
    precision: str,
    compile_model: bool,
    run_dir: str,
    warmup: int,
):
    model = LlamaForCausalLM(LlamaConfig.from_hf(SHAPE))
    model.load_state_dict(state)
    config = from_dict(
        TrainerConfig,
        {
            "run_dir": run_dir,
            "optim": {"lr": lr, "schedule": "constant", "fused": precision != "fp32"},
            "train": {
                "steps": len(batches),
                "batch_size": len(batches[0]["input_ids"]),
                "precision": precision,
                "compile": compile_model,
                "progress": False,
                "clip_grad_norm": 1.0,
            },
            "diagnostics": {"every": 0},
            "checkpoint": {"resume": False},
        },
    )
    trainer = Trainer(model, CausalLMObjective(), ListBatches(batches), config)
    trainer.fit()
    times = [r["step_time"] for r in trainer.history]
    skip = max(warmup, 1 if compile_model else 0)  # compile: step 1 also compiles
    steady = times[skip:] or times
    return [r["loss"] for r in trainer.history], sum(steady) * len(times) / len(steady)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed first steps on every side (default 2)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also run llmlab bf16 + torch.compile"
    )
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    corpus = ["bundled:stories-en.txt", "bundled:notes-zh.txt"]
    train_tokenizer(corpus, work / "tok", vocab_size=SHAPE["vocab_size"], min_frequency=1)
    tokens = TokenFile(tokenize_corpus(corpus, work / "tok", work / "data"))
    train_ids, _ = split_sequences(tokens, args.seq_len, 0.0)
    source = PackedBatches(tokens, train_ids, args.seq_len, args.batch_size, seed=0)
    batches = [source.next_batch() for _ in range(args.steps)]
    torch.manual_seed(0)
    reference = LlamaForCausalLM(LlamaConfig.from_hf(SHAPE))
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    tokens_per_run = args.steps * args.batch_size * args.seq_len
    per_token = flops_per_token(reference, args.seq_len)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}

    rows = {}
    for precision in ("fp32", "bf16"):
        losses, seconds = hf_plain_loop(state, batches, args.lr, precision, args.warmup)
        rows[HF_ROWS[precision]] = (losses, seconds, precision)
    for label, precision, compiled in [
        ("llmlab Trainer, fp32", "fp32", False),
        ("llmlab Trainer, bf16 autocast + fused AdamW", "bf16", False),
    ] + ([("llmlab Trainer, bf16 + torch.compile", "bf16", True)] if args.compile else []):
        losses, seconds = ours(
            state,
            batches,
            args.lr,
            precision,
            compiled,
            str(work / label.replace(" ", "_")),
            args.warmup,
        )
        rows[label] = (losses, seconds, precision)

    # Each row is compared with HF at its own precision (the headline is like with like).
    hf_speed = {p: tokens_per_run / rows[HF_ROWS[p]][1] for p in HF_ROWS}
    print(
        f"\nmatmul peak: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s; "
        f"model {per_token / 1e6:.1f} MFLOP/token; {args.steps} steps × {args.batch_size}×{args.seq_len} tokens"
    )
    print(f"{'run':48s} {'tokens/s':>9s} {'vs HF same precision':>21s} {'MFU':>6s}")
    results = {}
    for label, (losses, seconds, precision) in rows.items():
        speed = tokens_per_run / seconds
        mfu = speed * per_token / peaks[precision]
        results[label] = {
            "tokens_per_s": speed,
            "vs_hf_same_precision": speed / hf_speed[precision],
            "mfu": mfu,
            "losses": losses,
        }
        print(f"{label:48s} {speed:9.0f} {speed / hf_speed[precision]:20.2f}× {mfu:6.1%}")
    print("\nloss per step (same weights, same batches):")
    labels = list(rows)
    print(
        "step "
        + " ".join(f"{i:>10d}" for i in range(len(labels)))
        + "   (columns: "
        + "; ".join(f"{i}={label}" for i, label in enumerate(labels))
        + ")"
    )
    for step in range(args.steps):
        print(f"{step + 1:4d} " + " ".join(f"{rows[label][0][step]:10.4f}" for label in labels))
    if args.json:
        Path(args.json).write_text(json.dumps({"peaks": peaks, "results": results}, indent=2))


if __name__ == "__main__":
    main()
