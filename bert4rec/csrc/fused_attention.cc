// Fused multi-head self-attention core for CPU:
//   context = dropout(softmax((Q + bq)(K + bk)^T / sqrt(d) + padding mask [+ causal mask])) (V + bv)
//
// Why: Paddle's CPU elementwise kernels run on one thread at a few hundred M elements/s, and the
// [batch, heads, L, L] score tensor of BERT4Rec (20 M floats for batch 256, L 200, 2 heads) would go through a
// broadcast add, a softmax and a dropout, each a full pass. This op does everything for one (sequence, head)
// in cache-sized local buffers with register-blocked matrix products, on all cores, touching only real
// (unpadded) keys and queries: right-padded positions are skipped entirely, which also makes padding free.
//
// Layout: QKV is the fused projection *without* its bias, [B, L, 3*H] (q | k | v, each split into heads of
// size H/heads); Bias [3H] is added here (its gradient is the column sum of the QKV gradient). Lengths [B]
// int64 = real tokens per sequence (right padding). Out is [B, L, H], ready for the output projection.
// Nothing of size L^2 is kept for the backward pass: LSE [B, heads, L] (log-sum-exp of each score row) is
// enough to recompute the softmax exactly, which is cheaper than writing and re-reading the probabilities.
// Padded query rows produce zeros (they never reach a real position). Dropout masks come from a counter-based
// hash of (seed, sequence, head, query, key), regenerated in the backward pass, independent of padding.
// With `causal` (SASRec), query i only attends to keys j <= i: the probabilities of later keys are exactly 0, so
// nothing from position t+1 on ever reaches position t.
#include "common.h"
#include "paddle/extension.h"

namespace {

using b4r::Gemm;
using b4r::RoundUp8;

constexpr uint64_t kSalt = 0xa77e;

struct Dims {
  int64_t batch, length, hidden, heads, head_dim;
};

Dims GetDims(const paddle::Tensor& qkv, const paddle::Tensor& bias, int64_t heads) {
  auto s = qkv.shape();
  PD_CHECK(s.size() == 3, "fused_attention: QKV must be [B, L, 3H]");
  PD_CHECK(heads > 0 && s[2] % 3 == 0 && (s[2] / 3) % heads == 0, "fused_attention: 3H must split into heads");
  PD_CHECK(bias.numel() == s[2], "fused_attention: Bias must have 3H elements");
  return {s[0], s[1], s[2] / 3, heads, s[2] / 3 / heads};
}

inline int64_t RealLength(const int64_t* lengths, int64_t b, int64_t length) {
  int64_t n = lengths[b];
  return n < 0 ? 0 : (n > length ? length : n);
}

// Per-thread working set of one (sequence, head): n real tokens padded to np (multiple of 8), head size
// padded to dp. Everything outside the real block is zero, so padded rows/columns contribute nothing.
struct Tile {
  int64_t np = 0, dp = 0;
  std::vector<float> qs, k, kt, v, vt;  // [np x dp] row-major, or [dp x np] for the transposed kt, vt
  std::vector<float> s, t, pd;          // [n x np]: scores/probabilities/dS, dPd/dP, dropped probabilities
  std::vector<float> go, ga, gb;        // [np x dp]: grad of the context / context, two gradient blocks
  std::vector<float> mask;              // [np]: dropout multipliers of one row

  void Resize(int64_t length, int64_t head_dim, bool backward) {
    const int64_t lp = RoundUp8(length);
    dp = RoundUp8(head_dim);
    for (auto* buf : {&qs, &k, &kt, &v, &vt, &ga}) buf->assign(lp * dp, 0.f);
    s.assign(lp * lp, 0.f);
    mask.assign(lp, 1.f);
    if (backward) {
      for (auto* buf : {&t, &pd}) buf->assign(lp * lp, 0.f);
      for (auto* buf : {&go, &gb}) buf->assign(lp * dp, 0.f);
    }
  }

  // Loads the n real rows (with bias) of one head: qs = (q + bq) * scale, k and kt = k + bk, v (and vt).
  void Load(const float* x, const float* bias, int64_t n, int64_t row, int64_t hidden, int64_t head_dim,
            float scale, bool with_vt) {
    np = RoundUp8(n);
    const float* bq = bias;
    const float* bk = bias + hidden;
    const float* bv = bias + 2 * hidden;
    std::fill(qs.begin(), qs.begin() + np * dp, 0.f);
    std::fill(k.begin(), k.begin() + np * dp, 0.f);
    std::fill(v.begin(), v.begin() + np * dp, 0.f);
    for (int64_t i = 0; i < n; ++i) {
      float* __restrict qi = qs.data() + i * dp;
      float* __restrict ki = k.data() + i * dp;
      float* __restrict vi = v.data() + i * dp;
      const float* __restrict src = x + i * row;
#pragma omp simd
      for (int64_t c = 0; c < head_dim; ++c) qi[c] = (src[c] + bq[c]) * scale;
#pragma omp simd
      for (int64_t c = 0; c < head_dim; ++c) ki[c] = src[hidden + c] + bk[c];
#pragma omp simd
      for (int64_t c = 0; c < head_dim; ++c) vi[c] = src[2 * hidden + c] + bv[c];
    }
    std::fill(kt.begin(), kt.begin() + dp * np, 0.f);
    if (with_vt) std::fill(vt.begin(), vt.begin() + dp * np, 0.f);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t c = 0; c < head_dim; ++c) {
        kt[c * np + j] = k[j * dp + c];
        if (with_vt) vt[c * np + j] = v[j * dp + c];
      }
    }
  }
};

struct Common {
  Dims d;
  const float* x;
  const float* bias;
  const int64_t* lens;
  uint64_t key;
  uint32_t threshold;
  float keep_scale, scale;
  bool causal;

  Common(const paddle::Tensor& qkv, const paddle::Tensor& bias_t, const paddle::Tensor& lengths,
         const paddle::Tensor& seed, float dropout, int num_heads, bool causal_mask)
      : d(GetDims(qkv, bias_t, num_heads)),
        x(qkv.data<float>()),
        bias(bias_t.data<float>()),
        lens(lengths.data<int64_t>()),
        key(b4r::CallKey(seed.data<int64_t>()[0], kSalt)),
        threshold(b4r::DropThreshold(dropout)),
        keep_scale(b4r::KeepScale(dropout)),
        scale(1.f / std::sqrt(static_cast<float>(d.head_dim))),
        causal(causal_mask) {
    PD_CHECK(qkv.is_cpu(), "fused_attention runs on CPU only");
    PD_CHECK(lengths.numel() == d.batch, "fused_attention: Lengths must be [B]");
  }

  // Dropout multipliers (keep_scale or 0) of query row i against keys j < n; dropout must be active.
  void Mask(float* __restrict mask, int64_t b, int64_t h, int64_t i, int64_t n) const {
    const uint32_t rk = b4r::RowKey(key, b * d.heads + h, i);
    const uint32_t thr = threshold;
    const float ks = keep_scale;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) mask[j] = b4r::DropMul(rk, static_cast<uint32_t>(j), thr, ks);
  }

  // Keys query row i may attend to: all n real ones, or the first i + 1 with the causal mask.
  int64_t Keys(int64_t i, int64_t n) const { return causal ? i + 1 : n; }
};

}  // namespace

std::vector<paddle::Tensor> FusedAttentionForward(const paddle::Tensor& qkv, const paddle::Tensor& bias,
                                                  const paddle::Tensor& lengths, const paddle::Tensor& seed,
                                                  float dropout, int num_heads, bool causal) {
  const Common cm(qkv, bias, lengths, seed, dropout, num_heads, causal);
  const Dims d = cm.d;
  auto out = paddle::empty({d.batch, d.length, d.hidden}, qkv.dtype(), qkv.place());
  auto lse = paddle::empty({d.batch, d.heads, d.length}, qkv.dtype(), qkv.place());
  float* o = out.data<float>();
  float* lse_p = lse.data<float>();
  const int64_t L = d.length, H = d.hidden, dh = d.head_dim, row = 3 * H;

#pragma omp parallel
  {
    Tile tile;
    tile.Resize(L, dh, false);
    const int64_t dp = tile.dp;
#pragma omp for schedule(monotonic : dynamic)
    for (int64_t task = 0; task < d.batch * d.heads; ++task) {
      const int64_t b = task / d.heads, h = task % d.heads;
      const int64_t n = RealLength(cm.lens, b, L);
      float* ob = o + b * L * H + h * dh;
      float* lb = lse_p + task * L;
      for (int64_t i = n; i < L; ++i) {
        std::memset(ob + i * H, 0, sizeof(float) * dh);
        lb[i] = 0.f;
      }
      if (n == 0) continue;
      tile.Load(cm.x + b * L * row + h * dh, cm.bias + h * dh, n, row, H, dh, cm.scale, false);
      const int64_t np = tile.np;
      float* s = tile.s.data();
      Gemm<false>(n, np, dp, tile.qs.data(), dp, tile.kt.data(), np, s, np);  // scores [n x np]
      float* mask = tile.mask.data();
      for (int64_t i = 0; i < n; ++i) {
        float* __restrict si = s + i * np;
        const int64_t nk = cm.Keys(i, n);
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < nk; ++j) mx = si[j] > mx ? si[j] : mx;
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < nk; ++j) {
          const float e = b4r::ExpF(si[j] - mx);
          si[j] = e;
          sum += e;
        }
        lb[i] = mx + std::log(sum);
        const float inv = 1.f / sum;
        if (cm.threshold) {
          cm.Mask(mask, b, h, i, nk);
#pragma omp simd
          for (int64_t j = 0; j < nk; ++j) si[j] *= inv * mask[j];
        } else {
#pragma omp simd
          for (int64_t j = 0; j < nk; ++j) si[j] *= inv;
        }
        std::fill(si + nk, si + n, 0.f);  // keys after i (causal): probability 0
      }
      float* ctx = tile.ga.data();
      Gemm<false>(n, dp, n, s, np, tile.v.data(), dp, ctx, dp);  // context [n x dp]
      for (int64_t i = 0; i < n; ++i) std::memcpy(ob + i * H, ctx + i * dp, sizeof(float) * dh);
    }
  }
  return {out, lse};
}

std::vector<paddle::Tensor> FusedAttentionBackward(const paddle::Tensor& qkv, const paddle::Tensor& bias,
                                                   const paddle::Tensor& lengths, const paddle::Tensor& seed,
                                                   const paddle::Tensor& lse, const paddle::Tensor& grad_out,
                                                   float dropout, int num_heads, bool causal) {
  const Common cm(qkv, bias, lengths, seed, dropout, num_heads, causal);
  const Dims d = cm.d;
  auto grad_qkv = paddle::empty(qkv.shape(), qkv.dtype(), qkv.place());
  auto grad_bias = paddle::empty({3 * d.hidden}, qkv.dtype(), qkv.place());
  const float* lse_p = lse.data<float>();
  const float* go = grad_out.data<float>();
  float* g = grad_qkv.data<float>();
  const int64_t L = d.length, H = d.hidden, dh = d.head_dim, row = 3 * H;

#pragma omp parallel
  {
    Tile tile;
    tile.Resize(L, dh, true);
    const int64_t dp = tile.dp;
#pragma omp for schedule(monotonic : dynamic)
    for (int64_t task = 0; task < d.batch * d.heads; ++task) {
      const int64_t b = task / d.heads, h = task % d.heads;
      const int64_t n = RealLength(cm.lens, b, L);
      float* gq = g + b * L * row + h * dh;
      float* gk = gq + H;
      float* gv = gq + 2 * H;
      for (int64_t i = n; i < L; ++i) {
        std::memset(gq + i * row, 0, sizeof(float) * dh);
        std::memset(gk + i * row, 0, sizeof(float) * dh);
        std::memset(gv + i * row, 0, sizeof(float) * dh);
      }
      if (n == 0) continue;
      tile.Load(cm.x + b * L * row + h * dh, cm.bias + h * dh, n, row, H, dh, cm.scale, true);
      const int64_t np = tile.np;
      const float* lb = lse_p + task * L;
      const float* gob = go + b * L * H + h * dh;
      float* dO = tile.go.data();
      for (int64_t i = 0; i < np; ++i) {
        float* di = dO + i * dp;
        if (i < n) {
          std::memcpy(di, gob + i * H, sizeof(float) * dh);
          std::fill(di + dh, di + dp, 0.f);
        } else {
          std::fill(di, di + dp, 0.f);
        }
      }
      float* p = tile.s.data();  // scores, probabilities, then dS (columns < n only)
      float* t = tile.t.data();  // dPd, then dP
      Gemm<false>(n, np, dp, tile.qs.data(), dp, tile.kt.data(), np, p, np);  // scores
      Gemm<false>(n, np, dp, dO, dp, tile.vt.data(), np, t, np);             // dPd = dO V^T
      float* pd = tile.pd.data();
      float* mask = tile.mask.data();
      for (int64_t i = 0; i < n; ++i) {  // P = exp(S - lse), Pd = P * mask, dP = dPd * mask, dS = P (dP - <P, dP>)
        float* __restrict pi = p + i * np;
        float* __restrict ti = t + i * np;
        float* __restrict pdi = pd + i * np;
        const float m = lb[i];
        const int64_t nk = cm.Keys(i, n);
        float dot = 0.f;
        if (cm.threshold) {
          cm.Mask(mask, b, h, i, nk);
#pragma omp simd reduction(+ : dot)
          for (int64_t j = 0; j < nk; ++j) {
            const float e = b4r::ExpF(pi[j] - m);
            const float dpj = ti[j] * mask[j];
            pi[j] = e;
            pdi[j] = e * mask[j];
            ti[j] = dpj;
            dot += e * dpj;
          }
        } else {
#pragma omp simd reduction(+ : dot)
          for (int64_t j = 0; j < nk; ++j) {
            const float e = b4r::ExpF(pi[j] - m);
            pi[j] = e;
            pdi[j] = e;
            dot += e * ti[j];
          }
        }
#pragma omp simd
        for (int64_t j = 0; j < nk; ++j) pi[j] = pi[j] * (ti[j] - dot);
        std::fill(pi + nk, pi + n, 0.f);  // causal: no probability, no gradient after i
        std::fill(pdi + nk, pdi + n, 0.f);
      }
      float* ga = tile.ga.data();
      float* gb = tile.gb.data();
      Gemm<true>(n, dp, n, pd, np, dO, dp, gb, dp);                  // dV = Pd^T dO
      Gemm<false>(n, dp, n, p, np, tile.k.data(), dp, ga, dp);       // dQs = dS K
      for (int64_t i = 0; i < n; ++i) {
        const float* __restrict src = ga + i * dp;
        float* __restrict dst = gq + i * row;
#pragma omp simd
        for (int64_t c = 0; c < dh; ++c) dst[c] = src[c] * cm.scale;
        std::memcpy(gv + i * row, gb + i * dp, sizeof(float) * dh);
      }
      Gemm<true>(n, dp, n, p, np, tile.qs.data(), dp, ga, dp);       // dK = dS^T Qs
      for (int64_t j = 0; j < n; ++j) std::memcpy(gk + j * row, ga + j * dp, sizeof(float) * dh);
    }
  }
  b4r::ColumnSums(g, d.batch * L, row, row, grad_bias.data<float>());
  return {grad_qkv, grad_bias};
}

std::vector<std::vector<int64_t>> FusedAttentionInferShape(const std::vector<int64_t>& qkv,
                                                           const std::vector<int64_t>& bias,
                                                           const std::vector<int64_t>& lengths,
                                                           const std::vector<int64_t>& seed, float dropout,
                                                           int num_heads, bool causal) {
  return {{qkv[0], qkv[1], qkv[2] / 3}, {qkv[0], num_heads, qkv[1]}};
}

std::vector<paddle::DataType> FusedAttentionInferDtype(const paddle::DataType& qkv, const paddle::DataType& bias,
                                                       const paddle::DataType& lengths,
                                                       const paddle::DataType& seed) {
  return {qkv, qkv};
}

PD_BUILD_OP(bert4rec_fused_attention)
    .Inputs({"QKV", "Bias", "Lengths", "Seed"})
    .Outputs({"Out", "LSE"})
    .Attrs({"dropout: float", "num_heads: int", "causal: bool"})
    .SetKernelFn(PD_KERNEL(FusedAttentionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(FusedAttentionInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FusedAttentionInferDtype));

PD_BUILD_GRAD_OP(bert4rec_fused_attention)
    .Inputs({"QKV", "Bias", "Lengths", "Seed", "LSE", paddle::Grad("Out")})
    .Outputs({paddle::Grad("QKV"), paddle::Grad("Bias")})
    .Attrs({"dropout: float", "num_heads: int", "causal: bool"})
    .SetKernelFn(PD_KERNEL(FusedAttentionBackward));
