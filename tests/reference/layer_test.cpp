// Self-checks of the layer assembly (v4-forward.md §3, §8.0) on the committed tiny checkpoints:
// every layer of tiny-flash ([swa, swa, csa, hca, csa | mtp swa]) and tiny-pro ([hca, hca, csa,
// hca, csa | mtp swa]) at T = 300 (so HCA layers see ⌊300/128⌋ = 2 entries and CSA layers see up
// to 75 entries, more than K_I = 32 / 64: both the "all visible" and the "top-K_I" regimes of the
// indexer occur). Checks: finite output, bitwise causality, HCA/SWA equal to the explicit
// attention_sublayer calls, CSA selections (size, visibility, top-k property), an independent
// per-query assembly, exact vs qat, block_forward vs hand-chained components, errors.
#include "../common/test_support.hpp"
#include "v4ref/ref/layer.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/norm.hpp"

namespace v4ref::ref {
namespace {

constexpr std::int64_t kT = 300;

struct Model {
  ModelConfig cfg;
  Checkpoint ckpt;
};

Model open_model(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "checkpoints" / (name + "-s0");
  return {load_config(dir / "config.json"), Checkpoint::open(dir)};
}

Mat random_mat(std::int64_t r, std::int64_t c, std::uint64_t seed) {
  Rng rng(seed);
  Mat m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = rng.normal();
  return m;
}

std::vector<std::int64_t> random_tokens(std::int64_t n, std::int64_t vocab, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(vocab)));
  return ids;
}

double max_abs(const Mat& m) { return m.size() == 0 ? 0.0 : m.cwiseAbs().maxCoeff(); }

bool bitwise_equal(const Mat& a, const Mat& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Eigen::Index i = 0; i < a.size(); ++i)
    if (std::memcmp(&a.data()[i], &b.data()[i], sizeof(double)) != 0) return false;
  return true;
}

// ---------------------------------------------------------------- independent naive assembly
//
// Per query t, in plain loops: the query of row t alone; the K=V rows of its window recomputed
// from x; the compressed entries recomputed from the prefix x[0 .. V·m) (so visibility follows
// from what exists, not from a visibility rule); for CSA the indexer keys from the same prefix,
// query t's index query / head weights / scores alone, then its top-k; sink attention over the
// explicit key list; de-rotation and output projection of row t alone. Entries are recomputed
// only when V changes (same prefix, same result), which keeps this O(T²/m) compressor work.
struct NaiveResult {
  Mat out;
  std::vector<std::vector<std::int64_t>> selected;
};

NaiveResult naive_attention(const Mat& x, const LayerWeights& w, const ModelConfig& cfg,
                            const LayerConfig& layer, const PrecisionPolicy& pol) {
  const RopeTable table = rope_table_for(cfg, layer);
  const std::int64_t t_n = x.rows(), d_h = cfg.head_dim;
  NaiveResult res;
  res.out.resize(t_n, cfg.dim);
  res.selected.resize(static_cast<std::size_t>(t_n));
  std::int64_t cached_v = -1;
  Mat entries, index_keys;
  for (std::int64_t t = 0; t < t_n; ++t) {
    const std::vector<std::int64_t> pos_t{t};
    const Mat xt = x.row(t);
    const QueryPath qp = attention_query(xt, w.attn, cfg, table, pos_t, pol);
    const WindowRange win = window_range(t, cfg.window_size);
    const Mat kv = attention_kv(x.middleRows(win.first, win.size()), w.attn, cfg, table,
                                position_range(win.first, win.size()), pol);
    std::vector<std::int64_t> sel;
    if (layer.kind != LayerKind::kSwa) {
      const std::int64_t v = (t + 1) / layer.ratio;
      if (v != cached_v) {
        const Mat prefix = x.topRows(v * layer.ratio);
        entries = compress_prefill(prefix, *w.compressor, table, cfg.norm_eps, pol);
        if (layer.kind == LayerKind::kCsa)
          index_keys = compress_prefill(prefix, w.indexer->compressor, table, cfg.norm_eps, pol);
        cached_v = v;
      }
      EXPECT_EQ(entries.rows(), v);
      if (layer.kind == LayerKind::kHca) {
        for (std::int64_t j = 0; j < v; ++j) sel.push_back(j);
      } else {
        const IndexerWeights& iw = *w.indexer;
        const Mat qi = index_queries(qp.c, pos_t, iw, table, pol);
        const Mat wi = index_head_weights(xt, iw, pol);
        const Mat sc = index_scores(qi, wi, index_keys, pos_t, iw.n_heads, iw.head_dim, pol);
        sel = index_topk(std::span<const double>(sc.data(), static_cast<std::size_t>(sc.cols())), t,
                         cfg.index_topk);
      }
    }
    Mat keys(kv.rows() + static_cast<Eigen::Index>(sel.size()), d_h);
    keys.topRows(kv.rows()) = kv;
    for (std::size_t r = 0; r < sel.size(); ++r)
      keys.row(kv.rows() + static_cast<Eigen::Index>(r)) = entries.row(sel[r]);
    const Mat qh = Eigen::Map<const Mat>(qp.q.data(), cfg.n_heads, d_h);
    const Mat oh = sink_attention(qh, keys, w.attn.attn_sink, 1.0 / std::sqrt(static_cast<double>(d_h)), pol);
    const Mat orow = Eigen::Map<const Mat>(oh.data(), 1, cfg.q_dim());
    res.out.row(t) = grouped_output_projection(derotate_output(orow, cfg, table, pos_t, pol), w.attn.wo_a,
                                               w.attn.wo_b, cfg, pol);
    res.selected[static_cast<std::size_t>(t)] = std::move(sel);
  }
  return res;
}

class LayerTest : public ::testing::TestWithParam<std::string> {};

// ------------------------------------------------------------------ attention sub-block

TEST_P(LayerTest, AttentionFiniteCausalAndMatchesNaiveAssembly) {
  const Model m = open_model(GetParam());
  const PrecisionPolicy exact = PrecisionPolicy::exact();
  for (std::int64_t li = 0; li < m.cfg.n_total_layers(); ++li) {
    SCOPED_TRACE(GetParam() + " layer " + std::to_string(li));
    const LayerWeights w = load_layer(m.ckpt, m.cfg, li, ExpertLoading::kCacheAll);
    const Mat x = random_mat(kT, m.cfg.dim, 100 + static_cast<std::uint64_t>(li));
    LayerTrace trace;
    const Mat out = attention_sublayer_prefill(x, w, m.cfg, w.layer, exact, &trace);
    ASSERT_EQ(out.rows(), kT);
    ASSERT_EQ(out.cols(), m.cfg.dim);
    EXPECT_TRUE(out.allFinite());
    EXPECT_GT(max_abs(out), 0.0);
    EXPECT_TRUE(bitwise_equal(trace.at("attn.out"), out));
    EXPECT_EQ(trace.at("attn.q").cols(), m.cfg.q_dim());
    EXPECT_EQ(trace.at("attn.kv").rows(), kT);
    EXPECT_EQ(trace.has("attn.compressed"), w.layer.kind != LayerKind::kSwa);
    EXPECT_EQ(trace.has("attn.topk_idx"), w.layer.kind == LayerKind::kCsa);
    if (w.layer.kind != LayerKind::kSwa) {
      EXPECT_EQ(trace.at("attn.compressed").rows(), kT / w.layer.ratio);
    }

    // Causality: a different input row T−1 leaves rows 0..T−2 bitwise unchanged (same shapes,
    // so the same GEMM blocking) and changes row T−1.
    Mat x2 = x;
    x2.row(kT - 1) = random_mat(1, m.cfg.dim, 999);
    const Mat out2 = attention_sublayer_prefill(x2, w, m.cfg, w.layer, exact);
    EXPECT_TRUE(bitwise_equal(out2.topRows(kT - 1), out.topRows(kT - 1)));
    EXPECT_GT((out2.row(kT - 1) - out.row(kT - 1)).cwiseAbs().maxCoeff(), 1e-6);

    // Independent per-query assembly. Differences come only from GEMM vs per-row evaluation
    // order of the same double sums (~1e-16 relative per op, a few dozen ops deep).
    const NaiveResult nv = naive_attention(x, w, m.cfg, w.layer, exact);
    const double rel = max_abs(nv.out - out) / max_abs(out);
    EXPECT_LT(rel, 1e-12) << "max relative difference to the naive assembly";
    if (w.layer.kind == LayerKind::kCsa) {
      const Mat& idx = trace.at("attn.topk_idx");
      for (std::int64_t t = 0; t < kT; ++t) {
        const auto& s = nv.selected[static_cast<std::size_t>(t)];
        std::vector<std::int64_t> got;
        for (Eigen::Index r = 0; r < idx.cols() && idx(t, r) >= 0; ++r)
          got.push_back(static_cast<std::int64_t>(idx(t, r)));
        ASSERT_EQ(got, s) << "selection of query " << t;
      }
    }
  }
}

TEST_P(LayerTest, HcaAndSwaEqualExplicitAttentionSublayer) {
  const Model m = open_model(GetParam());
  const PrecisionPolicy pol = PrecisionPolicy::qat();
  int checked = 0;
  for (std::int64_t li = 0; li < m.cfg.n_total_layers(); ++li) {
    SCOPED_TRACE(GetParam() + " layer " + std::to_string(li));
    const LayerWeights w = load_layer(m.ckpt, m.cfg, li, ExpertLoading::kCacheAll);
    if (w.layer.kind == LayerKind::kCsa) continue;
    const Mat x = random_mat(kT, m.cfg.dim, 200 + static_cast<std::uint64_t>(li));
    const Mat out = attention_sublayer_prefill(x, w, m.cfg, w.layer, pol);
    Mat expect;
    if (w.layer.kind == LayerKind::kSwa) {
      expect = attention_sublayer_swa(x, w.attn, m.cfg, w.layer, pol);
    } else {
      const RopeTable table = rope_table_for(m.cfg, w.layer);
      const Mat entries = compress_prefill(x, *w.compressor, table, m.cfg.norm_eps, pol);
      ASSERT_EQ(entries.rows(), kT / 128);
      const auto sel = all_visible_selections(0, kT, 128);
      expect = attention_sublayer(x, w.attn, m.cfg, w.layer, entries, sel, pol);
      // The compressed keys matter: without them the result is different.
      const Mat none(0, m.cfg.head_dim);
      const Mat window_only = attention_sublayer(x, w.attn, m.cfg, w.layer, none, {}, pol);
      EXPECT_GT(max_abs(window_only.bottomRows(kT - 127) - out.bottomRows(kT - 127)), 1e-8);
      EXPECT_TRUE(bitwise_equal(window_only.topRows(127), out.topRows(127)))
          << "no entry is visible before t = 127";
    }
    EXPECT_TRUE(bitwise_equal(out, expect));
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

TEST_P(LayerTest, CsaSelectionsRespectVisibilityAndSize) {
  const Model m = open_model(GetParam());
  const std::int64_t k_i = m.cfg.index_topk;
  int csa = 0;
  for (const auto& pol : {PrecisionPolicy::exact(), PrecisionPolicy::qat(), PrecisionPolicy::official()}) {
    for (std::int64_t li = 0; li < m.cfg.n_layers; ++li) {
      if (layer_config(m.cfg, li).kind != LayerKind::kCsa) continue;
      SCOPED_TRACE(GetParam() + " layer " + std::to_string(li) + " policy " + pol.describe());
      ++csa;
      const LayerWeights w = load_layer(m.ckpt, m.cfg, li, ExpertLoading::kCacheAll);
      const Mat x = random_mat(kT, m.cfg.dim, 300 + static_cast<std::uint64_t>(li));
      LayerTrace trace;
      attention_sublayer_prefill(x, w, m.cfg, w.layer, pol, &trace);
      const Mat& idx = trace.at("attn.topk_idx");
      const Mat& scores = trace.at("attn.index_scores");
      ASSERT_EQ(idx.rows(), kT);
      ASSERT_EQ(idx.cols(), k_i);
      ASSERT_EQ(scores.cols(), kT / 4);
      bool saw_truncated = false;
      for (std::int64_t t = 0; t < kT; ++t) {
        const std::int64_t v = (t + 1) / 4;
        const std::int64_t k_t = std::min(k_i, v);
        saw_truncated = saw_truncated || k_t < v;
        std::set<std::int64_t> chosen;
        for (std::int64_t r = 0; r < k_i; ++r) {
          const double e = idx(t, r);
          if (r < k_t) {
            ASSERT_GE(e, 0.0) << "t " << t << " rank " << r;
            ASSERT_LT(e, static_cast<double>(v)) << "t " << t << " selects an invisible entry";
            ASSERT_TRUE(chosen.insert(static_cast<std::int64_t>(e)).second) << "duplicate at t " << t;
          } else {
            ASSERT_EQ(e, -1.0) << "t " << t << " rank " << r << " should be padding";
          }
        }
        // Top-k property: no unselected visible entry scores higher than a selected one.
        double min_sel = std::numeric_limits<double>::infinity();
        for (const std::int64_t j : chosen) min_sel = std::min(min_sel, scores(t, j));
        for (std::int64_t j = 0; j < v; ++j)
          if (!chosen.count(j)) {
            ASSERT_LE(scores(t, j), min_sel) << "t " << t << " entry " << j;
          }
      }
      EXPECT_TRUE(saw_truncated) << "T too small to reach the K_I cap";
    }
  }
  EXPECT_GE(csa, 6);  // 2 CSA layers × 3 policies
}

// Exact vs qat (relative Frobenius difference of the sub-block output). qat adds Q8(·;128) on the
// inputs of the fp8 linears (wq_a, wq_b, wkv, wo_b, indexer wq_b), Q8(·;64) on the KV and
// compressed nope dims and Q4(·;32) on the indexer queries/keys. e4m3 keeps 3 mantissa bits: a
// round-to-nearest error is uniform in ±ulp/2 with ulp between 2^-4 and 2^-3 of the value, so its
// relative RMS is between 2^-5/√3 ≈ 1.8% and 2^-4/√3 ≈ 3.6% (≈ 2.6% averaged over the binade).
// In a dot product with weights independent of the rounding, the errors of the elements add in
// quadrature, so a linear's output moves by that same relative RMS. Three points act directly on
// the output (wkv input → values, the KV nope Q8 on 448/512 of the value dims, wo_b input), the
// query-side ones only through the softmax (damped): √3 · 2.6% ≈ 4.5%, plus the damped part,
// gives 5–7%; CSA layers add changed top-k selections (Q4 on the index scores). Hence the bound
// 1e-1; measured on these checkpoints 0.056–0.060 (SWA/HCA, CSA of tiny-pro) and 0.087–0.090
// (CSA of tiny-flash). The lower bound 1e-4 is far below any single Q8 point (~1e-2) and
// catches a policy that does not reach the components.
// QAT vs exact on the attention sub-block, gated by first-order error addition rather than a
// fixed number: with δ_p the relative change (Frobenius) from enabling fake-quant point p alone,
// the change from all points together is, to first order, at most Σ_p δ_p (triangle inequality on
// the linearised map); the second-order remainder is bounded by (Σ δ_p)² (each δ_p ≪ 1). Each δ_p
// itself is one rounding stage: e4m3/e2m1 RNE moves an element by at most 2^-4 / 2^-2 of its
// magnitude, so δ_p ≤ 2^-4 · g_p (Q8) with g_p the sub-block's gain from that stage to the output;
// the test asserts g_p ≤ 2 for the Q8 points (the softmax and the norms do not amplify relative
// errors much on these weights; a wrong block size or scale exponent gives g_p ≫ 2). Q4 points
// act only through the top-k selection (indexer keys and queries never reach the output), so they
// are bounded by the sum rule alone. Measured on tiny-flash / tiny-pro: act_q8 0.052–0.065
// (g ≈ 1.0), kv_window_q8 0.019–0.024, ckv_q8 ≤ 0.010, the Q4 points up to 0.065 through changed
// selections; all together 0.056–0.090 against sums of 0.08–0.21.
TEST_P(LayerTest, ExactAndQatDifferButStayClose) {
  const Model m = open_model(GetParam());
  const QuantPoint q8_points[] = {QuantPoint::kActQ8, QuantPoint::kKvWindowQ8, QuantPoint::kCkvQ8};
  const QuantPoint q4_points[] = {QuantPoint::kIdxQQ4, QuantPoint::kIdxKQ4};
  for (std::int64_t li = 0; li < m.cfg.n_total_layers(); ++li) {
    SCOPED_TRACE(GetParam() + " layer " + std::to_string(li));
    const LayerWeights w = load_layer(m.ckpt, m.cfg, li, ExpertLoading::kCacheAll);
    const Mat x = random_mat(kT, m.cfg.dim, 400 + static_cast<std::uint64_t>(li));
    const Mat a = attention_sublayer_prefill(x, w, m.cfg, w.layer, PrecisionPolicy::exact());
    const auto rel_to_exact = [&](const PrecisionPolicy& pol) {
      return (a - attention_sublayer_prefill(x, w, m.cfg, w.layer, pol)).norm() / a.norm();
    };
    const double all = rel_to_exact(PrecisionPolicy::qat());
    double sum = 0;
    std::string parts;
    for (const QuantPoint p : q8_points) {
      const double d = rel_to_exact(PrecisionPolicy().enable(p));
      EXPECT_LE(d, 2.0 * 0x1p-4) << quant_point_name(p) << ": gain above 2 from one Q8 stage";
      if (p != QuantPoint::kCkvQ8) {
        EXPECT_GT(d, 1e-3) << quant_point_name(p) << " had no effect";
      }
      sum += d;
      parts += " " + std::string(quant_point_name(p)) + "=" + std::to_string(d);
    }
    for (const QuantPoint p : q4_points) {
      const double d = rel_to_exact(PrecisionPolicy().enable(p));
      sum += d;
      parts += " " + std::string(quant_point_name(p)) + "=" + std::to_string(d);
    }
    EXPECT_GT(all, 1e-4);
    EXPECT_LE(all, sum + sum * sum) << "all " << all << " vs" << parts;
    RecordProperty("qat_rel_" + std::to_string(li), std::to_string(all) + " (sum of single points " +
                                                        std::to_string(sum) + ")");
    std::printf("layer %lld qat %.4f, single points%s\n", static_cast<long long>(li), all, parts.c_str());
  }
}

// ------------------------------------------------------------------ whole block

TEST_P(LayerTest, BlockForwardEqualsHandChainedComponents) {
  const Model m = open_model(GetParam());
  const PrecisionPolicy pol = PrecisionPolicy::official();
  for (std::int64_t li = 0; li < m.cfg.n_total_layers(); ++li) {
    SCOPED_TRACE(GetParam() + " layer " + std::to_string(li));
    const LayerWeights w = load_layer(m.ckpt, m.cfg, li, ExpertLoading::kCacheAll);
    const LayerConfig& lc = w.layer;
    const Mat X = random_mat(kT, m.cfg.hc_dim(), 500 + static_cast<std::uint64_t>(li));
    const std::vector<std::int64_t> ids = random_tokens(kT, m.cfg.vocab_size, 600 + static_cast<std::uint64_t>(li));
    LayerTrace trace;
    const Mat got = block_forward(X, ids, w, m.cfg, lc, pol, &trace);

    // Hand chain (§3) with the attention sub-block built from attention_sublayer directly.
    const HcPreResult pa = hc_pre(X, w.hc_attn, m.cfg, pol);
    const Mat xa = rms_norm(pa.u, w.attn_norm, m.cfg.norm_eps, pol);
    const RopeTable table = rope_table_for(m.cfg, lc);
    Mat entries(0, m.cfg.head_dim);
    std::vector<std::vector<std::int64_t>> sel;
    if (lc.kind != LayerKind::kSwa) entries = compress_prefill(xa, *w.compressor, table, m.cfg.norm_eps, pol);
    if (lc.kind == LayerKind::kHca) sel = all_visible_selections(0, kT, lc.ratio);
    if (lc.kind == LayerKind::kCsa) {
      const std::vector<std::int64_t> pos = position_range(0, kT);
      const QueryPath qp = attention_query(xa, w.attn, m.cfg, table, pos, pol);
      sel = indexer_prefill(xa, qp.c, *w.indexer, table, m.cfg.norm_eps, m.cfg.index_topk, pol).topk;
    }
    const Mat a = attention_sublayer(xa, w.attn, m.cfg, lc, entries, sel, pol);
    const Mat x1 = hc_post(a, X, pa.mix, m.cfg.hc_mult, pol);
    const HcPreResult pf = hc_pre(x1, w.hc_ffn, m.cfg, pol);
    const Mat z = rms_norm(pf.u, w.ffn_norm, m.cfg.norm_eps, pol);
    const Mat f = moe_forward(z, ids, w.moe, pol);
    const Mat expect = hc_post(f, x1, pf.mix, m.cfg.hc_mult, pol);

    EXPECT_TRUE(bitwise_equal(got, expect));
    EXPECT_TRUE(got.allFinite());
    EXPECT_GT(max_abs(got - X), 1e-6) << "the block must change the streams";
    EXPECT_TRUE(bitwise_equal(trace.at("block.out"), got));
    EXPECT_TRUE(bitwise_equal(trace.at("hc_attn.out"), x1));
    EXPECT_TRUE(bitwise_equal(trace.at("attn_norm"), xa));
    EXPECT_TRUE(bitwise_equal(trace.at("ffn.out"), f));
    EXPECT_TRUE(bitwise_equal(trace.at("attn.out"), a));
    const Mat& comb = trace.at("hc_attn.comb");
    ASSERT_EQ(comb.cols(), m.cfg.hc_mult * m.cfg.hc_mult);
    EXPECT_EQ(comb(kT - 1, 1), pa.mix.back().comb(0, 1));
    EXPECT_EQ(trace.at("hc_ffn.pre")(3, 2), pf.mix[3].pre(2));

    // Causality of the whole block: a different stream row and token id at T−1.
    Mat X2 = X;
    X2.row(kT - 1) = random_mat(1, m.cfg.hc_dim(), 4242);
    std::vector<std::int64_t> ids2 = ids;
    ids2.back() = (ids.back() + 7) % m.cfg.vocab_size;
    const Mat got2 = block_forward(X2, ids2, w, m.cfg, lc, pol);
    EXPECT_TRUE(bitwise_equal(got2.topRows(kT - 1), got.topRows(kT - 1)));
    EXPECT_FALSE(bitwise_equal(got2.bottomRows(1), got.bottomRows(1)));
  }
}

TEST_P(LayerTest, Errors) {
  const Model m = open_model(GetParam());
  const LayerWeights w2 = load_layer(m.ckpt, m.cfg, 2, ExpertLoading::kOnDemand);
  const PrecisionPolicy pol = PrecisionPolicy::exact();
  const Mat x = random_mat(8, m.cfg.dim, 1);
  EXPECT_THROW(attention_sublayer_prefill(x, w2, m.cfg, layer_config(m.cfg, 3), pol), ConfigError);
  EXPECT_THROW(attention_sublayer_prefill(random_mat(8, m.cfg.dim + 1, 1), w2, m.cfg, w2.layer, pol),
               ShapeError);
  LayerWeights no_indexer = w2;
  no_indexer.indexer.reset();
  EXPECT_THROW(attention_sublayer_prefill(x, no_indexer, m.cfg, w2.layer, pol), ConfigError);
  const Mat X = random_mat(8, m.cfg.hc_dim(), 2);
  const std::vector<std::int64_t> ids(7, 0);
  EXPECT_THROW(block_forward(X, ids, w2, m.cfg, w2.layer, pol), ShapeError);
  EXPECT_THROW(block_forward(x, std::vector<std::int64_t>(8, 0), w2, m.cfg, w2.layer, pol), ShapeError);
  EXPECT_THROW(load_layer(m.ckpt, m.cfg, m.cfg.n_total_layers()), ConfigError);
  LayerTrace empty;
  EXPECT_THROW(empty.at("attn.q"), Error);
  // Short sequences (fewer tokens than one block) work and select nothing.
  LayerTrace tr;
  const Mat short_out = attention_sublayer_prefill(random_mat(3, m.cfg.dim, 3), w2, m.cfg, w2.layer, pol, &tr);
  EXPECT_TRUE(short_out.allFinite());
  EXPECT_EQ(tr.at("attn.compressed").rows(), 0);
  EXPECT_EQ(tr.at("attn.topk_idx")(2, 0), -1.0);
}

INSTANTIATE_TEST_SUITE_P(TinyCheckpoints, LayerTest, ::testing::Values("tiny-flash", "tiny-pro"), test::param_name);

}  // namespace
}  // namespace v4ref::ref
