"""Quantized linear layers: int8 / int4 weight-only, and W8A8 (int8 weights × int8 activations).

    quantize_model(model, "int4", group_size=32)     # every nn.Linear except the embedding
    quantize_model(model, "w8a8")                    # int8 weights, activations per token at run time
    layer = Int8Linear.from_linear(linear); y = layer(x)

int8: w ≈ q · s, q ∈ [-127, 127], one scale per output row (symmetric).
int4: w ≈ q · s + m, q ∈ [0, 15], one (scale, minimum) pair per `group_size` inputs of a row
(asymmetric, the layout of llama.cpp's Q4_1 — which is why a Q4_1 GGUF loads straight in).

On the CPU the matmul runs in packed kernels fed bfloat16 activations: int4 in llmlab's own
(`nn/native.py`, built on first use; PyTorch's `_weight_int4pack_mm_for_cpu` where it cannot be
built), int8 in PyTorch's `_weight_int8pack_mm` (its float32 path is a slow reference loop on many
CPUs, the bfloat16 one is vectorized). Elsewhere (CUDA, or a PyTorch
without the ops) the weight is dequantized for each call: correct, not fast.

Reading quantized checkpoints (a Q4_1 GGUF's own blocks) is `llmlab.load(..., quant="int4")`.

W8A8 (`W8A8Linear`): int8 weights per output channel (symmetric) times int8 activations, either
quantized per token at run time (dynamic: scale = max|x_token| / 127) or with one calibrated
(scale, zero point) for the whole input (static, from `llmlab.quant`'s observers); per token also
asymmetric, over each token's [min, max]. On the CPU the product runs in oneDNN's u8 × s8 GEMM on a
weight prepacked once for it (`onednn::qlinear_pointwise`, VNNI / AMX where the CPU has them; the
activation codes are shifted by 128 into uint8 and the shift comes out through the zero point),
which also applies the weight scales; without that op, `torch._int_mm` (int8 × int8 → int32), then
the scales in the same order (bench/quant.py --kernels compares the kernels). The flows that
produce these layers (calibration, GPTQ, QAT) live in `llmlab.quant`; the layers live here because `llmlab.load` (below
quant/) builds them when it reads a quantized folder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import LlmlabError
from llmlab.nn import native

_HAS_INT8_KERNEL = hasattr(torch.ops.aten, "_weight_int8pack_mm")
_HAS_INT_MM = hasattr(torch, "_int_mm")
# W8A8 rows up to which the fused VNNI kernel runs (a decode step's batch); oneDNN above
VNNI_MAX_ROWS = 32
_HAS_ONEDNN_QLINEAR = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.onednn, "qlinear_prepack")
    and hasattr(torch.ops.onednn, "qlinear_pointwise")
)
_HAS_INT4_KERNEL = hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
    torch.ops.aten, "_convert_weight_to_int4pack_for_cpu"
)
KERNEL_DTYPE = torch.bfloat16
INT4_GROUP_SIZES = (32, 64, 128, 256)


class _FixedDtypeBuffers(nn.Module):
    """`model.to(dtype)` moves these layers' buffers to the new device but keeps their dtypes: the
    packed kernels need their bfloat16 scales as bfloat16, and float32 scales are not worth
    rounding when the rest of the model goes to bfloat16."""

    def _apply(self, fn, recurse=True):
        dtypes = {name: b.dtype for name, b in self._buffers.items() if b is not None}
        super()._apply(fn, recurse)
        for name, dtype in dtypes.items():
            if self._buffers[name].dtype != dtype:
                self._buffers[name] = self._buffers[name].to(dtype)
        return self


class _QuantizedLinear(_FixedDtypeBuffers):
    """Shared forward: the packed kernel on CPU when available, else dequantize and matmul."""

    in_features: int
    out_features: int
    use_kernel: bool
    bias: nn.Parameter | None

    def dequantized_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def _kernel_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        """The effective float weight (computed on access), for code that reads `.weight`."""
        return self.dequantized_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if self.use_kernel and x.device.type == "cpu":
            out = self._kernel_matmul(x2.to(KERNEL_DTYPE).contiguous()).to(x.dtype)
        else:
            out = F.linear(x2, self.dequantized_weight().to(x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.view(*shape[:-1], self.out_features)


class Int8Linear(_QuantizedLinear):
    def __init__(
        self,
        qweight: torch.Tensor,
        scales: torch.Tensor,
        bias: torch.Tensor | None = None,
        use_kernel: bool | None = None,
    ):
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", qweight.to(torch.int8))
        self.register_buffer("scales", scales.float())
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.use_kernel = _HAS_INT8_KERNEL if use_kernel is None else use_kernel

    @classmethod
    def from_linear(cls, linear: nn.Linear, use_kernel: bool | None = None) -> Int8Linear:
        w = linear.weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        q = (w / scales[:, None]).round().clamp(-127, 127)
        return cls(q, scales, linear.bias, use_kernel)

    def dequantized_weight(self) -> torch.Tensor:
        return self.qweight.float() * self.scales[:, None]

    def _kernel_matmul(self, x2):
        return torch.ops.aten._weight_int8pack_mm(x2, self.qweight, self.scales.to(KERNEL_DTYPE))


class Int4Linear(_QuantizedLinear):
    """codes [out, in] in 0…15, scales and minimums [out, in / group_size].

    `use_kernel`: None or True takes the fastest kernel that runs the layer here (llmlab's own,
    then PyTorch's packed one), "native" or "torch" that one (an error if it cannot), False none:
    the weight is dequantized for each call."""

    def __init__(
        self,
        codes: torch.Tensor,
        scales: torch.Tensor,
        minimums: torch.Tensor,
        group_size: int,
        bias: torch.Tensor | None = None,
        use_kernel: bool | str | None = None,
    ):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        if self.in_features % group_size:
            raise LlmlabError(
                f"int4 group size {group_size} does not divide the layer's {self.in_features} inputs"
            )
        self.group_size = group_size
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        # The kernel: llmlab's own (nn/native.py) where it builds and the shape fits its tiling,
        # else PyTorch's packed one where the shape fits its packer, else dequantize per call.
        native_fits = native.int4_fits(self.out_features, self.in_features, group_size)
        torch_fits = _HAS_INT4_KERNEL and self.in_features % 32 == 0 and self.out_features % 16 == 0
        self.kernel = None
        if use_kernel in (None, True, "native") and native_fits and native.available():
            self.kernel = "native"
        elif use_kernel in (None, True, "torch") and torch_fits:
            self.kernel = "torch"
        if use_kernel in ("native", "torch") and self.kernel != use_kernel:
            raise LlmlabError(f"the {use_kernel} int4 kernel does not run this layer here")
        self.use_kernel = self.kernel is not None
        if self.kernel == "native":
            tiles, scale_min = native.pack_int4_tiles(codes, scales, minimums, group_size)
            self.register_buffer("tiles", tiles)
            self.register_buffer("scale_min", scale_min)
        elif self.kernel == "torch":
            # The kernel's affine form is (q − 8)·scale + zero, so zero = minimum + 8·scale.
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                codes.to(torch.int32).cpu(), 1
            )
            zeros = minimums.float() + 8 * scales.float()
            self.register_buffer("packed", packed)
            self.register_buffer(
                "scales_and_zeros",
                torch.stack([scales.float(), zeros], -1)
                .transpose(0, 1)
                .contiguous()
                .to(KERNEL_DTYPE),
            )
        else:
            self.register_buffer("codes", codes.to(torch.uint8))
        self.register_buffer("scales", scales.float())
        self.register_buffer("minimums", minimums.float())

    @classmethod
    def from_weight(
        cls, weight: torch.Tensor, group_size: int = 32, bias=None, use_kernel=None
    ) -> Int4Linear:
        out_features, in_features = weight.shape
        if in_features % group_size:
            raise LlmlabError(
                f"int4 group size {group_size} does not divide the layer's {in_features} inputs"
            )
        groups = (
            weight.detach().float().reshape(out_features, in_features // group_size, group_size)
        )
        low, high = groups.amin(-1), groups.amax(-1)
        scales = ((high - low) / 15).clamp(min=1e-12)
        codes = ((groups - low[..., None]) / scales[..., None]).round().clamp(0, 15)
        return cls(
            codes.reshape(out_features, in_features), scales, low, group_size, bias, use_kernel
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 32, use_kernel=None) -> Int4Linear:
        return cls.from_weight(linear.weight, group_size, linear.bias, use_kernel)

    def _codes(self) -> torch.Tensor:
        if self.kernel is None:
            return self.codes.float()
        if self.kernel == "native":
            return native.int4_tile_codes(self.tiles).float()
        # Recover the codes from the packed layout by multiplying with the identity.
        eye = torch.eye(self.in_features, dtype=KERNEL_DTYPE)
        ones = torch.stack([torch.ones_like(self.scales), torch.full_like(self.scales, 8.0)], -1)
        ones = ones.transpose(0, 1).contiguous().to(KERNEL_DTYPE)
        return (
            torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed, self.group_size, ones)
            .float()
            .T
        )

    def dequantized_weight(self) -> torch.Tensor:
        g = self.group_size
        codes = self._codes().reshape(self.out_features, -1, g)
        return (codes * self.scales[..., None] + self.minimums[..., None]).reshape(
            self.out_features, self.in_features
        )

    def _kernel_matmul(self, x2):
        if self.kernel == "native":
            return native.int4_matmul(x2, self.tiles, self.scale_min, self.group_size)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            x2, self.packed, self.group_size, self.scales_and_zeros
        )


def regroup(layer: Int4Linear, group_size: int) -> Int4Linear:
    """The same weights requantized to another group size, or the layer as it is when the size
    does not divide its inputs (a Q4_1 file's groups of 32 then stay)."""
    if group_size == layer.group_size or layer.in_features % group_size:
        return layer
    return Int4Linear.from_weight(layer.dequantized_weight(), group_size, layer.bias)


class W8A8Linear(_FixedDtypeBuffers):
    """qweight [out, in] int8 and weight_scale [out]: w ≈ qweight · weight_scale (per output row).

    Activations: `input_scale=None` quantizes each token (row of x) at run time, symmetric to
    [-127, 127] — or, `asymmetric=True`, over the token's own [min, max] in 256 steps (a lopsided
    token does not waste half the codes on a sign), the offset coming back as low_token · Σ_k w[n, k]
    per output; a calibrated `input_scale` (and `input_zero_point`, 0 when symmetric) quantizes
    every row with the same affine map to [-128, 127]. The zero point comes out of the int32
    product exactly: Σ (q − z) · w = Σ q · w − z · Σ w (Σ w per row precomputed).

    `smooth` (SmoothQuant, optional, [in]): the weight was multiplied by it column-wise before
    quantization and the input is divided by it here, so x · wᵀ is unchanged while the
    activations' outlier channels shrink (and the weights, which quantize per row, absorb them).

    `outlier_index` [k] with `outlier_weight` [out, k] (LLM.int8()'s decomposition, optional): those
    k input channels bypass int8 — x[:, index] · outlier_weightᵀ in float — so a token's int8
    range is not spent on them; their int8 weight columns are zero and their inputs are zeroed
    before quantizing (a divisor of +inf: x / inf = 0, in the same pass as the smoothing).

    `input_group_size` G (dynamic only, optional): each token's inputs get one grid per run of G
    channels instead of one for the whole row — llama.cpp's 8-bit activation blocks — so an
    outlier channel coarsens only its own group. Still int8 × int8 with int32 sums, one sum per
    group, scaled per (token, group) and added in float: y = Σ_g s[m, g] · Σ_{k∈g} q · w (+ the
    asymmetric offsets low[m, g] · Σ_{k∈g} w)."""

    def __init__(
        self,
        qweight: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        input_scale: torch.Tensor | float | None = None,
        input_zero_point: torch.Tensor | int | None = None,
        smooth: torch.Tensor | None = None,
        asymmetric: bool = False,
        outlier_index: torch.Tensor | None = None,
        outlier_weight: torch.Tensor | None = None,
        input_group_size: int | None = None,
    ):
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.static = input_scale is not None
        if asymmetric and self.static:
            raise ValueError("asymmetric applies to per-token (dynamic) activations only")
        if input_group_size and (self.static or self.in_features % input_group_size):
            raise ValueError(
                f"input_group_size {input_group_size}: dynamic activations only, and it must "
                f"divide the {self.in_features} inputs"
            )
        self.input_group_size = int(input_group_size or 0)
        if (outlier_index is None) != (outlier_weight is None):
            raise ValueError("outlier_index and outlier_weight come together")
        self.asymmetric = asymmetric
        self.smoothed = smooth is not None
        if self.smoothed:
            self.register_buffer("input_divisor", smooth.detach().float().reshape(-1))
        qweight = qweight.to(torch.int8)
        self.has_outliers = outlier_index is not None and outlier_index.numel() > 0
        if self.has_outliers:
            index = outlier_index.detach().long().reshape(-1)
            self.register_buffer("outlier_index", index)
            self.register_buffer("outlier_weight", outlier_weight.detach().float().contiguous())
            qweight = qweight.index_fill(1, index, 0)
            divisor = self.input_divisor.clone() if self.smoothed else torch.ones(qweight.shape[1])
            self.register_buffer("outlier_divisor", divisor.index_fill(0, index, torch.inf), False)
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("weight_scale", weight_scale.detach().float().reshape(-1))
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        if asymmetric:  # Σ_k w[n, k] (dequantized; per input group), for the per-token offset
            if self.input_group_size:  # [in / G, out]
                sums = self._group_sums().float() * self.weight_scale
            else:  # [out]
                sums = self.qweight.sum(1, dtype=torch.int32).float() * self.weight_scale
            self.register_buffer("weight_sums", sums.contiguous())
        if self.static:
            scale = torch.as_tensor(input_scale, dtype=torch.float32).reshape(1)
            zero = torch.as_tensor(
                0 if input_zero_point is None else input_zero_point, dtype=torch.float32
            )
            self.register_buffer("input_scale", scale)
            self.register_buffer("input_zero_point", zero.round().reshape(1))
            # Σ_k w[n, k] per output row, for the zero-point correction.
            self.register_buffer("weight_row_sums", self.qweight.sum(1, dtype=torch.int32))
            self.has_zero_point = bool(
                self.input_zero_point.item() != 0
            )  # a Python flag: no sync per call
        # (the qweight it was packed from, packed weight, zero points), made on first use
        self._onednn = None
        # (the qweight it was packed from, packed weight, compensation, group sums), on first use
        self._vnni = None

    @classmethod
    def from_weight(
        cls,
        weight: torch.Tensor,
        bias=None,
        input_scale=None,
        input_zero_point=None,
        smooth=None,
        asymmetric: bool = False,
    ) -> W8A8Linear:
        w = weight.detach().float()
        if smooth is not None:
            w = w * smooth.float()[None, :]
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        q = (w / scale[:, None]).round().clamp(-127, 127)
        return cls(q, scale, bias, input_scale, input_zero_point, smooth, asymmetric)

    @classmethod
    def from_linear(cls, linear: nn.Linear, input_scale=None, input_zero_point=None) -> W8A8Linear:
        return cls.from_weight(linear.weight, linear.bias, input_scale, input_zero_point)

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantized_weight()

    def _group_sums(self) -> torch.Tensor:
        """int32 [in / G, out]: Σ_{k∈g} qweight[n, k] per input group g."""
        groups = self.qweight.view(self.out_features, -1, self.input_group_size)
        return groups.sum(-1, dtype=torch.int32).T

    @property
    def quant_divisor(self) -> torch.Tensor | None:
        """What the input is divided by before quantizing: the smoothing, +inf at outliers."""
        if self.has_outliers:
            return self.outlier_divisor
        return self.input_divisor if self.smoothed else None

    def dequantized_weight(self) -> torch.Tensor:
        """The effective float weight (smoothing undone): x · this = the layer's output."""
        w = self.qweight.float() * self.weight_scale[:, None]
        if self.smoothed:
            w = w / self.input_divisor[None, :]
        if self.has_outliers:
            w[:, self.outlier_index] = self.outlier_weight
        return w

    def quantize_input(self, x2: torch.Tensor, offset: int = 0):
        """x [M, in] float → (codes [M, in], scale [M, 1] or [1], low [M, 1] or None) so that
        x ≈ scale · (codes − z − offset) + low: int8 codes, or uint8 with offset=128 (oneDNN's
        u8 × s8). `low` is the asymmetric per-token offset (None otherwise). With input groups,
        scale and low are [M, in / G] and each group of codes is on its own grid."""
        if self.input_group_size:
            m, g = x2.shape[0], self.input_group_size
            if self.quant_divisor is not None:
                x2 = x2.float() / self.quant_divisor
            q, scale, low = self._quantize_rows(x2.reshape(-1, g), offset)
            return q.view(m, -1), scale.view(m, -1), None if low is None else low.view(m, -1)
        return self._quantize_rows(x2, offset, self.quant_divisor)

    def _quantize_rows(self, x2: torch.Tensor, offset: int, divisor=None):
        if offset == 128 and not self.static and x2.device.type == "cpu" and native.available():
            return native.quantize_rows(x2, divisor, self.asymmetric)
        x2 = x2.float()
        if divisor is not None:
            x2 = x2 / divisor
        low = None
        if self.static:
            q = (x2 / self.input_scale + self.input_zero_point).round_().clamp_(-128, 127)
            scale = self.input_scale
        elif self.asymmetric:  # codes −128…127 over [min, max]: x ≈ scale · (q + 128) + min
            minimum = x2.amin(-1, keepdim=True)
            scale = (x2.amax(-1, keepdim=True) - minimum).clamp_(min=1e-12) / 255
            q = ((x2 - minimum) / scale).round_().sub_(128)
            low = minimum.add_(scale, alpha=128)
        else:
            scale = x2.abs().amax(-1, keepdim=True).clamp_(min=1e-12) / 127
            q = (x2 / scale).round_()
        if offset:
            return q.add_(offset).to(torch.uint8), scale, low
        return q.to(torch.int8), scale, low

    def int_matmul(self, q: torch.Tensor, columns: slice = slice(None)) -> torch.Tensor:
        """int8 [M, in] × qweight[:, columns]ᵀ → int32 [M, out] (exact)."""
        w = self.qweight[:, columns]
        if _HAS_INT_MM and q.device.type == "cpu":
            return torch._int_mm(q.contiguous(), w.t())
        # Elsewhere: float32 matmul of the integer values (exact up to 2^24 per sum).
        return (q.float() @ w.float().t()).round_().to(torch.int32)

    def _onednn_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight prepacked for oneDNN (a copy, made on first use and never saved) and its
        zero points; packed again if `qweight` was replaced."""
        if self._onednn is None or self._onednn[0] is not self.qweight:
            packed = torch.ops.onednn.qlinear_prepack(self.qweight, None)
            zeros = torch.zeros(self.out_features, dtype=torch.long)
            self._onednn = (self.qweight, packed, zeros)
        return self._onednn[1], self._onednn[2]

    def _onednn_matmul(self, q: torch.Tensor) -> torch.Tensor:
        """uint8 codes (offset 128) [M, in] → float32 [M, out] = Σ (q − z − 128) · w · weight_scale
        (· the static input scale) through the prepacked u8 × s8 GEMM."""
        packed, zeros = self._onednn_weight()
        if self.static:  # the static grid goes to oneDNN as it is
            x_scale, zero = self.input_scale.item(), int(self.input_zero_point.item()) + 128
        else:  # per-token scales are applied after: oneDNN takes one scale per input
            x_scale, zero = 1.0, 128
        return torch.ops.onednn.qlinear_pointwise(
            q, x_scale, zero, packed, self.weight_scale, zeros, None, 1.0, 0,
            torch.float32, "none", [], "",
        )  # fmt: skip

    def _grouped_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """float32 [M, out] = Σ_g s[m, g] · (q[:, g] · qweight[:, g]ᵀ) · weight_scale (+ offsets),
        one `int_matmul` per group (rows the fused kernel does not take)."""
        q, scale, low = self.quantize_input(x2)
        g = self.input_group_size
        out = torch.zeros(x2.shape[0], self.out_features, device=x2.device)
        for i in range(self.in_features // g):
            acc = self.int_matmul(q[:, i * g : (i + 1) * g], slice(i * g, (i + 1) * g))
            out.addcmul_(acc.float(), scale[:, i : i + 1])
        out.mul_(self.weight_scale)
        return out if low is None else out.addmm_(low, self.weight_sums)

    def vnni_fits(self) -> bool:
        """Whether the fused kernel runs this layer here: a dynamic grid, AVX512-VNNI, the weight's
        shape and the activation groups on its tiles."""
        return (
            not self.static
            and self.input_group_size % 4 == 0
            and native.available()
            and native.has_vnni()
            and native.w8a8_fits(self.out_features, self.in_features)
        )

    def vnni_weight(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The weight as the fused kernel reads it: (packed, compensation, group sums or None), made
        on first use (a copy, never saved) and again if `qweight` was replaced."""
        if self._vnni is None or self._vnni[0] is not self.qweight:
            packed, compensation = native.pack_w8a8(self.qweight)
            group_sums = self._group_sums().contiguous() if self.input_group_size else None
            self._vnni = (self.qweight, packed, compensation, group_sums)
        return self._vnni[1:]

    def _vnni_matmul(self, x2: torch.Tensor) -> torch.Tensor | None:
        """The fused kernel (csrc/w8a8_matmul.cpp) for a decode step's few rows, where it beats
        oneDNN (bench/quant.py --kernels) with the same result bit for bit (per-token grids; with
        activation groups, up to float rounding: the groups are summed in another order); None
        where it does not apply (static grid, many rows, no AVX512-VNNI, a shape off its tiles)."""
        if (
            not self.vnni_fits()
            or not 0 < x2.shape[0] <= VNNI_MAX_ROWS
            or x2.device.type != "cpu"
            or torch.compiler.is_compiling()
        ):
            return None
        packed, compensation, group_sums = self.vnni_weight()
        codes, scale, low = self.quantize_input(x2, offset=128)
        if self.input_group_size:
            return native.w8a8_matmul_grouped(
                codes, packed, group_sums, self.weight_scale, scale, low
            )
        sums = None if low is None else self.weight_sums
        return native.w8a8_matmul(codes, packed, compensation, self.weight_scale, scale, low, sums)

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """float32 [M, out] = x's codes · qweightᵀ, scaled, with the zero point / offsets out
        (rows the fused kernel does not take)."""
        # torch.compile (the engine's --compile) cannot lower the prepacked op: _int_mm there
        if (
            _HAS_ONEDNN_QLINEAR
            and x2.device.type == "cpu"
            and x2.shape[0] > 0
            and not torch.compiler.is_compiling()
        ):
            q, scale, low = self.quantize_input(x2, offset=128)
            out = self._onednn_matmul(q)
        else:
            q, scale, low = self.quantize_input(x2)
            acc = self.int_matmul(q)
            if self.static and self.has_zero_point:
                acc = acc - self.input_zero_point.to(torch.int32) * self.weight_row_sums
            out = acc.float().mul_(self.weight_scale)
            if self.static:
                out.mul_(scale)
        if not self.static:
            # per token, after the weight scale on both paths: one float rounding order, because
            # a W8A8 model's perplexity moves with it (docs/quantization.md)
            out.mul_(scale)
        if low is not None:
            out.addr_(low.view(-1), self.weight_sums)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        out = self._vnni_matmul(x2)
        if out is None:
            out = self._grouped_matmul(x2) if self.input_group_size else self._matmul(x2)
        if self.has_outliers:
            out.addmm_(x2.index_select(1, self.outlier_index).float(), self.outlier_weight.t())
        if self.bias is not None:
            out = out + self.bias.float()
        return out.to(x.dtype).view(*shape[:-1], self.out_features)

    def __getstate__(self):
        # The packed weight is an opaque oneDNN tensor: copies and pickles pack their own.
        return {**self.__dict__, "_onednn": None, "_vnni": None}


def check_quant(quant: str | None, group_size: int = 32) -> None:
    """One-line errors for a quantization this module does not provide."""
    if quant not in (None, "int8", "int4", "w8a8"):
        raise LlmlabError(f"unknown quantization '{quant}' (choose int8, int4 or w8a8)")
    if quant == "int4" and group_size not in INT4_GROUP_SIZES:
        raise LlmlabError(f"int4 group size must be 32, 64, 128 or 256, got {group_size}")


def quantize_linear(linear: nn.Linear, quant: str, group_size: int = 32) -> nn.Module:
    if quant == "w8a8":
        return W8A8Linear.from_linear(linear)
    if quant == "int8":
        return Int8Linear.from_linear(linear)
    if quant == "int4":
        if linear.in_features % group_size:
            return Int8Linear.from_linear(linear)  # a layer the groups don't tile stays 8-bit
        return Int4Linear.from_linear(linear, group_size)
    raise LlmlabError(f"unknown quantization '{quant}' (choose int8, int4 or w8a8)")


def quantize_model(model: nn.Module, quant: str, group_size: int = 32) -> nn.Module:
    """Replace every nn.Linear (incl. a tied LM head, which gets its own quantized copy) in place."""
    if quant is None:
        raise LlmlabError("unknown quantization 'None' (choose int8, int4 or w8a8)")
    check_quant(quant, group_size)
    targets = [
        (name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)
    ]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, quantize_linear(module, quant, group_size))
    return model
