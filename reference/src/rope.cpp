// RoPE tables and rotation (v4-forward.md §2.3, §5.5). See rope.hpp for the precision points.
#include "v4ref/ref/rope.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"

namespace v4ref::ref {

double yarn_correction_dim(double n_rotations, std::int64_t rope_dim, double base,
                           std::int64_t original_seq_len) {
  return static_cast<double>(rope_dim) *
         std::log(static_cast<double>(original_seq_len) / (n_rotations * 2 * std::numbers::pi)) /
         (2 * std::log(base));
}

RopeTable make_rope_table(double base, bool yarn, const YarnConfig& yarn_cfg, std::int64_t rope_dim,
                          std::int64_t max_position) {
  if (!(base > 1) || !std::isfinite(base))
    throw ConfigError("rope: base must be finite and > 1, got " + std::to_string(base));
  if (rope_dim <= 0 || rope_dim % 2 != 0)
    throw ConfigError("rope: rope_dim must be positive and even, got " + std::to_string(rope_dim));
  if (max_position < 0)
    throw ConfigError("rope: max_position must be >= 0 (0 = unlimited), got " + std::to_string(max_position));
  RopeTable t;
  t.base = base;
  t.yarn = yarn;
  t.yarn_cfg = yarn_cfg;
  t.rope_dim = rope_dim;
  t.max_position = max_position;
  const std::int64_t half = rope_dim / 2;
  t.omega.resize(static_cast<std::size_t>(half));
  t.omega_fp32.resize(static_cast<std::size_t>(half));
  if (yarn) {
    if (!(yarn_cfg.factor >= 1))
      throw ConfigError("rope: YaRN factor must be >= 1, got " + std::to_string(yarn_cfg.factor));
    if (yarn_cfg.original_seq_len <= 0)
      throw ConfigError("rope: YaRN original_seq_len must be > 0, got " +
                        std::to_string(yarn_cfg.original_seq_len));
    const double lo_c = yarn_correction_dim(yarn_cfg.beta_fast, rope_dim, base, yarn_cfg.original_seq_len);
    const double hi_c = yarn_correction_dim(yarn_cfg.beta_slow, rope_dim, base, yarn_cfg.original_seq_len);
    t.yarn_low = std::max(std::floor(lo_c), 0.0);
    t.yarn_high = std::min(std::ceil(hi_c), static_cast<double>(rope_dim - 1));
    if (t.yarn_low == t.yarn_high) t.yarn_high += 0.001;
  }
  for (std::int64_t j = 0; j < half; ++j) {
    // 1 / base^(2j/r), the operation order of OFF's precompute (§2.3 reference values).
    const double w0 = 1.0 / std::pow(base, static_cast<double>(2 * j) / static_cast<double>(rope_dim));
    double w = w0;
    if (yarn) {
      const double ramp =
          std::clamp((static_cast<double>(j) - t.yarn_low) / (t.yarn_high - t.yarn_low), 0.0, 1.0);
      const double smooth = 1.0 - ramp;  // OFF blends with smooth = 1 − ramp
      w = w0 / yarn_cfg.factor * (1.0 - smooth) + w0 * smooth;
    }
    t.omega[static_cast<std::size_t>(j)] = w;
    t.omega_fp32[static_cast<std::size_t>(j)] = fmt::round_fp32(w);
  }
  return t;
}

RopeTable rope_table_for(const ModelConfig& cfg, const LayerConfig& layer) {
  return make_rope_table(layer.rope_base, layer.rope_yarn, cfg.yarn, cfg.rope_head_dim,
                         cfg.max_position_embeddings);
}

double rope_angle(const RopeTable& table, std::int64_t position, std::int64_t j,
                  const PrecisionPolicy& policy) {
  if (j < 0 || j >= table.n_pairs())
    throw ShapeError("rope_angle: pair index " + std::to_string(j) + " out of range [0, " +
                     std::to_string(table.n_pairs()) + ")");
  const auto ju = static_cast<std::size_t>(j);
  if (policy.on(QuantPoint::kFp32RopeAngle)) {
    const float p = static_cast<float>(position);  // exact below 2^24
    const float w = static_cast<float>(table.omega_fp32[ju]);
    const float theta = p * w;  // one fp32 multiply (torch.outer in fp32)
    return static_cast<double>(theta);
  }
  return static_cast<double>(position) * table.omega[ju];
}

namespace {

void check_positions(std::span<const std::int64_t> positions, Eigen::Index rows,
                     const RopeTable& table, std::string_view name) {
  if (static_cast<Eigen::Index>(positions.size()) != rows)
    throw ShapeError(std::string(name) + ": positions has " + std::to_string(positions.size()) +
                     " entries, expected one per row (" + std::to_string(rows) + ")");
  for (std::size_t i = 0; i < positions.size(); ++i) {
    const std::int64_t p = positions[i];
    if (p < 0 || (table.max_position > 0 && p >= table.max_position))
      throw ShapeError(std::string(name) + ": position " + std::to_string(p) + " (row " +
                       std::to_string(i) + ") out of range [0, " +
                       (table.max_position > 0 ? std::to_string(table.max_position) : std::string("inf")) +
                       ") (max_position_embeddings)");
  }
}

// Rotates r values starting at x by position p.
void rotate_pairs(double* x, std::int64_t p, const RopeTable& table, const PrecisionPolicy& policy,
                  bool inverse) {
  const bool round = policy.on(QuantPoint::kBf16Rope);
  for (std::int64_t j = 0; j < table.n_pairs(); ++j) {
    double theta = rope_angle(table, p, j, policy);
    if (inverse) theta = -theta;
    const double c = std::cos(theta), s = std::sin(theta);
    const double a = x[2 * j], b = x[2 * j + 1];
    double ra = a * c - b * s;
    double rb = a * s + b * c;
    if (round) {
      ra = fmt::round_bf16(ra);
      rb = fmt::round_bf16(rb);
    }
    x[2 * j] = ra;
    x[2 * j + 1] = rb;
  }
}

}  // namespace

Mat apply_rope(const Mat& x, std::int64_t offset, std::span<const std::int64_t> positions,
               const RopeTable& table, const PrecisionPolicy& policy, bool inverse,
               std::string_view name) {
  if (offset < 0 || offset + table.rope_dim > x.cols())
    throw ShapeError(std::string(name) + ": rotated columns [" + std::to_string(offset) + ", " +
                     std::to_string(offset + table.rope_dim) + ") do not fit the input [" +
                     std::to_string(x.rows()) + ", " + std::to_string(x.cols()) + "]");
  check_positions(positions, x.rows(), table, name);
  Mat y = x;
  for (Eigen::Index t = 0; t < y.rows(); ++t)
    rotate_pairs(y.row(t).data() + offset, positions[static_cast<std::size_t>(t)], table, policy, inverse);
  return y;
}

void apply_rope_heads_inplace(Mat& x, std::int64_t n_heads, std::int64_t head_dim,
                              std::span<const std::int64_t> positions, const RopeTable& table,
                              const PrecisionPolicy& policy, bool inverse, std::string_view name) {
  if (n_heads <= 0 || head_dim < table.rope_dim || x.cols() != n_heads * head_dim)
    throw ShapeError(std::string(name) + ": input expected [T, " + std::to_string(n_heads) + " * " +
                     std::to_string(head_dim) + "] with head_dim >= rope_dim " +
                     std::to_string(table.rope_dim) + ", got [" + std::to_string(x.rows()) + ", " +
                     std::to_string(x.cols()) + "]");
  check_positions(positions, x.rows(), table, name);
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (std::int64_t h = 0; h < n_heads; ++h)
      rotate_pairs(x.row(t).data() + h * head_dim + head_dim - table.rope_dim,
                   positions[static_cast<std::size_t>(t)], table, policy, inverse);
}

std::vector<std::int64_t> position_range(std::int64_t start, std::int64_t n) {
  if (n < 0 || start < 0)
    throw ShapeError("position_range: start and count must be >= 0, got start " + std::to_string(start) +
                     ", count " + std::to_string(n));
  std::vector<std::int64_t> p(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) p[static_cast<std::size_t>(i)] = start + i;
  return p;
}

}  // namespace v4ref::ref
