// Proof that the differential suite catches bugs (issue #8): deliberately wrong versions
// ("mutants") of single components of the fp32 port (compare/fp32_forward.hpp), each one member of
// the component table swapped, defined here and nowhere else. For every mutant:
//   (a) the component runner (compare's case table, exact-mode cases of the runner components
//       that exercise the swapped member, adversarial kinds included) flags it: the mutated port
//       component is plugged into the reference with SwappedImplementation, path fp32;
//   (b) bisect on a teacher-forced trace names as FIRST failing point the trace point the mutated
//       component produces (`expect` below).
// Bisect inputs: the reference's own trace of tiny-flash (swa swa csa hca csa; hash layers 0-2)
// at T = 143 — past one HCA block, past the 128-token window, T ≡ 3 mod 4 so that an off-by-one
// block count differs, fewer than K_I = 32 visible CSA entries for t < 131 and more after. Two
// bugs need a steered input (the natural activations never reach them, measured: |g|, |p| <= 5.1
// against swiglu_limit = 10; Sinkhorn converged to 1e-6): the block input of one layer is pushed
// along a chosen direction and the reference is run teacher-forced on it, then the mutant on the
// same input.
// Every mutated member is exercised by at least one runner component (the key window, the
// de-rotation, hc_head and hash routing through key_window, derotate, hc_head and hash_router; the
// key gathering and the grouped projection through attention_core and grouped_out_proj; the
// query, K=V and index-query paths through q_path, kv_path and index_query), so both harnesses
// judge all mutants. The unmutated port passes every input used here (control), so
// no catch is vacuous. The catch rates are printed; both must be 100% of all mutants.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>

#include "v4ref/compare/bisect.hpp"
#include "v4ref/compare/fp32_forward.hpp"
#include "v4ref/compare/runner.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::compare {
namespace {

using ref::Trace;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr std::int64_t kT = 143;
const std::filesystem::path kCkpt =
    std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "checkpoints" / "tiny-flash-s0";

// ------------------------------------------------------------------ the mutants

// Input recipe of the bisect run.
enum class Steer {
  kNone,           // the reference trace itself (teacher-forced on every layer)
  kSpikySinkhorn,  // layers.2.block.in pushed so that hc_attn's comb logits form a triangular
                   // pattern
  kSwigluOutlier,  // layers.0.block.in pushed along the largest row of the shared expert's W1
};

struct Mutant {
  std::string name;
  std::string member;               // Fp32Components member swapped
  std::string bug;                  // what is wrong (spec section)
  std::vector<std::string> runner;  // runner components exercising the member
  std::string expect;               // first failing trace point under bisect
  Steer steer = Steer::kNone;
  std::function<void(Fp32Components&)> apply;
};

F32Mat transposed_comb(const F32Mat& comb, std::int64_t hc) {
  F32Mat ct = comb;
  for (std::int64_t t = 0; t < comb.rows; ++t)
    for (std::int64_t j = 0; j < hc; ++j)
      for (std::int64_t k = 0; k < hc; ++k) ct.at(t, j * hc + k) = comb.at(t, k * hc + j);
  return ct;
}

const std::vector<Mutant>& mutants() {
  static const std::vector<Mutant> list = {
      {"compressor-visibility-off-by-one",
       "compressor_pool",
       "entries counted as ⌊(T+1)/m⌋ (§6.4's j < ⌊(t+1)/m⌋ evaluated at t = T): a block "
       "missing its last token is pooled as if complete",
       {"compressor", "indexer_compressor"},
       "layers.2.attn.compressed",
       Steer::kNone,
       [](Fp32Components& c) {
         c.compressor_pool = [base = c.compressor_pool](const F32Mat& kv, const F32Mat& gate,
                                                        const F32Mat& ape, int m, std::int64_t w) {
           const std::int64_t n = (kv.rows + 1) / m;
           if (n * m <= kv.rows) return base(kv, gate, ape, m, w);
           F32Mat kp(n * m, kv.cols, 0.0f);
           F32Mat gp(n * m, gate.cols, -kInf);  // the absent token: logit −∞, weight 0
           std::copy(kv.v.begin(), kv.v.end(), kp.v.begin());
           std::copy(gate.v.begin(), gate.v.end(), gp.v.begin());
           return base(kp, gp, ape, m, w);
         };
       }},
      {"hc-post-without-transpose",
       "hc_post",
       "write-back X_new[k] = post_k f + Σ_j C[k][j] X[j] (C instead of Cᵀ, §4.4, §14.1)",
       {"hc_post"},
       // Layer 0's four input streams are identical copies of the embedding and C is doubly
       // stochastic to 1e-6, so C X = Cᵀ X at the attention write-back; the MoE write-back is the
       // first to see distinct streams (post_k differs per stream).
       "layers.0.block.out",
       Steer::kNone,
       [](Fp32Components& c) {
         c.hc_post = [base = c.hc_post](const F32Mat& f, const F32Mat& x, const F32Mat& post,
                                        const F32Mat& comb, F32Mat& out) {
           base(f, x, post, transposed_comb(comb, post.cols), out);
         };
       }},
      {"rope-neox-pairs",
       "rope",
       "rotates pairs (i, i + r/2) (NeoX half split) instead of adjacent pairs (§2.3)",
       {"rope", "compressor", "indexer_compressor"},
       "layers.0.attn.q",
       Steer::kNone,
       [](Fp32Components& c) {
         c.rope = [](F32Mat& x, std::int64_t heads, std::int64_t hd,
                     std::span<const std::int64_t> pos, std::span<const float> omega,
                     bool inverse) {
           const std::int64_t half = static_cast<std::int64_t>(omega.size()), r = 2 * half;
           for (std::int64_t t = 0; t < x.rows; ++t)
             for (std::int64_t j = 0; j < half; ++j) {
               const float th = static_cast<float>(pos[static_cast<std::size_t>(t)]) *
                                omega[static_cast<std::size_t>(j)];
               const float cs = std::cos(th), sn = inverse ? -std::sin(th) : std::sin(th);
               for (std::int64_t h = 0; h < heads; ++h) {
                 float* e = x.row(t) + h * hd + hd - r;
                 const float a = e[j], b = e[j + half];
                 e[j] = a * cs - b * sn;
                 e[j + half] = a * sn + b * cs;
               }
             }
         };
       }},
      {"sink-missing-from-denominator",
       "sink_attention",
       "softmax without the e^{sink_h} term (§5.4, §14.7)",
       {"sink_attention", "attention_core"},
       "layers.0.attn.o",
       Steer::kNone,
       [](Fp32Components& c) {
         c.sink_attention = [base = c.sink_attention](const float* q, const F32Mat& keys,
                                                      std::span<const float> sink, std::int64_t h,
                                                      std::int64_t d, float scale, float* out) {
           const std::vector<float> none(sink.size(), -kInf);
           base(q, keys, none, h, d, scale, out);
         };
       }},
      {"topk-picks-invisible-entry",
       "index_topk",
       "visibility taken from the number of computed entries instead of ⌊(t+1)/4⌋: top-k may "
       "pick entries of blocks the query has not seen (§7.3)",
       {"index_scores"},
       "layers.2.attn.topk_idx",
       Steer::kNone,
       [](Fp32Components& c) {
         c.index_topk = [base = c.index_topk](const float* s, std::int64_t n, std::int64_t,
                                              std::int64_t k) { return base(s, n, 4 * n, k); };
       }},
      {"swiglu-clamp-missing",
       "swiglu",
       "no clamp: up not clamped to [−L, L], gate not bounded by L (§9.2, §14.10)",
       {"expert"},
       "layers.0.ffn.out",
       Steer::kSwigluOutlier,
       [](Fp32Components& c) {
         c.swiglu = [base = c.swiglu](const float* g, const float* p, std::int64_t n, float,
                                      float* hid) { base(g, p, n, kInf, hid); };
       }},
      {"fp4-nibbles-swapped",
       "dequant_fp4",
       "high nibble decoded as the even column (§15.5, §14.12)",
       {"dequant_fp4"},
       "layers.0.ffn.out",
       Steer::kNone,
       [](Fp32Components& c) {
         c.dequant_fp4 = [base = c.dequant_fp4](std::span<const std::uint8_t> packed,
                                                std::span<const std::uint8_t> sc, std::int64_t rows,
                                                std::int64_t cols) {
           std::vector<std::uint8_t> sw(packed.begin(), packed.end());
           for (std::uint8_t& b : sw) b = static_cast<std::uint8_t>((b >> 4) | (b << 4));
           return base(sw, sc, rows, cols);
         };
       }},
      {"hash-routing-ignored",
       "route",
       "layers < n_hash_layers routed by top-k of the scores instead of tid2eid (§9.1)",
       {"hash_router"},
       "layers.0.ffn.routed_idx",
       Steer::kNone,
       [](Fp32Components& c) {
         c.route = [base = c.route](const F32Mat& z, const F32RouterArgs& a) {
           F32RouterArgs b = a;
           b.hash = false;
           return base(z, b);
         };
       }},
      {"ape-not-added",
       "compressor_pool",
       "gate logits pooled without the learned position bias ape (§6.1, §6.2)",
       {"compressor", "indexer_compressor"},
       "layers.2.attn.compressed",
       Steer::kNone,
       [](Fp32Components& c) {
         c.compressor_pool = [base = c.compressor_pool](const F32Mat& kv, const F32Mat& gate,
                                                        const F32Mat& ape, int m, std::int64_t w) {
           return base(kv, gate, F32Mat(ape.rows, ape.cols, 0.0f), m, w);
         };
       }},
      {"entry-rope-at-block-end",
       "entry_position",
       "compressed entry j rotated at its last token j·m + m − 1 instead of the block start j·m "
       "(§6.3, §14.5)",
       {"compressor", "indexer_compressor"},
       "layers.2.attn.compressed",
       Steer::kNone,
       [](Fp32Components& c) {
         c.entry_position = [](std::int64_t j, int m) { return j * m + m - 1; };
       }},
      {"sinkhorn-no-final-column-norm",
       "sinkhorn",
       "the recipe ends on a row normalisation: 19 column and 20 row normalisations (§4.3, §14.2)",
       {"sinkhorn", "hc_pre"},
       "layers.2.hc_attn.comb",
       Steer::kSpikySinkhorn,
       [](Fp32Components& c) {
         c.sinkhorn = [base = c.sinkhorn](float* m, std::int64_t n, std::int64_t iters, float eps) {
           base(m, n, iters - 1, eps);
           for (std::int64_t j = 0; j < n; ++j) {
             float s = 0.0f;
             for (std::int64_t k = 0; k < n; ++k) s += m[j * n + k];
             for (std::int64_t k = 0; k < n; ++k) m[j * n + k] /= (s + eps);
           }
         };
       }},
      {"hc-pre-normalised",
       "hc_split",
       "pre coefficients normalised to sum 1 (§4.4: pre is not normalised)",
       {"hc_pre"},
       "layers.0.hc_attn.pre",
       Steer::kNone,
       [](Fp32Components& c) {
         c.hc_split = [base = c.hc_split](const float* mu, const F32HcParams& p, std::int64_t hc,
                                          float eps) {
           F32HcSplit s = base(mu, p, hc, eps);
           float sum = 0.0f;
           for (float v : s.pre) sum += v;
           for (float& v : s.pre) v /= sum;
           return s;
         };
       }},
      {"router-bias-in-weights",
       "route",
       "route weights from the biased scores s_e + bias_e (§9.1: the bias only selects)",
       {"router"},
       "layers.3.ffn.route_weights",
       Steer::kNone,
       [](Fp32Components& c) {
         c.route = [base = c.route](const F32Mat& z, const F32RouterArgs& a) {
           F32Routing r = base(z, a);
           if (a.hash || a.bias.empty()) return r;
           for (std::int64_t t = 0; t < z.rows; ++t) {
             float sum = 0.0f;
             for (std::int64_t i = 0; i < a.k; ++i) {
               const std::int64_t e = r.idx[static_cast<std::size_t>(t * a.k + i)];
               sum += r.scores.at(t, e) + a.bias[static_cast<std::size_t>(e)];
             }
             for (std::int64_t i = 0; i < a.k; ++i) {
               const std::int64_t e = r.idx[static_cast<std::size_t>(t * a.k + i)];
               r.weights.at(t, i) =
                   a.route_scale * (r.scores.at(t, e) + a.bias[static_cast<std::size_t>(e)]) / sum;
             }
           }
           return r;
         };
       }},
      {"route-scale-missing",
       "route",
       "route weights not multiplied by route_scale (§9.1)",
       {"router"},
       "layers.0.ffn.route_weights",
       Steer::kNone,
       [](Fp32Components& c) {
         c.route = [base = c.route](const F32Mat& z, const F32RouterArgs& a) {
           F32RouterArgs b = a;
           b.route_scale = 1.0f;
           return base(z, b);
         };
       }},
      {"indexer-relu-missing",
       "index_scores",
       "head terms summed without the per-head ReLU (§7.3, §14.8)",
       {"index_scores"},
       "layers.2.attn.index_scores",
       Steer::kNone,
       [](Fp32Components& c) {
         c.index_scores = [](const F32Mat& q, const F32Mat& wi, const F32Mat& keys,
                             std::span<const std::int64_t> pos, std::int64_t heads, std::int64_t hd,
                             F32Mat& s) {
           for (std::int64_t t = 0; t < q.rows; ++t)
             for (std::int64_t j = 0; j < keys.rows; ++j) {
               if (j >= (pos[static_cast<std::size_t>(t)] + 1) / 4) {
                 s.at(t, j) = -kInf;
                 continue;
               }
               float acc = 0.0f;
               for (std::int64_t h = 0; h < heads; ++h) {
                 float dot = 0.0f;
                 for (std::int64_t i = 0; i < hd; ++i) dot += q.at(t, h * hd + i) * keys.at(j, i);
                 acc += wi.at(t, h) * dot;
               }
               s.at(t, j) = acc;
             }
         };
       }},
      {"hadamard-unnormalised",
       "hadamard",
       "Walsh–Hadamard butterfly without the n^{-1/2} scale (§2.4)",
       {"hadamard", "indexer_compressor"},
       "layers.2.attn.index_keys",
       Steer::kNone,
       [](Fp32Components& c) {
         c.hadamard = [base = c.hadamard](F32Mat& x, std::int64_t n) {
           base(x, n);
           const float s = std::sqrt(static_cast<float>(n));
           for (float& v : x.v) v *= s;
         };
       }},
      {"rms-norm-one-plus-weight",
       "rms_norm",
       "weighted RMSNorm scaled by (1 + w) (a Gemma convention, not V4's w, §2.1)",
       {"rms_norm", "compressor"},
       "layers.0.attn_norm",
       Steer::kNone,
       [](Fp32Components& c) {
         c.rms_norm = [base = c.rms_norm](const F32Mat& x, std::span<const float> w, float eps,
                                          std::int64_t g, F32Mat& y) {
           std::vector<float> w1(w.begin(), w.end());
           for (float& v : w1) v += 1.0f;
           base(x, w1, eps, g, y);
         };
       }},
      {"csa-overlap-halves-swapped",
       "compressor_pool",
       "CSA series swapped: block j−1 read through the second half of the channels (§6.2, §14.6)",
       {"compressor", "indexer_compressor"},
       "layers.2.attn.compressed",
       Steer::kNone,
       [](Fp32Components& c) {
         c.compressor_pool = [base = c.compressor_pool](const F32Mat& kv, const F32Mat& gate,
                                                        const F32Mat& ape, int m, std::int64_t w) {
           if (m != 4) return base(kv, gate, ape, m, w);
           auto swap_halves = [w](const F32Mat& a) {
             F32Mat b = a;
             for (std::int64_t r = 0; r < a.rows; ++r)
               for (std::int64_t i = 0; i < w; ++i) {
                 b.at(r, i) = a.at(r, w + i);
                 b.at(r, w + i) = a.at(r, i);
               }
             return b;
           };
           return base(swap_halves(kv), swap_halves(gate), swap_halves(ape), m, w);
         };
       }},
      {"sink-scaled-like-a-logit",
       "sink_attention",
       "the sink multiplied by D^{-1/2} like the logits (§5.4: it is not)",
       {"sink_attention", "attention_core"},
       "layers.0.attn.o",
       Steer::kNone,
       [](Fp32Components& c) {
         c.sink_attention = [base = c.sink_attention](const float* q, const F32Mat& keys,
                                                      std::span<const float> sink, std::int64_t h,
                                                      std::int64_t d, float scale, float* out) {
           std::vector<float> s(sink.begin(), sink.end());
           for (float& v : s) v *= scale;
           base(q, keys, s, h, d, scale, out);
         };
       }},
      {"mix-rms-per-stream",
       "hc_mix",
       "mixing logits normalised per stream instead of by one RMS over all hc·d entries (§4.1)",
       {"hc_pre"},
       // Identical streams (layer 0's attention input) have equal per-stream and global RMS: the
       // first mixing with distinct streams is layer 0's MoE sub-block.
       "layers.0.hc_ffn.pre",
       Steer::kNone,
       [](Fp32Components& c) {
         c.hc_mix = [](const F32Mat& x, const F32Mat& fn, float eps, F32Mat& mu) {
           const std::int64_t hc = 4, d = x.cols / hc;
           for (std::int64_t t = 0; t < x.rows; ++t) {
             std::vector<float> rho(hc);
             for (std::int64_t k = 0; k < hc; ++k) {
               float ss = 0.0f;
               for (std::int64_t i = 0; i < d; ++i) ss += x.at(t, k * d + i) * x.at(t, k * d + i);
               rho[static_cast<std::size_t>(k)] =
                   1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
             }
             for (std::int64_t m = 0; m < fn.rows; ++m) {
               float s = 0.0f;
               for (std::int64_t i = 0; i < x.cols; ++i)
                 s += fn.at(m, i) * x.at(t, i) * rho[static_cast<std::size_t>(i / d)];
               mu.at(t, m) = s;
             }
           }
         };
       }},
      {"swiglu-gate-and-up-swapped",
       "swiglu",
       "silu applied to the up projection (w3) instead of the gate (w1) (§9.2)",
       {"expert"},
       "layers.0.ffn.out",
       Steer::kNone,
       [](Fp32Components& c) {
         c.swiglu = [base = c.swiglu](const float* g, const float* p, std::int64_t n, float limit,
                                      float* hid) { base(p, g, n, limit, hid); };
       }},
      {"window-one-token-short",
       "window_start",
       "window of n_win − 1 keys: max(0, t − n_win + 2) .. t (§5.3)",
       {"key_window", "attention_core"},
       "layers.0.attn.o",
       Steer::kNone,
       [](Fp32Components& c) {
         c.window_start = [base = c.window_start](std::int64_t t, std::int64_t n) {
           return base(t, n - 1);
         };
       }},
      {"window-one-token-long",
       "window_start",
       "window starts at t − n_win (n_win + 1 keys) instead of t − n_win + 1 (§5.3)",
       {"key_window", "attention_core"},
       "layers.0.attn.o",
       Steer::kNone,
       [](Fp32Components& c) {
         c.window_start = [base = c.window_start](std::int64_t t, std::int64_t n) {
           return base(t, n + 1);
         };
       }},
      {"selection-padding-as-entry-0",
       "gather_keys",
       "a −1 padding slot of the selection read as compressed entry 0 (§5.3: padding is no key)",
       {"attention_core"},
       // The first CSA layer: rows with fewer than K_I = 32 visible entries (t < 131) are padded.
       "layers.2.attn.o",
       Steer::kNone,
       [](Fp32Components& c) {
         c.gather_keys = [base = c.gather_keys](const F32Mat& kv, std::int64_t first,
                                                std::int64_t t, const F32Mat& comp,
                                                std::span<const std::int64_t> sel) {
           std::vector<std::int64_t> s(sel.begin(), sel.end());
           for (std::int64_t& j : s)
             if (j == -1 && comp.rows > 0) j = 0;
           return base(kv, first, t, comp, s);
         };
       }},
      {"selection-padding-as-last-entry",
       "gather_keys",
       "a −1 padding slot read as the last compressed entry (Python's x[-1]) (§5.3)",
       {"attention_core"},
       "layers.2.attn.o",
       Steer::kNone,
       [](Fp32Components& c) {
         c.gather_keys = [base = c.gather_keys](const F32Mat& kv, std::int64_t first,
                                                std::int64_t t, const F32Mat& comp,
                                                std::span<const std::int64_t> sel) {
           std::vector<std::int64_t> s(sel.begin(), sel.end());
           for (std::int64_t& j : s)
             if (j == -1) j = comp.rows - 1;
           return base(kv, first, t, comp, s);
         };
       }},
      {"selected-entries-read-from-kv",
       "gather_keys",
       "selected entry j gathered from the window KV (row j) instead of the compressed entries "
       "(§5.3)",
       {"attention_core"},
       "layers.2.attn.o",
       Steer::kNone,
       [](Fp32Components& c) {
         c.gather_keys = [base = c.gather_keys](const F32Mat& kv, std::int64_t first,
                                                std::int64_t t, const F32Mat& comp,
                                                std::span<const std::int64_t> sel) {
           F32Mat keys = base(kv, first, t, comp, sel);
           std::int64_t n = t - std::max<std::int64_t>(first, 0) + 1;
           for (const std::int64_t j : sel)
             if (j != -1 && j < kv.rows) {
               std::copy(kv.row(j), kv.row(j) + kv.cols, keys.row(n));
               ++n;
             }
           return keys;
         };
       }},
      {"o-groups-interleaved",
       "o_group_proj",
       "heads assigned to output groups interleaved (head h in group h mod G) instead of "
       "contiguous (group g = heads g·H/G .. (g+1)·H/G − 1) (§5.5)",
       {"grouped_out_proj"},
       "layers.0.attn.out",
       Steer::kNone,
       [](Fp32Components& c) {
         c.o_group_proj = [base = c.o_group_proj](const F32Mat& o, const F32Mat& wo_a,
                                                  std::int64_t groups, std::int64_t hd, F32Mat& y) {
           const std::int64_t heads = o.cols / hd, per = heads / groups;
           F32Mat oi(o.rows, o.cols);  // slot i of group g holds head i·G + g
           for (std::int64_t t = 0; t < o.rows; ++t)
             for (std::int64_t g = 0; g < groups; ++g)
               for (std::int64_t i = 0; i < per; ++i)
                 std::copy(o.row(t) + (i * groups + g) * hd, o.row(t) + (i * groups + g + 1) * hd,
                           oi.row(t) + (g * per + i) * hd);
           base(oi, wo_a, groups, hd, y);
         };
       }},
      {"derotation-skipped",
       "rope",
       "attention output not rotated back by −t·ω before wo_a (§5.5, §14.4)",
       {"derotate"},
       "layers.0.attn.out",
       Steer::kNone,
       [](Fp32Components& c) {
         c.rope = [base = c.rope](F32Mat& x, std::int64_t h, std::int64_t d,
                                  std::span<const std::int64_t> pos, std::span<const float> omega,
                                  bool inverse) {
           if (!inverse) base(x, h, d, pos, omega, false);
         };
       }},
      {"hc-head-uses-post",
       "hc_head_weights",
       "hc_head weights 2σ(·) (the post formula) instead of σ(·) + hc_eps (§4.5)",
       {"hc_head"},
       "hc_head.out",
       Steer::kNone,
       [](Fp32Components& c) {
         c.hc_head_weights = [](const float* mu, const F32HcParams& p, std::int64_t hc, float,
                                float* w) {
           for (std::int64_t k = 0; k < hc; ++k)
             w[k] = 2.0f /
                    (1.0f + std::exp(-(p.scale[0] * mu[k] + p.base[static_cast<std::size_t>(k)])));
         };
       }},
      {"rope-on-first-dims",
       "rope",
       "RoPE applied to the first r dims of every head instead of the last r (§2.3, §5.1)",
       {"q_path", "kv_path", "index_query"},
       "layers.0.attn.q",
       Steer::kNone,
       [](Fp32Components& c) {
         c.rope = [](F32Mat& x, std::int64_t heads, std::int64_t hd,
                     std::span<const std::int64_t> pos, std::span<const float> omega,
                     bool inverse) {
           for (std::int64_t t = 0; t < x.rows; ++t)
             for (std::size_t j = 0; j < omega.size(); ++j) {
               const float th = static_cast<float>(pos[static_cast<std::size_t>(t)]) * omega[j];
               const float cs = std::cos(th), sn = inverse ? -std::sin(th) : std::sin(th);
               for (std::int64_t h = 0; h < heads; ++h) {
                 float* e = x.row(t) + h * hd + 2 * static_cast<std::int64_t>(j);  // offset 0
                 const float a = e[0], b = e[1];
                 e[0] = a * cs - b * sn;
                 e[1] = a * sn + b * cs;
               }
             }
         };
       }},
      {"q-head-norm-missing",
       "rms_norm",
       "the unweighted per-head RMS norm of the query (§2.2, §5.1) skipped: W_qb c passed on "
       "unnormalised",
       {"q_path"},
       "layers.0.attn.q",
       Steer::kNone,
       [](Fp32Components& c) {
         c.rms_norm = [base = c.rms_norm](const F32Mat& x, std::span<const float> w, float eps,
                                          std::int64_t g, F32Mat& y) {
           if (w.empty()) {
             y = x;
             return;
           }
           base(x, w, eps, g, y);
         };
       }},
      {"q-head-norm-over-all-heads",
       "rms_norm",
       "the unweighted query norm taken over the whole row of H·D values (one RMS per token) "
       "instead of per head over D (§2.2, §5.1)",
       {"q_path"},
       "layers.0.attn.q",
       Steer::kNone,
       [](Fp32Components& c) {
         c.rms_norm = [base = c.rms_norm](const F32Mat& x, std::span<const float> w, float eps,
                                          std::int64_t g, F32Mat& y) {
           base(x, w, eps, w.empty() ? x.cols : g, y);
         };
       }},
      {"kv-rope-conjugated",
       "rope",
       "the single-head rotation (the K=V vector, §5.2; also the compressed entries) by −t·ω "
       "instead of +t·ω, so q·k depends on t_q + t_k instead of t_q − t_k (§2.3)",
       {"kv_path"},
       // Layer 0's K=V is the first single-head rotation of the forward (the query has H heads;
       // the first compressed entries are in layer 2).
       "layers.0.attn.kv",
       Steer::kNone,
       [](Fp32Components& c) {
         c.rope = [base = c.rope](F32Mat& x, std::int64_t h, std::int64_t d,
                                  std::span<const std::int64_t> pos, std::span<const float> omega,
                                  bool inverse) {
           base(x, h, d, pos, omega, h == 1 ? !inverse : inverse);
         };
       }},
      {"index-query-hadamard-first-head-only",
       "hadamard",
       "the rotation launched over rows instead of rows x heads: only the first block of n "
       "columns of each row rotated, so the index queries' heads 1 .. H_I − 1 reach the scores "
       "unrotated while the keys (one block per row) are right (§2.4, §7.2)",
       {"index_query"},
       // No trace point holds the index queries: the scores are the first point that reads them
       // (layer 2, tiny-flash's first CSA layer; its index_keys, computed before, pass).
       "layers.2.attn.index_scores",
       Steer::kNone,
       [](Fp32Components& c) {
         c.hadamard = [base = c.hadamard](F32Mat& x, std::int64_t n) {
           if (x.cols <= n) return base(x, n);
           F32Mat first(x.rows, n);
           for (std::int64_t t = 0; t < x.rows; ++t)
             std::copy(x.row(t), x.row(t) + n, first.row(t));
           base(first, n);
           for (std::int64_t t = 0; t < x.rows; ++t)
             std::copy(first.row(t), first.row(t) + n, x.row(t));
         };
       }},
  };
  return list;
}

// ------------------------------------------------------------------ fixture and inputs

struct Fixture {
  ModelConfig cfg;
  ref::Model model;
  std::vector<std::int64_t> tokens;
  Trace a;  // reference, chained, exact, every layer
  BisectOptions opts;
  std::map<Steer, Trace> steered_a;  // reference, teacher-forced on the steered block input
};

// The layer whose block input a recipe steers: the Sinkhorn recipe needs large comb logits, i.e. a
// large hc_attn_scale[2] (tiny-flash: 0.27 in layer 0, 0.96 in layer 2); the SwiGLU one any layer.
std::int64_t steer_layer(Steer s) { return s == Steer::kSpikySinkhorn ? 2 : 0; }

// The block input of layer `layer` pushed along `dir` ([hc·d], applied to every token) so that its
// component carries `gain` times the rms of the natural input.
Trace steered_input(const Fixture& f, std::int64_t layer, const std::vector<double>& dir,
                    double gain) {
  const std::string name = ref::trace_names::layer(f.cfg, layer, "block.in");
  ref::Mat x = f.a.at(name);
  double dn = 0;
  for (double v : dir) dn += v * v;
  const double scale = gain * std::sqrt(x.squaredNorm() / static_cast<double>(x.size())) /
                       std::sqrt(dn / static_cast<double>(dir.size()));
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (Eigen::Index i = 0; i < x.cols(); ++i) x(t, i) += scale * dir[static_cast<std::size_t>(i)];
  Trace teacher;
  teacher.put(name, x);
  return teacher;
}

// The direction whose mixing logits μ = ρ·Fn·v are zero on pre/post and follow the sign pattern
// P on the comb logits (v = Fnᵀ (Fn Fnᵀ)⁻¹ P, the least-norm solution; ρ makes μ scale-free, so
// its size is sqrt(hc·d)·|P|/|v|, about 5.6 per entry here): Z[j][k] large for k >= j, small
// below the diagonal. A triangular pattern has no total support, so Sinkhorn converges
// sublinearly (like 1/k) and 20 steps stay far from doubly stochastic.
std::vector<double> sinkhorn_direction(const ref::LayerWeights& w, const ModelConfig& cfg) {
  const std::int64_t hc = cfg.hc_mult;
  const ref::Mat& fn = w.hc_attn.fn;  // [mix, hc·d]
  ref::Vec p = ref::Vec::Zero(fn.rows());
  for (std::int64_t j = 0; j < hc; ++j)
    for (std::int64_t k = 0; k < hc; ++k) p(2 * hc + j * hc + k) = k >= j ? 1.0 : -1.0;
  const ref::Mat gram = fn * fn.transpose();
  const ref::Vec v = fn.transpose() * gram.ldlt().solve(p);
  return std::vector<double>(v.data(), v.data() + v.size());
}

// The largest-norm row of the shared expert's W1, divided by the ffn_norm weight and copied to
// every stream: ffn_norm(u) then points along that row and its gate value exceeds swiglu_limit.
std::vector<double> swiglu_direction(const ref::LayerWeights& w, const ModelConfig& cfg) {
  const ref::Mat& w1 = w.moe.shared.w1.w;
  Eigen::Index best = 0;
  w1.rowwise().squaredNorm().maxCoeff(&best);
  std::vector<double> dir(static_cast<std::size_t>(cfg.hc_dim()));
  for (std::int64_t k = 0; k < cfg.hc_mult; ++k)
    for (std::int64_t i = 0; i < cfg.dim; ++i)
      dir[static_cast<std::size_t>(k * cfg.dim + i)] = w1(best, i) / w.ffn_norm(i);
  return dir;
}

const Fixture& fx() {
  static const Fixture f = [] {
    ModelConfig cfg = load_config(kCkpt / "config.json");
    ref::ModelOptions mo;
    mo.keep_weights = true;
    ref::Model model = ref::Model::open(kCkpt, cfg, mo);
    Rng rng(derive_seed("mutants_test", "tokens", std::to_string(kT)));
    std::vector<std::int64_t> tokens(static_cast<std::size_t>(kT));
    for (auto& t : tokens)
      t = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(cfg.vocab_size)));
    Trace a;
    model.forward(tokens, {}, &a);
    BisectOptions o;
    o.path = "fp32";
    o.mode = BisectMode::kTeacherForced;
    load_route_bias(model.checkpoint(), cfg, o);
    Fixture fix{cfg, model, tokens, std::move(a), o, {}};
    const std::pair<Steer, std::vector<double>> steers[] = {
        {Steer::kSpikySinkhorn,
         sinkhorn_direction(*model.layer_weights(steer_layer(Steer::kSpikySinkhorn)), cfg)},
        {Steer::kSwigluOutlier,
         swiglu_direction(*model.layer_weights(steer_layer(Steer::kSwigluOutlier)), cfg)}};
    for (const auto& [s, dir] : steers) {
      const Trace teacher = steered_input(fix, steer_layer(s), dir, 30.0);
      ref::ForwardRequest req;
      req.teacher = &teacher;
      req.first_layer = steer_layer(s);
      req.last_layer = steer_layer(s);
      Trace as;
      model.forward(tokens, req, &as);
      fix.steered_a.emplace(s, std::move(as));
    }
    return fix;
  }();
  return f;
}

// The trace the mutant must be judged against, and the layers to run.
struct BisectInput {
  const Trace* a;
  std::int64_t first_layer;
  std::int64_t last_layer;  // −1: every layer and the head
};

BisectInput bisect_input(const Fixture& f, const Mutant& m) {
  if (m.steer != Steer::kNone)
    return {&f.steered_a.at(m.steer), steer_layer(m.steer), steer_layer(m.steer)};
  // Teacher-forced blocks after the expected one cannot change the first failure: stop there.
  if (m.expect.rfind("layers.", 0) == 0) return {&f.a, 0, std::stoll(m.expect.substr(7))};
  return {&f.a, 0, -1};
}

BisectReport run_bisect(const Fixture& f, const Fp32Components& comps, const Mutant& m,
                        const std::string& name) {
  const BisectInput in = bisect_input(f, m);
  const Fp32Forward port(f.model, comps, name);
  ref::ForwardRequest req;
  req.teacher = in.a;
  req.first_layer = in.first_layer;
  req.last_layer = in.last_layer;
  Trace b;
  port.forward(f.tokens, req, &b);
  return bisect_traces(*in.a, b, f.opts);
}

std::vector<Case> runner_cases(const std::vector<std::string>& components) {
  std::vector<Case> out;
  for (const Case& c : case_table())
    for (const std::string& comp : components)
      if (c.component == comp && c.mode == PrecisionMode::kExact && !c.slow) out.push_back(c);
  return out;
}

RunnerOptions no_bundles() {
  RunnerOptions ro;
  ro.bundle_dir.clear();
  return ro;
}

// ------------------------------------------------------------------ tests

TEST(Mutants, ListCoversTheIssue) {
  EXPECT_GE(mutants().size(), 34u);
  std::int64_t runner_visible = 0;
  for (const Mutant& m : mutants()) {
    runner_visible += !m.runner.empty();
    Fp32Components c = default_fp32_components();
    m.apply(c);
    for (const std::string& comp : m.runner)
      EXPECT_NO_THROW(fp32_port_component(c, comp)) << m.name;
  }
  EXPECT_EQ(runner_visible, static_cast<std::int64_t>(mutants().size()))
      << "every mutant must be judged by the runner too";
}

// One test (one process under ctest: the fixture's reference forward is paid once). For every
// mutant: (a) the runner cases of its components in case-table order until the first that flags
// it; (b) bisect. Controls, so that no catch is vacuous: the unmutated port passes every runner
// case that caught a mutant and every bisect input; the steered inputs reach their regime.
TEST(Mutants, EveryMutantIsCaughtAndLocalized) {
  const Fixture& f = fx();

  // Controls on the bisect inputs.
  for (Steer s : {Steer::kNone, Steer::kSpikySinkhorn, Steer::kSwigluOutlier}) {
    Mutant probe;
    probe.steer = s;
    probe.expect = "hc_head.out";  // natural input: every layer and the head
    const BisectReport r = run_bisect(f, default_fp32_components(), probe, "fp32-port");
    EXPECT_TRUE(r.pass()) << "unmutated port, steer " << static_cast<int>(s) << "\n" << r.text();
  }
  // Spiky Sinkhorn: the 20-step result stays far from doubly stochastic along the rows.
  const ref::Mat& comb = f.steered_a.at(Steer::kSpikySinkhorn).at("layers.2.hc_attn.comb");
  double worst_row = 0;
  for (Eigen::Index t = 0; t < comb.rows(); ++t)
    for (int j = 0; j < 4; ++j)
      worst_row = std::max(worst_row, std::fabs(comb.row(t).segment(4 * j, 4).sum() - 1.0));
  EXPECT_GT(worst_row, 5e-3);  // 10x the fp32 trace allowance of 5e-4
  // SwiGLU outlier: the shared expert's largest gate value exceeds swiglu_limit.
  const ref::Mat& z = f.steered_a.at(Steer::kSwigluOutlier).at("layers.0.ffn_norm");
  const double gmax = (z * f.model.layer_weights(0)->moe.shared.w1.w.transpose()).maxCoeff();
  EXPECT_GT(gmax, f.cfg.swiglu_limit);
  std::printf(
      "steered inputs: layers.2 Sinkhorn max |row sum - 1| = %.3g; "
      "layers.0 shared-expert max gate = %.3g (swiglu_limit %.3g)\n",
      worst_row, gmax, f.cfg.swiglu_limit);

  struct Row {
    std::string name, member, runner_case, first, expect;
    std::int64_t runner_tried = 0;
    bool runner_na = false, runner_caught = false, localized = false;
    double seconds = 0;
  };
  std::map<std::string, bool> control;  // case name -> the unmutated port passes it
  std::vector<Row> rows;
  for (const Mutant& m : mutants()) {
    const auto t0 = std::chrono::steady_clock::now();
    Fp32Components comps = default_fp32_components();
    m.apply(comps);
    Row row{m.name, m.member, "", "", m.expect};
    // (a) the component runner: the mutated port component swapped into the reference.
    row.runner_na = m.runner.empty();
    for (const Case& c : runner_cases(m.runner)) {
      const SwappedImplementation impl(reference_implementation(), c.component,
                                       fp32_port_component(comps, c.component), "mut-" + m.name,
                                       "fp32");
      ++row.runner_tried;
      if (run_case(c, impl, no_bundles()).pass) continue;
      row.runner_caught = true;
      row.runner_case = c.name();
      if (!control.count(c.name())) {
        const SwappedImplementation good(
            reference_implementation(), c.component,
            fp32_port_component(default_fp32_components(), c.component), "fp32-port", "fp32");
        const CaseResult r = run_case(c, good, no_bundles());
        control[c.name()] = r.pass;
        EXPECT_TRUE(r.pass) << "control: the unmutated port fails the case that caught " << m.name
                            << "\n"
                            << r.report();
      }
      break;
    }
    // (b) bisect on the teacher-forced trace.
    const BisectReport r = run_bisect(f, comps, m, "mut-" + m.name);
    row.first =
        r.first() != nullptr ? r.first()->name : (r.errors.empty() ? "(pass)" : "(invalid)");
    row.localized = r.errors.empty() && r.first() != nullptr && r.first()->name == m.expect;
    EXPECT_TRUE(row.localized) << m.name << ": expected first failure " << m.expect << "\n"
                               << r.text();
    if (!row.runner_na) {
      EXPECT_TRUE(row.runner_caught)
          << m.name << ": no exact case of " << m.runner.front() << " flags it";
    }
    row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rows.push_back(row);
  }

  std::int64_t runner_seen = 0, runner_caught = 0, localized = 0;
  std::printf("\n%-34s %-16s %-62s %-28s %-4s %s\n", "mutant", "member",
              "runner: first case that flags it (cases tried)", "bisect: first failing point", "ok",
              "s");
  for (const Row& r : rows) {
    const std::string rc = r.runner_na ? "n/a: no runner component exercises the member"
                                       : (r.runner_caught ? r.runner_case : "NOT CAUGHT") + " (" +
                                             std::to_string(r.runner_tried) + ")";
    std::printf("%-34s %-16s %-62s %-28s %-4s %.2f\n", r.name.c_str(), r.member.c_str(), rc.c_str(),
                r.first.c_str(), r.localized ? "yes" : "NO", r.seconds);
    if (!r.localized) std::printf("%34s expected %s\n", "", r.expect.c_str());
    runner_seen += !r.runner_na;
    runner_caught += !r.runner_na && r.runner_caught;
    localized += r.localized;
  }
  const auto pct = [](std::int64_t a, std::int64_t b) {
    return b > 0 ? 100.0 * static_cast<double>(a) / static_cast<double>(b) : 0.0;
  };
  const auto n = static_cast<std::int64_t>(rows.size());
  std::printf(
      "\ncatch rate: runner %lld/%lld (%.0f%%) of the mutants whose member a runner component "
      "exercises (%lld mutants in all); bisect %lld/%lld (%.0f%%) caught and localized to the "
      "expected trace point\n",
      static_cast<long long>(runner_caught), static_cast<long long>(runner_seen),
      pct(runner_caught, runner_seen), static_cast<long long>(n), static_cast<long long>(localized),
      static_cast<long long>(n), pct(localized, n));
  EXPECT_EQ(runner_seen, n) << "a mutant no runner component exercises";
  EXPECT_EQ(runner_caught, n);
  EXPECT_EQ(localized, n);
}

}  // namespace
}  // namespace v4ref::compare
