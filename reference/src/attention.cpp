// The attention sub-block (v4-forward.md §5.1–§5.5, §8.0, §12). Precision points: attention.hpp.
#include "v4ref/ref/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/norm.hpp"
#include "v4ref/ref/quant.hpp"

namespace v4ref::ref {
namespace {

void check_linear(const LinearWeight& lw, std::int64_t out, std::int64_t in, const std::string& name) {
  if (lw.w.rows() != out || lw.w.cols() != in)
    throw ShapeError(name + ": expected [" + std::to_string(out) + ", " + std::to_string(in) + "], got " +
                     dims(lw.w.rows(), lw.w.cols()));
}

void check_vec(const Vec& v, std::int64_t n, const std::string& name) {
  if (v.size() != n)
    throw ShapeError(name + ": expected [" + std::to_string(n) + "], got [" + std::to_string(v.size()) + "]");
}

void check_input(const Mat& x, const ModelConfig& cfg, const std::string& what) {
  if (x.cols() != cfg.dim)
    throw ShapeError(what + ": input expected [T, " + std::to_string(cfg.dim) + "], got " +
                     dims(x.rows(), x.cols()));
}

}  // namespace

AttentionWeights load_attention_weights(const Checkpoint& ckpt, const ModelConfig& cfg,
                                        const LayerConfig& layer) {
  const std::string p = layer.prefix + "attn.";
  AttentionWeights w;
  w.prefix = layer.prefix + "attn";
  w.wq_a = load_linear(ckpt, p + "wq_a", cfg.q_lora_rank, cfg.dim);
  w.q_norm = load_vector(ckpt, p + "q_norm.weight", cfg.q_lora_rank);
  w.wq_b = load_linear(ckpt, p + "wq_b", cfg.q_dim(), cfg.q_lora_rank);
  w.wkv = load_linear(ckpt, p + "wkv", cfg.head_dim, cfg.dim);
  w.kv_norm = load_vector(ckpt, p + "kv_norm.weight", cfg.head_dim);
  w.wo_a = load_linear(ckpt, p + "wo_a", cfg.o_dim(), cfg.group_in_dim());
  // OFF's converter dequantises wo_a to bf16 (exact, §1.5) and its forward contracts it in bf16
  // without activation quantisation (§2.5 item 1, §15.7).
  w.wo_a.act_q8 = false;
  w.wo_b = load_linear(ckpt, p + "wo_b", cfg.dim, cfg.o_dim());
  w.attn_sink = load_vector(ckpt, p + "attn_sink", cfg.n_heads);
  check_attention_weights(w, cfg);
  return w;
}

void check_attention_weights(const AttentionWeights& w, const ModelConfig& cfg) {
  const std::string& p = w.prefix;
  check_linear(w.wq_a, cfg.q_lora_rank, cfg.dim, p + ".wq_a");
  check_vec(w.q_norm, cfg.q_lora_rank, p + ".q_norm.weight");
  check_linear(w.wq_b, cfg.q_dim(), cfg.q_lora_rank, p + ".wq_b");
  check_linear(w.wkv, cfg.head_dim, cfg.dim, p + ".wkv");
  check_vec(w.kv_norm, cfg.head_dim, p + ".kv_norm.weight");
  check_linear(w.wo_a, cfg.o_dim(), cfg.group_in_dim(), p + ".wo_a");
  check_linear(w.wo_b, cfg.dim, cfg.o_dim(), p + ".wo_b");
  check_vec(w.attn_sink, cfg.n_heads, p + ".attn_sink");
  require_finite_mat(w.wq_a.w, p + ".wq_a");
  require_finite_vec(w.q_norm, p + ".q_norm.weight");
  require_finite_mat(w.wq_b.w, p + ".wq_b");
  require_finite_mat(w.wkv.w, p + ".wkv");
  require_finite_vec(w.kv_norm, p + ".kv_norm.weight");
  require_finite_mat(w.wo_a.w, p + ".wo_a");
  require_finite_mat(w.wo_b.w, p + ".wo_b");
  require_finite_vec(w.attn_sink, p + ".attn_sink");
}

QueryPath attention_query(const Mat& x, const AttentionWeights& w, const ModelConfig& cfg,
                          const RopeTable& table, std::span<const std::int64_t> positions,
                          const PrecisionPolicy& policy) {
  check_input(x, cfg, w.prefix + " query path");
  QueryPath r;
  r.c = rms_norm(apply_linear(w.wq_a, x, policy), w.q_norm, cfg.norm_eps, policy, w.prefix + ".q_norm");
  r.q = head_rms_norm(apply_linear(w.wq_b, r.c, policy), cfg.n_heads, cfg.head_dim, cfg.norm_eps, policy,
                      w.prefix + ".q_head_norm");
  apply_rope_heads_inplace(r.q, cfg.n_heads, cfg.head_dim, positions, table, policy, false,
                           w.prefix + ".q rope");
  return r;
}

void kv_nope_q8_inplace(Mat& kv, std::int64_t rope_dim, const PrecisionPolicy& policy) {
  if (!policy.on(QuantPoint::kKvWindowQ8)) return;
  const std::int64_t nope = kv.cols() - rope_dim;
  if (nope < 0 || nope % 64 != 0)
    throw ShapeError("kv_nope_q8: nope width (" + std::to_string(kv.cols()) + " - " +
                     std::to_string(rope_dim) + ") must be a non-negative multiple of 64 (§2.5 item 2)");
  for (Eigen::Index t = 0; t < kv.rows(); ++t) {
    const std::span<double> s(kv.row(t).data(), static_cast<std::size_t>(nope));
    q8_fake_quant(s, 64, s);
  }
}

Mat attention_kv(const Mat& x, const AttentionWeights& w, const ModelConfig& cfg,
                 const RopeTable& table, std::span<const std::int64_t> positions,
                 const PrecisionPolicy& policy) {
  check_input(x, cfg, w.prefix + " kv path");
  Mat kv = rms_norm(apply_linear(w.wkv, x, policy), w.kv_norm, cfg.norm_eps, policy, w.prefix + ".kv_norm");
  apply_rope_heads_inplace(kv, 1, cfg.head_dim, positions, table, policy, false, w.prefix + ".kv rope");
  kv_nope_q8_inplace(kv, cfg.rope_head_dim, policy);
  return kv;
}

WindowRange window_range(std::int64_t t, std::int64_t n_win) {
  if (t < 0 || n_win < 1)
    throw ShapeError("window_range: need t >= 0 and n_win >= 1, got t " + std::to_string(t) + ", n_win " +
                     std::to_string(n_win));
  return {std::max<std::int64_t>(0, t - n_win + 1), t};
}

std::int64_t visible_entries(std::int64_t t, std::int64_t m) {
  if (t < 0 || m < 1)
    throw ShapeError("visible_entries: need t >= 0 and m >= 1, got t " + std::to_string(t) + ", m " +
                     std::to_string(m));
  return (t + 1) / m;
}

std::vector<std::vector<std::int64_t>> all_visible_selections(std::int64_t q_start,
                                                              std::int64_t n_queries,
                                                              std::int64_t m) {
  std::vector<std::vector<std::int64_t>> sel(static_cast<std::size_t>(std::max<std::int64_t>(n_queries, 0)));
  for (std::int64_t i = 0; i < n_queries; ++i) {
    const std::int64_t v = visible_entries(q_start + i, m);
    auto& s = sel[static_cast<std::size_t>(i)];
    s.resize(static_cast<std::size_t>(v));
    for (std::int64_t j = 0; j < v; ++j) s[static_cast<std::size_t>(j)] = j;
  }
  return sel;
}

namespace {

void check_core_shapes(const Mat& q_heads, const Mat& keys, const Vec& sink, const char* what) {
  if (keys.rows() > 0 && keys.cols() != q_heads.cols())
    throw ShapeError(std::string(what) + ": keys expected [n, " + std::to_string(q_heads.cols()) + "], got " +
                     dims(keys.rows(), keys.cols()));
  if (sink.size() != q_heads.rows())
    throw ShapeError(std::string(what) + ": attn_sink expected [" + std::to_string(q_heads.rows()) +
                     "] (one per head), got [" + std::to_string(sink.size()) + "]");
}

// Unnormalised probabilities e^{ℓ−M} [H, n] and the denominators Σ e^{ℓ−M} + e^{sink−M} [H].
void sink_softmax_parts(const Mat& q_heads, const Mat& keys, const Vec& sink, double scale, Mat& p,
                        Vec& den) {
  const Eigen::Index h_n = q_heads.rows(), n = keys.rows();
  p = (q_heads * keys.transpose()) * scale;  // logits ℓ [H, n]
  den.resize(h_n);
  for (Eigen::Index h = 0; h < h_n; ++h) {
    double mx = p(h, 0);
    for (Eigen::Index s = 1; s < n; ++s) mx = std::max(mx, p(h, s));
    double sum = 0;
    for (Eigen::Index s = 0; s < n; ++s) sum += (p(h, s) = std::exp(p(h, s) - mx));
    den(h) = sum + std::exp(sink(h) - mx);  // the sink: denominator only, not scaled (§5.4)
  }
}

}  // namespace

Mat sink_attention_weights(const Mat& q_heads, const Mat& keys, const Vec& sink, double scale) {
  check_core_shapes(q_heads, keys, sink, "sink_attention_weights");
  if (keys.rows() == 0) return Mat(q_heads.rows(), 0);
  Mat p;
  Vec den;
  sink_softmax_parts(q_heads, keys, sink, scale, p, den);
  for (Eigen::Index h = 0; h < p.rows(); ++h) p.row(h) /= den(h);
  return p;
}

Mat sink_attention(const Mat& q_heads, const Mat& keys, const Vec& sink, double scale,
                   const PrecisionPolicy& policy) {
  check_core_shapes(q_heads, keys, sink, "sink_attention");
  if (keys.rows() == 0) return Mat::Zero(q_heads.rows(), q_heads.cols());  // no key: output 0
  Mat p;
  Vec den;
  sink_softmax_parts(q_heads, keys, sink, scale, p, den);
  round_bf16_if(p, policy, QuantPoint::kBf16AttnProbs);  // P rounded before P·V; den unrounded
  Mat o = p * keys;                                       // [H, D]
  for (Eigen::Index h = 0; h < o.rows(); ++h) o.row(h) /= den(h);
  round_bf16_if(o, policy, QuantPoint::kBf16AttnOut);
  return o;
}

namespace {

// attention_core's and attention_lse's argument checks (ShapeError / NumericError naming the input).
void check_core_inputs(const Mat& q, const Mat& kv, const Mat& compressed,
                       std::span<const std::vector<std::int64_t>> selected, const Vec& sink,
                       std::int64_t q_start, const ModelConfig& cfg) {
  const std::int64_t h_n = cfg.n_heads, d = cfg.head_dim, tq = q.rows();
  if (q.cols() != h_n * d)
    throw ShapeError("attention_core: q expected [T, " + std::to_string(h_n * d) + "], got " +
                     dims(q.rows(), q.cols()));
  if (kv.cols() != d)
    throw ShapeError("attention_core: kv expected [T, " + std::to_string(d) + "], got " +
                     dims(kv.rows(), kv.cols()));
  if (compressed.rows() > 0 && compressed.cols() != d)
    throw ShapeError("attention_core: compressed expected [N, " + std::to_string(d) + "], got " +
                     dims(compressed.rows(), compressed.cols()));
  if (q_start < 0 || kv.rows() < q_start + tq)
    throw ShapeError("attention_core: kv must hold positions 0 .. " + std::to_string(q_start + tq - 1) +
                     " (q_start " + std::to_string(q_start) + " + " + std::to_string(tq) +
                     " queries), got " + std::to_string(kv.rows()) + " rows");
  if (!selected.empty() && static_cast<std::int64_t>(selected.size()) != tq)
    throw ShapeError("attention_core: selected expected empty or " + std::to_string(tq) +
                     " lists (one per query), got " + std::to_string(selected.size()));
  if (sink.size() != h_n)
    throw ShapeError("attention_core: attn_sink expected [" + std::to_string(h_n) + "], got [" +
                     std::to_string(sink.size()) + "]");
  for (std::size_t i = 0; i < selected.size(); ++i)
    for (const std::int64_t j : selected[i])
      if (j != -1 && (j < 0 || j >= compressed.rows()))
        throw ShapeError("attention_core: selected[" + std::to_string(i) + "] holds entry " +
                         std::to_string(j) + ", outside [0, " + std::to_string(compressed.rows()) +
                         ") (−1 is padding)");
  require_finite_mat(q, "attention_core q");
  require_finite_mat(kv.topRows(q_start + tq), "attention_core kv");
  require_finite_mat(compressed, "attention_core compressed");
  require_finite_vec(sink, "attention_core attn_sink");

}

}  // namespace

Mat attention_core(const Mat& q, const Mat& kv, const Mat& compressed,
                   std::span<const std::vector<std::int64_t>> selected, const Vec& sink,
                   std::int64_t q_start, const ModelConfig& cfg, const PrecisionPolicy& policy) {
  check_core_inputs(q, kv, compressed, selected, sink, q_start, cfg);
  const std::int64_t h_n = cfg.n_heads, d = cfg.head_dim, tq = q.rows();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  Mat o(tq, h_n * d);
  // Queries are independent and each row is computed by one thread in a fixed order: the result
  // does not depend on the thread count. No exception can leave the loop (all checks above).
#pragma omp parallel for schedule(static) if (tq > 1)
  for (std::int64_t i = 0; i < tq; ++i) {
    const std::int64_t t = q_start + i;
    const WindowRange win{std::max<std::int64_t>(0, t - cfg.window_size + 1), t};
    std::int64_t n_sel = 0;
    if (!selected.empty())
      for (const std::int64_t j : selected[static_cast<std::size_t>(i)]) n_sel += j != -1;
    Mat keys(win.size() + n_sel, d);
    keys.topRows(win.size()) = kv.middleRows(win.first, win.size());
    Eigen::Index r = win.size();
    if (!selected.empty())
      for (const std::int64_t j : selected[static_cast<std::size_t>(i)])
        if (j != -1) keys.row(r++) = compressed.row(j);
    const Mat qh = Eigen::Map<const Mat>(q.row(i).data(), h_n, d);
    const Mat oh = sink_attention(qh, keys, sink, scale, policy);
    o.row(i) = Eigen::Map<const Eigen::RowVectorXd>(oh.data(), h_n * d);
  }
  return o;
}

Mat attention_lse(const Mat& q, const Mat& kv, const Mat& compressed,
                  std::span<const std::vector<std::int64_t>> selected, const Vec& sink,
                  std::int64_t q_start, const ModelConfig& cfg) {
  check_core_inputs(q, kv, compressed, selected, sink, q_start, cfg);
  const std::int64_t h_n = cfg.n_heads, d = cfg.head_dim, tq = q.rows();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  Mat lse(tq, h_n);
  for (std::int64_t i = 0; i < tq; ++i) {
    const std::int64_t t = q_start + i;
    const WindowRange win{std::max<std::int64_t>(0, t - cfg.window_size + 1), t};
    std::vector<Eigen::RowVectorXd> rows;
    for (std::int64_t s = win.first; s <= win.last; ++s) rows.emplace_back(kv.row(s));
    if (!selected.empty())
      for (const std::int64_t j : selected[static_cast<std::size_t>(i)])
        if (j != -1) rows.emplace_back(compressed.row(j));
    for (std::int64_t h = 0; h < h_n; ++h) {
      const Eigen::RowVectorXd qh = q.row(i).segment(h * d, d);
      std::vector<double> l(rows.size());
      double mx = -std::numeric_limits<double>::infinity();
      for (std::size_t s = 0; s < rows.size(); ++s) mx = std::max(mx, l[s] = qh.dot(rows[s]) * scale);
      mx = std::max(mx, sink(h));  // the sink may dominate the logits by any amount
      double sum = std::exp(sink(h) - mx);
      for (const double x : l) sum += std::exp(x - mx);
      lse(i, h) = mx + std::log(sum);
    }
  }
  return lse;
}

Mat derotate_output(const Mat& o, const ModelConfig& cfg, const RopeTable& table,
                    std::span<const std::int64_t> positions, const PrecisionPolicy& policy) {
  Mat y = o;
  apply_rope_heads_inplace(y, cfg.n_heads, cfg.head_dim, positions, table, policy, true,
                           "attention output de-rotation");
  return y;
}

Mat grouped_output_projection(const Mat& o, const LinearWeight& wo_a, const LinearWeight& wo_b,
                              const ModelConfig& cfg, const PrecisionPolicy& policy) {
  const std::int64_t g_n = cfg.o_groups, r_o = cfg.o_lora_rank, gin = cfg.group_in_dim();
  if (o.cols() != cfg.q_dim())
    throw ShapeError("grouped_output_projection: o expected [T, " + std::to_string(cfg.q_dim()) + "], got " +
                     dims(o.rows(), o.cols()));
  check_linear(wo_a, g_n * r_o, gin, wo_a.name);
  check_linear(wo_b, cfg.dim, g_n * r_o, wo_b.name);
  Mat y(o.rows(), g_n * r_o);  // group-major concat of y_g
  for (std::int64_t g = 0; g < g_n; ++g) {
    Mat z = o.middleCols(g * gin, gin);  // heads g·H/G .. (g+1)·H/G − 1, head-major
    if (wo_a.act_q8 && policy.on(QuantPoint::kActQ8))
      for (Eigen::Index t = 0; t < z.rows(); ++t) {
        const std::span<double> s(z.row(t).data(), static_cast<std::size_t>(gin));
        q8_fake_quant(s, 128, s);
      }
    y.middleCols(g * r_o, r_o) = z * wo_a.w.middleRows(g * r_o, r_o).transpose();
  }
  round_bf16_if(y, policy, QuantPoint::kBf16Linear);
  return apply_linear(wo_b, y, policy);
}

Mat attention_sublayer(const Mat& x, const AttentionWeights& w, const ModelConfig& cfg,
                       const LayerConfig& layer, const Mat& compressed,
                       std::span<const std::vector<std::int64_t>> selected,
                       const PrecisionPolicy& policy) {
  check_attention_weights(w, cfg);
  check_input(x, cfg, w.prefix);
  require_finite_mat(x, w.prefix + " input");
  const RopeTable table = rope_table_for(cfg, layer);
  const std::vector<std::int64_t> pos = position_range(0, x.rows());
  const QueryPath qp = attention_query(x, w, cfg, table, pos, policy);
  const Mat kv = attention_kv(x, w, cfg, table, pos, policy);
  const Mat o = attention_core(qp.q, kv, compressed, selected, w.attn_sink, 0, cfg, policy);
  return grouped_output_projection(derotate_output(o, cfg, table, pos, policy), w.wo_a, w.wo_b, cfg,
                                   policy);
}

Mat attention_sublayer_swa(const Mat& x, const AttentionWeights& w, const ModelConfig& cfg,
                           const LayerConfig& layer, const PrecisionPolicy& policy) {
  if (layer.kind != LayerKind::kSwa)
    throw ConfigError(w.prefix + ": attention_sublayer_swa called for a " + layer_kind_name(layer.kind) +
                      " layer (ratio " + std::to_string(layer.ratio) +
                      "); CSA/HCA layers need compressed keys (attention_sublayer)");
  const Mat none(0, cfg.head_dim);
  return attention_sublayer(x, w, cfg, layer, none, {}, policy);
}

}  // namespace v4ref::ref
