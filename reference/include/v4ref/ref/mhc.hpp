// mHC: manifold-constrained hyper-connections (v4-forward.md §4, §12, §14 items 1–2).
//
// Layout: the hc_mult residual streams of all T tokens are ONE matrix X [T, hc_mult·d], each row
// stream-major: X(t, k·d + i) = X_t[k][i]. A row is exactly the flattened vector v of §4.1.
//
//   μ_t       = inv_rms(v_t; norm_eps) · (Fn · v_t)                   §4.1  [mix]
//   pre_k     = σ(s0·μ[k] + b[k]) + hc_eps                           §4.2
//   post_k    = 2·σ(s1·μ[hc+k] + b[hc+k])
//   Z[j][k]   = s2·μ[2hc + hc·j + k] + b[2hc + hc·j + k]
//   C         = sinkhorn(Z, iters, hc_eps)                           §4.3
//   u_t       = Σ_k pre_k · X_t[k]                                   §4.4 (collapse)
//   X_new[k]  = post_k · f_t + Σ_j C[j][k] · X_t[j]                  §4.4 (write-back, Cᵀ X)
//   hc_head:  w_k = σ(s0·μ[k] + b[k]) + hc_eps,  y = Σ_k w_k X[k]    §4.5
//
// Precision: everything in double. kBf16Residual rounds the collapse output u, the written-back
// streams X_new and the hc_head output y to bf16 (§12: residual streams bf16 between sub-blocks,
// collapse fp32 rounded to bf16). OFF's fp32 coefficient math is not emulated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/linear.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref::ref {

// hc_{attn,ffn}_{fn,base,scale} of one sub-block.
struct HcParams {
  std::string name;  // prefix for messages, e.g. "layers.3.hc_attn"
  Mat fn;            // [mix = (2+hc)·hc, hc·d]
  Vec base;          // [mix]
  Vec scale;         // [3]
};

// hc_head_{fn,base,scale} (main model or MTP block).
struct HcHeadParams {
  std::string name;  // e.g. "hc_head" or "mtp.0.hc_head"
  Mat fn;            // [hc, hc·d]
  Vec base;          // [hc]
  Vec scale;         // [1]
};

// Per-token coefficients of one HCPre.
struct HcMix {
  Vec pre;   // [hc]
  Vec post;  // [hc]
  Mat comb;  // [hc, hc]  C[j][k] = comb(j, k)
};

struct HcPreResult {
  Mat u;                   // [T, d] collapsed sublayer input (before attn_norm / ffn_norm)
  std::vector<HcMix> mix;  // [T]
};

// `layer_prefix` = LayerConfig::prefix ("layers.{i}." / "mtp.{k}."), `which` = "attn" or "ffn".
// MissingTensor / ShapeError / NumericError from the loader or on shape mismatch.
HcParams load_hc_params(const Checkpoint& ckpt, const ModelConfig& cfg,
                        const std::string& layer_prefix, const std::string& which);
// `prefix` = "" (main model) or "mtp.{k}.".
HcHeadParams load_hc_head_params(const Checkpoint& ckpt, const ModelConfig& cfg,
                                 const std::string& prefix);

// Sinkhorn–Knopp exactly as §4.3 on logits Z [n, n]: row softmax (max-subtracted) + eps, one
// column normalisation, then (iters − 1) × (row, column) normalisations, every denominator + eps.
// ConfigError if iters < 1 or eps < 0; ShapeError if Z is not square.
Mat sinkhorn(const Mat& z, std::int64_t iters, double eps);

// μ of every token: [T, fn.rows()]. ShapeError naming `name` when fn.cols() != x.cols().
Mat hc_mix_logits(const Mat& x, const Mat& fn, double norm_eps, const std::string& name = "hc");

// Split μ [mix] into pre/post/comb (§4.2, §4.3). ShapeError if mu.size() != (2+hc)·hc.
HcMix hc_split(const Vec& mu, const HcParams& p, std::int64_t hc_mult, std::int64_t sinkhorn_iters,
               double hc_eps);

// HCPre for all tokens: X [T, hc·d] -> (u [T, d], coefficients). NumericError on non-finite X.
HcPreResult hc_pre(const Mat& x, const HcParams& p, const ModelConfig& cfg,
                   const PrecisionPolicy& policy);

// Collapse only: u_t = Σ_k pre_k X_t[k] for given per-token pre vectors.
Mat hc_collapse(const Mat& x, const std::vector<HcMix>& mix, std::int64_t hc_mult,
                const PrecisionPolicy& policy);

// HCPost: X_new [T, hc·d] from the sublayer output f [T, d], the old streams X and the mixes.
Mat hc_post(const Mat& f, const Mat& x, const std::vector<HcMix>& mix, std::int64_t hc_mult,
            const PrecisionPolicy& policy);

// hc_head: X [T, hc·d] -> y [T, d] (§4.5).
Mat hc_head(const Mat& x, const HcHeadParams& p, const ModelConfig& cfg,
            const PrecisionPolicy& policy);

}  // namespace v4ref::ref
