// One V4 layer assembled from the components (v4-forward.md §3, §8.0). See layer.hpp.
#include "v4ref/ref/layer.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/norm.hpp"
#include "v4ref/ref/rope.hpp"

namespace v4ref::ref {
namespace {

void put(LayerTrace* trace, const std::string& key, Mat value) {
  if (trace != nullptr) trace->tensors[key] = std::move(value);
}

}  // namespace

void trace_hc_mix(LayerTrace* trace, const std::string& which, const std::vector<HcMix>& mix,
                  std::int64_t hc) {
  if (trace == nullptr) return;
  const auto t_n = static_cast<Eigen::Index>(mix.size());
  Mat pre(t_n, hc), post(t_n, hc), comb(t_n, hc * hc);
  for (Eigen::Index t = 0; t < t_n; ++t) {
    const HcMix& m = mix[static_cast<std::size_t>(t)];
    pre.row(t) = m.pre.transpose();
    post.row(t) = m.post.transpose();
    for (std::int64_t j = 0; j < hc; ++j)
      for (std::int64_t k = 0; k < hc; ++k) comb(t, j * hc + k) = m.comb(j, k);
  }
  put(trace, which + ".pre", std::move(pre));
  put(trace, which + ".post", std::move(post));
  put(trace, which + ".comb", std::move(comb));
}

namespace {

void check_layer_match(const LayerWeights& w, const LayerConfig& layer) {
  if (w.layer.index != layer.index || w.layer.kind != layer.kind)
    throw ConfigError(layer.prefix + ": weights loaded for " + w.layer.prefix + " (" +
                      layer_kind_name(w.layer.kind) + "), called as a " + layer_kind_name(layer.kind) +
                      " layer");
  if (layer.kind != LayerKind::kSwa && !w.compressor)
    throw ConfigError(layer.prefix + ": " + layer_kind_name(layer.kind) +
                      " layer without main compressor weights");
  if (layer.kind == LayerKind::kCsa && !w.indexer)
    throw ConfigError(layer.prefix + ": CSA layer without indexer weights");
}

}  // namespace

const Mat& LayerTrace::at(const std::string& key) const {
  const auto it = tensors.find(key);
  if (it == tensors.end()) {
    std::string present;
    for (const auto& [k, v] : tensors) present += (present.empty() ? "" : ", ") + k;
    throw Error("LayerTrace: no tensor \"" + key + "\" (present: " + present + ")");
  }
  return it->second;
}

LayerWeights load_layer(const Checkpoint& ckpt, const ModelConfig& cfg, std::int64_t layer_index,
                        ExpertLoading loading, std::shared_ptr<WeightCache> expert_cache) {
  LayerWeights w;
  w.layer = layer_config(cfg, layer_index);
  w.attn = load_attention_weights(ckpt, cfg, w.layer);
  if (w.layer.kind != LayerKind::kSwa)
    w.compressor = load_layer_compressor(ckpt, cfg, layer_index, CompressorKind::kMain);
  if (w.layer.kind == LayerKind::kCsa) w.indexer = load_indexer(ckpt, cfg, layer_index);
  w.hc_attn = load_hc_params(ckpt, cfg, w.layer.prefix, "attn");
  w.hc_ffn = load_hc_params(ckpt, cfg, w.layer.prefix, "ffn");
  w.attn_norm = load_vector(ckpt, w.layer.prefix + "attn_norm.weight", cfg.dim);
  w.ffn_norm = load_vector(ckpt, w.layer.prefix + "ffn_norm.weight", cfg.dim);
  w.moe = load_moe(ckpt, cfg, layer_index, loading, std::move(expert_cache));
  return w;
}

std::int64_t resident_bytes(const LayerWeights& w) {
  std::int64_t n = 0;  // doubles
  const auto lin = [&](const LinearWeight& l) { n += l.w.size(); };
  const auto cmp = [&](const CompressorWeights& c) {
    lin(c.wkv);
    lin(c.wgate);
    n += c.ape.size() + c.norm.size();
  };
  const auto hc = [&](const HcParams& p) { n += p.fn.size() + p.base.size() + p.scale.size(); };
  const AttentionWeights& a = w.attn;
  for (const LinearWeight* l : {&a.wq_a, &a.wq_b, &a.wkv, &a.wo_a, &a.wo_b}) lin(*l);
  n += a.q_norm.size() + a.kv_norm.size() + a.attn_sink.size();
  if (w.compressor) cmp(*w.compressor);
  if (w.indexer) {
    lin(w.indexer->wq_b);
    lin(w.indexer->weights_proj);
    cmp(w.indexer->compressor);
  }
  hc(w.hc_attn);
  hc(w.hc_ffn);
  n += w.attn_norm.size() + w.ffn_norm.size();
  const MoeWeights& m = w.moe;
  lin(m.gate);
  n += m.bias.size() + m.tid2eid.size();  // int64 entries: 8 bytes each, as a double
  std::int64_t bytes = static_cast<std::int64_t>(sizeof(double)) * n + resident_bytes(m.shared);
  if (!m.experts.on_demand())
    for (std::int64_t e = 0; e < m.experts.size(); ++e) bytes += resident_bytes(*m.experts.get(e));
  return bytes;
}

Mat attention_sublayer_prefill(const Mat& x, const LayerWeights& w, const ModelConfig& cfg,
                               const LayerConfig& layer, const PrecisionPolicy& policy,
                               LayerTrace* trace) {
  check_layer_match(w, layer);
  check_attention_weights(w.attn, cfg);
  if (x.cols() != cfg.dim)
    throw ShapeError(layer.prefix + "attn input: expected [T, " + std::to_string(cfg.dim) + "], got [" +
                     std::to_string(x.rows()) + ", " + std::to_string(x.cols()) + "]");
  require_finite_mat(x, layer.prefix + "attn input");

  const std::int64_t t_n = x.rows();
  const RopeTable table = rope_table_for(cfg, layer);
  const std::vector<std::int64_t> pos = position_range(0, t_n);

  QueryPath qp = attention_query(x, w.attn, cfg, table, pos, policy);  // §5.1
  Mat kv = attention_kv(x, w.attn, cfg, table, pos, policy);           // §5.2

  Mat compressed(0, cfg.head_dim);
  std::vector<std::vector<std::int64_t>> selected;  // empty: window only
  if (layer.kind != LayerKind::kSwa)
    compressed = compress_prefill(x, *w.compressor, table, cfg.norm_eps, policy);  // §6
  if (layer.kind == LayerKind::kHca) {
    selected = all_visible_selections(0, t_n, layer.ratio);
  } else if (layer.kind == LayerKind::kCsa) {
    IndexerPrefill ip =
        indexer_prefill(x, qp.c, *w.indexer, table, cfg.norm_eps, cfg.index_topk, policy);  // §7
    selected = std::move(ip.topk);
    if (trace != nullptr) {
      Mat idx = Mat::Constant(t_n, cfg.index_topk, -1.0);
      for (std::int64_t t = 0; t < t_n; ++t) {
        const auto& s = selected[static_cast<std::size_t>(t)];
        for (std::size_t r = 0; r < s.size(); ++r)
          idx(t, static_cast<Eigen::Index>(r)) = static_cast<double>(s[r]);
      }
      put(trace, "attn.index_keys", std::move(ip.keys));
      put(trace, "attn.index_scores", std::move(ip.scores));
      put(trace, "attn.topk_idx", std::move(idx));
    }
  }

  Mat o = attention_core(qp.q, kv, compressed, selected, w.attn.attn_sink, 0, cfg, policy);  // §5.4
  Mat out = grouped_output_projection(derotate_output(o, cfg, table, pos, policy), w.attn.wo_a,
                                      w.attn.wo_b, cfg, policy);  // §5.5
  if (trace != nullptr) {
    put(trace, "attn.c", std::move(qp.c));
    put(trace, "attn.q", std::move(qp.q));
    put(trace, "attn.kv", std::move(kv));
    if (layer.kind != LayerKind::kSwa) put(trace, "attn.compressed", std::move(compressed));
    put(trace, "attn.o", std::move(o));
    put(trace, "attn.out", out);
  }
  return out;
}

Mat block_forward(const Mat& X, std::span<const std::int64_t> token_ids, const LayerWeights& w,
                  const ModelConfig& cfg, const LayerConfig& layer, const PrecisionPolicy& policy,
                  LayerTrace* trace) {
  check_layer_match(w, layer);
  if (X.cols() != cfg.hc_dim())
    throw ShapeError(layer.prefix + "block input: expected [T, " + std::to_string(cfg.hc_dim()) +
                     "] (hc_mult·d), got [" + std::to_string(X.rows()) + ", " +
                     std::to_string(X.cols()) + "]");
  if (static_cast<std::int64_t>(token_ids.size()) != X.rows())
    throw ShapeError(layer.prefix + "block: " + std::to_string(token_ids.size()) + " token ids for " +
                     std::to_string(X.rows()) + " positions");
  const std::int64_t hc = cfg.hc_mult;
  if (trace != nullptr) put(trace, "block.in", X);

  // Attention sub-block.
  HcPreResult pa = hc_pre(X, w.hc_attn, cfg, policy);
  const Mat xa = rms_norm(pa.u, w.attn_norm, cfg.norm_eps, policy, layer.prefix + "attn_norm");
  const Mat a = attention_sublayer_prefill(xa, w, cfg, layer, policy, trace);
  Mat x1 = hc_post(a, X, pa.mix, hc, policy);
  if (trace != nullptr) {
    put(trace, "hc_attn.u", std::move(pa.u));
    trace_hc_mix(trace, "hc_attn", pa.mix, hc);
    put(trace, "attn_norm", xa);
    put(trace, "hc_attn.out", x1);
  }

  // MoE sub-block.
  HcPreResult pf = hc_pre(x1, w.hc_ffn, cfg, policy);
  const Mat z = rms_norm(pf.u, w.ffn_norm, cfg.norm_eps, policy, layer.prefix + "ffn_norm");
  Routing routing;
  const Mat f = moe_forward(z, token_ids, w.moe, policy, &routing);
  Mat x2 = hc_post(f, x1, pf.mix, hc, policy);
  if (trace != nullptr) {
    put(trace, "hc_ffn.u", std::move(pf.u));
    trace_hc_mix(trace, "hc_ffn", pf.mix, hc);
    put(trace, "ffn_norm", z);
    put(trace, "ffn.scores", std::move(routing.scores));
    put(trace, "ffn.routed_idx", routing.experts.cast<double>());
    put(trace, "ffn.route_weights", std::move(routing.weights));
    put(trace, "ffn.out", f);
    put(trace, "block.out", x2);
  }
  return x2;
}

}  // namespace v4ref::ref
