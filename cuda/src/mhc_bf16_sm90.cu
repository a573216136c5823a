// mHC on Hopper: the host side of the fused write-back + pre kernel (and its pre-only mode) and
// of the standalone write-back (docs/cuda-mhc-compressor.md §2; header cuda/include/v4ref/cuda/
// mhc.hpp). The kernels themselves are in mhc_kernels.cuh, written in the SIMT dialect: the same
// source runs here on the device and in the SIMT executor on the CPU (cuda/simt/mhc_simt.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/mhc.hpp"
#include "v4ref/cuda/mhc_tile.hpp"
#include "mhc_kernels.cuh"

namespace v4ref::cuda {
namespace {

using mhc_kernels::kMaxThreads;
using mhc_kernels::kPostThreads;
using mhc_kernels::PostArgs;
using mhc_kernels::PreArgs;
using simt::gptr;

// Every non-NaN float through the device conversion and the host formula.
__global__ void bf16_conversion_check_kernel(gptr<unsigned long long> mismatches) {
  unsigned long long local = 0;
  for (std::uint64_t i = simt::block_idx().x * std::uint64_t{simt::block_dim().x} +
                         simt::thread_idx().x;
       i < (std::uint64_t{1} << 32); i += std::uint64_t{simt::grid_dim().x} * simt::block_dim().x) {
    const float x = __uint_as_float(static_cast<unsigned>(i));
    if (x != x) continue;
    if (mhc::to_bf16(x) != mhc::bf16_rne_bits(x)) ++local;
  }
  if (local != 0) simt::atomic_add(mismatches, local);
}

// ---------------------------------------------------------------- host side

using PreKernel = void (*)(PreArgs);

PreKernel pre_kernel(bool fused) {
  return fused ? mhc_kernels::mhc_pre_kernel<true> : mhc_kernels::mhc_pre_kernel<false>;
}

int smem_optin_bytes() {
  int dev = 0, bytes = 0;
  V4REF_CUDA_CHECK(cudaGetDevice(&dev));
  V4REF_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return bytes;
}

// Sets the kernel's attributes and returns how many clusters of S CTAs can be resident at once
// (0: none; the configuration cannot run). Cached per (device, kernel, S, threads, smem).
int max_active_clusters(PreKernel k, int S, int threads, std::size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<int, void*, int, int, std::size_t>, int> cache;
  int dev = 0;
  V4REF_CUDA_CHECK(cudaGetDevice(&dev));
  const auto key = std::make_tuple(dev, reinterpret_cast<void*>(k), S, threads, smem);
  const std::lock_guard<std::mutex> lock(mu);
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  // The device's opt-in maximum, not this configuration's size: the attribute is per kernel, and a
  // later query for a smaller configuration must not lower it under a cached larger one.
  V4REF_CUDA_CHECK(
      cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_optin_bytes()));
  if (S > 8)
    V4REF_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(S));
  cfg.blockDim = dim3(static_cast<unsigned>(threads));
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(S);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  int n = 0;
  const cudaError_t st = cudaOccupancyMaxActiveClusters(&n, k, &cfg);
  if (st != cudaSuccess) {
    (void)cudaGetLastError();  // an unsupported cluster size is an answer (0), not an error
    n = 0;
  }
  cache[key] = n;
  return n;
}

void require_pointer(const void* p, const char* what, bool allow_null = false) {
  if (p == nullptr) {
    if (allow_null) return;
    throw Error(std::string("mhc: ") + what + " is null");
  }
  if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0)
    throw Error(std::string("mhc: ") + what + " must be 16-byte aligned");
  cudaPointerAttributes attr{};
  V4REF_CUDA_CHECK(cudaPointerGetAttributes(&attr, p));
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw Error(std::string("mhc: ") + what + " is not device memory");
}

void require_tokens(std::int64_t tokens, const char* where) {
  if (tokens < 0 || tokens > (std::int64_t{1} << 31))
    throw ShapeError(std::string(where) + ": tokens must be in [0, 2^31], got " +
                     std::to_string(tokens));
}

}  // namespace

MhcPlan mhc_plan(std::int64_t tokens, std::int64_t d, bool fused, const MhcOptions& opt) {
  require_tokens(tokens, "mhc_plan");
  const std::int64_t batches = (tokens + mhc::kBatch - 1) / mhc::kBatch;
  const std::vector<int> sizes =
      opt.cluster != 0 ? std::vector<int>{opt.cluster} : std::vector<int>{16, 8};
  const auto optin = static_cast<std::size_t>(smem_optin_bytes());
  std::string why;
  for (const int S : sizes) {
    const mhc::Tiling t = mhc::make_tiling(d, S);
    const int threads = (t.warps + 1) * 32;
    const std::size_t bytes =
        static_cast<std::size_t>(mhc_kernels::SmemLayout(t).total) * sizeof(float);
    if (bytes > optin) {
      why += " cluster " + std::to_string(S) + ": needs " + std::to_string(bytes) +
             " bytes of shared memory, the device allows " + std::to_string(optin) + ";";
      continue;
    }
    int n = max_active_clusters(pre_kernel(fused), S, threads, bytes);
    if (n == 0) {
      why += " cluster " + std::to_string(S) + ": not schedulable;";
      continue;
    }
    if (opt.max_clusters > 0) n = std::min(n, opt.max_clusters);
    MhcPlan p;
    p.tiling = t;
    p.clusters = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(n, batches)));
    p.threads = threads;
    p.smem_bytes = bytes;
    return p;
  }
  throw Error("mhc_plan: d = " + std::to_string(d) + " cannot run on this device:" + why);
}

MhcPlan mhc_pre(const MhcPreLaunch& p, const MhcOptions& opt, CUstream_st* stream) {
  require_tokens(p.tokens, "mhc_pre");
  const bool fused = p.f != nullptr;
  const MhcPlan plan = mhc_plan(p.tokens, p.d, fused, opt);
  if (p.tokens == 0) return plan;
  require_pointer(p.x, "x");
  require_pointer(p.fn, "fn");
  require_pointer(p.base, "base");
  require_pointer(p.u, "u");
  require_pointer(p.coef, "coef");
  require_pointer(p.mu, "mu", true);
  if (fused) {
    require_pointer(p.f, "f");
    require_pointer(p.coef_in, "coef_in");
    require_pointer(p.x_out, "x_out");
    if (p.x_out == p.x) throw Error("mhc_pre: x_out must not alias x (other CTAs still read x)");
  }
  if (p.s.sinkhorn_iters < 1)
    throw ConfigError("mhc_pre: sinkhorn_iters must be >= 1, got " +
                      std::to_string(p.s.sinkhorn_iters));
  PreArgs a{};
  a.t = plan.tiling;
  a.tokens = p.tokens;
  a.batches = (p.tokens + mhc::kBatch - 1) / mhc::kBatch;
  a.x = gptr<const std::uint16_t>(p.x);
  a.f = gptr<const std::uint16_t>(p.f);
  a.coef_in = gptr<const float>(p.coef_in);
  a.fn = gptr<const float>(p.fn);
  a.base = gptr<const float>(p.base);
  a.s = p.s;
  a.x_out = gptr<std::uint16_t>(p.x_out);
  a.u = gptr<std::uint16_t>(p.u);
  a.coef = gptr<float>(p.coef);
  a.mu = gptr<float>(p.mu);
  const int S = plan.tiling.cluster;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(plan.clusters * S));
  cfg.blockDim = dim3(static_cast<unsigned>(plan.threads));
  cfg.dynamicSmemBytes = plan.smem_bytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(S);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  V4REF_CUDA_CHECK(cudaLaunchKernelEx(&cfg, pre_kernel(fused), a));
  V4REF_CUDA_CHECK_LAUNCH();
  return plan;
}

void mhc_post(const MhcPostLaunch& p, CUstream_st* stream) {
  require_tokens(p.tokens, "mhc_post");
  if (p.d <= 0 || p.d % mhc::kChunk != 0)
    throw ShapeError("mhc_post: d must be a positive multiple of 8, got " + std::to_string(p.d));
  if (p.tokens == 0) return;
  require_pointer(p.x, "x");
  require_pointer(p.f, "f");
  require_pointer(p.coef_in, "coef_in");
  require_pointer(p.x_out, "x_out");
  int dev = 0, sms = 0;
  V4REF_CUDA_CHECK(cudaGetDevice(&dev));
  V4REF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const std::int64_t items = p.tokens * (p.d / mhc::kChunk);
  const std::int64_t blocks =
      std::min<std::int64_t>((items + kPostThreads - 1) / kPostThreads, 8LL * sms);
  const PostArgs a{p.tokens, p.d, gptr<const std::uint16_t>(p.x), gptr<const std::uint16_t>(p.f),
                   gptr<const float>(p.coef_in), gptr<std::uint16_t>(p.x_out)};
  mhc_kernels::mhc_post_kernel<<<static_cast<unsigned>(blocks), kPostThreads, 0, stream>>>(a);
  V4REF_CUDA_CHECK_LAUNCH();
}

void mhc_pack_fn(const float* fn, float* packed, std::int64_t d, CUstream_st* stream) {
  if (d <= 0 || d % mhc::kChunk != 0)
    throw ShapeError("mhc_pack_fn: d must be a positive multiple of 8, got " + std::to_string(d));
  require_pointer(fn, "fn");
  require_pointer(packed, "packed fn");
  const std::int64_t n = mhc::kMix * 4 * d;
  const auto blocks = static_cast<unsigned>(std::min<std::int64_t>((n + 255) / 256, 4096));
  mhc_kernels::mhc_pack_fn_kernel<<<blocks, 256, 0, stream>>>(gptr<const float>(fn),
                                                               gptr<float>(packed), d);
  V4REF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------- host conveniences

namespace {

constexpr std::size_t kGuardBytes = 4096;

// A device buffer with 4 KiB guards before and after, all filled with a poison pattern.
struct Guarded {
  unsigned char* base = nullptr;
  std::size_t bytes = 0;
  std::vector<unsigned char> pattern;  // full contents as written (guards + body)
  Guarded(std::size_t n, const void* elem, std::size_t elem_size) : bytes(n) {
    pattern.resize(n + 2 * kGuardBytes);
    for (std::size_t i = 0; i < pattern.size(); i += elem_size)
      std::memcpy(pattern.data() + i, elem, std::min(elem_size, pattern.size() - i));
    V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&base), pattern.size()));
    V4REF_CUDA_CHECK(cudaMemcpy(base, pattern.data(), pattern.size(), cudaMemcpyHostToDevice));
  }
  ~Guarded() {
    if (base != nullptr) cudaFree(base);
  }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  void* body() const { return base + kGuardBytes; }
  template <class T>
  std::vector<T> read(bool* guards_ok) const {
    std::vector<unsigned char> all(pattern.size());
    V4REF_CUDA_CHECK(cudaMemcpy(all.data(), base, all.size(), cudaMemcpyDeviceToHost));
    *guards_ok = *guards_ok &&
                 std::equal(all.begin(), all.begin() + kGuardBytes, pattern.begin()) &&
                 std::equal(all.end() - kGuardBytes, all.end(), pattern.end() - kGuardBytes);
    std::vector<T> out(bytes / sizeof(T));
    std::memcpy(out.data(), all.data() + kGuardBytes, bytes);
    return out;
  }
};

template <class T>
struct DeviceCopy {
  T* p = nullptr;
  std::size_t n = 0;
  DeviceCopy(const T* h, std::size_t count) : n(count) {
    if (h == nullptr || count == 0) return;
    V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), count * sizeof(T)));
    V4REF_CUDA_CHECK(cudaMemcpy(p, h, count * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceCopy() {
    if (p != nullptr) cudaFree(p);
  }
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
  bool unchanged(const T* h) const {
    if (p == nullptr) return true;
    std::vector<T> back(n);
    V4REF_CUDA_CHECK(cudaMemcpy(back.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return std::memcmp(back.data(), h, n * sizeof(T)) == 0;
  }
};

}  // namespace

MhcHostOutputs mhc_pre_host(const mhc::Problem& hp, const MhcOptions& opt, std::uint16_t poison_u16,
                            std::uint32_t poison_f32) {
  const auto T = static_cast<std::size_t>(hp.tokens), d = static_cast<std::size_t>(hp.d);
  const bool fused = hp.f != nullptr;
  DeviceCopy<std::uint16_t> x(hp.x, T * 4 * d), f(hp.f, fused ? T * d : 0);
  DeviceCopy<float> ci(hp.coef_in, fused ? T * mhc::kMix : 0), fn(hp.fn, mhc::kMix * 4 * d),
      fnp(hp.fn, mhc::kMix * 4 * d), base(hp.base, mhc::kMix);
  mhc_pack_fn(fn.p, fnp.p, hp.d);
  Guarded xo(fused ? T * 4 * d * 2 : 0, &poison_u16, 2), u(T * d * 2, &poison_u16, 2),
      coef(T * mhc::kMix * 4, &poison_f32, 4), mu(T * mhc::kMix * 4, &poison_f32, 4);
  MhcPreLaunch p;
  p.tokens = hp.tokens;
  p.d = hp.d;
  p.x = x.p;
  p.f = f.p;
  p.coef_in = ci.p;
  p.fn = fnp.p;
  p.base = base.p;
  p.s = hp.s;
  p.x_out = fused ? static_cast<std::uint16_t*>(xo.body()) : nullptr;
  p.u = static_cast<std::uint16_t*>(u.body());
  p.coef = static_cast<float*>(coef.body());
  p.mu = static_cast<float*>(mu.body());
  MhcHostOutputs out;
  out.plan = mhc_pre(p, opt);
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  bool ok = true;
  if (fused) out.x_out = xo.read<std::uint16_t>(&ok);
  out.u = u.read<std::uint16_t>(&ok);
  out.coef = coef.read<float>(&ok);
  out.mu = mu.read<float>(&ok);
  out.guards_intact = ok;
  out.inputs_intact = x.unchanged(hp.x) && f.unchanged(hp.f) && ci.unchanged(hp.coef_in) &&
                      fn.unchanged(hp.fn) && base.unchanged(hp.base);
  return out;
}

std::vector<std::uint16_t> mhc_post_host(const mhc::Problem& hp, std::uint16_t poison_u16) {
  const auto T = static_cast<std::size_t>(hp.tokens), d = static_cast<std::size_t>(hp.d);
  DeviceCopy<std::uint16_t> x(hp.x, T * 4 * d), f(hp.f, T * d);
  DeviceCopy<float> ci(hp.coef_in, T * mhc::kMix);
  Guarded xo(T * 4 * d * 2, &poison_u16, 2);
  mhc_post({hp.tokens, hp.d, x.p, f.p, ci.p, static_cast<std::uint16_t*>(xo.body())});
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  bool ok = true;
  std::vector<std::uint16_t> out = xo.read<std::uint16_t>(&ok);
  if (!ok) throw Error("mhc_post_host: a guard region around x_out was overwritten");
  return out;
}

std::uint64_t mhc_bf16_conversion_mismatches() {
  unsigned long long* dev = nullptr;
  V4REF_CUDA_CHECK(cudaMalloc(&dev, sizeof *dev));
  V4REF_CUDA_CHECK(cudaMemset(dev, 0, sizeof *dev));
  bf16_conversion_check_kernel<<<4096, 256>>>(gptr<unsigned long long>(dev));
  V4REF_CUDA_CHECK_LAUNCH();
  unsigned long long host = 0;
  V4REF_CUDA_CHECK(cudaMemcpy(&host, dev, sizeof host, cudaMemcpyDeviceToHost));
  V4REF_CUDA_CHECK(cudaFree(dev));
  return host;
}

}  // namespace v4ref::cuda
