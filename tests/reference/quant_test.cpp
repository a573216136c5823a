// Block quantizers (reference/include/v4ref/ref/quant.hpp; v4-forward.md §2.5, §15.5–15.6):
// hand-computed Q8/Q4 cases (scale boundaries, the fp32-vs-exact scale case, outliers, zero
// blocks, e2m1 tie points, the ±448 clamp, block 64 vs 128), exactness of the bf16 store, the
// codes variant, argument validation, and the fp8 / fp4 weight quantizers (smallest scale, half-
// step error bound, idempotence, packing order).
#include "v4ref/ref/quant.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::ref {
namespace {

using fmt::e2m1_to_double;
using fmt::e4m3_to_double;
using fmt::ue8m0_to_double;

std::vector<double> q8(const std::vector<double>& x, int block) {
  std::vector<double> out(x.size());
  q8_fake_quant(x, block, out);
  return out;
}
std::vector<double> q4(const std::vector<double>& x, int block = 32) {
  std::vector<double> out(x.size());
  q4_fake_quant(x, block, out);
  return out;
}

// A block of n zeros with the given leading values.
std::vector<double> block_of(int n, std::initializer_list<double> head) {
  std::vector<double> x(static_cast<std::size_t>(n), 0.0);
  std::copy(head.begin(), head.end(), x.begin());
  return x;
}

// ---------------------------------------------------------------- scale rule

TEST(QuantScale, PowerOfTwoBoundaryIsInclusive) {
  // amax = 448·2^k -> 2^k exactly (fp32(1/448)·448 rounds to 1 in fp32); one fp32 ulp above ->
  // 2^(k+1).
  for (const int k : {-20, -3, 0, 1, 7, 100}) {
    const double amax = std::ldexp(448.0, k);
    EXPECT_EQ(act_scale_exponent(amax, kQ8Rule), k) << "k = " << k;
    const double above = std::ldexp(static_cast<double>(std::nextafter(448.0f, 1000.0f)), k);
    EXPECT_EQ(act_scale_exponent(above, kQ8Rule), k + 1) << "k = " << k;
    EXPECT_EQ(smallest_pow2_scale_exponent(amax, 448.0), k);
    EXPECT_EQ(smallest_pow2_scale_exponent(above, 448.0), k + 1);
  }
  for (const int k : {-100, -1, 0, 5}) {  // Q4: amax = 6·2^k
    EXPECT_EQ(act_scale_exponent(std::ldexp(6.0, k), kQ4Rule), k);
    EXPECT_EQ(
        act_scale_exponent(std::ldexp(static_cast<double>(std::nextafter(6.0f, 7.0f)), k), kQ4Rule),
        k + 1);
  }
}

TEST(QuantScale, FloorsGiveTheDocumentedExponents) {
  // Q8: 1e-4/448 = 2.23e-7 -> 2^-22 (2.38e-7); Q4: 6·2^-126/6 = 2^-126.
  EXPECT_EQ(act_scale_exponent(0.0, kQ8Rule), -22);
  EXPECT_EQ(act_scale_exponent(1e-6, kQ8Rule), -22);
  EXPECT_EQ(act_scale_exponent(0.0, kQ4Rule), -126);
  EXPECT_EQ(act_scale_exponent(1e-300, kQ4Rule), -126);
}

TEST(QuantScale, Fp32ReciprocalsAreCorrectlyRounded) {
  // The kernel forms fp32(1/qmax) from a double constant; the double-rounded value equals the
  // correctly rounded fp32 quotient for both formats, so either reading gives the same rule.
  EXPECT_EQ(static_cast<float>(1.0 / 448.0), 1.0f / 448.0f);
  EXPECT_EQ(static_cast<float>(1.0 / 6.0), 1.0f / 6.0f);
}

TEST(QuantScale, KerRuleEqualsExactRuleForEveryBf16Amax) {
  // §2.5: for bf16 inputs the fp32 arithmetic picks the exact ceil(log2(a/qmax)).
  int checked = 0;
  for (int c = 1; c < 0x7F80; ++c) {
    const double a = fmt::bf16_to_double(static_cast<std::uint16_t>(c));
    if (a > 1e-4) {
      ASSERT_EQ(act_scale_exponent(a, kQ8Rule), smallest_pow2_scale_exponent(a, 448.0)) << a;
      ++checked;
    }
    if (a >= 6 * 0x1p-126) {
      ASSERT_EQ(act_scale_exponent(a, kQ4Rule), smallest_pow2_scale_exponent(a, 6.0)) << a;
    }
  }
  EXPECT_GT(checked, 18000);  // 141 binades above 1e-4, 128 codes each
}

TEST(QuantScale, KerRuleEqualsExactRuleForRandomFp32Amax) {
  // The fp32 product cannot cross a power of two for a float amax: fp32(1/448) exceeds 1/448 by
  // 4.5e-8 relative, less than half an fp32 ulp above 2^k, and the next float above 448·2^k is
  // 6.8e-8 higher. So the rule differs from the exact one only for non-fp32 (double) amax.
  Rng rng(0xA3A7);
  int checked = 0;
  while (checked < 200000) {
    const float f = fmt::float_from_bits(static_cast<std::uint32_t>(rng.next_u64() >> 33));  // >= 0
    const double a = static_cast<double>(f);
    if (!(a > 1e-4) || !std::isfinite(a)) continue;
    ASSERT_EQ(act_scale_exponent(a, kQ8Rule), smallest_pow2_scale_exponent(a, 448.0)) << a;
    ASSERT_EQ(act_scale_exponent(a, kQ4Rule), smallest_pow2_scale_exponent(a, 6.0)) << a;
    ++checked;
  }
}

TEST(QuantScale, KerRulePicksFp32AnswerForDoubleAmax) {
  // amax/448 = 1 + 2^-30: exactly ceil(log2) = 1, but fp32(amax) = 448 so KER gives 0.
  const double amax = 448.0 * (1.0 + 0x1p-30);
  EXPECT_EQ(smallest_pow2_scale_exponent(amax, 448.0), 1);
  EXPECT_EQ(act_scale_exponent(amax, kQ8Rule), 0);
  // In a block: s = 1 (KER), so amax/s > 448 is clamped to 448, and 3·2^-9 stays exact (subnormal
  // code 3). The exact rule (s = 2) would give 3·2^-10 -> tie -> code 2 -> 2^-8·2 = 2^-7.
  const std::vector<double> out = q8(block_of(128, {amax, 3 * 0x1p-9, -amax}), 128);
  EXPECT_EQ(out[0], 448.0);
  EXPECT_EQ(out[1], 3 * 0x1p-9);
  EXPECT_EQ(out[2], -448.0);
  const BlockCodes c = q8_quantize(block_of(128, {amax, 3 * 0x1p-9}), 128);
  EXPECT_EQ(c.scales[0], 127);
  EXPECT_EQ(c.codes[0], 0x7E);
  EXPECT_EQ(c.codes[1], 0x03);
}

// ---------------------------------------------------------------- Q8

TEST(QuantQ8, ExactBoundaryAndJustAbove) {
  // amax = 448·2^-3 = 56 -> s = 2^-3: 56 -> code 0x7E; 1.0 -> 8 -> 0x50 -> 1.0.
  EXPECT_EQ(q8(block_of(128, {56.0, 1.0, -56.0}), 128), (block_of(128, {56.0, 1.0, -56.0})));
  // amax just above 56 (next fp32) -> s = 2^-2: 1.0/0.25 = 4 exact; 0.1 -> 0.4 -> e4m3 0.40625
  // (spacing 2^-5 in [0.25, 0.5): 0.4 = 12.8·2^-5 -> 13·2^-5) -> 0.1015625.
  const double above = static_cast<double>(std::nextafter(56.0f, 100.0f));
  const std::vector<double> out = q8(block_of(128, {above, 1.0, 0.1}), 128);
  EXPECT_EQ(out[0], 56.0) << "56.0000038 / 0.25 = 224.0000153 -> 224 (spacing 16)";
  EXPECT_EQ(out[1], 1.0);
  EXPECT_EQ(out[2], 13 * 0x1p-7);
}

TEST(QuantQ8, ValuesAtAndAboveMax) {
  // ±448 with s = 1 map to 0x7E/0xFE; 449 forces s = 2: 449/2 = 224.5 -> 224 -> 448.
  EXPECT_EQ(q8(block_of(64, {448.0, -448.0, 0.5}), 64), (block_of(64, {448.0, -448.0, 0.5})));
  const std::vector<double> out = q8(block_of(64, {449.0, 1.0, 0x1p-10}), 64);
  EXPECT_EQ(out[0], 448.0);
  EXPECT_EQ(out[1], 1.0);
  EXPECT_EQ(out[2], 0.0) << "2^-10 / 2 = 2^-11 < half the smallest subnormal";
}

TEST(QuantQ8, OutlierSetsScaleAndFlushesSmallValues) {
  // amax = 7168 = 448·16 -> s = 16; |x|/16 < 2^-10 rounds to a signed zero; 0.5 = 2^-5·16 is code
  // 0x10 (2^-5) exactly; 0.02 -> 0.00125 -> 2^-10·1.28 -> code 1 -> 2^-9·16 = 0.03125.
  std::vector<double> x(128, 1e-3);
  x[7] = 7168.0;
  x[8] = -1e-3;
  x[9] = 0.5;
  x[10] = 0.02;
  const std::vector<double> out = q8(x, 128);
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (i == 7 || i == 9 || i == 10) continue;
    EXPECT_EQ(out[i], 0.0) << "i = " << i;
  }
  EXPECT_TRUE(std::signbit(out[8])) << "flushed negatives keep their sign";
  EXPECT_EQ(out[7], 7168.0);
  EXPECT_EQ(out[9], 0.5);
  EXPECT_EQ(out[10], 0.03125);
}

TEST(QuantQ8, AllZeroBlockUsesFloor) {
  const BlockCodes c = q8_quantize(std::vector<double>(64, 0.0), 64);
  EXPECT_EQ(c.scales, std::vector<std::uint8_t>{127 - 22});
  EXPECT_EQ(c.codes, std::vector<std::uint8_t>(64, 0));
  EXPECT_EQ(q8(std::vector<double>(64, 0.0), 64), std::vector<double>(64, 0.0));
  // A block below the floor: 1e-6 / 2^-22 = 4.194 -> 4 -> 4·2^-22.
  EXPECT_EQ(q8(std::vector<double>(64, 1e-6), 64), std::vector<double>(64, 0x1p-20));
}

TEST(QuantQ8, Block64And128Differ) {
  // First 64: amax 448 (s = 1). Second 64: 0.011 everywhere.
  //   block 128: s = 1 -> 0.011·2^9 = 5.632 -> subnormal code 6 -> 6·2^-9 = 0.01171875;
  //   block  64: s = 2^-15 (0.011/448 = 2.46e-5) -> 360.45 -> 352 (spacing 32) -> 0.0107421875.
  std::vector<double> x(128, 0.011);
  std::fill(x.begin(), x.begin() + 64, 448.0);
  const std::vector<double> o128 = q8(x, 128), o64 = q8(x, 64);
  EXPECT_EQ(o128[64], 6 * 0x1p-9);
  EXPECT_EQ(o64[64], 352 * 0x1p-15);
  EXPECT_EQ(o128[0], 448.0);
  EXPECT_EQ(o64[0], 448.0);
  EXPECT_EQ(q8_quantize(x, 128).scales, (std::vector<std::uint8_t>{127}));
  EXPECT_EQ(q8_quantize(x, 64).scales, (std::vector<std::uint8_t>{127, 127 - 15}));
}

// ---------------------------------------------------------------- Q4

TEST(QuantQ4, TiePointsTimesScale) {
  // amax = 6·2^-3 -> s = 2^-3; t·s for the e2m1 ties t -> RNE (§2.5: 0.25→0, 0.75→1, 1.25→1,
  // 1.75→2, 2.5→2, 3.5→4, 5→4), both signs.
  const double s = 0x1p-3;
  const double ties[] = {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0};
  const double want[] = {0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0};
  std::vector<double> x(32, 0.0);
  x[0] = 6 * s;
  for (int i = 0; i < 7; ++i) {
    x[static_cast<std::size_t>(1 + i)] = ties[i] * s;
    x[static_cast<std::size_t>(8 + i)] = -ties[i] * s;
  }
  const std::vector<double> out = q4(x);
  EXPECT_EQ(out[0], 6 * s);
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(out[static_cast<std::size_t>(1 + i)], want[i] * s) << "tie " << ties[i];
    EXPECT_EQ(out[static_cast<std::size_t>(8 + i)], -want[i] * s) << "tie " << -ties[i];
  }
  EXPECT_TRUE(std::signbit(out[8])) << "-0.25·s -> -0";
  EXPECT_EQ(q4_quantize(x).scales, std::vector<std::uint8_t>{127 - 3});
}

TEST(QuantQ4, AllZeroBlockUsesFloorAndClampsAtSix) {
  const BlockCodes c = q4_quantize(std::vector<double>(32, 0.0));
  EXPECT_EQ(c.scales, std::vector<std::uint8_t>{1});  // 2^-126
  // amax 6.5 -> s = 2: 6.5/2 = 3.25 -> 3 -> 6; 5.9/2 = 2.95 -> 3 -> 6; 0.4/2 = 0.2 -> 0.
  const std::vector<double> out = q4(block_of(32, {6.5, 5.9, 0.4}));
  EXPECT_EQ(out[0], 6.0);
  EXPECT_EQ(out[1], 6.0);
  EXPECT_EQ(out[2], 0.0);
  // amax = 6·(1 + 2^-30): fp32(amax) = 6, so s = 1 and x/s > 6 is clamped to 6.
  const double above = 6.0 * (1.0 + 0x1p-30);
  EXPECT_EQ(q4(block_of(32, {above, -above})), (block_of(32, {6.0, -6.0})));
  EXPECT_EQ(q4_quantize(block_of(32, {above})).scales, std::vector<std::uint8_t>{127});
}

// ---------------------------------------------------------------- codes variant, bf16 store

// Random values spread over many binades (2^-40 .. 2^60) with some zeros and sign changes.
std::vector<double> wide_random(std::uint64_t seed, std::size_t n) {
  Rng rng(seed);
  std::vector<double> x(n);
  for (double& v : x) {
    const double e = std::floor(rng.uniform(-40.0, 60.0));
    v = rng.below(16) == 0 ? 0.0 : std::ldexp(rng.normal(), static_cast<int>(e));
  }
  return x;
}

void expect_codes_match_fake_quant(const std::vector<double>& x, int block, bool is_q8) {
  const BlockCodes c = is_q8 ? q8_quantize(x, block) : q4_quantize(x, block);
  const std::vector<double> out = is_q8 ? q8(x, block) : q4(x, block);
  ASSERT_EQ(c.codes.size(), x.size());
  ASSERT_EQ(c.scales.size(), x.size() / static_cast<std::size_t>(block));
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double s = ue8m0_to_double(c.scales[i / static_cast<std::size_t>(block)]);
    const double v = (is_q8 ? e4m3_to_double(c.codes[i]) : e2m1_to_double(c.codes[i])) * s;
    // The fake-quant output went through round_bf16; equality shows that rounding is exact.
    ASSERT_EQ(fmt::double_bits(out[i]), fmt::double_bits(v)) << "i = " << i << ", x = " << x[i];
    ASSERT_EQ(fmt::round_bf16(v), v) << "i = " << i;
    ASSERT_LE(std::fabs(v), std::fabs(x[i]) * 2 + s) << "i = " << i;
  }
}

TEST(QuantCodes, DecodedCodesEqualFakeQuantAndBf16StoreIsExact) {
  const std::vector<double> x = wide_random(0x5138, 128 * 64);
  expect_codes_match_fake_quant(x, 128, true);
  expect_codes_match_fake_quant(x, 64, true);
  expect_codes_match_fake_quant(x, 32, false);
  // Near the top of the range: the largest magnitudes whose results stay finite (0x1.Ep127 =
  // 240·2^120 for Q8, 0x1.8p127 = 3·2^126 for Q4) and tiny values (Q4's 2^-127 is a bf16
  // subnormal, still exact).
  std::vector<double> y(64, 0x1p-120);
  y[0] = 0x1.Ep127;
  y[32] = 0x1p-125;
  expect_codes_match_fake_quant(y, 32, true);
  y[0] = 0x1.8p127;
  expect_codes_match_fake_quant(y, 32, false);
  // Q4 at the floor: s = 2^-126, 2^-127 / s = 0.5 -> e2m1 0.5 -> 2^-127 (bf16 code 0x0040).
  const std::vector<double> z(32, 0x1p-127);
  expect_codes_match_fake_quant(z, 32, false);
  EXPECT_EQ(q4(z), z);
}

TEST(QuantCodes, Bf16StoreOverflowsOnlyAtTheTopOfTheRange) {
  // Q8: bf16 max / 2^120 = 255 -> e4m3 256 -> 2^128 -> Inf; 0x1.Fp127 (248·2^120) ties to 256 too.
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(q8(block_of(32, {0x1.FEp127, -0x1.Fp127}), 32)[0], inf);
  EXPECT_EQ(q8(block_of(32, {0x1.FEp127, -0x1.Fp127}), 32)[1], -inf);
  EXPECT_EQ(q8(block_of(32, {std::nextafter(0x1.Fp127, 0.0)}), 32)[0], 0x1.Ep127);
  // Q4: s = 2^126, 3.5 -> 4 -> 2^128 -> Inf; just below 3.5 -> 3 -> 0x1.8p127.
  EXPECT_EQ(q4(block_of(32, {0x1.Cp127}))[0], inf);
  EXPECT_EQ(q4(block_of(32, {std::nextafter(0x1.Cp127, 0.0)}))[0], 0x1.8p127);
}

TEST(QuantCodes, InPlaceEqualsOutOfPlace) {
  std::vector<double> x = wide_random(0x1a5e, 256);
  const std::vector<double> want8 = q8(x, 128), want4 = q4(x);
  std::vector<double> y = x;
  q8_fake_quant(y, 128, y);
  EXPECT_EQ(y, want8);
  q4_fake_quant(x, 32, x);
  EXPECT_EQ(x, want4);
}

// ---------------------------------------------------------------- validation

TEST(QuantValidation, RejectsBadShapesAndValues) {
  std::vector<double> x(130, 1.0), out(130);
  EXPECT_THROW(q8_fake_quant(x, 128, out), ShapeError);  // 130 is not a multiple of 128
  EXPECT_THROW(q8_fake_quant(x, 0, out), ShapeError);
  EXPECT_THROW(q4_quantize(x, -32), ShapeError);
  std::vector<double> short_out(64);
  EXPECT_THROW(q8_fake_quant(std::span<const double>(x).first(128), 64, short_out), ShapeError);
  try {
    q8_quantize(x, 128);
    ADD_FAILURE() << "no exception";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("130"), std::string::npos) << e.what();
  }
  std::vector<double> bad(64, 1.0);
  bad[5] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW(q8_quantize(bad, 64), NumericError);
  bad[5] = std::numeric_limits<double>::infinity();
  EXPECT_THROW(q4_quantize(bad, 32), NumericError);
  bad[5] = 1e39;  // fp32(amax) would overflow
  try {
    q8_quantize(bad, 64);
    ADD_FAILURE() << "no exception";
  } catch (const NumericError& e) {
    EXPECT_NE(std::string(e.what()).find("x[5]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(act_scale_exponent(-1.0, kQ8Rule), NumericError);
}

// ---------------------------------------------------------------- fp8 weight quantizer

double e4m3_half_step(double a) {  // half the e4m3 spacing at magnitude a (§15.5)
  const int e = a == 0 ? -6 : std::max(fmt::floor_log2(a), -6);
  return std::ldexp(1.0, e - 4);
}
double e2m1_half_step(double a) {  // spacing 0.5 below 2, then 1 in [2,4), 2 in [4,6]
  const int e = a == 0 ? 0 : std::max(fmt::floor_log2(a), 0);
  return std::ldexp(1.0, e - 2);
}

// §15.6 formulas, written out here: W[i,j] = e4m3(Q[i,j])·S[i/128, j/128] and
// W[i,j] = e2m1(nib(i,j))·S[i, j/32] with nib = low nibble for even j.
std::vector<double> dequant(const Fp8BlockWeightCodes& q) {
  const std::int64_t bcols = (q.cols + 127) / 128;
  std::vector<double> w(q.codes.size());  // [rows, cols]
  for (std::int64_t i = 0; i < q.rows; ++i)
    for (std::int64_t j = 0; j < q.cols; ++j) {
      const auto idx = static_cast<std::size_t>(i * q.cols + j);
      w[idx] = e4m3_to_double(q.codes[idx]) *
               ue8m0_to_double(q.scales[static_cast<std::size_t>((i / 128) * bcols + j / 128)]);
    }
  return w;
}
std::vector<double> dequant(const Fp4ExpertWeightCodes& q) {
  std::vector<double> w(q.packed.size() * 2);  // [rows, cols]
  for (std::int64_t i = 0; i < q.rows; ++i)
    for (std::int64_t j = 0; j < q.cols; ++j) {
      const auto idx = static_cast<std::size_t>(i * q.cols + j);
      const std::uint8_t byte = q.packed[idx / 2];
      const auto nib = static_cast<std::uint8_t>(j % 2 == 0 ? (byte & 0xF) : (byte >> 4));
      w[idx] = e2m1_to_double(nib) *
               ue8m0_to_double(q.scales[static_cast<std::size_t>(i * (q.cols / 32) + j / 32)]);
    }
  return w;
}

// [rows, cols] normal weights, each 128x128 block scaled by its own power of two.
std::vector<double> block_scaled_weights(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<double> w(static_cast<std::size_t>(rows * cols));
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) {
      const int shift = static_cast<int>((i / 128) * 7 + (j / 128) * 3) - 8;
      w[static_cast<std::size_t>(i * cols + j)] = std::ldexp(rng.normal(), shift);
    }
  return w;
}

TEST(QuantWeightFp8, SmallestScaleHalfStepAndIdempotent) {
  constexpr std::int64_t kRows = 200, kCols = 300;  // edge blocks of 72 rows and 44 columns
  std::vector<double> w = block_scaled_weights(kRows, kCols, 0xF8);
  for (std::int64_t i = 128; i < 200; ++i)  // block (1, 0) all zero
    for (std::int64_t j = 0; j < 128; ++j) w[static_cast<std::size_t>(i * kCols + j)] = 0.0;
  w[0] = 448.0 * 0x1p-5;  // block (0, 0): 448·2^-5 is the amax if the rest is smaller
  const Fp8BlockWeightCodes q = quantize_fp8_block_weight(w, kRows, kCols);
  ASSERT_EQ(q.codes.size(), static_cast<std::size_t>(kRows * kCols));
  ASSERT_EQ(q.scales.size(), 2u * 3u);  // [ceil(200/128), ceil(300/128)]
  EXPECT_EQ(q.scales[0], 127 - 5) << "amax = 448·2^-5 exactly -> 2^-5";
  EXPECT_EQ(q.scales[3], 127 - 22) << "zero block -> Q8 floor 2^-22";

  const std::vector<double> deq = dequant(q);
  std::vector<double> amax(6, 0.0);
  for (std::int64_t i = 0; i < kRows; ++i)
    for (std::int64_t j = 0; j < kCols; ++j) {
      const auto idx = static_cast<std::size_t>(i * kCols + j);
      const auto b = static_cast<std::size_t>((i / 128) * 3 + j / 128);
      const double s = ue8m0_to_double(q.scales[b]);
      amax[b] = std::max(amax[b], std::fabs(w[idx]));
      ASSERT_LE(std::fabs(w[idx] - deq[idx]), e4m3_half_step(std::fabs(w[idx]) / s) * s)
          << i << "," << j;
      ASSERT_EQ(fmt::round_bf16(deq[idx]), deq[idx]) << "§1.5: dequantised weights are bf16 values";
    }
  for (std::size_t b = 0; b < 6; ++b) {
    if (amax[b] == 0) continue;
    const double s = ue8m0_to_double(q.scales[b]);
    EXPECT_LE(amax[b] / s, 448.0) << "block " << b;
    EXPECT_GT(amax[b] / (s / 2), 448.0) << "block " << b << ": a smaller scale would do";
  }
  // Re-quantising the dequantised weights reproduces them exactly. (Codes and scales may differ:
  // a block amax in (224·s, 232·s) dequantises to 224·s, for which s/2 is the smallest scale.)
  EXPECT_EQ(dequant(quantize_fp8_block_weight(deq, kRows, kCols)), deq);
}

TEST(QuantWeightFp8, ScaleJustAboveBoundaryAndClampAtUe8m0Min) {
  std::vector<double> w(4, 0.0);
  w[0] = std::nextafter(448.0 * 0x1p-5, 100.0);  // just above -> 2^-4
  EXPECT_EQ(quantize_fp8_block_weight(w, 2, 2).scales[0], 127 - 4);
  w[0] = 1e-40;  // exact scale 2^-141 is below ue8m0: clamp to 2^-127 (code 0)
  const Fp8BlockWeightCodes q = quantize_fp8_block_weight(w, 2, 2);
  EXPECT_EQ(q.scales[0], 0);
  EXPECT_EQ(q.codes[0], fmt::e4m3_encode(1e-40 * 0x1p127));
  EXPECT_THROW(quantize_fp8_block_weight(std::vector<double>{1e300, 0, 0, 0}, 2, 2), NumericError);
  EXPECT_THROW(quantize_fp8_block_weight(std::vector<double>(5, 0.0), 2, 2), ShapeError);
  EXPECT_THROW(quantize_fp8_block_weight(std::vector<double>{}, 0, 2), ShapeError);
  std::vector<double> nan_w(4, 0.0);
  nan_w[3] = std::numeric_limits<double>::quiet_NaN();
  try {
    quantize_fp8_block_weight(nan_w, 2, 2);
    ADD_FAILURE() << "no exception";
  } catch (const NumericError& e) {
    EXPECT_NE(std::string(e.what()).find("[1, 1]"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- fp4 expert weight quantizer

TEST(QuantWeightFp4, PackingOrderOnHandMadeRow) {
  // Row of 32: amax 6 -> s = 1. Codes 0.5→1, 1→2, 1.5→3, 2→4, 3→5, 4→6, 6→7, −6→0xF, rest 0.
  std::vector<double> w = block_of(32, {0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -6.0, -0.5, 0.0});
  const Fp4ExpertWeightCodes q = quantize_fp4_expert_weight(w, 1, 32);
  ASSERT_EQ(q.packed.size(), 16u);
  ASSERT_EQ(q.scales.size(), 1u);
  EXPECT_EQ(q.scales[0], 127);
  EXPECT_EQ(q.packed[0], 0x21);  // low nibble = column 0 (0.5), high = column 1 (1.0)
  EXPECT_EQ(q.packed[1], 0x43);
  EXPECT_EQ(q.packed[2], 0x65);
  EXPECT_EQ(q.packed[3], 0xF7);
  EXPECT_EQ(q.packed[4], 0x09);  // −0.5 -> 0x9 low, 0 high
  for (std::size_t k = 5; k < 16; ++k) EXPECT_EQ(q.packed[k], 0x00) << k;
}

TEST(QuantWeightFp4, SmallestScaleHalfStepAndIdempotent) {
  constexpr std::int64_t kRows = 5, kCols = 96;  // scales [5, 3]
  Rng rng(0xF4);
  std::vector<double> w(static_cast<std::size_t>(kRows * kCols));
  for (std::size_t i = 0; i < w.size(); ++i)
    w[i] = std::ldexp(rng.normal(), static_cast<int>(i / 32) - 7);  // each block its own magnitude
  for (std::size_t j = 32; j < 64; ++j) w[j] = 0.0;                 // block (0, 1) all zero
  const Fp4ExpertWeightCodes q = quantize_fp4_expert_weight(w, kRows, kCols);
  ASSERT_EQ(q.packed.size(), static_cast<std::size_t>(kRows * kCols / 2));
  ASSERT_EQ(q.scales.size(), static_cast<std::size_t>(kRows * 3));
  EXPECT_EQ(q.scales[1], 1) << "zero block -> Q4 floor 2^-126";
  const std::vector<double> deq = dequant(q);
  for (std::int64_t i = 0; i < kRows; ++i) {
    for (std::int64_t j = 0; j < kCols; ++j) {
      const auto idx = static_cast<std::size_t>(i * kCols + j);
      const double s = ue8m0_to_double(q.scales[static_cast<std::size_t>(i * 3 + j / 32)]);
      ASSERT_EQ(fmt::round_bf16(deq[idx]), deq[idx]) << "§1.5: dequantised weights are bf16 values";
      ASSERT_LE(std::fabs(w[idx] - deq[idx]), e2m1_half_step(std::fabs(w[idx]) / s) * s)
          << i << "," << j;
    }
    for (std::int64_t b = 0; b < 3; ++b) {
      const auto first = w.begin() + i * kCols + b * 32;
      const double amax = std::fabs(*std::max_element(
          first, first + 32, [](double a, double c) { return std::fabs(a) < std::fabs(c); }));
      if (amax == 0) continue;
      const double s = ue8m0_to_double(q.scales[static_cast<std::size_t>(i * 3 + b)]);
      EXPECT_LE(amax / s, 6.0);
      EXPECT_GT(amax / (s / 2), 6.0) << "row " << i << " block " << b;
    }
  }
  // Value-level round trip (a block amax in (3·s, 3.5·s) dequantises to 3·s: scale s/2 next time).
  EXPECT_EQ(dequant(quantize_fp4_expert_weight(deq, kRows, kCols)), deq);
  EXPECT_THROW(quantize_fp4_expert_weight(std::vector<double>(48, 0.0), 1, 48), ShapeError);
}

}  // namespace
}  // namespace v4ref::ref
