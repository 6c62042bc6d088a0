// Per-token int8 quantization of activations for W8A8 (one pass per row, instead of PyTorch's
// abs, amax, clamp, divide, round, add and cast, each a pass and a dispatch):
//   symmetric:  scale = max(max_k |v|, 1e-12) / 127,       code = round(v / scale) + 128
//   asymmetric: scale = max(max v − min v, 1e-12) / 255,   code = round((v − min v) / scale),
//               low = min v + 128 · scale
// with v = x / divisor (SmoothQuant) when a divisor is given, codes uint8 (oneDNN's u8 × s8 GEMM
// takes them with zero point 128). The same float operations in the same order as
// W8A8Linear.quantize_input, so the codes and scales are bit for bit the same (round half to
// even, as torch.round); tests/test_native_kernels.py checks that.
//
// Registered as torch.ops.llmlab.quantize_rows(x, divisor, asymmetric) -> (codes, scale, low),
// built with int4_matmul.cpp (nn/native.py); `low` is empty when symmetric.

namespace {

// min, max and max |·| of v[0..K): exact in any order, so vectorized.
void row_range(const float* v, int64_t K, float& lo, float& hi, float& amax) {
  int64_t k = 0;
  lo = v[0];
  hi = v[0];
#if defined(__AVX512F__)
  if (K >= 16) {
    __m512 vlo = _mm512_loadu_ps(v), vhi = vlo;
    for (k = 16; k + 16 <= K; k += 16) {
      const __m512 x = _mm512_loadu_ps(v + k);
      vlo = _mm512_min_ps(vlo, x);
      vhi = _mm512_max_ps(vhi, x);
    }
    lo = _mm512_reduce_min_ps(vlo);
    hi = _mm512_reduce_max_ps(vhi);
  }
#endif
  for (; k < K; ++k) {
    lo = std::min(lo, v[k]);
    hi = std::max(hi, v[k]);
  }
  amax = std::max(std::fabs(lo), std::fabs(hi));
}

// out[k] = round((v[k] − shift) / scale) + add, as uint8 (the caller's grid keeps it in 0…255).
void encode(const float* v, int64_t K, float shift, float scale, float add, uint8_t* out) {
  int64_t k = 0;
#if defined(__AVX512F__)
  const __m512 vs = _mm512_set1_ps(scale), vshift = _mm512_set1_ps(shift), vadd = _mm512_set1_ps(add);
  for (; k + 16 <= K; k += 16) {
    const __m512 q = _mm512_roundscale_ps(
        _mm512_div_ps(_mm512_sub_ps(_mm512_loadu_ps(v + k), vshift), vs),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k),
                     _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(_mm512_add_ps(q, vadd))));
  }
#endif
  for (; k < K; ++k) out[k] = static_cast<uint8_t>(std::nearbyint((v[k] - shift) / scale) + add);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x_in,
                                                              const c10::optional<at::Tensor>& divisor,
                                                              bool asymmetric) {
  TORCH_CHECK(x_in.dim() == 2, "quantize_rows: x must be [M, K]");
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t M = x.size(0), K = x.size(1);
  const float* d = nullptr;
  at::Tensor dc;
  if (divisor.has_value()) {
    dc = divisor->to(at::kFloat).contiguous();
    TORCH_CHECK(dc.numel() == K, "quantize_rows: the divisor has ", dc.numel(), " entries for ", K,
                " inputs");
    d = dc.data_ptr<float>();
  }
  at::Tensor codes = at::empty({M, K}, x.options().dtype(at::kByte));
  at::Tensor scale = at::empty({M, 1}, x.options());
  at::Tensor low = at::empty({asymmetric ? M : 0, 1}, x.options());
  const float* xp = x.data_ptr<float>();
  uint8_t* cp = codes.data_ptr<uint8_t>();
  float* sp = scale.data_ptr<float>();
  float* lp = asymmetric ? low.data_ptr<float>() : nullptr;
  at::parallel_for(0, M, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> v(K);
    for (int64_t m = begin; m < end; ++m) {
      const float* row = xp + m * K;
      if (d) {
        for (int64_t k = 0; k < K; ++k) v[k] = row[k] / d[k];
      } else {
        std::copy(row, row + K, v.begin());
      }
      uint8_t* out = cp + m * K;
      if (asymmetric) {
        float lo, hi, amax;
        row_range(v.data(), K, lo, hi, amax);
        const float s = std::max(hi - lo, 1e-12f) / 255.0f;
        encode(v.data(), K, lo, s, 0.0f, out);
        sp[m] = s;
        lp[m] = lo + 128.0f * s;
      } else {
        float lo, hi, amax;
        row_range(v.data(), K, lo, hi, amax);
        const float s = std::max(amax, 1e-12f) / 127.0f;
        encode(v.data(), K, 0.0f, s, 128.0f, out);
        sp[m] = s;
      }
    }
  });
  return {codes, scale, low};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(LLMLAB_OPS, m) {
  m.def("quantize_rows(Tensor x, Tensor? divisor, bool asymmetric) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(LLMLAB_OPS, CPU, m) { m.impl("quantize_rows", &quantize_rows); }
