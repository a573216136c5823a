// A float32 CPU implementation of the V4 forward, shaped the way a kernel port is: the second
// implementation of the differential path (issue #8), so that `bisect` and the component runner
// run end to end without a GPU.
//
// What it computes: exactly the reference's `exact` mode (v4-forward.md §2–§10, no QAT point, no
// bf16 store) in float arithmetic with float accumulation: embedding, per block mHC pre (§4.1–4.3,
// Sinkhorn) → attn_norm → attention (§5: query path with per-head norm and RoPE, K=V path; §6
// compressor for CSA/HCA; §7 indexer with top-k for CSA; §5.4 sink attention over window ∪
// selected entries; §5.5 de-rotation and the grouped output projection) → mHC post → mHC pre →
// ffn_norm → MoE (§9: router with hash routing and the biased top-k, clamped SwiGLU experts) →
// mHC post; then hc_head (§4.5), the final norm and the head. Agreement with the fp64 reference
// is to fp32 rounding (the "trace.* @ fp32" rows of the tolerance table).
//
// It is an independent implementation: no op math of reference/ is called. It reads the model's
// config and weights (ref::Model, its checkpoint) and shares only the dtype codecs
// (core/formats.hpp), as guide/style.md allows. Weights are prepared once per layer:
//   fp8 linears  : e4m3 codes x ue8m0 block scales decoded by the `dequant_fp8` component from the
//                  checkpoint's bytes (exact in float: a power-of-two scale times a 4-bit
//                  significand, inside float's range for every released scale);
//   fp4 experts  : packed I8 codes unpacked (low nibble = even column) and scaled by the
//                  `dequant_fp4` component from the checkpoint's bytes;
//   bf16 / fp32  : the reference loader's doubles converted to float, each checked to be exact
//                  (NumericError naming the tensor otherwise).
//
// Layout: activations are contiguous row-major float buffers [T, features] (F32Mat); every
// operation is a loop over tokens (and heads, experts) with explicit float reductions, the way
// a kernel is written: a GEMM with leading dimensions, per-query key gathering into a contiguous
// buffer, per-expert token groups. Output buffers a caller allocates are filled with poison
// (quiet NaN 0x7FC0DEAD, guide §8) so an element a component forgets to write shows up as a
// non-finite mismatch in the comparison.
//
// The component table (Fp32Components) is a struct of std::function members, one per kernel a
// port would write; default_fp32_components() holds the correct float versions. The forward calls
// the math only through the table, so a test can swap exactly one component for a wrong version
// (a mutant, tests/compare/mutants_test.cpp), and a kernel library can plug in one kernel at a time
// (docs/compare-mutants.md). The same table also drives the component runner through
// fp32_port_component() / fp32_port_implementation(), so one mutant definition is judged by both
// harnesses.
//
// Not covered: the MTP block, decode (caches), the QAT rounding points (an fp32 port with the
// official rounding would be a third implementation; this one is the exact-math port).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "v4ref/compare/bisect.hpp"
#include "v4ref/compare/runner.hpp"
#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/model.hpp"
#include "v4ref/ref/trace.hpp"

namespace v4ref::compare {

// ------------------------------------------------------------------ storage

// A contiguous row-major float32 tensor [rows, cols] (a 1-D tensor is 1 x n).
struct F32Mat {
  std::int64_t rows = 0, cols = 0;
  std::vector<float> v;

  F32Mat() = default;
  F32Mat(std::int64_t r, std::int64_t c, float fill = 0.0f);
  // [r, c] filled with the poison value (quiet NaN 0x7FC0DEAD, guide §8).
  static F32Mat poisoned(std::int64_t r, std::int64_t c);

  float* row(std::int64_t i) { return v.data() + i * cols; }
  const float* row(std::int64_t i) const { return v.data() + i * cols; }
  float& at(std::int64_t i, std::int64_t j) { return v[static_cast<std::size_t>(i * cols + j)]; }
  float at(std::int64_t i, std::int64_t j) const {
    return v[static_cast<std::size_t>(i * cols + j)];
  }
  std::int64_t size() const { return rows * cols; }
};

// The poison fill of output buffers: quiet NaN with payload 0xDEAD (bits 0x7FC0DEAD).
float f32_poison();

// Activations: each double rounded to float (round to nearest).
F32Mat to_f32(const ref::Mat& m);
// Weights: each double must be exactly a float; NumericError naming `name` and the first
// element otherwise.
F32Mat to_f32_exact(const ref::Mat& m, std::string_view name);
std::vector<float> to_f32_exact(const ref::Vec& v, std::string_view name);
ref::Mat to_f64(const F32Mat& m);

// The RoPE frequencies ω_j (j < r/2) of a table (§2.3), evaluated in double and rounded to
// float once, like a kernel's precomputed table: base^(−2j/r), with the YaRN blend when `yarn`.
std::vector<float> rope_omega_f32(double base, bool yarn, const YarnConfig& yarn_cfg,
                                  std::int64_t rope_dim);

// ------------------------------------------------------------------ component arguments

// hc_{attn,ffn}_{fn,base,scale} (§4) or hc_head_{fn,base,scale} (§4.5).
struct F32HcParams {
  F32Mat fn;                 // [mix, hc·d]
  std::vector<float> base;   // [mix]
  std::vector<float> scale;  // [3] (hc_head: [1])
};

// The split of one token's mixing logits μ (§4.2): pre, post and the Sinkhorn logits Z.
struct F32HcSplit {
  std::vector<float> pre;   // [hc]
  std::vector<float> post;  // [hc]
  std::vector<float> z;     // [hc·hc] row-major Z[j][k]
};

// The router's inputs beyond z (§9.1).
struct F32RouterArgs {
  const F32Mat* gate = nullptr;           // [E, d]
  std::span<const float> bias;            // [E] (biased layers; empty for hash layers)
  bool hash = false;                      // route by tid2eid[token]
  std::span<const std::int64_t> tid2eid;  // [vocab, k] row-major (hash layers)
  std::span<const std::int64_t> tokens;   // [T] (hash layers)
  std::int64_t k = 0;                     // experts per token
  float route_scale = 1.0f;
};

struct F32Routing {
  F32Mat scores;                  // [T, E] s_e, unbiased
  std::vector<std::int64_t> idx;  // [T·k] chosen experts (rank order; tid2eid order for hash)
  F32Mat weights;                 // [T, k] route weights
};

// ------------------------------------------------------------------ the component table

// One member per kernel a port writes. Signatures use raw float buffers with explicit shapes,
// as a kernel launcher does. Every member of default_fp32_components() is set; a table with an
// empty member is rejected by Fp32Forward.
struct Fp32Components {
  // -- weight preparation (§1.5, §15.5–15.6)
  // Packed e2m1 [rows, cols/2] bytes (low nibble = even column) x ue8m0 scale bytes
  // [rows, cols/32] -> [rows, cols].
  std::function<F32Mat(std::span<const std::uint8_t> packed, std::span<const std::uint8_t> scales,
                       std::int64_t rows, std::int64_t cols)>
      dequant_fp4;
  // e4m3 code bytes [rows, cols] x ue8m0 scale bytes [⌈rows/128⌉, ⌈cols/128⌉] -> [rows, cols].
  std::function<F32Mat(std::span<const std::uint8_t> codes, std::span<const std::uint8_t> scales,
                       std::int64_t rows, std::int64_t cols)>
      dequant_fp8;

  // -- primitives
  // GEMM y[t, o] = Σ_i x[t, i]·w[o, i] (y = x Wᵀ), float accumulation; x, w, y with leading
  // dimensions (elements between rows).
  std::function<void(const float* x, std::int64_t ldx, std::int64_t T, const float* w,
                     std::int64_t ldw, std::int64_t out, std::int64_t in, float* y,
                     std::int64_t ldy)>
      gemm;
  // RMSNorm of every group of `group` contiguous columns of every row (§2.1, §2.2): weighted by
  // `weight` [group] when given, unweighted when empty. Writes y (same shape as x).
  std::function<void(const F32Mat& x, std::span<const float> weight, float eps, std::int64_t group,
                     F32Mat& y)>
      rms_norm;
  // Interleaved-pair RoPE (§2.3) in place on the last 2·|omega| columns of each of the n_heads
  // slices of head_dim columns, row t at positions[t]; `inverse` rotates by −θ (§5.5).
  std::function<void(F32Mat& x, std::int64_t n_heads, std::int64_t head_dim,
                     std::span<const std::int64_t> positions, std::span<const float> omega,
                     bool inverse)>
      rope;
  // Normalised Walsh–Hadamard rotation (§2.4) of every block of n columns, in place.
  std::function<void(F32Mat& x, std::int64_t n)> hadamard;

  // -- mHC (§4)
  // μ = ρ·(Fn·v) of every row v of x [T, hc·d]: [T, fn.rows] (§4.1).
  std::function<void(const F32Mat& x, const F32Mat& fn, float norm_eps, F32Mat& mu)> hc_mix;
  // pre/post/Z of one token's μ [mix] (§4.2).
  std::function<F32HcSplit(const float* mu, const F32HcParams& p, std::int64_t hc, float hc_eps)>
      hc_split;
  // Sinkhorn–Knopp (§4.3) in place: logits Z [n, n] -> C.
  std::function<void(float* m, std::int64_t n, std::int64_t iters, float eps)> sinkhorn;
  // u_t = Σ_k w[t, k]·X_t[k] (§4.4 collapse, §4.5): x [T, hc·d], w [T, hc] -> u [T, d].
  std::function<void(const F32Mat& x, const F32Mat& w, F32Mat& u)> hc_collapse;
  // X_new[k] = post_k·f + Σ_j C[j][k]·X[j] (§4.4): f [T, d], x [T, hc·d], post [T, hc],
  // comb [T, hc·hc] (row t = C[j][k] at column j·hc + k) -> out [T, hc·d].
  std::function<void(const F32Mat& f, const F32Mat& x, const F32Mat& post, const F32Mat& comb,
                     F32Mat& out)>
      hc_post;
  // hc_head weights w_k = σ(s0·μ_k + b_k) + hc_eps of one token (§4.5): w [hc].
  std::function<void(const float* mu, const F32HcParams& p, std::int64_t hc, float hc_eps,
                     float* w)>
      hc_head_weights;

  // -- attention (§5)
  // First window position of query t: max(0, t − n_win + 1) (§5.3); the window ends at t.
  std::function<std::int64_t(std::int64_t t, std::int64_t n_win)> window_start;
  // One query's core attention with a sink (§5.4): q [H·D], keys [n, D] (contiguous, gathered),
  // sink [H] -> out [H·D]. n = 0: zeros.
  std::function<void(const float* q, const F32Mat& keys, std::span<const float> sink,
                     std::int64_t n_heads, std::int64_t head_dim, float scale, float* out)>
      sink_attention;
  // The key list of one query (§5.3) gathered into a contiguous buffer: kv rows first .. t (the
  // window, increasing position), then the rows of `compressed` named by `selected` in list
  // order; −1 entries are padding and contribute no key. [n, D].
  std::function<F32Mat(const F32Mat& kv, std::int64_t first, std::int64_t t,
                       const F32Mat& compressed, std::span<const std::int64_t> selected)>
      gather_keys;
  // §5.5 grouped projection: the heads of o [T, H·D] (head_dim columns each) in `groups`
  // contiguous groups of H/G heads; y[:, g·R_o .. (g+1)·R_o) = o_g · wo_a[g·R_o .. (g+1)·R_o)ᵀ
  // with wo_a [G·R_o, H·D/G] -> y [T, G·R_o] (group-major).
  std::function<void(const F32Mat& o, const F32Mat& wo_a, std::int64_t groups,
                     std::int64_t head_dim, F32Mat& y)>
      o_group_proj;

  // -- compressor (§6)
  // Pooled entries Ĉ_j (§6.1/§6.2, before §6.3) of every complete block: kv, gate [T, c·w]
  // projections, ape [m, c·w] -> [N, w].
  std::function<F32Mat(const F32Mat& kv, const F32Mat& gate, const F32Mat& ape, int ratio,
                       std::int64_t width)>
      compressor_pool;
  // RoPE position of compressed entry j (§6.3): j·m.
  std::function<std::int64_t(std::int64_t j, int ratio)> entry_position;

  // -- indexer (§7)
  // I[t, j] = Σ_h wI[t, h]·ReLU(q_t,h · K_j) for visible j < ⌊(t+1)/4⌋, −∞ beyond (§7.3):
  // q [T, H·D], wI [T, H], keys [N, D] -> [T, N].
  std::function<void(const F32Mat& q, const F32Mat& wi, const F32Mat& keys,
                     std::span<const std::int64_t> positions, std::int64_t n_heads,
                     std::int64_t head_dim, F32Mat& scores)>
      index_scores;
  // Top-k of one score row of query position t: min(k, ⌊(t+1)/4⌋) visible entries, higher score
  // first, lower index first on equal scores, NaN never selected (§7.3, guide §9).
  std::function<std::vector<std::int64_t>(const float* scores, std::int64_t n, std::int64_t t,
                                          std::int64_t k)>
      index_topk;

  // -- MoE (§9)
  // Router of z [T, d] (§9.1).
  std::function<F32Routing(const F32Mat& z, const F32RouterArgs& args)> route;
  // Clamped SwiGLU (§9.2) of n values: hid = silu(min(g, L))·clamp(p, −L, L).
  std::function<void(const float* g, const float* p, std::int64_t n, float limit, float* hid)>
      swiglu;
};

// The correct float components.
const Fp32Components& default_fp32_components();

// ------------------------------------------------------------------ composite steps
// Built only from table members (so a swapped member reaches every step that uses it).

// y = x Wᵀ through the table's gemm.
F32Mat f32_linear(const Fp32Components& c, const F32Mat& x, const F32Mat& w);

struct F32HcPre {
  F32Mat u;     // [T, d]
  F32Mat pre;   // [T, hc]
  F32Mat post;  // [T, hc]
  F32Mat comb;  // [T, hc·hc]
};
// HCPre (§4.1–4.4): hc_mix, hc_split, sinkhorn and hc_collapse.
F32HcPre f32_hc_pre(const Fp32Components& c, const F32Mat& x, const F32HcParams& p, std::int64_t hc,
                    std::int64_t sinkhorn_iters, float norm_eps, float hc_eps);
// hc_head (§4.5): hc_mix, hc_head_weights and hc_collapse.
F32Mat f32_hc_head(const Fp32Components& c, const F32Mat& x, const F32HcParams& p, std::int64_t hc,
                   float norm_eps, float hc_eps);

struct F32QueryPath {
  F32Mat c;  // [T, L_q] the query latent RMSNorm_q_norm(W_qa x), reused by the indexer (§7.2)
  F32Mat q;  // [T, H·D]
};
// §5.1 query path of the attention inputs x [T, d] at `positions`: gemm with wq_a [L_q, d],
// rms_norm weighted by q_norm over L_q, gemm with wq_b [H·D, L_q], the unweighted per-head
// rms_norm (group = head_dim), then rope on the last 2·|omega| dims of every head.
F32QueryPath f32_q_path(const Fp32Components& c, const F32Mat& x, const F32Mat& wq_a,
                        std::span<const float> q_norm, const F32Mat& wq_b,
                        std::span<const std::int64_t> positions, std::span<const float> omega,
                        std::int64_t n_heads, std::int64_t head_dim, float norm_eps);
// §5.2 K=V path: gemm with wkv [D, d], rms_norm weighted by kv_norm over D, rope on the last
// 2·|omega| dims (one head of D): [T, D] (exact math: no Q8 of the nope dims).
F32Mat f32_kv_path(const Fp32Components& c, const F32Mat& x, const F32Mat& wkv,
                   std::span<const float> kv_norm, std::span<const std::int64_t> positions,
                   std::span<const float> omega, float norm_eps);
// §7.2 index queries of the query latents c [T, L_q]: gemm with wq_b [H_I·D_I, L_q], rope on the
// last 2·|omega| dims of every head of D_I, hadamard per head: [T, H_I·D_I] (no Q4).
F32Mat f32_index_queries(const Fp32Components& c, const F32Mat& cl, const F32Mat& wq_b,
                         std::span<const std::int64_t> positions, std::span<const float> omega,
                         std::int64_t n_heads, std::int64_t head_dim);
// §7.2 head weights of the attention inputs x [T, d]: gemm with weights_proj [H_I, d], times
// D_I^-1/2·H_I^-1/2 (one float constant): [T, H_I].
F32Mat f32_index_weights(const Fp32Components& c, const F32Mat& x, const F32Mat& weights_proj,
                         std::int64_t n_heads, std::int64_t head_dim);

// Core attention of the queries q [Tq, H·D] at positions q_start .. q_start + Tq − 1 (§5.3–5.4):
// per query t, window_start, gather_keys over kv [>= q_start + Tq, D] (row s = position s) and
// compressed [N, D] with the row of `selected` ([Tq, k] row-major, −1 trailing padding; k = 0: no
// compressed keys), then sink_attention with scale D^-1/2: o [Tq, H·D] before de-rotation.
F32Mat f32_attention_core(const Fp32Components& c, const F32Mat& q, const F32Mat& kv,
                          const F32Mat& compressed, std::span<const std::int64_t> selected,
                          std::int64_t k, std::span<const float> sink, std::int64_t q_start,
                          std::int64_t n_heads, std::int64_t head_dim, std::int64_t n_win);
// §5.5 grouped output projection of the de-rotated o [T, H·D]: o_group_proj, then wo_b
// [d, G·R_o] through gemm: [T, d].
F32Mat f32_grouped_out_proj(const Fp32Components& c, const F32Mat& o, const F32Mat& wo_a,
                            const F32Mat& wo_b, std::int64_t groups, std::int64_t head_dim);

struct F32CompressorWeights {
  int ratio = 0;            // 4 (CSA, two series) or 128 (HCA)
  bool indexer = false;     // indexer compressor: Hadamard after RoPE (§7.1)
  std::int64_t width = 0;   // w
  F32Mat wkv, wgate;        // [c·w, d]
  F32Mat ape;               // [m, c·w]
  std::vector<float> norm;  // [w]
};
// All complete entries of x [T, d] from position 0 (§6): projections, compressor_pool, then per
// entry RMSNorm, RoPE at entry_position(j, m) and (indexer) the Hadamard rotation: [N, w].
F32Mat f32_compress(const Fp32Components& c, const F32Mat& x, const F32CompressorWeights& w,
                    std::span<const float> omega, float norm_eps);

struct F32Expert {
  F32Mat w1, w2, w3;  // [I, d], [d, I], [I, d]
};
// One expert on rows z [n, d] (§9.2); `row_weight` (n, or empty) multiplies hid before W2
// (§9.3, the official order): [n, d].
F32Mat f32_expert(const Fp32Components& c, const F32Mat& z, const F32Expert& e,
                  std::span<const float> row_weight, float limit);

// ------------------------------------------------------------------ prepared weights

struct F32LayerWeights {
  LayerConfig layer;
  std::vector<float> omega;  // RoPE table of the layer (§2.3)
  // mHC and norms
  F32HcParams hc_attn, hc_ffn;
  std::vector<float> attn_norm, ffn_norm;
  // attention
  F32Mat wq_a, wq_b, wkv, wo_a, wo_b;
  std::vector<float> q_norm, kv_norm, attn_sink;
  bool has_compressor = false, has_indexer = false;
  F32CompressorWeights compressor;          // CSA/HCA
  F32CompressorWeights indexer_compressor;  // CSA
  F32Mat index_wq_b, index_weights_proj;    // CSA
  // MoE
  F32Mat gate;
  std::vector<float> gate_bias;       // biased layers
  std::vector<std::int64_t> tid2eid;  // hash layers, [vocab, k]
  std::vector<F32Expert> experts;     // [E] routed
  F32Expert shared;
};

// ------------------------------------------------------------------ the forward

class Fp32Forward final : public BlockImplementation {
 public:
  // Prepares weights lazily per layer (cached) from `model`'s checkpoint through the table's
  // dequant components. ConfigError if a member of `components` is empty or the model is not in
  // exact mode (this port implements the exact math).
  explicit Fp32Forward(ref::Model model, Fp32Components components = default_fp32_components(),
                       std::string name = "fp32-port");

  std::string name() const override { return name_; }
  const Fp32Components& components() const { return comps_; }
  const ref::Model& model() const { return model_; }

  // BlockImplementation: block `layer` on streams x [T, hc·d] (rounded to float on entry), trace
  // points as float values widened to double. `model` must have this port's config.
  ref::Mat run_block(const ref::Model& model, std::int64_t layer, const ref::Mat& x,
                     std::span<const std::int64_t> tokens, ref::LayerTrace& trace) const override;

  // The full forward with the reference's request semantics (model.hpp ForwardRequest):
  // chained from the embedding, or each traced layer fed `teacher`'s layers.{i}.block.in and the
  // head fed its last block.out. Trace names per trace.hpp ("embed", "layers.{i}.*",
  // "hc_head.out", "norm.out", "logits"). Returns the logits [T, vocab] when the range reaches
  // the last layer (empty otherwise).
  ref::Mat forward(std::span<const std::int64_t> tokens, const ref::ForwardRequest& request = {},
                   ref::Trace* trace = nullptr) const;

  // The prepared float weights of main layer i.
  const F32LayerWeights& layer_weights(std::int64_t i) const;

 private:
  struct Head {
    std::vector<float> norm;
    F32HcParams hc_head;
    F32Mat head;  // [vocab, d]
  };
  F32Mat block(std::int64_t layer, const F32Mat& x, std::span<const std::int64_t> tokens,
               ref::LayerTrace* trace) const;
  F32Mat attention(const F32LayerWeights& w, const F32Mat& xa, ref::LayerTrace* trace) const;
  F32Mat moe(const F32LayerWeights& w, const F32Mat& z, std::span<const std::int64_t> tokens,
             ref::LayerTrace* trace) const;
  F32Mat embed(std::span<const std::int64_t> tokens) const;
  F32Mat logits(const F32Mat& streams, ref::Trace* trace) const;
  const Head& head() const;

  ref::Model model_;
  Fp32Components comps_;
  std::string name_;
  mutable std::mutex mu_;
  mutable std::vector<std::shared_ptr<const F32LayerWeights>> layers_;
  mutable std::shared_ptr<const Head> head_;
};

// Prepares layer i of `model` through the table's dequant components (see the file comment).
F32LayerWeights prepare_layer_f32(const ref::Model& model, std::int64_t i, const Fp32Components& c);

// ------------------------------------------------------------------ the component runner

// The port's version of runner component `component` (components.cpp names: rms_norm, rope,
// hadamard, sinkhorn, hc_pre, hc_post, hc_head, q_path, kv_path, key_window, sink_attention,
// attention_core, derotate, grouped_out_proj, compressor, indexer_compressor, index_query,
// index_scores, router, hash_router, expert, dequant_fp8, dequant_fp4),
// computed through `components`:
// exact-mode semantics (Error for a case in another precision mode). ConfigError for a
// component the port does not map.
ComponentFn fp32_port_component(Fp32Components components, std::string_view component);
// The runner components fp32_port_component maps.
const std::vector<std::string>& fp32_port_component_names();
// The whole port as a runner implementation (path "fp32"): supports every mapped component's
// exact-mode cases.
std::shared_ptr<const Implementation> fp32_port_implementation(
    Fp32Components components = default_fp32_components(), std::string name = "fp32-port");

}  // namespace v4ref::compare
