"""Outlier input channels kept in float for W8A8 (LLM.int8()'s decomposition, Dettmers et al., 2022).

    index = outlier_channels(stats, factors, 8)   # {linear: the 8 input channels with the largest max |x|}

A per-token int8 grid spans the token's largest |x|; in these models a handful of input channels
(the same ones in every token) reach ~100× the rest, so the grid's step is set by them and the
other channels round coarsely. Taking those few channels out of the int8 product — x[:, idx] ·
w[:, idx]ᵀ in float, everything else in int8 — lets each token's grid fit the ordinary channels.
The channels are chosen once, from calibration (`collect_inputs`' per-channel max |x|, after
SmoothQuant's division when the plan smooths), one set per group of linears that read the same
input, so q/k/v and gate/up still fuse into one int8 GEMM in the engine. k channels of a
576-wide input are k / 576 of the layer's multiply-adds in float: a mixed model, labelled so.
"""

from __future__ import annotations

import torch

from llmlab.errors import LlmlabError
from llmlab.quant.smooth import InputStats


def outlier_channels(
    stats: InputStats, factors: dict[str, torch.Tensor], count: int, skip=()
) -> dict[str, torch.Tensor]:
    """{linear: sorted int64 indices of its `count` input channels with the largest calibration
    max |x / s|} for every linear of `stats` but those in `skip`; {} for count 0."""
    chosen: dict[str, torch.Tensor] = {}
    if not count:
        return chosen
    for group in stats.groups:
        names = [name for name in group if name not in skip]
        if not names:
            continue
        peak = torch.stack([stats.act_max[n] for n in names]).amax(0)
        if count >= peak.numel():
            raise LlmlabError(
                f"--outliers {count}: {names[0]} has only {peak.numel()} input channels"
            )
        s = factors.get(names[0])
        if s is not None:
            peak = peak / s
        index = peak.topk(count).indices.sort().values
        chosen.update({name: index for name in names})
    return chosen
