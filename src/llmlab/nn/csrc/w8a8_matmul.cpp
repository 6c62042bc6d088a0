// W8A8 on the CPU with the epilogue fused: uint8 activation codes (zero point 128, as
// quantize_rows makes them) × int8 weights, int32 sums, then in the same pass
//   y[m, n] = float(Σ_k codes[m, k] · w[n, k] − 128 · Σ_k w[n, k]) · weight_scale[n] · scale[m]
//             (+ low[m] · weight_sums[n] when the activations are asymmetric, one fused multiply-add)
// — the float operations of W8A8Linear's oneDNN path in its order (weight scale, then the token's,
// then the offset as torch's addr_ adds it), so both give the same numbers bit for bit.
//
// Built on first use by llmlab/nn/native.py and registered as
// torch.ops.llmlab.w8a8_matmul(codes, packed, compensation, weight_scale, scale, low, weight_sums)
// and, for activations with one grid per G inputs of a token, w8a8_matmul_grouped (below).
//
// Layout (made by native.pack_w8a8): packed int8 [N/16, K/4, 16, 4] — for 16 output rows, the
// weights of four consecutive inputs side by side, the operand order of AVX512-VNNI's vpdpbusd
// (u8 × s8, four products summed into each int32 lane). compensation int32 [N] = 128 · Σ_k w[n, k].
//
// Why not oneDNN's prepacked GEMM (the other W8A8 path): at a decode step's 1–16 rows it is
// slower than this simple loop (bench/quant.py --kernels measures both), and the per-token scale
// and the asymmetric offset are separate passes over its output. Here each 16-row weight tile is read
// once per call and stays in cache while every block of up to 16 activation rows streams over it
// (one zmm accumulator per row, the four inputs of a step broadcast from the row).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kTile = 16;       // output rows per tile
constexpr int64_t kPrefetch = 1024;  // bytes ahead of the weight load (past a tile's end: the next)

struct Epilogue {
  const int32_t* compensation;
  const float* weight_scale;
  const float* scale;        // [M]
  const float* low;          // [M] or nullptr
  const float* weight_sums;  // [N] or nullptr
};

struct GroupedEpilogue {
  const int32_t* group_sums;  // [K/G, N]: Σ_{k∈g} w[n, k]
  const float* weight_scale;  // [N]
  const float* scale;         // [M, K/G]
  const float* low;           // [M, K/G] or nullptr
};

#if defined(__AVX512F__) && defined(__AVX512VNNI__)

// acc[r] = Σ_{k0 ≤ k < k1} x[r, k] · w[n0 + lane, k] for MR activation rows x (stride K) and the
// tile's 16 outputs, four inputs per vpdpbusd.
template <int MR>
inline void dot_rows(__m512i* acc, const uint8_t* x, int64_t K, const int8_t* tile, int64_t k0,
                     int64_t k1) {
  for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_si512();
  for (int64_t k = k0; k < k1; k += 4) {
    // the weights stream from memory once (a large LM head): ask for them a few lines ahead
    _mm_prefetch(reinterpret_cast<const char*>(tile + k * kTile) + kPrefetch, _MM_HINT_T0);
    const __m512i w = _mm512_loadu_si512(tile + k * kTile);
    for (int r = 0; r < MR; ++r) {
      int32_t four;
      std::memcpy(&four, x + r * K + k, 4);
      acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(four), w);
    }
  }
}

// Rows m0…m0+MR of the output for tile t: MR accumulators over the tile's K/4 steps.
template <int MR>
void tile_rows(const uint8_t* codes, int64_t K, const int8_t* tile, int64_t n0, int64_t m0,
               const Epilogue& e, float* out, int64_t N) {
  __m512i acc[MR];
  dot_rows<MR>(acc, codes + m0 * K, K, tile, 0, K);
  const __m512i comp = _mm512_loadu_si512(e.compensation + n0);
  const __m512 wscale = _mm512_loadu_ps(e.weight_scale + n0);
  const __m512 wsums = e.low ? _mm512_loadu_ps(e.weight_sums + n0) : _mm512_setzero_ps();
  for (int r = 0; r < MR; ++r) {
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r], comp)), wscale);
    y = _mm512_mul_ps(y, _mm512_set1_ps(e.scale[m0 + r]));
    if (e.low) y = _mm512_fmadd_ps(_mm512_set1_ps(e.low[m0 + r]), wsums, y);
    _mm512_storeu_ps(out + (m0 + r) * N + n0, y);
  }
}

void one_tile(const uint8_t* codes, int64_t M, int64_t K, const int8_t* tile, int64_t n0,
              const Epilogue& e, float* out, int64_t N) {
  int64_t m = 0;
  for (; m + 16 <= M; m += 16) tile_rows<16>(codes, K, tile, n0, m, e, out, N);
  if (M - m >= 8) tile_rows<8>(codes, K, tile, n0, m, e, out, N), m += 8;
  if (M - m >= 4) tile_rows<4>(codes, K, tile, n0, m, e, out, N), m += 4;
  if (M - m >= 2) tile_rows<2>(codes, K, tile, n0, m, e, out, N), m += 2;
  if (M - m >= 1) tile_rows<1>(codes, K, tile, n0, m, e, out, N);
}

// Activation groups of G inputs (W8A8Linear's input_group_size): each group's int32 sums are
// scaled by their own (token, group) scale and, asymmetric, offset by low[m, g] · Σ_{k∈g} w, into
// float accumulators; the weight scale last. Eight rows at a time: int and float accumulators.
template <int MR>
void grouped_rows(const uint8_t* codes, int64_t K, int64_t G, const int8_t* tile, int64_t n0,
                  int64_t m0, const GroupedEpilogue& e, float* out, int64_t N) {
  const int64_t groups = K / G;
  __m512 y[MR];
  for (int r = 0; r < MR; ++r) y[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512i acc[MR];
    dot_rows<MR>(acc, codes + m0 * K, K, tile, g * G, (g + 1) * G);
    const __m512i sums = _mm512_loadu_si512(e.group_sums + g * N + n0);
    const __m512i comp = _mm512_slli_epi32(sums, 7);  // 128 · Σ_{k∈g} w
    const __m512 fsums = _mm512_cvtepi32_ps(sums);
    for (int r = 0; r < MR; ++r) {
      const int64_t mg = (m0 + r) * groups + g;
      const __m512 part = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r], comp));
      y[r] = _mm512_fmadd_ps(part, _mm512_set1_ps(e.scale[mg]), y[r]);
      if (e.low) y[r] = _mm512_fmadd_ps(_mm512_set1_ps(e.low[mg]), fsums, y[r]);
    }
  }
  const __m512 wscale = _mm512_loadu_ps(e.weight_scale + n0);
  for (int r = 0; r < MR; ++r) _mm512_storeu_ps(out + (m0 + r) * N + n0, _mm512_mul_ps(y[r], wscale));
}

void grouped_tile(const uint8_t* codes, int64_t M, int64_t K, int64_t G, const int8_t* tile,
                  int64_t n0, const GroupedEpilogue& e, float* out, int64_t N) {
  int64_t m = 0;
  for (; m + 8 <= M; m += 8) grouped_rows<8>(codes, K, G, tile, n0, m, e, out, N);
  if (M - m >= 4) grouped_rows<4>(codes, K, G, tile, n0, m, e, out, N), m += 4;
  if (M - m >= 2) grouped_rows<2>(codes, K, G, tile, n0, m, e, out, N), m += 2;
  if (M - m >= 1) grouped_rows<1>(codes, K, G, tile, n0, m, e, out, N);
}

#else

// Portable: the same sums and the same float order, one output at a time.
void one_tile(const uint8_t* codes, int64_t M, int64_t K, const int8_t* tile, int64_t n0,
              const Epilogue& e, float* out, int64_t N) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t r = 0; r < kTile; ++r) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        acc += static_cast<int32_t>(codes[m * K + k]) * tile[(k / 4) * kTile * 4 + r * 4 + k % 4];
      }
      const int64_t n = n0 + r;
      float y = static_cast<float>(acc - e.compensation[n]) * e.weight_scale[n];
      y = y * e.scale[m];
      if (e.low) y = std::fma(e.low[m], e.weight_sums[n], y);
      out[m * N + n] = y;
    }
  }
}

void grouped_tile(const uint8_t* codes, int64_t M, int64_t K, int64_t G, const int8_t* tile,
                  int64_t n0, const GroupedEpilogue& e, float* out, int64_t N) {
  const int64_t groups = K / G;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t r = 0; r < kTile; ++r) {
      const int64_t n = n0 + r;
      float y = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t acc = 0;
        for (int64_t k = g * G; k < (g + 1) * G; ++k) {
          acc += static_cast<int32_t>(codes[m * K + k]) * tile[(k / 4) * kTile * 4 + r * 4 + k % 4];
        }
        const int32_t sums = e.group_sums[g * N + n];
        y = std::fma(static_cast<float>(acc - 128 * sums), e.scale[m * groups + g], y);
        if (e.low) y = std::fma(e.low[m * groups + g], static_cast<float>(sums), y);
      }
      out[m * N + n] = y * e.weight_scale[n];
    }
  }
}

#endif

at::Tensor w8a8_matmul(const at::Tensor& codes_in, const at::Tensor& packed,
                       const at::Tensor& compensation, const at::Tensor& weight_scale,
                       const at::Tensor& scale_in, const c10::optional<at::Tensor>& low_in,
                       const c10::optional<at::Tensor>& weight_sums) {
  TORCH_CHECK(codes_in.dim() == 2 && codes_in.scalar_type() == at::kByte,
              "w8a8_matmul: codes must be uint8 [M, K]");
  TORCH_CHECK(packed.dim() == 4 && packed.scalar_type() == at::kChar && packed.size(2) == kTile &&
                  packed.size(3) == 4,
              "w8a8_matmul: packed must be int8 [N/16, K/4, 16, 4] (native.pack_w8a8)");
  const at::Tensor codes = codes_in.contiguous();
  const int64_t M = codes.size(0), K = codes.size(1), tiles = packed.size(0), N = tiles * kTile;
  TORCH_CHECK(packed.size(1) * 4 == K, "w8a8_matmul: ", K, " inputs against a weight packed for ",
              packed.size(1) * 4);
  const at::Tensor comp = compensation.contiguous(), wscale = weight_scale.contiguous();
  const at::Tensor scale = scale_in.to(at::kFloat).contiguous();
  TORCH_CHECK(comp.numel() == N && wscale.numel() == N && scale.numel() == M,
              "w8a8_matmul: compensation / weight_scale / scale sizes do not match");
  at::Tensor low, sums;
  const bool asymmetric = low_in.has_value() && low_in->numel() > 0;
  if (asymmetric) {
    TORCH_CHECK(weight_sums.has_value() && weight_sums->numel() == N,
                "w8a8_matmul: asymmetric activations need weight_sums [N]");
    low = low_in->to(at::kFloat).contiguous();
    sums = weight_sums->contiguous();
  }
  at::Tensor out = at::empty({M, N}, codes.options().dtype(at::kFloat));
  const Epilogue e{comp.data_ptr<int32_t>(), wscale.data_ptr<float>(), scale.data_ptr<float>(),
                   asymmetric ? low.data_ptr<float>() : nullptr,
                   asymmetric ? sums.data_ptr<float>() : nullptr};
  const uint8_t* cp = codes.data_ptr<uint8_t>();
  const int8_t* wp = packed.data_ptr<int8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, tiles, 8, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) one_tile(cp, M, K, wp + t * K * kTile, t * kTile, e, op, N);
  });
  return out;
}

at::Tensor w8a8_matmul_grouped(const at::Tensor& codes_in, const at::Tensor& packed,
                               const at::Tensor& group_sums_in, const at::Tensor& weight_scale,
                               const at::Tensor& scale_in, const c10::optional<at::Tensor>& low_in) {
  TORCH_CHECK(codes_in.dim() == 2 && codes_in.scalar_type() == at::kByte,
              "w8a8_matmul_grouped: codes must be uint8 [M, K]");
  TORCH_CHECK(packed.dim() == 4 && packed.scalar_type() == at::kChar && packed.size(2) == kTile &&
                  packed.size(3) == 4,
              "w8a8_matmul_grouped: packed must be int8 [N/16, K/4, 16, 4] (native.pack_w8a8)");
  const at::Tensor codes = codes_in.contiguous();
  const int64_t M = codes.size(0), K = codes.size(1), N = packed.size(0) * kTile;
  const at::Tensor sums = group_sums_in.to(at::kInt).contiguous();
  TORCH_CHECK(packed.size(1) * 4 == K && sums.dim() == 2 && sums.size(1) == N && K % sums.size(0) == 0,
              "w8a8_matmul_grouped: group_sums must be int32 [K/G, N] for the packed weight");
  const int64_t groups = sums.size(0), G = K / groups;
  TORCH_CHECK(G % 4 == 0, "w8a8_matmul_grouped: the group size must be a multiple of 4, got ", G);
  const at::Tensor wscale = weight_scale.contiguous(), scale = scale_in.to(at::kFloat).contiguous();
  TORCH_CHECK(wscale.numel() == N && scale.numel() == M * groups,
              "w8a8_matmul_grouped: weight_scale must be [N] and scale [M, K/G]");
  at::Tensor low;
  const bool asymmetric = low_in.has_value() && low_in->numel() > 0;
  if (asymmetric) {
    low = low_in->to(at::kFloat).contiguous();
    TORCH_CHECK(low.numel() == M * groups, "w8a8_matmul_grouped: low must be [M, K/G]");
  }
  at::Tensor out = at::empty({M, N}, codes.options().dtype(at::kFloat));
  const GroupedEpilogue e{sums.data_ptr<int32_t>(), wscale.data_ptr<float>(), scale.data_ptr<float>(),
                          asymmetric ? low.data_ptr<float>() : nullptr};
  const uint8_t* cp = codes.data_ptr<uint8_t>();
  const int8_t* wp = packed.data_ptr<int8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, packed.size(0), 8, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) grouped_tile(cp, M, K, G, wp + t * K * kTile, t * kTile, e, op, N);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(LLMLAB_OPS, m) {
  m.def(
      "w8a8_matmul(Tensor codes, Tensor packed, Tensor compensation, Tensor weight_scale, "
      "Tensor scale, Tensor? low, Tensor? weight_sums) -> Tensor");
  m.def(
      "w8a8_matmul_grouped(Tensor codes, Tensor packed, Tensor group_sums, Tensor weight_scale, "
      "Tensor scale, Tensor? low) -> Tensor");
}

TORCH_LIBRARY_IMPL(LLMLAB_OPS, CPU, m) {
  m.impl("w8a8_matmul", &w8a8_matmul);
  m.impl("w8a8_matmul_grouped", &w8a8_matmul_grouped);
}
