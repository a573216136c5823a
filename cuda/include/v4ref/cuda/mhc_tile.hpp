// Per-thread math of the fused mHC kernels (cuda/src/mhc_kernels.cuh), written once for host and
// device; the kernels themselves run on the CPU in the SIMT executor (mhc_simt.hpp, docs/simt.md)
// (docs/cuda-mhc-compressor.md §2). v4-forward.md §4.1–§4.4, §12.
//
// What one launch computes, per token t (streams X_t [4, d] bf16, stream-major rows [T, 4d]):
//   fused mode (post of layer l, then pre of layer l+1; F = sublayer output [T, d] bf16):
//     X'_t[k] = bf16( post_k·F_t + Σ_j C[j][k]·X_t[j] )          §4.4, Cᵀ X, coefficients given
//   pre-only mode: X'_t = X_t
//   then on X' (the bf16 values, exactly what the next layer reads):
//     μ = ρ·(Fn·v),  ρ = 1/sqrt(Σv²/(4d) + norm_eps)                §4.1, one RMS over 4d
//     pre, post, Z, Sinkhorn → comb                                  §4.2, §4.3
//     u_t = bf16( Σ_k pre_k·X'_t[k] )                                §4.4 collapse
// All arithmetic is fp32 with IEEE rounding (the official kernels' fp32 math, §4, §12): products,
// sums and fmas are written out one by one (mul_rn, add_rn, fmaf) so nvcc cannot contract them
// differently from the host, and exp is our own fp32 polynomial (exp_f32), so the executor and
// the device produce the same bits.
//
// Work decomposition (the kernels and their launchers share it through Tiling):
//   batch    = 32 consecutive tokens, one per lane of a warp (fn values are warp broadcasts)
//   cluster  = S CTAs (16, or 8 where 16 cannot be scheduled); CTA `rank` owns the d/S elements
//              [rank·d/S, (rank+1)·d/S) of every stream
//   warp w   = `chunks` consecutive 8-element chunks of that range (16-byte loads per stream)
// Reduction order of the 25 sums of a token (24 mixing sums + the square sum):
//   thread : fmaf chain over its chunks in order, inside a chunk stream k outer, element e inner
//   CTA    : partials of warps 0, 1, …, W−1 added in that order
//   cluster: CTA sums of ranks 0, 1, …, S−1 added in that order (by the owner CTA of the token)
//
// Declared deviations from a literal transcription of §4.3 (both are fp32 roundings only):
// the softmax divides by the row sum through one reciprocal (e·(1/s) + eps as one fma) and each
// Sinkhorn normalisation multiplies by 1/(sum + eps). Order of the steps, eps placement and the
// iteration count are exactly §4.3.
//
// This header must stay self-contained (core headers only): the cpu test includes it without a
// CUDA toolkit. Not shared with reference/ (style.md: the op math is never shared).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/host_device.hpp"
#include "v4ref/cuda/fp32_rn.hpp"
#include "v4ref/cuda/simt/simt.hpp"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#endif

// Full unrolling where a loop indexes register arrays (nvcc would otherwise demote them to local
// memory); a no-op for the host compiler.
#if defined(__CUDACC__)
#define V4REF_MHC_UNROLL _Pragma("unroll")
#else
#define V4REF_MHC_UNROLL
#endif

namespace v4ref::cuda::mhc {

inline constexpr int kStreams = 4;  // hc_mult of V4 (the kernels are written for 4)
inline constexpr int kMix = 24;     // (2 + hc)·hc mixing logits
inline constexpr int kSums = 25;    // per token: 24 mixing sums + the square sum
inline constexpr int kSumSq = 24;   // index of the square sum
inline constexpr int kChunk = 8;    // bf16 elements per 16-byte access
inline constexpr int kBatch = 32;   // tokens per batch, one per lane
inline constexpr int kMaxCluster = 16;
inline constexpr int kMaxStreamWarps = 8;  // + the coefficient warp: 9 warps, up to 168 registers
// Coefficient rows [T, 24] fp32: pre at 0..3, post at 4..7, comb row-major at 8..23
// (C[j][k] at 8 + 4j + k). The next layer's fused launch reads post and comb from this row.
inline constexpr int kPreOff = 0, kPostOff = 4, kCombOff = 8;

// Control-flow defects the SIMT tests inject into the kernels of mhc_kernels.cuh (template
// parameter; the device build instantiates kNone only). docs/simt.md §5 lists what catches each.
enum class MhcFault : int {
  kNone = 0,
  kStagingOffsetByOne,     // fn staged one float4 further than the warp reads it
  kNoWarpSyncAfterStage,   // the stream warp reads fn without waiting for its cp.async
  kDsmemRankWrong,         // CTA sums pushed to rank (lane + 1) mod S instead of lane mod S
  kMissingClusterWait,     // the coefficient warp reads the inbox before the cluster barrier
  kPartialsNoBarrier,      // warp partials reduced without the named barrier of the stream warps
  kTailGuardMissing,       // the coefficient rows of lanes past the last token are written
  kCollapseTailOffByOne,   // the collapse writes tokens up to and including `tokens`
  kPostGridStrideBound,    // mhc_post's grid-stride loop runs to total + blockDim
  kPreDoubleBufferShared,  // pre is not double-buffered: K(b+1) overwrites what C(b) reads
  kLastClusterWaitMissing, // the stream warps exit without the final cluster wait
  kCoefWarpSyncMissing,    // the coefficient warp reads `sums` without __syncwarp
  kPackFnIndexSwap,        // mhc_pack_fn_kernel swaps stream and row in the packed layout
};

// The per-layer scalars, in fp32 as the kernel uses them.
struct Scalars {
  float scale[3] = {0, 0, 0};  // hc_*_scale
  float norm_eps = 1e-6f;      // ε of the RMS over 4d
  float hc_eps = 1e-6f;        // ε of §4.2/§4.3
  int sinkhorn_iters = 20;
};

struct Tiling {
  int d = 0;        // stream width
  int cluster = 0;  // S: CTAs per cluster, a divisor of 32
  int warps = 0;    // W: stream warps per CTA
  int chunks = 0;   // 8-element chunks per thread
  V4REF_HD int per_cta() const { return d / cluster; }
  V4REF_HD int slots() const { return kBatch / cluster; }  // tokens of a batch owned per CTA
  // First element of chunk q of warp w in CTA `rank`.
  V4REF_HD int element(int rank, int warp, int q) const {
    return rank * per_cta() + (warp * chunks + q) * kChunk;
  }
  // Longest chain of fp32 roundings in a raw mixing sum (the γ_h of the μ bound, §4 of
  // verification.md): the thread's fma chain, then W−1 and S−1 additions.
  int sum_height() const { return kStreams * kChunk * chunks + (warps - 1) + (cluster - 1); }
};

// The tiling of width d on clusters of `cluster` CTAs: W = the largest divisor of d/(8S) that is
// at most 16. ShapeError unless S divides 32 and 8S divides d.
inline Tiling make_tiling(std::int64_t d, int cluster) {
  if (cluster < 1 || cluster > kMaxCluster || kBatch % cluster != 0)
    throw ShapeError("mhc tiling: cluster size must divide 32 and be at most 16, got " +
                     std::to_string(cluster));
  if (d <= 0 || d > (std::int64_t{1} << 20) || d % (std::int64_t{8} * cluster) != 0)
    throw ShapeError("mhc tiling: stream width d must be a positive multiple of 8·cluster = " +
                     std::to_string(8 * cluster) + " (at most 2^20), got " + std::to_string(d));
  const int total = static_cast<int>(d / (8 * cluster));  // chunks per CTA
  int w = kMaxStreamWarps;
  while (total % w != 0) --w;
  return Tiling{static_cast<int>(d), cluster, w, total / w};
}

// The fp32 and bf16 rounding primitives shared by every kernel (fp32_rn.hpp).
using rn::mul_rn;
using rn::add_rn;
using rn::div_rn;
using rn::sqrt_rn;
using rn::fma_rn;
using rn::max_f;
using rn::bf16_value;
using rn::bf16_rne_bits;
using rn::to_bf16;
using rn::exp_f32;
using rn::sigmoid_f32;

// ---------------------------------------------------------------- loads

// The per-thread math reads memory through the pointer its caller holds: a raw pointer (register
// arrays, host loops) or the SIMT dialect's gptr / sptr (the kernels: the executor sees every
// access, and nvcc emits the same loads as through a raw pointer).
V4REF_HD inline float load(const float* p) { return *p; }
template <class T>
V4REF_HD float load(simt::gptr<T> p) {
  return simt::ld(p);
}
template <class T>
V4REF_HD float load(simt::sptr<T> p) {
  return simt::ld(p);
}

// ---------------------------------------------------------------- per element

// New stream k at one element: post_k·f + Σ_j C[j][k]·x_j, one product then one fma per stream
// j in ascending j (the reference's loop order, §4.4: column k of C, the transpose).
template <class P, class Q>
V4REF_HD float post_value(P post, Q comb, int k, float f, const float* x) {
  float v = mul_rn(load(post + k), f);
  for (int j = 0; j < kStreams; ++j) v = fma_rn(load(comb + 4 * j + k), x[j], v);
  return v;
}

// Collapse at one element: Σ_k pre_k·x_k, one product then three fmas, rounded to bf16.
V4REF_HD inline std::uint16_t collapse_value(const float* pre, const float* x) {
  float v = mul_rn(pre[0], x[0]);
  for (int k = 1; k < kStreams; ++k) v = fma_rn(pre[k], x[k], v);
  return to_bf16(v);
}

// ---------------------------------------------------------------- per chunk (8 elements × 4
// streams)

// The raw bits one thread loads for a chunk: 16 bytes per stream and 16 bytes of F, as bf16
// pairs (element 2p in the low half of word p: the little-endian memory order), so a chunk is
// four 32-bit registers per stream and never an array in local memory.
struct RawChunk {
  std::uint32_t x[kStreams][kChunk / 2];
  std::uint32_t f[kChunk / 2];
};

V4REF_HD inline std::uint16_t bf16_at(const std::uint32_t* w, int e) {
  return static_cast<std::uint16_t>(w[e >> 1] >> (16 * (e & 1)));
}
V4REF_HD inline std::uint32_t bf16_pair(std::uint16_t lo, std::uint16_t hi) {
  return static_cast<std::uint32_t>(lo) | (static_cast<std::uint32_t>(hi) << 16);
}

// The mixing weights in the kernels' layout ("packed fn"): one contiguous block of 4·24·8
// floats per 8-element chunk g = i/8 of the stream width, element (r, k, i) of the official
// fn [24, 4d] (fn[r][k·d + i]) at g·768 + (k·24 + r)·8 + i mod 8. A chunk's weights are then one
// base address plus compile-time offsets, and a CTA's slice is one contiguous range. Packed once
// per weight load (mhc_pack_fn_kernel).
inline constexpr int kFnBlock = kStreams * kMix * kChunk;  // 768 floats per chunk

V4REF_HD inline std::int64_t packed_fn_index(int r, int k, std::int64_t i) {
  return (i / kChunk) * kFnBlock + (k * kMix + r) * kChunk + i % kChunk;
}

// The 8 packed fn values of one (stream, row) at p: two 16-byte loads from shared memory.
template <class T>
V4REF_HD void load_fn8(simt::sptr<T> p, float w[kChunk]) {
  const simt::f32x4 a = simt::ld(simt::scast<const simt::f32x4>(p));
  const simt::f32x4 b = simt::ld(simt::scast<const simt::f32x4>(p + 4));
  w[0] = a.x;
  w[1] = a.y;
  w[2] = a.z;
  w[3] = a.w;
  w[4] = b.x;
  w[5] = b.y;
  w[6] = b.z;
  w[7] = b.w;
}

// Phase A of one chunk starting at element i0: the new streams (fused mode: returned in `out`
// as bf16 pairs; pre-only: `out` = the input bits), then their square sum and their 24 mixing
// sums accumulated into acc (stream k outer, element e inner, one fma each).
// `fnc` is the chunk's packed weight block (768 floats).
template <bool kPost, class PG, class PS>
V4REF_HD void chunk_mix(const RawChunk& in, PG post, PG comb, PS fnc,
                        std::uint32_t out[kStreams][kChunk / 2], float acc[kSums]) {
  if constexpr (kPost) {
    for (int p = 0; p < kChunk / 2; ++p) {
      std::uint16_t h[2][kStreams];
      for (int q = 0; q < 2; ++q) {
        const int e = 2 * p + q;
        float x[kStreams];
        for (int j = 0; j < kStreams; ++j) x[j] = bf16_value(bf16_at(in.x[j], e));
        const float f = bf16_value(bf16_at(in.f, e));
        for (int k = 0; k < kStreams; ++k) h[q][k] = to_bf16(post_value(post, comb, k, f, x));
      }
      for (int k = 0; k < kStreams; ++k) out[k][p] = bf16_pair(h[0][k], h[1][k]);
    }
  } else {
    for (int k = 0; k < kStreams; ++k)
      for (int p = 0; p < kChunk / 2; ++p) out[k][p] = in.x[k][p];
  }
  for (int k = 0; k < kStreams; ++k)
    for (int e = 0; e < kChunk; ++e) {
      const float v = bf16_value(bf16_at(out[k], e));
      acc[kSumSq] = fma_rn(v, v, acc[kSumSq]);
    }
  V4REF_MHC_UNROLL
  for (int k = 0; k < kStreams; ++k) {
    V4REF_MHC_UNROLL
    for (int r = 0; r < kMix; ++r) {
      float w[kChunk];
      load_fn8(fnc + (k * kMix + r) * kChunk, w);
      for (int e = 0; e < kChunk; ++e)
        acc[r] = fma_rn(bf16_value(bf16_at(out[k], e)), w[e], acc[r]);
    }
  }
}

// ---------------------------------------------------------------- per token: coefficients

V4REF_HD inline float sum4(float a, float b, float c, float d) {
  return add_rn(add_rn(a, b), add_rn(c, d));
}

// Sinkhorn–Knopp on the 4×4 logits m (row-major, in place), §4.3 order: row softmax
// (max-subtracted) + eps, one column normalisation, then (iters − 1) × (row, column).
// Row/column sums pair up as (a + b) + (c + d).
V4REF_HD inline void sinkhorn4(float m[16], int iters, float eps) {
  for (int j = 0; j < 4; ++j) {
    float* row = m + 4 * j;
    const float mx = max_f(max_f(row[0], row[1]), max_f(row[2], row[3]));
    float e[4];
    for (int k = 0; k < 4; ++k) e[k] = exp_f32(add_rn(row[k], -mx));
    const float inv = div_rn(1.0f, sum4(e[0], e[1], e[2], e[3]));
    for (int k = 0; k < 4; ++k) row[k] = fma_rn(e[k], inv, eps);
  }
  for (int it = 0; it < iters; ++it) {
    if (it > 0)
      for (int j = 0; j < 4; ++j) {
        float* row = m + 4 * j;
        const float inv = div_rn(1.0f, add_rn(sum4(row[0], row[1], row[2], row[3]), eps));
        for (int k = 0; k < 4; ++k) row[k] = mul_rn(row[k], inv);
      }
    for (int k = 0; k < 4; ++k) {
      const float inv = div_rn(1.0f, add_rn(sum4(m[k], m[4 + k], m[8 + k], m[12 + k]), eps));
      for (int j = 0; j < 4; ++j) m[4 * j + k] = mul_rn(m[4 * j + k], inv);
    }
  }
}

// From the 25 cluster-reduced sums of a token to μ and the coefficient row (§4.1–§4.3):
//   mean = Σv² / (4d), ρ = 1 / sqrt(mean + norm_eps), μ_r = raw_r·ρ
//   pre_k = σ(fma(s0, μ_k, b_k)) + hc_eps, post_k = 2·σ(fma(s1, μ_{4+k}, b_{4+k}))
//   Z = fma(s2, μ_{8+i}, b_{8+i}), comb = sinkhorn4(Z)
template <class PS, class PB>
V4REF_HD void coefficients(PS sums, int width4d, PB base, const Scalars& s, float mu[kMix],
                           float coef[kMix]) {
  const float mean = div_rn(load(sums + kSumSq), static_cast<float>(width4d));  // 4d < 2^24: exact
  const float rho = div_rn(1.0f, sqrt_rn(add_rn(mean, s.norm_eps)));
  for (int r = 0; r < kMix; ++r) mu[r] = mul_rn(load(sums + r), rho);
  for (int k = 0; k < 4; ++k) {
    coef[kPreOff + k] = add_rn(sigmoid_f32(fma_rn(s.scale[0], mu[k], load(base + k))), s.hc_eps);
    coef[kPostOff + k] =
        mul_rn(2.0f, sigmoid_f32(fma_rn(s.scale[1], mu[4 + k], load(base + 4 + k))));
  }
  float m[16];
  for (int i = 0; i < 16; ++i) m[i] = fma_rn(s.scale[2], mu[8 + i], load(base + 8 + i));
  sinkhorn4(m, s.sinkhorn_iters, s.hc_eps);
  for (int i = 0; i < 16; ++i) coef[kCombOff + i] = m[i];
}

// ---------------------------------------------------------------- a launch on host arrays

// One launch's data, host arrays (the device launch struct in mhc.hpp mirrors it); the SIMT
// executor runs the kernels on it (mhc_simt.hpp).
struct Problem {
  std::int64_t tokens = 0, d = 0;
  const std::uint16_t* x = nullptr;  // [T, 4d] bf16 streams, row t = v_t (stream-major)
  const std::uint16_t* f = nullptr;  // [T, d] bf16 sublayer output: fused mode; null: pre only
  const float* coef_in = nullptr;    // [T, 24] coefficient rows of the previous pre (fused mode)
  const float* fn = nullptr;         // [24, 4d] fp32 hc_*_fn (official layout; packed inside)
  const float* base = nullptr;       // [24] fp32 hc_*_base
  Scalars s;
};

struct Outputs {
  std::uint16_t* x_out = nullptr;  // [T, 4d] bf16 new streams (fused mode)
  std::uint16_t* u = nullptr;      // [T, d] bf16 collapsed sublayer input
  float* coef = nullptr;           // [T, 24] fp32 pre / post / comb
  float* mu = nullptr;             // [T, 24] fp32 mixing logits μ (optional, debug)
};

}  // namespace v4ref::cuda::mhc
