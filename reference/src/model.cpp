// The whole model: prefill, decode with the official caches, MTP (model.hpp).
#include "v4ref/ref/model.hpp"

#include <algorithm>
#include <charconv>
#include <limits>
#include <optional>
#include <mutex>
#include <string>
#include <utility>

#include "v4ref/ref/attention.hpp"
#include "v4ref/ref/checkpoint_layout.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/indexer.hpp"
#include "v4ref/ref/mhc.hpp"
#include "v4ref/ref/moe.hpp"
#include "v4ref/ref/norm.hpp"
#include "v4ref/ref/rope.hpp"

namespace v4ref::ref {
namespace {

// Rows [r0, r1) of a bf16 [rows, cols] tensor as doubles (exact).
Mat bf16_rows(const TensorView& t, std::int64_t r0, std::int64_t r1) {
  const std::int64_t cols = t.dim(1);
  Mat out(r1 - r0, cols);
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      out(r - r0, c) = fmt::bf16_to_double(t.raw<std::uint16_t>(r * cols + c));
  return out;
}

// The MTP block's own tensors besides the block (§10.2).
struct MtpParams {
  LinearWeight e_proj, h_proj;  // [d, d] fp8, Q8 input
  Vec enorm, hnorm, norm;       // [d]
  HcHeadParams hc_head;
};

// X0 of §10.2 for T positions: X0[k] = e_proj(RMSNorm_enorm(e)) + h_proj(RMSNorm_hnorm(X_L[k])),
// e = embedding rows [T, d], x_l = main-model streams [T, hc·d]. The three intermediates go to
// `parts` as "embed", "enorm", "hnorm" [T, hc·d] (trace.hpp).
Mat mtp_block_input(const Mat& x_l, Mat e, const MtpParams& mp, const ModelConfig& cfg,
                    const PrecisionPolicy& policy, const std::string& prefix, LayerTrace& parts) {
  const std::int64_t T = e.rows(), d = cfg.dim, hc = cfg.hc_mult;
  Mat en = rms_norm(e, mp.enorm, cfg.norm_eps, policy, prefix + "enorm");
  // hnorm per stream: rows of [T·hc, d] are the streams (row-major, stream-major within a row).
  const Mat xs = Eigen::Map<const Mat>(x_l.data(), T * hc, d);
  const Mat hn = rms_norm(xs, mp.hnorm, cfg.norm_eps, policy, prefix + "hnorm");
  const Mat pe = apply_linear(mp.e_proj, en, policy);  // [T, d], broadcast to every stream
  const Mat ph = apply_linear(mp.h_proj, hn, policy);  // [T·hc, d]
  Mat x0(T, hc * d);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t k = 0; k < hc; ++k) x0.block(t, k * d, 1, d) = pe.row(t) + ph.row(t * hc + k);
  round_bf16_if(x0, policy, QuantPoint::kBf16Residual);
  parts.tensors["embed"] = std::move(e);
  parts.tensors["enorm"] = std::move(en);
  parts.tensors["hnorm"] = Eigen::Map<const Mat>(hn.data(), T, hc * d);
  return x0;
}

// ---- cost charging (cost_model.hpp §7): shapes of the operands actually used ----------------

struct Charge {
  CostCounter* cc;
  std::int64_t layer;
  CostLayerKind kind;
  void operator()(CostComponent c, PrecisionClass p, std::int64_t flops) const {
    if (cc != nullptr) cc->add(layer, kind, c, p, flops);
  }
};

std::int64_t matmul_flops(const Mat& w, std::int64_t rows = 1) { return 2 * w.rows() * w.cols() * rows; }

PrecisionClass routed_class(const ModelConfig& cfg) {
  return cfg.expert_dtype == ExpertDtype::kFp4 ? PrecisionClass::kFp4w : PrecisionClass::kFp8;
}

void check_streams(const Mat& x, std::int64_t rows, const ModelConfig& cfg, const std::string& what) {
  if (x.rows() != rows || x.cols() != cfg.hc_dim())
    throw ShapeError(what + ": expected " + dims(rows, cfg.hc_dim()) + " (T, hc_mult·d), got " +
                     dims(x.rows(), x.cols()));
}

// Copies one layer's trace into the model trace under its prefix, in block_keys() order.
void put_layer_trace(Trace& trace, const std::string& prefix, LayerTrace& lt) {
  for (const std::string& k : trace_names::block_keys()) {
    auto it = lt.tensors.find(k);
    if (it != lt.tensors.end()) trace.put(prefix + k, std::move(it->second));
  }
}

// Decode form: one row per step; cache tensors replaced; index rows padded (trace.hpp).
void append_layer_trace(Trace& trace, const std::string& prefix, LayerTrace& lt) {
  for (const std::string& k : trace_names::block_keys()) {
    auto it = lt.tensors.find(k);
    if (it == lt.tensors.end()) continue;
    if (k == "attn.compressed" || k == "attn.index_keys")
      trace.put(prefix + k, std::move(it->second));
    else if (k == "attn.index_scores")
      trace.append_rows(prefix + k, it->second, -std::numeric_limits<double>::infinity());
    else if (k == "attn.topk_idx")
      trace.append_rows(prefix + k, it->second, -1.0);
    else
      trace.append_rows(prefix + k, it->second, 0.0);
  }
}

Mat append_row(const Mat& m, const Vec& row) {
  Mat out(m.rows() + 1, row.size());
  if (m.rows() > 0) out.topRows(m.rows()) = m;
  out.row(m.rows()) = row.transpose();
  return out;
}

// Caches left by a prefill of the T positions whose attention input is xa [T, d] (§11.2).
LayerCache cache_from_prefill(const Mat& xa, const LayerWeights& w, const ModelConfig& cfg,
                              const PrecisionPolicy& policy) {
  const std::int64_t T = xa.rows(), n_win = cfg.window_size;
  LayerCache c;
  c.layer = w.layer;
  c.next_position = T;
  const RopeTable table = rope_table_for(cfg, w.layer);
  const Mat kv = attention_kv(xa, w.attn, cfg, table, position_range(0, T), policy);
  c.window = Mat::Zero(n_win, cfg.head_dim);
  for (std::int64_t p = std::max<std::int64_t>(0, T - n_win); p < T; ++p) c.window.row(p % n_win) = kv.row(p);
  if (w.compressor) {
    CompressorPrefill cp = compress_prefill_with_state(xa, *w.compressor, table, cfg.norm_eps, policy);
    c.compressed = std::move(cp.entries);
    c.main = std::move(cp.state);
  } else {
    c.compressed = Mat(0, cfg.head_dim);
  }
  if (w.indexer) {
    CompressorPrefill ip = compress_prefill_with_state(xa, w.indexer->compressor, table, cfg.norm_eps, policy);
    c.index_keys = std::move(ip.entries);
    c.indexer = std::move(ip.state);
  } else {
    c.index_keys = Mat(0, cfg.index_head_dim);
  }
  return c;
}

LayerCache empty_cache(const ModelConfig& cfg, std::int64_t layer_index) {
  LayerCache c;
  c.layer = layer_config(cfg, layer_index);
  c.window = Mat::Zero(cfg.window_size, cfg.head_dim);
  c.compressed = Mat(0, cfg.head_dim);
  c.index_keys = Mat(0, cfg.index_head_dim);
  return c;
}

// One block at position t = cache.next_position through its caches (§11.3). X [1, hc·d].
Mat block_decode_step(const Mat& X, std::int64_t token, LayerCache& cache, const LayerWeights& w,
                      const ModelConfig& cfg, const PrecisionPolicy& policy, LayerTrace* lt,
                      CostCounter* cost) {
  const LayerConfig& layer = w.layer;
  if (cache.layer.index != layer.index)
    throw ConfigError("decode: cache of " + cache.layer.prefix + " used for " + layer.prefix);
  const std::int64_t t = cache.next_position, n_win = cfg.window_size, hc = cfg.hc_mult;
  const std::int64_t H = cfg.n_heads, D = cfg.head_dim;
  const Charge charge{cost, layer.is_mtp ? layer.index : layer.index, cost_layer_kind(layer.kind)};
  using C = CostComponent;
  using P = PrecisionClass;
  const std::vector<std::int64_t> pos{t};
  const std::int64_t ids[1] = {token};
  auto put = [&](const std::string& k, Mat v) {
    if (lt != nullptr) lt->tensors[k] = std::move(v);
  };
  put("block.in", X);

  // Attention sub-block: hc_pre → attn_norm (§3).
  HcPreResult pa = hc_pre(X, w.hc_attn, cfg, policy);
  charge(C::kMhc, P::kFp32, matmul_flops(w.hc_attn.fn));
  const Mat xa = rms_norm(pa.u, w.attn_norm, cfg.norm_eps, policy, layer.prefix + "attn_norm");
  const RopeTable table = rope_table_for(cfg, layer);

  // 1. c, q (§5.1) and the K=V row (§5.2).
  QueryPath qp = attention_query(xa, w.attn, cfg, table, pos, policy);
  const Mat kv = attention_kv(xa, w.attn, cfg, table, pos, policy);
  charge(C::kProjAttn, P::kFp8,
         matmul_flops(w.attn.wq_a.w) + matmul_flops(w.attn.wq_b.w) + matmul_flops(w.attn.wkv.w));

  // 2. Indexer (CSA): its compressor may append K^I_{⌊t/4⌋}, then scores over every visible key.
  std::vector<std::vector<std::int64_t>> selected;
  if (layer.kind == LayerKind::kCsa) {
    const IndexerWeights& iw = *w.indexer;
    if (!cache.indexer) cache.indexer = make_compressor_state(iw.compressor);
    charge(C::kCompressor, P::kFp32, matmul_flops(iw.compressor.wkv.w) + matmul_flops(iw.compressor.wgate.w));
    if (auto key = compress_decode_step(xa, t, *cache.indexer, iw.compressor, table, cfg.norm_eps, policy))
      cache.index_keys = append_row(cache.index_keys, *key);
    const Mat qi = index_queries(qp.c, pos, iw, table, policy);
    const Mat wi = index_head_weights(xa, iw, policy);
    charge(C::kProjIndexer, P::kFp8, matmul_flops(iw.wq_b.w));
    charge(C::kProjIndexer, P::kBf16, matmul_flops(iw.weights_proj.w));
    const Mat scores = index_scores(qi, wi, cache.index_keys, pos, iw.n_heads, iw.head_dim, policy);
    const std::int64_t visible = indexer_visible(t);
    charge(C::kIndexerScore, P::kFp4, 2 * iw.n_heads * iw.head_dim * visible);
    std::vector<std::int64_t> top =
        index_topk(std::span<const double>(scores.data(), static_cast<std::size_t>(scores.cols())), t,
                   cfg.index_topk);
    if (lt != nullptr) {
      Mat idx = Mat::Constant(1, cfg.index_topk, -1.0);
      for (std::size_t r = 0; r < top.size(); ++r) idx(0, static_cast<Eigen::Index>(r)) = static_cast<double>(top[r]);
      put("attn.index_scores", scores);
      put("attn.topk_idx", std::move(idx));
    }
    selected.push_back(std::move(top));
  }

  // Window write: slot t mod n_win.
  cache.window.row(t % n_win) = kv.row(0);

  // 3. Main compressor (CSA/HCA): may append C_{⌊t/m⌋}.
  if (layer.kind != LayerKind::kSwa) {
    if (!cache.main) cache.main = make_compressor_state(*w.compressor);
    charge(C::kCompressor, P::kFp32, matmul_flops(w.compressor->wkv.w) + matmul_flops(w.compressor->wgate.w));
    if (auto entry = compress_decode_step(xa, t, *cache.main, *w.compressor, table, cfg.norm_eps, policy))
      cache.compressed = append_row(cache.compressed, *entry);
  }
  if (layer.kind == LayerKind::kHca) selected = all_visible_selections(t, 1, layer.ratio);

  // 4. Attention over the window (positions base .. t, from the ring buffer) ∪ selected entries.
  const std::int64_t base = std::max<std::int64_t>(0, t - n_win + 1);
  Mat kv_window(t - base + 1, D);
  for (std::int64_t p = base; p <= t; ++p) kv_window.row(p - base) = cache.window.row(p % n_win);
  std::int64_t n_sel = 0;
  for (const auto& s : selected)
    for (const std::int64_t j : s) n_sel += j != -1;
  Mat o = attention_core(qp.q, kv_window, cache.compressed, selected, w.attn.attn_sink, t - base, cfg, policy);
  charge(C::kAttnCore, P::kBf16, 2 * H * 2 * D * (kv_window.rows() + n_sel));
  const Mat a = grouped_output_projection(derotate_output(o, cfg, table, pos, policy), w.attn.wo_a,
                                          w.attn.wo_b, cfg, policy);
  charge(C::kProjAttn, P::kFp8, matmul_flops(w.attn.wo_a.w) + matmul_flops(w.attn.wo_b.w));
  Mat x1 = hc_post(a, X, pa.mix, hc, policy);
  if (lt != nullptr) {
    put("hc_attn.u", std::move(pa.u));
    trace_hc_mix(lt, "hc_attn", pa.mix, hc);
    put("attn_norm", xa);
    put("attn.c", std::move(qp.c));
    put("attn.q", std::move(qp.q));
    put("attn.kv", kv);
    if (layer.kind != LayerKind::kSwa) put("attn.compressed", cache.compressed);
    if (layer.kind == LayerKind::kCsa) put("attn.index_keys", cache.index_keys);
    put("attn.o", std::move(o));
    put("attn.out", a);
    put("hc_attn.out", x1);
  }

  // MoE sub-block.
  HcPreResult pf = hc_pre(x1, w.hc_ffn, cfg, policy);
  charge(C::kMhc, P::kFp32, matmul_flops(w.hc_ffn.fn));
  const Mat z = rms_norm(pf.u, w.ffn_norm, cfg.norm_eps, policy, layer.prefix + "ffn_norm");
  Routing routing;
  const Mat f = moe_forward(z, std::span<const std::int64_t>(ids, 1), w.moe, policy, &routing);
  charge(C::kRouter, P::kFp32, matmul_flops(w.moe.gate.w));
  charge(C::kMoeRouted, routed_class(cfg), routing.experts.cols() * 2 * 3 * w.moe.dim * w.moe.inter_dim);
  charge(C::kMoeShared, P::kFp8,
         matmul_flops(w.moe.shared.w1.w) + matmul_flops(w.moe.shared.w2.w) + matmul_flops(w.moe.shared.w3.w));
  Mat x2 = hc_post(f, x1, pf.mix, hc, policy);
  if (lt != nullptr) {
    put("hc_ffn.u", std::move(pf.u));
    trace_hc_mix(lt, "hc_ffn", pf.mix, hc);
    put("ffn_norm", z);
    put("ffn.scores", std::move(routing.scores));
    put("ffn.routed_idx", routing.experts.cast<double>());
    put("ffn.route_weights", std::move(routing.weights));
    put("ffn.out", f);
    put("block.out", x2);
  }
  ++cache.next_position;
  return x2;
}

}  // namespace

// ---- DecodeState ----------------------------------------------------------------------------

CostCounter DecodeState::kv_counter(const ModelConfig& cfg, const KvOptions& opts) const {
  if (opts.paged) throw Error("DecodeState::kv_counter: paged layouts are analytic only (kv_cache_counter)");
  const KvEntryBytes e = kv_entry_bytes(cfg, opts.layout);
  CostCounter cc;
  for (const LayerCache& c : layers) {
    const CostLayerKind kind = cost_layer_kind(c.layer.kind);
    auto put = [&](KvCacheKind cache, std::int64_t bytes) {
      if (bytes > 0) cc.add_kv_bytes(c.layer.index, kind, cache, bytes);
    };
    put(KvCacheKind::kWindow, std::min(c.next_position, cfg.window_size) * e.main);
    if (c.layer.kind == LayerKind::kSwa) continue;
    put(KvCacheKind::kCompressed, c.compressed.rows() * e.main);
    if (c.layer.kind == LayerKind::kCsa) put(KvCacheKind::kIndexerKey, c.index_keys.rows() * e.indexer);
    if (opts.compressor_state) put(KvCacheKind::kCompressorState, compressor_state_bytes(cfg, c.layer));
  }
  return cc;
}

// ---- Model ----------------------------------------------------------------------------------

struct Model::Impl {
  Checkpoint ckpt;
  ModelConfig cfg;
  ModelOptions opts;
  TensorView embed_w, head_w;  // [vocab, d] bf16
  Vec norm_w;
  HcHeadParams hc_head;
  mutable std::mutex mu;
  mutable std::vector<std::shared_ptr<const LayerWeights>> layers;  // keep_weights only
  mutable std::vector<std::shared_ptr<const MtpParams>> mtp;        // keep_weights only
  mutable std::optional<Mat> head;                                  // keep_weights only
  std::shared_ptr<WeightCache> cache;  // weight_cache_bytes > 0 and not keep_weights

  std::shared_ptr<const MtpParams> mtp_params(std::int64_t k) const {
    if (k < 0 || k >= cfg.n_mtp_layers)
      throw ConfigError("MTP block " + std::to_string(k) + " out of range: config " + cfg.name + " has " +
                        std::to_string(cfg.n_mtp_layers) + " MTP block(s)");
    std::lock_guard lock(mu);
    if (opts.keep_weights && mtp[static_cast<std::size_t>(k)]) return mtp[static_cast<std::size_t>(k)];
    const std::string p = layer_config(cfg, cfg.n_layers + k).prefix;
    auto m = std::make_shared<MtpParams>();
    m->e_proj = load_linear(ckpt, p + "e_proj", cfg.dim, cfg.dim);
    m->h_proj = load_linear(ckpt, p + "h_proj", cfg.dim, cfg.dim);
    m->enorm = load_vector(ckpt, p + "enorm.weight", cfg.dim);
    m->hnorm = load_vector(ckpt, p + "hnorm.weight", cfg.dim);
    m->norm = load_vector(ckpt, p + "norm.weight", cfg.dim);
    m->hc_head = load_hc_head_params(ckpt, cfg, p);
    if (opts.keep_weights) mtp[static_cast<std::size_t>(k)] = m;
    return m;
  }
};

Model Model::open(const std::filesystem::path& dir, const ModelConfig& cfg, ModelOptions options) {
  return open(Checkpoint::open(dir), cfg, std::move(options));
}

Model Model::open(const Checkpoint& ckpt, const ModelConfig& cfg, ModelOptions options) {
  validate(cfg);
  if (cfg.arch != Arch::kDeepseekV4)
    throw ConfigError("Model: config " + cfg.name + " is not a DeepSeek-V4 config (the reference forward is V4 only)");
  if (options.check_layout) {
    const std::vector<LayoutProblem> problems = check_layout(ckpt, cfg, false);
    if (!problems.empty()) {
      std::string msg = "checkpoint " + ckpt.dir().string() + " does not match config " + cfg.name + ": " +
                        std::to_string(problems.size()) + " problem(s)";
      for (std::size_t i = 0; i < std::min<std::size_t>(problems.size(), 5); ++i)
        msg += "\n  " + problems[i].tensor + ": " + problems[i].message;
      throw ConfigError(msg);
    }
  }
  auto impl = std::make_shared<Impl>();
  impl->ckpt = ckpt;
  impl->cfg = cfg;
  impl->opts = std::move(options);
  if (impl->opts.weight_cache_bytes < 0)
    throw ConfigError("Model: weight_cache_bytes must be >= 0, got " +
                      std::to_string(impl->opts.weight_cache_bytes));
  if (impl->opts.weight_cache_bytes > 0 && !impl->opts.keep_weights)
    impl->cache = std::make_shared<WeightCache>(impl->opts.weight_cache_bytes);
  impl->embed_w = ckpt.tensor("embed.weight");
  impl->embed_w.require_dtype(DType::kBF16);
  impl->embed_w.require_shape({cfg.vocab_size, cfg.dim});
  impl->head_w = ckpt.tensor("head.weight");
  impl->head_w.require_dtype(DType::kBF16);
  impl->head_w.require_shape({cfg.vocab_size, cfg.dim});
  impl->norm_w = load_vector(ckpt, "norm.weight", cfg.dim);
  impl->hc_head = load_hc_head_params(ckpt, cfg, "");
  impl->layers.resize(static_cast<std::size_t>(cfg.n_total_layers()));
  impl->mtp.resize(static_cast<std::size_t>(cfg.n_mtp_layers));
  Model m;
  m.impl_ = std::move(impl);
  return m;
}

const ModelConfig& Model::config() const { return impl_->cfg; }
const ModelOptions& Model::options() const { return impl_->opts; }
const Checkpoint& Model::checkpoint() const { return impl_->ckpt; }
std::shared_ptr<const WeightCache> Model::weight_cache() const { return impl_->cache; }

std::shared_ptr<const LayerWeights> Model::layer_weights(std::int64_t layer_index) const {
  const ModelConfig& cfg = impl_->cfg;
  if (layer_index < 0 || layer_index >= cfg.n_total_layers())
    throw ConfigError("layer " + std::to_string(layer_index) + " out of range: config " + cfg.name + " has " +
                      std::to_string(cfg.n_layers) + " layers + " + std::to_string(cfg.n_mtp_layers) +
                      " MTP block(s)");
  if (const std::shared_ptr<WeightCache>& cache = impl_->cache) {
    // The layer without its routed experts under "layer:<i>"; the experts go through the same
    // cache one by one (their own keys), so a step reuses both.
    return cache->get_or_load<LayerWeights>(
        "layer:" + std::to_string(layer_index),
        [&] { return load_layer(impl_->ckpt, cfg, layer_index, ExpertLoading::kOnDemand, cache); },
        [](const LayerWeights& w) { return resident_bytes(w); });
  }
  const bool keep = impl_->opts.keep_weights;
  std::lock_guard lock(impl_->mu);
  auto& slot = impl_->layers[static_cast<std::size_t>(layer_index)];
  if (keep && slot) return slot;
  auto w = std::make_shared<const LayerWeights>(
      load_layer(impl_->ckpt, cfg, layer_index, keep ? ExpertLoading::kCacheAll : ExpertLoading::kOnDemand));
  if (keep) slot = w;
  return w;
}

void Model::check_tokens(std::span<const std::int64_t> tokens, std::int64_t start_position) const {
  const ModelConfig& cfg = impl_->cfg;
  if (tokens.empty()) throw ShapeError("token ids: empty sequence (need at least one token)");
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab_size)
      throw ShapeError("token id " + std::to_string(tokens[i]) + " at position " +
                       std::to_string(start_position + static_cast<std::int64_t>(i)) + " outside [0, " +
                       std::to_string(cfg.vocab_size) + ") (vocab_size of config " + cfg.name + ")");
  const std::int64_t end = start_position + static_cast<std::int64_t>(tokens.size());
  if (end > cfg.max_position_embeddings)
    throw ShapeError("sequence reaches position " + std::to_string(end - 1) + ", past max_position_embeddings " +
                     std::to_string(cfg.max_position_embeddings) + " of config " + cfg.name);
}

Mat Model::embed(std::span<const std::int64_t> tokens) const {
  const ModelConfig& cfg = impl_->cfg;
  Mat h(static_cast<Eigen::Index>(tokens.size()), cfg.dim);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::int64_t id = tokens[i];
    if (id < 0 || id >= cfg.vocab_size)
      throw ShapeError("embed: token id " + std::to_string(id) + " outside [0, " + std::to_string(cfg.vocab_size) + ")");
    h.row(static_cast<Eigen::Index>(i)) = bf16_rows(impl_->embed_w, id, id + 1);
  }
  require_finite_mat(h, "embed.weight rows");
  return h;
}

Mat Model::expand_streams(const Mat& h) const {
  const ModelConfig& cfg = impl_->cfg;
  Mat x(h.rows(), cfg.hc_dim());
  for (std::int64_t k = 0; k < cfg.hc_mult; ++k) x.middleCols(k * cfg.dim, cfg.dim) = h;  // X_t[k] = h_t
  return x;
}

Mat Model::head_logits(const Mat& y) const {
  const ModelConfig& cfg = impl_->cfg;
  if (y.cols() != cfg.dim) throw ShapeError("head: input expected [T, " + std::to_string(cfg.dim) + "], got " + dims(y.rows(), y.cols()));
  if (impl_->opts.keep_weights) {
    std::unique_lock lock(impl_->mu);
    if (!impl_->head) {
      impl_->head = bf16_rows(impl_->head_w, 0, cfg.vocab_size);
      require_finite_mat(*impl_->head, "head.weight");
    }
    const Mat& hw = *impl_->head;
    lock.unlock();
    return y * hw.transpose();
  }
  // Block by block over the vocabulary: at most 4096 rows of the head in double at a time.
  constexpr std::int64_t kRows = 4096;
  Mat logits(y.rows(), cfg.vocab_size);
  for (std::int64_t r0 = 0; r0 < cfg.vocab_size; r0 += kRows) {
    const std::int64_t r1 = std::min(cfg.vocab_size, r0 + kRows);
    const Mat hw = bf16_rows(impl_->head_w, r0, r1);
    require_finite_mat(hw, "head.weight rows " + std::to_string(r0) + ".." + std::to_string(r1 - 1));
    logits.middleCols(r0, r1 - r0) = y * hw.transpose();
  }
  return logits;
}

Mat Model::logits_from_streams(const Mat& x, Trace* trace, std::int64_t mtp_block) const {
  const ModelConfig& cfg = impl_->cfg;
  const PrecisionPolicy& policy = impl_->opts.policy;
  std::shared_ptr<const MtpParams> mp;
  if (mtp_block >= 0) mp = impl_->mtp_params(mtp_block);
  const HcHeadParams& hp = mp ? mp->hc_head : impl_->hc_head;
  const Vec& nw = mp ? mp->norm : impl_->norm_w;
  const std::string prefix = mp ? layer_config(cfg, cfg.n_layers + mtp_block).prefix : "";
  Mat y = hc_head(x, hp, cfg, policy);                                  // §4.5
  Mat n = rms_norm(y, nw, cfg.norm_eps, policy, prefix + "norm");       // §10.1
  Mat logits = head_logits(n);
  if (trace != nullptr) {
    trace->put(prefix + std::string(trace_names::kHcHeadOut), std::move(y));
    trace->put(prefix + std::string(trace_names::kNormOut), std::move(n));
    trace->put(prefix + std::string(trace_names::kLogits), logits);
  }
  return logits;
}

std::pair<std::int64_t, std::int64_t> parse_layer_range(std::string_view text, std::int64_t n_layers) {
  auto bad = [&](const std::string& why) {
    return ConfigError("layer range \"" + std::string(text) + "\": " + why + " (expected N, A-B or all; layers 0.." +
                       std::to_string(n_layers - 1) + ")");
  };
  if (text == "all") return {0, n_layers - 1};
  auto parse = [&](std::string_view s) {
    std::int64_t v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty()) throw bad("not a number");
    return v;
  };
  const std::size_t dash = text.find('-');
  const std::int64_t a = parse(dash == std::string_view::npos ? text : text.substr(0, dash));
  const std::int64_t b = dash == std::string_view::npos ? a : parse(text.substr(dash + 1));
  if (a < 0 || b >= n_layers) throw bad("out of range");
  if (a > b) throw bad("first layer after last");
  return {a, b};
}

ForwardResult Model::forward(std::span<const std::int64_t> tokens, const ForwardRequest& request,
                             Trace* trace) const {
  const ModelConfig& cfg = impl_->cfg;
  const PrecisionPolicy& policy = impl_->opts.policy;
  check_tokens(tokens);
  const std::int64_t T = static_cast<std::int64_t>(tokens.size());
  const std::int64_t first = request.first_layer;
  const std::int64_t last = request.last_layer < 0 ? cfg.n_layers - 1 : request.last_layer;
  if (first < 0 || last >= cfg.n_layers || first > last)
    throw ConfigError("forward: layer range " + std::to_string(first) + ".." + std::to_string(last) +
                      " outside 0.." + std::to_string(cfg.n_layers - 1) + " of config " + cfg.name);
  if (trace != nullptr) trace->tokens().assign(tokens.begin(), tokens.end());

  Mat x;
  std::int64_t begin = 0;
  if (request.teacher != nullptr) {
    begin = first;
  } else {
    Mat h = embed(tokens);
    x = expand_streams(h);
    if (trace != nullptr && first == 0) trace->put(std::string(trace_names::kEmbed), std::move(h));
  }
  for (std::int64_t i = begin; i <= last; ++i) {
    if (request.teacher != nullptr) {
      x = request.teacher->at(trace_names::layer(cfg, i, "block.in"));
      check_streams(x, T, cfg, request.teacher->source() + " layers." + std::to_string(i) + ".block.in");
    }
    const auto w = layer_weights(i);
    const bool traced = trace != nullptr && i >= first;
    LayerTrace lt;
    x = block_forward(x, tokens, *w, cfg, w->layer, policy, traced ? &lt : nullptr);
    if (traced) put_layer_trace(*trace, w->layer.prefix, lt);
    if (impl_->opts.progress) impl_->opts.progress("prefill", i + 1, last + 1);
  }
  ForwardResult r;
  if (last == cfg.n_layers - 1) {
    if (request.teacher != nullptr) {
      const Mat& xl = request.teacher->at(trace_names::layer(cfg, last, "block.out"));
      check_streams(xl, T, cfg, request.teacher->source() + " layers." + std::to_string(last) + ".block.out");
      r.logits = logits_from_streams(xl, trace);
    } else {
      r.logits = logits_from_streams(x, trace);
    }
  }
  r.streams = std::move(x);
  return r;
}

DecodeState Model::start_state() const {
  const ModelConfig& cfg = impl_->cfg;
  DecodeState s;
  for (std::int64_t i = 0; i < cfg.n_layers; ++i) s.layers.push_back(empty_cache(cfg, i));
  for (std::int64_t k = 0; k < cfg.n_mtp_layers; ++k) s.mtp.push_back(empty_cache(cfg, cfg.n_layers + k));
  return s;
}

ForwardResult Model::prefill_with_state(std::span<const std::int64_t> tokens, DecodeState& state,
                                        Trace* trace) const {
  const ModelConfig& cfg = impl_->cfg;
  const PrecisionPolicy& policy = impl_->opts.policy;
  check_tokens(tokens);
  const std::int64_t T = static_cast<std::int64_t>(tokens.size());
  DecodeState s = start_state();
  if (trace != nullptr) trace->tokens().assign(tokens.begin(), tokens.end());
  Mat h = embed(tokens);
  Mat x = expand_streams(h);
  if (trace != nullptr) trace->put(std::string(trace_names::kEmbed), std::move(h));
  for (std::int64_t i = 0; i < cfg.n_layers; ++i) {
    const auto w = layer_weights(i);
    LayerTrace lt;
    x = block_forward(x, tokens, *w, cfg, w->layer, policy, &lt);
    s.layers[static_cast<std::size_t>(i)] = cache_from_prefill(lt.at("attn_norm"), *w, cfg, policy);
    if (trace != nullptr) put_layer_trace(*trace, w->layer.prefix, lt);
    if (impl_->opts.progress) impl_->opts.progress("prefill", i + 1, cfg.n_layers);
  }
  s.position = T;
  ForwardResult r;
  r.logits = logits_from_streams(x, trace);
  r.streams = std::move(x);
  state = std::move(s);
  return r;
}

Mat Model::decode_step(std::int64_t token, DecodeState& state, Trace* trace, CostCounter* cost,
                       Mat* streams_out) const {
  const ModelConfig& cfg = impl_->cfg;
  const PrecisionPolicy& policy = impl_->opts.policy;
  if (static_cast<std::int64_t>(state.layers.size()) != cfg.n_layers)
    throw ConfigError("decode: state has " + std::to_string(state.layers.size()) + " layer caches, config " +
                      cfg.name + " has " + std::to_string(cfg.n_layers) + " layers (use start_state())");
  const std::int64_t ids[1] = {token};
  check_tokens(std::span<const std::int64_t>(ids, 1), state.position);
  Mat h = embed(std::span<const std::int64_t>(ids, 1));
  Mat x = expand_streams(h);
  if (trace != nullptr) {
    trace->tokens().push_back(token);
    trace->append_rows(std::string(trace_names::kEmbed), h, 0.0);
  }
  for (std::int64_t i = 0; i < cfg.n_layers; ++i) {
    LayerCache& cache = state.layers[static_cast<std::size_t>(i)];
    if (cache.next_position != state.position)
      throw ConfigError("decode: cache of " + cache.layer.prefix + " is at position " +
                        std::to_string(cache.next_position) + ", state at " + std::to_string(state.position));
    const auto w = layer_weights(i);
    LayerTrace lt;
    x = block_decode_step(x, token, cache, *w, cfg, policy, trace != nullptr ? &lt : nullptr, cost);
    if (trace != nullptr) append_layer_trace(*trace, w->layer.prefix, lt);
  }
  // Model-level: hc_head collapse and the LM head, once per token.
  if (cost != nullptr) {
    cost->add(kModelLevel, CostLayerKind::kModel, CostComponent::kMhc, PrecisionClass::kFp32,
              matmul_flops(impl_->hc_head.fn));
    cost->add(kModelLevel, CostLayerKind::kModel, CostComponent::kLmHead, PrecisionClass::kBf16,
              2 * impl_->head_w.dim(0) * impl_->head_w.dim(1));
  }
  Trace step;
  Mat logits = logits_from_streams(x, trace != nullptr ? &step : nullptr);
  if (trace != nullptr)
    for (const std::string& n : step.names()) trace->append_rows(n, step.at(n), 0.0);
  ++state.position;
  if (streams_out != nullptr) *streams_out = x;
  return logits;
}

Mat Model::mtp_forward(const Mat& x_l, std::span<const std::int64_t> ids, std::int64_t block, Trace* trace) const {
  const ModelConfig& cfg = impl_->cfg;
  const PrecisionPolicy& policy = impl_->opts.policy;
  const std::shared_ptr<const MtpParams> mp = impl_->mtp_params(block);
  check_tokens(ids);
  const std::int64_t T = static_cast<std::int64_t>(ids.size());
  check_streams(x_l, T, cfg, "mtp: main-model streams X_L");
  const auto w = layer_weights(cfg.n_layers + block);
  const std::string& p = w->layer.prefix;

  LayerTrace parts;
  const Mat x0 = mtp_block_input(x_l, embed(ids), *mp, cfg, policy, p, parts);
  if (trace != nullptr)
    for (const char* k : {"embed", "enorm", "hnorm"}) trace->put(p + k, std::move(parts.tensors[k]));
  LayerTrace lt;
  const Mat x1 = block_forward(x0, ids, *w, cfg, w->layer, policy, trace != nullptr ? &lt : nullptr);
  if (trace != nullptr) put_layer_trace(*trace, p, lt);
  if (impl_->opts.progress) impl_->opts.progress("mtp", 1, 1);
  return logits_from_streams(x1, trace, block);
}

Mat Model::mtp_decode_step(const Mat& x_l_row, std::int64_t id, DecodeState& state, std::int64_t block,
                           Trace* trace) const {
  const ModelConfig& cfg = impl_->cfg;
  const PrecisionPolicy& policy = impl_->opts.policy;
  const std::shared_ptr<const MtpParams> mp = impl_->mtp_params(block);
  if (static_cast<std::int64_t>(state.mtp.size()) != cfg.n_mtp_layers)
    throw ConfigError("mtp decode: state has " + std::to_string(state.mtp.size()) + " MTP caches, config has " +
                      std::to_string(cfg.n_mtp_layers) + " (use start_state())");
  LayerCache& cache = state.mtp[static_cast<std::size_t>(block)];
  const std::int64_t ids[1] = {id};
  check_tokens(std::span<const std::int64_t>(ids, 1), cache.next_position);
  check_streams(x_l_row, 1, cfg, "mtp decode: main-model streams X_L");
  const auto w = layer_weights(cfg.n_layers + block);
  const std::string& p = w->layer.prefix;
  LayerTrace parts;
  const Mat x0 = mtp_block_input(x_l_row, embed(std::span<const std::int64_t>(ids, 1)), *mp, cfg, policy, p, parts);
  if (trace != nullptr)
    for (const char* k : {"embed", "enorm", "hnorm"}) trace->append_rows(p + k, parts.tensors[k], 0.0);
  LayerTrace lt;
  const Mat x1 = block_decode_step(x0, id, cache, *w, cfg, policy, trace != nullptr ? &lt : nullptr, nullptr);
  if (trace != nullptr) append_layer_trace(*trace, p, lt);
  Trace step;
  Mat logits = logits_from_streams(x1, trace != nullptr ? &step : nullptr, block);
  if (trace != nullptr)
    for (const std::string& n : step.names()) trace->append_rows(n, step.at(n), 0.0);
  return logits;
}

}  // namespace v4ref::ref
