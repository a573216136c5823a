// The compressors on Hopper: the host side (docs/cuda-mhc-compressor.md §4; header
// cuda/include/v4ref/cuda/compressor.hpp). The kernels are in compressor_kernels.cuh, written in
// the SIMT dialect: the same source runs here on the device and in the SIMT executor on the CPU
// (cuda/simt/compressor_simt.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/compressor.hpp"
#include "v4ref/cuda/compressor_tile.hpp"
#include "compressor_kernels.cuh"

namespace v4ref::cuda {
namespace {

using cmp::Dims;
using compressor_kernels::DebugPtrs;
using compressor_kernels::DecodeArgs;
using compressor_kernels::PrefillArgs;
using simt::gptr;

void require_ptr(const void* p, const char* what, std::size_t align = 16, bool allow_null = false) {
  if (p == nullptr) {
    if (allow_null) return;
    throw Error(std::string("compressor: ") + what + " is null");
  }
  if (reinterpret_cast<std::uintptr_t>(p) % align != 0)
    throw Error(std::string("compressor: ") + what + " must be " + std::to_string(align) +
                "-byte aligned");
}

template <class Kernel, class Args>
void launch_cluster(Kernel k, const Args& args, std::int64_t clusters, int Q, std::size_t smem,
                    cudaStream_t s) {
  V4REF_CUDA_CHECK(
      cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(clusters * Q));
  cfg.blockDim = dim3(cmp::kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(Q);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  V4REF_CUDA_CHECK(cudaLaunchKernelEx(&cfg, k, args));
  V4REF_CUDA_CHECK_LAUNCH();
}

}  // namespace

namespace {

// The launch's dims, validated (make_dims: ShapeError / ConfigError naming the value).
Dims checked_dims(const Dims& d) { return cmp::make_dims(d.ratio, d.width, d.kind); }

// Cache rows: 8-byte aligned for the main kind (584 = 8·73), 4-byte for the indexer (68 = 4·17;
// the kernel writes the indexer row in 4-byte words).
std::size_t cache_alignment(const Dims& dm) { return dm.indexer() ? 4 : 8; }

DebugPtrs checked_debug(const Dims& dm, std::uint16_t* pooled, std::uint16_t* normed,
                        std::uint16_t* roped, std::uint16_t* hadamard, const char* who) {
  if (!dm.indexer() && (roped != nullptr || hadamard != nullptr))
    throw Error(std::string(who) +
                ": dbg_roped / dbg_hadamard exist for the indexer compressor only (main kind)");
  require_ptr(pooled, "dbg_pooled", 8, true);
  require_ptr(normed, "dbg_normed", 8, true);
  require_ptr(roped, "dbg_roped", 8, true);
  require_ptr(hadamard, "dbg_hadamard", 8, true);
  return DebugPtrs{gptr<std::uint16_t>(pooled), gptr<std::uint16_t>(normed),
                   gptr<std::uint16_t>(roped), gptr<std::uint16_t>(hadamard)};
}

std::size_t smem_bytes(const Dims& dm) {
  return static_cast<std::size_t>(compressor_kernels::smem_floats(dm)) * sizeof(float);
}

}  // namespace

void compressor_prefill(const CompressorPrefillLaunch& p, CUstream_st* stream) {
  const Dims dm = checked_dims(p.dm);
  if (p.tokens < 0)
    throw ShapeError("compressor_prefill: tokens must be >= 0, got " + std::to_string(p.tokens));
  const std::int64_t entries = p.tokens / dm.ratio;
  if (entries == 0) return;
  if (entries > (std::int64_t{1} << 28)) throw ShapeError("compressor_prefill: too many entries");
  require_ptr(p.a, "a");
  require_ptr(p.g, "g");
  require_ptr(p.ape, "ape");
  require_ptr(p.norm_w, "norm_w");
  require_ptr(p.cos, "cos");
  require_ptr(p.sin, "sin");
  require_ptr(p.cache, "cache", cache_alignment(dm));
  const DebugPtrs dbg = checked_debug(dm, p.dbg_pooled, p.dbg_normed, p.dbg_roped, p.dbg_hadamard,
                                      "compressor_prefill");
  const PrefillArgs a{dm,
                      gptr<const float>(p.a),
                      gptr<const float>(p.g),
                      gptr<const float>(p.ape),
                      gptr<const float>(p.norm_w),
                      p.eps,
                      gptr<const float>(p.cos),
                      gptr<const float>(p.sin),
                      gptr<std::uint8_t>(p.cache),
                      dbg};
  if (dm.indexer())
    launch_cluster(compressor_kernels::compressor_idx_prefill_kernel<>, a, entries, dm.ctas(),
                   smem_bytes(dm), stream);
  else
    launch_cluster(compressor_kernels::compressor_prefill_kernel<>, a, entries, dm.ctas(),
                   smem_bytes(dm), stream);
}

void compressor_prefill_state(const CompressorPrefillLaunch& p, float* state_kv, float* state_score,
                              CUstream_st* stream) {
  const Dims dm = checked_dims(p.dm);
  require_ptr(state_kv, "state_kv");
  require_ptr(state_score, "state_score");
  if (p.tokens > 0) {
    require_ptr(p.a, "a");
    require_ptr(p.g, "g");
    require_ptr(p.ape, "ape");
  }
  compressor_kernels::compressor_state_kernel<<<64, 256, 0, stream>>>(
      dm, p.tokens, gptr<const float>(p.a), gptr<const float>(p.g), gptr<const float>(p.ape),
      gptr<float>(state_kv), gptr<float>(state_score));
  V4REF_CUDA_CHECK_LAUNCH();
}

void compressor_decode(const CompressorDecodeLaunch& p, CUstream_st* stream) {
  const Dims dm = checked_dims(p.dm);
  if (p.batch <= 0) return;
  for (const auto& [ptr, what] :
       {std::make_pair(static_cast<const void*>(p.a), "a"),
        std::make_pair(static_cast<const void*>(p.g), "g"),
        std::make_pair(static_cast<const void*>(p.ape), "ape"),
        std::make_pair(static_cast<const void*>(p.norm_w), "norm_w"),
        std::make_pair(static_cast<const void*>(p.cos), "cos"),
        std::make_pair(static_cast<const void*>(p.sin), "sin"),
        std::make_pair(static_cast<const void*>(p.state_kv), "state_kv"),
        std::make_pair(static_cast<const void*>(p.state_score), "state_score")})
    require_ptr(ptr, what);
  require_ptr(p.positions, "positions", 8);
  require_ptr(p.cache, "cache", cache_alignment(dm));
  const DebugPtrs dbg = checked_debug(dm, p.dbg_pooled, p.dbg_normed, p.dbg_roped, p.dbg_hadamard,
                                      "compressor_decode");
  const DecodeArgs a{dm,
                     gptr<const std::int64_t>(p.positions),
                     gptr<const float>(p.a),
                     gptr<const float>(p.g),
                     gptr<const float>(p.ape),
                     gptr<const float>(p.norm_w),
                     p.eps,
                     gptr<const float>(p.cos),
                     gptr<const float>(p.sin),
                     gptr<float>(p.state_kv),
                     gptr<float>(p.state_score),
                     gptr<std::uint8_t>(p.cache),
                     p.entries_max,
                     dbg};
  if (dm.indexer())
    launch_cluster(compressor_kernels::compressor_idx_decode_kernel<>, a, p.batch, dm.ctas(),
                   smem_bytes(dm), stream);
  else
    launch_cluster(compressor_kernels::compressor_decode_kernel<>, a, p.batch, dm.ctas(),
                   smem_bytes(dm), stream);
}

// ---------------------------------------------------------------- host conveniences

namespace {

template <class T>
struct Dev {
  T* p = nullptr;
  std::size_t n = 0;
  explicit Dev(std::size_t count, const T* init = nullptr) : n(count) {
    V4REF_CUDA_CHECK(
        cudaMalloc(reinterpret_cast<void**>(&p), std::max<std::size_t>(count, 1) * sizeof(T)));
    if (init != nullptr && count > 0)
      V4REF_CUDA_CHECK(cudaMemcpy(p, init, count * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<T> get() const {
    std::vector<T> h(n);
    if (n > 0) V4REF_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

}  // namespace

CompressorHostOut compressor_prefill_host(const cmp::PrefillProblem& hp, bool with_state) {
  const Dims& dm = hp.dm;
  const std::int64_t E = hp.tokens / dm.ratio, T = hp.tokens;
  const auto cw = static_cast<std::size_t>(dm.cw());
  Dev<float> a(static_cast<std::size_t>(T) * cw, hp.a), g(static_cast<std::size_t>(T) * cw, hp.g),
      ape(static_cast<std::size_t>(dm.ratio) * cw, hp.ape),
      nw(static_cast<std::size_t>(dm.width), hp.norm_w),
      cs(static_cast<std::size_t>(std::max<std::int64_t>(E, 1)) * 32, hp.cos),
      sn(static_cast<std::size_t>(std::max<std::int64_t>(E, 1)) * 32, hp.sin);
  Dev<std::uint8_t> cache(static_cast<std::size_t>(E * dm.row_bytes()));
  const auto dbg_n = static_cast<std::size_t>(E * dm.width);
  Dev<std::uint16_t> pooled(dbg_n), normed(dbg_n), roped(dm.indexer() ? dbg_n : 0),
      hadamard(dm.indexer() ? dbg_n : 0);
  V4REF_CUDA_CHECK(cudaMemset(cache.p, 0xA5, cache.n));
  for (const Dev<std::uint16_t>* d : {&pooled, &normed, &roped, &hadamard})
    V4REF_CUDA_CHECK(cudaMemset(d->p, 0xFF, d->n * 2));
  CompressorPrefillLaunch p;
  p.dm = dm;
  p.tokens = T;
  p.a = a.p;
  p.g = g.p;
  p.ape = ape.p;
  p.norm_w = nw.p;
  p.eps = hp.eps;
  p.cos = cs.p;
  p.sin = sn.p;
  p.cache = cache.p;
  p.dbg_pooled = pooled.p;
  p.dbg_normed = normed.p;
  if (dm.indexer()) {
    p.dbg_roped = roped.p;
    p.dbg_hadamard = hadamard.p;
  }
  compressor_prefill(p);
  CompressorHostOut out;
  if (with_state) {
    Dev<float> kv(static_cast<std::size_t>(dm.state_rows()) * cw),
        sc(static_cast<std::size_t>(dm.state_rows()) * cw);
    compressor_prefill_state(p, kv.p, sc.p);
    V4REF_CUDA_CHECK(cudaDeviceSynchronize());
    out.state_kv = kv.get();
    out.state_score = sc.get();
  }
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  out.cache = cache.get();
  out.pooled = pooled.get();
  out.normed = normed.get();
  out.roped = roped.get();
  out.hadamard = hadamard.get();
  return out;
}

void compressor_decode_host(const Dims& dm, std::int64_t t0, std::int64_t steps, const float* a,
                            const float* g, const float* ape, const float* norm_w, float eps,
                            const std::vector<float>& cos, const std::vector<float>& sin,
                            cmp::DecodeState& state, std::vector<std::uint8_t>& cache) {
  const auto cw = static_cast<std::size_t>(dm.cw());
  const std::int64_t entries_max = static_cast<std::int64_t>(cache.size()) / dm.row_bytes();
  Dev<float> da(static_cast<std::size_t>(steps) * cw, a),
      dg(static_cast<std::size_t>(steps) * cw, g),
      dape(static_cast<std::size_t>(dm.ratio) * cw, ape),
      dnw(static_cast<std::size_t>(dm.width), norm_w), dcos(cos.size(), cos.data()),
      dsin(sin.size(), sin.data()), kv(state.kv.size(), state.kv.data()),
      sc(state.score.size(), state.score.data());
  Dev<std::uint8_t> dcache(cache.size(), cache.data());
  Dev<std::int64_t> pos(1);
  for (std::int64_t i = 0; i < steps; ++i) {
    const std::int64_t t = t0 + i;
    V4REF_CUDA_CHECK(cudaMemcpy(pos.p, &t, sizeof t, cudaMemcpyHostToDevice));
    CompressorDecodeLaunch p;
    p.dm = dm;
    p.batch = 1;
    p.positions = pos.p;
    p.a = da.p + i * static_cast<std::int64_t>(cw);
    p.g = dg.p + i * static_cast<std::int64_t>(cw);
    p.ape = dape.p;
    p.norm_w = dnw.p;
    p.eps = eps;
    p.cos = dcos.p;
    p.sin = dsin.p;
    p.state_kv = kv.p;
    p.state_score = sc.p;
    p.cache = dcache.p;
    p.entries_max = entries_max;
    compressor_decode(p);
  }
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  state.kv = kv.get();
  state.score = sc.get();
  cache = dcache.get();
}

}  // namespace v4ref::cuda
