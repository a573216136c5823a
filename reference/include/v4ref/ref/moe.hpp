// The MoE sub-block (v4-forward.md §9): router, clamped SwiGLU experts, combination.
//
// Router (§9.1), fp32 in OFF, double here with no rounding point:
//   logit_e = gate[e]·z;  s_e = sqrt(softplus(logit_e)), softplus as PyTorch's (z for z > 20,
//     log1p(exp(z)) otherwise; differs from the exact function by log1p(e^{-z}) < e^{-20}
//     ≈ 2.06e-9 absolute, which the tests check)
//   hash layers: S = tid2eid[token id] (the current token's row; no bias)
//   others     : S = top-k of s_e + bias_e (bias for selection only; equal values: lower index)
//   w_e = route_scale · s_e / Σ_{e'∈S} s_e'   (unbiased scores, plain sum, no epsilon)
// Expert (§9.2), routed and shared alike, L = swiglu_limit:
//   g = W1 z, p = W3 z  (fp8/fp4 linears: Q8(z;128) under kActQ8, bf16 outputs under kBf16Linear)
//   p = clamp(p, −L, L);  g = min(g, L);  hid = silu(g)·p
//   routed: hid ← w_e·hid   (OFF's order: the route weight enters before W2, §9.3)
//   hid rounded to bf16 under kBf16ExpertHidden (after the weight multiply, as OFF casts the
//   weighted fp32 hidden to bf16 for W2's input)
//   E(z) = W2 hid   (Q8(hid;128) under kActQ8, bf16 output under kBf16Linear)
// Combination (§9.3): y = Σ_{e ascending} (routed outputs of the tokens routed to e) + E_shared(z),
// accumulated in double (fp32 in OFF), rounded to bf16 under kBf16MoeOut. In exact arithmetic
// this equals Σ_e w_e·(W2 hid_e) + E_shared (HF's order); under rounding policies it follows OFF.
//
// Routed experts are dequantised one at a time on demand (a real Flash layer's 256 experts do
// not fit in memory as double); a small config may cache them all.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/linear.hpp"
#include "v4ref/ref/safetensors.hpp"
#include "v4ref/ref/weight_cache.hpp"

namespace v4ref::ref {

using IndexMat = Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// One SwiGLU expert: w1, w3 [I, d], w2 [d, I], each dequantised exactly.
struct ExpertWeights {
  LinearWeight w1, w2, w3;
};

// "<prefix>w1", "<prefix>w2", "<prefix>w3" (prefix e.g. "layers.3.ffn.experts.5." or
// "layers.3.ffn.shared_experts."), fp4 (packed I8 + ue8m0 scale), fp8 (e4m3 + ue8m0 or fp32
// block scales, Flash-Base) or plain; ShapeError naming the tensor on mismatch.
ExpertWeights load_expert(const Checkpoint& ckpt, const std::string& prefix, std::int64_t dim,
                          std::int64_t inter_dim);

// The routed experts of one layer: either kept in a checkpoint and dequantised on each get()
// (one expert at a time), or held in memory (cached from a checkpoint, or given directly).
class RoutedExperts {
 public:
  RoutedExperts() = default;
  // Lazy: get(e) loads "<prefix><e>.w{1,2,3}" on every call; nothing is kept — unless a
  // WeightCache is given, which then holds recently used experts (key "<prefix><e>.") within
  // its budget.
  static RoutedExperts on_demand(const Checkpoint& ckpt, const std::string& prefix,
                                 std::int64_t n_experts, std::int64_t dim, std::int64_t inter_dim,
                                 std::shared_ptr<WeightCache> cache = nullptr);
  // Eager: loads all n_experts now (tiny configs).
  static RoutedExperts cached(const Checkpoint& ckpt, const std::string& prefix,
                              std::int64_t n_experts, std::int64_t dim, std::int64_t inter_dim);
  static RoutedExperts from_weights(std::vector<ExpertWeights> experts);

  std::int64_t size() const { return n_experts_; }
  bool on_demand() const { return cache_.empty() && n_experts_ > 0; }
  // Expert e (ShapeError naming the range if e is outside [0, size())).
  std::shared_ptr<const ExpertWeights> get(std::int64_t e) const;
  // How many experts get() has dequantised from the checkpoint so far (cached: n_experts;
  // with a WeightCache: the misses of this layer's experts).
  std::int64_t loads() const { return loads_ ? loads_->load() : 0; }

 private:
  Checkpoint ckpt_;
  bool have_ckpt_ = false;
  std::string prefix_;
  std::int64_t n_experts_ = 0, dim_ = 0, inter_dim_ = 0;
  std::vector<std::shared_ptr<const ExpertWeights>> cache_;
  std::weak_ptr<WeightCache> weight_cache_;  // weak: the cache may hold the layer that holds this
  std::shared_ptr<std::atomic<std::int64_t>> loads_ = std::make_shared<std::atomic<std::int64_t>>(0);
};

enum class ExpertLoading { kOnDemand, kCacheAll };

// Bytes an expert's dequantised matrices hold (w1, w2, w3 in double).
std::int64_t resident_bytes(const ExpertWeights& ew);

struct MoeWeights {
  std::string prefix;               // "layers.{i}.ffn." / "mtp.{k}.ffn."
  std::int64_t dim = 0;             // d
  std::int64_t inter_dim = 0;       // I
  std::int64_t n_experts = 0;       // E
  std::int64_t n_activated = 0;     // k_e
  std::int64_t vocab_size = 0;      // token ids must lie in [0, vocab_size)
  double route_scale = 1;
  double swiglu_limit = 10;         // L
  LinearWeight gate;                // [E, d] bf16 (fp32 math in OFF)
  bool hash_routed = false;
  Vec bias;                         // [E] fp32 (bias-routed layers)
  IndexMat tid2eid;                 // [vocab, k_e] (hash-routed layers), values in [0, E)
  RoutedExperts experts;
  ExpertWeights shared;             // fp8
};

// The MoE of layer `layer` of `cfg` (hash-routed or biased from layer_config). tid2eid values
// outside [0, E) are a NumericError naming the tensor and coordinates. `expert_cache` (optional,
// kOnDemand only) keeps recently used routed experts across calls.
MoeWeights load_moe(const Checkpoint& ckpt, const ModelConfig& cfg, std::int64_t layer,
                    ExpertLoading loading = ExpertLoading::kOnDemand,
                    std::shared_ptr<WeightCache> expert_cache = nullptr);

// softplus as PyTorch computes it (threshold 20): z for z > 20, else log1p(exp(z)).
double softplus_torch(double z);
// "sqrtsoftplus" score s = sqrt(softplus_torch(z)).
double sqrt_softplus(double z);
// silu(z) = z·σ(z) = z / (1 + e^{−z}).
double silu(double z);

struct Routing {
  Mat scores;        // [T, E] s_e (unbiased)
  IndexMat experts;  // [T, k_e] chosen experts: rank order (bias layers), tid2eid row order (hash)
  Mat weights;       // [T, k_e] route weights w_e of the chosen experts
};

// Router of z [T, d]. token_ids has T entries (required for hash layers; may be empty for biased
// layers); ids outside [0, vocab) are a NumericError naming the id and its position.
Routing route(const Mat& z, std::span<const std::int64_t> token_ids, const MoeWeights& w);

// One expert applied to rows z [n, d]; `row_weight` (size n, or empty) multiplies hid before W2
// (routed experts, §9.3). Returns [n, d].
Mat expert_forward(const ExpertWeights& ew, const Mat& z, double swiglu_limit,
                   std::span<const double> row_weight, const PrecisionPolicy& policy);

// The MoE output [T, d] (§9.3). ShapeError naming "<prefix>z" on a wrong width; NumericError on
// NaN/Inf in z.
// `routing`, when given, receives the routing decision used.
Mat moe_forward(const Mat& z, std::span<const std::int64_t> token_ids, const MoeWeights& w,
                const PrecisionPolicy& policy, Routing* routing = nullptr);

}  // namespace v4ref::ref
