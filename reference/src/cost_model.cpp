// Cost model: decode/prefill FLOPs and KV-cache bytes (spec/cost-model.md §1–§5, §7).
// Each formula appears once; decode and prefill share it through ContextCounts, which yields
// either the key counts of one decode step at L or their sums over positions 1..T.
#include "v4ref/ref/cost_model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "v4ref/ref/core/error.hpp"

namespace v4ref::ref {

namespace {

using i64 = std::int64_t;

// Largest context accepted: keeps the prefill sums (~T²·H·D) far from int64 overflow for every
// released config; overflow is still checked on every product and sum.
constexpr i64 kMaxContext = i64{1} << 32;

i64 mul(i64 a, i64 b) {
  i64 r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw Error("cost model: int64 overflow in " + std::to_string(a) + " * " + std::to_string(b));
  return r;
}

i64 add(i64 a, i64 b) {
  i64 r = 0;
  if (__builtin_add_overflow(a, b, &r))
    throw Error("cost model: int64 overflow in " + std::to_string(a) + " + " + std::to_string(b));
  return r;
}

i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }
i64 round_up(i64 a, i64 b) { return mul(ceil_div(a, b), b); }

void require_context(i64 L, const char* what) {
  if (L < 1 || L > kMaxContext)
    throw Error(std::string("cost model: ") + what + " must be in [1, 2^32], got " +
                std::to_string(L));
}

// Key counts of one decode step at context L (sum = false), or their sums over the decode steps
// at contexts 1..L, i.e. a prefill of L tokens (sum = true).
class ContextCounts {
 public:
  ContextCounts(i64 L, bool sum) : L_(L), sum_(sum) {}

  // Steps covered: 1 (decode) or L (prefill); weight matmuls run once per step.
  i64 steps() const { return sum_ ? L_ : 1; }
  // Tokens visible at the step: l, summed.
  i64 tokens() const { return sum_ ? sum_identity(L_) : L_; }
  // min(l, c), summed.
  i64 min_tokens(i64 c) const { return sum_ ? sum_min(L_, c) : std::min(L_, c); }
  // ⌊l/m⌋, summed.
  i64 floor_div(i64 m) const { return sum_ ? sum_floor(L_, m) : L_ / m; }
  // min(K, ⌊l/m⌋), summed.
  i64 min_floor_div(i64 K, i64 m) const {
    if (!sum_) return std::min(K, L_ / m);
    const i64 sat = mul(K, m);  // first l with ⌊l/m⌋ >= K
    if (L_ < sat) return sum_floor(L_, m);
    return add(sum_floor(sat - 1, m), mul(L_ - sat + 1, K));
  }

 private:
  static i64 sum_identity(i64 T) { return T % 2 == 0 ? mul(T / 2, T + 1) : mul(T, (T + 1) / 2); }
  static i64 sum_min(i64 T, i64 c) {
    if (T <= c) return sum_identity(T);
    return add(sum_identity(c), mul(T - c, c));
  }
  // Σ_{l=1..T} ⌊l/m⌋ = m·q(q-1)/2 + q·(r+1), q = ⌊T/m⌋, r = T mod m.
  static i64 sum_floor(i64 T, i64 m) {
    if (T < 1) return 0;
    const i64 q = T / m;
    const i64 r = T % m;
    const i64 tri = q % 2 == 0 ? mul(q / 2, q - 1) : mul(q, (q - 1) / 2);
    return add(mul(m, tri), mul(q, r + 1));
  }

  i64 L_;
  bool sum_;
};

// Charges coef · count to one key.
struct Charger {
  CostCounter& cc;
  i64 layer;
  CostLayerKind kind;
  void operator()(CostComponent c, PrecisionClass p, i64 coef, i64 count) const {
    cc.add(layer, kind, c, p, mul(coef, count));
  }
};

PrecisionClass routed_class(const ModelConfig& cfg) {
  return cfg.expert_dtype == ExpertDtype::kFp4 ? PrecisionClass::kFp4w : PrecisionClass::kFp8;
}

// §4.1, one V3.2 layer.
void v32_layer(const ModelConfig& cfg, i64 i, const ContextCounts& n, CostCounter& cc) {
  using C = CostComponent;
  using P = PrecisionClass;
  const Charger charge{cc, i, CostLayerKind::kV32};
  const i64 d = cfg.dim, H = cfg.n_heads, ql = cfg.q_lora_rank, kvl = cfg.kv_lora_rank;
  const i64 nope = cfg.qk_nope_head_dim, rope = cfg.qk_rope_head_dim, vh = cfg.v_head_dim;
  const i64 HI = cfg.index_n_heads, DI = cfg.index_head_dim;
  const i64 one = n.steps();
  // q_a, q_b, kv_a, absorbed key up-projection (per head nope × kv_lora), absorbed value
  // up-projection (per head kv_lora × v_head), o.
  const i64 proj = d * ql + ql * H * (nope + rope) + d * (kvl + rope) + H * nope * kvl +
                   H * kvl * vh + H * vh * d;
  charge(C::kProjAttn, P::kFp8, 2 * proj, one);
  charge(C::kProjIndexer, P::kFp8, 2 * (ql * HI * DI + d * DI + d * HI), one);
  // MQA ("absorbed") form: QK over kv_lora + rope dims, PV over kv_lora dims, top-k keys.
  charge(C::kAttnCore, P::kBf16, 2 * H * ((kvl + rope) + kvl), n.min_tokens(cfg.index_topk));
  charge(C::kIndexerScore, P::kFp8, 2 * HI * DI, n.tokens());
  if (i < cfg.first_k_dense_replace) {
    charge(C::kDenseFfn, P::kFp8, 2 * 3 * d * cfg.intermediate_size, one);
    return;
  }
  const i64 I = cfg.moe_inter_dim;
  charge(C::kMoeRouted, routed_class(cfg), 2 * cfg.n_activated_experts * 3 * d * I, one);
  charge(C::kMoeShared, P::kFp8, 2 * cfg.n_shared_experts * 3 * d * I, one);
  charge(C::kRouter, P::kFp32, 2 * d * cfg.n_routed_experts, one);
}

// §4.2, one V4 layer.
void v4_layer(const ModelConfig& cfg, const LayerConfig& lc, const ContextCounts& n,
              CostCounter& cc) {
  using C = CostComponent;
  using P = PrecisionClass;
  const Charger charge{cc, lc.index, cost_layer_kind(lc.kind)};
  const i64 d = cfg.dim, H = cfg.n_heads, D = cfg.head_dim, ql = cfg.q_lora_rank;
  const i64 HI = cfg.index_n_heads, DI = cfg.index_head_dim, m = lc.ratio;
  const i64 one = n.steps();
  // wq_a, wq_b, wkv (one shared K=V head), wo_a (grouped: G × (H·D/G) × R_o), wo_b.
  const i64 proj = d * ql + ql * H * D + d * D + cfg.q_dim() * cfg.o_lora_rank + cfg.o_dim() * d;
  charge(C::kProjAttn, P::kFp8, 2 * proj, one);
  // QK (D) + PV (D) per attended key: the window, then the compressed keys.
  const i64 per_key = 2 * H * 2 * D;
  charge(C::kAttnCore, P::kBf16, per_key, n.min_tokens(cfg.window_size));
  if (lc.kind == LayerKind::kCsa)
    charge(C::kAttnCore, P::kBf16, per_key, n.min_floor_div(cfg.index_topk, m));
  if (lc.kind == LayerKind::kHca) charge(C::kAttnCore, P::kBf16, per_key, n.floor_div(m));
  // mHC mixing projections of the attention and FFN sublayers: hc_dim -> (2 + hc)·hc.
  charge(C::kMhc, P::kFp32, 2 * 2 * cfg.hc_mix_dim() * cfg.hc_dim(), one);
  const i64 I = cfg.moe_inter_dim;
  charge(C::kMoeRouted, routed_class(cfg), 2 * cfg.n_activated_experts * 3 * d * I, one);
  charge(C::kMoeShared, P::kFp8, 2 * cfg.n_shared_experts * 3 * d * I, one);
  charge(C::kRouter, P::kFp32, 2 * d * cfg.n_routed_experts, one);
  if (lc.kind == LayerKind::kSwa) return;
  // Compressor wkv + wgate, one projection per token: c·D channels each (c = 2 overlapped).
  const i64 c = lc.overlap ? 2 : 1;
  charge(C::kCompressor, P::kFp32, 2 * d * 2 * c * D, one);
  if (lc.kind != LayerKind::kCsa) return;
  // Indexer: its own overlapped compressor (2·D_I channels, wkv + wgate), wq_b, weights_proj,
  // and QK scores over every visible compressed key.
  charge(C::kCompressor, P::kFp32, 2 * d * 2 * 2 * DI, one);
  charge(C::kProjIndexer, P::kFp8, 2 * ql * HI * DI, one);
  charge(C::kProjIndexer, P::kBf16, 2 * d * HI, one);
  charge(C::kIndexerScore, P::kFp4, 2 * HI * DI, n.floor_div(m));
}

CostCounter count_flops(const ModelConfig& cfg, const ContextCounts& n) {
  validate(cfg);
  CostCounter cc;
  const Charger model{cc, kModelLevel, CostLayerKind::kModel};
  if (cfg.arch == Arch::kDeepseekV32) {
    for (i64 i = 0; i < cfg.n_layers; ++i) v32_layer(cfg, i, n, cc);
  } else {
    for (i64 i = 0; i < cfg.n_layers; ++i) v4_layer(cfg, layer_config(cfg, i), n, cc);
    // mHC head collapse: hc_dim -> hc, once per token.
    model(CostComponent::kMhc, PrecisionClass::kFp32, 2 * cfg.hc_mult * cfg.hc_dim(), n.steps());
  }
  model(CostComponent::kLmHead, PrecisionClass::kBf16, 2 * cfg.dim * cfg.vocab_size, n.steps());
  return cc;
}

std::string key_name(const CostCounter::Key& k) {
  std::ostringstream os;
  if (k.layer == kModelLevel)
    os << "model";
  else
    os << "L" << (k.layer < 10 ? "0" : "") << k.layer;
  os << " " << cost_layer_kind_name(k.kind) << " " << cost_component_name(k.component) << " "
     << precision_class_name(k.cls);
  return os.str();
}

std::string kv_key_name(const CostCounter::KvKey& k) {
  std::ostringstream os;
  os << "L" << (k.layer < 10 ? "0" : "") << k.layer << " " << cost_layer_kind_name(k.kind) << " "
     << kv_cache_kind_name(k.cache);
  return os.str();
}

template <class Map, class Skip, class Name>
std::vector<std::string> map_differences(const Map& a, const Map& b, Skip skip, Name name) {
  std::vector<std::string> out;
  auto report = [&](const auto& key, i64 va, i64 vb) {
    if (va == vb || skip(key)) return;
    out.push_back(name(key) + ": this " + std::to_string(va) + ", other " + std::to_string(vb));
  };
  for (const auto& [k, v] : a) {
    const auto it = b.find(k);
    report(k, v, it == b.end() ? 0 : it->second);
  }
  for (const auto& [k, v] : b)
    if (a.find(k) == a.end()) report(k, 0, v);
  return out;
}

template <std::size_t N, class E>
E parse_name(std::string_view name, const std::array<E, N>& all, const char* (*to_name)(E),
             const char* what) {
  std::string accepted;
  for (E e : all) {
    if (name == to_name(e)) return e;
    accepted += (accepted.empty() ? "" : ", ") + std::string(to_name(e));
  }
  throw Error(std::string("unknown ") + what + " \"" + std::string(name) + "\"; accepted: " +
              accepted);
}

}  // namespace

// ---- names ---------------------------------------------------------------------------------

const char* cost_component_name(CostComponent c) {
  switch (c) {
    case CostComponent::kProjAttn: return "proj_attn";
    case CostComponent::kProjIndexer: return "proj_indexer";
    case CostComponent::kCompressor: return "compressor";
    case CostComponent::kAttnCore: return "attn_core";
    case CostComponent::kIndexerScore: return "indexer_score";
    case CostComponent::kMhc: return "mhc";
    case CostComponent::kMoeRouted: return "moe_routed";
    case CostComponent::kMoeShared: return "moe_shared";
    case CostComponent::kRouter: return "router";
    case CostComponent::kDenseFfn: return "dense_ffn";
    case CostComponent::kLmHead: return "lm_head";
    case CostComponent::kVector: return "vector";
  }
  return "?";
}

const char* precision_class_name(PrecisionClass p) {
  switch (p) {
    case PrecisionClass::kFp8: return "fp8";
    case PrecisionClass::kFp4w: return "fp4w";
    case PrecisionClass::kFp4: return "fp4";
    case PrecisionClass::kBf16: return "bf16";
    case PrecisionClass::kFp32: return "fp32";
  }
  return "?";
}

const char* cost_layer_kind_name(CostLayerKind k) {
  switch (k) {
    case CostLayerKind::kSwa: return "swa";
    case CostLayerKind::kCsa: return "csa";
    case CostLayerKind::kHca: return "hca";
    case CostLayerKind::kV32: return "v32";
    case CostLayerKind::kModel: return "model";
  }
  return "?";
}

const char* kv_cache_kind_name(KvCacheKind k) {
  switch (k) {
    case KvCacheKind::kV32Latent: return "v32_latent";
    case KvCacheKind::kV32IndexerKey: return "v32_indexer_key";
    case KvCacheKind::kWindow: return "window";
    case KvCacheKind::kCompressed: return "compressed";
    case KvCacheKind::kIndexerKey: return "indexer_key";
    case KvCacheKind::kCompressorState: return "compressor_state";
  }
  return "?";
}

CostComponent parse_cost_component(std::string_view name) {
  return parse_name(name, kAllCostComponents, cost_component_name, "cost component");
}

PrecisionClass parse_precision_class(std::string_view name) {
  return parse_name(name, kAllPrecisionClasses, precision_class_name, "precision class");
}

CostLayerKind cost_layer_kind(LayerKind k) {
  switch (k) {
    case LayerKind::kSwa: return CostLayerKind::kSwa;
    case LayerKind::kCsa: return CostLayerKind::kCsa;
    case LayerKind::kHca: return CostLayerKind::kHca;
  }
  return CostLayerKind::kModel;
}

// ---- precision weights ---------------------------------------------------------------------

double PrecisionWeights::of(PrecisionClass p) const {
  switch (p) {
    case PrecisionClass::kFp8: return fp8;
    case PrecisionClass::kFp4w: return fp4w;
    case PrecisionClass::kFp4: return fp4;
    case PrecisionClass::kBf16: return bf16;
    case PrecisionClass::kFp32: return fp32;
  }
  return 0;
}

void PrecisionWeights::set(std::string_view name, double value) {
  const PrecisionClass p = parse_precision_class(name);
  if (!std::isfinite(value) || value < 0)
    throw Error("precision weight " + std::string(name) + " must be finite and >= 0, got " +
                std::to_string(value));
  switch (p) {
    case PrecisionClass::kFp8: fp8 = value; break;
    case PrecisionClass::kFp4w: fp4w = value; break;
    case PrecisionClass::kFp4: fp4 = value; break;
    case PrecisionClass::kBf16: bf16 = value; break;
    case PrecisionClass::kFp32: fp32 = value; break;
  }
}

// ---- counter -------------------------------------------------------------------------------

void CostCounter::add(std::int64_t layer, CostLayerKind kind, CostComponent component,
                      PrecisionClass cls, std::int64_t raw_flops) {
  if (raw_flops < 0)
    throw Error("CostCounter::add: negative FLOPs " + std::to_string(raw_flops) + " for " +
                key_name({layer, kind, component, cls}));
  i64& v = flops_[Key{layer, kind, component, cls}];
  v = ::v4ref::ref::add(v, raw_flops);
}

void CostCounter::add_kv_bytes(std::int64_t layer, CostLayerKind kind, KvCacheKind cache,
                               std::int64_t bytes) {
  if (bytes < 0)
    throw Error("CostCounter::add_kv_bytes: negative bytes " + std::to_string(bytes) + " for " +
                kv_key_name({layer, kind, cache}));
  i64& v = kv_[KvKey{layer, kind, cache}];
  v = ::v4ref::ref::add(v, bytes);
}

void CostCounter::merge(const CostCounter& other) {
  for (const auto& [k, v] : other.flops_) add(k.layer, k.kind, k.component, k.cls, v);
  for (const auto& [k, v] : other.kv_) add_kv_bytes(k.layer, k.kind, k.cache, v);
}

void CostCounter::clear() {
  flops_.clear();
  kv_.clear();
}

std::int64_t CostCounter::total_raw() const {
  i64 t = 0;
  for (const auto& [k, v] : flops_)
    if (k.component != CostComponent::kVector) t = ::v4ref::ref::add(t, v);
  return t;
}

double CostCounter::total_eqfp8(const PrecisionWeights& w) const {
  // Per-class integer sums first, then one multiply per class: exact whenever the products are.
  const auto by_class = raw_by_class();
  double t = 0;
  for (std::size_t i = 0; i < kNumPrecisionClasses; ++i)
    t += static_cast<double>(by_class[i]) * w.of(kAllPrecisionClasses[i]);
  return t;
}

std::int64_t CostCounter::vector_raw() const {
  return raw_by_component()[static_cast<std::size_t>(CostComponent::kVector)];
}

std::array<std::int64_t, kNumCostComponents> CostCounter::raw_by_component() const {
  std::array<i64, kNumCostComponents> out{};
  for (const auto& [k, v] : flops_) {
    i64& s = out[static_cast<std::size_t>(k.component)];
    s = ::v4ref::ref::add(s, v);
  }
  return out;
}

std::array<double, kNumCostComponents> CostCounter::eqfp8_by_component(
    const PrecisionWeights& w) const {
  std::array<double, kNumCostComponents> out{};
  for (CostComponent c : kAllCostComponents) {
    const auto cls = raw_by_class(c);
    double s = 0;
    for (std::size_t i = 0; i < kNumPrecisionClasses; ++i)
      s += static_cast<double>(cls[i]) * w.of(kAllPrecisionClasses[i]);
    out[static_cast<std::size_t>(c)] = s;
  }
  return out;
}

std::array<std::int64_t, kNumPrecisionClasses> CostCounter::raw_by_class() const {
  std::array<i64, kNumPrecisionClasses> out{};
  for (const auto& [k, v] : flops_) {
    if (k.component == CostComponent::kVector) continue;
    i64& s = out[static_cast<std::size_t>(k.cls)];
    s = ::v4ref::ref::add(s, v);
  }
  return out;
}

std::array<std::int64_t, kNumPrecisionClasses> CostCounter::raw_by_class(CostComponent c) const {
  std::array<i64, kNumPrecisionClasses> out{};
  for (const auto& [k, v] : flops_) {
    if (k.component != c) continue;
    i64& s = out[static_cast<std::size_t>(k.cls)];
    s = ::v4ref::ref::add(s, v);
  }
  return out;
}

std::array<std::int64_t, kNumCostLayerKinds> CostCounter::raw_by_layer_kind() const {
  std::array<i64, kNumCostLayerKinds> out{};
  for (const auto& [k, v] : flops_) {
    if (k.component == CostComponent::kVector) continue;
    i64& s = out[static_cast<std::size_t>(k.kind)];
    s = ::v4ref::ref::add(s, v);
  }
  return out;
}

std::array<double, kNumCostLayerKinds> CostCounter::eqfp8_by_layer_kind(
    const PrecisionWeights& w) const {
  std::array<double, kNumCostLayerKinds> out{};
  for (const auto& [k, v] : flops_)
    if (k.component != CostComponent::kVector)
      out[static_cast<std::size_t>(k.kind)] += static_cast<double>(v) * w.of(k.cls);
  return out;
}

std::map<std::int64_t, std::int64_t> CostCounter::raw_by_layer() const {
  std::map<i64, i64> out;
  for (const auto& [k, v] : flops_) {
    if (k.component == CostComponent::kVector) continue;
    i64& s = out[k.layer];
    s = ::v4ref::ref::add(s, v);
  }
  return out;
}

std::int64_t CostCounter::kv_bytes_total() const {
  i64 t = 0;
  for (const auto& [k, v] : kv_) t = ::v4ref::ref::add(t, v);
  return t;
}

std::array<std::int64_t, kNumKvCacheKinds> CostCounter::kv_bytes_by_cache() const {
  std::array<i64, kNumKvCacheKinds> out{};
  for (const auto& [k, v] : kv_) {
    i64& s = out[static_cast<std::size_t>(k.cache)];
    s = ::v4ref::ref::add(s, v);
  }
  return out;
}

std::vector<std::string> CostCounter::matmul_differences(const CostCounter& other) const {
  return map_differences(
      flops_, other.flops_, [](const Key& k) { return k.component == CostComponent::kVector; },
      key_name);
}

std::vector<std::string> CostCounter::kv_differences(const CostCounter& other) const {
  return map_differences(
      kv_, other.kv_, [](const KvKey&) { return false; }, kv_key_name);
}

// ---- analytic FLOPs ------------------------------------------------------------------------

CostCounter decode_flops(const ModelConfig& cfg, std::int64_t L) {
  require_context(L, "decode context L");
  return count_flops(cfg, ContextCounts(L, false));
}

CostCounter prefill_flops(const ModelConfig& cfg, std::int64_t T) {
  require_context(T, "prefill length T");
  return count_flops(cfg, ContextCounts(T, true));
}

std::int64_t active_params(const ModelConfig& cfg) {
  const CostCounter cc = decode_flops(cfg, 1);
  const auto by = cc.raw_by_component();
  i64 weights = cc.total_raw();
  weights -= by[static_cast<std::size_t>(CostComponent::kAttnCore)];
  weights -= by[static_cast<std::size_t>(CostComponent::kIndexerScore)];
  return weights / 2;
}

// ---- KV bytes ------------------------------------------------------------------------------

const char* kv_layout_name(KvLayout l) {
  switch (l) {
    case KvLayout::kServing: return "serving";
    case KvLayout::kPayload: return "payload";
    case KvLayout::kIndexerFp8: return "indexer-fp8";
    case KvLayout::kBf16: return "bf16";
    case KvLayout::kNoIndexer: return "no-indexer";
  }
  return "?";
}

KvLayout parse_kv_layout(std::string_view name) {
  constexpr std::array<KvLayout, 5> kAll = {KvLayout::kServing, KvLayout::kPayload,
                                            KvLayout::kIndexerFp8, KvLayout::kBf16,
                                            KvLayout::kNoIndexer};
  return parse_name(name, kAll, kv_layout_name, "KV layout");
}

KvEntryBytes kv_entry_bytes(const ModelConfig& cfg, KvLayout layout) {
  const i64 DI = cfg.index_head_dim;
  const i64 fp8_indexer = DI + 4 * ceil_div(DI, 128);  // FP8 values + one fp32 scale per 128
  if (cfg.arch == Arch::kDeepseekV32) {
    const i64 kvl = cfg.kv_lora_rank, r = cfg.qk_rope_head_dim;
    // 512 FP8 latent values + fp32 scale per 128 + 64 BF16 RoPE values = 656.
    const i64 serving = kvl + 4 * ceil_div(kvl, 128) + 2 * r;
    switch (layout) {
      case KvLayout::kServing:
      case KvLayout::kIndexerFp8: return {serving, fp8_indexer};
      case KvLayout::kPayload: return {kvl + 2 * r, DI};
      case KvLayout::kBf16: return {2 * (kvl + r), 2 * DI};
      case KvLayout::kNoIndexer: return {serving, 0};
    }
    return {};
  }
  const i64 D = cfg.head_dim, r = cfg.rope_head_dim, nope = D - r;
  // 448 FP8 + 64 BF16 RoPE (128 B) + 7 ue8m0 scales (one per 64) + pad to 8 B = 584.
  const i64 serving = round_up(nope + 2 * r + ceil_div(nope, 64), 8);
  // 128 FP4 values in 64 B + one ue8m0 scale per 32 = 68.
  const i64 fp4_indexer = DI / 2 + ceil_div(DI, 32);
  switch (layout) {
    case KvLayout::kServing: return {serving, fp4_indexer};
    case KvLayout::kIndexerFp8: return {serving, fp8_indexer};
    case KvLayout::kPayload: return {nope + 2 * r, DI / 2};
    case KvLayout::kBf16: return {2 * D, 2 * DI};
    case KvLayout::kNoIndexer: return {serving, 0};
  }
  return {};
}

std::int64_t compressor_state_bytes(const ModelConfig& cfg, const LayerConfig& layer) {
  if (cfg.arch == Arch::kDeepseekV32 || layer.kind == LayerKind::kSwa) return 0;
  constexpr i64 kRowBytes = 2 * 4;  // fp32 value + fp32 logit per channel
  const i64 m = layer.ratio;
  if (layer.kind == LayerKind::kHca) return m * cfg.head_dim * kRowBytes;
  // CSA (overlapped: 2m rows of 2 channel series), main and indexer compressor.
  return 2 * m * 2 * cfg.head_dim * kRowBytes + 2 * m * 2 * cfg.index_head_dim * kRowBytes;
}

namespace {

// Bytes of a cache covering `tokens` sequence positions with one entry per `m` positions.
i64 cache_bytes(i64 tokens, i64 m, i64 entry_bytes, const KvOptions& o) {
  if (entry_bytes == 0) return 0;
  if (!o.paged) return mul(tokens / m, entry_bytes);
  if (o.page_tokens < 1 || o.page_align < 1 || o.page_tokens % m != 0)
    throw Error("paged KV: page_tokens (" + std::to_string(o.page_tokens) +
                ") must be a positive multiple of the compression ratio " + std::to_string(m) +
                " and page_align (" + std::to_string(o.page_align) + ") positive");
  const i64 page = round_up(mul(o.page_tokens / m, entry_bytes), o.page_align);
  return mul(ceil_div(tokens, o.page_tokens), page);
}

}  // namespace

CostCounter kv_cache_counter(const ModelConfig& cfg, std::int64_t L, const KvOptions& opts) {
  require_context(L, "KV context L");
  validate(cfg);
  const KvEntryBytes e = kv_entry_bytes(cfg, opts.layout);
  CostCounter cc;
  auto put = [&](i64 layer, CostLayerKind kind, KvCacheKind cache, i64 bytes) {
    if (bytes > 0) cc.add_kv_bytes(layer, kind, cache, bytes);
  };
  if (cfg.arch == Arch::kDeepseekV32) {
    for (i64 i = 0; i < cfg.n_layers; ++i) {
      put(i, CostLayerKind::kV32, KvCacheKind::kV32Latent, cache_bytes(L, 1, e.main, opts));
      put(i, CostLayerKind::kV32, KvCacheKind::kV32IndexerKey, cache_bytes(L, 1, e.indexer, opts));
    }
    return cc;
  }
  for (i64 i = 0; i < cfg.n_layers; ++i) {
    const LayerConfig lc = layer_config(cfg, i);
    const CostLayerKind kind = cost_layer_kind(lc.kind);
    put(i, kind, KvCacheKind::kWindow, cache_bytes(std::min(L, cfg.window_size), 1, e.main, opts));
    if (lc.kind == LayerKind::kSwa) continue;
    put(i, kind, KvCacheKind::kCompressed, cache_bytes(L, lc.ratio, e.main, opts));
    if (lc.kind == LayerKind::kCsa)
      put(i, kind, KvCacheKind::kIndexerKey, cache_bytes(L, lc.ratio, e.indexer, opts));
    if (opts.compressor_state)
      put(i, kind, KvCacheKind::kCompressorState, compressor_state_bytes(cfg, lc));
  }
  return cc;
}

std::int64_t kv_bytes(const ModelConfig& cfg, std::int64_t L, const KvOptions& opts) {
  return kv_cache_counter(cfg, L, opts).kv_bytes_total();
}

// ---- summaries -----------------------------------------------------------------------------

CostPoint cost_point(const ModelConfig& cfg, std::int64_t L, const PrecisionWeights& w,
                     const KvOptions& kv_opts) {
  CostPoint p;
  p.context = L;
  const CostCounter dec = decode_flops(cfg, L);
  p.flops_raw = dec.total_raw();
  p.flops_eqfp8 = dec.total_eqfp8(w);
  const CostCounter pre = prefill_flops(cfg, L);
  p.prefill_flops_raw_per_token = static_cast<double>(pre.total_raw()) / static_cast<double>(L);
  p.prefill_flops_eqfp8_per_token = pre.total_eqfp8(w) / static_cast<double>(L);
  p.kv_bytes = kv_bytes(cfg, L, kv_opts);
  return p;
}

}  // namespace v4ref::ref
