// The whole model: token ids → logits (v4-forward.md §3, §10), incremental decode with the
// caches the official code keeps (§11), and the MTP block (§10.2).
//
//   prefill   embed → X_t[k] = h_t (k < hc) → Block_0 … Block_{L−1} (layer.hpp, prefill form)
//             → hc_head (§4.5) → RMSNorm_norm → head: logits at every position.
//   decode    one token per step at position t = state.position, through per-layer caches
//             (§11.1): window ring buffer [n_win, D] (slot p mod n_win, K=V rows after RoPE
//             and the window Q8), main compressor state and entries (CSA/HCA), indexer
//             compressor state and keys (CSA). The step follows §11.3: query and K=V row,
//             window write, indexer compressor (may append a key) → scores over the visible
//             keys → top-k, main compressor (may append an entry), attention over the window
//             ∪ selected entries. It shares the components with prefill but not the
//             prefill-form assembly (attention_sublayer_prefill, compress_prefill,
//             indexer_prefill), so decode = prefill is a real check.
//   hand-off  prefill_with_state() runs the prefill path and leaves the caches as the official
//             prefill does (§11.2 "Prefill hand-off"), so decoding can start at any split point.
//   MTP       mtp_forward(): X0[k] = e_proj(RMSNorm_enorm(embed[x'])) + h_proj(RMSNorm_hnorm(X_L[k]))
//             → Block_MTP (SWA, score routing) → hc_head(mtp.k) → RMSNorm(mtp.k.norm) → head.
//
// Weights stay in the checkpoint (mmap) in their stored format. With keep_weights = false
// (default) one layer's dequantised weights are resident at a time and routed experts are
// dequantised one at a time as the MoE reaches them; the embedding is read row by row and the
// head block by block. keep_weights = true caches every layer (tiny checkpoints: decode speed).
// weight_cache_bytes > 0 (real-size checkpoints, decode): a bounded LRU (weight_cache.hpp) holds
// recently used layers (without routed experts) and routed experts up to that many bytes in
// double, so a decode step reuses what the previous steps dequantised; results are bitwise the
// same with and without it.
//
// Instrumented counting (cost_model.hpp §7): the decode path charges a CostCounter with the
// multiply-adds of every matmul it performs, from the operand shapes of that call, and
// DecodeState::kv_counter() reports the cache bytes the state holds.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "v4ref/ref/compressor.hpp"
#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/cost_model.hpp"
#include "v4ref/ref/layer.hpp"
#include "v4ref/ref/linear.hpp"
#include "v4ref/ref/safetensors.hpp"
#include "v4ref/ref/trace.hpp"
#include "v4ref/ref/weight_cache.hpp"

namespace v4ref::ref {

// Progress of a long run: `stage` ("prefill", "decode", "mtp"), units done of total.
using ProgressFn = std::function<void(std::string_view stage, std::int64_t done, std::int64_t total)>;

struct ModelOptions {
  PrecisionPolicy policy = PrecisionPolicy::exact();
  bool keep_weights = false;       // cache every layer's dequantised weights (tiny checkpoints)
  std::int64_t weight_cache_bytes = 0;  // LRU budget for dequantised layers and experts; 0: none
  bool check_layout = true;        // check names, dtypes and shapes against the config on open
  ProgressFn progress;             // optional
};

// The caches of one layer (§11.1).
struct LayerCache {
  LayerConfig layer;
  Mat window;                              // [n_win, D] ring buffer, slot p mod n_win
  std::optional<CompressorState> main;     // CSA/HCA main compressor state
  Mat compressed;                          // [entries, D] main compressed entries
  std::optional<CompressorState> indexer;  // CSA indexer compressor state
  Mat index_keys;                          // [entries, D_I]
  std::int64_t next_position = 0;          // the position the next step of this layer carries
};

// Decode state of one sequence: the next position and every layer's caches (main layers, then
// MTP blocks).
struct DecodeState {
  std::int64_t position = 0;
  std::vector<LayerCache> layers;  // n_layers main layers
  std::vector<LayerCache> mtp;     // n_mtp_layers blocks (their own window caches and positions)
  // KV bytes the caches hold under a layout (cost_model.hpp §5): window min(position, n_win)
  // entries, compressed and indexer-key entries present; compressor state if asked.
  CostCounter kv_counter(const ModelConfig& cfg, const KvOptions& opts = {}) const;
};

struct ForwardRequest {
  std::int64_t first_layer = 0;
  std::int64_t last_layer = -1;        // inclusive; −1 = the last main layer
  // Teacher-forced: each layer in the range reads its input streams from this trace
  // ("layers.{i}.block.in"), and the head (when the range reaches the last layer) reads
  // "layers.{L−1}.block.out". Chained (nullptr): layer i is fed by layer i − 1 from the
  // embedding; layers before first_layer run but are not traced.
  const Trace* teacher = nullptr;
};

struct ForwardResult {
  Mat streams;  // [T, hc·d] output streams of the last layer run
  Mat logits;   // [T, vocab] when the range ends at the last main layer, else empty
};

class Model {
 public:
  // Checks the config (validate) and, unless disabled, the checkpoint layout against it
  // (missing/unexpected tensors, dtypes, shapes: ConfigError listing the first problems).
  static Model open(const Checkpoint& ckpt, const ModelConfig& cfg, ModelOptions options = {});
  static Model open(const std::filesystem::path& dir, const ModelConfig& cfg, ModelOptions options = {});

  const ModelConfig& config() const;
  const ModelOptions& options() const;
  const Checkpoint& checkpoint() const;
  const PrecisionPolicy& policy() const { return options().policy; }
  // The LRU of ModelOptions::weight_cache_bytes (null when there is none).
  std::shared_ptr<const WeightCache> weight_cache() const;

  // Token ids must be non-empty, each in [0, vocab) and the sequence no longer than
  // max_position_embeddings (ShapeError naming the position and value otherwise).
  void check_tokens(std::span<const std::int64_t> tokens, std::int64_t start_position = 0) const;

  // Prefill from position 0 (§3). Trace names per trace.hpp.
  ForwardResult forward(std::span<const std::int64_t> tokens, const ForwardRequest& request = {},
                        Trace* trace = nullptr) const;

  // Prefill that also leaves the decode caches (official prefill hand-off, §11.2).
  ForwardResult prefill_with_state(std::span<const std::int64_t> tokens, DecodeState& state,
                                   Trace* trace = nullptr) const;
  // Empty caches (score state −∞, value state 0) for decoding from position 0.
  DecodeState start_state() const;
  // One token at position state.position: returns its logits [1, vocab] and advances the state.
  // Appends one row per trace point (see trace.hpp). Charges `cost` if given (§7 of the cost
  // model: decode_flops(cfg, position + 1) exactly). `streams_out` receives X_L [1, hc·d].
  Mat decode_step(std::int64_t token, DecodeState& state, Trace* trace = nullptr,
                  CostCounter* cost = nullptr, Mat* streams_out = nullptr) const;

  // MTP block k (§10.2), prefill form at positions 0 .. T−1: x_l = X_L [T, hc·d] of the main
  // model, ids = the MTP input ids (the next tokens in speculative use). Returns logits
  // [T, vocab]. Trace names "mtp.{k}.*".
  Mat mtp_forward(const Mat& x_l, std::span<const std::int64_t> ids, std::int64_t block = 0,
                  Trace* trace = nullptr) const;
  // MTP block k, one position (state.mtp[k].next_position) through its own window cache.
  Mat mtp_decode_step(const Mat& x_l_row, std::int64_t id, DecodeState& state,
                      std::int64_t block = 0, Trace* trace = nullptr) const;

  // The pieces, for tests and the differential runner.
  Mat embed(std::span<const std::int64_t> tokens) const;  // [T, d]
  Mat expand_streams(const Mat& h) const;                 // [T, d] → [T, hc·d]
  Mat head_logits(const Mat& y) const;                    // [T, d] normed → [T, vocab]
  // hc_head → RMSNorm → head on final streams, main head (block < 0) or MTP block k's.
  Mat logits_from_streams(const Mat& x, Trace* trace = nullptr, std::int64_t mtp_block = -1) const;
  std::shared_ptr<const LayerWeights> layer_weights(std::int64_t layer_index) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Parses "3", "0-3", "all" (→ 0 .. n_layers−1) into an inclusive range, ConfigError if out of
// [0, n_layers).
std::pair<std::int64_t, std::int64_t> parse_layer_range(std::string_view text, std::int64_t n_layers);

}  // namespace v4ref::ref
