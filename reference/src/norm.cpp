// RMS normalisations (v4-forward.md §2.1, §2.2, §12). See norm.hpp for the emulated bf16 steps.
#include "v4ref/ref/norm.hpp"

#include <cmath>
#include <string>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"

namespace v4ref::ref {
namespace {

void require_eps(double eps, std::string_view name) {
  if (!(eps > 0) || !std::isfinite(eps))
    throw ConfigError(std::string(name) + ": eps must be finite and > 0, got " + std::to_string(eps));
}

// Σ x_i² in index order (fixed order: independent of threads and of Eigen's vectorisation).
double sum_squares(const double* x, std::int64_t n) {
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

}  // namespace

void require_finite_mat(const Mat& m, std::string_view name) {
  for (Eigen::Index r = 0; r < m.rows(); ++r)
    for (Eigen::Index c = 0; c < m.cols(); ++c)
      if (!std::isfinite(m(r, c)))
        throw NumericError(std::string(name) + " contains " + (std::isnan(m(r, c)) ? "NaN" : "Inf") +
                           " at [" + std::to_string(r) + ", " + std::to_string(c) + "]");
}

void require_finite_vec(const Vec& v, std::string_view name) {
  for (Eigen::Index i = 0; i < v.size(); ++i)
    if (!std::isfinite(v(i)))
      throw NumericError(std::string(name) + " contains " + (std::isnan(v(i)) ? "NaN" : "Inf") +
                         " at [" + std::to_string(i) + "]");
}

double inv_rms(std::span<const double> x, double eps) {
  if (x.empty()) throw ShapeError("inv_rms: expected a non-empty vector, got length 0");
  require_eps(eps, "inv_rms");
  const auto n = static_cast<std::int64_t>(x.size());
  return 1.0 / std::sqrt(sum_squares(x.data(), n) / static_cast<double>(n) + eps);
}

Mat rms_norm(const Mat& x, const Vec& weight, double eps, const PrecisionPolicy& policy,
             std::string_view name) {
  if (weight.size() != x.cols())
    throw ShapeError(std::string(name) + ".weight: expected [" + std::to_string(x.cols()) +
                     "] (the input width), got [" + std::to_string(weight.size()) + "]");
  if (x.cols() == 0) throw ShapeError(std::string(name) + ": input " + dims(x.rows(), 0) + " has no columns");
  require_eps(eps, name);
  require_finite_mat(x, std::string(name) + " input");
  require_finite_vec(weight, std::string(name) + ".weight");
  Mat y(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double r = inv_rms(std::span<const double>(x.row(t).data(), static_cast<std::size_t>(x.cols())), eps);
    for (Eigen::Index i = 0; i < x.cols(); ++i) y(t, i) = weight(i) * (x(t, i) * r);
  }
  round_bf16_if(y, policy, QuantPoint::kBf16Norm);
  return y;
}

Mat unweighted_rms_norm(const Mat& x, double eps, std::string_view name) {
  if (x.cols() == 0) throw ShapeError(std::string(name) + ": input " + dims(x.rows(), 0) + " has no columns");
  require_eps(eps, name);
  require_finite_mat(x, std::string(name) + " input");
  Mat y(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double r = inv_rms(std::span<const double>(x.row(t).data(), static_cast<std::size_t>(x.cols())), eps);
    for (Eigen::Index i = 0; i < x.cols(); ++i) y(t, i) = x(t, i) * r;
  }
  return y;
}

Mat head_rms_norm(const Mat& x, std::int64_t n_heads, std::int64_t head_dim, double eps,
                  const PrecisionPolicy& policy, std::string_view name) {
  if (n_heads <= 0 || head_dim <= 0 || x.cols() != n_heads * head_dim)
    throw ShapeError(std::string(name) + ": input expected [T, " + std::to_string(n_heads) + " * " +
                     std::to_string(head_dim) + "], got " + dims(x.rows(), x.cols()));
  require_eps(eps, name);
  require_finite_mat(x, std::string(name) + " input");
  const bool bf16 = policy.on(QuantPoint::kBf16QHeadNorm);
  const double eps_arg = bf16 ? fmt::round_fp32(eps) : eps;  // PyTorch passes ε as an fp32 scalar
  Mat y(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    for (std::int64_t h = 0; h < n_heads; ++h) {
      const double* q = x.row(t).data() + h * head_dim;
      double* out = y.row(t).data() + h * head_dim;
      if (!bf16) {
        const double r = 1.0 / std::sqrt(sum_squares(q, head_dim) / static_cast<double>(head_dim) + eps);
        for (std::int64_t i = 0; i < head_dim; ++i) out[i] = q[i] * r;
        continue;
      }
      double s = 0;
      for (std::int64_t i = 0; i < head_dim; ++i) {
        const double qi = fmt::round_bf16(q[i]);
        s += fmt::round_bf16(qi * qi);
      }
      const double m = fmt::round_bf16(s / static_cast<double>(head_dim));
      const double a = fmt::round_bf16(m + eps_arg);
      const double r = fmt::round_bf16(1.0 / std::sqrt(a));
      for (std::int64_t i = 0; i < head_dim; ++i) out[i] = fmt::round_bf16(fmt::round_bf16(q[i]) * r);
    }
  }
  return y;
}

}  // namespace v4ref::ref
