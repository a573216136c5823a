// Lightning-indexer logits and top-k selection against their rooflines and against baselines
// measured in the same run (kernel-targets.md §4.1, §4.2; docs/cuda-indexer.md §5).
//
// Cases:
//   logits/<fmt>/decode_B64_64K   Flash/Pro decode: 64 requests, one query row each, 16,384
//                                  visible entries each (64K context), keys FP8 (132 B) or FP4 (68 B)
//   logits/<fmt>/decode_B1_1M     one request at 1M context (262,144 entries)
//   logits/<fmt>/prefill_T8192    an 8192-row chunk at a 120K prefix (logits materialised)
//   baseline_logits/fp8/...        cuBLASLt FP8 GEMM of the per-head logits [64, N] per request
//                                  (keys contiguous, no paging: the baseline's favour), bf16 out,
//                                  then a ReLU-weight-sum kernel to the fp32 logits
//   topk/k512|k1024/decode_B1_1M, topk/k512/decode_B64_64K, topk/k512/prefill_T8192
//   baseline_topk/...              CUB segmented radix sort (descending, full rows) + take k
//   fused_decode/<fmt>/decode_*    the fused decode path (score tiles into a running selection,
//                                  logits never in global memory), k = 512, against
//   unfused_decode/<fmt>/decode_*  logits kernel + top-k kernel of the same step (same run)
// bytes / flops: kernel-targets.md §4.1 (keys once per request, Q4 query rows, fp32 logits
// written) and §4.2 (scores read, indices written); t_roof = max(bytes / 3.35 TB/s, flops /
// 1979 TFLOPS). Correct before fast: every logits case compares request 0's row (decode) or the
// first 8 rows (prefill) with idx::logits_model (FP4 keys: bit for bit; FP8: within the
// index_logits.logits bound of the exact logits), and every top-k case compares its first rows
// with the reference rule. Timing: bench/bench_timing.cuh (cold L2, CUDA graphs for short
// cases, median of --reps). Output: bench/bench_report.hpp's JSON to --out (default
// reports/data/indexer-<device>-<sha>.json).
//
//   build-cuda/bench/indexer_bench [--out=PATH] [--filter=SUBSTRING] [--reps=N] [--warm]
#include <cublasLt.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cub/device/device_segmented_radix_sort.cuh>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../tests/common/indexer_inputs.hpp"
#include "bench_timing.cuh"
#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/indexer.hpp"
#include "v4ref/cuda/topk.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace {

using namespace v4ref;  // NOLINT: bench file
using bench::DeviceBuffer;
using bench::download;
using bench::upload;
namespace idx = v4ref::cuda::idx;

constexpr double kHbm = bench::kHbmBytesPerSecond;
constexpr double kFp8Peak = 1979e12;  // H100 SXM dense FP8 (kernel-targets.md §1)

// One problem on the device.
struct DeviceProblem {
  test::IndexerData d;
  DeviceBuffer q, w, pos, table, cache, logits, tiles;
  explicit DeviceProblem(test::IndexerData data)
      : d(std::move(data)),
        q(d.q.size()),
        w(d.w.size() * 4),
        pos(d.pos.size() * 4),
        table(d.page_table.size() * 4),
        cache(d.cache.size()),
        logits(static_cast<std::size_t>(d.rows() * d.stride) * 4),
        tiles(static_cast<std::size_t>(3 * d.rows()) * 4) {
    upload(q, d.q);
    upload(w, d.w);
    upload(pos, d.pos);
    upload(table, d.page_table);
    upload(cache, d.cache);
  }
  v4ref::cuda::LogitsDeviceArrays arrays() const {
    v4ref::cuda::LogitsDeviceArrays a;
    a.q = q.as<std::uint8_t>();
    a.w = w.as<float>();
    a.pos = pos.as<std::int32_t>();
    a.page_table = table.as<std::int32_t>();
    a.cache = cache.as<std::uint8_t>();
    a.logits = logits.as<float>();
    a.tiles = tiles.as<std::int32_t>();
    return a;
  }
};

// Correct before fast: rows [0, rows) of the device logits against the model (FP4: bitwise) or
// the exact logits within the row's bound (FP8).
void gate_logits(const DeviceProblem& p, std::int64_t rows) {
  const test::IndexerData& d = p.d;
  test::IndexerData head = d;  // the first `rows` query rows only
  head.pos.resize(static_cast<std::size_t>(rows));
  head.request.resize(static_cast<std::size_t>(rows));
  head.q.resize(static_cast<std::size_t>(rows * d.heads * idx::kQ4RowBytes));
  head.w.resize(static_cast<std::size_t>(rows * d.heads));
  const std::vector<float> dev = download<float>(p.logits, static_cast<std::size_t>(rows * d.stride));
  if (d.format == idx::KeyFormat::kFp4) {
    std::vector<float> want(dev.size());
    std::copy(dev.begin(), dev.end(), want.begin());
    idx::logits_model(head.problem(), want.data());  // overwrites exactly the visible entries
    if (std::memcmp(want.data(), dev.data(), dev.size() * 4) != 0)
      throw std::runtime_error("correctness gate failed: FP4 logits differ from idx::logits_model");
    return;
  }
  const test::ExactLogits ex = test::exact_logits(head);
  for (std::size_t i = 0; i < dev.size(); ++i) {
    if (!std::isfinite(ex.logits[i])) continue;
    const double allowed = 33.0 * 0x1p-12 * ex.bound[i] + 0x1p-24 * std::abs(ex.logits[i]);
    if (!(std::abs(static_cast<double>(dev[i]) - ex.logits[i]) <= allowed))
      throw std::runtime_error("correctness gate failed: FP8 logit " + std::to_string(i) + " = " +
                               std::to_string(dev[i]) + ", exact " + std::to_string(ex.logits[i]));
  }
}

// kernel-targets.md §4.1 bytes and flops of a problem.
void logits_cost(const test::IndexerData& d, double* bytes, double* flops) {
  *bytes = v4ref::cuda::logits_bytes(d.problem());
  double pairs = 0;
  for (std::int32_t t : d.pos) pairs += static_cast<double>(idx::visible_entries(t));
  *flops = 2.0 * d.heads * idx::kHeadDim * pairs;
}

// ---- baselines

// out[r, j] = Σ_h w[r, h] · max(D_r[h·N + j], 0) for j < N (D bf16, per-head logits of row r).
__global__ void relu_weight_sum(const __nv_bfloat16* D, const float* w, float* out, std::int64_t N, int H,
                                std::int64_t out_stride) {
  const std::int64_t r = blockIdx.y;
  for (std::int64_t j = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; j < N;
       j += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float s = 0;
    for (int h = 0; h < H; ++h)
      s += w[r * H + h] * fmaxf(__bfloat162float(D[(r * H + h) * N + j]), 0.0f);
    out[r * out_stride + j] = s;
  }
}

__global__ void take_k(const std::int32_t* sorted_idx, std::int32_t* out, std::int64_t N, std::int64_t stride,
                       std::int64_t k) {
  const std::int64_t r = blockIdx.y;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < k;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[r * k + i] = i < N ? sorted_idx[r * stride + i] : -1;
}

__global__ void iota_rows(std::int32_t* v, std::int64_t N, std::int64_t rows) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < N * rows;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    v[i] = static_cast<std::int32_t>(i % N);
}

// The cuBLASLt baseline of decode logits: B requests with N contiguous FP8 keys each, one query
// row of 64 heads each (per-tensor FP8 queries), D bf16 [B][64][N], then relu_weight_sum.
struct LtBaseline {
  cublasLtHandle_t lt = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  cublasLtMatmulHeuristicResult_t heur{};
  DeviceBuffer keys, queries, D, ws, one;
  std::int64_t B, N;
  int H;
  LtBaseline(std::int64_t b, std::int64_t n, int h)
      : keys(static_cast<std::size_t>(b * n * 128)),
        queries(static_cast<std::size_t>(b * h * 128)),
        D(static_cast<std::size_t>(b * h * n) * 2),
        ws(std::size_t{64} << 20),
        one(4),
        B(b),
        N(n),
        H(h) {
    std::vector<std::uint8_t> hk(keys.bytes), hq(queries.bytes);
    Rng rng(derive_seed("indexer_bench", "baseline", "", static_cast<std::uint64_t>(n)));
    for (auto& x : hk) x = test::random_e4m3(rng);
    for (auto& x : hq) x = test::random_e4m3(rng);
    upload(keys, hk);
    upload(queries, hq);
    const float f1 = 1.0f;
    V4REF_CUDA_CHECK(cudaMemcpy(one.p, &f1, 4, cudaMemcpyHostToDevice));
    V4REF_CUBLAS_CHECK(cublasLtCreate(&lt));
    V4REF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t t = CUBLAS_OP_T, nn = CUBLAS_OP_N;
    V4REF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
    V4REF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &nn, sizeof nn));
    // A = keys: column-major [128, N] (row-major [N][128]), op T; B = queries [128, H]; D [N, H].
    V4REF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, 128, static_cast<std::uint64_t>(N), 128));
    V4REF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, 128, static_cast<std::uint64_t>(H), 128));
    V4REF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, static_cast<std::uint64_t>(N), static_cast<std::uint64_t>(H),
                                        N));
    const std::int32_t batch = static_cast<std::int32_t>(B);
    const std::int64_t sa = N * 128, sb = static_cast<std::int64_t>(H) * 128, sd = N * H;
    for (auto [l, s] : {std::pair{la, sa}, std::pair{lb, sb}, std::pair{ld, sd}}) {
      V4REF_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
      V4REF_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s, sizeof s));
    }
    V4REF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const std::size_t wsb = ws.bytes;
    V4REF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    int found = 0;
    V4REF_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 1, &heur, &found));
    if (found == 0) throw std::runtime_error("cuBLASLt: no FP8 algorithm for this shape");
  }
  ~LtBaseline() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    for (auto l : {la, lb, ld})
      if (l) cublasLtMatrixLayoutDestroy(l);
    if (op) cublasLtMatmulDescDestroy(op);
    if (lt) cublasLtDestroy(lt);
  }
  void run(const float* w, float* out, std::int64_t out_stride, cudaStream_t s) {
    const float alpha = 1.0f, beta = 0.0f;
    V4REF_CUBLAS_CHECK(cublasLtMatmul(lt, op, &alpha, keys.p, la, queries.p, lb, &beta, D.p, ld, D.p, ld, &heur.algo, ws.p,
                            ws.bytes, s));
    const dim3 grid(static_cast<unsigned>(std::min<std::int64_t>((N + 255) / 256, 1024)), static_cast<unsigned>(B));
    relu_weight_sum<<<grid, 256, 0, s>>>(D.as<__nv_bfloat16>(), w, out, N, H, out_stride);
  }
};

// CUB's segmented radix sort of whole rows (descending; row r = entries [r·stride, r·stride + N))
// and the first k of each.
struct CubTopk {
  std::int64_t rows, N, stride, k;
  DeviceBuffer keys_out, idx_in, idx_out, begins, ends, out;
  std::unique_ptr<DeviceBuffer> temp;
  std::size_t temp_bytes = 0;
  CubTopk(std::int64_t r, std::int64_t n, std::int64_t st, std::int64_t kk)
      : rows(r), N(n), stride(st), k(kk), keys_out(static_cast<std::size_t>(r * st) * 4),
        idx_in(static_cast<std::size_t>(r * st) * 4), idx_out(static_cast<std::size_t>(r * st) * 4),
        begins(static_cast<std::size_t>(r) * 8), ends(static_cast<std::size_t>(r) * 8),
        out(static_cast<std::size_t>(r * kk) * 4) {
    std::vector<std::int64_t> b(static_cast<std::size_t>(r)), e(static_cast<std::size_t>(r));
    for (std::int64_t i = 0; i < r; ++i) {
      b[static_cast<std::size_t>(i)] = i * st;
      e[static_cast<std::size_t>(i)] = i * st + n;
    }
    upload(begins, b);
    upload(ends, e);
    iota_rows<<<1024, 256>>>(idx_in.as<std::int32_t>(), st, r);
    V4REF_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        nullptr, temp_bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
        static_cast<const std::int32_t*>(nullptr), static_cast<std::int32_t*>(nullptr), r * st, r,
        begins.as<std::int64_t>(), ends.as<std::int64_t>()));
    temp = std::make_unique<DeviceBuffer>(temp_bytes);
  }
  void run(const float* scores, cudaStream_t s) {
    std::size_t tb = temp_bytes;
    V4REF_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        temp->p, tb, scores, keys_out.as<float>(), idx_in.as<std::int32_t>(), idx_out.as<std::int32_t>(), rows * stride,
        rows, begins.as<std::int64_t>(), ends.as<std::int64_t>(), 0, 32, s));
    take_k<<<dim3(static_cast<unsigned>((k + 255) / 256), static_cast<unsigned>(rows)), 256, 0, s>>>(
        idx_out.as<std::int32_t>(), out.as<std::int32_t>(), N, stride, k);
  }
};

}  // namespace

int main(int argc, char** argv) {
  bench::BenchOptions o;
  bench::BenchContext ctx;
  if (int rc = 0; !bench::bench_session(argc, argv, "indexer", &o, &ctx, &rc)) return rc;
  DeviceBuffer scratch(bench::kScratchBytes);
  std::vector<bench::BenchResult> results;

  struct Shape {
    std::string label;
    std::int32_t requests, first_pos, rows_per_request;
    double target_us_fp8, target_us_fp4;  // kernel-targets.md §4.1 (0: none)
  };
  const Shape shapes[] = {
      {"decode_B64_64K", 64, 65535, 1, 57.0, 30.0},
      {"decode_B1_1M", 1, 1048575, 1, 18.0, 0.0},
      {"prefill_T8192", 1, 122880, 8192, 3900.0, 0.0},
  };
  for (const Shape& sh : shapes)
    for (idx::KeyFormat f : {idx::KeyFormat::kFp8, idx::KeyFormat::kFp4}) {
      const std::string name = std::string("logits/") + idx::format_name(f) + "/" + sh.label;
      const std::string tk_name = std::string("topk/k512/") + sh.label;
      const std::string base_name = std::string("baseline_logits/fp8/") + sh.label;
      const std::string base_tk = std::string("baseline_topk/k512/") + sh.label;
      const bool want = bench::selected(o, name) || bench::selected(o, tk_name) || bench::selected(o, base_name);
      if (!want) continue;
      bench::BenchResult r;
      r.name = name;
      try {
        DeviceProblem p(test::make_indexer_data(f, 64, std::vector<std::int32_t>(static_cast<std::size_t>(sh.requests), sh.first_pos),
                                                sh.rows_per_request, test::IndexerInputs::kRandom,
                                                derive_seed("indexer_bench", sh.label, idx::format_name(f))));
        const idx::LogitsProblem host = p.d.problem();
        const auto launch = [&](int) { v4ref::cuda::index_logits(host, p.arrays(), 0, bench::bench_stream()); };
        launch(0);
        V4REF_CUDA_CHECK(cudaDeviceSynchronize());
        gate_logits(p, std::min<std::int64_t>(p.d.rows(), sh.rows_per_request > 1 ? 8 : 1));
        double bytes = 0, flops = 0;
        logits_cost(p.d, &bytes, &flops);
        const double t_roof_us = std::max(bytes / kHbm, flops / kFp8Peak) * 1e6;
        const bool graph = t_roof_us < 200;
        r.us = bench::time_us(o, scratch.p, bench::kScratchBytes, 1, graph, launch);
        const double target = f == idx::KeyFormat::kFp8 ? sh.target_us_fp8 : sh.target_us_fp4;
        r.counters = {{"bytes", bytes},
                      {"flops", flops},
                      {"GBps", bytes / (r.us * 1e-6) * 1e-9},
                      {"TFLOPS", flops / (r.us * 1e-6) * 1e-12},
                      {"t_roof_us", t_roof_us},
                      {"pct_roof", 100.0 * t_roof_us / r.us},
                      {"graph", graph ? 1.0 : 0.0},
                      {"cold_l2", o.warm ? 0.0 : 1.0}};
        if (target > 0) {
          r.counters.emplace_back("target_us", target);
          r.counters.emplace_back("target_pct", 100.0 * t_roof_us / target);
        }
        std::printf("%-40s %10.2f us  %5.1f%% of roofline\n", name.c_str(), r.us, 100.0 * t_roof_us / r.us);

        // The top-k of the same logits (FP8 pass only: the scores do not depend on the format).
        if (f == idx::KeyFormat::kFp8) {
          std::vector<std::int64_t> vis;
          double vis_total = 0;
          for (std::int32_t t : p.d.pos) {
            vis.push_back(idx::visible_entries(t));
            vis_total += static_cast<double>(vis.back());
          }
          DeviceBuffer dvis(vis.size() * 8), out(static_cast<std::size_t>(p.d.rows() * 512) * 4);
          upload(dvis, vis);
          const auto tk = [&](int) {
            v4ref::cuda::topk({p.d.rows(), p.d.stride, p.logits.as<float>(), dvis.as<std::int64_t>(), 512,
                               out.as<std::int32_t>()},
                              bench::bench_stream());
          };
          bench::BenchResult t;
          t.name = tk_name;
          tk(0);
          V4REF_CUDA_CHECK(cudaDeviceSynchronize());
          {  // gate: row 0 against the rule on the device's own logits
            const std::vector<float> row0 = download<float>(p.logits, static_cast<std::size_t>(vis[0]));
            // verification.md §9: the 512 largest (NaN never, -0 = +0), ties to the lower index
            std::vector<std::int64_t> want;
            for (std::int64_t j = 0; j < static_cast<std::int64_t>(row0.size()); ++j)
              if (!std::isnan(row0[static_cast<std::size_t>(j)])) want.push_back(j);
            std::stable_sort(want.begin(), want.end(), [&](std::int64_t a, std::int64_t b) {
              return row0[static_cast<std::size_t>(a)] > row0[static_cast<std::size_t>(b)];
            });
            if (want.size() > 512) want.resize(512);
            std::sort(want.begin(), want.end());
            const std::vector<std::int32_t> got = download<std::int32_t>(out, 512);
            for (std::size_t i = 0; i < 512; ++i)
              if (got[i] != (i < want.size() ? want[i] : -1))
                throw std::runtime_error("correctness gate failed: top-k row 0 differs from the rule");
          }
          t.us = bench::time_us(o, scratch.p, bench::kScratchBytes, 1, true, tk);
          const double tb = v4ref::cuda::topk_bytes(p.d.rows(), vis_total, 512);
          t.counters = {{"bytes", tb}, {"GBps", tb / (t.us * 1e-6) * 1e-9}, {"t_roof_us", tb / kHbm * 1e6},
                        {"pct_roof", 100.0 * (tb / kHbm * 1e6) / t.us}, {"graph", 1.0}, {"cold_l2", o.warm ? 0.0 : 1.0}};
          const double tk_target = sh.label == "decode_B1_1M" ? 15.0 : sh.label == "decode_B64_64K" ? 10.0 : 445.0;
          t.counters.emplace_back("target_us", tk_target);
          t.counters.emplace_back("target_pct", 100.0 * (tb / kHbm * 1e6) / tk_target);
          std::printf("%-40s %10.2f us\n", tk_name.c_str(), t.us);
          results.push_back(bench::checked(t));

          // Baselines measured in the same run (decode shapes: one query row per request).
          if (sh.rows_per_request == 1) {
            bench::BenchResult b;
            b.name = base_name;
            try {
              LtBaseline lt(sh.requests, vis[0], 64);
              DeviceBuffer bout(static_cast<std::size_t>(sh.requests * vis[0]) * 4);
              const auto bl = [&](int) { lt.run(p.w.as<float>(), bout.as<float>(), vis[0], bench::bench_stream()); };
              b.us = bench::time_us(o, scratch.p, bench::kScratchBytes, 1, true, bl);
              b.counters = {{"pct_roof", 100.0 * t_roof_us / b.us}, {"t_roof_us", t_roof_us}};
              std::printf("%-40s %10.2f us\n", base_name.c_str(), b.us);
            } catch (const std::exception& e) {
              b.error = e.what();
            }
            results.push_back(bench::checked(b));
            bench::BenchResult c;
            c.name = base_tk;
            try {
              CubTopk cub_tk(p.d.rows(), vis[0], p.d.stride, 512);
              const auto cl = [&](int) { cub_tk.run(p.logits.as<float>(), bench::bench_stream()); };
              c.us = bench::time_us(o, scratch.p, bench::kScratchBytes, 1, true, cl);
              c.counters = {{"pct_roof", 100.0 * (tb / kHbm * 1e6) / c.us}};
              std::printf("%-40s %10.2f us\n", base_tk.c_str(), c.us);
            } catch (const std::exception& e) {
              c.error = e.what();
            }
            results.push_back(bench::checked(c));
          }
        }
        // The decode step: fused (no logits in global memory) against logits + top-k.
        if (sh.rows_per_request == 1) {
          const std::string fused = std::string("fused_decode/") + idx::format_name(f) + "/" + sh.label;
          const std::string unfused = std::string("unfused_decode/") + idx::format_name(f) + "/" + sh.label;
          std::vector<std::int64_t> vis;
          for (std::int32_t t : p.d.pos) vis.push_back(idx::visible_entries(t));
          DeviceBuffer dvis(vis.size() * 8), out(static_cast<std::size_t>(p.d.rows() * 512) * 4),
              fout(static_cast<std::size_t>(p.d.rows() * 512) * 4),
              scratch2(v4ref::cuda::topk_decode_scratch_bytes(p.d.rows(), 512));
          upload(dvis, vis);
          const auto un = [&](int) {
            v4ref::cuda::index_logits(host, p.arrays(), 0, bench::bench_stream());
            v4ref::cuda::topk({p.d.rows(), p.d.stride, p.logits.as<float>(), dvis.as<std::int64_t>(), 512,
                               out.as<std::int32_t>()},
                              bench::bench_stream());
          };
          const auto fu = [&](int) {
            v4ref::cuda::index_topk_decode(host, p.arrays(), 512, fout.as<std::int32_t>(), scratch2.p, 0,
                                           bench::bench_stream());
          };
          bench::BenchResult a, b;
          a.name = fused;
          b.name = unfused;
          try {
            un(0);
            fu(0);
            V4REF_CUDA_CHECK(cudaDeviceSynchronize());
            if (download<std::int32_t>(out, out.bytes / 4) != download<std::int32_t>(fout, fout.bytes / 4))
              throw std::runtime_error("correctness gate failed: the fused selection differs from logits + top-k");
            b.us = bench::time_us(o, scratch.p, bench::kScratchBytes, 1, true, un);
            a.us = bench::time_us(o, scratch.p, bench::kScratchBytes, 1, true, fu);
            if (sh.label == "decode_B64_64K") a.counters = {{"target_us", 60.0}};  // kernel-targets §4.2
            std::printf("%-40s %10.2f us (unfused %.2f us)\n", fused.c_str(), a.us, b.us);
          } catch (const std::exception& e) {
            a.error = b.error = e.what();
          }
          results.push_back(bench::checked(b));
          results.push_back(bench::checked(a));
        }
      } catch (const std::exception& e) {
        r.error = e.what();
        std::printf("%-40s ERROR %s\n", name.c_str(), e.what());
      }
      results.push_back(bench::checked(r));
    }
  bench::add_baseline_counters(results, "fused_decode/", "unfused_decode/");
  bench::add_baseline_counters(results, "logits/fp8/", "baseline_logits/fp8/");
  bench::add_baseline_counters(results, "topk/k512/", "baseline_topk/k512/");
  bench::write_text_file(o.out, bench::bench_json(ctx, results));
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}
