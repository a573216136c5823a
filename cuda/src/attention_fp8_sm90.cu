// CSA and HCA attention on Hopper: the host side (header cuda/include/v4ref/cuda/attention.hpp).
// The kernel is attention_kernels.cuh, in the SIMT dialect: the same source runs in the SIMT
// executor on the CPU (cuda/simt/attention_simt.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "attention_kernels.cuh"
#include "v4ref/cuda/attention.hpp"
#include "v4ref/cuda/check.hpp"

namespace v4ref::cuda {
namespace {

using attention_kernels::AttentionArgs;
using attn::Kind;

template <int D, Kind K>
void launch_one(const AttentionArgs& a, std::int32_t heads, dim3 grid, cudaStream_t s) {
  constexpr unsigned smem = attention_kernels::attention_smem_bytes<D>;
  V4REF_CUDA_CHECK(cudaFuncSetAttribute(attention_kernels::attention_kernel<D, K, attention_kernels::AttnFault::kNone>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  attention_kernels::attention_kernel<D, K, attention_kernels::AttnFault::kNone>
      <<<grid, attention_kernels::kThreads, smem, s>>>(a, heads);
}

template <class T>
T* device_copy(const T* src, std::size_t n) {
  T* d = nullptr;
  V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d), std::max<std::size_t>(n, 1) * sizeof(T)));
  if (n > 0 && src != nullptr) V4REF_CUDA_CHECK(cudaMemcpy(d, src, n * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

}  // namespace

void attention(const attn::AttentionProblem& host, const AttentionDeviceArrays& dev, CUstream_st* stream) {
  attn::check_problem(host);
  if (dev.q == nullptr || dev.sink == nullptr || dev.pos == nullptr || dev.request == nullptr ||
      dev.window_cache == nullptr || dev.window_table == nullptr || dev.out == nullptr || dev.lse == nullptr ||
      (host.kind == Kind::kCsa && dev.selected == nullptr))
    throw Error("attention: every device array the problem uses must be set");
  if (reinterpret_cast<std::uintptr_t>(dev.q) % 16 != 0 || reinterpret_cast<std::uintptr_t>(dev.out) % 16 != 0 ||
      reinterpret_cast<std::uintptr_t>(dev.window_cache) % 8 != 0 || reinterpret_cast<std::uintptr_t>(dev.cmp_cache) % 8 != 0)
    throw Error("attention: q and out must be 16-byte aligned, the caches 8-byte aligned");
  const AttentionArgs a{simt::gptr<const std::uint16_t>(dev.q),     simt::gptr<const float>(dev.sink),
                        simt::gptr<const std::int32_t>(dev.pos),    simt::gptr<const std::int32_t>(dev.request),
                        simt::gptr<const std::uint8_t>(dev.window_cache), simt::gptr<const std::int32_t>(dev.window_table),
                        host.window_pages,                          simt::gptr<const std::uint8_t>(dev.cmp_cache),
                        simt::gptr<const std::int32_t>(dev.cmp_table), host.cmp_pages,
                        simt::gptr<const std::int32_t>(dev.selected), host.top_k,
                        simt::gptr<std::uint16_t>(dev.out),          simt::gptr<float>(dev.lse)};
  const dim3 grid(static_cast<unsigned>(host.rows), static_cast<unsigned>(attn::head_blocks(host.heads)), 1);
  const auto h = static_cast<std::int32_t>(host.heads);
  if (host.head_dim == 512) {
    if (host.kind == Kind::kCsa) launch_one<512, Kind::kCsa>(a, h, grid, stream);
    else launch_one<512, Kind::kHca>(a, h, grid, stream);
  } else {
    if (host.kind == Kind::kCsa) launch_one<128, Kind::kCsa>(a, h, grid, stream);
    else launch_one<128, Kind::kHca>(a, h, grid, stream);
  }
  V4REF_CUDA_CHECK_LAUNCH();
}

void attention_host(const attn::AttentionProblem& p, std::uint16_t* out, float* lse) {
  attn::check_problem(p);
  attn::check_stored_values(p);
  const auto R = static_cast<std::size_t>(p.rows), H = static_cast<std::size_t>(p.heads),
             D = static_cast<std::size_t>(p.head_dim), B = static_cast<std::size_t>(p.requests);
  const auto rb = static_cast<std::size_t>(attn::row_bytes(p.head_dim));
  std::vector<void*> owned;
  const auto keep = [&owned](auto* d) {
    owned.push_back(const_cast<std::remove_const_t<std::remove_pointer_t<decltype(d)>>*>(d));
    return d;
  };
  AttentionDeviceArrays d;
  d.q = keep(device_copy(p.q, R * H * D));
  d.sink = keep(device_copy(p.sink, H));
  d.pos = keep(device_copy(p.pos, R));
  d.request = keep(device_copy(p.request, R));
  d.window_cache = keep(device_copy(p.window_cache, static_cast<std::size_t>(p.window_num_pages) * attn::kPageRows * rb));
  d.window_table = keep(device_copy(p.window_table, B * static_cast<std::size_t>(p.window_pages)));
  d.cmp_cache = keep(device_copy(p.cmp_cache, static_cast<std::size_t>(p.cmp_num_pages) * attn::kPageRows * rb));
  d.cmp_table = keep(device_copy(p.cmp_table, B * static_cast<std::size_t>(std::max(p.cmp_pages, 0))));
  d.selected = keep(device_copy(p.selected, p.kind == Kind::kCsa ? R * static_cast<std::size_t>(p.top_k) : 0));
  d.out = keep(device_copy(out, R * H * D));
  d.lse = keep(device_copy(lse, R * H));
  try {
    attention(p, d);
    V4REF_CUDA_CHECK(cudaDeviceSynchronize());
    V4REF_CUDA_CHECK(cudaMemcpy(out, d.out, R * H * D * 2, cudaMemcpyDeviceToHost));
    V4REF_CUDA_CHECK(cudaMemcpy(lse, d.lse, R * H * 4, cudaMemcpyDeviceToHost));
  } catch (...) {
    for (void* x : owned) cudaFree(x);
    throw;
  }
  for (void* x : owned) cudaFree(x);
}

}  // namespace v4ref::cuda
