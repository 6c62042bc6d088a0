"""Training objectives: `objective(model, batch) -> (loss, metrics)`.

An objective owns everything task-specific (how a batch becomes a loss); the trainer owns the loop.
metrics is a dict of floats; a "tokens" entry is what the trainer's tokens/s counts.
"""
