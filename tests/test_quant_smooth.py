"""SmoothQuant factors and their per-group α search, the calibration-input collection they rest
on, and the choice of layers kept float (mixed-precision W8A8): hand-computed values and small
toy models whose right answer is known."""

import pytest
import torch
from torch import nn

from llmlab.errors import LlmlabError
from llmlab.nn.quantized_linear import W8A8Linear
from llmlab.quant.mixed import most_sensitive
from llmlab.quant.ptq import plan_w8a8, quantize_dynamic, quantize_static
from llmlab.quant.smooth import (
    GroupChoice,
    collect_inputs,
    group_calls,
    group_error,
    search_smoothing,
    smoothing_scales,
)


def test_smoothing_scales_match_hand_computation():
    act = torch.tensor([4.0, 1.0, 0.0])
    weight = torch.tensor([1.0, 4.0, 2.0])
    # α = 0.5: sqrt(4) / sqrt(1) = 2, sqrt(1) / sqrt(4) = 0.5; a never-active channel keeps 1
    assert torch.allclose(smoothing_scales(act, weight, 0.5), torch.tensor([2.0, 0.5, 1.0]))
    # α = 1: s = max |x| (activations flattened to 1); α = 0: s = 1 / max |w|
    assert torch.allclose(smoothing_scales(act, weight, 1.0), torch.tensor([4.0, 1.0, 1.0]))
    assert torch.allclose(smoothing_scales(act, weight, 0.0), torch.tensor([1.0, 0.25, 1.0]))
    with pytest.raises(LlmlabError, match="between 0 and 1"):
        smoothing_scales(act, weight, 1.5)


def test_group_calls_groups_consecutive_calls_on_one_input():
    calls = [("q", False), ("k", True), ("v", True), ("o", False), ("gate", False), ("up", True)]
    assert group_calls(calls) == [["q", "k", "v"], ["o"], ["gate", "up"]]


class Toy(nn.Module):
    """a and b read the same input (one group); c reads a's output (its own group)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3, bias=False), nn.Linear(4, 3, bias=False)
        self.c = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        h = self.a(x) + self.b(x)
        return self.c(torch.relu(h))


def test_collect_inputs_finds_groups_and_channel_maxima():
    torch.manual_seed(0)
    model = Toy()
    data = torch.randn(6, 5, 4)  # 6 "sequences" of 5 tokens
    stats = collect_inputs(model, data, rows=8, batch_size=2)
    assert stats.groups == [["a", "b"], ["c"]]
    assert torch.allclose(stats.act_max["a"], data.abs().amax((0, 1)))
    hidden = torch.relu(model.a(data) + model.b(data))
    assert torch.allclose(stats.act_max["c"], hidden.detach().abs().amax((0, 1)))
    rows = stats.samples["a"]
    assert rows.shape == (8, 4)  # ceil(8 / 3 batches) = 3 rows from each batch, first 8 kept
    # every sampled row is one of the calibration tokens
    tokens = data.reshape(-1, 4)
    assert all(((tokens - r).abs().sum(1) == 0).any() for r in rows)


def test_group_error_is_zero_when_everything_is_on_the_int8_grid():
    linear = nn.Linear(3, 2, bias=False)
    linear.weight.data = torch.tensor([[127.0, -3.0, 5.0], [2.0, 127.0, -7.0]])
    x = torch.tensor([[127.0, 10.0, -20.0], [-127.0, 0.0, 64.0]])  # each row's max is 127
    assert group_error([linear], x) == 0.0
    x_off = x + 0.3  # off the grid: some error, below one quantization step's worth
    assert 0 < group_error([linear], x_off) < 1e-4


def test_search_picks_smoothing_for_an_outlier_channel_and_reports_its_error():
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    x[:, 3] *= 60  # one activation channel far larger than the rest (what SmoothQuant is for)
    linear = nn.Linear(16, 32, bias=False)
    stats = type("Stats", (), {})()
    stats.act_max, stats.groups, stats.samples = {"l": x.abs().amax(0)}, [["l"]], {"l": x}
    model = nn.Module()
    model.l = linear
    factors, choices = search_smoothing(model, None, stats=stats)
    (choice,) = choices
    assert choice.alpha is not None and choice.alpha > 0
    assert choice.error < choice.error_unsmoothed / 2
    again = group_error([linear], x, factors["l"])
    assert again == pytest.approx(choice.error)
    expected = smoothing_scales(x.abs().amax(0), linear.weight.abs().amax(0), choice.alpha)
    assert torch.allclose(factors["l"], expected)


def test_most_sensitive_keeps_whole_groups_largest_error_first():
    choices = [
        GroupChoice(["q", "k", "v"], 0.5, 1e-4, 2e-4),
        GroupChoice(["down"], 0.6, 9e-4, 5e-3),
        GroupChoice(["head"], None, 3e-4, 3e-4),
    ]
    assert most_sensitive(choices, 0) == []
    assert most_sensitive(choices, 2) == ["down", "head"]
    assert most_sensitive(choices, 5) == ["down", "head", "q", "k", "v"]


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.up, self.down = nn.Linear(8, 16, bias=False), nn.Linear(16, 8, bias=False)

    def forward(self, ids):
        h = self.embed(ids)
        return self.down(torch.relu(self.up(h)))


@pytest.mark.parametrize("static", [False, True])
def test_plan_keeps_the_most_sensitive_layer_float(static):
    torch.manual_seed(0)
    model = Stack()
    model.down.weight.data[:, 0] *= 40  # a weight outlier column: int8 per row loses the rest
    ids = torch.randint(0, 20, (4, 12))
    observer = "minmax" if static else None
    plan = plan_w8a8(model, ids, "search", observer, keep_float=1)
    errors = {c.names[0]: c.error for c in plan.choices}
    worst = max(errors, key=errors.get)
    assert plan.keep_float == [worst]
    reference = model(ids)
    if static:
        quantize_static(model, ids, observer, plan=plan)
    else:
        quantize_dynamic(model, plan=plan)
    kept = getattr(model, worst)
    assert type(kept) is nn.Linear
    other = "up" if worst == "down" else "down"
    assert isinstance(getattr(model, other), W8A8Linear)
    assert getattr(model, other).static == static
    assert (model(ids) - reference).abs().max() < 0.05 * reference.abs().max()
    assert plan.describe()["float_layers"] == [worst]


def test_plan_keeps_named_layers_float_without_calibration():
    plan = plan_w8a8(Stack(), None, None, float_layers=["down"])
    assert plan.keep_float == ["down"] and plan.factors == {}
    model = quantize_dynamic(Stack(), plan=plan)
    assert type(model.down) is nn.Linear and isinstance(model.up, W8A8Linear)
    with pytest.raises(LlmlabError, match="no linear layer named 'head'"):
        plan_w8a8(Stack(), None, None, float_layers=["head"])


def test_plan_rejects_bad_settings():
    model = Stack()
    with pytest.raises(LlmlabError, match="between 0 and 1"):
        plan_w8a8(model, torch.zeros(1, 4, dtype=torch.long), 2.0)
    with pytest.raises(LlmlabError, match="'search'"):
        plan_w8a8(model, None, "auto")
    with pytest.raises(LlmlabError, match="calibration"):
        plan_w8a8(model, None, "search")
    with pytest.raises(LlmlabError, match="at least 0"):
        plan_w8a8(model, None, None, keep_float=-1)


def test_gptq_int8_lowers_the_output_error_of_rtn_on_the_same_grid():
    from llmlab.quant.gptq import HessianAccumulator, gptq_quantize_int8

    torch.manual_seed(0)
    weight = torch.randn(64, 128)
    weight[:, 5] *= 30  # one large column: each row's int8 step is coarse for the rest
    mixing = torch.randn(128, 128) * torch.logspace(0, -2, 128)[None, :]  # correlated inputs
    x = torch.randn(1024, 128) @ mixing.T
    h = HessianAccumulator(128)
    h.add(x[:512])  # calibrate on one half, measure on the other
    held = x[512:]
    scale = weight.abs().amax(1) / 127
    rtn = (weight / scale[:, None]).round().clamp(-127, 127)
    codes, gptq_scale = gptq_quantize_int8(weight, h.h)
    assert codes.dtype == torch.int8 and torch.equal(gptq_scale, scale)  # same grid as RTN

    def error(q):
        return ((held @ (q.float() * scale[:, None]).T - held @ weight.T) ** 2).mean().item()

    assert error(codes) < 0.8 * error(rtn)


def test_gptq_w8a8_maker_builds_a_smoothed_layer_close_to_the_float_one():
    from llmlab.quant.ptq import W8A8Plan, gptq_w8a8_maker

    torch.manual_seed(1)
    linear = nn.Linear(8, 4, bias=False)
    s = torch.rand(8) + 0.5
    x = torch.randn(256, 8)
    hessian = 2 * x.double().T @ x.double() / 256
    layer = gptq_w8a8_maker(W8A8Plan({"l": s}, [], [], 0.5))("l", linear, hessian)
    assert isinstance(layer, W8A8Linear) and torch.equal(layer.input_divisor, s)
    # the layer's output stays close to the float one (smoothing undone at run time)
    y = x @ linear.weight.T
    assert ((layer(x) - y) ** 2).mean() < 1e-3 * (y**2).mean()
    assert gptq_w8a8_maker(W8A8Plan({}, ["l"], [], None))("l", linear, hessian) is None
