// Per-thread math of the CUDA main compressor (cuda/src/compressor_fp8_sm90.cu), written once for
// host and device, and the CPU executor that runs it in the kernels' own cluster / warp / lane
// and reduction order (docs/cuda-mhc-compressor.md §4; v4-forward.md §6, §11.2, §2.5 item 3).
//
// One compressed entry j of a main compressor (width w = 128·Q, rope r = 64, ratio m = 4 or 128):
//   slots    CSA: 8 (rows of block j−1 through channels [0, w), rows of block j through [w, 2w));
//            HCA: the 128 rows of block j. A slot holds (value a, logit l = fp32(g + ape[r]))
//            exactly as the §11.2 decode state stores it; absent slots (CSA, j = 0): l = −∞, a = 0
//   pool     per channel: M = max l, e = exp(l − M), p = Σ e·a / Σ e           (fp32)
//   bf16     p rounded to bf16                                      (store_bf16_pooled)
//   norm     y = bf16(nw · (p · ρ)), ρ = 1/sqrt(Σp²/w + eps)        (store_bf16_norm)
//   rope     last 64 dims, pair (x, y) at position j·m: (x·c − y·s, x·s + y·c) with the fp32
//            cos/sin of the fp32 angle, rounded to bf16         (rope_fp32_angle, store_bf16_rope)
//   Q8       dims [0, w−64) in blocks of 64: ue8m0 scale from the fp32 bits of
//            max(amax, 1e-4)·fp32(1/448), e4m3 codes (saturating)  (ckv_q8_64)
// Cache row (row_bytes(w) bytes): [w−64 e4m3 codes][64 bf16][(w−64)/64 ue8m0 scales][pad to 8]
// (584 bytes for w = 512: the 584-byte KV row of kernel-targets.md §3).
//
// Work decomposition (kernel and executor share it):
//   cluster of Q = w/128 CTAs per entry; CTA `rank` owns channels [128·rank, 128·rank + 128)
//   4 warps per CTA split the slots in contiguous ranges (CSA 2 each, HCA 32 each); lane l owns
//   channels 4l..4l+3 of the CTA's range (16-byte loads)
//   max: exact in any order; Σe and Σe·a: per warp in slot order, then warps 0..3 in order;
//   Σp²: per lane 4-term fma chain, xor-butterfly 16, 8, 4, 2, 1 over the warp, then the Q CTA
//   sums in rank order; rope and Q8 inside the owning lanes (16 lanes per 64-channel block).
//
// This header must stay self-contained (core headers only): the cpu test includes it without a
// CUDA toolkit. Not shared with reference/ (style.md).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "mhc_tile.hpp"  // fp32 helpers (mul_rn, add_rn, fma_rn, div_rn, sqrt_rn, exp_f32, bf16)
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/host_device.hpp"

namespace v4ref::cuda::cmp {

using mhc::add_rn;
using mhc::bf16_rne_bits;
using mhc::bf16_value;
using mhc::div_rn;
using mhc::exp_f32;
using mhc::fma_rn;
using mhc::max_f;
using mhc::mul_rn;
using mhc::sqrt_rn;

inline constexpr int kCtaChannels = 128;  // channels per CTA
inline constexpr int kLaneChannels = 4;   // channels per lane (one 16-byte load)
inline constexpr int kWarps = 4;
inline constexpr int kThreads = kWarps * 32;
inline constexpr int kRope = 64;     // rope dims at the end of the entry
inline constexpr int kQ8Block = 64;  // §2.5 item 3
inline constexpr float kQ8AmaxFloor = 1e-4f;
inline constexpr float kInvE4m3Max = 1.0f / 448.0f;  // fp32(1/448), correctly rounded
inline constexpr int kMaxClusterCtas = 8;

struct Dims {
  int ratio = 0;  // m: 4 (CSA, two series) or 128 (HCA)
  int width = 0;  // w: a multiple of 128, at least 128
  V4REF_HD constexpr bool csa() const { return ratio == 4; }
  V4REF_HD constexpr int series() const { return csa() ? 2 : 1; }
  V4REF_HD constexpr int cw() const { return series() * width; }           // projection width c·w
  V4REF_HD constexpr int slots() const { return csa() ? 8 : ratio; }       // slots per entry
  V4REF_HD constexpr int state_rows() const { return csa() ? 8 : ratio; }  // §11.2
  V4REF_HD constexpr int ctas() const { return width / kCtaChannels; }
  V4REF_HD constexpr int nope() const { return width - kRope; }
  V4REF_HD constexpr int scales() const { return nope() / kQ8Block; }
  V4REF_HD constexpr int row_bytes() const { return (nope() + 2 * kRope + scales() + 7) / 8 * 8; }
  V4REF_HD constexpr int rope_offset() const { return nope(); }  // byte offset of the bf16 part
  V4REF_HD constexpr int scale_offset() const { return nope() + 2 * kRope; }
  V4REF_HD constexpr int slots_per_warp() const { return slots() / kWarps; }
  // Channel of slot s read for entry channel i (0 <= i < w): CSA rows 0–3 (previous block) read
  // series 0, rows 4–7 (current block) series 1 (§6.2, §11.2); HCA channel i.
  V4REF_HD constexpr int channel(int s, int i) const { return csa() && s >= 4 ? width + i : i; }
};

inline Dims make_dims(int ratio, std::int64_t width) {
  if (ratio != 4 && ratio != 128)
    throw ConfigError("compressor: ratio must be 4 (CSA) or 128 (HCA), got " +
                      std::to_string(ratio));
  if (width < kCtaChannels || width % kCtaChannels != 0 || width / kCtaChannels > kMaxClusterCtas)
    throw ShapeError("compressor: width must be a multiple of 128 in [128, 1024], got " +
                     std::to_string(width));
  return Dims{ratio, static_cast<int>(width)};
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

// The xor-butterfly sum of a warp (offsets 16, 8, 4, 2, 1; every lane ends with the same value:
// lane l adds its partner's value to its own, and a + b == b + a in IEEE).
inline void butterfly_sum(float v[32]) {
  for (int o = 16; o > 0; o /= 2) {
    float next[32];
    for (int l = 0; l < 32; ++l) next[l] = add_rn(v[l], v[l ^ o]);
    for (int l = 0; l < 32; ++l) v[l] = next[l];
  }
}

// ---------------------------------------------------------------- CPU executor (host only)

// Where an entry's slots come from: slot s of entry j is the row `row(j, s)` of `a` / `l`
// (row-major [rows, c·w] fp32), or absent (row < 0).
struct SlotSource {
  const float* a = nullptr;  // values
  const float* l = nullptr;  // logits (already g + ape)
  std::int64_t row_stride = 0;
};

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

// One entry through pool, norm, rope and Q8, cluster CTA by CTA, warp by warp, lane by lane.
// `rows_of(s)` gives the state/token row of slot s (negative: absent). Writes the cache row.
// Debug outputs (optional, [w] bf16 each): the pooled p and the normed values before RoPE (what
// the Q8 step sees on the nope dims and RoPE sees on the last 64), so every rounding point can
// be gated on the kernel's own input to it.
template <class RowOf>
void executor_entry(const Dims& dm, const SlotSource& src, RowOf rows_of, const float* norm_w,
                    float eps, const RopeRow& rope, std::uint8_t* out_row,
                    std::uint16_t* dbg_pooled, std::uint16_t* dbg_normed) {
  const int S = dm.slots(), spw = dm.slots_per_warp(), Q = dm.ctas();
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<std::uint16_t> p(static_cast<std::size_t>(dm.width));
  std::vector<float> cta_ss(static_cast<std::size_t>(Q));
  for (int rank = 0; rank < Q; ++rank) {
    float lane_ss[32];
    for (int lane = 0; lane < 32; ++lane) {
      float ss = 0.0f;
      for (int q = 0; q < kLaneChannels; ++q) {
        const int i = rank * kCtaChannels + lane * kLaneChannels + q;  // entry channel
        // pass 1: max over every slot (exact)
        float mx = ninf;
        for (int s = 0; s < S; ++s) {
          const std::int64_t r = rows_of(s);
          const float l = r < 0 ? ninf : src.l[r * src.row_stride + dm.channel(s, i)];
          mx = max_f(mx, l);
        }
        // pass 2: per warp in slot order, then warps in order
        float den = 0, num = 0;
        for (int w = 0; w < kWarps; ++w) {
          float dw = 0, nw = 0;
          for (int s = w * spw; s < (w + 1) * spw; ++s) {
            const std::int64_t r = rows_of(s);
            const float l = r < 0 ? ninf : src.l[r * src.row_stride + dm.channel(s, i)];
            const float a = r < 0 ? 0.0f : src.a[r * src.row_stride + dm.channel(s, i)];
            pool_accumulate(l, mx, a, dw, nw);
          }
          den = w == 0 ? dw : add_rn(den, dw);
          num = w == 0 ? nw : add_rn(num, nw);
        }
        p[static_cast<std::size_t>(i)] = pooled_bf16(num, den);
        const float pv = bf16_value(p[static_cast<std::size_t>(i)]);
        ss = fma_rn(pv, pv, ss);
      }
      lane_ss[lane] = ss;
    }
    butterfly_sum(lane_ss);
    cta_ss[static_cast<std::size_t>(rank)] = lane_ss[0];
  }
  float total = cta_ss[0];
  for (int rank = 1; rank < Q; ++rank)
    total = add_rn(total, cta_ss[static_cast<std::size_t>(rank)]);
  const float rho = inv_rms(total, dm.width, eps);
  std::vector<std::uint16_t> y(static_cast<std::size_t>(dm.width));
  for (int i = 0; i < dm.width; ++i)
    y[static_cast<std::size_t>(i)] =
        norm_bf16(bf16_value(p[static_cast<std::size_t>(i)]), rho, norm_w[i]);
  if (dbg_normed != nullptr)
    for (int i = 0; i < dm.width; ++i) dbg_normed[i] = y[static_cast<std::size_t>(i)];
  for (int jp = 0; jp < kRope / 2; ++jp) {
    const int i = dm.nope() + 2 * jp;
    rope_pair(bf16_value(y[static_cast<std::size_t>(i)]),
              bf16_value(y[static_cast<std::size_t>(i + 1)]), rope.cos[jp], rope.sin[jp],
              y[static_cast<std::size_t>(i)], y[static_cast<std::size_t>(i + 1)]);
  }
  for (int b = 0; b < dm.scales(); ++b) {
    float amax = 0.0f;
    for (int i = b * kQ8Block; i < (b + 1) * kQ8Block; ++i)
      amax = max_f(amax, std::fabs(bf16_value(y[static_cast<std::size_t>(i)])));
    const int k = q8_scale_exponent(amax);
    for (int i = b * kQ8Block; i < (b + 1) * kQ8Block; ++i)
      out_row[i] = q8_code(bf16_value(y[static_cast<std::size_t>(i)]), k);
    out_row[dm.scale_offset() + b] = static_cast<std::uint8_t>(k + 127);
  }
  for (int i = 0; i < kRope; ++i) {
    const std::uint16_t h = y[static_cast<std::size_t>(dm.nope() + i)];
    out_row[dm.rope_offset() + 2 * i] = static_cast<std::uint8_t>(h & 0xFF);
    out_row[dm.rope_offset() + 2 * i + 1] = static_cast<std::uint8_t>(h >> 8);
  }
  for (int b = dm.scale_offset() + dm.scales(); b < dm.row_bytes(); ++b) out_row[b] = 0;
  if (dbg_pooled != nullptr)
    for (int i = 0; i < dm.width; ++i) dbg_pooled[i] = p[static_cast<std::size_t>(i)];
}

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

// The logits of all T tokens as the kernel forms them: fp32(g + ape[t mod m]) (the value a
// decode state would hold).
inline std::vector<float> executor_logits(const PrefillProblem& p) {
  const int cw = p.dm.cw();
  std::vector<float> l(static_cast<std::size_t>(p.tokens * cw));
  for (std::int64_t t = 0; t < p.tokens; ++t)
    for (int c = 0; c < cw; ++c)
      l[static_cast<std::size_t>(t * cw + c)] =
          slot_logit(p.g[t * cw + c], p.ape[(t % p.dm.ratio) * cw + c]);
  return l;
}

inline void executor_prefill(const PrefillProblem& p, std::uint8_t* cache,
                             std::uint16_t* dbg_pooled = nullptr,
                             std::uint16_t* dbg_normed = nullptr) {
  const Dims& dm = p.dm;
  const std::vector<float> l = executor_logits(p);
  const SlotSource src{p.a, l.data(), dm.cw()};
  for (std::int64_t j = 0; j < p.tokens / dm.ratio; ++j)
    executor_entry(
        dm, src, [&](int s) { return prefill_row(dm, j, s); }, p.norm_w, p.eps,
        RopeRow{p.cos + j * 32, p.sin + j * 32}, cache + j * dm.row_bytes(),
        dbg_pooled != nullptr ? dbg_pooled + j * dm.width : nullptr,
        dbg_normed != nullptr ? dbg_normed + j * dm.width : nullptr);
}

// §11.2 decode state of one request: kv and score [state_rows, c·w] fp32; initial 0 / −∞.
struct DecodeState {
  std::vector<float> kv, score;
  explicit DecodeState(const Dims& dm)
      : kv(static_cast<std::size_t>(dm.state_rows() * dm.cw()), 0.0f),
        score(static_cast<std::size_t>(dm.state_rows() * dm.cw()),
              -std::numeric_limits<float>::infinity()) {}
};

// The prefill hand-off state (§11.2) after T tokens: the partial block in the current rows (HCA
// rows [0, T mod m), CSA rows [4, 4 + T mod 4)), for CSA with T >= 4 the last complete block in
// rows 0–3, every other row at its initial value.
inline DecodeState executor_prefill_state(const PrefillProblem& p) {
  const Dims& dm = p.dm;
  DecodeState st(dm);
  const int cw = dm.cw(), m = dm.ratio, cur = dm.csa() ? 4 : 0;
  const std::int64_t done = (p.tokens / m) * m;
  const auto store = [&](int row, std::int64_t t) {
    for (int c = 0; c < cw; ++c) {
      st.kv[static_cast<std::size_t>(row * cw + c)] = p.a[t * cw + c];
      st.score[static_cast<std::size_t>(row * cw + c)] =
          slot_logit(p.g[t * cw + c], p.ape[(t % m) * cw + c]);
    }
  };
  if (dm.csa() && done >= 4)
    for (int r = 0; r < 4; ++r) store(r, done - 4 + r);
  for (std::int64_t t = done; t < p.tokens; ++t) store(cur + static_cast<int>(t - done), t);
  return st;
}

// One decode step of token t (a_t, g_t [c·w]): store the row; on block completion pool the
// state into cache row t/m (returns true) and, for CSA, copy rows 4–7 into rows 0–3.
inline bool executor_decode_step(const Dims& dm, DecodeState& st, std::int64_t t, const float* a_t,
                                 const float* g_t, const float* ape, const float* norm_w, float eps,
                                 const RopeRow& rope, std::uint8_t* out_row,
                                 std::uint16_t* dbg_pooled = nullptr,
                                 std::uint16_t* dbg_normed = nullptr) {
  const int cw = dm.cw(), m = dm.ratio;
  const int r = static_cast<int>(t % m), row = (dm.csa() ? 4 : 0) + r;
  for (int c = 0; c < cw; ++c) {
    st.kv[static_cast<std::size_t>(row * cw + c)] = a_t[c];
    st.score[static_cast<std::size_t>(row * cw + c)] = slot_logit(g_t[c], ape[r * cw + c]);
  }
  if ((t + 1) % m != 0) return false;
  const SlotSource src{st.kv.data(), st.score.data(), cw};
  executor_entry(
      dm, src, [](int s) { return static_cast<std::int64_t>(s); }, norm_w, eps, rope, out_row,
      dbg_pooled, dbg_normed);
  if (dm.csa())
    for (int c = 0; c < 4 * cw; ++c) {
      st.kv[static_cast<std::size_t>(c)] = st.kv[static_cast<std::size_t>(4 * cw + c)];
      st.score[static_cast<std::size_t>(c)] = st.score[static_cast<std::size_t>(4 * cw + c)];
    }
  return true;
}

}  // namespace v4ref::cuda::cmp
