// The attention kernel (cuda/src/attention_kernels.cuh) plugged into compare/'s differential
// runner as one Implementation of the component attention_fp8 (compare/src/components.cpp), the
// way an engine would integrate it: the runner's values are encoded into 584-byte (D = 512) or
// 200-byte (D = 128) cache rows (ShapeError when a value is not representable), the window and
// the compressed entries spread over shuffled pages with spare pages between them (unused rows
// hold NaN codes the kernel must never read), and the outputs start as NaN poison.
//
// Backends: the SIMT executor (every machine) or, in tests/gpu/, the device. A fault selects a
// defect in the kernel's own source (attention_kernels::AttnFault).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "../common/attention_inputs.hpp"
#include "v4ref/compare/runner.hpp"
#include "v4ref/cuda/attention_simt.hpp"
#include "v4ref/cuda/attention_tile.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::test {

// The runner's values for one request: q [Tq, H·D] (bf16-valued), kv [q_start + Tq, D] (row s =
// position s), compressed [N, D], selected [Tq, K] (CSA; −1 padding) or HCA, sink [H].
// window_pages = 0: a linear window table holding every position; otherwise a ring of that many
// pages (only the positions the rows can see are written, as a serving engine's ring holds them).
inline AttentionData encode_attention_data(const ref::Mat& q, const ref::Mat& kv, const ref::Mat& compressed,
                                           const ref::Mat& selected, const ref::Mat& sink, std::int64_t q_start,
                                           cuda::attn::Kind kind, int H, int D, std::int32_t window_pages,
                                           std::uint64_t page_seed) {
  namespace attn = cuda::attn;
  AttentionData a;
  a.kind = kind;
  a.D = D;
  a.H = H;
  const std::int64_t Tq = q.rows(), total = kv.rows(), N = compressed.rows();
  const std::size_t rb = static_cast<std::size_t>(attn::row_bytes(D));
  a.q.resize(static_cast<std::size_t>(Tq * H * D));
  for (std::int64_t i = 0; i < Tq; ++i)
    for (std::int64_t k = 0; k < H * D; ++k) {
      const std::uint16_t h = fmt::bf16_encode(q(i, k));
      if (fmt::bf16_to_double(h) != q(i, k)) throw ShapeError("q[" + std::to_string(i) + ", " + std::to_string(k) + "] is not bf16-valued");
      a.q[static_cast<std::size_t>(i * H * D + k)] = h;
    }
  for (int h = 0; h < H; ++h) a.sink.push_back(static_cast<float>(sink(0, h)));
  for (std::int64_t i = 0; i < Tq; ++i) a.pos.push_back(static_cast<std::int32_t>(q_start + i)), a.request.push_back(0);
  // window
  a.window_pages = window_pages > 0 ? window_pages
                                    : static_cast<std::int32_t>(std::max<std::int64_t>(2, (total + attn::kPageRows - 1) / attn::kPageRows));
  a.window_table = shuffled_pages(1, a.window_pages, page_seed);
  a.window_cache.assign(static_cast<std::size_t>(a.window_pages + 1) * attn::kPageRows * rb, 0xFF);
  const std::int64_t first = window_pages > 0 ? attn::window_first(q_start) : 0;
  for (std::int64_t s = first; s < total; ++s) {
    const std::int64_t page = a.window_table[static_cast<std::size_t>((s / attn::kPageRows) % a.window_pages)];
    std::vector<double> v(static_cast<std::size_t>(D));
    for (int k = 0; k < D; ++k) v[static_cast<std::size_t>(k)] = kv(s, k);
    encode_cache_row(v.data(), D, a.window_cache.data() + (page * attn::kPageRows + s % attn::kPageRows) * static_cast<std::int64_t>(rb),
                     "kv row " + std::to_string(s));
  }
  // compressed entries
  a.cmp_pages = static_cast<std::int32_t>(std::max<std::int64_t>(1, (N + attn::kPageRows - 1) / attn::kPageRows));
  a.cmp_table = shuffled_pages(1, a.cmp_pages, page_seed ^ 0x9E3779B97F4A7C15ull);
  a.cmp_cache.assign(static_cast<std::size_t>(a.cmp_pages + 1) * attn::kPageRows * rb, 0xFF);
  for (std::int64_t j = 0; j < N; ++j) {
    const std::int64_t page = a.cmp_table[static_cast<std::size_t>(j / attn::kPageRows)];
    std::vector<double> v(static_cast<std::size_t>(D));
    for (int k = 0; k < D; ++k) v[static_cast<std::size_t>(k)] = compressed(j, k);
    encode_cache_row(v.data(), D, a.cmp_cache.data() + (page * attn::kPageRows + j % attn::kPageRows) * static_cast<std::int64_t>(rb),
                     "compressed row " + std::to_string(j));
  }
  if (kind == attn::Kind::kCsa) {
    a.top_k = static_cast<std::int32_t>(selected.cols());
    for (std::int64_t i = 0; i < Tq; ++i)
      for (std::int64_t s = 0; s < selected.cols(); ++s) a.selected.push_back(static_cast<std::int32_t>(selected(i, s)));
  }
  return a;
}

using AttentionBackend = std::function<void(const cuda::attn::AttentionProblem&, std::uint16_t* out, float* lse, int fault)>;

inline AttentionBackend attention_executor_backend() {
  return [](const cuda::attn::AttentionProblem& p, std::uint16_t* out, float* lse, int fault) {
    cuda::AttentionSimtOptions o;
    o.fault = fault;
    o.run.throw_on_error = fault == 0;
    o.run.max_findings = 4;
    cuda::simt::LaunchReport rep;
    cuda::attention_simt(p, out, lse, o, &rep);
    if (!rep.ok()) throw Error("attention_kernel: " + rep.summary());
  };
}

class AttentionKernel final : public compare::Implementation {
 public:
  explicit AttentionKernel(int fault = 0, AttentionBackend backend = attention_executor_backend(),
                           std::string name = "cuda-executor")
      : fault_(fault), backend_(std::move(backend)), name_(std::move(name)) {}
  std::string name() const override { return fault_ == 0 ? name_ : name_ + "-attention-fault-" + std::to_string(fault_); }
  std::string path() const override { return "fp32"; }
  bool supports(const compare::Case& c) const override { return c.component == "attention_fp8"; }
  compare::TensorSet run(const compare::ComponentCall& call) const override {
    const int H = static_cast<int>(call.cfg.n_heads), D = static_cast<int>(call.cfg.head_dim);
    const cuda::attn::Kind kind = call.c.dim_or("hca", 0) != 0 ? cuda::attn::Kind::kHca : cuda::attn::Kind::kCsa;
    const AttentionData a = encode_attention_data(call.inputs.at("q"), call.inputs.at("kv"), call.inputs.at("compressed"),
                                                  call.inputs.at("selected"), call.inputs.at("sink"),
                                                  call.c.dim("q_start"), kind, H, D, 0,
                                                  derive_seed("attention_implementation", "pages", "kv",
                                                              static_cast<std::uint64_t>(call.inputs.at("kv").rows())));
    const std::int64_t R = a.rows();
    std::vector<std::uint16_t> out(static_cast<std::size_t>(R * H * D), 0x7FC1);  // NaN poison
    std::vector<float> lse(static_cast<std::size_t>(R * H), std::numeric_limits<float>::quiet_NaN());
    backend_(a.problem(), out.data(), lse.data(), fault_);
    ref::Mat o(R, H * D), l(R, H);
    for (std::int64_t i = 0; i < R * H * D; ++i) o.data()[i] = 0;
    for (std::int64_t i = 0; i < R; ++i) {
      for (std::int64_t k = 0; k < H * D; ++k) o(i, k) = fmt::bf16_to_double(out[static_cast<std::size_t>(i * H * D + k)]);
      for (int h = 0; h < H; ++h) l(i, h) = static_cast<double>(lse[static_cast<std::size_t>(i * H + h)]);
    }
    compare::TensorSet ts;
    ts.put("out", std::move(o), "bf16");
    ts.put("lse", std::move(l), "f32");
    return ts;
  }

 private:
  int fault_;
  AttentionBackend backend_;
  std::string name_;
};

}  // namespace v4ref::test
