// RMSNorm over the last dimension in one pass per row, for the engine's eager decode steps:
//   y = x · rsqrt(mean(x²) + eps) · weight          (float32, weight already 1 + w for Gemma)
// PyTorch's CPU rms_norm is a composite (pow, mean, add, rsqrt, mul, mul: six dispatches and six
// passes), which on a decode step's [16, 640] rows costs more in dispatch than in arithmetic.
// The same operations in the same order, except that the sum of squares is accumulated in its
// own order (so results can differ from PyTorch's by float rounding).
//
// Registered as torch.ops.llmlab.rms_norm(x, weight, eps), built with the other csrc/ files.

namespace {

at::Tensor rms_norm(const at::Tensor& x_in, const at::Tensor& weight_in, double eps) {
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && weight_in.scalar_type() == at::kFloat,
              "rms_norm: x and weight must be float32");
  const int64_t D = x_in.size(-1);
  TORCH_CHECK(weight_in.numel() == D, "rms_norm: weight has ", weight_in.numel(),
              " entries for rows of ", D);
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous();
  at::Tensor out = at::empty_like(x);
  const int64_t rows = x.numel() / D;
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float epsf = static_cast<float>(eps);
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xp + r * D;
      float sum = 0.0f;
      int64_t k = 0;
#if defined(__AVX512F__)
      __m512 acc = _mm512_setzero_ps();
      for (; k + 16 <= D; k += 16) {
        const __m512 v = _mm512_loadu_ps(row + k);
        acc = _mm512_fmadd_ps(v, v, acc);
      }
      sum = _mm512_reduce_add_ps(acc);
#endif
      for (; k < D; ++k) sum += row[k] * row[k];
      const float inv = 1.0f / std::sqrt(sum / static_cast<float>(D) + epsf);
      float* o = op + r * D;
      for (k = 0; k < D; ++k) o[k] = row[k] * inv * wp[k];
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(LLMLAB_OPS, m) { m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor"); }

TORCH_LIBRARY_IMPL(LLMLAB_OPS, CPU, m) { m.impl("rms_norm", &rms_norm); }
