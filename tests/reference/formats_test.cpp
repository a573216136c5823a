// Exhaustive tests of the core number-format codecs (core/formats.hpp; v4-forward.md §1.5, §15.5;
// verification.md §7 "format extremes", §14 "codec round trips over every code").
//
// Every decoder is checked code by code against a field formula written here with std::ldexp;
// every encoder is checked on all codes (round trip), on every midpoint between adjacent codes
// (ties to the even code) and one double ulp either side, and on saturation, underflow and NaN.
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

namespace v4ref::fmt {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kQNan = std::numeric_limits<double>::quiet_NaN();

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llX", static_cast<unsigned long long>(v));
  return buf;
}
std::string show(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g (%a)", v, v);
  return buf;
}

// Same double bits, or both NaN (NaN payloads are not part of any decoder's contract).
bool same_value(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return double_bits(a) == double_bits(b);
}

// Mismatch counter for exhaustive loops: the first few failures in full, then just the count.
class Mismatches {
 public:
  void expect(bool ok, const std::function<std::string()>& msg) {
    if (ok) return;
    if (++count_ <= kShown) ADD_FAILURE() << msg();
  }
  int count() const { return count_; }

 private:
  static constexpr int kShown = 8;
  int count_ = 0;
};

// One double ulp towards zero / away from zero.
double toward_zero(double m) { return std::nextafter(m, 0.0); }
double away_from_zero(double m) { return std::nextafter(m, m < 0 ? -kInf : kInf); }

// ---------------------------------------------------------------- independent decoders (§15.5)

double ref_e4m3(std::uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 0xF, m = b & 0x7;
  if (e == 15 && m == 7) return kQNan;
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

double ref_e2m1(std::uint8_t n) {
  const int s = n >> 3, e = (n >> 1) & 0x3, m = n & 0x1;
  const double mag = e == 0 ? m * 0.5 : std::ldexp(1.0 + m / 2.0, e - 1);
  return s ? -mag : mag;
}

double ref_ue8m0(std::uint8_t u) { return u == 0xFF ? kQNan : std::ldexp(1.0, u - 127); }

double ref_bf16(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 7) & 0xFF, m = h & 0x7F;
  double mag;
  if (e == 255) {
    mag = m == 0 ? kInf : kQNan;
  } else if (e == 0) {
    mag = std::ldexp(m / 128.0, -126);
  } else {
    mag = std::ldexp(1.0 + m / 128.0, e - 127);
  }
  return s ? -mag : mag;
}

bool is_bf16_nan_code(std::uint16_t h) { return (h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0; }

// ---------------------------------------------------------------- e4m3fn

std::uint8_t enc_sat(double x) { return e4m3_encode(x, Saturation::kSatFinite); }
std::uint8_t enc_nosat(double x) { return e4m3_encode(x, Saturation::kNoSat); }

TEST(E4m3Codec, DecodesEveryCodeByFieldFormula) {
  Mismatches bad;
  int nan_codes = 0;
  for (int c = 0; c < 256; ++c) {
    const auto b = static_cast<std::uint8_t>(c);
    const double got = e4m3_to_double(b), want = ref_e4m3(b);
    if (std::isnan(got)) ++nan_codes;
    bad.expect(same_value(got, want),
               [&] { return "code " + hex(b) + ": " + show(got) + " != " + show(want); });
    bad.expect(same_value(static_cast<double>(e4m3_to_float(b)), got),
               [&] { return "float decode of " + hex(b); });
  }
  EXPECT_EQ(bad.count(), 0);
  EXPECT_EQ(nan_codes, 2);
  EXPECT_TRUE(std::isnan(e4m3_to_double(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_double(0xFF)));
  // Anchors from §15.5: max 448, smallest subnormal 2^-9, smallest normal 2^-6, 1.0 = 0x38, -0.
  EXPECT_EQ(e4m3_to_double(0x7E), 448.0);
  EXPECT_EQ(e4m3_to_double(0xFE), -448.0);
  EXPECT_EQ(e4m3_to_double(0x01), 0x1p-9);
  EXPECT_EQ(e4m3_to_double(0x08), 0x1p-6);
  EXPECT_EQ(e4m3_to_double(0x38), 1.0);
  EXPECT_TRUE(std::signbit(e4m3_to_double(0x80)));
  EXPECT_EQ(e4m3_to_double(0x80), 0.0);
}

TEST(E4m3Codec, PositiveCodesIncreaseStrictly) {
  for (int c = 0; c < 0x7E; ++c)
    EXPECT_LT(e4m3_to_double(static_cast<std::uint8_t>(c)),
              e4m3_to_double(static_cast<std::uint8_t>(c + 1)))
        << "code " << hex(static_cast<std::uint64_t>(c));
}

TEST(E4m3Codec, RoundTripsEveryNonNanCode) {
  Mismatches bad;
  int checked = 0;
  for (int c = 0; c < 256; ++c) {
    const auto b = static_cast<std::uint8_t>(c);
    if ((b & 0x7F) == 0x7F) continue;
    const double v = e4m3_to_double(b);
    ++checked;
    bad.expect(enc_sat(v) == b, [&] { return "satfinite " + hex(b) + " -> " + hex(enc_sat(v)); });
    bad.expect(enc_nosat(v) == b, [&] { return "nosat " + hex(b) + " -> " + hex(enc_nosat(v)); });
  }
  EXPECT_EQ(checked, 254);
  EXPECT_EQ(bad.count(), 0);
  EXPECT_EQ(enc_sat(-0.0), 0x80) << "-0 keeps its sign";
  EXPECT_EQ(enc_sat(0.0), 0x00);
}

// Checks the tie at `mid` between magnitude-adjacent codes lo < hi (same sign) and one double ulp
// either side. `hi_nosat` is what kNoSat gives above the midpoint (differs only past 464).
void expect_e4m3_tie(std::uint8_t lo, std::uint8_t hi, double mid, std::uint8_t hi_sat,
                     std::uint8_t hi_nosat, Mismatches& bad) {
  const std::uint8_t even = (lo & 1) == 0 ? lo : hi;
  for (auto [name, enc, above] :
       {std::tuple{"satfinite", &enc_sat, hi_sat}, std::tuple{"nosat", &enc_nosat, hi_nosat}}) {
    const std::string where =
        std::string(name) + " midpoint " + show(mid) + " of " + hex(lo) + "/" + hex(hi);
    bad.expect(enc(mid) == even,
               [&] { return where + ": got " + hex(enc(mid)) + ", want " + hex(even); });
    bad.expect(enc(toward_zero(mid)) == lo,
               [&] { return where + " - ulp: got " + hex(enc(toward_zero(mid))); });
    bad.expect(enc(away_from_zero(mid)) == above,
               [&] { return where + " + ulp: got " + hex(enc(away_from_zero(mid))); });
  }
}

TEST(E4m3Codec, EveryMidpointTiesToEvenCode) {
  Mismatches bad;
  int midpoints = 0;
  for (const std::uint8_t sign : {std::uint8_t{0x00}, std::uint8_t{0x80}}) {
    // 126 midpoints between finite codes 0x00..0x7E, subnormal ones included.
    for (int c = 0; c < 0x7E; ++c) {
      const auto lo = static_cast<std::uint8_t>(sign | c),
                 hi = static_cast<std::uint8_t>(sign | (c + 1));
      const double mid = (e4m3_to_double(lo) + e4m3_to_double(hi)) / 2;  // exact in double
      expect_e4m3_tie(lo, hi, mid, hi, hi, bad);
      ++midpoints;
    }
    // The 127th: 464, halfway from 448 to the absent 480 (its code would be odd): RNE gives 448;
    // above it satfinite stays at 448 and nosat gives NaN.
    const auto max = static_cast<std::uint8_t>(sign | 0x7E),
               nan = static_cast<std::uint8_t>(sign | 0x7F);
    expect_e4m3_tie(max, nan, sign ? -464.0 : 464.0, max, nan, bad);
    ++midpoints;
  }
  EXPECT_EQ(midpoints, 2 * 127);
  EXPECT_EQ(bad.count(), 0);
  // Hand-picked: 1.0625 is halfway 1 (0x38) .. 1.125 (0x39) -> 0x38; 1.1875 -> 1.25 (0x3A).
  EXPECT_EQ(enc_sat(1.0625), 0x38);
  EXPECT_EQ(enc_sat(1.1875), 0x3A);
  // Subnormal ties: 2^-10 -> 0 (even), 3·2^-10 -> 2^-8 (code 2), 5·2^-10 -> code 2.
  EXPECT_EQ(enc_sat(3 * 0x1p-10), 0x02);
  EXPECT_EQ(enc_sat(5 * 0x1p-10), 0x02);
}

TEST(E4m3Codec, SatFiniteClampsAboveMax) {
  for (const double v :
       {std::nextafter(448.0, kInf), 449.0, 463.99, 464.0, std::nextafter(464.0, kInf), 480.0,
        500.0, 1e4, 1e30, std::numeric_limits<double>::max(), kInf}) {
    EXPECT_EQ(enc_sat(v), 0x7E) << show(v);
    EXPECT_EQ(enc_sat(-v), 0xFE) << show(-v);
  }
}

TEST(E4m3Codec, NoSatOverflowsToNanPast464) {
  for (const double v : {std::nextafter(448.0, kInf), 449.0, 463.99, 464.0}) {
    EXPECT_EQ(enc_nosat(v), 0x7E) << show(v);
    EXPECT_EQ(enc_nosat(-v), 0xFE) << show(-v);
  }
  for (const double v : {std::nextafter(464.0, kInf), 465.0, 480.0, 1e30, kInf}) {
    EXPECT_EQ(enc_nosat(v), 0x7F) << show(v);
    EXPECT_EQ(enc_nosat(-v), 0xFF) << show(-v);
  }
}

TEST(E4m3Codec, UnderflowsToSignedZero) {
  const double half_min = 0x1p-10;  // half the smallest subnormal 2^-9: ties to 0
  for (const double v : {half_min, toward_zero(half_min), 1e-10, 1e-300,
                         std::numeric_limits<double>::denorm_min(), 0.0}) {
    EXPECT_EQ(enc_sat(v), 0x00) << show(v);
    EXPECT_EQ(enc_sat(-v), 0x80) << show(-v);
    EXPECT_EQ(enc_nosat(-v), 0x80) << show(-v);
  }
  EXPECT_EQ(enc_sat(away_from_zero(half_min)), 0x01);
  EXPECT_EQ(enc_sat(-away_from_zero(half_min)), 0x81);
}

TEST(E4m3Codec, NanEncodesToNanWithSign) {
  const double snan = double_from_bits(0x7FF0000000000001ull);
  for (const auto sat : {Saturation::kSatFinite, Saturation::kNoSat}) {
    EXPECT_EQ(e4m3_encode(kQNan, sat), 0x7F);
    EXPECT_EQ(e4m3_encode(-kQNan, sat), 0xFF);
    EXPECT_EQ(e4m3_encode(snan, sat), 0x7F);
    EXPECT_TRUE(std::isnan(round_e4m3(kQNan, sat)));
  }
}

// ---------------------------------------------------------------- e2m1

TEST(E2m1Codec, DecodesEveryNibbleBySpecTableAndFormula) {
  // §1.5 table, index = nibble.
  const double table[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};
  for (int n = 0; n < 16; ++n) {
    const auto b = static_cast<std::uint8_t>(n);
    EXPECT_TRUE(same_value(e2m1_to_double(b), table[n]))
        << "nibble " << n << ": " << show(e2m1_to_double(b));
    EXPECT_TRUE(same_value(e2m1_to_double(b), ref_e2m1(b))) << "nibble " << n;
  }
  EXPECT_TRUE(std::signbit(e2m1_to_double(0x8)));
}

TEST(E2m1Codec, RoundTripsEveryNibble) {
  for (int n = 0; n < 16; ++n) {
    const auto b = static_cast<std::uint8_t>(n);
    EXPECT_EQ(e2m1_encode(e2m1_to_double(b)), b) << "nibble " << n;
  }
}

TEST(E2m1Codec, TiePointsGoToEvenCode) {
  // §2.5: 0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4 (codes 0, 2, 2, 4, 4, 6, 6).
  const std::pair<double, std::uint8_t> ties[] = {{0.25, 0}, {0.75, 2}, {1.25, 2}, {1.75, 4},
                                                  {2.5, 4},  {3.5, 6},  {5.0, 6}};
  for (const auto& [mid, code] : ties) {
    EXPECT_EQ(e2m1_encode(mid), code) << show(mid);
    EXPECT_EQ(e2m1_encode(-mid), code | 0x8) << show(-mid);
  }
  // Every midpoint between adjacent magnitudes, and one ulp either side, both signs.
  int midpoints = 0;
  for (const std::uint8_t sign : {std::uint8_t{0x0}, std::uint8_t{0x8}}) {
    for (int c = 0; c < 7; ++c) {
      const auto lo = static_cast<std::uint8_t>(sign | c),
                 hi = static_cast<std::uint8_t>(sign | (c + 1));
      const double mid = (e2m1_to_double(lo) + e2m1_to_double(hi)) / 2;
      const std::uint8_t even = (c & 1) == 0 ? lo : hi;
      EXPECT_EQ(e2m1_encode(mid), even) << show(mid);
      EXPECT_EQ(e2m1_encode(toward_zero(mid)), lo) << show(mid) << " - ulp";
      EXPECT_EQ(e2m1_encode(away_from_zero(mid)), hi) << show(mid) << " + ulp";
      ++midpoints;
    }
  }
  EXPECT_EQ(midpoints, 14);
}

TEST(E2m1Codec, SaturatesAboveSix) {
  for (const double v : {6.0, std::nextafter(6.0, kInf), 6.5, 7.0, 100.0, 1e300, kInf}) {
    EXPECT_EQ(e2m1_encode(v), 0x7) << show(v);
    EXPECT_EQ(e2m1_encode(-v), 0xF) << show(-v);
  }
}

TEST(E2m1Codec, UnderflowsToSignedZero) {
  for (const double v : {0.25, toward_zero(0.25), 0.1, 1e-300, 0.0}) {
    EXPECT_EQ(e2m1_encode(v), 0x0) << show(v);
    EXPECT_EQ(e2m1_encode(-v), 0x8) << show(-v);
  }
  EXPECT_EQ(e2m1_encode(away_from_zero(0.25)), 0x1);
}

TEST(E2m1Codec, NanEncodesToPositiveMax) {
  // CUDA's convention (no NaN in e2m1): NaN of either sign -> +6.
  EXPECT_EQ(e2m1_encode(kQNan), 0x7);
  EXPECT_EQ(e2m1_encode(-kQNan), 0x7);
}

TEST(E2m1Codec, PacksEvenColumnInLowNibble) {
  EXPECT_EQ(fp4_pack(0x3, 0xC), 0xC3);
  EXPECT_EQ(fp4_low(0xC3), 0x3);
  EXPECT_EQ(fp4_high(0xC3), 0xC);
  EXPECT_EQ(fp4_pack(0x1F, 0x2F), 0xFF) << "inputs masked to 4 bits";
}

// ---------------------------------------------------------------- ue8m0

TEST(Ue8m0Codec, DecodesEveryByteAsPowerOfTwo) {
  Mismatches bad;
  for (int u = 0; u < 256; ++u) {
    const auto b = static_cast<std::uint8_t>(u);
    bad.expect(same_value(ue8m0_to_double(b), ref_ue8m0(b)),
               [&] { return "byte " + hex(b) + ": " + show(ue8m0_to_double(b)); });
  }
  EXPECT_EQ(bad.count(), 0);
  EXPECT_TRUE(std::isnan(ue8m0_to_double(0xFF)));
  EXPECT_EQ(ue8m0_to_double(0), 0x1p-127);
  EXPECT_EQ(ue8m0_to_double(127), 1.0);
  EXPECT_EQ(ue8m0_to_double(254), 0x1p127);
}

TEST(Ue8m0Codec, EncodesExactPowersOfTwoOnly) {
  for (int u = 0; u < 255; ++u) {
    const auto b = static_cast<std::uint8_t>(u);
    EXPECT_EQ(ue8m0_encode_pow2(ue8m0_to_double(b)), b) << "byte " << u;
  }
  for (const double s : {0.0, -0.0, -1.0, 3.0, 1.5, 0x1.8p-100, 0x1p128, 0x1p-128, kInf, kQNan,
                         std::nextafter(1.0, 2.0)})
    EXPECT_EQ(ue8m0_encode_pow2(s), kUe8m0Nan) << show(s);
}

TEST(Ue8m0Codec, CeilLog2FromFloatBits) {
  EXPECT_EQ(ceil_log2_fp32_bits(1.0f), 0);
  EXPECT_EQ(ceil_log2_fp32_bits(std::nextafter(1.0f, 2.0f)), 1);
  EXPECT_EQ(ceil_log2_fp32_bits(0.75f), 0);
  EXPECT_EQ(ceil_log2_fp32_bits(0.5f), -1);
  EXPECT_EQ(ceil_log2_fp32_bits(0x1p-126f), -126);
  EXPECT_EQ(ceil_log2_fp32_bits(std::numeric_limits<float>::max()), 128);
}

// ---------------------------------------------------------------- bf16

TEST(Bf16Codec, DecodesEveryCodeByFieldFormula) {
  Mismatches bad;
  int nan_codes = 0;
  for (int c = 0; c < 65536; ++c) {
    const auto h = static_cast<std::uint16_t>(c);
    const double got = bf16_to_double(h), want = ref_bf16(h);
    if (std::isnan(got)) ++nan_codes;
    bad.expect(same_value(got, want),
               [&] { return "code " + hex(h) + ": " + show(got) + " != " + show(want); });
    bad.expect(std::isnan(got) == is_bf16_nan_code(h), [&] { return "NaN class of " + hex(h); });
  }
  EXPECT_EQ(bad.count(), 0);
  EXPECT_EQ(nan_codes, 2 * 127);
  EXPECT_EQ(bf16_to_double(0x7F80), kInf);
  EXPECT_EQ(bf16_to_double(0xFF80), -kInf);
  EXPECT_EQ(bf16_to_double(0x3F80), 1.0);
  EXPECT_EQ(bf16_to_double(0x0001), 0x1p-133);
  EXPECT_EQ(bf16_to_double(0x7F7F), 0x1.FEp127);
}

TEST(Bf16Codec, RoundTripsEveryNonNanCode) {
  Mismatches bad;
  int checked = 0;
  for (int c = 0; c < 65536; ++c) {
    const auto h = static_cast<std::uint16_t>(c);
    if (is_bf16_nan_code(h)) continue;
    ++checked;
    const std::uint16_t back = bf16_encode(bf16_to_double(h));
    bad.expect(back == h, [&] { return hex(h) + " -> " + hex(back); });
  }
  EXPECT_EQ(checked, 65536 - 2 * 127);
  EXPECT_EQ(bad.count(), 0);
  EXPECT_EQ(bf16_encode(-0.0), 0x8000);
}

TEST(Bf16Codec, NanEncodesToPyTorchCanonicalNan) {
  // PyTorch's c10 round_to_nearest_even returns 0x7FC0 for every NaN, whatever its sign or payload.
  for (const double v : {kQNan, -kQNan, double_from_bits(0x7FF0000000000001ull),
                         double_from_bits(0xFFFFFFFFFFFFFFFFull)})
    EXPECT_EQ(bf16_encode(v), kBf16CanonicalNan) << hex(double_bits(v));
  for (int c = 0; c < 65536; ++c) {
    const auto h = static_cast<std::uint16_t>(c);
    if (is_bf16_nan_code(h)) {
      EXPECT_EQ(bf16_encode(bf16_to_double(h)), 0x7FC0) << hex(h);
    }
  }
}

// Every midpoint between adjacent finite bf16 codes (subnormals included), and between the largest
// finite code and Inf (2^128 − 2^119: ties to the even code 0x7F80 = Inf), both signs, ± one ulp.
TEST(Bf16Codec, EveryMidpointTiesToEvenCode) {
  Mismatches bad;
  int midpoints = 0;
  for (const std::uint16_t sign : {std::uint16_t{0x0000}, std::uint16_t{0x8000}}) {
    for (int c = 0; c < 0x7F80; ++c) {
      const auto lo = static_cast<std::uint16_t>(sign | c),
                 hi = static_cast<std::uint16_t>(sign | (c + 1));
      const double hi_value = c + 1 == 0x7F80 ? std::ldexp(sign ? -1.0 : 1.0, 128)  // Inf's place
                                              : bf16_to_double(hi);
      const double mid = (bf16_to_double(lo) + hi_value) / 2;  // exact: 9 significant bits
      const std::uint16_t even = (c & 1) == 0 ? lo : hi;
      bad.expect(bf16_encode(mid) == even,
                 [&] { return "mid " + show(mid) + " -> " + hex(bf16_encode(mid)); });
      bad.expect(bf16_encode(toward_zero(mid)) == lo, [&] { return "mid - ulp " + show(mid); });
      bad.expect(bf16_encode(away_from_zero(mid)) == hi, [&] { return "mid + ulp " + show(mid); });
      ++midpoints;
    }
  }
  EXPECT_EQ(midpoints, 2 * 0x7F80);
  EXPECT_EQ(bad.count(), 0);
}

TEST(Bf16Codec, OverflowsToInfinity) {
  const double max = 0x1.FEp127, mid = 0x1p128 - 0x1p119;
  EXPECT_EQ(bf16_encode(toward_zero(mid)), 0x7F7F);
  EXPECT_EQ(bf16_encode(max), 0x7F7F);
  for (const double v :
       {mid, static_cast<double>(std::numeric_limits<float>::max()), 0x1p128, 1e300, kInf}) {
    EXPECT_EQ(bf16_encode(v), 0x7F80) << show(v);
    EXPECT_EQ(bf16_encode(-v), 0xFF80) << show(-v);
  }
}

TEST(Bf16Codec, UnderflowsToSignedZero) {
  const double half_min = 0x1p-134;  // half the smallest subnormal: ties to 0
  for (const double v :
       {half_min, toward_zero(half_min), 1e-300, std::numeric_limits<double>::denorm_min(), 0.0}) {
    EXPECT_EQ(bf16_encode(v), 0x0000) << show(v);
    EXPECT_EQ(bf16_encode(-v), 0x8000) << show(-v);
  }
  EXPECT_EQ(bf16_encode(away_from_zero(half_min)), 0x0001);
  EXPECT_EQ(bf16_encode(3 * 0x1p-134), 0x0002) << "subnormal tie 1.5·2^-133 -> even code 2";
}

}  // namespace
}  // namespace v4ref::fmt

// GCC 12.2 -O3 once dropped round_fp32 when the SLP vectoriser packed two of them (three uniform
// draws mapped to [0.5, 2) and rounded, the loop fully unrolled). The Release build compiles this
// at -O3; every result must be a float value.
namespace {
__attribute__((noinline)) void three_rounded_uniforms(std::uint64_t seed, double* out) {
  v4ref::Rng rng(seed);
  for (int i = 0; i < 3; ++i) out[i] = v4ref::fmt::round_fp32(rng.uniform(0.5, 2.0));
}
}  // namespace

TEST(FormatsFp32, RoundingSurvivesSlpVectorisation) {
  std::int64_t off_grid = 0;
  for (std::uint64_t seed = 0; seed < 1000; ++seed) {
    double v[3];
    three_rounded_uniforms(seed, v);
    for (double x : v) off_grid += static_cast<double>(static_cast<float>(x)) != x;
  }
  EXPECT_EQ(off_grid, 0);
}
