"""LoRA training step: llmlab's LoRA on llmlab's Llama beside `peft` on the `transformers` Llama.

Same model (the packaged SmolLM2-135M-Instruct, dequantized to fp32 and saved once as an HF
folder both sides read), batch 4 × 256 tokens, r=8 (alpha 16) on q/k/v/o, dropout 0, AdamW on the
adapters only, the same random token batch and the same fp32 cross-entropy; each side runs in its
own subprocess so its peak RSS is its own:

    .venv/bin/python bench/lora.py [--steps 3] [--threads 2] [--rounds 2] [--ours-base-dtype bf16] [--peer-fp32] [--json]

llmlab's options (printed): the frozen base held in bf16 (`add_lora(..., base_dtype="bf16")`: the
whole model then computes in bf16, adapters keep fp32 master weights), the fused LoRA path
(x·Aᵀ then one addmm with B·scaling), no dropout module at p=0. peft runs as `get_peft_model` gives
it, under bf16 autocast when our base is held in bf16 (the headline peer: equal precision) and in
fp32 when ours is fp32; `--peer-fp32` adds plain fp32 peft as an extra row. The sides alternate
in one run (round 1: ours then peft, round 2: peft then ours, ...), best tokens/s per side over
`--rounds`, so machine drift hits both.
Loss parity: the first-step loss of each side is printed and must agree within 0.05 (bf16 vs
fp32 rounding), else the bench fails: speed must not come from different math.
Prints tokens/s and peak RSS for every side and the ratios (ours / peft).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time

BATCH, SEQ = 4, 256


def child(side: str, folder: str, steps: int, threads: int, base_dtype: str):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ids = torch.randint(0, 49152, (BATCH, SEQ + 1))
    autocast = False
    if side == "llmlab":
        import llmlab
        from llmlab.nn.lora import add_lora, lora_parameters

        model, _ = llmlab.load(folder, device="cpu", dtype="float32", tokenizer=False)
        add_lora(model, r=8, alpha=16, base_dtype=base_dtype or None)
        params = lora_parameters(model)
        forward = lambda x: model(x)  # noqa: E731
    else:
        import peft
        import transformers

        base = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        model = peft.get_peft_model(
            base,
            peft.LoraConfig(
                r=8,
                lora_alpha=16,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                task_type="CAUSAL_LM",
            ),
        )
        params = [p for p in model.parameters() if p.requires_grad]
        forward = lambda x: model(input_ids=x, use_cache=False).logits  # noqa: E731
        autocast = side == "peft-bf16"
    model.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    times, first_loss = [], None
    for step in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = forward(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
        else:
            first_loss = float(loss.detach())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "side": side,
                "tokens_per_s": BATCH * SEQ / (sum(times) / len(times)),
                "peak_rss_mb": peak_mb,
                "first_loss": first_loss,
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ours-base-dtype",
        default="bf16",
        choices=["bf16", "int8", ""],
        help="how llmlab holds the frozen base ('' = fp32 as loaded)",
    )
    parser.add_argument(
        "--peer-fp32", action="store_true", help="also run plain fp32 peft (an extra row)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating rounds of every side (default 2)"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.steps, args.threads, args.ours_base_dtype)
    import llmlab
    from llmlab.formats.hf import save_hf_folder

    folder = tempfile.mkdtemp(prefix="bench-lora-")
    model, tokenizer = llmlab.load("smollm2-135m-instruct", device="cpu", dtype="float32")
    save_hf_folder(model, folder, tokenizer=tokenizer)  # both sides read the same fp32 weights
    del model
    # The headline peer computes at our precision: bf16 autocast when our base is bf16 (or int8,
    # which computes in bf16), plain peft when ours is fp32.
    headline = "peft" if not args.ours_base_dtype else "peft-bf16"
    sides = ["llmlab", headline] + (["peft"] if args.peer_fp32 and headline != "peft" else [])
    results = {}
    for round_index in range(args.rounds):
        for side in sides if round_index % 2 == 0 else sides[::-1]:
            measured = run_side(side, folder, args)
            best = results.setdefault(side, measured)
            best["tokens_per_s"] = max(best["tokens_per_s"], measured["tokens_per_s"])
            best["peak_rss_mb"] = max(best["peak_rss_mb"], measured["peak_rss_mb"])
    shutil.rmtree(folder, ignore_errors=True)
    report(results, headline, args)


def run_side(side: str, folder: str, args) -> dict:
    """One side in its own subprocess (so its peak RSS is its own)."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--steps",
            str(args.steps),
            "--threads",
            str(args.threads),
            "--ours-base-dtype",
            args.ours_base_dtype,
            "--child",
            side,
            folder,
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.exit(f"{side} side failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: dict, headline: str, args) -> None:
    ours, peer = results["llmlab"], results[headline]
    options = (
        f"base held in {args.ours_base_dtype or 'fp32'}, fused LoRA path (x·Aᵀ, addmm with B·scaling), "
        f"dropout 0 fast path, {args.threads} threads"
    )
    summary = {
        "batch": f"{BATCH}x{SEQ}",
        "r": 8,
        "llmlab_options": options,
        **{
            f"{k}_{m}": v[m]
            for k, v in results.items()
            for m in ("tokens_per_s", "peak_rss_mb", "first_loss")
        },
        "headline_peer": headline,
        "rounds": args.rounds,
        "speed_ratio": ours["tokens_per_s"] / peer["tokens_per_s"],
        "memory_ratio": ours["peak_rss_mb"] / peer["peak_rss_mb"],
        "first_loss_diff": abs(ours["first_loss"] - peer["first_loss"]),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"SmolLM2-135M LoRA step, batch {BATCH}x{SEQ}, r=8 q/k/v/o; llmlab: {options}")
        print(f"{'side':10} {'tokens/s':>10} {'peak RSS MB':>12} {'first loss':>11}")
        for side, r in results.items():
            print(
                f"{side:10} {r['tokens_per_s']:10.1f} {r['peak_rss_mb']:12.0f} {r['first_loss']:11.4f}"
            )
        print(
            f"speed ours/{headline} {summary['speed_ratio']:.2f}x   memory ours/{headline} "
            f"{summary['memory_ratio']:.2f}x   first-loss |diff| {summary['first_loss_diff']:.4f}   "
            f"(best of {args.rounds} alternating rounds)"
        )
    if summary["first_loss_diff"] > 0.05:
        sys.exit(
            f"loss parity failed: first-step losses differ by {summary['first_loss_diff']:.4f} (> 0.05)"
        )


if __name__ == "__main__":
    main()
