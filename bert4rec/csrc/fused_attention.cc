// Fused multi-head self-attention core for CPU: softmax(Q K^T / sqrt(d) + padding mask), dropout, times V.
//
// Why: Paddle's CPU elementwise kernels run on one thread at a few hundred M elements/s, and the
// [batch, heads, L, L] score tensor of BERT4Rec (20 M floats for batch 256, L 200, 2 heads) goes through a
// broadcast add, a softmax and a dropout, each a full pass (the dropout's random numbers alone ~0.3 s).
// This op does all of it in one pass per (sequence, head), on all cores, touching only real (unpadded) keys
// and queries: right-padded positions are skipped entirely, which also makes padding free.
//
// Layout: QKV is the fused projection output [B, L, 3*H] (q | k | v, each split into heads of size H/heads),
// Lengths [B] int64 = number of real tokens per sequence (right padding). Out is [B, L, H], ready for the
// output projection; P [B, heads, L, L] keeps the softmax (before dropout) for the backward pass. Padded query
// rows produce zeros (they never reach a real position). Dropout masks come from a counter-based hash of
// (Seed, position), so the backward pass regenerates them instead of storing them, and a run is reproducible.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "paddle/extension.h"

namespace {

inline uint32_t mix32(uint32_t x) {  // murmur3 finaliser: good enough avalanche for dropout masks
  x ^= x >> 16;
  x *= 0x85ebca6bu;
  x ^= x >> 13;
  x *= 0xc2b2ae35u;
  x ^= x >> 16;
  return x;
}

struct Dims {
  int64_t batch, length, hidden, heads, head_dim;
};

Dims GetDims(const paddle::Tensor& qkv, int64_t heads) {
  auto s = qkv.shape();
  PD_CHECK(s.size() == 3, "fused_attention: QKV must be [B, L, 3H]");
  PD_CHECK(s[2] % 3 == 0 && (s[2] / 3) % heads == 0, "fused_attention: 3H must split into heads");
  return {s[0], s[1], s[2] / 3, heads, s[2] / 3 / heads};
}

inline int64_t RealLength(const int64_t* lengths, int64_t b, int64_t length) {
  int64_t n = lengths[b];
  return n < 0 ? 0 : (n > length ? length : n);
}

// Keep-mask for element (task, i, j): hash of a per-call key and the element's counter.
inline bool Keep(uint32_t key, int64_t counter, uint32_t threshold) {
  return mix32(static_cast<uint32_t>(counter) * 0x9e3779b9u + key) >= threshold;
}

}  // namespace

std::vector<paddle::Tensor> FusedAttentionForward(const paddle::Tensor& qkv, const paddle::Tensor& lengths,
                                                  const paddle::Tensor& seed, float dropout, int num_heads) {
  PD_CHECK(qkv.is_cpu(), "fused_attention runs on CPU only");
  const Dims d = GetDims(qkv, num_heads);
  auto out = paddle::empty({d.batch, d.length, d.hidden}, qkv.dtype(), qkv.place());
  auto probs = paddle::empty({d.batch, d.heads, d.length, d.length}, qkv.dtype(), qkv.place());
  const float* x = qkv.data<float>();
  const int64_t* lens = lengths.data<int64_t>();
  const uint32_t key = mix32(static_cast<uint32_t>(seed.data<int64_t>()[0]) ^ 0x2545f491u);
  const uint32_t threshold = static_cast<uint32_t>(static_cast<double>(dropout) * 4294967296.0);
  const float keep_scale = dropout > 0.f ? 1.f / (1.f - dropout) : 1.f;
  const float scale = 1.f / std::sqrt(static_cast<float>(d.head_dim));
  float* o = out.data<float>();
  float* p = probs.data<float>();
  const int64_t L = d.length, H = d.hidden, dh = d.head_dim, row = 3 * H;

#pragma omp parallel for schedule(dynamic)
  for (int64_t task = 0; task < d.batch * d.heads; ++task) {
    const int64_t b = task / d.heads, h = task % d.heads;
    const int64_t n = RealLength(lens, b, L);
    const float* q = x + b * L * row + h * dh;
    const float* k = q + H;
    const float* v = q + 2 * H;
    float* ob = o + b * L * H + h * dh;
    float* pb = p + task * L * L;
    for (int64_t i = 0; i < L; ++i) {
      float* prow = pb + i * L;
      float* orow = ob + i * H;
      std::memset(orow, 0, sizeof(float) * dh);
      if (i >= n) {
        std::memset(prow, 0, sizeof(float) * L);
        continue;
      }
      const float* qi = q + i * row;
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        const float* kj = k + j * row;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < dh; ++c) s += qi[c] * kj[c];
        s *= scale;
        prow[j] = s;
        mx = s > mx ? s : mx;
      }
      float sum = 0.f;
      for (int64_t j = 0; j < n; ++j) {
        const float e = std::exp(prow[j] - mx);
        prow[j] = e;
        sum += e;
      }
      const float inv = 1.f / sum;
      for (int64_t j = 0; j < n; ++j) prow[j] *= inv;
      for (int64_t j = n; j < L; ++j) prow[j] = 0.f;
      const int64_t base = (task * L + i) * L;
      for (int64_t j = 0; j < n; ++j) {
        float w = prow[j];
        if (threshold) w = Keep(key, base + j, threshold) ? w * keep_scale : 0.f;
        if (w == 0.f) continue;
        const float* vj = v + j * row;
#pragma omp simd
        for (int64_t c = 0; c < dh; ++c) orow[c] += w * vj[c];
      }
    }
  }
  return {out, probs};
}

std::vector<paddle::Tensor> FusedAttentionBackward(const paddle::Tensor& qkv, const paddle::Tensor& lengths,
                                                   const paddle::Tensor& seed, const paddle::Tensor& probs,
                                                   const paddle::Tensor& grad_out, float dropout, int num_heads) {
  const Dims d = GetDims(qkv, num_heads);
  auto grad_qkv = paddle::empty(qkv.shape(), qkv.dtype(), qkv.place());
  const float* x = qkv.data<float>();
  const int64_t* lens = lengths.data<int64_t>();
  const uint32_t key = mix32(static_cast<uint32_t>(seed.data<int64_t>()[0]) ^ 0x2545f491u);
  const uint32_t threshold = static_cast<uint32_t>(static_cast<double>(dropout) * 4294967296.0);
  const float keep_scale = dropout > 0.f ? 1.f / (1.f - dropout) : 1.f;
  const float scale = 1.f / std::sqrt(static_cast<float>(d.head_dim));
  const float* p = probs.data<float>();
  const float* go = grad_out.data<float>();
  float* g = grad_qkv.data<float>();
  const int64_t L = d.length, H = d.hidden, dh = d.head_dim, row = 3 * H;

#pragma omp parallel
  {
    std::vector<float> dp(L);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < d.batch * d.heads; ++task) {
      const int64_t b = task / d.heads, h = task % d.heads;
      const int64_t n = RealLength(lens, b, L);
      const float* q = x + b * L * row + h * dh;
      const float* k = q + H;
      const float* v = q + 2 * H;
      float* gq = g + b * L * row + h * dh;
      float* gk = gq + H;
      float* gv = gq + 2 * H;
      const float* gob = go + b * L * H + h * dh;
      const float* pb = p + task * L * L;
      for (int64_t i = 0; i < L; ++i) {
        std::memset(gq + i * row, 0, sizeof(float) * dh);
        std::memset(gk + i * row, 0, sizeof(float) * dh);
        std::memset(gv + i * row, 0, sizeof(float) * dh);
      }
      for (int64_t i = 0; i < n; ++i) {
        const float* prow = pb + i * L;
        const float* goi = gob + i * H;
        const float* qi = q + i * row;
        float* gqi = gq + i * row;
        const int64_t base = (task * L + i) * L;
        float dot_pdp = 0.f;
        for (int64_t j = 0; j < n; ++j) {
          float m = 1.f;
          if (threshold) m = Keep(key, base + j, threshold) ? keep_scale : 0.f;
          float s = 0.f;
          if (m != 0.f) {
            const float* vj = v + j * row;
            float* gvj = gv + j * row;
            const float w = prow[j] * m;
#pragma omp simd reduction(+ : s)
            for (int64_t c = 0; c < dh; ++c) {
              s += goi[c] * vj[c];
              gvj[c] += w * goi[c];
            }
          }
          dp[j] = s * m;
          dot_pdp += prow[j] * dp[j];
        }
        for (int64_t j = 0; j < n; ++j) {
          const float ds = prow[j] * (dp[j] - dot_pdp) * scale;
          if (ds == 0.f) continue;
          const float* kj = k + j * row;
          float* gkj = gk + j * row;
#pragma omp simd
          for (int64_t c = 0; c < dh; ++c) {
            gqi[c] += ds * kj[c];
            gkj[c] += ds * qi[c];
          }
        }
      }
    }
  }
  return {grad_qkv};
}

std::vector<std::vector<int64_t>> FusedAttentionInferShape(const std::vector<int64_t>& qkv,
                                                           const std::vector<int64_t>& lengths,
                                                           const std::vector<int64_t>& seed, float dropout,
                                                           int num_heads) {
  return {{qkv[0], qkv[1], qkv[2] / 3}, {qkv[0], num_heads, qkv[1], qkv[1]}};
}

std::vector<paddle::DataType> FusedAttentionInferDtype(const paddle::DataType& qkv, const paddle::DataType& lengths,
                                                       const paddle::DataType& seed) {
  return {qkv, qkv};
}

PD_BUILD_OP(bert4rec_fused_attention)
    .Inputs({"QKV", "Lengths", "Seed"})
    .Outputs({"Out", "P"})
    .Attrs({"dropout: float", "num_heads: int"})
    .SetKernelFn(PD_KERNEL(FusedAttentionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(FusedAttentionInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FusedAttentionInferDtype));

PD_BUILD_GRAD_OP(bert4rec_fused_attention)
    .Inputs({"QKV", "Lengths", "Seed", "P", paddle::Grad("Out")})
    .Outputs({paddle::Grad("QKV")})
    .Attrs({"dropout: float", "num_heads: int"})
    .SetKernelFn(PD_KERNEL(FusedAttentionBackward));
