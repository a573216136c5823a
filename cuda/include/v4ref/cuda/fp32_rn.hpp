// The rounding primitives every kernel's per-thread math uses, written once for host and device
// (the kernels run on the CPU in the SIMT executor, docs/simt.md): fp32 operations with IEEE
// round-to-nearest and no contraction (nvcc cannot fuse or reassociate them differently from the
// host; in the executor each is counted for the instruction mix), bf16 rounding, and our own
// fp32 exp polynomial, so the executor and the device produce the same bits.
//
// This header must stay self-contained (core headers and the dialect only): the cpu tests include
// it without a CUDA toolkit. Not shared with reference/ (style.md: the op math is never shared).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/host_device.hpp"
#include "v4ref/cuda/simt/simt.hpp"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#endif

namespace v4ref::cuda::rn {

// ---------------------------------------------------------------- fp32 arithmetic, IEEE, no
// contraction (in the SIMT executor each operation is also counted for the instruction mix)

V4REF_HD inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  V4REF_SIMT_COUNT_ALU(kMul);
  return a * b;
#endif
}
V4REF_HD inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  V4REF_SIMT_COUNT_ALU(kAdd);
  return a + b;
#endif
}
V4REF_HD inline float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  V4REF_SIMT_COUNT_ALU(kDiv);
  return a / b;
#endif
}
V4REF_HD inline float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  V4REF_SIMT_COUNT_ALU(kSqrt);
  return std::sqrt(a);
#endif
}
V4REF_HD inline float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  V4REF_SIMT_COUNT_ALU(kFma);
  return std::fma(a, b, c);
#endif
}
V4REF_HD inline float max_f(float a, float b) {
#if defined(__CUDA_ARCH__)
  return fmaxf(a, b);
#else
  return std::fmax(a, b);
#endif
}

// ---------------------------------------------------------------- bf16

V4REF_HD inline float bf16_value(std::uint16_t h) { return fmt::bf16_to_float(h); }

// fp32 -> bf16, round to nearest even, overflow to ±Inf, NaN -> 0x7FC0 (fmt::bf16_encode's
// codes for every float; the executor's conversion).
V4REF_HD inline std::uint16_t bf16_rne_bits(float x) {
  const std::uint32_t u = fmt::float_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
  return static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// The conversion each side uses: the hardware cvt.rn.bf16.f32 on the device (identical codes
// for every non-NaN float, checked exhaustively by the gpu test; NaN gives 0x7FFF there), the
// bit formula above on the host.
V4REF_HD inline std::uint16_t to_bf16(float x) {
#if defined(__CUDA_ARCH__)
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
#else
  return bf16_rne_bits(x);
#endif
}

// ---------------------------------------------------------------- exp, sigmoid (fp32, bitwise
// portable)

// e^x in fp32 from fmas only: n = rint(x·log2 e), r = x − n·ln2 (Cody–Waite, two fp32 parts of
// ln2), e^r by the degree-6 Cephes expf polynomial, scaled by 2^n with exact power-of-two
// products (one rounding into the subnormal range). Max error about 1 ulp (tested against the
// double exp in the cpu test).
V4REF_HD inline float exp_f32(float x) {
  if (x != x) return x;
  if (x > 88.72283935546875f) return fmt::float_from_bits(0x7F800000u);  // e^x > FLT_MAX
  if (x < -103.97208404541016f) return 0.0f;                             // below 2^-150
  const float n = rintf(mul_rn(x, 1.44269504088896341f));
  float r = fma_rn(-n, 0.693359375f, x);  // ln2 high part, 9 significant bits: exact product
  r = fma_rn(-n, -2.12194440e-4f, r);     // ln2 low part
  float p = 1.9875691500e-4f;
  p = fma_rn(p, r, 1.3981999507e-3f);
  p = fma_rn(p, r, 8.3334519073e-3f);
  p = fma_rn(p, r, 4.1665795894e-2f);
  p = fma_rn(p, r, 1.6666665459e-1f);
  p = fma_rn(p, r, 5.0000001201e-1f);
  const float y = add_rn(fma_rn(p, mul_rn(r, r), r), 1.0f);  // e^r in [0.7, 1.42]
  const int ni = static_cast<int>(n);                        // in [-150, 128]
  if (ni > 127) return mul_rn(mul_rn(y, fmt::float_from_bits(0x7F000000u)), 2.0f);  // 2^127·2
  if (ni >= -126)
    return mul_rn(y, fmt::float_from_bits(static_cast<std::uint32_t>(ni + 127) << 23));
  // Subnormal result: y·2^(n+64) is an exact normal float, the final ·2^-64 rounds once.
  const float t = mul_rn(y, fmt::float_from_bits(static_cast<std::uint32_t>(ni + 64 + 127) << 23));
  return mul_rn(t, fmt::float_from_bits(static_cast<std::uint32_t>(127 - 64) << 23));
}

V4REF_HD inline float sigmoid_f32(float x) { return div_rn(1.0f, add_rn(1.0f, exp_f32(-x))); }

}  // namespace v4ref::cuda::rn
