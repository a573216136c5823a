// Helpers shared by the Muon tests on the CPU executor and on the device: seeded fp32 inputs
// (the project's v4ref::Rng, verification.md §6), inputs with a stated spectrum, the reference
// rounding policy built from the kernel's declared precision points (verification.md §2:
// "policy of(kernel)"), a first-order error model of bf16 Newton–Schulz, and the gates
// (docs/muon.md §4).
//
// Why a model and a subspace (docs/muon.md §4): a bf16 NS cannot resolve an input singular
// value that is below the bf16 rounding noise referred to the input (the quintic lifts small
// singular values by a = 3.4445 per iteration, and its rounding noise with them). Square
// Gaussian matrices have such directions now and then (smallest normalised singular value
// ~ n^-1.5, sometimes 1e-5 for n = 128); there every bf16 implementation, K and B alike, lands
// on its own random output, so neither a fixed relF nor the c·B rule can hold on the whole
// matrix. The gates therefore run on the subspace the model calls resolved; the model also
// gives the condition-dependent size of the loose gate.
#pragma once

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "v4ref/cuda/muon.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/muon.hpp"

namespace v4ref::test {

// ---------------------------------------------------------------- seeds and inputs

// V4REF_SEED (verification.md §6), default 0; decimal or 0x-hex.
inline std::uint64_t global_seed() {
  const char* v = std::getenv("V4REF_SEED");
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const unsigned long long x = std::strtoull(v, &end, 0);
  if (end == v || *end != '\0')
    throw std::invalid_argument(std::string("V4REF_SEED: expected an integer, got \"") + v + "\"");
  return x;
}

// V4REF_SEED_SWEEP (verification.md §6): seeds per case of the slow sweep.
inline int seed_sweep_count(int default_count) {
  const char* v = std::getenv("V4REF_SEED_SWEEP");
  if (v == nullptr || *v == '\0') return default_count;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || x <= 0 || x > 1000000)
    throw std::invalid_argument(
        std::string("V4REF_SEED_SWEEP: expected a count in [1, 1e6], got \"") + v + "\"");
  return static_cast<int>(x);
}

// The hyper-parameters of the three-step end-to-end runs (executor and device alike).
inline ref::MuonHyper end_to_end_hyper() {
  ref::MuonHyper h;
  h.lr = 0.02;
  h.momentum = 0.95;
  h.weight_decay = 0.1;
  h.rms_scale = 0.2;
  return h;
}

inline std::string shape_string(std::int64_t rows, std::int64_t cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

// fp32 data (both sides see the same bits) with N(0, sd²) entries drawn from Rng(seed).
inline std::vector<float> random_fp32(std::int64_t count, std::uint64_t seed, double sd) {
  Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(count));
  for (float& x : v) x = static_cast<float>(sd * rng.normal());
  return v;
}

// sigma[i] = hi·(lo/hi)^(i/(count−1)), i = 0..count−1 (count >= 2).
inline std::vector<double> log_spaced(double hi, double lo, std::int64_t count) {
  std::vector<double> v;
  for (std::int64_t i = 0; i < count; ++i)
    v.push_back(hi * std::pow(lo / hi, static_cast<double>(i) / static_cast<double>(count - 1)));
  return v;
}

// A [rows, cols] fp32 matrix with singular values `sigma` (min(rows, cols) of them):
// P·diag(sigma)·Qᵀ with P, Q orthonormal columns from Householder QR of Gaussian matrices
// (fp64), the product rounded once to fp32. The rounding moves each singular value by at most
// ||ΔM||_2 <= u_fp32·||M||_F (Weyl); the gates use the spectrum of the stored matrix anyway.
inline std::vector<float> fp32_with_spectrum(std::int64_t rows, std::int64_t cols,
                                             const std::vector<double>& sigma, std::uint64_t seed) {
  using Dense = Eigen::MatrixXd;
  const std::int64_t n = std::min(rows, cols), m = std::max(rows, cols);
  if (static_cast<std::int64_t>(sigma.size()) != n)
    throw std::invalid_argument("fp32_with_spectrum: expected " + std::to_string(n) +
                                " singular values, got " + std::to_string(sigma.size()));
  Rng rng(seed);
  Dense gp(n, n), gq(m, n);
  for (Eigen::Index i = 0; i < gp.size(); ++i) gp.data()[i] = rng.normal();
  for (Eigen::Index i = 0; i < gq.size(); ++i) gq.data()[i] = rng.normal();
  const Dense p = Eigen::HouseholderQR<Dense>(gp).householderQ();                          // [n, n]
  const Dense q = Eigen::HouseholderQR<Dense>(gq).householderQ() * Dense::Identity(m, n);  // [m, n]
  const Eigen::Map<const Eigen::VectorXd> s(sigma.data(), n);
  const Dense x = p * s.asDiagonal() * q.transpose();  // [n, m]
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j)
      out[static_cast<std::size_t>(i * cols + j)] =
          static_cast<float>(rows <= cols ? x(i, j) : x(j, i));
  return out;
}

inline ref::MuonMatrix as_matrix(const std::vector<float>& v, std::int64_t r, std::int64_t c) {
  ref::MuonMatrix m(r, c);
  for (std::size_t i = 0; i < v.size(); ++i) m.data[i] = v[i];
  return m;
}

inline ref::MuonMatrix decode_bf16(const std::vector<std::uint16_t>& codes, std::int64_t r,
                                   std::int64_t c) {
  ref::MuonMatrix m(r, c);
  for (std::size_t i = 0; i < codes.size(); ++i) m.data[i] = fmt::bf16_to_double(codes[i]);
  return m;
}

// ---------------------------------------------------------------- differential cases

// One NS input family: Gaussian N(0, 1) entries (kappa == 0; realistic gradients, whose square
// instances have singular values near 0), or a stated spectrum: singular values log-spaced
// from 1 down to 1/kappa, random singular vectors (fp32_with_spectrum).
struct NsCase {
  std::string name;
  std::int64_t rows = 0, cols = 0;
  double kappa = 0;
};

// GoogleTest prints parameters with this (test listings show the case name, not bytes).
inline void PrintTo(const NsCase& c, std::ostream* os) { *os << c.name; }

// The cases of the executor test and the seed sweep (the gpu test adds an odd shape). Names
// are the seed's case string, so a sweep failure at V4REF_SEED = s replays in the executor test.
inline std::vector<NsCase> ns_diff_cases() {
  std::vector<NsCase> v = {{"wide_64x128", 64, 128},
                           {"tall_256x96", 256, 96},
                           {"tall_96x48", 96, 48},
                           {"square_80x80", 80, 80},
                           // Stated spectra whose loose allowance stays below a tenth of the
                           // signal (verification.md §8); harder ones run in the sweep only.
                           {"spectrum_k100_128x128", 128, 128, 100},
                           {"spectrum_k10_256x96", 256, 96, 10}};
  for (const ref::MatrixShapeCount& s : ref::muon_matrix_shapes(preset_config("tiny-flash")))
    if (s.rows * s.cols >= 64 * 64 && s.rows * s.cols <= 256 * 128)
      v.push_back({"tiny_flash_" + shape_string(s.rows, s.cols), s.rows, s.cols});
  return v;
}

// Matrix `index` of case c under global seed `global` (seed(case, tensor, shape) of
// verification.md §6 with tensor "u<index>").
inline std::vector<float> ns_case_input(const NsCase& c, std::uint64_t global, int index = 0) {
  const std::uint64_t seed = derive_seed("muon_ns/" + c.name, "u" + std::to_string(index),
                                         shape_string(c.rows, c.cols), global);
  if (c.kappa == 0) return random_fp32(c.rows * c.cols, seed, 1.0);
  return fp32_with_spectrum(c.rows, c.cols,
                            log_spaced(1.0, 1.0 / c.kappa, std::min(c.rows, c.cols)), seed);
}

// ---------------------------------------------------------------- policy and metrics

// The reference policy of(kernel): built from the CUDA header's declared list.
inline ref::NsRounding rounding_of_kernel() {
  using cuda::NsPrecisionPoint;
  ref::NsRounding r;
  r.input_bf16 = cuda::muon_ns_rounds_at(NsPrecisionPoint::kInputStoreBf16);
  r.gram_bf16 = cuda::muon_ns_rounds_at(NsPrecisionPoint::kGramStoreBf16);
  r.poly_bf16 = cuda::muon_ns_rounds_at(NsPrecisionPoint::kPolyStoreBf16);
  r.update_bf16 = cuda::muon_ns_rounds_at(NsPrecisionPoint::kUpdateStoreBf16);
  return r;
}

// ||k − r||_F / ||r||_F
inline double rel_fro(const ref::MuonMatrix& k, const ref::MuonMatrix& r) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < k.data.size(); ++i) {
    d += (k.data[i] - r.data[i]) * (k.data[i] - r.data[i]);
    n += r.data[i] * r.data[i];
  }
  return std::sqrt(d / n);
}

inline double max_abs(const ref::MuonMatrix& k, const ref::MuonMatrix& r) {
  double d = 0;
  for (std::size_t i = 0; i < k.data.size(); ++i) d = std::max(d, std::abs(k.data[i] - r.data[i]));
  return d;
}

// Spacing of bf16 at |x| (normal range; the subnormal spacing below it).
inline double ulp_bf16(double x) {
  const double a = std::abs(x);
  return a < 0x1.0p-126 ? 0x1.0p-133 : fmt::pow2(fmt::floor_log2(a) - 7);
}

// The three references of verification.md §2 for one input, V4 schedule.
struct NsReferences {
  ref::MuonMatrix rx;  // exact fp64 NS
  ref::MuonMatrix rq;  // fp64, bf16 at the kernel's declared points
  ref::MuonMatrix b;   // fp32 accumulation, the same bf16 points
};

inline NsReferences ns_references(const ref::MuonMatrix& u) {
  const ref::NsSchedule sched = ref::v4_ns_schedule();
  const ref::NsRounding rk = rounding_of_kernel();
  return {ref::newton_schulz(u, sched),
          ref::newton_schulz(u, sched, ref::kNsEps, rk, ref::NsAccumulate::kDouble),
          ref::newton_schulz(u, sched, ref::kNsEps, rk, ref::NsAccumulate::kFloat)};
}

// The NS input U of one Muon step as ref::muon_step forms it (docs/muon.md §1), from the
// momentum m before the step and the gradient g [m.rows, m.cols]; for the error model.
inline ref::MuonMatrix step_ns_input(const ref::MuonMatrix& m, const float* g,
                                     const ref::MuonHyper& h) {
  ref::MuonMatrix u(m.rows, m.cols);
  for (std::size_t i = 0; i < u.data.size(); ++i) {
    const double gi = static_cast<double>(g[i]);
    const double m_new = h.momentum * m.data[i] + gi;
    u.data[i] = h.nesterov ? gi + h.momentum * m_new : m_new;
  }
  return u;
}

// The matrix NS iterates on: [n, m] with n <= m (tall inputs transposed, as in muon.cpp).
inline Eigen::MatrixXd ns_orientation(const ref::MuonMatrix& a) {
  const bool tall = a.rows > a.cols;
  Eigen::MatrixXd x(tall ? a.cols : a.rows, tall ? a.rows : a.cols);
  for (std::int64_t i = 0; i < a.rows; ++i)
    for (std::int64_t j = 0; j < a.cols; ++j) (tall ? x(j, i) : x(i, j)) = a.at(i, j);
  return x;
}

// ---------------------------------------------------------------- first-order error model
//
// Expected ||O − Rx||_F of an NS that stores X0, A, B and X_new in bf16 (the declared points),
// to first order in u = 2^-8, from the spectrum of the input. Derivation (docs/muon.md §4):
//
// 1. NS acts on singular values only: after iteration k the exact X_k has singular values
//    t_k,i = p_k(t_k−1,i) (t_0,i = s_i = sigma_i / (||U||_F + eps)) and the input's singular
//    vectors; the rest of the schedule is the scalar map F_k = p_K−1 ∘ … ∘ p_k, F_k(t_k,i) = phi_i.
// 2. A perturbation E of X_k changes the output by the Fréchet derivative of the generalised
//    matrix function F_k (Daleckii–Krein form; Noferini 2017). In the singular bases,
//    Ẽ = Uᵀ E V: component (i, i) is scaled by F_k'(t_i); for i != j the symmetric part
//    (Ẽ_ij + Ẽ_ji)/2 by alpha_ij = (phi_i − phi_j)/(t_i − t_j) and the antisymmetric part by
//    beta_ij = (phi_i + phi_j)/(t_i + t_j); the m − n columns outside X's row space by phi_i/t_i.
// 3. Additive roundings (X0 and X_new stores): RNE errors are independent, |e| <= u·|z|, uniform
//    within the spacing, so var(e) <= u²z²/3; with delocalised singular vectors every one of the
//    n·m components of Ẽ gets variance u²·||Z||_F² / (3·n·m).
// 4. Multiplicative roundings (A and B stores): the error of B = b·A + c·A² is the symmetric
//    dB = e_B + b·e_A + c·(e_A·A + A·e_A), i.e. dB'_ij = e_B'_ij + (b + c(l_i + l_j))·e_A'_ij in
//    A's eigenbasis (l = t²), with per-entry variances u²·||B||_F²/(3n²) and u²·||A||_F²/(3n²)
//    (doubled on the diagonal, as for a rotated symmetric matrix); it enters X_new as dB·X, i.e.
//    Ẽ_ij = dB'_ij·t_j: symmetric part dB'_ij (t_i + t_j)/2, antisymmetric dB'_ij (t_j − t_i)/2.
//    When the t cluster near 1 this error is almost symmetric, and the convergent steps
//    (p'(1) = 0) remove it.
// 5. The variances add over all roundings and components. Left out: fp32 accumulation
//    (~sqrt(m)·2^-24 relative per element against 2^-8: variance ratio < 1e-6), the fp32 norm
//    and fp32 coefficients (relative 2^-24), and second-order terms (relative size ~ relF).
// Measured relF(K, Rx) is 0.7–0.8 of the prediction over the 1000-seed sweep, up to 0.94 for
// square Gaussian inputs (rows just above the resolution threshold). The bound u²z²/3 holds at
// the bottom of a binade; averaged over log-uniform magnitudes the variance of a bf16 rounding
// is 0.54·u²z²/3, and sqrt(0.54) = 0.74.
//
// Resolved directions: the bf16 noise referred to the input moves s_i by a relative amount r_i
// (rms): a perturbation e of component (i, i) after k iterations moves t_k,i by e, i.e. by
// e/t_k,i relatively, and relative changes pass unchanged through the region p(s) ~ a·s where
// small singular values live (damped once they reach the band). So
//   r_i² = Σ_additive var_k / t_k,i²  +  Σ_iterations var(dB'_ii)·t_k,i² / t_k+1,i².
// Row i is resolved when r_i <= 2^-5: a 6-standard-deviation noise then moves s_i by less than
// a fifth of itself, so its sign cannot flip and the scalar map is close to linear over that
// range (the first-order model applies). For r_i ~ 1 (s_i < ~5e-5 at n = m = 128) the outputs
// of K, B and Rq in that direction are unrelated draws, and even the shared rounding of X0 can
// flip the sign of s_i (output −1 instead of +1 in that direction: seen in the sweep).
struct NsErrorModel {
  std::int64_t n = 0, m = 0;             // X is [n, m], n <= m
  std::vector<double> s;                 // [n] normalised input singular values, ascending
  Eigen::MatrixXd left;                  // [n, n] left singular vectors (columns), same order
  std::vector<double> row_var;           // [n] predicted E||row i of Uᵀ(O − Rx)V||²
  std::vector<double> rel_noise;         // [n] r_i: rms input-referred noise of s_i, relative
  std::vector<Eigen::Index> unresolved;  // i with r_i > kResolvedRelNoise
  double rx_fro = 0;                     // ||Rx||_F on the exact trajectory
  double rel_all = 0;                    // sqrt(Σ row_var) / ||Rx||_F
  double rel_resolved = 0;               // the same over resolved rows only
  double rel_resolved_after_x0 = 0;      // the same without the rounding of X0
};

// 2^-5: see "Resolved directions" above.
inline constexpr double kResolvedRelNoise = 0x1.0p-5;

inline NsErrorModel ns_error_model(const ref::MuonMatrix& u, const ref::NsSchedule& schedule,
                                   double eps = ref::kNsEps) {
  constexpr double kU = 0x1.0p-8;       // bf16 unit roundoff
  constexpr double kVar = kU * kU / 3;  // bound on var(RNE error) / z²
  NsErrorModel md;
  Eigen::MatrixXd x = ns_orientation(u);  // [n, m]
  md.n = x.rows();
  md.m = x.cols();
  const Eigen::Index n = x.rows();
  const double nm = static_cast<double>(md.n) * static_cast<double>(md.m);
  x /= x.norm() + eps;
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(x * x.transpose());  // [n, n]
  md.left = es.eigenvectors();
  md.s.resize(static_cast<std::size_t>(n));
  for (Eigen::Index i = 0; i < n; ++i)
    md.s[static_cast<std::size_t>(i)] = std::sqrt(std::max(0.0, es.eigenvalues()[i]));

  std::vector<ref::NsCoefficients> it;  // one entry per iteration
  for (const ref::NsStage& st : schedule)
    for (int r = 0; r < st.iterations; ++r) it.push_back(st.coeffs);
  const std::size_t kk = it.size();
  const auto nn = static_cast<std::size_t>(n);
  // t[k][i]: singular values after k iterations; df[k][i] = F_k'(t[k][i]).
  std::vector<std::vector<double>> t(kk + 1, std::vector<double>(nn)), df = t;
  t[0] = md.s;
  for (std::size_t k = 0; k < kk; ++k)
    for (std::size_t i = 0; i < nn; ++i) {
      const double v = t[k][i], v2 = v * v;
      t[k + 1][i] = it[k].a * v + (it[k].b * v2 + it[k].c * v2 * v2) * v;
    }
  for (std::size_t i = 0; i < nn; ++i) {
    df[kk][i] = 1;
    for (std::size_t k = kk; k-- > 0;) {
      const double v2 = t[k][i] * t[k][i];
      df[k][i] = df[k + 1][i] * (it[k].a + 3 * it[k].b * v2 + 5 * it[k].c * v2 * v2);
    }
  }
  const std::vector<double>& phi = t[kk];
  // Divided differences of F_k at (t_i, t_j); the limits where they are 0/0.
  const auto alpha = [&](std::size_t k, std::size_t i, std::size_t j) {
    const double d = t[k][i] - t[k][j];
    return std::abs(d) > 1e-12 * std::max(t[k][i], t[k][j]) ? (phi[i] - phi[j]) / d
                                                            : 0.5 * (df[k][i] + df[k][j]);
  };
  const auto beta = [&](std::size_t k, std::size_t i, std::size_t j) {
    const double d = t[k][i] + t[k][j];
    return d > 0 ? (phi[i] + phi[j]) / d : df[k][i];
  };
  md.row_var.assign(nn, 0.0);
  std::vector<double> r2(nn, 0.0);  // r_i²
  std::vector<double> row_var_x0;   // row_var after the X0 term alone
  // Additive store of a matrix with ||Z||_F = ||X_k||_F, followed by F_k.
  const auto additive = [&](std::size_t k) {
    double z2 = 0;
    for (double v : t[k]) z2 += v * v;
    const double var = kVar * z2 / nm;  // per component of Ẽ
    for (std::size_t i = 0; i < nn; ++i) {
      const double rect = beta(k, i, i);  // phi_i / t_i
      md.row_var[i] += var * (df[k][i] * df[k][i] + static_cast<double>(md.m - md.n) * rect * rect);
      if (t[k][i] > 0) r2[i] += var / (t[k][i] * t[k][i]);
      for (std::size_t j = 0; j < i; ++j) {
        const double a = alpha(k, i, j), b = beta(k, i, j);
        const double row = var * (a * a + b * b) / 2;  // Ẽ_ij, Ẽ_ji independent
        md.row_var[i] += row;
        md.row_var[j] += row;
      }
    }
  };
  additive(0);  // X0 = bf16(U / (||U||_F + eps))
  row_var_x0 = md.row_var;
  for (std::size_t k = 0; k < kk; ++k) {
    double a_fro2 = 0, b_fro2 = 0;
    for (double v : t[k]) {
      const double l = v * v, bv = it[k].b * l + it[k].c * l * l;
      a_fro2 += l * l;
      b_fro2 += bv * bv;
    }
    const double var_a = kVar * a_fro2 / static_cast<double>(n * n);
    const double var_b = kVar * b_fro2 / static_cast<double>(n * n);
    for (std::size_t i = 0; i < nn; ++i)
      for (std::size_t j = 0; j <= i; ++j) {
        const double li = t[k][i] * t[k][i], lj = t[k][j] * t[k][j];
        const double w = it[k].b + it[k].c * (li + lj);
        const double var = var_b + w * w * var_a;
        if (i == j) {  // diagonal of a rotated symmetric matrix: twice the variance
          const double d = df[k + 1][i] * t[k][i];
          md.row_var[i] += 2 * var * d * d;
          if (t[k + 1][i] > 0) r2[i] += 2 * var * (t[k][i] / t[k + 1][i]) * (t[k][i] / t[k + 1][i]);
          continue;
        }
        const double a = alpha(k + 1, i, j), b = beta(k + 1, i, j);
        const double ps = (t[k][i] + t[k][j]) / 2, pa = (t[k][j] - t[k][i]) / 2;
        md.row_var[i] += var * (a * ps + b * pa) * (a * ps + b * pa);
        md.row_var[j] += var * (a * ps - b * pa) * (a * ps - b * pa);
      }
    additive(k + 1);  // X_new = bf16(a·X + B·X)
  }
  double rx2 = 0, all = 0, res = 0, res_after_x0 = 0;
  for (double v : phi) rx2 += v * v;
  md.rx_fro = std::sqrt(rx2);
  md.rel_noise.resize(nn);
  for (std::size_t i = 0; i < nn; ++i) {
    // s_i = 0 (rank-deficient input): nothing to resolve, r_i = inf.
    md.rel_noise[i] = t[0][i] > 0 ? std::sqrt(r2[i]) : HUGE_VAL;
    all += md.row_var[i];
    if (md.rel_noise[i] > kResolvedRelNoise)
      md.unresolved.push_back(static_cast<Eigen::Index>(i));
    else {
      res += md.row_var[i];
      res_after_x0 += md.row_var[i] - row_var_x0[i];
    }
  }
  md.rel_all = std::sqrt(all) / md.rx_fro;
  md.rel_resolved = std::sqrt(res) / md.rx_fro;
  md.rel_resolved_after_x0 = std::sqrt(res_after_x0) / md.rx_fro;
  return md;
}

// ---------------------------------------------------------------- gates

// c of the baseline rule (verification.md §4, forward outputs).
inline constexpr double kNsBaselineC = 2.0;
// Loose gate relF_R(K, Rx) <= kappa·(model prediction). The model is an rms prediction with
// the variance bound u²z²/3; measured/predicted is at most 0.94 over the sweep (see
// ns_error_model). kappa = 4 is the smallest integer that keeps the worst ratio of the
// 1000-seed sweep below 0.25 (verification.md §4 calibration rule; measured 0.236, kappa = 3
// would give 0.31). Expected to fail a design whose error exceeds that of the declared bf16
// points by 4.3–5.4× (4 / 0.94 to 4 / 0.74); a kernel that stores two bits coarser than it
// declares should fail the tight gate already (its own noise ×4: relF(K, Rq) ~
// sqrt(16 + 1)·0.74·model₁ = 3·model₁ > 2·model₁).
inline constexpr double kNsModelKappa = 4.0;

struct NsGateReport {
  std::int64_t unresolved = 0;
  double smallest_s = 0;
  // relative Frobenius errors of the resolved rows, normalised by the full ||reference||_F
  double k_rq = 0, b_rq = 0, k_rx = 0, b_rx = 0;
  double k_rx_all = 0, b_rx_all = 0;  // whole matrix, for the report
  double floor_f = 0;
  double model_rel = 0;      // model prediction on the resolved rows
  double tight_floor = 0;    // the same without the rounding of X0 (model₁)
  double tight_ratio = 0;    // k_rq / (c·max(b_rq, tight_floor) + floor)
  double elem_ratio = 0;     // max_i |P(K − Rq)|_i / (c·max(max|P(B − Rq)|, e) + 2·ulp(Rq_i))
  bool b_stand_in = false;   // tight_floor > b_rq: the stand-in set the tight allowance
  double loose_ratio = 0;    // k_rx / (c·b_rx + floor)
  double model_ratio = 0;    // k_rx / (kappa·model_rel)
  double b_model_ratio = 0;  // the same for B (printed: the baseline obeys the model too)

  std::string line() const {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "unresolved %lld (s_min %.2e)  relF_R K/Rq %.3e B/Rq %.3e K/Rx %.3e B/Rx %.3e"
                  " model %.3e (after X0 %.3e) | all K/Rx %.3e B/Rx %.3e | ratios tight %.3f elem"
                  " %.3f loose %.3f model %.3f (B %.3f)%s",
                  static_cast<long long>(unresolved), smallest_s, k_rq, b_rq, k_rx, b_rx, model_rel,
                  tight_floor, k_rx_all, b_rx_all, tight_ratio, elem_ratio, loose_ratio,
                  model_ratio, b_model_ratio, b_stand_in ? "  [tight: B stand-in]" : "");
    return buf;
  }
  bool pass() const {
    return tight_ratio <= 1 && elem_ratio <= 1 && loose_ratio <= 1 && model_ratio <= 1;
  }
};

// ||Q_Rᵀ(k − r)||_F / ||r||_F: relative Frobenius error on the rows md resolves (NS orientation).
inline double resolved_rel_fro(const NsErrorModel& md, const ref::MuonMatrix& k,
                               const ref::MuonMatrix& r) {
  const Eigen::MatrixXd rx = ns_orientation(r), e = ns_orientation(k) - rx;  // [n, m]
  double unres2 = 0;
  for (Eigen::Index i : md.unresolved) unres2 += (md.left.col(i).transpose() * e).squaredNorm();
  return std::sqrt(std::max(0.0, e.squaredNorm() - unres2)) / rx.norm();
}

// All gates of docs/muon.md §4 for one matrix: k (kernel or executor), rq, b, rx as MuonMatrix
// of the input's shape, md = ns_error_model(input).
inline NsGateReport ns_gates(const NsErrorModel& md, const ref::MuonMatrix& k,
                             const ref::MuonMatrix& rq, const ref::MuonMatrix& b,
                             const ref::MuonMatrix& rx) {
  const Eigen::MatrixXd kx = ns_orientation(k), qx = ns_orientation(rq), bx = ns_orientation(b),
                        xx = ns_orientation(rx);                              // [n, m]
  Eigen::MatrixXd qu(md.n, static_cast<Eigen::Index>(md.unresolved.size()));  // [n, |U|]
  for (std::size_t c = 0; c < md.unresolved.size(); ++c)
    qu.col(static_cast<Eigen::Index>(c)) = md.left.col(md.unresolved[c]);
  // Error restricted to the resolved rows: E − Q_U·(Q_Uᵀ·E).
  const auto resolved = [&](const Eigen::MatrixXd& e) -> Eigen::MatrixXd {
    return e - qu * (qu.transpose() * e);
  };
  NsGateReport g;
  g.unresolved = static_cast<std::int64_t>(md.unresolved.size());
  g.smallest_s = md.s.empty() ? 0 : md.s.front();
  const double fq = qx.norm(), fx = xx.norm();
  const Eigen::MatrixXd ekq = resolved(kx - qx), ebq = resolved(bx - qx);
  g.k_rq = ekq.norm() / fq;
  g.b_rq = ebq.norm() / fq;
  g.k_rx = resolved(kx - xx).norm() / fx;
  g.b_rx = resolved(bx - xx).norm() / fx;
  g.k_rx_all = (kx - xx).norm() / fx;
  g.b_rx_all = (bx - xx).norm() / fx;
  // Floor: two bf16 ulps at the largest output on one element, as a relative Frobenius error
  // (verification.md §4: the floor keeps B == Rq from forcing K == Rq bitwise).
  g.floor_f = 2 * ulp_bf16(qx.cwiseAbs().maxCoeff()) / fq;
  // The model is normalised by ||Rx||_F of the exact trajectory; fx is the same to 1e-15.
  g.model_rel = md.rel_resolved;
  // Tight gate: the baseline rule with the degenerate case B ≈ Rq covered. B and Rq round at
  // the same points and differ only by fp32 vs fp64 accumulation, so B can make the same
  // rounding decisions as Rq for many iterations (measured: relF(B, Rq) = 0 for some 96x48
  // inputs where the usual value is 5e-3). K accumulates in another order and parts from Rq at
  // its first legitimate rounding flip; the chaotic KJ band (|p'| up to 3.9) grows that flip
  // into independent rounding noise of the later points. So B is replaced by a B that parted
  // from Rq right after X0 (X0 is rounded alike on both sides, up to isolated flips) whenever
  // that one is farther: two independent realisations of the noise of every point after X0,
  // sqrt(2)·sqrt(0.54)·model₁ ≈ model₁ in rms (0.54: see ns_error_model), where model₁ is the
  // model without the X0 term. verification.md §4: the floor prevents the degenerate case
  // B == Rq.
  g.tight_floor = md.rel_resolved_after_x0;
  g.b_stand_in = g.tight_floor > g.b_rq;
  g.tight_ratio = g.k_rq / (kNsBaselineC * std::max(g.b_rq, g.tight_floor) + g.floor_f);
  g.loose_ratio = g.k_rx / (kNsBaselineC * g.b_rx + g.floor_f);
  // Elementwise, the same: max_abs of that B stands in for max_abs(B, Rq) — rms
  // model₁·||Rx||_F/sqrt(n·m) per element, times sqrt(2·ln(n·m)) for the largest of n·m
  // normal values.
  const double cells = static_cast<double>(md.n) * static_cast<double>(md.m);
  const double e_model = g.tight_floor * md.rx_fro * std::sqrt(2 * std::log(cells) / cells);
  const double mb = kNsBaselineC * std::max(ebq.cwiseAbs().maxCoeff(), e_model);
  for (Eigen::Index i = 0; i < ekq.size(); ++i)
    g.elem_ratio =
        std::max(g.elem_ratio, std::abs(ekq.data()[i]) / (mb + 2 * ulp_bf16(qx.data()[i])));
  g.model_ratio = g.k_rx / (kNsModelKappa * g.model_rel);
  g.b_model_ratio = g.b_rx / (kNsModelKappa * g.model_rel);
  return g;
}

}  // namespace v4ref::test
