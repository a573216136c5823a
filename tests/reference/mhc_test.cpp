// mHC (v4-forward.md §4, §14 items 1–2): Sinkhorn recipe and iteration count, hand cases,
// the transposed write-back, hc_head, a naive loop formulation and errors.
#include "v4ref/ref/mhc.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <limits>
#include <random>

#include "v4ref/ref/checkpoint_gen.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "../common/test_support.hpp"

namespace v4ref::ref {
namespace {

using test::random_mat;

// Naive Sinkhorn of §4.3 on fixed 4x4 arrays: softmax without max subtraction (inputs are
// moderate), sums in reverse order, multiplication by reciprocals.
using M4 = std::array<std::array<long double, 4>, 4>;
M4 naive_sinkhorn(const Mat& z, int iters, long double eps) {
  M4 m{};
  for (int j = 0; j < 4; ++j) {
    long double s = 0;
    for (int k = 3; k >= 0; --k) s += std::exp(static_cast<long double>(z(j, k)));
    for (int k = 0; k < 4; ++k) m[j][k] = std::exp(static_cast<long double>(z(j, k))) * (1.0L / s) + eps;
  }
  auto col = [&] {
    for (int k = 0; k < 4; ++k) {
      long double s = 0;
      for (int j = 3; j >= 0; --j) s += m[j][k];
      const long double inv = 1.0L / (s + eps);
      for (int j = 0; j < 4; ++j) m[j][k] *= inv;
    }
  };
  auto row = [&] {
    for (int j = 0; j < 4; ++j) {
      long double s = 0;
      for (int k = 3; k >= 0; --k) s += m[j][k];
      const long double inv = 1.0L / (s + eps);
      for (int k = 0; k < 4; ++k) m[j][k] *= inv;
    }
  };
  col();
  for (int i = 1; i < iters; ++i) {
    row();
    col();
  }
  return m;
}

ModelConfig small_cfg(std::int64_t d) {
  ModelConfig c;
  c.dim = d;
  c.hc_mult = 4;
  c.hc_sinkhorn_iters = 20;
  c.hc_eps = 1e-6;
  c.norm_eps = 1e-6;
  return c;
}

TEST(SinkhornHand, DoublyStochasticCirculantIsFixed) {
  // A circulant doubly stochastic A: softmax(log A) = A row-wise, columns already sum to 1.
  Mat a(4, 4);
  a << 0.4, 0.3, 0.2, 0.1, 0.1, 0.4, 0.3, 0.2, 0.2, 0.1, 0.4, 0.3, 0.3, 0.2, 0.1, 0.4;
  const Mat z = a.array().log().matrix();
  const Mat m0 = sinkhorn(z, 20, 0.0);
  EXPECT_LE((m0 - a).cwiseAbs().maxCoeff(), 1e-15);
  // With eps all row and column sums stay equal, so M = (A + eps)·c with the scalar recursion
  // c0 = 1/(1 + 5eps) (column sum 1 + 4eps, + eps), then c <- c/(c(1 + 4eps) + eps) per step.
  const double eps = 1e-3;  // large so the effect is visible
  double c = 1.0 / (1 + 5 * eps);
  for (int i = 1; i < 3; ++i)
    for (int step = 0; step < 2; ++step) c = c / (c * (1 + 4 * eps) + eps);
  const Mat m = sinkhorn(z, 3, eps);
  for (int j = 0; j < 4; ++j)
    for (int k = 0; k < 4; ++k) EXPECT_NEAR(m(j, k), (a(j, k) + eps) * c, 1e-15) << j << k;
  EXPECT_NEAR(m(0, 0), (0.4 + 1e-3) * c, 1e-15);
}

TEST(SinkhornHand, OneIterationTwoByTwo) {
  // Z = [[0, ln 3], [ln 3, ln 3]], eps = 0: softmax rows [1/4, 3/4], [1/2, 1/2];
  // column sums 3/4, 5/4 -> [[1/3, 3/5], [2/3, 2/5]].
  Mat z(2, 2);
  z << 0, std::log(3.0), std::log(3.0), std::log(3.0);
  const Mat m = sinkhorn(z, 1, 0.0);
  EXPECT_NEAR(m(0, 0), 1.0 / 3, 1e-15);
  EXPECT_NEAR(m(0, 1), 3.0 / 5, 1e-15);
  EXPECT_NEAR(m(1, 0), 2.0 / 3, 1e-15);
  EXPECT_NEAR(m(1, 1), 2.0 / 5, 1e-15);
}

TEST(SinkhornProperty, NonNegativeDocumentedSumsAndIterationCount) {
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    const Mat z = random_mat(4, 4, seed, 3.0);  // spiky logits
    const Mat m = sinkhorn(z, 20, 1e-6);
    EXPECT_GE(m.minCoeff(), 0.0);
    // Last step is a column normalisation: column sums s/(s + eps) = 1 − O(1e-6).
    for (int k = 0; k < 4; ++k) EXPECT_NEAR(m.col(k).sum(), 1.0, 2e-6);
    // Row sums are only approximately 1 after 20 iterations (§4.3: do not renormalise).
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(m.row(j).sum(), 1.0, 5e-2);
    const Mat m19 = sinkhorn(z, 19, 1e-6);
    EXPECT_GT((m - m19).cwiseAbs().maxCoeff(), 1e-12) << "19 and 20 iterations must differ";
    const M4 n = naive_sinkhorn(z, 20, 1e-6L);
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 4; ++k)
        EXPECT_NEAR(m(j, k), static_cast<double>(n[j][k]), 1e-12 * std::max(1e-3, m(j, k)));
    const M4 n19 = naive_sinkhorn(z, 19, 1e-6L);
    EXPECT_NEAR(m19(2, 1), static_cast<double>(n19[2][1]), 1e-12);
  }
}

TEST(SinkhornProperty, ConvergesToDoublyStochastic) {
  const Mat z = random_mat(4, 4, 11, 1.0);
  const Mat m = sinkhorn(z, 5000, 0.0);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(m.row(i).sum(), 1.0, 1e-12);
    EXPECT_NEAR(m.col(i).sum(), 1.0, 1e-12);
  }
  // With eps the fixed point has equal row and column sums slightly below 1.
  const Mat me = sinkhorn(z, 5000, 1e-6);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(me.row(i).sum(), me.col(i).sum(), 1e-12);
    EXPECT_NEAR(me.col(i).sum(), 1.0, 5e-6);
  }
}

TEST(MhcHand, CollapseAndTransposedWriteBack) {
  const std::int64_t d = 3;
  Mat x(1, 4 * d);
  x << 1, 2, 3, 10, 20, 30, 100, 200, 300, 1000, 2000, 3000;  // X[k] = 10^k · [1, 2, 3]
  HcMix mix;
  mix.pre = Vec(4);
  mix.pre << 1, 2, 0, 0.5;
  mix.post = Vec(4);
  mix.post << 0, 1, 0, 2;
  // Asymmetric C: C[j][k] = 1 iff k = (j + 1) mod 4, so new stream k = old stream k − 1.
  mix.comb = Mat::Zero(4, 4);
  for (int j = 0; j < 4; ++j) mix.comb(j, (j + 1) % 4) = 1.0;
  const std::vector<HcMix> mixes{mix};
  const Mat u = hc_collapse(x, mixes, 4, PrecisionPolicy::exact());
  EXPECT_EQ(u(0, 0), 1 + 20 + 0 + 500);
  EXPECT_EQ(u(0, 2), 3 + 60 + 0 + 1500);
  Mat f(1, d);
  f << 7, 8, 9;
  const Mat y = hc_post(f, x, mixes, 4, PrecisionPolicy::exact());
  // stream 0 <- stream 3 (post 0), stream 1 <- stream 0 + 1·f, stream 3 <- stream 2 + 2·f
  EXPECT_EQ(y(0, 0), 1000);
  EXPECT_EQ(y(0, 2), 3000);
  EXPECT_EQ(y(0, d + 0), 1 + 7);
  EXPECT_EQ(y(0, d + 1), 2 + 8);
  EXPECT_EQ(y(0, 2 * d + 0), 10);
  EXPECT_EQ(y(0, 3 * d + 2), 300 + 18);
  // The non-transposed (wrong) reading would give stream 1 <- stream 2: make sure it differs.
  EXPECT_NE(y(0, d + 0), 100 + 7);
}

TEST(MhcHand, HcHead) {
  ModelConfig cfg = small_cfg(2);
  cfg.norm_eps = 3.0;  // v = ones(8): mean 1, ρ = 1/sqrt(1 + 3) = 1/2
  cfg.hc_eps = 0.0;
  Mat x(1, 8);
  x << 1, 1, 1, 1, 1, 1, 1, 1;
  HcHeadParams p;
  p.name = "hc_head";
  p.fn = Mat::Zero(4, 8);
  p.fn(0, 0) = 2.0;  // μ0 = ρ·2 = 1
  p.base = Vec(4);
  p.base << 0, std::log(3.0), -std::log(3.0), 0;
  p.scale = Vec::Constant(1, std::log(3.0));  // z0 = ln3·1 + 0
  // w = [σ(ln 3), σ(ln 3), σ(−ln 3), σ(0)] = [3/4, 3/4, 1/4, 1/2]; y = Σ w_k · 1 = 2.25
  const Mat y = hc_head(x, p, cfg, PrecisionPolicy::exact());
  EXPECT_NEAR(y(0, 0), 2.25, 1e-15);
  EXPECT_NEAR(y(0, 1), 2.25, 1e-15);
  Mat x2 = x;
  x2.block(0, 6, 1, 2) << 3, 5;  // stream 3 = [3, 5]; ρ changes: mean(v²) = (6 + 9 + 25)/8 = 5
  // ρ = 1/sqrt(8) -> μ0 = 2/sqrt(8) = 1/sqrt(2); w0 = σ(ln3/sqrt(2))
  const double w0 = 1 / (1 + std::exp(-std::log(3.0) / std::sqrt(2.0)));
  const Mat y2 = hc_head(x2, p, cfg, PrecisionPolicy::exact());
  EXPECT_NEAR(y2(0, 1), w0 + 0.75 + 0.25 + 0.5 * 5, 1e-15);
}

// Naive end-to-end HCPre / HCPost with plain loops.
struct NaivePre {
  std::vector<double> u;
  std::vector<double> pre, post;
  M4 c;
};
NaivePre naive_pre(const Mat& x, Eigen::Index t, const HcParams& p, const ModelConfig& cfg) {
  const std::int64_t n = x.cols();
  long double ss = 0;
  for (std::int64_t i = n - 1; i >= 0; --i) ss += static_cast<long double>(x(t, i)) * x(t, i);
  const long double rho = 1.0L / std::sqrt(ss / n + cfg.norm_eps);
  std::vector<long double> mu(24);
  for (int r = 0; r < 24; ++r) {
    long double s = 0;
    for (std::int64_t i = 0; i < n; ++i) s += static_cast<long double>(p.fn(r, i)) * (x(t, i) * rho);
    mu[static_cast<std::size_t>(r)] = s;
  }
  auto sig = [](long double z) { return 1.0L / (1.0L + std::exp(-z)); };
  NaivePre r;
  Mat z(4, 4);
  for (int k = 0; k < 4; ++k) {
    r.pre.push_back(static_cast<double>(sig(p.scale(0) * mu[static_cast<std::size_t>(k)] + p.base(k)) + cfg.hc_eps));
    r.post.push_back(static_cast<double>(2 * sig(p.scale(1) * mu[static_cast<std::size_t>(4 + k)] + p.base(4 + k))));
    for (int j = 0; j < 4; ++j)
      z(j, k) = static_cast<double>(p.scale(2) * mu[static_cast<std::size_t>(8 + 4 * j + k)] + p.base(8 + 4 * j + k));
  }
  r.c = naive_sinkhorn(z, static_cast<int>(cfg.hc_sinkhorn_iters), cfg.hc_eps);
  const std::int64_t d = cfg.dim;
  r.u.assign(static_cast<std::size_t>(d), 0.0);
  for (std::int64_t i = 0; i < d; ++i) {
    long double s = 0;
    for (int k = 3; k >= 0; --k) s += r.pre[static_cast<std::size_t>(k)] * x(t, k * d + i);
    r.u[static_cast<std::size_t>(i)] = static_cast<double>(s);
  }
  return r;
}

TEST(MhcNaive, PreAndPostAgreeWithLoops) {
  const ModelConfig cfg = small_cfg(16);
  HcParams p;
  p.name = "layers.0.hc_attn";
  p.fn = random_mat(24, 64, 1, 0.3);
  p.base = random_mat(24, 1, 2).col(0);
  p.scale = Vec(3);
  p.scale << 0.7, 1.3, 2.0;
  const Mat x = random_mat(3, 64, 3);
  const HcPreResult r = hc_pre(x, p, cfg, PrecisionPolicy::exact());
  const Mat f = random_mat(3, 16, 4);
  const Mat y = hc_post(f, x, r.mix, 4, PrecisionPolicy::exact());
  for (Eigen::Index t = 0; t < 3; ++t) {
    const NaivePre n = naive_pre(x, t, p, cfg);
    for (int k = 0; k < 4; ++k) {
      EXPECT_NEAR(r.mix[static_cast<std::size_t>(t)].pre(k), n.pre[static_cast<std::size_t>(k)], 1e-13);
      EXPECT_NEAR(r.mix[static_cast<std::size_t>(t)].post(k), n.post[static_cast<std::size_t>(k)], 1e-13);
      for (int j = 0; j < 4; ++j)
        EXPECT_NEAR(r.mix[static_cast<std::size_t>(t)].comb(j, k), static_cast<double>(n.c[j][k]), 1e-12);
    }
    for (int i = 0; i < 16; ++i) EXPECT_NEAR(r.u(t, i), n.u[static_cast<std::size_t>(i)], 1e-12 * (1 + std::fabs(r.u(t, i))));
    for (int k = 0; k < 4; ++k)
      for (int i = 0; i < 16; ++i) {
        long double e = static_cast<long double>(n.post[static_cast<std::size_t>(k)]) * f(t, i);
        for (int j = 0; j < 4; ++j) e += n.c[j][k] * x(t, j * 16 + i);
        EXPECT_NEAR(y(t, k * 16 + i), static_cast<double>(e), 1e-12 * (1 + std::fabs(y(t, k * 16 + i))));
      }
  }
}

TEST(MhcPrecision, Bf16ResidualRoundsStreamsAndCollapse) {
  const ModelConfig cfg = small_cfg(8);
  HcParams p{"hc", random_mat(24, 32, 5, 0.3), random_mat(24, 1, 6).col(0), Vec::Ones(3)};
  const Mat x = random_mat(2, 32, 7);
  const PrecisionPolicy bf = PrecisionPolicy::exact().enable(QuantPoint::kBf16Residual);
  const HcPreResult rb = hc_pre(x, p, cfg, bf), re = hc_pre(x, p, cfg, PrecisionPolicy::exact());
  const Mat yb = hc_post(random_mat(2, 8, 8), x, rb.mix, 4, bf);
  for (Eigen::Index i = 0; i < rb.u.size(); ++i) {
    EXPECT_EQ(fmt::round_bf16(rb.u.data()[i]), rb.u.data()[i]);
    EXPECT_LE(std::fabs(rb.u.data()[i] - re.u.data()[i]), std::ldexp(std::fabs(re.u.data()[i]), -8));
  }
  for (Eigen::Index i = 0; i < yb.size(); ++i) EXPECT_EQ(fmt::round_bf16(yb.data()[i]), yb.data()[i]);
  EXPECT_NE((rb.u - re.u).cwiseAbs().maxCoeff(), 0.0);
}

TEST(MhcErrors, ShapesAndNonFinite) {
  const ModelConfig cfg = small_cfg(8);
  HcParams p{"layers.1.hc_ffn", random_mat(24, 32, 5), random_mat(24, 1, 6).col(0), Vec::Ones(3)};
  EXPECT_THROW(hc_pre(random_mat(2, 31, 1), p, cfg, PrecisionPolicy::exact()), ShapeError);
  HcParams bad = p;
  bad.fn = random_mat(24, 30, 5);
  try {
    hc_pre(random_mat(2, 32, 1), bad, cfg, PrecisionPolicy::exact());
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.1.hc_ffn_fn"), std::string::npos) << e.what();
  }
  Mat x = random_mat(2, 32, 1);
  x(1, 5) = std::numeric_limits<double>::infinity();
  EXPECT_THROW(hc_pre(x, p, cfg, PrecisionPolicy::exact()), NumericError);
  EXPECT_THROW(sinkhorn(Mat::Zero(4, 3), 20, 1e-6), ShapeError);
  EXPECT_THROW(sinkhorn(Mat::Zero(4, 4), 0, 1e-6), ConfigError);
  const HcPreResult r = hc_pre(random_mat(2, 32, 1), p, cfg, PrecisionPolicy::exact());
  EXPECT_THROW(hc_post(random_mat(2, 7, 2), random_mat(2, 32, 1), r.mix, 4, PrecisionPolicy::exact()), ShapeError);
  EXPECT_THROW(hc_post(random_mat(3, 8, 2), random_mat(3, 32, 1), r.mix, 4, PrecisionPolicy::exact()), ShapeError);
}

TEST(MhcLoad, FromGeneratedCheckpoint) {
  const ModelConfig cfg = preset_config("tiny-flash");
  const auto dir = test::unique_temp_path("mhc_ckpt");
  make_checkpoint(cfg, dir, {});
  const Checkpoint ckpt = Checkpoint::open(dir);
  const HcParams p = load_hc_params(ckpt, cfg, layer_config(cfg, 1).prefix, "ffn");
  EXPECT_EQ(p.fn.rows(), 24);
  EXPECT_EQ(p.fn.cols(), cfg.hc_dim());
  EXPECT_EQ(p.scale.size(), 3);
  const HcHeadParams h = load_hc_head_params(ckpt, cfg, "mtp.0.");
  EXPECT_EQ(h.fn.rows(), 4);
  EXPECT_EQ(h.name, "mtp.0.hc_head");
  EXPECT_THROW(load_hc_params(ckpt, cfg, "layers.1.", "mlp"), ConfigError);
  EXPECT_THROW(load_hc_params(ckpt, cfg, "layers.99.", "attn"), MissingTensor);
  // One full HCPre on the generated weights stays finite.
  const Mat x = random_mat(3, cfg.hc_dim(), 9);
  const HcPreResult r = hc_pre(x, p, cfg, PrecisionPolicy::official());
  EXPECT_TRUE(r.u.allFinite());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace v4ref::ref
