// The float32 port of the V4 forward (fp32_forward.hpp): the component table, the composite
// steps, weight preparation, the block and model forward, and the runner adapter.
//
// Every loop below is written in float with a float accumulator, in the order a straightforward
// kernel would use (one thread block per row/token, a sequential reduction inside). Nothing here
// calls the op math of reference/; the reference is only read for the config and the weights.
#include "v4ref/compare/fp32_forward.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/dequant.hpp"

namespace v4ref::compare {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::size_t sz(std::int64_t n) { return static_cast<std::size_t>(n); }
float f(std::int64_t n) { return static_cast<float>(n); }

std::string dims(std::int64_t r, std::int64_t c) {
  return "[" + std::to_string(r) + ", " + std::to_string(c) + "]";
}

void require_shape(const F32Mat& m, std::int64_t r, std::int64_t c, const std::string& what) {
  if (m.rows != r || m.cols != c)
    throw ShapeError("fp32 port: " + what + ": expected " + dims(r, c) + ", got " +
                     dims(m.rows, m.cols));
}

float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

// The number of compressed entries visible to query position t (§6.4): ⌊(t+1)/m⌋.
std::int64_t visible(std::int64_t t, std::int64_t m) { return (t + 1) / m; }

// Scale byte -> float power of two (ue8m0, §15.5). NumericError for the NaN byte.
float ue8m0_f32(std::uint8_t u, const char* what, std::int64_t i) {
  if (u == fmt::kUe8m0Nan)
    throw NumericError(std::string("fp32 port: ") + what + ": NaN scale byte at " +
                       std::to_string(i));
  return static_cast<float>(fmt::ue8m0_to_double(u));
}

// ================================================================== default components

F32Mat dequant_fp4_f32(std::span<const std::uint8_t> packed, std::span<const std::uint8_t> scales,
                       std::int64_t rows, std::int64_t cols) {
  if (cols % 32 != 0 || static_cast<std::int64_t>(packed.size()) != rows * cols / 2 ||
      static_cast<std::int64_t>(scales.size()) != rows * (cols / 32))
    throw ShapeError("fp32 port: dequant_fp4 of logical " + dims(rows, cols) + ": got " +
                     std::to_string(packed.size()) + " packed bytes and " +
                     std::to_string(scales.size()) + " scale bytes");
  F32Mat w(rows, cols);
  const std::int64_t half = cols / 2, nb = cols / 32;
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t k = 0; k < half; ++k) {
      const std::uint8_t b = packed[sz(i * half + k)];
      const std::uint8_t lo = b & 0x0F,
                         hi = static_cast<std::uint8_t>(b >> 4);  // low nibble = even column
      const std::int64_t j0 = 2 * k, j1 = 2 * k + 1;
      w.at(i, j0) = static_cast<float>(fmt::e2m1_to_double(lo)) *
                    ue8m0_f32(scales[sz(i * nb + j0 / 32)], "dequant_fp4", i);
      w.at(i, j1) = static_cast<float>(fmt::e2m1_to_double(hi)) *
                    ue8m0_f32(scales[sz(i * nb + j1 / 32)], "dequant_fp4", i);
    }
  return w;
}

F32Mat dequant_fp8_f32(std::span<const std::uint8_t> codes, std::span<const std::uint8_t> scales,
                       std::int64_t rows, std::int64_t cols) {
  const std::int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
  if (static_cast<std::int64_t>(codes.size()) != rows * cols ||
      static_cast<std::int64_t>(scales.size()) != sr * sc)
    throw ShapeError("fp32 port: dequant_fp8 of " + dims(rows, cols) + ": got " +
                     std::to_string(codes.size()) + " codes and " + std::to_string(scales.size()) +
                     " scale bytes, expected " + std::to_string(rows * cols) + " and " +
                     std::to_string(sr * sc));
  F32Mat w(rows, cols);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) {
      const std::uint8_t q = codes[sz(i * cols + j)];
      if ((q & 0x7F) == fmt::kE4m3Nan)
        throw NumericError("fp32 port: dequant_fp8: NaN code at " + dims(i, j));
      w.at(i, j) =
          fmt::e4m3_to_float(q) * ue8m0_f32(scales[sz((i / 128) * sc + j / 128)], "dequant_fp8", i);
    }
  return w;
}

void gemm_f32(const float* x, std::int64_t ldx, std::int64_t T, const float* w, std::int64_t ldw,
              std::int64_t out, std::int64_t in, float* y, std::int64_t ldy) {
  for (std::int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * ldx;
    for (std::int64_t o = 0; o < out; ++o) {
      const float* wr = w + o * ldw;
      float s = 0.0f;
      for (std::int64_t i = 0; i < in; ++i) s += xr[i] * wr[i];
      y[t * ldy + o] = s;
    }
  }
}

void rms_norm_f32(const F32Mat& x, std::span<const float> weight, float eps, std::int64_t group,
                  F32Mat& y) {
  if (group <= 0 || x.cols % group != 0 ||
      (!weight.empty() && static_cast<std::int64_t>(weight.size()) != group))
    throw ShapeError("fp32 port: rms_norm: " + std::to_string(x.cols) + " columns in groups of " +
                     std::to_string(group) + ", weight of " + std::to_string(weight.size()));
  require_shape(y, x.rows, x.cols, "rms_norm output");
  for (std::int64_t t = 0; t < x.rows; ++t)
    for (std::int64_t g0 = 0; g0 < x.cols; g0 += group) {
      const float* xr = x.row(t) + g0;
      float ss = 0.0f;
      for (std::int64_t i = 0; i < group; ++i) ss += xr[i] * xr[i];
      const float inv = 1.0f / std::sqrt(ss / f(group) + eps);
      float* yr = y.row(t) + g0;
      for (std::int64_t i = 0; i < group; ++i)
        yr[i] = weight.empty() ? xr[i] * inv : weight[sz(i)] * (xr[i] * inv);
    }
}

void rope_f32(F32Mat& x, std::int64_t n_heads, std::int64_t head_dim,
              std::span<const std::int64_t> positions, std::span<const float> omega, bool inverse) {
  const std::int64_t pairs = static_cast<std::int64_t>(omega.size()), r = 2 * pairs;
  if (static_cast<std::int64_t>(positions.size()) != x.rows || n_heads * head_dim != x.cols ||
      r > head_dim)
    throw ShapeError("fp32 port: rope on " + dims(x.rows, x.cols) + " as " +
                     std::to_string(n_heads) + " heads of " + std::to_string(head_dim) + " with " +
                     std::to_string(positions.size()) + " positions");
  for (std::int64_t t = 0; t < x.rows; ++t) {
    const float p = static_cast<float>(positions[sz(t)]);
    for (std::int64_t j = 0; j < pairs; ++j) {
      const float theta = p * omega[sz(j)];
      const float c = std::cos(theta), s = inverse ? -std::sin(theta) : std::sin(theta);
      for (std::int64_t h = 0; h < n_heads; ++h) {
        float* e = x.row(t) + h * head_dim + head_dim - r + 2 * j;
        const float a = e[0], b = e[1];
        e[0] = a * c - b * s;
        e[1] = a * s + b * c;
      }
    }
  }
}

void hadamard_f32(F32Mat& x, std::int64_t n) {
  if (n <= 0 || (n & (n - 1)) != 0 || x.cols % n != 0)
    throw ShapeError("fp32 port: hadamard of width " + std::to_string(n) + " on " +
                     std::to_string(x.cols) + " columns");
  const float scale = 1.0f / std::sqrt(f(n));
  for (std::int64_t t = 0; t < x.rows; ++t)
    for (std::int64_t b0 = 0; b0 < x.cols; b0 += n) {
      float* v = x.row(t) + b0;
      for (std::int64_t h = 1; h < n; h *= 2)
        for (std::int64_t b = 0; b < n; b += 2 * h)
          for (std::int64_t i = b; i < b + h; ++i) {
            const float a = v[i], c = v[i + h];
            v[i] = a + c;
            v[i + h] = a - c;
          }
      for (std::int64_t i = 0; i < n; ++i) v[i] *= scale;
    }
}

void hc_mix_f32(const F32Mat& x, const F32Mat& fn, float norm_eps, F32Mat& mu) {
  if (fn.cols != x.cols)
    throw ShapeError("fp32 port: hc_mix: fn " + dims(fn.rows, fn.cols) + " on x " +
                     dims(x.rows, x.cols));
  require_shape(mu, x.rows, fn.rows, "hc_mix output");
  for (std::int64_t t = 0; t < x.rows; ++t) {
    const float* v = x.row(t);
    float ss = 0.0f;
    for (std::int64_t i = 0; i < x.cols; ++i) ss += v[i] * v[i];
    const float rho =
        1.0f / std::sqrt(ss / f(x.cols) + norm_eps);  // one scalar over all hc·d entries
    for (std::int64_t m = 0; m < fn.rows; ++m) {
      const float* w = fn.row(m);
      float s = 0.0f;
      for (std::int64_t i = 0; i < x.cols; ++i) s += w[i] * v[i];
      mu.at(t, m) = rho * s;
    }
  }
}

F32HcSplit hc_split_f32(const float* mu, const F32HcParams& p, std::int64_t hc, float hc_eps) {
  F32HcSplit s;
  s.pre.resize(sz(hc));
  s.post.resize(sz(hc));
  s.z.resize(sz(hc * hc));
  for (std::int64_t k = 0; k < hc; ++k) {
    s.pre[sz(k)] = sigmoid(p.scale[0] * mu[k] + p.base[sz(k)]) + hc_eps;
    s.post[sz(k)] = 2.0f * sigmoid(p.scale[1] * mu[hc + k] + p.base[sz(hc + k)]);
  }
  for (std::int64_t i = 0; i < hc * hc; ++i)
    s.z[sz(i)] = p.scale[2] * mu[2 * hc + i] + p.base[sz(2 * hc + i)];
  return s;
}

void sinkhorn_rows_f32(float* m, std::int64_t n, float eps) {
  for (std::int64_t j = 0; j < n; ++j) {
    float s = 0.0f;
    for (std::int64_t k = 0; k < n; ++k) s += m[j * n + k];
    for (std::int64_t k = 0; k < n; ++k) m[j * n + k] /= (s + eps);
  }
}

void sinkhorn_cols_f32(float* m, std::int64_t n, float eps) {
  for (std::int64_t k = 0; k < n; ++k) {
    float s = 0.0f;
    for (std::int64_t j = 0; j < n; ++j) s += m[j * n + k];
    for (std::int64_t j = 0; j < n; ++j) m[j * n + k] /= (s + eps);
  }
}

void sinkhorn_f32(float* m, std::int64_t n, std::int64_t iters, float eps) {
  for (std::int64_t j = 0; j < n; ++j) {  // row softmax, then + eps
    float mx = m[j * n];
    for (std::int64_t k = 1; k < n; ++k) mx = std::max(mx, m[j * n + k]);
    float s = 0.0f;
    for (std::int64_t k = 0; k < n; ++k) {
      m[j * n + k] = std::exp(m[j * n + k] - mx);
      s += m[j * n + k];
    }
    for (std::int64_t k = 0; k < n; ++k) m[j * n + k] = m[j * n + k] / s + eps;
  }
  sinkhorn_cols_f32(m, n, eps);
  for (std::int64_t it = 1; it < iters; ++it) {
    sinkhorn_rows_f32(m, n, eps);
    sinkhorn_cols_f32(m, n, eps);
  }
}

void hc_collapse_f32(const F32Mat& x, const F32Mat& w, F32Mat& u) {
  const std::int64_t hc = w.cols, d = hc > 0 ? x.cols / hc : 0;
  if (w.rows != x.rows || hc * d != x.cols)
    throw ShapeError("fp32 port: hc_collapse: x " + dims(x.rows, x.cols) + ", w " +
                     dims(w.rows, w.cols));
  require_shape(u, x.rows, d, "hc_collapse output");
  for (std::int64_t t = 0; t < x.rows; ++t)
    for (std::int64_t i = 0; i < d; ++i) {
      float s = 0.0f;
      for (std::int64_t k = 0; k < hc; ++k) s += w.at(t, k) * x.at(t, k * d + i);
      u.at(t, i) = s;
    }
}

void hc_post_f32(const F32Mat& fo, const F32Mat& x, const F32Mat& post, const F32Mat& comb,
                 F32Mat& out) {
  const std::int64_t hc = post.cols, d = fo.cols;
  if (x.cols != hc * d || comb.cols != hc * hc || x.rows != fo.rows || post.rows != fo.rows ||
      comb.rows != fo.rows)
    throw ShapeError("fp32 port: hc_post: f " + dims(fo.rows, fo.cols) + ", x " +
                     dims(x.rows, x.cols) + ", post " + dims(post.rows, post.cols) + ", comb " +
                     dims(comb.rows, comb.cols));
  require_shape(out, x.rows, x.cols, "hc_post output");
  for (std::int64_t t = 0; t < x.rows; ++t)
    for (std::int64_t k = 0; k < hc; ++k)
      for (std::int64_t i = 0; i < d; ++i) {
        float s = post.at(t, k) * fo.at(t, i);
        for (std::int64_t j = 0; j < hc; ++j)
          s += comb.at(t, j * hc + k) * x.at(t, j * d + i);  // Cᵀ X
        out.at(t, k * d + i) = s;
      }
}

void hc_head_weights_f32(const float* mu, const F32HcParams& p, std::int64_t hc, float hc_eps,
                         float* w) {
  for (std::int64_t k = 0; k < hc; ++k) w[k] = sigmoid(p.scale[0] * mu[k] + p.base[sz(k)]) + hc_eps;
}

std::int64_t window_start_f32(std::int64_t t, std::int64_t n_win) {
  return std::max<std::int64_t>(0, t - n_win + 1);
}

void sink_attention_f32(const float* q, const F32Mat& keys, std::span<const float> sink,
                        std::int64_t n_heads, std::int64_t head_dim, float scale, float* out) {
  if (keys.cols != head_dim || static_cast<std::int64_t>(sink.size()) != n_heads)
    throw ShapeError("fp32 port: sink_attention: keys " + dims(keys.rows, keys.cols) + ", " +
                     std::to_string(sink.size()) + " sinks for " + std::to_string(n_heads) +
                     " heads of " + std::to_string(head_dim));
  const std::int64_t n = keys.rows;
  std::vector<float> p(sz(n));
  for (std::int64_t h = 0; h < n_heads; ++h) {
    const float* qh = q + h * head_dim;
    float* oh = out + h * head_dim;
    for (std::int64_t i = 0; i < head_dim; ++i) oh[i] = 0.0f;
    if (n == 0) continue;
    float mx = kNegInf;
    for (std::int64_t s = 0; s < n; ++s) {
      const float* k = keys.row(s);
      float dot = 0.0f;
      for (std::int64_t i = 0; i < head_dim; ++i) dot += qh[i] * k[i];
      p[sz(s)] = dot * scale;
      mx = std::max(mx, p[sz(s)]);
    }
    float den = 0.0f;
    for (std::int64_t s = 0; s < n; ++s) {
      p[sz(s)] = std::exp(p[sz(s)] - mx);
      den += p[sz(s)];
    }
    den += std::exp(sink[sz(h)] - mx);  // the sink: denominator only, not scaled
    for (std::int64_t s = 0; s < n; ++s) {
      const float* k = keys.row(s);
      for (std::int64_t i = 0; i < head_dim; ++i) oh[i] += p[sz(s)] * k[i];
    }
    for (std::int64_t i = 0; i < head_dim; ++i) oh[i] /= den;
  }
}

F32Mat gather_keys_f32(const F32Mat& kv, std::int64_t first, std::int64_t t, const F32Mat& comp,
                       std::span<const std::int64_t> selected) {
  const std::int64_t lo = std::max<std::int64_t>(first, 0), D = kv.cols;
  if (t >= kv.rows)
    throw ShapeError("fp32 port: gather_keys: query position " + std::to_string(t) + " but " +
                     std::to_string(kv.rows) + " kv rows");
  std::int64_t n_sel = 0;
  for (const std::int64_t j : selected) {
    if (j == -1) continue;
    if (j < 0 || j >= comp.rows)
      throw ShapeError("fp32 port: selected entry " + std::to_string(j) + " outside the " +
                       std::to_string(comp.rows) + " compressed entries");
    ++n_sel;
  }
  F32Mat keys(std::max<std::int64_t>(0, t - lo + 1) + n_sel, D);
  std::int64_t n = 0;
  for (std::int64_t p = lo; p <= t; ++p, ++n) std::copy(kv.row(p), kv.row(p) + D, keys.row(n));
  for (const std::int64_t j : selected)
    if (j != -1) std::copy(comp.row(j), comp.row(j) + D, keys.row(n++));
  return keys;
}

void o_group_proj_f32(const F32Mat& o, const F32Mat& wo_a, std::int64_t groups,
                      std::int64_t head_dim, F32Mat& y) {
  const std::int64_t gw = o.cols / groups, ro = wo_a.rows / groups;
  if (groups <= 0 || o.cols % groups != 0 || gw % head_dim != 0 || wo_a.cols != gw ||
      wo_a.rows % groups != 0 || y.rows != o.rows || y.cols != wo_a.rows)
    throw ShapeError("fp32 port: o_group_proj: o " + dims(o.rows, o.cols) + ", wo_a " +
                     dims(wo_a.rows, wo_a.cols) + ", y " + dims(y.rows, y.cols) + " in " +
                     std::to_string(groups) + " groups");
  for (std::int64_t g = 0; g < groups; ++g)
    gemm_f32(o.v.data() + g * gw, o.cols, o.rows, wo_a.row(g * ro), wo_a.cols, ro, gw,
             y.v.data() + g * ro, y.cols);
}

F32Mat compressor_pool_f32(const F32Mat& kv, const F32Mat& gate, const F32Mat& ape, int ratio,
                           std::int64_t width) {
  const std::int64_t m = ratio, c = ratio == 4 ? 2 : 1, T = kv.rows, n = T / m;
  if (ratio != 4 && ratio != 128)
    throw ConfigError("fp32 port: compressor ratio " + std::to_string(ratio));
  require_shape(kv, T, c * width, "compressor kv");
  require_shape(gate, T, c * width, "compressor gate");
  require_shape(ape, m, c * width, "compressor ape");
  F32Mat out = F32Mat::poisoned(n, width);
  std::vector<float> val(sz(2 * m)), logit(sz(2 * m));
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t i = 0; i < width; ++i) {
      std::int64_t slots = 0;
      if (c == 2 && j >= 1)  // CSA: block j−1 through the first series (channels [0, w))
        for (std::int64_t r = 0; r < m; ++r) {
          const std::int64_t t = (j - 1) * m + r;
          val[sz(slots)] = kv.at(t, i);
          logit[sz(slots++)] = gate.at(t, i) + ape.at(r, i);
        }
      const std::int64_t off = c == 2 ? width : 0;  // block j: second series for CSA
      for (std::int64_t r = 0; r < m; ++r) {
        const std::int64_t t = j * m + r;
        val[sz(slots)] = kv.at(t, off + i);
        logit[sz(slots++)] = gate.at(t, off + i) + ape.at(r, off + i);
      }
      float mx = kNegInf;
      for (std::int64_t s = 0; s < slots; ++s) mx = std::max(mx, logit[sz(s)]);
      float den = 0.0f, num = 0.0f;
      for (std::int64_t s = 0; s < slots; ++s) {
        const float e = std::exp(logit[sz(s)] - mx);
        den += e;
        num += e * val[sz(s)];
      }
      out.at(j, i) = num / den;
    }
  return out;
}

std::int64_t entry_position_f32(std::int64_t j, int ratio) { return j * ratio; }

void index_scores_f32(const F32Mat& q, const F32Mat& wi, const F32Mat& keys,
                      std::span<const std::int64_t> positions, std::int64_t n_heads,
                      std::int64_t head_dim, F32Mat& scores) {
  const std::int64_t T = q.rows, N = keys.rows;
  if (q.cols != n_heads * head_dim || keys.cols != head_dim || wi.rows != T || wi.cols != n_heads ||
      static_cast<std::int64_t>(positions.size()) != T)
    throw ShapeError("fp32 port: index_scores: q " + dims(q.rows, q.cols) + ", weights " +
                     dims(wi.rows, wi.cols) + ", keys " + dims(keys.rows, keys.cols));
  require_shape(scores, T, N, "index_scores output");
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t vis = std::min(N, visible(positions[sz(t)], 4));
    for (std::int64_t j = 0; j < N; ++j) {
      if (j >= vis) {
        scores.at(t, j) = kNegInf;
        continue;
      }
      float acc = 0.0f;
      for (std::int64_t h = 0; h < n_heads; ++h) {
        const float* qh = q.row(t) + h * head_dim;
        const float* k = keys.row(j);
        float dot = 0.0f;
        for (std::int64_t i = 0; i < head_dim; ++i) dot += qh[i] * k[i];
        acc += wi.at(t, h) * std::max(dot, 0.0f);
      }
      scores.at(t, j) = acc;
    }
  }
}

// Indices of the k largest non-NaN values among v[0..n), higher first, lower index on ties.
std::vector<std::int64_t> topk_f32(const float* v, std::int64_t n, std::int64_t k) {
  std::vector<std::int64_t> idx;
  idx.reserve(sz(n));
  for (std::int64_t j = 0; j < n; ++j)
    if (!std::isnan(v[j])) idx.push_back(j);
  const std::size_t kk = std::min(idx.size(), sz(std::max<std::int64_t>(k, 0)));
  std::partial_sort(
      idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(kk), idx.end(),
      [v](std::int64_t a, std::int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  idx.resize(kk);
  return idx;
}

std::vector<std::int64_t> index_topk_f32(const float* scores, std::int64_t n, std::int64_t t,
                                         std::int64_t k) {
  const std::int64_t vis = std::min(n, visible(t, 4));
  return topk_f32(scores, vis, std::min(k, vis));
}

float softplus_f32(float z) {
  return z > 20.0f ? z : std::log1p(std::exp(z));
}  // PyTorch's threshold 20

F32Routing route_f32(const F32Mat& z, const F32RouterArgs& a) {
  const F32Mat& gate = *a.gate;
  const std::int64_t T = z.rows, E = gate.rows, k = a.k;
  if (gate.cols != z.cols || k < 1 || k > E ||
      (!a.hash && !a.bias.empty() && static_cast<std::int64_t>(a.bias.size()) != E) ||
      (a.hash && static_cast<std::int64_t>(a.tokens.size()) != T))
    throw ShapeError("fp32 port: route: z " + dims(z.rows, z.cols) + ", gate " +
                     dims(gate.rows, gate.cols) + ", k " + std::to_string(k));
  F32Routing r;
  r.scores = F32Mat::poisoned(T, E);
  r.weights = F32Mat::poisoned(T, k);
  r.idx.assign(sz(T * k), -1);
  gemm_f32(z.v.data(), z.cols, T, gate.v.data(), gate.cols, E, z.cols, r.scores.v.data(),
           E);  // gate logits
  for (float& s : r.scores.v) s = std::sqrt(softplus_f32(s));
  std::vector<float> sel(sz(E));
  for (std::int64_t t = 0; t < T; ++t) {
    const float* s = r.scores.row(t);
    std::vector<std::int64_t> chosen;
    if (a.hash) {
      const std::int64_t tok = a.tokens[sz(t)];
      if (tok < 0 || (tok + 1) * k > static_cast<std::int64_t>(a.tid2eid.size()))
        throw ShapeError("fp32 port: route: token id " + std::to_string(tok) + " outside tid2eid");
      chosen.assign(a.tid2eid.begin() + static_cast<std::ptrdiff_t>(tok * k),
                    a.tid2eid.begin() + static_cast<std::ptrdiff_t>((tok + 1) * k));
    } else {
      for (std::int64_t e = 0; e < E; ++e)
        sel[sz(e)] = s[e] + (a.bias.empty() ? 0.0f : a.bias[sz(e)]);
      chosen = topk_f32(sel.data(), E, k);  // the bias only selects
    }
    float sum = 0.0f;
    for (std::int64_t e : chosen) sum += s[e];
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(chosen.size()); ++i) {
      r.idx[sz(t * k + i)] = chosen[sz(i)];
      r.weights.at(t, i) = a.route_scale * (s[chosen[sz(i)]] / sum);
    }
  }
  return r;
}

void swiglu_f32(const float* g, const float* p, std::int64_t n, float limit, float* hid) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float gc = std::min(g[i], limit);                    // gate: upper bound only
    const float pc = std::min(std::max(p[i], -limit), limit);  // up: both sides
    hid[i] = gc / (1.0f + std::exp(-gc)) * pc;
  }
}

Fp32Components make_defaults() {
  Fp32Components c;
  c.dequant_fp4 = dequant_fp4_f32;
  c.dequant_fp8 = dequant_fp8_f32;
  c.gemm = gemm_f32;
  c.rms_norm = rms_norm_f32;
  c.rope = rope_f32;
  c.hadamard = hadamard_f32;
  c.hc_mix = hc_mix_f32;
  c.hc_split = hc_split_f32;
  c.sinkhorn = sinkhorn_f32;
  c.hc_collapse = hc_collapse_f32;
  c.hc_post = hc_post_f32;
  c.hc_head_weights = hc_head_weights_f32;
  c.window_start = window_start_f32;
  c.sink_attention = sink_attention_f32;
  c.gather_keys = gather_keys_f32;
  c.o_group_proj = o_group_proj_f32;
  c.compressor_pool = compressor_pool_f32;
  c.entry_position = entry_position_f32;
  c.index_scores = index_scores_f32;
  c.index_topk = index_topk_f32;
  c.route = route_f32;
  c.swiglu = swiglu_f32;
  return c;
}

void require_complete(const Fp32Components& c, const std::string& who) {
  const std::pair<const char*, bool> members[] = {
      {"dequant_fp4", static_cast<bool>(c.dequant_fp4)},
      {"dequant_fp8", static_cast<bool>(c.dequant_fp8)},
      {"gemm", static_cast<bool>(c.gemm)},
      {"rms_norm", static_cast<bool>(c.rms_norm)},
      {"rope", static_cast<bool>(c.rope)},
      {"hadamard", static_cast<bool>(c.hadamard)},
      {"hc_mix", static_cast<bool>(c.hc_mix)},
      {"hc_split", static_cast<bool>(c.hc_split)},
      {"sinkhorn", static_cast<bool>(c.sinkhorn)},
      {"hc_collapse", static_cast<bool>(c.hc_collapse)},
      {"hc_post", static_cast<bool>(c.hc_post)},
      {"hc_head_weights", static_cast<bool>(c.hc_head_weights)},
      {"window_start", static_cast<bool>(c.window_start)},
      {"sink_attention", static_cast<bool>(c.sink_attention)},
      {"gather_keys", static_cast<bool>(c.gather_keys)},
      {"o_group_proj", static_cast<bool>(c.o_group_proj)},
      {"compressor_pool", static_cast<bool>(c.compressor_pool)},
      {"entry_position", static_cast<bool>(c.entry_position)},
      {"index_scores", static_cast<bool>(c.index_scores)},
      {"index_topk", static_cast<bool>(c.index_topk)},
      {"route", static_cast<bool>(c.route)},
      {"swiglu", static_cast<bool>(c.swiglu)}};
  for (const auto& [name, set] : members)
    if (!set) throw ConfigError(who + ": component table member \"" + name + "\" is empty");
}

// ================================================================== weight preparation

std::vector<std::uint8_t> tensor_bytes(const TensorView& t) {
  const std::span<const std::byte> b = t.bytes();
  std::vector<std::uint8_t> out(b.size());
  if (!b.empty()) std::memcpy(out.data(), b.data(), b.size());
  return out;
}

// A linear weight through the table: fp8 / fp4 from the checkpoint's codes, bf16 / f32 from the
// reference loader's doubles (exactness checked).
F32Mat prepare_linear(const Checkpoint& ckpt, const ref::LinearWeight& lw,
                      const Fp32Components& c) {
  const std::string wname = lw.name + ".weight", sname = lw.name + ".scale";
  if (ckpt.contains(wname) && ckpt.contains(sname)) {
    const TensorView w = ckpt.tensor(wname), s = ckpt.tensor(sname);
    const std::int64_t rows = lw.w.rows(), cols = lw.w.cols();
    if (w.dtype() == DType::kI8 && s.dtype() == DType::kF8E8M0)
      return c.dequant_fp4(tensor_bytes(w), tensor_bytes(s), rows, cols);
    if (w.dtype() == DType::kF8E4M3 && s.dtype() == DType::kF8E8M0)
      return c.dequant_fp8(tensor_bytes(w), tensor_bytes(s), rows, cols);
  }
  return to_f32_exact(lw.w, lw.name);  // bf16 / f32 weights, and fp8 with F32 scales (Flash-Base)
}

F32Expert prepare_expert(const Checkpoint& ckpt, const ref::ExpertWeights& e,
                         const Fp32Components& c) {
  return F32Expert{prepare_linear(ckpt, e.w1, c), prepare_linear(ckpt, e.w2, c),
                   prepare_linear(ckpt, e.w3, c)};
}

F32HcParams prepare_hc(const ref::Mat& fn, const ref::Vec& base, const ref::Vec& scale,
                       const std::string& name) {
  return F32HcParams{to_f32_exact(fn, name + "_fn"), to_f32_exact(base, name + "_base"),
                     to_f32_exact(scale, name + "_scale")};
}

F32CompressorWeights prepare_compressor(const ref::CompressorWeights& w) {
  F32CompressorWeights o;
  o.ratio = w.ratio;
  o.indexer = w.kind == ref::CompressorKind::kIndexer;
  o.width = w.width;
  o.wkv = to_f32_exact(w.wkv.w, w.wkv.name);
  o.wgate = to_f32_exact(w.wgate.w, w.wgate.name);
  o.ape = to_f32_exact(w.ape, w.prefix + "ape");
  o.norm = to_f32_exact(w.norm, w.prefix + "norm.weight");
  return o;
}

// ================================================================== runner adapter helpers

// A runner input as the kernel receives it: the float nearest to each value (inputs are generated
// in their declared format, so this is exact for every well-formed case).
F32Mat in_f32(const TensorSet& in, std::string_view name) { return to_f32(in.at(name)); }

std::vector<float> row_f32(const TensorSet& in, std::string_view name) {
  const F32Mat m = in_f32(in, name);
  return m.v;
}

std::vector<std::int64_t> positions_of(const ref::Mat& m) {
  std::vector<std::int64_t> p(sz(m.rows()));
  for (Eigen::Index i = 0; i < m.rows(); ++i) p[sz(i)] = static_cast<std::int64_t>(m(i, 0));
  return p;
}

std::vector<std::uint8_t> bytes_of(const ref::Mat& m) {
  std::vector<std::uint8_t> b(sz(m.size()));
  for (Eigen::Index i = 0; i < m.size(); ++i) b[sz(i)] = static_cast<std::uint8_t>(m.data()[i]);
  return b;
}

}  // namespace

// ================================================================== storage

F32Mat::F32Mat(std::int64_t r, std::int64_t c, float fill) : rows(r), cols(c), v(sz(r * c), fill) {}

float f32_poison() { return fmt::float_from_bits(0x7FC0DEADu); }

F32Mat F32Mat::poisoned(std::int64_t r, std::int64_t c) { return F32Mat(r, c, f32_poison()); }

F32Mat to_f32(const ref::Mat& m) {
  F32Mat o(m.rows(), m.cols());
  for (Eigen::Index i = 0; i < m.size(); ++i) o.v[sz(i)] = static_cast<float>(m.data()[i]);
  return o;
}

F32Mat to_f32_exact(const ref::Mat& m, std::string_view name) {
  F32Mat o = to_f32(m);
  for (Eigen::Index i = 0; i < m.size(); ++i) {
    const double d = m.data()[i];
    if (!(static_cast<double>(o.v[sz(i)]) == d) && !(std::isnan(d) && std::isnan(o.v[sz(i)])))
      throw NumericError(
          "fp32 port: " + std::string(name) + " is not exactly a float at " +
          dims(i / std::max<Eigen::Index>(1, m.cols()), i % std::max<Eigen::Index>(1, m.cols())) +
          ": " + detail::number_string(d));
  }
  return o;
}

std::vector<float> to_f32_exact(const ref::Vec& v, std::string_view name) {
  const ref::Mat m = Eigen::Map<const ref::Mat>(v.data(), 1, v.size());
  return to_f32_exact(m, name).v;
}

ref::Mat to_f64(const F32Mat& m) {
  ref::Mat o(m.rows, m.cols);
  for (std::int64_t i = 0; i < m.size(); ++i) o.data()[i] = static_cast<double>(m.v[sz(i)]);
  return o;
}

std::vector<float> rope_omega_f32(double base, bool yarn, const YarnConfig& y,
                                  std::int64_t rope_dim) {
  if (rope_dim <= 0 || rope_dim % 2 != 0 || !(base > 1.0))
    throw ConfigError("fp32 port: RoPE table with base " + detail::number_string(base) +
                      " and dim " + std::to_string(rope_dim));
  const std::int64_t pairs = rope_dim / 2;
  const double pi = 3.14159265358979323846;
  const auto corr = [&](double rot) {
    return static_cast<double>(rope_dim) *
           std::log(static_cast<double>(y.original_seq_len) / (rot * 2.0 * pi)) /
           (2.0 * std::log(base));
  };
  double low = 0, high = 0;
  if (yarn) {
    low = std::max(std::floor(corr(y.beta_fast)), 0.0);
    high = std::min(std::ceil(corr(y.beta_slow)), static_cast<double>(rope_dim - 1));
    if (low == high) high += 0.001;
  }
  std::vector<float> omega(sz(pairs));
  for (std::int64_t j = 0; j < pairs; ++j) {
    double w = std::pow(base, -2.0 * static_cast<double>(j) / static_cast<double>(rope_dim));
    if (yarn) {
      const double ramp = std::clamp((static_cast<double>(j) - low) / (high - low), 0.0, 1.0);
      w = w * (1.0 - ramp) + (w / y.factor) * ramp;
    }
    omega[sz(j)] = static_cast<float>(w);
  }
  return omega;
}

const Fp32Components& default_fp32_components() {
  static const Fp32Components c = make_defaults();
  return c;
}

// ================================================================== composite steps

F32Mat f32_linear(const Fp32Components& c, const F32Mat& x, const F32Mat& w) {
  if (w.cols != x.cols)
    throw ShapeError("fp32 port: linear: x " + dims(x.rows, x.cols) + " against weight " +
                     dims(w.rows, w.cols));
  F32Mat y = F32Mat::poisoned(x.rows, w.rows);
  c.gemm(x.v.data(), x.cols, x.rows, w.v.data(), w.cols, w.rows, w.cols, y.v.data(), y.cols);
  return y;
}

F32HcPre f32_hc_pre(const Fp32Components& c, const F32Mat& x, const F32HcParams& p, std::int64_t hc,
                    std::int64_t sinkhorn_iters, float norm_eps, float hc_eps) {
  const std::int64_t T = x.rows;
  F32Mat mu = F32Mat::poisoned(T, p.fn.rows);
  c.hc_mix(x, p.fn, norm_eps, mu);
  F32HcPre r;
  r.pre = F32Mat::poisoned(T, hc);
  r.post = F32Mat::poisoned(T, hc);
  r.comb = F32Mat::poisoned(T, hc * hc);
  for (std::int64_t t = 0; t < T; ++t) {
    F32HcSplit s = c.hc_split(mu.row(t), p, hc, hc_eps);
    if (static_cast<std::int64_t>(s.pre.size()) != hc ||
        static_cast<std::int64_t>(s.post.size()) != hc ||
        static_cast<std::int64_t>(s.z.size()) != hc * hc)
      throw ShapeError("fp32 port: hc_split returned the wrong sizes");
    c.sinkhorn(s.z.data(), hc, sinkhorn_iters, hc_eps);
    std::copy(s.pre.begin(), s.pre.end(), r.pre.row(t));
    std::copy(s.post.begin(), s.post.end(), r.post.row(t));
    std::copy(s.z.begin(), s.z.end(), r.comb.row(t));
  }
  r.u = F32Mat::poisoned(T, hc > 0 ? x.cols / hc : 0);
  c.hc_collapse(x, r.pre, r.u);
  return r;
}

F32Mat f32_hc_head(const Fp32Components& c, const F32Mat& x, const F32HcParams& p, std::int64_t hc,
                   float norm_eps, float hc_eps) {
  const std::int64_t T = x.rows;
  F32Mat mu = F32Mat::poisoned(T, p.fn.rows);
  c.hc_mix(x, p.fn, norm_eps, mu);
  F32Mat w = F32Mat::poisoned(T, hc);
  for (std::int64_t t = 0; t < T; ++t) c.hc_head_weights(mu.row(t), p, hc, hc_eps, w.row(t));
  F32Mat y = F32Mat::poisoned(T, x.cols / hc);
  c.hc_collapse(x, w, y);
  return y;
}

F32QueryPath f32_q_path(const Fp32Components& c, const F32Mat& x, const F32Mat& wq_a,
                        std::span<const float> q_norm, const F32Mat& wq_b,
                        std::span<const std::int64_t> positions, std::span<const float> omega,
                        std::int64_t n_heads, std::int64_t head_dim, float norm_eps) {
  if (wq_b.rows != n_heads * head_dim)
    throw ShapeError("fp32 port: q_path: wq_b " + dims(wq_b.rows, wq_b.cols) + " for " +
                     std::to_string(n_heads) + " heads of " + std::to_string(head_dim));
  const F32Mat ql = f32_linear(c, x, wq_a);  // [T, L_q]
  F32QueryPath r;
  r.c = F32Mat::poisoned(ql.rows, ql.cols);
  c.rms_norm(ql, q_norm, norm_eps, ql.cols, r.c);
  const F32Mat qraw = f32_linear(c, r.c, wq_b);  // [T, H·D]
  r.q = F32Mat::poisoned(qraw.rows, qraw.cols);
  c.rms_norm(qraw, {}, norm_eps, head_dim, r.q);  // per-head unweighted norm (§2.2)
  c.rope(r.q, n_heads, head_dim, positions, omega, false);
  return r;
}

F32Mat f32_kv_path(const Fp32Components& c, const F32Mat& x, const F32Mat& wkv,
                   std::span<const float> kv_norm, std::span<const std::int64_t> positions,
                   std::span<const float> omega, float norm_eps) {
  const F32Mat kvraw = f32_linear(c, x, wkv);  // [T, D]
  F32Mat kv = F32Mat::poisoned(kvraw.rows, kvraw.cols);
  c.rms_norm(kvraw, kv_norm, norm_eps, kvraw.cols, kv);
  c.rope(kv, 1, kv.cols, positions, omega, false);
  return kv;
}

F32Mat f32_index_queries(const Fp32Components& c, const F32Mat& cl, const F32Mat& wq_b,
                         std::span<const std::int64_t> positions, std::span<const float> omega,
                         std::int64_t n_heads, std::int64_t head_dim) {
  if (wq_b.rows != n_heads * head_dim)
    throw ShapeError("fp32 port: index_queries: wq_b " + dims(wq_b.rows, wq_b.cols) + " for " +
                     std::to_string(n_heads) + " heads of " + std::to_string(head_dim));
  F32Mat q = f32_linear(c, cl, wq_b);  // [T, H_I·D_I]
  c.rope(q, n_heads, head_dim, positions, omega, false);
  c.hadamard(q, head_dim);  // per head (§2.4)
  return q;
}

F32Mat f32_index_weights(const Fp32Components& c, const F32Mat& x, const F32Mat& weights_proj,
                         std::int64_t n_heads, std::int64_t head_dim) {
  if (weights_proj.rows != n_heads)
    throw ShapeError("fp32 port: index_weights: weights_proj " +
                     dims(weights_proj.rows, weights_proj.cols) + " for " +
                     std::to_string(n_heads) + " heads");
  F32Mat wi = f32_linear(c, x, weights_proj);  // [T, H_I]
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim * n_heads)));
  for (float& v : wi.v) v *= scale;
  return wi;
}

F32Mat f32_attention_core(const Fp32Components& c, const F32Mat& q, const F32Mat& kv,
                          const F32Mat& compressed, std::span<const std::int64_t> selected,
                          std::int64_t k, std::span<const float> sink, std::int64_t q_start,
                          std::int64_t n_heads, std::int64_t head_dim, std::int64_t n_win) {
  if (q.cols != n_heads * head_dim || kv.cols != head_dim || q_start < 0 ||
      kv.rows < q_start + q.rows || k < 0 || static_cast<std::int64_t>(selected.size()) != q.rows * k)
    throw ShapeError("fp32 port: attention_core: q " + dims(q.rows, q.cols) + ", kv " +
                     dims(kv.rows, kv.cols) + ", " + std::to_string(selected.size()) +
                     " selection entries for k = " + std::to_string(k) + ", q_start " +
                     std::to_string(q_start));
  F32Mat o = F32Mat::poisoned(q.rows, q.cols);
  const float scale = 1.0f / std::sqrt(f(head_dim));
  for (std::int64_t i = 0; i < q.rows; ++i) {
    const std::int64_t t = q_start + i;
    const F32Mat keys = c.gather_keys(kv, c.window_start(t, n_win), t, compressed,
                                      selected.subspan(sz(i * k), sz(k)));
    c.sink_attention(q.row(i), keys, sink, n_heads, head_dim, scale, o.row(i));
  }
  return o;
}

F32Mat f32_grouped_out_proj(const Fp32Components& c, const F32Mat& o, const F32Mat& wo_a,
                            const F32Mat& wo_b, std::int64_t groups, std::int64_t head_dim) {
  F32Mat y = F32Mat::poisoned(o.rows, wo_a.rows);
  c.o_group_proj(o, wo_a, groups, head_dim, y);
  return f32_linear(c, y, wo_b);
}

F32Mat f32_compress(const Fp32Components& c, const F32Mat& x, const F32CompressorWeights& w,
                    std::span<const float> omega, float norm_eps) {
  const F32Mat kv = f32_linear(c, x, w.wkv);  // [T, c·w]
  const F32Mat gate = f32_linear(c, x, w.wgate);
  const F32Mat pooled = c.compressor_pool(kv, gate, w.ape, w.ratio, w.width);  // [N, w]
  F32Mat e = F32Mat::poisoned(pooled.rows, pooled.cols);
  c.rms_norm(pooled, w.norm, norm_eps, w.width, e);
  std::vector<std::int64_t> pos(sz(pooled.rows));
  for (std::int64_t j = 0; j < pooled.rows; ++j) pos[sz(j)] = c.entry_position(j, w.ratio);
  c.rope(e, 1, w.width, pos, omega, false);
  if (w.indexer) c.hadamard(e, w.width);
  return e;
}

F32Mat f32_expert(const Fp32Components& c, const F32Mat& z, const F32Expert& e,
                  std::span<const float> row_weight, float limit) {
  const F32Mat g = f32_linear(c, z, e.w1), p = f32_linear(c, z, e.w3);  // [n, I]
  F32Mat hid = F32Mat::poisoned(g.rows, g.cols);
  for (std::int64_t r = 0; r < g.rows; ++r) {
    c.swiglu(g.row(r), p.row(r), g.cols, limit, hid.row(r));
    if (!row_weight.empty())
      for (std::int64_t i = 0; i < g.cols; ++i) hid.at(r, i) *= row_weight[sz(r)];
  }
  return f32_linear(c, hid, e.w2);
}

// ================================================================== weight preparation

F32LayerWeights prepare_layer_f32(const ref::Model& model, std::int64_t i,
                                  const Fp32Components& c) {
  const ModelConfig& cfg = model.config();
  const Checkpoint& ckpt = model.checkpoint();
  const auto lw = model.layer_weights(i);
  const ref::LayerWeights& w = *lw;
  F32LayerWeights o;
  o.layer = w.layer;
  o.omega = rope_omega_f32(w.layer.rope_base, w.layer.rope_yarn, cfg.yarn, cfg.rope_head_dim);
  o.hc_attn = prepare_hc(w.hc_attn.fn, w.hc_attn.base, w.hc_attn.scale, w.hc_attn.name);
  o.hc_ffn = prepare_hc(w.hc_ffn.fn, w.hc_ffn.base, w.hc_ffn.scale, w.hc_ffn.name);
  o.attn_norm = to_f32_exact(w.attn_norm, w.layer.prefix + "attn_norm.weight");
  o.ffn_norm = to_f32_exact(w.ffn_norm, w.layer.prefix + "ffn_norm.weight");
  o.wq_a = prepare_linear(ckpt, w.attn.wq_a, c);
  o.wq_b = prepare_linear(ckpt, w.attn.wq_b, c);
  o.wkv = prepare_linear(ckpt, w.attn.wkv, c);
  o.wo_a = prepare_linear(ckpt, w.attn.wo_a, c);
  o.wo_b = prepare_linear(ckpt, w.attn.wo_b, c);
  o.q_norm = to_f32_exact(w.attn.q_norm, w.attn.prefix + ".q_norm.weight");
  o.kv_norm = to_f32_exact(w.attn.kv_norm, w.attn.prefix + ".kv_norm.weight");
  o.attn_sink = to_f32_exact(w.attn.attn_sink, w.attn.prefix + ".attn_sink");
  if (w.compressor) {
    o.has_compressor = true;
    o.compressor = prepare_compressor(*w.compressor);
  }
  if (w.indexer) {
    o.has_indexer = true;
    o.indexer_compressor = prepare_compressor(w.indexer->compressor);
    o.index_wq_b = prepare_linear(ckpt, w.indexer->wq_b, c);
    o.index_weights_proj = prepare_linear(ckpt, w.indexer->weights_proj, c);
  }
  const ref::MoeWeights& m = w.moe;
  o.gate = prepare_linear(ckpt, m.gate, c);
  if (m.hash_routed) {
    o.tid2eid.assign(m.tid2eid.data(), m.tid2eid.data() + m.tid2eid.size());
  } else {
    o.gate_bias = to_f32_exact(m.bias, m.prefix + "gate.bias");
  }
  // Routed experts straight from the checkpoint's packed codes (the loader's doubles are never
  // used for them, so the port's own nibble unpacking is what the forward runs on).
  for (std::int64_t e = 0; e < m.n_experts; ++e) {
    const std::string p = m.prefix + "experts." + std::to_string(e) + ".";
    ref::ExpertWeights shapes;  // names and logical shapes only
    shapes.w1.name = p + "w1";
    shapes.w2.name = p + "w2";
    shapes.w3.name = p + "w3";
    shapes.w1.w.resize(m.inter_dim, m.dim);
    shapes.w2.w.resize(m.dim, m.inter_dim);
    shapes.w3.w.resize(m.inter_dim, m.dim);
    const bool coded = ckpt.contains(p + "w1.scale") && ckpt.contains(p + "w2.scale") &&
                       ckpt.contains(p + "w3.scale");
    if (coded) {
      o.experts.push_back(prepare_expert(ckpt, shapes, c));
    } else {  // plain-dtype experts: through the reference loader's exact doubles
      o.experts.push_back(prepare_expert(ckpt, *m.experts.get(e), c));
    }
  }
  o.shared = prepare_expert(ckpt, m.shared, c);
  return o;
}

// ================================================================== the forward

Fp32Forward::Fp32Forward(ref::Model model, Fp32Components components, std::string name)
    : model_(std::move(model)), comps_(std::move(components)), name_(std::move(name)) {
  require_complete(comps_, "Fp32Forward " + name_);
  const PrecisionPolicy& pol = model_.policy();
  if (!(pol == PrecisionPolicy::exact()))
    throw ConfigError(
        "Fp32Forward " + name_ +
        ": the model must be opened in exact mode (this port implements the exact math)");
  layers_.resize(sz(model_.config().n_layers));
}

const F32LayerWeights& Fp32Forward::layer_weights(std::int64_t i) const {
  const ModelConfig& cfg = model_.config();
  if (i < 0 || i >= cfg.n_layers)
    throw ConfigError("Fp32Forward: layer " + std::to_string(i) + " outside 0.." +
                      std::to_string(cfg.n_layers - 1));
  std::lock_guard lock(mu_);
  auto& slot = layers_[sz(i)];
  if (!slot) slot = std::make_shared<const F32LayerWeights>(prepare_layer_f32(model_, i, comps_));
  return *slot;
}

const Fp32Forward::Head& Fp32Forward::head() const {
  std::lock_guard lock(mu_);
  if (!head_) {
    const ModelConfig& cfg = model_.config();
    const Checkpoint& ckpt = model_.checkpoint();
    auto load = [&](const std::string& n, std::int64_t rows, std::int64_t cols) {
      const std::vector<double> v = load_as_double(ckpt, n);
      if (static_cast<std::int64_t>(v.size()) != rows * cols)
        throw ShapeError("fp32 port: " + n + ": expected " + dims(rows, cols) + ", got " +
                         std::to_string(v.size()) + " values");
      return to_f32_exact(ref::Mat(Eigen::Map<const ref::Mat>(v.data(), rows, cols)), n);
    };
    auto h = std::make_shared<Head>();
    h->norm = load("norm.weight", 1, cfg.dim).v;
    h->hc_head.fn = load("hc_head_fn", cfg.hc_mult, cfg.hc_dim());
    h->hc_head.base = load("hc_head_base", 1, cfg.hc_mult).v;
    h->hc_head.scale = load("hc_head_scale", 1, 1).v;
    h->head = load("head.weight", cfg.vocab_size, cfg.dim);
    head_ = std::move(h);
  }
  return *head_;
}

F32Mat Fp32Forward::embed(std::span<const std::int64_t> tokens) const {
  const ModelConfig& cfg = model_.config();
  const TensorView ew = model_.checkpoint().tensor("embed.weight");
  ew.require_dtype(DType::kBF16);
  ew.require_shape({cfg.vocab_size, cfg.dim});
  F32Mat h = F32Mat::poisoned(static_cast<std::int64_t>(tokens.size()), cfg.dim);
  for (std::int64_t t = 0; t < h.rows; ++t)
    for (std::int64_t i = 0; i < cfg.dim; ++i)
      h.at(t, i) = fmt::bf16_to_float(ew.raw<std::uint16_t>(tokens[sz(t)] * cfg.dim + i));
  return h;
}

F32Mat Fp32Forward::attention(const F32LayerWeights& w, const F32Mat& xa,
                              ref::LayerTrace* trace) const {
  const ModelConfig& cfg = model_.config();
  const Fp32Components& c = comps_;
  const std::int64_t T = xa.rows, H = cfg.n_heads, D = cfg.head_dim;
  const float eps = static_cast<float>(cfg.norm_eps);
  std::vector<std::int64_t> pos(sz(T));
  std::iota(pos.begin(), pos.end(), 0);

  // §5.1 query path, §5.2 K = V
  const F32QueryPath qp = f32_q_path(c, xa, w.wq_a, w.q_norm, w.wq_b, pos, w.omega, H, D, eps);
  const F32Mat& cl = qp.c;
  const F32Mat& q = qp.q;
  const F32Mat kv = f32_kv_path(c, xa, w.wkv, w.kv_norm, pos, w.omega, eps);

  // §6 compressed entries, §7 selection: sel [T, k] row-major with −1 trailing padding, the
  // index matrix a kernel receives (HCA: all visible entries; CSA: the indexer's top-k)
  F32Mat comp(0, D);
  std::vector<std::int64_t> sel;
  std::int64_t k = 0;
  const int m = w.layer.ratio;
  if (w.has_compressor) comp = f32_compress(c, xa, w.compressor, w.omega, eps);
  if (w.layer.kind == LayerKind::kHca) {
    k = T > 0 ? std::min(comp.rows, visible(T - 1, m)) : 0;
    sel.assign(sz(T * k), -1);
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t j = 0; j < std::min(comp.rows, visible(t, m)); ++j) sel[sz(t * k + j)] = j;
  } else if (w.layer.kind == LayerKind::kCsa) {
    const std::int64_t HI = cfg.index_n_heads, DI = cfg.index_head_dim;
    const F32Mat keys = f32_compress(c, xa, w.indexer_compressor, w.omega, eps);  // [N, D_I]
    const F32Mat qi = f32_index_queries(c, cl, w.index_wq_b, pos, w.omega, HI, DI);  // §7.2
    const F32Mat wi = f32_index_weights(c, xa, w.index_weights_proj, HI, DI);
    F32Mat scores = F32Mat::poisoned(T, keys.rows);
    c.index_scores(qi, wi, keys, pos, HI, DI, scores);
    k = cfg.index_topk;
    sel.assign(sz(T * k), -1);
    F32Mat idx(T, k, -1.0f);
    for (std::int64_t t = 0; t < T; ++t) {
      const std::vector<std::int64_t> top = c.index_topk(scores.row(t), scores.cols, t, k);
      if (static_cast<std::int64_t>(top.size()) > k)
        throw ShapeError("fp32 port: index_topk returned " + std::to_string(top.size()) +
                         " entries for k = " + std::to_string(k));
      for (std::size_t r = 0; r < top.size(); ++r) {
        sel[sz(t * k) + r] = top[r];
        idx.at(t, static_cast<std::int64_t>(r)) = static_cast<float>(top[r]);
      }
    }
    if (trace != nullptr) {
      trace->tensors["attn.index_keys"] = to_f64(keys);
      trace->tensors["attn.index_scores"] = to_f64(scores);
      trace->tensors["attn.topk_idx"] = to_f64(idx);
    }
  }

  // §5.3–5.4: per query, window ∪ selected keys gathered into one contiguous buffer
  const F32Mat o =
      f32_attention_core(c, q, kv, comp, sel, k, w.attn_sink, 0, H, D, cfg.window_size);
  // §5.5 de-rotation, grouped output projection
  F32Mat od = o;
  c.rope(od, H, D, pos, w.omega, true);
  F32Mat out = f32_grouped_out_proj(c, od, w.wo_a, w.wo_b, cfg.o_groups, D);
  if (trace != nullptr) {
    trace->tensors["attn.c"] = to_f64(cl);
    trace->tensors["attn.q"] = to_f64(q);
    trace->tensors["attn.kv"] = to_f64(kv);
    if (w.has_compressor) trace->tensors["attn.compressed"] = to_f64(comp);
    trace->tensors["attn.o"] = to_f64(o);
    trace->tensors["attn.out"] = to_f64(out);
  }
  return out;
}

F32Mat Fp32Forward::moe(const F32LayerWeights& w, const F32Mat& z,
                        std::span<const std::int64_t> tokens, ref::LayerTrace* trace) const {
  const ModelConfig& cfg = model_.config();
  const Fp32Components& c = comps_;
  const std::int64_t T = z.rows, k = cfg.n_activated_experts,
                     E = static_cast<std::int64_t>(w.experts.size());
  const float limit = static_cast<float>(cfg.swiglu_limit);
  F32RouterArgs a;
  a.gate = &w.gate;
  a.hash = w.layer.hash_routed;
  a.bias = w.gate_bias;
  a.tid2eid = w.tid2eid;
  a.tokens = tokens;
  a.k = k;
  a.route_scale = static_cast<float>(cfg.route_scale);
  const F32Routing r = c.route(z, a);
  if (static_cast<std::int64_t>(r.idx.size()) != T * k)
    throw ShapeError("fp32 port: route returned the wrong number of experts");

  for (std::int64_t t = 0; t < T;
       ++t)  // −1: no expert (a row whose scores are all NaN selects nothing)
    for (std::int64_t i = 0; i < k; ++i)
      if (r.idx[sz(t * k + i)] < -1 || r.idx[sz(t * k + i)] >= E)
        throw ShapeError("fp32 port: routed expert " + std::to_string(r.idx[sz(t * k + i)]) +
                         " outside [0, " + std::to_string(E) + ")");
  F32Mat y(T, z.cols, 0.0f);
  for (std::int64_t e = 0; e < E; ++e) {  // experts ascending, each on its token group
    std::vector<std::int64_t> rows;
    std::vector<float> rw;
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t i = 0; i < k; ++i)
        if (r.idx[sz(t * k + i)] == e) {
          rows.push_back(t);
          rw.push_back(r.weights.at(t, i));
        }
    if (rows.empty()) continue;
    F32Mat zr(static_cast<std::int64_t>(rows.size()), z.cols);
    for (std::size_t n = 0; n < rows.size(); ++n)
      std::copy(z.row(rows[n]), z.row(rows[n]) + z.cols, zr.row(static_cast<std::int64_t>(n)));
    const F32Mat out = f32_expert(c, zr, w.experts[sz(e)], rw, limit);
    for (std::size_t n = 0; n < rows.size(); ++n)
      for (std::int64_t i = 0; i < z.cols; ++i)
        y.at(rows[n], i) += out.at(static_cast<std::int64_t>(n), i);
  }
  const F32Mat sh = f32_expert(c, z, w.shared, {}, limit);
  for (std::int64_t i = 0; i < y.size(); ++i) y.v[sz(i)] += sh.v[sz(i)];
  if (trace != nullptr) {
    ref::Mat idx(T, k);
    for (std::int64_t i = 0; i < T * k; ++i) idx.data()[i] = static_cast<double>(r.idx[sz(i)]);
    trace->tensors["ffn.scores"] = to_f64(r.scores);
    trace->tensors["ffn.routed_idx"] = std::move(idx);
    trace->tensors["ffn.route_weights"] = to_f64(r.weights);
    trace->tensors["ffn.out"] = to_f64(y);
  }
  return y;
}

F32Mat Fp32Forward::block(std::int64_t layer, const F32Mat& x, std::span<const std::int64_t> tokens,
                          ref::LayerTrace* trace) const {
  const ModelConfig& cfg = model_.config();
  const F32LayerWeights& w = layer_weights(layer);
  const Fp32Components& c = comps_;
  const std::int64_t hc = cfg.hc_mult, d = cfg.dim;
  const float eps = static_cast<float>(cfg.norm_eps), hc_eps = static_cast<float>(cfg.hc_eps);
  if (x.cols != cfg.hc_dim() || static_cast<std::int64_t>(tokens.size()) != x.rows)
    throw ShapeError("fp32 port: " + w.layer.prefix + "block input " + dims(x.rows, x.cols) +
                     " with " + std::to_string(tokens.size()) + " token ids");

  const F32HcPre pa = f32_hc_pre(c, x, w.hc_attn, hc, cfg.hc_sinkhorn_iters, eps, hc_eps);
  F32Mat xa = F32Mat::poisoned(x.rows, d);
  c.rms_norm(pa.u, w.attn_norm, eps, d, xa);
  const F32Mat a = attention(w, xa, trace);
  F32Mat x1 = F32Mat::poisoned(x.rows, x.cols);
  c.hc_post(a, x, pa.post, pa.comb, x1);

  const F32HcPre pf = f32_hc_pre(c, x1, w.hc_ffn, hc, cfg.hc_sinkhorn_iters, eps, hc_eps);
  F32Mat z = F32Mat::poisoned(x.rows, d);
  c.rms_norm(pf.u, w.ffn_norm, eps, d, z);
  const F32Mat fo = moe(w, z, tokens, trace);
  F32Mat x2 = F32Mat::poisoned(x.rows, x.cols);
  c.hc_post(fo, x1, pf.post, pf.comb, x2);
  if (trace != nullptr) {
    auto& tt = trace->tensors;
    tt["hc_attn.u"] = to_f64(pa.u);
    tt["hc_attn.pre"] = to_f64(pa.pre);
    tt["hc_attn.post"] = to_f64(pa.post);
    tt["hc_attn.comb"] = to_f64(pa.comb);
    tt["attn_norm"] = to_f64(xa);
    tt["hc_attn.out"] = to_f64(x1);
    tt["hc_ffn.u"] = to_f64(pf.u);
    tt["hc_ffn.pre"] = to_f64(pf.pre);
    tt["hc_ffn.post"] = to_f64(pf.post);
    tt["hc_ffn.comb"] = to_f64(pf.comb);
    tt["ffn_norm"] = to_f64(z);
    tt["block.out"] = to_f64(x2);
  }
  return x2;
}

ref::Mat Fp32Forward::run_block(const ref::Model& model, std::int64_t layer, const ref::Mat& x,
                                std::span<const std::int64_t> tokens,
                                ref::LayerTrace& trace) const {
  if (!(model.config() == model_.config()))
    throw ConfigError("Fp32Forward " + name_ + ": run_block called with a model of config " +
                      model.config().name + ", the port was built for " + model_.config().name);
  trace.tensors["block.in"] = x;  // the input as given (the port rounds it to float)
  return to_f64(block(layer, to_f32(x), tokens, &trace));
}

F32Mat Fp32Forward::logits(const F32Mat& streams, ref::Trace* trace) const {
  const ModelConfig& cfg = model_.config();
  const Head& h = head();
  const float eps = static_cast<float>(cfg.norm_eps);
  const F32Mat y =
      f32_hc_head(comps_, streams, h.hc_head, cfg.hc_mult, eps, static_cast<float>(cfg.hc_eps));
  F32Mat n = F32Mat::poisoned(y.rows, y.cols);
  comps_.rms_norm(y, h.norm, eps, cfg.dim, n);
  F32Mat l = f32_linear(comps_, n, h.head);
  if (trace != nullptr) {
    trace->put(std::string(ref::trace_names::kHcHeadOut), to_f64(y));
    trace->put(std::string(ref::trace_names::kNormOut), to_f64(n));
    trace->put(std::string(ref::trace_names::kLogits), to_f64(l));
  }
  return l;
}

ref::Mat Fp32Forward::forward(std::span<const std::int64_t> tokens,
                              const ref::ForwardRequest& request, ref::Trace* trace) const {
  const ModelConfig& cfg = model_.config();
  model_.check_tokens(tokens);
  const std::int64_t T = static_cast<std::int64_t>(tokens.size());
  const std::int64_t first = request.first_layer;
  const std::int64_t last = request.last_layer < 0 ? cfg.n_layers - 1 : request.last_layer;
  if (first < 0 || last >= cfg.n_layers || first > last)
    throw ConfigError("Fp32Forward: layer range " + std::to_string(first) + ".." +
                      std::to_string(last) + " outside 0.." + std::to_string(cfg.n_layers - 1));
  if (trace != nullptr) trace->tokens().assign(tokens.begin(), tokens.end());
  auto teacher_at = [&](const std::string& name) -> const ref::Mat& {
    const ref::Mat& m = request.teacher->at(name);
    if (m.rows() != T || m.cols() != cfg.hc_dim())
      throw ShapeError("Fp32Forward: teacher " + request.teacher->source() + " " + name + " is " +
                       dims(m.rows(), m.cols()) + ", expected " + dims(T, cfg.hc_dim()));
    return m;
  };

  F32Mat x;
  std::int64_t begin = 0;
  if (request.teacher != nullptr) {
    begin = first;
  } else {
    const F32Mat h = embed(tokens);
    x = F32Mat(T, cfg.hc_dim());
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t k = 0; k < cfg.hc_mult; ++k)
        std::copy(h.row(t), h.row(t) + cfg.dim, x.row(t) + k * cfg.dim);
    if (trace != nullptr && first == 0)
      trace->put(std::string(ref::trace_names::kEmbed), to_f64(h));
  }
  for (std::int64_t i = begin; i <= last; ++i) {
    const bool traced = trace != nullptr && i >= first;
    ref::LayerTrace lt;
    if (request.teacher != nullptr) {
      const ref::Mat& xin = teacher_at(ref::trace_names::layer(cfg, i, "block.in"));
      if (traced) lt.tensors["block.in"] = xin;
      x = to_f32(xin);
    } else if (traced) {
      lt.tensors["block.in"] = to_f64(x);
    }
    x = block(i, x, tokens, traced ? &lt : nullptr);
    if (traced) {
      const std::string prefix = ref::trace_names::block_prefix(cfg, i);
      for (const std::string& k : ref::trace_names::block_keys()) {
        auto it = lt.tensors.find(k);
        if (it != lt.tensors.end()) trace->put(prefix + k, std::move(it->second));
      }
    }
  }
  if (last != cfg.n_layers - 1) return ref::Mat();
  if (request.teacher != nullptr)
    x = to_f32(teacher_at(ref::trace_names::layer(cfg, last, "block.out")));
  return to_f64(logits(x, trace));
}

// ================================================================== runner adapter

namespace {

void require_exact(const ComponentCall& k) {
  if (!(k.policy == PrecisionPolicy::exact()))
    throw Error("fp32 port: case " + k.c.name() +
                " is not in exact mode; the port implements the exact math only");
}

TensorSet out1(const std::string& name, const F32Mat& m) {
  TensorSet o;
  o.put(name, to_f64(m), "f32");
  return o;
}

// The router outputs of a case: scores [T, E], routed_idx [T, k], route_weights [T, k].
TensorSet routing_outputs(const F32Routing& r, std::int64_t k) {
  ref::Mat idx(r.weights.rows, k);
  for (std::int64_t i = 0; i < idx.size(); ++i) idx.data()[i] = static_cast<double>(r.idx[sz(i)]);
  TensorSet o;
  o.put("scores", to_f64(r.scores), "f32");
  o.put("routed_idx", std::move(idx), "index");
  o.put("route_weights", to_f64(r.weights), "f32");
  return o;
}

using Adapter = std::function<TensorSet(const Fp32Components&, const ComponentCall&)>;

const std::map<std::string, Adapter, std::less<>>& adapters() {
  static const std::map<std::string, Adapter, std::less<>> table = {
      {"rms_norm",
       [](const Fp32Components& c, const ComponentCall& k) {
         const F32Mat x = in_f32(k.inputs, "x");
         F32Mat y = F32Mat::poisoned(x.rows, x.cols);
         c.rms_norm(x, row_f32(k.inputs, "weight"), static_cast<float>(k.cfg.norm_eps), x.cols, y);
         return out1("out", y);
       }},
      {"rope",
       [](const Fp32Components& c, const ComponentCall& k) {
         F32Mat x = in_f32(k.inputs, "x");
         const bool yarn = k.c.dim("yarn") != 0;
         const std::vector<float> om =
             rope_omega_f32(yarn ? k.cfg.compress_rope_theta : k.cfg.rope_theta, yarn, k.cfg.yarn,
                            k.cfg.rope_head_dim);
         c.rope(x, k.c.dim("H"), k.c.dim("Dh"), positions_of(k.inputs.at("positions")), om, false);
         return out1("out", x);
       }},
      {"hadamard",
       [](const Fp32Components& c, const ComponentCall& k) {
         F32Mat x = in_f32(k.inputs, "x");
         c.hadamard(x, k.c.dim("n"));
         return out1("out", x);
       }},
      {"sinkhorn",
       [](const Fp32Components& c, const ComponentCall& k) {
         F32Mat z = in_f32(k.inputs, "z");
         for (std::int64_t b = 0; b < z.rows; ++b)
           c.sinkhorn(z.row(b), k.c.dim("n"), k.c.dim("iters"), static_cast<float>(k.cfg.hc_eps));
         return out1("out", z);
       }},
      {"hc_pre",
       [](const Fp32Components& c, const ComponentCall& k) {
         F32HcParams p{in_f32(k.inputs, "fn"), row_f32(k.inputs, "base"),
                       row_f32(k.inputs, "scale")};
         const F32HcPre r =
             f32_hc_pre(c, in_f32(k.inputs, "x"), p, k.cfg.hc_mult, k.cfg.hc_sinkhorn_iters,
                        static_cast<float>(k.cfg.norm_eps), static_cast<float>(k.cfg.hc_eps));
         TensorSet o;
         o.put("u", to_f64(r.u), "f32");
         o.put("pre", to_f64(r.pre), "f32");
         o.put("post", to_f64(r.post), "f32");
         o.put("comb", to_f64(r.comb), "f32");
         return o;
       }},
      {"hc_post",
       [](const Fp32Components& c, const ComponentCall& k) {
         const F32Mat x = in_f32(k.inputs, "x");
         F32Mat out = F32Mat::poisoned(x.rows, x.cols);
         c.hc_post(in_f32(k.inputs, "f"), x, in_f32(k.inputs, "post"), in_f32(k.inputs, "comb"),
                   out);
         return out1("out", out);
       }},
      {"hc_head",
       [](const Fp32Components& c, const ComponentCall& k) {
         const F32HcParams p{in_f32(k.inputs, "fn"), row_f32(k.inputs, "base"),
                             row_f32(k.inputs, "scale")};
         return out1("out", f32_hc_head(c, in_f32(k.inputs, "x"), p, k.cfg.hc_mult,
                                        static_cast<float>(k.cfg.norm_eps),
                                        static_cast<float>(k.cfg.hc_eps)));
       }},
      {"q_path",
       [](const Fp32Components& c, const ComponentCall& k) {
         const bool yarn = k.c.dim("yarn") != 0;
         const std::vector<float> om =
             rope_omega_f32(yarn ? k.cfg.compress_rope_theta : k.cfg.rope_theta, yarn, k.cfg.yarn,
                            k.cfg.rope_head_dim);
         const F32QueryPath r = f32_q_path(
             c, in_f32(k.inputs, "x"), in_f32(k.inputs, "wq_a"), row_f32(k.inputs, "q_norm"),
             in_f32(k.inputs, "wq_b"), positions_of(k.inputs.at("positions")), om, k.cfg.n_heads,
             k.cfg.head_dim, static_cast<float>(k.cfg.norm_eps));
         TensorSet o;
         o.put("c", to_f64(r.c), "f32");
         o.put("q", to_f64(r.q), "f32");
         return o;
       }},
      {"kv_path",
       [](const Fp32Components& c, const ComponentCall& k) {
         const bool yarn = k.c.dim("yarn") != 0;
         const std::vector<float> om =
             rope_omega_f32(yarn ? k.cfg.compress_rope_theta : k.cfg.rope_theta, yarn, k.cfg.yarn,
                            k.cfg.rope_head_dim);
         return out1(
             "kv", f32_kv_path(c, in_f32(k.inputs, "x"), in_f32(k.inputs, "wkv"),
                               row_f32(k.inputs, "kv_norm"), positions_of(k.inputs.at("positions")),
                               om, static_cast<float>(k.cfg.norm_eps)));
       }},
      {"index_query",
       [](const Fp32Components& c, const ComponentCall& k) {
         const std::vector<float> om =
             rope_omega_f32(k.cfg.compress_rope_theta, true, k.cfg.yarn, k.cfg.rope_head_dim);
         const std::int64_t HI = k.cfg.index_n_heads, DI = k.cfg.index_head_dim;
         TensorSet o;
         o.put("q",
               to_f64(f32_index_queries(c, in_f32(k.inputs, "c"), in_f32(k.inputs, "wq_b"),
                                        positions_of(k.inputs.at("positions")), om, HI, DI)),
               "f32");
         o.put("weights",
               to_f64(f32_index_weights(c, in_f32(k.inputs, "x"), in_f32(k.inputs, "weights_proj"),
                                        HI, DI)),
               "f32");
         return o;
       }},
      {"key_window",
       [](const Fp32Components& c, const ComponentCall& k) {
         // The window as the attention gathers it (§5.3): window_start(t) .. t, clamped at 0. The
         // key list is as wide as the widest window (n_win when correct).
         const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
         const std::int64_t T = static_cast<std::int64_t>(pos.size()), n_win = k.cfg.window_size;
         std::vector<std::int64_t> first(sz(T));
         std::int64_t width = n_win;
         for (std::int64_t t = 0; t < T; ++t) {
           first[sz(t)] = c.window_start(pos[sz(t)], n_win);
           width = std::max(width, pos[sz(t)] - std::max<std::int64_t>(first[sz(t)], 0) + 1);
         }
         ref::Mat f(T, 1);
         ref::Mat keys = ref::Mat::Constant(T, width, -1.0);
         for (std::int64_t t = 0; t < T; ++t) {
           f(t, 0) = static_cast<double>(first[sz(t)]);
           std::int64_t n = 0;
           for (std::int64_t p = std::max<std::int64_t>(first[sz(t)], 0); p <= pos[sz(t)]; ++p)
             keys(t, n++) = static_cast<double>(p);
         }
         TensorSet o;
         o.put("first", std::move(f), "i64");
         o.put("keys", std::move(keys), "index");
         return o;
       }},
      {"derotate",
       [](const Fp32Components& c, const ComponentCall& k) {
         F32Mat o = in_f32(k.inputs, "o");
         const bool yarn = k.c.dim("yarn") != 0;
         const std::vector<float> om =
             rope_omega_f32(yarn ? k.cfg.compress_rope_theta : k.cfg.rope_theta, yarn, k.cfg.yarn,
                            k.cfg.rope_head_dim);
         c.rope(o, k.cfg.n_heads, k.cfg.head_dim, positions_of(k.inputs.at("positions")), om, true);
         return out1("out", o);
       }},
      {"sink_attention",
       [](const Fp32Components& c, const ComponentCall& k) {
         const F32Mat q = in_f32(k.inputs, "q");
         const ref::Mat& kd = k.inputs.at("keys");
         const F32Mat keys =
             kd.size() == 0 ? F32Mat(kd.rows(), kd.cols()) : in_f32(k.inputs, "keys");
         const std::int64_t H = k.c.dim("H"), D = k.c.dim("D");
         const std::vector<float> sink = row_f32(k.inputs, "sink");
         F32Mat o = F32Mat::poisoned(q.rows, q.cols);
         for (std::int64_t b = 0; b < q.rows; ++b)
           c.sink_attention(q.row(b), keys, sink, H, D, 1.0f / std::sqrt(f(D)), o.row(b));
         return out1("out", o);
       }},
      {"attention_core",
       [](const Fp32Components& c, const ComponentCall& k) {
         const ref::Mat& sd = k.inputs.at("selected");  // [Tq, K] row-major, −1 padding
         std::vector<std::int64_t> sel(sz(sd.size()));
         for (Eigen::Index i = 0; i < sd.size(); ++i)
           sel[sz(i)] = static_cast<std::int64_t>(sd.data()[i]);
         const ref::Mat& cd = k.inputs.at("compressed");
         const F32Mat comp =
             cd.size() == 0 ? F32Mat(cd.rows(), cd.cols()) : in_f32(k.inputs, "compressed");
         return out1("out", f32_attention_core(c, in_f32(k.inputs, "q"), in_f32(k.inputs, "kv"),
                                               comp, sel, sd.cols(), row_f32(k.inputs, "sink"),
                                               k.c.dim("q_start"), k.cfg.n_heads,
                                               k.cfg.head_dim, k.cfg.window_size));
       }},
      {"grouped_out_proj",
       [](const Fp32Components& c, const ComponentCall& k) {
         return out1("out", f32_grouped_out_proj(c, in_f32(k.inputs, "o"),
                                                 in_f32(k.inputs, "wo_a"), in_f32(k.inputs, "wo_b"),
                                                 k.cfg.o_groups, k.cfg.head_dim));
       }},
      {"compressor",
       [](const Fp32Components& c, const ComponentCall& k) {
         F32CompressorWeights w;
         w.ratio = static_cast<int>(k.c.dim("m"));
         w.indexer = false;
         w.norm = row_f32(k.inputs, "norm");
         w.width = static_cast<std::int64_t>(w.norm.size());
         w.wkv = in_f32(k.inputs, "wkv");
         w.wgate = in_f32(k.inputs, "wgate");
         w.ape = in_f32(k.inputs, "ape");
         const std::vector<float> om =
             rope_omega_f32(k.cfg.compress_rope_theta, true, k.cfg.yarn, k.cfg.rope_head_dim);
         return out1("entries", f32_compress(c, in_f32(k.inputs, "x"), w, om,
                                             static_cast<float>(k.cfg.norm_eps)));
       }},
      {"indexer_compressor",
       [](const Fp32Components& c, const ComponentCall& k) {
         F32CompressorWeights w;
         w.ratio = static_cast<int>(k.c.dim("m"));
         w.indexer = true;
         w.norm = row_f32(k.inputs, "norm");
         w.width = static_cast<std::int64_t>(w.norm.size());
         w.wkv = in_f32(k.inputs, "wkv");
         w.wgate = in_f32(k.inputs, "wgate");
         w.ape = in_f32(k.inputs, "ape");
         const std::vector<float> om =
             rope_omega_f32(k.cfg.compress_rope_theta, true, k.cfg.yarn, k.cfg.rope_head_dim);
         return out1("entries", f32_compress(c, in_f32(k.inputs, "x"), w, om,
                                             static_cast<float>(k.cfg.norm_eps)));
       }},
      {"index_scores",
       [](const Fp32Components& c, const ComponentCall& k) {
         const F32Mat q = in_f32(k.inputs, "q"), wi = in_f32(k.inputs, "weights");
         const ref::Mat& kd = k.inputs.at("keys");
         const F32Mat keys =
             kd.size() == 0 ? F32Mat(kd.rows(), kd.cols()) : in_f32(k.inputs, "keys");
         const std::vector<std::int64_t> pos = positions_of(k.inputs.at("positions"));
         const std::int64_t K = k.c.dim("K");
         F32Mat s = F32Mat::poisoned(q.rows, keys.rows);
         c.index_scores(q, wi, keys, pos, k.c.dim("H"), k.c.dim("D"), s);
         ref::Mat idx = ref::Mat::Constant(q.rows, K, -1.0);
         for (std::int64_t t = 0; t < q.rows; ++t) {
           const std::vector<std::int64_t> sel = c.index_topk(s.row(t), s.cols, pos[sz(t)], K);
           for (std::size_t i = 0; i < sel.size() && static_cast<std::int64_t>(i) < K; ++i)
             idx(t, static_cast<Eigen::Index>(i)) = static_cast<double>(sel[i]);
         }
         TensorSet o;
         o.put("scores", to_f64(s), "f32");
         o.put("topk_idx", std::move(idx), "index");
         return o;
       }},
      {"router",
       [](const Fp32Components& c, const ComponentCall& k) {
         const F32Mat gate = in_f32(k.inputs, "gate");
         const std::vector<float> bias = row_f32(k.inputs, "bias");
         F32RouterArgs a;
         a.gate = &gate;
         a.bias = bias;
         a.k = k.c.dim("k");
         a.route_scale = static_cast<float>(k.cfg.route_scale);
         return routing_outputs(c.route(in_f32(k.inputs, "z"), a), a.k);
       }},
      {"hash_router",
       [](const Fp32Components& c, const ComponentCall& k) {
         const F32Mat gate = in_f32(k.inputs, "gate");
         const std::vector<std::int64_t> tokens = positions_of(k.inputs.at("tokens"));
         const ref::Mat& rows = k.inputs.at("tid2eid");  // [V, k] row-major
         std::vector<std::int64_t> tid2eid(sz(rows.size()));
         for (Eigen::Index i = 0; i < rows.size(); ++i)
           tid2eid[sz(i)] = static_cast<std::int64_t>(rows.data()[i]);
         F32RouterArgs a;
         a.gate = &gate;
         a.hash = true;
         a.tid2eid = tid2eid;
         a.tokens = tokens;
         a.k = k.c.dim("k");
         a.route_scale = static_cast<float>(k.cfg.route_scale);
         return routing_outputs(c.route(in_f32(k.inputs, "z"), a), a.k);
       }},
      {"expert",
       [](const Fp32Components& c, const ComponentCall& k) {
         const F32Expert e{in_f32(k.inputs, "w1"), in_f32(k.inputs, "w2"), in_f32(k.inputs, "w3")};
         const std::vector<float> rw = row_f32(k.inputs, "row_weight");
         return out1("out", f32_expert(c, in_f32(k.inputs, "z"), e, rw,
                                       static_cast<float>(k.cfg.swiglu_limit)));
       }},
      {"dequant_fp8",
       [](const Fp32Components& c, const ComponentCall& k) {
         const ref::Mat& codes = k.inputs.at("codes");
         return out1("out", c.dequant_fp8(bytes_of(codes), bytes_of(k.inputs.at("scales")),
                                          codes.rows(), codes.cols()));
       }},
      {"dequant_fp4",
       [](const Fp32Components& c, const ComponentCall& k) {
         const ref::Mat& codes = k.inputs.at("codes");
         std::vector<std::uint8_t> packed(sz(codes.size() / 2));  // low nibble = even column
         for (Eigen::Index i = 0; i < codes.rows(); ++i)
           for (Eigen::Index j = 0; j + 1 < codes.cols(); j += 2)
             packed[sz((i * codes.cols() + j) / 2)] =
                 fmt::fp4_pack(static_cast<std::uint8_t>(codes(i, j)),
                               static_cast<std::uint8_t>(codes(i, j + 1)));
         return out1("out", c.dequant_fp4(packed, bytes_of(k.inputs.at("scales")), codes.rows(),
                                          codes.cols()));
       }},
  };
  return table;
}

class Fp32PortImplementation final : public Implementation {
 public:
  Fp32PortImplementation(Fp32Components c, std::string name)
      : comps_(std::move(c)), name_(std::move(name)) {
    require_complete(comps_, "fp32 port implementation " + name_);
  }
  std::string name() const override { return name_; }
  std::string path() const override { return "fp32"; }
  bool supports(const Case& c) const override {
    return c.mode == PrecisionMode::kExact && adapters().count(c.component) != 0;
  }
  TensorSet run(const ComponentCall& call) const override {
    require_exact(call);
    const auto it = adapters().find(call.c.component);
    if (it == adapters().end())
      throw ConfigError("fp32 port: no mapping for runner component " + call.c.component);
    return it->second(comps_, call);
  }

 private:
  Fp32Components comps_;
  std::string name_;
};

}  // namespace

const std::vector<std::string>& fp32_port_component_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& [k, v] : adapters()) n.push_back(k);
    return n;
  }();
  return names;
}

ComponentFn fp32_port_component(Fp32Components components, std::string_view component) {
  const auto it = adapters().find(component);
  if (it == adapters().end()) {
    std::string names;
    for (const std::string& n : fp32_port_component_names())
      names += (names.empty() ? "" : ", ") + n;
    throw ConfigError("fp32 port: no mapping for runner component \"" + std::string(component) +
                      "\"; mapped: " + names);
  }
  require_complete(components, "fp32_port_component " + std::string(component));
  return [c = std::move(components), fn = it->second](const ComponentCall& call) {
    require_exact(call);
    return fn(c, call);
  };
}

std::shared_ptr<const Implementation> fp32_port_implementation(Fp32Components components,
                                                               std::string name) {
  return std::make_shared<const Fp32PortImplementation>(std::move(components), std::move(name));
}

}  // namespace v4ref::compare
