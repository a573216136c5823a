// Model configuration (v4-forward.md §1.1–1.3) and the per-layer view derived from it.
// One ModelConfig type serves V4-Flash, V4-Pro, the tiny test configs and (for the cost
// model) DeepSeek-V3.2. validate() runs once after parsing; nothing downstream re-derives
// layer types, RoPE tables or routing modes: they come from layer_config().
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "v4ref/ref/core/error.hpp"

namespace v4ref {

enum class Arch { kDeepseekV4, kDeepseekV32 };

// Attention layer type, keyed by the compression ratio of `compress_ratios` (§1.2).
enum class LayerKind { kSwa, kCsa, kHca };

enum class ExpertDtype { kFp4, kFp8 };

struct YarnConfig {
  double factor = 16;                 // rope_scaling.factor
  std::int64_t original_seq_len = 65536;  // rope_scaling.original_max_position_embeddings
  double beta_fast = 32;
  double beta_slow = 1;

  bool operator==(const YarnConfig&) const = default;
};

struct ModelConfig {
  std::string name;  // "v4-flash", "tiny-flash", ... (informational)
  Arch arch = Arch::kDeepseekV4;

  std::int64_t vocab_size = 0;
  std::int64_t dim = 0;             // d (hidden_size)
  std::int64_t n_layers = 0;        // main-model layers (num_hidden_layers)
  std::int64_t n_heads = 0;         // H
  std::int64_t head_dim = 0;        // D (512)
  std::int64_t rope_head_dim = 0;   // r (64)
  std::int64_t q_lora_rank = 0;     // L_q
  std::int64_t o_groups = 0;        // G
  std::int64_t o_lora_rank = 0;     // R_o
  std::int64_t window_size = 0;     // n_win (sliding_window)
  std::vector<int> compress_ratios; // n_layers + n_mtp_layers entries, each 0, 4 or 128
  // Entries a config.json carried beyond n_layers + n_mtp_layers (re-releases such as "-0731"
  // ship 46 for the 43-layer Flash, §1.2). Recorded, never used by the forward.
  std::vector<int> compress_ratios_extra;
  double rope_theta = 10000;        // SWA-only layers, no YaRN
  double compress_rope_theta = 160000;  // CSA/HCA layers, with YaRN
  YarnConfig yarn;
  std::int64_t max_position_embeddings = 0;

  std::int64_t index_n_heads = 0;   // H_I
  std::int64_t index_head_dim = 0;  // D_I
  std::int64_t index_topk = 0;      // K_I

  std::int64_t hc_mult = 4;
  std::int64_t hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;

  std::int64_t n_routed_experts = 0;     // E
  std::int64_t n_shared_experts = 1;
  std::int64_t n_activated_experts = 0;  // k_e
  std::int64_t moe_inter_dim = 0;        // I
  double route_scale = 1;
  std::string score_func = "sqrtsoftplus";
  std::int64_t n_hash_layers = 0;
  double swiglu_limit = 10;
  std::int64_t n_mtp_layers = 1;
  double norm_eps = 1e-6;
  ExpertDtype expert_dtype = ExpertDtype::kFp4;
  std::int64_t bos_token_id = 0;
  std::int64_t eos_token_id = 1;

  // DeepSeek-V3.2 (MLA + DSA) only; zero for V4 (spec/cost-model.md §3).
  std::int64_t kv_lora_rank = 0;
  std::int64_t qk_nope_head_dim = 0;
  std::int64_t qk_rope_head_dim = 0;
  std::int64_t v_head_dim = 0;
  std::int64_t first_k_dense_replace = 0;
  std::int64_t intermediate_size = 0;  // dense FFN width of the first layers

  // Derived sizes (§1.3).
  std::int64_t hc_dim() const { return hc_mult * dim; }                  // d_c
  std::int64_t hc_mix_dim() const { return (2 + hc_mult) * hc_mult; }    // 24
  std::int64_t q_dim() const { return n_heads * head_dim; }              // H·D
  std::int64_t nope_dim() const { return head_dim - rope_head_dim; }     // D_n
  std::int64_t heads_per_group() const { return n_heads / o_groups; }    // H/G
  std::int64_t group_in_dim() const { return q_dim() / o_groups; }       // H·D/G
  std::int64_t o_dim() const { return o_groups * o_lora_rank; }          // G·R_o
  std::int64_t index_q_dim() const { return index_n_heads * index_head_dim; }
  std::int64_t n_total_layers() const { return n_layers + n_mtp_layers; }

  bool operator==(const ModelConfig&) const = default;
};

// Everything about layer i that the forward needs, derived in one place.
struct LayerConfig {
  std::int64_t index = 0;    // 0..n_layers-1 for main layers, n_layers+k for MTP block k
  bool is_mtp = false;
  int ratio = 0;             // m: 0, 4 or 128
  LayerKind kind = LayerKind::kSwa;
  bool hash_routed = false;  // tid2eid routing (layer < n_hash_layers, never MTP)
  bool overlap = false;      // CSA compressor: two channel series (c = 2)
  double rope_base = 10000;  // RoPE base of this layer (§2.3)
  bool rope_yarn = false;    // YaRN frequency scaling on
  std::string prefix;        // tensor-name prefix: "layers.{i}." or "mtp.{k}."
};

inline const char* layer_kind_name(LayerKind k) {
  switch (k) {
    case LayerKind::kSwa: return "swa";
    case LayerKind::kCsa: return "csa";
    case LayerKind::kHca: return "hca";
  }
  return "?";
}

inline LayerConfig layer_config(const ModelConfig& cfg, std::int64_t i) {
  if (i < 0 || i >= cfg.n_total_layers())
    throw ConfigError("layer " + std::to_string(i) + " out of range: config " + cfg.name + " has " +
                      std::to_string(cfg.n_layers) + " layers + " +
                      std::to_string(cfg.n_mtp_layers) + " MTP blocks");
  LayerConfig lc;
  lc.index = i;
  lc.is_mtp = i >= cfg.n_layers;
  lc.ratio = cfg.compress_ratios.at(static_cast<std::size_t>(i));
  lc.kind = lc.ratio == 0 ? LayerKind::kSwa : (lc.ratio == 4 ? LayerKind::kCsa : LayerKind::kHca);
  lc.hash_routed = !lc.is_mtp && i < cfg.n_hash_layers;
  lc.overlap = lc.ratio == 4;
  lc.rope_yarn = lc.ratio != 0;
  lc.rope_base = lc.ratio != 0 ? cfg.compress_rope_theta : cfg.rope_theta;
  lc.prefix = lc.is_mtp ? "mtp." + std::to_string(i - cfg.n_layers) + "."
                        : "layers." + std::to_string(i) + ".";
  return lc;
}

namespace detail {
// Shortest round-trip form of a double for messages ("0", "1.5", "1e-06"), not "%f".
inline std::string number_string(double v) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}
inline void require_config(bool ok, const ModelConfig& cfg, const std::string& what) {
  if (!ok) throw ConfigError("config " + (cfg.name.empty() ? std::string("?") : cfg.name) + ": " + what);
}
inline void require_positive(const ModelConfig& cfg, const char* field, std::int64_t v) {
  require_config(v > 0, cfg, std::string(field) + " must be > 0, got " + std::to_string(v));
}
}  // namespace detail

// Rejects inconsistent V4 configs with a message naming the field (V3.2 configs are only
// checked for the fields the cost model reads).
inline void validate(const ModelConfig& cfg) {
  using detail::require_config;
  using detail::require_positive;
  require_positive(cfg, "vocab_size", cfg.vocab_size);
  require_positive(cfg, "hidden_size (dim)", cfg.dim);
  require_positive(cfg, "num_hidden_layers (n_layers)", cfg.n_layers);
  require_positive(cfg, "num_attention_heads (n_heads)", cfg.n_heads);
  require_positive(cfg, "q_lora_rank", cfg.q_lora_rank);
  require_positive(cfg, "n_routed_experts", cfg.n_routed_experts);
  require_positive(cfg, "num_experts_per_tok", cfg.n_activated_experts);
  require_positive(cfg, "moe_intermediate_size", cfg.moe_inter_dim);
  require_config(cfg.n_activated_experts <= cfg.n_routed_experts, cfg,
                 "num_experts_per_tok (" + std::to_string(cfg.n_activated_experts) +
                     ") exceeds n_routed_experts (" + std::to_string(cfg.n_routed_experts) + ")");
  if (cfg.arch == Arch::kDeepseekV32) {
    require_positive(cfg, "kv_lora_rank", cfg.kv_lora_rank);
    require_positive(cfg, "qk_nope_head_dim", cfg.qk_nope_head_dim);
    require_positive(cfg, "qk_rope_head_dim", cfg.qk_rope_head_dim);
    require_positive(cfg, "v_head_dim", cfg.v_head_dim);
    require_positive(cfg, "index_n_heads", cfg.index_n_heads);
    require_positive(cfg, "index_head_dim", cfg.index_head_dim);
    require_positive(cfg, "index_topk", cfg.index_topk);
    require_positive(cfg, "max_position_embeddings", cfg.max_position_embeddings);
    require_config(cfg.first_k_dense_replace >= 0 && cfg.first_k_dense_replace <= cfg.n_layers, cfg,
                   "first_k_dense_replace (" + std::to_string(cfg.first_k_dense_replace) +
                       ") out of [0, n_layers]");
    if (cfg.first_k_dense_replace > 0)
      require_positive(cfg, "intermediate_size", cfg.intermediate_size);
    require_config(cfg.yarn.original_seq_len > 0, cfg,
                   "rope_scaling.original_max_position_embeddings must be > 0, got " +
                       std::to_string(cfg.yarn.original_seq_len));
    return;
  }
  require_positive(cfg, "head_dim", cfg.head_dim);
  require_positive(cfg, "qk_rope_head_dim (rope_head_dim)", cfg.rope_head_dim);
  require_config(cfg.rope_head_dim % 2 == 0, cfg,
                 "qk_rope_head_dim must be even (RoPE rotates pairs), got " +
                     std::to_string(cfg.rope_head_dim));
  require_config(cfg.rope_head_dim < cfg.head_dim, cfg,
                 "qk_rope_head_dim (" + std::to_string(cfg.rope_head_dim) +
                     ") must be smaller than head_dim (" + std::to_string(cfg.head_dim) + ")");
  // The window KV and the compressed KV are fake-quantised on their nope part in FP8 blocks of
  // 64 (§2.5 items 2 and 3: Q8(kv[0:448]; 64)); the official act_quant needs whole blocks.
  require_config(cfg.nope_dim() % 64 == 0, cfg,
                 "head_dim - qk_rope_head_dim (" + std::to_string(cfg.head_dim) + " - " +
                     std::to_string(cfg.rope_head_dim) +
                     ") must be a multiple of 64 (FP8 KV fake-quant blocks, §2.5)");
  require_positive(cfg, "o_groups", cfg.o_groups);
  require_positive(cfg, "o_lora_rank", cfg.o_lora_rank);
  require_config(cfg.n_heads % cfg.o_groups == 0, cfg,
                 "num_attention_heads (" + std::to_string(cfg.n_heads) +
                     ") must be a multiple of o_groups (" + std::to_string(cfg.o_groups) + ")");
  // Implied by the line above; stated because wo_a splits the H·D query width into G groups (§5.5).
  require_config(cfg.q_dim() % cfg.o_groups == 0, cfg,
                 "num_attention_heads * head_dim (" + std::to_string(cfg.q_dim()) +
                     ") must be a multiple of o_groups (" + std::to_string(cfg.o_groups) + ")");
  require_positive(cfg, "sliding_window", cfg.window_size);
  require_positive(cfg, "index_topk", cfg.index_topk);
  require_positive(cfg, "max_position_embeddings", cfg.max_position_embeddings);
  require_config(cfg.n_mtp_layers >= 0, cfg,
                 "num_nextn_predict_layers must be >= 0, got " + std::to_string(cfg.n_mtp_layers));
  require_config(static_cast<std::int64_t>(cfg.compress_ratios.size()) == cfg.n_total_layers(), cfg,
                 "compress_ratios has " + std::to_string(cfg.compress_ratios.size()) +
                     " entries, need n_layers + n_mtp_layers = " +
                     std::to_string(cfg.n_total_layers()));
  bool any_csa = false;
  for (std::size_t i = 0; i < cfg.compress_ratios.size(); ++i) {
    const int r = cfg.compress_ratios[i];
    require_config(r == 0 || r == 4 || r == 128, cfg,
                   "compress_ratios[" + std::to_string(i) + "] = " + std::to_string(r) +
                       "; accepted: 0 (SWA), 4 (CSA), 128 (HCA)");
    any_csa = any_csa || r == 4;
  }
  for (std::int64_t k = 0; k < cfg.n_mtp_layers; ++k) {
    const int r = cfg.compress_ratios[static_cast<std::size_t>(cfg.n_layers + k)];
    require_config(r == 0, cfg,
                   "compress_ratios[" + std::to_string(cfg.n_layers + k) + "] = " +
                       std::to_string(r) +
                       " belongs to the MTP block, which is SWA-only (ratio 0)");
  }
  if (any_csa) {
    require_positive(cfg, "index_n_heads", cfg.index_n_heads);
    require_positive(cfg, "index_head_dim", cfg.index_head_dim);
    require_config(cfg.rope_head_dim < cfg.index_head_dim, cfg,
                   "qk_rope_head_dim (" + std::to_string(cfg.rope_head_dim) +
                       ") must be smaller than index_head_dim (" +
                       std::to_string(cfg.index_head_dim) + ")");
    const std::int64_t n = cfg.index_head_dim;
    require_config((n & (n - 1)) == 0, cfg,
                   "index_head_dim must be a power of two (Hadamard rotation), got " +
                       std::to_string(n));
  }
  require_positive(cfg, "hc_mult", cfg.hc_mult);
  require_positive(cfg, "hc_sinkhorn_iters", cfg.hc_sinkhorn_iters);
  require_config(cfg.hc_eps > 0, cfg,
                 "hc_eps must be > 0, got " + detail::number_string(cfg.hc_eps));
  require_config(cfg.norm_eps > 0, cfg,
                 "rms_norm_eps must be > 0, got " + detail::number_string(cfg.norm_eps));
  require_config(cfg.n_shared_experts == 1, cfg,
                 "n_shared_experts must be 1 (the official code asserts it), got " +
                     std::to_string(cfg.n_shared_experts));
  require_config(cfg.score_func == "sqrtsoftplus", cfg,
                 "scoring_func \"" + cfg.score_func + "\" is not supported; V4 uses sqrtsoftplus");
  require_config(cfg.n_hash_layers >= 0 && cfg.n_hash_layers <= cfg.n_layers, cfg,
                 "num_hash_layers (" + std::to_string(cfg.n_hash_layers) + ") out of [0, n_layers]");
  require_config(cfg.swiglu_limit > 0, cfg,
                 "swiglu_limit must be > 0 (0 disables the clamp: a debug default, not a release "
                 "value), got " + detail::number_string(cfg.swiglu_limit));
  require_config(cfg.yarn.original_seq_len > 0, cfg,
                 "rope_scaling.original_max_position_embeddings must be > 0 (0 silently disables "
                 "YaRN), got " + std::to_string(cfg.yarn.original_seq_len));
  require_config(cfg.yarn.factor >= 1, cfg,
                 "rope_scaling.factor must be >= 1, got " + detail::number_string(cfg.yarn.factor));
  require_config(cfg.rope_theta > 0 && cfg.compress_rope_theta > 0, cfg,
                 "rope_theta and compress_rope_theta must be > 0, got " +
                     detail::number_string(cfg.rope_theta) + " and " +
                     detail::number_string(cfg.compress_rope_theta));
  // The official forward fake-quantises the input of every fp8/fp4 linear in blocks of 128
  // (§2.5 item 1; its act_quant kernel requires whole blocks): hidden (wq_a, wkv, experts,
  // e_proj, h_proj), q_lora (wq_b, indexer.wq_b), o_groups·o_lora (wo_b) and the expert width
  // (w2). This also covers the fp4 expert scale blocks of 32.
  const std::pair<const char*, std::int64_t> q8_inputs[] = {
      {"hidden_size", cfg.dim},
      {"q_lora_rank", cfg.q_lora_rank},
      {"o_groups * o_lora_rank", cfg.o_dim()},
      {"moe_intermediate_size", cfg.moe_inter_dim}};
  for (const auto& [field, width] : q8_inputs)
    require_config(width % 128 == 0, cfg,
                   std::string(field) + " = " + std::to_string(width) +
                       " must be a multiple of 128: it is the input width of an fp8/fp4 linear, "
                       "whose input the official forward quantises in blocks of 128 (v4-forward.md §2.5)");
}

}  // namespace v4ref
