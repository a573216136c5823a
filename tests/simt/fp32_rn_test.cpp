// The kernels' rounding primitives (cuda/include/v4ref/cuda/fp32_rn.hpp) as the host compiler
// builds them for the SIMT executor: each result bit for bit the exact operation rounded once to
// fp32 (round to nearest even). The exact value comes from a wider format in which it is exact
// (a·b in double) or for which rounding twice is innocuous (double for +, −, ×, ÷, √ of fp32:
// 53 ≥ 2·24 + 2), and __float128 for the fused multiply-add with exponent spreads it holds
// exactly. A contracted or reassociated build (a·b + c fused, x/y as x·(1/y)) fails here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "v4ref/cuda/fp32_rn.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::cuda {
namespace {

std::uint32_t bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

// NaN results compare as "both NaN"; everything else bit for bit (signed zeros included).
::testing::AssertionResult same(float got, float want, const char* op, float a, float b, float c = 0) {
  if ((std::isnan(got) && std::isnan(want)) || bits(got) == bits(want)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << op << "(" << a << ", " << b << ", " << c << ") = " << got << " (0x"
                                       << std::hex << bits(got) << "), exact rounded once: " << want << " (0x"
                                       << bits(want) << ")";
}

// Random fp32 values over the whole range (random sign, exponent, mantissa), plus the special
// values and the subnormal and overflow edges.
std::vector<float> samples(std::uint64_t seed, std::size_t n) {
  Rng rng(seed);
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(), 0x1.fffffep-1f,
                          0x1.000002p0f, 3.0f, 0x1p-126f, 0x1.8p-149f};
  while (v.size() < n) {
    const auto u = static_cast<std::uint32_t>(rng.next_u64());
    float x;
    std::memcpy(&x, &u, 4);
    v.push_back(x);
  }
  return v;
}

TEST(Fp32Rn, BasicOperationsAreTheExactResultRoundedOnce) {
  const std::vector<float> a = samples(derive_seed("fp32_rn", "a", "", 1), 200000);
  const std::vector<float> b = samples(derive_seed("fp32_rn", "b", "", 2), 200000);
  int bad = 0;
  for (std::size_t i = 0; i < a.size() && bad < 10; ++i) {
    const double x = a[i], y = b[i];
    bad += !same(rn::mul_rn(a[i], b[i]), static_cast<float>(x * y), "mul_rn", a[i], b[i]);
    bad += !same(rn::add_rn(a[i], b[i]), static_cast<float>(x + y), "add_rn", a[i], b[i]);
    bad += !same(rn::div_rn(a[i], b[i]), static_cast<float>(x / y), "div_rn", a[i], b[i]);
    bad += !same(rn::sqrt_rn(a[i]), static_cast<float>(std::sqrt(x)), "sqrt_rn", a[i], 0);
  }
  EXPECT_EQ(bad, 0);
}

// fma over operands whose exact a·b + c fits __float128's 113 bits: exponents within ±40 of
// each other (a·b has at most 48 significant bits, c 24, the spread at most ~90 bits).
TEST(Fp32Rn, FmaIsTheExactResultRoundedOnce) {
  Rng rng(derive_seed("fp32_rn", "fma", "", 3));
  const auto draw = [&](int e_lo, int e_hi) {
    const float m = static_cast<float>(1.0 + rng.uniform());  // [1, 2): a full 24-bit mantissa below
    const int e = e_lo + static_cast<int>(rng.below(static_cast<std::uint64_t>(e_hi - e_lo + 1)));
    float x = std::ldexp(m, e);
    const auto u = static_cast<std::uint32_t>(rng.next_u64());
    std::uint32_t xb;
    std::memcpy(&xb, &x, 4);
    xb ^= u & 0x007FFFFFu;  // random low mantissa bits
    std::memcpy(&x, &xb, 4);
    return rng.uniform() < 0.5 ? -x : x;
  };
  int bad = 0, cancellations = 0;
  for (int i = 0; i < 300000 && bad < 10; ++i) {
    const float a = draw(-20, 20), b = draw(-20, 20);
    // c near −a·b half the time: the cancellation cases where a contracted or split fma differs
    const float c = (i % 2 == 0) ? -rn::mul_rn(a, b) * static_cast<float>(1.0 + 0x1p-20 * rng.uniform())
                                 : draw(-40, 40);
    const __float128 exact = static_cast<__float128>(a) * static_cast<__float128>(b) + static_cast<__float128>(c);
    const float want = static_cast<float>(exact);
    const float got = rn::fma_rn(a, b, c);
    bad += !same(got, want, "fma_rn", a, b, c);
    cancellations += (i % 2 == 0 && rn::add_rn(rn::mul_rn(a, b), c) != got) ? 1 : 0;
  }
  EXPECT_EQ(bad, 0);
  // The test can tell fma from mul-then-add: they differ on many cancellation cases.
  EXPECT_GT(cancellations, 1000);
}

TEST(Fp32Rn, Bf16IsRoundToNearestEven) {
  const std::vector<float> a = samples(derive_seed("fp32_rn", "bf16", "", 4), 200000);
  int bad = 0;
  for (const float x : a) {
    if (std::isnan(x)) {
      EXPECT_EQ(rn::bf16_rne_bits(x), 0x7FC0u);
      continue;
    }
    const std::uint16_t want = fmt::bf16_encode(static_cast<double>(x));
    if (rn::bf16_rne_bits(x) != want && ++bad <= 5)
      ADD_FAILURE() << "bf16_rne_bits(" << x << ") = 0x" << std::hex << rn::bf16_rne_bits(x) << ", want 0x" << want;
    EXPECT_EQ(bits(rn::bf16_value(want)), bits(static_cast<float>(fmt::bf16_to_float(want))));
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace
}  // namespace v4ref::cuda
