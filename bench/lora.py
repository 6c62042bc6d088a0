"""LoRA training step: llmlab's LoRA on llmlab's Llama beside `peft` on the `transformers` Llama.

Same model (the packaged SmolLM2-135M-Instruct, dequantized to fp32), batch 4 × 256 tokens, r=8 on
q/k/v/o, AdamW; each side runs in its own subprocess so its peak RSS is its own:

    .venv/bin/python bench/lora.py [--steps 3] [--threads 2] [--json]

Prints tokens/s and peak RSS for both and the ratios (ours / peft).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

BATCH, SEQ = 4, 256


def child(side: str, folder: str, steps: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ids = torch.randint(0, 49152, (BATCH, SEQ + 1))
    if side == "llmlab":
        import llmlab
        from llmlab.nn.lora import add_lora, lora_parameters

        model, _ = llmlab.load(folder, device="cpu", dtype="float32", tokenizer=False)
        add_lora(model, r=8, alpha=16)
        params = lora_parameters(model)
        forward = lambda x: model(x)  # noqa: E731
    else:
        import peft
        import transformers

        base = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        model = peft.get_peft_model(base, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                          task_type="CAUSAL_LM"))
        params = [p for p in model.parameters() if p.requires_grad]
        forward = lambda x: model(input_ids=x, use_cache=False).logits  # noqa: E731
    model.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    times = []
    for step in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        logits = forward(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"side": side, "tokens_per_s": BATCH * SEQ / (sum(times) / len(times)), "peak_rss_mb": peak_mb}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.steps, args.threads)
    import llmlab
    from llmlab.formats.hf import save_hf_folder

    folder = tempfile.mkdtemp(prefix="bench-lora-")
    model, tokenizer = llmlab.load("smollm2-135m-instruct", device="cpu", dtype="float32")
    save_hf_folder(model, folder, tokenizer=tokenizer)  # both sides read the same fp32 weights
    del model
    results = {}
    for side in ("llmlab", "peft"):
        out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--threads", str(args.threads),
                              "--child", side, folder], capture_output=True, text=True, check=True)
        results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, peer = results["llmlab"], results["peft"]
    summary = {"batch": f"{BATCH}x{SEQ}", "r": 8, **{f"{k}_{m}": v[m] for k, v in results.items() for m in ("tokens_per_s", "peak_rss_mb")},
               "speed_ratio": ours["tokens_per_s"] / peer["tokens_per_s"], "memory_ratio": ours["peak_rss_mb"] / peer["peak_rss_mb"]}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{'side':8} {'tokens/s':>10} {'peak RSS MB':>12}")
        for side, r in results.items():
            print(f"{side:8} {r['tokens_per_s']:10.1f} {r['peak_rss_mb']:12.0f}")
        print(f"speed ours/peft {summary['speed_ratio']:.2f}x   memory ours/peft {summary['memory_ratio']:.2f}x")


if __name__ == "__main__":
    main()
