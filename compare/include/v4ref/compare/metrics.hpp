// Comparison metrics of compare/ (guide/verification.md §3, §9): every number a differential test
// or the layer debugger prints about "implementation output K against reference output R".
//
//   max_abs    max_i |k_i − r_i|, with its coordinates and both values
//   max_rel    max_i |k_i − r_i| / max(|r_i|, floor), floor = 1e-3 · rms(r) unless given
//   rel_fro    ‖k − r‖_F / ‖r‖_F (relative Frobenius error; ‖k‖_F when r = 0)
//   cos_sim    Σ k_i r_i / sqrt(Σ k_i² · Σ r_i²)
//   cos_diff   1 − 2 Σ k_i r_i / Σ (k_i² + r_i²)   (DeepGEMM's calc_diff)
//   nmse       Σ (k_i − r_i)² / Σ r_i²             (ggml test-backend-ops)
//   ulp        for a float type t: |ord_t(round_t(k_i)) − ord_t(round_t(r_i))|, the number of
//              representable values of t between the two (bf16, fp32 or fp64)
//   nonfinite  NaN / ±Inf positions of k and r; a position where the two disagree (finite
//              against non-finite, or NaN against Inf, or +Inf against −Inf) is a mismatch.
//              Equal non-finite pairs (e.g. −∞ for invisible index scores on both sides) are
//              excluded from the numeric metrics; so are masked-out elements.
//
// Set agreement (top-k indexer selections, MoE routing) with the near-tie rule of §9: the
// implementation's selection SK of a row may differ from the reference's SR only by swaps whose
// reference scores all lie within τ of the threshold θ (the smallest reference score in SR).
//
// Everything is computed in double from row-major matrices (ref::Mat); a 1-D tensor is a 1 x n
// matrix.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "v4ref/ref/linear.hpp"

namespace v4ref::compare {

using ref::Mat;

// Float formats whose ULP distance is meaningful for outputs.
enum class FloatType { kBf16, kFp32, kFp64 };

std::string_view float_type_name(FloatType t);  // "bf16", "fp32", "fp64"
// Parses "bf16" / "fp32" / "f32" / "fp64" / "f64"; std::nullopt for anything else (e.g. "e4m3").
std::optional<FloatType> parse_float_type(std::string_view s);

// Unit roundoff of a format: 2^-8 (bf16), 2^-24 (fp32), 2^-53 (fp64).
double unit_roundoff(FloatType t);
// x rounded to t (round to nearest even; bf16 via the project's codec).
double round_to(double x, FloatType t);
// Spacing of t at |x| (distance from round_t(|x|) to the next representable value away from 0);
// the smallest subnormal spacing for x = 0. NaN for non-finite x.
double ulp_of(double x, FloatType t);
// Monotone integer image of round_t(x): ordered(a) < ordered(b) <=> round_t(a) < round_t(b), and
// +0 / −0 both map to 0. Non-finite x: ordered(±Inf) = ±(largest finite + 1); NaN is an Error.
std::int64_t ordered_bits(double x, FloatType t);
// |ordered_bits(a) − ordered_bits(b)|.
std::int64_t ulp_distance(double a, double b, FloatType t);

// One element of a compared pair.
struct ElementRef {
  std::int64_t row = -1, col = -1;  // −1: none
  double k = std::numeric_limits<double>::quiet_NaN();
  double r = std::numeric_limits<double>::quiet_NaN();
  bool valid() const { return row >= 0; }
  std::string str() const;  // "[17, 41] k=0.0312 r=0.0297"
};

struct MetricOptions {
  double rel_floor = -1;         // < 0: 1e-3 · rms(r)
  std::optional<FloatType> ulp;  // also compute the ULP distance in this type
  const Mat* mask = nullptr;     // same shape; elements where mask == 0 are skipped
};

struct Metrics {
  std::int64_t rows = 0, cols = 0;
  std::int64_t compared = 0;  // finite pairs entering the numeric metrics
  std::int64_t skipped = 0;   // masked out, or equal non-finite pairs
  double max_abs = 0;
  ElementRef max_abs_at;
  double max_rel = 0;
  ElementRef max_rel_at;
  double rel_floor = 0;
  double rel_fro = 0;
  double cos_sim = 1;
  double cos_diff = 0;
  double nmse = 0;
  double rms_ref = 0, rms_impl = 0;
  bool both_zero = false;  // Σ(k² + r²) = 0: cos metrics are not informative
  std::int64_t nonfinite_ref = 0, nonfinite_impl = 0;
  std::int64_t nonfinite_mismatch = 0;
  ElementRef first_nonfinite_mismatch;
  std::optional<FloatType> ulp_type;
  std::int64_t max_ulp = 0;
  ElementRef max_ulp_at;

  // "max_abs 1.5e-03 at [17, 41] k=.. r=..  max_rel ..  rel_fro ..  cos_diff ..  nmse .."
  std::string summary() const;
};

// K against R. ShapeError naming `name` when the shapes differ.
Metrics compare_tensors(const Mat& k, const Mat& r, const MetricOptions& opts = {},
                        std::string_view name = "tensor");

// ------------------------------------------------------------------ set agreement (§9)

// Per-row outcome of the worst row, and totals.
struct SetAgreement {
  std::int64_t rows = 0;
  std::int64_t structure_errors = 0;  // wrong count, duplicates, invalid index, bad padding
  std::string first_structure_error;
  std::int64_t swaps = 0;        // |SK \ SR| summed over rows
  std::int64_t unexplained = 0;  // swaps with an element outside the near-tie band
  std::int64_t rows_with_swaps = 0;
  double worst_tie_ratio = 0;              // max over swapped j of |s_j − θ| / τ_j
  double mean_recall = 1, min_recall = 1;  // |SK ∩ SR| / |SR| (rows with |SR| > 0)
  std::int64_t first_bad_row = -1;         // first row with a structure error or unexplained swap
  std::string first_bad_detail;

  bool pass() const { return structure_errors == 0 && unexplained == 0; }
  std::string summary() const;
};

// Selections are [T, K] matrices of indices stored as doubles in any order, −1 padding after the
// valid entries (the trace format of attn.topk_idx / ffn.routed_idx). ref_scores [T, N] are the
// reference's selection scores (for routing: s_e + bias_e): an index j is selectable when
// 0 <= j < N and ref_scores(t, j) is neither NaN nor −∞ (−∞ marks an invisible entry). `tau` is
// either 1 x 1 (one τ for every element) or [T, N] (τ_j per element); τ < 0 forbids every swap.
//
// Row checks: impl and ref rows hold the same number of valid entries; no duplicates; every
// entry selectable; −1 only as trailing padding; every value an integer >= −1.
// A swap set A = SK \ SR, D = SR \ SK is explained when every j in A ∪ D has
// |s_j − θ| <= τ_j, θ = min_{j ∈ SR} s_j.
SetAgreement compare_selections(const Mat& impl_sel, const Mat& ref_sel, const Mat& ref_scores,
                                const Mat& tau);

// B's values re-ordered to A's index order: out(t, s) = b_vals(t, s') where b_idx(t, s') ==
// a_idx(t, s), NaN where A's index is absent from B's row (route weights of swapped experts).
// Also returns the mask (1 where aligned, 0 where absent).
struct Aligned {
  Mat values;
  Mat mask;
  std::int64_t missing = 0;
};
Aligned align_by_index(const Mat& b_vals, const Mat& b_idx, const Mat& a_idx);

}  // namespace v4ref::compare
