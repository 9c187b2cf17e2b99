// Shared helpers of the bert4rec CPU kernels (plain C++, no Paddle headers): dropout hashing, a vectorisable exp, activations, a small
// register-blocked GEMM for the attention tiles, and deterministic column sums.
//
// Everything is written so that GCC vectorises it with -O3 -march=native (GCC vector extensions, no
// intrinsics), and every reduction has a fixed order that depends only on the tensor shapes: results are
// bitwise identical run to run, whatever the number of threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace b4r {

// ---------------------------------------------------------------------------------------------------------
// Dropout masks: a counter-based hash, so the backward pass regenerates the forward mask instead of storing
// it. Keys are derived per row from (seed, sequence, position): the mask of a token does not depend on how
// much padding its batch has, so a padded batch drops exactly the same units as the unpadded one.

inline uint32_t Mix32(uint32_t x) {  // murmur3 finaliser
  x ^= x >> 16;
  x *= 0x85ebca6bu;
  x ^= x >> 13;
  x *= 0xc2b2ae35u;
  x ^= x >> 16;
  return x;
}

inline uint64_t Mix64(uint64_t z) {  // splitmix64 finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Per-call key: the seed (drawn from Paddle's RNG) and an op-specific salt.
inline uint64_t CallKey(int64_t seed, uint64_t salt) {
  return Mix64(static_cast<uint64_t>(seed) ^ (salt * 0x9e3779b97f4a7c15ull));
}

// Per-row key from the call key and two row coordinates (e.g. sequence and position).
inline uint32_t RowKey(uint64_t key, uint64_t a, uint64_t b) {
  return static_cast<uint32_t>(Mix64(key + Mix64(a + Mix64(b + 0x632be59bd9b4e019ull))));
}

// Element j of a row is kept when its hash is >= threshold = p * 2^32 (so P(keep) = 1 - p up to 2^-32).
inline uint32_t DropThreshold(float p) {
  return p > 0.f ? static_cast<uint32_t>(std::min(static_cast<double>(p) * 4294967296.0, 4294967295.0)) : 0u;
}

inline float KeepScale(float p) { return p > 0.f ? 1.f / (1.f - p) : 1.f; }

// Multiplier of element j: scale if kept, 0 if dropped (vectorisable: integer multiply, shifts, compare).
inline float DropMul(uint32_t row_key, uint32_t j, uint32_t threshold, float scale) {
  return Mix32(row_key + j * 0x9e3779b9u) >= threshold ? scale : 0.f;
}

// ---------------------------------------------------------------------------------------------------------
// exp(x) for float, ~1 ulp (Cephes polynomial), written so that loops calling it vectorise (needs
// -fno-trapping-math for the clamps). Inputs below -87.3 give ~1e-38 instead of 0, above 88.3 ~2e38.

inline float ExpF(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float shifted = x * 1.44269504088896341f + 12582912.f;  // + 1.5 * 2^23 rounds to an integer n
  const float n = shifted - 12582912.f;
  int32_t k;
  std::memcpy(&k, &shifted, sizeof(float));
  k -= 0x4b400000;  // the bits of 12582912.f: k = n as an integer
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (k + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(float));
  return p * two_n;
}

// ---------------------------------------------------------------------------------------------------------
// Activations (the model config's hidden_act): 0 = gelu (tanh approximation, BERT), 1 = exact gelu, 2 = relu,
// 3 = swish (x sigmoid(x)), 4 = tanh, 5 = sigmoid (RecBole's choices).

enum Act { kGeluTanh = 0, kGeluExact = 1, kRelu = 2, kSwish = 3, kTanh = 4, kSigmoid = 5 };

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluC = 0.044715f;

// tanh(x) for float: the rational approximation of Eigen's fast tanh (|error| < 1e-6, one division),
// about 3x faster here than going through exp; exactly +-1 beyond |x| > 7.9.
inline float TanhF(float x) {
  constexpr float kClamp = 7.90531110763549805f;
  x = x < -kClamp ? -kClamp : x;
  x = x > kClamp ? kClamp : x;
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p * x / q;
}

// gelu_tanh(u) = 0.5 u (1 + tanh(z)), z = sqrt(2/pi) (u + 0.044715 u^3).
inline float GeluTanh(float u) { return 0.5f * u * (1.f + TanhF(kSqrt2OverPi * (u + kGeluC * u * u * u))); }

inline float GeluTanhGrad(float u) {
  const float t = TanhF(kSqrt2OverPi * (u + kGeluC * u * u * u));
  return 0.5f * (1.f + t) + 0.5f * u * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kGeluC * u * u);
}

inline float GeluExact(float u) { return 0.5f * u * (1.f + std::erf(u * 0.7071067811865476f)); }

inline float GeluExactGrad(float u) {
  return 0.5f * (1.f + std::erf(u * 0.7071067811865476f)) + u * 0.3989422804014327f * std::exp(-0.5f * u * u);
}

inline float SigmoidF(float u) { return 1.f / (1.f + ExpF(-u)); }

// y = act(u) and dy/du for the activations without a fast path of their own.
inline float OtherAct(int act, float u) {
  if (act == kSwish) return u * SigmoidF(u);
  if (act == kTanh) return TanhF(u);
  return SigmoidF(u);  // kSigmoid
}

inline float OtherActGrad(int act, float u) {
  if (act == kSwish) {
    const float s = SigmoidF(u);
    return s * (1.f + u * (1.f - s));
  }
  if (act == kTanh) {
    const float t = TanhF(u);
    return 1.f - t * t;
  }
  const float s = SigmoidF(u);
  return s * (1.f - s);
}

// y[c] = act(x[c] + b[c]) for one row.
inline void ActRow(int act, const float* x, const float* b, float* y, int64_t n) {
  if (act == kGeluTanh) {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) y[c] = GeluTanh(x[c] + b[c]);
  } else if (act == kGeluExact) {
    for (int64_t c = 0; c < n; ++c) y[c] = GeluExact(x[c] + b[c]);
  } else if (act != kRelu) {
    for (int64_t c = 0; c < n; ++c) y[c] = OtherAct(act, x[c] + b[c]);
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) y[c] = x[c] + b[c] > 0.f ? x[c] + b[c] : 0.f;
  }
}

// g[c] = dy[c] * act'(x[c] + b[c]) for one row.
inline void ActGradRow(int act, const float* x, const float* b, const float* dy, float* g, int64_t n) {
  if (act == kGeluTanh) {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) g[c] = dy[c] * GeluTanhGrad(x[c] + b[c]);
  } else if (act == kGeluExact) {
    for (int64_t c = 0; c < n; ++c) g[c] = dy[c] * GeluExactGrad(x[c] + b[c]);
  } else if (act != kRelu) {
    for (int64_t c = 0; c < n; ++c) g[c] = dy[c] * OtherActGrad(act, x[c] + b[c]);
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) g[c] = x[c] + b[c] > 0.f ? dy[c] : 0.f;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Deterministic column sums over rows: rows are cut into chunks whose size depends only on the row count;
// each chunk is summed in row order into its own partial row, then the partials are added in chunk order.

struct Chunks {
  int64_t rows, size, count;
  explicit Chunks(int64_t r) : rows(r), size(std::max<int64_t>(16, (r + 255) / 256)), count((r + size - 1) / size) {}
  int64_t begin(int64_t c) const { return c * size; }
  int64_t end(int64_t c) const { return std::min(rows, (c + 1) * size); }
};

// out[n] = sum over chunks of partial[chunk * n_cols + n], in chunk order.
inline void ReduceChunks(const float* partial, int64_t count, int64_t n_cols, float* out) {
  constexpr int64_t kBlock = 64;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < n_cols; c0 += kBlock) {
    const int64_t c1 = std::min(n_cols, c0 + kBlock);
    for (int64_t c = c0; c < c1; ++c) out[c] = 0.f;
    for (int64_t k = 0; k < count; ++k) {
      const float* p = partial + k * n_cols;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) out[c] += p[c];
    }
  }
}

// out[n] = sum_r g[r * ld + n] for n < n_cols (deterministic, parallel).
inline void ColumnSums(const float* g, int64_t rows, int64_t n_cols, int64_t ld, float* out) {
  const Chunks ch(rows);
  std::vector<float> partial(ch.count * n_cols);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < ch.count; ++k) {
    float* p = partial.data() + k * n_cols;
    std::fill(p, p + n_cols, 0.f);
    for (int64_t r = ch.begin(k); r < ch.end(k); ++r) {
      const float* gr = g + r * ld;
#pragma omp simd
      for (int64_t c = 0; c < n_cols; ++c) p[c] += gr[c];
    }
  }
  ReduceChunks(partial.data(), ch.count, n_cols, out);
}

// ---------------------------------------------------------------------------------------------------------
// Small GEMM for the attention tiles: C[M x N] (+)= op(A) B, B row-major [K x N] with N a multiple of 8,
// op(A) = A [M x K] (lda) or, with TransA, A stored as [K x M]. Register tiles of 6 rows x 16 columns.

typedef float V8 __attribute__((vector_size(32)));
typedef float V8u __attribute__((vector_size(32), aligned(4)));

inline V8 Load8(const float* p) { return *reinterpret_cast<const V8u*>(p); }
inline void Store8(float* p, V8 v) { *reinterpret_cast<V8u*>(p) = v; }
inline V8 Splat8(float s) { return V8{s, s, s, s, s, s, s, s}; }

template <int MR, int NV, bool TransA>
inline void GemmTile(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                     bool accumulate) {
  V8 acc[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = accumulate ? Load8(C + m * ldc + 8 * v) : V8{};
  for (int64_t k = 0; k < K; ++k) {
    V8 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = Load8(B + k * ldb + 8 * v);
    for (int m = 0; m < MR; ++m) {
      const V8 a = Splat8(TransA ? A[k * lda + m] : A[m * lda + k]);
      for (int v = 0; v < NV; ++v) acc[m][v] += a * b[v];
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) Store8(C + m * ldc + 8 * v, acc[m][v]);
}

template <int NV, bool TransA>
inline void GemmColumnBlock(int64_t M, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                            int64_t ldc, bool accumulate) {
  int64_t m = 0;
  for (; m + 6 <= M; m += 6) {
    const float* a = TransA ? A + m : A + m * lda;
    GemmTile<6, NV, TransA>(K, a, lda, B, ldb, C + m * ldc, ldc, accumulate);
  }
  const float* a = TransA ? A + m : A + m * lda;
  float* c = C + m * ldc;
  switch (M - m) {
    case 5: GemmTile<5, NV, TransA>(K, a, lda, B, ldb, c, ldc, accumulate); break;
    case 4: GemmTile<4, NV, TransA>(K, a, lda, B, ldb, c, ldc, accumulate); break;
    case 3: GemmTile<3, NV, TransA>(K, a, lda, B, ldb, c, ldc, accumulate); break;
    case 2: GemmTile<2, NV, TransA>(K, a, lda, B, ldb, c, ldc, accumulate); break;
    case 1: GemmTile<1, NV, TransA>(K, a, lda, B, ldb, c, ldc, accumulate); break;
    default: break;
  }
}

template <bool TransA>
inline void Gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                 int64_t ldc, bool accumulate = false) {
  int64_t n = 0;
  for (; n + 16 <= N; n += 16) GemmColumnBlock<2, TransA>(M, K, A, lda, B + n, ldb, C + n, ldc, accumulate);
  if (n < N) GemmColumnBlock<1, TransA>(M, K, A, lda, B + n, ldb, C + n, ldc, accumulate);  // N % 8 == 0
}

inline int64_t RoundUp8(int64_t x) { return (x + 7) / 8 * 8; }

}  // namespace b4r
