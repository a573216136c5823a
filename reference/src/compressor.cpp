// The token-level compressor (v4-forward.md §6) and its decode state machine (§11.2).
#include "v4ref/ref/compressor.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/hadamard.hpp"
#include "v4ref/ref/norm.hpp"
#include "v4ref/ref/quant.hpp"

namespace v4ref::ref {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr int kCsaRatio = 4;
constexpr int kHcaRatio = 128;
constexpr std::int64_t kCsaStateRows = 8;  // §11.2: rows 0–3 previous block, 4–7 current block
constexpr int kCkvQ8Block = 64;            // §2.5 item 3: Q8(C[0:448]; 64)
constexpr int kIdxQ4Block = 32;            // §2.5 item 5: Q4(·; 32)

void require_ratio(int m, const std::string& who) {
  if (m != kCsaRatio && m != kHcaRatio)
    throw ConfigError(who + ": compression ratio " + std::to_string(m) +
                      " is not a compressor ratio; accepted: 4 (CSA), 128 (HCA)");
}

Mat load_matrix(const Checkpoint& ckpt, const std::string& name, std::int64_t rows, std::int64_t cols) {
  ckpt.tensor(name).require_shape({rows, cols});
  const std::vector<double> v = load_as_double(ckpt, name);
  return Eigen::Map<const Mat>(v.data(), rows, cols);
}

// a = W_kv x, g = W_gate x in double: the official compressor projections are fp32 math on
// bf16-valued weights with no activation fake-quant and no bf16 output (§2.5 item 1, §12), so no
// policy point applies here.
struct Projections {
  Mat a;  // [T, c·w]
  Mat g;  // [T, c·w]
};
Projections project(const Mat& x, const CompressorWeights& w) {
  const PrecisionPolicy none = PrecisionPolicy::exact();
  return {apply_linear(w.wkv, x, none), apply_linear(w.wgate, x, none)};
}

void check_input(const Mat& x, const CompressorWeights& w, const char* what) {
  if (x.cols() != w.dim())
    throw ShapeError(w.prefix + "x (" + what + "): expected " + dims(x.rows(), w.dim()) +
                     " ([T, d]), got " + dims(x.rows(), x.cols()));
  require_finite_mat(x, w.prefix + "x");
}

std::int64_t state_rows(int ratio) { return ratio == kCsaRatio ? kCsaStateRows : ratio; }

// Stores token t's (value, logit + ape) into state row `row`.
void store_row(CompressorState& s, std::int64_t row, const Mat& a, const Mat& g, std::int64_t src,
               const CompressorWeights& w, std::int64_t r) {
  s.kv.row(row) = a.row(src);
  s.score.row(row) = g.row(src) + w.ape.row(r);
}

}  // namespace

CompressorWeights load_compressor(const Checkpoint& ckpt, const std::string& prefix,
                                  CompressorKind kind, int ratio, std::int64_t width,
                                  std::int64_t dim) {
  require_ratio(ratio, prefix);
  CompressorWeights w;
  w.prefix = prefix;
  w.kind = kind;
  w.ratio = ratio;
  w.width = width;
  const std::int64_t cw = w.series() * width;
  w.wkv = load_linear(ckpt, prefix + "wkv", cw, dim);
  w.wgate = load_linear(ckpt, prefix + "wgate", cw, dim);
  w.ape = load_matrix(ckpt, prefix + "ape", ratio, cw);
  w.norm = load_vector(ckpt, prefix + "norm.weight", width);
  return w;
}

CompressorWeights load_layer_compressor(const Checkpoint& ckpt, const ModelConfig& cfg,
                                        std::int64_t layer, CompressorKind kind) {
  const LayerConfig lc = layer_config(cfg, layer);
  if (lc.kind == LayerKind::kSwa)
    throw ConfigError("layer " + std::to_string(layer) + " of " + cfg.name +
                      " is SWA-only (ratio 0) and has no compressor (§1.2)");
  if (kind == CompressorKind::kMain)
    return load_compressor(ckpt, lc.prefix + "attn.compressor.", kind, lc.ratio, cfg.head_dim, cfg.dim);
  if (lc.kind != LayerKind::kCsa)
    throw ConfigError("layer " + std::to_string(layer) + " of " + cfg.name +
                      " is HCA and has no indexer compressor (§7: CSA layers only)");
  return load_compressor(ckpt, lc.prefix + "attn.indexer.compressor.", kind, kCsaRatio,
                         cfg.index_head_dim, cfg.dim);
}

void check_compressor_weights(const CompressorWeights& w) {
  require_ratio(w.ratio, w.prefix);
  const std::int64_t cw = w.series() * w.width;
  auto need = [&](const std::string& name, std::int64_t er, std::int64_t ec, std::int64_t r,
                  std::int64_t c) {
    if (er != r || ec != c)
      throw ShapeError(w.prefix + name + ": expected " + dims(er, ec) + ", got " + dims(r, c));
  };
  if (w.width <= 0) throw ShapeError(w.prefix + ": width must be > 0, got " + std::to_string(w.width));
  need("wkv.weight", cw, w.dim(), w.wkv.w.rows(), w.wkv.w.cols());
  need("wgate.weight", cw, w.dim(), w.wgate.w.rows(), w.wgate.w.cols());
  need("ape", w.ratio, cw, w.ape.rows(), w.ape.cols());
  need("norm.weight", w.width, 1, w.norm.size(), 1);
  require_finite_mat(w.ape, w.prefix + "ape");
  require_finite_vec(w.norm, w.prefix + "norm.weight");
}

void check_compressor(const CompressorWeights& w, const RopeTable& rope) {
  check_compressor_weights(w);
  if (rope.rope_dim >= w.width)
    throw ShapeError(w.prefix + ": rope dims r = " + std::to_string(rope.rope_dim) +
                     " must be smaller than the entry width w = " + std::to_string(w.width));
  if (w.kind == CompressorKind::kMain && (w.width - rope.rope_dim) % kCkvQ8Block != 0)
    throw ShapeError(w.prefix + ": nope width w − r = " + std::to_string(w.width - rope.rope_dim) +
                     " must be a multiple of 64 (Q8 blocks, §2.5 item 3)");
  if (w.kind == CompressorKind::kIndexer &&
      ((w.width & (w.width - 1)) != 0 || w.width % kIdxQ4Block != 0))
    throw ShapeError(w.prefix + ": indexer key width " + std::to_string(w.width) +
                     " must be a power of two and a multiple of 32 (Hadamard, Q4 blocks)");
}

Vec pool_entry(const Mat& kv, const Mat& score, int ratio, std::int64_t width) {
  const bool csa = ratio == kCsaRatio;
  const std::int64_t rows = state_rows(ratio);
  V4REF_ASSERT(kv.rows() == rows && score.rows() == rows && kv.cols() == score.cols());
  V4REF_ASSERT(kv.cols() == (csa ? 2 : 1) * width);
  Vec out(width);
  for (std::int64_t i = 0; i < width; ++i) {
    // Slot s reads channel i (HCA; CSA rows 0–3, previous-block series) or w + i (CSA rows 4–7,
    // current-block series): §6.2, §11.2.
    auto col = [&](std::int64_t s) { return csa && s >= rows / 2 ? width + i : i; };
    double mx = kNegInf;
    for (std::int64_t s = 0; s < rows; ++s) mx = std::max(mx, score(s, col(s)));
    V4REF_ASSERT(mx > kNegInf);  // the current block always has finite logits
    double num = 0, den = 0;
    for (std::int64_t s = 0; s < rows; ++s) {
      const double e = std::exp(score(s, col(s)) - mx);  // exp(−∞) = 0: absent slots
      den += e;
      num += e * kv(s, col(s));
    }
    out(i) = num / den;
  }
  return out;
}

Vec postprocess_entry(const Vec& pooled, std::int64_t j, const CompressorWeights& w,
                      const RopeTable& rope, double norm_eps, const PrecisionPolicy& policy) {
  Mat c = pooled.transpose();  // [1, w]
  round_bf16_if(c, policy, QuantPoint::kBf16Pooled);
  c = rms_norm(c, w.norm, norm_eps, policy, w.prefix + "norm");
  const std::int64_t pos = j * w.ratio;  // §6.3: the first token of block j
  c = apply_rope(c, w.width - rope.rope_dim, std::span<const std::int64_t>(&pos, 1), rope, policy,
                 false, w.prefix + "rope");
  std::span<double> row(c.data(), static_cast<std::size_t>(w.width));
  if (w.kind == CompressorKind::kMain) {
    if (policy.on(QuantPoint::kCkvQ8)) {
      auto nope = row.first(static_cast<std::size_t>(w.width - rope.rope_dim));
      q8_fake_quant(nope, kCkvQ8Block, nope);
    }
  } else {
    hadamard_inplace(row);
    if (policy.on(QuantPoint::kBf16Hadamard))  // rotate_activation returns bf16 (§2.4)
      for (double& v : row) v = fmt::round_bf16(v);
    if (policy.on(QuantPoint::kIdxKQ4)) q4_fake_quant(row, kIdxQ4Block, row);
  }
  return c.row(0).transpose();
}

CompressorState make_compressor_state(const CompressorWeights& w) {
  require_ratio(w.ratio, w.prefix);
  CompressorState s;
  s.ratio = w.ratio;
  s.width = w.width;
  const std::int64_t rows = state_rows(w.ratio);
  s.kv = Mat::Zero(rows, w.series() * w.width);
  s.score = Mat::Constant(rows, w.series() * w.width, kNegInf);
  return s;
}

namespace {

// Pools every complete block of x, building each entry in exactly the state the decode machine
// holds when that block completes, and leaves in `s` the §11.2 hand-off state.
Mat pool_blocks(const Mat& x, const CompressorWeights& w, CompressorState& s) {
  check_compressor_weights(w);
  check_input(x, w, "compress_prefill");
  const std::int64_t T = x.rows();
  const std::int64_t m = w.ratio;
  const Projections pr = project(x, w);
  Mat pooled(T / m, w.width);
  s = make_compressor_state(w);
  const std::int64_t cur = w.overlap() ? 4 : 0;  // first row of the current block
  for (std::int64_t j = 0; j < T / m; ++j) {
    for (std::int64_t r = 0; r < m; ++r) store_row(s, cur + r, pr.a, pr.g, j * m + r, w, r);
    pooled.row(j) = pool_entry(s.kv, s.score, w.ratio, w.width).transpose();
    if (w.overlap()) {  // the block just pooled becomes the previous block of entry j+1
      s.kv.topRows(4) = s.kv.bottomRows(4);
      s.score.topRows(4) = s.score.bottomRows(4);
    }
  }
  // Hand-off (§11.2): the partial block in the current rows, the other current rows at their
  // initial values; CSA rows 0–3 already hold the last complete block (or initial values).
  const std::int64_t done = (T / m) * m;
  const CompressorState fresh = make_compressor_state(w);
  s.kv.bottomRows(m) = fresh.kv.bottomRows(m);
  s.score.bottomRows(m) = fresh.score.bottomRows(m);
  for (std::int64_t t = done; t < T; ++t) store_row(s, cur + (t - done), pr.a, pr.g, t, w, t - done);
  s.next_position = T;
  return pooled;
}

}  // namespace

Mat compress_pool_prefill(const Mat& x, const CompressorWeights& w) {
  CompressorState s;
  return pool_blocks(x, w, s);
}

CompressorPrefill compress_prefill_with_state(const Mat& x, const CompressorWeights& w,
                                              const RopeTable& rope, double norm_eps,
                                              const PrecisionPolicy& policy) {
  check_compressor(w, rope);
  CompressorPrefill out;
  const Mat pooled = pool_blocks(x, w, out.state);
  out.entries.resize(pooled.rows(), w.width);
  for (std::int64_t j = 0; j < pooled.rows(); ++j)
    out.entries.row(j) =
        postprocess_entry(pooled.row(j).transpose(), j, w, rope, norm_eps, policy).transpose();
  return out;
}

Mat compress_prefill(const Mat& x, const CompressorWeights& w, const RopeTable& rope,
                     double norm_eps, const PrecisionPolicy& policy) {
  return compress_prefill_with_state(x, w, rope, norm_eps, policy).entries;
}

std::optional<Vec> compress_decode_step(const Mat& x_t, std::int64_t t, CompressorState& state,
                                        const CompressorWeights& w, const RopeTable& rope,
                                        double norm_eps, const PrecisionPolicy& policy) {
  check_compressor(w, rope);
  if (x_t.rows() != 1)
    throw ShapeError(w.prefix + "x_t (compress_decode_step): expected [1, " +
                     std::to_string(w.dim()) + "], got " + dims(x_t.rows(), x_t.cols()));
  check_input(x_t, w, "compress_decode_step");
  const std::int64_t rows = state_rows(w.ratio);
  if (state.ratio != w.ratio || state.width != w.width || state.kv.rows() != rows ||
      state.kv.cols() != w.series() * w.width || state.score.rows() != rows ||
      state.score.cols() != state.kv.cols())
    throw ShapeError(w.prefix + "state: expected ratio " + std::to_string(w.ratio) + ", width " +
                     std::to_string(w.width) + ", rows " + dims(rows, w.series() * w.width) +
                     ", got ratio " + std::to_string(state.ratio) + ", width " +
                     std::to_string(state.width) + ", " + dims(state.kv.rows(), state.kv.cols()));
  if (t != state.next_position)
    throw Error(w.prefix + "compress_decode_step: position " + std::to_string(t) +
                " but the state expects position " + std::to_string(state.next_position) +
                " (one token per step after a prefill from 0, §11)");
  const std::int64_t m = w.ratio;
  const std::int64_t r = t % m;
  const Projections pr = project(x_t, w);
  store_row(state, (w.overlap() ? 4 : 0) + r, pr.a, pr.g, 0, w, r);
  state.next_position = t + 1;
  if ((t + 1) % m != 0) return std::nullopt;
  const std::int64_t j = t / m;  // = (t + 1 − m) / m
  const Vec pooled = pool_entry(state.kv, state.score, w.ratio, w.width);
  Vec entry = postprocess_entry(pooled, j, w, rope, norm_eps, policy);
  if (w.overlap()) {
    state.kv.topRows(4) = state.kv.bottomRows(4);
    state.score.topRows(4) = state.score.bottomRows(4);
  }
  return entry;
}

}  // namespace v4ref::ref
