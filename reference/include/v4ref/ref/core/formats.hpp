// Number formats of the V4 checkpoints and of the official quantizers: bf16, fp8 e4m3fn,
// ue8m0 scales, fp4 e2m1 (v4-forward.md §1.5, §2.5, §15.5).
//
// Decoders are exact: every code maps to the double it denotes. Encoders round a double to
// the nearest code, ties to the even code (RNE), which also covers float inputs because every
// float is exactly a double. Saturation and NaN behaviour:
//   bf16  : IEEE RNE, overflow to ±Inf, NaN -> 0x7FC0 (PyTorch's canonical bf16 NaN; the
//           official forward casts through PyTorch).
//   e4m3fn: kSatFinite clamps |x| > 448 to ±448 (CUDA __NV_SATFINITE, the TileLang cast of the
//           official act_quant kernel); kNoSat maps |x| > 464 to NaN (PyTorch / CUDA __NV_NOSAT).
//           NaN -> 0x7F with the input's sign bit (0xFF for negative NaN), as CUDA does.
//   e2m1  : always saturating to ±6 (the only mode CUDA offers); NaN -> +6 (code 0x7).
//   Values below half the smallest subnormal round to a zero that keeps the sign.
// Everything here compiles for host and device and uses no libm beyond rint.
#pragma once

#include <cstdint>
#include <cstring>

#include "v4ref/ref/core/host_device.hpp"

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

namespace v4ref::fmt {

// ---------------------------------------------------------------- bit helpers

V4REF_HD inline std::uint64_t double_bits(double x) {
  std::uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
V4REF_HD inline double double_from_bits(std::uint64_t u) {
  double x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
V4REF_HD inline std::uint32_t float_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
V4REF_HD inline float float_from_bits(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

V4REF_HD inline bool is_nan(double x) { return x != x; }

// 2^e for e in [-1074, 1023], built from bits (exact, no libm).
V4REF_HD inline double pow2(int e) {
  if (e >= -1022) return double_from_bits(static_cast<std::uint64_t>(e + 1023) << 52);
  return double_from_bits(std::uint64_t{1} << (e + 1074));  // subnormal double
}

// floor(log2(a)) for a finite a > 0 (normal or subnormal double).
V4REF_HD inline int floor_log2(double a) {
  const std::uint64_t u = double_bits(a) & 0x7FFFFFFFFFFFFFFFull;
  const int biased = static_cast<int>(u >> 52);
  if (biased != 0) return biased - 1023;
  int e = -1075;  // subnormal: position of the leading mantissa bit
  for (std::uint64_t m = u & 0xFFFFFFFFFFFFFull; m != 0; m >>= 1) ++e;
  return e;
}

// Round to an integer, ties to even (the default floating-point rounding mode).
V4REF_HD inline double round_half_even(double x) {
#if defined(__CUDA_ARCH__)
  return rint(x);
#else
  return std::nearbyint(x);
#endif
}

// Rounds a finite magnitude a >= 0 to the grid of a binary format with `p` significant bits
// (implicit bit included) and smallest normal exponent `emin`. The result is exact in double
// and may exceed the format's largest finite value; callers saturate or overflow.
V4REF_HD inline double round_to_format(double a, int p, int emin) {
  if (a == 0.0) return 0.0;
  int e = floor_log2(a);
  if (e < emin) e = emin;                        // subnormal range: fixed quantum
  const double quantum = pow2(e - (p - 1));      // spacing of the format at magnitude a
  return round_half_even(a / quantum) * quantum;  // division by a power of two is exact
}

// ---------------------------------------------------------------- bf16

V4REF_HD inline float bf16_to_float(std::uint16_t h) {
  return float_from_bits(static_cast<std::uint32_t>(h) << 16);
}
V4REF_HD inline double bf16_to_double(std::uint16_t h) { return bf16_to_float(h); }

inline constexpr std::uint16_t kBf16CanonicalNan = 0x7FC0;

V4REF_HD inline std::uint16_t bf16_encode(double x) {
  if (is_nan(x)) return kBf16CanonicalNan;
  const std::uint16_t sign = (double_bits(x) >> 63) ? 0x8000 : 0x0000;
  const double a = x < 0 ? -x : x;
  constexpr double kOverflow = 340282366920938463463374607431768211456.0;  // 2^128
  if (a >= kOverflow) return static_cast<std::uint16_t>(sign | 0x7F80);    // ±Inf
  const double r = round_to_format(a, 8, -126);
  if (r >= kOverflow) return static_cast<std::uint16_t>(sign | 0x7F80);
  // r has at most 8 significant bits and lies in float's range: the float is exact.
  const std::uint32_t fb = float_bits(static_cast<float>(r));
  return static_cast<std::uint16_t>(sign | (fb >> 16));
}

// The double nearest to x among bf16 values (what "round to bf16" means at a store point).
V4REF_HD inline double round_bf16(double x) { return bf16_to_double(bf16_encode(x)); }

// ---------------------------------------------------------------- fp32 / tf32 helpers

// The float value nearest x (RNE), as a double. On the host the float passes through an empty asm
// statement: GCC 12.2 at -O3 drops the double→float→double pair when its SLP vectoriser packs two
// such conversions into one vector (cvtpd2ps/cvtps2pd omitted; -fno-tree-slp-vectorize or -O2
// avoid it), which silently returned unrounded values. FormatsFp32.RoundingSurvivesSlpVectorisation
// keeps the pattern that showed it.
V4REF_HD inline double round_fp32(double x) {
  float f = static_cast<float>(x);
#if defined(__GNUC__) && !defined(__CUDA_ARCH__)
  __asm__("" : "+m"(f));  // an opaque use: the rounded float must exist
#endif
  return static_cast<double>(f);
}

// ---------------------------------------------------------------- fp8 e4m3fn

inline constexpr double kE4m3Max = 448.0;
inline constexpr std::uint8_t kE4m3Nan = 0x7F;

enum class Saturation { kSatFinite, kNoSat };

V4REF_HD inline double e4m3_to_double(std::uint8_t b) {
  const int e = (b >> 3) & 0xF;
  const int m = b & 0x7;
  const double sign = (b & 0x80) ? -1.0 : 1.0;
  if (e == 15 && m == 7) return double_from_bits(0x7FF8000000000000ull);  // NaN
  if (e == 0) return sign * m * pow2(-9);                                 // (m/8)·2^-6
  return sign * (8 + m) * pow2(e - 10);                                   // (1+m/8)·2^(e-7)
}
V4REF_HD inline float e4m3_to_float(std::uint8_t b) {
  return static_cast<float>(e4m3_to_double(b));
}

V4REF_HD inline std::uint8_t e4m3_encode(double x, Saturation sat = Saturation::kSatFinite) {
  const std::uint8_t sign = (double_bits(x) >> 63) ? 0x80 : 0x00;
  if (is_nan(x)) return static_cast<std::uint8_t>(sign | kE4m3Nan);
  const double a = x < 0 ? -x : x;
  if (a > kE4m3Max) {
    // Between 448 and 464 RNE still lands on 448; beyond, NaN unless saturating.
    if (sat == Saturation::kSatFinite || a <= 464.0) return static_cast<std::uint8_t>(sign | 0x7E);
    return static_cast<std::uint8_t>(sign | kE4m3Nan);
  }
  const double r = round_to_format(a, 4, -6);
  if (r < pow2(-6)) {  // zero or subnormal: code = r / 2^-9 (r == 2^-6 falls through)
    return static_cast<std::uint8_t>(sign | static_cast<std::uint8_t>(r / pow2(-9)));
  }
  const int e = floor_log2(r);
  const int m = static_cast<int>(r / pow2(e - 3)) - 8;
  return static_cast<std::uint8_t>(sign | ((e + 7) << 3) | m);
}

V4REF_HD inline double round_e4m3(double x, Saturation sat = Saturation::kSatFinite) {
  return e4m3_to_double(e4m3_encode(x, sat));
}

// ---------------------------------------------------------------- fp4 e2m1

inline constexpr double kE2m1Max = 6.0;

// Nibble value table, index = 4-bit code (bit 3 = sign): v4-forward.md §1.5.
// Computed from the fields rather than read from an array, so device code keeps it in
// registers: e = 0 -> m·0.5, else (1 + m/2)·2^(e−1).
V4REF_HD inline double e2m1_to_double(std::uint8_t nibble) {
  const int e = (nibble >> 1) & 0x3;
  const int m = nibble & 0x1;
  const double v = e == 0 ? 0.5 * m : (2 + m) * pow2(e - 2);
  return (nibble & 0x8) ? -v : v;
}

V4REF_HD inline std::uint8_t e2m1_encode(double x) {
  if (is_nan(x)) return 0x7;  // CUDA: NaN converts to +maxnorm
  const std::uint8_t sign = (double_bits(x) >> 63) ? 0x8 : 0x0;
  const double a = x < 0 ? -x : x;
  if (a > kE2m1Max) return static_cast<std::uint8_t>(sign | 0x7);
  const double r = round_to_format(a, 2, 0);
  if (r < 1.0) return static_cast<std::uint8_t>(sign | static_cast<std::uint8_t>(r / 0.5));
  const int e = floor_log2(r);
  const int m = static_cast<int>(r / pow2(e - 1)) - 2;
  return static_cast<std::uint8_t>(sign | ((e + 1) << 1) | m);
}

V4REF_HD inline double round_e2m1(double x) { return e2m1_to_double(e2m1_encode(x)); }

// Packed fp4 bytes (§15.5): low nibble = even column, high nibble = odd column.
V4REF_HD inline std::uint8_t fp4_low(std::uint8_t byte) { return byte & 0xF; }
V4REF_HD inline std::uint8_t fp4_high(std::uint8_t byte) { return byte >> 4; }
V4REF_HD inline std::uint8_t fp4_pack(std::uint8_t even, std::uint8_t odd) {
  return static_cast<std::uint8_t>((even & 0xF) | ((odd & 0xF) << 4));
}

// ---------------------------------------------------------------- ue8m0 scales

inline constexpr std::uint8_t kUe8m0Nan = 0xFF;

V4REF_HD inline double ue8m0_to_double(std::uint8_t u) {
  if (u == kUe8m0Nan) return double_from_bits(0x7FF8000000000000ull);
  return pow2(static_cast<int>(u) - 127);
}

// Code of an exact power of two 2^k, k in [-127, 127]; kUe8m0Nan for anything else.
V4REF_HD inline std::uint8_t ue8m0_encode_pow2(double s) {
  if (!(s > 0.0) || is_nan(s)) return kUe8m0Nan;
  const int k = floor_log2(s);
  if (k < -127 || k > 127 || s != pow2(k)) return kUe8m0Nan;
  return static_cast<std::uint8_t>(k + 127);
}

// ceil(log2(t)) of a positive normal float, read from its bits the way the official act_quant
// kernel does: exponent − 127 + (mantissa ≠ 0) (v4-forward.md §2.5).
V4REF_HD inline int ceil_log2_fp32_bits(float t) {
  const std::uint32_t u = float_bits(t);
  const int exponent = static_cast<int>((u >> 23) & 0xFF);
  const int carry = (u & 0x7FFFFF) != 0 ? 1 : 0;
  return exponent - 127 + carry;
}

}  // namespace v4ref::fmt
