// int4 group-wise weight × float activations on the CPU: y = x · Wᵀ with
// W[n, k] = code[n, k] · scale[n, g] + minimum[n, g], g = k / group_size (llama.cpp's Q4_1 grid).
//
// Built on first use by llmlab/nn/native.py (torch.utils.cpp_extension, -O3 -march=native) and
// registered as torch.ops.llmlab.int4_matmul(x, tiles, scale_min, group_size).
//
// Layout (made by native.pack_int4_tiles): the output rows go in tiles of 16, one 16-lane vector
// each, and each row's codes in 32-bit words of eight inputs, the even ones in the low half:
//   tiles     int32   [N/16, K/8, 16]: word [t, q, r] holds code[16t + r, 8q + 2i + h] at bit
//                                       16h + 4i (i = 0…3, h = 0 even input, 1 odd input)
//   scale_min float16 [N/16, G, 2, 16]: [t, g, 0, r] = scale[16t + r, g], [t, g, 1, r] = minimum
// so one 64-byte load gives eight inputs' codes for 16 rows, and the minimum's share of a group,
// Σ_k minimum · x[k], is minimum · (Σ_{k in g} x[k]): one multiply per group, not per weight.
//
// Why not PyTorch's _weight_int4pack_mm_for_cpu: it runs a decode step's matrix-vector products at
// a fraction of the memory bandwidth on some CPUs (bench/quant.py --kernels measures both). Here no
// code goes through a shuffle:
// - with AVX512-BF16, the 16-bit halves of a word shifted right by 4i and masked to their low
//   nibble, OR 0x4300, are the bfloat16 numbers 128 + code for inputs 2i and 2i + 1 of 16 rows at
//   once — one vdpbf16ps multiplies them by the pair (x[2i], x[2i + 1]) (x rounded to bfloat16, as
//   PyTorch's kernel does) and adds into float32; the extra 128 · Σ x comes out per group;
// - with AVX-512 alone, a code is masked in place (word & 15 << s) and converted, which gives
//   code · 2^s, and the activation it meets was multiplied by 2^-s beforehand (a power of two:
//   exact), so each weight costs an AND, a convert and one FMA.
//
// One activation row (decode) reads the codes straight into the multiply-adds, with eight
// accumulators so they do not wait on each other; several rows first expand a tile to floats once
// (thread-local buffer) and then stream all rows over it, eight rows at a time.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kRows = 16;  // output rows per tile
constexpr int64_t kWord = 8;   // codes per 32-bit word
constexpr int64_t kBlock = 8;  // activation rows streamed together over an expanded tile

// Bit position of input j (0…7) of a word.
constexpr int shift_of(int64_t j) { return static_cast<int>(16 * (j % 2) + 4 * (j / 2)); }

#if defined(__AVX512F__) && defined(__AVX512BF16__)
constexpr int kPath = 1;  // every row through tile_bf16, x rounded to bfloat16
#elif defined(__AVX512F__)
constexpr int kPath = 2;  // one row: tile_one_row on x[k] · 2^-shift_of(k % 8) (top code: x[k])
#else
constexpr int kPath = 0;  // expanded tiles
#endif

#if defined(__AVX512F__)

inline __m512 load_half16(const at::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

inline __m512 sum8(const __m512* a) {
  return _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])),
                       _mm512_add_ps(_mm512_add_ps(a[4], a[5]), _mm512_add_ps(a[6], a[7])));
}

#if defined(__AVX512BF16__)
// R activation rows (bfloat16, as words of pairs: xpairs[m * K / 2 + p] = (x[m, 2p], x[m, 2p + 1]))
// against one tile: out[m * ldo + r] = Σ_k W[16t + r, k] x[m, k]. Each word's codes are turned
// into bfloat16 once and meet all R rows. Each row keeps A accumulators so that eight or more
// independent multiply-add chains are in flight: one row 8 (two words a step), up to four rows 4,
// five to eight rows one each (the accumulators then fit the 32 vector registers, and each word's
// conversion is shared by twice the rows: prefill chunks ran 15-20 % faster than in passes of 4).
template <int R>
void tile_bf16(const int32_t* tile, const at::Half* sm, const int32_t* xpairs, const float* xsum,
               int64_t K, int64_t gs, float* out, int64_t ldo) {
  constexpr int W = R == 1 ? 2 : 1;               // words per step
  constexpr int A = R == 1 ? 8 : R <= 4 ? 4 : 1;  // accumulators per row
  const int64_t G = K / gs;
  const __m512i nibble = _mm512_set1_epi16(15), bias = _mm512_set1_epi16(0x4300);
  __m512 y[R];
  for (int m = 0; m < R; ++m) y[m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512 a[R][A];
    for (int m = 0; m < R; ++m)
      for (int j = 0; j < A; ++j) a[m][j] = _mm512_setzero_ps();
    for (int64_t k = g * gs; k < (g + 1) * gs; k += W * kWord) {
      for (int w = 0; w < W; ++w) {
        const __m512i v = _mm512_loadu_si512(tile + (k / kWord + w) * kRows);
        for (int i = 0; i < 4; ++i) {
          // (v >> 4i) & 15 | 0x4300 in each 16-bit half: 0xEA is (A & B) | C for vpternlog
          const __m512bh b = (__m512bh)_mm512_ternarylogic_epi32(
              _mm512_srli_epi16(v, 4 * i), nibble, bias, 0xEA);
          const int64_t p = (k + w * kWord) / 2 + i;
          for (int m = 0; m < R; ++m)
            a[m][(4 * w + i) % A] = _mm512_dpbf16_ps(
                a[m][(4 * w + i) % A], b, (__m512bh)_mm512_set1_epi32(xpairs[m * K / 2 + p]));
        }
      }
    }
    const __m512 scale = load_half16(sm + g * 2 * kRows);
    // Σ (128 + c)·x = Σ c·x + 128·Σ x: the minimum's term absorbs −128·scale
    const __m512 low = _mm512_fnmadd_ps(scale, _mm512_set1_ps(128.0f),
                                        load_half16(sm + (g * 2 + 1) * kRows));
    for (int m = 0; m < R; ++m) {
      __m512 dot = a[m][0];
      for (int j = 1; j < A; ++j) dot = _mm512_add_ps(dot, a[m][j]);
      y[m] = _mm512_fmadd_ps(dot, scale, y[m]);
      y[m] = _mm512_fmadd_ps(low, _mm512_set1_ps(xsum[m * G + g]), y[m]);
    }
  }
  for (int m = 0; m < R; ++m) _mm512_storeu_ps(out + m * ldo, y[m]);
}

using TileBf16 = void (*)(const int32_t*, const at::Half*, const int32_t*, const float*, int64_t,
                          int64_t, float*, int64_t);
constexpr int kBf16Rows = 8;  // rows per pass
constexpr TileBf16 kTileBf16[kBf16Rows + 1] = {nullptr,      tile_bf16<1>, tile_bf16<2>,
                                               tile_bf16<3>, tile_bf16<4>, tile_bf16<5>,
                                               tile_bf16<6>, tile_bf16<7>, tile_bf16<8>};
#else
// One activation row against one tile: out[r] = Σ_k W[16t + r, k] x[k], given x scaled (kPath 2).
void tile_one_row(const int32_t* tile, const at::Half* sm, const float* xs, const float* xsum,
                  int64_t K, int64_t gs, float* out) {
  __m512 y = _mm512_setzero_ps();
  for (int64_t g = 0; g < K / gs; ++g) {
    __m512 a[kWord];
    for (int j = 0; j < kWord; ++j) a[j] = _mm512_setzero_ps();
    for (int64_t k = g * gs; k < (g + 1) * gs; k += kWord) {
      const __m512i v = _mm512_loadu_si512(tile + k / kWord * kRows);
      for (int j = 0; j < kWord - 1; ++j) {
        const __m512i c = _mm512_and_si512(v, _mm512_set1_epi32(15 << shift_of(j)));
        a[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), _mm512_set1_ps(xs[k + j]), a[j]);
      }
      // the top code masked in place would read as negative: shift it down instead
      const __m512 c = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 28));
      a[7] = _mm512_fmadd_ps(c, _mm512_set1_ps(xs[k + 7]), a[7]);
    }
    y = _mm512_fmadd_ps(sum8(a), load_half16(sm + g * 2 * kRows), y);
    y = _mm512_fmadd_ps(load_half16(sm + (g * 2 + 1) * kRows), _mm512_set1_ps(xsum[g]), y);
  }
  _mm512_storeu_ps(out, y);
}
#endif

// Expand a tile's codes to floats: w[k * 16 + r] = code[16t + r, k].
void expand_tile(const int32_t* tile, int64_t K, float* w) {
  for (int64_t q = 0; q < K / kWord; ++q) {
    const __m512i v = _mm512_loadu_si512(tile + q * kRows);
    for (int j = 0; j < kWord; ++j) {
      const __m512i c = _mm512_and_si512(_mm512_srli_epi32(v, shift_of(j)), _mm512_set1_epi32(15));
      _mm512_storeu_ps(w + (q * kWord + j) * kRows, _mm512_cvtepi32_ps(c));
    }
  }
}

// kRowsIn activation rows against an expanded tile: out[m * ldo + r].
template <int64_t kRowsIn>
void tile_rows(const float* w, const at::Half* sm, const float* x, const float* xsum, int64_t K,
               int64_t gs, float* out, int64_t ldo) {
  const int64_t G = K / gs;
  __m512 y[kRowsIn], a[kRowsIn];
  for (int m = 0; m < kRowsIn; ++m) y[m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    for (int m = 0; m < kRowsIn; ++m) a[m] = _mm512_setzero_ps();
    for (int64_t k = g * gs; k < (g + 1) * gs; ++k) {
      const __m512 wk = _mm512_loadu_ps(w + k * kRows);
      for (int m = 0; m < kRowsIn; ++m)
        a[m] = _mm512_fmadd_ps(wk, _mm512_set1_ps(x[m * K + k]), a[m]);
    }
    const __m512 scale = load_half16(sm + g * 2 * kRows);
    const __m512 minimum = load_half16(sm + (g * 2 + 1) * kRows);
    for (int m = 0; m < kRowsIn; ++m) {
      y[m] = _mm512_fmadd_ps(a[m], scale, y[m]);
      y[m] = _mm512_fmadd_ps(minimum, _mm512_set1_ps(xsum[m * G + g]), y[m]);
    }
  }
  for (int m = 0; m < kRowsIn; ++m) _mm512_storeu_ps(out + m * ldo, y[m]);
}

#else  // portable fallback: the same arithmetic, one lane at a time

void expand_tile(const int32_t* tile, int64_t K, float* w) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t r = 0; r < kRows; ++r) {
      const uint32_t word = static_cast<uint32_t>(tile[k / kWord * kRows + r]);
      w[k * kRows + r] = float((word >> shift_of(k % kWord)) & 15);
    }
}

template <int64_t kRowsIn>
void tile_rows(const float* w, const at::Half* sm, const float* x, const float* xsum, int64_t K,
               int64_t gs, float* out, int64_t ldo) {
  const int64_t G = K / gs;
  for (int64_t m = 0; m < kRowsIn; ++m)
    for (int64_t r = 0; r < kRows; ++r) {
      float y = 0;
      for (int64_t g = 0; g < G; ++g) {
        float dot = 0;
        for (int64_t k = g * gs; k < (g + 1) * gs; ++k) dot += w[k * kRows + r] * x[m * K + k];
        y += dot * float(sm[g * 2 * kRows + r]) + float(sm[(g * 2 + 1) * kRows + r]) * xsum[m * G + g];
      }
      out[m * ldo + r] = y;
    }
}

#endif

using TileRows = void (*)(const float*, const at::Half*, const float*, const float*, int64_t,
                          int64_t, float*, int64_t);
constexpr TileRows kTileRows[kBlock + 1] = {nullptr,      tile_rows<1>, tile_rows<2>,
                                            tile_rows<3>, tile_rows<4>, tile_rows<5>,
                                            tile_rows<6>, tile_rows<7>, tile_rows<8>};

template <typename T>
void to_float(const T* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

at::Tensor int4_matmul(const at::Tensor& x_in, const at::Tensor& tiles, const at::Tensor& scale_min,
                       int64_t group_size) {
  TORCH_CHECK(x_in.dim() == 2, "int4_matmul: x must be [M, K]");
  TORCH_CHECK(tiles.scalar_type() == at::kInt && tiles.dim() == 3 && tiles.size(2) == kRows,
              "int4_matmul: tiles must be int32 [N/16, K/8, 16]");
  TORCH_CHECK(scale_min.scalar_type() == at::kHalf, "int4_matmul: scale_min must be float16");
  const int64_t M = x_in.size(0), K = x_in.size(1), T = tiles.size(0), N = T * kRows;
  TORCH_CHECK(tiles.size(1) * kWord == K, "int4_matmul: x has ", K, " inputs, the tiles ",
              tiles.size(1) * kWord);
  TORCH_CHECK(group_size % (2 * kWord) == 0 && K % group_size == 0,
              "int4_matmul: the group size must be a multiple of 16 that divides K");
  const int64_t G = K / group_size;
  TORCH_CHECK(scale_min.numel() == T * G * 2 * kRows, "int4_matmul: scale_min has the wrong size");
  TORCH_CHECK(tiles.is_contiguous() && scale_min.is_contiguous(),
              "int4_matmul: tiles and scale_min must be contiguous");
  const at::ScalarType dtype = x_in.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "int4_matmul: x must be float32, bfloat16 or float16");

  // x as float (bfloat16-rounded on the bfloat16 path), and its group sums
  const at::Tensor xc = x_in.contiguous();
  std::vector<float> x(M * K), xsum(M * G);
  if (dtype == at::kFloat) std::copy(xc.data_ptr<float>(), xc.data_ptr<float>() + M * K, x.begin());
  if (dtype == at::kBFloat16) to_float(xc.data_ptr<at::BFloat16>(), M * K, x.data());
  if (dtype == at::kHalf) to_float(xc.data_ptr<at::Half>(), M * K, x.data());
  std::vector<at::BFloat16> xb;
  if (kPath == 1) {
    xb.resize(M * K);
    for (int64_t k = 0; k < M * K; ++k) x[k] = static_cast<float>(xb[k] = at::BFloat16(x[k]));
  }
  for (int64_t i = 0; i < M * G; ++i) {
    float s = 0;
    for (int64_t k = 0; k < group_size; ++k) s += x[i * group_size + k];
    xsum[i] = s;
  }
  if (M == 1 && kPath == 2)
    for (int64_t k = 0; k < K; ++k)
      if (k % kWord != kWord - 1) x[k] = std::ldexp(x[k], -shift_of(k % kWord));

  at::Tensor out = at::empty({M, N}, x_in.options().dtype(at::kFloat));
  const int32_t* tp = tiles.data_ptr<int32_t>();
  const at::Half* mp = scale_min.data_ptr<at::Half>();
  float* op = out.data_ptr<float>();
  const int64_t tile_words = K / kWord * kRows, tile_sm = G * 2 * kRows;
  at::parallel_for(0, T, 1, [&](int64_t begin, int64_t end) {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
    const int32_t* xpairs = reinterpret_cast<const int32_t*>(xb.data());
    for (int64_t t = begin; t < end; ++t)
      for (int64_t m0 = 0; m0 < M; m0 += kBf16Rows)
        kTileBf16[std::min<int64_t>(kBf16Rows, M - m0)](tp + t * tile_words, mp + t * tile_sm,
                                                        xpairs + m0 * K / 2, xsum.data() + m0 * G,
                                                        K, group_size, op + m0 * N + t * kRows, N);
    return;
#elif defined(__AVX512F__)
    if (M == 1) {
      for (int64_t t = begin; t < end; ++t)
        tile_one_row(tp + t * tile_words, mp + t * tile_sm, x.data(), xsum.data(), K, group_size,
                     op + t * kRows);
      return;
    }
#endif
    std::vector<float> w(K * kRows);
    for (int64_t t = begin; t < end; ++t) {
      expand_tile(tp + t * tile_words, K, w.data());
      for (int64_t m0 = 0; m0 < M; m0 += kBlock)
        kTileRows[std::min(kBlock, M - m0)](w.data(), mp + t * tile_sm, x.data() + m0 * K,
                                            xsum.data() + m0 * G, K, group_size,
                                            op + m0 * N + t * kRows, N);
    }
  });
  return out;
}

}  // namespace

// The namespace is a build option so tests can load the portable paths beside the native one.
#ifndef LLMLAB_OPS
#define LLMLAB_OPS llmlab
#endif

TORCH_LIBRARY(LLMLAB_OPS, m) {
  m.def("int4_matmul(Tensor x, Tensor tiles, Tensor scale_min, int group_size) -> Tensor");
}

TORCH_LIBRARY_IMPL(LLMLAB_OPS, CPU, m) { m.impl("int4_matmul", &int4_matmul); }
