// RMS normalisations of the V4 forward (v4-forward.md §2.1, §2.2, §12).
//
//   rms_norm            : weighted RMSNorm_w(x)_i = w_i · x_i / sqrt(mean_j x_j² + ε), per row.
//                         Under kBf16Norm the output is rounded to bf16 (OFF computes in fp32 and
//                         casts back to bf16; the fp32 internals are not emulated, §12).
//   unweighted_rms_norm : N(x)_i = x_i / sqrt(mean_j x_j² + ε), per row (§2.2).
//   head_rms_norm       : N(·) applied to each of the `n_heads` contiguous slices of width
//                         `head_dim` of every row (the per-head query norm of §5.1). Under
//                         kBf16QHeadNorm it emulates OFF's bf16 arithmetic, see head_rms_norm.
//   inv_rms             : the scalar 1/sqrt(mean_j x_j² + ε) (mHC mixing, §4.1).
//
// Sums of squares are accumulated in a fixed left-to-right order (no OpenMP reductions), so the
// result does not depend on the thread count.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/linear.hpp"

namespace v4ref::ref {

// NumericError "<name> contains NaN|Inf at [row, col]" for the first non-finite element.
void require_finite_mat(const Mat& m, std::string_view name);
void require_finite_vec(const Vec& v, std::string_view name);

// 1/sqrt(mean(x²) + eps) for a non-empty span. ShapeError on an empty span, ConfigError on
// eps <= 0 (or non-finite).
double inv_rms(std::span<const double> x, double eps);

// Weighted RMSNorm of every row of x [T, n] with weight [n]. `name` names the norm in errors
// (e.g. "layers.2.attn.q_norm"). ShapeError if weight.size() != x.cols(); NumericError on
// non-finite x or weight. Output [T, n], bf16-rounded under kBf16Norm.
Mat rms_norm(const Mat& x, const Vec& weight, double eps, const PrecisionPolicy& policy,
             std::string_view name = "rms_norm");

// Unweighted RMS normalisation of every row of x [T, n] (§2.2), in double. No rounding point.
Mat unweighted_rms_norm(const Mat& x, double eps, std::string_view name = "unweighted_rms_norm");

// Per-head unweighted RMS norm of x [T, n_heads·head_dim] (§2.2, §5.1); heads are contiguous
// slices of head_dim columns. ShapeError if x.cols() != n_heads·head_dim.
//
// Exact (kBf16QHeadNorm off): q / sqrt(mean(q²) + ε) in double.
// kBf16QHeadNorm on: emulates OFF's `q *= rsqrt(q.square().mean(-1) + eps)` on a bf16 tensor,
// where every PyTorch elementwise bf16 op computes in fp32 and rounds its result to bf16:
//   q_i  <- bf16(q_i)                       (the input is bf16 in OFF; idempotent if already)
//   s_i   = bf16(q_i²)                      (square, rounded)
//   m     = bf16(Σ_i s_i / n)               (mean: PyTorch accumulates in fp32, we sum in double;
//                                            the two agree after the bf16 rounding except when the
//                                            sum lies within fp32 accumulation error of a bf16 tie)
//   a     = bf16(m + ε)                     (ε as an fp32 scalar: fp32(1e-6))
//   r     = bf16(1/sqrt(a))                 (rsqrt in fp32 precision, rounded; we use double)
//   out_i = bf16(q_i · r)
Mat head_rms_norm(const Mat& x, std::int64_t n_heads, std::int64_t head_dim, double eps,
                  const PrecisionPolicy& policy, std::string_view name = "q_head_norm");

}  // namespace v4ref::ref
