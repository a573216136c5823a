// The attention sub-block of V4 (v4-forward.md §5, §8, §12, §14 items 4 and 7).
//
//   query path  §5.1: c = RMSNorm_q_norm(W_qa x); q = W_qb c; q_h = N(q_h) per head;
//                     RoPE on the last r dims of every head at the query position.
//   K=V path    §5.2: k = RMSNorm_kv_norm(W_kv x); RoPE on the last r dims; [QAT] Q8(k[0:D−r]; 64).
//   key set     §5.3: window rows max(0, t−n_win+1) .. t of the KV, plus the compressed entries the
//                     caller selected for query t (HCA: all j < ⌊(t+1)/m⌋; CSA: indexer top-k).
//   core        §5.4: o_h = Σ_s e^{ℓ_s} κ_s / (Σ_s e^{ℓ_s} + e^{sink_h}), ℓ_s = q_h·κ_s / sqrt(D),
//                     one softmax over window ∪ compressed, max over real keys subtracted from the
//                     logits and from the (unscaled) sink.
//   output      §5.5: o_h[D−r:D] rotated by −t·ω; heads in G contiguous groups;
//                     y_g = W_oa[g] z_g (W_oa rows g·R_o .. (g+1)·R_o−1); a = W_ob concat_g(y_g).
//
// Token positions: in the prefill-form functions query row i has position q_start + i and KV row s
// has position s (the KV matrix holds the whole history from position 0).
//
// Precision points used: kActQ8 / kBf16Linear (inside apply_linear; wo_a never Q8, §15.7),
// kBf16Norm (q_norm, kv_norm), kBf16QHeadNorm, kFp32RopeAngle / kBf16Rope (query, key,
// de-rotation), kKvWindowQ8 (Q8 blocks of 64 on the KV nope dims), kBf16AttnProbs (the
// unnormalised probabilities e^{ℓ−max} are rounded to bf16 before P·V; the denominator sums the
// unrounded values, as KER's fp32 row sum; KER's blockwise online rescaling is not emulated, one
// global max is used), kBf16AttnOut (the normalised output o, before de-rotation).
//
// Rows with no key (possible only through the low-level sink_attention with zero keys, or a
// selection list of only −1 padding and no window): output 0 (verification.md §7 NaN policy 4);
// the sink only adds to the denominator and cannot make the output non-zero.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/linear.hpp"
#include "v4ref/ref/rope.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref::ref {

struct AttentionWeights {
  std::string prefix;  // "layers.{i}.attn" or "mtp.{k}.attn"
  LinearWeight wq_a;   // [L_q, d]
  Vec q_norm;          // [L_q]
  LinearWeight wq_b;   // [H·D, L_q]
  LinearWeight wkv;    // [D, d]
  Vec kv_norm;         // [D]
  LinearWeight wo_a;   // [G·R_o, H·D/G]; act_q8 = false (OFF dequantises it to bf16, §15.7)
  LinearWeight wo_b;   // [d, G·R_o]
  Vec attn_sink;       // [H]
};

// Loads "<layer.prefix>attn.{wq_a,q_norm,wq_b,wkv,kv_norm,wo_a,wo_b,attn_sink}" (§1.4, §15.4).
AttentionWeights load_attention_weights(const Checkpoint& ckpt, const ModelConfig& cfg,
                                        const LayerConfig& layer);

// ShapeError naming the tensor if any weight's shape disagrees with cfg; NumericError on a
// non-finite weight. Called by every function below that takes AttentionWeights.
void check_attention_weights(const AttentionWeights& w, const ModelConfig& cfg);

struct QueryPath {
  Mat c;  // [T, L_q] RMSNorm_q_norm(W_qa x) — "qr", reused by the indexer (§7.2)
  Mat q;  // [T, H·D] per-head normalised, RoPE on the last r dims of every head
};

// §5.1 for the rows of x [T, d] at positions[i]. ShapeError on width / positions mismatch.
QueryPath attention_query(const Mat& x, const AttentionWeights& w, const ModelConfig& cfg,
                          const RopeTable& table, std::span<const std::int64_t> positions,
                          const PrecisionPolicy& policy);

// §5.2: the K=V vectors [T, D] of the rows of x [T, d] at positions[i].
Mat attention_kv(const Mat& x, const AttentionWeights& w, const ModelConfig& cfg,
                 const RopeTable& table, std::span<const std::int64_t> positions,
                 const PrecisionPolicy& policy);

// Q8(kv[0:D−r]; 64) on every row under kKvWindowQ8 (no-op otherwise); rope dims untouched.
void kv_nope_q8_inplace(Mat& kv, std::int64_t rope_dim, const PrecisionPolicy& policy);

// Window of query position t (§5.3): [first, last] = [max(0, t−n_win+1), t].
struct WindowRange {
  std::int64_t first = 0;
  std::int64_t last = 0;
  std::int64_t size() const { return last - first + 1; }
};
WindowRange window_range(std::int64_t t, std::int64_t n_win);

// Number of compressed entries visible to query position t with ratio m (§6.4): ⌊(t+1)/m⌋.
std::int64_t visible_entries(std::int64_t t, std::int64_t m);

// HCA selections (§5.3, §8): for query positions q_start .. q_start+n_queries−1, all visible
// entries 0 .. ⌊(t+1)/m⌋ − 1.
std::vector<std::vector<std::int64_t>> all_visible_selections(std::int64_t q_start,
                                                              std::int64_t n_queries,
                                                              std::int64_t m);

// Normalised attention weights with a sink (§5.4) for one query: q_heads [H, D], keys [n, D],
// sink [H] -> P [H, n], P(h, s) = e^{ℓ_s − M} / (Σ e^{ℓ − M} + e^{sink_h − M}), M = max_s ℓ_s.
// No rounding point. n = 0 gives [H, 0].
Mat sink_attention_weights(const Mat& q_heads, const Mat& keys, const Vec& sink, double scale);

// Core attention for one query: o [H, D] = Σ_s P(h, s) keys(s) with the rounding points
// kBf16AttnProbs / kBf16AttnOut. n = 0 keys -> zeros. ShapeError on mismatched widths.
Mat sink_attention(const Mat& q_heads, const Mat& keys, const Vec& sink, double scale,
                   const PrecisionPolicy& policy);

// All queries of a chunk. q [Tq, H·D] (query row i at position t = q_start + i); kv [Tkv, D]
// (row s = position s, Tkv >= q_start + Tq; rows after t are never read); compressed [N, D];
// selected: empty (no compressed keys) or Tq lists of entry indices into `compressed` (−1 entries
// are padding and skipped; anything else outside [0, N) is a ShapeError). The key list of query t
// is the window rows in increasing position, then the selected entries in list order.
// Returns o [Tq, H·D] before de-rotation. Scale = D^{-1/2}, n_win = cfg.window_size.
Mat attention_core(const Mat& q, const Mat& kv, const Mat& compressed,
                   std::span<const std::vector<std::int64_t>> selected, const Vec& sink,
                   std::int64_t q_start, const ModelConfig& cfg, const PrecisionPolicy& policy);

// The log-sum-exp of attention_core's softmax denominators [Tq, H]: lse(i, h) = ln(Σ_s e^{ℓ_s} +
// e^{sink_h}) over query i's key list (the same list and checks as attention_core), so that
// o_h = Σ_s e^{ℓ_s − lse} κ_s. Exact math, no rounding point (what a kernel's fp32 lse output,
// e.g. for combining split-KV partials, is compared with).
Mat attention_lse(const Mat& q, const Mat& kv, const Mat& compressed,
                  std::span<const std::vector<std::int64_t>> selected, const Vec& sink,
                  std::int64_t q_start, const ModelConfig& cfg);

// §5.5 de-rotation: the last r dims of every head of o [T, H·D] rotated by −positions[i]·ω.
Mat derotate_output(const Mat& o, const ModelConfig& cfg, const RopeTable& table,
                    std::span<const std::int64_t> positions, const PrecisionPolicy& policy);

// §5.5 grouped low-rank output projection of o [T, H·D] (already de-rotated) -> [T, d].
Mat grouped_output_projection(const Mat& o, const LinearWeight& wo_a, const LinearWeight& wo_b,
                              const ModelConfig& cfg, const PrecisionPolicy& policy);

// One attention sub-block, prefill form from position 0 (§8.0): x [T, d] is the attn_norm output
// (§5 input). `compressed` [N, D] and `selected` (T lists, or empty) as in attention_core; the
// caller (CSA/HCA assembly) produces them with the compressor / indexer. Returns a [T, d].
Mat attention_sublayer(const Mat& x, const AttentionWeights& w, const ModelConfig& cfg,
                       const LayerConfig& layer, const Mat& compressed,
                       std::span<const std::vector<std::int64_t>> selected,
                       const PrecisionPolicy& policy);

// SWA-only layers (ratio 0, also the MTP block): window keys only. ConfigError if the layer is
// not SWA-only.
Mat attention_sublayer_swa(const Mat& x, const AttentionWeights& w, const ModelConfig& cfg,
                           const LayerConfig& layer, const PrecisionPolicy& policy);

}  // namespace v4ref::ref
