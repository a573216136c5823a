// Self-checks of the double-precision Muon reference (reference/src/muon.cpp, docs/muon.md):
// the Newton–Schulz schedule against its scalar map and the SVD polar factor, transposes,
// hand-checkable cases, the optimizer step against an independently written loop, and the
// V4 Muon / AdamW parameter split.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "v4ref/ref/checkpoint_layout.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/muon.hpp"

namespace v4ref::ref {
namespace {

// ---------------------------------------------------------------- seeded data (splitmix64)

struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double normal() {  // Box–Muller on our own uniforms
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

MuonMatrix random_matrix(std::int64_t r, std::int64_t c, std::uint64_t seed) {
  Rng rng{seed};
  MuonMatrix m(r, c);
  for (double& x : m.data) x = rng.normal();
  return m;
}

using Dense = Eigen::MatrixXd;

Dense to_eigen(const MuonMatrix& m) {
  Dense d(m.rows, m.cols);
  for (std::int64_t i = 0; i < m.rows; ++i)
    for (std::int64_t j = 0; j < m.cols; ++j) d(i, j) = m.at(i, j);
  return d;
}
MuonMatrix from_eigen(const Dense& d) {
  MuonMatrix m(d.rows(), d.cols());
  for (std::int64_t i = 0; i < m.rows; ++i)
    for (std::int64_t j = 0; j < m.cols; ++j) m.at(i, j) = d(i, j);
  return m;
}

Dense random_orthonormal_columns(std::int64_t r, std::int64_t c, std::uint64_t seed) {
  Eigen::HouseholderQR<Dense> qr(to_eigen(random_matrix(r, c, seed)));
  return qr.householderQ() * Dense::Identity(r, c);
}

// M = U·diag(sigma)·Vᵀ with n = sigma.size() <= m, U [n, n], V [m, n]; also returns U·Vᵀ.
struct Built {
  MuonMatrix m;
  Dense polar;
};
Built with_singular_values(const std::vector<double>& sigma, std::int64_t m, std::uint64_t seed) {
  const auto n = static_cast<std::int64_t>(sigma.size());
  const Dense u = random_orthonormal_columns(n, n, seed);
  const Dense v = random_orthonormal_columns(m, n, seed + 1);
  Dense s = Dense::Zero(n, n);
  for (std::int64_t i = 0; i < n; ++i) s(i, i) = sigma[static_cast<std::size_t>(i)];
  return {from_eigen(u * s * v.transpose()), u * v.transpose()};
}

std::vector<double> log_spaced(double hi, double lo, int count) {
  std::vector<double> v;
  for (int i = 0; i < count; ++i) v.push_back(hi * std::pow(lo / hi, i / double(count - 1)));
  return v;
}

std::vector<double> singular_values(const Dense& d) {
  Eigen::JacobiSVD<Dense> svd(d);
  const Eigen::VectorXd s = svd.singularValues();
  return {s.data(), s.data() + s.size()};
}

// The schedule's scalar map written out here, independently of ns_scalar_map.
double scalar_map(double s, int kj_iters, int conv_iters) {
  for (int i = 0; i < kj_iters; ++i) s = 3.4445 * s - 4.7750 * s * s * s + 2.0315 * std::pow(s, 5);
  for (int i = 0; i < conv_iters; ++i) s = 2.0 * s - 1.5 * s * s * s + 0.5 * std::pow(s, 5);
  return s;
}

// Image of [tau, 1] under the map, on a log grid of 200001 points. The extrema are flat
// (derivative 0), so the grid misses them by O(h²) ≈ 1e-9; the callers add 1e-6.
std::pair<double, double> band(double tau, int kj, int conv) {
  double lo = 1e300, hi = -1e300;
  constexpr int kN = 200000;
  for (int i = 0; i <= kN; ++i) {
    const double v = scalar_map(std::pow(tau, 1.0 - i / double(kN)), kj, conv);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return {lo, hi};
}

NsSchedule schedule_of(int kj, int conv) {
  NsSchedule s;
  if (kj > 0) s.push_back({kNsKellerJordan, kj});
  if (conv > 0) s.push_back({kNsConvergent, conv});
  return s;
}

double max_abs_diff(const MuonMatrix& a, const MuonMatrix& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i) d = std::max(d, std::abs(a.data[i] - b.data[i]));
  return d;
}

// ---------------------------------------------------------------- schedule and scalar map

TEST(MuonNs, ScheduleIsTheV4Hybrid) {
  const NsSchedule s = v4_ns_schedule();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].iterations, 8);
  EXPECT_EQ(s[0].coeffs.a, 3.4445);
  EXPECT_EQ(s[0].coeffs.b, -4.7750);
  EXPECT_EQ(s[0].coeffs.c, 2.0315);
  EXPECT_EQ(s[1].iterations, 2);
  EXPECT_EQ(s[1].coeffs.a, 2.0);
  EXPECT_EQ(s[1].coeffs.b, -1.5);
  EXPECT_EQ(s[1].coeffs.c, 0.5);
  EXPECT_EQ(total_iterations(s), 10);
  for (double x : {1e-6, 1e-3, 0.1, 0.5, 0.9, 1.0})
    EXPECT_NEAR(ns_scalar_map(x, s), scalar_map(x, 8, 2), 1e-15) << "s=" << x;
}

// The bands docs/muon.md states, recomputed: image of [1e-4, 1] after 8 KJ iterations is
// [0.68183, 1.20237]; after one more (2, -1.5, 0.5) step [0.96187, 1.05385]; after the full
// schedule [1, 1.0020174]. From s >= 2e-4 on, the full schedule gives [1, 1.000538].
TEST(MuonNs, BandsOfTheScheduleAsDocumented) {
  const auto [lo8, hi8] = band(1e-4, 8, 0);
  const auto [lo9, hi9] = band(1e-4, 8, 1);
  const auto [lo10, hi10] = band(1e-4, 8, 2);
  const auto [lo10b, hi10b] = band(2e-4, 8, 2);
  EXPECT_NEAR(lo8, 0.681831, 1e-5);
  EXPECT_NEAR(hi8, 1.202369, 1e-5);
  EXPECT_NEAR(lo9, 0.961875, 1e-5);
  EXPECT_NEAR(hi9, 1.053846, 1e-5);
  EXPECT_NEAR(lo10, 1.0, 1e-9);
  EXPECT_NEAR(hi10, 1.0020173, 1e-6);
  EXPECT_NEAR(lo10b, 1.0, 1e-9);
  EXPECT_NEAR(hi10b, 1.000538, 1e-6);
}

// ---------------------------------------------------------------- hand-checkable cases

// A 1x1 matrix [5] normalises to 5/(5 + 1e-7) = 1 − 2e-8; one KJ iteration gives
// p(1) = 3.4445 − 4.7750 + 2.0315 = 0.701 (p'(1) = −0.723 moves it by 1.4e-8);
// one (2, −1.5, 0.5) iteration gives p(1) = 1 (p'(1) = 0).
TEST(MuonNs, OneByOneHandValues) {
  MuonMatrix m(1, 1);
  m.at(0, 0) = 5.0;
  EXPECT_NEAR(newton_schulz(m, schedule_of(1, 0)).at(0, 0), 0.701, 1e-7);
  EXPECT_NEAR(newton_schulz(m, schedule_of(0, 1)).at(0, 0), 1.0, 1e-12);
  m.at(0, 0) = -5.0;  // odd polynomial: the sign survives
  EXPECT_NEAR(newton_schulz(m, schedule_of(1, 0)).at(0, 0), -0.701, 1e-7);
}

// A diagonal [3, 5] matrix: NS acts on each diagonal entry by the scalar map of the
// normalised value, and the off-diagonal entries stay exactly zero.
TEST(MuonNs, DiagonalMatrixMapsEachSingularValue) {
  MuonMatrix m(3, 5);
  const double d[3] = {0.9, -0.3, 0.05};
  for (int i = 0; i < 3; ++i) m.at(i, i) = d[i];
  const double norm = std::sqrt(0.81 + 0.09 + 0.0025);
  const MuonMatrix o = newton_schulz(m, v4_ns_schedule());
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) {
      if (i != j) {
        EXPECT_EQ(o.at(i, j), 0.0) << i << "," << j;
        continue;
      }
      const double s = std::abs(d[i]) / (norm + kNsEps);
      EXPECT_NEAR(o.at(i, i), std::copysign(scalar_map(s, 8, 2), d[i]), 1e-14) << "entry " << i;
    }
}

// ---------------------------------------------------------------- singular values and polar

// Singular values of NS(M) are the scalar map of the normalised input singular values
// (NS(M) = U·φ(Σ/||M||_F)·Vᵀ). For condition numbers 1e3 and 1e6: every output singular value
// equals φ(s_i) to 1e-9 (fp64 rounding amplified by the map's slope, at most 3.4445^8 ≈ 2e4,
// times u = 1.1e-16 times n), and those with s_i >= 1e-4 lie in the band [1, 1.0020174].
TEST(MuonNs, SingularValuesFollowTheScalarMapIllConditioned) {
  for (const double kappa : {1e3, 1e6}) {
    const std::vector<double> sigma = log_spaced(1.0, 1.0 / kappa, 40);
    const Built b = with_singular_values(sigma, 72, 0xC0FFEE + static_cast<std::uint64_t>(kappa));
    double fro = 0;
    for (double s : sigma) fro += s * s;
    fro = std::sqrt(fro);
    const std::vector<double> out = singular_values(to_eigen(newton_schulz(b.m, v4_ns_schedule())));
    std::vector<double> expect;
    for (double s : sigma) expect.push_back(scalar_map(s / (fro + kNsEps), 8, 2));
    std::vector<double> sorted_expect = expect;
    std::sort(sorted_expect.rbegin(), sorted_expect.rend());
    const auto [lo, hi] = band(1e-4, 8, 2);
    int in_band = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
      EXPECT_NEAR(out[i], sorted_expect[i], 1e-9) << "kappa " << kappa << " sv " << i;
      EXPECT_LE(out[i], hi + 1e-6) << "kappa " << kappa;
    }
    for (std::size_t i = 0; i < sigma.size(); ++i)
      if (sigma[i] / fro >= 1e-4) {
        ++in_band;
        EXPECT_GE(expect[i], lo - 1e-6);
        EXPECT_LE(expect[i], hi + 1e-6);
      }
    // Signal check: the band statement covers most singular values (all for 1e3).
    EXPECT_GE(in_band, kappa < 1e4 ? 40 : 25) << "kappa " << kappa;
  }
}

// Distance to the polar factor U·Vᵀ in the spectral norm is max_i |φ_k(s_i) − 1| after k
// iterations. For a matrix with kappa = 10 (all s_i > 1e-4): 8 KJ iterations leave at most
// 0.3182 (band [0.6818, 1.2024]); each (2, −1.5, 0.5) iteration maps an error e to
// 0.5e² − 3.5e³ + 2.5e⁴ − 0.5e⁵ (exact expansion of p(1 − e) − 1), so the distance drops to
// <= 0.0539 and then <= 0.00202.
TEST(MuonNs, ApproachesThePolarFactorAsTheScheduleEnds) {
  const std::vector<double> sigma = log_spaced(1.0, 0.1, 32);
  const Built b = with_singular_values(sigma, 96, 0xAB5EED);
  double fro = 0;
  for (double s : sigma) fro += s * s;
  fro = std::sqrt(fro);
  double dist[3];
  for (int conv = 0; conv < 3; ++conv) {
    const Dense o = to_eigen(newton_schulz(b.m, schedule_of(8, conv)));
    dist[conv] = singular_values(o - b.polar)[0];
    double predicted = 0;
    for (double s : sigma) predicted = std::max(predicted, std::abs(scalar_map(s / (fro + kNsEps), 8, conv) - 1));
    EXPECT_NEAR(dist[conv], predicted, 1e-12) << "8 KJ + " << conv << " convergent";
  }
  const auto next = [](double e) {
    return 0.5 * e * e + 3.5 * e * e * e + 2.5 * std::pow(e, 4) + 0.5 * std::pow(e, 5);
  };
  EXPECT_LE(dist[0], 0.3182);
  EXPECT_LE(dist[1], next(dist[0]) + 1e-14);
  EXPECT_LE(dist[2], next(dist[1]) + 1e-14);
  EXPECT_LE(dist[1], 0.0539);
  EXPECT_LE(dist[2], 0.00202);
  EXPECT_LT(dist[2], dist[1] / 10);  // the quintic steps really converge
  std::printf("polar distance after 8 KJ: %.4e, +1: %.4e, +2: %.4e\n", dist[0], dist[1], dist[2]);
}

// ---------------------------------------------------------------- transposes

// Tall inputs iterate on the transpose: NS(Mᵀ) = NS(M)ᵀ. The implementation builds the same
// internal matrix for both, so agreement is exact; 1e-13 is the documented bound.
TEST(MuonNs, TallAndWideAreTransposes) {
  for (const auto& [r, c] : std::vector<std::pair<int, int>>{{24, 80}, {80, 24}, {33, 33}}) {
    const MuonMatrix m = random_matrix(r, c, 0x7A11 + static_cast<std::uint64_t>(r));
    const MuonMatrix a = transpose(newton_schulz(m, v4_ns_schedule()));
    const MuonMatrix b = newton_schulz(transpose(m), v4_ns_schedule());
    EXPECT_LE(max_abs_diff(a, b), 1e-13) << r << "x" << c;
  }
  // The tall result is (nearly) orthonormal in its columns: ||OᵀO − I||_2 <= band − 1 = 2.1e-3
  // (Gaussian 80x24 matrices have normalised singular values far above 1e-4).
  const Dense o = to_eigen(newton_schulz(random_matrix(80, 24, 5), v4_ns_schedule()));
  const Dense gram = o.transpose() * o - Dense::Identity(24, 24);
  EXPECT_LE(singular_values(gram)[0], 2 * 0.0020174 + 1e-6);
}

// ---------------------------------------------------------------- precision policy

// The bf16/float instantiations run the same schedule: rounding every point to bf16 changes the
// result by bf16-sized amounts (relative Frobenius 1e-3..2e-2), never by O(1). Guards against a
// policy that silently disables itself (error 0) or corrupts the result.
TEST(MuonNs, RoundingPolicyChangesResultsByBf16Amounts) {
  const MuonMatrix m = random_matrix(48, 96, 0xB16);
  NsRounding all{true, true, true, true};
  const MuonMatrix rx = newton_schulz(m, v4_ns_schedule());
  const MuonMatrix rq = newton_schulz(m, v4_ns_schedule(), kNsEps, all, NsAccumulate::kDouble);
  const MuonMatrix bf = newton_schulz(m, v4_ns_schedule(), kNsEps, all, NsAccumulate::kFloat);
  const MuonMatrix f32 = newton_schulz(m, v4_ns_schedule(), kNsEps, {}, NsAccumulate::kFloat);
  const auto rel = [&](const MuonMatrix& a) {
    MuonMatrix d = a;
    for (std::size_t i = 0; i < d.data.size(); ++i) d.data[i] -= rx.data[i];
    return frobenius_norm(d) / frobenius_norm(rx);
  };
  EXPECT_GT(rel(rq), 1e-3);
  EXPECT_LT(rel(rq), 2e-2);
  EXPECT_GT(rel(bf), 1e-3);
  EXPECT_LT(rel(bf), 2e-2);
  EXPECT_GT(rel(f32), 1e-9);  // float accumulation is really float
  EXPECT_LT(rel(f32), 1e-4);  // 10 iterations x ~n·u_fp32 growth
  for (double x : rq.data) EXPECT_EQ(x, static_cast<double>(static_cast<float>(x)));
}

// ---------------------------------------------------------------- the optimizer step

// Independent formulation: plain index loops, explicit transposition, no helpers from muon.cpp.
struct NaiveMuon {
  double lr, mu, wd, gamma;
  bool nesterov;
  std::vector<double> ns(const std::vector<double>& u, int rows, int cols) const {
    const bool tall = rows > cols;
    const int n = tall ? cols : rows, m = tall ? rows : cols;
    std::vector<double> x(static_cast<std::size_t>(n * m));
    double ss = 0;
    for (double v : u) ss += v * v;
    const double den = std::sqrt(ss) + 1e-7;
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j)
        x[static_cast<std::size_t>(tall ? j * m + i : i * m + j)] = u[static_cast<std::size_t>(i * cols + j)] / den;
    const double coef[2][3] = {{3.4445, -4.7750, 2.0315}, {2.0, -1.5, 0.5}};
    for (int it = 0; it < 10; ++it) {
      const double* k = coef[it < 8 ? 0 : 1];
      std::vector<double> a(static_cast<std::size_t>(n * n), 0.0), bm(a.size(), 0.0), y(x.size(), 0.0);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j)
          for (int l = 0; l < m; ++l) a[static_cast<std::size_t>(i * n + j)] += x[static_cast<std::size_t>(i * m + l)] * x[static_cast<std::size_t>(j * m + l)];
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) {
          double a2 = 0;
          for (int l = 0; l < n; ++l) a2 += a[static_cast<std::size_t>(i * n + l)] * a[static_cast<std::size_t>(l * n + j)];
          bm[static_cast<std::size_t>(i * n + j)] = k[1] * a[static_cast<std::size_t>(i * n + j)] + k[2] * a2;
        }
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < m; ++j) {
          double s = 0;
          for (int l = 0; l < n; ++l) s += bm[static_cast<std::size_t>(i * n + l)] * x[static_cast<std::size_t>(l * m + j)];
          y[static_cast<std::size_t>(i * m + j)] = k[0] * x[static_cast<std::size_t>(i * m + j)] + s;
        }
      x = y;
    }
    std::vector<double> o(u.size());
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j)
        o[static_cast<std::size_t>(i * cols + j)] = x[static_cast<std::size_t>(tall ? j * m + i : i * m + j)];
    return o;
  }
  void step(std::vector<double>& w, std::vector<double>& m, const std::vector<double>& g, int rows,
            int cols) const {
    std::vector<double> u(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
      m[i] = mu * m[i] + g[i];
      u[i] = nesterov ? g[i] + mu * m[i] : m[i];
    }
    const std::vector<double> o = ns(u, rows, cols);
    const double scale = gamma * std::sqrt(static_cast<double>(std::max(rows, cols)));
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = w[i] * (1 - lr * wd) - lr * scale * o[i];
  }
};

// Three steps of momentum, Nesterov (on/off), decoupled weight decay and the RMS rescale,
// against the naive loops: agreement to 1e-12 (same arithmetic in fp64, different summation
// order inside the GEMMs; the NS map amplifies rounding by at most a few hundred here).
TEST(MuonStep, MatchesNaiveLoops) {
  for (const bool nesterov : {true, false})
    for (const auto& [r, c] : std::vector<std::pair<int, int>>{{16, 40}, {40, 16}}) {
      MuonHyper h;
      h.lr = 0.03;
      h.momentum = 0.9;
      h.nesterov = nesterov;
      h.weight_decay = 0.1;
      h.rms_scale = 0.2;
      const NaiveMuon naive{h.lr, h.momentum, h.weight_decay, h.rms_scale, nesterov};
      MuonMatrix w = random_matrix(r, c, 1), m(r, c);
      std::vector<double> nw = w.data, nm(w.data.size(), 0.0);
      for (int step = 0; step < 3; ++step) {
        const MuonMatrix g = random_matrix(r, c, 100 + static_cast<std::uint64_t>(step));
        muon_step(w, m, g, h);
        naive.step(nw, nm, g.data, r, c);
      }
      double dw = 0, dm = 0;
      for (std::size_t i = 0; i < nw.size(); ++i) {
        dw = std::max(dw, std::abs(w.data[i] - nw[i]));
        dm = std::max(dm, std::abs(m.data[i] - nm[i]));
      }
      EXPECT_LE(dw, 1e-12) << r << "x" << c << " nesterov " << nesterov;
      EXPECT_EQ(dm, 0.0) << "momentum is elementwise, same operations";
      // The steps really moved the weights (guards a vacuous comparison).
      EXPECT_GT(max_abs_diff(w, random_matrix(r, c, 1)), 1e-2);
    }
}

// With W = 0 and no decay, one step leaves W = −lr·gamma·sqrt(max)·O: its RMS is lr·gamma
// times sqrt(max)·RMS(O) = sqrt(max)·sqrt(n/(n·m)) ≈ 1 for a near-orthogonal O (singular
// values in [1, 1.0020174]), so RMS(W) / (lr·gamma) ∈ [1, 1.0021].
TEST(MuonStep, RescaleMatchesUpdateRms) {
  for (const auto& [r, c] : std::vector<std::pair<int, int>>{{32, 96}, {96, 32}}) {
    MuonHyper h;
    h.lr = 0.01;
    h.weight_decay = 0.0;
    MuonMatrix w(r, c), m(r, c);
    muon_step(w, m, random_matrix(r, c, 77), h);
    const double rms = frobenius_norm(w) / std::sqrt(static_cast<double>(r * c));
    EXPECT_GE(rms / (h.lr * h.rms_scale), 1.0 - 1e-9) << r << "x" << c;
    EXPECT_LE(rms / (h.lr * h.rms_scale), 1.0021) << r << "x" << c;
  }
  MuonHyper h;
  EXPECT_DOUBLE_EQ(muon_update_scale(h, 64, 128), 0.2 * std::sqrt(128.0));
  EXPECT_DOUBLE_EQ(muon_update_scale(h, 4096, 1024), 0.2 * 64.0);
}

TEST(MuonStep, RejectsMismatchedShapes) {
  MuonMatrix w(4, 6), m(4, 6), g(6, 4);
  EXPECT_THROW(muon_step(w, m, g, MuonHyper{}), ShapeError);
  EXPECT_THROW(newton_schulz(MuonMatrix(0, 3), v4_ns_schedule()), ShapeError);
}

// ---------------------------------------------------------------- parameter split

std::int64_t count_group(const std::vector<ParamAssignment>& v, OptimizerGroup g) {
  return std::count_if(v.begin(), v.end(), [g](const ParamAssignment& p) { return p.group == g; });
}
const ParamAssignment& find_param(const std::vector<ParamAssignment>& v, const std::string& name) {
  for (const ParamAssignment& p : v)
    if (p.name == name) return p;
  throw Error("no tensor " + name);
}

// Hand count for V4-Flash (E = 256; 43 layers: 2 SWA, 21 CSA, 20 HCA; MTP SWA; docs/muon.md §2):
//   per block Muon 11 + 3E (hc fn ×2, wq_a, wq_b, wkv, wo_a, wo_b, gate, shared w1..w3, experts),
//   AdamW 9 (2 block norms, q/kv norm, hc base ×2, hc scale ×2, attn_sink), scales 8 + 3E,
//   no-gradient 1 (tid2eid or gate.bias); CSA +6 Muon +4 AdamW +1 scale; HCA +2 Muon +2 AdamW;
//   MTP +3 Muon (e_proj, h_proj, hc_head_fn) +5 AdamW +2 scales; globals Muon 1, AdamW 5.
//   Muon   = 1 + 44·779 + 21·6 + 20·2 + 3        = 34446
//   AdamW  = 5 + 44·9 + 21·4 + 20·2 + 5          = 530
//   scales = 44·776 + 21 + 2                     = 34167
//   no-grad = 44;  total 69187 = expected_tensor_count.
TEST(MuonSplit, FlashCountsPerGroup) {
  const ModelConfig cfg = preset_config("v4-flash");
  const std::vector<ParamAssignment> split = split_parameters(cfg);
  EXPECT_EQ(count_group(split, OptimizerGroup::kMuon), 34446);
  EXPECT_EQ(count_group(split, OptimizerGroup::kAdamW), 530);
  EXPECT_EQ(count_group(split, OptimizerGroup::kQuantScale), 34167);
  EXPECT_EQ(count_group(split, OptimizerGroup::kNoGradient), 44);
  EXPECT_EQ(static_cast<std::int64_t>(split.size()), expected_tensor_count(cfg));
}

TEST(MuonSplit, EveryTensorClassifiedExactlyOnce) {
  for (const char* preset : {"v4-flash", "v4-pro", "tiny-flash", "tiny-pro", "tiny-long"}) {
    const ModelConfig cfg = preset_config(preset);
    const std::vector<TensorSpec> tensors = expected_tensors(cfg);
    const std::vector<ParamAssignment> split = split_parameters(cfg);
    ASSERT_EQ(split.size(), tensors.size()) << preset;
    std::set<std::string> names;
    for (std::size_t i = 0; i < split.size(); ++i) {
      EXPECT_EQ(split[i].name, tensors[i].name) << preset;
      EXPECT_TRUE(names.insert(split[i].name).second) << preset << ": duplicate " << split[i].name;
      EXPECT_NE(std::string(split[i].reason), "") << split[i].name;
      if (split[i].group == OptimizerGroup::kMuon) {
        EXPECT_EQ(split[i].logical_shape.size(), 2u) << split[i].name;
        EXPECT_EQ(split[i].block.rows * split[i].block.count, split[i].logical_shape[0]) << split[i].name;
        EXPECT_EQ(split[i].block.cols, split[i].logical_shape[1]) << split[i].name;
      }
    }
  }
}

TEST(MuonSplit, NamedTensors) {
  const std::vector<ParamAssignment> s = split_parameters(preset_config("v4-flash"));
  EXPECT_EQ(find_param(s, "embed.weight").group, OptimizerGroup::kAdamW);
  EXPECT_EQ(find_param(s, "head.weight").group, OptimizerGroup::kAdamW);
  EXPECT_EQ(find_param(s, "norm.weight").group, OptimizerGroup::kAdamW);
  EXPECT_EQ(find_param(s, "layers.5.attn.wq_a.weight").group, OptimizerGroup::kMuon);
  EXPECT_EQ(find_param(s, "layers.5.attn.wq_a.scale").group, OptimizerGroup::kQuantScale);
  EXPECT_EQ(find_param(s, "layers.5.hc_attn_fn").group, OptimizerGroup::kMuon);
  EXPECT_EQ(find_param(s, "layers.5.hc_attn_base").group, OptimizerGroup::kAdamW);
  EXPECT_EQ(find_param(s, "layers.5.hc_ffn_scale").group, OptimizerGroup::kAdamW);
  EXPECT_EQ(find_param(s, "hc_head_scale").group, OptimizerGroup::kAdamW);
  EXPECT_EQ(find_param(s, "layers.5.attn.attn_sink").group, OptimizerGroup::kAdamW);
  EXPECT_EQ(find_param(s, "layers.2.attn.compressor.ape").group, OptimizerGroup::kAdamW);
  EXPECT_EQ(find_param(s, "layers.0.ffn.gate.tid2eid").group, OptimizerGroup::kNoGradient);
  EXPECT_EQ(find_param(s, "layers.3.ffn.gate.bias").group, OptimizerGroup::kNoGradient);
  EXPECT_EQ(find_param(s, "layers.3.ffn.gate.weight").group, OptimizerGroup::kMuon);
  EXPECT_EQ(find_param(s, "layers.7.ffn.experts.200.w2.weight").group, OptimizerGroup::kMuon);
  const ParamAssignment& e = find_param(s, "layers.7.ffn.experts.200.w2.weight");
  EXPECT_EQ(e.block.rows, 4096);  // fp4 unpacked: logical [4096, 2048], stored [4096, 1024]
  EXPECT_EQ(e.block.cols, 2048);
  const ParamAssignment& woa = find_param(s, "layers.7.attn.wo_a.weight");
  EXPECT_EQ(woa.block.rows, 1024);
  EXPECT_EQ(woa.block.cols, 4096);
  EXPECT_EQ(woa.block.count, 8);
}

// Distinct Muon shapes of V4-Flash, counted by hand (44 blocks = 43 layers + MTP).
TEST(MuonSplit, FlashMatrixShapes) {
  const std::vector<MatrixShapeCount> got = muon_matrix_shapes(preset_config("v4-flash"));
  const std::vector<MatrixShapeCount> want = {
      {4, 16384, 2},        // hc_head_fn: global + MTP
      {24, 16384, 88},      // hc_attn_fn, hc_ffn_fn
      {64, 4096, 21},       // indexer weights_proj (CSA)
      {256, 4096, 86},      // gate 44 + indexer compressor wkv/wgate 2·21
      {512, 4096, 84},      // attn.wkv 44 + HCA compressor wkv/wgate 2·20
      {1024, 4096, 438},    // wq_a 44 + wo_a 44·8 groups + CSA compressor 2·21
      {2048, 4096, 22616},  // experts w1, w3 44·512 + shared 88
      {4096, 2048, 11308},  // experts w2 44·256 + shared 44
      {4096, 4096, 2},      // MTP e_proj, h_proj
      {4096, 8192, 44},     // wo_b
      {8192, 1024, 21},     // indexer wq_b
      {32768, 1024, 44},    // wq_b
  };
  ASSERT_EQ(got.size(), want.size());
  std::int64_t total = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].rows, want[i].rows) << i;
    EXPECT_EQ(got[i].cols, want[i].cols) << i;
    EXPECT_EQ(got[i].count, want[i].count) << got[i].rows << "x" << got[i].cols;
    total += got[i].count;
  }
  EXPECT_EQ(total, 34754);  // 34446 Muon tensors + 44·7 extra wo_a groups
}

// Pro: E = 384, I = 3072, d = 7168, 62 blocks (61 layers + MTP).
TEST(MuonSplit, ProNsShapes) {
  const std::vector<MatrixShapeCount> ns = muon_ns_shapes(preset_config("v4-pro"));
  const auto count_of = [&](std::int64_t n, std::int64_t m) {
    for (const MatrixShapeCount& s : ns)
      if (s.rows == n && s.cols == m) return s.count;
    return std::int64_t{0};
  };
  EXPECT_EQ(count_of(3072, 7168), 62 * 3 * 384 + 62 * 3);  // experts and shared, w2 transposed
  EXPECT_EQ(count_of(1024, 4096), 62 * 16);                // wo_a: 16 groups of [1024, 4096]
  EXPECT_EQ(count_of(1536, 65536), 62);                    // wq_b [65536, 1536]
  for (const MatrixShapeCount& s : ns) EXPECT_LE(s.rows, s.cols);
}

}  // namespace
}  // namespace v4ref::ref
