// RMS normalisations (v4-forward.md §2.1, §2.2): hand cases, properties, a naive second
// formulation, the bf16 per-head emulation and errors (verification.md §14).
#include "v4ref/ref/norm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "../common/test_support.hpp"

namespace v4ref::ref {
namespace {

using test::random_mat;

// Naive second formulation: long double sum of squares in reverse order, divide by sqrt.
long double naive_rms(const double* x, std::int64_t n, double eps) {
  long double s = 0;
  for (std::int64_t i = n - 1; i >= 0; --i) s += static_cast<long double>(x[i]) * x[i];
  return std::sqrt(s / n + eps);
}

TEST(NormHand, WeightedRmsNormSmallCase) {
  // x = [2, 4, 4, 6]: mean(x²) = 72/4 = 18; eps = 7 -> sqrt(25) = 5.
  Mat x(1, 4);
  x << 2, 4, 4, 6;
  Vec w(4);
  w << 1, 0.5, -1, 2;
  const Mat y = rms_norm(x, w, 7.0, PrecisionPolicy::exact());
  EXPECT_DOUBLE_EQ(y(0, 0), 0.4);
  EXPECT_DOUBLE_EQ(y(0, 1), 0.4);
  EXPECT_DOUBLE_EQ(y(0, 2), -0.8);
  EXPECT_DOUBLE_EQ(y(0, 3), 2.4);
  const double v[] = {2, 4, 4, 6};
  EXPECT_DOUBLE_EQ(inv_rms(v, 7.0), 0.2);
  const Mat u = unweighted_rms_norm(x, 7.0);
  EXPECT_DOUBLE_EQ(u(0, 3), 1.2);
}

TEST(NormHand, HeadNormTwoHeads) {
  // Head 0 = [3, 4, 0, 0] (mean 6.25), head 1 = [1, 1, 1, 1] (mean 1); eps = 2.75 / 3.
  Mat x(1, 8);
  x << 3, 4, 0, 0, 1, 1, 1, 1;
  const Mat y = head_rms_norm(x, 2, 4, 2.75, PrecisionPolicy::exact());
  // head 0: sqrt(6.25 + 2.75) = 3; head 1: sqrt(1 + 2.75) = sqrt(3.75).
  EXPECT_DOUBLE_EQ(y(0, 0), 1.0);
  EXPECT_DOUBLE_EQ(y(0, 1), 4.0 / 3.0);
  EXPECT_DOUBLE_EQ(y(0, 2), 0.0);
  EXPECT_NEAR(y(0, 4), 1.0 / std::sqrt(3.75), 3e-16);
}

TEST(NormHand, HeadNormBf16Arithmetic) {
  // q = 1.5 everywhere (bf16-exact), D = 4: squares 2.25, mean 2.25, + fp32(1e-6) -> bf16 2.25;
  // rsqrt = 2/3 -> bf16 0.10101011b = 171/256 = 0.66796875; 1.5 · 171/256 = 1.001953125 -> bf16 1.0.
  Mat x = Mat::Constant(1, 4, 1.5);
  const PrecisionPolicy bf = PrecisionPolicy::exact().enable(QuantPoint::kBf16QHeadNorm);
  const Mat y = head_rms_norm(x, 1, 4, 1e-6, bf);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y(0, i), 1.0);
  const Mat ye = head_rms_norm(x, 1, 4, 1e-6, PrecisionPolicy::exact());
  EXPECT_NEAR(ye(0, 0), 1.5 / std::sqrt(2.25 + 1e-6), 3e-16);
  EXPECT_NE(ye(0, 0), 1.0);  // the exact path really differs here
}

TEST(NormProperty, UnweightedOutputMeanSquare) {
  // mean(N(x)²) = ms / (ms + eps) exactly in real arithmetic.
  const Mat x = random_mat(5, 96, 1, 0.01);
  const double eps = 1e-6;
  const Mat y = unweighted_rms_norm(x, eps);
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double ms = x.row(t).squaredNorm() / 96.0;
    EXPECT_NEAR(y.row(t).squaredNorm() / 96.0, ms / (ms + eps), 1e-14);
  }
}

TEST(NormProperty, ScaleInvarianceWhenEpsNegligible) {
  const Mat x = random_mat(3, 64, 2);
  Vec w = random_mat(64, 1, 3).col(0);
  const Mat a = rms_norm(x, w, 1e-300, PrecisionPolicy::exact());
  const Mat b = rms_norm(x * 1024.0, w, 1e-300, PrecisionPolicy::exact());
  EXPECT_LE((a - b).cwiseAbs().maxCoeff(), 1e-14);
}

TEST(NormNaive, AgreesWithReverseOrderLongDouble) {
  const Mat x = random_mat(7, 512, 4, 3.0);
  const Vec w = random_mat(512, 1, 5).col(0);
  const double eps = 1e-6;
  const Mat y = rms_norm(x, w, eps, PrecisionPolicy::exact());
  const Mat h = head_rms_norm(x, 4, 128, eps, PrecisionPolicy::exact());
  double worst = 0, worst_h = 0;
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const long double r = naive_rms(x.row(t).data(), 512, eps);
    for (Eigen::Index i = 0; i < 512; ++i) {
      const long double e = w(i) * x(t, i) / r;
      worst = std::max(worst, static_cast<double>(std::fabs((y(t, i) - e) / e)));
      const long double rh = naive_rms(x.row(t).data() + (i / 128) * 128, 128, eps);
      const long double eh = x(t, i) / rh;
      worst_h = std::max(worst_h, static_cast<double>(std::fabs((h(t, i) - eh) / eh)));
    }
  }
  EXPECT_LE(worst, 1e-13);
  EXPECT_LE(worst_h, 1e-13);
}

TEST(NormPrecision, Bf16NormOutputIsBf16AndClose) {
  const Mat x = random_mat(4, 128, 6);
  const Vec w = random_mat(128, 1, 7).col(0);
  const PrecisionPolicy bf = PrecisionPolicy::exact().enable(QuantPoint::kBf16Norm);
  const Mat e = rms_norm(x, w, 1e-6, PrecisionPolicy::exact());
  const Mat b = rms_norm(x, w, 1e-6, bf);
  bool any_diff = false;
  for (Eigen::Index i = 0; i < b.size(); ++i) {
    EXPECT_EQ(fmt::round_bf16(b.data()[i]), b.data()[i]);
    EXPECT_LE(std::fabs(b.data()[i] - e.data()[i]), std::ldexp(std::fabs(e.data()[i]), -8));
    any_diff = any_diff || b.data()[i] != e.data()[i];
  }
  EXPECT_TRUE(any_diff);
}

TEST(NormPrecision, HeadNormBf16AgainstFloatEmulation) {
  // Independent emulation in float: each op in fp32, result rounded to bf16 (PyTorch bf16 ops).
  const Mat x = random_mat(3, 2 * 64, 8, 2.0);
  const PrecisionPolicy bf = PrecisionPolicy::exact().enable(QuantPoint::kBf16QHeadNorm);
  const Mat y = head_rms_norm(x, 2, 64, 1e-6, bf);
  auto b16 = [](float v) { return static_cast<float>(fmt::round_bf16(v)); };
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (int h = 0; h < 2; ++h) {
      float acc = 0;
      for (int i = 0; i < 64; ++i) {
        const float q = b16(static_cast<float>(x(t, h * 64 + i)));
        acc += b16(q * q);
      }
      const float m = b16(acc / 64.0f);
      const float r = b16(1.0f / std::sqrt(b16(m + 1e-6f)));
      for (int i = 0; i < 64; ++i) {
        const float q = b16(static_cast<float>(x(t, h * 64 + i)));
        EXPECT_EQ(y(t, h * 64 + i), static_cast<double>(b16(q * r))) << t << " " << h << " " << i;
      }
    }
}

TEST(NormErrors, ShapesEpsAndNonFinite) {
  const Mat x = random_mat(2, 8, 9);
  EXPECT_THROW(rms_norm(x, Vec::Ones(7), 1e-6, PrecisionPolicy::exact(), "attn_norm"), ShapeError);
  try {
    rms_norm(x, Vec::Ones(7), 1e-6, PrecisionPolicy::exact(), "layers.0.attn_norm");
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.attn_norm.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[8]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[7]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(head_rms_norm(x, 3, 3, 1e-6, PrecisionPolicy::exact()), ShapeError);
  EXPECT_THROW(rms_norm(x, Vec::Ones(8), 0.0, PrecisionPolicy::exact()), ConfigError);
  Mat bad = x;
  bad(1, 3) = std::numeric_limits<double>::quiet_NaN();
  try {
    rms_norm(bad, Vec::Ones(8), 1e-6, PrecisionPolicy::exact(), "q_norm");
    FAIL();
  } catch (const NumericError& e) {
    EXPECT_NE(std::string(e.what()).find("q_norm input contains NaN at [1, 3]"), std::string::npos) << e.what();
  }
  Vec wbad = Vec::Ones(8);
  wbad(2) = std::numeric_limits<double>::infinity();
  EXPECT_THROW(rms_norm(x, wbad, 1e-6, PrecisionPolicy::exact()), NumericError);
  EXPECT_THROW(inv_rms(std::span<const double>(), 1e-6), ShapeError);
}

}  // namespace
}  // namespace v4ref::ref
