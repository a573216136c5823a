// The lightning indexer's logits kernel on Hopper (cuda/src/indexer_kernels.cuh; formats and
// arithmetic: indexer_tile.hpp; docs/cuda-indexer.md). Usable without a CUDA toolkit: the launch
// geometry and the byte count are shared with the SIMT executor's launcher.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "v4ref/cuda/indexer_tile.hpp"

struct CUstream_st;

namespace v4ref::cuda {

// Grid of one launch: x = tiles, y = page splits.
struct LogitsGrid {
  int splits = 1;
  std::int32_t pages_per_split = 1;
};

// pages_per_split > 0: as given; 0: enough splits for about two CTAs per SM of an H100 (132),
// at most one per 16 pages.
inline LogitsGrid logits_grid(const idx::LogitsProblem& p, const std::vector<idx::Tile>& tiles,
                              std::int32_t pages_per_split) {
  std::int64_t max_pages = 1;
  for (const idx::Tile& t : tiles) {
    const std::int64_t vis = idx::visible_entries(p.pos[t.row0 + t.nrows - 1]);
    max_pages = std::max<std::int64_t>(max_pages, (vis + idx::kPageRows - 1) / idx::kPageRows);
  }
  LogitsGrid g;
  if (pages_per_split <= 0) {
    const std::int64_t want = std::max<std::int64_t>(1, (2 * 132 + static_cast<std::int64_t>(tiles.size()) - 1) /
                                                            static_cast<std::int64_t>(tiles.size()));
    // at least 16 pages (1024 keys) per CTA: each split re-reads the tile's query rows (one
    // page's worth), so the re-read stays <= 1/16 of the keys
    const std::int64_t splits = std::min(want, std::max<std::int64_t>(1, max_pages / 16));
    pages_per_split = static_cast<std::int32_t>((max_pages + splits - 1) / splits);
  }
  g.pages_per_split = pages_per_split;
  g.splits = static_cast<int>((max_pages + pages_per_split - 1) / pages_per_split);
  return g;
}

// The fused decode path (index_topk_partial_kernel + index_topk_merge_kernel): tiles of at most
// 2 rows (the next_n rows of a request), page splits such that splits·K <= 8192 (the merge
// sorts every split's K candidates in shared memory) and each split has >= 16 pages.
inline LogitsGrid topk_decode_grid(const idx::LogitsProblem& p, const std::vector<idx::Tile>& tiles,
                                   std::int32_t k, std::int32_t pages_per_split) {
  LogitsGrid g = logits_grid(p, tiles, pages_per_split);
  const int max_splits = std::max(1, 8192 / k);
  if (g.splits > max_splits) {
    std::int64_t max_pages = static_cast<std::int64_t>(g.splits) * g.pages_per_split;
    g.pages_per_split = static_cast<std::int32_t>((max_pages + max_splits - 1) / max_splits);
    g.splits = static_cast<int>((max_pages + g.pages_per_split - 1) / g.pages_per_split);
  }
  return g;
}

// ShapeError unless k is a power of two in [8, 1024] (512 Flash, 1024 Pro; tiny configs 32, 64).
inline void check_topk_k(std::int64_t k) {
  if (k < 8 || k > 1024 || (k & (k - 1)) != 0)
    throw ShapeError("index_topk_decode: k must be a power of two in [8, 1024], got " + std::to_string(k));
}

// Compulsory bytes (kernel-targets.md §4.1): every request's visible key rows once, the query
// rows and head weights once, the visible logits written once.
inline double logits_bytes(const idx::LogitsProblem& p) {
  std::vector<std::int64_t> keys(static_cast<std::size_t>(p.requests), 0);
  double out = 0;
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const std::int64_t vis = idx::visible_entries(p.pos[r]);
    auto& k = keys[static_cast<std::size_t>(p.request[r])];
    k = std::max(k, vis);
    out += 4.0 * static_cast<double>(vis);
  }
  double key_bytes = 0;
  for (std::int64_t k : keys) key_bytes += static_cast<double>(k) * idx::row_bytes(p.format);
  return key_bytes + static_cast<double>(p.rows) * p.heads * (idx::kQ4RowBytes + 4) + out;
}

// Device arrays of one launch (the shapes of idx::LogitsProblem).
struct LogitsDeviceArrays {
  const std::uint8_t* q = nullptr;           // [R, H, 68]
  const float* w = nullptr;                  // [R, H]
  const std::int32_t* pos = nullptr;         // [R]
  const std::int32_t* page_table = nullptr;  // [B, max_pages]
  const std::uint8_t* cache = nullptr;       // [num_pages, 64, row_bytes], 16-byte aligned
  float* logits = nullptr;                   // [R, stride]
  std::int32_t* tiles = nullptr;             // scratch of 3·R ints (the launch writes its tiles)
};

// Device launch. `host` holds host copies of the problem's arrays (pos, request, page_table are
// read to validate and to tile; q, w, cache may be null there); `dev` the device arrays. The
// stored values in device memory are not read on the host: a NaN-coded scale or code there gives
// Inf/NaN logits (the host conveniences below and the executor launchers check them first).
void index_logits(const idx::LogitsProblem& host, const LogitsDeviceArrays& dev,
                  std::int32_t pages_per_split = 0, CUstream_st* stream = nullptr);

// Host convenience (tests): host arrays through the device (checked by idx::check_stored_values);
// logits is read and written back.
void index_logits_host(const idx::LogitsProblem& p, float* logits, std::int32_t pages_per_split = 0);

// The fused decode path on the device: out [R, k] device memory (the selected entries of every
// row in ascending order, −1 padding); dev.logits unused; `scratch` at least
// topk_decode_scratch_bytes(R, k) bytes of device memory.
std::size_t topk_decode_scratch_bytes(std::int64_t rows, std::int32_t k);
void index_topk_decode(const idx::LogitsProblem& host, const LogitsDeviceArrays& dev, std::int32_t k,
                       std::int32_t* out, void* scratch, std::int32_t pages_per_split = 0,
                       CUstream_st* stream = nullptr);
std::vector<std::int32_t> index_topk_decode_host(const idx::LogitsProblem& p, std::int32_t k,
                                                 std::int32_t pages_per_split = 0);

}  // namespace v4ref::cuda
