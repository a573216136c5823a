// Walsh–Hadamard rotation (v4-forward.md §2.4): involution, orthogonality, an explicit matrix for
// n = 8, hand cases and errors.
#include "v4ref/ref/hadamard.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "v4ref/ref/core/error.hpp"
#include "../common/test_support.hpp"

namespace v4ref::ref {
namespace {

std::vector<double> random_vec(std::size_t n, std::uint64_t seed) {
  const Mat m = test::random_mat(1, static_cast<Eigen::Index>(n), seed);
  return {m.data(), m.data() + m.size()};
}

// Naive: H_n(i, j) = (−1)^{popcount(i & j)} (the closed form of the Sylvester matrix).
std::vector<double> naive_hadamard(const std::vector<double>& x) {
  const std::size_t n = x.size();
  std::vector<double> y(n, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    long double s = 0;
    for (std::size_t j = 0; j < n; ++j) s += (__builtin_popcountll(i & j) % 2 ? -1.0L : 1.0L) * x[j];
    y[i] = static_cast<double>(s / std::sqrt(static_cast<long double>(n)));
  }
  return y;
}

TEST(HadamardHand, SmallSizes) {
  std::vector<double> a{5.0};
  hadamard_inplace(a);
  EXPECT_EQ(a[0], 5.0);  // H_1 = [1], scale 1
  std::vector<double> b{3.0, 1.0};
  hadamard_inplace(b);
  EXPECT_NEAR(b[0], 4.0 / std::sqrt(2.0), 1e-15);
  EXPECT_NEAR(b[1], 2.0 / std::sqrt(2.0), 1e-15);
  std::vector<double> c{1.0, 2.0, 3.0, 4.0};  // H_4 rows: ++++, +-+-, ++--, +--+
  hadamard_inplace(c);
  EXPECT_DOUBLE_EQ(c[0], 5.0);
  EXPECT_DOUBLE_EQ(c[1], -1.0);
  EXPECT_DOUBLE_EQ(c[2], -2.0);
  EXPECT_DOUBLE_EQ(c[3], 0.0);
}

TEST(HadamardHand, ExplicitMatrixN8) {
  // H_8 written out (Sylvester order), scale 1/sqrt(8); e_j maps to column j.
  const int h8[8][8] = {{1, 1, 1, 1, 1, 1, 1, 1},     {1, -1, 1, -1, 1, -1, 1, -1},
                        {1, 1, -1, -1, 1, 1, -1, -1}, {1, -1, -1, 1, 1, -1, -1, 1},
                        {1, 1, 1, 1, -1, -1, -1, -1}, {1, -1, 1, -1, -1, 1, -1, 1},
                        {1, 1, -1, -1, -1, -1, 1, 1}, {1, -1, -1, 1, -1, 1, 1, -1}};
  const auto x = random_vec(8, 1);
  auto y = x;
  hadamard_inplace(y);
  for (int i = 0; i < 8; ++i) {
    double e = 0;
    for (int j = 0; j < 8; ++j) e += h8[i][j] * x[static_cast<std::size_t>(j)];
    EXPECT_NEAR(y[static_cast<std::size_t>(i)], e / std::sqrt(8.0), 1e-14) << i;
  }
  for (int j = 0; j < 8; ++j) {
    std::vector<double> ej(8, 0.0);
    ej[static_cast<std::size_t>(j)] = 1.0;
    hadamard_inplace(ej);
    for (int i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(ej[static_cast<std::size_t>(i)] * std::sqrt(8.0), h8[i][j]);
  }
}

class HadamardSizes : public ::testing::TestWithParam<std::size_t> {};

TEST_P(HadamardSizes, InvolutionOrthogonalityAndNaive) {
  const std::size_t n = GetParam();
  const auto x = random_vec(n, 10 + n), z = random_vec(n, 20 + n);
  auto hx = x, hz = z;
  hadamard_inplace(hx);
  hadamard_inplace(hz);
  double dot0 = 0, dot1 = 0;
  for (std::size_t i = 0; i < n; ++i) {
    dot0 += x[i] * z[i];
    dot1 += hx[i] * hz[i];
  }
  EXPECT_NEAR(dot1, dot0, 1e-12 * (1 + std::fabs(dot0)));
  const auto nv = naive_hadamard(x);
  for (std::size_t i = 0; i < n; ++i) EXPECT_NEAR(hx[i], nv[i], 1e-13 * (1 + std::fabs(nv[i])));
  auto hhx = hx;
  hadamard_inplace(hhx);
  for (std::size_t i = 0; i < n; ++i) EXPECT_NEAR(hhx[i], x[i], 1e-14);
}

INSTANTIATE_TEST_SUITE_P(Sizes, HadamardSizes, ::testing::Values(1, 2, 4, 8, 128));

TEST(HadamardBlocks, PerHeadBlocks) {
  // Two heads of 4: each block rotated independently.
  Mat x(1, 8);
  x << 1, 2, 3, 4, 1, 0, 0, 0;
  const Mat y = hadamard_blocks(x, 4);
  EXPECT_DOUBLE_EQ(y(0, 0), 5.0);
  EXPECT_DOUBLE_EQ(y(0, 2), -2.0);
  for (int i = 4; i < 8; ++i) EXPECT_DOUBLE_EQ(y(0, i), 0.5);
}

TEST(HadamardErrors, NonPowerOfTwo) {
  std::vector<double> v(6, 1.0);
  EXPECT_THROW(hadamard_inplace(v), ShapeError);
  std::vector<double> e;
  EXPECT_THROW(hadamard_inplace(e), ShapeError);
  EXPECT_THROW(hadamard_blocks(Mat::Ones(2, 12), 8), ShapeError);
  EXPECT_THROW(hadamard_blocks(Mat::Ones(2, 12), 3), ShapeError);
  try {
    hadamard_inplace(v);
  } catch (const ShapeError& ex) {
    EXPECT_NE(std::string(ex.what()).find("got 6"), std::string::npos) << ex.what();
  }
}

}  // namespace
}  // namespace v4ref::ref
