// The CUDA mHC kernels run from their own source (cuda/src/mhc_kernels.cuh) in the SIMT executor
// (docs/simt.md), against the double reference (reference/src/mhc.cpp): label cpu, no GPU needed
// (docs/cuda-mhc-compressor.md §2.4).
//
// References (verification.md §2), all on the bits the kernel sees:
//   Rq  reference under store_bf16_residual, the kernel's declared rounding points
//       (kMhcPrecisionPoints): write-back and collapse rounded to bf16, the rest double.
//       The pre part is teacher-forced on the kernel's own X' (the bf16 values the next layer
//       reads), and the collapse on the kernel's own pre, so each output is judged on exactly its
//       own arithmetic.
//   Rx  the exact reference from the same stored inputs (no rounding anywhere).
//   B   a plain fp32 implementation written here (sequential fp32 sums over 4d, std::exp,
//       per-element division): "an honest implementation in the kernel's precision" for the
//       baseline rule (the mHC reference is double-only, not templated on its accumulator).
// Gates, with their derivations (docs/cuda-mhc-compressor.md §2.4):
//   x_out, u (bf16)   K in [bf16(s − γ_n·M), bf16(s + γ_n·M)], s the exact value: equal to Rq or
//                     an explained flip (n = 5 fp32 roundings for the write-back, 4 for the
//                     collapse; M the absolute-value sum of the terms)
//   μ (fp32)          |K − Rq| <= (1.5·h + 5)·u32·M + (h + 5)·2^-149/sqrt(norm_eps): γ_h for the
//                     summation tree of height h (Tiling::sum_height), half of it again through
//                     ρ, five roundings for mean, +eps, sqrt, 1/x and the product, and one
//                     subnormal spacing per operation for underflow (ρ <= 1/sqrt(eps));
//                     M = ρ·Σ|fn|·|x| from the reference's own function on |X'| and |fn|
//   pre, post, comb   max|K − Rq| <= 2·max|B − Rq| + 1e-7 per tensor (baseline rule, c = 2)
//   loose (K vs Rx)   coefficients: |K − Rx| <= 1e-4 + 2·|R(K's X') − Rx| (the table's 1e-4
//                     beyond what the declared bf16 rounding of X' itself causes; pre-only: 1e-4);
//                     x_out <= 2 bf16 ulp + γ5·M; u <= 2 ulp + γ4·M_u + the X' rounding and the
//                     loose coefficient allowance carried through Σ pre_k X'_k
// Every case also checks: all outputs finite, no poison left in any output, a second run with
// the other poison family is bitwise equal, the signal is at least 10× the median allowance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../common/mhc_inputs.hpp"
#include "v4ref/cuda/mhc.hpp"
#include "v4ref/cuda/mhc_simt.hpp"
#include "v4ref/cuda/mhc_tile.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/mhc.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref {
namespace {

namespace mhc = cuda::mhc;
using ref::Mat;
using ref::Vec;
using test::hc_params_of;
using test::MhcInputs;
using test::scale_streams;
using test::seed_from_env;
using test::synthetic_mhc_inputs;
using DiffCase = test::MhcCase;

constexpr double kU32 = 0x1.0p-24;

double dbl(float x) { return static_cast<double>(x); }

// ---------------------------------------------------------------- running the executor

struct KernelOut {
  std::vector<std::uint16_t> x_out, u;
  std::vector<float> coef, mu;
};

// The kernel's own source (cuda/src/mhc_kernels.cuh) in the SIMT executor, on the launch
// geometry of `tl` (two persistent clusters where there are two batches, as on the device).
KernelOut run_executor(const mhc::Tiling& tl, const MhcInputs& in, std::uint16_t poison16,
                       std::uint32_t poison32) {
  cuda::MhcSimtOptions o;
  o.cluster = tl.cluster;
  o.clusters = 2;
  o.poison_u16 = poison16;
  o.poison_f32 = poison32;
  cuda::MhcSimtOutputs r = cuda::mhc_pre_simt(in.problem(), o);
  EXPECT_TRUE(r.guards_intact) << in.name;
  return KernelOut{std::move(r.x_out), std::move(r.u), std::move(r.coef), std::move(r.mu)};
}

// ---------------------------------------------------------------- the plain fp32 baseline B

struct Baseline {
  std::vector<float> pre, post, comb;  // [T, 4], [T, 4], [T, 16]
};

float sigmoid_plain(float z) { return 1.0f / (1.0f + std::exp(-z)); }

Baseline baseline_fp32(const std::vector<std::uint16_t>& xs, const MhcInputs& in) {
  const std::int64_t n = 4 * in.d;
  Baseline b;
  for (std::int64_t t = 0; t < in.tokens; ++t) {
    float ss = 0;
    for (std::int64_t c = 0; c < n; ++c) {
      const float v = fmt::bf16_to_float(xs[static_cast<std::size_t>(t * n + c)]);
      ss += v * v;
    }
    const float rho = 1.0f / std::sqrt(ss / static_cast<float>(n) + in.s.norm_eps);
    float mu[24];
    for (int r = 0; r < 24; ++r) {
      float acc = 0;
      for (std::int64_t c = 0; c < n; ++c)
        acc += fmt::bf16_to_float(xs[static_cast<std::size_t>(t * n + c)]) *
               in.fn[static_cast<std::size_t>(r * n + c)];
      mu[r] = acc * rho;
    }
    for (int k = 0; k < 4; ++k) {
      b.pre.push_back(sigmoid_plain(in.s.scale[0] * mu[k] + in.base[static_cast<std::size_t>(k)]) +
                      in.s.hc_eps);
      b.post.push_back(2.0f * sigmoid_plain(in.s.scale[1] * mu[4 + k] +
                                            in.base[static_cast<std::size_t>(4 + k)]));
    }
    float m[4][4];
    for (int j = 0; j < 4; ++j) {
      float z[4], mx = -std::numeric_limits<float>::infinity(), s = 0;
      for (int k = 0; k < 4; ++k) {
        z[k] = in.s.scale[2] * mu[8 + 4 * j + k] + in.base[static_cast<std::size_t>(8 + 4 * j + k)];
        mx = std::max(mx, z[k]);
      }
      for (int k = 0; k < 4; ++k) s += (m[j][k] = std::exp(z[k] - mx));
      for (int k = 0; k < 4; ++k) m[j][k] = m[j][k] / s + in.s.hc_eps;
    }
    const auto col = [&] {
      for (int k = 0; k < 4; ++k) {
        float s = 0;
        for (int j = 0; j < 4; ++j) s += m[j][k];
        for (int j = 0; j < 4; ++j) m[j][k] /= (s + in.s.hc_eps);
      }
    };
    col();
    for (int it = 1; it < in.s.sinkhorn_iters; ++it) {
      for (int j = 0; j < 4; ++j) {
        float s = 0;
        for (int k = 0; k < 4; ++k) s += m[j][k];
        for (int k = 0; k < 4; ++k) m[j][k] /= (s + in.s.hc_eps);
      }
      col();
    }
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 4; ++k) b.comb.push_back(m[j][k]);
  }
  return b;
}

// ---------------------------------------------------------------- comparison

Mat bf16_mat(const std::vector<std::uint16_t>& v, std::int64_t rows, std::int64_t cols) {
  Mat m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = fmt::bf16_to_double(v[static_cast<std::size_t>(i)]);
  return m;
}

std::vector<ref::HcMix> mixes_of(const std::vector<float>& rows, std::int64_t tokens) {
  std::vector<ref::HcMix> v(static_cast<std::size_t>(tokens));
  for (std::int64_t t = 0; t < tokens; ++t) {
    const float* r = rows.data() + t * mhc::kMix;
    ref::HcMix& m = v[static_cast<std::size_t>(t)];
    m.pre.resize(4);
    m.post.resize(4);
    m.comb.resize(4, 4);
    for (int k = 0; k < 4; ++k) {
      m.pre(k) = r[k];
      m.post(k) = r[4 + k];
      for (int j = 0; j < 4; ++j) m.comb(j, k) = r[8 + 4 * j + k];
    }
  }
  return v;
}

double bf16_ulp(double x) {
  const double a = std::max(std::abs(x), 0x1.0p-126);
  return std::ldexp(1.0, fmt::floor_log2(a) - 7);
}

// bf16 outputs: K = bf16(ŝ) with the kernel's fp32 value ŝ within γ·M of the exact s, so K must
// lie in [bf16(s − γ·M), bf16(s + γ·M)] (rounding is monotone). K == Rq = bf16(s) is the common
// case; any other K in the interval is an explained flip (verification.md §2: one step when
// γ·M is below an ulp; several steps are possible only where the sum cancels to far below M).
struct FlipReport {
  std::size_t unexplained = 0, flips = 0, first_bad = 0;
  double worst = 0;  // largest |K − Rq| among flips, in bf16 steps of Rq's magnitude
};
FlipReport check_bf16(const std::vector<std::uint16_t>& k, const Mat& rq, const Mat& exact,
                      const Mat& m_abs, double gamma) {
  FlipReport r;
  for (Eigen::Index i = 0; i < rq.size(); ++i) {
    const std::uint16_t kc = k[static_cast<std::size_t>(i)];
    if (kc == fmt::bf16_encode(rq.data()[i])) continue;
    const double kv = fmt::bf16_to_double(kc), s = exact.data()[i], slack = gamma * m_abs.data()[i];
    if (fmt::round_bf16(s - slack) <= kv && kv <= fmt::round_bf16(s + slack)) {
      ++r.flips;
      r.worst = std::max(r.worst, std::abs(kv - rq.data()[i]) / bf16_ulp(rq.data()[i]));
    } else if (r.unexplained++ == 0) {
      r.first_bad = static_cast<std::size_t>(i);
    }
  }
  return r;
}

double gamma_n(int n) { return n * kU32 / (1 - n * kU32); }

struct CaseReport {
  double mu_ratio = 0, pre_ratio = 0, post_ratio = 0, comb_ratio = 0;
  double loose_coef = 0, loose_x = 0, loose_u = 0;
  FlipReport x_flips, u_flips;
  double mu_signal_ratio = 0;  // rms(μ) / median(allowed μ)
};

double ratio_or_zero(double num, double den) { return num == 0 ? 0 : num / den; }

// Runs every gate of the file header on one case; returns the measurements.
CaseReport check_case(const mhc::Tiling& tl, const MhcInputs& in) {
  const std::string where = in.name + " (cluster " + std::to_string(tl.cluster) + ", W " +
                            std::to_string(tl.warps) + ", chunks " + std::to_string(tl.chunks) +
                            ") V4REF_SEED=" + std::to_string(seed_from_env());
  const std::int64_t T = in.tokens, d = in.d;
  const KernelOut k = run_executor(tl, in, 0x7FC1, 0x7FC0DEADu);
  const KernelOut k2 = run_executor(tl, in, 0x7F7F, fmt::float_bits(1e20f));
  // Poison, determinism, finiteness.
  EXPECT_EQ(k.x_out, k2.x_out) << where << ": x_out depends on the poison";
  EXPECT_EQ(k.u, k2.u) << where << ": u depends on the poison";
  EXPECT_EQ(0, std::memcmp(k.coef.data(), k2.coef.data(), k.coef.size() * 4))
      << where << ": coef depends on the poison";
  EXPECT_EQ(0, std::memcmp(k.mu.data(), k2.mu.data(), k.mu.size() * 4))
      << where << ": mu depends on the poison";
  for (std::uint16_t h : k.x_out)
    EXPECT_TRUE(std::isfinite(fmt::bf16_to_double(h))) << where << ": x_out not finite";
  for (std::uint16_t h : k.u)
    EXPECT_TRUE(std::isfinite(fmt::bf16_to_double(h))) << where << ": u not finite";
  for (float v : k.coef) EXPECT_TRUE(std::isfinite(v)) << where << ": coef not finite";
  for (float v : k.mu) EXPECT_TRUE(std::isfinite(v)) << where << ": mu not finite";

  const ref::HcParams p = hc_params_of(in);
  const PrecisionPolicy rq_policy = PrecisionPolicy::exact().enable(QuantPoint::kBf16Residual);
  const Mat x = bf16_mat(in.x, T, 4 * d);
  CaseReport rep;
  // ---- write-back (fused): x_out vs Rq, explained flips
  Mat xk = x;  // the streams the pre part sees
  if (in.fused) {
    const Mat f = bf16_mat(in.f, T, d);
    const std::vector<ref::HcMix> mix_in = mixes_of(in.coef_in, T);
    const Mat rq = ref::hc_post(f, x, mix_in, 4, rq_policy);
    const Mat ex = ref::hc_post(f, x, mix_in, 4, PrecisionPolicy::exact());
    std::vector<ref::HcMix> mix_abs = mix_in;
    for (auto& m : mix_abs) {
      m.post = m.post.cwiseAbs();
      m.comb = m.comb.cwiseAbs();
    }
    const Mat m_abs =
        ref::hc_post(f.cwiseAbs(), x.cwiseAbs(), mix_abs, 4, PrecisionPolicy::exact());
    rep.x_flips = check_bf16(k.x_out, rq, ex, m_abs, gamma_n(5));
    EXPECT_EQ(rep.x_flips.unexplained, 0u)
        << where << ": x_out unexplained mismatch, first at " << rep.x_flips.first_bad;
    xk = bf16_mat(k.x_out, T, 4 * d);
    // Loose: x_out vs Rx within 2 bf16 ulp plus the fp32 chain's γ5·M (cancellation).
    for (Eigen::Index i = 0; i < ex.size(); ++i)
      rep.loose_x =
          std::max(rep.loose_x, std::abs(xk.data()[i] - ex.data()[i]) /
                                    (2 * bf16_ulp(ex.data()[i]) + gamma_n(5) * m_abs.data()[i]));
  }
  // ---- mixing logits: bound ratio
  const Mat mu_rq = ref::hc_mix_logits(xk, p.fn, in.s.norm_eps, p.name);
  const Mat mu_abs = ref::hc_mix_logits(xk.cwiseAbs(), p.fn.cwiseAbs(), in.s.norm_eps, p.name);
  const double kappa_mu = (1.5 * tl.sum_height() + 5) * kU32;
  // Underflow: each of the h + 5 operations may lose up to one fp32 subnormal spacing 2^-149,
  // scaled by at most ρ <= 1/sqrt(norm_eps).
  const double floor_mu =
      (tl.sum_height() + 5) * 0x1.0p-149 / std::sqrt(static_cast<double>(in.s.norm_eps));
  std::vector<double> allowed_mu;
  double mu_sq = 0;
  for (std::int64_t t = 0; t < T; ++t)
    for (int r = 0; r < 24; ++r) {
      const double allowed = kappa_mu * mu_abs(t, r) + floor_mu;
      allowed_mu.push_back(allowed);
      mu_sq += mu_rq(t, r) * mu_rq(t, r);
      rep.mu_ratio = std::max(
          rep.mu_ratio,
          std::abs(dbl(k.mu[static_cast<std::size_t>(t * 24 + r)]) - mu_rq(t, r)) / allowed);
    }
  std::nth_element(allowed_mu.begin(),
                   allowed_mu.begin() + static_cast<std::ptrdiff_t>(allowed_mu.size() / 2),
                   allowed_mu.end());
  rep.mu_signal_ratio =
      std::sqrt(mu_sq / static_cast<double>(T * 24)) / allowed_mu[allowed_mu.size() / 2];
  EXPECT_LE(rep.mu_ratio, 1.0) << where << ": μ over its summation bound";
  EXPECT_GE(rep.mu_signal_ratio, 10.0)
      << where << ": μ allowance not small against the signal (vacuous)";
  // ---- coefficients: baseline rule
  std::vector<std::uint16_t> xk_bits = in.fused ? k.x_out : in.x;
  const Baseline b = baseline_fp32(xk_bits, in);
  double err_k[3] = {0, 0, 0}, err_b[3] = {0, 0, 0};
  std::vector<ref::HcMix> mix_rq(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) {
    const ref::HcMix m =
        ref::hc_split(mu_rq.row(t).transpose(), p, 4, in.s.sinkhorn_iters, in.s.hc_eps);
    mix_rq[static_cast<std::size_t>(t)] = m;
    const float* kr = k.coef.data() + t * 24;
    for (int i = 0; i < 4; ++i) {
      err_k[0] = std::max(err_k[0], std::abs(dbl(kr[i]) - m.pre(i)));
      err_b[0] =
          std::max(err_b[0], std::abs(dbl(b.pre[static_cast<std::size_t>(t * 4 + i)]) - m.pre(i)));
      err_k[1] = std::max(err_k[1], std::abs(dbl(kr[4 + i]) - m.post(i)));
      err_b[1] = std::max(err_b[1],
                          std::abs(dbl(b.post[static_cast<std::size_t>(t * 4 + i)]) - m.post(i)));
    }
    for (int j = 0; j < 4; ++j)
      for (int i = 0; i < 4; ++i) {
        err_k[2] = std::max(err_k[2], std::abs(dbl(kr[8 + 4 * j + i]) - m.comb(j, i)));
        err_b[2] = std::max(
            err_b[2],
            std::abs(dbl(b.comb[static_cast<std::size_t>(t * 16 + 4 * j + i)]) - m.comb(j, i)));
      }
  }
  rep.pre_ratio = ratio_or_zero(err_k[0], 2 * err_b[0] + 1e-7);
  rep.post_ratio = ratio_or_zero(err_k[1], 2 * err_b[1] + 1e-7);
  rep.comb_ratio = ratio_or_zero(err_k[2], 2 * err_b[2] + 1e-7);
  EXPECT_LE(rep.pre_ratio, 1.0) << where << ": pre " << err_k[0] << " vs baseline " << err_b[0];
  EXPECT_LE(rep.post_ratio, 1.0) << where << ": post " << err_k[1] << " vs baseline " << err_b[1];
  EXPECT_LE(rep.comb_ratio, 1.0) << where << ": comb " << err_k[2] << " vs baseline " << err_b[2];
  // ---- collapse, teacher-forced on K's pre
  const std::vector<ref::HcMix> mix_k = mixes_of(k.coef, T);
  const Mat u_rq = ref::hc_collapse(xk, mix_k, 4, rq_policy);
  const Mat u_ex = ref::hc_collapse(xk, mix_k, 4, PrecisionPolicy::exact());
  std::vector<ref::HcMix> mix_k_abs = mix_k;
  for (auto& m : mix_k_abs) m.pre = m.pre.cwiseAbs();
  const Mat u_m = ref::hc_collapse(xk.cwiseAbs(), mix_k_abs, 4, PrecisionPolicy::exact());
  rep.u_flips = check_bf16(k.u, u_rq, u_ex, u_m, gamma_n(4));
  EXPECT_EQ(rep.u_flips.unexplained, 0u)
      << where << ": u unexplained mismatch, first at " << rep.u_flips.first_bad;
  // ---- loose gates against Rx from the original inputs. The declared bf16 rounding of X' alone
  // moves the coefficients by |R(K's X') − Rx| (about 1e-3 for O(1) streams); the kernel may add
  // at most 1e-4 beyond twice that.
  Mat x_rx = x;
  if (in.fused)
    x_rx =
        ref::hc_post(bf16_mat(in.f, T, d), x, mixes_of(in.coef_in, T), 4, PrecisionPolicy::exact());
  const Mat mu_rx = ref::hc_mix_logits(x_rx, p.fn, in.s.norm_eps, p.name);
  std::vector<ref::HcMix> mix_rx(static_cast<std::size_t>(T));
  std::vector<double> pre_allow(static_cast<std::size_t>(T * 4));
  for (std::int64_t t = 0; t < T; ++t) {
    mix_rx[static_cast<std::size_t>(t)] =
        ref::hc_split(mu_rx.row(t).transpose(), p, 4, in.s.sinkhorn_iters, in.s.hc_eps);
    const ref::HcMix& m = mix_rx[static_cast<std::size_t>(t)];
    const ref::HcMix& q = mix_rq[static_cast<std::size_t>(t)];
    const float* kr = k.coef.data() + t * 24;
    const auto loose = [&](float kv, double rx, double rtf) {
      const double allowed = 1e-4 + 2 * std::abs(rtf - rx);
      rep.loose_coef = std::max(rep.loose_coef, std::abs(dbl(kv) - rx) / allowed);
      return allowed;
    };
    for (int i = 0; i < 4; ++i) {
      pre_allow[static_cast<std::size_t>(t * 4 + i)] = loose(kr[i], m.pre(i), q.pre(i));
      loose(kr[4 + i], m.post(i), q.post(i));
      for (int j = 0; j < 4; ++j) loose(kr[8 + 4 * j + i], m.comb(j, i), q.comb(j, i));
    }
  }
  // u: 2 bf16 ulp + the collapse's γ4·M, plus what the declared X' rounding and the loose
  // coefficient allowance carry through Σ pre_k X'_k.
  const Mat u_rx = ref::hc_collapse(x_rx, mix_rx, 4, PrecisionPolicy::exact());
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < d; ++i) {
      double carried = 0;
      for (int kk = 0; kk < 4; ++kk) {
        const double pre_k = mix_rx[static_cast<std::size_t>(t)].pre(kk);
        carried += std::abs(pre_k) * std::abs(xk(t, kk * d + i) - x_rx(t, kk * d + i)) +
                   pre_allow[static_cast<std::size_t>(t * 4 + kk)] * std::abs(xk(t, kk * d + i));
      }
      const double allowed = 2 * bf16_ulp(u_rx(t, i)) + gamma_n(4) * u_m(t, i) + carried;
      rep.loose_u = std::max(
          rep.loose_u,
          std::abs(fmt::bf16_to_double(k.u[static_cast<std::size_t>(t * d + i)]) - u_rx(t, i)) /
              allowed);
    }
  EXPECT_LE(rep.loose_coef, 1.0) << where << ": coefficients vs Rx over 1e-4";
  EXPECT_LE(rep.loose_x, 1.0) << where << ": x_out vs Rx over 2 bf16 ulp";
  EXPECT_LE(rep.loose_u, 1.0) << where << ": u vs Rx over its loose allowance";
  std::printf(
      "%-34s S=%-2d W=%-2d h=%-3d mu %.3f (signal %.0fx) pre %.3f post %.3f comb %.3f | "
      "flips x %zu (max %.0f step) u %zu (max %.0f step) | loose coef %.3f x %.3f u %.3f\n",
      in.name.c_str(), tl.cluster, tl.warps, tl.sum_height(), rep.mu_ratio, rep.mu_signal_ratio,
      rep.pre_ratio, rep.post_ratio, rep.comb_ratio, rep.x_flips.flips, rep.x_flips.worst,
      rep.u_flips.flips, rep.u_flips.worst, rep.loose_coef, rep.loose_x, rep.loose_u);
  return rep;
}

// ---------------------------------------------------------------- unit checks of the shared math

TEST(MhcExecutor, DeclaredPrecisionPoints) {
  EXPECT_TRUE(cuda::mhc_rounds_at(cuda::MhcPrecisionPoint::kStreamsStoreBf16));
  EXPECT_TRUE(cuda::mhc_rounds_at(cuda::MhcPrecisionPoint::kCollapseStoreBf16));
  EXPECT_TRUE(cuda::mhc_rounds_at(cuda::MhcPrecisionPoint::kMixFp32));
  EXPECT_TRUE(cuda::mhc_rounds_at(cuda::MhcPrecisionPoint::kCoefFp32));
}

// The host bf16 formula equals the project codec (fmt::bf16_encode) on every float whose top 20
// bits vary and low 12 bits take the rounding-critical patterns, plus specials.
TEST(MhcExecutor, Bf16ConversionMatchesCodec) {
  const std::uint32_t lows[] = {0x000, 0x001, 0x7FF, 0x800, 0x801, 0xFFF, 0x7FFF & 0xFFF};
  std::size_t checked = 0;
  for (std::uint32_t hi = 0; hi < (1u << 20); ++hi)
    for (std::uint32_t lo : lows) {
      const std::uint32_t u = (hi << 12) | lo;
      const float x = fmt::float_from_bits(u);
      if (x != x) continue;
      ASSERT_EQ(mhc::bf16_rne_bits(x), fmt::bf16_encode(x)) << std::hex << u;
      ++checked;
    }
  for (std::uint32_t u :
       {0x00008000u, 0x7F7F8000u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x3F808000u, 0x3F818000u})
    EXPECT_EQ(mhc::bf16_rne_bits(fmt::float_from_bits(u)),
              fmt::bf16_encode(fmt::float_from_bits(u)))
        << std::hex << u;
  EXPECT_EQ(mhc::bf16_rne_bits(std::numeric_limits<float>::quiet_NaN()), 0x7FC0);
  EXPECT_GT(checked, 7000000u);
}

// exp_f32 against the double exp: at most 2 ulp over the whole finite range, exact limits.
TEST(MhcExecutor, ExpF32WithinTwoUlp) {
  double worst = 0;
  float worst_x = 0;
  for (float x = -103.0f; x <= 88.7f;
       x = std::nextafter(x + 1e-5f * std::max(1.0f, std::abs(x)), 1e9f)) {
    const double r = std::exp(static_cast<double>(x));
    const float k = mhc::exp_f32(x);
    const double ulp = std::ldexp(1.0, std::max(fmt::floor_log2(r), -126) - 23);
    const double e = std::abs(dbl(k) - r) / ulp;
    if (e > worst) {
      worst = e;
      worst_x = x;
    }
  }
  std::printf("exp_f32: worst error %.3f ulp at x = %.9g\n", worst, static_cast<double>(worst_x));
  EXPECT_LE(worst, 2.0) << "at x = " << worst_x;
  EXPECT_EQ(mhc::exp_f32(0.0f), 1.0f);
  EXPECT_EQ(mhc::exp_f32(-200.0f), 0.0f);
  EXPECT_TRUE(std::isinf(mhc::exp_f32(89.0f)));
  EXPECT_TRUE(std::isnan(mhc::exp_f32(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(mhc::sigmoid_f32(-1000.0f), 0.0f);
  EXPECT_EQ(mhc::sigmoid_f32(1000.0f), 1.0f);
}

// The kernel's Sinkhorn on a spiky 4x4 against the reference's (§4.3), and the documented
// row/column sums after 20 steps.
TEST(MhcExecutor, SinkhornMatchesReferenceOnSpikyLogits) {
  Rng rng(derive_seed("mhc_sinkhorn", "z", "4x4", seed_from_env()));
  for (int trial = 0; trial < 200; ++trial) {
    Mat z(4, 4);
    float m[16];
    const double spread = trial < 100 ? 3.0 : 30.0;
    for (int i = 0; i < 16; ++i) {
      m[i] = static_cast<float>(spread * rng.normal());
      z.data()[i] = m[i];
    }
    const Mat r = ref::sinkhorn(z, 20, 1e-6);
    mhc::sinkhorn4(m, 20, 1e-6f);
    for (int i = 0; i < 16; ++i) {
      EXPECT_TRUE(std::isfinite(m[i]));
      EXPECT_NEAR(m[i], r.data()[i], 2e-6) << "trial " << trial << " entry " << i;
    }
  }
}

TEST(MhcExecutor, TilingsOfTheV4Shapes) {
  const mhc::Tiling flash = mhc::make_tiling(4096, 16), pro = mhc::make_tiling(7168, 16),
                    flash8 = mhc::make_tiling(4096, 8), tiny = mhc::make_tiling(128, 16);
  EXPECT_EQ(flash.warps * flash.chunks * 8, 256);
  EXPECT_EQ(pro.warps * pro.chunks * 8, 448);
  EXPECT_EQ(flash8.warps * flash8.chunks * 8, 512);
  EXPECT_EQ(tiny.warps, 1);
  EXPECT_EQ(tiny.chunks, 1);
  for (const mhc::Tiling& t : {flash, pro, flash8, tiny}) EXPECT_LE(t.warps, mhc::kMaxStreamWarps);
  EXPECT_THROW(mhc::make_tiling(4100, 16), ShapeError);
  EXPECT_THROW(mhc::make_tiling(4096, 12), ShapeError);
}

// ---------------------------------------------------------------- differential cases

class MhcExecutorDiff : public ::testing::TestWithParam<DiffCase> {};

TEST_P(MhcExecutorDiff, Gates) {
  const DiffCase& c = GetParam();
  check_case(mhc::make_tiling(c.d, c.cluster),
             synthetic_mhc_inputs("mhc/" + c.name, c.tokens, c.d, c.fused));
}

INSTANTIATE_TEST_SUITE_P(Cases, MhcExecutorDiff,
                         ::testing::Values(DiffCase{"flash_fused_T33_S16", 33, 4096, true, 16},
                                           DiffCase{"flash_fused_T17_S8", 17, 4096, true, 8},
                                           DiffCase{"flash_pre_T17_S16", 17, 4096, false, 16},
                                           DiffCase{"pro_fused_T33_S16", 33, 7168, true, 16},
                                           DiffCase{"pro_pre_T1_S16", 1, 7168, false, 16},
                                           DiffCase{"d512_fused_T32_S16", 32, 512, true, 16},
                                           DiffCase{"d512_fused_T97_S4", 97, 512, true, 4},
                                           DiffCase{"d128_fused_T65_S1", 65, 128, true, 1}),
                         [](const ::testing::TestParamInfo<DiffCase>& i) { return i.param.name; });

// ---------------------------------------------------------------- adversarial inputs

TEST(MhcExecutorAdversarial, HugeStreams) {  // |x| ~ 2^40: Σx² ~ 2^91, still far from fp32 overflow
  MhcInputs in = synthetic_mhc_inputs("mhc/adv_huge", 33, 512, true);
  const int e[4] = {40, 40, 40, 40};
  scale_streams(in, e);
  check_case(mhc::make_tiling(512, 16), in);
}

TEST(MhcExecutorAdversarial, TinyStreams) {  // |x| ~ 2^-120: bf16 subnormals, x² underflows in fp32
  MhcInputs in = synthetic_mhc_inputs("mhc/adv_tiny", 33, 512, false);
  const int e[4] = {-120, -120, -120, -120};
  scale_streams(in, e);
  check_case(mhc::make_tiling(512, 16), in);
}

TEST(MhcExecutorAdversarial, MixedStreamMagnitudes) {  // one stream 2^30 larger, one 2^30 smaller
  MhcInputs in = synthetic_mhc_inputs("mhc/adv_mixed", 33, 512, true);
  const int e[4] = {30, 0, 0, -30};
  scale_streams(in, e);
  check_case(mhc::make_tiling(512, 16), in);
}

TEST(MhcExecutorAdversarial,
     SpikySinkhornLogits) {  // s2 = 30, comb base ±8: saturated softmax rows
  MhcInputs in = synthetic_mhc_inputs("mhc/adv_spiky", 40, 512, true);
  in.s.scale[2] = 30.0f;
  for (int i = 8; i < 24; ++i) in.base[static_cast<std::size_t>(i)] = (i % 3 == 0) ? 8.0f : -8.0f;
  check_case(mhc::make_tiling(512, 16), in);
}

TEST(MhcExecutorAdversarial, CancellingStreamsAndZeroTokens) {
  // Stream 1 = −stream 0 and stream 3 = −stream 2 (+ one bf16 step), F = 0 on half the tokens;
  // token 5 all zero (ρ = 1/sqrt(eps), μ = 0).
  MhcInputs in = synthetic_mhc_inputs("mhc/adv_cancel", 33, 512, true);
  const std::int64_t d = in.d;
  for (std::int64_t t = 0; t < in.tokens; ++t)
    for (std::int64_t i = 0; i < d; ++i) {
      auto at = [&](int k) -> std::uint16_t& {
        return in.x[static_cast<std::size_t>(t * 4 * d + k * d + i)];
      };
      at(1) = static_cast<std::uint16_t>(at(0) ^ 0x8000);
      at(3) = static_cast<std::uint16_t>((at(2) ^ 0x8000) + ((i & 1) ? 1 : 0));
      if (t % 2 == 0) in.f[static_cast<std::size_t>(t * d + i)] = 0;
    }
  for (std::int64_t c = 0; c < 4 * d; ++c) in.x[static_cast<std::size_t>(5 * 4 * d + c)] = 0;
  check_case(mhc::make_tiling(512, 16), in);
}

// ---------------------------------------------------------------- the tiny checkpoints' real
// weights

// The chain through every layer of a tiny checkpoint (test::chain_launch): each launch gets the
// previous launch's kernel outputs (x_out, coef) as inputs and passes every gate.
void run_checkpoint_chain(const std::string& preset_dir, int cluster) {
  const auto [cfg, ckpt] = test::open_tiny_checkpoint(preset_dir);
  const std::int64_t T = 45;
  const mhc::Tiling tl = mhc::make_tiling(cfg.dim, cluster);
  std::vector<std::uint16_t> x = test::chain_start_streams(preset_dir, T, cfg.dim);
  std::vector<float> coef;
  for (std::int64_t l = 0; l < cfg.n_layers; ++l)
    for (const char* which : {"attn", "ffn"}) {
      const ref::HcParams hp = ref::load_hc_params(ckpt, cfg, layer_config(cfg, l).prefix, which);
      const MhcInputs in = test::chain_launch(preset_dir, cfg, hp, T, x, coef);
      for (Eigen::Index i = 0; i < hp.fn.size(); ++i)
        ASSERT_EQ(static_cast<double>(in.fn[static_cast<std::size_t>(i)]), hp.fn.data()[i])
            << in.name << ": fn is not fp32";
      check_case(tl, in);
      const KernelOut k = run_executor(tl, in, 0x7FC1, 0x7FC0DEADu);
      if (in.fused) x = k.x_out;
      coef = k.coef;
    }
}

TEST(MhcExecutorCheckpoint, TinyFlashChain) { run_checkpoint_chain("tiny-flash-s0", 16); }
TEST(MhcExecutorCheckpoint, TinyProChain) { run_checkpoint_chain("tiny-pro-s0", 8); }
TEST(MhcExecutorCheckpoint, TinyLongChain) { run_checkpoint_chain("tiny-long-s0", 16); }

// ---------------------------------------------------------------- layout and invariance

// The fused result of a token does not depend on the batch it sits in or on T (each token's
// sums follow the same tiling): token t alone equals token t inside a batch of 45.
TEST(MhcExecutor, BatchInvariance) {
  const MhcInputs all = synthetic_mhc_inputs("mhc/batch_invariance", 45, 512, true);
  const mhc::Tiling tl = mhc::make_tiling(512, 16);
  const KernelOut ka = run_executor(tl, all, 0x7FC1, 0x7FC0DEADu);
  for (std::int64_t t : {0, 31, 32, 44}) {
    MhcInputs one = all;
    one.tokens = 1;
    one.x.assign(all.x.begin() + t * 4 * 512, all.x.begin() + (t + 1) * 4 * 512);
    one.f.assign(all.f.begin() + t * 512, all.f.begin() + (t + 1) * 512);
    one.coef_in.assign(all.coef_in.begin() + t * 24, all.coef_in.begin() + (t + 1) * 24);
    const KernelOut k1 = run_executor(tl, one, 0x7FC1, 0x7FC0DEADu);
    EXPECT_TRUE(std::equal(k1.u.begin(), k1.u.end(), ka.u.begin() + t * 512)) << "token " << t;
    EXPECT_EQ(0, std::memcmp(k1.coef.data(), ka.coef.data() + t * 24, 24 * 4)) << "token " << t;
    EXPECT_TRUE(std::equal(k1.x_out.begin(), k1.x_out.end(), ka.x_out.begin() + t * 4 * 512))
        << "token " << t;
  }
}

// The standalone write-back equals the fused launch's x_out (same per-element function).
TEST(MhcExecutor, StandaloneWriteBackEqualsFused) {
  const MhcInputs in = synthetic_mhc_inputs("mhc/post_only", 37, 512, true);
  const KernelOut k = run_executor(mhc::make_tiling(512, 16), in, 0x7FC1, 0x7FC0DEADu);
  EXPECT_EQ(cuda::mhc_post_simt(in.problem()), k.x_out);
}

// Structured input: identity comb, post = 0 and one-hot fn rows make the transpose and the
// stream/element layout visible: X' = X exactly, μ_r picks one element, u = Σ pre·X.
TEST(MhcExecutor, IdentityMixingIsExact) {
  MhcInputs in = synthetic_mhc_inputs("mhc/identity", 33, 512, true);
  for (std::int64_t t = 0; t < in.tokens; ++t) {
    float* r = in.coef_in.data() + t * 24;
    for (int k = 0; k < 4; ++k) {
      r[4 + k] = 0.0f;
      for (int j = 0; j < 4; ++j) r[8 + 4 * j + k] = j == k ? 1.0f : 0.0f;
    }
  }
  std::fill(in.fn.begin(), in.fn.end(), 0.0f);
  for (int r = 0; r < 24; ++r)
    in.fn[static_cast<std::size_t>(r * 4 * 512 + (r % 4) * 512 + (37 * r) % 512)] = 1.0f;
  const KernelOut k = run_executor(mhc::make_tiling(512, 16), in, 0x7FC1, 0x7FC0DEADu);
  EXPECT_EQ(k.x_out, in.x);
  for (std::int64_t t = 0; t < in.tokens; ++t) {
    double ss = 0;
    for (std::int64_t c = 0; c < 4 * 512; ++c)
      ss += std::pow(fmt::bf16_to_double(in.x[static_cast<std::size_t>(t * 2048 + c)]), 2);
    const double rho = 1 / std::sqrt(ss / 2048 + 1e-6);
    for (int r = 0; r < 24; ++r) {
      const double xv = fmt::bf16_to_double(
          in.x[static_cast<std::size_t>(t * 2048 + (r % 4) * 512 + (37 * r) % 512)]);
      EXPECT_NEAR(k.mu[static_cast<std::size_t>(t * 24 + r)], xv * rho,
                  1e-5 * std::abs(xv * rho) + 1e-30)
          << t << "," << r;
    }
  }
}

}  // namespace
}  // namespace v4ref
