// The lightning indexer (v4-forward.md §7) and the deterministic top-k (verification.md §7, §9).
#include "v4ref/ref/indexer.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/hadamard.hpp"
#include "v4ref/ref/norm.hpp"
#include "v4ref/ref/quant.hpp"

namespace v4ref::ref {
namespace {

constexpr int kIdxQ4Block = 32;  // §2.5 item 4: Q4(·; 32) per head

double bf16_if(double v, bool on) { return on ? fmt::round_bf16(v) : v; }

}  // namespace

IndexerWeights load_indexer(const Checkpoint& ckpt, const ModelConfig& cfg, std::int64_t layer) {
  const LayerConfig lc = layer_config(cfg, layer);
  if (lc.kind != LayerKind::kCsa)
    throw ConfigError("layer " + std::to_string(layer) + " of " + cfg.name + " is " +
                      layer_kind_name(lc.kind) + "; the indexer exists in CSA layers only (§7)");
  IndexerWeights w;
  w.prefix = lc.prefix + "attn.indexer.";
  w.n_heads = cfg.index_n_heads;
  w.head_dim = cfg.index_head_dim;
  w.wq_b = load_linear(ckpt, w.prefix + "wq_b", cfg.index_q_dim(), cfg.q_lora_rank);
  w.weights_proj = load_linear(ckpt, w.prefix + "weights_proj", cfg.index_n_heads, cfg.dim);
  w.compressor = load_layer_compressor(ckpt, cfg, layer, CompressorKind::kIndexer);
  return w;
}

Mat index_queries(const Mat& c, std::span<const std::int64_t> positions, const IndexerWeights& w,
                  const RopeTable& rope, const PrecisionPolicy& policy) {
  if (c.cols() != w.wq_b.in_features())
    throw ShapeError(w.prefix + "c (index_queries): expected " +
                     dims(c.rows(), w.wq_b.in_features()) + " ([T, L_q]), got " +
                     dims(c.rows(), c.cols()));
  if (w.wq_b.out_features() != w.n_heads * w.head_dim)
    throw ShapeError(w.prefix + "wq_b.weight: expected " +
                     dims(w.n_heads * w.head_dim, w.wq_b.in_features()) + ", got " +
                     dims(w.wq_b.out_features(), w.wq_b.in_features()));
  require_finite_mat(c, w.prefix + "c");
  Mat q = apply_linear(w.wq_b, c, policy);  // [T, H_I·D_I]
  // §7.2: RoPE on the last r dims (64..127) of every head at the query position.
  apply_rope_heads_inplace(q, w.n_heads, w.head_dim, positions, rope, policy, false,
                           w.prefix + "q.rope");
  q = hadamard_blocks(q, w.head_dim);  // Had per head (§2.4)
  round_bf16_if(q, policy, QuantPoint::kBf16Hadamard);  // rotate_activation returns bf16
  if (policy.on(QuantPoint::kIdxQQ4)) {
    for (Eigen::Index t = 0; t < q.rows(); ++t) {
      std::span<double> row(q.row(t).data(), static_cast<std::size_t>(q.cols()));
      q4_fake_quant(row, kIdxQ4Block, row);  // blocks of 32 never straddle heads (D_I % 32 == 0)
    }
  }
  return q;
}

Mat index_head_weights(const Mat& x, const IndexerWeights& w, const PrecisionPolicy& policy) {
  if (x.cols() != w.weights_proj.in_features())
    throw ShapeError(w.prefix + "x (index_head_weights): expected " +
                     dims(x.rows(), w.weights_proj.in_features()) + " ([T, d]), got " +
                     dims(x.rows(), x.cols()));
  if (w.weights_proj.out_features() != w.n_heads)
    throw ShapeError(w.prefix + "weights_proj.weight: expected " +
                     dims(w.n_heads, w.weights_proj.in_features()) + ", got " +
                     dims(w.weights_proj.out_features(), w.weights_proj.in_features()));
  require_finite_mat(x, w.prefix + "x");
  Mat wi = apply_linear(w.weights_proj, x, policy);  // [T, H_I]
  // §1.3: D_I^{-1/2}·H_I^{-1/2}, one double constant (0.011048543456039806 for 128, 64).
  const double scale = 1.0 / std::sqrt(static_cast<double>(w.head_dim) * static_cast<double>(w.n_heads));
  wi *= scale;
  round_bf16_if(wi, policy, QuantPoint::kBf16IndexScore);  // bf16 tensor times a scalar in OFF
  return wi;
}

std::int64_t indexer_visible(std::int64_t t) { return (t + 1) / kIndexerRatio; }

Mat index_scores(const Mat& q, const Mat& wI, const Mat& keys,
                 std::span<const std::int64_t> positions, std::int64_t n_heads,
                 std::int64_t head_dim, const PrecisionPolicy& policy) {
  const std::int64_t T = q.rows();
  const std::int64_t N = keys.rows();
  if (q.cols() != n_heads * head_dim)
    throw ShapeError("indexer.q: expected " + dims(T, n_heads * head_dim) + ", got " +
                     dims(q.rows(), q.cols()));
  if (wI.rows() != T || wI.cols() != n_heads)
    throw ShapeError("indexer.head_weights: expected " + dims(T, n_heads) + ", got " +
                     dims(wI.rows(), wI.cols()));
  if (keys.cols() != head_dim)
    throw ShapeError("indexer.keys: expected " + dims(N, head_dim) + ", got " +
                     dims(keys.rows(), keys.cols()));
  if (static_cast<std::int64_t>(positions.size()) != T)
    throw ShapeError("indexer.positions: expected " + std::to_string(T) + " positions, got " +
                     std::to_string(positions.size()));
  const bool bf = policy.on(QuantPoint::kBf16IndexScore);
  Mat qq = q, kk = keys, ww = wI;
  if (bf) {  // bf16 inputs of the bf16 einsum (idempotent after Q4 / bf16 rounding upstream)
    round_bf16_if(qq, policy, QuantPoint::kBf16IndexScore);
    round_bf16_if(kk, policy, QuantPoint::kBf16IndexScore);
    round_bf16_if(ww, policy, QuantPoint::kBf16IndexScore);
  }
  Mat scores = Mat::Constant(T, N, -std::numeric_limits<double>::infinity());
  // Rows are independent; each is summed in a fixed order, so any thread count gives the same bits.
#pragma omp parallel for schedule(static) if (T > 1)
  for (std::int64_t t = 0; t < T; ++t) {
    if (positions[static_cast<std::size_t>(t)] < 0)
      continue;  // checked below (no throw inside the parallel region)
    const std::int64_t visible = std::min(N, indexer_visible(positions[static_cast<std::size_t>(t)]));
    for (std::int64_t j = 0; j < visible; ++j) {
      double total = 0;
      for (std::int64_t h = 0; h < n_heads; ++h) {
        double dot = 0;
        for (std::int64_t k = 0; k < head_dim; ++k) dot += qq(t, h * head_dim + k) * kk(j, k);
        dot = bf16_if(dot, bf);
        const double relu = dot > 0 ? dot : (dot == dot ? 0.0 : dot);  // ReLU, NaN propagates
        total += bf16_if(ww(t, h) * relu, bf);
      }
      scores(t, j) = bf16_if(total, bf);
    }
  }
  for (std::int64_t t = 0; t < T; ++t)
    if (positions[static_cast<std::size_t>(t)] < 0)
      throw ShapeError("indexer.positions[" + std::to_string(t) + "] = " +
                       std::to_string(positions[static_cast<std::size_t>(t)]) + " is negative");
  return scores;
}

std::vector<std::int64_t> select_topk(std::span<const double> scores, std::int64_t k) {
  if (k < 0) throw ShapeError("select_topk: k must be >= 0, got " + std::to_string(k));
  std::vector<std::int64_t> cand;
  cand.reserve(scores.size());
  for (std::size_t j = 0; j < scores.size(); ++j)
    if (!std::isnan(scores[j])) cand.push_back(static_cast<std::int64_t>(j));
  const auto take = static_cast<std::ptrdiff_t>(std::min<std::int64_t>(k, static_cast<std::int64_t>(cand.size())));
  // A strict total order on the non-NaN candidates: score descending, then index ascending.
  auto before = [&](std::int64_t a, std::int64_t b) {
    const double sa = scores[static_cast<std::size_t>(a)], sb = scores[static_cast<std::size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  };
  std::partial_sort(cand.begin(), cand.begin() + take, cand.end(), before);
  cand.resize(static_cast<std::size_t>(take));
  return cand;
}

std::vector<std::int64_t> index_topk(std::span<const double> score_row, std::int64_t t,
                                     std::int64_t index_topk_k) {
  if (t < 0) throw ShapeError("index_topk: position must be >= 0, got " + std::to_string(t));
  if (index_topk_k <= 0)
    throw ConfigError("index_topk: K_I must be > 0, got " + std::to_string(index_topk_k));
  const std::int64_t visible = indexer_visible(t);
  if (static_cast<std::int64_t>(score_row.size()) < visible)
    throw ShapeError("index_topk: query " + std::to_string(t) + " sees " + std::to_string(visible) +
                     " entries, score row has only " + std::to_string(score_row.size()));
  return select_topk(score_row.first(static_cast<std::size_t>(visible)),
                     std::min(index_topk_k, visible));
}

IndexerPrefill indexer_prefill(const Mat& x, const Mat& c, const IndexerWeights& w,
                               const RopeTable& rope, double norm_eps, std::int64_t index_topk_k,
                               const PrecisionPolicy& policy) {
  if (x.rows() != c.rows())
    throw ShapeError(w.prefix + "c (indexer_prefill): expected " + std::to_string(x.rows()) +
                     " rows like x, got " + std::to_string(c.rows()));
  IndexerPrefill out;
  out.keys = compress_prefill(x, w.compressor, rope, norm_eps, policy);
  const std::vector<std::int64_t> pos = position_range(0, x.rows());
  out.queries = index_queries(c, pos, w, rope, policy);
  out.head_weights = index_head_weights(x, w, policy);
  out.scores = index_scores(out.queries, out.head_weights, out.keys, pos, w.n_heads, w.head_dim, policy);
  out.topk.resize(static_cast<std::size_t>(x.rows()));
  for (std::int64_t t = 0; t < x.rows(); ++t) {
    const auto row = out.scores.row(t);
    out.topk[static_cast<std::size_t>(t)] =
        index_topk(std::span<const double>(row.data(), static_cast<std::size_t>(row.size())), t,
                   index_topk_k);
  }
  return out;
}

}  // namespace v4ref::ref
