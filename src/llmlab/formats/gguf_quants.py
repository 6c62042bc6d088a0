"""Dequantizers for the GGML block formats found in GGUF files, written in vectorized torch.

A quantized GGUF tensor is a flat run of fixed-size *blocks*. Each block covers a fixed number of
consecutive weights along a row (32 for the classic formats, 256 for the "K" formats) and stores a
few floating-point scales plus small integers. Dequantizing is "integer times scale (plus offset)".
Every function below takes the raw bytes as a uint8 tensor shaped [n_blocks, bytes_per_block] and
returns float32 weights shaped [n_blocks, weights_per_block]; the block layouts are spelled out in
the comments (byte offsets are within one block; all multi-byte values are little-endian).

    from llmlab.formats.gguf_quants import dequantize
    weights = dequantize(raw_uint8_numpy_array, "Q4_K", shape=(rows, cols))

Parity with the reference `gguf.quants.dequantize` is checked in tests/test_gguf.py.
"""

from __future__ import annotations

import numpy as np
import torch

from llmlab.errors import LlmlabError


def _fp16(blocks: torch.Tensor, offset: int) -> torch.Tensor:
    """The fp16 number at byte `offset` of every block, as float32 [n_blocks, 1]."""
    return blocks[:, offset : offset + 2].contiguous().view(torch.float16).float()


def _split_nibbles(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each byte holds two 4-bit integers: (low nibble, high nibble)."""
    return packed & 0x0F, packed >> 4


def _nibbles_as_float(packed: torch.Tensor) -> torch.Tensor:
    """[..., k] bytes → [..., 2, k] float32: all low nibbles, then all high nibbles.

    Written into one preallocated tensor because this runs over every weight of a 4-bit model;
    `cat` of two converted halves would allocate three full-size temporaries instead of one.
    """
    out = torch.empty(*packed.shape[:-1], 2, packed.shape[-1])
    out[..., 0, :] = packed & 0x0F
    out[..., 1, :] = packed >> 4
    return out


# --- plain floating point -------------------------------------------------------------------


def dequantize_f32(blocks: torch.Tensor) -> torch.Tensor:
    # "Block" of one weight, 4 bytes.
    return blocks.contiguous().view(torch.float32)


def dequantize_f16(blocks: torch.Tensor) -> torch.Tensor:
    # IEEE half precision: 1 sign, 5 exponent, 10 mantissa bits.
    return blocks.contiguous().view(torch.float16).float()


def dequantize_bf16(blocks: torch.Tensor) -> torch.Tensor:
    # bfloat16 is the top 16 bits of a float32 (same 8-bit exponent, 7-bit mantissa), so widening is
    # exact: put the 16 bits in the high half of a float32 word.
    return blocks.contiguous().view(torch.bfloat16).float()


# --- classic 32-weight blocks ---------------------------------------------------------------


def dequantize_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    # Q8_0, 34 bytes per 32 weights (8.5 bits/weight):
    #   [0:2]  d   fp16 scale
    #   [2:34] q   32 x int8
    # weight = d * q   (symmetric: no offset, zero maps to zero)
    d = _fp16(blocks, 0)
    q = blocks[:, 2:34].contiguous().view(torch.int8).float()
    return d * q


def dequantize_q4_0(blocks: torch.Tensor) -> torch.Tensor:
    # Q4_0, 18 bytes per 32 weights (4.5 bits/weight):
    #   [0:2]  d   fp16 scale
    #   [2:18] qs  16 bytes; the low nibble of byte j is weight j, the high nibble is weight j+16
    # weight = d * (q - 8)   (4-bit unsigned 0..15 re-centred to -8..7)
    d = _fp16(blocks, 0)
    q = _nibbles_as_float(blocks[:, 2:18]).view(-1, 32)
    return q.sub_(8).mul_(d)


def dequantize_q4_1(blocks: torch.Tensor) -> torch.Tensor:
    # Q4_1, 20 bytes per 32 weights (5 bits/weight):
    #   [0:2]  d   fp16 scale
    #   [2:4]  m   fp16 minimum (offset)
    #   [4:20] qs  16 bytes, nibbles laid out as in Q4_0
    # weight = d * q + m   (asymmetric: the block's range [m, m + 15d] need not contain zero)
    d, m = _fp16(blocks, 0), _fp16(blocks, 2)
    q = _nibbles_as_float(blocks[:, 4:20]).view(-1, 32)
    return torch.addcmul(m, q, d)


def _fifth_bits(qh: torch.Tensor) -> torch.Tensor:
    """4 bytes = one little-endian uint32 per block whose bit j is the 5th bit of weight j →
    [n_blocks, 32] of 0/16 (already shifted into place)."""
    bits = torch.arange(8, dtype=torch.uint8)
    # byte k holds bits 8k..8k+7, so weight j = 8k + b reads bit b of byte k
    return (((qh.unsqueeze(-1) >> bits) & 1) << 4).reshape(qh.shape[0], 32)


def dequantize_q5_0(blocks: torch.Tensor) -> torch.Tensor:
    # Q5_0, 22 bytes per 32 weights (5.5 bits/weight):
    #   [0:2]   d   fp16 scale
    #   [2:6]   qh  32 fifth bits, bit j for weight j
    #   [6:22]  qs  16 bytes, low 4 bits laid out as in Q4_0 (low nibbles 0-15, high 16-31)
    # weight = d * (q - 16)   (5-bit unsigned 0..31 re-centred to -16..15)
    d = _fp16(blocks, 0)
    q = _nibbles_as_float(blocks[:, 6:22]).view(-1, 32)
    return q.add_(_fifth_bits(blocks[:, 2:6])).sub_(16).mul_(d)


def dequantize_q5_1(blocks: torch.Tensor) -> torch.Tensor:
    # Q5_1, 24 bytes per 32 weights (6 bits/weight): d fp16, m fp16 minimum, qh, qs as in Q5_0.
    # weight = d * q + m
    d, m = _fp16(blocks, 0), _fp16(blocks, 2)
    q = _nibbles_as_float(blocks[:, 8:24]).view(-1, 32)
    return torch.addcmul(m, q.add_(_fifth_bits(blocks[:, 4:8])), d)


# --- "K" super-blocks of 256 weights --------------------------------------------------------


def _unpack_q4_k_scales(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """12 bytes → eight 6-bit sub-block scales and eight 6-bit sub-block minimums.

    bytes 0-3:  low 6 bits = scale j (j = 0..3);  top 2 bits = bits 4-5 of scale j+4
    bytes 4-7:  low 6 bits = min j   (j = 0..3);  top 2 bits = bits 4-5 of min j+4
    bytes 8-11: low nibble = bits 0-3 of scale j+4; high nibble = bits 0-3 of min j+4
    """
    s = packed.to(torch.int32)
    scales_low, mins_low = s[:, 0:4] & 63, s[:, 4:8] & 63
    scales_high = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    mins_high = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return torch.cat([scales_low, scales_high], dim=1), torch.cat([mins_low, mins_high], dim=1)


def dequantize_q4_k(blocks: torch.Tensor) -> torch.Tensor:
    # Q4_K, 144 bytes per 256 weights (4.5 bits/weight): eight sub-blocks of 32 weights, each with
    # its own 6-bit scale and 6-bit minimum, themselves scaled by two fp16 super-block factors.
    #   [0:2]    d       fp16 factor for the sub-block scales
    #   [2:4]    dmin    fp16 factor for the sub-block minimums
    #   [4:16]   scales  8 scales + 8 mins, 6 bits each (see _unpack_q4_k_scales)
    #   [16:144] qs      128 bytes as 4 chunks of 32; chunk c's low nibbles are sub-block 2c,
    #                    its high nibbles sub-block 2c+1
    # weight in sub-block s = (d * scale_s) * q - (dmin * min_s)
    n = blocks.shape[0]
    d, dmin = _fp16(blocks, 0), _fp16(blocks, 2)
    scales, mins = _unpack_q4_k_scales(blocks[:, 4:16])
    q = _nibbles_as_float(blocks[:, 16:144].reshape(n, 4, 32)).view(n, 8, 32)
    sub_scale = (d * scales.float()).unsqueeze(-1)
    sub_min = (dmin * mins.float()).unsqueeze(-1)
    return (sub_scale * q - sub_min).reshape(n, 256)


def dequantize_q6_k(blocks: torch.Tensor) -> torch.Tensor:
    # Q6_K, 210 bytes per 256 weights (6.5625 bits/weight): 6-bit integers split into a 4-bit
    # part and a 2-bit part, sixteen sub-blocks of 16 weights with an int8 scale each.
    #   [0:128]   ql      low 4 bits. Two halves of 64 bytes, each covering 128 weights: byte l of a
    #                     half gives weight l (low nibble) and weight l+64 (high nibble), l = 0..63
    #   [128:192] qh      high 2 bits. Two halves of 32 bytes; byte l of a half gives, in bit pairs
    #                     0-1, 2-3, 4-5, 6-7, weights l, l+32, l+64, l+96 of that half
    #   [192:208] scales  16 x int8, one per 16 consecutive weights
    #   [208:210] d       fp16 super-block factor
    # weight = d * scale * (q - 32)   (6-bit unsigned 0..63 re-centred to -32..31)
    n = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(n, 2, 2, 32)  # [half, 32-byte chunk, byte]
    low, high = _split_nibbles(ql)
    low4 = torch.cat([low, high], dim=2)  # [half, quarter 0..3, 32]: weights quarter*32 + l
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 1, 4, 1)
    high2 = (qh >> shifts) & 3  # the same byte feeds all four quarters, two bits each
    q = ((low4 | (high2 << 4)).float() - 32).reshape(n, 16, 16)
    scales = blocks[:, 192:208].contiguous().view(torch.int8).float().unsqueeze(-1)
    d = _fp16(blocks, 208).unsqueeze(-1)
    return (d * scales * q).reshape(n, 256)


# name → (weights per block, bytes per block, function). Sizes match gguf.GGML_QUANT_SIZES.
DEQUANTIZERS = {
    "F32": (1, 4, dequantize_f32),
    "F16": (1, 2, dequantize_f16),
    "BF16": (1, 2, dequantize_bf16),
    "Q8_0": (32, 34, dequantize_q8_0),
    "Q4_0": (32, 18, dequantize_q4_0),
    "Q4_1": (32, 20, dequantize_q4_1),
    "Q5_0": (32, 22, dequantize_q5_0),
    "Q5_1": (32, 24, dequantize_q5_1),
    "Q4_K": (256, 144, dequantize_q4_k),
    "Q6_K": (256, 210, dequantize_q6_k),
}


def dequantize(
    raw: np.ndarray, type_name: str, shape: tuple[int, ...], tensor_name: str = "?"
) -> torch.Tensor:
    """Raw GGUF tensor data (any numpy dtype; its bytes are what count) → float32 torch tensor.

    `shape` is the logical shape in row-major (PyTorch) order, i.e. GGUF's dims reversed.
    """
    if type_name not in DEQUANTIZERS:
        supported = ", ".join(DEQUANTIZERS)
        raise LlmlabError(
            f"tensor {tensor_name} uses GGML type {type_name}, which llmlab cannot dequantize (supported: {supported})"
        )
    block_weights, block_bytes, function = DEQUANTIZERS[type_name]
    n_weights = int(np.prod(shape))
    byte_view = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if byte_view.size * block_weights != n_weights * block_bytes:
        raise LlmlabError(
            f"tensor {tensor_name}: {byte_view.size} bytes do not hold {n_weights} weights of type {type_name}"
        )
    # One copy out of the (read-only) memory map, so torch owns writable memory.
    blocks = torch.from_numpy(byte_view.copy()).view(-1, block_bytes)
    return function(blocks).reshape(shape)
