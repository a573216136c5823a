// The lightning indexer's logits kernel (cuda/src/indexer_kernels.cuh): formats, work
// decomposition and the per-element fp32 arithmetic, written once for host and device
// (docs/cuda-indexer.md; v4-forward.md §7.3, §2.5 items 4–5; kernel-targets.md §4.1).
//
//   I[r, j] = Σ_h w[r,h] · ReLU(q[r,h,:] · K[j,:])     for j < visible(r) = ⌊(pos(r)+1)/4⌋
//
// Formats (all rows 4-byte aligned only):
//   Q4 row   68 bytes: [64 bytes e2m1, byte b = dim 2b (low nibble) | dim 2b+1 (high nibble)]
//            [4 ue8m0 scales, one per 32 dims]: the indexer key rows the compressor writes
//            (compressor_tile.hpp) and the query rows of the official path (Q4(·;32), §2.5 item 4)
//   FP8 row  132 bytes: [128 e4m3 codes][fp32 scale]: K = code · scale (the V3.2 / vLLM layout)
//   cache    pages of kPageRows = 64 rows; a request's logical page p is physical page
//            page_table[b][p]; logical entry j = 64p + (row in page)
//
// Arithmetic (the kernel and logits_model below do exactly this, in this order):
//   e4m3     every e2m1 code is an e4m3 code of the same value (exact expansion)
//   D_kb     = Σ_{k in block kb} q_e4m3[k] · K_e4m3[k], one wgmma m64n64k32 per 32-dim block
//            with a fresh accumulator: e2m1 × e2m1 products are multiples of 1/4 below 36, so
//            D_kb is exact under any accumulation order or truncation to >= 13 bits; e2m1 × e4m3
//            (FP8 keys) sums follow the tensor cores' accumulation
//   acc      FP4: acc = fma(sq_kb · sk_kb, D_kb, acc), kb = 0..3, from acc = 0 (sq · sk is a
//            product of powers of two: exact unless it leaves fp32's range)
//            FP8: acc = fma(sq_kb, D_kb, acc), kb = 0..3, then logit = acc · s_K (fp32 multiply)
//   term     t_h = w[h] · max(logit_h, 0)                          (fp32 multiply)
//   head sum per thread over its columns in column order (sequential fp32 adds from the first
//            term), then the shuffle sums over lanes (xor 1, then xor 2 when H >= 8)
//
// Work decomposition: a CTA of one warpgroup (128 threads) owns a "tile" of up to 2 groups of
// G = 64/H consecutive query rows of one request (wgmma N = 64 = G·H columns per group, column
// n = token·H + head) and a range of the request's pages (grid.y splits the pages). Per page:
// one bulk copy of the raw page (double-buffered, mbarrier), the expansion to e4m3 in the
// core-matrix layout (lane = key row, one 16-byte store per 16 dims), 4 wgmmas per group with
// the keys as A (M = 64 keys) and the queries as B, the fold above, and the head sums. Thread
// (warp w, lane l) holds keys m0 = 16w + l/4 and m1 = m0 + 8 and columns 8i + 2(l mod 4) + e.
//
// This header must stay self-contained (core headers only).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

#include "v4ref/cuda/fp32_rn.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/host_device.hpp"

namespace v4ref::cuda::idx {

using rn::add_rn;
using rn::fma_rn;
using rn::max_f;
using rn::mul_rn;

inline constexpr int kHeadDim = 128;   // D_I
inline constexpr int kBlocks = 4;      // 32-dim scale blocks per row (Q4) = wgmma k-steps
inline constexpr int kBlockDims = 32;
inline constexpr int kPageRows = 64;   // cache rows per page = wgmma M
inline constexpr int kColumns = 64;    // wgmma N: G·H query-head columns per group
inline constexpr int kMaxGroups = 2;   // groups per tile (next_n = 2 at H = 64)
inline constexpr int kThreads = 128;   // one warpgroup
inline constexpr int kQ4RowBytes = 68;
inline constexpr int kFp8RowBytes = 132;

enum class KeyFormat : int { kFp4 = 0, kFp8 = 1 };

V4REF_HD inline int row_bytes(KeyFormat f) { return f == KeyFormat::kFp4 ? kQ4RowBytes : kFp8RowBytes; }
V4REF_HD inline int page_bytes(KeyFormat f) { return kPageRows * row_bytes(f); }
inline const char* format_name(KeyFormat f) { return f == KeyFormat::kFp4 ? "fp4" : "fp8"; }

// Entries visible to a query at position t (§6.4, §7.3).
V4REF_HD inline std::int64_t visible_entries(std::int64_t t) { return (t + 1) / 4; }

// e2m1 nibble -> e4m3 byte of the same value: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 are e4m3
// 0x00, 0x30, 0x38, 0x3C, 0x40, 0x44, 0x48, 0x4C; the sign moves from bit 3 to bit 7.
V4REF_HD inline std::uint32_t e2m1_to_e4m3(std::uint32_t nib) {
  const std::uint64_t lut = 0x4C4844403C383000ull;
  return static_cast<std::uint32_t>((lut >> (8u * (nib & 7u))) & 0xFFu) | ((nib & 8u) << 4);
}
// Eight nibbles of a packed word (dims 8c .. 8c+7, low nibble first) -> eight e4m3 bytes as
// two little-endian words.
V4REF_HD inline void expand8(std::uint32_t packed, std::uint32_t* lo, std::uint32_t* hi) {
  std::uint32_t a = 0, b = 0;
  for (int i = 0; i < 4; ++i) {
    a |= e2m1_to_e4m3((packed >> (4 * i)) & 0xFu) << (8 * i);
    b |= e2m1_to_e4m3((packed >> (4 * (i + 4))) & 0xFu) << (8 * i);
  }
  *lo = a;
  *hi = b;
}

// ue8m0 byte -> fp32 power of two (0xFF, NaN in the format, is never written by Q4).
V4REF_HD inline float ue8m0_to_f32(std::uint32_t e) {
  const std::uint32_t bits = e == 0 ? 0x00400000u : (e & 0xFFu) << 23;  // 2^-127 is subnormal
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// ------------------------------------------------------------------ host-side description

// One launch, on host arrays. Rows of one request are consecutive and their positions
// nondecreasing (a prefill chunk, or the next_n tokens of a decode step).
struct LogitsProblem {
  KeyFormat format = KeyFormat::kFp4;
  int heads = 64;                          // H in {4, 8, 16, 32, 64}
  std::int64_t rows = 0;                   // R query rows
  const std::uint8_t* q = nullptr;         // [R, H, 68] Q4 query rows
  const float* w = nullptr;                // [R, H] head weights
  const std::int32_t* pos = nullptr;       // [R] position t of each row
  const std::int32_t* request = nullptr;   // [R] request of each row
  std::int64_t requests = 0;               // B
  const std::int32_t* page_table = nullptr;  // [B, max_pages] physical page of logical page p
  std::int64_t max_pages = 0;
  const std::uint8_t* cache = nullptr;     // [num_pages, 64, row_bytes]
  std::int64_t num_pages = 0;
  std::int64_t stride = 0;                 // logits row stride (>= every visible count)
};

// A CTA's rows: request, first row, row count (<= 2·G).
struct Tile {
  std::int32_t request, row0, nrows;
};

inline int tokens_per_group(int heads) { return kColumns / heads; }

// Validates the problem (ShapeError naming the array, row or page) and returns the tiles of at
// most `max_rows` rows (0: 2·G, the logits kernel's; the fused top-k path takes 2).
inline std::vector<Tile> make_tiles(const LogitsProblem& p, int max_rows = 0) {
  const auto bad = [](const std::string& why) { throw ShapeError("index_logits: " + why); };
  if (p.heads != 4 && p.heads != 8 && p.heads != 16 && p.heads != 32 && p.heads != 64)
    bad("heads must be 4, 8, 16, 32 or 64 (wgmma N = 64 = tokens x heads), got " +
        std::to_string(p.heads));
  if (p.rows <= 0 || p.requests <= 0 || p.max_pages <= 0 || p.num_pages <= 0 || p.stride <= 0)
    bad("rows, requests, max_pages, num_pages and stride must be positive");
  if (p.pos == nullptr || p.request == nullptr || p.page_table == nullptr)
    bad("pos, request and page_table must be given (host arrays)");
  const int G = tokens_per_group(p.heads);
  const int cap = max_rows > 0 ? max_rows : kMaxGroups * G;
  std::vector<Tile> tiles;
  for (std::int64_t r = 0; r < p.rows;) {
    const std::int32_t b = p.request[r];
    if (b < 0 || b >= p.requests) bad("row " + std::to_string(r) + " names request " + std::to_string(b));
    if (r > 0 && p.request[r - 1] > b) bad("rows of a request must be consecutive (row " + std::to_string(r) + ")");
    std::int64_t e = r;
    while (e < p.rows && p.request[e] == b && e - r < cap) {
      if (p.pos[e] < 0) bad("row " + std::to_string(e) + " has position " + std::to_string(p.pos[e]));
      if (e > r && p.pos[e] < p.pos[e - 1]) bad("positions of a request must not decrease (row " + std::to_string(e) + ")");
      const std::int64_t vis = visible_entries(p.pos[e]);
      if (vis > p.stride) bad("row " + std::to_string(e) + " sees " + std::to_string(vis) +
                              " entries, more than the logits stride " + std::to_string(p.stride));
      const std::int64_t pages = (vis + kPageRows - 1) / kPageRows;
      if (pages > p.max_pages) bad("row " + std::to_string(e) + " needs " + std::to_string(pages) +
                                   " pages, the page table has " + std::to_string(p.max_pages));
      for (std::int64_t pg = 0; pg < pages; ++pg) {
        const std::int32_t phys = p.page_table[b * p.max_pages + pg];
        if (phys < 0 || phys >= p.num_pages)
          bad("page_table[" + std::to_string(b) + "][" + std::to_string(pg) + "] = " +
              std::to_string(phys) + " is not a page of the cache (" + std::to_string(p.num_pages) + " pages)");
      }
      ++e;
    }
    tiles.push_back(Tile{b, static_cast<std::int32_t>(r), static_cast<std::int32_t>(e - r)});
    r = e;
  }
  return tiles;
}

// NumericError naming the row when a stored value the kernel would read is NaN in its format: a
// query or FP4 key scale byte 0xFF, an FP8 key code 0x7F / 0xFF, a non-finite FP8 row scale (the
// kernel would turn them into silent Inf/NaN logits). Host arrays q and cache; the key rows
// checked are those some row of their request sees. Call after make_tiles.
inline void check_stored_values(const LogitsProblem& p) {
  const auto bad = [](const std::string& why) { throw NumericError("index_logits: " + why); };
  if (p.q == nullptr || p.w == nullptr || p.cache == nullptr) bad("q, w and cache must be given (host arrays)");
  for (std::int64_t r = 0; r < p.rows; ++r)
    for (int h = 0; h < p.heads; ++h) {
      const std::uint8_t* row = p.q + (r * p.heads + h) * kQ4RowBytes;
      for (int b = 0; b < kBlocks; ++b)
        if (row[64 + b] == 0xFF)
          bad("q row " + std::to_string(r) + " head " + std::to_string(h) + ": scale byte " + std::to_string(b) +
              " is 0xFF (NaN in ue8m0)");
      if (!std::isfinite(p.w[r * p.heads + h]))
        bad("w[" + std::to_string(r) + ", " + std::to_string(h) + "] is not finite");
    }
  std::vector<std::int64_t> seen(static_cast<std::size_t>(p.requests), 0);
  for (std::int64_t r = 0; r < p.rows; ++r) {
    auto& n = seen[static_cast<std::size_t>(p.request[r])];
    n = std::max(n, visible_entries(p.pos[r]));
  }
  const int rb = row_bytes(p.format);
  for (std::int64_t b = 0; b < p.requests; ++b)
    for (std::int64_t j = 0; j < seen[static_cast<std::size_t>(b)]; ++j) {
      const std::int64_t phys = p.page_table[b * p.max_pages + j / kPageRows];
      const std::uint8_t* row = p.cache + (phys * kPageRows + j % kPageRows) * rb;
      const std::string where = "key entry " + std::to_string(j) + " of request " + std::to_string(b) + " (page " +
                                std::to_string(phys) + ")";
      if (p.format == KeyFormat::kFp4) {
        for (int k = 0; k < kBlocks; ++k)
          if (row[64 + k] == 0xFF) bad(where + ": scale byte " + std::to_string(k) + " is 0xFF (NaN in ue8m0)");
      } else {
        for (int k = 0; k < kHeadDim; ++k)
          if ((row[k] & 0x7F) == 0x7F) bad(where + ": code " + std::to_string(k) + " is an e4m3 NaN");
        float s;
        std::memcpy(&s, row + kHeadDim, 4);
        if (!std::isfinite(s)) bad(where + ": the fp32 row scale is not finite");
      }
    }
}

// ------------------------------------------------------------------ host model of the bits

// Decoded Q4 row: dims [128] as e2m1 values (before the block scale), scales [4].
inline void decode_q4_row(const std::uint8_t* row, float* codes, float* scales) {
  for (int k = 0; k < kHeadDim; ++k)
    codes[k] = static_cast<float>(fmt::e2m1_to_double((row[k / 2] >> (4 * (k % 2))) & 0xF));
  for (int b = 0; b < kBlocks; ++b) scales[b] = ue8m0_to_f32(row[64 + b]);
}
inline void decode_fp8_row(const std::uint8_t* row, float* codes, float* scale) {
  for (int k = 0; k < kHeadDim; ++k) codes[k] = fmt::e4m3_to_float(row[k]);
  std::memcpy(scale, row + 128, 4);
}

// The kernel's head sum of one (row, key) from its terms t[0..H): lane q = l mod 4 holds heads
// 2q, 2q+1 (H = 4: lanes 0, 1 of a token) or 8i + 2q + e, i < H/8 (H >= 8), summed in that order
// from the first term; then the xor-1 and (H >= 8) xor-2 shuffle sums.
inline float head_sum_model(const float* t, int H) {
  const int lanes = H >= 8 ? 4 : 2, per = H >= 8 ? H / 8 : 1;
  float lane_sum[4] = {0, 0, 0, 0};
  for (int q = 0; q < lanes; ++q) {
    bool first = true;
    for (int i = 0; i < per; ++i)
      for (int e = 0; e < 2; ++e) {
        const float x = t[8 * i + 2 * q + e];
        lane_sum[q] = first ? x : add_rn(lane_sum[q], x);
        first = false;
      }
  }
  const float s = add_rn(lane_sum[0], lane_sum[1]);
  return lanes == 4 ? add_rn(s, add_rn(lane_sum[2], lane_sum[3])) : s;
}

// The kernel's logits [R, stride] (j < visible(r); other entries untouched) under the IEEE fp32
// accumulation model of the tensor cores (k-ordered fp32 sums of exact products; for FP4 keys
// every model gives these bits).
inline void logits_model(const LogitsProblem& p, float* logits) {
  const int H = p.heads, rb = row_bytes(p.format);
  std::vector<float> qc(kHeadDim), qs(kBlocks), kc(kHeadDim), ks(kBlocks);
  std::vector<float> part(static_cast<std::size_t>(H));
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const std::int64_t vis = visible_entries(p.pos[r]);
    const std::int32_t b = p.request[r];
    for (std::int64_t j = 0; j < vis; ++j) {
      const std::uint8_t* key =
          p.cache + (static_cast<std::int64_t>(p.page_table[b * p.max_pages + j / kPageRows]) * kPageRows +
                     j % kPageRows) * rb;
      float kscale = 0;
      if (p.format == KeyFormat::kFp4) decode_q4_row(key, kc.data(), ks.data());
      else decode_fp8_row(key, kc.data(), &kscale);
      for (int h = 0; h < H; ++h) {
        decode_q4_row(p.q + (r * H + h) * kQ4RowBytes, qc.data(), qs.data());
        float acc = 0.0f;
        for (int kb = 0; kb < kBlocks; ++kb) {
          float d = 0.0f;
          for (int k = kb * kBlockDims; k < (kb + 1) * kBlockDims; ++k) d = add_rn(d, mul_rn(qc[k], kc[k]));
          const float s = p.format == KeyFormat::kFp4 ? mul_rn(qs[kb], ks[kb]) : qs[kb];
          acc = fma_rn(s, d, acc);
        }
        const float logit = p.format == KeyFormat::kFp4 ? acc : mul_rn(acc, kscale);
        part[h] = mul_rn(p.w[r * H + h], max_f(logit, 0.0f));
      }
      logits[r * p.stride + j] = head_sum_model(part.data(), H);
    }
  }
}

}  // namespace v4ref::cuda::idx
