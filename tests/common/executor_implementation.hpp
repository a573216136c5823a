// The CPU executors of the mHC and compressor kernels (cuda/include/v4ref/cuda/mhc_tile.hpp,
// compressor_tile.hpp) plugged into compare/'s differential runner as one Implementation, so the
// runner's cases, input kinds, tolerance rows and failure bundles apply to the kernels' own
// per-tile arithmetic in their block, warp and lane order (docs/cuda-mhc-compressor.md §5).
//
// The same adapter runs the kernels themselves on a GPU (KernelBackend; tests/gpu/
// executor_runner_gpu_test.cpp). Components and what the adapter adds around the kernel:
//   hc_pre              x -> bf16 stream codes, fn/base/scale fp32; mhc_pre_simt (pre-only mode,
//                       the kernel's source in the SIMT executor) on the tiling of d; u bf16,
//                       coefficient row [pre 4 | post 4 | comb 16].
//   hc_post             f, x bf16; coefficient rows [1 | post | comb]; mhc_post_simt.
//   compressor,         a = fp32(x W_kvᵀ), g = fp32(x W_gateᵀ) (the upstream projection GEMM,
//   indexer_compressor  correctly rounded: §2.5 item 1 keeps it fp32 with no bf16 output); the
//                       RoPE rows of positions j·m from the layer's fp32 frequencies; executor_prefill
//                       into poisoned cache rows; entries decoded from the rows (main: e4m3 × ue8m0
//                       per 64 nope dims + bf16 rope dims; indexer: e2m1 × ue8m0 per 32).
//   *_decode            the same, through executor_prefill_state after p tokens and one
//                       executor_decode_step per token p..T−1 (§11.2).
// The kernels implement the official numerics only, so only official-mode cases are supported.
// Outputs start as NaN-poisoned buffers: an element the executor does not write fails the case.
//
// A Fault makes the adapter misuse the kernel the way an integration bug would (hc_eps not
// passed, comb read transposed, ape rows off by one, RoPE positions j instead of j·m, decode
// started from an empty state instead of the prefill hand-off); the runner must catch each (tests/compare/executor_runner_test.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "v4ref/compare/runner.hpp"
#include "v4ref/cuda/compressor_simt.hpp"
#include "v4ref/cuda/compressor_tile.hpp"
#include "v4ref/cuda/mhc_simt.hpp"
#include "v4ref/cuda/mhc_tile.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/rope.hpp"

namespace v4ref::test {

enum class ExecutorFault {
  kNone,
  kHcEpsMissing,      // Scalars::hc_eps = 0 (§4.2/§4.3 add hc_eps to pre, post and Sinkhorn)
  kSinkhornOneShort,  // Scalars::sinkhorn_iters = hc_sinkhorn_iters − 1
  kCombTransposed,    // comb read as coef[8 + 4i + j] instead of coef[8 + 4j + i]
  kApeRowsShifted,    // ape row r handed to the kernel as row (r + 1) mod m
  kRopePositionsJ,    // RoPE rows for positions j instead of j·m
  kHandOffEmpty,      // decode starts from the initial state instead of the prefill hand-off
};

inline const char* fault_name(ExecutorFault f) {
  switch (f) {
    case ExecutorFault::kNone: return "none";
    case ExecutorFault::kHcEpsMissing: return "hc-eps-missing";
    case ExecutorFault::kSinkhornOneShort: return "sinkhorn-one-short";
    case ExecutorFault::kCombTransposed: return "comb-transposed";
    case ExecutorFault::kApeRowsShifted: return "ape-rows-shifted";
    case ExecutorFault::kRopePositionsJ: return "rope-positions-j";
    case ExecutorFault::kHandOffEmpty: return "hand-off-empty";
  }
  return "?";
}

// Where the kernels' arithmetic runs: the CPU executors (default, every machine) or, in
// tests/gpu/, the device through the host conveniences of cuda/mhc.hpp and cuda/compressor.hpp.
// Each function writes into buffers the adapter pre-fills with poison.
struct KernelBackend {
  std::string name = "cuda-executor";
  // pre-only mHC: u [T, d] bf16, coef [T, 24] fp32
  std::function<void(const cuda::mhc::Problem&, std::uint16_t* u, float* coef)> mhc_pre;
  // mHC write-back: x_out [T, 4d] bf16
  std::function<void(const cuda::mhc::Problem&, std::uint16_t* x_out)> mhc_post;
  // compressor prefill: cache rows [T/m, row_bytes]
  std::function<void(const cuda::cmp::PrefillProblem&, std::uint8_t* rows)> compressor_prefill;
  // compressor decode (§11.2): the hand-off state after the first p tokens of `all`, then one
  // decode step per token p..T−1, writing cache rows j = ⌊p/m⌋ .. ⌊T/m⌋ − 1 of rows [T/m, ·].
  // `state_fault` (may be empty) edits the hand-off state before the first step.
  std::function<void(const cuda::cmp::PrefillProblem& all, std::int64_t p, std::uint8_t* rows,
                     const std::function<void(cuda::cmp::DecodeState&)>& state_fault)>
      compressor_decode;
};

// The tiling a launch of width d uses on the CPU: the largest cluster S in {16, 8, 4, 2, 1}
// with 8·S | d (docs/cuda-mhc-compressor.md §2).
inline cuda::mhc::Tiling executor_tiling(std::int64_t d) {
  for (int s : {16, 8, 4, 2, 1})
    if (d % (8 * s) == 0) return cuda::mhc::make_tiling(d, s);
  return cuda::mhc::make_tiling(d, 16);  // throws the kernel's ShapeError
}

inline KernelBackend executor_backend() {
  KernelBackend b;
  b.mhc_pre = [](const cuda::mhc::Problem& p, std::uint16_t* u, float* coef) {
    cuda::MhcSimtOptions o;
    o.cluster = executor_tiling(p.d).cluster;
    const cuda::MhcSimtOutputs r = cuda::mhc_pre_simt(p, o);
    if (!r.guards_intact) throw Error("mhc_pre_simt: a guard around an output was overwritten");
    std::copy(r.u.begin(), r.u.end(), u);
    std::copy(r.coef.begin(), r.coef.end(), coef);
  };
  b.mhc_post = [](const cuda::mhc::Problem& p, std::uint16_t* x_out) {
    const std::vector<std::uint16_t> r = cuda::mhc_post_simt(p);
    std::copy(r.begin(), r.end(), x_out);
  };
  b.compressor_prefill = [](const cuda::cmp::PrefillProblem& p, std::uint8_t* rows) {
    cuda::compressor_prefill_simt(p, rows);
  };
  b.compressor_decode = [](const cuda::cmp::PrefillProblem& all, std::int64_t p, std::uint8_t* rows,
                           const std::function<void(cuda::cmp::DecodeState&)>& state_fault) {
    const cuda::cmp::Dims& dm = all.dm;
    cuda::cmp::PrefillProblem head = all;
    head.tokens = p;
    cuda::cmp::DecodeState st = cuda::compressor_prefill_state_simt(head);
    if (state_fault) state_fault(st);
    for (std::int64_t t = p; t < all.tokens; ++t) {
      const std::int64_t j = t / dm.ratio;
      cuda::compressor_decode_step_simt(dm, st, t, all.a + t * dm.cw(), all.g + t * dm.cw(), all.ape,
                                      all.norm_w, all.eps,
                                      cuda::cmp::RopeRow{all.cos + j * 32, all.sin + j * 32},
                                      rows + j * dm.row_bytes());
    }
  };
  return b;
}

inline constexpr ExecutorFault kExecutorFaults[] = {
    ExecutorFault::kHcEpsMissing,   ExecutorFault::kSinkhornOneShort,
    ExecutorFault::kCombTransposed, ExecutorFault::kApeRowsShifted,
    ExecutorFault::kRopePositionsJ, ExecutorFault::kHandOffEmpty};

// Whether `f` changes the outputs of case `c` (the cases a fault must fail).
inline bool fault_touches(ExecutorFault f, const compare::Case& c) {
  const std::string& k = c.component;
  const bool decode = k == "compressor_decode" || k == "indexer_compressor_decode";
  const bool compressor = decode || k == "compressor" || k == "indexer_compressor";
  switch (f) {
    case ExecutorFault::kNone: return false;
    case ExecutorFault::kHcEpsMissing: return k == "hc_pre";
    // Random comb logits leave Sinkhorn converged below fp32 noise by iteration 19: only the
    // saturated logits of the outliers kind show a missing iteration.
    case ExecutorFault::kSinkhornOneShort: return k == "hc_pre" && c.kind == compare::InputKind::kOutliers;
    case ExecutorFault::kCombTransposed: return k == "hc_pre" || k == "hc_post";
    case ExecutorFault::kApeRowsShifted:
    case ExecutorFault::kRopePositionsJ: return compressor;
    case ExecutorFault::kHandOffEmpty: return decode && c.dim("p") > 0;  // p = 0: nothing handed off
  }
  return false;
}

class KernelExecutors final : public compare::Implementation {
 public:
  explicit KernelExecutors(ExecutorFault fault = ExecutorFault::kNone,
                           KernelBackend backend = executor_backend())
      : fault_(fault), backend_(std::move(backend)) {}

  std::string name() const override {
    return fault_ == ExecutorFault::kNone ? backend_.name
                                          : backend_.name + "-" + fault_name(fault_);
  }
  std::string path() const override { return "fp32"; }
  bool supports(const compare::Case& c) const override {
    return c.mode == PrecisionMode::kOfficial &&
           (c.component == "hc_pre" || c.component == "hc_post" || is_compressor(c.component));
  }
  compare::TensorSet run(const compare::ComponentCall& call) const override {
    const std::string& comp = call.c.component;
    if (call.c.mode != PrecisionMode::kOfficial)
      throw ConfigError(name() + ": the kernels implement the official numerics only, case " +
                        comp + " is in another mode");
    if (comp == "hc_pre") return hc_pre(call);
    if (comp == "hc_post") return hc_post(call);
    if (is_compressor(comp)) return compressor(call);
    throw ConfigError(name() + ": no kernel for component " + comp);
  }

 private:
  static constexpr std::uint16_t kPoison16 = 0x7FC1;  // a bf16 NaN
  static bool is_compressor(const std::string& c) {
    return c == "compressor" || c == "indexer_compressor" || c == "compressor_decode" ||
           c == "indexer_compressor_decode";
  }
  ExecutorFault fault_;
  KernelBackend backend_;

  static std::vector<float> fp32_values(const ref::Mat& m, const std::string& what) {
    std::vector<float> v(static_cast<std::size_t>(m.size()));
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      for (Eigen::Index j = 0; j < m.cols(); ++j) {
        const double x = m(i, j);
        const auto f = static_cast<float>(x);
        if (static_cast<double>(f) != x && !std::isnan(x))
          throw ShapeError("cuda-executor: " + what + " is not fp32-valued at (" +
                           std::to_string(i) + ", " + std::to_string(j) + ")");
        v[static_cast<std::size_t>(i * m.cols() + j)] = f;
      }
    return v;
  }
  static std::vector<std::uint16_t> bf16_codes(const ref::Mat& m, const std::string& what) {
    std::vector<std::uint16_t> v(static_cast<std::size_t>(m.size()));
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      for (Eigen::Index j = 0; j < m.cols(); ++j) {
        const double x = m(i, j);
        if (fmt::round_bf16(x) != x)
          throw ShapeError("cuda-executor: " + what + " is not bf16-valued at (" +
                           std::to_string(i) + ", " + std::to_string(j) + ")");
        v[static_cast<std::size_t>(i * m.cols() + j)] = fmt::bf16_encode(x);
      }
    return v;
  }
  static ref::Mat from_bf16(const std::vector<std::uint16_t>& v, std::int64_t rows,
                            std::int64_t cols) {
    ref::Mat m(rows, cols);
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j)
        m(i, j) = static_cast<double>(fmt::bf16_to_float(v[static_cast<std::size_t>(i * cols + j)]));
    return m;
  }
  static void require_four_streams(const compare::ComponentCall& call) {
    if (call.cfg.hc_mult != cuda::mhc::kStreams)
      throw ConfigError("cuda-executor: the mHC kernels have 4 streams, config has hc_mult = " +
                        std::to_string(call.cfg.hc_mult));
  }

  compare::TensorSet hc_pre(const compare::ComponentCall& call) const {
    require_four_streams(call);
    const ref::Mat& xm = call.inputs.at("x");
    const std::int64_t T = xm.rows(), d = call.cfg.dim;
    const std::vector<std::uint16_t> x = bf16_codes(xm, "hc_pre x");
    const std::vector<float> fn = fp32_values(call.inputs.at("fn"), "hc_pre fn");
    const std::vector<float> base = fp32_values(call.inputs.at("base"), "hc_pre base");
    const std::vector<float> scale = fp32_values(call.inputs.at("scale"), "hc_pre scale");
    cuda::mhc::Problem p;
    p.tokens = T;
    p.d = d;
    p.x = x.data();
    p.fn = fn.data();
    p.base = base.data();
    for (int i = 0; i < 3; ++i) p.s.scale[i] = scale[static_cast<std::size_t>(i)];
    p.s.norm_eps = static_cast<float>(call.cfg.norm_eps);
    p.s.hc_eps = fault_ == ExecutorFault::kHcEpsMissing ? 0.0f : static_cast<float>(call.cfg.hc_eps);
    p.s.sinkhorn_iters = static_cast<int>(call.cfg.hc_sinkhorn_iters) -
                         (fault_ == ExecutorFault::kSinkhornOneShort ? 1 : 0);
    std::vector<std::uint16_t> u(static_cast<std::size_t>(T * d), kPoison16);
    std::vector<float> coef(static_cast<std::size_t>(T * cuda::mhc::kMix), std::nanf(""));
    backend_.mhc_pre(p, u.data(), coef.data());

    ref::Mat pre(T, 4), post(T, 4), comb(T, 16);
    for (std::int64_t t = 0; t < T; ++t) {
      const float* r = coef.data() + t * cuda::mhc::kMix;
      for (int k = 0; k < 4; ++k) {
        pre(t, k) = r[k];
        post(t, k) = r[4 + k];
      }
      for (int j = 0; j < 4; ++j)
        for (int i = 0; i < 4; ++i)
          comb(t, 4 * j + i) =
              fault_ == ExecutorFault::kCombTransposed ? r[8 + 4 * i + j] : r[8 + 4 * j + i];
    }
    compare::TensorSet out;
    out.put("u", from_bf16(u, T, d), "bf16");
    out.put("pre", std::move(pre));
    out.put("post", std::move(post));
    out.put("comb", std::move(comb));
    return out;
  }

  compare::TensorSet hc_post(const compare::ComponentCall& call) const {
    require_four_streams(call);
    const ref::Mat& xm = call.inputs.at("x");
    const std::int64_t T = xm.rows(), d = call.cfg.dim;
    const std::vector<std::uint16_t> x = bf16_codes(xm, "hc_post x");
    const std::vector<std::uint16_t> f = bf16_codes(call.inputs.at("f"), "hc_post f");
    const std::vector<float> post = fp32_values(call.inputs.at("post"), "hc_post post");
    const std::vector<float> comb = fp32_values(call.inputs.at("comb"), "hc_post comb");
    std::vector<float> coef(static_cast<std::size_t>(T * cuda::mhc::kMix), 1.0f);  // pre unused
    for (std::int64_t t = 0; t < T; ++t) {
      float* r = coef.data() + t * cuda::mhc::kMix;
      for (int k = 0; k < 4; ++k) r[4 + k] = post[static_cast<std::size_t>(t * 4 + k)];
      for (int j = 0; j < 4; ++j)
        for (int i = 0; i < 4; ++i)
          r[8 + 4 * j + i] = comb[static_cast<std::size_t>(
              t * 16 + (fault_ == ExecutorFault::kCombTransposed ? 4 * i + j : 4 * j + i))];
    }
    cuda::mhc::Problem p;
    p.tokens = T;
    p.d = d;
    p.x = x.data();
    p.f = f.data();
    p.coef_in = coef.data();
    std::vector<std::uint16_t> xo(static_cast<std::size_t>(T * 4 * d), kPoison16);
    backend_.mhc_post(p, xo.data());
    compare::TensorSet out;
    out.put("out", from_bf16(xo, T, 4 * d), "bf16");
    return out;
  }

  compare::TensorSet compressor(const compare::ComponentCall& call) const {
    namespace cmp = cuda::cmp;
    const bool indexer = call.c.component.rfind("indexer_", 0) == 0;
    const bool decode = call.c.component.find("_decode") != std::string::npos;
    const int m = static_cast<int>(call.c.dim("m"));
    const ref::Mat& x = call.inputs.at("x");
    const ref::Mat& norm = call.inputs.at("norm");
    const std::int64_t T = x.rows(), w = norm.cols();
    const cmp::Dims dm = cmp::make_dims(m, w, indexer ? cmp::Kind::kIndexer : cmp::Kind::kMain);
    const std::int64_t E = T / m;
    // The projections: double products of bf16 values, rounded once to fp32.
    const std::vector<float> a = fp32_rounded(x * call.inputs.at("wkv").transpose());
    const std::vector<float> g = fp32_rounded(x * call.inputs.at("wgate").transpose());
    std::vector<float> ape = fp32_values(call.inputs.at("ape"), "compressor ape");
    if (fault_ == ExecutorFault::kApeRowsShifted) {
      std::vector<float> shifted(ape.size());
      for (int r = 0; r < m; ++r)
        for (int c = 0; c < dm.cw(); ++c)
          shifted[static_cast<std::size_t>(r * dm.cw() + c)] =
              ape[static_cast<std::size_t>(((r + 1) % m) * dm.cw() + c)];
      ape = shifted;
    }
    const std::vector<float> norm_w = fp32_values(norm, "compressor norm");
    const ref::RopeTable table =
        ref::make_rope_table(call.cfg.compress_rope_theta, true, call.cfg.yarn,
                             call.cfg.rope_head_dim, call.cfg.max_position_embeddings);
    if (table.rope_dim != 2 * 32)
      throw ShapeError("cuda-executor: the compressor kernel rotates 64 dims, config has " +
                       std::to_string(table.rope_dim));
    const std::vector<float> omega(table.omega_fp32.begin(), table.omega_fp32.end());
    std::vector<float> cos, sin;
    cmp::rope_table(omega.data(), std::max<std::int64_t>(E, 1),
                    fault_ == ExecutorFault::kRopePositionsJ ? 1 : m, cos, sin);
    cmp::PrefillProblem p;
    p.dm = dm;
    p.tokens = T;
    p.a = a.data();
    p.g = g.data();
    p.ape = ape.data();
    p.norm_w = norm_w.data();
    p.eps = static_cast<float>(call.cfg.norm_eps);
    p.cos = cos.data();
    p.sin = sin.data();
    std::vector<std::uint8_t> rows(static_cast<std::size_t>(std::max<std::int64_t>(E, 1) * dm.row_bytes()),
                                   0xFF);  // 0xFF: e4m3 NaN codes, ue8m0 NaN scales
    std::int64_t first = 0;  // the first entry the component outputs
    if (decode) {
      const std::int64_t prefill_tokens = call.c.dim("p");
      first = prefill_tokens / m;
      std::function<void(cmp::DecodeState&)> state_fault;
      if (fault_ == ExecutorFault::kHandOffEmpty)
        state_fault = [&dm](cmp::DecodeState& st) { st = cmp::DecodeState(dm); };
      backend_.compressor_decode(p, prefill_tokens, rows.data(), state_fault);
    } else {
      backend_.compressor_prefill(p, rows.data());
    }

    ref::Mat entries(E - first, w);
    for (std::int64_t j = first; j < E; ++j) {
      const std::uint8_t* row = rows.data() + j * dm.row_bytes();
      for (std::int64_t i = 0; i < w; ++i) entries(j - first, i) = decode_entry(dm, row, i);
    }
    compare::TensorSet out;
    out.put("entries", std::move(entries), indexer ? "f32" : "bf16");
    return out;
  }

  static std::vector<float> fp32_rounded(const ref::Mat& m) {
    std::vector<float> v(static_cast<std::size_t>(m.size()));
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      for (Eigen::Index j = 0; j < m.cols(); ++j)
        v[static_cast<std::size_t>(i * m.cols() + j)] = static_cast<float>(m(i, j));
    return v;
  }

  // Channel i of a cache row (cost-model.md, kernel-targets.md §3 row layouts).
  static double decode_entry(const cuda::cmp::Dims& dm, const std::uint8_t* row, std::int64_t i) {
    if (dm.indexer()) {
      const std::uint8_t byte = row[i / 2];
      const std::uint8_t nibble = (i % 2 == 0) ? (byte & 0x0F) : (byte >> 4);
      return fmt::e2m1_to_double(nibble) *
             fmt::ue8m0_to_double(row[dm.scale_offset() + i / cuda::cmp::kQ4Block]);
    }
    if (i < dm.nope())
      return fmt::e4m3_to_double(row[i]) *
             fmt::ue8m0_to_double(row[dm.scale_offset() + i / cuda::cmp::kQ8Block]);
    const std::int64_t k = i - dm.nope();
    const std::uint16_t bits = static_cast<std::uint16_t>(
        row[dm.rope_offset() + 2 * k] | (row[dm.rope_offset() + 2 * k + 1] << 8));
    return static_cast<double>(fmt::bf16_to_float(bits));
  }
};

// An official-mode case of the runner built by hand (the table keeps most cases in exact mode).
inline compare::Case official_case(const std::string& component, const std::string& config,
                                   std::vector<std::pair<std::string, std::int64_t>> dims,
                                   compare::InputKind kind) {
  compare::Case c;
  c.component = component;
  c.config = config;
  c.dims = std::move(dims);
  c.kind = kind;
  c.mode = PrecisionMode::kOfficial;
  return c;
}

// The runner table's quick official cases the kernels support, then further official cases
// (input kinds, two token batches, the HCA ratio, the V4-Flash widths d = 4096, w = 512 / 128),
// each at global seeds 0, 1 and 2.
inline std::vector<compare::Case> executor_runner_cases() {
  using K = compare::InputKind;
  const KernelExecutors impl;
  std::vector<compare::Case> base;
  for (const compare::Case& c : compare::case_table(0))
    if (impl.supports(c) && !c.slow) base.push_back(c);
  const std::string tf = "tiny-flash", fl = "v4-flash";
  base.push_back(official_case("hc_pre", tf, {{"T", 17}}, K::kOutliers));
  base.push_back(official_case("hc_pre", tf, {{"T", 45}}, K::kRandom));
  base.push_back(official_case("hc_pre", fl, {{"T", 2}}, K::kRandom));
  base.push_back(official_case("hc_post", fl, {{"T", 2}}, K::kRandom));
  base.push_back(official_case("compressor", tf, {{"T", 67}, {"m", 4}}, K::kOutliers));
  base.push_back(official_case("compressor", tf, {{"T", 257}, {"m", 128}}, K::kRandom));
  base.push_back(official_case("indexer_compressor", tf, {{"T", 67}, {"m", 4}}, K::kOutliers));
  base.push_back(official_case("compressor", fl, {{"T", 16}, {"m", 4}}, K::kRandom));
  base.push_back(official_case("indexer_compressor", fl, {{"T", 16}, {"m", 4}}, K::kRandom));
  base.push_back(official_case("compressor_decode", tf, {{"T", 67}, {"m", 4}, {"p", 0}}, K::kRandom));
  base.push_back(official_case("compressor_decode", tf, {{"T", 67}, {"m", 4}, {"p", 33}}, K::kOutliers));
  base.push_back(official_case("indexer_compressor_decode", tf, {{"T", 67}, {"m", 4}, {"p", 0}}, K::kRandom));
  base.push_back(official_case("compressor_decode", fl, {{"T", 16}, {"m", 4}, {"p", 5}}, K::kRandom));
  base.push_back(official_case("indexer_compressor_decode", fl, {{"T", 16}, {"m", 4}, {"p", 5}}, K::kRandom));
  // The table may hold an extra already (same name): keep one.
  std::vector<compare::Case> unique;
  for (const compare::Case& c : base) {
    bool seen = false;
    for (const compare::Case& u : unique) seen |= u.name() == c.name();
    if (!seen) unique.push_back(c);
  }
  std::vector<compare::Case> out;
  for (std::uint64_t seed : {0ull, 1ull, 2ull})
    for (compare::Case c : unique) {
      c.global_seed = seed;
      out.push_back(c);
    }
  return out;
}

}  // namespace v4ref::test
