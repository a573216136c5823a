// Tolerance lookup and allowance formulas (tolerance.hpp). The rows are in tolerance_table.cpp.
#include "v4ref/compare/tolerance.hpp"

#include <cmath>
#include <cstdio>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/trace.hpp"

namespace v4ref::compare {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

bool path_matches(std::string_view row_path, std::string_view path) {
  return row_path == "*" || row_path == path;
}

bool is_trace_key(std::string_view key) { return key.substr(0, 6) == "trace."; }

double rms(const Mat& r) {
  double s = 0;
  std::int64_t n = 0;
  for (Eigen::Index i = 0; i < r.size(); ++i)
    if (std::isfinite(r.data()[i])) {
      s += r.data()[i] * r.data()[i];
      ++n;
    }
  return n > 0 ? std::sqrt(s / static_cast<double>(n)) : 0.0;
}

}  // namespace

std::string_view rule_name(Rule r) {
  switch (r) {
    case Rule::kExact:
      return "exact";
    case Rule::kUlp:
      return "ulp";
    case Rule::kBaseline:
      return "baseline";
    case Rule::kBound:
      return "bound";
    case Rule::kRelRms:
      return "rel_rms";
    case Rule::kNearTieSet:
      return "near_tie_set";
    case Rule::kStatistical:
      return "statistical";
  }
  return "?";
}

const ToleranceRow* find_tolerance(std::string_view key, std::string_view path) {
  for (const ToleranceRow& row : tolerance_table()) {
    if (!path_matches(row.path, path)) continue;
    if (is_trace_key(key) && is_trace_key(row.key)) {
      if (ref::glob_match(row.key, key)) return &row;
    } else if (row.key == key) {
      return &row;
    }
  }
  return nullptr;
}

const ToleranceRow& require_tolerance(std::string_view key, std::string_view path) {
  if (const ToleranceRow* row = find_tolerance(key, path)) return *row;
  std::string have;
  for (const ToleranceRow& row : tolerance_table())
    if (row.key == key) have += (have.empty() ? "" : ", ") + std::string(row.path);
  throw ConfigError(
      "tolerance table: no row for " + std::string(key) + " on path \"" + std::string(path) + "\"" +
      (have.empty() ? " (no row for this key at all)" : " (rows exist for paths: " + have + ")") +
      "; add one to compare/src/tolerance_table.cpp with its derivation");
}

std::string rule_text(const ToleranceRow& row) {
  std::string s = std::string(rule_name(row.rule)) + ": ";
  switch (row.rule) {
    case Rule::kExact:
      s += "k == r";
      break;
    case Rule::kUlp:
      s += "ulp(k, r) <= " + num(row.c);
      break;
    case Rule::kBaseline:
      s += "|k - r| <= " + num(row.c) + " x max_abs(B, R) + " + num(row.floor) + " ulp_out";
      break;
    case Rule::kBound:
      s += "|k - r| <= " + num(row.c) + " x n_eff x u_acc x M + u_out |r| + " + num(row.floor) +
           " ulp_out";
      break;
    case Rule::kRelRms:
      s += "|k - r| <= " + num(row.c) + " |r| + " + num(row.floor) + " rms(r)";
      break;
    case Rule::kNearTieSet:
      s += "sets equal up to swaps within " + num(row.c) + " x allowed(" + std::string(row.aux) +
           ") of θ";
      break;
    case Rule::kStatistical:
      s += "rel_fro <= " + num(row.c);
      break;
  }
  if (row.cos_diff_max > 0) s += ", cos_diff <= " + num(row.cos_diff_max);
  return s;
}

FloatType path_float_type(std::string_view path) {
  return path == "fp64" ? FloatType::kFp64 : FloatType::kFp32;
}

Mat allowance(const ToleranceRow& row, const AllowanceInputs& in) {
  if (in.ref == nullptr) throw Error("allowance: no reference tensor");
  const Mat& r = *in.ref;
  const double r_rms = rms(r);
  Mat a(r.rows(), r.cols());
  switch (row.rule) {
    case Rule::kExact:
      a.setZero();
      return a;
    case Rule::kBaseline:
      for (Eigen::Index i = 0; i < r.size(); ++i) {
        const double ri = std::isfinite(r.data()[i]) ? std::fabs(r.data()[i]) : 0.0;
        a.data()[i] = row.c * in.base_err + row.floor * ulp_of(std::max(ri, r_rms), in.out);
      }
      return a;
    case Rule::kBound: {
      if (in.abs_bound == nullptr || in.abs_bound->rows() != r.rows() ||
          in.abs_bound->cols() != r.cols())
        throw Error("allowance: rule bound of " + std::string(row.key) +
                    " needs the reference's abs-bound tensor M of the output's shape");
      const double g = in.n_eff * unit_roundoff(in.acc);
      const double u_out = in.out == in.acc ? 0.0 : unit_roundoff(in.out);
      const double fl = row.floor * ulp_of(r_rms, in.out);
      for (Eigen::Index i = 0; i < r.size(); ++i)
        a.data()[i] = row.c * g * in.abs_bound->data()[i] + u_out * std::fabs(r.data()[i]) + fl;
      return a;
    }
    case Rule::kRelRms:
      for (Eigen::Index i = 0; i < r.size(); ++i)
        a.data()[i] =
            row.c * (std::isfinite(r.data()[i]) ? std::fabs(r.data()[i]) : 0.0) + row.floor * r_rms;
      return a;
    case Rule::kUlp:
    case Rule::kNearTieSet:
    case Rule::kStatistical:
      break;
  }
  throw Error("allowance: rule " + std::string(rule_name(row.rule)) + " of " +
              std::string(row.key) + " has no elementwise allowance");
}

}  // namespace v4ref::compare
