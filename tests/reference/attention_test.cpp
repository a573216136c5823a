// Attention sub-block (v4-forward.md §5, §8; verification.md §14): sink softmax identities, key
// sets and window boundaries, causality, de-rotation, grouped projection, KV Q8 size, a naive
// end-to-end formulation, loading and errors.
#include "v4ref/ref/attention.hpp"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <complex>
#include <filesystem>
#include <limits>
#include <random>

#include "v4ref/ref/checkpoint_gen.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/norm.hpp"
#include "../common/test_support.hpp"

namespace v4ref::ref {
namespace {

const PrecisionPolicy kExact = PrecisionPolicy::exact();

using test::random_mat;

// A small V4-shaped config: 4 heads of 128 (r = 64, nope 64), 2 output groups, window 4. Every
// Q8 linear input width (d, L_q, G·R_o) is a multiple of the 128-wide activation blocks.
ModelConfig small_cfg() {
  ModelConfig c;
  c.name = "attn-test";
  c.dim = 128;
  c.n_heads = 4;
  c.head_dim = 128;
  c.rope_head_dim = 64;
  c.q_lora_rank = 128;
  c.o_groups = 2;
  c.o_lora_rank = 64;
  c.window_size = 4;
  c.max_position_embeddings = 4096;
  c.norm_eps = 1e-6;
  c.n_layers = 1;
  c.n_mtp_layers = 0;
  c.compress_ratios = {0};
  return c;
}

LinearWeight lw(const std::string& name, Eigen::Index out, Eigen::Index in, std::uint64_t seed,
                bool act_q8) {
  LinearWeight w;
  w.name = name;
  w.w = random_mat(out, in, seed, 1.0 / std::sqrt(static_cast<double>(in)));
  w.storage = act_q8 ? WeightStorage::kFp8 : WeightStorage::kBf16;
  w.act_q8 = act_q8;
  return w;
}

AttentionWeights random_weights(const ModelConfig& c, std::uint64_t seed) {
  AttentionWeights w;
  w.prefix = "layers.0.attn";
  w.wq_a = lw("layers.0.attn.wq_a", c.q_lora_rank, c.dim, seed + 1, true);
  w.q_norm = (Vec::Ones(c.q_lora_rank) + 0.1 * random_mat(c.q_lora_rank, 1, seed + 2).col(0));
  w.wq_b = lw("layers.0.attn.wq_b", c.q_dim(), c.q_lora_rank, seed + 3, true);
  w.wkv = lw("layers.0.attn.wkv", c.head_dim, c.dim, seed + 4, true);
  w.kv_norm = (Vec::Ones(c.head_dim) + 0.1 * random_mat(c.head_dim, 1, seed + 5).col(0));
  w.wo_a = lw("layers.0.attn.wo_a", c.o_dim(), c.group_in_dim(), seed + 6, false);
  w.wo_b = lw("layers.0.attn.wo_b", c.dim, c.o_dim(), seed + 7, true);
  w.attn_sink = random_mat(c.n_heads, 1, seed + 8).col(0);
  return w;
}

// ---------------------------------------------------------------- naive formulation (exact)

using LD = long double;

std::vector<LD> naive_rmsnorm(const std::vector<LD>& x, const Vec* w, double eps) {
  LD s = 0;
  for (std::size_t i = x.size(); i-- > 0;) s += x[i] * x[i];
  const LD r = std::sqrt(s / static_cast<LD>(x.size()) + eps);
  std::vector<LD> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = (w ? (*w)(static_cast<Eigen::Index>(i)) : 1.0) * x[i] / r;
  return y;
}

std::vector<LD> naive_matvec(const Mat& w, const std::vector<LD>& x) {
  std::vector<LD> y(static_cast<std::size_t>(w.rows()), 0);
  for (Eigen::Index o = 0; o < w.rows(); ++o)
    for (Eigen::Index i = w.cols(); i-- > 0;) y[static_cast<std::size_t>(o)] += w(o, i) * x[static_cast<std::size_t>(i)];
  return y;
}

// Rotate the r dims at `off` by angle sign·p·ω_j as complex multiplication.
void naive_rope(std::vector<LD>& v, std::size_t off, std::int64_t p, const RopeTable& t, int sign) {
  for (std::size_t j = 0; j < t.omega.size(); ++j) {
    const std::complex<LD> z(v[off + 2 * j], v[off + 2 * j + 1]);
    const auto r = z * std::polar(LD{1}, sign * static_cast<LD>(p) * t.omega[j]);
    v[off + 2 * j] = r.real();
    v[off + 2 * j + 1] = r.imag();
  }
}

// The whole sub-block for an SWA layer, token by token, with explicitly listed compressed keys.
Mat naive_sublayer(const Mat& x, const AttentionWeights& w, const ModelConfig& c, const RopeTable& t,
                   const Mat& compressed, const std::vector<std::vector<std::int64_t>>& sel) {
  const auto T = x.rows();
  const std::size_t D = static_cast<std::size_t>(c.head_dim), H = static_cast<std::size_t>(c.n_heads);
  const std::size_t r = static_cast<std::size_t>(c.rope_head_dim);
  std::vector<std::vector<LD>> kv(static_cast<std::size_t>(T));
  for (Eigen::Index s = 0; s < T; ++s) {
    std::vector<LD> xs(x.row(s).data(), x.row(s).data() + x.cols());
    kv[static_cast<std::size_t>(s)] = naive_rmsnorm(naive_matvec(w.wkv.w, xs), &w.kv_norm, c.norm_eps);
    naive_rope(kv[static_cast<std::size_t>(s)], D - r, s, t, +1);
  }
  Mat out(T, c.dim);
  for (Eigen::Index ti = 0; ti < T; ++ti) {
    std::vector<LD> xt(x.row(ti).data(), x.row(ti).data() + x.cols());
    const auto cq = naive_rmsnorm(naive_matvec(w.wq_a.w, xt), &w.q_norm, c.norm_eps);
    const auto q = naive_matvec(w.wq_b.w, cq);
    std::vector<const LD*> keys;
    std::vector<std::vector<LD>> comp_keys;
    for (Eigen::Index s = 0; s <= ti; ++s)
      if (ti - s < c.window_size) keys.push_back(kv[static_cast<std::size_t>(s)].data());
    if (!sel.empty())
      for (const auto j : sel[static_cast<std::size_t>(ti)])
        comp_keys.emplace_back(compressed.row(j).data(), compressed.row(j).data() + D);
    for (const auto& k : comp_keys) keys.push_back(k.data());
    std::vector<LD> o(H * D, 0);
    for (std::size_t h = 0; h < H; ++h) {
      std::vector<LD> qh(q.begin() + static_cast<std::ptrdiff_t>(h * D), q.begin() + static_cast<std::ptrdiff_t>((h + 1) * D));
      qh = naive_rmsnorm(qh, nullptr, c.norm_eps);
      naive_rope(qh, D - r, ti, t, +1);
      // softmax with the sink as an extra logit column, dropped after normalisation (the HF form)
      std::vector<LD> logit;
      for (const LD* k : keys) {
        LD s = 0;
        for (std::size_t i = 0; i < D; ++i) s += qh[i] * k[i];
        logit.push_back(s / std::sqrt(static_cast<LD>(D)));
      }
      logit.push_back(w.attn_sink(static_cast<Eigen::Index>(h)));
      LD mx = -std::numeric_limits<LD>::infinity();
      for (const LD l : logit) mx = std::max(mx, l);
      LD z = 0;
      for (const LD l : logit) z += std::exp(l - mx);
      for (std::size_t s = 0; s < keys.size(); ++s)
        for (std::size_t i = 0; i < D; ++i) o[h * D + i] += std::exp(logit[s] - mx) / z * keys[s][i];
      naive_rope(o, h * D + D - r, ti, t, -1);  // de-rotate by −t·ω
    }
    // grouped projection: y[g·R_o + j] = Σ_{i < H·D/G} wo_a[g·R_o + j][i] · o[g·H·D/G + i]
    const std::size_t gin = static_cast<std::size_t>(c.group_in_dim()), ro = static_cast<std::size_t>(c.o_lora_rank);
    std::vector<LD> y(static_cast<std::size_t>(c.o_dim()), 0);
    for (std::size_t g = 0; g < static_cast<std::size_t>(c.o_groups); ++g)
      for (std::size_t j = 0; j < ro; ++j)
        for (std::size_t i = 0; i < gin; ++i)
          y[g * ro + j] += w.wo_a.w(static_cast<Eigen::Index>(g * ro + j), static_cast<Eigen::Index>(i)) * o[g * gin + i];
    const auto a = naive_matvec(w.wo_b.w, y);
    for (Eigen::Index i = 0; i < c.dim; ++i) out(ti, i) = static_cast<double>(a[static_cast<std::size_t>(i)]);
  }
  return out;
}

double max_rel(const Mat& a, const Mat& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(1e-300, b.cwiseAbs().maxCoeff());
}

// ---------------------------------------------------------------- sink softmax

TEST(AttentionHand, SingleKeyIsKeyTimesSigmoid) {
  // D = 4, scale 1/2; q = [2, 0, 0, 0], κ = [3, 1, 0, 0]: ℓ = 3; sink 3 -> σ(0) = 1/2.
  Mat q(1, 4), k(1, 4);
  q << 2, 0, 0, 0;
  k << 3, 1, 0, 0;
  const Vec sink = Vec::Constant(1, 3.0);
  const Mat o = sink_attention(q, k, sink, 0.5, kExact);
  EXPECT_DOUBLE_EQ(o(0, 0), 1.5);
  EXPECT_DOUBLE_EQ(o(0, 1), 0.5);
  EXPECT_EQ(o(0, 2), 0.0);
  // Random heads: o_h = κ · σ(ℓ_h − sink_h).
  const Mat qh = random_mat(4, 128, 1), kk = random_mat(1, 128, 2);
  const Vec s = random_mat(4, 1, 3).col(0);
  const double sc = 1 / std::sqrt(128.0);
  const Mat oh = sink_attention(qh, kk, s, sc, kExact);
  for (int h = 0; h < 4; ++h) {
    const double l = qh.row(h).dot(kk.row(0)) * sc;
    const double sig = 1 / (1 + std::exp(-(l - s(h))));
    for (int i = 0; i < 128; ++i) EXPECT_NEAR(oh(h, i), kk(0, i) * sig, 1e-15 * (1 + std::fabs(kk(0, i))));
  }
}

TEST(AttentionProperty, SinkWeightsSumBelowOne) {
  const Mat q = random_mat(4, 128, 4), k = random_mat(9, 128, 5);
  const Vec s = random_mat(4, 1, 6).col(0);
  const double sc = 1 / std::sqrt(128.0);
  const Mat p = sink_attention_weights(q, k, s, sc);
  for (int h = 0; h < 4; ++h) {
    const double sum = p.row(h).sum();
    EXPECT_LT(sum, 1.0);
    EXPECT_GT(p.row(h).minCoeff(), 0.0);
    // 1 − Σ p = e^{sink} / (Σ e^ℓ + e^{sink})
    long double z = std::exp(static_cast<long double>(s(h)));
    for (int j = 0; j < 9; ++j) z += std::exp(static_cast<long double>(q.row(h).dot(k.row(j)) * sc));
    EXPECT_NEAR(1.0 - sum, static_cast<double>(std::exp(static_cast<long double>(s(h))) / z), 1e-14);
  }
  // A very negative sink -> plain softmax (sum 1); a huge sink -> weights vanish.
  EXPECT_NEAR(sink_attention_weights(q, k, Vec::Constant(4, -1e4), sc).row(0).sum(), 1.0, 1e-15);
  EXPECT_LT(sink_attention_weights(q, k, Vec::Constant(4, 60.0), sc).row(0).sum(), 1e-20);
}

TEST(AttentionProperty, NoKeysGivesZero) {
  const Mat q = random_mat(4, 128, 7);
  const Mat o = sink_attention(q, Mat(0, 128), Vec::Ones(4), 0.1, PrecisionPolicy::official());
  EXPECT_EQ(o.rows(), 4);
  EXPECT_EQ(o.cwiseAbs().maxCoeff(), 0.0);
  EXPECT_EQ(sink_attention_weights(q, Mat(0, 128), Vec::Ones(4), 0.1).cols(), 0);
}

TEST(AttentionProperty, LargeLogitsStable) {
  // Logits of order 1e4: max subtraction keeps the result finite and exact.
  Mat q(1, 4), k(2, 4);
  q << 1e4, 0, 0, 0;
  k << 2, 0, 0, 0, 1, 0, 0, 1;
  const Mat o = sink_attention(q, k, Vec::Constant(1, 0.0), 1.0, kExact);
  EXPECT_DOUBLE_EQ(o(0, 0), 2.0);
  EXPECT_EQ(o(0, 3), 0.0);
}

// ---------------------------------------------------------------- key sets

TEST(AttentionKeys, WindowRangesAndVisibility) {
  EXPECT_EQ(window_range(0, 128).first, 0);
  EXPECT_EQ(window_range(127, 128).first, 0);
  EXPECT_EQ(window_range(127, 128).size(), 128);
  EXPECT_EQ(window_range(128, 128).first, 1);
  EXPECT_EQ(window_range(129, 128).first, 2);
  EXPECT_EQ(window_range(129, 128).last, 129);
  EXPECT_EQ(visible_entries(2, 4), 0);
  EXPECT_EQ(visible_entries(3, 4), 1);
  EXPECT_EQ(visible_entries(126, 128), 0);
  EXPECT_EQ(visible_entries(127, 128), 1);
  const auto sel = all_visible_selections(6, 3, 4);  // t = 6, 7, 8
  ASSERT_EQ(sel.size(), 3u);
  EXPECT_EQ(sel[0], std::vector<std::int64_t>{0});
  EXPECT_EQ(sel[1], (std::vector<std::int64_t>{0, 1}));
  EXPECT_EQ(sel[2], (std::vector<std::int64_t>{0, 1}));
  EXPECT_THROW(window_range(-1, 4), ShapeError);
}

TEST(AttentionKeys, WindowBoundaryByPerturbation) {
  const ModelConfig c = small_cfg();  // n_win = 4
  const Mat q = random_mat(8, c.q_dim(), 10), kv = random_mat(8, c.head_dim, 11);
  const Vec sink = random_mat(4, 1, 12).col(0);
  const Mat none(0, c.head_dim);
  const Mat o = attention_core(q, kv, none, {}, sink, 0, c, kExact);
  for (const std::int64_t t : {3, 4, 5}) {  // n_win − 1, n_win, n_win + 1
    const std::int64_t first = std::max<std::int64_t>(0, t - c.window_size + 1);
    EXPECT_EQ(first, t - 3 < 0 ? 0 : t - 3);
    for (std::int64_t s = 0; s < 8; ++s) {
      Mat kv2 = kv;
      kv2.row(s) *= 1.5;
      const Mat o2 = attention_core(q, kv2, none, {}, sink, 0, c, kExact);
      const bool in_window = s >= first && s <= t;
      if (in_window) {
        EXPECT_GT((o2.row(t) - o.row(t)).cwiseAbs().maxCoeff(), 1e-6) << "t " << t << " s " << s;
      } else {
        EXPECT_EQ((o2.row(t) - o.row(t)).cwiseAbs().maxCoeff(), 0.0) << "t " << t << " s " << s;
      }
    }
  }
}

// HCA-like inputs: ratio m = 2, every visible entry selected, a window covering everything.
struct AllVisibleInputs {
  ModelConfig c = small_cfg();
  std::int64_t T = 7;
  Mat q, kv, comp;
  Vec sink;
  std::vector<std::vector<std::int64_t>> sel;
  AllVisibleInputs() {
    c.window_size = 64;
    q = random_mat(T, c.q_dim(), 20);
    kv = random_mat(T, c.head_dim, 21);
    comp = random_mat(3, c.head_dim, 22);
    sink = random_mat(4, 1, 23).col(0);
    sel = all_visible_selections(0, T, 2);
  }
};

TEST(AttentionKeys, AllVisibleEqualsNaiveSinkSoftmax) {
  // Compare with the naive per-query softmax over the explicit concatenated key list.
  const AllVisibleInputs in;
  const ModelConfig& c = in.c;
  const std::int64_t T = in.T;
  const Mat &q = in.q, &kv = in.kv, &comp = in.comp;
  const Vec& sink = in.sink;
  const auto& sel = in.sel;
  const Mat o = attention_core(q, kv, comp, sel, sink, 0, c, kExact);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t h = 0; h < 4; ++h) {
      std::vector<const double*> keys;
      for (std::int64_t s = 0; s <= t; ++s) keys.push_back(kv.row(s).data());
      for (std::int64_t j = 0; j < (t + 1) / 2; ++j) keys.push_back(comp.row(j).data());
      std::vector<LD> l;
      for (const double* k : keys) {
        LD d = 0;
        for (int i = 0; i < 128; ++i) d += static_cast<LD>(q(t, h * 128 + i)) * k[i];
        l.push_back(d / std::sqrt(LD{128}));
      }
      LD z = std::exp(static_cast<LD>(sink(h)));
      for (const LD v : l) z += std::exp(v);
      for (int i = 0; i < 128; i += 7) {
        LD e = 0;
        for (std::size_t s = 0; s < keys.size(); ++s) e += std::exp(l[s]) / z * keys[s][i];
        EXPECT_NEAR(o(t, h * 128 + i), static_cast<double>(e), 1e-13) << t << " " << h << " " << i;
      }
    }
  // Padding −1 entries are skipped; an empty list equals no compressed keys.
  std::vector<std::vector<std::int64_t>> padded = sel;
  for (auto& s : padded) s.push_back(-1);
  EXPECT_EQ((attention_core(q, kv, comp, padded, sink, 0, c, kExact) - o).cwiseAbs().maxCoeff(), 0.0);
}

TEST(AttentionKeys, LseIsTheLogOfTheNaiveDenominator) {
  // The same HCA-like lists as above: lse(t, h) = ln(Σ_s e^{ℓ_s} + e^{sink_h}) in long double;
  // a sink 800 above every logit (e^{800} overflows a double) still gives a finite lse ≈ sink.
  const AllVisibleInputs in;
  const ModelConfig& c = in.c;
  const std::int64_t T = in.T;
  const Mat &q = in.q, &kv = in.kv, &comp = in.comp;
  Vec sink = in.sink;
  const auto& sel = in.sel;
  const Mat lse = attention_lse(q, kv, comp, sel, sink, 0, c);
  ASSERT_EQ(lse.rows(), T);
  ASSERT_EQ(lse.cols(), 4);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t h = 0; h < 4; ++h) {
      LD z = std::exp(static_cast<LD>(sink(h)));
      const auto add_key = [&](const double* k) {
        LD d = 0;
        for (int i = 0; i < 128; ++i) d += static_cast<LD>(q(t, h * 128 + i)) * k[i];
        z += std::exp(d / std::sqrt(LD{128}));
      };
      for (std::int64_t s = 0; s <= t; ++s) add_key(kv.row(s).data());
      for (std::int64_t j = 0; j < (t + 1) / 2; ++j) add_key(comp.row(j).data());
      EXPECT_NEAR(lse(t, h), static_cast<double>(std::log(z)), 1e-13) << t << " " << h;
    }
  sink(1) = 800.0;
  const Mat big = attention_lse(q, kv, comp, sel, sink, 0, c);
  for (std::int64_t t = 0; t < T; ++t) EXPECT_NEAR(big(t, 1), 800.0, 1e-12) << t;
  std::vector<std::vector<std::int64_t>> bad = sel;
  bad[6].push_back(3);  // comp has entries 0 .. 2
  EXPECT_THROW(attention_lse(q, kv, comp, bad, sink, 0, c), ShapeError);
}

// ---------------------------------------------------------------- sub-layer

TEST(AttentionNaive, SwaSublayerAgreesWithLoops) {
  const ModelConfig c = small_cfg();
  const LayerConfig layer = layer_config(c, 0);
  const AttentionWeights w = random_weights(c, 100);
  const Mat x = random_mat(9, c.dim, 30);
  const Mat a = attention_sublayer_swa(x, w, c, layer, kExact);
  const Mat n = naive_sublayer(x, w, c, rope_table_for(c, layer), Mat(0, c.head_dim), {});
  EXPECT_LE(max_rel(a, n), 1e-12);
}

TEST(AttentionNaive, CompressedSublayerAgreesWithLoops) {
  // A YaRN table and caller-given selections (CSA-like: arbitrary subsets in arbitrary order).
  ModelConfig c = small_cfg();
  c.compress_ratios = {4};
  c.compress_rope_theta = 160000;
  const LayerConfig layer = layer_config(c, 0);
  ASSERT_TRUE(layer.rope_yarn);
  const AttentionWeights w = random_weights(c, 200);
  const Mat x = random_mat(10, c.dim, 31);
  const Mat comp = random_mat(2, c.head_dim, 32);
  std::vector<std::vector<std::int64_t>> sel(10);
  for (std::int64_t t = 3; t < 10; ++t) sel[static_cast<std::size_t>(t)] = t >= 7 ? std::vector<std::int64_t>{1, 0} : std::vector<std::int64_t>{0};
  const Mat a = attention_sublayer(x, w, c, layer, comp, sel, kExact);
  const Mat n = naive_sublayer(x, w, c, rope_table_for(c, layer), comp, sel);
  EXPECT_LE(max_rel(a, n), 1e-12);
  // Compressed keys matter.
  const Mat a0 = attention_sublayer(x, w, c, layer, comp, {}, kExact);
  EXPECT_GT(max_rel(a, a0), 1e-6);
}

TEST(AttentionProperty, Causality) {
  const ModelConfig c = small_cfg();
  const LayerConfig layer = layer_config(c, 0);
  const AttentionWeights w = random_weights(c, 300);
  const Mat x = random_mat(8, c.dim, 40);
  const Mat a = attention_sublayer_swa(x, w, c, layer, PrecisionPolicy::official());
  for (const std::int64_t t0 : {1, 4, 7}) {
    Mat x2 = x;
    x2.bottomRows(8 - t0) = random_mat(8 - t0, c.dim, 41 + static_cast<std::uint64_t>(t0));
    const Mat a2 = attention_sublayer_swa(x2, w, c, layer, PrecisionPolicy::official());
    EXPECT_EQ((a2.topRows(t0) - a.topRows(t0)).cwiseAbs().maxCoeff(), 0.0) << t0;
    EXPECT_GT((a2.row(t0) - a.row(t0)).cwiseAbs().maxCoeff(), 0.0) << t0;
  }
}

TEST(AttentionProperty, DerotationInvertsRotation) {
  const ModelConfig c = small_cfg();
  const RopeTable t = rope_table_for(c, layer_config(c, 0));
  const Mat o = random_mat(5, c.q_dim(), 50);
  const auto pos = position_range(3, 5);
  Mat r = o;
  apply_rope_heads_inplace(r, c.n_heads, c.head_dim, pos, t, kExact);
  EXPECT_LE((derotate_output(r, c, t, pos, kExact) - o).cwiseAbs().maxCoeff(), 1e-14);
  // With a window of one key, o_t = σ·k_t and de-rotation by −t·ω removes k_t's own rotation:
  // the rope part equals σ times the unrotated kv_norm output.
  ModelConfig c1 = c;
  c1.window_size = 1;
  const AttentionWeights w = random_weights(c1, 400);
  const Mat x = random_mat(4, c1.dim, 51);
  const auto p0 = position_range(0, 4);
  const QueryPath qp = attention_query(x, w, c1, t, p0, kExact);
  const Mat kv = attention_kv(x, w, c1, t, p0, kExact);
  const Mat kv_unrot = rms_norm(apply_linear(w.wkv, x, kExact), w.kv_norm, c1.norm_eps, kExact);
  const Mat o1 = derotate_output(attention_core(qp.q, kv, Mat(0, 128), {}, w.attn_sink, 0, c1, kExact), c1, t, p0, kExact);
  for (std::int64_t s = 0; s < 4; ++s)
    for (std::int64_t h = 0; h < c1.n_heads; ++h) {
      const double l = qp.q.row(s).segment(h * 128, 128).dot(kv.row(s)) / std::sqrt(128.0);
      const double sig = 1 / (1 + std::exp(-(l - w.attn_sink(h))));
      for (int i = 0; i < 128; ++i) EXPECT_NEAR(o1(s, h * 128 + i), sig * kv_unrot(s, i), 1e-13);
    }
}

TEST(AttentionNaive, GroupedProjectionEqualsPerGroupLoop) {
  const ModelConfig c = small_cfg();
  const AttentionWeights w = random_weights(c, 500);
  const Mat o = random_mat(3, c.q_dim(), 60);
  const Mat a = grouped_output_projection(o, w.wo_a, w.wo_b, c, kExact);
  const std::int64_t hpg = c.heads_per_group();
  for (std::int64_t t = 0; t < 3; ++t) {
    std::vector<LD> y(static_cast<std::size_t>(c.o_dim()), 0);
    for (std::int64_t g = 0; g < c.o_groups; ++g)
      for (std::int64_t j = 0; j < c.o_lora_rank; ++j)
        for (std::int64_t hh = 0; hh < hpg; ++hh)  // head h = g·hpg + hh, dims in order
          for (std::int64_t i = 0; i < c.head_dim; ++i)
            y[static_cast<std::size_t>(g * c.o_lora_rank + j)] +=
                w.wo_a.w(g * c.o_lora_rank + j, hh * c.head_dim + i) * o(t, (g * hpg + hh) * c.head_dim + i);
    for (std::int64_t k = 0; k < c.dim; ++k) {
      LD e = 0;
      for (std::int64_t j = 0; j < c.o_dim(); ++j) e += w.wo_b.w(k, j) * y[static_cast<std::size_t>(j)];
      EXPECT_NEAR(a(t, k), static_cast<double>(e), 1e-12 * (1 + std::fabs(a(t, k))));
    }
  }
  // A wrong grouping (all groups reading group 0's heads) would differ.
  Mat o_bad = o;
  o_bad.middleCols(c.group_in_dim(), c.group_in_dim()) = o.leftCols(c.group_in_dim());
  EXPECT_GT(max_rel(grouped_output_projection(o_bad, w.wo_a, w.wo_b, c, kExact), a), 1e-6);
}

// ---------------------------------------------------------------- precision

TEST(AttentionPrecision, KvQ8DiffersByPredictedAmount) {
  const ModelConfig c = small_cfg();
  const LayerConfig layer = layer_config(c, 0);
  const RopeTable t = rope_table_for(c, layer);
  const AttentionWeights w = random_weights(c, 600);
  const Mat x = random_mat(6, c.dim, 70);
  const auto pos = position_range(0, 6);
  const PrecisionPolicy q8 = PrecisionPolicy::exact().enable(QuantPoint::kKvWindowQ8);
  const Mat ke = attention_kv(x, w, c, t, pos, kExact), kq = attention_kv(x, w, c, t, pos, q8);
  const std::int64_t nope = c.nope_dim();
  double max_dk = 0;
  for (Eigen::Index s = 0; s < ke.rows(); ++s) {
    for (std::int64_t b = 0; b < nope; b += 64) {
      const double amax = ke.row(s).segment(b, 64).cwiseAbs().maxCoeff();
      const double scale = std::ldexp(1.0, static_cast<int>(std::ceil(std::log2(std::max(amax, 1e-4) / 448))));
      for (std::int64_t i = b; i < b + 64; ++i) {
        const double d = std::fabs(kq(s, i) - ke(s, i));
        // half an e4m3 step: 2^-4 relative for normals, 2^-10·scale in the subnormal range
        EXPECT_LE(d, std::ldexp(std::fabs(ke(s, i)), -4) + std::ldexp(scale, -10)) << s << " " << i;
        max_dk = std::max(max_dk, d);
      }
    }
    for (std::int64_t i = nope; i < c.head_dim; ++i) EXPECT_EQ(kq(s, i), ke(s, i));  // rope dims untouched
  }
  EXPECT_GT(max_dk, 0.0);
  // Propagated to the core output: |Δo| ≤ |Δκ|∞ + |κ|∞ (e^{2δ} − 1), δ = max_h |q_h|₁ |Δκ|∞ / sqrt(D).
  const QueryPath qp = attention_query(x, w, c, t, pos, kExact);
  const Mat none(0, c.head_dim);
  const Mat oe = attention_core(qp.q, ke, none, {}, w.attn_sink, 0, c, kExact);
  const Mat oq = attention_core(qp.q, kq, none, {}, w.attn_sink, 0, c, kExact);
  double q1 = 0;
  for (Eigen::Index s = 0; s < qp.q.rows(); ++s)
    for (std::int64_t h = 0; h < c.n_heads; ++h) q1 = std::max(q1, qp.q.row(s).segment(h * 128, 128).cwiseAbs().sum());
  const double delta = q1 * max_dk / std::sqrt(128.0);
  const double bound = max_dk + ke.cwiseAbs().maxCoeff() * (std::exp(2 * delta) - 1);
  const double d_o = (oq - oe).cwiseAbs().maxCoeff();
  EXPECT_GT(d_o, 0.0);
  EXPECT_LE(d_o, bound);
}

TEST(AttentionPrecision, OfficialOutputsBf16AndNearExact) {
  const ModelConfig c = small_cfg();
  const LayerConfig layer = layer_config(c, 0);
  const AttentionWeights w = random_weights(c, 700);
  const Mat x = random_mat(6, c.dim, 80);
  const Mat e = attention_sublayer_swa(x, w, c, layer, kExact);
  const Mat o = attention_sublayer_swa(x, w, c, layer, PrecisionPolicy::official());
  for (Eigen::Index i = 0; i < o.size(); ++i) EXPECT_EQ(fmt::round_bf16(o.data()[i]), o.data()[i]);
  const double rel = max_rel(o, e);
  EXPECT_GT(rel, 1e-4);  // the rounding points are really applied
  EXPECT_LT(rel, 0.2);   // bf16/fp8 magnitude (§12)
  // bf16 attention probabilities: the output of sink_attention is bf16 and near the exact one.
  const Mat q = random_mat(4, 128, 81), k = random_mat(5, 128, 82);
  const PrecisionPolicy pp = PrecisionPolicy::exact().enable(QuantPoint::kBf16AttnProbs);
  const Mat a = sink_attention(q, k, Vec::Zero(4), 1 / std::sqrt(128.0), pp);
  const Mat b = sink_attention(q, k, Vec::Zero(4), 1 / std::sqrt(128.0), kExact);
  EXPECT_GT((a - b).cwiseAbs().maxCoeff(), 0.0);
  EXPECT_LE((a - b).cwiseAbs().maxCoeff(), std::ldexp(k.cwiseAbs().maxCoeff(), -8));
}

TEST(AttentionDeterminism, ThreadCountBitwise) {
  const ModelConfig c = small_cfg();
  const LayerConfig layer = layer_config(c, 0);
  const AttentionWeights w = random_weights(c, 800);
  const Mat x = random_mat(11, c.dim, 90);
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  const Mat a1 = attention_sublayer_swa(x, w, c, layer, PrecisionPolicy::official());
  omp_set_num_threads(3);
  const Mat a3 = attention_sublayer_swa(x, w, c, layer, PrecisionPolicy::official());
  omp_set_num_threads(before);
  EXPECT_EQ((a1 - a3).cwiseAbs().maxCoeff(), 0.0);
}

// ---------------------------------------------------------------- loading and errors

TEST(AttentionLoad, FromGeneratedCheckpoint) {
  const ModelConfig cfg = preset_config("tiny-flash");
  const auto dir = test::unique_temp_path("attention_ckpt");
  make_checkpoint(cfg, dir, {});
  const Checkpoint ckpt = Checkpoint::open(dir);
  for (const std::int64_t li : {std::int64_t{0}, cfg.n_layers}) {
    const LayerConfig layer = layer_config(cfg, li);
    const AttentionWeights w = load_attention_weights(ckpt, cfg, layer);
    EXPECT_EQ(w.prefix, li == 0 ? "layers.0.attn" : "mtp.0.attn");
    EXPECT_EQ(w.wq_b.w.rows(), cfg.q_dim());
    EXPECT_EQ(w.wo_a.w.rows(), cfg.o_dim());
    EXPECT_EQ(w.wo_a.w.cols(), cfg.group_in_dim());
    EXPECT_FALSE(w.wo_a.act_q8);
    EXPECT_TRUE(w.wq_a.act_q8);
    EXPECT_EQ(w.attn_sink.size(), cfg.n_heads);
    const Mat x = random_mat(5, cfg.dim, 95);
    // tiny-flash has q_lora_rank 64, not a multiple of the 128-wide Q8 activation block, so the
    // act_q8_128 point is undefined for wq_b's input there (apply_linear rejects it): off here.
    const PrecisionPolicy pol = PrecisionPolicy::official().disable(QuantPoint::kActQ8);
    const Mat a = attention_sublayer_swa(x, w, cfg, layer, pol);
    EXPECT_TRUE(a.allFinite());
    EXPECT_GT(a.cwiseAbs().maxCoeff(), 0.0);
  }
  EXPECT_THROW(attention_sublayer_swa(random_mat(5, cfg.dim, 95), load_attention_weights(ckpt, cfg, layer_config(cfg, 2)),
                                      cfg, layer_config(cfg, 2), kExact),
               ConfigError);
  std::filesystem::remove_all(dir);
}

TEST(AttentionErrors, ShapesPositionsAndNonFinite) {
  ModelConfig c = small_cfg();
  const LayerConfig layer = layer_config(c, 0);
  const AttentionWeights w = random_weights(c, 900);
  const Mat q = random_mat(4, c.q_dim(), 1), kv = random_mat(4, c.head_dim, 2);
  const Mat none(0, c.head_dim);
  try {
    attention_sublayer_swa(random_mat(3, c.dim + 1, 3), w, c, layer, kExact);
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("[3, 129]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(attention_core(random_mat(4, c.q_dim() - 1, 1), kv, none, {}, w.attn_sink, 0, c, kExact), ShapeError);
  EXPECT_THROW(attention_core(q, random_mat(3, c.head_dim, 2), none, {}, w.attn_sink, 0, c, kExact), ShapeError);
  EXPECT_THROW(attention_core(q, kv, none, {}, Vec::Ones(3), 0, c, kExact), ShapeError);
  const std::vector<std::vector<std::int64_t>> bad_sel{{}, {}, {0}, {}};
  EXPECT_THROW(attention_core(q, kv, none, bad_sel, w.attn_sink, 0, c, kExact), ShapeError);
  const std::vector<std::vector<std::int64_t>> short_sel{{}, {}};
  EXPECT_THROW(attention_core(q, kv, none, short_sel, w.attn_sink, 0, c, kExact), ShapeError);
  AttentionWeights wb = w;
  wb.wo_a.w = random_mat(c.o_dim(), c.group_in_dim() + 1, 4);
  try {
    attention_sublayer_swa(random_mat(3, c.dim, 3), wb, c, layer, kExact);
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.attn.wo_a"), std::string::npos) << e.what();
  }
  wb = w;
  wb.attn_sink(2) = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW(attention_sublayer_swa(random_mat(3, c.dim, 3), wb, c, layer, kExact), NumericError);
  Mat xn = random_mat(3, c.dim, 3);
  xn(2, 1) = std::numeric_limits<double>::infinity();
  EXPECT_THROW(attention_sublayer_swa(xn, w, c, layer, kExact), NumericError);
  c.max_position_embeddings = 8;  // positions 0..9 exceed it
  try {
    attention_sublayer_swa(random_mat(10, c.dim, 3), w, c, layer, kExact);
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("position 8"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace v4ref::ref
