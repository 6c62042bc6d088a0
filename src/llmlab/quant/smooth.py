"""SmoothQuant factors for W8A8 — one α for the whole model, or α searched per layer group on the
calibration split — and the per-group quantization error that the search (and the choice of
layers to keep in float, mixed.py) is based on.

    stats = collect_inputs(model, calibration_ids)          # one pass: per-channel max |x|, sample rows
    factors = smoothing_factors(model, calibration_ids, 0.5)           # {linear: s [in]}, one α
    factors, groups = search_smoothing(model, calibration_ids)         # α per group, least error

SmoothQuant (Xiao et al., 2022): per input channel j, s_j = max|x_j|^α / max|w_j|^(1−α); the
weight's column j is multiplied by s_j and the input divided by it at run time, so x · wᵀ is
unchanged while the activations' outlier channels shrink. α trades activation error for weight
error, and the best trade differs from layer to layer (an input with a 100× outlier channel
wants α near 1, a quiet one wants no smoothing at all), so `search_smoothing` tries every α in
ALPHAS and "off" for each group of linears that read the same input (q/k/v, gate/up: one s per
group so the engine can still fuse them) and keeps the one whose quantized outputs are closest
to the float outputs on calibration rows: error = Σ‖Y_q − Y‖² / Σ‖Y‖² over the group. The
search only sees calibration text (the train split), never the evaluation text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llmlab.errors import LlmlabError
from llmlab.nn.quantized_linear import W8A8Linear
from llmlab.quant.observers import make_observer
from llmlab.quant.rtn import linear_targets

ALPHAS = tuple(i / 10 for i in range(11))
# In place of an observer name: dynamic activations over each token's own [min, max].
PER_TOKEN_ASYMMETRIC = "per-token-asymmetric"


@dataclass
class InputStats:
    """What the linears saw on the calibration batches."""

    act_max: dict[str, torch.Tensor]  # linear → max |x| per input channel [in]
    groups: list[list[str]]  # linears called one after another on the same tensor
    samples: dict[str, torch.Tensor]  # first linear of each group → sample input rows [r, in]


@dataclass
class GroupChoice:
    """The search's verdict for one group of linears."""

    names: list[str]
    alpha: float | None  # None: no smoothing
    error: float  # relative output error with that choice (calibration rows)
    error_unsmoothed: float


@torch.no_grad()
def collect_inputs(
    model: nn.Module, calibration: torch.Tensor, rows: int = 256, batch_size: int = 4, seed=0
) -> InputStats:
    """Run the calibration ids [n, seq] once; keep each linear's per-channel max |x| and, per
    group, `rows` input rows drawn at random (the same token positions for every layer)."""
    targets = dict(linear_targets(model))
    act_max: dict[str, torch.Tensor] = {}
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in targets}
    calls: list[tuple[str, bool]] = []  # (name, same input as the call before?), first batch
    batches = range(0, len(calibration), batch_size)
    per_batch = -(-rows // len(batches))
    state = {"first": True, "pick": None, "last": None}

    def hook(name):
        def record(module, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            seen = x.abs().amax(0)
            act_max[name] = torch.maximum(act_max[name], seen) if name in act_max else seen
            if state["pick"] is None:  # the batch's token positions to sample, drawn once
                state["pick"] = torch.randperm(len(x), generator=generator)[:per_batch]
            samples[name].append(x[state["pick"]].clone())
            if state["first"]:
                # `is`, not id(): a freed input's id can come back for the next layer's input
                calls.append((name, args[0] is state["last"]))
                state["last"] = args[0]

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in targets.items()]
    generator = torch.Generator().manual_seed(seed)
    try:
        for start in batches:
            state["pick"] = None
            model(calibration[start : start + batch_size])
            state["first"], state["last"] = False, None
    finally:
        for h in handles:
            h.remove()
    missing = [name for name in targets if name not in act_max]
    if missing:
        raise LlmlabError(f"calibration never reached {missing[0]}: cannot smooth it")
    groups = group_calls(calls)
    kept = {g[0]: torch.cat(samples[g[0]])[:rows] for g in groups}
    return InputStats(act_max, groups, kept)


def group_calls(calls: list[tuple[str, bool]]) -> list[list[str]]:
    """Consecutive calls on the same input tensor form one group (q/k/v; gate/up)."""
    groups: list[list[str]] = []
    for i, (name, same_input) in enumerate(calls):
        if i and same_input and name not in groups[-1]:
            groups[-1].append(name)
        elif not any(name in g for g in groups):
            groups.append([name])
    return groups


def smoothing_scales(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float):
    """s [in] = act_max^α / weight_max^(1−α); a channel calibration never saw active keeps 1."""
    if not 0 <= alpha <= 1:
        raise LlmlabError(f"--smooth must be between 0 and 1, got {alpha}")
    s = act_max.clamp(min=1e-5) ** alpha / weight_max.clamp(min=1e-5) ** (1 - alpha)
    return torch.where(act_max > 0, s.clamp(min=1e-5), torch.ones_like(s))


def _group_maxima(stats: InputStats, targets: dict[str, nn.Linear], group: list[str]):
    act = torch.stack([stats.act_max[n] for n in group]).amax(0)
    weight = torch.stack([targets[n].weight.detach().float().abs().amax(0) for n in group])
    return act, weight.amax(0)


def w8a8_from(linear: nn.Linear, smooth=None, observer: str | None = None, x=None) -> W8A8Linear:
    """The W8A8 layer for a float linear: dynamic (observer None: symmetric per token;
    PER_TOKEN_ASYMMETRIC), or static with an activation grid chosen by `observer` from the
    (smoothed) input rows x."""
    if observer == PER_TOKEN_ASYMMETRIC:
        return W8A8Linear.from_weight(linear.weight, linear.bias, smooth=smooth, asymmetric=True)
    scale = zero = None
    if observer is not None:
        obs = make_observer(observer, bits=8, symmetric=False)
        obs(x if smooth is None else x / smooth)
        scale, zero = obs.qparams()
    return W8A8Linear.from_weight(linear.weight, linear.bias, scale, zero, smooth)


@torch.no_grad()
def group_error(linears: list[nn.Linear], x: torch.Tensor, smooth=None, observer=None) -> float:
    """Σ‖Y_q − Y‖² / Σ‖Y‖² over the linears of a group, on input rows x [r, in]."""
    error = total = 0.0
    for linear in linears:
        y = x @ linear.weight.detach().float().t()
        q = w8a8_from(linear, smooth, observer, x)
        error += float(((q(x) - (y if linear.bias is None else y + linear.bias)) ** 2).sum())
        total += float((y**2).sum())
    return error / max(total, 1e-30)


def fixed_factors(model: nn.Module, stats: InputStats, alpha: float) -> dict[str, torch.Tensor]:
    """{linear name: s [in]} with one α for every group."""
    targets = dict(linear_targets(model))
    factors = {}
    for group in stats.groups:
        s = smoothing_scales(*_group_maxima(stats, targets, group), alpha)
        factors.update({n: s for n in group})
    return factors


@torch.no_grad()
def smoothing_factors(
    model: nn.Module, calibration: torch.Tensor, alpha: float = 0.5, batch_size: int = 4
) -> dict[str, torch.Tensor]:
    """{linear name: s [in]} with one α for every group, from the calibration ids [n, seq]."""
    smoothing_scales(torch.ones(1), torch.ones(1), alpha)  # validates α before the long pass
    return fixed_factors(model, collect_inputs(model, calibration, 1, batch_size), alpha)


@torch.no_grad()
def group_choices(
    model: nn.Module, stats: InputStats, factors: dict, observer=None, alpha=None
) -> list[GroupChoice]:
    """Each group's calibration output error with the given factors (no search)."""
    targets = dict(linear_targets(model))
    choices = []
    for group in stats.groups:
        linears, x = [targets[n] for n in group], stats.samples[group[0]]
        plain = group_error(linears, x, None, observer)
        s = factors.get(group[0])
        error = plain if s is None else group_error(linears, x, s, observer)
        choices.append(GroupChoice(group, alpha if s is not None else None, error, plain))
    return choices


@torch.no_grad()
def search_smoothing(
    model: nn.Module,
    calibration: torch.Tensor,
    observer: str | None = None,
    alphas=ALPHAS,
    rows: int = 256,
    stats: InputStats | None = None,
) -> tuple[dict[str, torch.Tensor], list[GroupChoice]]:
    """Per group, the α in `alphas` (or none) with the least calibration output error for
    dynamic W8A8 (observer None) or static W8A8 with that observer. Returns the factors of the
    smoothed groups and every group's choice."""
    stats = stats or collect_inputs(model, calibration, rows=rows)
    targets = dict(linear_targets(model))
    factors, choices = {}, []
    for group in stats.groups:
        linears, x = [targets[n] for n in group], stats.samples[group[0]]
        act, weight = _group_maxima(stats, targets, group)
        plain = group_error(linears, x, None, observer)
        best = (plain, None, None)
        for alpha in alphas:
            s = smoothing_scales(act, weight, alpha)
            error = group_error(linears, x, s, observer)
            if error < best[0]:
                best = (error, alpha, s)
        if best[2] is not None:
            factors.update({n: best[2] for n in group})
        choices.append(GroupChoice(group, best[1], best[0], plain))
    return factors, choices
