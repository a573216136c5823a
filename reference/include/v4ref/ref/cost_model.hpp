// Model-level cost model: FLOPs per generated token and KV-cache bytes for DeepSeek-V3.2 and
// DeepSeek-V4 (spec/cost-model.md §1–§5, §7). This header is the one place where these formulas
// live (guide/style.md, "Case tables"); the CLI (`v4ref cost`) and reports/ only format results.
//
// Conventions (§1):
//   * L = tokens in the sequence including the one being produced. The decode step "at L"
//     processes position L-1; KV figures are for a cache holding L tokens.
//   * one multiply-add = 2 FLOPs; a GEMV with weight [out, in] costs 2·out·in.
//   * batch 1, main model only (MTP excluded), no embedding FLOPs, LM head included, no padding.
//   * only matmul-class ops enter the totals; `vector` work is a separate bucket that the
//     analytic model does not populate (it is counted by instrumentation only) and that every
//     total here excludes.
// Raw FLOPs and bytes are exact int64 integers (overflow is detected and thrown as v4ref::Error);
// eqFP8 FLOPs = Σ_class raw_class · weight_class (§2) as double, exact for the §6.3 values.
//
// Instrumented counting (§7) — how the reference forward must charge a CostCounter:
//   * every matmul-class op calls counter.add(layer, kind, component, class, raw_flops) with
//     raw_flops computed from the ACTUAL operand shapes of that call (keys actually gathered,
//     visible indexer keys actually scored); `kind` is the layer's LayerKind (V4) or
//     CostLayerKind::kV32; once-per-token ops (LM head, mHC head collapse) use
//     layer = kModelLevel and CostLayerKind::kModel.
//   * charge the math the model defines, not the reference's shortcuts: one compressor
//     projection (wkv + wgate) per token even if the reference projects only at block
//     boundaries or recomputes a prefix; indexer scores only for visible compressed keys
//     (⌊L/4⌋ at decode position L-1), never for cached-but-invisible ones; attention for
//     window keys (min(L, window)) + selected/visible compressed keys, never padding.
//   * component and class per op are those of decode_flops() below (the same names are used by
//     the CUDA timing reports): proj_attn, proj_indexer, compressor, attn_core, indexer_score,
//     mhc, moe_routed, moe_shared, router, dense_ffn, lm_head, vector.
//   * non-matmul work (norms, RoPE, softmax, sink, Sinkhorn, pooling, top-k, mHC apply) may be
//     charged to CostComponent::kVector; it is excluded from totals and from
//     matmul_differences().
//   * a decode step must then satisfy counter.matmul_differences(decode_flops(cfg, L)).empty();
//     a prefill of T tokens must equal prefill_flops(cfg, T) (Σ of decode steps at 1..T).
//   * KV bytes: add_kv_bytes(layer, kind, cache, entries_present × bytes_per_entry) from the
//     cache objects' logical contents (not capacity); compare with kv_cache_counter(cfg, L).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "v4ref/ref/core/config.hpp"

namespace v4ref::ref {

// ---- names ---------------------------------------------------------------------------------

enum class CostComponent {
  kProjAttn,      // attention weight projections (V4 wq_a, wq_b, wkv, wo_a, wo_b; V3.2 MLA absorbed)
  kProjIndexer,   // indexer projections (V4 wq_b, weights_proj; V3.2 q, k, head weights)
  kCompressor,    // V4 compressor wkv + wgate (main and indexer)
  kAttnCore,      // QK and PV products over the attended keys
  kIndexerScore,  // indexer QK over all visible keys
  kMhc,           // mHC mixing projections and the head collapse
  kMoeRouted,
  kMoeShared,
  kRouter,
  kDenseFfn,      // V3.2 dense FFN of the first layers
  kLmHead,
  kVector,        // non-matmul work; reported, never in totals
};
inline constexpr std::size_t kNumCostComponents = 12;
inline constexpr std::array<CostComponent, kNumCostComponents> kAllCostComponents = {
    CostComponent::kProjAttn,  CostComponent::kProjIndexer,   CostComponent::kCompressor,
    CostComponent::kAttnCore,  CostComponent::kIndexerScore,  CostComponent::kMhc,
    CostComponent::kMoeRouted, CostComponent::kMoeShared,     CostComponent::kRouter,
    CostComponent::kDenseFfn,  CostComponent::kLmHead,        CostComponent::kVector};

// Precision classes of §2.
enum class PrecisionClass { kFp8, kFp4w, kFp4, kBf16, kFp32 };
inline constexpr std::size_t kNumPrecisionClasses = 5;
inline constexpr std::array<PrecisionClass, kNumPrecisionClasses> kAllPrecisionClasses = {
    PrecisionClass::kFp8, PrecisionClass::kFp4w, PrecisionClass::kFp4, PrecisionClass::kBf16,
    PrecisionClass::kFp32};

// Layer type a cost is charged to: the V4 LayerKind, a V3.2 layer, or the model level
// (once-per-token ops: LM head, mHC head collapse).
enum class CostLayerKind { kSwa, kCsa, kHca, kV32, kModel };
inline constexpr std::size_t kNumCostLayerKinds = 5;
inline constexpr std::int64_t kModelLevel = -1;  // layer index of model-level charges

// KV caches (§5.1).
enum class KvCacheKind {
  kV32Latent,        // V3.2 MLA latent, one entry per token per layer
  kV32IndexerKey,    // V3.2 indexer key, one per token per layer
  kWindow,           // V4 sliding-window entries, min(L, window) per layer
  kCompressed,       // V4 compressed entries, ⌊L/m⌋ per CSA/HCA layer
  kIndexerKey,       // V4 indexer key per compressed CSA entry
  kCompressorState,  // V4 compressor state (constant per layer)
};
inline constexpr std::size_t kNumKvCacheKinds = 6;

const char* cost_component_name(CostComponent c);
const char* precision_class_name(PrecisionClass p);
const char* cost_layer_kind_name(CostLayerKind k);
const char* kv_cache_kind_name(KvCacheKind k);
// Parse the names above; unknown names throw v4ref::Error listing the accepted ones.
CostComponent parse_cost_component(std::string_view name);
PrecisionClass parse_precision_class(std::string_view name);
CostLayerKind cost_layer_kind(LayerKind k);

// ---- precision weights (§2) ----------------------------------------------------------------

// eqFP8 weight per class = FP8 tensor-core peak / that class's peak. Defaults are §2's table.
struct PrecisionWeights {
  double fp8 = 1;
  double fp4w = 1;
  double fp4 = 0.5;
  double bf16 = 2;
  double fp32 = 2;

  double of(PrecisionClass p) const;
  // Sets one class by name ("fp8", "fp4w", "fp4", "bf16", "fp32"); Error on unknown names or
  // negative / non-finite values.
  void set(std::string_view name, double value);
  static PrecisionWeights raw() { return {1, 1, 1, 1, 1}; }  // raw FLOPs

  bool operator==(const PrecisionWeights&) const = default;
};

// ---- the counter ---------------------------------------------------------------------------

// FLOPs and KV bytes keyed by (layer, layer kind, component, precision class) and
// (layer, layer kind, cache). Filled by the analytic model below or by the instrumented
// forward (see the file header), then compared.
class CostCounter {
 public:
  struct Key {
    std::int64_t layer = 0;
    CostLayerKind kind = CostLayerKind::kModel;
    CostComponent component = CostComponent::kVector;
    PrecisionClass cls = PrecisionClass::kFp8;
    auto operator<=>(const Key&) const = default;
  };
  struct KvKey {
    std::int64_t layer = 0;
    CostLayerKind kind = CostLayerKind::kModel;
    KvCacheKind cache = KvCacheKind::kWindow;
    auto operator<=>(const KvKey&) const = default;
  };

  // Adds raw_flops (>= 0) to the key. Error on negative values or int64 overflow.
  void add(std::int64_t layer, CostLayerKind kind, CostComponent component, PrecisionClass cls,
           std::int64_t raw_flops);
  void add(std::int64_t layer, LayerKind kind, CostComponent component, PrecisionClass cls,
           std::int64_t raw_flops) {
    add(layer, cost_layer_kind(kind), component, cls, raw_flops);
  }
  void add_kv_bytes(std::int64_t layer, CostLayerKind kind, KvCacheKind cache, std::int64_t bytes);
  void add_kv_bytes(std::int64_t layer, LayerKind kind, KvCacheKind cache, std::int64_t bytes) {
    add_kv_bytes(layer, cost_layer_kind(kind), cache, bytes);
  }
  void merge(const CostCounter& other);
  void clear();

  const std::map<Key, std::int64_t>& flops() const { return flops_; }
  const std::map<KvKey, std::int64_t>& kv() const { return kv_; }

  // Totals over matmul-class entries (vector excluded).
  std::int64_t total_raw() const;
  double total_eqfp8(const PrecisionWeights& w = {}) const;
  std::int64_t vector_raw() const;  // the vector bucket alone

  // Aggregations (vector appears under its own component; the others exclude it).
  std::array<std::int64_t, kNumCostComponents> raw_by_component() const;
  std::array<double, kNumCostComponents> eqfp8_by_component(const PrecisionWeights& w = {}) const;
  std::array<std::int64_t, kNumPrecisionClasses> raw_by_class() const;
  std::array<std::int64_t, kNumCostLayerKinds> raw_by_layer_kind() const;
  std::array<double, kNumCostLayerKinds> eqfp8_by_layer_kind(const PrecisionWeights& w = {}) const;
  std::map<std::int64_t, std::int64_t> raw_by_layer() const;
  // Raw FLOPs of one component split by precision class.
  std::array<std::int64_t, kNumPrecisionClasses> raw_by_class(CostComponent c) const;

  std::int64_t kv_bytes_total() const;
  std::array<std::int64_t, kNumKvCacheKinds> kv_bytes_by_cache() const;

  // Everything equal, vector and KV included.
  bool operator==(const CostCounter&) const = default;
  // Human-readable list of the matmul-class keys whose values differ ("L04 csa attn_core bf16:
  // this 123, other 456"); vector entries are ignored. Empty = exact agreement.
  std::vector<std::string> matmul_differences(const CostCounter& other) const;
  // Same for the KV entries.
  std::vector<std::string> kv_differences(const CostCounter& other) const;

 private:
  std::map<Key, std::int64_t> flops_;
  std::map<KvKey, std::int64_t> kv_;
};

// ---- analytic FLOPs (§4) -------------------------------------------------------------------

// Decode step at context L (>= 1): FLOPs of generating the token at position L-1, per layer,
// component and class (§4.1 for Arch::kDeepseekV32, §4.2 for V4). The config is validated.
CostCounter decode_flops(const ModelConfig& cfg, std::int64_t L);

// Prefill of T tokens: Σ_{l=1..T} decode_flops(cfg, l), computed in closed form (§7).
// Per-token prefill cost ("prefill-averaged", §6.4) = total / T.
CostCounter prefill_flops(const ModelConfig& cfg, std::int64_t T);

// Active parameters per token implied by the counted weight matmuls: Σ (weight-matmul FLOPs)/2,
// i.e. every counted weight once (LM head included; no second vocab matrix for the embedding,
// no norm/bias vectors). §3 quotes 37.48 B / 13.27 B / 48.85 B for V3.2 / Flash / Pro.
std::int64_t active_params(const ModelConfig& cfg);

// ---- KV bytes (§5) -------------------------------------------------------------------------

enum class KvLayout {
  kServing,     // §5.1 baseline: V3.2 656 + 132, V4 584 + 68 (FP4 indexer keys)
  kPayload,     // no scale bytes: V3.2 640 + 128, V4 576 + 64
  kIndexerFp8,  // V4 indexer keys FP8 (132 B, vLLM default); rest as kServing
  kBf16,        // BF16 everywhere: V3.2 1152 + 256, V4 1024 + 256
  kNoIndexer,   // kServing without indexer keys on either side
};
const char* kv_layout_name(KvLayout l);
KvLayout parse_kv_layout(std::string_view name);  // "serving", "payload", "indexer-fp8", ...

struct KvOptions {
  KvLayout layout = KvLayout::kServing;
  bool compressor_state = false;  // add the V4 compressor-state constants to the total
  // Paged: each cache of each layer allocates pages covering `page_tokens` sequence positions
  // (page_tokens/m entries for a ratio-m cache, page_tokens for per-token caches); a page's bytes
  // are rounded up to a multiple of `page_align`. The window cache holds ⌈min(L, window) /
  // page_tokens⌉ pages.
  bool paged = false;
  std::int64_t page_tokens = 256;
  std::int64_t page_align = 576;
};

// Bytes per entry of each cache under a layout (§5.1), derived from the config:
// V4 entry = (D - r) FP8 + r BF16 + (D - r)/64 ue8m0 scales, padded to a multiple of 8 bytes;
// V3.2 latent = kv_lora FP8 + kv_lora/128 fp32 scales + r BF16.
struct KvEntryBytes {
  std::int64_t main = 0;     // V3.2 latent / V4 window and compressed entry
  std::int64_t indexer = 0;  // V3.2 per-token / V4 per-CSA-entry indexer key
};
KvEntryBytes kv_entry_bytes(const ModelConfig& cfg, KvLayout layout);

// Compressor state bytes of one V4 layer (fp32 value + fp32 logit rows): CSA main 2m rows ×
// 2D channels, CSA indexer 2m × 2·D_I, HCA m × D; 0 for SWA layers and V3.2.
std::int64_t compressor_state_bytes(const ModelConfig& cfg, const LayerConfig& layer);

// Per-layer KV bytes of a cache holding L (>= 1) tokens. Compressor state entries are present
// only when opts.compressor_state is set.
CostCounter kv_cache_counter(const ModelConfig& cfg, std::int64_t L, const KvOptions& opts = {});
// Σ of kv_cache_counter (§5.2).
std::int64_t kv_bytes(const ModelConfig& cfg, std::int64_t L, const KvOptions& opts = {});

// ---- summaries -----------------------------------------------------------------------------

struct CostPoint {
  std::int64_t context = 0;
  std::int64_t flops_raw = 0;    // decode, per generated token
  double flops_eqfp8 = 0;
  double prefill_flops_raw_per_token = 0;   // prefill_flops(cfg, L) / L
  double prefill_flops_eqfp8_per_token = 0;
  std::int64_t kv_bytes = 0;                // under the given KvOptions
};
CostPoint cost_point(const ModelConfig& cfg, std::int64_t L, const PrecisionWeights& w = {},
                     const KvOptions& kv_opts = {});

}  // namespace v4ref::ref
