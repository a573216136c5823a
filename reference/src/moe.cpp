// The MoE sub-block (v4-forward.md §9).
#include "v4ref/ref/moe.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/indexer.hpp"  // select_topk: the one top-k rule (verification.md §9)
#include "v4ref/ref/norm.hpp"

namespace v4ref::ref {
namespace {

// PyTorch's softplus (beta 1) returns its input above this threshold (§9.1).
constexpr double kSoftplusThreshold = 20.0;

void check_token_ids(std::span<const std::int64_t> ids, const MoeWeights& w) {
  for (std::size_t t = 0; t < ids.size(); ++t)
    if (ids[t] < 0 || (w.vocab_size > 0 && ids[t] >= w.vocab_size))
      throw NumericError(w.prefix + "token_ids: token id " + std::to_string(ids[t]) +
                         " at position " + std::to_string(t) + " is outside [0, " +
                         std::to_string(w.vocab_size) + ")");
}

}  // namespace

ExpertWeights load_expert(const Checkpoint& ckpt, const std::string& prefix, std::int64_t dim,
                          std::int64_t inter_dim) {
  ExpertWeights ew;
  ew.w1 = load_linear(ckpt, prefix + "w1", inter_dim, dim);
  ew.w2 = load_linear(ckpt, prefix + "w2", dim, inter_dim);
  ew.w3 = load_linear(ckpt, prefix + "w3", inter_dim, dim);
  return ew;
}

RoutedExperts RoutedExperts::on_demand(const Checkpoint& ckpt, const std::string& prefix,
                                       std::int64_t n_experts, std::int64_t dim,
                                       std::int64_t inter_dim, std::shared_ptr<WeightCache> cache) {
  RoutedExperts r;
  r.weight_cache_ = std::move(cache);
  r.ckpt_ = ckpt;
  r.have_ckpt_ = true;
  r.prefix_ = prefix;
  r.n_experts_ = n_experts;
  r.dim_ = dim;
  r.inter_dim_ = inter_dim;
  return r;
}

RoutedExperts RoutedExperts::cached(const Checkpoint& ckpt, const std::string& prefix,
                                    std::int64_t n_experts, std::int64_t dim,
                                    std::int64_t inter_dim) {
  RoutedExperts r = on_demand(ckpt, prefix, n_experts, dim, inter_dim);
  std::vector<std::shared_ptr<const ExpertWeights>> all;
  for (std::int64_t e = 0; e < n_experts; ++e) all.push_back(r.get(e));
  r.cache_ = std::move(all);
  return r;
}

RoutedExperts RoutedExperts::from_weights(std::vector<ExpertWeights> experts) {
  RoutedExperts r;
  r.n_experts_ = static_cast<std::int64_t>(experts.size());
  for (auto& e : experts) r.cache_.push_back(std::make_shared<const ExpertWeights>(std::move(e)));
  return r;
}

std::shared_ptr<const ExpertWeights> RoutedExperts::get(std::int64_t e) const {
  if (e < 0 || e >= n_experts_)
    throw ShapeError(prefix_ + "experts: expert " + std::to_string(e) + " outside [0, " +
                     std::to_string(n_experts_) + ")");
  if (!cache_.empty()) return cache_[static_cast<std::size_t>(e)];
  V4REF_ASSERT(have_ckpt_);
  const std::string prefix = prefix_ + std::to_string(e) + ".";
  const std::function<ExpertWeights()> load = [&] {
    loads_->fetch_add(1);
    return load_expert(ckpt_, prefix, dim_, inter_dim_);
  };
  if (const std::shared_ptr<WeightCache> cache = weight_cache_.lock())
    return cache->get_or_load<ExpertWeights>(
        prefix, load, [](const ExpertWeights& ew) { return resident_bytes(ew); });
  return std::make_shared<const ExpertWeights>(load());
}

std::int64_t resident_bytes(const ExpertWeights& ew) {
  return static_cast<std::int64_t>(sizeof(double)) *
         static_cast<std::int64_t>(ew.w1.w.size() + ew.w2.w.size() + ew.w3.w.size());
}

MoeWeights load_moe(const Checkpoint& ckpt, const ModelConfig& cfg, std::int64_t layer,
                    ExpertLoading loading, std::shared_ptr<WeightCache> expert_cache) {
  const LayerConfig lc = layer_config(cfg, layer);
  MoeWeights w;
  w.prefix = lc.prefix + "ffn.";
  w.dim = cfg.dim;
  w.inter_dim = cfg.moe_inter_dim;
  w.n_experts = cfg.n_routed_experts;
  w.n_activated = cfg.n_activated_experts;
  w.vocab_size = cfg.vocab_size;
  w.route_scale = cfg.route_scale;
  w.swiglu_limit = cfg.swiglu_limit;
  w.hash_routed = lc.hash_routed;
  w.gate = load_linear(ckpt, w.prefix + "gate", w.n_experts, w.dim);
  if (w.hash_routed) {
    const std::string name = w.prefix + "gate.tid2eid";
    const TensorView t = ckpt.tensor(name);
    t.require_shape({cfg.vocab_size, w.n_activated});
    w.tid2eid.resize(cfg.vocab_size, w.n_activated);
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      const double v = t.to_double(i);
      if (!(v >= 0 && v < static_cast<double>(w.n_experts)))
        throw NumericError(name + ": expert id " + std::to_string(static_cast<long long>(v)) +
                           " at [" + std::to_string(i / w.n_activated) + ", " +
                           std::to_string(i % w.n_activated) + "] outside [0, " +
                           std::to_string(w.n_experts) + ")");
      w.tid2eid.data()[i] = static_cast<std::int64_t>(v);
    }
  } else {
    const std::string name = w.prefix + "gate.bias";
    ckpt.tensor(name).require_shape({w.n_experts});
    const std::vector<double> b = load_as_double(ckpt, name);
    w.bias = Eigen::Map<const Vec>(b.data(), w.n_experts);
  }
  const std::string ep = w.prefix + "experts.";
  w.experts = loading == ExpertLoading::kCacheAll
                  ? RoutedExperts::cached(ckpt, ep, w.n_experts, w.dim, w.inter_dim)
                  : RoutedExperts::on_demand(ckpt, ep, w.n_experts, w.dim, w.inter_dim,
                                             std::move(expert_cache));
  w.shared = load_expert(ckpt, w.prefix + "shared_experts.", w.dim, w.inter_dim);
  return w;
}

double softplus_torch(double z) { return z > kSoftplusThreshold ? z : std::log1p(std::exp(z)); }

double sqrt_softplus(double z) { return std::sqrt(softplus_torch(z)); }

double silu(double z) { return z / (1.0 + std::exp(-z)); }

Routing route(const Mat& z, std::span<const std::int64_t> token_ids, const MoeWeights& w) {
  const std::int64_t T = z.rows();
  const std::int64_t E = w.n_experts;
  const std::int64_t k = w.n_activated;
  if (z.cols() != w.dim)
    throw ShapeError(w.prefix + "z (route): expected " + dims(T, w.dim) + ", got " +
                     dims(z.rows(), z.cols()));
  if (w.gate.out_features() != E || w.gate.in_features() != w.dim)
    throw ShapeError(w.prefix + "gate.weight: expected " + dims(E, w.dim) + ", got " +
                     dims(w.gate.out_features(), w.gate.in_features()));
  if (k <= 0 || k > E)
    throw ConfigError(w.prefix + ": n_activated_experts " + std::to_string(k) + " outside [1, " +
                      std::to_string(E) + "]");
  require_finite_mat(z, w.prefix + "z");
  if (w.hash_routed || !token_ids.empty()) {
    if (static_cast<std::int64_t>(token_ids.size()) != T)
      throw ShapeError(w.prefix + "token_ids: expected " + std::to_string(T) +
                       " token ids (one per row of z), got " + std::to_string(token_ids.size()));
    check_token_ids(token_ids, w);
  }
  if (w.hash_routed && (w.tid2eid.cols() != k || w.tid2eid.rows() < 1))
    throw ShapeError(w.prefix + "gate.tid2eid: expected [vocab, " + std::to_string(k) + "], got " +
                     dims(w.tid2eid.rows(), w.tid2eid.cols()));
  if (w.hash_routed && w.vocab_size > 0 && w.tid2eid.rows() != w.vocab_size)
    throw ShapeError(w.prefix + "gate.tid2eid: expected " + dims(w.vocab_size, k) + ", got " +
                     dims(w.tid2eid.rows(), w.tid2eid.cols()));
  if (!w.hash_routed && w.bias.size() != E)
    throw ShapeError(w.prefix + "gate.bias: expected [" + std::to_string(E) + "], got [" +
                     std::to_string(w.bias.size()) + "]");

  Routing r;
  // fp32 GEMV in OFF: no bf16 output rounding, no activation quantisation (§2.5 item 1).
  const Mat logits = apply_linear(w.gate, z, PrecisionPolicy::exact());  // [T, E]
  r.scores = logits.unaryExpr([](double v) { return sqrt_softplus(v); });
  r.experts.resize(T, k);
  r.weights.resize(T, k);
  std::vector<double> biased(static_cast<std::size_t>(E));
  for (std::int64_t t = 0; t < T; ++t) {
    if (w.hash_routed) {
      const std::int64_t id = token_ids[static_cast<std::size_t>(t)];
      if (id >= w.tid2eid.rows())
        throw NumericError(w.prefix + "token_ids: token id " + std::to_string(id) + " at position " +
                           std::to_string(t) + " has no gate.tid2eid row (" +
                           std::to_string(w.tid2eid.rows()) + " rows)");
      for (std::int64_t s = 0; s < k; ++s) {
        const std::int64_t e = w.tid2eid(id, s);
        if (e < 0 || e >= E)
          throw NumericError(w.prefix + "gate.tid2eid: expert id " + std::to_string(e) + " at [" +
                             std::to_string(id) + ", " + std::to_string(s) + "] outside [0, " +
                             std::to_string(E) + ")");
        r.experts(t, s) = e;
      }
    } else {
      for (std::int64_t e = 0; e < E; ++e)
        biased[static_cast<std::size_t>(e)] = r.scores(t, e) + w.bias(e);  // selection only
      const std::vector<std::int64_t> top = select_topk(biased, k);
      V4REF_ASSERT(static_cast<std::int64_t>(top.size()) == k);
      for (std::int64_t s = 0; s < k; ++s) r.experts(t, s) = top[static_cast<std::size_t>(s)];
    }
    double sum = 0;  // plain sum, no epsilon (§9.1)
    for (std::int64_t s = 0; s < k; ++s) sum += r.scores(t, r.experts(t, s));
    for (std::int64_t s = 0; s < k; ++s)
      r.weights(t, s) = w.route_scale * (r.scores(t, r.experts(t, s)) / sum);
  }
  return r;
}

Mat expert_forward(const ExpertWeights& ew, const Mat& z, double swiglu_limit,
                   std::span<const double> row_weight, const PrecisionPolicy& policy) {
  if (!row_weight.empty() && static_cast<std::int64_t>(row_weight.size()) != z.rows())
    throw ShapeError(ew.w1.name + ": expected " + std::to_string(z.rows()) +
                     " row weights, got " + std::to_string(row_weight.size()));
  const double L = swiglu_limit;
  const Mat g = apply_linear(ew.w1, z, policy);  // [n, I]
  const Mat p = apply_linear(ew.w3, z, policy);  // [n, I]
  if (ew.w2.in_features() != g.cols() || p.cols() != g.cols())
    throw ShapeError(ew.w2.name + ": expected [d, " + std::to_string(g.cols()) + "], got " +
                     dims(ew.w2.out_features(), ew.w2.in_features()));
  Mat hid(g.rows(), g.cols());
  for (Eigen::Index t = 0; t < g.rows(); ++t) {
    for (Eigen::Index i = 0; i < g.cols(); ++i) {
      const double gi = std::min(g(t, i), L);            // gate: upper bound only (§9.2)
      const double pi = std::clamp(p(t, i), -L, L);      // up: both sides
      double h = silu(gi) * pi;
      if (!row_weight.empty()) h = row_weight[static_cast<std::size_t>(t)] * h;  // OFF order (§9.3)
      hid(t, i) = h;
    }
  }
  round_bf16_if(hid, policy, QuantPoint::kBf16ExpertHidden);
  return apply_linear(ew.w2, hid, policy);  // [n, d]
}

Mat moe_forward(const Mat& z, std::span<const std::int64_t> token_ids, const MoeWeights& w,
                const PrecisionPolicy& policy, Routing* routing) {
  Routing r = route(z, token_ids, w);
  const std::int64_t T = z.rows();
  const std::int64_t k = w.n_activated;
  if (w.experts.size() != w.n_experts)
    throw ShapeError(w.prefix + "experts: expected " + std::to_string(w.n_experts) +
                     " routed experts, got " + std::to_string(w.experts.size()));
  Mat y = Mat::Zero(T, w.dim);
  // OFF's loop: experts in ascending id, each over the (token, slot) pairs routed to it.
  for (std::int64_t e = 0; e < w.n_experts; ++e) {
    std::vector<std::int64_t> rows;
    std::vector<double> weights;
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t s = 0; s < k; ++s)
        if (r.experts(t, s) == e) {
          rows.push_back(t);
          weights.push_back(r.weights(t, s));
        }
    if (rows.empty()) continue;
    Mat zin(static_cast<Eigen::Index>(rows.size()), w.dim);
    for (std::size_t n = 0; n < rows.size(); ++n) zin.row(static_cast<Eigen::Index>(n)) = z.row(rows[n]);
    const std::shared_ptr<const ExpertWeights> ew = w.experts.get(e);  // one expert at a time
    const Mat out = expert_forward(*ew, zin, w.swiglu_limit, weights, policy);
    for (std::size_t n = 0; n < rows.size(); ++n) y.row(rows[n]) += out.row(static_cast<Eigen::Index>(n));
  }
  y += expert_forward(w.shared, z, w.swiglu_limit, {}, policy);
  round_bf16_if(y, policy, QuantPoint::kBf16MoeOut);
  if (routing != nullptr) *routing = std::move(r);
  return y;
}

}  // namespace v4ref::ref
