// The indexer's logits kernel on Hopper: the host side (header cuda/include/v4ref/cuda/indexer.hpp).
// The kernel is indexer_kernels.cuh, in the SIMT dialect: the same source runs in the SIMT
// executor on the CPU (cuda/simt/indexer_simt.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "indexer_kernels.cuh"
#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/indexer.hpp"

namespace v4ref::cuda {
namespace {

using idx::KeyFormat;
using indexer_kernels::LogitsArgs;

template <KeyFormat KF, int H>
void launch_one(const LogitsArgs& a, dim3 grid, cudaStream_t s) {
  indexer_kernels::index_logits_kernel<KF, H><<<grid, indexer_kernels::kThreads,
                                                 indexer_kernels::indexer_smem_bytes<KF>, s>>>(a);
}

template <KeyFormat KF>
void launch_heads(int heads, const LogitsArgs& a, dim3 grid, cudaStream_t s) {
  switch (heads) {
    case 4: launch_one<KF, 4>(a, grid, s); break;
    case 8: launch_one<KF, 8>(a, grid, s); break;
    case 16: launch_one<KF, 16>(a, grid, s); break;
    case 32: launch_one<KF, 32>(a, grid, s); break;
    default: launch_one<KF, 64>(a, grid, s); break;
  }
}

template <class T>
T* device_copy(const T* src, std::size_t n) {
  T* d = nullptr;
  V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d), std::max<std::size_t>(n, 1) * sizeof(T)));
  if (n > 0) V4REF_CUDA_CHECK(cudaMemcpy(d, src, n * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

}  // namespace

void index_logits(const idx::LogitsProblem& host, const LogitsDeviceArrays& dev,
                  std::int32_t pages_per_split, CUstream_st* stream) {
  const std::vector<idx::Tile> tiles = idx::make_tiles(host);
  const LogitsGrid grid = logits_grid(host, tiles, pages_per_split);
  if (dev.q == nullptr || dev.w == nullptr || dev.pos == nullptr || dev.page_table == nullptr ||
      dev.cache == nullptr || dev.logits == nullptr || dev.tiles == nullptr)
    throw Error("index_logits: every device array must be set");
  if (reinterpret_cast<std::uintptr_t>(dev.cache) % 16 != 0 || reinterpret_cast<std::uintptr_t>(dev.q) % 16 != 0)
    throw Error("index_logits: the cache and the query rows must be 16-byte aligned (bulk copies)");
  std::vector<std::int32_t> words;
  for (const idx::Tile& t : tiles) words.insert(words.end(), {t.request, t.row0, t.nrows});
  V4REF_CUDA_CHECK(cudaMemcpyAsync(dev.tiles, words.data(), words.size() * 4, cudaMemcpyHostToDevice, stream));
  const LogitsArgs a{simt::gptr<const std::uint8_t>(dev.q),
                     simt::gptr<const float>(dev.w),
                     simt::gptr<const std::int32_t>(dev.pos),
                     simt::gptr<const std::int32_t>(dev.tiles),
                     simt::gptr<const std::int32_t>(dev.page_table),
                     static_cast<std::int32_t>(host.max_pages),
                     simt::gptr<const std::uint8_t>(dev.cache),
                     grid.pages_per_split,
                     simt::gptr<float>(dev.logits),
                     host.stride};
  const dim3 g(static_cast<unsigned>(tiles.size()), static_cast<unsigned>(grid.splits), 1);
  if (host.format == KeyFormat::kFp4) launch_heads<KeyFormat::kFp4>(host.heads, a, g, stream);
  else launch_heads<KeyFormat::kFp8>(host.heads, a, g, stream);
  V4REF_CUDA_CHECK_LAUNCH();
}

void index_logits_host(const idx::LogitsProblem& p, float* logits, std::int32_t pages_per_split) {
  const auto R = static_cast<std::size_t>(p.rows), H = static_cast<std::size_t>(p.heads);
  LogitsDeviceArrays d;
  d.q = device_copy(p.q, R * H * idx::kQ4RowBytes);
  d.w = device_copy(p.w, R * H);
  d.pos = device_copy(p.pos, R);
  d.page_table = device_copy(p.page_table, static_cast<std::size_t>(p.requests * p.max_pages));
  d.cache = device_copy(p.cache, static_cast<std::size_t>(p.num_pages) * idx::kPageRows * idx::row_bytes(p.format));
  d.logits = device_copy(logits, R * static_cast<std::size_t>(p.stride));
  V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d.tiles), 3 * R * 4));
  index_logits(p, d, pages_per_split);
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  V4REF_CUDA_CHECK(cudaMemcpy(logits, d.logits, R * static_cast<std::size_t>(p.stride) * 4, cudaMemcpyDeviceToHost));
  cudaFree(const_cast<std::uint8_t*>(d.q));
  cudaFree(const_cast<float*>(d.w));
  cudaFree(const_cast<std::int32_t*>(d.pos));
  cudaFree(const_cast<std::int32_t*>(d.page_table));
  cudaFree(const_cast<std::uint8_t*>(d.cache));
  cudaFree(d.logits);
  cudaFree(d.tiles);
}

}  // namespace v4ref::cuda
