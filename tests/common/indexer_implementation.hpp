// The indexer kernels (cuda/src/indexer_kernels.cuh logits, cuda/src/topk_kernels.cuh top-k)
// plugged into compare/'s differential runner as one Implementation of the components
// index_logits, topk and indexer_decode (compare/src/components.cpp), the way an engine would
// integrate them: the runner's values are encoded into the cache formats (68-byte Q4 rows or
// 132-byte FP8 rows, ShapeError when a value is not representable), spread over shuffled pages
// with spare pages between them, and the outputs start as NaN poison.
//
// indexer_decode runs the fused decode path (index_topk_partial_kernel + index_topk_merge_kernel:
// the logits never reach global memory); index_logits and topk the two unfused kernels.
// Backends: the SIMT executor (every machine) or, in tests/gpu/, the device. A fault selects a
// defect in the kernels' own source (indexer_kernels::LogitsFault, topk_kernels::TopkFault; the
// top-k kernel's faults run indexer_decode through the unfused path).
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

#include "v4ref/compare/runner.hpp"
#include "../common/indexer_inputs.hpp"
#include "v4ref/cuda/indexer_simt.hpp"
#include "v4ref/cuda/indexer_tile.hpp"
#include "v4ref/cuda/topk_simt.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::test {

struct IndexerBackend {
  std::string name = "cuda-executor";
  // logits [R, stride], read and written back (the kernel writes j < visible(r))
  std::function<void(const cuda::idx::LogitsProblem&, float* logits, int logits_fault)> logits;
  // scores [rows, stride], visible [rows] -> [rows, k] ascending, −1 padding
  std::function<std::vector<std::int32_t>(const float* scores, std::int64_t rows, std::int64_t stride,
                                          const std::int64_t* visible, std::int64_t k, int topk_fault)>
      topk;
  // the fused decode path: [R, k] ascending, −1 padding, logits never materialised
  std::function<std::vector<std::int32_t>(const cuda::idx::LogitsProblem&, std::int32_t k, int logits_fault)>
      topk_decode;
};

inline IndexerBackend indexer_executor_backend() {
  IndexerBackend b;
  b.logits = [](const cuda::idx::LogitsProblem& p, float* logits, int fault) {
    cuda::IndexerSimtOptions o;
    o.fault = fault;
    o.run.throw_on_error = fault == 0;
    o.run.max_findings = 4;
    cuda::simt::LaunchReport rep;
    cuda::index_logits_simt(p, logits, o, &rep);
    if (!rep.ok()) throw Error("index_logits_kernel: " + rep.summary());
  };
  b.topk = [](const float* scores, std::int64_t rows, std::int64_t stride, const std::int64_t* visible,
              std::int64_t k, int fault) {
    cuda::TopkSimtOptions o;
    o.fault = fault;
    o.run.throw_on_error = fault == 0;
    cuda::simt::LaunchReport rep;
    std::vector<std::int32_t> out = cuda::topk_simt(scores, rows, stride, visible, k, o, &rep);
    if (!rep.ok()) throw Error("topk_kernel: " + rep.summary());
    return out;
  };
  b.topk_decode = [](const cuda::idx::LogitsProblem& p, std::int32_t k, int fault) {
    cuda::IndexerSimtOptions o;
    o.fault = fault;
    o.run.throw_on_error = fault == 0;
    o.run.max_findings = 4;
    cuda::simt::LaunchReport r1, r2;
    std::vector<std::int32_t> out = cuda::index_topk_decode_simt(p, k, o, &r1, &r2);
    if (!r1.ok()) throw Error("index_topk_partial_kernel: " + r1.summary());
    if (!r2.ok()) throw Error("index_topk_merge_kernel: " + r2.summary());
    return out;
  };
  return b;
}

// The 68-byte Q4 row of 128 values (e2m1 codes × one power of two per 32 dims); ShapeError
// naming `what` when the values are not of that form.
inline void encode_q4_row(const double* v, std::uint8_t* row, const std::string& what) {
  std::memset(row, 0, 68);
  for (int b = 0; b < 4; ++b) {
    double amax = 0;
    for (int k = 32 * b; k < 32 * b + 32; ++k) amax = std::max(amax, std::abs(v[k]));
    int e = amax == 0 ? 0 : static_cast<int>(std::ceil(std::log2(amax / 6.0)));
    bool found = false;
    for (int tries = 0; tries < 4 && !found; ++tries, ++e) {
      found = e >= -127 && e <= 127;
      for (int k = 32 * b; k < 32 * b + 32 && found; ++k) {
        const double x = std::ldexp(v[k], -e);
        found = fmt::e2m1_to_double(fmt::e2m1_encode(x)) == x;
      }
      if (found) {
        row[64 + b] = static_cast<std::uint8_t>(e + 127);
        for (int k = 32 * b; k < 32 * b + 32; ++k) {
          const std::uint8_t c = fmt::e2m1_encode(std::ldexp(v[k], -e)) & 0xF;
          row[k / 2] = static_cast<std::uint8_t>(row[k / 2] | (k % 2 == 0 ? c : c << 4));
        }
      }
    }
    if (!found)
      throw ShapeError(what + ": dims " + std::to_string(32 * b) + ".." + std::to_string(32 * b + 31) +
                       " are not e2m1 codes times one power of two (not Q4-valued)");
  }
}

// The 132-byte FP8 row: e4m3 codes and the fp32 scale amax/448 (vLLM's per-token rule).
inline void encode_fp8_row(const double* v, std::uint8_t* row, const std::string& what) {
  double amax = 0;
  for (int k = 0; k < 128; ++k) amax = std::max(amax, std::abs(v[k]));
  const float s = amax == 0 ? 1.0f : static_cast<float>(amax / 448.0);
  for (int k = 0; k < 128; ++k) {
    const std::uint8_t c = fmt::e4m3_encode(v[k] / static_cast<double>(s));
    if (static_cast<double>(fmt::e4m3_to_float(c)) * static_cast<double>(s) != v[k])
      throw ShapeError(what + ": value " + std::to_string(v[k]) + " at dim " + std::to_string(k) +
                       " is not an e4m3 code times the row scale amax/448");
    row[k] = c;
  }
  std::memcpy(row + 128, &s, 4);
}

// The runner's values in the cache formats: queries [R, H·128] (Q4-valued), weights [R, H]
// (fp32-valued), keys [B·N, 128] (row bN + j = entry j of request b; Q4- or FP8-valued), query
// positions and requests; request b's pages shuffled (seeded) over a cache with a spare page per
// request, unused rows NaN codes. ShapeError naming the row when a value is not representable.
inline IndexerData encode_indexer_data(const ref::Mat& q, const ref::Mat& weights, const ref::Mat& keys,
                                       const std::vector<std::int32_t>& pos, const std::vector<std::int32_t>& request,
                                       std::int64_t B, std::int64_t N, int H, cuda::idx::KeyFormat f,
                                       std::uint64_t page_seed) {
  namespace idx = cuda::idx;
  const std::int64_t R = q.rows();
  IndexerData a;
  a.format = f;
  a.heads = H;
  a.requests = B;
  a.q.resize(static_cast<std::size_t>(R * H * idx::kQ4RowBytes));
  a.w.resize(static_cast<std::size_t>(R * H));
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t h = 0; h < H; ++h) {
      std::vector<double> v(128);
      for (int k = 0; k < 128; ++k) v[static_cast<std::size_t>(k)] = q(r, h * 128 + k);
      encode_q4_row(v.data(), a.q.data() + (r * H + h) * idx::kQ4RowBytes,
                    "q row " + std::to_string(r) + " head " + std::to_string(h));
      const auto w = static_cast<float>(weights(r, h));
      if (static_cast<double>(w) != weights(r, h))
        throw ShapeError("weights[" + std::to_string(r) + ", " + std::to_string(h) + "] is not fp32-valued");
      a.w[static_cast<std::size_t>(r * H + h)] = w;
    }
  a.max_pages = std::max<std::int64_t>(1, (N + idx::kPageRows - 1) / idx::kPageRows);
  a.num_pages = B * a.max_pages + B;
  std::vector<std::int32_t> perm(static_cast<std::size_t>(a.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  Rng rng(page_seed);
  for (std::size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng.below(i)]);
  a.page_table.assign(perm.begin(), perm.begin() + B * a.max_pages);
  const int rb = idx::row_bytes(f);
  a.cache.assign(static_cast<std::size_t>(a.num_pages * idx::kPageRows * rb), 0xFF);  // NaN codes
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < N; ++j) {
      std::vector<double> v(128);
      for (int k = 0; k < 128; ++k) v[static_cast<std::size_t>(k)] = keys(b * N + j, k);
      std::uint8_t* row = a.key_row(static_cast<std::int32_t>(b), j);
      const std::string what = "keys row " + std::to_string(b * N + j);
      if (f == idx::KeyFormat::kFp4) encode_q4_row(v.data(), row, what);
      else encode_fp8_row(v.data(), row, what);
    }
  a.pos = pos;
  a.request = request;
  a.stride = std::max<std::int64_t>(N, 1);
  return a;
}

enum class IndexerFaultSite { kNone, kLogits, kTopk };

class IndexerKernels final : public compare::Implementation {
 public:
  IndexerKernels(IndexerFaultSite site = IndexerFaultSite::kNone, int fault = 0,
                 IndexerBackend backend = indexer_executor_backend())
      : site_(site), fault_(fault), backend_(std::move(backend)) {}

  std::string name() const override {
    if (site_ == IndexerFaultSite::kNone) return backend_.name;
    return backend_.name + (site_ == IndexerFaultSite::kLogits ? "-logits-fault-" : "-topk-fault-") +
           std::to_string(fault_);
  }
  std::string path() const override { return "fp32"; }
  bool supports(const compare::Case& c) const override {
    return c.component == "index_logits" || c.component == "topk" || c.component == "indexer_decode";
  }
  compare::TensorSet run(const compare::ComponentCall& call) const override {
    const std::string& comp = call.c.component;
    if (comp == "index_logits") return index_logits(call);
    if (comp == "topk") return topk(call);
    if (comp == "indexer_decode") return indexer_decode(call);
    throw ConfigError(name() + ": no kernel for component " + comp);
  }

 private:
  IndexerFaultSite site_;
  int fault_;
  IndexerBackend backend_;

  int logits_fault() const { return site_ == IndexerFaultSite::kLogits ? fault_ : 0; }
  int topk_fault() const { return site_ == IndexerFaultSite::kTopk ? fault_ : 0; }

  static IndexerData encode(const compare::ComponentCall& call, std::int64_t B, std::int64_t N,
                            const std::vector<std::int32_t>& request) {
    const ref::Mat& pos = call.inputs.at("positions");
    std::vector<std::int32_t> p;
    for (Eigen::Index r = 0; r < pos.rows(); ++r) p.push_back(static_cast<std::int32_t>(pos(r, 0)));
    return encode_indexer_data(call.inputs.at("q"), call.inputs.at("weights"), call.inputs.at("keys"), p, request, B,
                               N, static_cast<int>(call.c.dim("H")),
                               call.c.dim("fmt") == 1 ? cuda::idx::KeyFormat::kFp8 : cuda::idx::KeyFormat::kFp4,
                               derive_seed("indexer_implementation", call.c.component, "pages",
                                           static_cast<std::uint64_t>(N)));
  }

  // The kernel's logits [R, N], NaN where it wrote nothing it should have, −∞ past visibility.
  std::vector<float> logits_of(const IndexerData& a, std::int64_t N) const {
    const std::int64_t R = a.rows();
    std::vector<float> out(static_cast<std::size_t>(R * a.stride), std::numeric_limits<float>::quiet_NaN());
    bool any = false;
    for (std::int64_t r = 0; r < R; ++r) any = any || cuda::idx::visible_entries(a.pos[static_cast<std::size_t>(r)]) > 0;
    if (any) backend_.logits(a.problem(), out.data(), logits_fault());
    for (std::int64_t r = 0; r < R; ++r)
      for (std::int64_t j = std::min(N, cuda::idx::visible_entries(a.pos[static_cast<std::size_t>(r)])); j < a.stride; ++j)
        if (std::isnan(out[static_cast<std::size_t>(r * a.stride + j)]))
          out[static_cast<std::size_t>(r * a.stride + j)] = -std::numeric_limits<float>::infinity();
    return out;
  }

  compare::TensorSet index_logits(const compare::ComponentCall& call) const {
    const std::int64_t N = call.inputs.at("keys").rows(), R = call.inputs.at("q").rows();
    const IndexerData a = encode(call, 1, N, std::vector<std::int32_t>(static_cast<std::size_t>(R), 0));
    const std::vector<float> l = logits_of(a, N);
    ref::Mat m(R, N);
    for (std::int64_t r = 0; r < R; ++r)
      for (std::int64_t j = 0; j < N; ++j) m(r, j) = static_cast<double>(l[static_cast<std::size_t>(r * a.stride + j)]);
    compare::TensorSet out;
    out.put("logits", std::move(m), "f32");
    return out;
  }

  ref::Mat select(const std::vector<float>& scores, std::int64_t rows, std::int64_t stride,
                  const std::vector<std::int64_t>& visible, std::int64_t K) const {
    const std::vector<std::int32_t> idx = backend_.topk(scores.data(), rows, stride, visible.data(), K, topk_fault());
    ref::Mat m(rows, K);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t i = 0; i < K; ++i) m(r, i) = static_cast<double>(idx[static_cast<std::size_t>(r * K + i)]);
    return m;
  }

  compare::TensorSet topk(const compare::ComponentCall& call) const {
    const ref::Mat& sc = call.inputs.at("scores");
    const ref::Mat& pos = call.inputs.at("positions");
    std::vector<float> s(static_cast<std::size_t>(sc.size()));
    for (Eigen::Index r = 0; r < sc.rows(); ++r)
      for (Eigen::Index j = 0; j < sc.cols(); ++j) s[static_cast<std::size_t>(r * sc.cols() + j)] = static_cast<float>(sc(r, j));
    std::vector<std::int64_t> vis(static_cast<std::size_t>(sc.rows()));
    for (Eigen::Index r = 0; r < sc.rows(); ++r)
      vis[static_cast<std::size_t>(r)] = std::min<std::int64_t>(sc.cols(), cuda::idx::visible_entries(static_cast<std::int64_t>(pos(r, 0))));
    compare::TensorSet out;
    out.put("topk_idx", select(s, sc.rows(), sc.cols(), vis, call.c.dim("K")), "index");
    return out;
  }

  compare::TensorSet indexer_decode(const compare::ComponentCall& call) const {
    const std::int64_t B = call.c.dim("B"), n = call.c.dim("next_n"), N = call.c.dim("N");
    std::vector<std::int32_t> request;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < n; ++i) request.push_back(static_cast<std::int32_t>(b));
    const IndexerData a = encode(call, B, N, request);
    const std::int64_t K = call.c.dim("K");
    if (topk_fault() != 0) {  // the top-k kernel's faults: the unfused path (logits, then top-k)
      const std::vector<float> l = logits_of(a, N);
      std::vector<std::int64_t> vis;
      for (std::int32_t t : a.pos) vis.push_back(std::min<std::int64_t>(N, cuda::idx::visible_entries(t)));
      compare::TensorSet out;
      out.put("topk_idx", select(l, a.rows(), a.stride, vis, K), "index");
      return out;
    }
    const std::vector<std::int32_t> idx =
        backend_.topk_decode(a.problem(), static_cast<std::int32_t>(K), logits_fault());
    ref::Mat m(a.rows(), K);
    for (std::int64_t r = 0; r < a.rows(); ++r)
      for (std::int64_t i = 0; i < K; ++i) m(r, i) = static_cast<double>(idx[static_cast<std::size_t>(r * K + i)]);
    compare::TensorSet out;
    out.put("topk_idx", std::move(m), "index");
    return out;
  }
};

}  // namespace v4ref::test
