// The lightning indexer's logits kernel on Hopper (cuda/src/indexer_kernels.cuh; formats and
// arithmetic: indexer_tile.hpp; docs/cuda-indexer.md). Usable without a CUDA toolkit: the launch
// geometry and the byte count are shared with the SIMT executor's launcher.
#pragma once

#include <algorithm>
#include <cstdint>
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
// at most one per 8 pages.
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
    // at least 8 pages (512 keys) per CTA: each split re-reads the tile's query rows
    const std::int64_t splits = std::min(want, std::max<std::int64_t>(1, max_pages / 8));
    pages_per_split = static_cast<std::int32_t>((max_pages + splits - 1) / splits);
  }
  g.pages_per_split = pages_per_split;
  g.splits = static_cast<int>((max_pages + pages_per_split - 1) / pages_per_split);
  return g;
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
// read to validate and to tile; q, w, cache may be null there); `dev` the device arrays.
void index_logits(const idx::LogitsProblem& host, const LogitsDeviceArrays& dev,
                  std::int32_t pages_per_split = 0, CUstream_st* stream = nullptr);

// Host convenience (tests): host arrays through the device; logits is read and written back.
void index_logits_host(const idx::LogitsProblem& p, float* logits, std::int32_t pages_per_split = 0);

}  // namespace v4ref::cuda
