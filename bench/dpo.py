"""DPO step time: llmlab's Trainer + DPOObjective beside TRL's DPOTrainer, same tiny model and batches.

A random 4-layer Llama (hidden 256) with the tiny test tokenizer, 4 preference pairs per step,
full fine-tuning with a frozen reference copy on both sides, AdamW, fp32, in this process:

    .venv/bin/python bench/dpo.py [--steps 10] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def pairs(n=64):
    return [{"prompt": f"Question number {i} about dropout?", "chosen": f"Dropout zeroes activations, case {i}.",
             "rejected": "Attention is all you need."} for i in range(n)]


def run_trl(config, tokenizer, steps, batch):
    import datasets
    import transformers
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    args = DPOConfig(output_dir=tempfile.mkdtemp(), max_steps=steps + 1, per_device_train_batch_size=batch, learning_rate=1e-4,
                     logging_steps=1000, save_strategy="no", report_to=[], beta=0.1, use_cpu=True, disable_tqdm=True)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model).eval(), args=args, train_dataset=datasets.Dataset.from_list(pairs()), processing_class=tokenizer)
    times = []

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.start)

    trainer.add_callback(Timer())
    trainer.train()
    return sum(times[1:]) / len(times[1:])


def run_ours(config, tokenizer, steps, batch):
    import transformers

    from llmlab.models.llama import model_from_hf
    from llmlab.posttrain.data import Pair, completion_ids, dpo_collate, prompt_ids
    from llmlab.train.config import TrainerConfig
    from llmlab.train.objectives.dpo import DPOObjective
    from llmlab.train.objectives.reference import Reference
    from llmlab.train.sft_data import ShuffledBatches
    from llmlab.train.trainer import Trainer

    torch.manual_seed(0)
    model = model_from_hf(config.to_dict(), transformers.LlamaForCausalLM(config).state_dict())
    rows = [Pair(prompt_ids(tokenizer, p["prompt"]), completion_ids(tokenizer, p["chosen"]), completion_ids(tokenizer, p["rejected"]))
            for p in pairs()]
    source = ShuffledBatches(rows, batch, lambda r: dpo_collate(r, tokenizer.pad_token_id))
    c = TrainerConfig(run_dir="")
    c.train.steps, c.train.device, c.train.progress, c.diagnostics.every = steps + 1, "cpu", False, 0
    c.optim.lr = 1e-4
    trainer = Trainer(model, DPOObjective(Reference(model), beta=0.1), source, c)
    trainer.fit()
    times = [r["step_time"] for r in trainer.history[1:]]
    return sum(times) / len(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from tiny import tiny_llama_config, tiny_tokenizer

    config = tiny_llama_config(hidden_size=256, intermediate_size=512, num_hidden_layers=4, max_position_embeddings=256)
    tokenizer = tiny_tokenizer()
    ours = run_ours(config, tokenizer, args.steps, args.batch)
    trl = run_trl(config, tokenizer, args.steps, args.batch)
    result = {"llmlab_step_s": ours, "trl_step_s": trl, "speedup": trl / ours, "pairs_per_step": args.batch}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"llmlab {ours * 1000:.1f} ms/step   TRL {trl * 1000:.1f} ms/step   speedup {trl / ours:.2f}x")


if __name__ == "__main__":
    main()
