// One decoder layer for one token of one sequence (single-stream decode), with int4 or W8A8
// projections, in one call — what ModelRunner does for such a step, op by op. Llama (2 norms):
//   h = rms_norm(x) · n_in;  qkv = P_qkv(h);  rotate q, k by (cos, sin);  cache[slot] = k, v
//   a = softmax(q · Kᵀ · scale) · V over the context's slots (grouped-query: no K/V copies)
//   x += P_o(a);  h = rms_norm(x) · n_post;  g, u = P_gate_up(h);  x += P_down(silu(g) · u)
// Gemma 3 (6 norms, weights already 1 + w): q and k also RMS-normed per head (n_q, n_k) before
// rotary; x += rms_norm(P_o(a)) · n_post_attn; h = rms_norm(x) · n_pre_ffn;
// x += rms_norm(P_down(gelu_tanh(g) · u)) · n_post_ffn — and its sliding-window layers are
// given only the window's slots as their context.
// Why: at one token, a decode step's norms, rotary, cache write, attention and activations are
// microseconds of arithmetic each, but as separate PyTorch ops (or torch.compile's generated
// loops called from its Python wrapper) they cost dispatch, allocation and guard time that adds up
// to about as much as the quantized products themselves; here each layer is one dispatch.
//
// The projections are the packed layers' (engine/packed_weights.py): q/k rows in rotary-pair
// order, so rotation is a complex multiply of adjacent pairs; k then v are one cache row
// [2 · kv_heads, head_dim]. A projection P is int4 (its input rounded to bfloat16, as the Python
// path's x.to(bfloat16), then int4_matmul) or dynamic per-token W8A8 (quantize_rows, then
// w8a8_matmul on the VNNI-packed weight: W8A8Linear._vnni_matmul's calls); rms_norm, geglu_span
// and those kernels are the functions above in this translation unit (native.py builds csrc/ as
// one source), so only the rotary, attention and SiLU roundings can differ from the op-by-op step.
//
// Registered as torch.ops.llmlab.decode_layer(...), built with the other csrc/ files.

namespace {

// x [1, K] float32 → bfloat16 copy (round to nearest even, as Tensor.to does).
at::Tensor to_bf16(const at::Tensor& x) {
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kBFloat16));
  const float* src = x.data_ptr<float>();
  at::BFloat16* dst = out.data_ptr<at::BFloat16>();
  for (int64_t i = 0; i < x.numel(); ++i) dst[i] = at::BFloat16(src[i]);
  return out;
}

void add_into(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

// Σ a[d] b[d] with independent partial sums (a single running sum is one long dependency chain,
// which the compiler may not reorder into vectors).
float dot(const float* a, const float* b, int64_t n) {
  int64_t d = 0;
  float s = 0.0f;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (; d + 16 <= n; d += 16)
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), acc);
  s = _mm512_reduce_add_ps(acc);
#endif
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
}

// out[i] = silu(g[i]) · u[i] = g[i] / (1 + exp(−g[i])) · u[i]  (exp512: csrc/geglu.cpp)
void silu_mul(const float* g, const float* u, float* out, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(g + i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), x));
    const __m512 gate = _mm512_div_ps(x, _mm512_add_ps(one, e));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(gate, _mm512_loadu_ps(u + i)));
  }
#endif
  for (; i < n; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

// One projection: kind 0 int4 (weights: tiles, scale_min; option: group size), kind 1 dynamic
// per-token W8A8 (weights: VNNI-packed weight, compensation, weight scale, weight sums, smoothing
// divisor — the last two empty when unused; option: 1 for asymmetric activations).
struct Projection {
  int64_t kind;
  const at::Tensor* w;
  int64_t option;

  at::Tensor operator()(const at::Tensor& x) const {
    if (kind == 0) return int4_matmul(to_bf16(x), w[0], w[1], option);
    const bool asymmetric = option != 0;
    const c10::optional<at::Tensor> divisor =
        w[4].numel() ? c10::optional<at::Tensor>(w[4]) : c10::nullopt;
    auto [codes, scale, low] = quantize_rows(x, divisor, asymmetric);
    return w8a8_matmul(codes, w[0], w[1], w[2], scale.reshape({-1}),
                       asymmetric ? c10::optional<at::Tensor>(low) : c10::nullopt,
                       asymmetric ? c10::optional<at::Tensor>(w[3]) : c10::nullopt);
  }
};

constexpr int64_t kWeightsOf[2] = {2, 5};  // tensors per projection, by kind

void decode_layer(const at::Tensor& x, const at::Tensor& cache, at::TensorList norms,
                  double eps, at::TensorList weights,
                  at::IntArrayRef kinds, at::IntArrayRef options, const at::Tensor& cos,
                  const at::Tensor& sin, int64_t slot, const at::Tensor& context, int64_t heads,
                  int64_t kv_heads, double scale) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.size(0) == 1 && x.is_contiguous(),
              "decode_layer: x must be one contiguous float32 row [1, hidden]");
  TORCH_CHECK(kinds.size() == 4 && options.size() == 4,
              "decode_layer: four projections (qkv, o, gate_up, down)");
  TORCH_CHECK(norms.size() == 2 || norms.size() == 6,
              "decode_layer: 2 norms (Llama) or 6 (Gemma 3), got ", norms.size());
  const bool gemma = norms.size() == 6;
  std::vector<Projection> proj;
  int64_t used = 0;
  for (int i = 0; i < 4; ++i) {
    TORCH_CHECK(kinds[i] == 0 || kinds[i] == 1, "decode_layer: projection kind ", kinds[i],
                " (0 int4, 1 W8A8)");
    TORCH_CHECK(used + kWeightsOf[kinds[i]] <= static_cast<int64_t>(weights.size()),
                "decode_layer: too few weight tensors for the projections' kinds");
    proj.push_back({kinds[i], weights.data() + used, options[i]});
    used += kWeightsOf[kinds[i]];
  }
  TORCH_CHECK(used == static_cast<int64_t>(weights.size()),
              "decode_layer: more weight tensors than the projections' kinds take");
  TORCH_CHECK(cache.scalar_type() == at::kFloat && cache.is_contiguous() && cache.dim() == 3 &&
                  cache.size(1) == 2 * kv_heads,
              "decode_layer: cache must be contiguous float32 [slots, 2·kv_heads, head_dim]");
  TORCH_CHECK(context.scalar_type() == at::kLong && context.is_contiguous() &&
                  context.dim() == 1 && context.numel() > 0,
              "decode_layer: context must be int64 slots [L], L ≥ 1");
  TORCH_CHECK(heads % kv_heads == 0, "decode_layer: heads must be a multiple of kv_heads");
  const int64_t D = cache.size(2), half = D / 2, row = 2 * kv_heads * D;
  const int64_t L = context.size(0), group = heads / kv_heads;
  TORCH_CHECK(slot >= 0 && slot < cache.size(0), "decode_layer: slot out of range");
  TORCH_CHECK(cos.numel() == half && sin.numel() == half && cos.scalar_type() == at::kFloat &&
                  sin.scalar_type() == at::kFloat,
              "decode_layer: cos and sin must be float32 [head_dim / 2]");
  const int64_t* ctx = context.data_ptr<int64_t>();
  for (int64_t j = 0; j < L; ++j)
    TORCH_CHECK(ctx[j] >= 0 && ctx[j] < cache.size(0), "decode_layer: context slot ",
                ctx[j], " out of range");
  float* xp = x.data_ptr<float>();
  const int64_t H = x.size(1);

  // attention block
  at::Tensor qkv = proj[0](rms_norm(x, norms[0], eps));
  TORCH_CHECK(qkv.size(1) == (heads + 2 * kv_heads) * D,
              "decode_layer: the qkv projection has ", qkv.size(1), " outputs");
  float* q = qkv.data_ptr<float>();
  if (gemma)  // QK-norm: each head's q (then k) over its head_dim
    for (int i = 0; i < 2; ++i) {
      const int64_t first = i == 0 ? 0 : heads, count = i == 0 ? heads : kv_heads;
      const at::Tensor normed = rms_norm(qkv.narrow(1, first * D, count * D).view({count, D}),
                                         norms[1 + i], eps);
      std::copy(normed.data_ptr<float>(), normed.data_ptr<float>() + count * D, q + first * D);
    }
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  for (int64_t h = 0; h < heads + kv_heads; ++h)
    for (int64_t i = 0; i < half; ++i) {
      float* pair = q + h * D + 2 * i;
      const float a = pair[0], b = pair[1];
      pair[0] = a * cp[i] - b * sp[i];
      pair[1] = a * sp[i] + b * cp[i];
    }
  float* kv = cache.data_ptr<float>();
  std::copy(q + heads * D, q + (heads + 2 * kv_heads) * D, kv + slot * row);

  at::Tensor attn = at::empty({1, heads * D}, x.options());
  float* ap = attn.data_ptr<float>();
  const float scalef = static_cast<float>(scale);
  at::parallel_for(0, heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> score(L);
    for (int64_t h = begin; h < end; ++h) {
      const float* qh = q + h * D;
      const int64_t g = h / group;
      float top = -INFINITY;
      for (int64_t j = 0; j < L; ++j) {
        score[j] = dot(qh, kv + ctx[j] * row + g * D, D) * scalef;
        top = std::max(top, score[j]);
      }
      float total = 0.0f;
      for (int64_t j = 0; j < L; ++j) total += score[j] = std::exp(score[j] - top);
      float* out = ap + h * D;
      std::fill(out, out + D, 0.0f);
      for (int64_t j = 0; j < L; ++j) {
        const float* v = kv + ctx[j] * row + (kv_heads + g) * D;
        const float p = score[j] / total;
        for (int64_t d = 0; d < D; ++d) out[d] += p * v[d];
      }
    }
  });
  at::Tensor o = proj[1](attn);
  TORCH_CHECK(o.size(1) == H, "decode_layer: the o projection has ", o.size(1), " outputs");
  if (gemma) o = rms_norm(o, norms[3], eps);
  add_into(xp, o.data_ptr<float>(), H);

  // MLP block
  at::Tensor gate_up = proj[2](rms_norm(x, norms[gemma ? 4 : 1], eps));
  const int64_t inter = gate_up.size(1) / 2;
  at::Tensor act = at::empty({1, inter}, x.options());
  const float* gu = gate_up.data_ptr<float>();
  float* actp = act.data_ptr<float>();
  if (gemma)
    geglu_span(gu, gu + inter, actp, inter);
  else
    silu_mul(gu, gu + inter, actp, inter);
  at::Tensor down = proj[3](act);
  TORCH_CHECK(down.size(1) == H, "decode_layer: the down projection has ", down.size(1),
              " outputs");
  if (gemma) down = rms_norm(down, norms[5], eps);
  add_into(xp, down.data_ptr<float>(), H);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(LLMLAB_OPS, m) {
  m.def(
      "decode_layer(Tensor(a!) x, Tensor(b!) cache, Tensor[] norms, float eps, "
      "Tensor[] weights, int[] kinds, int[] options, Tensor cos, Tensor sin, int slot, "
      "Tensor context, int heads, int kv_heads, float scale) -> ()");
}

TORCH_LIBRARY_IMPL(LLMLAB_OPS, CPU, m) { m.impl("decode_layer", &decode_layer); }
