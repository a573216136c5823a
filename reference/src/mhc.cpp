// mHC: mixing logits, pre/post/comb split, Sinkhorn, collapse, write-back and hc_head
// (v4-forward.md §4.1–§4.5, §12). Layout and precision points: see mhc.hpp.
#include "v4ref/ref/mhc.hpp"

#include <cmath>
#include <span>
#include <string>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/norm.hpp"

namespace v4ref::ref {
namespace {

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

std::vector<double> load_sized(const Checkpoint& ckpt, const std::string& name, std::int64_t n,
                               const std::string& expected) {
  std::vector<double> v = load_as_double(ckpt, name);
  if (static_cast<std::int64_t>(v.size()) != n)
    throw ShapeError(name + ": expected " + expected + " (" + std::to_string(n) + " values), got " +
                     std::to_string(v.size()) + " values");
  return v;
}

Vec to_vec(const std::vector<double>& v) {
  return Eigen::Map<const Vec>(v.data(), static_cast<Eigen::Index>(v.size()));
}

void check_streams(const Mat& x, std::int64_t hc_mult, const std::string& what) {
  if (hc_mult < 1 || x.cols() % hc_mult != 0 || x.cols() == 0)
    throw ShapeError(what + ": streams expected [T, " + std::to_string(hc_mult) +
                     " * d] (stream-major), got " + dims(x.rows(), x.cols()));
}

void check_mix(const std::vector<HcMix>& mix, Eigen::Index rows, std::int64_t hc_mult,
               const std::string& what) {
  if (static_cast<Eigen::Index>(mix.size()) != rows)
    throw ShapeError(what + ": expected one HcMix per token (" + std::to_string(rows) + "), got " +
                     std::to_string(mix.size()));
  for (std::size_t t = 0; t < mix.size(); ++t) {
    const HcMix& m = mix[t];
    if (m.pre.size() != hc_mult || m.post.size() != hc_mult || m.comb.rows() != hc_mult ||
        m.comb.cols() != hc_mult)
      throw ShapeError(what + ": HcMix of token " + std::to_string(t) + " expected pre/post [" +
                       std::to_string(hc_mult) + "], comb [" + std::to_string(hc_mult) + ", " +
                       std::to_string(hc_mult) + "], got pre [" + std::to_string(m.pre.size()) +
                       "], post [" + std::to_string(m.post.size()) + "], comb " +
                       dims(m.comb.rows(), m.comb.cols()));
  }
}

}  // namespace

HcParams load_hc_params(const Checkpoint& ckpt, const ModelConfig& cfg,
                        const std::string& layer_prefix, const std::string& which) {
  if (which != "attn" && which != "ffn")
    throw ConfigError("load_hc_params: which must be \"attn\" or \"ffn\", got \"" + which + "\"");
  const std::string base = layer_prefix + "hc_" + which;
  const std::int64_t mix = cfg.hc_mix_dim(), dc = cfg.hc_dim();
  HcParams p;
  p.name = base;
  const auto fn = load_sized(ckpt, base + "_fn", mix * dc, dims(mix, dc));
  p.fn = Eigen::Map<const Mat>(fn.data(), mix, dc);
  p.base = to_vec(load_sized(ckpt, base + "_base", mix, "[" + std::to_string(mix) + "]"));
  p.scale = to_vec(load_sized(ckpt, base + "_scale", 3, "[3]"));
  return p;
}

HcHeadParams load_hc_head_params(const Checkpoint& ckpt, const ModelConfig& cfg,
                                 const std::string& prefix) {
  const std::string base = prefix + "hc_head";
  const std::int64_t hc = cfg.hc_mult, dc = cfg.hc_dim();
  HcHeadParams p;
  p.name = base;
  const auto fn = load_sized(ckpt, base + "_fn", hc * dc, dims(hc, dc));
  p.fn = Eigen::Map<const Mat>(fn.data(), hc, dc);
  p.base = to_vec(load_sized(ckpt, base + "_base", hc, "[" + std::to_string(hc) + "]"));
  p.scale = to_vec(load_sized(ckpt, base + "_scale", 1, "[1]"));
  return p;
}

Mat sinkhorn(const Mat& z, std::int64_t iters, double eps) {
  if (z.rows() != z.cols() || z.rows() == 0)
    throw ShapeError("sinkhorn: logits expected square [n, n], got " + dims(z.rows(), z.cols()));
  if (iters < 1) throw ConfigError("sinkhorn: hc_sinkhorn_iters must be >= 1, got " + std::to_string(iters));
  if (!(eps >= 0) || !std::isfinite(eps))
    throw ConfigError("sinkhorn: hc_eps must be finite and >= 0, got " + std::to_string(eps));
  const Eigen::Index n = z.rows();
  Mat m(n, n);
  // Row softmax (max-subtracted for stability), then + eps.
  for (Eigen::Index j = 0; j < n; ++j) {
    double mx = z(j, 0);
    for (Eigen::Index k = 1; k < n; ++k) mx = std::max(mx, z(j, k));
    double s = 0;
    for (Eigen::Index k = 0; k < n; ++k) s += (m(j, k) = std::exp(z(j, k) - mx));
    for (Eigen::Index k = 0; k < n; ++k) m(j, k) = m(j, k) / s + eps;
  }
  auto col_norm = [&] {
    for (Eigen::Index k = 0; k < n; ++k) {
      double s = 0;
      for (Eigen::Index j = 0; j < n; ++j) s += m(j, k);
      for (Eigen::Index j = 0; j < n; ++j) m(j, k) /= (s + eps);
    }
  };
  auto row_norm = [&] {
    for (Eigen::Index j = 0; j < n; ++j) {
      double s = 0;
      for (Eigen::Index k = 0; k < n; ++k) s += m(j, k);
      for (Eigen::Index k = 0; k < n; ++k) m(j, k) /= (s + eps);
    }
  };
  col_norm();
  for (std::int64_t it = 1; it < iters; ++it) {
    row_norm();
    col_norm();
  }
  return m;
}

Mat hc_mix_logits(const Mat& x, const Mat& fn, double norm_eps, const std::string& name) {
  if (fn.cols() != x.cols())
    throw ShapeError(name + "_fn: expected [mix, " + std::to_string(x.cols()) +
                     "] (the flattened stream width), got " + dims(fn.rows(), fn.cols()));
  Mat mu = x * fn.transpose();  // [T, mix]; Eigen splits products over outputs only: thread-invariant
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double rho = inv_rms(std::span<const double>(x.row(t).data(), static_cast<std::size_t>(x.cols())), norm_eps);
    mu.row(t) *= rho;  // OFF scales the un-normalised product by ρ (§4.1)
  }
  return mu;
}

HcMix hc_split(const Vec& mu, const HcParams& p, std::int64_t hc_mult, std::int64_t sinkhorn_iters,
               double hc_eps) {
  const std::int64_t hc = hc_mult, mix = (2 + hc) * hc;
  if (mu.size() != mix || p.base.size() != mix || p.scale.size() != 3)
    throw ShapeError(p.name + ": expected mixing logits [" + std::to_string(mix) + "], base [" +
                     std::to_string(mix) + "], scale [3]; got [" + std::to_string(mu.size()) + "], [" +
                     std::to_string(p.base.size()) + "], [" + std::to_string(p.scale.size()) + "]");
  HcMix r;
  r.pre.resize(hc);
  r.post.resize(hc);
  Mat z(hc, hc);
  for (std::int64_t k = 0; k < hc; ++k) {
    r.pre(k) = sigmoid(p.scale(0) * mu(k) + p.base(k)) + hc_eps;
    r.post(k) = 2 * sigmoid(p.scale(1) * mu(hc + k) + p.base(hc + k));
  }
  for (std::int64_t j = 0; j < hc; ++j)
    for (std::int64_t k = 0; k < hc; ++k) {
      const std::int64_t i = 2 * hc + hc * j + k;  // mixes order [pre, post, comb row-major]
      z(j, k) = p.scale(2) * mu(i) + p.base(i);
    }
  r.comb = sinkhorn(z, sinkhorn_iters, hc_eps);
  return r;
}

HcPreResult hc_pre(const Mat& x, const HcParams& p, const ModelConfig& cfg,
                   const PrecisionPolicy& policy) {
  check_streams(x, cfg.hc_mult, p.name);
  if (x.cols() != cfg.hc_dim())
    throw ShapeError(p.name + ": streams expected [T, " + std::to_string(cfg.hc_dim()) + "], got " +
                     dims(x.rows(), x.cols()));
  require_finite_mat(x, p.name + " input streams");
  const Mat mu = hc_mix_logits(x, p.fn, cfg.norm_eps, p.name);
  HcPreResult r;
  r.mix.resize(static_cast<std::size_t>(x.rows()));
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    r.mix[static_cast<std::size_t>(t)] =
        hc_split(mu.row(t).transpose(), p, cfg.hc_mult, cfg.hc_sinkhorn_iters, cfg.hc_eps);
  r.u = hc_collapse(x, r.mix, cfg.hc_mult, policy);
  return r;
}

Mat hc_collapse(const Mat& x, const std::vector<HcMix>& mix, std::int64_t hc_mult,
                const PrecisionPolicy& policy) {
  check_streams(x, hc_mult, "hc_collapse");
  check_mix(mix, x.rows(), hc_mult, "hc_collapse");
  const std::int64_t d = x.cols() / hc_mult;
  Mat u = Mat::Zero(x.rows(), d);
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const Vec& pre = mix[static_cast<std::size_t>(t)].pre;
    for (std::int64_t k = 0; k < hc_mult; ++k)
      for (std::int64_t i = 0; i < d; ++i) u(t, i) += pre(k) * x(t, k * d + i);
  }
  round_bf16_if(u, policy, QuantPoint::kBf16Residual);
  return u;
}

Mat hc_post(const Mat& f, const Mat& x, const std::vector<HcMix>& mix, std::int64_t hc_mult,
            const PrecisionPolicy& policy) {
  check_streams(x, hc_mult, "hc_post");
  check_mix(mix, x.rows(), hc_mult, "hc_post");
  const std::int64_t d = x.cols() / hc_mult;
  if (f.rows() != x.rows() || f.cols() != d)
    throw ShapeError("hc_post: sublayer output expected " + dims(x.rows(), d) + ", got " +
                     dims(f.rows(), f.cols()));
  require_finite_mat(f, "hc_post sublayer output");
  Mat y(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const HcMix& m = mix[static_cast<std::size_t>(t)];
    for (std::int64_t k = 0; k < hc_mult; ++k)
      for (std::int64_t i = 0; i < d; ++i) {
        double v = m.post(k) * f(t, i);
        for (std::int64_t j = 0; j < hc_mult; ++j) v += m.comb(j, k) * x(t, j * d + i);  // Cᵀ X
        y(t, k * d + i) = v;
      }
  }
  round_bf16_if(y, policy, QuantPoint::kBf16Residual);
  return y;
}

Mat hc_head(const Mat& x, const HcHeadParams& p, const ModelConfig& cfg,
            const PrecisionPolicy& policy) {
  const std::int64_t hc = cfg.hc_mult;
  if (x.cols() != cfg.hc_dim())
    throw ShapeError(p.name + ": streams expected [T, " + std::to_string(cfg.hc_dim()) + "], got " +
                     dims(x.rows(), x.cols()));
  if (p.fn.rows() != hc || p.base.size() != hc || p.scale.size() < 1)
    throw ShapeError(p.name + ": expected fn [" + std::to_string(hc) + ", " + std::to_string(cfg.hc_dim()) +
                     "], base [" + std::to_string(hc) + "], scale [1]; got fn " + dims(p.fn.rows(), p.fn.cols()) +
                     ", base [" + std::to_string(p.base.size()) + "], scale [" + std::to_string(p.scale.size()) + "]");
  require_finite_mat(x, p.name + " input streams");
  const Mat mu = hc_mix_logits(x, p.fn, cfg.norm_eps, p.name);
  const std::int64_t d = cfg.dim;
  Mat y = Mat::Zero(x.rows(), d);
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (std::int64_t k = 0; k < hc; ++k) {
      const double w = sigmoid(p.scale(0) * mu(t, k) + p.base(k)) + cfg.hc_eps;
      for (std::int64_t i = 0; i < d; ++i) y(t, i) += w * x(t, k * d + i);
    }
  round_bf16_if(y, policy, QuantPoint::kBf16Residual);
  return y;
}

}  // namespace v4ref::ref
