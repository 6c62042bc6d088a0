"""llmlab's CPU kernels (nn/native.py, nn/csrc/): int4_matmul against the float matmul of the
dequantized weights — each of its code paths (AVX-512 + BF16 dot products, AVX-512 alone, the
portable loops — the last two built under their own op namespaces with the wider instructions
turned off), one and many activation rows, every group size the layers use; the packed layout's
round trip; Int4Linear on it against PyTorch's packed kernel; torch.compile over it. quantize_rows
bit for bit against W8A8Linear's PyTorch ops; w8a8_matmul against the exact integer product (the
layer against oneDNN: test_quant_core.py); rms_norm and gelu_tanh_mul against PyTorch's;
decode_layer (int4 projections) against a Llama layer written out in float64.

    pytest tests/test_native_kernels.py -q      (the first run compiles three builds, ~30 s each)
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from llmlab.nn import native
from llmlab.nn.quantized_linear import Int4Linear, W8A8Linear

# (namespace, extra compiler flags): the native build, then its fallbacks forced
BUILDS = [
    ("llmlab", ()),
    ("llmlab_test_avx512", ("-mno-avx512bf16",)),
    ("llmlab_test_portable", ("-mno-avx512f",)),
]


def _weights(n, k, group_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g)
    scales = (torch.rand(n, k // group_size, generator=g) * 0.1 + 1e-3).half().float()
    minimums = (-torch.rand(n, k // group_size, generator=g)).half().float()
    weight = (codes.double().view(n, -1, group_size) * scales[..., None].double()) + minimums[
        ..., None
    ].double()
    return codes, scales, minimums, weight.view(n, k)


def test_the_kernel_builds_here():
    assert native.available(), (
        "llmlab's int4 kernel did not build: it needs a C++ compiler and ninja "
        "(apt install g++ ninja-build); the warning above says what failed"
    )


def test_a_build_killed_half_way_is_redone_not_waited_on(tmp_path):
    """PyTorch's build lock is a plain file that a killed build leaves behind; every later build
    used to wait on it until pytest's timeout. Here a copy of the built cache gets such a file."""
    from torch.utils import cpp_extension

    assert native.available()
    name = f"llmlab_kernels_{native._cpu_tag()}"
    shutil.copytree(cpp_extension._get_build_directory(name, verbose=False), tmp_path / name)
    (tmp_path / name / "lock").touch()
    run = subprocess.run(
        [sys.executable, "-c", "from llmlab.nn import native; native.build_ops(); print('built')"],
        env={**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "built" in run.stdout, run.stderr
    assert "left by a build that was killed" in run.stderr
    assert not (tmp_path / name / "lock").exists()


@pytest.mark.parametrize("namespace,flags", BUILDS, ids=[b[0] for b in BUILDS])
@pytest.mark.parametrize("rows", [1, 3, 16, 37])
def test_w8a8_matmul_matches_the_exact_integer_product(namespace, flags, rows):
    """int32 sums of (code − 128) · w, then weight scale, token scale and the asymmetric offset,
    on every build (AVX512-VNNI here, the portable loop with AVX-512 off), for row counts that
    take every block size of the kernel (16, 8, 4, 2, 1)."""
    op = native.build_ops(namespace, flags).w8a8_matmul
    g = torch.Generator().manual_seed(rows)
    n, k = 48, 96
    qweight = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    codes = torch.randint(0, 256, (rows, k), generator=g, dtype=torch.uint8)
    weight_scale, scale = torch.rand(n, generator=g), torch.rand(rows, generator=g)
    low, sums = torch.randn(rows, generator=g), torch.randn(n, generator=g)
    packed, compensation = native.pack_w8a8(qweight)
    assert packed.shape == (3, 24, 16, 4) and torch.equal(packed[1, 2, 5], qweight[21, 8:12])
    exact = ((codes.long() - 128) @ qweight.long().T).double()
    expected = exact * weight_scale.double() * scale.double()[:, None]
    out = op(codes, packed, compensation, weight_scale, scale, None, None)
    assert torch.allclose(out.double(), expected, rtol=1e-6, atol=1e-3)
    out = op(codes, packed, compensation, weight_scale, scale, low, sums)
    expected = expected + low.double()[:, None] * sums.double()
    assert torch.allclose(out.double(), expected, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("namespace,flags", BUILDS, ids=[b[0] for b in BUILDS])
@pytest.mark.parametrize("rows", [1, 3, 8, 13])
def test_w8a8_matmul_grouped_matches_the_exact_integer_product(namespace, flags, rows):
    """One activation grid per 32 inputs: each group's int32 sums scaled by their own (row, group)
    scale, the asymmetric offset per group, the weight scale last."""
    op = native.build_ops(namespace, flags).w8a8_matmul_grouped
    g = torch.Generator().manual_seed(rows)
    n, k, group = 48, 96, 32
    qweight = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    codes = torch.randint(0, 256, (rows, k), generator=g, dtype=torch.uint8)
    weight_scale = torch.rand(n, generator=g)
    scale, low = torch.rand(rows, 3, generator=g), torch.randn(rows, 3, generator=g)
    packed, _ = native.pack_w8a8(qweight)
    sums = qweight.view(n, 3, group).sum(-1, dtype=torch.int32).T.contiguous()
    parts = torch.stack(
        [
            (codes[:, i * group : (i + 1) * group].long() - 128)
            @ qweight[:, i * group : (i + 1) * group].long().T
            for i in range(3)
        ]
    ).double()  # [groups, rows, n]
    expected = (parts * scale.T.double()[..., None]).sum(0) * weight_scale.double()
    out = op(codes, packed, sums, weight_scale, scale, None)
    assert torch.allclose(out.double(), expected, rtol=1e-5, atol=1e-3)
    offsets = low.double() @ sums.double() * weight_scale.double()
    out = op(codes, packed, sums, weight_scale, scale, low)
    assert torch.allclose(out.double(), expected + offsets, rtol=1e-5, atol=1e-3)


def test_pack_and_unpack_are_inverse():
    codes, scales, minimums, _ = _weights(48, 96, 32)
    tiles, scale_min = native.pack_int4_tiles(codes, scales, minimums, 32)
    assert tiles.shape == (3, 12, 16) and tiles.dtype == torch.int32
    assert scale_min.shape == (3, 3, 2, 16) and scale_min.dtype == torch.float16
    assert torch.equal(native.int4_tile_codes(tiles), codes.to(torch.uint8))
    assert torch.equal(scale_min[1, 2, 0], scales[16:32, 2].half())


@pytest.mark.parametrize("namespace,flags", BUILDS, ids=[b[0] for b in BUILDS])
def test_every_code_path_matches_the_dequantized_matmul(namespace, flags):
    op = native.build_ops(namespace, flags).int4_matmul
    for n, k, group_size in [(64, 128, 16), (48, 256, 32), (32, 192, 64), (16, 512, 128)]:
        codes, scales, minimums, weight = _weights(n, k, group_size, seed=n + k)
        tiles, scale_min = native.pack_int4_tiles(codes, scales, minimums, group_size)
        for rows in (1, 2, 3, 5, 9, 17):
            x = torch.randn(rows, k, dtype=torch.bfloat16)
            expected = x.double() @ weight.T
            got = op(x, tiles, scale_min, group_size)
            assert got.dtype == torch.float32 and got.shape == (rows, n)
            error = (got.double() - expected).abs().max() / expected.abs().max()
            assert error < 2e-6, (namespace, n, k, group_size, rows, float(error))


def test_bad_shapes_are_errors_that_name_the_problem():
    codes, scales, minimums, _ = _weights(32, 128, 32)
    tiles, scale_min = native.pack_int4_tiles(codes, scales, minimums, 32)
    with pytest.raises(RuntimeError, match="x has 64 inputs"):
        native.int4_matmul(torch.randn(1, 64), tiles, scale_min, 32)
    with pytest.raises(RuntimeError, match="group size"):
        native.int4_matmul(torch.randn(1, 128), tiles, scale_min, 24)


def test_int4_linear_takes_the_native_kernel_and_agrees_with_pytorchs():
    torch.manual_seed(0)
    weight = torch.randn(96, 256)
    ours = Int4Linear.from_weight(weight, 64)
    theirs = Int4Linear.from_weight(weight, 64, use_kernel="torch")
    plain = Int4Linear.from_weight(weight, 64, use_kernel=False)
    assert ours.kernel == "native" and theirs.kernel == "torch" and plain.kernel is None
    assert torch.equal(ours.dequantized_weight(), plain.dequantized_weight())
    for rows in (1, 4, 16):
        x = torch.randn(rows, 256, dtype=torch.bfloat16)
        reference = plain(x.float())
        scale = reference.abs().max()
        assert (ours(x).float() - reference).abs().max() < 1e-2 * scale  # bf16 output rounding
        assert (ours(x).float() - theirs(x).float()).abs().max() < 2e-2 * scale


def test_torch_compile_runs_the_op_in_its_graph():
    torch.manual_seed(0)
    layer = Int4Linear.from_weight(torch.randn(64, 128), 32)
    x = torch.randn(3, 128, dtype=torch.bfloat16)
    compiled = torch.compile(layer, fullgraph=True)
    assert torch.equal(compiled(x), layer(x))


@pytest.mark.parametrize("namespace,flags", BUILDS, ids=[b[0] for b in BUILDS])
@pytest.mark.parametrize("asymmetric", [False, True])
@pytest.mark.parametrize("smoothed", [False, True])
def test_quantize_rows_is_bit_for_bit_pytorchs(namespace, flags, asymmetric, smoothed, monkeypatch):
    op = native.build_ops(namespace, flags).quantize_rows
    torch.manual_seed(0)
    k = 96
    smooth = torch.rand(k) + 0.5 if smoothed else None
    layer = W8A8Linear.from_weight(torch.randn(32, k), smooth=smooth, asymmetric=asymmetric)
    x = torch.randn(7, k) * torch.logspace(-3, 2, 7)[:, None]
    x[2] = torch.arange(k) - 48.0  # ties: with max 48 and 127 steps, some values fall on .5 codes
    x[3] = 0.0  # an all-zero token: the 1e-12 floor
    with monkeypatch.context() as patch:
        patch.setattr(native, "available", lambda: False)
        codes, scale, low = layer.quantize_input(x, offset=128)
    got = op(x, layer.input_divisor if smoothed else None, asymmetric)
    assert torch.equal(got[0], codes) and torch.equal(got[1], scale)
    assert torch.equal(got[2], low) if asymmetric else got[2].numel() == 0
    assert torch.equal(native.quantize_rows(x.bfloat16(), None, asymmetric)[0],
                       op(x.bfloat16().float(), None, asymmetric)[0])  # fmt: skip


@pytest.mark.parametrize("namespace,flags", BUILDS, ids=[b[0] for b in BUILDS])
def test_rms_norm_matches_pytorchs(namespace, flags):
    op = native.build_ops(namespace, flags).rms_norm
    torch.manual_seed(0)
    for shape in [(16, 640), (3, 5, 24), (1, 7)]:
        x = torch.randn(shape) * 3
        weight = torch.rand(shape[-1]) + 0.5
        expected = torch.nn.functional.rms_norm(x, (shape[-1],), weight, 1e-6)
        got = op(x, weight, 1e-6)
        assert got.shape == x.shape
        assert (got - expected).abs().max() <= 4e-6 * expected.abs().max()  # summation order
    with pytest.raises(RuntimeError, match="weight has 3 entries"):
        op(torch.randn(2, 4), torch.ones(3), 1e-6)


@pytest.mark.parametrize("namespace,flags", BUILDS, ids=[b[0] for b in BUILDS])
def test_gelu_tanh_mul_matches_pytorchs(namespace, flags):
    op = native.build_ops(namespace, flags).gelu_tanh_mul
    torch.manual_seed(0)
    gate_up = torch.randn(5, 2 * 40) * 4
    gate_up[0, :8] = torch.tensor([-100.0, -20.0, -5.0, 0.0, 5.0, 20.0, 100.0, 1e-8])
    gate, up = gate_up[:, :40], gate_up[:, 40:]  # strided halves, as the engine passes them
    expected = torch.nn.functional.gelu(gate, approximate="tanh") * up
    got = op(gate, up)
    assert got.is_contiguous() and got.shape == (5, 40)
    assert (got - expected).abs().max() <= 2e-6 * expected.abs().max()
    with pytest.raises(RuntimeError, match="one shape"):
        op(gate, up[:, :39])


def _bf16(t: torch.Tensor) -> torch.Tensor:
    return t.float().to(torch.bfloat16).double()


@pytest.mark.parametrize("namespace,flags", BUILDS, ids=[b[0] for b in BUILDS])
def test_decode_layer_matches_a_float64_llama_layer(namespace, flags):
    """decode_layer (csrc/decode_layer.cpp) with int4 projections against the layer written out in float64 on the
    dequantized weights, the int4 products' inputs rounded to bfloat16 as the kernel's are: the
    residual it returns and the K/V it writes. (The engine's op-by-op step: test_native_decode.py.)"""
    op = native.build_ops(namespace, flags).decode_layer
    heads, kv_heads, head_dim, hidden, inter, gs, eps = 4, 2, 16, 64, 96, 32, 1e-5
    g = torch.Generator().manual_seed(7)
    shapes = [((heads + 2 * kv_heads) * head_dim, hidden), (hidden, heads * head_dim)]
    shapes += [(2 * inter, hidden), (hidden, inter)]
    parts = [_weights(n, k, gs, seed=i) for i, (n, k) in enumerate(shapes)]
    packed = [native.pack_int4_tiles(c, s, m, gs) for c, s, m, _ in parts]
    w_qkv, w_o, w_gu, w_down = (p[3] for p in parts)
    norm1, norm2 = (torch.rand(hidden, generator=g) + 0.5 for _ in range(2))
    angles = torch.rand(head_dim // 2, generator=g) * 6
    cache = torch.randn(32, 2 * kv_heads, head_dim, generator=g)
    context, slot = torch.tensor([3, 9, 4, 20, 17]), 17  # this token's slot is the last one
    x = torch.randn(1, hidden, generator=g)
    scale = head_dim**-0.5

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w.double()

    ref_cache = cache.double().clone()
    r = x.double()
    qkv = _bf16(rms(r, norm1)) @ w_qkv.T
    pairs = qkv[0, : (heads + kv_heads) * head_dim].view(heads + kv_heads, -1, 2).clone()
    cos, sin = angles.double().cos(), angles.double().sin()
    rotated = torch.stack(
        [pairs[..., 0] * cos - pairs[..., 1] * sin, pairs[..., 0] * sin + pairs[..., 1] * cos], -1
    )
    q = rotated[:heads].reshape(heads, head_dim)
    k = rotated[heads:].reshape(kv_heads, head_dim)
    v = qkv[0, (heads + kv_heads) * head_dim :].view(kv_heads, head_dim)
    ref_cache[slot] = torch.cat([k, v])
    keys, values = ref_cache[context, :kv_heads], ref_cache[context, kv_heads:]  # [L, kvh, D]
    group = heads // kv_heads
    attn = torch.stack(
        [
            torch.softmax(keys[:, h // group] @ q[h] * scale, 0) @ values[:, h // group]
            for h in range(heads)
        ]
    ).view(1, -1)
    r = r + _bf16(attn) @ w_o.T
    gate_up = _bf16(rms(r, norm2)) @ w_gu.T
    r = r + _bf16(torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:]) @ w_down.T

    got_x, got_cache = x.clone(), cache.clone()
    op(
        got_x, got_cache, [norm1, norm2], eps, [w for p in packed for w in p], [0] * 4, [gs] * 4,
        angles.cos(), angles.sin(), slot, context, heads, kv_heads, scale,
    )  # fmt: skip
    assert (got_cache[slot].double() - ref_cache[slot]).abs().max() <= 1e-4 * ref_cache[
        slot
    ].abs().max()
    others = [s for s in range(32) if s != slot]
    assert torch.equal(got_cache[others], cache[others])  # nothing else written
    # bfloat16 rounding of the products' inputs can flip where float32 and float64 differ
    assert (got_x.double() - r).abs().max() <= 2e-3 * r.abs().max()
