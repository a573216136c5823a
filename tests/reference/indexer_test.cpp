// Self-checks of the lightning indexer (v4-forward.md §7) and the deterministic top-k
// (verification.md §7, §9): a selection oracle, hand-computed scores, causality, the bf16 score
// emulation, a naive formulation, and a run on a generated tiny checkpoint.
#include "v4ref/ref/indexer.hpp"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <vector>

#include "v4ref/ref/checkpoint_gen.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/quant.hpp"
#include "../common/test_support.hpp"

namespace v4ref::ref {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// (rows, cols, stddev, seed): the argument order these tests were written with.
Mat random_mat(std::int64_t r, std::int64_t c, double stddev, std::uint64_t seed) {
  return test::random_mat(r, c, seed, stddev);
}

// Oracle: k rounds of "scan for the best remaining", best = larger score, then lower index.
std::vector<std::int64_t> oracle_topk(const std::vector<double>& s, std::int64_t k) {
  std::vector<bool> used(s.size(), false);
  std::vector<std::int64_t> out;
  for (std::int64_t round = 0; round < k; ++round) {
    std::int64_t best = -1;
    for (std::size_t j = 0; j < s.size(); ++j) {
      if (used[j] || std::isnan(s[j])) continue;
      if (best < 0 || s[j] > s[static_cast<std::size_t>(best)]) best = static_cast<std::int64_t>(j);
    }
    if (best < 0) break;
    used[static_cast<std::size_t>(best)] = true;
    out.push_back(best);
  }
  return out;
}

// ------------------------------------------------------------------ top-k

TEST(IndexerTopk, EqualsTheOracleOnRandomTiedAndNaNInputs) {
  Rng rng(derive_seed("indexer_topk", "scores", "sweep"));
  const double pool[] = {-1.0, 0.0, -0.0, 0.5, 1.0, kInf, -kInf, kNaN};
  for (int rep = 0; rep < 300; ++rep) {
    const std::int64_t n = 1 + static_cast<std::int64_t>(rng.below(60));
    const int mode = rep % 3;  // continuous, heavily tied, tied with NaN/±inf
    std::vector<double> s(static_cast<std::size_t>(n));
    for (auto& v : s)
      v = mode == 0 ? rng.normal() : pool[rng.below(mode == 1 ? 5 : 8)];
    const std::int64_t k = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(n + 3)));
    EXPECT_EQ(select_topk(s, k), oracle_topk(s, k)) << "rep " << rep << " n " << n << " k " << k;
  }
}

TEST(IndexerTopk, AllZeroScoresSelectTheLowestIndices) {
  const std::vector<double> z(50, 0.0);
  const std::vector<std::int64_t> want{0, 1, 2, 3, 4, 5, 6};
  EXPECT_EQ(select_topk(z, 7), want);
  // The k-th and (k+1)-th equal: the lower index is in.
  const std::vector<double> s{3, 1, 2, 2, 0};
  EXPECT_EQ(select_topk(s, 3), (std::vector<std::int64_t>{0, 2, 3}));
  EXPECT_EQ(select_topk(s, 2), (std::vector<std::int64_t>{0, 2}));
}

TEST(IndexerTopk, NaNIsNeverSelectedAndRanksBelowMinusInfinity) {
  const std::vector<double> s{kNaN, -kInf, kNaN, -5};
  EXPECT_EQ(select_topk(s, 4), (std::vector<std::int64_t>{3, 1}));
  EXPECT_TRUE(select_topk(std::vector<double>{kNaN, kNaN}, 2).empty());
}

TEST(IndexerTopk, FewerVisibleEntriesThanK) {
  const std::vector<double> row{0.1, 0.9, 0.5, 0.7, 0.2, 0.3};
  // t = 9: ⌊10/4⌋ = 2 visible; K_I = 5 -> k_t = 2.
  EXPECT_EQ(index_topk(row, 9, 5), (std::vector<std::int64_t>{1, 0}));
  // t = 2: nothing visible.
  EXPECT_TRUE(index_topk(row, 2, 5).empty());
  // t = 23: 6 visible, K_I = 3.
  EXPECT_EQ(index_topk(row, 23, 3), (std::vector<std::int64_t>{1, 3, 2}));
  // A row shorter than the visible count is an error.
  EXPECT_THROW((void)index_topk(row, 27, 3), ShapeError);
}

// ------------------------------------------------------------------ scores

TEST(IndexerScores, HandComputedTwoHeadsThreeEntries) {
  // q head 0 = [1, 0], head 1 = [0, 1]; head weights [2, −1].
  Mat q(1, 4);
  q << 1, 0, 0, 1;
  Mat w(1, 2);
  w << 2, -1;
  Mat k(3, 2);
  k << 1, 1,   // dots (1, 1):  2·1 − 1·1 = 1
      -1, 2,   // dots (−1, 2): 2·0 − 1·2 = −2  (ReLU per head, before the weight)
      3, -1;   // dots (3, −1): 2·3 − 1·0 = 6
  const std::vector<std::int64_t> pos{11};  // ⌊12/4⌋ = 3 visible
  const Mat s = index_scores(q, w, k, pos, 2, 2, PrecisionPolicy::exact());
  ASSERT_EQ(s.cols(), 3);
  EXPECT_EQ(s(0, 0), 1.0);
  EXPECT_EQ(s(0, 1), -2.0);
  EXPECT_EQ(s(0, 2), 6.0);
  const auto row = s.row(0);
  EXPECT_EQ(index_topk(std::span<const double>(row.data(), 3), 11, 2),
            (std::vector<std::int64_t>{2, 0}));
  // Position 7 sees only entries 0 and 1; entry 2 is −∞ (never selected).
  const std::vector<std::int64_t> pos7{7};
  const Mat s7 = index_scores(q, w, k, pos7, 2, 2, PrecisionPolicy::exact());
  EXPECT_EQ(s7(0, 1), -2.0);
  EXPECT_EQ(s7(0, 2), -kInf);
  const auto row7 = s7.row(0);
  EXPECT_EQ(index_topk(std::span<const double>(row7.data(), 3), 7, 3),
            (std::vector<std::int64_t>{0, 1}));
}

TEST(IndexerScores, Bf16EmulationRoundsTheDotTheProductAndTheSum) {
  // dot = 1 + 2^-9 is a quarter bf16 ulp (2^-7) above 1: bf16 rounds it to 1.
  Mat q(1, 2);
  q << 1, 0x1p-9;
  Mat k(1, 2);
  k << 1, 1;
  Mat w(1, 1);
  w << 1;
  const std::vector<std::int64_t> pos{3};
  PrecisionPolicy bf;
  bf.enable(QuantPoint::kBf16IndexScore);
  EXPECT_EQ(index_scores(q, w, k, pos, 1, 2, PrecisionPolicy::exact())(0, 0), 1.0 + 0x1p-9);
  EXPECT_EQ(index_scores(q, w, k, pos, 1, 2, bf)(0, 0), 1.0);
  // Random case against the documented recipe, element by element.
  const std::int64_t H = 3, D = 8, N = 5;
  const Mat qq = random_mat(4, H * D, 1.0, 5), kk = random_mat(N, D, 1.0, 6), ww = random_mat(4, H, 1.0, 7);
  const std::vector<std::int64_t> p4{19, 20, 21, 22};  // 5 entries visible to each
  const Mat got = index_scores(qq, ww, kk, p4, H, D, bf);
  const Mat ex = index_scores(qq, ww, kk, p4, H, D, PrecisionPolicy::exact());
  auto b = [](double v) { return fmt::round_bf16(v); };
  for (std::int64_t t = 0; t < 4; ++t)
    for (std::int64_t j = 0; j < N; ++j) {
      double sum = 0;
      for (std::int64_t h = 0; h < H; ++h) {
        double dot = 0;
        for (std::int64_t d = 0; d < D; ++d) dot += b(qq(t, h * D + d)) * b(kk(j, d));
        sum += b(b(ww(t, h)) * std::max(b(dot), 0.0));
      }
      EXPECT_EQ(got(t, j), b(sum));
      EXPECT_EQ(b(got(t, j)), got(t, j));
      EXPECT_NEAR(got(t, j), ex(t, j), 0.05 * (1 + std::abs(ex(t, j))));
    }
}

TEST(IndexerScores, CausalityNoInvisibleEntryIsEverSelected) {
  const std::int64_t T = 64, N = T / 4, H = 4, D = 16;
  const Mat q = random_mat(T, H * D, 1.0, 101), w = random_mat(T, H, 1.0, 102);
  Mat k = random_mat(N, D, 1.0, 103);
  std::vector<std::int64_t> pos(T);
  for (std::int64_t t = 0; t < T; ++t) pos[static_cast<std::size_t>(t)] = t;
  const Mat s = index_scores(q, w, k, pos, H, D, PrecisionPolicy::exact());
  // Changing entries a query cannot see changes neither its scores nor its selection.
  Mat k2 = k;
  k2.bottomRows(N / 2).array() += 3.0;
  const Mat s2 = index_scores(q, w, k2, pos, H, D, PrecisionPolicy::exact());
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t vis = (t + 1) / 4;
    for (std::int64_t j = vis; j < N; ++j) EXPECT_EQ(s(t, j), -kInf) << t << "," << j;
    const auto row = s.row(t);
    const auto sel = index_topk(std::span<const double>(row.data(), N), t, 5);
    EXPECT_EQ(static_cast<std::int64_t>(sel.size()), std::min<std::int64_t>(5, vis));
    for (std::int64_t j : sel) EXPECT_LT(j, vis);
    if (vis <= N / 2) {
      EXPECT_EQ(s.row(t), s2.row(t));
    }
  }
}

TEST(IndexerScores, ThreadCountDoesNotChangeTheBits) {
  const std::int64_t T = 40, N = 10, H = 4, D = 32;
  const Mat q = random_mat(T, H * D, 1.0, 111), w = random_mat(T, H, 1.0, 112), k = random_mat(N, D, 1.0, 113);
  std::vector<std::int64_t> pos(T);
  for (std::int64_t t = 0; t < T; ++t) pos[static_cast<std::size_t>(t)] = t;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Mat one = index_scores(q, w, k, pos, H, D, PrecisionPolicy::official());
  omp_set_num_threads(3);
  const Mat three = index_scores(q, w, k, pos, H, D, PrecisionPolicy::official());
  omp_set_num_threads(saved);
  EXPECT_EQ(one, three);
}

// ------------------------------------------------------------------ naive formulation

// Index queries, head weights and scores written directly from §7.2/§7.3 (exact policy): plain
// loops for W_Iqb c_t and W_wp x_t, interleaved RoPE on dims 64..127 at t, the Sylvester
// Hadamard matrix, scores summed heads-last-to-first.
struct NaiveIndexer {
  Mat q, w, s;
};
NaiveIndexer naive_indexer(const Mat& x, const Mat& c, const Mat& keys, const IndexerWeights& iw,
                           const RopeTable& rope) {
  const std::int64_t T = x.rows(), H = iw.n_heads, D = iw.head_dim, N = keys.rows();
  NaiveIndexer out{Mat(T, H * D), Mat(T, H), Mat::Constant(T, N, -kInf)};
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t h = 0; h < H; ++h) {
      std::vector<double> v(static_cast<std::size_t>(D));
      for (std::int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (std::int64_t k = c.cols() - 1; k >= 0; --k) acc += iw.wq_b.w(h * D + d, k) * c(t, k);
        v[static_cast<std::size_t>(d)] = acc;
      }
      for (std::int64_t p = 0; p < 32; ++p) {
        const double th = static_cast<double>(t) * rope.omega[static_cast<std::size_t>(p)];
        const std::size_t a = static_cast<std::size_t>(D - 64 + 2 * p);
        const double x0 = v[a], x1 = v[a + 1];
        v[a] = x0 * std::cos(th) - x1 * std::sin(th);
        v[a + 1] = x0 * std::sin(th) + x1 * std::cos(th);
      }
      for (std::int64_t r = 0; r < D; ++r) {
        double acc = 0;
        for (std::int64_t k = 0; k < D; ++k)
          acc += (__builtin_popcountll(static_cast<unsigned long long>(r & k)) % 2 ? -1.0 : 1.0) *
                 v[static_cast<std::size_t>(k)];
        out.q(t, h * D + r) = acc / std::sqrt(static_cast<double>(D));
      }
      double acc = 0;
      for (std::int64_t k = x.cols() - 1; k >= 0; --k) acc += iw.weights_proj.w(h, k) * x(t, k);
      out.w(t, h) = acc / std::sqrt(static_cast<double>(D)) / std::sqrt(static_cast<double>(H));
    }
    for (std::int64_t j = 0; j < std::min(N, (t + 1) / 4); ++j) {
      double sum = 0;
      for (std::int64_t h = H - 1; h >= 0; --h) {
        double dot = 0;
        for (std::int64_t d = D - 1; d >= 0; --d) dot += out.q(t, h * D + d) * keys(j, d);
        sum += out.w(t, h) * std::max(dot, 0.0);
      }
      out.s(t, j) = sum;
    }
  }
  return out;
}

double max_rel(const Mat& a, const Mat& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-300);
}

class IndexerCheckpoint : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cfg_ = new ModelConfig(preset_config("tiny-flash"));
    dir_ = new std::filesystem::path(test::unique_temp_path("indexer_ckpt"));
    std::filesystem::remove_all(*dir_);
    make_checkpoint(*cfg_, *dir_);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete cfg_;
    delete dir_;
  }
  static ModelConfig* cfg_;
  static std::filesystem::path* dir_;
};
ModelConfig* IndexerCheckpoint::cfg_ = nullptr;
std::filesystem::path* IndexerCheckpoint::dir_ = nullptr;

TEST_F(IndexerCheckpoint, PrefillAgreesWithNaiveFormulation) {
  const ModelConfig& cfg = *cfg_;
  const Checkpoint ckpt = Checkpoint::open(*dir_);
  const IndexerWeights iw = load_indexer(ckpt, cfg, 2);  // tiny-flash layer 2 is CSA
  EXPECT_EQ(iw.prefix, "layers.2.attn.indexer.");
  EXPECT_EQ(iw.wq_b.storage, WeightStorage::kFp8);
  EXPECT_EQ(iw.weights_proj.storage, WeightStorage::kBf16);
  const RopeTable rope = rope_table_for(cfg, layer_config(cfg, 2));
  const std::int64_t T = 203;
  const Mat x = random_mat(T, cfg.dim, 1.0, 201);
  const Mat c = random_mat(T, cfg.q_lora_rank, 1.0, 202);
  const IndexerPrefill got = indexer_prefill(x, c, iw, rope, cfg.norm_eps, cfg.index_topk,
                                             PrecisionPolicy::exact());
  ASSERT_EQ(got.keys.rows(), T / 4);
  EXPECT_EQ(got.keys, compress_prefill(x, iw.compressor, rope, cfg.norm_eps, PrecisionPolicy::exact()));
  const NaiveIndexer nv = naive_indexer(x, c, got.keys, iw, rope);
  EXPECT_LT(max_rel(got.queries, nv.q), 1e-12);
  EXPECT_LT(max_rel(got.head_weights, nv.w), 1e-12);
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t vis = (t + 1) / 4;
    for (std::int64_t j = 0; j < vis; ++j)
      ASSERT_NEAR(got.scores(t, j), nv.s(t, j), 1e-12 * (1 + nv.s.row(t).head(vis).cwiseAbs().maxCoeff()))
          << t << "," << j;
    const auto& sel = got.topk[static_cast<std::size_t>(t)];
    ASSERT_EQ(static_cast<std::int64_t>(sel.size()), std::min(cfg.index_topk, vis)) << t;
    const std::set<std::int64_t> uniq(sel.begin(), sel.end());
    EXPECT_EQ(uniq.size(), sel.size());
    for (std::int64_t j : sel) EXPECT_LT(j, vis);
    // Set equality with the oracle on the naive scores (no near ties expected at 1e-12).
    std::vector<double> row(static_cast<std::size_t>(vis));
    for (std::int64_t j = 0; j < vis; ++j) row[static_cast<std::size_t>(j)] = nv.s(t, j);
    const auto want = oracle_topk(row, std::min(cfg.index_topk, vis));
    EXPECT_EQ(uniq, std::set<std::int64_t>(want.begin(), want.end())) << "t=" << t;
  }
  // Selection really discards entries at the end of the sequence (K_I < visible).
  EXPECT_LT(static_cast<std::int64_t>(got.topk.back().size()), (T) / 4);
}

// tiny-pro (q_lora_rank 128) rather than tiny-flash: the W8A8 input fake-quant Q8(·;128) of wq_b
// needs an input width that is a multiple of 128, and tiny-flash's q_lora_rank is 64.
TEST(IndexerPolicy, OfficialPolicyPointsLandOnTheirGrids) {
  const ModelConfig cfg = preset_config("tiny-pro");
  const auto dir = test::unique_temp_path("indexer_ckpt_pro");
  std::filesystem::remove_all(dir);
  make_checkpoint(cfg, dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  const std::int64_t layer = 2;  // tiny-pro ratios {128, 128, 4, 128, 4, 0}
  const IndexerWeights iw = load_indexer(ckpt, cfg, layer);
  const RopeTable rope = rope_table_for(cfg, layer_config(cfg, layer));
  const std::int64_t T = 40;
  const Mat x = random_mat(T, cfg.dim, 1.0, 211), c = random_mat(T, cfg.q_lora_rank, 1.0, 212);
  const PrecisionPolicy off = PrecisionPolicy::official();
  const IndexerPrefill p = indexer_prefill(x, c, iw, rope, cfg.norm_eps, cfg.index_topk, off);
  const IndexerPrefill e = indexer_prefill(x, c, iw, rope, cfg.norm_eps, cfg.index_topk, PrecisionPolicy::exact());
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<double> v(p.queries.row(t).data(), p.queries.row(t).data() + p.queries.cols()), again(v.size());
    q4_fake_quant(v, 32, again);
    EXPECT_EQ(v, again) << "query row " << t << " is not on the Q4 grid";
    for (std::int64_t h = 0; h < iw.n_heads; ++h) EXPECT_EQ(fmt::round_bf16(p.head_weights(t, h)), p.head_weights(t, h));
    for (std::int64_t j = 0; j < (t + 1) / 4; ++j) EXPECT_EQ(fmt::round_bf16(p.scores(t, j)), p.scores(t, j));
  }
  // FP4 keys and queries: the scores stay close to the exact ones (verification.md §5 loose gate).
  double num = 0, den = 0;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t j = 0; j < (t + 1) / 4; ++j) {
      num += p.scores(t, j) * e.scores(t, j);
      den += p.scores(t, j) * p.scores(t, j) + e.scores(t, j) * e.scores(t, j);
    }
  EXPECT_LT(1 - 2 * num / den, 2e-2);
  EXPECT_GT(1 - 2 * num / den, 0.0);  // the points did round something
  std::filesystem::remove_all(dir);
}

TEST_F(IndexerCheckpoint, BadInputsAreRejectedWithNames) {
  const ModelConfig& cfg = *cfg_;
  const Checkpoint ckpt = Checkpoint::open(*dir_);
  EXPECT_THROW((void)load_indexer(ckpt, cfg, 3), ConfigError);  // HCA
  EXPECT_THROW((void)load_indexer(ckpt, cfg, 0), ConfigError);  // SWA
  const IndexerWeights iw = load_indexer(ckpt, cfg, 2);
  const RopeTable rope = rope_table_for(cfg, layer_config(cfg, 2));
  const std::vector<std::int64_t> pos{0, 1};
  try {
    (void)index_queries(Mat::Zero(2, cfg.q_lora_rank + 1), pos, iw, rope, PrecisionPolicy::exact());
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.2.attn.indexer.c"), std::string::npos) << e.what();
  }
  Mat c = Mat::Zero(2, cfg.q_lora_rank);
  c(1, 3) = kInf;
  EXPECT_THROW((void)index_queries(c, pos, iw, rope, PrecisionPolicy::exact()), NumericError);
  Mat x = Mat::Zero(2, cfg.dim);
  x(0, 0) = kNaN;
  EXPECT_THROW((void)index_head_weights(x, iw, PrecisionPolicy::exact()), NumericError);
  EXPECT_THROW((void)index_scores(Mat::Zero(2, 8), Mat::Zero(2, 2), Mat::Zero(3, 5), pos, 2, 4,
                                  PrecisionPolicy::exact()),
               ShapeError);
}

}  // namespace
}  // namespace v4ref::ref
