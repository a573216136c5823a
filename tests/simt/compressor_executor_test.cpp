// The CUDA main compressor's math, run on the CPU in the kernels' own cluster / warp / lane and
// reduction order (cuda/include/v4ref/cuda/compressor_tile.hpp), against the double reference
// (reference/src/compressor.cpp: pool_entry, postprocess_entry, compress_prefill,
// compress_decode_step): label cpu (docs/cuda-mhc-compressor.md §4.4).
//
// The reference sees exactly the kernel's inputs: the fp32 projections a, g and the fp32 slot
// logits fp32(g + ape) (the official fp32 state), laid out as the §11.2 state rows.
// Every rounding point is gated on the kernel's own input to it (teacher forcing through the
// executor's debug outputs), with bounds derived in docs/cuda-mhc-compressor.md §4.4:
//   pooled (bf16)   K in [bf16(p − δ), bf16(p + δ)], δ = (2·ε + (2S + 2)·u)·Σα|a|·1.01,
//                   ε = (max (M − l) over present slots + 2)·u: exp's argument error and
//                   exp_f32's ≤ 1.001 ulp change every weight by at most ε relatively (twice:
//                   numerator and denominator), S-term sums, one division
//   normed (bf16)   K in [bf16(y − δ), bf16(y + δ)], δ = (h/2 + 6)·u·|y|, h = 4 + 5 + (Q − 1)
//                   the square-sum tree height (positive terms), 4 roundings for ρ, 2 products
//   rope (bf16)     δ = 4·u·(|x| + |y|): fp32 cos/sin (one rounding each) and 2 roundings
//   Q8              codes and scales equal to ref::q8_quantize of the kernel's normed values
//   end to end      vs Rq (postprocess_entry under the declared points): nope dims within one
//                   e4m3 step (2^-3·|v| + 2^-9·s), rope dims within 2 bf16 ulp;
//                   vs Rx (exact policy): nope |K − Rx| <= 2^-3·|Rx| + 2^-9·s (the tolerance
//                   table's loose row), rope within 2 bf16 ulp + 3·2^-9·(|x| + |y|) (the three
//                   declared bf16 roundings upstream: pooled, normed, rope)
// Plus: every byte of every cache row written (two poison families, equal results), decode
// steps after a prefill hand-off give exactly the prefill's entries and state, the tiny
// checkpoints' real compressor weights, adversarial logits and magnitudes.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "../common/compressor_inputs.hpp"
#include "v4ref/cuda/compressor.hpp"
#include "../../cuda/src/compressor_kernels.cuh"
#include "v4ref/cuda/compressor_simt.hpp"
#include "v4ref/cuda/compressor_tile.hpp"
#include "v4ref/ref/compressor.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/hadamard.hpp"
#include "v4ref/ref/quant.hpp"
#include "v4ref/ref/rope.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref {
namespace {

namespace cmp = cuda::cmp;
using ref::Mat;
using ref::Vec;
using test::seed_from_env;
using test::synthetic_compressor_inputs;
using test::synthetic_indexer_inputs;
using Case = test::CompressorCase;
using Inputs = test::CompressorInputs;

constexpr double kU32 = 0x1.0p-24;
constexpr double kInf = std::numeric_limits<double>::infinity();

double bf16_ulp(double x) {
  const double a = std::max(std::abs(x), 0x1.0p-126);
  return std::ldexp(1.0, fmt::floor_log2(a) - 7);
}

bool in_interval(std::uint16_t k, double s, double slack) {
  const double kv = fmt::bf16_to_double(k);
  return fmt::round_bf16(s - slack) <= kv && kv <= fmt::round_bf16(s + slack);
}

// ---------------------------------------------------------------- running the executor

struct Out {
  std::vector<std::uint8_t> cache;
  std::vector<std::uint16_t> pooled, normed, roped, hadamard;  // roped, hadamard: indexer
};

// Cache rows pre-filled with `poison`, debug outputs with the bf16 NaN 0x7FC1 (or 0x7F81).
Out run(const Inputs& in, std::uint8_t poison) {
  const std::int64_t E = in.tokens / in.dm.ratio;
  const std::uint16_t dbg_poison = poison == 0xA5 ? 0x7FC1 : 0x7F81;
  Out o;
  o.cache.assign(static_cast<std::size_t>(E * in.dm.row_bytes()), poison);
  o.pooled.assign(static_cast<std::size_t>(E * in.dm.width), dbg_poison);
  o.normed.assign(o.pooled.size(), dbg_poison);
  cmp::EntryDebug dbg{o.pooled.data(), o.normed.data(), nullptr, nullptr};
  if (in.dm.indexer()) {
    o.roped.assign(o.pooled.size(), dbg_poison);
    o.hadamard.assign(o.pooled.size(), dbg_poison);
    dbg.roped = o.roped.data();
    dbg.hadamard = o.hadamard.data();
  }
  cuda::compressor_prefill_simt(in.problem(), o.cache.data(), dbg);
  return o;
}

// ---------------------------------------------------------------- reference side

ref::CompressorWeights weights_of(const Inputs& in) {
  ref::CompressorWeights w;
  w.prefix = in.name + ".";
  w.kind = in.dm.indexer() ? ref::CompressorKind::kIndexer : ref::CompressorKind::kMain;
  w.ratio = in.dm.ratio;
  w.width = in.dm.width;
  w.norm.resize(in.dm.width);
  for (int i = 0; i < in.dm.width; ++i) w.norm(i) = in.norm_w[static_cast<std::size_t>(i)];
  return w;
}

PrecisionPolicy rq_policy() {
  PrecisionPolicy p = PrecisionPolicy::exact();
  for (QuantPoint q : {QuantPoint::kBf16Pooled, QuantPoint::kBf16Norm, QuantPoint::kFp32RopeAngle,
                       QuantPoint::kBf16Rope, QuantPoint::kCkvQ8})
    p.enable(q);
  return p;
}

// The state-layout rows (kv, score) of prefill entry j from the kernel's fp32 inputs.
void entry_rows(const Inputs& in, std::int64_t j, Mat& kv, Mat& score) {
  const cmp::Dims& dm = in.dm;
  const int S = dm.slots(), cw = dm.cw();
  kv = Mat::Zero(S, cw);
  score = Mat::Constant(S, cw, -kInf);
  for (int s = 0; s < S; ++s) {
    const std::int64_t t = cmp::prefill_row(dm, j, s);
    if (t < 0) continue;
    for (int c = 0; c < cw; ++c) {
      kv(s, c) = in.a[static_cast<std::size_t>(t * cw + c)];
      score(s, c) = cmp::slot_logit(in.g[static_cast<std::size_t>(t * cw + c)],
                                    in.ape[static_cast<std::size_t>((t % dm.ratio) * cw + c)]);
    }
  }
}

struct Report {
  std::size_t pooled_flips = 0, normed_flips = 0, rope_flips = 0, e2e_code_diffs = 0;
  double e2e_ratio = 0, loose_ratio = 0;
};

std::uint16_t row_bf16(const std::uint8_t* row, int byte) {
  return static_cast<std::uint16_t>(row[byte] | (row[byte + 1] << 8));
}

// Pooled (bf16) of entry j against the exact pooling of the kernel's own inputs (kv, score):
// K in [bf16(p − δ), bf16(p + δ)], δ = (2ε + (2S + 2)u)·Σα|a|·1.01, ε = (max(M − l) + 2)u.
// Returns the exact pooled vector.
Vec gate_pooled(const Inputs& in, std::int64_t j, const std::uint16_t* kp, const Mat& kv,
                const Mat& score, Report& rep, const std::string& where) {
  const cmp::Dims& dm = in.dm;
  const int W = dm.width;
  const Vec p = ref::pool_entry(kv, score, dm.ratio, W);
  const Vec pabs = ref::pool_entry(kv.cwiseAbs(), score, dm.ratio, W);
  for (int i = 0; i < W; ++i) {
    double mx = -kInf, spread = 0;
    for (int s = 0; s < dm.slots(); ++s) mx = std::max(mx, score(s, dm.channel(s, i)));
    for (int s = 0; s < dm.slots(); ++s)
      if (std::isfinite(score(s, dm.channel(s, i))))
        spread = std::max(spread, mx - score(s, dm.channel(s, i)));
    const double delta = (2 * (spread + 2) * kU32 + (2 * dm.slots() + 2) * kU32) * pabs(i) * 1.01;
    if (fmt::bf16_encode(p(i)) != kp[i]) ++rep.pooled_flips;
    EXPECT_TRUE(in_interval(kp[i], p(i), delta))
        << where << " entry " << j << " pooled[" << i << "] = " << fmt::bf16_to_double(kp[i])
        << ", exact " << p(i);
  }
  return p;
}

// Normed (bf16) of entry j, teacher-forced on K's pooled values: δ = (h/2 + 6)·u·|y|,
// h = 4 + 5 + (Q − 1).
void gate_normed(const Inputs& in, std::int64_t j, const std::uint16_t* kp, const std::uint16_t* ky,
                 Report& rep, const std::string& where) {
  const int W = in.dm.width, Q = in.dm.ctas();
  double ss = 0;
  for (int i = 0; i < W; ++i) ss += std::pow(fmt::bf16_to_double(kp[i]), 2);
  const double rho = 1 / std::sqrt(ss / W + static_cast<double>(in.eps));
  const int h = 4 + 5 + (Q - 1);
  for (int i = 0; i < W; ++i) {
    const double y = static_cast<double>(in.norm_w[static_cast<std::size_t>(i)]) *
                     fmt::bf16_to_double(kp[i]) * rho;
    if (fmt::bf16_encode(y) != ky[i]) ++rep.normed_flips;
    EXPECT_TRUE(in_interval(ky[i], y, (h / 2.0 + 6) * kU32 * std::abs(y)))
        << where << " entry " << j << " normed[" << i << "] = " << fmt::bf16_to_double(ky[i])
        << ", exact " << y;
  }
}

// One RoPE pair of entry j, teacher-forced on K's normed values (x, y): δ = 4u·(|x| + |y|).
void gate_rope_pair(const Inputs& in, std::int64_t j, int jp, double x, double y, std::uint16_t kx,
                    std::uint16_t ky, Report& rep, const std::string& where) {
  const double th = ref::rope_angle(in.rope, j * in.dm.ratio, jp, rq_policy());
  const double ex = x * std::cos(th) - y * std::sin(th), ey = x * std::sin(th) + y * std::cos(th);
  const double delta = 4 * kU32 * (std::abs(x) + std::abs(y));
  rep.rope_flips += (fmt::bf16_encode(ex) != kx) + (fmt::bf16_encode(ey) != ky);
  EXPECT_TRUE(in_interval(kx, ex, delta) && in_interval(ky, ey, delta))
      << where << " entry " << j << " rope pair " << jp;
}

Report check(const Inputs& in) {
  const cmp::Dims& dm = in.dm;
  const std::string where =
      in.name + " (m = " + std::to_string(dm.ratio) + ", w = " + std::to_string(dm.width) +
      ", T = " + std::to_string(in.tokens) + ") V4REF_SEED=" + std::to_string(seed_from_env());
  const Out k = run(in, 0xA5), k2 = run(in, 0x5A);
  EXPECT_EQ(k.cache, k2.cache) << where << ": a cache byte depends on the poison (not written)";
  EXPECT_EQ(k.pooled, k2.pooled) << where << ": pooled debug output not fully written";
  EXPECT_EQ(k.normed, k2.normed) << where << ": normed debug output not fully written";
  const ref::CompressorWeights w = weights_of(in);
  const PrecisionPolicy pq = rq_policy();
  const std::int64_t E = in.tokens / dm.ratio;
  const int W = dm.width, R = cmp::kRope, N = dm.nope();
  Report rep;
  for (std::int64_t j = 0; j < E; ++j) {
    const std::uint8_t* row = k.cache.data() + j * dm.row_bytes();
    const std::uint16_t* kp = k.pooled.data() + j * W;
    const std::uint16_t* ky = k.normed.data() + j * W;
    Mat kv, score;
    entry_rows(in, j, kv, score);
    const Vec p = gate_pooled(in, j, kp, kv, score, rep, where);
    gate_normed(in, j, kp, ky, rep, where);
    // ---- rope, teacher-forced on K's normed values
    for (int jp = 0; jp < R / 2; ++jp)
      gate_rope_pair(in, j, jp, fmt::bf16_to_double(ky[N + 2 * jp]),
                     fmt::bf16_to_double(ky[N + 2 * jp + 1]),
                     row_bf16(row, dm.rope_offset() + 4 * jp),
                     row_bf16(row, dm.rope_offset() + 4 * jp + 2), rep, where);
    // ---- Q8, teacher-forced: exact codes and scales
    std::vector<double> nope(static_cast<std::size_t>(N));
    for (int i = 0; i < N; ++i) nope[static_cast<std::size_t>(i)] = fmt::bf16_to_double(ky[i]);
    const ref::BlockCodes bc = ref::q8_quantize(nope, cmp::kQ8Block);
    int code_diffs = 0, first = -1;
    for (int i = 0; i < N; ++i)
      if (row[i] != bc.codes[static_cast<std::size_t>(i)] && code_diffs++ == 0) first = i;
    EXPECT_EQ(code_diffs, 0) << where << " entry " << j
                             << ": e4m3 codes differ from q8_quantize, first at " << first;
    for (int b = 0; b < dm.scales(); ++b)
      EXPECT_EQ(row[dm.scale_offset() + b], bc.scales[static_cast<std::size_t>(b)])
          << where << " entry " << j << " scale " << b;
    for (int b = dm.scale_offset() + dm.scales(); b < dm.row_bytes(); ++b)
      EXPECT_EQ(row[b], 0) << where << " pad";
    // ---- end to end vs Rq and Rx
    const Vec rq = ref::postprocess_entry(p, j, w, in.rope, in.eps, pq);
    const Vec rx = ref::postprocess_entry(p, j, w, in.rope, in.eps, PrecisionPolicy::exact());
    for (int i = 0; i < W; ++i) {
      double kval, step, loose;
      if (i < N) {
        const double s = fmt::ue8m0_to_double(row[dm.scale_offset() + i / cmp::kQ8Block]);
        kval = fmt::e4m3_to_double(row[i]) * s;
        step = 0x1.0p-3 * std::max(std::abs(kval), std::abs(rq(i))) + 0x1.0p-9 * s * 2;
        loose = 0x1.0p-3 * std::abs(rx(i)) + 0x1.0p-9 * s;
        if (std::abs(kval - rq(i)) > 0) ++rep.e2e_code_diffs;
      } else {
        kval = fmt::bf16_to_double(row_bf16(row, dm.rope_offset() + 2 * (i - N)));
        step = 2 * bf16_ulp(rq(i));
        const int pair0 = N + 2 * ((i - N) / 2);
        loose =
            2 * bf16_ulp(rx(i)) + 3 * 0x1.0p-9 * (std::abs(rx(pair0)) + std::abs(rx(pair0 + 1)));
      }
      rep.e2e_ratio = std::max(rep.e2e_ratio, std::abs(kval - rq(i)) / step);
      rep.loose_ratio = std::max(rep.loose_ratio, std::abs(kval - rx(i)) / loose);
    }
  }
  EXPECT_LE(rep.e2e_ratio, 1.0) << where << ": end to end vs Rq over one e4m3 step / 2 bf16 ulp";
  EXPECT_LE(rep.loose_ratio, 1.0) << where << ": end to end vs Rx over the loose tolerance";
  std::printf(
      "%-36s entries %-4lld flips: pooled %zu normed %zu rope %zu | e2e vs Rq %.3f (%zu nope "
      "values differ) | vs Rx %.3f\n",
      in.name.c_str(), static_cast<long long>(E), rep.pooled_flips, rep.normed_flips,
      rep.rope_flips, rep.e2e_ratio, rep.e2e_code_diffs, rep.loose_ratio);
  return rep;
}

// ---------------------------------------------------------------- indexer compressor

// The 68-byte indexer row decoded without the project's codecs (cost-model.md "V4 indexer
// key"): byte b < 64 holds channel 2b in its low nibble and channel 2b + 1 in its high nibble
// (e2m1: bit 3 sign, magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6); bytes 64..67 are the ue8m0 scales
// 2^(byte − 127) of the 32-channel blocks.
struct IndexerRow {
  std::uint8_t code[128];
  int k[4];
  double value(int i) const {
    static constexpr double kMag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    const double v = kMag[code[i] & 7] * std::ldexp(1.0, k[i / 32]);
    return (code[i] & 8) != 0 ? -v : v;
  }
  double scale(int i) const { return std::ldexp(1.0, k[i / 32]); }
};

IndexerRow decode_indexer_row(const std::uint8_t* row) {
  IndexerRow r{};
  for (int b = 0; b < 64; ++b) {
    r.code[2 * b] = static_cast<std::uint8_t>(row[b] & 0x0F);
    r.code[2 * b + 1] = static_cast<std::uint8_t>(row[b] >> 4);
  }
  for (int b = 0; b < 4; ++b) r.k[b] = static_cast<int>(row[64 + b]) - 127;
  return r;
}

// e2m1 decision boundaries (RNE ties) in units of the block scale.
constexpr double kE2m1Ties[7] = {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0};

struct IndexerReport : Report {
  std::size_t had_flips = 0, values = 0, code_diffs = 0, scale_diffs = 0, rq_value_diffs = 0;
  std::size_t ties[7] = {}, near_ties = 0;
  double had_ulp = 0;  // max |K − bf16(Had y)| in bf16 ulps of Had y
  double had_margin = 0;  // flips only: max |h − (K + bf16(h))/2| / δ (≤ 1: the flip is explained)
  double rq_ratio = 0;     // end to end vs the official reference over one e2m1 step
  double loose_ratio = 0;  // end to end vs the exact reference over the loose bound
};

// The Hadamard gate's δ for one entry: the fp32 butterflies form every output as a sum over a
// binary tree of height 7 of ±y_j (|error| ≤ γ_7·Σ|y|), the fp32 scale fp32(128^-1/2) differs
// from 128^-1/2 by ≤ u relatively and the product rounds once: together ≤ γ_9·128^-1/2·Σ|y|
// (|H y|_i ≤ Σ|y|); 9.1u covers γ_9 and the double reference's own roundings (≤ 2^-50 Σ|y|).
double hadamard_delta(const std::vector<double>& y) {
  double l1 = 0;
  for (const double v : y) l1 += std::abs(v);
  return 9.1 * kU32 * l1 / std::sqrt(128.0);
}

// Every stage of the indexer compressor, gated on the executor's own input to it:
//   pooled, normed     as the main compressor
//   rope               the roped output (dbg roped) against the exact rotation of K's normed
//                      values (4u·(|x| + |y|)); the nope dims of the roped output are K's normed
//                      values bit for bit
//   Hadamard (bf16)    K in [bf16(h − δ), bf16(h + δ)], h = Had(K's roped values) in double,
//                      δ = hadamard_delta; at most `max_had_ulp` bf16 ulps from bf16(h)
//   Q4                 codes and scales EQUAL to ref::q4_quantize of K's bf16 Hadamard output,
//                      the row decoded independently (decode_indexer_row) equal to
//                      ref::q4_fake_quant of the same values
//   end to end         vs Rq = postprocess_entry(official) of the exact pooled vector: within one
//                      e2m1 step, 2^-1·max(|K|, |Rq|) + 2^-1·max(s_K, s_Rq);
//                      vs Rx (exact policy, no rounding, no Q4): the loose bound
//                      2^-2·max(|Rx| + E, s_K) + 2^-7·|Rx| + 1.3·E, E = (5·2^-9 + 3u·j·m)·|Rx|₂
//                      (Q4's half step, the bf16 Hadamard store, and through the orthogonal Had
//                      the four upstream relative errors pooled, ρ, normed, rope (≤ 2^-9 each)
//                      and the fp32 rope angle, bounded in the 2-norm)
IndexerReport check_indexer(const Inputs& in, double max_had_ulp = 1.0) {
  const cmp::Dims& dm = in.dm;
  const std::string where = in.name + " (indexer, T = " + std::to_string(in.tokens) +
                            ") V4REF_SEED=" + std::to_string(seed_from_env());
  EXPECT_TRUE(dm.indexer());
  const Out k = run(in, 0xA5), k2 = run(in, 0x5A);
  EXPECT_EQ(k.cache, k2.cache) << where << ": a cache byte depends on the poison (not written)";
  EXPECT_EQ(k.pooled, k2.pooled) << where << ": pooled";
  EXPECT_EQ(k.normed, k2.normed) << where << ": normed";
  EXPECT_EQ(k.roped, k2.roped) << where << ": roped";
  EXPECT_EQ(k.hadamard, k2.hadamard) << where << ": hadamard";
  const ref::CompressorWeights w = weights_of(in);
  const PrecisionPolicy official = PrecisionPolicy::official();
  const PrecisionPolicy pre_q4 = PrecisionPolicy::official().disable(QuantPoint::kIdxKQ4);
  const std::int64_t E = in.tokens / dm.ratio;
  const int W = dm.width, N = dm.nope();
  IndexerReport rep;
  for (std::int64_t j = 0; j < E; ++j) {
    const std::uint8_t* row = k.cache.data() + j * dm.row_bytes();
    const std::uint16_t* kp = k.pooled.data() + j * W;
    const std::uint16_t* ky = k.normed.data() + j * W;
    const std::uint16_t* kr = k.roped.data() + j * W;
    const std::uint16_t* kh = k.hadamard.data() + j * W;
    Mat kv, score;
    entry_rows(in, j, kv, score);
    const Vec p = gate_pooled(in, j, kp, kv, score, rep, where);
    gate_normed(in, j, kp, ky, rep, where);
    // ---- rope
    for (int i = 0; i < N; ++i)
      EXPECT_EQ(kr[i], ky[i]) << where << " entry " << j << ": roped nope dim " << i;
    for (int jp = 0; jp < cmp::kRope / 2; ++jp)
      gate_rope_pair(in, j, jp, fmt::bf16_to_double(ky[N + 2 * jp]),
                     fmt::bf16_to_double(ky[N + 2 * jp + 1]), kr[N + 2 * jp], kr[N + 2 * jp + 1],
                     rep, where);
    // ---- Hadamard, teacher-forced on K's roped values
    std::vector<double> y(static_cast<std::size_t>(W)), h;
    for (int i = 0; i < W; ++i) y[static_cast<std::size_t>(i)] = fmt::bf16_to_double(kr[i]);
    h = y;
    ref::hadamard_inplace(h);
    const double delta = hadamard_delta(y);
    for (int i = 0; i < W; ++i) {
      const double hi = h[static_cast<std::size_t>(i)], kv_h = fmt::bf16_to_double(kh[i]);
      const double ulp = bf16_ulp(hi);
      if (fmt::bf16_encode(hi) != kh[i]) {
        ++rep.had_flips;
        rep.had_margin =
            std::max(rep.had_margin, std::abs(hi - (kv_h + fmt::round_bf16(hi)) / 2) / delta);
      }
      rep.had_ulp = std::max(rep.had_ulp, std::abs(kv_h - fmt::round_bf16(hi)) / ulp);
      EXPECT_TRUE(in_interval(kh[i], hi, delta))
          << where << " entry " << j << " hadamard[" << i << "] = " << kv_h << ", exact " << hi
          << ", δ " << delta;
    }
    // ---- Q4, teacher-forced on K's bf16 Hadamard output: exact codes and scales
    std::vector<double> hv(static_cast<std::size_t>(W));
    for (int i = 0; i < W; ++i) hv[static_cast<std::size_t>(i)] = fmt::bf16_to_double(kh[i]);
    const ref::BlockCodes bc = ref::q4_quantize(hv, cmp::kQ4Block);
    std::vector<double> fq(hv.size());
    ref::q4_fake_quant(hv, cmp::kQ4Block, fq);
    const IndexerRow ir = decode_indexer_row(row);
    int first = -1;
    for (int i = 0; i < W; ++i) {
      ++rep.values;
      if (ir.code[i] != bc.codes[static_cast<std::size_t>(i)] && rep.code_diffs++ == 0) first = i;
      EXPECT_EQ(ir.value(i), fq[static_cast<std::size_t>(i)])
          << where << " entry " << j << ": decoded row value " << i << " vs q4_fake_quant";
      const double r = std::abs(hv[static_cast<std::size_t>(i)]) / ir.scale(i);
      bool tie = false;
      for (int t = 0; t < 7; ++t)
        if (r == kE2m1Ties[t]) {
          ++rep.ties[t];
          tie = true;
        }
      if (!tie)
        for (const double t : kE2m1Ties)
          if (std::abs(r - t) <= bf16_ulp(t)) ++rep.near_ties;
    }
    EXPECT_EQ(first, -1) << where << " entry " << j << ": e2m1 codes differ from q4_quantize";
    for (int b = 0; b < dm.scales(); ++b) {
      if (row[dm.scale_offset() + b] != bc.scales[static_cast<std::size_t>(b)]) ++rep.scale_diffs;
      EXPECT_EQ(row[dm.scale_offset() + b], bc.scales[static_cast<std::size_t>(b)])
          << where << " entry " << j << " scale " << b;
    }
    // ---- end to end vs the official reference (Rq) and the exact one (Rx)
    const Vec rq = ref::postprocess_entry(p, j, w, in.rope, in.eps, official);
    const Vec rq_pre = ref::postprocess_entry(p, j, w, in.rope, in.eps, pre_q4);
    const ref::BlockCodes rq_codes = ref::q4_quantize(
        std::span<const double>(rq_pre.data(), static_cast<std::size_t>(W)), cmp::kQ4Block);
    const Vec rx = ref::postprocess_entry(p, j, w, in.rope, in.eps, PrecisionPolicy::exact());
    const double e_up = (5 * 0x1.0p-9 + 3 * kU32 * static_cast<double>(j * dm.ratio)) * rx.norm();
    for (int i = 0; i < W; ++i) {
      const double kval = ir.value(i), s = ir.scale(i);
      const double s_rq = fmt::ue8m0_to_double(rq_codes.scales[static_cast<std::size_t>(i / 32)]);
      if (kval != rq(i)) ++rep.rq_value_diffs;
      const double step = 0.5 * std::max(std::abs(kval), std::abs(rq(i))) + 0.5 * std::max(s, s_rq);
      rep.rq_ratio = std::max(rep.rq_ratio, std::abs(kval - rq(i)) / step);
      const double loose =
          0.25 * std::max(std::abs(rx(i)) + e_up, s) + 0x1.0p-7 * std::abs(rx(i)) + 1.3 * e_up;
      rep.loose_ratio = std::max(rep.loose_ratio, std::abs(kval - rx(i)) / loose);
    }
  }
  EXPECT_LE(rep.had_ulp, max_had_ulp) << where << ": Hadamard output vs bf16(Had y) in ulps";
  EXPECT_LE(rep.rq_ratio, 1.0) << where << ": end to end vs Rq over one e2m1 step";
  EXPECT_LE(rep.loose_ratio, 1.0) << where << ": end to end vs Rx over the loose bound";
  std::printf(
      "%-34s entries %-4lld flips: pooled %zu normed %zu rope %zu had %zu (max %.0f ulp, margin "
      "%.3f of δ) | Q4: %zu codes, %zu differ, %zu scales differ, ties %zu/%zu/%zu/%zu/%zu/%zu/%zu "
      "near "
      "%zu | vs Rq %.3f (%zu values differ) | vs Rx %.3f\n",
      in.name.c_str(), static_cast<long long>(E), rep.pooled_flips, rep.normed_flips,
      rep.rope_flips, rep.had_flips, rep.had_ulp, rep.had_margin, rep.values, rep.code_diffs,
      rep.scale_diffs, rep.ties[0], rep.ties[1], rep.ties[2], rep.ties[3], rep.ties[4], rep.ties[5],
      rep.ties[6], rep.near_ties, rep.rq_ratio, rep.rq_value_diffs, rep.loose_ratio);
  return rep;
}

// ---------------------------------------------------------------- tests

TEST(CompressorExecutor, DeclaredPrecisionPoints) {
  using P = cuda::CompressorPrecisionPoint;
  for (P p : {P::kLogitFp32, P::kPooledStoreBf16, P::kNormStoreBf16, P::kRopeFp32Angle,
              P::kRopeStoreBf16, P::kCkvQ8})
    EXPECT_TRUE(cuda::compressor_rounds_at(p));
}

TEST(CompressorExecutor, RowLayout) {
  const cmp::Dims v4 = cmp::make_dims(4, 512), tiny = cmp::make_dims(128, 128);
  EXPECT_EQ(v4.row_bytes(), 584);  // kernel-targets.md §3: 448 e4m3 + 64 bf16 + 7 ue8m0 + pad
  EXPECT_EQ(v4.scales(), 7);
  EXPECT_EQ(v4.ctas(), 4);
  EXPECT_EQ(tiny.row_bytes(), 200);
  EXPECT_THROW(cmp::make_dims(8, 512), ConfigError);
  EXPECT_THROW(cmp::make_dims(4, 500), ShapeError);
}

class CompressorExecutorDiff : public ::testing::TestWithParam<Case> {};

TEST_P(CompressorExecutorDiff, Gates) {
  const Case& c = GetParam();
  check(synthetic_compressor_inputs("compressor/" + c.name, c.ratio, c.width, c.tokens));
}

INSTANTIATE_TEST_SUITE_P(Cases, CompressorExecutorDiff,
                         ::testing::Values(Case{"c4_w512_T37", 4, 512, 37},
                                           Case{"c128_w512_T300", 128, 512, 300},
                                           Case{"c4_w128_T19", 4, 128, 19},
                                           Case{"c128_w128_T130", 128, 128, 130},
                                           Case{"c4_w512_T3_no_entry", 4, 512, 3}),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// Saturated softmax: logits with spread ±40 (ape ±20, g ±20): most slots get weight ~0.
TEST(CompressorExecutorAdversarial, SpikyLogits) {
  check(synthetic_compressor_inputs("compressor/adv_spiky_c4", 4, 512, 33, 1.0, 20.0, 20.0));
  check(synthetic_compressor_inputs("compressor/adv_spiky_c128", 128, 128, 256, 1.0, 20.0, 20.0));
}

// Huge and tiny values (the RMSNorm makes the entry scale-free; ss in fp32 stays finite).
TEST(CompressorExecutorAdversarial, ValueMagnitudes) {
  check(synthetic_compressor_inputs("compressor/adv_huge", 4, 512, 21, 1e15));
  check(synthetic_compressor_inputs("compressor/adv_tiny", 4, 512, 21, 1e-15));
}

// An all-zero block: pooled 0, ρ = 1/sqrt(eps), normed 0, Q8 amax floor: codes 0, scale 2^-22.
TEST(CompressorExecutorAdversarial, ZeroBlock) {
  Inputs in = synthetic_compressor_inputs("compressor/adv_zero", 4, 512, 16);
  std::fill(in.a.begin() + 4 * in.dm.cw(), in.a.begin() + 12 * in.dm.cw(), 0.0f);  // blocks 1 and 2
  check(in);
  const Out k = run(in, 0xA5);
  const std::uint8_t* row = k.cache.data() + 2 * in.dm.row_bytes();  // entry 2 reads blocks 1 and 2
  for (int i = 0; i < in.dm.nope(); ++i) EXPECT_EQ(row[i], 0);
  EXPECT_EQ(row[in.dm.scale_offset()], 127 - 22);  // ceil(log2(fp32(1e-4)·fp32(1/448))) = -22
}

// Decode after a prefill hand-off reproduces the prefill of the longer sequence bit for bit
// (entries and the final state), for both ratios and hand-offs inside and at block ends.
TEST(CompressorExecutor, DecodeEqualsPrefill) {
  for (const auto& [ratio, t0, t1] :
       {std::make_tuple(4, 0, 23), std::make_tuple(4, 9, 30), std::make_tuple(4, 12, 17),
        std::make_tuple(128, 100, 300), std::make_tuple(128, 256, 390)}) {
    const Inputs full =
        synthetic_compressor_inputs("compressor/decode_m" + std::to_string(ratio), ratio, 128, t1);
    Inputs head = full;
    head.tokens = t0;
    const cmp::Dims& dm = full.dm;
    const int cw = dm.cw();
    const Out kf = run(full, 0xA5);
    cmp::DecodeState st = cuda::compressor_prefill_state_simt(head.problem());
    std::vector<std::uint8_t> row(static_cast<std::size_t>(dm.row_bytes()), 0xA5);
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t j = t / ratio;
      const bool done = cuda::compressor_decode_step_simt(
          dm, st, t, full.a.data() + t * cw, full.g.data() + t * cw, full.ape.data(),
          full.norm_w.data(), full.eps,
          cmp::RopeRow{full.cos.data() + j * 32, full.sin.data() + j * 32}, row.data());
      ASSERT_EQ(done, (t + 1) % ratio == 0);
      if (done) {
        EXPECT_TRUE(std::equal(row.begin(), row.end(), kf.cache.begin() + j * dm.row_bytes()))
            << "m " << ratio << " entry " << j << " (hand-off at " << t0 << ")";
      }
    }
    // The live rows of the state (the partial block, and for CSA the last complete block) equal
    // the prefill hand-off; the other rows are stale in decode (never read before rewritten,
    // as in the official state machine) and initial after a prefill.
    const cmp::DecodeState want = cuda::compressor_prefill_state_simt(full.problem());
    const int cur = dm.csa() ? 4 : 0, partial = static_cast<int>(t1 % ratio);
    std::vector<int> live;
    for (int r = 0; r < partial; ++r) live.push_back(cur + r);
    if (dm.csa() && t1 >= 4)
      for (int r = 0; r < 4; ++r) live.push_back(r);
    for (const int r : live) {
      EXPECT_EQ(0, std::memcmp(st.kv.data() + r * cw, want.kv.data() + r * cw,
                               static_cast<std::size_t>(cw) * 4))
          << "m " << ratio << " state kv row " << r;
      EXPECT_EQ(0, std::memcmp(st.score.data() + r * cw, want.score.data() + r * cw,
                               static_cast<std::size_t>(cw) * 4))
          << "m " << ratio << " state score row " << r;
    }
  }
}

// The tiny checkpoints' real main-compressor weights (CSA and HCA layers): a, g are the fp32
// projections of random inputs; the executor is gated as above, and its dequantised entries are
// compared with ref::compress_prefill on the same x (double projections) by the loose rule.
TEST(CompressorExecutorCheckpoint, TinyFlashCsaAndHca) {
  const auto [cfg, ckpt] = test::open_tiny_checkpoint("tiny-flash-s0");
  for (std::int64_t layer = 0; layer < cfg.n_layers; ++layer) {
    const LayerConfig lc = layer_config(cfg, layer);
    if (lc.ratio == 0) continue;
    const ref::CompressorWeights cw =
        ref::load_layer_compressor(ckpt, cfg, layer, ref::CompressorKind::kMain);
    const std::int64_t T = lc.ratio == 4 ? 41 : 300;
    const Mat x = test::checkpoint_tokens("compressor/tiny-flash", layer, T, cfg.dim);
    const Inputs in = test::checkpoint_compressor_inputs(
        "compressor/tiny-flash/" + cw.prefix, cmp::make_dims(lc.ratio, cw.width), cw, x, cfg, lc);
    check(in);
    // Against the full reference forward of the compressor (double projections of x).
    const Mat ref_entries = ref::compress_prefill(x, cw, in.rope, cfg.norm_eps, rq_policy());
    const Out k = run(in, 0xA5);
    ASSERT_EQ(ref_entries.rows(), T / lc.ratio);
    double worst = 0;
    for (Eigen::Index j = 0; j < ref_entries.rows(); ++j) {
      const std::uint8_t* row = k.cache.data() + j * in.dm.row_bytes();
      for (int i = 0; i < in.dm.width; ++i) {
        const double r = ref_entries(j, i);
        double kv, allowed;
        if (i < in.dm.nope()) {
          const double s = fmt::ue8m0_to_double(row[in.dm.scale_offset() + i / 64]);
          kv = fmt::e4m3_to_double(row[i]) * s;
          allowed = 0x1.0p-3 * std::max(std::abs(r), std::abs(kv)) + 0x1.0p-8 * s;
        } else {
          kv = fmt::bf16_to_double(row_bf16(row, in.dm.rope_offset() + 2 * (i - in.dm.nope())));
          allowed = 4 * bf16_ulp(r);
        }
        worst = std::max(worst, std::abs(kv - r) / allowed);
      }
    }
    std::printf("  vs ref::compress_prefill (double projections): worst %.3f of one step\n", worst);
    EXPECT_LE(worst, 1.0) << in.name;
  }
}

// ---------------------------------------------------------------- indexer compressor tests

TEST(CompressorExecutorIndexer, DeclaredPrecisionPointsAndConstants) {
  using P = cuda::CompressorPrecisionPoint;
  for (P p : {P::kLogitFp32, P::kPooledStoreBf16, P::kNormStoreBf16, P::kRopeFp32Angle,
              P::kRopeStoreBf16, P::kHadamardStoreBf16, P::kIdxKQ4})
    EXPECT_TRUE(cuda::compressor_rounds_at(p, cmp::Kind::kIndexer));
  EXPECT_FALSE(cuda::compressor_rounds_at(P::kCkvQ8, cmp::Kind::kIndexer));
  EXPECT_FALSE(cuda::compressor_rounds_at(P::kHadamardStoreBf16, cmp::Kind::kMain));
  EXPECT_FALSE(cuda::compressor_rounds_at(P::kIdxKQ4, cmp::Kind::kMain));
  // The reference policy the indexer is held to rounds at the same points.
  const PrecisionPolicy off = PrecisionPolicy::official();
  for (QuantPoint q : {QuantPoint::kBf16Pooled, QuantPoint::kBf16Norm, QuantPoint::kFp32RopeAngle,
                       QuantPoint::kBf16Rope, QuantPoint::kBf16Hadamard, QuantPoint::kIdxKQ4})
    EXPECT_TRUE(off.on(q)) << quant_point_name(q);
  EXPECT_EQ(cmp::kHadamardScale, static_cast<float>(1.0L / std::sqrt(128.0L)));
  EXPECT_EQ(cmp::q4_scale_exponent(0.0f), -126);  // the floor: 6·2^-126 · fp32(1/6) = 2^-126
  EXPECT_EQ(cmp::q4_scale_exponent(6.0f), 0);
  EXPECT_EQ(cmp::q4_scale_exponent(6.0f * 1.0078125f), 1);
}

std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CompressorExecutorIndexer, RowLayoutAndDims) {
  const cmp::Dims d = cmp::make_dims(4, 128, cmp::Kind::kIndexer);
  EXPECT_EQ(d.row_bytes(), 68);  // cost-model.md: 128 e2m1 in 64 bytes + 4 ue8m0 scales
  EXPECT_EQ(d.scales(), 4);
  EXPECT_EQ(d.scale_offset(), 64);
  EXPECT_EQ(d.ctas(), 1);
  EXPECT_EQ(d.cw(), 256);
  EXPECT_EQ(d.state_rows(), 8);
  EXPECT_THROW(cmp::make_dims(128, 128, cmp::Kind::kIndexer), ConfigError);
  EXPECT_NE(error_message([] { cmp::make_dims(128, 128, cmp::Kind::kIndexer); }).find("got 128"),
            std::string::npos);
  EXPECT_THROW(cmp::make_dims(4, 256, cmp::Kind::kIndexer), ShapeError);
  EXPECT_NE(error_message([] { cmp::make_dims(4, 256, cmp::Kind::kIndexer); }).find("got 256"),
            std::string::npos);
  EXPECT_THROW(cmp::make_dims(4, 64, cmp::Kind::kIndexer), ShapeError);
  // Bytes (kernel-targets.md §4.5 plus the rope table and norm weight): T = 8192.
  EXPECT_EQ(cuda::compressor_prefill_bytes(d, 8192),
            8192.0 * 2 * 256 * 4 + 2048.0 * (68 + 256) + 4.0 * 256 * 4 + 128.0 * 4);
  EXPECT_EQ(cuda::compressor_decode_bytes(d, 128, 32),
            128.0 * 2 * 2048 + 32.0 * (8 * 2048 + 256 + 68 + 4 * 2048) + 4.0 * 256 * 4 + 512);
}

// The kernel's own indexer tail (compressor_kernels.cuh: in-lane stages, then xor shuffles over
// lane offsets 1..16), launched alone on one warp in the SIMT executor, is Sylvester's H_128: on
// the basis vectors e_k output i is exactly bf16((−1)^popcount(i & k) · fp32(128^-1/2)) (sums of
// ±1, no rounding before the scale). Random vectors are gated on real entries above.
TEST(CompressorExecutorIndexer, KernelHadamardIsSylvesterOrder) {
  namespace ck = cuda::compressor_kernels;
  const std::uint16_t plus = fmt::bf16_encode(static_cast<double>(cmp::kHadamardScale)),
                      minus = fmt::bf16_encode(-static_cast<double>(cmp::kHadamardScale));
  for (int k = 0; k < 128; ++k) {
    std::vector<std::uint16_t> y(128, 0);
    y[static_cast<std::size_t>(k)] = fmt::bf16_encode(1.0);
    cuda::simt::Buffer<std::uint16_t> in("y", y), had("hadamard", 128, 0x7FC1);
    cuda::simt::Buffer<std::uint8_t> row("row", 68, 0xA5);
    ck::EntryOut out{};
    out.row = row.ptr();
    out.dbg_hadamard = had.ptr();
    const cuda::simt::gptr<const std::uint16_t> src = in.cptr();
    cuda::simt::LaunchConfig c;
    c.kernel = "indexer_tail";
    c.block = {32, 1, 1};
    cuda::simt::launch(c, [&] {
      const int lane = static_cast<int>(cuda::simt::thread_idx().x);
      std::uint16_t v[4];
      for (int q = 0; q < 4; ++q) v[q] = cuda::simt::ld(src + 4 * lane + q);
      ck::indexer_tail<cmp::CompressorFault::kNone>(v, out, lane);
    });
    const std::vector<std::uint16_t> h = had.read();
    for (int i = 0; i < 128; ++i)
      ASSERT_EQ(h[static_cast<std::size_t>(i)],
                std::popcount(static_cast<unsigned>(i & k)) % 2 != 0 ? minus : plus)
          << "H[" << i << "][" << k << "]";
  }
}

// Every finite bf16 value through the executor's Q4 element functions against ref::q4_quantize:
// alone in its block (its own scale), and inside blocks of amax 6·2^k0 for seven k0 (every value
// with |y| ≤ amax: each e2m1 tie and its bf16 neighbours at each of those scales).
TEST(CompressorExecutorIndexer, Q4ElementMatchesReferenceOnEveryBf16) {
  std::vector<double> block(32, 0.0);
  std::size_t compared = 0, ties = 0;
  const auto one = [&](float y, float other) {
    block[0] = y;
    block[1] = other;
    const ref::BlockCodes bc = ref::q4_quantize(block, 32);
    const int k = cmp::q4_scale_exponent(std::max(std::fabs(y), std::fabs(other)));
    ASSERT_EQ(k + 127, bc.scales[0]) << "y = " << y << ", other = " << other;
    ASSERT_EQ(cmp::q4_code(y, k), bc.codes[0]) << "y = " << y << ", k = " << k;
    ASSERT_EQ(cmp::q4_code(other, k), bc.codes[1]) << "other = " << other << ", k = " << k;
    for (const double t : kE2m1Ties) ties += std::abs(static_cast<double>(y)) == std::ldexp(t, k);
    ++compared;
  };
  for (std::uint32_t u = 0; u < 0x10000; ++u) {
    if ((u & 0x7F80) == 0x7F80) continue;  // Inf, NaN
    one(fmt::bf16_to_float(static_cast<std::uint16_t>(u)), 0.0f);
  }
  for (const int k0 : {-126, -100, -7, 0, 1, 64, 125}) {
    const float amax = std::ldexp(6.0f, k0);
    for (std::uint32_t u = 0; u < 0x10000; ++u) {
      const float y = fmt::bf16_to_float(static_cast<std::uint16_t>(u));
      if ((u & 0x7F80) == 0x7F80 || std::fabs(y) > amax) continue;
      one(y, u % 2 == 0 ? amax : -amax);
    }
  }
  std::printf("Q4 element: %zu blocks compared, %zu values exactly on an e2m1 tie\n", compared,
              ties);
  EXPECT_GT(ties, 7u * 7 * 2);
}

class CompressorExecutorIndexerDiff : public ::testing::TestWithParam<Case> {};

TEST_P(CompressorExecutorIndexerDiff, Gates) {
  const Case& c = GetParam();
  check_indexer(synthetic_indexer_inputs("indexer/" + c.name, c.tokens));
}

INSTANTIATE_TEST_SUITE_P(Cases, CompressorExecutorIndexerDiff,
                         ::testing::Values(Case{"T37", 4, 128, 37}, Case{"T19", 4, 128, 19},
                                           Case{"T300", 4, 128, 300},
                                           Case{"T3_no_entry", 4, 128, 3}),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// Saturated softmax and input magnitudes (the RMSNorm makes the entry scale-free).
TEST(CompressorExecutorIndexerAdversarial, SpikyLogitsAndInputMagnitudes) {
  check_indexer(synthetic_indexer_inputs("indexer/adv_spiky", 33, 1.0, 20.0, 20.0));
  check_indexer(synthetic_indexer_inputs("indexer/adv_huge", 21, 1e15));
  check_indexer(synthetic_indexer_inputs("indexer/adv_tiny", 21, 1e-15));
}

// Key magnitudes through the norm weight: huge keys (2^100: Q4 scales near 2^98) and tiny ones
// (2^-120: scales near 2^-121, the fp32 Hadamard sums near the bottom of the normal range).
TEST(CompressorExecutorIndexerAdversarial, KeyMagnitudes) {
  for (const auto& [name, shift] : {std::make_pair("indexer/adv_huge_keys", 100),
                                    std::make_pair("indexer/adv_tiny_keys", -120)}) {
    Inputs in = synthetic_indexer_inputs(name, 25);
    test::scale_norm_weight(in, shift);
    check_indexer(in);
  }
}

// Channel magnitudes spread over 2^±40: the normed values span about 80 binades, so the fp32
// butterflies really round (the γ part of the Hadamard δ) and most Q4 codes of a block are 0.
TEST(CompressorExecutorIndexerAdversarial, MixedChannelMagnitudes) {
  Inputs in = synthetic_indexer_inputs("indexer/adv_mixed", 41);
  test::spread_channel_magnitudes(in);
  check_indexer(in);
}

// An all-zero pair of blocks: entry 2 pools zeros, every code is ±0 and every scale the Q4 floor
// 2^-126 (byte 1).
TEST(CompressorExecutorIndexerAdversarial, ZeroBlock) {
  Inputs in = synthetic_indexer_inputs("indexer/adv_zero", 16);
  std::fill(in.a.begin() + 4 * in.dm.cw(), in.a.begin() + 12 * in.dm.cw(), 0.0f);
  check_indexer(in);
  const Out k = run(in, 0xA5);
  const std::uint8_t* row = k.cache.data() + 2 * in.dm.row_bytes();
  for (int b = 0; b < 64; ++b) EXPECT_EQ(row[b] & 0x77, 0) << "byte " << b;
  for (int b = 0; b < 4; ++b) EXPECT_EQ(row[64 + b], 1) << "scale " << b;
}

// Values on and next to every e2m1 decision boundary: 1024 entries (131,072 Q4 values) of random
// inputs put bf16 Hadamard outputs exactly on each of the 7 ties (in units of the block scale)
// and within one bf16 step of them; check_indexer requires every code and scale to equal
// q4_quantize's, so ties to even and their neighbours are verified end to end.
TEST(CompressorExecutorIndexerAdversarial, E2m1DecisionBoundaries) {
  const IndexerReport r = check_indexer(synthetic_indexer_inputs("indexer/adv_boundaries", 4096));
  for (int t = 0; t < 7; ++t) EXPECT_GE(r.ties[t], 10u) << "tie " << kE2m1Ties[t];
  EXPECT_GE(r.near_ties, 1000u);
}

// Decode after a prefill hand-off reproduces the prefill of the longer sequence bit for bit:
// cache rows, all four debug outputs, and the live state rows.
TEST(CompressorExecutorIndexer, DecodeEqualsPrefill) {
  for (const auto& [t0, t1] : {std::make_pair(0, 23), std::make_pair(9, 30), std::make_pair(12, 17),
                               std::make_pair(3, 41)}) {
    const Inputs full = synthetic_indexer_inputs("indexer/decode", t1);
    Inputs head = full;
    head.tokens = t0;
    const cmp::Dims& dm = full.dm;
    const int cw = dm.cw(), W = dm.width;
    const Out kf = run(full, 0xA5);
    cmp::DecodeState st = cuda::compressor_prefill_state_simt(head.problem());
    std::vector<std::uint8_t> row(static_cast<std::size_t>(dm.row_bytes()));
    std::vector<std::uint16_t> pooled(128), normed(128), roped(128), had(128);
    int completed = 0;
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t j = t / 4;
      std::fill(row.begin(), row.end(), 0xA5);
      const bool done = cuda::compressor_decode_step_simt(
          dm, st, t, full.a.data() + t * cw, full.g.data() + t * cw, full.ape.data(),
          full.norm_w.data(), full.eps,
          cmp::RopeRow{full.cos.data() + j * 32, full.sin.data() + j * 32}, row.data(),
          cmp::EntryDebug{pooled.data(), normed.data(), roped.data(), had.data()});
      ASSERT_EQ(done, (t + 1) % 4 == 0);
      if (!done) continue;
      ++completed;
      const std::string where =
          "entry " + std::to_string(j) + " (hand-off at " + std::to_string(t0) + ")";
      EXPECT_TRUE(std::equal(row.begin(), row.end(), kf.cache.begin() + j * dm.row_bytes()))
          << where;
      EXPECT_TRUE(std::equal(pooled.begin(), pooled.end(), kf.pooled.begin() + j * W)) << where;
      EXPECT_TRUE(std::equal(normed.begin(), normed.end(), kf.normed.begin() + j * W)) << where;
      EXPECT_TRUE(std::equal(roped.begin(), roped.end(), kf.roped.begin() + j * W)) << where;
      EXPECT_TRUE(std::equal(had.begin(), had.end(), kf.hadamard.begin() + j * W)) << where;
    }
    EXPECT_EQ(completed, t1 / 4 - t0 / 4);
    const cmp::DecodeState want = cuda::compressor_prefill_state_simt(full.problem());
    std::vector<int> live;
    for (int r = 0; r < t1 % 4; ++r) live.push_back(4 + r);
    if (t1 >= 4)
      for (int r = 0; r < 4; ++r) live.push_back(r);
    for (const int r : live) {
      EXPECT_EQ(0, std::memcmp(st.kv.data() + r * cw, want.kv.data() + r * cw,
                               static_cast<std::size_t>(cw) * 4))
          << "state kv row " << r << " (hand-off at " << t0 << ")";
      EXPECT_EQ(0, std::memcmp(st.score.data() + r * cw, want.score.data() + r * cw,
                               static_cast<std::size_t>(cw) * 4))
          << "state score row " << r << " (hand-off at " << t0 << ")";
    }
  }
}

// One e2m1 step between K (a decoded row) and a reference entry whose pre-Q4 values are `pre`
// (for its scales): |K − R| ≤ 2^-1·max(|K|, |R|) + 2^-1·max(s_K, s_R). Returns the worst ratio;
// counts the values that differ.
double e2m1_step_ratio(const std::uint8_t* row, const Vec& r, const Vec& pre, std::size_t& diffs) {
  const IndexerRow ir = decode_indexer_row(row);
  const ref::BlockCodes rc =
      ref::q4_quantize(std::span<const double>(pre.data(), 128), cmp::kQ4Block);
  double worst = 0;
  for (int i = 0; i < 128; ++i) {
    const double kv = ir.value(i),
                 s_r = fmt::ue8m0_to_double(rc.scales[static_cast<std::size_t>(i / 32)]);
    diffs += kv != r(i);
    const double step =
        0.5 * std::max(std::abs(kv), std::abs(r(i))) + 0.5 * std::max(ir.scale(i), s_r);
    worst = std::max(worst, std::abs(kv - r(i)) / step);
  }
  return worst;
}

// The tiny-flash checkpoint's real indexer compressors (every CSA layer; layer 2 first): a, g are
// the fp32 projections of random inputs. The executor is gated stage by stage as above; its
// entries are compared with ref::compress_prefill (official policy, double projections) within
// one e2m1 step; and a decode from a prefill hand-off at t0 = 18 is compared step by step with
// ref::compress_decode_step (within one step) and with the executor's own prefill (bitwise).
TEST(CompressorExecutorIndexerCheckpoint, TinyFlashCsaLayers) {
  const auto [cfg, ckpt] = test::open_tiny_checkpoint("tiny-flash-s0");
  const PrecisionPolicy official = PrecisionPolicy::official();
  const PrecisionPolicy pre_q4 = PrecisionPolicy::official().disable(QuantPoint::kIdxKQ4);
  int layers = 0;
  for (std::int64_t layer = 0; layer < cfg.n_layers; ++layer) {
    const LayerConfig lc = layer_config(cfg, layer);
    if (lc.kind != LayerKind::kCsa) continue;
    ++layers;
    const ref::CompressorWeights cw =
        ref::load_layer_compressor(ckpt, cfg, layer, ref::CompressorKind::kIndexer);
    ASSERT_EQ(cw.ratio, 4);
    ASSERT_EQ(cw.width, 128);
    constexpr std::int64_t T = 97, t0 = 18;
    const Mat x = test::checkpoint_tokens("indexer/tiny-flash", layer, T, cfg.dim);
    const Inputs in = test::checkpoint_compressor_inputs(
        "indexer/tiny-flash/" + cw.prefix, cmp::make_dims(4, cw.width, cmp::Kind::kIndexer), cw, x,
        cfg, lc);
    check_indexer(in);
    // ---- prefill vs the complete reference forward (double projections)
    const Mat ref_entries = ref::compress_prefill(x, cw, in.rope, cfg.norm_eps, official);
    const Mat ref_pre = ref::compress_prefill(x, cw, in.rope, cfg.norm_eps, pre_q4);
    const Out k = run(in, 0xA5);
    ASSERT_EQ(ref_entries.rows(), T / 4);
    double worst = 0;
    std::size_t diffs = 0;
    for (Eigen::Index j = 0; j < ref_entries.rows(); ++j)
      worst =
          std::max(worst, e2m1_step_ratio(k.cache.data() + j * 68, ref_entries.row(j).transpose(),
                                          ref_pre.row(j).transpose(), diffs));
    std::printf(
        "  vs ref::compress_prefill (double projections): worst %.3f of one e2m1 step, "
        "%zu of %lld values differ\n",
        worst, diffs, static_cast<long long>(ref_entries.size()));
    EXPECT_LE(worst, 1.0) << in.name;
    // ---- decode from a hand-off at t0: the reference state machine and the executor's
    ref::CompressorState rs =
        ref::compress_prefill_with_state(x.topRows(t0), cw, in.rope, cfg.norm_eps, official).state;
    ref::CompressorState rs_pre = rs;
    Inputs head = in;
    head.tokens = t0;
    cmp::DecodeState st = cuda::compressor_prefill_state_simt(head.problem());
    std::vector<std::uint8_t> row(68);
    double worst_dec = 0;
    std::size_t diffs_dec = 0;
    int steps = 0;
    for (std::int64_t t = t0; t < T; ++t) {
      const Mat xt = x.row(t);
      const std::optional<Vec> r =
          ref::compress_decode_step(xt, t, rs, cw, in.rope, cfg.norm_eps, official);
      const std::optional<Vec> r_pre =
          ref::compress_decode_step(xt, t, rs_pre, cw, in.rope, cfg.norm_eps, pre_q4);
      const std::int64_t j = t / 4;
      const bool done = cuda::compressor_decode_step_simt(
          in.dm, st, t, in.a.data() + t * 256, in.g.data() + t * 256, in.ape.data(),
          in.norm_w.data(), in.eps, cmp::RopeRow{in.cos.data() + j * 32, in.sin.data() + j * 32},
          row.data());
      ASSERT_EQ(done, r.has_value());
      if (!done) continue;
      ++steps;
      EXPECT_TRUE(std::equal(row.begin(), row.end(), k.cache.begin() + j * 68))
          << in.name << " decode entry " << j << " differs from the executor's prefill";
      worst_dec = std::max(worst_dec, e2m1_step_ratio(row.data(), *r, *r_pre, diffs_dec));
    }
    std::printf(
        "  decode from t0 = %lld vs ref::compress_decode_step: %d entries, worst %.3f of "
        "one e2m1 step, %zu values differ\n",
        static_cast<long long>(t0), steps, worst_dec, diffs_dec);
    EXPECT_LE(worst_dec, 1.0) << in.name;
  }
  EXPECT_GE(layers, 1);
}

}  // namespace
}  // namespace v4ref
