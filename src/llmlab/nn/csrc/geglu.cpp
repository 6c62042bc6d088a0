// GeGLU's gate in one pass: out = gelu_tanh(gate) · up, for the engine's eager float32 steps
// (Gemma 3's MLP; PyTorch needs a gelu and a multiply, two passes and two dispatches).
//   gelu_tanh(x) = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))) = x · sigmoid(2√(2/π) (x + 0.044715 x³))
// With AVX-512, exp is evaluated as 2^n · p(r) (n = round(t / ln 2), r = t − n ln 2 in two parts, p a
// degree-6 Taylor polynomial: relative error ~1e-7, as float32's rounding); results can differ from
// PyTorch's by a few units in the last place.
//
// Registered as torch.ops.llmlab.gelu_tanh_mul(gate, up), built with the other csrc/ files.

namespace {

#if defined(__AVX512F__)
inline __m512 exp512(__m512 t) {
  t = _mm512_max_ps(_mm512_min_ps(t, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), t);  // ln 2, high part
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);      // ln 2, low part
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}
#endif

constexpr float kScale = 1.5957691216057308f;  // 2·√(2/π)
constexpr float kCubic = 0.044715f;

// out[i] = gelu_tanh(g[i]) · u[i] for i in [0, n)
void geglu_span(const float* g, const float* u, float* o, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(g + i);
    const __m512 inner = _mm512_mul_ps(
        _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(x, x), x), _mm512_set1_ps(kCubic), x),
        _mm512_set1_ps(-kScale));
    const __m512 sigmoid = _mm512_div_ps(one, _mm512_add_ps(one, exp512(inner)));
    _mm512_storeu_ps(o + i, _mm512_mul_ps(_mm512_mul_ps(x, sigmoid), _mm512_loadu_ps(u + i)));
  }
#endif
  for (; i < n; ++i) {
    const float x = g[i];
    o[i] = x / (1.0f + std::exp(-kScale * (x + kCubic * x * x * x))) * u[i];
  }
}

// gate and up [T, D] float32 with unit stride along D (e.g. the two halves of one gate_up matrix)
at::Tensor gelu_tanh_mul(const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(gate.scalar_type() == at::kFloat && up.scalar_type() == at::kFloat,
              "gelu_tanh_mul: gate and up must be float32");
  TORCH_CHECK(gate.dim() == 2 && gate.sizes() == up.sizes(),
              "gelu_tanh_mul: gate and up must be [T, D] of one shape");
  TORCH_CHECK(gate.stride(1) == 1 && up.stride(1) == 1,
              "gelu_tanh_mul: rows must be contiguous");
  const int64_t rows = gate.size(0), D = gate.size(1);
  at::Tensor out = at::empty({rows, D}, gate.options());
  const float* g = gate.data_ptr<float>();
  const float* u = up.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t gs = gate.stride(0), us = up.stride(0);
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t r = begin; r < end; ++r)
                       geglu_span(g + r * gs, u + r * us, o + r * D, D);
                   });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(LLMLAB_OPS, m) { m.def("gelu_tanh_mul(Tensor gate, Tensor up) -> Tensor"); }

TORCH_LIBRARY_IMPL(LLMLAB_OPS, CPU, m) { m.impl("gelu_tanh_mul", &gelu_tanh_mul); }
