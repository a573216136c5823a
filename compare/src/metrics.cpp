// Comparison metrics and set agreement (metrics.hpp; guide/verification.md §3, §9).
#include "v4ref/compare/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <vector>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"

namespace v4ref::compare {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string dims(Eigen::Index r, Eigen::Index c) {
  return "[" + std::to_string(r) + ", " + std::to_string(c) + "]";
}

// Which non-finite class a value belongs to: 0 finite, 1 NaN, 2 +Inf, 3 −Inf.
int nonfinite_class(double x) {
  if (std::isfinite(x)) return 0;
  if (std::isnan(x)) return 1;
  return x > 0 ? 2 : 3;
}

// Ordered image of a finite value given as the bits of its sign-magnitude encoding.
std::int64_t signed_order(bool negative, std::uint64_t magnitude_bits) {
  const auto m = static_cast<std::int64_t>(magnitude_bits);
  return negative ? -m : m;
}

}  // namespace

std::string_view float_type_name(FloatType t) {
  switch (t) {
    case FloatType::kBf16:
      return "bf16";
    case FloatType::kFp32:
      return "fp32";
    case FloatType::kFp64:
      return "fp64";
  }
  return "?";
}

std::optional<FloatType> parse_float_type(std::string_view s) {
  if (s == "bf16") return FloatType::kBf16;
  if (s == "fp32" || s == "f32") return FloatType::kFp32;
  if (s == "fp64" || s == "f64") return FloatType::kFp64;
  return std::nullopt;
}

double unit_roundoff(FloatType t) {
  switch (t) {
    case FloatType::kBf16:
      return 0x1p-8;
    case FloatType::kFp32:
      return 0x1p-24;
    case FloatType::kFp64:
      return 0x1p-53;
  }
  return 0;
}

double round_to(double x, FloatType t) {
  switch (t) {
    case FloatType::kBf16:
      return fmt::round_bf16(x);
    case FloatType::kFp32:
      return fmt::round_fp32(x);
    case FloatType::kFp64:
      return x;
  }
  return x;
}

double ulp_of(double x, FloatType t) {
  if (!std::isfinite(x)) return std::numeric_limits<double>::quiet_NaN();
  const double a = std::fabs(round_to(x, t));
  switch (t) {
    case FloatType::kBf16: {
      // 8 significant bits, smallest normal 2^-126: spacing 2^(e−7), subnormal spacing 2^-133.
      if (a < 0x1p-126) return 0x1p-133;
      return fmt::pow2(fmt::floor_log2(a) - 7);
    }
    case FloatType::kFp32: {
      const auto f = static_cast<float>(a);
      return static_cast<double>(std::nextafter(f, std::numeric_limits<float>::infinity()) - f);
    }
    case FloatType::kFp64:
      return std::nextafter(a, std::numeric_limits<double>::infinity()) - a;
  }
  return 0;
}

std::int64_t ordered_bits(double x, FloatType t) {
  if (std::isnan(x)) throw NumericError("ordered_bits: NaN has no position in the float order");
  switch (t) {
    case FloatType::kBf16: {
      const std::uint16_t h = fmt::bf16_encode(x);  // ±Inf encodes as 0x7F80 / 0xFF80
      return signed_order((h & 0x8000) != 0, h & 0x7FFF);
    }
    case FloatType::kFp32: {
      const std::uint32_t u = fmt::float_bits(static_cast<float>(x));
      return signed_order((u >> 31) != 0, u & 0x7FFFFFFFu);
    }
    case FloatType::kFp64: {
      const std::uint64_t u = fmt::double_bits(x);
      return signed_order((u >> 63) != 0, u & 0x7FFFFFFFFFFFFFFFull);
    }
  }
  return 0;
}

std::int64_t ulp_distance(double a, double b, FloatType t) {
  const std::int64_t oa = ordered_bits(a, t), ob = ordered_bits(b, t);
  return oa > ob ? oa - ob : ob - oa;
}

std::string ElementRef::str() const {
  if (!valid()) return "[-]";
  return "[" + std::to_string(row) + ", " + std::to_string(col) + "] k=" + num(k) + " r=" + num(r);
}

std::string Metrics::summary() const {
  std::string s = "max_abs " + num(max_abs) + " at " + max_abs_at.str() + "  max_rel " +
                  num(max_rel) + " (floor " + num(rel_floor) + ")  rel_fro " + num(rel_fro) +
                  "  cos_diff " + num(cos_diff) + "  nmse " + num(nmse);
  if (ulp_type)
    s += "  ulp(" + std::string(float_type_name(*ulp_type)) + ") " + std::to_string(max_ulp);
  if (nonfinite_ref + nonfinite_impl > 0 || nonfinite_mismatch > 0)
    s += "  nonfinite k " + std::to_string(nonfinite_impl) + " / r " +
         std::to_string(nonfinite_ref) +
         (nonfinite_mismatch > 0 ? ", " + std::to_string(nonfinite_mismatch) +
                                       " mismatched, first " + first_nonfinite_mismatch.str()
                                 : "");
  return s;
}

Metrics compare_tensors(const Mat& k, const Mat& r, const MetricOptions& opts,
                        std::string_view name) {
  if (k.rows() != r.rows() || k.cols() != r.cols())
    throw ShapeError(std::string(name) + ": implementation output is " + dims(k.rows(), k.cols()) +
                     ", reference is " + dims(r.rows(), r.cols()));
  if (opts.mask != nullptr && (opts.mask->rows() != r.rows() || opts.mask->cols() != r.cols()))
    throw ShapeError(std::string(name) + ": mask is " + dims(opts.mask->rows(), opts.mask->cols()) +
                     ", tensors are " + dims(r.rows(), r.cols()));
  Metrics m;
  m.rows = r.rows();
  m.cols = r.cols();
  m.ulp_type = opts.ulp;
  // Pass 1: non-finite pattern and the sums (fixed order: row-major).
  double srr = 0, skk = 0, skr = 0, sdd = 0;
  for (Eigen::Index i = 0; i < r.rows(); ++i)
    for (Eigen::Index j = 0; j < r.cols(); ++j) {
      if (opts.mask != nullptr && (*opts.mask)(i, j) == 0) {
        ++m.skipped;
        continue;
      }
      const double kv = k(i, j), rv = r(i, j);
      const int ck = nonfinite_class(kv), cr = nonfinite_class(rv);
      m.nonfinite_impl += ck != 0;
      m.nonfinite_ref += cr != 0;
      if (ck != cr) {
        if (m.nonfinite_mismatch++ == 0) m.first_nonfinite_mismatch = {i, j, kv, rv};
        continue;
      }
      if (ck != 0) {
        ++m.skipped;
        continue;
      }
      ++m.compared;
      const double d = kv - rv;
      srr += rv * rv;
      skk += kv * kv;
      skr += kv * rv;
      sdd += d * d;
      if (!m.max_abs_at.valid() || std::fabs(d) > m.max_abs) {
        m.max_abs = std::fabs(d);
        m.max_abs_at = {i, j, kv, rv};
      }
    }
  const double n = static_cast<double>(std::max<std::int64_t>(m.compared, 1));
  m.rms_ref = std::sqrt(srr / n);
  m.rms_impl = std::sqrt(skk / n);
  m.rel_floor = opts.rel_floor >= 0 ? opts.rel_floor : 1e-3 * m.rms_ref;
  m.rel_fro = srr > 0 ? std::sqrt(sdd / srr) : std::sqrt(sdd);
  m.nmse = srr > 0 ? sdd / srr : sdd;
  m.both_zero = skk + srr == 0;
  if (!m.both_zero) {
    m.cos_diff = 1.0 - 2.0 * skr / (skk + srr);
    m.cos_sim = (skk > 0 && srr > 0) ? skr / std::sqrt(skk * srr) : 0.0;
  }
  // Pass 2: relative error with the floor, ULP distance.
  for (Eigen::Index i = 0; i < r.rows(); ++i)
    for (Eigen::Index j = 0; j < r.cols(); ++j) {
      if (opts.mask != nullptr && (*opts.mask)(i, j) == 0) continue;
      const double kv = k(i, j), rv = r(i, j);
      if (!std::isfinite(kv) || !std::isfinite(rv)) continue;
      const double denom = std::max(std::fabs(rv), m.rel_floor);
      const double rel = denom > 0 ? std::fabs(kv - rv) / denom : (kv == rv ? 0.0 : HUGE_VAL);
      if (rel > m.max_rel) {
        m.max_rel = rel;
        m.max_rel_at = {i, j, kv, rv};
      }
      if (opts.ulp) {
        const std::int64_t u = ulp_distance(kv, rv, *opts.ulp);
        if (u > m.max_ulp) {
          m.max_ulp = u;
          m.max_ulp_at = {i, j, kv, rv};
        }
      }
    }
  return m;
}

// ------------------------------------------------------------------ set agreement

std::string SetAgreement::summary() const {
  std::string s = std::to_string(rows) + " rows, " + std::to_string(swaps) + " swaps (" +
                  std::to_string(unexplained) + " unexplained) in " +
                  std::to_string(rows_with_swaps) + " rows, worst |s-θ|/τ " + num(worst_tie_ratio) +
                  ", recall mean " + num(mean_recall) + " min " + num(min_recall);
  if (structure_errors > 0)
    s += ", " + std::to_string(structure_errors) +
         " structure errors (first: " + first_structure_error + ")";
  if (first_bad_row >= 0)
    s += "; first bad row " + std::to_string(first_bad_row) + ": " + first_bad_detail;
  return s;
}

namespace {

// The valid entries of a selection row, or a structure problem.
struct RowSel {
  std::vector<std::int64_t> idx;
  std::string error;
};

RowSel read_row(const Mat& sel, Eigen::Index t, const Mat& scores, const char* who) {
  RowSel out;
  bool padding = false;
  std::set<std::int64_t> seen;
  const Eigen::Index n = scores.cols();
  for (Eigen::Index s = 0; s < sel.cols(); ++s) {
    const double v = sel(t, s);
    const std::string where =
        std::string(who) + "[" + std::to_string(t) + ", " + std::to_string(s) + "]";
    if (!std::isfinite(v) || v != std::floor(v) || v < -1) {
      out.error = where + " = " + num(v) + " is not an index (integer >= -1)";
      return out;
    }
    const auto j = static_cast<std::int64_t>(v);
    if (j == -1) {
      padding = true;
      continue;
    }
    if (padding) {
      out.error = where + " = " + std::to_string(j) + " follows -1 padding";
      return out;
    }
    if (j >= n) {
      out.error = where + " = " + std::to_string(j) + " outside [0, " + std::to_string(n) + ")";
      return out;
    }
    const double sc = scores(t, j);
    if (std::isnan(sc) || sc == -std::numeric_limits<double>::infinity()) {
      out.error = where + " = " + std::to_string(j) + " selects an entry with reference score " +
                  num(sc) + " (not selectable)";
      return out;
    }
    if (!seen.insert(j).second) {
      out.error = where + " = " + std::to_string(j) + " is a duplicate";
      return out;
    }
    out.idx.push_back(j);
  }
  return out;
}

}  // namespace

SetAgreement compare_selections(const Mat& impl_sel, const Mat& ref_sel, const Mat& ref_scores,
                                const Mat& tau) {
  if (impl_sel.rows() != ref_sel.rows() || ref_scores.rows() != ref_sel.rows())
    throw ShapeError("compare_selections: rows differ: impl " +
                     dims(impl_sel.rows(), impl_sel.cols()) + ", ref " +
                     dims(ref_sel.rows(), ref_sel.cols()) + ", scores " +
                     dims(ref_scores.rows(), ref_scores.cols()));
  const bool scalar_tau = tau.rows() == 1 && tau.cols() == 1;
  if (!scalar_tau && (tau.rows() != ref_scores.rows() || tau.cols() != ref_scores.cols()))
    throw ShapeError("compare_selections: tau must be [1, 1] or the scores' shape " +
                     dims(ref_scores.rows(), ref_scores.cols()) + ", got " +
                     dims(tau.rows(), tau.cols()));
  SetAgreement a;
  a.rows = ref_sel.rows();
  double recall_sum = 0;
  std::int64_t recall_rows = 0;
  auto bad = [&](Eigen::Index t, const std::string& why) {
    if (a.first_bad_row < 0) {
      a.first_bad_row = t;
      a.first_bad_detail = why;
    }
  };
  for (Eigen::Index t = 0; t < ref_sel.rows(); ++t) {
    const RowSel rk = read_row(impl_sel, t, ref_scores, "impl");
    const RowSel rr = read_row(ref_sel, t, ref_scores, "ref");
    if (!rr.error.empty())
      throw ShapeError("compare_selections: the reference selection is malformed: " + rr.error);
    if (rk.error.empty() && rk.idx.size() != rr.idx.size()) {
      const std::string e = "row " + std::to_string(t) + ": implementation selects " +
                            std::to_string(rk.idx.size()) + " entries, reference " +
                            std::to_string(rr.idx.size());
      if (a.structure_errors++ == 0) a.first_structure_error = e;
      bad(t, e);
      continue;
    }
    if (!rk.error.empty()) {
      if (a.structure_errors++ == 0) a.first_structure_error = rk.error;
      bad(t, rk.error);
      continue;
    }
    const std::set<std::int64_t> sk(rk.idx.begin(), rk.idx.end()), sr(rr.idx.begin(), rr.idx.end());
    std::vector<std::int64_t> added, dropped;
    std::set_difference(sk.begin(), sk.end(), sr.begin(), sr.end(), std::back_inserter(added));
    std::set_difference(sr.begin(), sr.end(), sk.begin(), sk.end(), std::back_inserter(dropped));
    if (!sr.empty()) {
      const double recall =
          static_cast<double>(sr.size() - dropped.size()) / static_cast<double>(sr.size());
      recall_sum += recall;
      ++recall_rows;
      a.min_recall = std::min(a.min_recall, recall);
    }
    if (added.empty()) continue;
    a.swaps += static_cast<std::int64_t>(added.size());
    ++a.rows_with_swaps;
    double theta = std::numeric_limits<double>::infinity();
    for (std::int64_t j : rr.idx) theta = std::min(theta, ref_scores(t, j));
    std::int64_t row_unexplained = 0;
    std::string detail;
    for (const auto* list : {&added, &dropped})
      for (std::int64_t j : *list) {
        const double tj = scalar_tau ? tau(0, 0) : tau(t, j);
        const double gap = std::fabs(ref_scores(t, j) - theta);
        const double ratio = tj > 0 ? gap / tj : (gap == 0 && tj == 0 ? 0.0 : HUGE_VAL);
        a.worst_tie_ratio = std::max(a.worst_tie_ratio, ratio);
        if (!(tj >= 0 && gap <= tj)) {
          ++row_unexplained;
          if (detail.empty())
            detail = "row " + std::to_string(t) + ": entry " + std::to_string(j) + " (" +
                     (list == &added ? "added" : "dropped") + ") has |s - θ| = " + num(gap) +
                     " > τ = " + num(tj) + " (s = " + num(ref_scores(t, j)) +
                     ", θ = " + num(theta) + ")";
        }
      }
    if (row_unexplained > 0) {
      a.unexplained += static_cast<std::int64_t>(added.size());
      bad(t, detail);
    }
  }
  a.mean_recall = recall_rows > 0 ? recall_sum / static_cast<double>(recall_rows) : 1.0;
  return a;
}

Aligned align_by_index(const Mat& b_vals, const Mat& b_idx, const Mat& a_idx) {
  if (b_vals.rows() != b_idx.rows() || b_vals.cols() != b_idx.cols() ||
      a_idx.rows() != b_idx.rows())
    throw ShapeError("align_by_index: values " + dims(b_vals.rows(), b_vals.cols()) +
                     ", B indices " + dims(b_idx.rows(), b_idx.cols()) + ", A indices " +
                     dims(a_idx.rows(), a_idx.cols()));
  Aligned out;
  out.values = Mat::Constant(a_idx.rows(), a_idx.cols(), std::numeric_limits<double>::quiet_NaN());
  out.mask = Mat::Zero(a_idx.rows(), a_idx.cols());
  for (Eigen::Index t = 0; t < a_idx.rows(); ++t)
    for (Eigen::Index s = 0; s < a_idx.cols(); ++s) {
      bool found = false;
      for (Eigen::Index u = 0; u < b_idx.cols() && !found; ++u)
        if (b_idx(t, u) == a_idx(t, s)) {
          out.values(t, s) = b_vals(t, u);
          out.mask(t, s) = 1;
          found = true;
        }
      out.missing += !found;
    }
  return out;
}

}  // namespace v4ref::compare
