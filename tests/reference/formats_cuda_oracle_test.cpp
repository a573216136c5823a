// Our encoders and decoders (core/formats.hpp) against NVIDIA's independent host-side conversion
// routines from the CUDA toolkit headers (cuda_fp8.hpp, cuda_fp4.hpp, cuda_bf16.hpp), which
// compile with the host compiler. Inputs: every power of two and its neighbours, special values,
// every midpoint between adjacent codes ± 4 ulps, and 10^6 random doubles per format over a wide
// exponent range (own splitmix64; 1/4 of the draws have short mantissas so exact codes and exact
// ties are frequent).
//
// Known, intended difference: bf16 NaN. Ours returns PyTorch's canonical 0x7FC0 for every NaN
// (the official forward casts through PyTorch); CUDA's __double2bfloat16 returns 0x7FFF on the
// host. NaN inputs are therefore only checked to give a NaN code on both sides. e4m3 NaN
// (sign | 0x7F) and e2m1 NaN (+6, code 0x7) agree with CUDA bit for bit and are compared.
//
// Without the headers (tests/CMakeLists.txt defines V4REF_CUDA_FP_HEADERS when CUDAToolkit is
// found) the suite skips with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "v4ref/ref/core/formats.hpp"

#if defined(V4REF_CUDA_FP_HEADERS) && __has_include(<cuda_fp8.h>) && \
    __has_include(<cuda_fp4.h>) && __has_include(<cuda_bf16.h>)
#define V4REF_CUDA_ORACLE 1
#include <cuda_bf16.h>
#include <cuda_fp4.h>
#include <cuda_fp8.h>
#else
#define V4REF_CUDA_ORACLE 0
#endif

namespace v4ref::fmt {
namespace {

#if V4REF_CUDA_ORACLE

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kQNan = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------- NVIDIA's host routines

std::uint8_t cuda_e4m3(double x, Saturation sat) {
  const __nv_saturation_t s = sat == Saturation::kSatFinite ? __NV_SATFINITE : __NV_NOSAT;
  return static_cast<std::uint8_t>(__nv_cvt_double_to_fp8(x, s, __NV_E4M3));
}
std::uint8_t cuda_e2m1(double x) {
  return static_cast<std::uint8_t>(__nv_cvt_double_to_fp4(x, __NV_E2M1, cudaRoundNearest));
}
std::uint16_t cuda_bf16(double x) {
  const __nv_bfloat16_raw r = __double2bfloat16(x);
  return r.x;
}
double cuda_decode_e4m3(std::uint8_t b) {
  return static_cast<double>(__half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3))));
}
double cuda_decode_e2m1(std::uint8_t n) {
  return static_cast<double>(__half2float(__half(__nv_cvt_fp4_to_halfraw(n, __NV_E2M1))));
}
double cuda_decode_bf16(std::uint16_t h) {
  __nv_bfloat16_raw r;
  r.x = h;
  return static_cast<double>(__bfloat162float(__nv_bfloat16(r)));
}

// ---------------------------------------------------------------- helpers

std::string show(double v) {
  char buf[80];
  std::snprintf(buf, sizeof buf, "%.17g (%a, bits 0x%016llX)", v, v,
                static_cast<unsigned long long>(double_bits(v)));
  return buf;
}

bool same_value(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return double_bits(a) == double_bits(b);
}

// splitmix64 (Steele, Lea, Flood 2014): a counter-based, platform-independent stream.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform integer in [lo, hi]; the modulo bias (< 2^-50 here) is irrelevant for coverage.
  int uniform_int(int lo, int hi) {
    return lo + static_cast<int>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }

 private:
  std::uint64_t state_;
};

// A double with random sign, an unbiased exponent uniform in [emin, emax] and a random mantissa;
// one draw in four keeps only the top `short_bits` mantissa bits (exact codes and exact ties).
double random_double(SplitMix64& rng, int emin, int emax, int short_bits) {
  const std::uint64_t r = rng.next();
  const std::uint64_t sign = r >> 63;
  std::uint64_t mant = rng.next() & 0xFFFFFFFFFFFFFull;
  if ((r & 3) == 0) mant &= ~((std::uint64_t{1} << (52 - short_bits)) - 1);
  const int e = rng.uniform_int(emin, emax);
  const double mag = std::ldexp(double_from_bits(0x3FF0000000000000ull | mant), e);
  return sign ? -mag : mag;
}

// Every power of two in double, its neighbours, and the usual specials (both signs).
std::vector<double> special_inputs() {
  std::vector<double> v;
  for (int e = -1074; e <= 1023; ++e) {
    const double p = std::ldexp(1.0, e);
    for (const double x : {p, std::nextafter(p, 0.0), std::nextafter(p, kInf), 3 * p / 2}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  for (const double x :
       {0.0, std::numeric_limits<double>::denorm_min(), std::numeric_limits<double>::min(),
        std::numeric_limits<double>::max(), static_cast<double>(std::numeric_limits<float>::max()),
        static_cast<double>(std::numeric_limits<float>::denorm_min()), kInf, 448.0, 464.0, 480.0,
        6.0, 0x1p-10, 0x1p-134, 0x1p128 - 0x1p119}) {
    v.push_back(x);
    v.push_back(-x);
  }
  return v;
}

// Midpoints between adjacent values of a code table (ascending, positive), ± up to 4 ulps, both
// signs. `above_max` is the midpoint past the largest finite code (464 for e4m3).
std::vector<double> midpoint_inputs(const std::vector<double>& ascending) {
  std::vector<double> v;
  for (std::size_t i = 0; i + 1 < ascending.size(); ++i) {
    double lo = (ascending[i] + ascending[i + 1]) / 2, hi = lo;
    for (int k = 0; k <= 4; ++k) {
      for (const double x : {lo, hi}) {
        v.push_back(x);
        v.push_back(-x);
      }
      lo = std::nextafter(lo, 0.0);
      hi = std::nextafter(hi, kInf);
    }
  }
  return v;
}

// Counts and reports (first few in full) the inputs where two encoders disagree.
template <class Ours, class Theirs>
int count_disagreements(const std::vector<double>& inputs, const char* what, Ours ours,
                        Theirs theirs) {
  int bad = 0;
  for (const double x : inputs) {
    const unsigned a = ours(x), b = theirs(x);
    if (a == b) continue;
    if (++bad <= 8)
      ADD_FAILURE() << what << ": input " << show(x) << ": ours 0x" << std::hex << a << ", CUDA 0x"
                    << b;
  }
  return bad;
}

std::vector<double> e4m3_positive_values() {  // 0 .. 448, plus 480 for the 464 midpoint
  std::vector<double> v;
  for (int c = 0; c <= 0x7E; ++c) v.push_back(e4m3_to_double(static_cast<std::uint8_t>(c)));
  v.push_back(480.0);
  return v;
}
std::vector<double> e2m1_positive_values() {
  std::vector<double> v;
  for (int c = 0; c <= 7; ++c) v.push_back(e2m1_to_double(static_cast<std::uint8_t>(c)));
  v.push_back(8.0);  // the midpoint 7 saturates to 6
  return v;
}
std::vector<double> bf16_positive_values() {
  std::vector<double> v;
  for (int c = 0; c < 0x7F80; ++c) v.push_back(bf16_to_double(static_cast<std::uint16_t>(c)));
  v.push_back(0x1p128);  // Inf's place: midpoint 2^128 − 2^119
  return v;
}

std::vector<double> random_inputs(std::uint64_t seed, int emin, int emax, int short_bits) {
  constexpr int kCount = 1000000;
  SplitMix64 rng(seed);
  std::vector<double> v(kCount);
  for (double& x : v) x = random_double(rng, emin, emax, short_bits);
  return v;
}

std::vector<double> raw_bit_inputs(std::uint64_t seed, bool allow_nan) {
  SplitMix64 rng(seed);
  std::vector<double> v;
  while (v.size() < 100000) {
    const double x = double_from_bits(rng.next());
    if (allow_nan || !std::isnan(x)) v.push_back(x);
  }
  return v;
}

// ---------------------------------------------------------------- e4m3

void expect_e4m3_agrees(const std::vector<double>& inputs, const char* set) {
  for (const auto sat : {Saturation::kSatFinite, Saturation::kNoSat}) {
    const std::string what =
        std::string("e4m3 ") + (sat == Saturation::kSatFinite ? "satfinite " : "nosat ") + set;
    EXPECT_EQ(count_disagreements(
                  inputs, what.c_str(), [sat](double x) { return e4m3_encode(x, sat); },
                  [sat](double x) { return cuda_e4m3(x, sat); }),
              0)
        << what << " over " << inputs.size() << " inputs";
  }
}

TEST(CudaOracleE4m3, DecodesLikeCuda) {
  for (int c = 0; c < 256; ++c) {
    const auto b = static_cast<std::uint8_t>(c);
    EXPECT_TRUE(same_value(e4m3_to_double(b), cuda_decode_e4m3(b))) << "code " << c;
  }
}

TEST(CudaOracleE4m3, SpecialsAgree) {
  std::vector<double> v = special_inputs();
  v.push_back(kQNan);  // NaN: sign | 0x7F on both sides
  v.push_back(-kQNan);
  expect_e4m3_agrees(v, "specials");
}

TEST(CudaOracleE4m3, MidpointsAgree) {
  expect_e4m3_agrees(midpoint_inputs(e4m3_positive_values()), "midpoints");
}

TEST(CudaOracleE4m3, RandomAgree) {
  expect_e4m3_agrees(random_inputs(0xE4E3u, -14, 10, 5), "random 2^-14..2^10");
  expect_e4m3_agrees(raw_bit_inputs(0xE4E3B175u, true), "raw bits");
}

// ---------------------------------------------------------------- e2m1

void expect_e2m1_agrees(const std::vector<double>& inputs, const char* set) {
  const std::string what = std::string("e2m1 ") + set;
  EXPECT_EQ(count_disagreements(
                inputs, what.c_str(), [](double x) { return e2m1_encode(x); },
                [](double x) { return cuda_e2m1(x); }),
            0)
      << what << " over " << inputs.size() << " inputs";
}

TEST(CudaOracleE2m1, DecodesLikeCuda) {
  for (int n = 0; n < 16; ++n) {
    const auto b = static_cast<std::uint8_t>(n);
    EXPECT_TRUE(same_value(e2m1_to_double(b), cuda_decode_e2m1(b))) << "nibble " << n;
  }
}

TEST(CudaOracleE2m1, SpecialsAgree) {
  std::vector<double> v = special_inputs();
  v.push_back(kQNan);  // NaN -> +6 on both sides
  v.push_back(-kQNan);
  expect_e2m1_agrees(v, "specials");
}

TEST(CudaOracleE2m1, MidpointsAgree) {
  expect_e2m1_agrees(midpoint_inputs(e2m1_positive_values()), "midpoints");
}

TEST(CudaOracleE2m1, RandomAgree) {
  expect_e2m1_agrees(random_inputs(0xE2E1u, -5, 4, 3), "random 2^-5..2^4");
  expect_e2m1_agrees(raw_bit_inputs(0xE2E1B175u, true), "raw bits");
}

// ---------------------------------------------------------------- bf16

void expect_bf16_agrees(const std::vector<double>& inputs, const char* set) {
  const std::string what = std::string("bf16 ") + set;
  EXPECT_EQ(count_disagreements(
                inputs, what.c_str(), [](double x) { return bf16_encode(x); },
                [](double x) { return cuda_bf16(x); }),
            0)
      << what << " over " << inputs.size() << " inputs";
}

TEST(CudaOracleBf16, DecodesLikeCuda) {
  int bad = 0;
  for (int c = 0; c < 65536; ++c) {
    const auto h = static_cast<std::uint16_t>(c);
    if (!same_value(bf16_to_double(h), cuda_decode_bf16(h)) && ++bad <= 8)
      ADD_FAILURE() << "code " << c << ": ours " << show(bf16_to_double(h)) << ", CUDA "
                    << show(cuda_decode_bf16(h));
  }
  EXPECT_EQ(bad, 0);
}

TEST(CudaOracleBf16, SpecialsAgree) { expect_bf16_agrees(special_inputs(), "specials"); }

TEST(CudaOracleBf16, MidpointsAgree) {
  expect_bf16_agrees(midpoint_inputs(bf16_positive_values()), "midpoints");
}

TEST(CudaOracleBf16, RandomAgree) {
  expect_bf16_agrees(random_inputs(0xBF16u, -140, 130, 9), "random 2^-140..2^130");
  expect_bf16_agrees(raw_bit_inputs(0xBF16B175u, false), "raw bits");
}

TEST(CudaOracleBf16, NanDiffersOnlyInPayload) {
  // Documented difference: ours 0x7FC0 (PyTorch), CUDA host 0x7FFF; both are NaN codes.
  for (const double x : {kQNan, -kQNan, double_from_bits(0x7FF0000000000001ull)}) {
    EXPECT_EQ(bf16_encode(x), kBf16CanonicalNan);
    const std::uint16_t theirs = cuda_bf16(x);
    EXPECT_TRUE(std::isnan(bf16_to_double(theirs))) << "CUDA gave 0x" << std::hex << theirs;
  }
}

#else  // !V4REF_CUDA_ORACLE

TEST(CudaOracle, Unavailable) {
  GTEST_SKIP() << "CUDA toolkit headers cuda_fp8.h / cuda_fp4.h / cuda_bf16.h not available "
                  "(CUDAToolkit not found at configure time), no oracle to compare with";
}

#endif  // V4REF_CUDA_ORACLE

}  // namespace
}  // namespace v4ref::fmt
