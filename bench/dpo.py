"""DPO step time: llmlab's Trainer + DPOObjective beside TRL's DPOTrainer, same tiny model, tokens and batches.

A random 4-layer Llama (hidden 256) with the tiny test tokenizer, 4 preference pairs per step,
full fine-tuning with a frozen reference copy on both sides, fused AdamW, gradient clipping at 1.0,
fp32 without gradient checkpointing (TRL's DPOConfig defaults to bf16 + checkpointing; they are
switched off so both sides do the same arithmetic), in this process:

    .venv/bin/python bench/dpo.py [--steps 10] [--batch 4] [--threads 2] [--repeats 3] [--json]

Equal terms: TRL tokenizes the pairs (plain prompt, completion + EOS) and llmlab trains on exactly
those token ids; both concatenate chosen and rejected into one forward pass. Two settings, each run
on both sides: reference log-probs computed every step from the frozen copy ("on the fly"), and
precomputed once over the dataset before training (`precompute_ref_log_probs=True` for TRL,
`dpo.precompute_ref_log_probs=true` / `precompute_reference_logps` for llmlab); the precompute pass
itself is outside the timed steps on both sides. The first step of each run is dropped; the
median of the others is taken, and each side's best median over `--repeats` alternating runs is
reported (robust to other jobs on a shared machine).

llmlab's step: chosen and rejected in one forward with each prompt computed once (prefix
sharing, train/shared_prefix.py), log-probs only at completion positions.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def pairs(n=64):
    return [
        {
            "prompt": f"Question number {i} about dropout?",
            "chosen": f"Dropout zeroes activations, case {i}.",
            "rejected": "Attention is all you need.",
        }
        for i in range(n)
    ]


def trl_trainer(config, tokenizer, steps, batch, precompute):
    import datasets
    import transformers
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    args = DPOConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=steps + 1,
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        beta=0.1,
        use_cpu=True,
        disable_tqdm=True,
        precompute_ref_log_probs=precompute,
        # DPOConfig defaults to bf16 autocast and gradient checkpointing; both sides run fp32
        # without checkpointing here (and with TRL's other defaults: fused AdamW, clip 1.0).
        bf16=False,
        gradient_checkpointing=False,
    )
    return DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model).eval(),
        args=args,
        train_dataset=datasets.Dataset.from_list(pairs()),
        processing_class=tokenizer,
    )


def run_trl(trainer) -> float:
    import transformers

    times = []

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.start)

    trainer.add_callback(Timer())
    trainer.train()
    return statistics.median(times[1:])


def run_ours(config, tokenized, pad_id, steps, batch, precompute) -> float:
    import transformers

    from llmlab.models.llama import model_from_hf
    from llmlab.posttrain.data import Pair, dpo_collate, precompute_reference_logps
    from llmlab.train.config import TrainerConfig
    from llmlab.train.objectives.dpo import DPOObjective
    from llmlab.train.objectives.reference import Reference
    from llmlab.train.sft_data import ShuffledBatches
    from llmlab.train.trainer import Trainer

    torch.manual_seed(0)
    model = model_from_hf(config.to_dict(), transformers.LlamaForCausalLM(config).state_dict())
    rows = [
        Pair(list(r["prompt_ids"]), list(r["chosen_ids"]), list(r["rejected_ids"]))
        for r in tokenized
    ]
    reference = Reference(model)
    if precompute:
        precompute_reference_logps(reference, rows, pad_id, batch)
        reference = None
    source = ShuffledBatches(rows, batch, lambda r: dpo_collate(r, pad_id))
    c = TrainerConfig(run_dir="")
    c.train.steps, c.train.device, c.train.progress, c.diagnostics.every = (
        steps + 1,
        "cpu",
        False,
        0,
    )
    c.optim.lr, c.optim.fused, c.train.clip_grad_norm = (
        1e-4,
        True,
        1.0,
    )  # as TRL: fused AdamW, clip at 1.0
    trainer = Trainer(model, DPOObjective(reference, beta=0.1), source, c)
    trainer.fit()
    return statistics.median(r["step_time"] for r in trainer.history[1:])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per side and setting, alternating"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    from tiny import tiny_llama_config, tiny_tokenizer

    config = tiny_llama_config(
        hidden_size=256, intermediate_size=512, num_hidden_layers=4, max_position_embeddings=256
    )
    tokenizer = tiny_tokenizer()
    results = {}
    for precompute in (False, True):
        setting = "precomputed" if precompute else "on_the_fly"
        ours, theirs = [], []
        for _ in range(
            args.repeats
        ):  # alternate the sides; keep each side's best median (least disturbed)
            trl = trl_trainer(config, tokenizer, args.steps, args.batch, precompute)
            tokenized = [
                trl.train_dataset[i] for i in range(len(trl.train_dataset))
            ]  # the very same token ids
            ours.append(
                run_ours(
                    config, tokenized, tokenizer.pad_token_id, args.steps, args.batch, precompute
                )
            )
            theirs.append(run_trl(trl))
        results[setting] = {
            "llmlab_step_s": min(ours),
            "trl_step_s": min(theirs),
            "speedup": min(theirs) / min(ours),
        }
    tokens = sum(
        len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in tokenized
    ) / len(tokenized)
    if args.json:
        print(json.dumps({"pairs_per_step": args.batch, "tokens_per_pair": tokens, **results}))
        return
    print(
        f"DPO step, tiny 4-layer Llama (hidden 256), {args.batch} pairs/step (~{tokens:.0f} tokens/pair), "
        f"full fine-tuning, fp32, {args.threads} threads"
    )
    print(f"{'reference log-probs':22} {'llmlab ms':>10} {'TRL ms':>10} {'speedup':>8}")
    for setting, r in results.items():
        print(
            f"{setting:22} {r['llmlab_step_s'] * 1000:10.1f} {r['trl_step_s'] * 1000:10.1f} {r['speedup']:7.2f}x"
        )


if __name__ == "__main__":
    main()
