"""W8A8 with float outlier input channels (LLM.int8()'s decomposition): the layer against its
dequantized float reference, what it buys on an input with an outlier channel, the choice of
channels from calibration, and the plan's flows (dynamic with RTN or GPTQ weights, static; the
CLI's end to end on a tiny Llama is in test_quant_cli.py)."""

import pytest
import torch
from torch import nn

from llmlab.errors import LlmlabError
from llmlab.nn.quantized_linear import W8A8Linear
from llmlab.quant.outliers import outlier_channels
from llmlab.quant.ptq import plan_w8a8, quantize_dynamic, quantize_static
from llmlab.quant.smooth import InputStats


def _outlier_inputs(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(6, 96)
    x[:, [3, 40]] *= 80  # two channels ~100× the rest, in every token
    return x


def _layer(asymmetric=False, smooth=None, index=(3, 40), bias=True):
    torch.manual_seed(1)
    linear = nn.Linear(96, 40, bias=bias)
    index = torch.tensor(index)
    w = linear.weight.detach().clone()
    if smooth is not None:
        w = w * smooth
    w[:, index] = 0
    scale = w.abs().amax(1) / 127
    codes = (w / scale[:, None]).round()
    layer = W8A8Linear(
        codes, scale, linear.bias, smooth=smooth, asymmetric=asymmetric,
        outlier_index=index, outlier_weight=linear.weight.detach()[:, index],
    )  # fmt: skip
    return linear, layer


@pytest.mark.parametrize("asymmetric", [False, True])
@pytest.mark.parametrize("smoothed", [False, True])
def test_outlier_layer_matches_its_dequantized_float_reference(asymmetric, smoothed):
    """int8 part: the token's grid over its non-outlier channels (divided by the smoothing),
    times the int8 weight; float part: the outlier channels times their float weight columns."""
    smooth = torch.rand(96) + 0.5 if smoothed else None
    linear, layer = _layer(asymmetric, smooth)
    x = _outlier_inputs()
    index = layer.outlier_index
    v = x / (smooth if smoothed else 1)
    v[:, index] = 0
    if asymmetric:
        low, high = v.amin(-1, keepdim=True), v.amax(-1, keepdim=True)
        step = (high - low) / 255
        v_q = ((v - low) / step).round() * step + low
    else:
        step = v.abs().amax(-1, keepdim=True) / 127
        v_q = (v / step).round() * step
    int8_weight = layer.qweight.double() * layer.weight_scale.double()[:, None]
    ref = v_q.double() @ int8_weight.T + x[:, index].double() @ layer.outlier_weight.double().T
    ref = ref + linear.bias.double()
    assert torch.allclose(layer(x).double(), ref, rtol=1e-5, atol=1e-4)
    # the effective weight keeps the outlier columns exactly, the rest within half a step
    w = layer.dequantized_weight()
    assert torch.equal(w[:, index], linear.weight.detach()[:, index])
    half = layer.weight_scale[:, None] / 2 / (smooth[None, :] if smoothed else 1)
    assert ((w - linear.weight.detach()).abs() <= half + 1e-6).all()


def test_outlier_layer_onednn_and_int_mm_paths_agree(monkeypatch):
    from llmlab.nn import quantized_linear

    _, layer = _layer(asymmetric=True)
    x = _outlier_inputs()
    fast = layer(x)
    monkeypatch.setattr(quantized_linear, "_HAS_ONEDNN_QLINEAR", False)
    assert torch.allclose(fast, layer(x), rtol=1e-6, atol=1e-5)


def test_float_outlier_channels_cut_the_error_of_an_input_with_outliers():
    linear, with_outliers = _layer(bias=False)
    plain = W8A8Linear.from_weight(linear.weight)
    x = _outlier_inputs()
    exact = x @ linear.weight.detach().T

    def error(layer):
        return ((layer(x) - exact) ** 2).mean().item()

    assert error(with_outliers) < 0.1 * error(plain)


def test_outlier_index_needs_its_weights():
    with pytest.raises(ValueError, match="together"):
        W8A8Linear(torch.zeros(4, 8), torch.ones(4), outlier_index=torch.tensor([1]))


def test_outlier_channels_are_the_largest_after_smoothing_one_set_per_group():
    act = torch.tensor([1.0, 9.0, 3.0, 8.0, 2.0])
    stats = InputStats(
        act_max={"q": act, "k": act, "o": torch.tensor([5.0, 1.0, 4.0, 1.0, 1.0])},
        groups=[["q", "k"], ["o"]],
        samples={},
    )
    chosen = outlier_channels(stats, {}, 2)
    assert chosen["q"].tolist() == [1, 3] and chosen["k"] is chosen["q"]
    assert chosen["o"].tolist() == [0, 2]
    # after smoothing, channel 1's peak is divided away: 9/9 = 1 < 3 < 8
    smoothed = outlier_channels(stats, {"q": torch.tensor([1.0, 9.0, 1.0, 1.0, 1.0])}, 2)
    assert smoothed["q"].tolist() == [2, 3]
    assert "q" not in outlier_channels(stats, {}, 1, skip=["q", "k"])
    assert outlier_channels(stats, {}, 0) == {}
    with pytest.raises(LlmlabError, match="only 5 input channels"):
        outlier_channels(stats, {}, 5)


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.embed.weight.data[:, 5] *= 60  # an outlier channel in every token
        self.up, self.down = nn.Linear(16, 32, bias=False), nn.Linear(32, 16, bias=False)

    def forward(self, ids):
        h = self.embed(ids)
        return self.down(torch.relu(self.up(h)))


@pytest.mark.parametrize("flow", ["dynamic", "static"])
def test_plan_with_outliers_keeps_the_outlier_channel_float_in_every_flow(flow):
    torch.manual_seed(0)
    model = Stack()
    ids = torch.randint(0, 20, (4, 12))
    reference = model(ids).detach()
    static = flow == "static"
    plan = plan_w8a8(model, ids, None, "minmax" if static else None, outliers=2)
    assert 5 in plan.outliers["up"].tolist() and plan.describe()["outlier_channels"] == 2
    if static:
        quantize_static(model, ids, "minmax", plan=plan)
    else:
        quantize_dynamic(model, ids, plan=plan)
    for name in ("up", "down"):
        layer = getattr(model, name)
        assert isinstance(layer, W8A8Linear) and layer.has_outliers and layer.static == static
        assert torch.equal(layer.outlier_index, plan.outliers[name])
        assert not layer.qweight[:, layer.outlier_index].any()
    error = (model(ids) - reference).abs().max()
    assert error < 0.02 * reference.abs().max()
    with pytest.raises(LlmlabError, match="calibration"):
        plan_w8a8(Stack(), None, None, outliers=2)
    with pytest.raises(LlmlabError, match="at least 0"):
        plan_w8a8(Stack(), ids, None, outliers=-1)


def test_gptq_maker_leaves_the_outlier_columns_to_float():
    """GPTQ sees a Hessian without the outlier inputs (they never reach the int8 product): the
    outlier columns' codes are zero, and the layer beats the same maker without the split."""
    from llmlab.quant.ptq import W8A8Plan, gptq_w8a8_maker

    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=False)
    x = torch.cat([_outlier_inputs(seed) for seed in range(40)])
    hessian = 2 * x.double().T @ x.double() / len(x)
    index = torch.tensor([3, 40])
    split = gptq_w8a8_maker(W8A8Plan(outliers={"l": index}))("l", linear, hessian)
    plain = gptq_w8a8_maker(W8A8Plan())("l", linear, hessian)
    assert split.has_outliers and not split.qweight[:, index].any()
    held = _outlier_inputs(seed=99)
    exact = held @ linear.weight.detach().T

    def error(layer):
        return ((layer(held) - exact) ** 2).mean().item()

    assert error(split) < 0.1 * error(plain)
