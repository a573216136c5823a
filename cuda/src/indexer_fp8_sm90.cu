// The indexer's logits kernel on Hopper: the host side (header cuda/include/v4ref/cuda/indexer.hpp).
// The kernel is indexer_kernels.cuh, in the SIMT dialect: the same source runs in the SIMT
// executor on the CPU (cuda/simt/indexer_simt.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <type_traits>
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

template <KeyFormat KF, int H>
void launch_partial(const LogitsArgs& a, const indexer_kernels::TopkArgs& tk, dim3 grid, cudaStream_t s) {
  const unsigned smem = indexer_kernels::partial_smem_bytes<KF>(tk.k);
  V4REF_CUDA_CHECK(cudaFuncSetAttribute(indexer_kernels::index_topk_partial_kernel<KF, H>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  indexer_kernels::index_topk_partial_kernel<KF, H><<<grid, indexer_kernels::kThreads, smem, s>>>(a, tk);
}

template <KeyFormat KF>
void launch_partial_heads(int heads, const LogitsArgs& a, const indexer_kernels::TopkArgs& tk, dim3 grid,
                          cudaStream_t s) {
  switch (heads) {
    case 4: launch_partial<KF, 4>(a, tk, grid, s); break;
    case 8: launch_partial<KF, 8>(a, tk, grid, s); break;
    case 16: launch_partial<KF, 16>(a, tk, grid, s); break;
    case 32: launch_partial<KF, 32>(a, tk, grid, s); break;
    default: launch_partial<KF, 64>(a, tk, grid, s); break;
  }
}

LogitsArgs args_of(const idx::LogitsProblem& host, const LogitsDeviceArrays& dev, std::int32_t pages_per_split) {
  return LogitsArgs{simt::gptr<const std::uint8_t>(dev.q),
                    simt::gptr<const float>(dev.w),
                    simt::gptr<const std::int32_t>(dev.pos),
                    simt::gptr<const std::int32_t>(dev.tiles),
                    simt::gptr<const std::int32_t>(dev.page_table),
                    static_cast<std::int32_t>(host.max_pages),
                    simt::gptr<const std::uint8_t>(dev.cache),
                    pages_per_split,
                    simt::gptr<float>(dev.logits),
                    host.stride};
}

void check_arrays(const LogitsDeviceArrays& dev, bool need_logits) {
  if (dev.q == nullptr || dev.w == nullptr || dev.pos == nullptr || dev.page_table == nullptr ||
      dev.cache == nullptr || (need_logits && dev.logits == nullptr) || dev.tiles == nullptr)
    throw Error("index_logits: every device array must be set");
  if (reinterpret_cast<std::uintptr_t>(dev.cache) % 16 != 0 || reinterpret_cast<std::uintptr_t>(dev.q) % 16 != 0)
    throw Error("index_logits: the cache and the query rows must be 16-byte aligned (bulk copies)");
}

void upload_tiles(const std::vector<idx::Tile>& tiles, std::int32_t* dst, cudaStream_t stream) {
  std::vector<std::int32_t> words;
  for (const idx::Tile& t : tiles) words.insert(words.end(), {t.request, t.row0, t.nrows});
  V4REF_CUDA_CHECK(cudaMemcpyAsync(dst, words.data(), words.size() * 4, cudaMemcpyHostToDevice, stream));
  V4REF_CUDA_CHECK(cudaStreamSynchronize(stream));  // `words` is a host temporary
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
  check_arrays(dev, true);
  upload_tiles(tiles, dev.tiles, stream);
  const LogitsArgs a = args_of(host, dev, grid.pages_per_split);
  const dim3 g(static_cast<unsigned>(tiles.size()), static_cast<unsigned>(grid.splits), 1);
  if (host.format == KeyFormat::kFp4) launch_heads<KeyFormat::kFp4>(host.heads, a, g, stream);
  else launch_heads<KeyFormat::kFp8>(host.heads, a, g, stream);
  V4REF_CUDA_CHECK_LAUNCH();
}

std::size_t topk_decode_scratch_bytes(std::int64_t rows, std::int32_t k) {
  const std::size_t max_splits = static_cast<std::size_t>(std::max(1, 8192 / std::max(k, 1)));
  return static_cast<std::size_t>(rows) * max_splits * (8 * static_cast<std::size_t>(k) + 4) + 16;
}

void index_topk_decode(const idx::LogitsProblem& host, const LogitsDeviceArrays& dev, std::int32_t k,
                       std::int32_t* out, void* scratch, std::int32_t pages_per_split, CUstream_st* stream) {
  check_topk_k(k);
  const std::vector<idx::Tile> tiles = idx::make_tiles(host, 2);
  const LogitsGrid grid = topk_decode_grid(host, tiles, k, pages_per_split);
  check_arrays(dev, false);
  if (out == nullptr || scratch == nullptr) throw Error("index_topk_decode: out and scratch must be device pointers");
  upload_tiles(tiles, dev.tiles, stream);
  const LogitsArgs a = args_of(host, dev, grid.pages_per_split);
  auto* part = static_cast<std::uint64_t*>(scratch);
  auto* part_n = reinterpret_cast<std::int32_t*>(part + host.rows * grid.splits * k);
  const indexer_kernels::TopkArgs tk{k, grid.splits, simt::gptr<std::uint64_t>(part),
                                     simt::gptr<std::int32_t>(part_n), simt::gptr<std::int32_t>(out)};
  const dim3 g(static_cast<unsigned>(tiles.size()), static_cast<unsigned>(grid.splits), 1);
  if (host.format == KeyFormat::kFp4) launch_partial_heads<KeyFormat::kFp4>(host.heads, a, tk, g, stream);
  else launch_partial_heads<KeyFormat::kFp8>(host.heads, a, tk, g, stream);
  V4REF_CUDA_CHECK_LAUNCH();
  const unsigned msmem = indexer_kernels::merge_smem_bytes(k, grid.splits);
  V4REF_CUDA_CHECK(cudaFuncSetAttribute(indexer_kernels::index_topk_merge_kernel,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(msmem)));
  indexer_kernels::index_topk_merge_kernel<<<static_cast<unsigned>(host.rows), indexer_kernels::kThreads, msmem,
                                             stream>>>(tk);
  V4REF_CUDA_CHECK_LAUNCH();
}

namespace {

// A host problem's arrays on the device (tests' conveniences), freed on scope exit.
struct DeviceCopy {
  LogitsDeviceArrays d;
  std::vector<void*> owned;
  template <class T>
  T* keep(T* p) {
    owned.push_back(const_cast<std::remove_const_t<T>*>(p));
    return p;
  }
  DeviceCopy(const idx::LogitsProblem& p, const float* logits) {
    const auto R = static_cast<std::size_t>(p.rows), H = static_cast<std::size_t>(p.heads);
    d.q = keep(device_copy(p.q, R * H * idx::kQ4RowBytes));
    d.w = keep(device_copy(p.w, R * H));
    d.pos = keep(device_copy(p.pos, R));
    d.page_table = keep(device_copy(p.page_table, static_cast<std::size_t>(p.requests * p.max_pages)));
    d.cache = keep(device_copy(p.cache, static_cast<std::size_t>(p.num_pages) * idx::kPageRows * idx::row_bytes(p.format)));
    if (logits != nullptr) d.logits = keep(device_copy(logits, R * static_cast<std::size_t>(p.stride)));
    V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d.tiles), 3 * R * 4));
    keep(d.tiles);
  }
  ~DeviceCopy() {
    for (void* p : owned) cudaFree(p);
  }
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
};

}  // namespace

void index_logits_host(const idx::LogitsProblem& p, float* logits, std::int32_t pages_per_split) {
  idx::make_tiles(p);
  idx::check_stored_values(p);
  DeviceCopy c(p, logits);
  index_logits(p, c.d, pages_per_split);
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  V4REF_CUDA_CHECK(cudaMemcpy(logits, c.d.logits, static_cast<std::size_t>(p.rows * p.stride) * 4,
                              cudaMemcpyDeviceToHost));
}

std::vector<std::int32_t> index_topk_decode_host(const idx::LogitsProblem& p, std::int32_t k,
                                                 std::int32_t pages_per_split) {
  idx::make_tiles(p, 2);
  idx::check_stored_values(p);
  DeviceCopy c(p, nullptr);
  std::int32_t* out = nullptr;
  void* scratch = nullptr;
  V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&out), static_cast<std::size_t>(p.rows * k) * 4));
  c.keep(out);
  V4REF_CUDA_CHECK(cudaMalloc(&scratch, topk_decode_scratch_bytes(p.rows, k)));
  c.keep(scratch);
  index_topk_decode(p, c.d, k, out, scratch, pages_per_split);
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::int32_t> h(static_cast<std::size_t>(p.rows * k));
  V4REF_CUDA_CHECK(cudaMemcpy(h.data(), out, h.size() * 4, cudaMemcpyDeviceToHost));
  return h;
}

}  // namespace v4ref::cuda
