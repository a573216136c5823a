// Rotary position embedding of V4 (v4-forward.md §2.3, §5.5): interleaved pairs
// (x[off+2j], x[off+2j+1]) treated as x[off+2j] + i·x[off+2j+1], rotated by θ = p·ω_j.
//
// Frequencies: ω⁰_j = base^{−2j/r}, j = 0..r/2−1. With YaRN (CSA/HCA layers):
//   corr(n) = r·ln(orig/(n·2π)) / (2·ln base); low = max(floor(corr(β_fast)), 0);
//   high = min(ceil(corr(β_slow)), r−1); if low == high: high += 0.001;
//   ramp_j = clamp((j − low)/(high − low), 0, 1);  ω_j = ω⁰_j·(1 − ramp_j) + (ω⁰_j/factor)·ramp_j.
// No attention/mscale factor (the softmax scale stays D^{-1/2}).
//
// Precision points:
//   kFp32RopeAngle: ω_j is taken as fp32(ω_j) (the correctly rounded fp32 of the double formula;
//     OFF evaluates the pow/blend in fp32 ops, which may differ from this by an ulp of ω — far
//     below the angle rounding this point exists for), the position as fp32(p) (exact for
//     p < 2^24), and the angle θ = fp32(fp32(p)·fp32(ω_j)), one fp32 multiply as OFF's
//     torch.outer. cos θ and sin θ are then evaluated in double of that fp32 angle (OFF takes
//     them in fp32 via torch.polar; the difference is ~1e-7 absolute and is not emulated).
//   kBf16Rope: the rotated pairs are rounded to bf16 (OFF rotates in fp32 on the bf16 input and
//     casts back; the fp32 rotation itself is not emulated).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/linear.hpp"

namespace v4ref::ref {

struct RopeTable {
  double base = 10000;
  bool yarn = false;
  YarnConfig yarn_cfg;
  std::int64_t rope_dim = 64;          // r (even)
  std::int64_t max_position = 0;       // positions must be < this; 0 = no limit
  double yarn_low = 0, yarn_high = 0;  // ramp bounds actually used (after the +0.001 rule)
  std::vector<double> omega;           // [r/2] ω_j in double
  std::vector<double> omega_fp32;      // [r/2] fp32(ω_j), used under kFp32RopeAngle

  std::int64_t n_pairs() const { return rope_dim / 2; }
};

// The YaRN correction dimension corr(n) of §2.3 (real-valued).
double yarn_correction_dim(double n_rotations, std::int64_t rope_dim, double base,
                           std::int64_t original_seq_len);

// Builds ω_j. ConfigError on base <= 1 (or non-finite), rope_dim not positive and even,
// and under YaRN factor < 1 or original_seq_len <= 0. `max_position` as in RopeTable.
RopeTable make_rope_table(double base, bool yarn, const YarnConfig& yarn_cfg,
                          std::int64_t rope_dim = 64, std::int64_t max_position = 0);

// The layer's table (§2.3 table, §8): base and YaRN from LayerConfig (rope_base, rope_yarn),
// r = cfg.rope_head_dim, max_position = cfg.max_position_embeddings.
RopeTable rope_table_for(const ModelConfig& cfg, const LayerConfig& layer);

// The angle θ = p·ω_j actually used for pair j at position p under `policy` (double, or the
// fp32 product under kFp32RopeAngle).
double rope_angle(const RopeTable& table, std::int64_t position, std::int64_t j,
                  const PrecisionPolicy& policy);

// Rotates, in every row t of x, the r columns [offset, offset + r) by position positions[t]
// (θ → −θ when `inverse`, the de-rotation of §5.5). Other columns are copied unchanged.
// positions.size() must equal x.rows(). Errors: ShapeError naming `name` when offset < 0,
// offset + r > x.cols() or positions.size() != x.rows(); ShapeError when a position is negative
// or >= table.max_position (when set), naming the value and the limit.
Mat apply_rope(const Mat& x, std::int64_t offset, std::span<const std::int64_t> positions,
               const RopeTable& table, const PrecisionPolicy& policy, bool inverse = false,
               std::string_view name = "rope");

// In-place variant rotating the LAST r columns of every head slice: x is [T, n_heads·head_dim],
// head h occupies columns [h·head_dim, (h+1)·head_dim) and its columns
// [h·head_dim + head_dim − r, (h+1)·head_dim) are rotated. n_heads = 1, head_dim = x.cols() is
// "the last r dims of the row". Same errors as apply_rope.
void apply_rope_heads_inplace(Mat& x, std::int64_t n_heads, std::int64_t head_dim,
                              std::span<const std::int64_t> positions, const RopeTable& table,
                              const PrecisionPolicy& policy, bool inverse = false,
                              std::string_view name = "rope");

// Positions start, start+1, ..., start+n−1 (a prefill chunk).
std::vector<std::int64_t> position_range(std::int64_t start, std::int64_t n);

}  // namespace v4ref::ref
