// One V4 layer assembled from the tested components (v4-forward.md §3, §8.0):
//
//   attention_sublayer_prefill   §8.0 for every layer kind, prefill from position 0:
//     all kinds : c, q (§5.1) and the K=V rows (§5.2) of every position; window keys
//                 max(0, t−n_win+1) .. t (§5.3)
//     HCA (128) : main compressor entries C_j (§6.1, §6.3); query t attends to every visible
//                 entry j < ⌊(t+1)/128⌋ (§6.4)
//     CSA (4)   : main compressor entries (§6.2, §6.3) and the lightning indexer (§7): its own
//                 compressor keys, queries from the latent c of the query path, top
//                 min(K_I, ⌊(t+1)/4⌋) entries of the index scores select the compressed keys
//     SWA (0)   : window only (also the MTP block)
//     then sink attention (§5.4), de-rotation and the grouped output projection (§5.5).
//   block_forward                §3 Block_ℓ on the hc_mult residual streams X [T, hc·d]:
//     hc_pre(attn) → rms_norm(attn_norm) → attention sub-block → hc_post
//     → hc_pre(ffn) → rms_norm(ffn_norm) → moe_forward(token ids) → hc_post
//
// Rounding points are the components' (attention.hpp, compressor.hpp, indexer.hpp, mhc.hpp,
// norm.hpp, moe.hpp); this file adds none.
//
// Trace: when a LayerTrace is passed, the intermediate tensors are stored under the keys below
// (keys are local to the layer; a full-model forward prefixes them, e.g. "layers.3.").
//   attention sub-block:
//     "attn.c"             [T, L_q]   normalised query latent (§5.1)
//     "attn.q"             [T, H·D]   queries after head norm and RoPE
//     "attn.kv"            [T, D]     K=V rows (after the window Q8 under kKvWindowQ8)
//     "attn.compressed"    [N, D]     main compressor entries (CSA/HCA)
//     "attn.index_keys"    [N, D_I]   indexer keys (CSA)
//     "attn.index_scores"  [T, N]     index scores, −∞ where invisible (CSA)
//     "attn.topk_idx"      [T, K_I]   selected entries as doubles in rank order, −1 padding (CSA)
//     "attn.o"             [T, H·D]   core attention output before de-rotation
//     "attn.out"           [T, d]     sub-block output
//   block (block_forward only):
//     "block.in"           [T, hc·d]
//     "hc_attn.u", "hc_ffn.u"         [T, d]      collapsed sublayer inputs (§4.4)
//     "hc_attn.pre", "hc_ffn.pre"     [T, hc]
//     "hc_attn.post", "hc_ffn.post"   [T, hc]
//     "hc_attn.comb", "hc_ffn.comb"   [T, hc·hc]  row t = C[j][k] at column j·hc + k
//     "attn_norm"          [T, d]     attention sub-block input
//     "hc_attn.out"        [T, hc·d]  streams after the attention write-back
//     "ffn_norm"           [T, d]     MoE input
//     "ffn.scores"         [T, E]     router scores s_e (unbiased, §9.1)
//     "ffn.routed_idx"     [T, k_e]   chosen experts as doubles (rank order; tid2eid order for hash)
//     "ffn.route_weights"  [T, k_e]   their route weights
//     "ffn.out"            [T, d]     MoE output
//     "block.out"          [T, hc·d]
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "v4ref/ref/attention.hpp"
#include "v4ref/ref/compressor.hpp"
#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/indexer.hpp"
#include "v4ref/ref/linear.hpp"
#include "v4ref/ref/mhc.hpp"
#include "v4ref/ref/moe.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref::ref {

// Named intermediate tensors of one layer (keys in the file comment). Filled only when a
// non-null pointer is passed; an existing key is overwritten.
struct LayerTrace {
  std::map<std::string, Mat> tensors;

  bool has(const std::string& key) const { return tensors.count(key) != 0; }
  // Error naming the key (and the keys present) if absent.
  const Mat& at(const std::string& key) const;
};

// Everything one layer (main layer or MTP block) reads from a checkpoint.
struct LayerWeights {
  LayerConfig layer;
  AttentionWeights attn;
  std::optional<CompressorWeights> compressor;  // main compressor: CSA and HCA layers
  std::optional<IndexerWeights> indexer;        // CSA layers
  HcParams hc_attn;
  HcParams hc_ffn;
  Vec attn_norm;  // [d]
  Vec ffn_norm;   // [d]
  MoeWeights moe;
};

// Stores the per-token mHC coefficients under "<which>.pre" [T, hc], "<which>.post" [T, hc] and
// "<which>.comb" [T, hc·hc] (row t = C[j][k] at column j·hc + k). No-op for a null trace.
void trace_hc_mix(LayerTrace* trace, const std::string& which, const std::vector<HcMix>& mix,
                  std::int64_t hc);

// Loads "<prefix>{attn.*, attn.compressor.*, attn.indexer.*, hc_attn_*, hc_ffn_*,
// attn_norm.weight, ffn_norm.weight, ffn.*}" of layer `layer_index` (0 .. n_layers−1, or
// n_layers + k for MTP block k). Routed experts are loaded as `loading` says (kOnDemand keeps
// one dequantised expert at a time). ConfigError for an index out of range; the component
// loaders' errors otherwise.
// `expert_cache` (optional, kOnDemand only): the routed experts go through it (weight_cache.hpp).
LayerWeights load_layer(const Checkpoint& ckpt, const ModelConfig& cfg, std::int64_t layer_index,
                        ExpertLoading loading = ExpertLoading::kOnDemand,
                        std::shared_ptr<WeightCache> expert_cache = nullptr);

// Bytes the layer's dequantised weights hold in double, routed experts excluded when they are
// loaded on demand (they are accounted one by one).
std::int64_t resident_bytes(const LayerWeights& w);

// The attention sub-block of §8.0, prefill form from position 0. x [T, d] is the attn_norm
// output; returns [T, d]. ConfigError if `layer` disagrees with w.layer (index or kind) or the
// weights lack the compressor / indexer the layer kind needs; ShapeError on a wrong width of x.
Mat attention_sublayer_prefill(const Mat& x, const LayerWeights& w, const ModelConfig& cfg,
                               const LayerConfig& layer, const PrecisionPolicy& policy,
                               LayerTrace* trace = nullptr);

// The whole block (§3) on the residual streams X [T, hc·d] (row t stream-major as in mhc.hpp)
// with the token ids of the T positions (the MoE of hash layers routes by them). Returns the new
// streams [T, hc·d]. ShapeError on a wrong width of X or a token_ids size other than T.
Mat block_forward(const Mat& X, std::span<const std::int64_t> token_ids, const LayerWeights& w,
                  const ModelConfig& cfg, const LayerConfig& layer, const PrecisionPolicy& policy,
                  LayerTrace* trace = nullptr);

}  // namespace v4ref::ref
