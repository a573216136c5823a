// Block quantizers of the official V4 forward (v4-forward.md §2.5) and the weight quantizers the
// checkpoint generator uses to produce fp8 block-scaled and fp4 expert weights (§1.5, §15.5–15.6).
//
// Activation fake-quant (Q8, Q4): per block of `block` consecutive elements of the span (the
// span is the last dim, or rows laid end to end whose length is a multiple of the block):
//   a = max(max_i |x_i|, floor);  s = 2^k with k from act_scale_exponent (KER arithmetic);
//   x_i <- fmt(clamp(x_i / s, -qmax, qmax)) * s, stored in bf16.
// The bf16 store is exact unless it overflows: fmt(·)·s has at most 4 (e4m3) or 2 (e2m1)
// significant bits and is at least 2^-31 (Q8) or 2^-127 (Q4, a bf16 subnormal) in magnitude when
// non-zero. Overflow needs fmt(x/s)·s = 2^128, i.e. |x| >= 248·2^120 = 0x1.Fp127 (Q8) or
// |x| >= 3.5·2^126 = 0x1.Cp127 (Q4): values inside bf16's finite range (max 0x1.FEp127) whose
// block rounds up to 2^128 and is stored as ±Inf, as the official fp32 → bf16 path would. Below
// those magnitudes the output is exactly the decoded code times the scale.
//
// Tail rule: the span length must be a multiple of the block (the official act_quant asserts
// the same); anything else is a ShapeError. Non-finite inputs, and |x| above FLT_MAX (fp32 amax
// would overflow), are a NumericError naming the element: the reference does not define a scale
// for them.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace v4ref::ref {

// Block scale rule of an activation quantizer (§2.5).
struct ScaleRule {
  double qmax;        // largest finite magnitude of the element format
  double amax_floor;  // lower bound on the block amax, keeps the scale finite for zero blocks
};

// Q8: e4m3 max 448; floor 1e-4 as in the official act_quant kernel.
inline constexpr ScaleRule kQ8Rule{448.0, 1e-4};
// Q4: e2m1 max 6; floor 6·2^-126 so that a/6 is the smallest normal fp32 (exactly 2^-126).
inline constexpr ScaleRule kQ4Rule{6.0, 6.0 * 0x1p-126};

// Exponent k of the ue8m0 block scale 2^k for a block whose largest magnitude is `amax`, the way
// the official act_quant kernel computes it: a = max(fp32(amax), fp32(floor)), t = a ⊗ fp32(1/qmax)
// (one fp32 multiply), k = ceil(log2 t) read from the bits of t (fmt::ceil_log2_fp32_bits).
// For fp32 (so bf16) amax this equals the exact ceil(log2(max(amax, floor)/qmax)); for double amax
// it can be one less, when fp32(amax) rounds down onto qmax·2^k (amax/qmax above 2^k by less than
// about 3.4e-8 relative). Then |x|/s may exceed qmax slightly and the clamp applies.
// NumericError if amax is NaN, negative or above FLT_MAX.
int act_scale_exponent(double amax, const ScaleRule& rule);

// Smallest k with amax <= qmax·2^k, in exact arithmetic (the weight quantizers' rule). amax > 0
// finite. The result may lie outside the ue8m0 range; callers clamp or reject.
int smallest_pow2_scale_exponent(double amax, double qmax);

// Codes and ue8m0 scale bytes of a block-quantized activation, for kernels that store codes.
struct BlockCodes {
  std::vector<std::uint8_t> codes;   // [n] e4m3 bytes (Q8) or e2m1 nibbles, one per byte (Q4)
  std::vector<std::uint8_t> scales;  // [n / block] ue8m0 bytes, 2^(u-127) multiplies
};

// Q8(x; block) into out (same length as x; out may alias x). Blocks 128 (linear inputs) and 64
// (KV nope part) in the official forward.
void q8_fake_quant(std::span<const double> x, int block, std::span<double> out);
BlockCodes q8_quantize(std::span<const double> x, int block);

// Q4(x; block) into out (same length; may alias). Block 32 in the official forward.
void q4_fake_quant(std::span<const double> x, int block, std::span<double> out);
BlockCodes q4_quantize(std::span<const double> x, int block = 32);

// ---------------------------------------------------------------- weight quantizers

// An fp8 e4m3 weight [rows, cols] with ue8m0 scales over 128x128 blocks (§15.6):
//   W[i, j] = e4m3(codes[i*cols + j]) · 2^(scales[(i/128)*ceil(cols/128) + j/128] − 127).
struct Fp8BlockWeightCodes {
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint8_t> codes;   // [rows, cols] e4m3 bytes
  std::vector<std::uint8_t> scales;  // [ceil(rows/128), ceil(cols/128)] ue8m0 bytes
};

// Per 128x128 block (edge blocks smaller): s = the smallest power of two with max|w|/s <= 448,
// clamped below to 2^-127 (ue8m0's smallest); an all-zero block gets the Q8 floor's scale
// 2^ceil(log2(1e-4/448)) = 2^-22. Codes are e4m3 RNE of w/s (never saturating, w/s <= 448).
// `w` is row-major [rows, cols]. ShapeError on size mismatch or a non-positive dimension;
// NumericError on a non-finite weight or a block needing a scale above 2^127.
Fp8BlockWeightCodes quantize_fp8_block_weight(std::span<const double> w, std::int64_t rows,
                                              std::int64_t cols);

// An fp4 e2m1 expert weight, logical [rows, cols], packed two nibbles per byte along the row
// (§15.5: low nibble = even column) with one ue8m0 scale per 32 columns of a row (§15.6).
struct Fp4ExpertWeightCodes {
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint8_t> packed;  // [rows, cols/2]
  std::vector<std::uint8_t> scales;  // [rows, cols/32] ue8m0 bytes
};

// Per 1x32 block: s = the smallest power of two with max|w|/s <= 6, clamped below to 2^-127; an
// all-zero block gets the Q4 floor's scale 2^-126. Nibbles are e2m1 RNE of w/s. cols must be a
// positive multiple of 32. Errors as for the fp8 quantizer.
Fp4ExpertWeightCodes quantize_fp4_expert_weight(std::span<const double> w, std::int64_t rows,
                                                std::int64_t cols);

}  // namespace v4ref::ref
