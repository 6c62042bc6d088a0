"""W8A8 with one activation grid per run of G input channels of each token (llama.cpp's 8-bit
activation blocks): the layer against its dequantized float reference, what it buys on an input
with an outlier channel, and its bad settings. (The CLI flow end to end: test_quant_cli.py.)"""

import pytest
import torch
import torch.nn.functional as F

from llmlab.errors import LlmlabError
from llmlab.nn.quantized_linear import W8A8Linear
from llmlab.quant.ptq import quantize_dynamic


def _grid(v, asymmetric):
    """Each row of v on its own int8 grid, dequantized."""
    if asymmetric:
        low, high = v.amin(-1, keepdim=True), v.amax(-1, keepdim=True)
        step = (high - low) / 255
        return ((v - low) / step).round() * step + low
    step = v.abs().amax(-1, keepdim=True) / 127
    return (v / step).round() * step


def _inputs():
    torch.manual_seed(0)
    x = torch.randn(7, 128) * torch.linspace(0.1, 5, 7)[:, None]
    x[:, 9] *= 60  # an outlier channel in the first group
    return x


@pytest.mark.parametrize("asymmetric", [False, True])
@pytest.mark.parametrize("smoothed", [False, True])
def test_grouped_layer_matches_its_dequantized_float_reference(asymmetric, smoothed):
    torch.manual_seed(1)
    linear = torch.nn.Linear(128, 48)
    smooth = torch.rand(128) + 0.5 if smoothed else None
    plain = W8A8Linear.from_weight(linear.weight, linear.bias, smooth=smooth, asymmetric=asymmetric)
    layer = W8A8Linear(
        plain.qweight, plain.weight_scale, linear.bias, smooth=smooth, asymmetric=asymmetric,
        input_group_size=32,
    )  # fmt: skip
    x = _inputs()
    v = x / (smooth if smoothed else 1)
    v_q = _grid(v.view(7, 4, 32), asymmetric).view(7, 128)
    int8_weight = layer.qweight.double() * layer.weight_scale.double()[:, None]
    ref = F.linear(v_q.double(), int8_weight, linear.bias.double())
    assert torch.allclose(layer(x).double(), ref, rtol=1e-5, atol=1e-4)
    assert torch.equal(layer.dequantized_weight(), plain.dequantized_weight())


def test_groups_confine_an_outlier_channel_to_its_own_group():
    torch.manual_seed(2)
    w = torch.randn(48, 128)
    plain = W8A8Linear.from_weight(w, asymmetric=True)
    grouped = W8A8Linear(plain.qweight, plain.weight_scale, asymmetric=True, input_group_size=32)
    x = _inputs()
    exact = x @ w.T

    def error(layer):
        return ((layer(x) - exact) ** 2).mean().item()

    assert error(grouped) < 0.6 * error(plain)


def test_bad_group_settings_are_refused():
    q, s = torch.zeros(4, 96, dtype=torch.int8), torch.ones(4)
    with pytest.raises(ValueError, match="divide the 96"):
        W8A8Linear(q, s, input_group_size=64)
    with pytest.raises(ValueError, match="dynamic activations only"):
        W8A8Linear(q, s, input_scale=0.1, input_group_size=32)
    model = torch.nn.Sequential(torch.nn.Linear(96, 8))
    with pytest.raises(LlmlabError, match="does not divide the 96 inputs of 0"):
        quantize_dynamic(model, input_group_size=64)
    with pytest.raises(LlmlabError, match="positive"):
        quantize_dynamic(model, input_group_size=0)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_decode_rows_take_the_fused_grouped_kernel_with_the_same_numbers(asymmetric, monkeypatch):
    """Up to 32 rows go through csrc/w8a8_matmul.cpp's grouped kernel; it sums the groups in
    another float order than the per-group loop, so the two agree to float rounding."""
    from llmlab.nn import native, quantized_linear

    assert native.available(), "llmlab's CPU kernels did not build (see test_native_kernels.py)"
    monkeypatch.setattr(native, "has_vnni", lambda: True)  # the portable build without VNNI
    torch.manual_seed(3)
    plain = W8A8Linear.from_weight(torch.randn(48, 128), asymmetric=asymmetric)
    layer = W8A8Linear(
        plain.qweight, plain.weight_scale, asymmetric=asymmetric, input_group_size=32
    )
    x = _inputs()
    fused = layer(x)
    assert layer._vnni is not None and layer._vnni[3].shape == (4, 48)
    monkeypatch.setattr(quantized_linear, "VNNI_MAX_ROWS", 0)
    assert torch.allclose(fused, layer(x), rtol=1e-5, atol=1e-5)
