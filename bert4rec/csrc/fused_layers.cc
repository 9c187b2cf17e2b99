// Fused elementwise/row kernels of the BERT4Rec layers for CPU (the matrix products stay in Paddle/MKL):
//
//   bias_act                      y = act(x + b)                                   (FFN input, dense + gelu)
//   bias_act_layernorm            y = LayerNorm(act(x + b))                        (output head transform)
//   bias_dropout_residual_layernorm
//                                 y = LayerNorm(residual + dropout(x + b))         (end of each sub-layer)
//   embedding_layernorm_dropout   y = dropout(LayerNorm(tok + pos[l]))             (input embeddings)
//   bias_softmax_cross_entropy    loss_n = logsumexp(z_n + b) - (z_n + b)[label_n] (output layer loss)
//
// Why: Paddle's CPU elementwise kernels (adds, broadcast adds and their column-sum gradients, dropout,
// LayerNorm, gelu) are single-threaded and make one memory pass per op; here each group is one pass forward
// and one backward, on all cores. Dropout masks are a counter-based hash of (seed, sequence, position,
// column), regenerated in the backward pass (nothing stored) and independent of batch padding. Parameter
// gradients (biases, gamma, beta, positions) are reduced in a fixed order: bitwise reproducible. Rows are
// handed out to threads dynamically (a busy core does not hold the others up); which thread computes a row
// or chunk never changes its result.
// LayerNorm: biased variance, y = (v - mean) / sqrt(var + eps) * gamma + beta, as paddle.nn.LayerNorm.
#include "common.h"
#include "paddle/extension.h"

namespace {

using b4r::Chunks;

constexpr uint64_t kSaltResidual = 0xd201;
constexpr uint64_t kSaltEmbedding = 0xe3b0;

// Row layout of a [B, L, H] (or [R, H]) tensor: rows, row size, and L to recover (sequence, position).
struct Rows {
  int64_t rows, width, length;
};

Rows RowsOf(const paddle::Tensor& x, bool need_3d, const char* op) {
  const auto s = x.shape();
  PD_CHECK(x.is_cpu(), op, ": CPU tensors only");
  PD_CHECK(!s.empty(), op, ": input must have at least one dimension");
  if (need_3d) PD_CHECK(s.size() == 3, op, ": input must be [B, L, H]");
  const int64_t width = s.back();
  const int64_t rows = width ? x.numel() / width : 0;
  return {rows, width, s.size() == 3 ? s[1] : rows};
}

void CheckVector(const paddle::Tensor& t, int64_t n, const char* op, const char* name) {
  PD_CHECK(t.numel() == n, op, ": ", name, " must have ", n, " elements");
}

// xhat = (v - mean(v)) * rstd; returns rstd = 1 / sqrt(var(v) + eps).
inline float NormalizeRow(const float* v, float* xhat, int64_t n, float eps) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < n; ++c) sum += v[c];
  const float mean = sum / static_cast<float>(n);
  float sq = 0.f;
#pragma omp simd reduction(+ : sq)
  for (int64_t c = 0; c < n; ++c) sq += (v[c] - mean) * (v[c] - mean);
  const float rstd = 1.f / std::sqrt(sq / static_cast<float>(n) + eps);
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) xhat[c] = (v[c] - mean) * rstd;
  return rstd;
}

// Given dz = dLoss/dy for one row of y = xhat * gamma + beta, the gradient w.r.t. the LayerNorm input v:
// dv = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dz * gamma.
// Accumulates dgamma += dz * xhat and dbeta += dz into the chunk's partial rows.
inline void LayerNormGradRow(const float* dz, const float* xhat, const float* gamma, float rstd, float* dv,
                             float* pgamma, float* pbeta, int64_t n) {
  float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t c = 0; c < n; ++c) {
    const float g = dz[c] * gamma[c];
    s1 += g;
    s2 += g * xhat[c];
  }
  const float inv_n = 1.f / static_cast<float>(n);
  const float m1 = s1 * inv_n, m2 = s2 * inv_n;
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    dv[c] = rstd * (dz[c] * gamma[c] - m1 - xhat[c] * m2);
    pgamma[c] += dz[c] * xhat[c];
    pbeta[c] += dz[c];
  }
}

inline void AffineRow(const float* xhat, const float* gamma, const float* beta, float* y, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) y[c] = xhat[c] * gamma[c] + beta[c];
}

inline void DropRow(float* row, uint32_t row_key, uint32_t threshold, float scale, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) row[c] *= b4r::DropMul(row_key, static_cast<uint32_t>(c), threshold, scale);
}

paddle::Tensor Like(const paddle::Tensor& x) { return paddle::empty(x.shape(), x.dtype(), x.place()); }

paddle::Tensor Vec(int64_t n, const paddle::Tensor& like) { return paddle::empty({n}, like.dtype(), like.place()); }

paddle::Tensor RowVec(const paddle::Tensor& x) {
  auto s = x.shape();
  s.pop_back();
  return paddle::empty(s, x.dtype(), x.place());
}

}  // namespace

// ------------------------------------------------------------------------------------------------ bias_act

std::vector<paddle::Tensor> BiasActForward(const paddle::Tensor& x, const paddle::Tensor& bias, int act) {
  const Rows r = RowsOf(x, false, "bias_act");
  CheckVector(bias, r.width, "bias_act", "B");
  auto y = Like(x);
  const float* xp = x.data<float>();
  const float* bp = bias.data<float>();
  float* yp = y.data<float>();
#pragma omp parallel for schedule(monotonic : dynamic, 32)
  for (int64_t i = 0; i < r.rows; ++i) b4r::ActRow(act, xp + i * r.width, bp, yp + i * r.width, r.width);
  return {y};
}

std::vector<paddle::Tensor> BiasActBackward(const paddle::Tensor& x, const paddle::Tensor& bias,
                                            const paddle::Tensor& grad_y, int act) {
  const Rows r = RowsOf(x, false, "bias_act");
  auto dx = Like(x);
  auto db = Vec(r.width, x);
  const float* xp = x.data<float>();
  const float* bp = bias.data<float>();
  const float* gy = grad_y.data<float>();
  float* gx = dx.data<float>();
  const Chunks ch(r.rows);
  std::vector<float> partial(ch.count * r.width);
#pragma omp parallel for schedule(monotonic : dynamic)
  for (int64_t k = 0; k < ch.count; ++k) {
    float* p = partial.data() + k * r.width;
    std::fill(p, p + r.width, 0.f);
    for (int64_t i = ch.begin(k); i < ch.end(k); ++i) {
      float* gxi = gx + i * r.width;
      b4r::ActGradRow(act, xp + i * r.width, bp, gy + i * r.width, gxi, r.width);
#pragma omp simd
      for (int64_t c = 0; c < r.width; ++c) p[c] += gxi[c];
    }
  }
  b4r::ReduceChunks(partial.data(), ch.count, r.width, db.data<float>());
  return {dx, db};
}

std::vector<std::vector<int64_t>> BiasActInferShape(const std::vector<int64_t>& x, const std::vector<int64_t>& b,
                                                    int act) {
  return {x};
}

std::vector<paddle::DataType> BiasActInferDtype(const paddle::DataType& x, const paddle::DataType& b) { return {x}; }

PD_BUILD_OP(bert4rec_bias_act)
    .Inputs({"X", "B"})
    .Outputs({"Y"})
    .Attrs({"act: int"})
    .SetKernelFn(PD_KERNEL(BiasActForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BiasActInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BiasActInferDtype));

PD_BUILD_GRAD_OP(bert4rec_bias_act)
    .Inputs({"X", "B", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("B")})
    .Attrs({"act: int"})
    .SetKernelFn(PD_KERNEL(BiasActBackward));

// -------------------------------------------------------------------------------------- bias_act_layernorm

std::vector<paddle::Tensor> BiasActLayerNormForward(const paddle::Tensor& x, const paddle::Tensor& bias,
                                                    const paddle::Tensor& gamma, const paddle::Tensor& beta,
                                                    int act, float eps) {
  const Rows r = RowsOf(x, false, "bias_act_layernorm");
  for (auto* t : {&bias, &gamma, &beta}) CheckVector(*t, r.width, "bias_act_layernorm", "B/Gamma/Beta");
  auto y = Like(x);
  auto xhat = Like(x);
  auto rstd = RowVec(x);
  const float* xp = x.data<float>();
  const float *bp = bias.data<float>(), *gp = gamma.data<float>(), *bt = beta.data<float>();
  float *yp = y.data<float>(), *hp = xhat.data<float>(), *rp = rstd.data<float>();
#pragma omp parallel
  {
    std::vector<float> a(r.width);
#pragma omp for schedule(monotonic : dynamic, 32)
    for (int64_t i = 0; i < r.rows; ++i) {
      const int64_t o = i * r.width;
      b4r::ActRow(act, xp + o, bp, a.data(), r.width);
      rp[i] = NormalizeRow(a.data(), hp + o, r.width, eps);
      AffineRow(hp + o, gp, bt, yp + o, r.width);
    }
  }
  return {y, xhat, rstd};
}

std::vector<paddle::Tensor> BiasActLayerNormBackward(const paddle::Tensor& x, const paddle::Tensor& bias,
                                                     const paddle::Tensor& gamma, const paddle::Tensor& xhat,
                                                     const paddle::Tensor& rstd, const paddle::Tensor& grad_y,
                                                     int act, float eps) {
  const Rows r = RowsOf(x, false, "bias_act_layernorm");
  const int64_t w = r.width;
  auto dx = Like(x);
  auto db = Vec(w, x), dgamma = Vec(w, x), dbeta = Vec(w, x);
  const float *xp = x.data<float>(), *bp = bias.data<float>(), *gp = gamma.data<float>();
  const float *hp = xhat.data<float>(), *rp = rstd.data<float>(), *gy = grad_y.data<float>();
  float* gx = dx.data<float>();
  const Chunks ch(r.rows);
  std::vector<float> partial(ch.count * 3 * w);
#pragma omp parallel
  {
    std::vector<float> da(w);
#pragma omp for schedule(monotonic : dynamic)
    for (int64_t k = 0; k < ch.count; ++k) {
      float* pb = partial.data() + k * 3 * w;  // db | dgamma | dbeta
      std::fill(pb, pb + 3 * w, 0.f);
      for (int64_t i = ch.begin(k); i < ch.end(k); ++i) {
        const int64_t o = i * w;
        LayerNormGradRow(gy + o, hp + o, gp, rp[i], da.data(), pb + w, pb + 2 * w, w);
        b4r::ActGradRow(act, xp + o, bp, da.data(), gx + o, w);
#pragma omp simd
        for (int64_t c = 0; c < w; ++c) pb[c] += gx[o + c];
      }
    }
  }
  std::vector<float> sums(3 * w);
  b4r::ReduceChunks(partial.data(), ch.count, 3 * w, sums.data());
  std::memcpy(db.data<float>(), sums.data(), sizeof(float) * w);
  std::memcpy(dgamma.data<float>(), sums.data() + w, sizeof(float) * w);
  std::memcpy(dbeta.data<float>(), sums.data() + 2 * w, sizeof(float) * w);
  return {dx, db, dgamma, dbeta};
}

std::vector<std::vector<int64_t>> LayerNormOutShapes(const std::vector<int64_t>& x) {
  std::vector<int64_t> rows(x.begin(), x.end() - 1);
  return {x, x, rows};
}

std::vector<std::vector<int64_t>> BiasActLayerNormInferShape(const std::vector<int64_t>& x,
                                                             const std::vector<int64_t>& b,
                                                             const std::vector<int64_t>& g,
                                                             const std::vector<int64_t>& beta, int act, float eps) {
  return LayerNormOutShapes(x);
}

std::vector<paddle::DataType> FourInputDtype(const paddle::DataType& x, const paddle::DataType& b,
                                             const paddle::DataType& g, const paddle::DataType& beta) {
  return {x, x, x};
}

PD_BUILD_OP(bert4rec_bias_act_layernorm)
    .Inputs({"X", "B", "Gamma", "Beta"})
    .Outputs({"Y", "XHat", "RStd"})
    .Attrs({"act: int", "eps: float"})
    .SetKernelFn(PD_KERNEL(BiasActLayerNormForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BiasActLayerNormInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FourInputDtype));

PD_BUILD_GRAD_OP(bert4rec_bias_act_layernorm)
    .Inputs({"X", "B", "Gamma", "XHat", "RStd", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("B"), paddle::Grad("Gamma"), paddle::Grad("Beta")})
    .Attrs({"act: int", "eps: float"})
    .SetKernelFn(PD_KERNEL(BiasActLayerNormBackward));

// ------------------------------------------------------------------------- bias_dropout_residual_layernorm

std::vector<paddle::Tensor> BiasDropoutResidualLayerNormForward(
    const paddle::Tensor& x, const paddle::Tensor& bias, const paddle::Tensor& residual, const paddle::Tensor& gamma,
    const paddle::Tensor& beta, const paddle::Tensor& seed, float dropout, float eps) {
  const char* op = "bias_dropout_residual_layernorm";
  const Rows r = RowsOf(x, true, op);
  const int64_t w = r.width;
  PD_CHECK(residual.shape() == x.shape(), op, ": Residual must have the shape of X");
  for (auto* t : {&bias, &gamma, &beta}) CheckVector(*t, w, op, "B/Gamma/Beta");
  auto y = Like(x);
  auto xhat = Like(x);
  auto rstd = RowVec(x);
  const float *xp = x.data<float>(), *bp = bias.data<float>(), *rs = residual.data<float>();
  const float *gp = gamma.data<float>(), *bt = beta.data<float>();
  float *yp = y.data<float>(), *hp = xhat.data<float>(), *rp = rstd.data<float>();
  const uint64_t key = b4r::CallKey(seed.data<int64_t>()[0], kSaltResidual);
  const uint32_t thr = b4r::DropThreshold(dropout);
  const float ks = b4r::KeepScale(dropout);
#pragma omp parallel
  {
    std::vector<float> v(w);
#pragma omp for schedule(monotonic : dynamic, 32)
    for (int64_t i = 0; i < r.rows; ++i) {
      const int64_t o = i * w;
#pragma omp simd
      for (int64_t c = 0; c < w; ++c) v[c] = xp[o + c] + bp[c];
      if (thr) DropRow(v.data(), b4r::RowKey(key, i / r.length, i % r.length), thr, ks, w);
#pragma omp simd
      for (int64_t c = 0; c < w; ++c) v[c] += rs[o + c];
      rp[i] = NormalizeRow(v.data(), hp + o, w, eps);
      AffineRow(hp + o, gp, bt, yp + o, w);
    }
  }
  return {y, xhat, rstd};
}

std::vector<paddle::Tensor> BiasDropoutResidualLayerNormBackward(
    const paddle::Tensor& seed, const paddle::Tensor& gamma, const paddle::Tensor& xhat, const paddle::Tensor& rstd,
    const paddle::Tensor& grad_y, float dropout, float eps) {
  const Rows r = RowsOf(xhat, true, "bias_dropout_residual_layernorm");
  const int64_t w = r.width;
  auto dx = Like(xhat), dres = Like(xhat);
  auto db = Vec(w, xhat), dgamma = Vec(w, xhat), dbeta = Vec(w, xhat);
  const float *gp = gamma.data<float>(), *hp = xhat.data<float>(), *rp = rstd.data<float>();
  const float* gy = grad_y.data<float>();
  float *gx = dx.data<float>(), *gr = dres.data<float>();
  const uint64_t key = b4r::CallKey(seed.data<int64_t>()[0], kSaltResidual);
  const uint32_t thr = b4r::DropThreshold(dropout);
  const float ks = b4r::KeepScale(dropout);
  const Chunks ch(r.rows);
  std::vector<float> partial(ch.count * 3 * w);
#pragma omp parallel for schedule(monotonic : dynamic)
  for (int64_t k = 0; k < ch.count; ++k) {
    float* pb = partial.data() + k * 3 * w;  // db | dgamma | dbeta
    std::fill(pb, pb + 3 * w, 0.f);
    for (int64_t i = ch.begin(k); i < ch.end(k); ++i) {
      const int64_t o = i * w;
      LayerNormGradRow(gy + o, hp + o, gp, rp[i], gr + o, pb + w, pb + 2 * w, w);
      std::memcpy(gx + o, gr + o, sizeof(float) * w);
      if (thr) DropRow(gx + o, b4r::RowKey(key, i / r.length, i % r.length), thr, ks, w);
#pragma omp simd
      for (int64_t c = 0; c < w; ++c) pb[c] += gx[o + c];
    }
  }
  std::vector<float> sums(3 * w);
  b4r::ReduceChunks(partial.data(), ch.count, 3 * w, sums.data());
  std::memcpy(db.data<float>(), sums.data(), sizeof(float) * w);
  std::memcpy(dgamma.data<float>(), sums.data() + w, sizeof(float) * w);
  std::memcpy(dbeta.data<float>(), sums.data() + 2 * w, sizeof(float) * w);
  return {dx, db, dres, dgamma, dbeta};
}

std::vector<std::vector<int64_t>> BiasDropoutResidualLayerNormInferShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& b, const std::vector<int64_t>& res,
    const std::vector<int64_t>& g, const std::vector<int64_t>& beta, const std::vector<int64_t>& seed, float dropout,
    float eps) {
  return LayerNormOutShapes(x);
}

std::vector<paddle::DataType> SixInputDtype(const paddle::DataType& x, const paddle::DataType& b,
                                            const paddle::DataType& res, const paddle::DataType& g,
                                            const paddle::DataType& beta, const paddle::DataType& seed) {
  return {x, x, x};
}

PD_BUILD_OP(bert4rec_bias_dropout_residual_layernorm)
    .Inputs({"X", "B", "Residual", "Gamma", "Beta", "Seed"})
    .Outputs({"Y", "XHat", "RStd"})
    .Attrs({"dropout: float", "eps: float"})
    .SetKernelFn(PD_KERNEL(BiasDropoutResidualLayerNormForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BiasDropoutResidualLayerNormInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SixInputDtype));

PD_BUILD_GRAD_OP(bert4rec_bias_dropout_residual_layernorm)
    .Inputs({"Seed", "Gamma", "XHat", "RStd", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("B"), paddle::Grad("Residual"), paddle::Grad("Gamma"),
              paddle::Grad("Beta")})
    .Attrs({"dropout: float", "eps: float"})
    .SetKernelFn(PD_KERNEL(BiasDropoutResidualLayerNormBackward));

// ----------------------------------------------------------------------------- embedding_layernorm_dropout

std::vector<paddle::Tensor> EmbeddingLayerNormDropoutForward(const paddle::Tensor& tok, const paddle::Tensor& pos,
                                                             const paddle::Tensor& gamma, const paddle::Tensor& beta,
                                                             const paddle::Tensor& seed, float dropout, float eps) {
  const char* op = "embedding_layernorm_dropout";
  const Rows r = RowsOf(tok, true, op);
  const int64_t w = r.width;
  const auto ps = pos.shape();
  PD_CHECK(ps.size() == 2 && ps[1] == w && ps[0] >= r.length, op, ": Pos must be [>= L, H]");
  for (auto* t : {&gamma, &beta}) CheckVector(*t, w, op, "Gamma/Beta");
  auto y = Like(tok);
  auto xhat = Like(tok);
  auto rstd = RowVec(tok);
  const float *tp = tok.data<float>(), *pp = pos.data<float>(), *gp = gamma.data<float>(), *bt = beta.data<float>();
  float *yp = y.data<float>(), *hp = xhat.data<float>(), *rp = rstd.data<float>();
  const uint64_t key = b4r::CallKey(seed.data<int64_t>()[0], kSaltEmbedding);
  const uint32_t thr = b4r::DropThreshold(dropout);
  const float ks = b4r::KeepScale(dropout);
#pragma omp parallel
  {
    std::vector<float> v(w);
#pragma omp for schedule(monotonic : dynamic, 32)
    for (int64_t i = 0; i < r.rows; ++i) {
      const int64_t o = i * w, l = i % r.length;
#pragma omp simd
      for (int64_t c = 0; c < w; ++c) v[c] = tp[o + c] + pp[l * w + c];
      rp[i] = NormalizeRow(v.data(), hp + o, w, eps);
      AffineRow(hp + o, gp, bt, yp + o, w);
      if (thr) DropRow(yp + o, b4r::RowKey(key, i / r.length, l), thr, ks, w);
    }
  }
  return {y, xhat, rstd};
}

std::vector<paddle::Tensor> EmbeddingLayerNormDropoutBackward(const paddle::Tensor& pos, const paddle::Tensor& gamma,
                                                              const paddle::Tensor& seed, const paddle::Tensor& xhat,
                                                              const paddle::Tensor& rstd,
                                                              const paddle::Tensor& grad_y, float dropout,
                                                              float eps) {
  const Rows r = RowsOf(xhat, true, "embedding_layernorm_dropout");
  const int64_t w = r.width, batch = r.length ? r.rows / r.length : 0;
  auto dtok = Like(xhat);
  auto dpos = Like(pos);
  auto dgamma = Vec(w, xhat), dbeta = Vec(w, xhat);
  const float *gp = gamma.data<float>(), *hp = xhat.data<float>(), *rp = rstd.data<float>();
  const float* gy = grad_y.data<float>();
  float *gt = dtok.data<float>(), *gpos = dpos.data<float>();
  const uint64_t key = b4r::CallKey(seed.data<int64_t>()[0], kSaltEmbedding);
  const uint32_t thr = b4r::DropThreshold(dropout);
  const float ks = b4r::KeepScale(dropout);
  const Chunks ch(r.rows);
  std::vector<float> partial(ch.count * 2 * w);
#pragma omp parallel
  {
    std::vector<float> dz(w);
#pragma omp for schedule(monotonic : dynamic)
    for (int64_t k = 0; k < ch.count; ++k) {
      float* pb = partial.data() + k * 2 * w;  // dgamma | dbeta
      std::fill(pb, pb + 2 * w, 0.f);
      for (int64_t i = ch.begin(k); i < ch.end(k); ++i) {
        const int64_t o = i * w;
        std::memcpy(dz.data(), gy + o, sizeof(float) * w);
        if (thr) DropRow(dz.data(), b4r::RowKey(key, i / r.length, i % r.length), thr, ks, w);
        LayerNormGradRow(dz.data(), hp + o, gp, rp[i], gt + o, pb, pb + w, w);
      }
    }
  }
  std::vector<float> sums(2 * w);
  b4r::ReduceChunks(partial.data(), ch.count, 2 * w, sums.data());
  std::memcpy(dgamma.data<float>(), sums.data(), sizeof(float) * w);
  std::memcpy(dbeta.data<float>(), sums.data() + w, sizeof(float) * w);
  const int64_t table_rows = pos.shape()[0];
#pragma omp parallel for schedule(monotonic : dynamic, 4)
  for (int64_t l = 0; l < table_rows; ++l) {  // dpos[l] = sum over sequences, in sequence order
    float* dst = gpos + l * w;
    std::fill(dst, dst + w, 0.f);
    if (l >= r.length) continue;
    for (int64_t b = 0; b < batch; ++b) {
      const float* src = gt + (b * r.length + l) * w;
#pragma omp simd
      for (int64_t c = 0; c < w; ++c) dst[c] += src[c];
    }
  }
  return {dtok, dpos, dgamma, dbeta};
}

std::vector<std::vector<int64_t>> EmbeddingLayerNormDropoutInferShape(
    const std::vector<int64_t>& tok, const std::vector<int64_t>& pos, const std::vector<int64_t>& g,
    const std::vector<int64_t>& beta, const std::vector<int64_t>& seed, float dropout, float eps) {
  return LayerNormOutShapes(tok);
}

std::vector<paddle::DataType> FiveInputDtype(const paddle::DataType& x, const paddle::DataType& pos,
                                             const paddle::DataType& g, const paddle::DataType& beta,
                                             const paddle::DataType& seed) {
  return {x, x, x};
}

PD_BUILD_OP(bert4rec_embedding_layernorm_dropout)
    .Inputs({"Tok", "Pos", "Gamma", "Beta", "Seed"})
    .Outputs({"Y", "XHat", "RStd"})
    .Attrs({"dropout: float", "eps: float"})
    .SetKernelFn(PD_KERNEL(EmbeddingLayerNormDropoutForward))
    .SetInferShapeFn(PD_INFER_SHAPE(EmbeddingLayerNormDropoutInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FiveInputDtype));

PD_BUILD_GRAD_OP(bert4rec_embedding_layernorm_dropout)
    .Inputs({"Pos", "Gamma", "Seed", "XHat", "RStd", paddle::Grad("Y")})
    .Outputs({paddle::Grad("Tok"), paddle::Grad("Pos"), paddle::Grad("Gamma"), paddle::Grad("Beta")})
    .Attrs({"dropout: float", "eps: float"})
    .SetKernelFn(PD_KERNEL(EmbeddingLayerNormDropoutBackward));

// ------------------------------------------------------------------------------ bias_softmax_cross_entropy

std::vector<paddle::Tensor> BiasSoftmaxCrossEntropyForward(const paddle::Tensor& logits, const paddle::Tensor& bias,
                                                           const paddle::Tensor& labels) {
  const char* op = "bias_softmax_cross_entropy";
  const auto s = logits.shape();
  PD_CHECK(logits.is_cpu() && s.size() == 2, op, ": Logits must be a CPU [N, V] tensor");
  const int64_t n = s[0], v = s[1];
  CheckVector(bias, v, op, "Bias");
  CheckVector(labels, n, op, "Labels");
  auto loss = paddle::empty({n}, logits.dtype(), logits.place());
  auto lse = paddle::empty({n}, logits.dtype(), logits.place());
  const float *zp = logits.data<float>(), *bp = bias.data<float>();
  const int64_t* lab = labels.data<int64_t>();
  float *lp = loss.data<float>(), *sp = lse.data<float>();
  bool bad_label = false;
#pragma omp parallel for schedule(monotonic : dynamic, 4) reduction(|| : bad_label)
  for (int64_t i = 0; i < n; ++i) {
    const float* z = zp + i * v;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t c = 0; c < v; ++c) mx = z[c] + bp[c] > mx ? z[c] + bp[c] : mx;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < v; ++c) sum += b4r::ExpF(z[c] + bp[c] - mx);
    sp[i] = mx + std::log(sum);
    const int64_t y = lab[i];
    if (y < 0 || y >= v) {
      bad_label = true;
      lp[i] = 0.f;
    } else {
      lp[i] = sp[i] - (z[y] + bp[y]);
    }
  }
  PD_CHECK(!bad_label, op, ": a label is outside [0, vocab)");
  return {loss, lse};
}

std::vector<paddle::Tensor> BiasSoftmaxCrossEntropyBackward(const paddle::Tensor& logits, const paddle::Tensor& bias,
                                                            const paddle::Tensor& labels, const paddle::Tensor& lse,
                                                            const paddle::Tensor& grad_loss) {
  const int64_t n = logits.shape()[0], v = logits.shape()[1];
  auto dz = Like(logits);
  auto db = Vec(v, logits);
  const float *zp = logits.data<float>(), *bp = bias.data<float>(), *sp = lse.data<float>();
  const float* gl = grad_loss.data<float>();
  const int64_t* lab = labels.data<int64_t>();
  float* gz = dz.data<float>();
  const Chunks ch(n);
  std::vector<float> partial(ch.count * v);
#pragma omp parallel for schedule(monotonic : dynamic)
  for (int64_t k = 0; k < ch.count; ++k) {
    float* pb = partial.data() + k * v;
    std::fill(pb, pb + v, 0.f);
    for (int64_t i = ch.begin(k); i < ch.end(k); ++i) {
      const float* z = zp + i * v;
      float* g = gz + i * v;
      const float m = sp[i], gi = gl[i];
#pragma omp simd
      for (int64_t c = 0; c < v; ++c) g[c] = b4r::ExpF(z[c] + bp[c] - m) * gi;
      g[lab[i]] -= gi;
#pragma omp simd
      for (int64_t c = 0; c < v; ++c) pb[c] += g[c];
    }
  }
  b4r::ReduceChunks(partial.data(), ch.count, v, db.data<float>());
  return {dz, db};
}

std::vector<std::vector<int64_t>> BiasSoftmaxCrossEntropyInferShape(const std::vector<int64_t>& logits,
                                                                    const std::vector<int64_t>& bias,
                                                                    const std::vector<int64_t>& labels) {
  return {{logits[0]}, {logits[0]}};
}

std::vector<paddle::DataType> BiasSoftmaxCrossEntropyInferDtype(const paddle::DataType& logits,
                                                                const paddle::DataType& bias,
                                                                const paddle::DataType& labels) {
  return {logits, logits};
}

PD_BUILD_OP(bert4rec_bias_softmax_cross_entropy)
    .Inputs({"Logits", "Bias", "Labels"})
    .Outputs({"Loss", "LSE"})
    .SetKernelFn(PD_KERNEL(BiasSoftmaxCrossEntropyForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BiasSoftmaxCrossEntropyInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BiasSoftmaxCrossEntropyInferDtype));

PD_BUILD_GRAD_OP(bert4rec_bias_softmax_cross_entropy)
    .Inputs({"Logits", "Bias", "Labels", "LSE", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("Logits"), paddle::Grad("Bias")})
    .SetKernelFn(PD_KERNEL(BiasSoftmaxCrossEntropyBackward));
