"""Quantization building blocks: observer scales against hand-computed values, STE gradients,
int8/int4 round trips, each quantized linear against its dequantized float reference, GPTQ
against round-to-nearest on a toy layer, sliding-window perplexity, the folder format."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from llmlab.errors import LlmlabError
from llmlab.formats.quantized import pack_int4, unpack_int4
from llmlab.nn.quantized_linear import Int4Linear, W8A8Linear
from llmlab.quant.fake_quant import QATLinear, fake_quantize, fake_quantize_int4_groups
from llmlab.quant.gptq import HessianAccumulator, gptq_quantize
from llmlab.quant.observers import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    fake_quantize_values,
    make_observer,
)
from llmlab.quant.rtn import group_size_for, int4_group_params


def test_minmax_asymmetric_per_tensor_matches_hand_computation():
    obs = MinMaxObserver(bits=8, symmetric=False)
    obs(torch.tensor([-1.0, 0.5]))
    obs(torch.tensor([3.0, 0.0]))
    scale, zero = obs.qparams()
    # range [-1, 3] over 255 steps; -1 must land on code -128: zero = round(-128 + 1 / scale) = -64
    assert scale.item() == pytest.approx(4 / 255)
    assert zero.item() == -64


def test_minmax_symmetric_per_channel_matches_hand_computation():
    obs = MinMaxObserver(bits=8, symmetric=True, axis=0)
    obs(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    scale, zero = obs.qparams()
    assert torch.allclose(scale, torch.tensor([2 / 127, 0.5 / 127]))
    assert torch.equal(zero, torch.zeros(2))


def test_minmax_range_always_contains_zero():
    obs = MinMaxObserver(bits=8, symmetric=False)
    obs(torch.tensor([2.0, 4.0]))  # all positive: the range still starts at 0 so 0 is exact
    scale, zero = obs.qparams()
    assert scale.item() == pytest.approx(4 / 255) and zero.item() == -128


def test_moving_average_minmax_follows_momentum():
    obs = MovingAverageMinMaxObserver(bits=8, symmetric=True, momentum=0.5)
    obs(torch.tensor([-1.0, 1.0]))
    obs(torch.tensor([-3.0, 3.0]))  # range moves halfway: ±2
    scale, _ = obs.qparams()
    assert scale.item() == pytest.approx(2 / 127)


def test_histogram_percentile_clips_the_tail():
    obs = HistogramObserver(bits=8, symmetric=True, criterion="percentile", percentile=99.0)
    obs(torch.arange(1, 1001).float())  # |x| uniform on 1…1000: the 99th percentile is ~990
    scale, _ = obs.qparams()
    assert scale.item() * 127 == pytest.approx(990, abs=2)


@pytest.mark.parametrize("criterion", ["mse", "entropy"])
def test_histogram_search_clips_a_rare_outlier_and_lowers_the_error(criterion):
    torch.manual_seed(0)
    x = torch.cat([torch.randn(20000), torch.tensor([60.0])])
    obs = HistogramObserver(bits=4, symmetric=True, criterion=criterion)
    obs(x)
    scale, zero = obs.qparams()
    minmax = MinMaxObserver(bits=4, symmetric=True)
    minmax(x)
    scale_mm, zero_mm = minmax.qparams()
    assert scale.item() < scale_mm.item() / 3  # the outlier no longer sets the range

    def mse(s, z):
        return ((fake_quantize_values(x, s, z, 4, True) - x) ** 2).mean()

    assert mse(scale, zero) < mse(scale_mm, zero_mm)


def test_histogram_grows_its_range_without_losing_counts():
    obs = HistogramObserver(bits=8, symmetric=False, bins=64)
    obs(torch.linspace(0, 1, 100))
    obs(torch.linspace(0, 10, 100))
    assert obs.counts.sum().item() == 200 and obs.high == pytest.approx(10)


def test_unknown_observer_and_empty_observer_are_errors():
    with pytest.raises(LlmlabError, match="unknown observer"):
        make_observer("magic")
    with pytest.raises(LlmlabError, match="per tensor"):
        make_observer("percentile", axis=0)
    with pytest.raises(LlmlabError, match="no data"):
        MinMaxObserver().qparams()


def test_fake_quantize_ste_passes_gradient_inside_and_blocks_clipped_values():
    x = torch.tensor([-2.0, -0.3, 0.26, 0.9, 5.0], requires_grad=True)
    scale, zero = torch.tensor(0.1), torch.tensor(0.0)
    y = fake_quantize(x, scale, zero, bits=4, symmetric=True)  # codes -7…7: range ±0.7
    assert torch.allclose(y, torch.tensor([-0.7, -0.3, 0.3, 0.7, 0.7]))
    (y * torch.arange(1.0, 6.0)).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 3.0, 0.0, 0.0]))


def test_int4_group_fake_quant_is_rtn_forward_and_identity_backward():
    torch.manual_seed(0)
    w = torch.randn(8, 64, requires_grad=True)
    y = fake_quantize_int4_groups(w, 32)
    codes, scales, minimums = int4_group_params(w.detach(), 32)
    expected = codes.float().view(8, 2, 32) * scales[..., None] + minimums[..., None]
    assert torch.equal(y, expected.view(8, 64))
    g = torch.randn(8, 64)
    y.backward(g)
    assert torch.equal(w.grad, g)


def test_int4_pack_round_trip_and_rtn_error_bound():
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (6, 64), dtype=torch.uint8)
    assert torch.equal(unpack_int4(pack_int4(codes)), codes)
    w = torch.randn(16, 128)
    codes, scales, minimums = int4_group_params(w, 32)
    back = (codes.float().view(16, 4, 32) * scales[..., None] + minimums[..., None]).view(16, 128)
    assert ((back - w).abs().view(16, 4, 32) <= scales[..., None] / 2 + 1e-3).all()


def test_group_size_falls_back_to_one_that_divides():
    assert group_size_for(576, 128) == 64 and group_size_for(1536, 128) == 128
    with pytest.raises(LlmlabError):
        group_size_for(576, 100)


def test_w8a8_round_trip_error_is_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(24, 64)
    layer = W8A8Linear.from_weight(w)
    assert ((layer.dequantized_weight() - w).abs() <= layer.weight_scale[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("bias", [False, True])
def test_w8a8_dynamic_matches_its_dequantized_float_reference(bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40, bias=bias)
    layer = W8A8Linear.from_linear(linear)
    x = (
        torch.randn(2, 5, 96) * torch.linspace(0.1, 10, 5)[None, :, None]
    )  # rows of different ranges
    # reference: each token rounded on its own grid (max |x| / 127), float64 matmul
    scale = x.abs().amax(-1, keepdim=True) / 127
    x_q = (x / scale).round() * scale
    ref = F.linear(x_q.double(), layer.dequantized_weight().double())
    if bias:
        ref = ref + linear.bias.double()
    out = layer(x)
    assert out.shape == (2, 5, 40)
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-4)


def test_w8a8_asymmetric_tokens_match_their_dequantized_float_reference():
    """Each token on its own [min, max] grid of 256 steps: one-sided rows (post-GELU-like) keep
    twice the resolution of the symmetric grid, and the result is the float matmul of exactly
    those rounded values."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    layer = W8A8Linear.from_linear(linear)
    asym = W8A8Linear.from_weight(linear.weight, linear.bias, asymmetric=True)
    x = torch.rand(2, 5, 96) * torch.linspace(0.1, 10, 5)[None, :, None] - 0.05  # one-sided rows
    low, high = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    step = (high - low) / 255
    x_q = ((x - low) / step).round() * step + low
    ref = F.linear(x_q.double(), asym.dequantized_weight().double(), linear.bias.double())
    assert torch.allclose(asym(x).double(), ref, rtol=1e-5, atol=1e-4)
    exact = F.linear(x.double(), layer.dequantized_weight().double(), linear.bias.double())
    assert (asym(x).double() - exact).abs().mean() < 0.6 * (layer(x).double() - exact).abs().mean()


def test_w8a8_static_with_zero_point_matches_its_dequantized_float_reference():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    obs = MinMaxObserver(bits=8, symmetric=False)
    x = torch.rand(7, 64) * 3 - 0.5  # skewed range: a non-zero zero point
    obs(x)
    scale, zero = obs.qparams()
    assert zero.item() != 0
    layer = W8A8Linear.from_linear(linear, scale, zero)
    x_q = fake_quantize_values(x, scale, zero, 8, False)
    ref = F.linear(x_q.double(), layer.dequantized_weight().double(), linear.bias.double())
    assert torch.allclose(layer(x).double(), ref, rtol=1e-5, atol=1e-4)
    # values beyond the calibrated range are clipped, as the grid says
    big = torch.full((1, 64), 100.0)
    ref_big = F.linear(
        fake_quantize_values(big, scale, zero, 8, False).double(),
        layer.dequantized_weight().double(),
        linear.bias.double(),
    )
    assert torch.allclose(layer(big).double(), ref_big, rtol=1e-5, atol=1e-3)


def test_w8a8_kernel_and_float_fallback_agree():
    torch.manual_seed(0)
    layer = W8A8Linear.from_weight(torch.randn(16, 48))
    q = torch.randint(-127, 128, (3, 48), dtype=torch.int8)
    exact = q.long() @ layer.qweight.long().t()
    assert torch.equal(layer.int_matmul(q).long(), exact)


@pytest.mark.parametrize("grid", ["per-token", "per-token-asymmetric", "static"])
def test_w8a8_onednn_path_equals_the_int_mm_path(grid, monkeypatch):
    """The prepacked oneDNN u8 × s8 GEMM (uint8 codes shifted by 128, the shift removed through
    the zero point) gives what `_int_mm` plus the scales give, for per-token and static grids."""
    from llmlab.nn import quantized_linear

    if not quantized_linear._HAS_ONEDNN_QLINEAR:
        pytest.fail("this torch has no onednn::qlinear_pointwise (the engine's W8A8 CPU kernel)")
    torch.manual_seed(0)
    linear = torch.nn.Linear(80, 48)
    x = torch.randn(6, 7, 80) * torch.linspace(0.1, 10, 7)[None, :, None]  # > VNNI_MAX_ROWS
    static = grid == "static"
    scale, zero = (torch.tensor([0.05]), torch.tensor([-9.0])) if static else (None, None)
    asymmetric = grid == "per-token-asymmetric"
    layer = W8A8Linear.from_weight(linear.weight, linear.bias, scale, zero, asymmetric=asymmetric)
    fast = layer(x)
    assert layer._onednn is not None  # the oneDNN path ran
    monkeypatch.setattr(quantized_linear, "_HAS_ONEDNN_QLINEAR", False)
    assert torch.allclose(fast, layer(x), rtol=1e-6, atol=1e-5)
    # copies pack their own weight (the packed tensor is opaque to copy and pickle)
    monkeypatch.setattr(quantized_linear, "_HAS_ONEDNN_QLINEAR", True)
    assert copy.deepcopy(layer)._onednn is None
    assert torch.equal(copy.deepcopy(layer)(x), fast)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_w8a8_fused_vnni_kernel_equals_the_onednn_path(asymmetric, monkeypatch):
    """A decode step's few rows go through csrc/w8a8_matmul.cpp (int8 GEMM and rescaling in one
    pass): the same numbers as oneDNN's GEMM plus the separate rescaling, bit for bit, so a model
    scores the same whichever path its rows take."""
    from llmlab.nn import native, quantized_linear

    assert native.available(), "llmlab's CPU kernels did not build (see test_native_kernels.py)"
    # on a CPU without AVX512-VNNI the layers keep oneDNN; the kernel's portable build is taken
    # here anyway, so its numbers are checked on every machine (bit for bit where it is the
    # VNNI build, whose float steps are oneDNN's; to rounding elsewhere)
    bit_for_bit = native.has_vnni()
    monkeypatch.setattr(native, "has_vnni", lambda: True)
    torch.manual_seed(0)
    linear = torch.nn.Linear(80, 48)
    layer = W8A8Linear.from_weight(linear.weight, linear.bias, asymmetric=asymmetric)
    limit = quantized_linear.VNNI_MAX_ROWS
    for rows in (1, 5, 16, limit):
        x = torch.randn(rows, 80) * torch.linspace(0.1, 10, rows)[:, None]
        fused = layer(x)
        assert layer._vnni is not None
        monkeypatch.setattr(quantized_linear, "VNNI_MAX_ROWS", 0)
        reference = layer(x)
        assert torch.equal(fused, reference) or (
            not bit_for_bit and torch.allclose(fused, reference, rtol=1e-6, atol=1e-6)
        )
        monkeypatch.setattr(quantized_linear, "VNNI_MAX_ROWS", limit)
    # a shape off the 16-row tiles takes oneDNN
    odd = W8A8Linear.from_weight(torch.randn(40, 80))
    odd(torch.randn(3, 80))
    assert odd._vnni is None and odd._onednn is not None


def _toy_layer_and_inputs(seed=0):
    torch.manual_seed(seed)
    weight = torch.randn(64, 128)
    mixing = torch.randn(128, 128) * torch.logspace(0, -2, 128)[None, :]  # correlated inputs
    x = torch.randn(1024, 128) @ mixing.T
    return weight, x


def _tiny_decoder(kind: str):
    """A tiny Llama (with a sliding window) or Gemma 3 (one sliding, one global layer, window
    shorter than the calibration sequences, norms randomized so that they matter)."""
    torch.manual_seed(0)
    if kind == "llama":
        from llmlab.models.llama import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
        )  # fmt: skip
        return LlamaForCausalLM(config).eval()
    from llmlab.models.gemma3 import Gemma3Config, Gemma3ForCausalLM

    config = Gemma3Config(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=8, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=64,
    )  # fmt: skip
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_gptq_calibrates_each_layer_on_the_inputs_the_model_gives_it(kind):
    """Layer-by-layer calibration must feed each layer what the model's own forward does (Gemma 3:
    the √d-scaled embedding, local vs global rotary, windowed masks): with every layer kept float,
    the LM head's Hessian equals the one of the model's final hidden states."""
    from llmlab.quant.gptq import quantize_gptq

    model = _tiny_decoder(kind)
    calibration = torch.randint(0, 64, (5, 20))
    seen = {}

    def keep_float(name, linear, hessian):
        seen[name] = hessian.clone()

    with torch.no_grad():
        want = HessianAccumulator(32)
        want.add(model.model(calibration))
        quantize_gptq(model, calibration, batch_size=2, make=keep_float)
    assert len(seen) == 2 * 7 + 1
    assert torch.allclose(seen["lm_head"], want.h, rtol=1e-4, atol=1e-6)


def test_gptq_output_error_is_lower_than_rtn_at_the_same_group_size():
    weight, x = _toy_layer_and_inputs()
    h = HessianAccumulator(128)
    h.add(x[:512])  # calibrate on one half, measure on the other
    held = x[512:]

    def output_error(codes, scales, minimums):
        w = (codes.float().view(64, 4, 32) * scales[..., None] + minimums[..., None]).view(64, 128)
        return ((held @ w.T - held @ weight.T) ** 2).mean().item()

    rtn = output_error(*int4_group_params(weight, 32))
    gptq = output_error(*gptq_quantize(weight, h.h, 32))
    assert gptq < 0.8 * rtn, (gptq, rtn)


def test_hessian_accumulator_is_the_mean_outer_product():
    x = torch.randn(10, 4)
    h = HessianAccumulator(4)
    h.add(x[:3])
    h.add(x[3:])
    assert torch.allclose(h.h, (2 * x.double().T @ x.double()) / 10)


def test_fewer_bits_use_fewer_codes_of_the_int4_grid():
    from llmlab.quant.rtn import levels_for

    assert [levels_for(b) for b in (4, 3, 2)] == [15, 7, 3]
    weight = torch.tensor([[0.0, 0.9, 2.2, 3.0]])  # min 0, max 3: 2 bits → scale 1
    codes, scales, minimums = int4_group_params(weight, 4, levels=3)
    assert scales.item() == 1.0 and minimums.item() == 0.0
    assert codes.tolist() == [[0, 1, 2, 3]]
    codes, scales, _ = int4_group_params(weight, 4, levels=7)  # 3 bits: scale 3 / 7
    assert scales.item() == pytest.approx(3 / 7, rel=1e-3) and codes.max().item() == 7
    with pytest.raises(LlmlabError, match="4, 3 or 2"):
        levels_for(5)


@pytest.mark.parametrize("bits", [4, 2])
def test_qat_linear_convert_gives_the_trained_grid_exactly(bits):
    from llmlab.quant.qat import convert_qat, prepare_qat

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32))
    prepare_qat(model, group_size=32, bits=bits)
    assert isinstance(model[0], QATLinear)
    x = torch.randn(4, 64)
    model(x).pow(2).sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        fake = model(x)
    convert_qat(model)
    assert isinstance(model[0], Int4Linear)
    layer = model[0]  # its dequantized weight is exactly the grid trained against
    assert torch.allclose(F.linear(x, layer.dequantized_weight(), layer.bias), fake, atol=1e-5)
    assert layer._codes().max().item() <= 2**bits - 1


def test_sliding_window_perplexity_scores_every_token_once():
    from llmlab.quant.perplexity import perplexity

    torch.manual_seed(0)

    class Bigram(torch.nn.Module):
        max_context = 64

        def __init__(self):
            super().__init__()
            self.table = torch.randn(50, 50)

        def forward(self, ids):
            return self.table[ids]

    class Tok:
        def __call__(self, text):
            return {"input_ids": [ord(c) % 50 for c in text]}

    text = "the quick brown fox jumps over the lazy dog " * 3
    ids = torch.tensor([ord(c) % 50 for c in text])
    model = Bigram()
    # a bigram model sees no context, so every window/stride gives the plain per-token loss
    expected = F.cross_entropy(model.table[ids[:-1]], ids[1:])
    for window, stride in [(16, 16), (16, 5), (64, 32)]:
        result = perplexity(model, Tok(), text, window, stride)
        assert result.tokens == len(ids) - 1
        assert result.perplexity == pytest.approx(math.exp(expected.item()), rel=1e-5)
    with pytest.raises(LlmlabError, match="stride"):
        perplexity(model, Tok(), text, 16, 17)
