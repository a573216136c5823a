// The CUDA Muon path's math, run on the CPU (cuda/include/v4ref/cuda/muon_ns_tile.hpp), against
// the double reference (reference/src/muon.cpp): label cpu, no GPU needed (docs/muon.md §4).
//
// References (verification.md §2): Rx = exact fp64 NS; Rq = fp64 NS rounding to bf16 at the
// points the CUDA header declares; B = the same reference with fp32 accumulation and those
// roundings. Gates (verification.md §4–5, row muon.ns): baseline gate with c = 2 on the relative
// Frobenius error (and elementwise on max_abs), loose gate rel_F(K, Rx) <= 2e-2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

// By path: cpu tests do not have cuda/include on their include path, and these headers need
// no CUDA toolkit (docs/muon.md §3).
#include "v4ref/cuda/muon.hpp"
#include "v4ref/cuda/muon_ns_tile.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/muon.hpp"
#include "../common/muon_test_support.hpp"

namespace v4ref {
namespace {

using test::max_abs;
using test::rel_fro;
using test::rounding_of_kernel;
using test::ulp_bf16;

namespace ns = cuda::ns;
using ref::MuonMatrix;

struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

std::uint64_t seed_of(const std::string& s) {  // fnv1a64 of the case string
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

// fp32 data (both sides see the same bits) with N(0, sd²) entries.
std::vector<float> random_fp32(std::int64_t count, std::uint64_t seed, double sd) {
  Rng rng{seed};
  std::vector<float> v(static_cast<std::size_t>(count));
  for (float& x : v) x = static_cast<float>(sd * rng.normal());
  return v;
}

MuonMatrix as_matrix(const std::vector<float>& v, std::int64_t r, std::int64_t c) {
  MuonMatrix m(r, c);
  for (std::size_t i = 0; i < v.size(); ++i) m.data[i] = v[i];
  return m;
}

MuonMatrix decode(const std::vector<std::uint16_t>& codes, std::int64_t r, std::int64_t c) {
  MuonMatrix m(r, c);
  for (std::size_t i = 0; i < codes.size(); ++i) m.data[i] = fmt::bf16_to_double(codes[i]);
  return m;
}



// ---------------------------------------------------------------- declarations agree

TEST(MuonExecutor, PrecisionPointsAndCoefficientsMatchTheReference) {
  const ref::NsRounding r = rounding_of_kernel();
  EXPECT_TRUE(r.input_bf16 && r.gram_bf16 && r.poly_bf16 && r.update_bf16);
  EXPECT_TRUE(cuda::muon_ns_rounds_at(cuda::NsPrecisionPoint::kNormSumsqFp32));
  const std::vector<ns::StageF> k = cuda::v4_ns_stages();
  const ref::NsSchedule s = ref::v4_ns_schedule();
  ASSERT_EQ(k.size(), s.size());
  for (std::size_t i = 0; i < k.size(); ++i) {
    EXPECT_EQ(k[i].iterations, s[i].iterations);
    EXPECT_EQ(k[i].a, static_cast<float>(s[i].coeffs.a));
    EXPECT_EQ(k[i].b, static_cast<float>(s[i].coeffs.b));
    EXPECT_EQ(k[i].c, static_cast<float>(s[i].coeffs.c));
  }
}

// ---------------------------------------------------------------- hand-checkable

// U = [[1]], one KJ iteration: denom = fp32(1 + 1e-7) = 1.00000012, X0 = bf16(0.99999988) = 1;
// A = 1, A² = 1; B = fma(2.0315, 1, −4.775) = −2.7435 -> bf16 −2.75 (spacing 2^-6 in [2, 4));
// X = fma(3.4445, 1, −2.75) = 0.6945 -> bf16 0.6953125 (spacing 2^-8 in [0.5, 1)).
// The exact map gives 0.701; Rq (fp64 with the same roundings) gives the same 0.6953125.
TEST(MuonExecutor, OneByOneHandValue) {
  const std::vector<float> u = {1.0f};
  const std::vector<std::uint16_t> o =
      ns::executor_newton_schulz(u.data(), 1, 1, {{3.4445f, -4.7750f, 2.0315f, 1}}, 1e-7f);
  EXPECT_EQ(fmt::bf16_to_double(o[0]), 0.6953125);
  const MuonMatrix rq = ref::newton_schulz(as_matrix(u, 1, 1), ref::keller_jordan_ns_schedule(1),
                                           ref::kNsEps, rounding_of_kernel());
  EXPECT_EQ(rq.data[0], 0.6953125);
}

// The fp32 sum of squares over 8192 ordered partials and a pairwise tree: within the
// recursive-summation bound γ_k·Σu² with k = count/8192 + 13 terms on the longest path
// (Higham ch. 3), and not bitwise equal to the fp64 sum (it really is fp32).
TEST(MuonExecutor, SumOfSquaresWithinFp32Bound) {
  const std::vector<float> u = random_fp32(300 * 257, 11, 1.0);
  double exact = 0;
  for (float x : u) exact += static_cast<double>(x) * static_cast<double>(x);
  const double got = ns::executor_sumsq(u.data(), static_cast<std::int64_t>(u.size()));
  const double k = std::ceil(static_cast<double>(u.size()) / ns::kNormParts) + 13;
  EXPECT_LE(std::abs(got - exact), k * 0x1.0p-24 * exact);
  EXPECT_NE(got, exact);
}

// ---------------------------------------------------------------- differential cases

struct Case {
  std::string name;
  std::int64_t rows, cols;
};

std::vector<Case> cases() {
  std::vector<Case> v = {{"wide_64x128", 64, 128}, {"tall_256x96", 256, 96}, {"tall_96x48", 96, 48},
                         {"square_80x80", 80, 80}};
  for (const ref::MatrixShapeCount& s : ref::muon_matrix_shapes(preset_config("tiny-flash")))
    if (s.rows * s.cols >= 64 * 64 && s.rows * s.cols <= 256 * 128)
      v.push_back({"tiny_flash_" + std::to_string(s.rows) + "x" + std::to_string(s.cols), s.rows, s.cols});
  return v;
}

class MuonExecutorDiff : public ::testing::TestWithParam<Case> {};

TEST_P(MuonExecutorDiff, BaselineAndLooseGates) {
  const Case& c = GetParam();
  const std::uint64_t seed = seed_of("muon_ns/" + c.name);
  const std::vector<float> u = random_fp32(c.rows * c.cols, seed, 1.0);
  const MuonMatrix um = as_matrix(u, c.rows, c.cols);
  const ref::NsSchedule sched = ref::v4_ns_schedule();
  const ref::NsRounding rk = rounding_of_kernel();
  const MuonMatrix rx = ref::newton_schulz(um, sched);
  const MuonMatrix rq = ref::newton_schulz(um, sched, ref::kNsEps, rk, ref::NsAccumulate::kDouble);
  const MuonMatrix b = ref::newton_schulz(um, sched, ref::kNsEps, rk, ref::NsAccumulate::kFloat);
  const MuonMatrix k = decode(ns::executor_newton_schulz(u.data(), c.rows, c.cols, cuda::v4_ns_stages(), 1e-7f),
                              c.rows, c.cols);
  double amax = 0;
  for (double x : rq.data) amax = std::max(amax, std::abs(x));
  const double fro_rq = ref::frobenius_norm(rq);
  // Floor: two bf16 ulps at the largest output on one element, as a relative Frobenius error
  // (verification.md §4: the floor keeps B == Rq from forcing K == Rq bitwise).
  const double floor_f = 2 * ulp_bf16(amax) / fro_rq;
  const double k_rq = rel_fro(k, rq), b_rq = rel_fro(b, rq), k_rx = rel_fro(k, rx), b_rx = rel_fro(b, rx);
  std::printf("%-24s seed=0x%016llx relF K/Rq %.3e B/Rq %.3e K/Rx %.3e B/Rx %.3e  max_abs K/Rq %.3e B/Rq %.3e\n",
              c.name.c_str(), static_cast<unsigned long long>(seed), k_rq, b_rq, k_rx, b_rx,
              max_abs(k, rq), max_abs(b, rq));
  // Tight gate (K vs Rq) and the same rule against Rx, c = 2.
  EXPECT_LE(k_rq, 2 * b_rq + floor_f) << c.name << " seed " << seed;
  EXPECT_LE(k_rx, 2 * b_rx + floor_f) << c.name << " seed " << seed;
  // Elementwise form: |K − Rq| <= 2·max_abs(B, Rq) + 2·ulp_bf16(Rq_i).
  const double mb = max_abs(b, rq);
  double worst = 0;
  for (std::size_t i = 0; i < k.data.size(); ++i)
    worst = std::max(worst, std::abs(k.data[i] - rq.data[i]) / (2 * mb + 2 * ulp_bf16(rq.data[i])));
  EXPECT_LE(worst, 1.0) << c.name << ": bound ratio";
  // Loose gate (table row muon.ns).
  EXPECT_LE(k_rx, 2e-2) << c.name;
  // Not vacuous (verification.md §8): the baseline really differs from Rq, and the Frobenius
  // allowance is at most a tenth of the signal (relF of a zero output is 1). The elementwise
  // allowance is looser (2·max_abs(B, Rq) reaches ~13% of rms(Rq) for 512x64, whose entries
  // are ~1/sqrt(512)), so the Frobenius gate carries the sensitivity.
  EXPECT_GT(b_rq, 0.0);
  EXPECT_LE(2 * b_rq + floor_f, 0.1);
}

INSTANTIATE_TEST_SUITE_P(Cases, MuonExecutorDiff, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// ---------------------------------------------------------------- end to end on tiny-flash

// Three Muon steps on one matrix of every distinct Muon shape of tiny-flash: the double
// reference (muon_step) against the executor on fp32 masters. Per step, O is held to the loose
// NS gate; the weights to the muon.step row: |W_K − W_R|_i <= Σ_t (8·u_fp32·|W_R,t|_i +
// step·|O_K,t − O_R,t|_i) (elementwise ops in fp32 plus the NS difference propagated; the decay
// factor is <= 1 so earlier errors do not grow); the momentum to 2·T·u_fp32·Σ|g| (one fma per
// step, abs-bound form, plus the fp32 rounding of mu).
TEST(MuonExecutorEndToEnd, TinyFlashThreeSteps) {
  const ModelConfig cfg = preset_config("tiny-flash");
  ref::MuonHyper h;
  h.lr = 0.02;
  h.momentum = 0.95;
  h.weight_decay = 0.1;
  h.rms_scale = 0.2;
  constexpr int kSteps = 3;
  constexpr double kU32 = 0x1.0p-24;
  int shapes = 0;
  for (const ref::MatrixShapeCount& s : ref::muon_matrix_shapes(cfg)) {
    const std::string name = "muon_e2e/" + cfg.name + "/" + std::to_string(s.rows) + "x" + std::to_string(s.cols);
    const std::int64_t count = s.rows * s.cols;
    std::vector<float> wk = random_fp32(count, seed_of(name + "/w"), 1.0 / std::sqrt(static_cast<double>(s.cols)));
    const std::vector<float> w0 = wk;
    std::vector<float> mk(static_cast<std::size_t>(count), 0.0f);
    MuonMatrix wr = as_matrix(wk, s.rows, s.cols), mr(s.rows, s.cols);
    const ns::StepScalars sc = ns::step_scalars(h.lr, h.momentum, h.weight_decay, h.rms_scale, s.rows,
                                                s.cols, h.nesterov);
    const double step = h.lr * ref::muon_update_scale(h, s.rows, s.cols);
    std::vector<double> allowed_w(static_cast<std::size_t>(count), 0.0), gabs(allowed_w.size(), 0.0);
    for (int t = 0; t < kSteps; ++t) {
      const std::vector<float> g = random_fp32(count, seed_of(name + "/g" + std::to_string(t)), 1e-2);
      const MuonMatrix orf = ref::muon_step(wr, mr, as_matrix(g, s.rows, s.cols), h);
      const MuonMatrix ok = decode(ns::executor_muon_step(wk.data(), mk.data(), g.data(), s.rows, s.cols, sc,
                                                          cuda::v4_ns_stages(), 1e-7f),
                                   s.rows, s.cols);
      EXPECT_LE(rel_fro(ok, orf), 2e-2) << name << " step " << t;
      EXPECT_GT(rel_fro(ok, orf), 0.0) << name << ": bf16 path identical to fp64 is suspicious";
      for (std::size_t i = 0; i < allowed_w.size(); ++i) {
        allowed_w[i] += 8 * kU32 * std::abs(wr.data[i]) + step * std::abs(ok.data[i] - orf.data[i]);
        gabs[i] = h.momentum * gabs[i] + std::abs(static_cast<double>(g[i]));
      }
    }
    double ratio_w = 0, ratio_m = 0, moved = 0;
    for (std::size_t i = 0; i < allowed_w.size(); ++i) {
      ratio_w = std::max(ratio_w, std::abs(static_cast<double>(wk[i]) - wr.data[i]) / allowed_w[i]);
      ratio_m = std::max(ratio_m, std::abs(static_cast<double>(mk[i]) - mr.data[i]) / (2 * kSteps * kU32 * gabs[i]));
      moved = std::max(moved, std::abs(wr.data[i] - static_cast<double>(w0[i])));
    }
    EXPECT_LE(ratio_w, 1.0) << name;
    EXPECT_LE(ratio_m, 1.0) << name;
    EXPECT_GT(moved, 10 * step * 0x1.0p-8) << name << ": the steps must move the weights";
    ++shapes;
  }
  EXPECT_GE(shapes, 8);
}

}  // namespace
}  // namespace v4ref
