"""Training: one Trainer (trainer.py) for every objective (objectives/), with gradient diagnostics,
exact-resume checkpoints, memory-mapped token data, tokenizer training and DDP/FSDP. See docs/training.md."""
