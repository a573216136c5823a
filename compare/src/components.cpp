// The runner's components (runner.hpp): input generators, calls into the fp64 reference, the
// fp32 ports (baseline_fp32.cpp) and the case table.
//
// Tensor names per component (inputs -> outputs; [1, n] for vectors):
//   rms_norm      x [T, n] bf16, weight [1, n] bf16 -> out [T, n]
//   rope          x [T, H·Dh] bf16, positions [T, 1] -> out [T, H·Dh]
//                 (last r dims of every head; the config's table, YaRN when dim yarn = 1)
//   hadamard      x [T, k·n] bf16 -> out [T, k·n]
//   sinkhorn      z [B, n·n] fp32 (row-major n x n logits) -> out [B, n·n]
//   hc_pre        x [T, hc·d] bf16, fn [mix, hc·d], base [1, mix], scale [1, 3] fp32
//                 -> u [T, d], pre [T, hc], post [T, hc], comb [T, hc²]
//   hc_post       f [T, d] bf16, x [T, hc·d] bf16, post [T, hc], comb [T, hc²] fp32
//                 -> out [T, hc·d]
//   hc_head       x [T, hc·d] bf16, fn [hc, hc·d], base [1, hc], scale [1, 1] fp32 -> out [T, d]
//   q_path        x [T, d] bf16, wq_a [L_q, d] fp8_block128, q_norm [1, L_q] bf16,
//                 wq_b [H·D, L_q] fp8_block128, positions [T, 1] -> c [T, L_q], q [T, H·D]
//                 (L_q, H, D of the config; per-head unweighted norm, then RoPE on the last r dims
//                 of every head at positions[i]; YaRN table when dim yarn = 1)
//   kv_path       x [T, d] bf16, wkv [D, d] fp8_block128, kv_norm [1, D] bf16, positions [T, 1]
//                 -> kv [T, D]  (RoPE on the last r dims; Q8 of dims [0, D − r) in blocks of 64
//                 under kv_window_q8_64; YaRN table when dim yarn = 1)
//   key_window    positions [T, 1] -> first [T, 1], keys [T, n_win]
//                 (window of query position t: max(0, t − n_win + 1) .. t with n_win the config's
//                 window_size; keys = its positions in increasing order, −1 padding)
//   sink_attention
//                 q [B, H·D] bf16, keys [n, D] bf16, sink [1, H] fp32 -> out [B, H·D]
//                 (every query attends to all n keys, scale D^-1/2; n = 0: output 0)
//   attention_core
//                 q [Tq, H·D] bf16, kv [q_start + Tq, D] bf16 (row s = position s), compressed
//                 [N, D] bf16, selected [Tq, K] index, sink [1, H] fp32 -> out [Tq, H·D]
//                 (H, D, n_win of the config; query i at position t = q_start + i attends to the
//                 kv rows max(0, t − n_win + 1) .. t, then to the selected entries, −1 trailing
//                 padding skipped; every selected j < ⌊(t+1)/4⌋, the entries visible to t at
//                 m = 4, as the indexer guarantees; output before de-rotation)
//   attention_fp8 q [Tq, H·D] bf16, kv [q_start + Tq, D], compressed [N, D] (the values of FP8
//                 cache rows: nope dims Q8(·;64), rope bf16), selected [Tq, K] index, sink [1, H]
//                 -> out [Tq, H·D], lse [Tq, H]  (attention_core's rule and the natural log of
//                 its softmax denominator, sink included; dim hca = 1: selected is every entry
//                 visible at m = 128; dim sink_shift adds to every sink)
//   derotate      o [T, H·D] bf16, positions [T, 1] -> out [T, H·D]
//                 (H, D of the config; last r dims of every head rotated by −t·ω; YaRN table when
//                 dim yarn = 1)
//   grouped_out_proj
//                 o [T, H·D] bf16, wo_a [G·R_o, H·D/G], wo_b [d, G·R_o] fp8_block128 -> out [T, d]
//                 (heads in G contiguous groups; wo_a used dequantised with no Q8 on its input,
//                 §15.7; wo_b's input Q8 under act_q8)
//   compressor, indexer_compressor
//                 x [T, d] bf16, wkv, wgate [c·w, d] bf16, ape [m, c·w] fp32, norm [1, w] bf16
//                 -> entries [T/m, w]
//   index_query   c [T, L_q] bf16, x [T, d] bf16, wq_b [H_I·D_I, L_q] fp8_block128,
//                 weights_proj [H_I, d] bf16, positions [T, 1] -> q [T, H_I·D_I], weights [T, H_I]
//                 (compress table; RoPE on the last r dims of every head, Hadamard per head, Q4
//                 under idx_q_q4_32; weights scaled by D_I^-1/2 H_I^-1/2)
//   index_scores  q [T, H·D] bf16, weights [T, H] bf16, keys [N, D] bf16, positions [T, 1]
//                 -> scores [T, N] (−∞ invisible), topk_idx [T, K]
//   index_logits  q [T, H·128] (Q4 values), weights [T, H] bf16, keys [N, 128] (Q4 values, fmt 0;
//                 e4m3 × fp32 row scale, fmt 1), positions [T, 1] -> logits [T, N] (−∞ invisible)
//                 (exact in every mode: the inputs are the stored formats; kernels accumulate fp32)
//   topk          scores [T, N] fp32, positions [T, 1] -> topk_idx [T, K] (the set of the
//                 min(K, #non-NaN visible) largest, ties to the lower index, ascending, −1 padding)
//   indexer_decode
//                 q [B·n, H·128], weights [B·n, H], keys [B·N, 128] (request b's entries in rows
//                 bN .. bN + N − 1), positions [B·n, 1] (row i belongs to request i / n)
//                 -> topk_idx [B·n, K] (as topk, over the request's exact logits)
//   router        z [T, d] bf16, gate [E, d] bf16, bias [1, E] fp32
//                 -> scores [T, E], routed_idx [T, k], route_weights [T, k]
//   hash_router   z [T, d] bf16, gate [E, d] bf16, tokens [T, 1], tid2eid [V, k] (V = vocab)
//                 -> scores [T, E], routed_idx [T, k], route_weights [T, k]
//   expert        z [n, d] bf16, w1, w3 [I, d], w2 [d, I] fp4_block32, row_weight [n, 1] fp32
//                 -> out [n, d]
//   dequant_fp8   codes [R, C] e4m3 codes, scales [⌈R/128⌉, ⌈C/128⌉] ue8m0 bytes -> out [R, C]
//   dequant_fp4   codes [R, C] e2m1 codes, scales [R, C/32] ue8m0 bytes -> out [R, C]
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <span>

#include "v4ref/compare/baseline_fp32.hpp"
#include "v4ref/compare/runner.hpp"
#include "v4ref/ref/attention.hpp"
#include "v4ref/ref/compressor.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/hadamard.hpp"
#include "v4ref/ref/indexer.hpp"
#include "v4ref/ref/mhc.hpp"
#include "v4ref/ref/moe.hpp"
#include "v4ref/ref/norm.hpp"
#include "v4ref/ref/rope.hpp"

namespace v4ref::compare {

namespace {

using ref::Vec;

// ------------------------------------------------------------------ generator helpers

Rng rng_for(const Case& c, std::string_view tensor, std::int64_t rows, std::int64_t cols) {
  return Rng(c.tensor_seed(tensor, {rows, cols}));
}

Mat normal(const Case& c, std::string_view tensor, std::int64_t rows, std::int64_t cols,
           double sigma = 1.0, double mean = 0.0) {
  Rng rng = rng_for(c, tensor, rows, cols);
  Mat m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = rng.normal(mean, sigma);
  return m;
}

Mat to_bf16(Mat m) {
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = fmt::round_bf16(m.data()[i]);
  return m;
}
Mat to_fp32(Mat m) {
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = fmt::round_fp32(m.data()[i]);
  return m;
}

Mat bf16_normal(const Case& c, std::string_view tensor, std::int64_t rows, std::int64_t cols,
                double sigma = 1.0, double mean = 0.0) {
  return to_bf16(normal(c, tensor, rows, cols, sigma, mean));
}

// Outlier channels (guide §7): max(1, 0.1% of the columns) columns scaled by `factor`.
void outlier_channels(const Case& c, std::string_view tensor, Mat& m, double factor = 100.0) {
  Rng rng = rng_for(c, std::string(tensor) + ".outliers", m.rows(), m.cols());
  const std::int64_t n = std::max<std::int64_t>(1, m.cols() / 1000);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto col = static_cast<Eigen::Index>(rng.below(static_cast<std::uint64_t>(m.cols())));
    m.col(col) *= factor;
  }
  m = to_bf16(m);
}

Mat positions_mat(const std::vector<std::int64_t>& p) {
  Mat m(static_cast<Eigen::Index>(p.size()), 1);
  for (std::size_t i = 0; i < p.size(); ++i)
    m(static_cast<Eigen::Index>(i), 0) = static_cast<double>(p[i]);
  return m;
}

std::vector<std::int64_t> positions_of(const Mat& m) {
  std::vector<std::int64_t> p(static_cast<std::size_t>(m.rows()));
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    p[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(m(i, 0));
  return p;
}

Vec row_vec(const Mat& m) { return Eigen::Map<const Vec>(m.data(), m.size()); }

const char* dtype_if(const PrecisionPolicy& pol, QuantPoint p) {
  return pol.on(p) ? "bf16" : "f64";
}

ref::RopeTable table_of(const ModelConfig& cfg, bool yarn) {
  return ref::make_rope_table(yarn ? cfg.compress_rope_theta : cfg.rope_theta, yarn, cfg.yarn,
                              cfg.rope_head_dim, cfg.max_position_embeddings);
}

ref::LinearWeight linear(const std::string& name, const Mat& w, ref::WeightStorage storage,
                         bool act_q8) {
  ref::LinearWeight lw;
  lw.name = name;
  lw.w = w;
  lw.storage = storage;
  lw.act_q8 = act_q8;
  return lw;
}

// Weights stored as fp4 e2m1 codes with one ue8m0 scale per 32 columns: [rows, cols] values with
// rms about `sigma`. format_extremes adds blocks of ±6 codes, all-zero blocks and extreme scales.
Mat fp4_weight(const Case& c, std::string_view tensor, std::int64_t rows, std::int64_t cols,
               double sigma) {
  Rng rng = rng_for(c, tensor, rows, cols);
  // rms of the 16 e2m1 values is about 3.2; pick the power-of-two scale that brings it to sigma.
  const int e0 = static_cast<int>(std::lround(std::log2(sigma / 3.2)));
  const bool extremes = c.kind == InputKind::kFormatExtremes;
  Mat w(rows, cols);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t b = 0; b < cols; b += 32) {
      int e = e0;
      int style = 0;  // 0 random codes, 1 all ±6, 2 all zero
      if (extremes) {
        const std::uint64_t r = rng.below(16);
        style = r == 0 ? 1 : (r == 1 ? 2 : 0);
        if (r == 2) e = e0 - 12;  // tiny block
      }
      for (std::int64_t j = b; j < std::min(cols, b + 32); ++j) {
        std::uint8_t code = static_cast<std::uint8_t>(rng.below(16));
        if (style == 1) code = static_cast<std::uint8_t>(0x7 | (rng.below(2) << 3));
        if (style == 2) code = 0;
        w(i, j) = fmt::e2m1_to_double(code) * std::ldexp(1.0, e);
      }
    }
  return w;
}

// Weights stored as e4m3 values with one ue8m0 scale per 128x128 block (§1.5): N(0, sigma²)
// values rounded to e4m3 under a block scale 2^e, e drawn from three exponents around
// log2(sigma) − 4 (values up to about 2^6 · 2^e, inside e4m3's ±448).
Mat fp8_weight(const Case& c, std::string_view tensor, std::int64_t rows, std::int64_t cols,
               double sigma) {
  Rng rng = rng_for(c, tensor, rows, cols);
  const int e0 = static_cast<int>(std::lround(std::log2(sigma))) - 4;
  const std::int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
  std::vector<int> e(static_cast<std::size_t>(br * bc));
  for (int& v : e) v = e0 - 1 + static_cast<int>(rng.below(3));
  Mat w(rows, cols);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) {
      const double sc = std::ldexp(1.0, e[static_cast<std::size_t>((i / 128) * bc + j / 128)]);
      w(i, j) = fmt::round_e4m3(rng.normal(0.0, sigma) / sc) * sc;
    }
  return w;
}

// ------------------------------------------------------------------ components

ComponentSpec rms_norm_spec() {
  ComponentSpec s;
  s.name = "rms_norm";
  s.summary = "weighted RMSNorm per row (v4-forward.md §2.1)";
  s.inputs = {"x", "weight"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers, InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig&) {
    const std::int64_t T = c.dim("T"), n = c.dim("n");
    Mat x = bf16_normal(c, "x", T, n);
    if (c.kind == InputKind::kOutliers) outlier_channels(c, "x", x);
    if (c.kind == InputKind::kFormatExtremes)  // rows far below and above unit scale
      for (std::int64_t t = 0; t < T; ++t) x.row(t) *= std::ldexp(1.0, t % 2 == 0 ? -60 : 40);
    TensorSet in;
    in.put("x", to_bf16(x), "bf16");
    in.put("weight", bf16_normal(c, "weight", 1, n, 0.1, 1.0), "bf16");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    TensorSet out;
    out.put(
        "out",
        ref::rms_norm(k.inputs.at("x"), row_vec(k.inputs.at("weight")), k.cfg.norm_eps, k.policy),
        dtype_if(k.policy, QuantPoint::kBf16Norm));
    return out;
  };
  s.baseline_fp32 = fp32::rms_norm;
  return s;
}

// Positions of a rotation case (rope, derotate): a prefill chunk p0 .. p0 + T − 1, or, for
// format_extremes, the last valid position first and the rest uniform over the valid range.
std::vector<std::int64_t> rotation_positions(const Case& c, const ModelConfig& cfg) {
  const std::int64_t T = c.dim("T");
  std::vector<std::int64_t> pos = ref::position_range(c.dim("p0"), T);
  if (c.kind != InputKind::kFormatExtremes) return pos;
  Rng rng = rng_for(c, "positions", T, 1);
  for (std::int64_t t = 0; t < T; ++t)
    pos[static_cast<std::size_t>(t)] =
        t == 0 ? cfg.max_position_embeddings - 1
               : static_cast<std::int64_t>(
                     rng.below(static_cast<std::uint64_t>(cfg.max_position_embeddings)));
  return pos;
}

ComponentSpec rope_spec() {
  ComponentSpec s;
  s.name = "rope";
  s.summary = "interleaved RoPE on the last r dims of every head (§2.3, §5.1)";
  s.inputs = {"x", "positions"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t T = c.dim("T"), H = c.dim("H"), Dh = c.dim("Dh");
    TensorSet in;
    in.put("x", bf16_normal(c, "x", T, H * Dh), "bf16");
    in.put("positions", positions_mat(rotation_positions(c, cfg)), "i64");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    Mat x = k.inputs.at("x");
    const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
    ref::apply_rope_heads_inplace(x, k.c.dim("H"), k.c.dim("Dh"), pos,
                                  table_of(k.cfg, k.c.dim("yarn") != 0), k.policy);
    TensorSet out;
    out.put("out", std::move(x), dtype_if(k.policy, QuantPoint::kBf16Rope));
    return out;
  };
  s.baseline_fp32 = fp32::rope;
  return s;
}

ComponentSpec hadamard_spec() {
  ComponentSpec s;
  s.name = "hadamard";
  s.summary = "Walsh-Hadamard rotation of every block of n columns (§2.4)";
  s.inputs = {"x"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers};
  s.make_inputs = [](const Case& c, const ModelConfig&) {
    Mat x = bf16_normal(c, "x", c.dim("T"), c.dim("k") * c.dim("n"));
    if (c.kind == InputKind::kOutliers) outlier_channels(c, "x", x);
    TensorSet in;
    in.put("x", std::move(x), "bf16");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const Mat& x = k.inputs.at("x");
    const std::int64_t n = k.c.dim("n");
    Mat m(x.rows(), x.cols());  // M = n^{-1/2} Σ|x| over the block (every output of the block)
    for (Eigen::Index t = 0; t < x.rows(); ++t)
      for (Eigen::Index b = 0; b < x.cols(); b += n)
        m.row(t).segment(b, n).setConstant(x.row(t).segment(b, n).cwiseAbs().sum() /
                                           std::sqrt(static_cast<double>(n)));
    TensorSet out;
    out.put("out", ref::hadamard_blocks(x, n));
    out.put("out.abs_bound", std::move(m));
    return out;
  };
  s.baseline_fp32 = fp32::hadamard;
  s.n_eff = [](const Case& c, const ModelConfig&, std::string_view) {
    return std::log2(static_cast<double>(c.dim("n"))) + 1.0;
  };
  return s;
}

ComponentSpec sinkhorn_spec() {
  ComponentSpec s;
  s.name = "sinkhorn";
  s.summary = "Sinkhorn-Knopp on hc x hc mixing logits (§4.3)";
  s.inputs = {"z"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers};
  s.make_inputs = [](const Case& c, const ModelConfig&) {
    const std::int64_t n = c.dim("n");
    // outliers: logits of scale 8 make the matrix nearly a permutation (exp underflow regime).
    TensorSet in;
    in.put("z",
           to_fp32(normal(c, "z", c.dim("B"), n * n, c.kind == InputKind::kOutliers ? 8.0 : 1.0)),
           "f32");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const Mat& z = k.inputs.at("z");
    const std::int64_t n = k.c.dim("n");
    Mat out(z.rows(), z.cols());
    for (Eigen::Index b = 0; b < z.rows(); ++b) {
      const Mat zb = Eigen::Map<const Mat>(z.row(b).data(), n, n);
      const Mat m = ref::sinkhorn(zb, k.c.dim("iters"), k.cfg.hc_eps);
      out.row(b) = Eigen::Map<const Eigen::RowVectorXd>(m.data(), n * n);
    }
    TensorSet o;
    o.put("out", std::move(out));
    return o;
  };
  s.baseline_fp32 = fp32::sinkhorn;
  return s;
}

ref::HcParams hc_params(const TensorSet& in) {
  ref::HcParams p;
  p.name = "case.hc";
  p.fn = in.at("fn");
  p.base = row_vec(in.at("base"));
  p.scale = row_vec(in.at("scale"));
  return p;
}

ComponentSpec hc_pre_spec() {
  ComponentSpec s;
  s.name = "hc_pre";
  s.summary = "mHC pre: mixing logits, pre/post/comb coefficients, collapse (§4.1-4.4)";
  s.inputs = {"x", "fn", "base", "scale"};
  s.outputs = {"u", "pre", "post", "comb"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t T = c.dim("T"), dc = cfg.hc_dim(), mix = cfg.hc_mix_dim();
    Mat x = bf16_normal(c, "x", T, dc);
    if (c.kind == InputKind::kOutliers) outlier_channels(c, "x", x);
    TensorSet in;
    in.put("x", std::move(x), "bf16");
    in.put("fn", to_fp32(normal(c, "fn", mix, dc, 1.0 / std::sqrt(static_cast<double>(dc)))),
           "f32");
    Mat base = to_fp32(normal(c, "base", 1, mix, 0.5));
    Rng rng = rng_for(c, "scale", 1, 3);
    Mat scale(1, 3);
    for (int i = 0; i < 3; ++i) scale(0, i) = fmt::round_fp32(rng.uniform(0.5, 2.0));
    if (c.kind == InputKind::kOutliers) {
      // Saturated comb logits (base ±8, s2 = 30): softmax rows near one-hot, so Sinkhorn is still
      // moving at its last iterations and the iteration count and order are visible (§4.3).
      const std::int64_t hc = cfg.hc_mult, comb0 = 2 * hc;
      for (std::int64_t i = comb0; i < comb0 + hc * hc; ++i) base(0, i) = (i % 3 == 0) ? 8.0 : -8.0;
      scale(0, 2) = 30.0;
    }
    in.put("base", std::move(base), "f32");
    in.put("scale", std::move(scale), "f32");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const ref::HcPreResult r = ref::hc_pre(k.inputs.at("x"), hc_params(k.inputs), k.cfg, k.policy);
    const std::int64_t hc = k.cfg.hc_mult, T = r.u.rows();
    Mat pre(T, hc), post(T, hc), comb(T, hc * hc);
    for (std::int64_t t = 0; t < T; ++t) {
      const ref::HcMix& m = r.mix[static_cast<std::size_t>(t)];
      pre.row(t) = m.pre.transpose();
      post.row(t) = m.post.transpose();
      for (std::int64_t j = 0; j < hc; ++j)
        for (std::int64_t i = 0; i < hc; ++i) comb(t, j * hc + i) = m.comb(j, i);
    }
    TensorSet out;
    out.put("u", r.u, dtype_if(k.policy, QuantPoint::kBf16Residual));
    out.put("pre", std::move(pre));
    out.put("post", std::move(post));
    out.put("comb", std::move(comb));
    return out;
  };
  s.baseline_fp32 = fp32::hc_pre;
  return s;
}

ComponentSpec hc_post_spec() {
  ComponentSpec s;
  s.name = "hc_post";
  s.summary = "mHC post: X_new[k] = post_k f + sum_j C[j][k] X[j] (§4.4)";
  s.inputs = {"f", "x", "post", "comb"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t T = c.dim("T"), hc = cfg.hc_mult;
    TensorSet in;
    in.put("f", bf16_normal(c, "f", T, cfg.dim), "bf16");
    in.put("x", bf16_normal(c, "x", T, cfg.hc_dim()), "bf16");
    Rng rng = rng_for(c, "coefficients", T, hc);
    Mat post(T, hc), comb(T, hc * hc);
    for (Eigen::Index i = 0; i < post.size(); ++i)
      post.data()[i] = fmt::round_fp32(rng.uniform(0.0, 2.0));
    for (Eigen::Index i = 0; i < comb.size(); ++i)
      comb.data()[i] = fmt::round_fp32(rng.uniform(0.0, 2.0 / static_cast<double>(hc)));
    in.put("post", std::move(post), "f32");
    in.put("comb", std::move(comb), "f32");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const std::int64_t hc = k.cfg.hc_mult;
    const Mat& post = k.inputs.at("post");
    const Mat& comb = k.inputs.at("comb");
    std::vector<ref::HcMix> mix(static_cast<std::size_t>(post.rows()));
    for (Eigen::Index t = 0; t < post.rows(); ++t) {
      ref::HcMix& m = mix[static_cast<std::size_t>(t)];
      m.pre = Vec::Ones(hc);  // unused by hc_post
      m.post = post.row(t).transpose();
      m.comb = Eigen::Map<const Mat>(comb.row(t).data(), hc, hc);
    }
    TensorSet out;
    out.put("out", ref::hc_post(k.inputs.at("f"), k.inputs.at("x"), mix, hc, k.policy),
            dtype_if(k.policy, QuantPoint::kBf16Residual));
    return out;
  };
  s.baseline_fp32 = fp32::hc_post;
  return s;
}

ComponentSpec hc_head_spec() {
  ComponentSpec s;
  s.name = "hc_head";
  s.summary = "mHC final collapse: y = sum_k (sigmoid(s0 mu_k + b_k) + hc_eps) X[k] (§4.5)";
  s.inputs = {"x", "fn", "base", "scale"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t T = c.dim("T"), dc = cfg.hc_dim(), hc = cfg.hc_mult;
    Mat x = bf16_normal(c, "x", T, dc);
    if (c.kind == InputKind::kOutliers) outlier_channels(c, "x", x);
    Rng rng = rng_for(c, "scale", 1, 1);
    Mat scale(1, 1);
    scale(0, 0) = fmt::round_fp32(rng.uniform(0.5, 2.0));
    TensorSet in;
    in.put("x", std::move(x), "bf16");
    in.put("fn", to_fp32(normal(c, "fn", hc, dc, 1.0 / std::sqrt(static_cast<double>(dc)))), "f32");
    in.put("base", to_fp32(normal(c, "base", 1, hc, 0.5)), "f32");
    in.put("scale", std::move(scale), "f32");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    ref::HcHeadParams p;
    p.name = "case.hc_head";
    p.fn = k.inputs.at("fn");
    p.base = row_vec(k.inputs.at("base"));
    p.scale = row_vec(k.inputs.at("scale"));
    TensorSet out;
    out.put("out", ref::hc_head(k.inputs.at("x"), p, k.cfg, k.policy),
            dtype_if(k.policy, QuantPoint::kBf16Residual));
    return out;
  };
  s.baseline_fp32 = fp32::hc_head;
  return s;
}

// The attention weights of the query and K=V paths as a checkpoint holds them (§1.4): wq_a, wq_b
// and wkv fp8 (Q8 on their input under act_q8, §2.5 item 1), q_norm and kv_norm bf16. Only the
// members the path reads are set.
ref::AttentionWeights attention_path_weights(const TensorSet& in) {
  ref::AttentionWeights w;
  w.prefix = "case.attn";
  if (in.has("wq_a"))
    w.wq_a = linear("case.attn.wq_a", in.at("wq_a"), ref::WeightStorage::kFp8, true);
  if (in.has("q_norm")) w.q_norm = row_vec(in.at("q_norm"));
  if (in.has("wq_b"))
    w.wq_b = linear("case.attn.wq_b", in.at("wq_b"), ref::WeightStorage::kFp8, true);
  if (in.has("wkv")) w.wkv = linear("case.attn.wkv", in.at("wkv"), ref::WeightStorage::kFp8, true);
  if (in.has("kv_norm")) w.kv_norm = row_vec(in.at("kv_norm"));
  return w;
}

// The attention input x [T, d] of the query and K=V paths (the attn_norm output, §5): bf16 N(0, 1);
// outliers: 0.1% of the channels x100.
Mat attention_input(const Case& c, const ModelConfig& cfg, std::string_view tensor = "x") {
  Mat x = bf16_normal(c, tensor, c.dim("T"), cfg.dim);
  if (c.kind == InputKind::kOutliers) outlier_channels(c, tensor, x);
  return x;
}

ComponentSpec q_path_spec() {
  ComponentSpec s;
  s.name = "q_path";
  s.summary =
      "attention query path: c = RMSNorm_q_norm(W_qa x), q = per-head N(W_qb c) with RoPE on the "
      "last r dims of every head (§5.1)";
  s.inputs = {"x", "wq_a", "q_norm", "wq_b", "positions"};
  s.outputs = {"c", "q"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t d = cfg.dim, lq = cfg.q_lora_rank;
    TensorSet in;
    in.put("x", attention_input(c, cfg), "bf16");
    in.put("wq_a", fp8_weight(c, "wq_a", lq, d, 1.0 / std::sqrt(static_cast<double>(d))),
           "fp8_block128");
    in.put("q_norm", bf16_normal(c, "q_norm", 1, lq, 0.1, 1.0), "bf16");
    in.put("wq_b", fp8_weight(c, "wq_b", cfg.q_dim(), lq, 1.0 / std::sqrt(static_cast<double>(lq))),
           "fp8_block128");
    in.put("positions", positions_mat(ref::position_range(c.dim("p0"), c.dim("T"))), "i64");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
    ref::QueryPath qp =
        ref::attention_query(k.inputs.at("x"), attention_path_weights(k.inputs), k.cfg,
                             table_of(k.cfg, k.c.dim("yarn") != 0), pos, k.policy);
    TensorSet out;
    out.put("c", std::move(qp.c), dtype_if(k.policy, QuantPoint::kBf16Norm));
    // nope dims: the bf16 head norm (kBf16QHeadNorm); rope dims: the bf16 rotation (kBf16Rope).
    out.put("q", std::move(qp.q), dtype_if(k.policy, QuantPoint::kBf16Rope));
    return out;
  };
  s.baseline_fp32 = fp32::q_path;
  return s;
}

ComponentSpec kv_path_spec() {
  ComponentSpec s;
  s.name = "kv_path";
  s.summary =
      "attention K=V path: k = RMSNorm_kv_norm(W_kv x), RoPE on the last r dims, [QAT] Q8 on "
      "the nope dims in blocks of 64 (§5.2, §2.5 item 2)";
  s.inputs = {"x", "wkv", "kv_norm", "positions"};
  s.outputs = {"kv"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t d = cfg.dim, D = cfg.head_dim;
    TensorSet in;
    in.put("x", attention_input(c, cfg), "bf16");
    in.put("wkv", fp8_weight(c, "wkv", D, d, 1.0 / std::sqrt(static_cast<double>(d))),
           "fp8_block128");
    in.put("kv_norm", bf16_normal(c, "kv_norm", 1, D, 0.1, 1.0), "bf16");
    in.put("positions", positions_mat(ref::position_range(c.dim("p0"), c.dim("T"))), "i64");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
    // attention_kv ends with kv_nope_q8_inplace (kKvWindowQ8), exactly as the layer forward
    // computes the window KV (layer.cpp, model.cpp): the K=V tensor is produced quantised.
    TensorSet out;
    out.put("kv",
            ref::attention_kv(k.inputs.at("x"), attention_path_weights(k.inputs), k.cfg,
                              table_of(k.cfg, k.c.dim("yarn") != 0), pos, k.policy),
            dtype_if(k.policy, QuantPoint::kBf16Rope));
    return out;
  };
  s.baseline_fp32 = fp32::kv_path;
  return s;
}

// Query positions for the window: a prefill chunk p0 .. p0 + T − 1 (random), or the boundary
// positions of §5.3 (format_extremes): 0, 1, n_win − 2 .. n_win + 1 (the first full window is at
// t = n_win − 1), the last two valid positions, the rest uniform over the valid range.
std::vector<std::int64_t> window_positions(const Case& c, const ModelConfig& cfg) {
  const std::int64_t T = c.dim("T"), n_win = cfg.window_size;
  std::vector<std::int64_t> pos = ref::position_range(c.dim("p0"), T);
  if (c.kind != InputKind::kFormatExtremes) return pos;
  const std::int64_t last = cfg.max_position_embeddings - 1;
  const std::vector<std::int64_t> edges = {0,     1,         n_win - 2, n_win - 1,
                                           n_win, n_win + 1, last - 1,  last};
  Rng rng = rng_for(c, "positions", T, 1);
  for (std::int64_t t = 0; t < T; ++t)
    pos[static_cast<std::size_t>(t)] =
        t < static_cast<std::int64_t>(edges.size())
            ? edges[static_cast<std::size_t>(t)]
            : static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(last + 1)));
  return pos;
}

ComponentSpec key_window_spec() {
  ComponentSpec s;
  s.name = "key_window";
  s.summary = "window part of the key set of query t: positions max(0, t - n_win + 1) .. t (§5.3)";
  s.inputs = {"positions"};
  s.outputs = {"first", "keys"};
  s.kinds = {InputKind::kRandom, InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    TensorSet in;
    in.put("positions", positions_mat(window_positions(c, cfg)), "i64");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
    const std::int64_t T = static_cast<std::int64_t>(pos.size()), n_win = k.cfg.window_size;
    Mat first(T, 1);
    Mat keys = Mat::Constant(T, n_win, -1.0);  // [T, n_win], −1 padding
    for (std::int64_t t = 0; t < T; ++t) {
      const ref::WindowRange w = ref::window_range(pos[static_cast<std::size_t>(t)], n_win);
      first(t, 0) = static_cast<double>(w.first);
      for (std::int64_t i = 0; i < w.size(); ++i) keys(t, i) = static_cast<double>(w.first + i);
    }
    TensorSet out;
    out.put("first", std::move(first), "i64");
    out.put("keys", std::move(keys), "index");
    return out;
  };
  s.baseline_fp32 = fp32::key_window;
  return s;
}

ComponentSpec sink_attention_spec() {
  ComponentSpec s;
  s.name = "sink_attention";
  s.summary = "softmax attention with a per-head sink in the denominator (§5.4)";
  s.inputs = {"q", "keys", "sink"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers, InputKind::kAllMasked};
  s.make_inputs = [](const Case& c, const ModelConfig&) {
    const std::int64_t B = c.dim("B"), H = c.dim("H"), D = c.dim("D");
    const std::int64_t n = c.kind == InputKind::kAllMasked ? 0 : c.dim("n");
    // Logits q·k/sqrt(D) ~ N(0, sigma_q²): sigma 1 is a soft softmax, 8 (outliers) a sharp one.
    TensorSet in;
    in.put("q", bf16_normal(c, "q", B, H * D, c.kind == InputKind::kOutliers ? 8.0 : 1.0), "bf16");
    in.put("keys", bf16_normal(c, "keys", n, D), "bf16");
    in.put("sink", to_fp32(normal(c, "sink", 1, H)), "f32");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const Mat& q = k.inputs.at("q");
    const std::int64_t H = k.c.dim("H"), D = k.c.dim("D");
    const Vec sink = row_vec(k.inputs.at("sink"));
    Mat o(q.rows(), q.cols());
    for (Eigen::Index b = 0; b < q.rows(); ++b) {
      const Mat qh = Eigen::Map<const Mat>(q.row(b).data(), H, D);
      const Mat oh = ref::sink_attention(qh, k.inputs.at("keys"), sink,
                                         1.0 / std::sqrt(static_cast<double>(D)), k.policy);
      o.row(b) = Eigen::Map<const Eigen::RowVectorXd>(oh.data(), H * D);
    }
    TensorSet out;
    out.put("out", std::move(o), dtype_if(k.policy, QuantPoint::kBf16AttnOut));
    return out;
  };
  s.baseline_fp32 = fp32::sink_attention;
  return s;
}

ComponentSpec derotate_spec() {
  ComponentSpec s;
  s.name = "derotate";
  s.summary = "attention output de-rotation: last r dims of every head rotated by -t*omega (§5.5)";
  s.inputs = {"o", "positions"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    TensorSet in;
    in.put("o", bf16_normal(c, "o", c.dim("T"), cfg.n_heads * cfg.head_dim), "bf16");
    in.put("positions", positions_mat(rotation_positions(c, cfg)), "i64");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
    TensorSet out;
    out.put("out",
            ref::derotate_output(k.inputs.at("o"), k.cfg, table_of(k.cfg, k.c.dim("yarn") != 0),
                                 pos, k.policy),
            dtype_if(k.policy, QuantPoint::kBf16Rope));
    return out;
  };
  s.baseline_fp32 = fp32::derotate;
  return s;
}

ref::CompressorWeights compressor_weights(const ComponentCall& k, bool indexer) {
  ref::CompressorWeights w;
  w.prefix = "case.compressor.";
  w.kind = indexer ? ref::CompressorKind::kIndexer : ref::CompressorKind::kMain;
  w.ratio = static_cast<int>(k.c.dim("m"));
  w.width = k.inputs.at("norm").cols();
  w.wkv = linear("case.compressor.wkv", k.inputs.at("wkv"), ref::WeightStorage::kBf16, false);
  w.wgate = linear("case.compressor.wgate", k.inputs.at("wgate"), ref::WeightStorage::kBf16, false);
  w.ape = k.inputs.at("ape");
  w.norm = row_vec(k.inputs.at("norm"));
  return w;
}

std::string entries_dtype(const PrecisionPolicy& policy, bool indexer) {
  return policy.on(QuantPoint::kBf16Rope) && !indexer ? "bf16" : "f64";
}

ComponentSpec compressor_spec(bool indexer) {
  ComponentSpec s;
  s.name = indexer ? "indexer_compressor" : "compressor";
  s.summary = indexer ? "indexer key compressor: pooling, RMSNorm, RoPE, Hadamard, Q4 (§6, §7.1)"
                      : "main KV compressor: pooling, RMSNorm, RoPE, Q8 (§6.1-6.3)";
  s.inputs = {"x", "wkv", "wgate", "ape", "norm"};
  s.outputs = {"entries"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers};
  s.make_inputs = [indexer](const Case& c, const ModelConfig& cfg) {
    const std::int64_t T = c.dim("T"), m = c.dim("m"), d = cfg.dim;
    const std::int64_t w = indexer ? cfg.index_head_dim : cfg.head_dim, cw = (m == 4 ? 2 : 1) * w;
    const double sd = 1.0 / std::sqrt(static_cast<double>(d));
    Mat x = bf16_normal(c, "x", T, d);
    if (c.kind == InputKind::kOutliers) outlier_channels(c, "x", x);
    TensorSet in;
    in.put("x", std::move(x), "bf16");
    in.put("wkv", bf16_normal(c, "wkv", cw, d, sd), "bf16");
    in.put("wgate", bf16_normal(c, "wgate", cw, d, sd), "bf16");
    in.put("ape", to_fp32(normal(c, "ape", m, cw, 0.5)), "f32");
    in.put("norm", bf16_normal(c, "norm", 1, w, 0.1, 1.0), "bf16");
    return in;
  };
  s.reference = [indexer](const ComponentCall& k) {
    TensorSet out;
    out.put("entries",
            ref::compress_prefill(k.inputs.at("x"), compressor_weights(k, indexer),
                                  table_of(k.cfg, true), k.cfg.norm_eps, k.policy),
            entries_dtype(k.policy, indexer));
    return out;
  };
  s.baseline_fp32 = fp32::compressor;
  return s;
}

// The same compressor through the decode state machine (§11.2): the prefill hand-off after the
// first p tokens, then one decode step per token p..T−1. Outputs the entries those steps
// complete, j = ⌊p/m⌋ .. ⌊T/m⌋ − 1 (the first one pools rows the hand-off carried over when p is
// not a multiple of m, and for CSA the previous block's rows). Decode computes each entry from
// the same rows as prefill, so the baseline is the fp32 prefill port's rows j >= ⌊p/m⌋.
ComponentSpec compressor_decode_spec(bool indexer) {
  ComponentSpec s = compressor_spec(indexer);
  s.name = indexer ? "indexer_compressor_decode" : "compressor_decode";
  s.summary = indexer ? "indexer key compressor by prefill hand-off + decode steps (§11.2, §7.1)"
                      : "main KV compressor by prefill hand-off + decode steps (§11.2, §6)";
  s.reference = [indexer](const ComponentCall& k) {
    const ref::CompressorWeights w = compressor_weights(k, indexer);
    const ref::RopeTable table = table_of(k.cfg, true);
    const Mat& x = k.inputs.at("x");
    const std::int64_t T = x.rows(), p = k.c.dim("p"), m = k.c.dim("m");
    if (p < 0 || p > T)
      throw ConfigError("case " + k.c.name() + ": prefill split p = " + std::to_string(p) +
                        " outside [0, T = " + std::to_string(T) + "]");
    ref::CompressorPrefill pre =
        ref::compress_prefill_with_state(x.topRows(p), w, table, k.cfg.norm_eps, k.policy);
    Mat entries(T / m - p / m, w.width);
    Eigen::Index n = 0;
    for (std::int64_t t = p; t < T; ++t) {
      const std::optional<ref::Vec> e = ref::compress_decode_step(
          Mat(x.row(t)), t, pre.state, w, table, k.cfg.norm_eps, k.policy);
      if (e) entries.row(n++) = e->transpose();
    }
    TensorSet out;
    out.put("entries", std::move(entries), entries_dtype(k.policy, indexer));
    return out;
  };
  s.baseline_fp32 = [indexer](const ComponentCall& k) {
    Case prefill = k.c;
    prefill.component = indexer ? "indexer_compressor" : "compressor";
    const TensorSet all = fp32::compressor({prefill, k.cfg, k.policy, k.inputs});
    const Mat& e = all.at("entries");
    const std::int64_t first = k.c.dim("p") / k.c.dim("m");
    if (first < 0 || first > e.rows())
      throw ConfigError("case " + k.c.name() + ": prefill split p = " + std::to_string(k.c.dim("p")) +
                        " outside the sequence");
    TensorSet out;
    out.put("entries", Mat(e.bottomRows(e.rows() - first)), all.dtype("entries"));
    return out;
  };
  return s;
}

// The lightning indexer's query side (§7.2): index queries from the query latent c and head
// weights from the attention input x. wq_b fp8 (Q8 on its input under act_q8), weights_proj bf16
// (no Q8, §2.5 item 1); the RoPE table is the layer's compress table (the indexer exists in CSA
// layers only, §2.3).
ComponentSpec index_query_spec() {
  ComponentSpec s;
  s.name = "index_query";
  s.summary =
      "lightning-indexer queries W_Iqb c with RoPE on the last r dims of every head, Had per "
      "head, [QAT] Q4; head weights (W_wp x) D_I^-1/2 H_I^-1/2 (§7.2)";
  s.inputs = {"c", "x", "wq_b", "weights_proj", "positions"};
  s.outputs = {"q", "weights"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t T = c.dim("T"), d = cfg.dim, lq = cfg.q_lora_rank;
    // c is an RMSNorm output (§5.1): bf16 values of rms about 1, with outlier channels as x has.
    Mat cl = bf16_normal(c, "c", T, lq);
    if (c.kind == InputKind::kOutliers) outlier_channels(c, "c", cl);
    TensorSet in;
    in.put("c", std::move(cl), "bf16");
    in.put("x", attention_input(c, cfg), "bf16");
    in.put("wq_b",
           fp8_weight(c, "wq_b", cfg.index_q_dim(), lq, 1.0 / std::sqrt(static_cast<double>(lq))),
           "fp8_block128");
    in.put("weights_proj",
           bf16_normal(c, "weights_proj", cfg.index_n_heads, d,
                       1.0 / std::sqrt(static_cast<double>(d))),
           "bf16");
    in.put("positions", positions_mat(ref::position_range(c.dim("p0"), T)), "i64");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    ref::IndexerWeights w;
    w.prefix = "case.attn.indexer.";
    w.n_heads = k.cfg.index_n_heads;
    w.head_dim = k.cfg.index_head_dim;
    w.wq_b = linear("case.attn.indexer.wq_b", k.inputs.at("wq_b"), ref::WeightStorage::kFp8, true);
    w.weights_proj = linear("case.attn.indexer.weights_proj", k.inputs.at("weights_proj"),
                            ref::WeightStorage::kBf16, false);
    const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
    TensorSet out;
    // Under official the Hadamard output is rounded to bf16 (kBf16Hadamard) before Q4, and Q4
    // values are bf16-exact: the queries are bf16.
    out.put("q", ref::index_queries(k.inputs.at("c"), pos, w, table_of(k.cfg, true), k.policy),
            dtype_if(k.policy, QuantPoint::kBf16Hadamard));
    out.put("weights", ref::index_head_weights(k.inputs.at("x"), w, k.policy),
            dtype_if(k.policy, QuantPoint::kBf16IndexScore));
    return out;
  };
  s.baseline_fp32 = fp32::index_query;
  return s;
}

ComponentSpec index_scores_spec() {
  ComponentSpec s;
  s.name = "index_scores";
  s.summary = "lightning-indexer scores and the top-k selection (§7.3, guide §9)";
  s.inputs = {"q", "weights", "keys", "positions"};
  s.outputs = {"scores", "topk_idx"};
  s.kinds = {InputKind::kRandom, InputKind::kTopkTies, InputKind::kAllMasked};
  s.make_inputs = [](const Case& c, const ModelConfig&) {
    const std::int64_t T = c.dim("T"), H = c.dim("H"), D = c.dim("D");
    const std::int64_t p0 = c.kind == InputKind::kAllMasked ? 0 : c.dim("p0");
    const std::int64_t N = (p0 + T) / 4;
    Mat keys = bf16_normal(c, "keys", N, D);
    Mat wi = bf16_normal(c, "weights", T, H, 1.0 / std::sqrt(static_cast<double>(H * D)));
    if (c.kind == InputKind::kTopkTies) {
      for (std::int64_t j = 1; j < N; j += 3) keys.row(j) = keys.row(j - 1);  // duplicated keys
      wi.row(0).setZero();  // every score of query 0 is exactly 0: the tie rule decides alone
    }
    TensorSet in;
    in.put("q", bf16_normal(c, "q", T, H * D), "bf16");
    in.put("weights", std::move(wi), "bf16");
    in.put("keys", std::move(keys), "bf16");
    in.put("positions", positions_mat(ref::position_range(p0, T)), "i64");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
    const std::int64_t H = k.c.dim("H"), D = k.c.dim("D"), K = k.c.dim("K");
    Mat scores = ref::index_scores(k.inputs.at("q"), k.inputs.at("weights"), k.inputs.at("keys"),
                                   pos, H, D, k.policy);
    Mat topk = Mat::Constant(scores.rows(), K, -1.0);
    for (Eigen::Index t = 0; t < scores.rows(); ++t) {
      const std::vector<std::int64_t> sel = ref::index_topk(
          std::span<const double>(scores.row(t).data(), static_cast<std::size_t>(scores.cols())),
          pos[static_cast<std::size_t>(t)], K);
      for (std::size_t i = 0; i < sel.size(); ++i)
        topk(t, static_cast<Eigen::Index>(i)) = static_cast<double>(sel[i]);
    }
    TensorSet out;
    out.put("scores", std::move(scores), dtype_if(k.policy, QuantPoint::kBf16IndexScore));
    out.put("topk_idx", std::move(topk), "index");
    return out;
  };
  s.baseline_fp32 = fp32::index_scores;
  return s;
}

// ---- the indexer kernels' components (cuda/include/v4ref/cuda/indexer_tile.hpp): inputs are the
// stored formats' values, so the logits are exact functions of them in every mode.

// A [rows, 128] matrix of Q4 rows (e2m1 codes × ue8m0 per 32 dims) with scale exponents in
// [e_lo, e_hi]; `saturated`: every code ±6.
Mat q4_rows(Rng& rng, std::int64_t rows, int e_lo, int e_hi, bool saturated) {
  Mat m(rows, 128);
  for (std::int64_t r = 0; r < rows; ++r)
    for (int b = 0; b < 4; ++b) {
      const double scale = std::ldexp(1.0, e_lo + static_cast<int>(rng.below(static_cast<std::uint64_t>(e_hi - e_lo + 1))));
      for (int k = 32 * b; k < 32 * b + 32; ++k) {
        const auto code = static_cast<std::uint8_t>(saturated ? (7 | (rng.below(2) << 3)) : rng.below(16));
        m(r, k) = fmt::e2m1_to_double(code) * scale;
      }
    }
  return m;
}

// [rows, 128] FP8 key rows: e4m3 codes with the row's largest magnitude at 448 (the amax code of
// a per-row fp32 scale), times an fp32 scale 2^(e)·(1 + u).
Mat fp8_rows(Rng& rng, std::int64_t rows, int e) {
  Mat m(rows, 128);
  for (std::int64_t r = 0; r < rows; ++r) {
    const double scale = fmt::round_fp32(std::ldexp(1.0 + rng.uniform(), e));
    const auto amax_at = static_cast<Eigen::Index>(rng.below(128));
    for (Eigen::Index k = 0; k < 128; ++k) {
      std::uint8_t code = static_cast<std::uint8_t>(rng.below(256));
      while ((code & 0x7F) >= 0x7E) code = static_cast<std::uint8_t>(rng.below(256));  // no NaN, no 448
      if (k == amax_at) code = static_cast<std::uint8_t>(0x7E | (rng.below(2) << 7));
      m(r, k) = static_cast<double>(fmt::e4m3_to_float(code)) * scale;
    }
  }
  return m;
}

// The indexer kernels' inputs for `rows` query rows and `entries` keys: Q4 queries, bf16 head
// weights, FP4 (fmt = 0) or FP8 (fmt = 1) keys. Kinds: topk_ties duplicates every third key and
// zeroes the weights of row 0 (every score of that row is exactly 0); format_extremes puts query
// scales at 2^40..2^44 and key scales at 2^-60 (fp32 range kept) and saturates every fourth row.
void indexer_kernel_inputs(const Case& c, std::int64_t rows, std::int64_t entries, TensorSet& in) {
  const std::int64_t H = c.dim("H");
  const bool fp8 = c.dim("fmt") == 1;
  const bool extreme = c.kind == InputKind::kFormatExtremes;
  Rng rq = rng_for(c, "q", rows, H * 128), rk = rng_for(c, "keys", entries, 128);
  Mat q(rows, H * 128);
  for (std::int64_t h = 0; h < H; ++h)
    q.middleCols(h * 128, 128) = q4_rows(rq, rows, extreme ? 40 : -3, extreme ? 44 : 3, false);
  Mat keys = fp8 ? fp8_rows(rk, entries, extreme ? -62 : -8)
                 : q4_rows(rk, entries, extreme ? -60 : -3, extreme ? -56 : 3, false);
  if (extreme && !fp8)
    for (std::int64_t j = 0; j < entries; j += 4) keys.row(j) = q4_rows(rk, 1, -60, -60, true);
  Mat wi = bf16_normal(c, "weights", rows, H, 1.0 / std::sqrt(static_cast<double>(H * 128)));
  if (c.kind == InputKind::kTopkTies) {
    for (std::int64_t j = 1; j < entries; j += 3) keys.row(j) = keys.row(j - 1);
    wi.row(0).setZero();
  }
  in.put("q", std::move(q), "f32");
  in.put("weights", std::move(wi), "bf16");
  in.put("keys", std::move(keys), fp8 ? "f64" : "f32");  // e4m3 × fp32 scale: exact in double
}

// Exact logits of rows against keys [N, 128] (−∞ where invisible) and the abs bound of the
// index_logits.logits row, M = Σ_h |w_h| Σ_blocks max_{k in block} |q_k K_k|.
void exact_index_logits(const Mat& q, const Mat& wi, const Mat& keys, const std::vector<std::int64_t>& pos,
                        std::int64_t H, Mat& logits, Mat& bound) {
  const std::int64_t T = q.rows(), N = keys.rows();
  logits = Mat::Constant(T, N, -std::numeric_limits<double>::infinity());
  bound = Mat::Zero(T, N);
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t vis = std::min(N, ref::indexer_visible(pos[static_cast<std::size_t>(t)]));
    for (std::int64_t j = 0; j < vis; ++j) {
      double sum = 0, m = 0;
      for (std::int64_t h = 0; h < H; ++h) {
        double dot = 0, big = 0;  // big: Σ over the 4 blocks of the block's largest |q_k K_k|
        for (Eigen::Index b = 0; b < 4; ++b) {
          double mx = 0;
          for (Eigen::Index k = 32 * b; k < 32 * b + 32; ++k) {
            const double p = q(t, h * 128 + k) * keys(j, k);
            dot += p;
            mx = std::max(mx, std::abs(p));
          }
          big += mx;
        }
        sum += wi(t, h) * std::max(dot, 0.0);
        m += std::abs(wi(t, h)) * big;
      }
      logits(t, j) = sum;
      bound(t, j) = m;
    }
  }
}

// The plain fp32 port of the same logits (the runner's baseline B).
Mat fp32_index_logits(const Mat& q, const Mat& wi, const Mat& keys, const std::vector<std::int64_t>& pos,
                      std::int64_t H) {
  const std::int64_t T = q.rows(), N = keys.rows();
  Mat out = Mat::Constant(T, N, -std::numeric_limits<double>::infinity());
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t vis = std::min(N, ref::indexer_visible(pos[static_cast<std::size_t>(t)]));
    for (std::int64_t j = 0; j < vis; ++j) {
      float sum = 0;
      for (std::int64_t h = 0; h < H; ++h) {
        float dot = 0;
        for (Eigen::Index k = 0; k < 128; ++k)
          dot += static_cast<float>(q(t, h * 128 + k)) * static_cast<float>(keys(j, k));
        sum += static_cast<float>(wi(t, h)) * std::max(dot, 0.0f);
      }
      out(t, j) = static_cast<double>(sum);
    }
  }
  return out;
}

// n_eff of index_logits.logits (the row's reason): FP8 keys 33 (one truncated MMA block sum),
// FP4 keys (H + 6)·32/2^12 (exact block sums; the fp32 tail alone).
double index_logits_n_eff(const Case& c, const ModelConfig&, std::string_view) {
  return c.dim("fmt") == 1 ? 33.0 : static_cast<double>(c.dim("H") + 6) * 32.0 / 4096.0;
}

ComponentSpec index_logits_spec() {
  ComponentSpec s;
  s.name = "index_logits";
  s.summary = "lightning-indexer logits of a prefill chunk from the stored Q4/FP8 values (§7.3; "
              "fp32 kernels, no bf16 stores)";
  s.inputs = {"q", "weights", "keys", "positions"};
  s.outputs = {"logits"};
  s.kinds = {InputKind::kRandom, InputKind::kTopkTies, InputKind::kAllMasked,
             InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig&) {
    const std::int64_t T = c.dim("T");
    const std::int64_t p0 = c.kind == InputKind::kAllMasked ? 0 : c.dim("p0");
    TensorSet in;
    indexer_kernel_inputs(c, T, std::max<std::int64_t>((p0 + T) / 4, 1), in);
    in.put("positions", positions_mat(ref::position_range(p0, T)), "i64");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    Mat logits, bound;
    exact_index_logits(k.inputs.at("q"), k.inputs.at("weights"), k.inputs.at("keys"),
                       positions_of(k.inputs.at("positions")), k.c.dim("H"), logits, bound);
    TensorSet out;
    out.put("logits", std::move(logits), "f32");
    out.put("logits.abs_bound", std::move(bound));
    return out;
  };
  s.baseline_fp32 = [](const ComponentCall& k) {
    TensorSet out;
    out.put("logits", fp32_index_logits(k.inputs.at("q"), k.inputs.at("weights"), k.inputs.at("keys"),
                                        positions_of(k.inputs.at("positions")), k.c.dim("H")),
            "f32");
    return out;
  };
  s.n_eff = index_logits_n_eff;
  return s;
}

// The selection rule of verification.md §9 in the kernels' output form: the set in ascending
// index order, −1 padding.
Mat topk_ascending(const Mat& scores, const std::vector<std::int64_t>& visible, std::int64_t K) {
  Mat out = Mat::Constant(scores.rows(), K, -1.0);
  for (Eigen::Index t = 0; t < scores.rows(); ++t) {
    std::vector<std::int64_t> sel = ref::select_topk(
        std::span<const double>(scores.row(t).data(), static_cast<std::size_t>(visible[static_cast<std::size_t>(t)])),
        K);
    std::sort(sel.begin(), sel.end());
    for (std::size_t i = 0; i < sel.size(); ++i) out(t, static_cast<Eigen::Index>(i)) = static_cast<double>(sel[i]);
  }
  return out;
}

ComponentSpec topk_spec() {
  ComponentSpec s;
  s.name = "topk";
  s.summary = "the indexer's top-k of fp32 scores over the visible prefix: the set, ties to the "
              "lower index, NaN never, −1 padding, ascending (guide §9)";
  s.inputs = {"scores", "positions"};
  s.outputs = {"topk_idx"};
  s.kinds = {InputKind::kRandom, InputKind::kTopkTies, InputKind::kAllMasked,
             InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig&) {
    const std::int64_t T = c.dim("T"), p0 = c.kind == InputKind::kAllMasked ? 0 : c.dim("p0");
    const std::int64_t N = std::max<std::int64_t>((p0 + T) / 4, 1);
    Mat sc = to_fp32(normal(c, "scores", T, N));
    Rng rng = rng_for(c, "scores.kind", T, N);
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t j = 0; j < N; ++j) {
        if (c.kind == InputKind::kTopkTies) sc(t, j) = std::round(sc(t, j) * 2) / 2;  // few values
        if (c.kind == InputKind::kTopkTies && t % 3 == 0) sc(t, j) = j % 2 ? -0.0 : 0.0;  // all equal (±0)
        if (c.kind == InputKind::kFormatExtremes) {
          const double specials[] = {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                                     std::numeric_limits<double>::quiet_NaN(), -0.0, 0.0, 0x1p-149, -0x1p-149,
                                     0x1.fffffep127, -0x1.fffffep127};
          if (rng.below(4) == 0) sc(t, j) = specials[rng.below(9)];
        }
      }
    TensorSet in;
    in.put("scores", std::move(sc), "f32");
    in.put("positions", positions_mat(ref::position_range(p0, T)), "i64");
    return in;
  };
  const auto select = [](const ComponentCall& k) {
    const Mat& sc = k.inputs.at("scores");
    const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
    std::vector<std::int64_t> vis(pos.size());
    for (std::size_t i = 0; i < pos.size(); ++i) vis[i] = std::min<std::int64_t>(sc.cols(), ref::indexer_visible(pos[i]));
    TensorSet out;
    out.put("topk_idx", topk_ascending(sc, vis, k.c.dim("K")), "index");
    return out;
  };
  s.reference = select;
  s.baseline_fp32 = select;  // no arithmetic: the rule alone
  return s;
}

// indexer_decode: request b's rows [b·n, (b+1)·n) against its keys [b·N, (b+1)·N), exact (and the
// abs bound) or the fp32 port.
void decode_logits(const ComponentCall& k, bool exact, Mat& logits, Mat& bound) {
  const std::int64_t B = k.c.dim("B"), n = k.c.dim("next_n"), N = k.c.dim("N"), H = k.c.dim("H");
  const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
  logits.resize(B * n, N);
  bound.resize(exact ? B * n : 0, exact ? N : 0);
  for (std::int64_t b = 0; b < B; ++b) {
    const Mat q = k.inputs.at("q").middleRows(b * n, n), w = k.inputs.at("weights").middleRows(b * n, n);
    const Mat keys = k.inputs.at("keys").middleRows(b * N, N);
    const std::vector<std::int64_t> p(pos.begin() + b * n, pos.begin() + (b + 1) * n);
    if (exact) {
      Mat lb, mb;
      exact_index_logits(q, w, keys, p, H, lb, mb);
      logits.middleRows(b * n, n) = lb;
      bound.middleRows(b * n, n) = mb;
    } else {
      logits.middleRows(b * n, n) = fp32_index_logits(q, w, keys, p, H);
    }
  }
}

// min(N, ⌊(t+1)/4⌋) of every query row of an indexer_decode case.
std::vector<std::int64_t> decode_visible(const ComponentCall& k) {
  const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
  std::vector<std::int64_t> vis(pos.size());
  for (std::size_t i = 0; i < pos.size(); ++i) vis[i] = std::min<std::int64_t>(k.c.dim("N"), ref::indexer_visible(pos[i]));
  return vis;
}

ComponentSpec indexer_decode_spec() {
  ComponentSpec s;
  s.name = "indexer_decode";
  s.summary = "batched paged decode of the indexer: B requests x next_n query rows, each against "
              "its own N keys; the top-k set only (§7.3, §11.3 step 2)";
  s.inputs = {"q", "weights", "keys", "positions"};
  s.outputs = {"topk_idx"};
  s.kinds = {InputKind::kRandom, InputKind::kTopkTies, InputKind::kAllMasked,
             InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig&) {
    const std::int64_t B = c.dim("B"), n = c.dim("next_n"), N = c.dim("N");
    // Request b's first query position: spread so the visible counts differ (and, for
    // all_masked, the first tokens of a sequence: positions 0..n−1 for request 0).
    std::vector<std::int64_t> pos;
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t last = c.kind == InputKind::kAllMasked && b == 0 ? n - 1 : 4 * N - 1 - 37 * b % (2 * N);
      for (std::int64_t i = 0; i < n; ++i) pos.push_back(std::max<std::int64_t>(0, last - (n - 1) + i));
    }
    TensorSet in;
    indexer_kernel_inputs(c, B * n, B * N, in);
    in.put("positions", positions_mat(pos), "i64");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    Mat logits, bound;
    decode_logits(k, true, logits, bound);
    TensorSet out;
    out.put("topk_idx", topk_ascending(logits, decode_visible(k), k.c.dim("K")), "index");
    out.put("logits", std::move(logits), "f32");
    out.put("logits.abs_bound", std::move(bound));
    return out;
  };
  s.baseline_fp32 = [](const ComponentCall& k) {
    Mat logits, unused;
    decode_logits(k, false, logits, unused);
    TensorSet out;
    out.put("topk_idx", topk_ascending(logits, decode_visible(k), k.c.dim("K")), "index");
    return out;
  };
  s.n_eff = index_logits_n_eff;
  return s;
}

ComponentSpec router_spec() {
  ComponentSpec s;
  s.name = "router";
  s.summary = "MoE router: sqrt(softplus) scores, biased top-k, normalised weights (§9.1)";
  s.inputs = {"z", "gate", "bias"};
  s.outputs = {"scores", "routed_idx", "route_weights"};
  s.kinds = {InputKind::kRandom, InputKind::kTopkTies};
  s.align_by = {{"route_weights", "routed_idx"}};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t T = c.dim("T"), E = c.dim("E"), d = cfg.dim;
    Mat gate = bf16_normal(c, "gate", E, d, 1.0 / std::sqrt(static_cast<double>(d)));
    Mat bias = to_fp32(normal(c, "bias", 1, E, 0.1));
    if (c.kind == InputKind::kTopkTies) {  // experts 0 and 1 identical: equal selection scores
      gate.row(1) = gate.row(0);
      bias(0, 1) = bias(0, 0);
    }
    TensorSet in;
    in.put("z", bf16_normal(c, "z", T, d), "bf16");
    in.put("gate", std::move(gate), "bf16");
    in.put("bias", std::move(bias), "f32");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const Mat& gate = k.inputs.at("gate");
    ref::MoeWeights w;
    w.prefix = "case.ffn.";
    w.dim = gate.cols();
    w.n_experts = gate.rows();
    w.n_activated = k.c.dim("k");
    w.route_scale = k.cfg.route_scale;
    w.gate = linear("case.ffn.gate", gate, ref::WeightStorage::kBf16, false);
    w.bias = row_vec(k.inputs.at("bias"));
    const ref::Routing r = ref::route(k.inputs.at("z"), {}, w);
    Mat sel = r.scores;
    for (Eigen::Index t = 0; t < sel.rows(); ++t) sel.row(t) += k.inputs.at("bias");
    TensorSet out;
    out.put("scores", r.scores);
    out.put("routed_idx", r.experts.cast<double>(), "index");
    out.put("route_weights", r.weights);
    out.put("selection_scores", std::move(sel));
    return out;
  };
  s.baseline_fp32 = fp32::router;
  return s;
}

// k distinct experts drawn from [lo, E) by a partial Fisher–Yates shuffle.
std::vector<std::int64_t> distinct_experts(Rng& rng, std::int64_t lo, std::int64_t E,
                                           std::int64_t k) {
  std::vector<std::int64_t> perm(static_cast<std::size_t>(E - lo));
  std::iota(perm.begin(), perm.end(), lo);
  for (std::int64_t i = 0; i < k; ++i) {
    const auto j = i + static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(E - lo - i)));
    std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
  }
  perm.resize(static_cast<std::size_t>(k));
  return perm;
}

// tid2eid [V, k] (V = vocab): k distinct experts per token id (§9.1 hash layers). topk_ties:
// every row holds exactly one of the experts 0 and 1 (whose gate rows are identical), so only
// the table decides between two equal scores; format_extremes: the first and last rows hold
// the range ends 0 and E − 1.
Mat tid2eid_table(const Case& c, std::int64_t V, std::int64_t E, std::int64_t k) {
  Rng rng = rng_for(c, "tid2eid", V, k);
  Mat t(V, k);
  for (std::int64_t v = 0; v < V; ++v) {
    std::vector<std::int64_t> row;
    if (c.kind == InputKind::kTopkTies) {
      row.push_back(static_cast<std::int64_t>(rng.below(2)));
      const std::vector<std::int64_t> rest = distinct_experts(rng, 2, E, k - 1);
      row.insert(row.end(), rest.begin(), rest.end());
    } else {
      row = distinct_experts(rng, 0, E, k);
    }
    if (c.kind == InputKind::kFormatExtremes && (v == 0 || v == V - 1)) {
      std::iota(row.begin(), row.end(), 0);
      row.back() = E - 1;
    }
    for (std::int64_t i = 0; i < k; ++i)
      t(v, i) = static_cast<double>(row[static_cast<std::size_t>(i)]);
  }
  return t;
}

ComponentSpec hash_router_spec() {
  ComponentSpec s;
  s.name = "hash_router";
  s.summary = "hash-routed MoE router: S = tid2eid[token id], unbiased normalised weights (§9.1)";
  s.inputs = {"z", "gate", "tokens", "tid2eid"};
  s.outputs = {"scores", "routed_idx", "route_weights"};
  s.kinds = {InputKind::kRandom, InputKind::kTopkTies, InputKind::kFormatExtremes};
  s.align_by = {{"route_weights", "routed_idx"}};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t T = c.dim("T"), E = c.dim("E"), k = c.dim("k"), d = cfg.dim;
    const std::int64_t V = cfg.vocab_size;
    Mat gate = bf16_normal(c, "gate", E, d, 1.0 / std::sqrt(static_cast<double>(d)));
    if (c.kind == InputKind::kTopkTies) gate.row(1) = gate.row(0);  // equal scores s_0 = s_1
    // Token ids: uniform over the vocabulary; topk_ties repeats three ids (equal rows of the
    // table at different positions); format_extremes puts ids 0 and V − 1 first.
    Rng rng = rng_for(c, "tokens", T, 1);
    Mat tokens(T, 1);
    for (std::int64_t t = 0; t < T; ++t) {
      std::int64_t id = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(V)));
      if (c.kind == InputKind::kTopkTies) id = static_cast<std::int64_t>(rng.below(3)) * (V / 3);
      if (c.kind == InputKind::kFormatExtremes && t < 2) id = t == 0 ? 0 : V - 1;
      tokens(t, 0) = static_cast<double>(id);
    }
    TensorSet in;
    in.put("z", bf16_normal(c, "z", T, d), "bf16");
    in.put("gate", std::move(gate), "bf16");
    in.put("tokens", std::move(tokens), "i64");
    in.put("tid2eid", tid2eid_table(c, V, E, k), "i64");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const Mat& gate = k.inputs.at("gate");
    const Mat& table = k.inputs.at("tid2eid");
    ref::MoeWeights w;
    w.prefix = "case.ffn.";
    w.dim = gate.cols();
    w.n_experts = gate.rows();
    w.n_activated = k.c.dim("k");
    w.vocab_size = table.rows();
    w.route_scale = k.cfg.route_scale;
    w.gate = linear("case.ffn.gate", gate, ref::WeightStorage::kBf16, false);
    w.hash_routed = true;
    w.tid2eid = table.cast<std::int64_t>();
    const std::vector<std::int64_t> tokens = positions_of(k.inputs.at("tokens"));
    const ref::Routing r = ref::route(k.inputs.at("z"), tokens, w);
    // Selection scores of the set comparison: the indicator of S (1 in S, 0 elsewhere).
    Mat sel = Mat::Zero(r.scores.rows(), r.scores.cols());
    for (Eigen::Index t = 0; t < r.experts.rows(); ++t)
      for (Eigen::Index i = 0; i < r.experts.cols(); ++i) sel(t, r.experts(t, i)) = 1.0;
    TensorSet out;
    out.put("scores", r.scores);
    out.put("routed_idx", r.experts.cast<double>(), "index");
    out.put("route_weights", r.weights);
    out.put("selection_scores", std::move(sel));
    return out;
  };
  s.baseline_fp32 = fp32::hash_router;
  return s;
}

// The selection lists of attention_core [Tq, K] (−1 trailing padding): for query position t only
// entries j < V_t = min(N, ⌊(t+1)/4⌋) (the ones visible at m = 4, §6.4), distinct, in random
// order. random / outliers: min(K, V_t) entries (rows with V_t < K padded); all_masked: every row
// all padding (window-only attention); format_extremes: the count cycles over all K (rows full
// when V_t >= K), none, one and a random count, each non-empty row holding the boundary entries
// V_t − 1 and (from two entries on) 0.
Mat selection_lists(const Case& c, std::int64_t q_start, std::int64_t Tq, std::int64_t N,
                    std::int64_t K) {
  Rng rng = rng_for(c, "selected", Tq, K);
  Mat sel = Mat::Constant(Tq, K, -1.0);
  for (std::int64_t i = 0; i < Tq; ++i) {
    const std::int64_t V = std::min(N, ref::visible_entries(q_start + i, 4));
    const std::int64_t full = std::min(K, V);
    std::int64_t n = full;
    if (c.kind == InputKind::kAllMasked) n = 0;
    if (c.kind == InputKind::kFormatExtremes) {
      const std::int64_t r = i % 4;
      n = r == 0 ? full
                 : (r == 1 ? 0
                           : (r == 2 ? std::min<std::int64_t>(1, full)
                                     : static_cast<std::int64_t>(
                                           rng.below(static_cast<std::uint64_t>(full + 1)))));
    }
    if (n == 0) continue;
    std::vector<std::int64_t> row = distinct_experts(rng, 0, V, n);
    if (c.kind == InputKind::kFormatExtremes) {
      const auto put_first = [&row](std::int64_t j, std::size_t at) {
        const auto it = std::find(row.begin(), row.end(), j);
        if (it != row.end()) std::iter_swap(it, row.begin() + static_cast<std::ptrdiff_t>(at));
        else row[at] = j;
      };
      put_first(V - 1, 0);
      if (n >= 2) put_first(0, 1);
    }
    for (std::int64_t j = 0; j < n; ++j) sel(i, j) = static_cast<double>(row[static_cast<std::size_t>(j)]);
  }
  return sel;
}

ComponentSpec attention_core_spec() {
  ComponentSpec s;
  s.name = "attention_core";
  s.summary =
      "core attention of a chunk: window max(0, t-n_win+1)..t plus selected compressed entries, "
      "one softmax with the sink (§5.3, §5.4)";
  s.inputs = {"q", "kv", "compressed", "selected", "sink"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers, InputKind::kAllMasked,
             InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t Tq = c.dim("Tq"), q0 = c.dim("q_start"), N = c.dim("N"), K = c.dim("K");
    const std::int64_t H = cfg.n_heads, D = cfg.head_dim;
    // Logits q·k/sqrt(D) ~ N(0, sigma_q²): sigma 1 a soft softmax, 8 (outliers) a sharp one.
    TensorSet in;
    in.put("q", bf16_normal(c, "q", Tq, H * D, c.kind == InputKind::kOutliers ? 8.0 : 1.0),
           "bf16");
    in.put("kv", bf16_normal(c, "kv", q0 + Tq, D), "bf16");
    in.put("compressed", bf16_normal(c, "compressed", N, D), "bf16");
    in.put("selected", selection_lists(c, q0, Tq, N, K), "index");
    in.put("sink", to_fp32(normal(c, "sink", 1, H)), "f32");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const Mat& sel = k.inputs.at("selected");
    std::vector<std::vector<std::int64_t>> lists(static_cast<std::size_t>(sel.rows()));
    for (Eigen::Index i = 0; i < sel.rows(); ++i)
      for (Eigen::Index j = 0; j < sel.cols(); ++j)
        lists[static_cast<std::size_t>(i)].push_back(static_cast<std::int64_t>(sel(i, j)));
    TensorSet out;
    out.put("out",
            ref::attention_core(k.inputs.at("q"), k.inputs.at("kv"), k.inputs.at("compressed"),
                                lists, row_vec(k.inputs.at("sink")), k.c.dim("q_start"), k.cfg,
                                k.policy),
            dtype_if(k.policy, QuantPoint::kBf16AttnOut));
    return out;
  };
  s.baseline_fp32 = fp32::attention_core;
  return s;
}

// ---- attention_fp8: attention_core over the values the 584-byte cache rows hold

// The lists of attention_fp8: CSA (hca 0) as attention_core's; HCA (hca 1) every entry visible at
// m = 128, j < min(N, ⌊(t+1)/128⌋), in order, −1 padding to N columns.
Mat attention_fp8_lists(const Case& c, std::int64_t q_start, std::int64_t Tq, std::int64_t N, std::int64_t K) {
  if (c.dim_or("hca", 0) == 0) return selection_lists(c, q_start, Tq, N, K);
  Mat sel = Mat::Constant(Tq, std::max<std::int64_t>(N, 1), -1.0);
  for (std::int64_t i = 0; i < Tq; ++i) {
    const std::int64_t V = std::min(N, ref::visible_entries(q_start + i, 128));
    for (std::int64_t j = 0; j < V; ++j) sel(i, j) = static_cast<double>(j);
  }
  return sel;
}

std::vector<std::vector<std::int64_t>> lists_of(const Mat& sel) {
  std::vector<std::vector<std::int64_t>> lists(static_cast<std::size_t>(sel.rows()));
  for (Eigen::Index i = 0; i < sel.rows(); ++i)
    for (Eigen::Index j = 0; j < sel.cols(); ++j)
      lists[static_cast<std::size_t>(i)].push_back(static_cast<std::int64_t>(sel(i, j)));
  return lists;
}

// Cache-row values [n, D]: bf16 normal, then Q8(·; 64) on the nope dims (the stored e4m3 × ue8m0
// values, §2.5 items 2–3); format_extremes puts ±448·2^k (the top e4m3 code) at the start of
// every nope block, k in [−12, 6].
Mat cache_row_values(const Case& c, std::string_view tensor, std::int64_t n, const ModelConfig& cfg) {
  Mat v = bf16_normal(c, tensor, n, cfg.head_dim);
  if (c.kind == InputKind::kFormatExtremes) {
    Rng rng = rng_for(c, std::string(tensor) + ".edge", n, cfg.head_dim);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t b = 0; b + 64 <= cfg.head_dim - cfg.rope_head_dim; b += 64) {
        const int k = static_cast<int>(rng.below(19)) - 12;
        v(i, b) = (rng.below(2) == 0 ? 448.0 : -448.0) * std::ldexp(1.0, k);
      }
  }
  ref::kv_nope_q8_inplace(v, cfg.rope_head_dim, PrecisionPolicy::official());
  return v;
}

// The abs-bound tensors of attention_fp8 (the tolerance rows' M, derived in kAttentionFp8Out/Lse
// of tolerance_table.cpp): for query i, head h, with p̂_s = e^{ℓ_s − lse} and
// A_s = Σ_k |q_k κ_k| / sqrt(D),
//   out  M = Σ_s p̂_s [|κ_{s,d}| (1 + 2^-5 + 2^-7 A_s) + |o_d| (2^-5 + 2^-7 A_s)]
//   lse  M = 1 + |lse| + Σ_s p̂_s A_s
void attention_fp8_bounds(const Mat& q, const Mat& kv, const Mat& cmp, const std::vector<std::vector<std::int64_t>>& lists,
                          const Mat& lse, std::int64_t q_start, const ModelConfig& cfg, Mat& out_b, Mat& lse_b) {
  const std::int64_t H = cfg.n_heads, D = cfg.head_dim, Tq = q.rows();
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  out_b = Mat::Zero(Tq, H * D);
  lse_b = Mat::Zero(Tq, H);
  for (std::int64_t i = 0; i < Tq; ++i) {
    const std::int64_t t = q_start + i;
    std::vector<Eigen::RowVectorXd> rows;
    for (std::int64_t s = std::max<std::int64_t>(0, t - cfg.window_size + 1); s <= t; ++s) rows.emplace_back(kv.row(s));
    for (const std::int64_t j : lists[static_cast<std::size_t>(i)])
      if (j != -1) rows.emplace_back(cmp.row(j));
    for (std::int64_t h = 0; h < H; ++h) {
      const Eigen::RowVectorXd qh = q.row(i).segment(h * D, D);
      Eigen::RowVectorXd o = Eigen::RowVectorXd::Zero(D), acc = Eigen::RowVectorXd::Zero(D);
      std::vector<double> p(rows.size()), A(rows.size());
      double pa = 0;
      for (std::size_t s = 0; s < rows.size(); ++s) {
        p[s] = std::exp(qh.dot(rows[s]) * scale - lse(i, h));
        A[s] = (qh.cwiseAbs().cwiseProduct(rows[s].cwiseAbs())).sum() * scale;
        o += p[s] * rows[s];
        pa += p[s] * A[s];
      }
      for (std::size_t s = 0; s < rows.size(); ++s)
        acc += p[s] * ((1.0 + 0x1p-5 + 0x1p-7 * A[s]) * rows[s].cwiseAbs() + (0x1p-5 + 0x1p-7 * A[s]) * o.cwiseAbs());
      out_b.row(i).segment(h * D, D) = acc;
      lse_b(i, h) = 1.0 + std::fabs(lse(i, h)) + pa;
    }
  }
}

// n_eff of the attention_fp8 rows (tolerance_table.cpp kAttentionFp8): out 2^16 (P rounded to
// bf16 at the running instead of the global max: two roundings of 2^-9 = 2^16 u32); lse
// N_k + 2·tiles + 262 (fp32 sums over N_k keys, the tiles' rescalings, 258-term logits).
double attention_fp8_n_eff(const Case& c, const ModelConfig&, std::string_view output) {
  if (output == "out") return 65536.0;
  const std::int64_t n_k = 128 + (c.dim_or("hca", 0) != 0 ? c.dim("N") : c.dim("K"));
  return static_cast<double>(n_k + 2 * ((n_k + 31) / 32) + 262);
}

// lse in fp32 (the baseline port's): one global max (of the logits and the sink), fp32 exp sums.
Mat fp32_attention_lse(const Mat& q, const Mat& kv, const Mat& cmp, const std::vector<std::vector<std::int64_t>>& lists,
                       const Vec& sink, std::int64_t q_start, const ModelConfig& cfg) {
  const std::int64_t H = cfg.n_heads, D = cfg.head_dim, Tq = q.rows();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  Mat lse(Tq, H);
  for (std::int64_t i = 0; i < Tq; ++i) {
    const std::int64_t t = q_start + i;
    std::vector<const Mat*> src;
    std::vector<std::int64_t> idx;
    for (std::int64_t s = std::max<std::int64_t>(0, t - cfg.window_size + 1); s <= t; ++s) src.push_back(&kv), idx.push_back(s);
    for (const std::int64_t j : lists[static_cast<std::size_t>(i)])
      if (j != -1) src.push_back(&cmp), idx.push_back(j);
    for (std::int64_t h = 0; h < H; ++h) {
      std::vector<float> l(src.size());
      float mx = -std::numeric_limits<float>::infinity();
      for (std::size_t s = 0; s < src.size(); ++s) {
        float dot = 0;
        for (std::int64_t k = 0; k < D; ++k)
          dot += static_cast<float>(q(i, h * D + k)) * static_cast<float>((*src[s])(idx[s], k));
        l[s] = dot * scale;
        mx = std::max(mx, l[s]);
      }
      mx = std::max(mx, static_cast<float>(sink(h)));  // no overflow when the sink dominates
      float sum = std::exp(static_cast<float>(sink(h)) - mx);
      for (const float x : l) sum += std::exp(x - mx);
      lse(i, h) = static_cast<double>(mx + std::log(sum));
    }
  }
  return lse;
}

ComponentSpec attention_fp8_spec() {
  ComponentSpec s;
  s.name = "attention_fp8";
  s.summary =
      "attention_core over the FP8 cache rows' values (nope Q8(.;64), rope bf16): CSA selections "
      "or HCA (hca = 1: every entry visible at m = 128), plus the fp32 log-sum-exp (§5.3, §5.4, "
      "§11.4)";
  s.inputs = {"q", "kv", "compressed", "selected", "sink"};
  s.outputs = {"out", "lse"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers, InputKind::kAllMasked,
             InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t Tq = c.dim("Tq"), q0 = c.dim("q_start"), N = c.dim("N"), K = c.dim_or("K", 0);
    TensorSet in;
    in.put("q", bf16_normal(c, "q", Tq, cfg.n_heads * cfg.head_dim, c.kind == InputKind::kOutliers ? 8.0 : 1.0),
           "bf16");
    in.put("kv", cache_row_values(c, "kv", q0 + Tq, cfg), "bf16");
    in.put("compressed", cache_row_values(c, "compressed", std::max<std::int64_t>(N, 1), cfg), "bf16");
    in.put("selected", attention_fp8_lists(c, q0, Tq, N, K), "index");
    // sink_shift: +20 makes the sink dominate every denominator, −30 makes it negligible.
    Mat sink = normal(c, "sink", 1, cfg.n_heads);
    sink.array() += static_cast<double>(c.dim_or("sink_shift", 0));
    in.put("sink", to_fp32(std::move(sink)), "f32");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const std::vector<std::vector<std::int64_t>> lists = lists_of(k.inputs.at("selected"));
    const Mat& q = k.inputs.at("q");
    const Vec sink = row_vec(k.inputs.at("sink"));
    const std::int64_t q0 = k.c.dim("q_start");
    Mat lse = ref::attention_lse(q, k.inputs.at("kv"), k.inputs.at("compressed"), lists, sink, q0, k.cfg);
    Mat ob, lb;
    attention_fp8_bounds(q, k.inputs.at("kv"), k.inputs.at("compressed"), lists, lse, q0, k.cfg, ob, lb);
    TensorSet out;
    out.put("out",
            ref::attention_core(q, k.inputs.at("kv"), k.inputs.at("compressed"), lists, sink, q0, k.cfg, k.policy),
            dtype_if(k.policy, QuantPoint::kBf16AttnOut));
    out.put("out.abs_bound", std::move(ob));
    out.put("lse", std::move(lse), "f32");
    out.put("lse.abs_bound", std::move(lb));
    return out;
  };
  s.baseline_fp32 = [](const ComponentCall& k) {
    TensorSet out = fp32::attention_core(k);
    out.put("lse",
            fp32_attention_lse(k.inputs.at("q"), k.inputs.at("kv"), k.inputs.at("compressed"),
                               lists_of(k.inputs.at("selected")), row_vec(k.inputs.at("sink")),
                               k.c.dim("q_start"), k.cfg),
            "f32");
    return out;
  };
  s.n_eff = attention_fp8_n_eff;
  return s;
}

ComponentSpec grouped_out_proj_spec() {
  ComponentSpec s;
  s.name = "grouped_out_proj";
  s.summary =
      "grouped low-rank output projection: heads in G contiguous groups, y_g = W_oa[g] z_g, "
      "a = W_ob concat_g(y_g) (§5.5)";
  s.inputs = {"o", "wo_a", "wo_b"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t T = c.dim("T"), G = cfg.o_groups, ro = cfg.o_lora_rank;
    const std::int64_t gin = cfg.group_in_dim();
    Mat o = bf16_normal(c, "o", T, cfg.q_dim());
    if (c.kind == InputKind::kOutliers) outlier_channels(c, "o", o);
    TensorSet in;
    in.put("o", std::move(o), "bf16");
    in.put("wo_a", fp8_weight(c, "wo_a", G * ro, gin, 1.0 / std::sqrt(static_cast<double>(gin))),
           "fp8_block128");
    in.put("wo_b",
           fp8_weight(c, "wo_b", cfg.dim, G * ro, 1.0 / std::sqrt(static_cast<double>(G * ro))),
           "fp8_block128");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    // As loaded from a checkpoint: both fp8; wo_a dequantised without Q8 on its input (§15.7).
    const ref::LinearWeight wa =
        linear("case.attn.wo_a", k.inputs.at("wo_a"), ref::WeightStorage::kFp8, false);
    const ref::LinearWeight wb =
        linear("case.attn.wo_b", k.inputs.at("wo_b"), ref::WeightStorage::kFp8, true);
    TensorSet out;
    out.put("out", ref::grouped_output_projection(k.inputs.at("o"), wa, wb, k.cfg, k.policy),
            dtype_if(k.policy, QuantPoint::kBf16Linear));
    return out;
  };
  s.baseline_fp32 = fp32::grouped_out_proj;
  return s;
}

ComponentSpec expert_spec() {
  ComponentSpec s;
  s.name = "expert";
  s.summary = "one clamped-SwiGLU expert with fp4 weights and a route weight (§9.2, §9.3)";
  s.inputs = {"z", "w1", "w2", "w3", "row_weight"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kOutliers, InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig& cfg) {
    const std::int64_t n = c.dim("n"), d = cfg.dim, I = c.dim("I");
    Mat z = bf16_normal(c, "z", n, d);
    if (c.kind == InputKind::kOutliers) outlier_channels(c, "z", z);  // drives the SwiGLU clamps
    Rng rng = rng_for(c, "row_weight", n, 1);
    Mat rw(n, 1);
    for (std::int64_t i = 0; i < n; ++i) rw(i, 0) = fmt::round_fp32(rng.uniform(0.05, 1.0));
    TensorSet in;
    in.put("z", std::move(z), "bf16");
    in.put("w1", fp4_weight(c, "w1", I, d, 1.0 / std::sqrt(static_cast<double>(d))), "fp4_block32");
    in.put("w2", fp4_weight(c, "w2", d, I, 1.0 / std::sqrt(static_cast<double>(I))), "fp4_block32");
    in.put("w3", fp4_weight(c, "w3", I, d, 1.0 / std::sqrt(static_cast<double>(d))), "fp4_block32");
    in.put("row_weight", std::move(rw), "f32");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    ref::ExpertWeights ew;
    ew.w1 = linear("case.expert.w1", k.inputs.at("w1"), ref::WeightStorage::kFp4, true);
    ew.w2 = linear("case.expert.w2", k.inputs.at("w2"), ref::WeightStorage::kFp4, true);
    ew.w3 = linear("case.expert.w3", k.inputs.at("w3"), ref::WeightStorage::kFp4, true);
    const Mat& rw = k.inputs.at("row_weight");
    TensorSet out;
    out.put("out",
            ref::expert_forward(
                ew, k.inputs.at("z"), k.cfg.swiglu_limit,
                std::span<const double>(rw.data(), static_cast<std::size_t>(rw.size())), k.policy),
            dtype_if(k.policy, QuantPoint::kBf16Linear));
    return out;
  };
  s.baseline_fp32 = fp32::expert;
  return s;
}

// A TensorView over bytes owned by the caller (no file behind it).
TensorView byte_view(const std::string& name, DType dtype, const Shape& shape,
                     const std::vector<std::uint8_t>& bytes) {
  TensorInfo info;
  info.name = name;
  info.dtype = dtype;
  info.shape = shape;
  info.begin = 0;
  info.end = bytes.size();
  return TensorView(
      nullptr, info,
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
}

std::vector<std::uint8_t> bytes_of(const Mat& m) {
  std::vector<std::uint8_t> b(static_cast<std::size_t>(m.size()));
  for (Eigen::Index i = 0; i < m.size(); ++i)
    b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(m.data()[i]);
  return b;
}

Mat scale_bytes(const Case& c, std::int64_t rows, std::int64_t cols) {
  Rng rng = rng_for(c, "scales", rows, cols);
  Mat s(rows, cols);
  const bool ext = c.kind == InputKind::kFormatExtremes;
  for (Eigen::Index i = 0; i < s.size(); ++i) {
    // Typical weight scales 2^-12 .. 2^-4; extremes 2^-110 and 2^+110 (products stay inside fp32).
    int e = 119 + static_cast<int>(rng.below(9));
    if (ext && i % 3 == 0) e = (i % 2 == 0) ? 127 - 110 : 127 + 110;
    s.data()[i] = e;
  }
  return s;
}

ComponentSpec dequant_fp8_spec() {
  ComponentSpec s;
  s.name = "dequant_fp8";
  s.summary = "e4m3 codes x ue8m0 scales per 128x128 block (§1.5, §15.6)";
  s.inputs = {"codes", "scales"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig&) {
    const std::int64_t R = c.dim("R"), C = c.dim("C");
    Rng rng = rng_for(c, "codes", R, C);
    Mat codes(R, C);
    // format_extremes: ±448 (0x7E/0xFE), subnormals (0x01..0x07), ±0, else uniform non-NaN codes.
    const std::uint8_t special[] = {0x7E, 0xFE, 0x01, 0x81, 0x07, 0x87, 0x00, 0x80};
    for (Eigen::Index i = 0; i < codes.size(); ++i) {
      std::uint8_t b = 0;
      do b = static_cast<std::uint8_t>(rng.below(256));
      while ((b & 0x7F) == 0x7F);
      if (c.kind == InputKind::kFormatExtremes && rng.below(2) == 0) b = special[rng.below(8)];
      codes.data()[i] = b;
    }
    TensorSet in;
    in.put("codes", std::move(codes), "e4m3");
    in.put("scales", scale_bytes(c, (R + 127) / 128, (C + 127) / 128), "ue8m0");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const Mat& codes = k.inputs.at("codes");
    const Mat& scales = k.inputs.at("scales");
    const std::vector<std::uint8_t> cb = bytes_of(codes), sb = bytes_of(scales);
    const Fp8BlockWeight w(
        byte_view("case.weight", DType::kF8E4M3, {codes.rows(), codes.cols()}, cb),
        byte_view("case.scale", DType::kF8E8M0, {scales.rows(), scales.cols()}, sb));
    const std::vector<double> v = w.dequant_all();
    TensorSet out;
    out.put("out", Eigen::Map<const Mat>(v.data(), codes.rows(), codes.cols()));
    return out;
  };
  s.baseline_fp32 = fp32::dequant_fp8;
  return s;
}

ComponentSpec dequant_fp4_spec() {
  ComponentSpec s;
  s.name = "dequant_fp4";
  s.summary = "packed e2m1 codes x ue8m0 scales per 1x32 block (§15.5, §15.6)";
  s.inputs = {"codes", "scales"};
  s.outputs = {"out"};
  s.kinds = {InputKind::kRandom, InputKind::kFormatExtremes};
  s.make_inputs = [](const Case& c, const ModelConfig&) {
    const std::int64_t R = c.dim("R"), C = c.dim("C");
    Rng rng = rng_for(c, "codes", R, C);
    Mat codes(R, C);
    for (Eigen::Index i = 0; i < codes.size(); ++i) {
      std::uint64_t b = rng.below(16);
      if (c.kind == InputKind::kFormatExtremes && rng.below(2) == 0)
        b = (rng.below(2) << 3) | (rng.below(2) ? 7 : 1);
      codes.data()[i] = static_cast<double>(b);
    }
    TensorSet in;
    in.put("codes", std::move(codes), "e2m1");
    in.put("scales", scale_bytes(c, R, C / 32), "ue8m0");
    return in;
  };
  s.reference = [](const ComponentCall& k) {
    const Mat& codes = k.inputs.at("codes");
    const Mat& scales = k.inputs.at("scales");
    std::vector<std::uint8_t> packed(static_cast<std::size_t>(codes.size() / 2));
    for (Eigen::Index i = 0; i < codes.rows(); ++i)
      for (Eigen::Index j = 0; j < codes.cols(); j += 2)
        packed[static_cast<std::size_t>((i * codes.cols() + j) / 2)] = fmt::fp4_pack(
            static_cast<std::uint8_t>(codes(i, j)), static_cast<std::uint8_t>(codes(i, j + 1)));
    const std::vector<std::uint8_t> sb = bytes_of(scales);
    const Fp4ExpertWeight w(
        byte_view("case.weight", DType::kI8, {codes.rows(), codes.cols() / 2}, packed),
        byte_view("case.scale", DType::kF8E8M0, {scales.rows(), scales.cols()}, sb));
    const std::vector<double> v = w.dequant_all();
    TensorSet out;
    out.put("out", Eigen::Map<const Mat>(v.data(), codes.rows(), codes.cols()));
    return out;
  };
  s.baseline_fp32 = fp32::dequant_fp4;
  return s;
}

}  // namespace

const std::vector<ComponentSpec>& components() {
  static const std::vector<ComponentSpec> specs = {
      rms_norm_spec(),         rope_spec(),
      hadamard_spec(),         sinkhorn_spec(),
      hc_pre_spec(),           hc_post_spec(),
      hc_head_spec(),          q_path_spec(),
      kv_path_spec(),          key_window_spec(),
      sink_attention_spec(),   attention_core_spec(),   attention_fp8_spec(),
      derotate_spec(),         grouped_out_proj_spec(),
      compressor_spec(false),  compressor_spec(true),
      compressor_decode_spec(false), compressor_decode_spec(true),
      index_query_spec(),      index_scores_spec(),
      index_logits_spec(),     topk_spec(),
      indexer_decode_spec(),
      router_spec(),           hash_router_spec(),
      expert_spec(),           dequant_fp8_spec(),
      dequant_fp4_spec()};
  return specs;
}

const ComponentSpec& component(std::string_view name) {
  std::string names;
  for (const ComponentSpec& s : components()) {
    if (s.name == name) return s;
    names += (names.empty() ? "" : ", ") + s.name;
  }
  throw ConfigError("unknown component \"" + std::string(name) + "\"; registered: " + names);
}

const ModelConfig& case_config(const Case& c) {
  static std::mutex mu;
  static std::map<std::string, ModelConfig> cache;
  std::lock_guard lock(mu);
  auto it = cache.find(c.config);
  if (it == cache.end()) it = cache.emplace(c.config, preset_config(c.config)).first;
  return it->second;
}

// ------------------------------------------------------------------ the case table

std::vector<Case> case_table(std::uint64_t global_seed) {
  using K = InputKind;
  using P = PrecisionMode;
  std::vector<Case> out;
  auto add = [&](std::string component, std::string config,
                 std::vector<std::pair<std::string, std::int64_t>> dims, K kind, P mode,
                 bool slow = false) {
    Case c;
    c.component = std::move(component);
    c.config = std::move(config);
    c.dims = std::move(dims);
    c.kind = kind;
    c.mode = mode;
    c.global_seed = global_seed;
    c.slow = slow;
    out.push_back(std::move(c));
  };
  const std::string tf = "tiny-flash", fl = "v4-flash";
  // tiny-flash: d = 128, H = 4, D = 128, r = 64, hc = 4, H_I = 4, D_I = 128, K_I = 32, E = 8,
  // k_e = 2, I = 128. Real shapes: V4-Flash (d = 4096, H = 64, D = 512, H_I = 64, K_I = 512,
  // E = 256, k_e = 6, I = 2048, max position 2^20). Odd sizes (17, 31) on purpose.
  for (K k : {K::kRandom, K::kOutliers, K::kFormatExtremes})
    add("rms_norm", tf, {{"T", 17}, {"n", 128}}, k, P::kExact);
  add("rms_norm", tf, {{"T", 17}, {"n", 128}}, K::kRandom, P::kOfficial);
  add("rms_norm", fl, {{"T", 4}, {"n", 4096}}, K::kRandom, P::kOfficial);

  add("rope", tf, {{"T", 31}, {"H", 4}, {"Dh", 128}, {"yarn", 0}, {"p0", 0}}, K::kRandom,
      P::kExact);
  add("rope", tf, {{"T", 31}, {"H", 4}, {"Dh", 128}, {"yarn", 1}, {"p0", 100}}, K::kRandom,
      P::kOfficial);
  add("rope", tf, {{"T", 8}, {"H", 4}, {"Dh", 128}, {"yarn", 1}, {"p0", 0}}, K::kFormatExtremes,
      P::kOfficial);
  add("rope", fl, {{"T", 2}, {"H", 64}, {"Dh", 512}, {"yarn", 1}, {"p0", 1048574}}, K::kRandom,
      P::kOfficial);

  for (K k : {K::kRandom, K::kOutliers})
    add("hadamard", tf, {{"T", 17}, {"k", 4}, {"n", 128}}, k, P::kExact);
  add("hadamard", fl, {{"T", 4}, {"k", 64}, {"n", 128}}, K::kRandom, P::kExact);

  for (K k : {K::kRandom, K::kOutliers})
    add("sinkhorn", tf, {{"B", 64}, {"n", 4}, {"iters", 20}}, k, P::kExact);

  for (K k : {K::kRandom, K::kOutliers}) add("hc_pre", tf, {{"T", 17}}, k, P::kExact);
  add("hc_pre", tf, {{"T", 17}}, K::kRandom, P::kOfficial);
  add("hc_pre", fl, {{"T", 2}}, K::kRandom, P::kExact);

  add("hc_post", tf, {{"T", 17}}, K::kRandom, P::kExact);
  add("hc_post", tf, {{"T", 17}}, K::kRandom, P::kOfficial);
  add("hc_post", fl, {{"T", 2}}, K::kRandom, P::kExact);

  // hc_head (§4.5): hc = 4 streams of d; official rounds y to bf16 (kBf16Residual).
  for (K k : {K::kRandom, K::kOutliers}) add("hc_head", tf, {{"T", 17}}, k, P::kExact);
  add("hc_head", tf, {{"T", 17}}, K::kRandom, P::kOfficial);
  add("hc_head", fl, {{"T", 2}}, K::kRandom, P::kExact);

  // q_path (§5.1) and kv_path (§5.2): tiny-flash d = 128, L_q = 128, H = 4, D = 128, r = 64;
  // V4-Flash d = 4096, L_q = 1024, H = 64, D = 512 (q_path slow: wq_b holds 33.5M fp8 weights).
  // Exact cases start at position 0 (yarn 0: the SWA table) so the fp32 angle error (p·ω·u32)
  // stays below the GEMV error and the baseline gate stays tight on the nope dims; the qat and
  // official cases run the compress table (yarn 1) from position 100. qat holds the Q8 points
  // alone (act Q8 of wq_a, wq_b, wkv; Q8 of the KV nope dims), official adds the bf16 stores.
  for (const char* comp : {"q_path", "kv_path"}) {
    for (K k : {K::kRandom, K::kOutliers})
      add(comp, tf, {{"T", 17}, {"p0", 0}, {"yarn", 0}}, k, P::kExact);
    for (P m : {P::kQat, P::kOfficial})
      add(comp, tf, {{"T", 17}, {"p0", 100}, {"yarn", 1}}, K::kRandom, m);
  }
  add("q_path", fl, {{"T", 2}, {"p0", 4094}, {"yarn", 1}}, K::kRandom, P::kOfficial, true);
  add("kv_path", fl, {{"T", 4}, {"p0", 4092}, {"yarn", 1}}, K::kRandom, P::kOfficial);

  // key_window (§5.3, n_win = 128): a chunk 112 .. 142 across the first full window (t = 127);
  // format_extremes: the boundary positions and the last valid ones. Integer math: exact only.
  add("key_window", tf, {{"T", 31}, {"p0", 112}}, K::kRandom, P::kExact);
  add("key_window", tf, {{"T", 31}, {"p0", 0}}, K::kFormatExtremes, P::kExact);
  add("key_window", fl, {{"T", 4}, {"p0", 1048572}}, K::kRandom, P::kExact);

  for (K k : {K::kRandom, K::kOutliers, K::kAllMasked})
    add("sink_attention", tf, {{"B", 5}, {"H", 4}, {"D", 128}, {"n", 150}}, k, P::kExact);
  add("sink_attention", tf, {{"B", 5}, {"H", 4}, {"D", 128}, {"n", 150}}, K::kRandom, P::kOfficial);
  add("sink_attention", fl, {{"B", 1}, {"H", 64}, {"D", 512}, {"n", 640}}, K::kRandom, P::kExact);

  // attention_core (§5.3–5.4, H = 4, D = 128, n_win = 128, K_I = 32): queries 112 .. 142 cross the
  // first full window (t = 127) and see 28 .. 35 of the 40 entries (rows below 32 visible are
  // padded); format_extremes runs from q_start 0 (partial windows) past n_win with trailing
  // padding of every length. V4-Flash: 64 heads of 512, 300 entries, K = 512 (212+ padding).
  const std::vector<std::pair<std::string, std::int64_t>> core = {
      {"Tq", 31}, {"q_start", 112}, {"N", 40}, {"K", 32}};
  for (K k : {K::kRandom, K::kOutliers, K::kAllMasked}) add("attention_core", tf, core, k, P::kExact);
  add("attention_core", tf, {{"Tq", 131}, {"q_start", 0}, {"N", 40}, {"K", 32}}, K::kFormatExtremes,
      P::kExact);
  add("attention_core", tf, core, K::kRandom, P::kOfficial);
  add("attention_core", fl, {{"Tq", 2}, {"q_start", 1198}, {"N", 300}, {"K", 512}}, K::kRandom,
      P::kExact);

  // attention_fp8 (§5.3–5.4 over the cache rows' values; the kernels' component): tiny-flash CSA
  // as attention_core (window crossing t = 127, padded selections), first tokens from q_start 0
  // with padding of every length, a dominating (+20) and a negligible (−30) sink, large logits
  // (outliers) and top-code FP8 blocks (format_extremes); HCA (hca 1) across the first complete
  // entries (t = 127, 255, 383); V4-Flash decode rows (H = 64, D = 512, k_I = 512) of both kinds
  // and a V4-Pro CSA row (H = 128: two head blocks, k_I = 1024 of 1050 visible).
  for (K k : {K::kRandom, K::kOutliers, K::kAllMasked})
    add("attention_fp8", tf, {{"Tq", 31}, {"q_start", 112}, {"N", 40}, {"K", 32}}, k, P::kOfficial);
  add("attention_fp8", tf, {{"Tq", 131}, {"q_start", 0}, {"N", 40}, {"K", 32}}, K::kFormatExtremes, P::kOfficial);
  add("attention_fp8", tf, {{"Tq", 31}, {"q_start", 112}, {"N", 40}, {"K", 32}}, K::kRandom, P::kExact);
  for (std::int64_t shift : {20, -30})
    add("attention_fp8", tf, {{"Tq", 17}, {"q_start", 150}, {"N", 40}, {"K", 32}, {"sink_shift", shift}},
        K::kRandom, P::kOfficial);
  add("attention_fp8", tf, {{"Tq", 33}, {"q_start", 110}, {"N", 3}, {"hca", 1}}, K::kRandom, P::kOfficial);
  add("attention_fp8", tf, {{"Tq", 9}, {"q_start", 378}, {"N", 3}, {"hca", 1}}, K::kOutliers, P::kOfficial);
  add("attention_fp8", fl, {{"Tq", 2}, {"q_start", 1198}, {"N", 300}, {"K", 512}}, K::kRandom, P::kOfficial);
  add("attention_fp8", fl, {{"Tq", 1}, {"q_start", 4095}, {"N", 32}, {"hca", 1}}, K::kRandom, P::kOfficial);
  // (outliers: with q σ = 1 a softmax over 1152 keys averages the output down to rms ≈ 0.02, where
  // the row's worst-case P-rounding term 2^-8 Σ p|v| is more than a tenth of the signal and the
  // runner calls the gate vacuous; σ = 8 keeps the output at the keys' scale)
  add("attention_fp8", "v4-pro", {{"Tq", 1}, {"q_start", 4199}, {"N", 1050}, {"K", 1024}}, K::kOutliers,
      P::kOfficial);

  // derotate (§5.5): H·D of the config (tiny-flash 4 x 128, V4-Flash 64 x 512).
  add("derotate", tf, {{"T", 31}, {"yarn", 0}, {"p0", 0}}, K::kRandom, P::kExact);
  add("derotate", tf, {{"T", 31}, {"yarn", 1}, {"p0", 100}}, K::kRandom, P::kOfficial);
  for (P m : {P::kExact, P::kOfficial})
    add("derotate", tf, {{"T", 8}, {"yarn", 1}, {"p0", 0}}, K::kFormatExtremes, m);
  add("derotate", fl, {{"T", 2}, {"yarn", 1}, {"p0", 1048574}}, K::kRandom, P::kOfficial);

  // grouped_out_proj (§5.5): tiny-flash G = 2 groups of 2 heads, R_o = 64, wo_a [128, 256];
  // V4-Flash G = 8, R_o = 1024, wo_a [8192, 4096], wo_b [4096, 8192] (slow: 67M fp8 weights).
  for (K k : {K::kRandom, K::kOutliers}) add("grouped_out_proj", tf, {{"T", 17}}, k, P::kExact);
  add("grouped_out_proj", tf, {{"T", 17}}, K::kRandom, P::kOfficial);
  add("grouped_out_proj", fl, {{"T", 2}}, K::kRandom, P::kExact, true);

  for (K k : {K::kRandom, K::kOutliers}) add("compressor", tf, {{"T", 67}, {"m", 4}}, k, P::kExact);
  add("compressor", tf, {{"T", 67}, {"m", 4}}, K::kRandom, P::kOfficial);
  add("compressor", tf, {{"T", 257}, {"m", 128}}, K::kRandom, P::kExact);
  add("compressor", fl, {{"T", 16}, {"m", 4}}, K::kRandom, P::kExact, true);

  for (K k : {K::kRandom, K::kOutliers})
    add("indexer_compressor", tf, {{"T", 67}, {"m", 4}}, k, P::kExact);
  add("indexer_compressor", tf, {{"T", 67}, {"m", 4}}, K::kRandom, P::kOfficial);
  add("indexer_compressor", fl, {{"T", 16}, {"m", 4}}, K::kRandom, P::kOfficial, true);
  // Decode through the §11.2 state machine from prefill splits p: 0 (decode only), mid-block, past
  // a block boundary; the HCA hand-off of a partial block.
  for (std::int64_t p : {0, 13, 33})
    add("compressor_decode", tf, {{"T", 67}, {"m", 4}, {"p", p}}, K::kRandom, P::kExact);
  add("compressor_decode", tf, {{"T", 67}, {"m", 4}, {"p", 13}}, K::kOutliers, P::kExact);
  add("compressor_decode", tf, {{"T", 67}, {"m", 4}, {"p", 13}}, K::kRandom, P::kOfficial);
  add("compressor_decode", tf, {{"T", 300}, {"m", 128}, {"p", 130}}, K::kRandom, P::kExact);
  add("compressor_decode", tf, {{"T", 300}, {"m", 128}, {"p", 130}}, K::kRandom, P::kOfficial);
  add("compressor_decode", fl, {{"T", 16}, {"m", 4}, {"p", 5}}, K::kRandom, P::kOfficial);
  for (std::int64_t p : {0, 13})
    add("indexer_compressor_decode", tf, {{"T", 67}, {"m", 4}, {"p", p}}, K::kRandom, P::kExact);
  add("indexer_compressor_decode", tf, {{"T", 67}, {"m", 4}, {"p", 13}}, K::kOutliers, P::kExact);
  add("indexer_compressor_decode", tf, {{"T", 67}, {"m", 4}, {"p", 13}}, K::kRandom, P::kOfficial);
  add("indexer_compressor_decode", fl, {{"T", 16}, {"m", 4}, {"p", 5}}, K::kRandom, P::kOfficial);

  // index_query (§7.2): tiny-flash H_I = 4, D_I = 128, L_q = 128; V4-Flash H_I = 64, D_I = 128,
  // L_q = 1024, d = 4096. Always the compress table (CSA layers). Exact cases from position 0 as
  // for q_path; qat holds the act Q8 and the Q4 of the queries alone, official adds the bf16
  // stores (linear, RoPE, Hadamard, head weights).
  for (K k : {K::kRandom, K::kOutliers})
    add("index_query", tf, {{"T", 16}, {"p0", 0}}, k, P::kExact);
  for (P m : {P::kQat, P::kOfficial})
    add("index_query", tf, {{"T", 16}, {"p0", 200}}, K::kRandom, m);
  add("index_query", fl, {{"T", 2}, {"p0", 4094}}, K::kRandom, P::kOfficial);

  const std::vector<std::pair<std::string, std::int64_t>> idx = {
      {"T", 16}, {"p0", 200}, {"H", 4}, {"D", 128}, {"K", 32}};
  for (K k : {K::kRandom, K::kTopkTies, K::kAllMasked}) add("index_scores", tf, idx, k, P::kExact);
  add("index_scores", tf, idx, K::kRandom, P::kOfficial);
  add("index_scores", fl, {{"T", 2}, {"p0", 4094}, {"H", 64}, {"D", 128}, {"K", 512}}, K::kRandom,
      P::kExact);

  // The indexer kernels' components (official: the inputs are the stored Q4 / FP8 values).
  // tiny-flash H = 4; V4-Flash H = 64, K_I = 512. fmt 0: FP4 keys (68-byte rows), 1: FP8 (132).
  for (std::int64_t fmt : {0, 1})
    for (K k : {K::kRandom, K::kTopkTies, K::kAllMasked, K::kFormatExtremes})
      add("index_logits", tf, {{"T", 40}, {"p0", 190}, {"H", 4}, {"fmt", fmt}}, k, P::kOfficial);
  add("index_logits", fl, {{"T", 2}, {"p0", 4094}, {"H", 64}, {"fmt", 0}}, K::kRandom, P::kOfficial);
  for (K k : {K::kRandom, K::kTopkTies, K::kAllMasked, K::kFormatExtremes})
    add("topk", tf, {{"T", 16}, {"p0", 1500}, {"K", 32}}, k, P::kOfficial);  // N > 256: ties span top-k tiles
  add("topk", fl, {{"T", 2}, {"p0", 65534}, {"K", 512}}, K::kRandom, P::kOfficial);
  for (std::int64_t fmt : {0, 1})
    for (K k : {K::kRandom, K::kTopkTies, K::kAllMasked, K::kFormatExtremes})
      add("indexer_decode", tf, {{"B", 3}, {"next_n", 2}, {"N", 200}, {"H", 4}, {"K", 32}, {"fmt", fmt}}, k,
          P::kOfficial);
  add("indexer_decode", tf, {{"B", 2}, {"next_n", 1}, {"N", 100}, {"H", 4}, {"K", 32}, {"fmt", 0}}, K::kRandom,
      P::kOfficial);
  add("indexer_decode", fl, {{"B", 2}, {"next_n", 2}, {"N", 1024}, {"H", 64}, {"K", 512}, {"fmt", 0}},
      K::kRandom, P::kOfficial);

  for (K k : {K::kRandom, K::kTopkTies})
    add("router", tf, {{"T", 17}, {"E", 8}, {"k", 2}}, k, P::kExact);
  add("router", fl, {{"T", 4}, {"E", 256}, {"k", 6}}, K::kRandom, P::kExact);
  // hash_router (§9.1, layers below n_hash_layers): tid2eid over the whole vocabulary.
  for (K k : {K::kRandom, K::kTopkTies, K::kFormatExtremes})
    add("hash_router", tf, {{"T", 17}, {"E", 8}, {"k", 2}}, k, P::kExact);
  add("hash_router", fl, {{"T", 4}, {"E", 256}, {"k", 6}}, K::kRandom, P::kExact);

  for (K k : {K::kRandom, K::kOutliers, K::kFormatExtremes})
    add("expert", tf, {{"n", 9}, {"I", 128}}, k, P::kExact);
  add("expert", tf, {{"n", 9}, {"I", 128}}, K::kRandom, P::kQat);
  add("expert", tf, {{"n", 9}, {"I", 128}}, K::kRandom, P::kOfficial);
  add("expert", fl, {{"n", 2}, {"I", 2048}}, K::kRandom, P::kOfficial, true);

  for (K k : {K::kRandom, K::kFormatExtremes})
    add("dequant_fp8", tf, {{"R", 200}, {"C", 300}}, k, P::kExact);
  add("dequant_fp8", fl, {{"R", 512}, {"C", 1024}}, K::kRandom, P::kExact);
  for (K k : {K::kRandom, K::kFormatExtremes})
    add("dequant_fp4", tf, {{"R", 64}, {"C", 256}}, k, P::kExact);
  add("dequant_fp4", fl, {{"R", 256}, {"C", 2048}}, K::kRandom, P::kExact);
  return out;
}

}  // namespace v4ref::compare
