// Per-thread math of the CUDA compressors (cuda/src/compressor_kernels.cuh), written once for
// host and device; the kernels themselves run on the CPU in the SIMT executor
// (compressor_simt.hpp, docs/simt.md) (docs/cuda-mhc-compressor.md §4; v4-forward.md §6, §7.1,
// §11.2, §2.4, §2.5).
//
// One compressed entry j (width w = 128·Q, rope r = 64, ratio m = 4 or 128), two kinds:
//   slots    CSA: 8 (rows of block j−1 through channels [0, w), rows of block j through [w, 2w));
//            HCA: the 128 rows of block j. A slot holds (value a, logit l = fp32(g + ape[r]))
//            exactly as the §11.2 decode state stores it; absent slots (CSA, j = 0): l = −∞, a = 0
//   pool     per channel: M = max l, e = exp(l − M), p = Σ e·a / Σ e           (fp32)
//   bf16     p rounded to bf16                                      (store_bf16_pooled)
//   norm     y = bf16(nw · (p · ρ)), ρ = 1/sqrt(Σp²/w + eps)        (store_bf16_norm)
//   rope     last 64 dims, pair (x, y) at position j·m: (x·c − y·s, x·s + y·c) with the fp32
//            cos/sin of the fp32 angle, rounded to bf16         (rope_fp32_angle, store_bf16_rope)
// main compressor (attn.compressor, CSA or HCA, w = 128·Q):
//   Q8       dims [0, w−64) in blocks of 64: ue8m0 scale from the fp32 bits of
//            max(amax, 1e-4)·fp32(1/448), e4m3 codes (saturating)  (ckv_q8_64)
//   row      [w−64 e4m3 codes][64 bf16][(w−64)/64 ue8m0 scales][pad to 8] (row_bytes(); 584 bytes
//            for w = 512: the KV row of kernel-targets.md §3)
// indexer compressor (attn.indexer.compressor, §7.1: m = 4, c = 2, w = index_head_dim = 128):
//   Had      z = H_128 y in fp32 (Sylvester butterfly, stages h = 1, 2, ..., 64: pair (i, i+h)
//            becomes (y_i + y_{i+h}, y_i − y_{i+h})), then bf16(z · fp32(128^-1/2))
//                                                    (§2.4; store_bf16_hadamard)
//   Q4       blocks of 32: ue8m0 scale from the fp32 bits of max(amax, 6·2^-126)·fp32(1/6),
//            e2m1 codes of y/2^k (saturating, ties to even)          (idx_k_q4_32, §2.5 item 5)
//   row      68 bytes: [64 bytes e2m1, byte b = channel 2b (low nibble) | channel 2b+1 (high)]
//            [4 ue8m0 scales] (cost-model.md "V4 indexer key"); rows are only 4-byte aligned
//
// Work decomposition (the kernels and their launchers share it):
//   cluster of Q = w/128 CTAs per entry (indexer: Q = 1); CTA `rank` owns channels
//   [128·rank, 128·rank + 128); 4 warps per CTA split the slots in contiguous ranges (CSA 2 each,
//   HCA 32 each); lane l owns channels 4l..4l+3 of the CTA's range (16-byte loads)
//   max: exact in any order; Σe and Σe·a: per warp in slot order, then warps 0..3 in order;
//   Σp²: per lane 4-term fma chain, xor-butterfly 16, 8, 4, 2, 1 over the warp, then the Q CTA
//   sums in rank order; everything after the pooling in warp 0 of each CTA:
//   main    rope and Q8 inside the owning lanes (16 lanes per 64-channel block)
//   indexer rope in lanes 16..31; Had stages h = 1, 2 inside each lane, h = 4·o for lane offsets
//           o = 1, 2, 4, 8, 16 by xor shuffles (the lane whose bit o is clear keeps x + partner,
//           the other partner − x: hadamard_butterfly); Q4 blocks = 8 lanes (xor max 4, 2, 1)
//
// This header must stay self-contained (core headers only): the cpu test includes it without a
// CUDA toolkit. Not shared with reference/ (style.md).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "v4ref/cuda/fp32_rn.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/host_device.hpp"

namespace v4ref::cuda::cmp {

using rn::add_rn;
using rn::bf16_rne_bits;
using rn::bf16_value;
using rn::div_rn;
using rn::exp_f32;
using rn::fma_rn;
using rn::max_f;
using rn::mul_rn;
using rn::sqrt_rn;

inline constexpr int kCtaChannels = 128;  // channels per CTA
inline constexpr int kLaneChannels = 4;   // channels per lane (one 16-byte load)
inline constexpr int kWarps = 4;
inline constexpr int kThreads = kWarps * 32;
inline constexpr int kRope = 64;     // rope dims at the end of the entry
inline constexpr int kQ8Block = 64;  // §2.5 item 3
inline constexpr float kQ8AmaxFloor = 1e-4f;
inline constexpr float kInvE4m3Max = 1.0f / 448.0f;  // fp32(1/448), correctly rounded
inline constexpr int kMaxClusterCtas = 8;
// Indexer compressor (§7.1, §2.4, §2.5 item 5).
inline constexpr int kIndexerRatio = 4;
inline constexpr int kIndexerWidth = 128;                  // index_head_dim: the Hadamard length n
inline constexpr int kQ4Block = 32;                        // 8 lanes of 4 channels
inline constexpr float kQ4AmaxFloor = 6.0f * 0x1.0p-126f;  // 6·2^-126: a/6 is 2^-126 (normal)
inline constexpr float kInvE2m1Max = 1.0f / 6.0f;          // fp32(1/6), correctly rounded
// fp32(128^-1/2) = fp32(2^-3.5), correctly rounded (checked against the double in the cpu test).
inline constexpr float kHadamardScale = static_cast<float>(0.08838834764831844055010554526310612);

// Which tail of §6.3 an entry gets (the width cannot tell: tiny configs have w = 128 for both).
// Control-flow defects the SIMT tests inject into the kernels of compressor_kernels.cuh
// (template parameter; the device build instantiates kNone only). docs/simt.md §5.
enum class CompressorFault : int {
  kNone = 0,
  kQ8ShuffleCrossesBlocks,  // the Q8 amax butterfly starts at xor 16: two 64-channel blocks mix
  kRowPaddingPastEnd,       // the padding loop of the main row runs 8 bytes past the row
  kHadamardHalfMask,        // the Hadamard shuffles name lanes 0..15 only
  kNoBarrierAfterMax,       // pass 2 reads the warps' maxima without the barrier after pass 1
  kSsboxOwnRank,            // every CTA reads the square sums from its own shared memory
  kNoExitClusterBarrier,    // a CTA may exit while another still reads its square sum
  kStateShiftOffByOne,      // CSA decode copies rows 3–6 (not 4–7) into rows 0–3
};

enum class Kind : int {
  kMain,     // attn.compressor: rope bf16 + Q8 of the nope dims
  kIndexer,  // attn.indexer.compressor: rope, Hadamard, Q4 of all 128 dims
};

struct Dims {
  int ratio = 0;  // m: 4 (CSA, two series) or 128 (HCA)
  int width = 0;  // w: a multiple of 128, at least 128 (indexer: exactly 128)
  Kind kind = Kind::kMain;
  V4REF_HD constexpr bool csa() const { return ratio == 4; }
  V4REF_HD constexpr bool indexer() const { return kind == Kind::kIndexer; }
  V4REF_HD constexpr int series() const { return csa() ? 2 : 1; }
  V4REF_HD constexpr int cw() const { return series() * width; }           // projection width c·w
  V4REF_HD constexpr int slots() const { return csa() ? 8 : ratio; }       // slots per entry
  V4REF_HD constexpr int state_rows() const { return csa() ? 8 : ratio; }  // §11.2
  V4REF_HD constexpr int ctas() const { return width / kCtaChannels; }
  V4REF_HD constexpr int nope() const { return width - kRope; }  // first rope channel
  // Scale bytes per row: main one per 64 nope dims, indexer one per 32 dims.
  V4REF_HD constexpr int scales() const { return indexer() ? width / kQ4Block : nope() / kQ8Block; }
  // main: [nope e4m3][64 bf16][scales][pad to 8]; indexer: [w/2 packed e2m1][scales] (68 bytes)
  V4REF_HD constexpr int row_bytes() const {
    return indexer() ? width / 2 + scales() : (nope() + 2 * kRope + scales() + 7) / 8 * 8;
  }
  V4REF_HD constexpr int rope_offset() const {
    return nope();
  }  // main: byte offset of the bf16 part
  V4REF_HD constexpr int scale_offset() const { return indexer() ? width / 2 : nope() + 2 * kRope; }
  V4REF_HD constexpr int slots_per_warp() const { return slots() / kWarps; }
  // Channel of slot s read for entry channel i (0 <= i < w): CSA rows 0–3 (previous block) read
  // series 0, rows 4–7 (current block) series 1 (§6.2, §11.2); HCA channel i.
  V4REF_HD constexpr int channel(int s, int i) const { return csa() && s >= 4 ? width + i : i; }
};

inline Dims make_dims(int ratio, std::int64_t width, Kind kind = Kind::kMain) {
  if (kind == Kind::kIndexer) {
    if (ratio != kIndexerRatio)
      throw ConfigError(
          "compressor (indexer): ratio must be 4 (the indexer compressor exists in CSA layers "
          "only, v4-forward.md §7.1), got " +
          std::to_string(ratio));
    if (width != kIndexerWidth)
      throw ShapeError(
          "compressor (indexer): width must be index_head_dim = 128 (the Hadamard length of "
          "§2.4, one CTA per entry), got " +
          std::to_string(width));
    return Dims{ratio, static_cast<int>(width), kind};
  }
  if (ratio != 4 && ratio != 128)
    throw ConfigError("compressor: ratio must be 4 (CSA) or 128 (HCA), got " +
                      std::to_string(ratio));
  if (width < kCtaChannels || width % kCtaChannels != 0 || width / kCtaChannels > kMaxClusterCtas)
    throw ShapeError("compressor: width must be a multiple of 128 in [128, 1024], got " +
                     std::to_string(width));
  return Dims{ratio, static_cast<int>(width), kind};
}

// ---------------------------------------------------------------- per element

// The logit a slot stores: fp32(g + ape) (the official fp32 state, §11.2).
V4REF_HD inline float slot_logit(float g, float ape) { return add_rn(g, ape); }

// Pass 2 of the pooling, one slot: e = exp(l − M); den += e; num += e·a (one fma).
V4REF_HD inline void pool_accumulate(float l, float mx, float a, float& den, float& num) {
  const float e = exp_f32(add_rn(l, -mx));
  den = add_rn(den, e);
  num = fma_rn(e, a, num);
}

V4REF_HD inline std::uint16_t pooled_bf16(float num, float den) {
  return bf16_rne_bits(div_rn(num, den));
}

// ρ = 1/sqrt(Σp²/w + eps).
V4REF_HD inline float inv_rms(float sumsq, int width, float eps) {
  return div_rn(1.0f, sqrt_rn(add_rn(div_rn(sumsq, static_cast<float>(width)), eps)));
}

// y = bf16(nw·(p·ρ)) (the reference's weight·(x·r) order).
V4REF_HD inline std::uint16_t norm_bf16(float p, float rho, float nw) {
  return bf16_rne_bits(mul_rn(nw, mul_rn(p, rho)));
}

// One RoPE pair: (x·c − y·s, x·s + y·c) in fp32, each one product then one fma, rounded to bf16.
V4REF_HD inline void rope_pair(float x, float y, float c, float s, std::uint16_t& rx,
                               std::uint16_t& ry) {
  rx = bf16_rne_bits(fma_rn(x, c, -mul_rn(y, s)));
  ry = bf16_rne_bits(fma_rn(x, s, mul_rn(y, c)));
}

// ue8m0 exponent k of a Q8 block with largest magnitude `amax` (the official fp32 steps).
V4REF_HD inline int q8_scale_exponent(float amax) {
  return fmt::ceil_log2_fp32_bits(mul_rn(max_f(amax, kQ8AmaxFloor), kInvE4m3Max));
}

// e4m3 code of a bf16 value y in a block of scale 2^k: y/2^k is exact in double; saturating.
V4REF_HD inline std::uint8_t q8_code(float y, int k) {
  double q = static_cast<double>(y) / fmt::pow2(k);
  q = q > 448.0 ? 448.0 : (q < -448.0 ? -448.0 : q);
  return fmt::e4m3_encode(q, fmt::Saturation::kSatFinite);
}

// ---- indexer tail: Hadamard (§2.4) and Q4 (§2.5 item 5)

// One Sylvester butterfly output of the pair (y_i, y_{i+h}) = (a, c): channel i gets a + c,
// channel i + h gets a − c. `mine` is this channel's value, `partner` the other one's, `upper`
// whether this is channel i + h (bit h of the channel index set). In fp32 the operands and the
// operation are exactly the reference's a + c and a − c, on the host and on the device.
V4REF_HD inline float hadamard_butterfly(float mine, float partner, bool upper) {
  return upper ? add_rn(partner, -mine) : add_rn(mine, partner);
}

// Stages h = 1 and h = 2 on the 4 channels 4l..4l+3 of one lane (both pairs inside the lane).
V4REF_HD inline void hadamard_in_lane(float v[4]) {
  const float s0 = hadamard_butterfly(v[0], v[1], false), s1 = hadamard_butterfly(v[1], v[0], true);
  const float s2 = hadamard_butterfly(v[2], v[3], false), s3 = hadamard_butterfly(v[3], v[2], true);
  v[0] = hadamard_butterfly(s0, s2, false);
  v[2] = hadamard_butterfly(s2, s0, true);
  v[1] = hadamard_butterfly(s1, s3, false);
  v[3] = hadamard_butterfly(s3, s1, true);
}

// The stored Hadamard output: bf16(z · fp32(128^-1/2)), one fp32 product (store_bf16_hadamard).
V4REF_HD inline std::uint16_t hadamard_bf16(float z) {
  return bf16_rne_bits(mul_rn(z, kHadamardScale));
}

// ue8m0 exponent k of a Q4 block with largest magnitude `amax` (ref act_scale_exponent, kQ4Rule:
// fp32 max with the floor, one fp32 product by fp32(1/6), ceil(log2) from the bits).
V4REF_HD inline int q4_scale_exponent(float amax) {
  return fmt::ceil_log2_fp32_bits(mul_rn(max_f(amax, kQ4AmaxFloor), kInvE2m1Max));
}

// e2m1 nibble of a bf16 value y in a block of scale 2^k: y/2^k is exact in double; clamped to
// ±6 as the reference does (e2m1_encode saturates anyway), ties to even.
V4REF_HD inline std::uint8_t q4_code(float y, int k) {
  double q = static_cast<double>(y) / fmt::pow2(k);
  q = q > 6.0 ? 6.0 : (q < -6.0 ? -6.0 : q);
  return fmt::e2m1_encode(q);
}

// The two row bytes of one lane's 4 channels 4l..4l+3, little-endian: byte 2l = c0 | c1 << 4,
// byte 2l + 1 = c2 | c3 << 4 (low nibble = even channel, §15.5 packing).
V4REF_HD inline std::uint16_t q4_lane_bits(const std::uint8_t c[4]) {
  return static_cast<std::uint16_t>(fmt::fp4_pack(c[0], c[1]) |
                                    (static_cast<unsigned>(fmt::fp4_pack(c[2], c[3])) << 8));
}

// ---------------------------------------------------------------- launches on host arrays

// The rows of prefill entry j: token rows (CSA s < 4: block j−1, s >= 4: block j; HCA s: block j).
V4REF_HD inline std::int64_t prefill_row(const Dims& dm, std::int64_t j, int s) {
  if (!dm.csa()) return j * dm.ratio + s;
  if (s < 4) return j == 0 ? -1 : (j - 1) * 4 + s;
  return j * 4 + (s - 4);
}

// The rope table entry of entry j: cos/sin [32] each for position j·m.
struct RopeRow {
  const float* cos = nullptr;
  const float* sin = nullptr;
};

// cos/sin [entries][32] of the positions j·m, j < entries: θ = fp32(fp32(j·m)·ω_j) from the
// layer's fp32 frequencies (rope_fp32_angle, §2.3), cos and sin of that angle in double rounded
// to fp32 (the kernel reads this table; device sinf/cosf are not bitwise portable).
inline void rope_table(const float* omega_fp32, std::int64_t entries, int ratio,
                       std::vector<float>& cos_out, std::vector<float>& sin_out) {
  cos_out.resize(static_cast<std::size_t>(entries * 32));
  sin_out.resize(cos_out.size());
  for (std::int64_t j = 0; j < entries; ++j)
    for (int k = 0; k < 32; ++k) {
      const float theta = static_cast<float>(j * ratio) * omega_fp32[k];
      cos_out[static_cast<std::size_t>(j * 32 + k)] =
          static_cast<float>(std::cos(static_cast<double>(theta)));
      sin_out[static_cast<std::size_t>(j * 32 + k)] =
          static_cast<float>(std::sin(static_cast<double>(theta)));
    }
}

// Optional debug outputs of one entry, [w] bf16 each (null: not written), so that every
// rounding point can be gated on the kernel's own input to it:
//   pooled    the pooled p (input of the norm)
//   normed    the RMSNorm output before RoPE (input of RoPE on the last 64 dims; main: of Q8)
//   roped     indexer only: the entry after RoPE (input of the Hadamard rotation)
//   hadamard  indexer only: the bf16 Hadamard output (input of Q4)
struct EntryDebug {
  std::uint16_t* pooled = nullptr;
  std::uint16_t* normed = nullptr;
  std::uint16_t* roped = nullptr;
  std::uint16_t* hadamard = nullptr;
  // The same outputs of entry (or sequence) `e` in buffers of [.., w] rows.
  EntryDebug at(std::int64_t e, int width) const {
    const auto off = [&](std::uint16_t* q) { return q != nullptr ? q + e * width : nullptr; };
    return {off(pooled), off(normed), off(roped), off(hadamard)};
  }
};

// Prefill of T tokens from position 0: a, g [T, c·w] fp32, ape [m, c·w] fp32; cache rows
// [T/m][row_bytes]; rope tables cos/sin [T/m][32] for positions j·m.
struct PrefillProblem {
  Dims dm;
  std::int64_t tokens = 0;
  const float* a = nullptr;
  const float* g = nullptr;
  const float* ape = nullptr;
  const float* norm_w = nullptr;  // [w] (bf16 values)
  float eps = 1e-6f;
  const float* cos = nullptr;  // [T/m][32]
  const float* sin = nullptr;
};

// §11.2 decode state of one request: kv and score [state_rows, c·w] fp32; initial 0 / −∞.
struct DecodeState {
  std::vector<float> kv, score;
  explicit DecodeState(const Dims& dm)
      : kv(static_cast<std::size_t>(dm.state_rows() * dm.cw()), 0.0f),
        score(static_cast<std::size_t>(dm.state_rows() * dm.cw()),
              -std::numeric_limits<float>::infinity()) {}
};

}  // namespace v4ref::cuda::cmp
