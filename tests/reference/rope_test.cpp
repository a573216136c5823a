// RoPE (v4-forward.md §2.3, §5.5): the spec's reference frequencies, rotation properties,
// fp32-angle option, layer tables and errors.
#include "v4ref/ref/rope.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <random>

#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "../common/test_support.hpp"

namespace v4ref::ref {
namespace {

using test::random_mat;

const PrecisionPolicy kExact = PrecisionPolicy::exact();

RopeTable yarn160k() { return make_rope_table(160000, true, YarnConfig{16, 65536, 32, 1}); }

TEST(RopeHand, SpecReferenceFrequenciesYarn) {
  const RopeTable t = yarn160k();
  ASSERT_EQ(t.omega.size(), 32u);
  EXPECT_EQ(t.yarn_low, 15.0);
  EXPECT_EQ(t.yarn_high, 25.0);
  const struct {
    int j;
    double w;
  } ref[] = {{0, 1.0},
             {8, 0.05},
             {15, 3.635538583622384e-3},
             {16, 2.265625e-3},
             {20, 2.9697777826169085e-4},
             {24, 1.953125e-5},
             {25, 5.372312671356501e-6},
             {31, 5.680529036909976e-7}};
  for (const auto& r : ref)
    EXPECT_NEAR(t.omega[static_cast<std::size_t>(r.j)], r.w, 4e-16 * r.w) << "j = " << r.j;
  // corr(32) = 15.4533, corr(1) = 24.7084 (§2.3).
  EXPECT_NEAR(yarn_correction_dim(32, 64, 160000, 65536), 15.4533, 1e-4);
  EXPECT_NEAR(yarn_correction_dim(1, 64, 160000, 65536), 24.7084, 1e-4);
}

TEST(RopeHand, SpecReferenceFrequenciesNoYarn) {
  const RopeTable t = make_rope_table(10000, false, YarnConfig{});
  EXPECT_EQ(t.omega[0], 1.0);
  EXPECT_NEAR(t.omega[1], 0.7498942093324559, 4e-16);
  EXPECT_NEAR(t.omega[31], 1.333521432163324e-4, 4e-16 * 1.333521432163324e-4);
}

TEST(RopeHand, RampBlendNaive) {
  // Independent: ramp over j with low 15, high 25 -> ω = ω⁰ (1 − ramp) + ω⁰/16 · ramp.
  const RopeTable t = yarn160k();
  for (int j = 0; j < 32; ++j) {
    const double w0 = std::exp(-std::log(160000.0) * j / 32.0);
    const double ramp = j <= 15 ? 0.0 : (j >= 25 ? 1.0 : (j - 15) / 10.0);
    const double e = w0 * (1 - ramp) + w0 / 16 * ramp;
    EXPECT_NEAR(t.omega[static_cast<std::size_t>(j)], e, 1e-14 * e) << j;
  }
}

TEST(RopeHand, QuarterTurnAndPairLayout) {
  // ω_0 = 1: position p = π/2 is not an integer, so use a custom base-free check: pair 0 at
  // p = 1 rotates by 1 rad. x = [.., 1, 0, ...] -> [cos 1, sin 1]; pair 1 (ω_1) untouched in order.
  const RopeTable t = make_rope_table(10000, false, YarnConfig{}, 4);
  Mat x(1, 6);
  x << 7, 8, 1, 0, 0, 1;  // last 4 dims rotated: pair 0 = (1, 0), pair 1 = (0, 1)
  const std::int64_t p1[] = {1};
  const Mat y = apply_rope(x, 2, p1, t, kExact);
  EXPECT_EQ(y(0, 0), 7);
  EXPECT_EQ(y(0, 1), 8);
  EXPECT_DOUBLE_EQ(y(0, 2), std::cos(1.0));
  EXPECT_DOUBLE_EQ(y(0, 3), std::sin(1.0));
  const double w1 = 0.01;  // 10000^{-2/4}
  EXPECT_NEAR(y(0, 4), -std::sin(w1), 1e-17);
  EXPECT_NEAR(y(0, 5), std::cos(w1), 1e-16);
}

TEST(RopeNaive, AgreesWithComplexMultiplication) {
  const RopeTable t = yarn160k();
  const Mat x = random_mat(5, 192, 1);
  const std::vector<std::int64_t> pos{0, 3, 127, 4000, 65535};
  const Mat y = apply_rope(x, 128, pos, t, kExact);
  for (Eigen::Index r = 0; r < 5; ++r)
    for (int j = 0; j < 32; ++j) {
      const std::complex<long double> z(x(r, 128 + 2 * j), x(r, 129 + 2 * j));
      const long double th = static_cast<long double>(pos[static_cast<std::size_t>(r)]) *
                             t.omega[static_cast<std::size_t>(j)];
      const auto e = z * std::polar(1.0L, th);
      // The angle p·ω itself carries a double rounding of ~|θ|·2^-53: scale the tolerance with p.
      const double tol = 1e-14 + 4e-16 * static_cast<double>(pos[static_cast<std::size_t>(r)]) * std::abs(z);
      EXPECT_NEAR(y(r, 128 + 2 * j), static_cast<double>(e.real()), tol);
      EXPECT_NEAR(y(r, 129 + 2 * j), static_cast<double>(e.imag()), tol);
    }
}

TEST(RopeProperty, NormsInverseAndOnlyLastDims) {
  const RopeTable t = yarn160k();
  const Mat x = random_mat(4, 2 * 128, 2);
  const std::vector<std::int64_t> pos{1, 77, 1000, 99999};
  Mat y = x;
  apply_rope_heads_inplace(y, 2, 128, pos, t, kExact);
  for (Eigen::Index r = 0; r < 4; ++r) {
    for (int h = 0; h < 2; ++h) {
      // untouched: the first 64 dims of each head
      for (int i = 0; i < 64; ++i) EXPECT_EQ(y(r, h * 128 + i), x(r, h * 128 + i));
      EXPECT_NEAR(y.row(r).segment(h * 128 + 64, 64).norm(), x.row(r).segment(h * 128 + 64, 64).norm(),
                  1e-13);
      EXPECT_GT((y.row(r).segment(h * 128 + 64, 64) - x.row(r).segment(h * 128 + 64, 64)).norm(), 1e-3);
      for (int j = 0; j < 32; ++j) {  // every pair keeps its own modulus
        const double a = std::hypot(x(r, h * 128 + 64 + 2 * j), x(r, h * 128 + 65 + 2 * j));
        const double b = std::hypot(y(r, h * 128 + 64 + 2 * j), y(r, h * 128 + 65 + 2 * j));
        EXPECT_NEAR(a, b, 1e-14);
      }
    }
  }
  apply_rope_heads_inplace(y, 2, 128, pos, t, kExact, /*inverse=*/true);
  EXPECT_LE((y - x).cwiseAbs().maxCoeff(), 1e-13);
}

TEST(RopeProperty, RelativePosition) {
  const RopeTable t = make_rope_table(10000, false, YarnConfig{});
  const Mat ab = random_mat(2, 64, 3);
  auto dot_at = [&](std::int64_t p, std::int64_t q) {
    const std::int64_t pp[] = {p}, qq[] = {q};
    const Mat a = apply_rope(ab.topRows(1), 0, pp, t, kExact);
    const Mat b = apply_rope(ab.bottomRows(1), 0, qq, t, kExact);
    return a.row(0).dot(b.row(0));
  };
  const double d1 = dot_at(5, 2), d2 = dot_at(103, 100), d3 = dot_at(2003, 2000), d4 = dot_at(5, 3);
  EXPECT_NEAR(d1, d2, 1e-12);
  EXPECT_NEAR(d1, d3, 1e-11);
  EXPECT_GT(std::fabs(d1 - d4), 1e-6);  // a different offset gives a different product
}

TEST(RopePrecision, Fp32AngleDiffersByPredictedAmount) {
  const RopeTable t = make_rope_table(10000, false, YarnConfig{});
  const PrecisionPolicy f32 = PrecisionPolicy::exact().enable(QuantPoint::kFp32RopeAngle);
  double worst_far = 0;
  for (std::int64_t p = 100000; p < 100064; ++p)
    for (std::int64_t j = 0; j < 32; ++j) {
      const double exact = rope_angle(t, p, j, kExact);
      const double a32 = rope_angle(t, p, j, f32);
      const double w = t.omega[static_cast<std::size_t>(j)];
      // Predicted bound: p·|fp32(ω) − ω| + half an fp32 ulp of the angle.
      const double half_ulp = std::ldexp(1.0, std::ilogb(exact) - 24);
      EXPECT_LE(std::fabs(a32 - exact), p * std::fabs(t.omega_fp32[static_cast<std::size_t>(j)] - w) + half_ulp + 1e-12);
      worst_far = std::max(worst_far, std::fabs(a32 - exact));
      if (j == 0) {
        EXPECT_EQ(a32, exact);  // ω_0 = 1 and p < 2^24: the fp32 product is exact
      }
    }
  // θ ≈ 7.5e4 for ω_1: fp32 spacing 2^-7 there, so errors of order 1e-3..4e-3 rad appear.
  EXPECT_GT(worst_far, 1e-3);
  EXPECT_LT(worst_far, 8e-3);
  for (std::int64_t j = 0; j < 32; ++j) EXPECT_LT(std::fabs(rope_angle(t, 10, j, f32) - rope_angle(t, 10, j, kExact)), 1e-6);
  // The rotated vectors differ by about |Δθ|·|z| at p = 1e5 and not at p = 10.
  const Mat x = random_mat(2, 64, 4);
  const std::vector<std::int64_t> far{100003, 100003}, near{10, 10};
  EXPECT_GT((apply_rope(x, 0, far, t, f32) - apply_rope(x, 0, far, t, kExact)).cwiseAbs().maxCoeff(), 1e-4);
  EXPECT_LT((apply_rope(x, 0, near, t, f32) - apply_rope(x, 0, near, t, kExact)).cwiseAbs().maxCoeff(), 1e-5);
}

TEST(RopePrecision, Bf16RopeRoundsOnlyRotatedDims) {
  const RopeTable t = yarn160k();
  const Mat x = random_mat(2, 128, 5);
  const std::vector<std::int64_t> pos{9, 4097};
  const PrecisionPolicy bf = PrecisionPolicy::exact().enable(QuantPoint::kBf16Rope);
  const Mat y = apply_rope(x, 64, pos, t, bf), e = apply_rope(x, 64, pos, t, kExact);
  for (Eigen::Index r = 0; r < 2; ++r)
    for (int i = 0; i < 128; ++i) {
      if (i < 64) {
        EXPECT_EQ(y(r, i), x(r, i));
      } else {
        EXPECT_EQ(fmt::round_bf16(y(r, i)), y(r, i));
        EXPECT_LE(std::fabs(y(r, i) - e(r, i)), std::ldexp(std::fabs(e(r, i)), -8));
      }
    }
}

TEST(RopeTables, FromLayerConfig) {
  const ModelConfig cfg = preset_config("tiny-flash");
  const RopeTable swa = rope_table_for(cfg, layer_config(cfg, 0));
  const RopeTable csa = rope_table_for(cfg, layer_config(cfg, 2));
  const RopeTable mtp = rope_table_for(cfg, layer_config(cfg, cfg.n_layers));
  EXPECT_FALSE(swa.yarn);
  EXPECT_EQ(swa.base, 10000);
  EXPECT_NEAR(swa.omega[31], 1.333521432163324e-4, 1e-19);
  EXPECT_TRUE(csa.yarn);
  EXPECT_EQ(csa.base, 160000);
  EXPECT_NEAR(csa.omega[25], 5.372312671356501e-6, 1e-20);
  EXPECT_FALSE(mtp.yarn);
  EXPECT_EQ(swa.max_position, cfg.max_position_embeddings);
}

TEST(RopeErrors, ShapesPositionsAndConfig) {
  const ModelConfig cfg = preset_config("tiny-flash");
  const RopeTable t = rope_table_for(cfg, layer_config(cfg, 0));
  const Mat x = random_mat(2, 128, 6);
  const std::vector<std::int64_t> ok{0, 1}, one{0};
  const std::vector<std::int64_t> past{0, cfg.max_position_embeddings};
  EXPECT_THROW(apply_rope(x, 65, ok, t, kExact), ShapeError);
  EXPECT_THROW(apply_rope(x, -1, ok, t, kExact), ShapeError);
  EXPECT_THROW(apply_rope(x, 64, one, t, kExact), ShapeError);
  try {
    apply_rope(x, 64, past, t, kExact, false, "layers.0.attn.q rope");
    FAIL();
  } catch (const ShapeError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("position " + std::to_string(cfg.max_position_embeddings)), std::string::npos) << m;
    EXPECT_NE(m.find("layers.0.attn.q rope"), std::string::npos) << m;
  }
  const std::vector<std::int64_t> neg{0, -1};
  EXPECT_THROW(apply_rope(x, 64, neg, t, kExact), ShapeError);
  Mat y = x;
  EXPECT_THROW(apply_rope_heads_inplace(y, 3, 40, ok, t, kExact), ShapeError);
  EXPECT_THROW(make_rope_table(1.0, false, YarnConfig{}), ConfigError);
  EXPECT_THROW(make_rope_table(10000, false, YarnConfig{}, 63), ConfigError);
  EXPECT_THROW(make_rope_table(10000, true, YarnConfig{16, 0, 32, 1}), ConfigError);
  EXPECT_THROW(make_rope_table(10000, true, YarnConfig{0.5, 65536, 32, 1}), ConfigError);
}

}  // namespace
}  // namespace v4ref::ref
