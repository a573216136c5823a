// CSA and HCA attention over the FP8 KV cache against their rooflines and against baselines
// measured in the same run (kernel-targets.md §4.3, §4.4; docs/cuda-attention.md §5).
//
// Cases (<kind>/<model>/<shape>):
//   csa/flash/decode_B128    128 requests at 64K, one query row each, k_I = 512: N_k = 640
//   csa/pro/decode_B128      H = 128, k_I = 1024: N_k = 1152
//   csa/flash/decode_B1      one request (launch-bound)
//   csa/flash/prefill_T8192  an 8192-row chunk at a 120K prefix, k_I = 512
//   hca/flash/decode_B128_128K, hca/flash/decode_B128_1M, hca/pro/decode_B128_128K,
//   hca/flash/prefill_T8192
//   baseline/<case>          dequantise and gather each row's keys to dense bf16, cuBLAS strided
//                            batched GEMMs for S = Q·Kᵀ and O = P·V (fp32 accumulation), a
//                            softmax-with-sink kernel between them and a normalising kernel after
//   csa_as_hca/<case>        (HCA cases) the CSA kernel fed every visible entry as its index list,
//                            how serving engines run HCA today
// bytes / flops: kernel-targets.md §4.3–4.4 (attn::compulsory_bytes, attn::useful_flops);
// t_roof = max(bytes / 3.35 TB/s, flops / 989 TFLOPS). Correct before fast: row 0 of every case
// against the exact attention of its stored values in double, within the bound of the row
// attention_fp8.out (2 · 2^-8 · M + 2^-8 |o|) and attention_fp8.lse. Timing: bench_timing.cuh
// (cold L2, CUDA graphs for short cases, median of --reps). Output: bench_report.hpp's JSON to
// --out (default reports/data/attention-<device>-<sha>.json).
//
//   build-cuda/bench/attention_bench [--out=PATH] [--filter=SUBSTRING] [--reps=N] [--warm]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../tests/common/attention_inputs.hpp"
#include "bench_timing.cuh"
#include "v4ref/cuda/attention.hpp"
#include "v4ref/cuda/check.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace {

using namespace v4ref;  // NOLINT: bench file
using bench::DeviceBuffer;
using bench::download;
using bench::upload;
namespace attn = v4ref::cuda::attn;

constexpr double kHbm = bench::kHbmBytesPerSecond;
constexpr double kBf16Peak = 989e12;  // H100 SXM dense BF16 (kernel-targets.md §1)

// A problem's host arrays (tests/common/attention_inputs.hpp): B requests, `rows_per_request`
// consecutive query positions from first_pos each; every request's window in a ring of 2 pages
// (decode) or a table over its span (prefill) and its own compressed pages; CSA: top_k distinct
// visible entries per row.
using HostProblem = test::AttentionData;

// Stored rows drawn fast: e4m3 codes of magnitude < 64 (no NaN), scales 2^-6 .. 2^-2, rope
// values ~ N(0, 1/4). Queries ~ N(0, 1) in bf16, so logits stay in a softmax's working range.
void fill_rows(std::vector<std::uint8_t>& cache, int D, std::uint64_t seed) {
  Rng rng(seed);
  const std::size_t rb = static_cast<std::size_t>(attn::row_bytes(D));
  for (std::size_t r = 0; r * rb < cache.size(); ++r) {
    std::uint8_t* row = cache.data() + r * rb;
    for (int k = 0; k < attn::nope_dims(D); k += 8) {
      std::uint64_t w = rng.next_u64() & 0xB7B7B7B7B7B7B7B7ull;  // exponent < 15: no NaN, |x| < 64
      std::memcpy(row + k, &w, 8);
    }
    for (int k = 0; k < attn::kRope; ++k) {
      const std::uint16_t h = fmt::bf16_encode(rng.normal(0.0, 0.5));
      std::memcpy(row + attn::nope_dims(D) + 2 * k, &h, 2);
    }
    for (int b = 0; b < attn::scale_count(D); ++b) row[attn::scale_offset(D) + b] = static_cast<std::uint8_t>(121 + rng.below(5));
  }
}

HostProblem make_problem(attn::Kind kind, int H, std::int64_t B, std::int32_t first_pos, std::int32_t rows_per_request,
                         std::int32_t top_k, std::uint64_t seed) {
  HostProblem p;
  p.kind = kind;
  p.H = H;
  p.requests = B;
  const int D = p.D;
  const std::int32_t last = first_pos + rows_per_request - 1;
  const std::int64_t n_cmp = kind == attn::Kind::kCsa ? attn::visible_entries(last, attn::kCsaRatio)
                                                      : attn::visible_entries(last, attn::kHcaRatio);
  Rng rng(seed);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int32_t i = 0; i < rows_per_request; ++i) p.pos.push_back(first_pos + i), p.request.push_back(static_cast<std::int32_t>(b));
  const std::size_t R = p.pos.size();
  p.q.resize(R * static_cast<std::size_t>(H * D));
  for (auto& x : p.q) x = fmt::bf16_encode(rng.normal(0.0, 1.0));
  for (int h = 0; h < H; ++h) p.sink.push_back(static_cast<float>(rng.normal(0.0, 1.0)));
  // window: a ring of 2 pages per request (decode) or every logical page of the span (prefill)
  const std::int64_t span_pages = (last - attn::window_first(first_pos)) / 64 + 2;
  p.window_pages = rows_per_request == 1 ? 2 : static_cast<std::int32_t>(std::max<std::int64_t>(2, (last + 64) / 64));
  const std::int64_t used = rows_per_request == 1 ? 2 : span_pages;
  p.window_table.assign(static_cast<std::size_t>(B * p.window_pages), 0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t lp = 0; lp < p.window_pages; ++lp) {
      // logical pages that hold live positions get their own physical page; the rest alias page 0
      const std::int64_t first_lp = attn::window_first(first_pos) / 64;
      const bool live = rows_per_request == 1 || (lp >= first_lp && lp <= last / 64);
      p.window_table[static_cast<std::size_t>(b * p.window_pages + lp)] =
          live ? static_cast<std::int32_t>(b * used + (rows_per_request == 1 ? lp : lp - first_lp)) : 0;
    }
  p.window_cache.resize(static_cast<std::size_t>(B * used) * 64 * static_cast<std::size_t>(attn::row_bytes(D)));
  fill_rows(p.window_cache, D, seed + 1);
  p.cmp_pages = static_cast<std::int32_t>(std::max<std::int64_t>(1, (n_cmp + 63) / 64));
  for (std::int64_t i = 0; i < B * p.cmp_pages; ++i) p.cmp_table.push_back(static_cast<std::int32_t>(i));
  p.cmp_cache.resize(static_cast<std::size_t>(B * p.cmp_pages) * 64 * static_cast<std::size_t>(attn::row_bytes(D)));
  fill_rows(p.cmp_cache, D, seed + 2);
  if (kind == attn::Kind::kCsa) {
    p.top_k = top_k;
    for (const std::int32_t t : p.pos) {
      const std::int64_t vis = attn::visible_entries(t, attn::kCsaRatio);
      for (std::int32_t s = 0; s < top_k; ++s)  // distinct: a prime stride (coprime to vis) over [0, vis)
        p.selected.push_back(s < vis ? static_cast<std::int32_t>((s * 2654435761ll + t) % vis) : -1);
    }
  }
  return p;
}

// Every visible entry of each row as a CSA index list (the HCA baseline of engines).
HostProblem as_csa(const HostProblem& h) {
  HostProblem c = h;
  c.kind = attn::Kind::kCsa;
  std::int64_t K = 1;
  for (const std::int32_t t : h.pos) K = std::max(K, attn::visible_entries(t, attn::kHcaRatio));
  c.top_k = static_cast<std::int32_t>(K);
  c.selected.clear();
  for (const std::int32_t t : h.pos)
    for (std::int64_t s = 0; s < K; ++s)
      c.selected.push_back(s < attn::visible_entries(t, attn::kHcaRatio) ? static_cast<std::int32_t>(s) : -1);
  return c;
}

// The decoded key list of row r (values in double, [n][D]).
std::vector<std::vector<double>> keys_of(const HostProblem& h, std::int64_t r) {
  const attn::AttentionProblem p = h.problem();
  const int D = h.D;
  const std::int64_t t = h.pos[static_cast<std::size_t>(r)], b = h.request[static_cast<std::size_t>(r)];
  std::vector<std::int64_t> offs;
  std::vector<const std::uint8_t*> base;
  for (std::int64_t s = attn::window_first(t); s <= t; ++s) offs.push_back(attn::window_row_offset(p, b, s)), base.push_back(p.window_cache);
  for (std::int64_t n = 0; n < attn::compressed_slots(p, t); ++n) {
    const std::int64_t j = h.kind == attn::Kind::kCsa ? h.selected[static_cast<std::size_t>(r * h.top_k + n)] : n;
    if (j >= 0) offs.push_back(attn::cmp_row_offset(p, b, j)), base.push_back(p.cmp_cache);
  }
  std::vector<std::vector<double>> keys;
  for (std::size_t i = 0; i < offs.size(); ++i) {
    const std::uint8_t* row = base[i] + offs[i];
    std::vector<double> v(static_cast<std::size_t>(D));
    for (int k = 0; k < attn::nope_dims(D); ++k)
      v[static_cast<std::size_t>(k)] = static_cast<double>(fmt::e4m3_to_float(row[k]) * attn::ue8m0_scale(row[attn::scale_offset(D) + k / 64]));
    for (int k = 0; k < attn::kRope; ++k) {
      std::uint16_t x;
      std::memcpy(&x, row + attn::nope_dims(D) + 2 * k, 2);
      v[static_cast<std::size_t>(attn::nope_dims(D) + k)] = fmt::bf16_to_double(x);
    }
    keys.push_back(std::move(v));
  }
  return keys;
}

// Correct before fast: row 0 against the exact attention of its stored values, within the
// tolerance rows attention_fp8.out and attention_fp8.lse (their M, n_eff and c).
void gate_row0(const HostProblem& h, const std::vector<std::uint16_t>& out, const std::vector<float>& lse) {
  const int D = h.D, H = h.H;
  const std::vector<std::vector<double>> keys = keys_of(h, 0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const double n_k = static_cast<double>(keys.size());
  for (int hh = 0; hh < H; ++hh) {
    std::vector<double> l(keys.size()), A(keys.size());
    double mx = h.sink[static_cast<std::size_t>(hh)];
    for (std::size_t s = 0; s < keys.size(); ++s) {
      double dot = 0, ab = 0;
      for (int k = 0; k < D; ++k) {
        const double qk = fmt::bf16_to_double(h.q[static_cast<std::size_t>(hh * D + k)]) * keys[s][static_cast<std::size_t>(k)];
        dot += qk;
        ab += std::fabs(qk);
      }
      l[s] = dot * scale;
      A[s] = ab * scale;
      mx = std::max(mx, l[s]);
    }
    double z = std::exp(h.sink[static_cast<std::size_t>(hh)] - mx), pa = 0;
    for (const double x : l) z += std::exp(x - mx);
    const double lse_x = mx + std::log(z);
    std::vector<double> o(static_cast<std::size_t>(D), 0.0);
    std::vector<double> p(keys.size());
    for (std::size_t s = 0; s < keys.size(); ++s) {
      p[s] = std::exp(l[s] - lse_x);
      pa += p[s] * A[s];
      for (int k = 0; k < D; ++k) o[static_cast<std::size_t>(k)] += p[s] * keys[s][static_cast<std::size_t>(k)];
    }
    for (int k = 0; k < D; ++k) {
      double M = 0;
      for (std::size_t s = 0; s < keys.size(); ++s)
        M += p[s] * ((1 + 0x1p-5 + 0x1p-7 * A[s]) * std::fabs(keys[s][static_cast<std::size_t>(k)]) +
                     (0x1p-5 + 0x1p-7 * A[s]) * std::fabs(o[static_cast<std::size_t>(k)]));
      const double got = fmt::bf16_to_double(out[static_cast<std::size_t>(hh * D + k)]);
      if (!(std::fabs(got - o[static_cast<std::size_t>(k)]) <= 2 * 0x1p-8 * M + 0x1p-8 * std::fabs(o[static_cast<std::size_t>(k)])))
        throw std::runtime_error("correctness gate failed: row 0 head " + std::to_string(hh) + " dim " + std::to_string(k) +
                                 " = " + std::to_string(got) + ", exact " + std::to_string(o[static_cast<std::size_t>(k)]));
    }
    const double n_eff = n_k + 2 * std::ceil(n_k / 32) + 262;
    if (!(std::fabs(lse[static_cast<std::size_t>(hh)] - lse_x) <= 2 * n_eff * 0x1p-24 * (1 + std::fabs(lse_x) + pa)))
      throw std::runtime_error("correctness gate failed: lse of row 0 head " + std::to_string(hh));
  }
}

// ---- the baseline: gather + dequantise, cuBLAS batched GEMMs, softmax with sink, normalise

__device__ float ue8m0(unsigned s) { return __uint_as_float(s == 0 ? 0x00400000u : s << 23); }

// Kd[r][n][D] bf16 (zero rows past the row's key count) from the row's key list.
__global__ void gather_keys(attn::AttentionProblem p, const std::uint8_t* wcache, const std::int32_t* wtable,
                            const std::uint8_t* ccache, const std::int32_t* ctable, const std::int32_t* sel,
                            const std::int32_t* pos, const std::int32_t* req, std::int64_t n_max, __nv_bfloat16* Kd) {
  const std::int64_t r = blockIdx.y, n = blockIdx.x;
  const int D = p.head_dim, RB = attn::row_bytes(D);
  const std::int64_t t = pos[r], b = req[r], first = t - 127 < 0 ? 0 : t - 127, n_win = t - first + 1;
  const std::int64_t slots = p.kind == attn::Kind::kCsa ? p.top_k : (t + 1) / attn::kHcaRatio;
  const std::uint8_t* row = nullptr;
  if (n < n_win) {
    const std::int64_t s = first + n;
    row = wcache + (static_cast<std::int64_t>(wtable[b * p.window_pages + (s / 64) % p.window_pages]) * 64 + s % 64) * RB;
  } else if (n < n_win + slots) {
    const std::int64_t j = p.kind == attn::Kind::kCsa ? sel[r * p.top_k + (n - n_win)] : n - n_win;
    if (j >= 0) row = ccache + (static_cast<std::int64_t>(ctable[b * p.cmp_pages + j / 64]) * 64 + j % 64) * RB;
  }
  for (int k = static_cast<int>(threadIdx.x); k < D; k += static_cast<int>(blockDim.x)) {
    float v = 0;
    if (row != nullptr) {
      if (k < D - 64) {
        const std::uint8_t c = row[k];
        v = float(__nv_fp8_e4m3(__nv_fp8_storage_t(c))) * ue8m0(row[D + 64 + k / 64]);
      } else {
        v = __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(row + D - 64)[k - (D - 64)]);
      }
    }
    Kd[(r * n_max + n) * D + k] = __float2bfloat16(v);
  }
}

// S[r][h][n] fp32 -> P bf16 = e^{ℓ − m}, den[r][h] = Σ e^{ℓ − m} + e^{sink − m} (masked n: P = 0).
__global__ void softmax_sink(const float* S, const float* sink, const std::int32_t* counts, std::int64_t n_max, int H,
                             float scale, __nv_bfloat16* P, float* den) {
  const std::int64_t r = blockIdx.y;
  const int h = static_cast<int>(blockIdx.x);
  const float* s = S + (r * H + h) * n_max;
  const std::int64_t n = counts[r];
  __shared__ float red[32];
  float m = sink[h];
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, s[i] * scale);
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
  __syncthreads();
  m = red[0];
  for (unsigned w = 1; w < blockDim.x / 32; ++w) m = fmaxf(m, red[w]);
  __syncthreads();
  float sum = 0;
  for (std::int64_t i = threadIdx.x; i < n_max; i += blockDim.x) {
    const float e = i < n ? __expf(s[i] * scale - m) : 0.0f;
    sum += e;
    P[(r * H + h) * n_max + i] = __float2bfloat16(e);
  }
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = __expf(sink[h] - m);
    for (unsigned w = 0; w < blockDim.x / 32; ++w) t += red[w];
    den[r * H + h] = t;
  }
}

__global__ void normalise(const float* O, const float* den, int D, std::int64_t n, __nv_bfloat16* out) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(O[i] / den[i / D]);
}

struct Baseline {
  cublasHandle_t handle = nullptr;
  std::int64_t R, n_max;
  int H, D;
  DeviceBuffer Kd, S, P, O, den, counts, out;
  Baseline(const HostProblem& h, std::int64_t nmax)
      : R(static_cast<std::int64_t>(h.pos.size())),
        n_max(nmax),
        H(h.H),
        D(h.D),
        Kd(static_cast<std::size_t>(R * nmax * h.D) * 2),
        S(static_cast<std::size_t>(R * h.H * nmax) * 4),
        P(static_cast<std::size_t>(R * h.H * nmax) * 2),
        O(static_cast<std::size_t>(R * h.H * h.D) * 4),
        den(static_cast<std::size_t>(R * h.H) * 4),
        counts(static_cast<std::size_t>(R) * 4),
        out(static_cast<std::size_t>(R * h.H * h.D) * 2) {
    V4REF_CUBLAS_CHECK(cublasCreate(&handle));
    std::vector<std::int32_t> c;
    const attn::AttentionProblem p = h.problem();
    for (std::int64_t r = 0; r < R; ++r) {
      const std::int64_t t = h.pos[static_cast<std::size_t>(r)];
      c.push_back(static_cast<std::int32_t>(attn::window_keys(t) + attn::compressed_slots(p, t)));
    }
    upload(counts, c);
  }
  ~Baseline() { cublasDestroy(handle); }
  Baseline(const Baseline&) = delete;
  Baseline& operator=(const Baseline&) = delete;
  void run(const attn::AttentionProblem& p, const v4ref::cuda::AttentionDeviceArrays& d, cudaStream_t s) {
    V4REF_CUBLAS_CHECK(cublasSetStream(handle, s));
    gather_keys<<<dim3(static_cast<unsigned>(n_max), static_cast<unsigned>(R)), 128, 0, s>>>(
        p, d.window_cache, d.window_table, d.cmp_cache, d.cmp_table, d.selected, d.pos, d.request, n_max,
        Kd.as<__nv_bfloat16>());
    const float one = 1.0f, zero = 0.0f;
    // S[r] (H x n, column-major n x H) = Kd[r] (n x D) · Q[r]ᵀ
    V4REF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n_max), H, D, &one,
                                            Kd.p, CUDA_R_16BF, D, n_max * D, d.q, CUDA_R_16BF, D,
                                            static_cast<long long>(H) * D, &zero, S.p, CUDA_R_32F,
                                            static_cast<int>(n_max), static_cast<long long>(H) * n_max,
                                            static_cast<int>(R), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    softmax_sink<<<dim3(static_cast<unsigned>(H), static_cast<unsigned>(R)), 256, 0, s>>>(
        S.as<float>(), d.sink, counts.as<std::int32_t>(), n_max, H, static_cast<float>(1.0 / std::sqrt(double(D))),
        P.as<__nv_bfloat16>(), den.as<float>());
    // O[r] (D x H column-major) = Kdᵀ (D x n) · P[r] (n x H)
    V4REF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, D, H, static_cast<int>(n_max), &one,
                                            Kd.p, CUDA_R_16BF, D, n_max * D, P.p, CUDA_R_16BF,
                                            static_cast<int>(n_max), static_cast<long long>(H) * n_max, &zero, O.p,
                                            CUDA_R_32F, D, static_cast<long long>(H) * D, static_cast<int>(R),
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    normalise<<<1024, 256, 0, s>>>(O.as<float>(), den.as<float>(), D, R * H * D, out.as<__nv_bfloat16>());
  }
};

// A problem on the device.
struct DeviceProblem {
  HostProblem h;
  DeviceBuffer q, sink, pos, req, wcache, wtable, ccache, ctable, sel, out, lse;
  explicit DeviceProblem(HostProblem hp)
      : h(std::move(hp)),
        q(h.q.size() * 2),
        sink(h.sink.size() * 4),
        pos(h.pos.size() * 4),
        req(h.request.size() * 4),
        wcache(h.window_cache.size()),
        wtable(h.window_table.size() * 4),
        ccache(h.cmp_cache.size()),
        ctable(h.cmp_table.size() * 4),
        sel(h.selected.size() * 4),
        out(h.q.size() * 2),
        lse(h.pos.size() * static_cast<std::size_t>(h.H) * 4) {
    upload(q, h.q);
    upload(sink, h.sink);
    upload(pos, h.pos);
    upload(req, h.request);
    upload(wcache, h.window_cache);
    upload(wtable, h.window_table);
    upload(ccache, h.cmp_cache);
    upload(ctable, h.cmp_table);
    if (!h.selected.empty()) upload(sel, h.selected);
  }
  v4ref::cuda::AttentionDeviceArrays arrays() const {
    v4ref::cuda::AttentionDeviceArrays a;
    a.q = q.as<std::uint16_t>();
    a.sink = sink.as<float>();
    a.pos = pos.as<std::int32_t>();
    a.request = req.as<std::int32_t>();
    a.window_cache = wcache.as<std::uint8_t>();
    a.window_table = wtable.as<std::int32_t>();
    a.cmp_cache = ccache.as<std::uint8_t>();
    a.cmp_table = ctable.as<std::int32_t>();
    a.selected = sel.as<std::int32_t>();
    a.out = out.as<std::uint16_t>();
    a.lse = lse.as<float>();
    return a;
  }
};

}  // namespace

int main(int argc, char** argv) {
  bench::BenchOptions o;
  bench::BenchContext ctx;
  if (int rc = 0; !bench::bench_session(argc, argv, "attention", &o, &ctx, &rc)) return rc;
  DeviceBuffer scratch(bench::kScratchBytes);
  std::vector<bench::BenchResult> results;

  struct Shape {
    const char* name;
    attn::Kind kind;
    int H;
    std::int64_t B;
    std::int32_t first_pos, rows, top_k;
    double target_us;  // kernel-targets.md §4.3–4.4
  };
  const Shape shapes[] = {
      {"csa/flash/decode_B128", attn::Kind::kCsa, 64, 128, 65535, 1, 512, 28.0},
      {"csa/pro/decode_B128", attn::Kind::kCsa, 128, 128, 65535, 1, 1024, 87.0},
      {"csa/flash/decode_B1", attn::Kind::kCsa, 64, 1, 65535, 1, 512, 15.0},
      {"csa/flash/prefill_T8192", attn::Kind::kCsa, 64, 1, 122880, 8192, 512, 1260.0},
      {"hca/flash/decode_B128_128K", attn::Kind::kHca, 64, 128, 131071, 1, 0, 41.0},
      {"hca/flash/decode_B128_1M", attn::Kind::kHca, 64, 128, 1048575, 1, 0, 254.0},
      {"hca/pro/decode_B128_128K", attn::Kind::kHca, 128, 128, 131071, 1, 0, 65.0},
      {"hca/flash/prefill_T8192", attn::Kind::kHca, 64, 1, 122880, 8192, 0, 2030.0},
  };
  for (const Shape& sh : shapes) {
    const std::string name = sh.name, base = std::string("baseline/") + sh.name, as = std::string("csa_as_hca/") + sh.name;
    if (!bench::selected(o, name) && !bench::selected(o, base) && !bench::selected(o, as)) continue;
    bench::BenchResult r;
    r.name = name;
    try {
      DeviceProblem p(make_problem(sh.kind, sh.H, sh.B, sh.first_pos, sh.rows, sh.top_k,
                                   derive_seed("attention_bench", sh.name, "", 1)));
      const attn::AttentionProblem host = p.h.problem();
      const auto launch = [&](int) { v4ref::cuda::attention(host, p.arrays(), bench::bench_stream()); };
      launch(0);
      V4REF_CUDA_CHECK(cudaDeviceSynchronize());
      gate_row0(p.h, download<std::uint16_t>(p.out, static_cast<std::size_t>(sh.H * p.h.D)),
                download<float>(p.lse, static_cast<std::size_t>(sh.H)));
      const double bytes = attn::compulsory_bytes(host), flops = attn::useful_flops(host);
      const double t_roof_us = std::max(bytes / kHbm, flops / kBf16Peak) * 1e6;
      const bool graph = t_roof_us < 200;
      r.us = bench::time_us(o, scratch.p, bench::kScratchBytes, 1, graph, launch);
      r.counters = {{"bytes", bytes},
                    {"flops", flops},
                    {"GBps", bytes / (r.us * 1e-6) * 1e-9},
                    {"TFLOPS", flops / (r.us * 1e-6) * 1e-12},
                    {"t_roof_us", t_roof_us},
                    {"pct_roof", 100.0 * t_roof_us / r.us},
                    {"pct_hbm", 100.0 * bytes / (r.us * 1e-6) / kHbm},
                    {"pct_peak", 100.0 * flops / (r.us * 1e-6) / kBf16Peak},
                    {"target_us", sh.target_us},
                    {"graph", graph ? 1.0 : 0.0},
                    {"cold_l2", o.warm ? 0.0 : 1.0}};
      std::printf("%-40s %10.2f us  %5.1f%% of roofline (target %.0f us)\n", name.c_str(), r.us,
                  100.0 * t_roof_us / r.us, sh.target_us);

      // The naive baseline (decode shapes and the prefill chunk alike; its dense buffers hold
      // R·N_max·D bf16 keys).
      bench::BenchResult b;
      b.name = base;
      try {
        std::int64_t n_max = 1;
        for (const std::int32_t t : p.h.pos) n_max = std::max(n_max, attn::window_keys(t) + attn::compressed_slots(host, t));
        n_max = (n_max + 7) / 8 * 8;
        Baseline bl(p.h, n_max);
        const auto bl_launch = [&](int) { bl.run(host, p.arrays(), bench::bench_stream()); };
        b.us = bench::time_us(o, scratch.p, bench::kScratchBytes, 1, graph, bl_launch);
        b.counters = {{"pct_roof", 100.0 * t_roof_us / b.us}, {"t_roof_us", t_roof_us}};
        std::printf("%-40s %10.2f us\n", base.c_str(), b.us);
      } catch (const std::exception& e) {
        b.error = e.what();
      }
      results.push_back(bench::checked(b));

      if (sh.kind == attn::Kind::kHca) {  // the CSA kernel fed every visible entry
        bench::BenchResult c;
        c.name = as;
        try {
          DeviceProblem q2(as_csa(p.h));
          const attn::AttentionProblem h2 = q2.h.problem();
          const auto l2 = [&](int) { v4ref::cuda::attention(h2, q2.arrays(), bench::bench_stream()); };
          c.us = bench::time_us(o, scratch.p, bench::kScratchBytes, 1, graph, l2);
          c.counters = {{"pct_roof", 100.0 * t_roof_us / c.us}};
          std::printf("%-40s %10.2f us\n", as.c_str(), c.us);
        } catch (const std::exception& e) {
          c.error = e.what();
        }
        results.push_back(bench::checked(c));
      }
    } catch (const std::exception& e) {
      r.error = e.what();
      std::printf("%-40s ERROR %s\n", name.c_str(), e.what());
    }
    results.push_back(bench::checked(r));
  }
  bench::add_baseline_counters(results, "csa/", "baseline/csa/");
  bench::add_baseline_counters(results, "hca/", "baseline/hca/");
  bench::write_text_file(o.out, bench::bench_json(ctx, results));
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}
