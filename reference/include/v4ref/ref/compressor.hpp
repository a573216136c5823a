// The token-level compressor of CSA (m = 4) and HCA (m = 128) layers (v4-forward.md §6) and its
// decode state machine (§11.2).
//
// Per token (fp32 math in OFF, no rounding point; §6, §12):
//   a_t = W_kv x_t,  g_t = W_gate x_t                      // [c·w] each, c = 2 for m = 4
// Pooling (per channel softmax over the token slots of an entry, `ape` added to the gate logits):
//   HCA (§6.1): entry j pools the 128 tokens of block j, channel i: value a_t[i], logit
//               g_t[i] + ape[t mod 128][i].
//   CSA (§6.2): entry j pools 8 slots per channel i ∈ [0, w): the 4 tokens of block j−1 through
//               channels [0, w) (value a[i], logit g[i] + ape[r][i]) and the 4 tokens of block j
//               through channels [w, 2w) (value a[w+i], logit g[w+i] + ape[r][w+i]); for j = 0
//               the block j−1 slots hold value 0 and logit −∞ (weight 0).
// Post-processing (§6.3), each step one rounding point of the policy:
//   kBf16Pooled : the pooled vector is rounded to bf16 before the norm
//   RMSNorm_norm over w (eps = norm_eps; bf16 output under kBf16Norm, see norm.hpp)
//   RoPE on the last r (= 64) dims at position j·m with the layer's compress table (rope.hpp:
//     kFp32RopeAngle, kBf16Rope)
//   main compressor    : Q8(C[0 : w−r]; 64) under kCkvQ8 (§2.5 item 3)
//   indexer compressor : Had(C) always (§2.4), then Q4(C; 32) under kIdxKQ4 (§2.5 item 5)
// Visibility (§6.4): entry j exists once block j is complete, i.e. for j < ⌊T/m⌋; a partial
// block lives only in the decode state.
//
// Prefill and decode share one pooling function over the §11.2 state layout (HCA: m rows of w
// channels; CSA: 8 rows of 2w channels, rows 0–3 the previous block, rows 4–7 the current one),
// so step-by-step decode reproduces prefill up to the rounding of the per-token projections
// (a GEMV against a GEMM in Eigen).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/linear.hpp"
#include "v4ref/ref/rope.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref::ref {

// Which post-processing tail of §6.3 an entry gets. The width alone cannot decide it: the tiny
// configs have head_dim = index_head_dim = 128.
enum class CompressorKind {
  kMain,     // attn.compressor (w = head_dim): Q8 on the nope dims under kCkvQ8
  kIndexer,  // attn.indexer.compressor (w = index_head_dim): Hadamard, then Q4 under kIdxKQ4
};

struct CompressorWeights {
  std::string prefix;  // "layers.{i}.attn.compressor." or "layers.{i}.attn.indexer.compressor."
  CompressorKind kind = CompressorKind::kMain;
  int ratio = 0;             // m: 4 (CSA, overlapping, c = 2) or 128 (HCA, c = 1)
  std::int64_t width = 0;    // w: output width of an entry
  LinearWeight wkv;          // [c·w, d] bf16
  LinearWeight wgate;        // [c·w, d] bf16
  Mat ape;                   // [m, c·w] fp32, added to the gate logits (never re-ordered, §6.2)
  Vec norm;                  // [w] bf16, RMSNorm weight

  bool overlap() const { return ratio == 4; }
  std::int64_t series() const { return overlap() ? 2 : 1; }  // c
  std::int64_t dim() const { return wkv.in_features(); }     // d
};

// Loads "<prefix>wkv.weight", "<prefix>wgate.weight", "<prefix>ape", "<prefix>norm.weight" with
// the shapes of §1.4 for ratio m and width w (ShapeError naming the tensor on mismatch; NaN/Inf
// rejected by the loader). ConfigError if m is not 4 or 128.
CompressorWeights load_compressor(const Checkpoint& ckpt, const std::string& prefix,
                                  CompressorKind kind, int ratio, std::int64_t width,
                                  std::int64_t dim);

// The main (kMain) or indexer (kIndexer) compressor of layer `layer` of `cfg`: prefix, ratio and
// width from layer_config (main: the layer's ratio, w = head_dim; indexer: m = 4,
// w = index_head_dim). ConfigError for an SWA layer, or kIndexer on a non-CSA layer.
CompressorWeights load_layer_compressor(const Checkpoint& ckpt, const ModelConfig& cfg,
                                        std::int64_t layer, CompressorKind kind);

// Checks shapes and ratio of the weights and that ape and norm are finite (pooling needs no
// RoPE table). ShapeError/ConfigError/NumericError naming the tensor.
void check_compressor_weights(const CompressorWeights& w);

// Checks the weights' internal consistency against a RoPE table (shapes, ratio, r < w, Q8/Q4
// block divisibility, Hadamard width a power of two, finite ape and norm). Every public function
// below calls it; exposed for loaders of synthetic weights.
void check_compressor(const CompressorWeights& w, const RopeTable& rope);

// All complete entries of a prefill of x [T, d] starting at position 0: [⌊T/m⌋, w], row j = C_j
// fully post-processed. T = 0 is allowed (no entries). ShapeError naming "<prefix>x" on a wrong
// width, NumericError on NaN/Inf in x.
Mat compress_prefill(const Mat& x, const CompressorWeights& w, const RopeTable& rope,
                     double norm_eps, const PrecisionPolicy& policy);

// Decode state of one compressor (§11.2). Rows hold (value a_t, logit g_t + ape[r]) in fp32 in
// OFF, double here. Initial value 0, logit −∞ (§11.1).
struct CompressorState {
  int ratio = 0;
  std::int64_t width = 0;
  Mat kv;      // HCA: [128, w], row t mod 128;  CSA: [8, 2w], rows 0–3 previous block, 4–7 current
  Mat score;   // same shape: gate logits with ape added
  std::int64_t next_position = 0;  // the position the next decode step must carry
};

CompressorState make_compressor_state(const CompressorWeights& w);

// Entries plus the state a decode continues from (§11.2 "prefill hand-off"): the partial block
// (T mod m tokens, ape added) in rows [0, T mod m) for HCA, [4, 4 + T mod 4) for CSA; for CSA
// with T ≥ 4 the last complete block in rows 0–3; every other row at its initial value.
struct CompressorPrefill {
  Mat entries;  // [⌊T/m⌋, w]
  CompressorState state;
};
CompressorPrefill compress_prefill_with_state(const Mat& x, const CompressorWeights& w,
                                              const RopeTable& rope, double norm_eps,
                                              const PrecisionPolicy& policy);

// One decode step for token t (x_t [1, d]): stores the token in its state row and, when
// (t+1) mod m = 0, pools, post-processes at position t+1−m and returns entry ⌊t/m⌋ (then, CSA,
// copies rows 4–7 into 0–3). Returns nullopt while the block is incomplete. Error if t differs
// from state.next_position (the official code decodes one token per call after a prefill at 0);
// ShapeError on a state built for other weights or a wrong x_t shape; NumericError on NaN/Inf.
std::optional<Vec> compress_decode_step(const Mat& x_t, std::int64_t t, CompressorState& state,
                                        const CompressorWeights& w, const RopeTable& rope,
                                        double norm_eps, const PrecisionPolicy& policy);

// ------------------------------------------------------------ the steps, exposed for tests

// The pooled vectors Ĉ_j (§6.1/§6.2, before §6.3) of every complete block of x [T, d]:
// [⌊T/m⌋, w]. compress_prefill post-processes exactly these rows.
Mat compress_pool_prefill(const Mat& x, const CompressorWeights& w);

// Per-channel softmax pooling of one entry from rows laid out as the §11.2 state (HCA [m, w];
// CSA [8, 2w] read as rows 0–3 channels [0, w) and rows 4–7 channels [w, 2w)). Logits −∞ give
// weight 0. The maximum is subtracted before exp. Returns [w].
Vec pool_entry(const Mat& kv, const Mat& score, int ratio, std::int64_t width);

// §6.3 on one pooled vector [w] of entry j: bf16 (kBf16Pooled), RMSNorm, RoPE at j·m, then the
// kind's tail. Returns [w].
Vec postprocess_entry(const Vec& pooled, std::int64_t j, const CompressorWeights& w,
                      const RopeTable& rope, double norm_eps, const PrecisionPolicy& policy);

}  // namespace v4ref::ref
