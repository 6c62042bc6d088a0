"""Mixed precision for W8A8: which linears stay in float.

    names = most_sensitive(choices, 2)     # the 2 groups with the largest calibration error

The ranking is the relative output error Σ‖Y_q − Y‖² / Σ‖Y‖² each group of linears (q/k/v,
gate/up, o, down, the LM head) has on calibration rows once quantized (after its SmoothQuant
factors: smooth.py), so a group is kept float for what quantization does to it on the train
split, never for what it does to the evaluation text. A whole group stays float so the engine
can still fuse its linears.
"""

from __future__ import annotations

from llmlab.quant.smooth import GroupChoice


def most_sensitive(choices: list[GroupChoice], count: int) -> list[str]:
    """The linears of the `count` groups with the largest error (largest first)."""
    ranked = sorted(choices, key=lambda c: c.error, reverse=True)
    return [name for choice in ranked[:count] for name in choice.names]
