// The lightning indexer of CSA layers (v4-forward.md §7) and the deterministic top-k selection
// shared with the MoE router (guide/verification.md §7, §9).
//
//   keys     K_j   : the indexer's own compressor (§7.1; compressor.hpp, CompressorKind::kIndexer,
//                    m = 4, w = D_I): RMSNorm, RoPE on dims 64..127 at 4j, Had, Q4 under kIdxKQ4.
//   queries  qI_t  : W_Iqb c_t (fp8 linear: Q8(·;128) input under kActQ8, bf16 output under
//                    kBf16Linear), per head [H_I, D_I]; RoPE on the last 64 dims of each head at
//                    position t; Had per head; Q4(·;32) under kIdxQQ4 (§7.2, §2.5 item 4).
//   weights  wI_t  : (W_wp x_t)·D_I^{−1/2}·H_I^{−1/2} (bf16 linear: bf16 output under
//                    kBf16Linear; the product rounded to bf16 under kBf16IndexScore).
//   scores   I_t,j : Σ_h wI_t[h]·ReLU(qI_t,h · K_j) for visible j < ⌊(t+1)/4⌋ (§7.3).
//   top-k          : k_t = min(K_I, ⌊(t+1)/4⌋) entries, higher score first, on equal score the
//                    lower index wins; NaN ranks below −∞ and is never selected.
//
// kBf16IndexScore emulates §12 "bf16 einsum on bf16 (fake-quantised) queries and keys, bf16
// ReLU, multiplication by bf16 head weights and a sum over heads with a bf16 result", i.e. the
// PyTorch bf16 ops as they round (each computes in fp32 and rounds its output once):
//   q, K, wI  <- bf16(·)                      (idempotent when they already are bf16)
//   d_h,j      = bf16(Σ_k q_h[k]·K_j[k])      (bmm/einsum: fp32 accumulation, bf16 output; we
//                                               accumulate in double, then round)
//   r_h,j      = max(d_h,j, 0)                (exact in bf16)
//   p_h,j      = bf16(wI[h]·r_h,j)            (elementwise bf16 multiply)
//   I_j        = bf16(Σ_h p_h,j)              (bf16 sum over heads: fp32 accumulation in PyTorch,
//                                               double here, one rounding)
// What is not emulated: the fp32 accumulation itself (double instead), so a sum lying within
// fp32 accumulation error of a bf16 rounding boundary may round the other way.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "v4ref/ref/compressor.hpp"
#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/linear.hpp"
#include "v4ref/ref/rope.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref::ref {

inline constexpr int kIndexerRatio = 4;  // the indexer exists in CSA layers only (§7)

struct IndexerWeights {
  std::string prefix;            // "layers.{i}.attn.indexer."
  std::int64_t n_heads = 0;      // H_I
  std::int64_t head_dim = 0;     // D_I
  LinearWeight wq_b;             // [H_I·D_I, L_q] fp8
  LinearWeight weights_proj;     // [H_I, d] bf16
  CompressorWeights compressor;  // kIndexer, m = 4, w = D_I
};

// "<layer prefix>attn.indexer.{wq_b, weights_proj, compressor.*}" of a CSA layer. ConfigError on
// a non-CSA layer; ShapeError naming the tensor on a shape mismatch.
IndexerWeights load_indexer(const Checkpoint& ckpt, const ModelConfig& cfg, std::int64_t layer);

// Index queries of latents c [T, L_q] at `positions` (size T): [T, H_I·D_I], head h in columns
// [h·D_I, (h+1)·D_I). ShapeError naming "<prefix>c"; NumericError on NaN/Inf.
Mat index_queries(const Mat& c, std::span<const std::int64_t> positions, const IndexerWeights& w,
                  const RopeTable& rope, const PrecisionPolicy& policy);

// Head weights of attention inputs x [T, d]: [T, H_I].
Mat index_head_weights(const Mat& x, const IndexerWeights& w, const PrecisionPolicy& policy);

// Number of compressed entries visible to query t: ⌊(t+1)/4⌋ (§6.4).
std::int64_t indexer_visible(std::int64_t t);

// Index scores [T, N] of queries q [T, H·D] with head weights wI [T, H] against keys [N, D] for
// query positions `positions`: I[t, j] for j < min(N, ⌊(t+1)/4⌋), −∞ for j beyond (invisible;
// index_topk never looks at them). Plain loops in a fixed order (dims, then heads ascending).
// ShapeError on inconsistent shapes; NaN/Inf inputs propagate (IEEE) into the scores.
Mat index_scores(const Mat& q, const Mat& wI, const Mat& keys,
                 std::span<const std::int64_t> positions, std::int64_t n_heads,
                 std::int64_t head_dim, const PrecisionPolicy& policy);

// The deterministic top-k of verification.md §9: the min(k, #non-NaN) indices with the largest
// scores, higher score first, on equal score the lower index first (so −0 and +0 tie); NaN
// entries are never selected; ±∞ are ordinary ordered values. Returned in rank order.
std::vector<std::int64_t> select_topk(std::span<const double> scores, std::int64_t k);

// The selection P_t of query t (§7.3): select_topk over the visible prefix j < ⌊(t+1)/4⌋ of the
// score row with k_t = min(K_I, ⌊(t+1)/4⌋). ShapeError if the row is shorter than the visible
// count.
std::vector<std::int64_t> index_topk(std::span<const double> score_row, std::int64_t t,
                                     std::int64_t index_topk_k);

// Everything the indexer produces for a prefill from position 0: x [T, d] attention inputs,
// c [T, L_q] normalised query latents.
struct IndexerPrefill {
  Mat keys;          // [⌊T/4⌋, D_I]
  Mat queries;       // [T, H_I·D_I]
  Mat head_weights;  // [T, H_I]
  Mat scores;        // [T, ⌊T/4⌋], −∞ where invisible
  std::vector<std::vector<std::int64_t>> topk;  // [T][k_t], rank order
};
IndexerPrefill indexer_prefill(const Mat& x, const Mat& c, const IndexerWeights& w,
                               const RopeTable& rope, double norm_eps, std::int64_t index_topk_k,
                               const PrecisionPolicy& policy);

}  // namespace v4ref::ref
