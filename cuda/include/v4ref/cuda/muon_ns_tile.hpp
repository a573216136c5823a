// Per-element math of the CUDA Muon path (cuda/src/muon_kernels.cuh, muon_ns_bf16_sm90.cu) that
// decides its precision, written once for host and device (docs/muon.md §3). The element kernels
// run from their own source in the SIMT executor (muon_simt.hpp).
//
// The device path: tensor-core GEMMs (bf16 operands, fp32 accumulation, fp32 output) and the
// element functions below as their epilogues. On the CPU each GEMM is a plain fp32 loop in
// ascending k; the products of two bf16 values are exact in fp32, so the CPU path and the device
// differ only in the order of the fp32 additions inside a GEMM.
//
// This header must stay self-contained (core headers only): host code includes it without a CUDA
// toolkit.
// Not shared with reference/: the reference implements the formula on its own (style.md).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/host_device.hpp"

namespace v4ref::cuda::ns {

// Sum of squares of one matrix: kNormBlocks blocks of kNormThreads threads; partial p
// accumulates elements p, p + kNormParts, ... in order, then a fixed pairwise tree combines the
// kNormParts partials. The executor forms the same partials, so both give the same bits.
inline constexpr int kNormThreads = 256;
inline constexpr int kNormBlocks = 32;
inline constexpr int kNormParts = kNormBlocks * kNormThreads;  // 8192

// One stage of the schedule as the device uses it: coefficients rounded to fp32.
// Control-flow defects the SIMT tests inject into the kernels of muon_kernels.cuh (template
// parameter; the device build instantiates kNone only). docs/simt.md §5.
enum class MuonFault : int {
  kNone = 0,
  kTreeLevelNoBarrier,   // the combine tree's levels without a barrier between them
  kTileUnpadded,         // the normalise-transpose tile without its padding column
  kTransposeTailGuard,   // the transposed store's row guard one past the end
  kTransposeNoBarrier,   // transpose_out reads its tile without the barrier after the loads
  kEpilogueStrideBound,  // the update epilogue's grid-stride loop runs one element too far
};

struct StageF {
  float a = 0, b = 0, c = 0;
  int iterations = 0;
};

// ---------------------------------------------------------------- normalisation (fp32)

// Partial p accumulates u[p], u[p + kNormParts], ... with one fp32 fma per element.
V4REF_HD inline float sumsq_accumulate(float acc, float u) { return fmaf(u, u, acc); }

// Fixed pairwise tree over `count` (a power of two) partials: p[t] += p[t + s], s = count/2..1.
V4REF_HD inline float tree_combine(float* p, int count) {
  for (int s = count / 2; s > 0; s /= 2)
    for (int t = 0; t < s; ++t) p[t] = p[t] + p[t + s];
  return p[0];
}

// ||U||_F + eps in fp32 (IEEE sqrt on both sides: nvcc's default -prec-sqrt=true).
V4REF_HD inline float norm_denominator(float sumsq, float eps) { return sqrtf(sumsq) + eps; }

// Precision point 1: X0 = bf16(u / denom), IEEE fp32 division.
V4REF_HD inline std::uint16_t normalize_store(float u, float denom) {
  return fmt::bf16_encode(static_cast<double>(u / denom));
}

V4REF_HD inline float bf16_load(std::uint16_t h) { return fmt::bf16_to_float(h); }

// ---------------------------------------------------------------- iteration epilogues

// Precision point 2: A = X·Xᵀ accumulated in fp32, stored bf16 (RNE).
V4REF_HD inline std::uint16_t gram_store(float acc) {
  return fmt::bf16_encode(static_cast<double>(acc));
}

// Precision point 3: B = b·A + c·A² with A (bf16 value) and A² (fp32 GEMM output):
// t = fp32(b·A), then fma(c, A², t), stored bf16.
V4REF_HD inline std::uint16_t poly_store(float a_val, float a2_acc, float b, float c) {
  return fmt::bf16_encode(static_cast<double>(fmaf(c, a2_acc, b * a_val)));
}

// Precision point 4: X_new = fma(a, X, (B·X)_fp32), stored bf16.
V4REF_HD inline std::uint16_t update_store(float x_val, float bx_acc, float a) {
  return fmt::bf16_encode(static_cast<double>(fmaf(a, x_val, bx_acc)));
}

// ---------------------------------------------------------------- Muon step (fp32 masters)

struct StepScalars {
  float mu = 0.95f;     // momentum
  float decay = 1.0f;   // 1 − lr·wd, formed in double, rounded to fp32
  float step = 0.0f;    // lr·gamma·sqrt(max(rows, cols)), formed in double, rounded to fp32
  bool nesterov = true;
};

// M <- fma(mu, M, G)
V4REF_HD inline float momentum_update(float m, float g, float mu) { return fmaf(mu, m, g); }
// U = fma(mu, M_new, G) (Nesterov) or M_new
V4REF_HD inline float ns_input(float g, float m_new, const StepScalars& s) {
  return s.nesterov ? fmaf(s.mu, m_new, g) : m_new;
}
// W <- fma(−step, O, fp32(W·decay))
V4REF_HD inline float apply_update(float w, float o, const StepScalars& s) {
  return fmaf(-s.step, o, w * s.decay);
}

inline StepScalars step_scalars(double lr, double momentum, double weight_decay, double rms_scale,
                                std::int64_t rows, std::int64_t cols, bool nesterov) {
  StepScalars s;
  s.mu = static_cast<float>(momentum);
  s.decay = static_cast<float>(1.0 - lr * weight_decay);
  s.step = static_cast<float>(lr * rms_scale *
                              std::sqrt(static_cast<double>(rows > cols ? rows : cols)));
  s.nesterov = nesterov;
  return s;
}

}  // namespace v4ref::cuda::ns
