// Self-checks of the token compressor (v4-forward.md §6, §11.2; verification.md §14): hand cases,
// identities, visibility, decode/prefill invariance, and a second, independently written naive
// formulation (plain loops, softmax normalised first, reverse order, own RMSNorm/RoPE/Hadamard).
#include "v4ref/ref/compressor.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "v4ref/ref/checkpoint_gen.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/norm.hpp"
#include "v4ref/ref/quant.hpp"
#include "../common/test_support.hpp"

namespace v4ref::ref {
namespace {

constexpr double kEps = 1e-6;

RopeTable compress_rope() { return make_rope_table(160000, true, YarnConfig{}, 64, 0); }

// (rows, cols, stddev, seed): the argument order these tests were written with.
Mat random_mat(std::int64_t r, std::int64_t c, double stddev, std::uint64_t seed) {
  return test::random_bf16_mat(r, c, seed, stddev);
}

LinearWeight bf16_linear(const std::string& name, Mat w) {
  LinearWeight lw;
  lw.name = name;
  lw.w = std::move(w);
  lw.storage = WeightStorage::kBf16;
  lw.act_q8 = false;
  return lw;
}

// Synthetic compressor weights: N(0, 1/sqrt(d)) projections, gate logits of order one, ape of
// order one (so the softmax really weighs the slots), norm weights near 1.
CompressorWeights synth(int m, std::int64_t w, std::int64_t d, CompressorKind kind,
                        const std::string& tag) {
  CompressorWeights cw;
  cw.prefix = "test." + tag + ".";
  cw.kind = kind;
  cw.ratio = m;
  cw.width = w;
  const std::int64_t c = m == 4 ? 2 : 1;
  const double s = 1.0 / std::sqrt(static_cast<double>(d));
  cw.wkv = bf16_linear(cw.prefix + "wkv", random_mat(c * w, d, s, derive_seed(tag, "wkv", "")));
  cw.wgate = bf16_linear(cw.prefix + "wgate", random_mat(c * w, d, s, derive_seed(tag, "wgate", "")));
  cw.ape = random_mat(m, c * w, 0.5, derive_seed(tag, "ape", ""));
  cw.norm = Vec(w);
  Rng rng(derive_seed(tag, "norm", ""));
  for (std::int64_t i = 0; i < w; ++i) cw.norm(i) = fmt::round_bf16(1.0 + 0.1 * rng.normal());
  return cw;
}

double max_rel_diff(const Mat& a, const Mat& b) {
  EXPECT_EQ(a.rows(), b.rows());
  EXPECT_EQ(a.cols(), b.cols());
  if (a.rows() != b.rows() || a.cols() != b.cols()) return 1e300;
  const double scale = std::max(b.cwiseAbs().maxCoeff(), 1e-300);
  return (a - b).cwiseAbs().maxCoeff() / scale;
}

// ------------------------------------------------------------------ naive formulation
// Written from the spec text only: §6.1/§6.2 slot lists per entry and channel, softmax weights
// normalised first and summed in reverse slot order; RMSNorm, interleaved RoPE and the Sylvester
// Hadamard matrix by hand. Exact policy (no rounding points).

struct Slot {
  double value, logit;
};

Mat naive_entries(const Mat& x, const CompressorWeights& cw, const RopeTable& rope,
                  bool swap_series = false) {
  const std::int64_t T = x.rows(), d = x.cols(), w = cw.width, m = cw.ratio;
  const std::int64_t cwid = cw.series() * w;
  // a_t, g_t by plain loops, inputs in reverse order.
  Mat a(T, cwid), g(T, cwid);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t o = 0; o < cwid; ++o) {
      double sa = 0, sg = 0;
      for (std::int64_t k = d - 1; k >= 0; --k) {
        sa += cw.wkv.w(o, k) * x(t, k);
        sg += cw.wgate.w(o, k) * x(t, k);
      }
      a(t, o) = sa;
      g(t, o) = sg;
    }
  const std::int64_t prev_off = swap_series ? w : 0;  // the pitfall of §6.2 when swapped
  const std::int64_t cur_off = swap_series ? 0 : w;
  const std::int64_t n = T / m;
  Mat out(n, w);
  for (std::int64_t j = 0; j < n; ++j) {
    std::vector<double> c(static_cast<std::size_t>(w));
    for (std::int64_t i = 0; i < w; ++i) {
      std::vector<Slot> slots;
      if (m == 128) {
        for (std::int64_t r = 0; r < m; ++r)
          slots.push_back({a(j * m + r, i), g(j * m + r, i) + cw.ape(r, i)});
      } else {
        if (j >= 1)
          for (std::int64_t r = 0; r < 4; ++r) {
            const std::int64_t tp = 4 * (j - 1) + r;
            slots.push_back({a(tp, prev_off + i), g(tp, prev_off + i) + cw.ape(r, prev_off + i)});
          }
        for (std::int64_t r = 0; r < 4; ++r) {
          const std::int64_t t = 4 * j + r;
          slots.push_back({a(t, cur_off + i), g(t, cur_off + i) + cw.ape(r, cur_off + i)});
        }
      }
      double mx = -std::numeric_limits<double>::infinity();
      for (const Slot& s : slots) mx = s.logit > mx ? s.logit : mx;
      double z = 0;
      for (const Slot& s : slots) z += std::exp(s.logit - mx);
      double acc = 0;
      for (auto it = slots.rbegin(); it != slots.rend(); ++it)
        acc += (std::exp(it->logit - mx) / z) * it->value;
      c[static_cast<std::size_t>(i)] = acc;
    }
    // RMSNorm
    double ss = 0;
    for (double v : c) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(w) + kEps);
    for (std::int64_t i = 0; i < w; ++i) c[static_cast<std::size_t>(i)] *= inv * cw.norm(i);
    // RoPE on the last 64 dims at position j·m, interleaved pairs.
    const std::int64_t off = w - 64;
    for (std::int64_t p = 0; p < 32; ++p) {
      const double th = static_cast<double>(j * m) * rope.omega[static_cast<std::size_t>(p)];
      const double x0 = c[static_cast<std::size_t>(off + 2 * p)];
      const double x1 = c[static_cast<std::size_t>(off + 2 * p + 1)];
      c[static_cast<std::size_t>(off + 2 * p)] = x0 * std::cos(th) - x1 * std::sin(th);
      c[static_cast<std::size_t>(off + 2 * p + 1)] = x0 * std::sin(th) + x1 * std::cos(th);
    }
    if (cw.kind == CompressorKind::kIndexer) {  // Had(c) = n^{-1/2} H c, H[r][k] = (−1)^{popcount(r&k)}
      std::vector<double> h(static_cast<std::size_t>(w), 0.0);
      for (std::int64_t r = 0; r < w; ++r) {
        double s = 0;
        for (std::int64_t k = 0; k < w; ++k)
          s += (__builtin_popcountll(static_cast<unsigned long long>(r & k)) % 2 ? -1.0 : 1.0) *
               c[static_cast<std::size_t>(k)];
        h[static_cast<std::size_t>(r)] = s / std::sqrt(static_cast<double>(w));
      }
      c = h;
    }
    for (std::int64_t i = 0; i < w; ++i) out(j, i) = c[static_cast<std::size_t>(i)];
  }
  return out;
}

// ------------------------------------------------------------------ hand cases (pooling)

// d = 1, w = 2, m = 4: x_t = t + 1; a_t = x_t·[1, −1, 0.5, 2] (prev ch0, prev ch1, cur ch0, cur ch1).
CompressorWeights hand_csa(bool weighted_ape) {
  CompressorWeights cw;
  cw.prefix = "hand.";
  cw.ratio = 4;
  cw.width = 2;
  Mat wkv(4, 1);
  wkv << 1, -1, 0.5, 2;
  cw.wkv = bf16_linear("hand.wkv", wkv);
  cw.wgate = bf16_linear("hand.wgate", Mat::Zero(4, 1));
  cw.ape = Mat::Zero(4, 4);
  if (weighted_ape)
    for (int r = 0; r < 4; ++r) {  // channel 0 of both series: softmax weights ∝ r + 1
      cw.ape(r, 0) = std::log(r + 1.0);
      cw.ape(r, 2) = std::log(r + 1.0);
    }
  cw.norm = Vec::Ones(2);
  return cw;
}

Mat arange_tokens(std::int64_t T) {
  Mat x(T, 1);
  for (std::int64_t t = 0; t < T; ++t) x(t, 0) = static_cast<double>(t + 1);
  return x;
}

TEST(CompressorPool, HandCsaTwoChannelsUniformGates) {
  // All logits equal: j = 0 averages the 4 current-series values, j = 1 averages 8 slots.
  const Mat p = compress_pool_prefill(arange_tokens(9), hand_csa(false));
  ASSERT_EQ(p.rows(), 2);  // T = 9: blocks 0 and 1 complete, token 8 pending
  EXPECT_DOUBLE_EQ(p(0, 0), 1.25);   // 0.5·mean(1, 2, 3, 4)
  EXPECT_DOUBLE_EQ(p(0, 1), 5.0);    // 2·mean(1, 2, 3, 4)
  EXPECT_DOUBLE_EQ(p(1, 0), 2.875);  // (1·(1+2+3+4) + 0.5·(5+6+7+8)) / 8
  EXPECT_DOUBLE_EQ(p(1, 1), 5.25);   // (−1·10 + 2·26) / 8
}

TEST(CompressorPool, HandCsaApeWeightsSlotsWithinTheirSeries) {
  // ape[r] = ln(r+1) on channel 0 of both series: weights ∝ (r+1) per block.
  const Mat p = compress_pool_prefill(arange_tokens(8), hand_csa(true));
  ASSERT_EQ(p.rows(), 2);
  EXPECT_NEAR(p(0, 0), 1.5, 1e-14);   // Σ(r+1)·0.5(r+1) / Σ(r+1) = 0.5·30/10
  EXPECT_NEAR(p(0, 1), 5.0, 1e-14);   // channel 1 unchanged
  EXPECT_NEAR(p(1, 0), 3.25, 1e-14);  // (Σ(r+1)² + Σ(r+1)·0.5(5+r)) / 20 = (30 + 35)/20
  EXPECT_NEAR(p(1, 1), 5.25, 1e-14);
}

TEST(CompressorPool, HandHcaUniformAndOneHotGates) {
  CompressorWeights cw;
  cw.prefix = "hand_hca.";
  cw.ratio = 128;
  cw.width = 2;
  Mat wkv(2, 1);
  wkv << 1, -3;
  cw.wkv = bf16_linear("hand_hca.wkv", wkv);
  cw.wgate = bf16_linear("hand_hca.wgate", Mat::Zero(2, 1));
  cw.ape = Mat::Zero(128, 2);
  cw.ape(5, 1) = 1000;  // channel 1: all weight on token 5
  cw.norm = Vec::Ones(2);
  const Mat p = compress_pool_prefill(arange_tokens(256), cw);
  ASSERT_EQ(p.rows(), 2);
  EXPECT_NEAR(p(0, 0), 64.5, 1e-12);     // mean(1..128)
  EXPECT_NEAR(p(1, 0), 192.5, 1e-12);    // mean(129..256)
  EXPECT_DOUBLE_EQ(p(0, 1), -3.0 * 6);   // token 5 (x = 6)
  EXPECT_DOUBLE_EQ(p(1, 1), -3.0 * 134); // token 128 + 5
}

TEST(CompressorPool, StateRowsWithMinusInfinityLogitsWeighNothing) {
  Mat kv = Mat::Zero(8, 2), score = Mat::Constant(8, 2, -std::numeric_limits<double>::infinity());
  for (int r = 4; r < 8; ++r) {
    kv(r, 1) = r;  // current series of channel 0 (w = 1)
    score(r, 1) = 0;
  }
  kv(0, 0) = 1e6;  // previous series, but logit −∞
  const Vec p = pool_entry(kv, score, 4, 1);
  EXPECT_DOUBLE_EQ(p(0), 5.5);
}

// ------------------------------------------------------------------ identities

TEST(CompressorPrefill, BlockOfOneRepeatedTokenPoolsToItsProjectionHca) {
  const CompressorWeights cw = synth(128, 128, 32, CompressorKind::kMain, "rep_hca");
  const Mat tok = random_mat(1, 32, 1.0, 11);
  const Mat x = tok.replicate(128, 1);
  const Mat a = tok * cw.wkv.w.transpose();  // [1, w]
  const Mat p = compress_pool_prefill(x, cw);
  ASSERT_EQ(p.rows(), 1);
  EXPECT_LT(max_rel_diff(p, a), 1e-14);
  const RopeTable rope = compress_rope();
  const Mat e = compress_prefill(x, cw, rope, kEps, PrecisionPolicy::exact());
  const Vec expect = postprocess_entry(a.row(0).transpose(), 0, cw, rope, kEps, PrecisionPolicy::exact());
  EXPECT_LT(max_rel_diff(e, expect.transpose()), 1e-14);
}

TEST(CompressorPrefill, BlockOfOneRepeatedTokenPoolsToItsProjectionCsa) {
  CompressorWeights cw = synth(4, 128, 32, CompressorKind::kMain, "rep_csa");
  const Mat tok = random_mat(1, 32, 1.0, 12);
  const Mat x = tok.replicate(8, 1);
  // j = 0: only the current series (channels [w, 2w)).
  const Mat a = tok * cw.wkv.w.transpose();  // [1, 2w]
  Mat p = compress_pool_prefill(x, cw);
  ASSERT_EQ(p.rows(), 2);
  EXPECT_LT(max_rel_diff(p.row(0), a.rightCols(128)), 1e-14);
  // With equal series projections every one of the 8 slots has the same value.
  cw.wkv.w.bottomRows(128) = cw.wkv.w.topRows(128);
  const Mat a2 = tok * cw.wkv.w.transpose();
  p = compress_pool_prefill(x, cw);
  EXPECT_LT(max_rel_diff(p.row(1), a2.leftCols(128)), 1e-14);
  EXPECT_LT(max_rel_diff(p.row(0), a2.leftCols(128)), 1e-14);
}

TEST(CompressorPrefill, VisibilityOnlyCompleteBlocks) {
  for (int m : {4, 128}) {
    const CompressorWeights cw = synth(m, 128, 16, CompressorKind::kMain, "vis" + std::to_string(m));
    const RopeTable rope = compress_rope();
    const Mat x = random_mat(2 * m + 1, 16, 1.0, 21);
    const Mat full = compress_prefill(x, cw, rope, kEps, PrecisionPolicy::exact());
    for (std::int64_t T : {std::int64_t{0}, std::int64_t{1}, std::int64_t{m - 1}, std::int64_t{m},
                           std::int64_t{m + 1}, std::int64_t{2 * m - 1}, std::int64_t{2 * m}}) {
      const Mat e = compress_prefill(x.topRows(T), cw, rope, kEps, PrecisionPolicy::exact());
      EXPECT_EQ(e.rows(), T / m) << "m=" << m << " T=" << T;
      // Causality: entry j does not change when later tokens are appended.
      if (e.rows() > 0) {
        EXPECT_EQ(e, full.topRows(e.rows())) << "m=" << m << " T=" << T;
      }
    }
    // Perturbing tokens after block 0 leaves entry 0 untouched; perturbing block 0 does not.
    Mat y = x;
    y.bottomRows(x.rows() - m).array() += 1.0;
    EXPECT_EQ(compress_prefill(y, cw, rope, kEps, PrecisionPolicy::exact()).row(0), full.row(0));
    y = x;
    y(m - 1, 0) += 1.0;
    EXPECT_NE(compress_prefill(y, cw, rope, kEps, PrecisionPolicy::exact()).row(0), full.row(0));
  }
}

TEST(CompressorPrefill, RopePositionIsTheFirstTokenOfTheBlock) {
  for (int m : {4, 128}) {
    const CompressorWeights cw = synth(m, 128, 16, CompressorKind::kMain, "ropepos" + std::to_string(m));
    const RopeTable rope = compress_rope();
    const PrecisionPolicy ex = PrecisionPolicy::exact();
    const Mat x = random_mat(3 * m, 16, 1.0, 31);
    const Mat pooled = compress_pool_prefill(x, cw);
    const Mat e = compress_prefill(x, cw, rope, kEps, ex);
    for (std::int64_t j = 0; j < 3; ++j) {
      const Mat normed = rms_norm(pooled.row(j), cw.norm, kEps, ex);
      const std::vector<std::int64_t> at_start{j * m}, at_end{j * m + m - 1};
      const Mat good = apply_rope(normed, 64, at_start, rope, ex);
      EXPECT_LT(max_rel_diff(e.row(j), good), 1e-15) << "m=" << m << " j=" << j;
      const Mat bad = apply_rope(normed, 64, at_end, rope, ex);
      EXPECT_GT((e.row(j) - bad).cwiseAbs().maxCoeff(), 1e-6) << "m=" << m << " j=" << j;
      // Nope dims untouched by RoPE.
      EXPECT_EQ(e.row(j).leftCols(64), normed.leftCols(64));
    }
  }
}

TEST(CompressorPrefill, IdenticalHcaBlocksDifferOnlyByTheRotationOfMDotOmega) {
  const CompressorWeights cw = synth(128, 128, 16, CompressorKind::kMain, "rot128");
  const RopeTable rope = compress_rope();
  const Mat blk = random_mat(128, 16, 1.0, 41);
  Mat x(256, 16);
  x << blk, blk;
  const Mat e = compress_prefill(x, cw, rope, kEps, PrecisionPolicy::exact());
  const std::vector<std::int64_t> pos{128};
  const Mat rotated = apply_rope(e.row(0), 64, pos, rope, PrecisionPolicy::exact());
  EXPECT_LT(max_rel_diff(e.row(1), rotated), 1e-14);
  EXPECT_EQ(e.row(1).leftCols(64), e.row(0).leftCols(64));
}

// ------------------------------------------------------------------ naive formulation

struct NaiveCase {
  int m;
  CompressorKind kind;
  std::int64_t T;
  const char* tag;
};

TEST(CompressorPrefill, AgreesWithNaiveFormulation) {
  const RopeTable rope = compress_rope();
  for (const NaiveCase& c : {NaiveCase{128, CompressorKind::kMain, 3 * 128 + 7, "naive_hca"},
                             NaiveCase{4, CompressorKind::kMain, 41, "naive_csa"},
                             NaiveCase{4, CompressorKind::kIndexer, 37, "naive_idx"}}) {
    const CompressorWeights cw = synth(c.m, 128, 24, c.kind, c.tag);
    const Mat x = random_mat(c.T, 24, 1.0, derive_seed(c.tag, "x", ""));
    const Mat got = compress_prefill(x, cw, rope, kEps, PrecisionPolicy::exact());
    const Mat want = naive_entries(x, cw, rope);
    ASSERT_EQ(got.rows(), c.T / c.m) << c.tag;
    EXPECT_LT(max_rel_diff(got, want), 1e-12) << c.tag;
  }
}

TEST(CompressorPrefill, SwappedSeriesOrderGivesADifferentResult) {
  // §6.2 pitfall: the previous-block series is the FIRST half of the 2w channels.
  const RopeTable rope = compress_rope();
  const CompressorWeights cw = synth(4, 128, 24, CompressorKind::kMain, "swap");
  const Mat x = random_mat(16, 24, 1.0, 51);
  const Mat got = compress_prefill(x, cw, rope, kEps, PrecisionPolicy::exact());
  const Mat swapped = naive_entries(x, cw, rope, /*swap_series=*/true);
  EXPECT_LT(max_rel_diff(got, naive_entries(x, cw, rope)), 1e-12);
  for (std::int64_t j = 0; j < got.rows(); ++j)
    EXPECT_GT((got.row(j) - swapped.row(j)).cwiseAbs().maxCoeff(), 1e-3) << "entry " << j;
  // Same with the weights' halves swapped (what a loader that mixed up the halves would do).
  CompressorWeights sw = cw;
  sw.wkv.w.topRows(128).swap(sw.wkv.w.bottomRows(128));
  sw.wgate.w.topRows(128).swap(sw.wgate.w.bottomRows(128));
  sw.ape.leftCols(128).swap(sw.ape.rightCols(128));
  const Mat bad = compress_prefill(x, sw, rope, kEps, PrecisionPolicy::exact());
  EXPECT_LT(max_rel_diff(bad, swapped), 1e-12);
  EXPECT_GT((bad - got).cwiseAbs().maxCoeff(), 1e-3);
}

// ------------------------------------------------------------------ decode (§11.2)

void expect_decode_matches_prefill(int m, CompressorKind kind, std::int64_t T_max, const char* tag) {
  const RopeTable rope = compress_rope();
  const PrecisionPolicy ex = PrecisionPolicy::exact();
  const CompressorWeights cw = synth(m, 128, 16, kind, tag);
  const Mat x = random_mat(T_max, 16, 1.0, derive_seed(tag, "x", ""));
  CompressorState st = make_compressor_state(cw);
  Mat decoded(0, 128);
  for (std::int64_t t = 0; t < T_max; ++t) {
    const auto e = compress_decode_step(x.row(t), t, st, cw, rope, kEps, ex);
    ASSERT_EQ(e.has_value(), (t + 1) % m == 0) << tag << " t=" << t;
    if (e) {
      decoded.conservativeResize(decoded.rows() + 1, Eigen::NoChange);
      decoded.row(decoded.rows() - 1) = e->transpose();
    }
    const std::int64_t T = t + 1;
    const Mat pre = compress_prefill(x.topRows(T), cw, rope, kEps, ex);
    ASSERT_EQ(pre.rows(), decoded.rows()) << tag << " T=" << T;
    if (pre.rows() > 0) {
      ASSERT_LT(max_rel_diff(decoded, pre), 1e-13) << tag << " T=" << T;
    }
  }
}

TEST(CompressorDecode, StepByStepEqualsPrefillHca) {
  expect_decode_matches_prefill(128, CompressorKind::kMain, 3 * 128 + 5, "dec_hca");
}

TEST(CompressorDecode, StepByStepEqualsPrefillCsa) {
  expect_decode_matches_prefill(4, CompressorKind::kMain, 37, "dec_csa");
  expect_decode_matches_prefill(4, CompressorKind::kIndexer, 37, "dec_idx");
}

TEST(CompressorDecode, PrefillHandOffThenDecodeEqualsOnePrefill) {
  const RopeTable rope = compress_rope();
  const PrecisionPolicy ex = PrecisionPolicy::exact();
  for (int m : {4, 128}) {
    const std::int64_t total = 2 * m + 3 + (m == 4 ? 9 : 0);
    const CompressorWeights cw = synth(m, 128, 16, CompressorKind::kMain, "handoff" + std::to_string(m));
    const Mat x = random_mat(total, 16, 1.0, 61);
    const Mat one = compress_prefill(x, cw, rope, kEps, ex);
    for (std::int64_t T0 : {std::int64_t{0}, std::int64_t{1}, std::int64_t{3}, std::int64_t{m - 1},
                            std::int64_t{m}, std::int64_t{m + 1}, std::int64_t{2 * m - 1},
                            std::int64_t{2 * m + 1}}) {
      CompressorPrefill pre = compress_prefill_with_state(x.topRows(T0), cw, rope, kEps, ex);
      EXPECT_EQ(pre.state.next_position, T0);
      // The state rows that matter equal those of T0 decode steps from scratch.
      CompressorState ref = make_compressor_state(cw);
      for (std::int64_t t = 0; t < T0; ++t) (void)compress_decode_step(x.row(t), t, ref, cw, rope, kEps, ex);
      const std::int64_t cur = m == 4 ? 4 : 0, part = T0 % m;
      if (part > 0) {
        EXPECT_LT(max_rel_diff(pre.state.kv.middleRows(cur, part), ref.kv.middleRows(cur, part)), 1e-14);
        EXPECT_LT(max_rel_diff(pre.state.score.middleRows(cur, part), ref.score.middleRows(cur, part)), 1e-14);
      }
      if (m == 4 && T0 >= 4) {
        EXPECT_LT(max_rel_diff(pre.state.kv.topRows(4), ref.kv.topRows(4)), 1e-14);
        EXPECT_LT(max_rel_diff(pre.state.score.topRows(4), ref.score.topRows(4)), 1e-14);
      }
      if (m == 4 && T0 < 4) {
        EXPECT_TRUE(std::isinf(pre.state.score(0, 0)) && pre.state.score(0, 0) < 0);
      }
      Mat entries = pre.entries;
      for (std::int64_t t = T0; t < total; ++t) {
        const auto e = compress_decode_step(x.row(t), t, pre.state, cw, rope, kEps, ex);
        if (e) {
          entries.conservativeResize(entries.rows() + 1, Eigen::NoChange);
          entries.row(entries.rows() - 1) = e->transpose();
        }
      }
      ASSERT_EQ(entries.rows(), one.rows()) << "m=" << m << " T0=" << T0;
      EXPECT_LT(max_rel_diff(entries, one), 1e-13) << "m=" << m << " T0=" << T0;
    }
  }
}

TEST(CompressorDecode, InitialStateIsZeroValueMinusInfinityLogit) {
  const CompressorState s = make_compressor_state(synth(4, 128, 16, CompressorKind::kMain, "init"));
  EXPECT_EQ(s.kv.rows(), 8);
  EXPECT_EQ(s.kv.cols(), 256);
  EXPECT_TRUE((s.kv.array() == 0).all());
  EXPECT_TRUE((s.score.array() == -std::numeric_limits<double>::infinity()).all());
  const CompressorState h = make_compressor_state(synth(128, 128, 16, CompressorKind::kMain, "init_h"));
  EXPECT_EQ(h.kv.rows(), 128);
  EXPECT_EQ(h.kv.cols(), 128);
}

// ------------------------------------------------------------------ precision points

TEST(CompressorPolicy, QuantPointsLandOnTheirGrids) {
  const RopeTable rope = compress_rope();
  const Mat x = random_mat(12, 32, 1.0, 71);
  const PrecisionPolicy qat = PrecisionPolicy::qat();
  // Main: nope dims on the Q8(·;64) grid (idempotent), rope dims untouched by Q8.
  const CompressorWeights mw = synth(4, 192, 32, CompressorKind::kMain, "pol_main");
  const Mat eq = compress_prefill(x, mw, rope, kEps, qat);
  const Mat ex = compress_prefill(x, mw, rope, kEps, PrecisionPolicy::exact());
  for (std::int64_t j = 0; j < eq.rows(); ++j) {
    std::vector<double> nope(eq.row(j).data(), eq.row(j).data() + 128), again(128);
    q8_fake_quant(nope, 64, again);
    EXPECT_EQ(nope, again);
    EXPECT_EQ(eq.row(j).rightCols(64), ex.row(j).rightCols(64));
    EXPECT_NE(eq.row(j).leftCols(128), ex.row(j).leftCols(128));
    EXPECT_LT((eq.row(j) - ex.row(j)).cwiseAbs().maxCoeff(), 0.1 * ex.row(j).cwiseAbs().maxCoeff());
  }
  // Indexer: every dim on the Q4(·;32) grid after the Hadamard rotation.
  const CompressorWeights iw = synth(4, 128, 32, CompressorKind::kIndexer, "pol_idx");
  const Mat ki = compress_prefill(x, iw, rope, kEps, qat);
  for (std::int64_t j = 0; j < ki.rows(); ++j) {
    std::vector<double> v(ki.row(j).data(), ki.row(j).data() + 128), again(128);
    q4_fake_quant(v, 32, again);
    EXPECT_EQ(v, again);
  }
  // kBf16Pooled rounds the pooled vector before the norm.
  PrecisionPolicy pooled_only;
  pooled_only.enable(QuantPoint::kBf16Pooled);
  const Mat pooled = compress_pool_prefill(x, mw);
  const Mat ep = compress_prefill(x, mw, rope, kEps, pooled_only);
  for (std::int64_t j = 0; j < ep.rows(); ++j) {
    Vec r = pooled.row(j).transpose();
    for (Eigen::Index i = 0; i < r.size(); ++i) r(i) = fmt::round_bf16(r(i));
    const Vec want = postprocess_entry(r, j, mw, rope, kEps, PrecisionPolicy::exact());
    EXPECT_EQ(ep.row(j), want.transpose());
    EXPECT_NE(ep.row(j), ex.row(j));
  }
}

// kBf16Hadamard (official): OFF's rotate_activation takes and returns bf16, so the indexer key is
// bf16(Had(·)) before Q4. Alone it equals the exact entry rounded to bf16; with Q4 it equals
// Q4(bf16(Had(·))), and there are inputs where that differs from Q4(Had(·)) (double rounding).
TEST(CompressorPolicy, IndexerHadamardOutputIsRoundedToBf16BeforeQ4) {
  const RopeTable rope = compress_rope();
  const Mat x = random_mat(400, 32, 1.0, 73);
  const CompressorWeights iw = synth(4, 128, 32, CompressorKind::kIndexer, "pol_had");
  const Mat ex = compress_prefill(x, iw, rope, kEps, PrecisionPolicy::exact());
  PrecisionPolicy had_only;
  had_only.enable(QuantPoint::kBf16Hadamard);
  const Mat eh = compress_prefill(x, iw, rope, kEps, had_only);
  PrecisionPolicy had_q4 = had_only, q4_only;
  had_q4.enable(QuantPoint::kIdxKQ4);
  q4_only.enable(QuantPoint::kIdxKQ4);
  const Mat ehq = compress_prefill(x, iw, rope, kEps, had_q4);
  const Mat eq = compress_prefill(x, iw, rope, kEps, q4_only);
  std::int64_t differ = 0;
  for (std::int64_t j = 0; j < ex.rows(); ++j) {
    std::vector<double> r(128), q(128);
    for (int i = 0; i < 128; ++i) r[static_cast<std::size_t>(i)] = fmt::round_bf16(ex(j, i));
    for (int i = 0; i < 128; ++i) ASSERT_EQ(eh(j, i), r[static_cast<std::size_t>(i)]) << j << "," << i;
    q4_fake_quant(r, 32, q);
    for (int i = 0; i < 128; ++i) ASSERT_EQ(ehq(j, i), q[static_cast<std::size_t>(i)]) << j << "," << i;
    if (ehq.row(j) != eq.row(j)) ++differ;
  }
  EXPECT_NE(eh, ex);
  // Seen on this input: the bf16 step moves some Q4 codes (a value within bf16 rounding of an
  // e2m1 decision boundary), so the point is observable, not a no-op.
  EXPECT_GT(differ, 0);
  EXPECT_TRUE(PrecisionPolicy::official().on(QuantPoint::kBf16Hadamard));
  EXPECT_FALSE(PrecisionPolicy::qat().on(QuantPoint::kBf16Hadamard));
}

// ------------------------------------------------------------------ errors

TEST(CompressorErrors, BadInputsAreRejectedWithNames) {
  const RopeTable rope = compress_rope();
  const CompressorWeights cw = synth(4, 128, 16, CompressorKind::kMain, "err");
  const PrecisionPolicy ex = PrecisionPolicy::exact();
  try {
    (void)compress_prefill(Mat::Zero(8, 15), cw, rope, kEps, ex);
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("test.err.x"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[8, 16]"), std::string::npos) << e.what();
  }
  Mat bad = Mat::Zero(8, 16);
  bad(3, 2) = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW((void)compress_prefill(bad, cw, rope, kEps, ex), NumericError);
  CompressorState st = make_compressor_state(cw);
  EXPECT_THROW((void)compress_decode_step(Mat::Zero(1, 16), 1, st, cw, rope, kEps, ex), Error);
  EXPECT_THROW((void)compress_decode_step(Mat::Zero(2, 16), 0, st, cw, rope, kEps, ex), ShapeError);
  CompressorState wrong = make_compressor_state(synth(128, 128, 16, CompressorKind::kMain, "err2"));
  EXPECT_THROW((void)compress_decode_step(Mat::Zero(1, 16), 0, wrong, cw, rope, kEps, ex), ShapeError);
  CompressorWeights r8 = cw;
  r8.ratio = 8;
  EXPECT_THROW((void)compress_prefill(Mat::Zero(8, 16), r8, rope, kEps, ex), ConfigError);
  CompressorWeights short_ape = cw;
  short_ape.ape = Mat::Zero(3, 256);
  try {
    (void)compress_prefill(Mat::Zero(8, 16), short_ape, rope, kEps, ex);
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("test.err.ape"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------------ checkpoint loading

TEST(CompressorLoad, LoadsTheLayersOfAGeneratedTinyCheckpoint) {
  const ModelConfig cfg = preset_config("tiny-flash");
  const auto dir = test::unique_temp_path("compressor_ckpt");
  std::filesystem::remove_all(dir);
  make_checkpoint(cfg, dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  // tiny-flash ratios {0, 0, 4, 128, 4, 0}.
  const CompressorWeights csa = load_layer_compressor(ckpt, cfg, 2, CompressorKind::kMain);
  EXPECT_EQ(csa.prefix, "layers.2.attn.compressor.");
  EXPECT_EQ(csa.ratio, 4);
  EXPECT_EQ(csa.wkv.w.rows(), 2 * cfg.head_dim);
  EXPECT_EQ(csa.ape.rows(), 4);
  const CompressorWeights idx = load_layer_compressor(ckpt, cfg, 2, CompressorKind::kIndexer);
  EXPECT_EQ(idx.prefix, "layers.2.attn.indexer.compressor.");
  EXPECT_EQ(idx.width, cfg.index_head_dim);
  const CompressorWeights hca = load_layer_compressor(ckpt, cfg, 3, CompressorKind::kMain);
  EXPECT_EQ(hca.ratio, 128);
  EXPECT_EQ(hca.ape.rows(), 128);
  EXPECT_THROW((void)load_layer_compressor(ckpt, cfg, 0, CompressorKind::kMain), ConfigError);
  EXPECT_THROW((void)load_layer_compressor(ckpt, cfg, 3, CompressorKind::kIndexer), ConfigError);
  EXPECT_THROW((void)load_compressor(ckpt, "layers.2.attn.compressor.", CompressorKind::kMain, 4,
                                     cfg.head_dim + 1, cfg.dim),
               ShapeError);
  // A run on the loaded weights matches the naive formulation.
  const RopeTable rope = rope_table_for(cfg, layer_config(cfg, 2));
  const Mat x = random_mat(13, cfg.dim, 1.0, 81);
  EXPECT_LT(max_rel_diff(compress_prefill(x, csa, rope, cfg.norm_eps, PrecisionPolicy::exact()),
                         naive_entries(x, csa, rope)),
            1e-12);
  EXPECT_EQ(cfg.norm_eps, kEps);  // naive_entries uses kEps
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace v4ref::ref
