// Per-element math of the CUDA Muon path (cuda/src/muon_ns_bf16_sm90.cu) that decides its
// precision, written once for host and device, plus a CPU executor that runs the device path's
// steps in the same order with the same roundings (docs/muon.md §3).
//
// The device path: tensor-core GEMMs (bf16 operands, fp32 accumulation, fp32 output) and the
// element functions below as their epilogues. The executor replaces each GEMM by a plain fp32
// loop in ascending k; the products of two bf16 values are exact in fp32, so the executor and
// the device differ only in the order of the fp32 additions inside a GEMM.
//
// This header must stay self-contained (core headers only): the cpu test includes it by path,
// without cuda/include on its include path and without a CUDA toolkit.
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

// ---------------------------------------------------------------- CPU executor
// Host only: the steps of the device path for one matrix, in its order.

#if !defined(__CUDACC__)

// Sum of squares of u[0..count) the way the device kernel forms it.
inline float executor_sumsq(const float* u, std::int64_t count) {
  std::vector<float> partial(kNormParts, 0.0f);
  for (int p = 0; p < kNormParts; ++p) {
    float acc = 0.0f;
    for (std::int64_t i = p; i < count; i += kNormParts) acc = sumsq_accumulate(acc, u[i]);
    partial[static_cast<std::size_t>(p)] = acc;
  }
  return tree_combine(partial.data(), kNormParts);
}

// Newton–Schulz of one row-major [rows, cols] fp32 matrix; returns bf16 codes [rows, cols].
inline std::vector<std::uint16_t> executor_newton_schulz(const float* u, std::int64_t rows,
                                                         std::int64_t cols,
                                                         const std::vector<StageF>& stages,
                                                         float eps) {
  const bool tall = rows > cols;
  const std::int64_t n = tall ? cols : rows, m = tall ? rows : cols;
  const auto nn = static_cast<std::size_t>(n * n), nm = static_cast<std::size_t>(n * m);
  const float denom = norm_denominator(executor_sumsq(u, rows * cols), eps);
  std::vector<float> x(nm);  // bf16 values held as float, [n, m]
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) {
      const std::size_t dst = static_cast<std::size_t>(tall ? j * m + i : i * m + j);
      x[dst] = bf16_load(normalize_store(u[i * cols + j], denom));
    }
  std::vector<float> a(nn), a2(nn), b(nn), y(nm);
  for (const StageF& st : stages)
    for (int it = 0; it < st.iterations; ++it) {
      for (std::int64_t i = 0; i < n; ++i)  // A = X·Xᵀ
        for (std::int64_t j = 0; j < n; ++j) {
          float acc = 0.0f;
          for (std::int64_t k = 0; k < m; ++k) acc += x[static_cast<std::size_t>(i * m + k)] *
                                                      x[static_cast<std::size_t>(j * m + k)];
          a[static_cast<std::size_t>(i * n + j)] = bf16_load(gram_store(acc));
        }
      for (std::int64_t i = 0; i < n; ++i)  // A², then B
        for (std::int64_t j = 0; j < n; ++j) {
          float acc = 0.0f;
          for (std::int64_t k = 0; k < n; ++k) acc += a[static_cast<std::size_t>(i * n + k)] *
                                                      a[static_cast<std::size_t>(k * n + j)];
          a2[static_cast<std::size_t>(i * n + j)] = acc;
        }
      for (std::size_t e = 0; e < nn; ++e) b[e] = bf16_load(poly_store(a[e], a2[e], st.b, st.c));
      std::fill(y.begin(), y.end(), 0.0f);
      for (std::int64_t i = 0; i < n; ++i)  // B·X, row i as axpys in ascending k
        for (std::int64_t k = 0; k < n; ++k) {
          const float bik = b[static_cast<std::size_t>(i * n + k)];
          const float* xk = &x[static_cast<std::size_t>(k * m)];
          float* yi = &y[static_cast<std::size_t>(i * m)];
          for (std::int64_t j = 0; j < m; ++j) yi[j] += bik * xk[j];
        }
      for (std::size_t e = 0; e < nm; ++e) x[e] = bf16_load(update_store(x[e], y[e], st.a));
    }
  std::vector<std::uint16_t> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j)
      out[static_cast<std::size_t>(i * cols + j)] =
          fmt::bf16_encode(static_cast<double>(x[static_cast<std::size_t>(tall ? j * m + i : i * m + j)]));
  return out;
}

// One Muon step on fp32 masters w and momentum m (in place), gradient g; returns O (bf16).
inline std::vector<std::uint16_t> executor_muon_step(float* w, float* m, const float* g,
                                                     std::int64_t rows, std::int64_t cols,
                                                     const StepScalars& s,
                                                     const std::vector<StageF>& stages, float eps) {
  const auto count = static_cast<std::size_t>(rows * cols);
  std::vector<float> u(count);
  for (std::size_t i = 0; i < count; ++i) {
    m[i] = momentum_update(m[i], g[i], s.mu);
    u[i] = ns_input(g[i], m[i], s);
  }
  std::vector<std::uint16_t> o = executor_newton_schulz(u.data(), rows, cols, stages, eps);
  for (std::size_t i = 0; i < count; ++i) w[i] = apply_update(w[i], bf16_load(o[i]), s);
  return o;
}

#endif  // !__CUDACC__

}  // namespace v4ref::cuda::ns
