"""Native CPU kernels, compiled on first use: `int4_matmul` (csrc/int4_matmul.cpp),
`quantize_rows` (csrc/quantize_rows.cpp, W8A8's per-token activation quantization) and
`w8a8_matmul` (csrc/w8a8_matmul.cpp, W8A8's int8 GEMM with its rescaling fused), `rms_norm`
and `gelu_tanh_mul` (csrc/rms_norm.cpp, csrc/geglu.cpp: one pass each, for the engine's eager steps),
`decode_layer` (csrc/decode_layer.cpp: a whole Llama or Gemma 3 layer for one token, int4 or
W8A8 projections).

    from llmlab.nn import native
    if native.available():
        tiles, scale_min = native.pack_int4_tiles(codes, scales, minimums, group_size)
        y = native.int4_matmul(x, tiles, scale_min, group_size)     # x [M, K] → y [M, N] float32
        codes, scale, low = native.quantize_rows(x, divisor=None, asymmetric=False)
        packed, compensation = native.pack_w8a8(qweight)                # int8 [N, K], once
        y = native.w8a8_matmul(codes, packed, compensation, weight_scale, scale, low, weight_sums)
        y = native.rms_norm(x, weight, eps)
        y = native.gelu_tanh_mul(gate, up)
        native.decode_layer(x, cache, norms, eps, weights, kinds, options,
                            cos, sin, slot, context, heads, kv_heads, scale)  # x, cache updated

The sources are built once per machine with the C++ compiler PyTorch's extension builder finds
(`-O3 -march=native`, cached under ~/.cache/torch_extensions) and registered as
`torch.ops.llmlab.*`, with shape functions so `torch.compile` treats each as one opaque op.
Without a compiler (or with `LLMLAB_NATIVE=0`) the build is not tried again in the process, a
one-line warning says why, and the layers use PyTorch's own ops (int4: its packed kernel). A build
killed half-way (which leaves PyTorch's lock file behind) is noticed and redone, not waited on.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import sys
import warnings
from pathlib import Path

import torch

TILE_ROWS = 16  # output rows per tile: one 16-lane float vector
CODES_PER_WORD = 8  # int4 codes per int32 word of a tile
# bit position of a word's input j: the even inputs in the low 16 bits, the odd ones in the high
_SHIFTS = torch.tensor(
    [16 * (j % 2) + 4 * (j // 2) for j in range(CODES_PER_WORD)], dtype=torch.int32
)
_SOURCES = [
    Path(__file__).with_name("csrc") / f
    for f in (
        "int4_matmul.cpp",
        "quantize_rows.cpp",
        "w8a8_matmul.cpp",
        "rms_norm.cpp",
        "geglu.cpp",
        "decode_layer.cpp",
    )
]


@functools.cache
def available() -> bool:
    """Build and load the kernels (once per process); False, with a warning, if that fails."""
    if os.environ.get("LLMLAB_NATIVE", "1") == "0":
        return False
    try:
        build_ops()
    except Exception as e:  # no compiler, no ninja, a compile error: fall back, say why
        lines = str(e).strip().splitlines()
        warnings.warn(
            f"llmlab's CPU kernels could not be built ({type(e).__name__}: "
            f"{lines[-1] if lines else ''}); int4 and W8A8 layers use PyTorch's ops",
            stacklevel=2,
        )
        return False
    return True


def build_ops(namespace: str = "llmlab", flags: tuple[str, ...] = ()):
    """Compile csrc/*.cpp into torch.ops.<namespace>.int4_matmul, .quantize_rows, .rms_norm and
    .gelu_tanh_mul (cached on disk) and return torch.ops.<namespace>. `flags` go to the compiler
    after `-march=native`: tests build the portable paths with e.g. ("-mno-avx512f",) under
    another namespace."""
    ops = getattr(torch.ops, namespace)
    if not hasattr(ops, "decode_layer"):
        from torch.utils import cpp_extension

        # ninja comes with our Python dependencies, in the interpreter's bin folder, which is not
        # on PATH when the venv's python is run without activating the venv
        bin_dir = str(Path(sys.executable).parent)
        if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
        name = f"{namespace}_kernels_{_cpu_tag()}"
        build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
        if not (build_dir / f"{name}.so").exists():
            print(f"llmlab: building the CPU kernels {namespace} (once)…", file=sys.stderr)
        cflags = ["-O3", "-march=native", *flags, "-fopenmp", f"-DLLMLAB_OPS={namespace}"]
        with _build_lock(build_dir):
            cpp_extension.load_inline(
                name=name,
                cpp_sources=[source.read_text() for source in _SOURCES],
                extra_cflags=cflags,
                extra_ldflags=["-fopenmp"],
                build_directory=str(build_dir),
                is_python_module=False,
            )

        @torch.library.register_fake(f"{namespace}::int4_matmul")
        def _shape(x, tiles, scale_min, group_size):
            return x.new_empty((x.shape[0], tiles.shape[0] * TILE_ROWS), dtype=torch.float32)

        @torch.library.register_fake(f"{namespace}::w8a8_matmul")
        def _w8a8_shape(codes, packed, compensation, weight_scale, scale, low, weight_sums):
            return codes.new_empty(
                (codes.shape[0], packed.shape[0] * TILE_ROWS), dtype=torch.float32
            )

        @torch.library.register_fake(f"{namespace}::w8a8_matmul_grouped")
        def _w8a8_grouped_shape(codes, packed, group_sums, weight_scale, scale, low):
            return codes.new_empty(
                (codes.shape[0], packed.shape[0] * TILE_ROWS), dtype=torch.float32
            )

        @torch.library.register_fake(f"{namespace}::gelu_tanh_mul")
        def _geglu_shape(gate, up):
            return torch.empty_like(gate)

        @torch.library.register_fake(f"{namespace}::rms_norm")
        def _norm_shape(x, weight, eps):
            return torch.empty_like(x)

        @torch.library.register_fake(f"{namespace}::quantize_rows")
        def _quantize_shape(x, divisor, asymmetric):
            rows = x.shape[0]
            return (
                x.new_empty(x.shape, dtype=torch.uint8),
                x.new_empty((rows, 1), dtype=torch.float32),
                x.new_empty((rows if asymmetric else 0, 1), dtype=torch.float32),
            )

    return ops


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """Hold an OS lock on `build_dir` while PyTorch builds or loads there. PyTorch's own lock is a
    plain file (`lock`) that a killed build leaves behind, after which every later build waits on
    it forever. The OS drops this lock when its holder dies, so a `lock` file met while holding it
    was left by a dead build: it is removed, and PyTorch builds again."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / "llmlab.flock", "w") as handle:  # closing it releases the lock
        fcntl.flock(handle, fcntl.LOCK_EX)
        stale = build_dir / "lock"
        if stale.exists():
            print(f"llmlab: removing {stale}, left by a build that was killed", file=sys.stderr)
            stale.unlink(missing_ok=True)
        yield


def _cpu_tag() -> str:
    """A short hash of the CPU's feature flags: a build for -march=native is only valid on a CPU
    with the same features, and the build cache may sit in a home folder shared between machines."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def int4_fits(out_features: int, in_features: int, group_size: int) -> bool:
    """The kernel's tiling: 16-row tiles, groups a multiple of 16 inputs (two words)."""
    return out_features % TILE_ROWS == 0 and group_size % 16 == 0 and in_features % group_size == 0


def pack_int4_tiles(
    codes: torch.Tensor, scales: torch.Tensor, minimums: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [N, K] in 0…15, scales/minimums [N, K/group_size] → (tiles, scale_min) as the kernel
    reads them (layout in csrc/int4_matmul.cpp)."""
    n, k = codes.shape
    c = codes.to(torch.int32).reshape(
        n // TILE_ROWS, TILE_ROWS, k // CODES_PER_WORD, CODES_PER_WORD
    )
    tiles = (c << _SHIFTS.to(c.device)).sum(-1, dtype=torch.int32).transpose(1, 2).contiguous()
    groups = k // group_size
    scale_min = torch.stack([scales.float(), minimums.float()], -1)  # [N, G, 2]
    scale_min = scale_min.reshape(n // TILE_ROWS, TILE_ROWS, groups, 2).permute(0, 2, 3, 1)
    return tiles, scale_min.to(torch.float16).contiguous()


def int4_tile_codes(tiles: torch.Tensor) -> torch.Tensor:
    """tiles → codes [N, K] (uint8), the inverse of pack_int4_tiles' first half. (Not the
    two-codes-a-byte layout of quantized folders: that is formats/quantized.py.)"""
    t, words, rows = tiles.shape
    codes = (tiles[..., None] >> _SHIFTS.to(tiles.device)) & 15  # [T, K/8, 16, 8]
    return codes.permute(0, 2, 1, 3).reshape(t * rows, words * CODES_PER_WORD).to(torch.uint8)


def int4_matmul(
    x: torch.Tensor, tiles: torch.Tensor, scale_min: torch.Tensor, group_size: int
) -> torch.Tensor:
    """x [M, K] (float32 or bfloat16) → [M, N] float32."""
    return torch.ops.llmlab.int4_matmul(x, tiles, scale_min, group_size)


def quantize_rows(
    x: torch.Tensor, divisor: torch.Tensor | None, asymmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x [M, K] → uint8 codes (zero point 128), scale [M, 1], low [M, 1] (asymmetric) or None:
    what W8A8Linear.quantize_input(x, offset=128) returns for per-token activations, bit for bit."""
    codes, scale, low = torch.ops.llmlab.quantize_rows(x, divisor, asymmetric)
    return codes, scale, (low if asymmetric else None)


@functools.cache
def has_vnni() -> bool:
    """Whether this CPU has AVX512-VNNI, which the w8a8_matmul build (-march=native) then uses;
    without it the kernel is a correct but slow loop, and W8A8 layers use oneDNN's GEMM."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_vnni" in flags and "avx512f" in flags


def w8a8_fits(out_features: int, in_features: int) -> bool:
    return out_features % TILE_ROWS == 0 and in_features % 4 == 0


def pack_w8a8(qweight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 [N, K] → (packed int8 [N/16, K/4, 16, 4], compensation int32 [N] = 128 · Σ_k w[n, k]):
    the layout of csrc/w8a8_matmul.cpp."""
    n, k = qweight.shape
    packed = qweight.reshape(n // TILE_ROWS, TILE_ROWS, k // 4, 4).transpose(1, 2).contiguous()
    return packed, qweight.sum(1, dtype=torch.int32) * 128


def w8a8_matmul(
    codes: torch.Tensor,
    packed: torch.Tensor,
    compensation: torch.Tensor,
    weight_scale: torch.Tensor,
    scale: torch.Tensor,
    low: torch.Tensor | None = None,
    weight_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 codes [M, K] (zero point 128) → float32 [M, N] = (codes − 128) · wᵀ · weight_scale ·
    scale (+ low · weight_sums): what W8A8Linear's per-token paths compute, in one pass."""
    return torch.ops.llmlab.w8a8_matmul(
        codes, packed, compensation, weight_scale, scale.reshape(-1), low, weight_sums
    )


def w8a8_matmul_grouped(
    codes: torch.Tensor,
    packed: torch.Tensor,
    group_sums: torch.Tensor,
    weight_scale: torch.Tensor,
    scale: torch.Tensor,
    low: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same with one activation grid per G inputs of a token: scale and low [M, K/G],
    group_sums int32 [K/G, N] = Σ_{k∈g} w[n, k] → float32 [M, N] = weight_scale ·
    Σ_g (scale[:, g] · (codes_g − 128) · w_gᵀ + low[:, g] · group_sums[g])."""
    return torch.ops.llmlab.w8a8_matmul_grouped(codes, packed, group_sums, weight_scale, scale, low)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """float32 x [..., D] · rsqrt(mean(x²) + eps) · weight [D], one pass per row."""
    return torch.ops.llmlab.rms_norm(x, weight, eps)


def gelu_tanh_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """float32 gelu(gate, approximate="tanh") · up in one pass (GeGLU)."""
    return torch.ops.llmlab.gelu_tanh_mul(gate, up)


def decode_layer(
    x: torch.Tensor,
    cache: torch.Tensor,
    norms: list[torch.Tensor],
    eps: float,
    weights: list[torch.Tensor],
    kinds: list[int],
    options: list[int],
    cos: torch.Tensor,
    sin: torch.Tensor,
    slot: int,
    context: torch.Tensor,
    heads: int,
    kv_heads: int,
    scale: float,
) -> None:
    """One decoder layer for one token, in place: x [1, hidden] float32 gets the layer's two
    residual adds, cache [slots, 2·kv_heads, head_dim] the token's k, v at `slot`; attention over
    the int64 `context` slots (this token's included); cos, sin [head_dim / 2] of this position.
    `norms`: Llama's input and post-attention RMSNorm weights, or Gemma 3's six (input, q, k,
    post-attention, pre-feedforward, post-feedforward; as 1 + w, q/k in rotary-pair order).
    The packed qkv, o, gate_up and down projections (q/k rows in rotary-pair order), each of a
    kind: 0 int4 (weights: tiles, scale_min; option: group size) or 1 dynamic per-token W8A8
    (weights: VNNI-packed weight, compensation, weight scale, weight sums, smoothing divisor — the
    last two empty when unused; option: 1 for asymmetric activations); `weights` is theirs, one
    projection after the other. See csrc/decode_layer.cpp."""
    torch.ops.llmlab.decode_layer(
        x, cache, norms, eps, weights, kinds, options, cos, sin, slot, context,
        heads, kv_heads, scale,
    )  # fmt: skip
