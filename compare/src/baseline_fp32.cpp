// Plain fp32 ports of the runner's components (baseline_fp32.hpp). Loops are written out in the
// textbook order with float accumulators; -ffp-contract=off is not assumed, so a compiler may
// fuse a multiply-add here, which only makes B slightly more accurate.
#include "v4ref/compare/baseline_fp32.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/quant.hpp"
#include "v4ref/ref/rope.hpp"

namespace v4ref::compare::fp32 {

namespace {

using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr float kNegInfF = -std::numeric_limits<float>::infinity();

MatF to_f(const Mat& m) { return m.cast<float>(); }
Mat to_d(const MatF& m) { return m.cast<double>(); }

float bf16f(float x) { return static_cast<float>(fmt::round_bf16(x)); }
void bf16_if(MatF& m, const PrecisionPolicy& pol, QuantPoint p) {
  if (!pol.on(p)) return;
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = bf16f(m.data()[i]);
}
const char* dtype_if(const PrecisionPolicy& pol, QuantPoint p, const char* off = "f32") {
  return pol.on(p) ? "bf16" : off;
}

// Q8 / Q4 fake-quant (a storage format) of a float row via reference/quant.hpp.
void fake_quant_row(float* x, std::int64_t n, int block, bool q4) {
  std::vector<double> v(x, x + n), out(static_cast<std::size_t>(n));
  if (q4)
    ref::q4_fake_quant(v, block, out);
  else
    ref::q8_fake_quant(v, block, out);
  for (std::int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(out[static_cast<std::size_t>(i)]);
}

// y = x Wᵀ with float accumulation: x [T, in], w [out, in].
MatF matmul_xwt(const MatF& x, const MatF& w) {
  MatF y(x.rows(), w.rows());
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (Eigen::Index o = 0; o < w.rows(); ++o) {
      float s = 0;
      for (Eigen::Index i = 0; i < x.cols(); ++i) s += x(t, i) * w(o, i);
      y(t, o) = s;
    }
  return y;
}

float sigmoidf(float z) { return 1.0f / (1.0f + std::exp(-z)); }

// 1/sqrt(mean(x²) + eps) in float.
float inv_rms_f(const float* x, std::int64_t n, float eps) {
  float ss = 0;
  for (std::int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  return 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
}

void sinkhorn_f(float* m, std::int64_t n, std::int64_t iters, float eps) {
  for (std::int64_t j = 0; j < n; ++j) {
    float mx = m[j * n];
    for (std::int64_t k = 1; k < n; ++k) mx = std::max(mx, m[j * n + k]);
    float s = 0;
    for (std::int64_t k = 0; k < n; ++k) s += (m[j * n + k] = std::exp(m[j * n + k] - mx));
    for (std::int64_t k = 0; k < n; ++k) m[j * n + k] = m[j * n + k] / s + eps;
  }
  auto cols = [&] {
    for (std::int64_t k = 0; k < n; ++k) {
      float s = 0;
      for (std::int64_t j = 0; j < n; ++j) s += m[j * n + k];
      for (std::int64_t j = 0; j < n; ++j) m[j * n + k] /= (s + eps);
    }
  };
  auto rows = [&] {
    for (std::int64_t j = 0; j < n; ++j) {
      float s = 0;
      for (std::int64_t k = 0; k < n; ++k) s += m[j * n + k];
      for (std::int64_t k = 0; k < n; ++k) m[j * n + k] /= (s + eps);
    }
  };
  cols();
  for (std::int64_t it = 1; it < iters; ++it) {
    rows();
    cols();
  }
}

// Rotates the r values at x (interleaved pairs) to position p in float; `inverse` rotates by −θ
// (the §5.5 de-rotation).
void rope_f(float* x, std::int64_t p, const ref::RopeTable& table, bool round_out,
            bool inverse = false) {
  for (std::int64_t j = 0; j < table.n_pairs(); ++j) {
    const float theta =
        static_cast<float>(p) * static_cast<float>(table.omega[static_cast<std::size_t>(j)]);
    const float c = std::cos(theta), s = inverse ? -std::sin(theta) : std::sin(theta);
    const float a = x[2 * j], b = x[2 * j + 1];
    float ra = a * c - b * s, rb = a * s + b * c;
    if (round_out) {
      ra = bf16f(ra);
      rb = bf16f(rb);
    }
    x[2 * j] = ra;
    x[2 * j + 1] = rb;
  }
}

void hadamard_f(float* x, std::int64_t n) {
  for (std::int64_t h = 1; h < n; h *= 2)
    for (std::int64_t b = 0; b < n; b += 2 * h)
      for (std::int64_t i = b; i < b + h; ++i) {
        const float a = x[i], c = x[i + h];
        x[i] = a + c;
        x[i + h] = a - c;
      }
  const float s = 1.0f / std::sqrt(static_cast<float>(n));
  for (std::int64_t i = 0; i < n; ++i) x[i] *= s;
}

ref::RopeTable table_of(const ComponentCall& call, bool yarn) {
  const ModelConfig& cfg = call.cfg;
  return ref::make_rope_table(yarn ? cfg.compress_rope_theta : cfg.rope_theta, yarn, cfg.yarn,
                              cfg.rope_head_dim, cfg.max_position_embeddings);
}

// The top-k rule of the spec (higher score first, lower index on equal scores, NaN never) on a
// float row, written independently of the reference's select_topk.
std::vector<std::int64_t> topk_f(const std::vector<float>& s, std::int64_t k) {
  std::vector<std::int64_t> idx;
  for (std::size_t j = 0; j < s.size(); ++j)
    if (!std::isnan(s[j])) idx.push_back(static_cast<std::int64_t>(j));
  std::stable_sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) {
    return s[static_cast<std::size_t>(a)] > s[static_cast<std::size_t>(b)];
  });
  if (static_cast<std::int64_t>(idx.size()) > k) idx.resize(static_cast<std::size_t>(k));
  return idx;
}

// Sink attention of one query q [H·D] over keys [n, D] (§5.4): per head the logits q_h·k_s/sqrt(D),
// their max M, P = e^{ℓ−M} (bf16 under kBf16AttnProbs, the denominator summing the unrounded
// values), den = Σ P + e^{sink_h − M}, out_h = P·keys / den. n = 0: zeros.
void attend_f(const float* q, const MatF& keys, const MatF& sink, std::int64_t H, std::int64_t D,
              const PrecisionPolicy& pol, float* out) {
  const std::int64_t n = keys.rows();
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<float> p(static_cast<std::size_t>(n));
  for (std::int64_t h = 0; h < H; ++h) {
    const float* qh = q + h * D;
    if (n == 0) {
      for (std::int64_t k = 0; k < D; ++k) out[h * D + k] = 0.0f;
      continue;
    }
    float mx = kNegInfF;
    for (std::int64_t s = 0; s < n; ++s) {
      float dot = 0;
      for (std::int64_t k = 0; k < D; ++k) dot += qh[k] * keys(s, k);
      p[static_cast<std::size_t>(s)] = dot * scale;
      mx = std::max(mx, p[static_cast<std::size_t>(s)]);
    }
    float den = 0;
    for (std::int64_t s = 0; s < n; ++s)
      den += (p[static_cast<std::size_t>(s)] = std::exp(p[static_cast<std::size_t>(s)] - mx));
    den += std::exp(sink(0, h) - mx);
    if (pol.on(QuantPoint::kBf16AttnProbs))
      for (float& v : p) v = bf16f(v);
    for (std::int64_t k = 0; k < D; ++k) {
      float acc = 0;
      for (std::int64_t s = 0; s < n; ++s) acc += p[static_cast<std::size_t>(s)] * keys(s, k);
      out[h * D + k] = acc / den;
    }
  }
}

// y = x Wᵀ of a linear layer with the policy's points (§2.5 item 1, §12): Q8(·; 128) on every
// input row when the weight is fp8/fp4 (`act_q8`) and act_q8_128 is on; bf16 output under
// store_bf16_linear.
MatF linear_f(MatF x, const MatF& w, const PrecisionPolicy& pol, bool act_q8) {
  if (act_q8 && pol.on(QuantPoint::kActQ8))
    for (Eigen::Index t = 0; t < x.rows(); ++t)
      fake_quant_row(x.row(t).data(), x.cols(), 128, false);
  MatF y = matmul_xwt(x, w);
  bf16_if(y, pol, QuantPoint::kBf16Linear);
  return y;
}

// Weighted RMSNorm of every row in place (§2.1), bf16 under store_bf16_norm.
void weighted_norm_f(MatF& x, const MatF& w, float eps, const PrecisionPolicy& pol) {
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const float r = inv_rms_f(x.row(t).data(), x.cols(), eps);
    for (Eigen::Index i = 0; i < x.cols(); ++i) x(t, i) = w(0, i) * (x(t, i) * r);
  }
  bf16_if(x, pol, QuantPoint::kBf16Norm);
}

// Unweighted RMS normalisation of one query head of n values in place (§2.2). Under
// bf16_q_head_norm every op of the official bf16 evaluation rounds to bf16: the squares, the
// mean (an fp32 sum rounded once), mean + eps, the reciprocal square root and the product.
void head_norm_f(float* q, std::int64_t n, float eps, bool bf16) {
  if (!bf16) {
    const float r = inv_rms_f(q, n, eps);
    for (std::int64_t i = 0; i < n; ++i) q[i] = q[i] * r;
    return;
  }
  float s = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float qi = bf16f(q[i]);
    s += bf16f(qi * qi);
  }
  const float m = bf16f(s / static_cast<float>(n));
  const float r = bf16f(1.0f / std::sqrt(bf16f(m + eps)));
  for (std::int64_t i = 0; i < n; ++i) q[i] = bf16f(bf16f(q[i]) * r);
}

// RoPE on the last r dims of every one of the `heads` slices of `head_dim` columns of x, row t
// at positions[t] (§2.3), bf16 under store_bf16_rope.
void rope_heads_f(MatF& x, std::int64_t heads, std::int64_t head_dim, const Mat& positions,
                  const ref::RopeTable& table, const PrecisionPolicy& pol) {
  const bool round = pol.on(QuantPoint::kBf16Rope);
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      rope_f(x.row(t).data() + h * head_dim + head_dim - table.rope_dim,
             static_cast<std::int64_t>(positions(t, 0)), table, round);
}

// Router scores s_e = sqrt(softplus(z·gate_e)) (§9.1): z [T, d], gate [E, d] -> [T, E].
MatF router_scores_f(const MatF& z, const MatF& gate) {
  MatF scores = matmul_xwt(z, gate);
  for (Eigen::Index i = 0; i < scores.size(); ++i) {
    const float l = scores.data()[i];
    const float sp = l > 20.0f ? l : std::log1p(std::exp(l));  // PyTorch softplus threshold
    scores.data()[i] = std::sqrt(sp);
  }
  return scores;
}

// Route weights of one token's chosen experts: route_scale · s_e / Σ_{e'∈S} s_e' (§9.1).
void route_weights_f(const float* scores, const std::vector<std::int64_t>& chosen,
                     float route_scale, float* w) {
  float sum = 0;
  for (std::int64_t e : chosen) sum += scores[e];
  for (std::size_t s = 0; s < chosen.size(); ++s) w[s] = route_scale * (scores[chosen[s]] / sum);
}

}  // namespace

TensorSet rms_norm(const ComponentCall& call) {
  const MatF x = to_f(call.inputs.at("x"));
  const MatF w = to_f(call.inputs.at("weight"));
  const auto eps = static_cast<float>(call.cfg.norm_eps);
  MatF y(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const float r = inv_rms_f(x.row(t).data(), x.cols(), eps);
    for (Eigen::Index i = 0; i < x.cols(); ++i) y(t, i) = w(0, i) * (x(t, i) * r);
  }
  bf16_if(y, call.policy, QuantPoint::kBf16Norm);
  TensorSet out;
  out.put("out", to_d(y), dtype_if(call.policy, QuantPoint::kBf16Norm));
  return out;
}

TensorSet rope(const ComponentCall& call) {
  MatF x = to_f(call.inputs.at("x"));
  const Mat& pos = call.inputs.at("positions");
  const std::int64_t H = call.c.dim("H"), Dh = call.c.dim("Dh");
  const ref::RopeTable table = table_of(call, call.c.dim("yarn") != 0);
  const bool round = call.policy.on(QuantPoint::kBf16Rope);
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (std::int64_t h = 0; h < H; ++h)
      rope_f(x.row(t).data() + h * Dh + Dh - table.rope_dim, static_cast<std::int64_t>(pos(t, 0)),
             table, round);
  TensorSet out;
  out.put("out", to_d(x), dtype_if(call.policy, QuantPoint::kBf16Rope));
  return out;
}

TensorSet hadamard(const ComponentCall& call) {
  MatF x = to_f(call.inputs.at("x"));
  const std::int64_t n = call.c.dim("n");
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (Eigen::Index b = 0; b < x.cols(); b += n) hadamard_f(x.row(t).data() + b, n);
  TensorSet out;
  out.put("out", to_d(x), "f32");
  return out;
}

TensorSet sinkhorn(const ComponentCall& call) {
  MatF z = to_f(call.inputs.at("z"));
  const std::int64_t n = call.c.dim("n");
  for (Eigen::Index b = 0; b < z.rows(); ++b)
    sinkhorn_f(z.row(b).data(), n, call.c.dim("iters"), static_cast<float>(call.cfg.hc_eps));
  TensorSet out;
  out.put("out", to_d(z), "f32");
  return out;
}

TensorSet hc_pre(const ComponentCall& call) {
  const MatF x = to_f(call.inputs.at("x"));
  const MatF fn = to_f(call.inputs.at("fn"));
  const MatF base = to_f(call.inputs.at("base"));
  const MatF scale = to_f(call.inputs.at("scale"));
  const ModelConfig& cfg = call.cfg;
  const std::int64_t hc = cfg.hc_mult, d = cfg.dim, T = x.rows();
  const auto eps = static_cast<float>(cfg.hc_eps);
  MatF mu = matmul_xwt(x, fn);  // [T, mix]
  MatF u = MatF::Zero(T, d), pre(T, hc), post(T, hc), comb(T, hc * hc);
  for (Eigen::Index t = 0; t < T; ++t) {
    const float rho = inv_rms_f(x.row(t).data(), x.cols(), static_cast<float>(cfg.norm_eps));
    for (Eigen::Index i = 0; i < mu.cols(); ++i) mu(t, i) *= rho;
    for (std::int64_t k = 0; k < hc; ++k) {
      pre(t, k) = sigmoidf(scale(0, 0) * mu(t, k) + base(0, k)) + eps;
      post(t, k) = 2.0f * sigmoidf(scale(0, 1) * mu(t, hc + k) + base(0, hc + k));
    }
    for (std::int64_t i = 0; i < hc * hc; ++i)
      comb(t, i) = scale(0, 2) * mu(t, 2 * hc + i) + base(0, 2 * hc + i);
    sinkhorn_f(comb.row(t).data(), hc, cfg.hc_sinkhorn_iters, eps);
    for (std::int64_t k = 0; k < hc; ++k)
      for (std::int64_t i = 0; i < d; ++i) u(t, i) += pre(t, k) * x(t, k * d + i);
  }
  bf16_if(u, call.policy, QuantPoint::kBf16Residual);
  TensorSet out;
  out.put("u", to_d(u), dtype_if(call.policy, QuantPoint::kBf16Residual));
  out.put("pre", to_d(pre), "f32");
  out.put("post", to_d(post), "f32");
  out.put("comb", to_d(comb), "f32");
  return out;
}

TensorSet hc_post(const ComponentCall& call) {
  const MatF f = to_f(call.inputs.at("f"));
  const MatF x = to_f(call.inputs.at("x"));
  const MatF post = to_f(call.inputs.at("post"));
  const MatF comb = to_f(call.inputs.at("comb"));
  const std::int64_t hc = call.cfg.hc_mult, d = f.cols();
  MatF y(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (std::int64_t k = 0; k < hc; ++k)
      for (std::int64_t i = 0; i < d; ++i) {
        float s = post(t, k) * f(t, i);
        for (std::int64_t j = 0; j < hc; ++j) s += comb(t, j * hc + k) * x(t, j * d + i);
        y(t, k * d + i) = s;
      }
  bf16_if(y, call.policy, QuantPoint::kBf16Residual);
  TensorSet out;
  out.put("out", to_d(y), dtype_if(call.policy, QuantPoint::kBf16Residual));
  return out;
}

TensorSet hc_head(const ComponentCall& call) {
  const MatF x = to_f(call.inputs.at("x"));
  const MatF fn = to_f(call.inputs.at("fn"));
  const MatF base = to_f(call.inputs.at("base"));
  const MatF scale = to_f(call.inputs.at("scale"));
  const ModelConfig& cfg = call.cfg;
  const std::int64_t hc = cfg.hc_mult, d = cfg.dim, T = x.rows();
  const auto eps = static_cast<float>(cfg.hc_eps);
  const MatF mu = matmul_xwt(x, fn);  // [T, hc], before the 1/rms factor
  MatF y = MatF::Zero(T, d);
  for (Eigen::Index t = 0; t < T; ++t) {
    const float rho = inv_rms_f(x.row(t).data(), x.cols(), static_cast<float>(cfg.norm_eps));
    for (std::int64_t k = 0; k < hc; ++k) {
      const float w = sigmoidf(scale(0, 0) * (rho * mu(t, k)) + base(0, k)) + eps;
      for (std::int64_t i = 0; i < d; ++i) y(t, i) += w * x(t, k * d + i);
    }
  }
  bf16_if(y, call.policy, QuantPoint::kBf16Residual);
  TensorSet out;
  out.put("out", to_d(y), dtype_if(call.policy, QuantPoint::kBf16Residual));
  return out;
}

TensorSet q_path(const ComponentCall& call) {
  const PrecisionPolicy& pol = call.policy;
  const ModelConfig& cfg = call.cfg;
  const std::int64_t H = cfg.n_heads, D = cfg.head_dim;
  const auto eps = static_cast<float>(cfg.norm_eps);
  MatF c = linear_f(to_f(call.inputs.at("x")), to_f(call.inputs.at("wq_a")), pol, true);
  weighted_norm_f(c, to_f(call.inputs.at("q_norm")), eps, pol);
  MatF q = linear_f(c, to_f(call.inputs.at("wq_b")), pol, true);
  const bool bf16_norm = pol.on(QuantPoint::kBf16QHeadNorm);
  for (Eigen::Index t = 0; t < q.rows(); ++t)
    for (std::int64_t h = 0; h < H; ++h) head_norm_f(q.row(t).data() + h * D, D, eps, bf16_norm);
  rope_heads_f(q, H, D, call.inputs.at("positions"), table_of(call, call.c.dim("yarn") != 0), pol);
  TensorSet out;
  out.put("c", to_d(c), dtype_if(pol, QuantPoint::kBf16Norm));
  out.put("q", to_d(q), dtype_if(pol, QuantPoint::kBf16Rope));
  return out;
}

TensorSet kv_path(const ComponentCall& call) {
  const PrecisionPolicy& pol = call.policy;
  const ModelConfig& cfg = call.cfg;
  const std::int64_t D = cfg.head_dim;
  MatF kv = linear_f(to_f(call.inputs.at("x")), to_f(call.inputs.at("wkv")), pol, true);
  weighted_norm_f(kv, to_f(call.inputs.at("kv_norm")), static_cast<float>(cfg.norm_eps), pol);
  const ref::RopeTable table = table_of(call, call.c.dim("yarn") != 0);
  rope_heads_f(kv, 1, D, call.inputs.at("positions"), table, pol);
  if (pol.on(QuantPoint::kKvWindowQ8))  // nope dims only, blocks of 64 (§2.5 item 2)
    for (Eigen::Index t = 0; t < kv.rows(); ++t)
      fake_quant_row(kv.row(t).data(), D - table.rope_dim, 64, false);
  TensorSet out;
  out.put("kv", to_d(kv), dtype_if(pol, QuantPoint::kBf16Rope));
  return out;
}

TensorSet index_query(const ComponentCall& call) {
  const PrecisionPolicy& pol = call.policy;
  const ModelConfig& cfg = call.cfg;
  const std::int64_t HI = cfg.index_n_heads, DI = cfg.index_head_dim;
  MatF q = linear_f(to_f(call.inputs.at("c")), to_f(call.inputs.at("wq_b")), pol, true);
  rope_heads_f(q, HI, DI, call.inputs.at("positions"), table_of(call, true), pol);
  for (Eigen::Index t = 0; t < q.rows(); ++t)
    for (std::int64_t h = 0; h < HI; ++h) hadamard_f(q.row(t).data() + h * DI, DI);
  bf16_if(q, pol, QuantPoint::kBf16Hadamard);
  if (pol.on(QuantPoint::kIdxQQ4))  // blocks of 32 never straddle heads (D_I % 32 == 0)
    for (Eigen::Index t = 0; t < q.rows(); ++t) fake_quant_row(q.row(t).data(), q.cols(), 32, true);
  MatF wi = linear_f(to_f(call.inputs.at("x")), to_f(call.inputs.at("weights_proj")), pol, false);
  const float scale = 1.0f / std::sqrt(static_cast<float>(DI * HI));
  for (Eigen::Index i = 0; i < wi.size(); ++i) wi.data()[i] *= scale;
  bf16_if(wi, pol, QuantPoint::kBf16IndexScore);
  TensorSet out;
  out.put("q", to_d(q), dtype_if(pol, QuantPoint::kBf16Hadamard));
  out.put("weights", to_d(wi), dtype_if(pol, QuantPoint::kBf16IndexScore));
  return out;
}

TensorSet key_window(const ComponentCall& call) {
  const Mat& pos = call.inputs.at("positions");
  const std::int64_t n_win = call.cfg.window_size;
  Mat first(pos.rows(), 1);
  Mat keys = Mat::Constant(pos.rows(), n_win, -1.0);
  for (Eigen::Index t = 0; t < pos.rows(); ++t) {
    const auto p = static_cast<std::int64_t>(pos(t, 0));
    const std::int64_t f = p >= n_win ? p - n_win + 1 : 0;
    first(t, 0) = static_cast<double>(f);
    for (std::int64_t s = f; s <= p; ++s) keys(t, s - f) = static_cast<double>(s);
  }
  TensorSet out;
  out.put("first", std::move(first), "i64");
  out.put("keys", std::move(keys), "index");
  return out;
}

TensorSet derotate(const ComponentCall& call) {
  MatF o = to_f(call.inputs.at("o"));
  const Mat& pos = call.inputs.at("positions");
  const std::int64_t H = call.cfg.n_heads, D = call.cfg.head_dim;
  const ref::RopeTable table = table_of(call, call.c.dim("yarn") != 0);
  const bool round = call.policy.on(QuantPoint::kBf16Rope);
  for (Eigen::Index t = 0; t < o.rows(); ++t)
    for (std::int64_t h = 0; h < H; ++h)
      rope_f(o.row(t).data() + h * D + D - table.rope_dim, static_cast<std::int64_t>(pos(t, 0)),
             table, round, true);
  TensorSet out;
  out.put("out", to_d(o), dtype_if(call.policy, QuantPoint::kBf16Rope));
  return out;
}

TensorSet sink_attention(const ComponentCall& call) {
  const MatF q = to_f(call.inputs.at("q"));
  const MatF keys = to_f(call.inputs.at("keys"));
  const MatF sink = to_f(call.inputs.at("sink"));
  const std::int64_t H = call.c.dim("H"), D = call.c.dim("D");
  MatF o(q.rows(), q.cols());
  for (Eigen::Index b = 0; b < q.rows(); ++b)
    attend_f(q.row(b).data(), keys, sink, H, D, call.policy, o.row(b).data());
  bf16_if(o, call.policy, QuantPoint::kBf16AttnOut);
  TensorSet out;
  out.put("out", to_d(o), dtype_if(call.policy, QuantPoint::kBf16AttnOut));
  return out;
}

TensorSet attention_core(const ComponentCall& call) {
  const MatF q = to_f(call.inputs.at("q"));
  const MatF kv = to_f(call.inputs.at("kv"));
  const MatF comp = to_f(call.inputs.at("compressed"));
  const MatF sink = to_f(call.inputs.at("sink"));
  const Mat& sel = call.inputs.at("selected");
  const std::int64_t H = call.cfg.n_heads, D = call.cfg.head_dim, n_win = call.cfg.window_size;
  const std::int64_t q0 = call.c.dim("q_start");
  MatF o(q.rows(), q.cols());
  for (Eigen::Index i = 0; i < q.rows(); ++i) {
    const std::int64_t t = q0 + i, first = t >= n_win ? t - n_win + 1 : 0;
    std::vector<std::int64_t> rows;  // window rows, then the selected entries (−1: padding)
    for (Eigen::Index c = 0; c < sel.cols(); ++c)
      if (sel(i, c) >= 0) rows.push_back(static_cast<std::int64_t>(sel(i, c)));
    MatF keys(t - first + 1 + static_cast<std::int64_t>(rows.size()), D);
    for (std::int64_t s = first; s <= t; ++s) keys.row(s - first) = kv.row(s);
    for (std::size_t r = 0; r < rows.size(); ++r)
      keys.row(t - first + 1 + static_cast<Eigen::Index>(r)) = comp.row(rows[r]);
    attend_f(q.row(i).data(), keys, sink, H, D, call.policy, o.row(i).data());
  }
  bf16_if(o, call.policy, QuantPoint::kBf16AttnOut);
  TensorSet out;
  out.put("out", to_d(o), dtype_if(call.policy, QuantPoint::kBf16AttnOut));
  return out;
}

TensorSet grouped_out_proj(const ComponentCall& call) {
  const MatF o = to_f(call.inputs.at("o"));
  const MatF wa = to_f(call.inputs.at("wo_a"));
  const MatF wb = to_f(call.inputs.at("wo_b"));
  const PrecisionPolicy& pol = call.policy;
  const std::int64_t G = call.cfg.o_groups, ro = call.cfg.o_lora_rank, gin = o.cols() / G;
  MatF y(o.rows(), G * ro);  // group g: heads g·H/G .. (g+1)·H/G − 1 times its rows of wo_a
  for (std::int64_t g = 0; g < G; ++g)
    y.middleCols(g * ro, ro) =
        matmul_xwt(o.middleCols(g * gin, gin), wa.middleRows(g * ro, ro));
  bf16_if(y, pol, QuantPoint::kBf16Linear);
  if (pol.on(QuantPoint::kActQ8))  // the input of wo_b (fp8); wo_a's input is never Q8 (§15.7)
    for (Eigen::Index t = 0; t < y.rows(); ++t) fake_quant_row(y.row(t).data(), y.cols(), 128, false);
  MatF out = matmul_xwt(y, wb);
  bf16_if(out, pol, QuantPoint::kBf16Linear);
  TensorSet r;
  r.put("out", to_d(out), dtype_if(pol, QuantPoint::kBf16Linear));
  return r;
}

TensorSet compressor(const ComponentCall& call) {
  const bool indexer = call.c.component == "indexer_compressor";
  const MatF x = to_f(call.inputs.at("x"));
  const MatF wkv = to_f(call.inputs.at("wkv"));
  const MatF wgate = to_f(call.inputs.at("wgate"));
  const MatF ape = to_f(call.inputs.at("ape"));
  const MatF norm = to_f(call.inputs.at("norm"));
  const std::int64_t m = call.c.dim("m"), w = norm.cols(), T = x.rows();
  const bool csa = m == 4;
  const ref::RopeTable table = table_of(call, true);
  const PrecisionPolicy& pol = call.policy;
  const MatF a = matmul_xwt(x, wkv), g = matmul_xwt(x, wgate);  // [T, c·w]
  MatF entries(T / m, w);
  std::vector<float> logit, value;
  for (std::int64_t j = 0; j < T / m; ++j) {
    float* e = entries.row(j).data();
    for (std::int64_t i = 0; i < w; ++i) {
      logit.clear();
      value.clear();
      if (csa && j > 0)  // the previous block through channels [0, w)
        for (std::int64_t r = 0; r < m; ++r) {
          logit.push_back(g((j - 1) * m + r, i) + ape(r, i));
          value.push_back(a((j - 1) * m + r, i));
        }
      const std::int64_t ch = csa ? w + i : i;
      for (std::int64_t r = 0; r < m; ++r) {
        logit.push_back(g(j * m + r, ch) + ape(r, ch));
        value.push_back(a(j * m + r, ch));
      }
      float mx = kNegInfF;
      for (float l : logit) mx = std::max(mx, l);
      float num = 0, den = 0;
      for (std::size_t s = 0; s < logit.size(); ++s) {
        const float ex = std::exp(logit[s] - mx);
        den += ex;
        num += ex * value[s];
      }
      e[i] = num / den;
    }
    if (pol.on(QuantPoint::kBf16Pooled))
      for (std::int64_t i = 0; i < w; ++i) e[i] = bf16f(e[i]);
    const float r = inv_rms_f(e, w, static_cast<float>(call.cfg.norm_eps));
    for (std::int64_t i = 0; i < w; ++i) {
      e[i] = norm(0, i) * (e[i] * r);
      if (pol.on(QuantPoint::kBf16Norm)) e[i] = bf16f(e[i]);
    }
    rope_f(e + w - table.rope_dim, j * m, table, pol.on(QuantPoint::kBf16Rope));
    if (!indexer) {
      if (pol.on(QuantPoint::kCkvQ8)) fake_quant_row(e, w - table.rope_dim, 64, false);
    } else {
      hadamard_f(e, w);
      if (pol.on(QuantPoint::kBf16Hadamard))
        for (std::int64_t i = 0; i < w; ++i) e[i] = bf16f(e[i]);
      if (pol.on(QuantPoint::kIdxKQ4)) fake_quant_row(e, w, 32, true);
    }
  }
  TensorSet out;
  out.put("entries", to_d(entries), pol.on(QuantPoint::kBf16Rope) && !indexer ? "bf16" : "f32");
  return out;
}

TensorSet index_scores(const ComponentCall& call) {
  MatF q = to_f(call.inputs.at("q"));
  MatF wi = to_f(call.inputs.at("weights"));
  MatF keys = to_f(call.inputs.at("keys"));
  const Mat& pos = call.inputs.at("positions");
  const std::int64_t H = call.c.dim("H"), D = call.c.dim("D"), K = call.c.dim("K");
  const std::int64_t T = q.rows(), N = keys.rows();
  const bool bf = call.policy.on(QuantPoint::kBf16IndexScore);
  if (bf)
    for (MatF* m : {&q, &wi, &keys}) bf16_if(*m, call.policy, QuantPoint::kBf16IndexScore);
  MatF scores = MatF::Constant(T, N, kNegInfF);
  Mat topk = Mat::Constant(T, K, -1.0);
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t visible = std::min(N, (static_cast<std::int64_t>(pos(t, 0)) + 1) / 4);
    std::vector<float> row(static_cast<std::size_t>(visible));
    for (std::int64_t j = 0; j < visible; ++j) {
      float total = 0;
      for (std::int64_t h = 0; h < H; ++h) {
        float dot = 0;
        for (std::int64_t k = 0; k < D; ++k) dot += q(t, h * D + k) * keys(j, k);
        if (bf) dot = bf16f(dot);
        float term = wi(t, h) * std::max(dot, 0.0f);
        if (bf) term = bf16f(term);
        total += term;
      }
      if (bf) total = bf16f(total);
      scores(t, j) = row[static_cast<std::size_t>(j)] = total;
    }
    const std::vector<std::int64_t> top = topk_f(row, std::min(K, visible));
    for (std::size_t s = 0; s < top.size(); ++s)
      topk(t, static_cast<Eigen::Index>(s)) = static_cast<double>(top[s]);
  }
  TensorSet out;
  out.put("scores", to_d(scores), bf ? "bf16" : "f32");
  out.put("topk_idx", std::move(topk), "index");
  return out;
}

TensorSet router(const ComponentCall& call) {
  const MatF z = to_f(call.inputs.at("z"));
  const MatF gate = to_f(call.inputs.at("gate"));
  const MatF bias = to_f(call.inputs.at("bias"));
  const std::int64_t k = call.c.dim("k"), E = gate.rows(), T = z.rows();
  const MatF scores = router_scores_f(z, gate);
  MatF weights(T, k);
  Mat idx(T, k);
  const auto route_scale = static_cast<float>(call.cfg.route_scale);
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<float> biased(static_cast<std::size_t>(E));
    for (std::int64_t e = 0; e < E; ++e)
      biased[static_cast<std::size_t>(e)] = scores(t, e) + bias(0, e);
    const std::vector<std::int64_t> top = topk_f(biased, k);
    route_weights_f(scores.row(t).data(), top, route_scale, weights.row(t).data());
    for (std::int64_t s = 0; s < k; ++s)
      idx(t, s) = static_cast<double>(top[static_cast<std::size_t>(s)]);
  }
  TensorSet out;
  out.put("scores", to_d(scores), "f32");
  out.put("routed_idx", std::move(idx), "index");
  out.put("route_weights", to_d(weights), "f32");
  return out;
}

TensorSet hash_router(const ComponentCall& call) {
  const MatF z = to_f(call.inputs.at("z"));
  const MatF gate = to_f(call.inputs.at("gate"));
  const Mat& tokens = call.inputs.at("tokens");
  const Mat& tid2eid = call.inputs.at("tid2eid");
  const std::int64_t k = call.c.dim("k"), T = z.rows();
  const MatF scores = router_scores_f(z, gate);
  MatF weights(T, k);
  Mat idx(T, k);
  for (std::int64_t t = 0; t < T; ++t) {
    const auto id = static_cast<Eigen::Index>(tokens(t, 0));
    if (id < 0 || id >= tid2eid.rows())
      throw ShapeError("fp32 baseline: hash_router: token id " + std::to_string(id) +
                       " has no tid2eid row");
    std::vector<std::int64_t> chosen(static_cast<std::size_t>(k));
    for (std::int64_t s = 0; s < k; ++s) {
      chosen[static_cast<std::size_t>(s)] = static_cast<std::int64_t>(tid2eid(id, s));
      idx(t, s) = tid2eid(id, s);
    }
    route_weights_f(scores.row(t).data(), chosen, static_cast<float>(call.cfg.route_scale),
                    weights.row(t).data());
  }
  TensorSet out;
  out.put("scores", to_d(scores), "f32");
  out.put("routed_idx", std::move(idx), "index");
  out.put("route_weights", to_d(weights), "f32");
  return out;
}

TensorSet expert(const ComponentCall& call) {
  MatF z = to_f(call.inputs.at("z"));
  const MatF w1 = to_f(call.inputs.at("w1")), w2 = to_f(call.inputs.at("w2")),
             w3 = to_f(call.inputs.at("w3"));
  const MatF rw = to_f(call.inputs.at("row_weight"));
  const PrecisionPolicy& pol = call.policy;
  const auto L = static_cast<float>(call.cfg.swiglu_limit);
  const bool q8 = pol.on(QuantPoint::kActQ8);
  if (q8)
    for (Eigen::Index t = 0; t < z.rows(); ++t)
      fake_quant_row(z.row(t).data(), z.cols(), 128, false);
  MatF g = matmul_xwt(z, w1), p = matmul_xwt(z, w3);
  bf16_if(g, pol, QuantPoint::kBf16Linear);
  bf16_if(p, pol, QuantPoint::kBf16Linear);
  MatF hid(g.rows(), g.cols());
  for (Eigen::Index t = 0; t < g.rows(); ++t)
    for (Eigen::Index i = 0; i < g.cols(); ++i) {
      const float gi = std::min(g(t, i), L);
      const float pi = std::clamp(p(t, i), -L, L);
      hid(t, i) = rw(t, 0) * (gi / (1.0f + std::exp(-gi)) * pi);
    }
  bf16_if(hid, pol, QuantPoint::kBf16ExpertHidden);
  if (q8)
    for (Eigen::Index t = 0; t < hid.rows(); ++t)
      fake_quant_row(hid.row(t).data(), hid.cols(), 128, false);
  MatF y = matmul_xwt(hid, w2);
  bf16_if(y, pol, QuantPoint::kBf16Linear);
  TensorSet out;
  out.put("out", to_d(y), dtype_if(pol, QuantPoint::kBf16Linear));
  return out;
}

TensorSet dequant_fp8(const ComponentCall& call) {
  const Mat& codes = call.inputs.at("codes");
  const Mat& scales = call.inputs.at("scales");
  MatF y(codes.rows(), codes.cols());
  for (Eigen::Index i = 0; i < codes.rows(); ++i)
    for (Eigen::Index j = 0; j < codes.cols(); ++j) {
      const float v = fmt::e4m3_to_float(static_cast<std::uint8_t>(codes(i, j)));
      const float s = std::ldexp(1.0f, static_cast<int>(scales(i / 128, j / 128)) - 127);
      y(i, j) = v * s;
    }
  TensorSet out;
  out.put("out", to_d(y), "f32");
  return out;
}

TensorSet dequant_fp4(const ComponentCall& call) {
  const Mat& codes = call.inputs.at("codes");
  const Mat& scales = call.inputs.at("scales");
  MatF y(codes.rows(), codes.cols());
  for (Eigen::Index i = 0; i < codes.rows(); ++i)
    for (Eigen::Index j = 0; j < codes.cols(); ++j) {
      const auto v =
          static_cast<float>(fmt::e2m1_to_double(static_cast<std::uint8_t>(codes(i, j))));
      const float s = std::ldexp(1.0f, static_cast<int>(scales(i, j / 32)) - 127);
      y(i, j) = v * s;
    }
  TensorSet out;
  out.put("out", to_d(y), "f32");
  return out;
}

}  // namespace v4ref::compare::fp32
