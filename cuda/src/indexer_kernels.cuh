// The lightning indexer's logits kernel in the SIMT dialect (simt.hpp): compiled by nvcc in
// indexer_fp8_sm90.cu and by the host compiler in cuda/simt/indexer_simt.cpp, where the SIMT
// executor runs this same source (docs/cuda-indexer.md, docs/simt.md). Formats, decomposition
// and the fp32 arithmetic: indexer_tile.hpp.
//
// One warpgroup per CTA. CTA (x, y) owns tile x (up to 2 groups of G = 64/H query rows of one
// request) and the pages [y·pages_per_split, ...) of that request that its rows can see.
//   1. thread 0 bulk-copies the tile's Q4 query rows (one contiguous 64·68-byte run per group)
//      into the raw buffers; all threads expand them to e4m3 (B operand, core-matrix layout),
//      their block scales and the head weights into shared memory;
//   2. per page: bulk copy of the raw page (two buffers, one mbarrier each, the page after next
//      is issued as soon as a buffer has been expanded), expansion to e4m3 (A operand: lane =
//      key row, so both the 4-byte reads of the 68- or 132-byte rows and the 16-byte stores are
//      conflict-free) and the key scales; fence.proxy.async, barrier; per group 4 wgmma
//      m64n64k32 (one per 32-dim scale block, fresh accumulator) folded with the scales in fp32;
//      ReLU, head weight, head sum (in-thread, then xor shuffles), one fp32 store per
//      (row, visible key).
//
// Dynamic shared memory (indexer_smem_bytes): A [4 blocks][64 keys][32] e4m3 (8 KB) | B [2][4]
// [64][32] (16 KB) | raw [2][page] | sk [4][64] fp32 | sq [2][4][64] fp32 | w [2][64] fp32 |
// vis [32] int | 3 mbarriers.
//
// Fault injection (tests/simt/indexer_simt_test.cpp): the template parameter F selects one
// defect; the device build instantiates kNone only.
#pragma once

#include <cstdint>
#include <cstring>

#include "v4ref/cuda/indexer_tile.hpp"
#include "v4ref/cuda/simt/simt.hpp"

namespace v4ref::cuda::indexer_kernels {

using namespace v4ref::cuda::simt;  // NOLINT: the dialect is the kernels' vocabulary
using idx::KeyFormat;

enum class LogitsFault : int {
  kNone = 0,
  kVisibleOffByOne,   // visible(t) = ⌊(t+2)/4⌋: the entry completed by t+1 leaks in
  kNibbleOrder,       // key bytes decoded high nibble first
  kScaleRowMisread,   // key scales read from the next row of the page
  kReluMissing,       // negative head logits are summed
  kReluAfterHeadSum,  // ReLU of the weighted sum instead of per head
  kHeadWeightIndex,   // head h weighted by w[(h + 1) mod H]
  kPageTableOffset,   // every request reads request 0's page table
  kNoProxyFence,      // operands written with st.shared reach the wgmma unfenced
  kNoPageWait,        // the expansion does not wait for the page's copy
  kSelectionOverflow, // fused path: pending candidates merged only after the last page (the
                      // ones past the pending capacity are lost)
};

constexpr int kThreads = idx::kThreads;
constexpr unsigned kOffA = 0;
constexpr unsigned kOffB = 8192;
constexpr unsigned kOffRaw = kOffB + idx::kMaxGroups * 8192;
template <KeyFormat KF>
constexpr unsigned kRawBytes = static_cast<unsigned>(idx::kPageRows * (KF == KeyFormat::kFp4 ? idx::kQ4RowBytes : idx::kFp8RowBytes));
template <KeyFormat KF>
constexpr unsigned kOffSk = kOffRaw + 2 * kRawBytes<KF>;
template <KeyFormat KF>
constexpr unsigned kOffSq = kOffSk<KF> + idx::kBlocks * idx::kPageRows * 4;
template <KeyFormat KF>
constexpr unsigned kOffW = kOffSq<KF> + idx::kMaxGroups * idx::kBlocks * idx::kColumns * 4;
template <KeyFormat KF>
constexpr unsigned kOffVis = kOffW<KF> + idx::kMaxGroups * idx::kColumns * 4;
template <KeyFormat KF>
constexpr unsigned kOffBar = kOffVis<KF> + 32 * 4;
template <KeyFormat KF>
constexpr unsigned indexer_smem_bytes = kOffBar<KF> + 3 * 8;

struct LogitsArgs {
  gptr<const std::uint8_t> q;          // [R, H, 68]
  gptr<const float> w;                 // [R, H]
  gptr<const std::int32_t> pos;        // [R]
  gptr<const std::int32_t> tiles;      // [n_tiles, 3]: request, first row, row count
  gptr<const std::int32_t> page_table; // [B, max_pages]
  std::int32_t max_pages;
  gptr<const std::uint8_t> cache;      // [num_pages, 64, row_bytes]
  std::int32_t pages_per_split;
  gptr<float> logits;                  // [R, stride]
  std::int64_t stride;
};

template <LogitsFault F>
V4REF_SIMT_DEVICE std::int32_t visible_of(std::int32_t t) {
  return F == LogitsFault::kVisibleOffByOne ? (t + 2) / 4 : static_cast<std::int32_t>(idx::visible_entries(t));
}

// The 16-byte chunk c (dims 16c .. 16c+15) of K-major row `row` of a [64 rows][128 dims] e4m3
// operand in the no-swizzle core-matrix layout: 32-dim block c/2 at 2048 bytes each, SBO = 256
// per 8 rows, LBO = 128 between the two 16-dim halves.
V4REF_SIMT_DEVICE sptr<u32x4> operand_chunk(sptr<unsigned char> base, int row, int c) {
  return scast<u32x4>(base + (c / 2) * 2048 + (row / 8) * 256 + (c % 2) * 128 + (row % 8) * 16);
}

// Expands row `row` of a raw Q4 buffer (68-byte rows) into an operand: chunks c = c0, c0+2, c0+4,
// c0+6; the scales (when c0 == 0) into scales[kb·64 + row].
template <bool kSwapNibbles>
V4REF_SIMT_DEVICE void expand_q4_row(sptr<const std::uint32_t> raw, int row, int c0,
                                     sptr<unsigned char> op, sptr<float> scales, int scale_row) {
  const sptr<const std::uint32_t> r = raw + row * (idx::kQ4RowBytes / 4);
  for (int c = c0; c < 8; c += 2) {
    std::uint32_t w0 = ld(r + 2 * c), w1 = ld(r + 2 * c + 1);
    if (kSwapNibbles) {
      w0 = ((w0 & 0x0F0F0F0Fu) << 4) | ((w0 >> 4) & 0x0F0F0F0Fu);
      w1 = ((w1 & 0x0F0F0F0Fu) << 4) | ((w1 >> 4) & 0x0F0F0F0Fu);
    }
    u32x4 v;
    idx::expand8(w0, &v.x, &v.y);
    idx::expand8(w1, &v.z, &v.w);
    st(operand_chunk(op, row, c), v);
  }
  if (c0 == 0) {
    const std::uint32_t s = ld(raw + scale_row * (idx::kQ4RowBytes / 4) + 16);
    for (int kb = 0; kb < idx::kBlocks; ++kb)
      st(scales + kb * idx::kPageRows + row, idx::ue8m0_to_f32((s >> (8 * kb)) & 0xFFu));
  }
}

// The same for a raw FP8 row (132 bytes: 128 e4m3 codes, fp32 scale into scales[row]).
template <LogitsFault F>
V4REF_SIMT_DEVICE void expand_fp8_row(sptr<const std::uint32_t> raw, int row, int c0,
                                      sptr<unsigned char> op, sptr<float> scales) {
  const sptr<const std::uint32_t> r = raw + row * (idx::kFp8RowBytes / 4);
  for (int c = c0; c < 8; c += 2) {
    u32x4 v;
    v.x = ld(r + 4 * c);
    v.y = ld(r + 4 * c + 1);
    v.z = ld(r + 4 * c + 2);
    v.w = ld(r + 4 * c + 3);
    st(operand_chunk(op, row, c), v);
  }
  if (c0 == 0) {
    const int srow = F == LogitsFault::kScaleRowMisread ? (row + 1) % idx::kPageRows : row;
    st(scales + row, ld(scast<const float>(raw + srow * (idx::kFp8RowBytes / 4) + 32)));
  }
}

// The logits of CTA (x, y) (tile x, page split y), handed to `sink`: sink.store(t, j, v) by one
// lane per (tile row t, visible entry j); sink.page_done(p, last) by every thread after each page.
// Returns false (before any barrier, for the whole CTA) when the split sees no page.
template <KeyFormat KF, int H, LogitsFault F, class Sink>
V4REF_SIMT_DEVICE bool logits_tile(const LogitsArgs& a, Sink& sink) {
  constexpr int G = idx::kColumns / H;                  // tokens per group
  constexpr int kSlots = H <= 8 ? 8 : idx::kColumns / H;  // tokens a thread touches per group
  constexpr int kPer = H >= 8 ? H / 8 : 1;                  // column octets per token
  constexpr unsigned kPage = kRawBytes<KF>;
  const sptr<unsigned char> smem = dynamic_smem<unsigned char>();
  const sptr<unsigned char> sA = smem + kOffA, sB = smem + kOffB, raw = smem + kOffRaw;
  const sptr<float> sk = scast<float>(smem + kOffSk<KF>), sq = scast<float>(smem + kOffSq<KF>);
  const sptr<float> sw = scast<float>(smem + kOffW<KF>);
  const sptr<std::int32_t> svis = scast<std::int32_t>(smem + kOffVis<KF>);
  const sptr<std::uint64_t> bars = scast<std::uint64_t>(smem + kOffBar<KF>);  // [0], [1] pages, [2] queries
  const unsigned tid = thread_idx().x, warp = tid / 32, lane = tid % 32;

  const std::int32_t b = ld(a.tiles + 3 * block_idx().x);
  const std::int32_t row0 = ld(a.tiles + 3 * block_idx().x + 1);
  const std::int32_t nrows = ld(a.tiles + 3 * block_idx().x + 2);
  const int groups = (nrows + G - 1) / G;
  // Positions are nondecreasing within a tile: the last row sees the most pages.
  const std::int32_t vis_max = visible_of<F>(ld(a.pos + row0 + nrows - 1));
  const std::int32_t pages = (vis_max + idx::kPageRows - 1) / idx::kPageRows;
  const std::int32_t p_begin = static_cast<std::int32_t>(block_idx().y) * a.pages_per_split;
  const std::int32_t p_end = p_begin + a.pages_per_split < pages ? p_begin + a.pages_per_split : pages;
  if (p_begin >= p_end) return false;  // the whole CTA: nothing of this split is visible

  const auto issue_page = [&](std::int32_t p, int buf) {
    const std::int32_t table_row = F == LogitsFault::kPageTableOffset ? 0 : b * a.max_pages;
    const std::int32_t phys = ld(a.page_table + table_row + p);
    mbar_arrive_expect_tx(bars + buf, kPage);
    bulk_copy_g2s(raw + buf * kPage, a.cache + static_cast<std::int64_t>(phys) * kPage, kPage, bars + buf);
  };

  // ---- 1. queries, head weights, visibility
  if (tid == 0) {
    for (int i = 0; i < 3; ++i) mbar_init(bars + i, 1);
    fence_mbarrier_init();
  }
  if (tid < static_cast<unsigned>(nrows)) st(svis + tid, visible_of<F>(ld(a.pos + row0 + tid)));
  sync_threads();
  if (tid == 0) {
    unsigned bytes = 0;
    for (int g = 0; g < groups; ++g) {
      const int rows_g = nrows - g * G < G ? nrows - g * G : G;
      bytes += static_cast<unsigned>(rows_g * H * idx::kQ4RowBytes);
    }
    mbar_arrive_expect_tx(bars + 2, bytes);
    for (int g = 0; g < groups; ++g) {
      const int rows_g = nrows - g * G < G ? nrows - g * G : G;
      bulk_copy_g2s(raw + g * kPage, a.q + static_cast<std::int64_t>(row0 + g * G) * H * idx::kQ4RowBytes,
                    static_cast<unsigned>(rows_g * H * idx::kQ4RowBytes), bars + 2);
    }
  }
  mbar_wait_parity(bars + 2, 0);
  {
    const int n = 32 * static_cast<int>(warp & 1u) + static_cast<int>(lane), c0 = static_cast<int>(warp >> 1);
    for (int g = 0; g < groups; ++g) {
      const sptr<unsigned char> op = sB + g * 8192;
      const bool valid = g * G + n / H < nrows;
      if (valid) {
        expand_q4_row<false>(scast<const std::uint32_t>(raw + g * kPage), n, c0, op, sq + g * idx::kBlocks * idx::kColumns, n);
      } else {  // padding columns: zero codes, zero scales, zero weights
        for (int c = c0; c < 8; c += 2) st(operand_chunk(op, n, c), u32x4{0, 0, 0, 0});
        if (c0 == 0)
          for (int kb = 0; kb < idx::kBlocks; ++kb) st(sq + g * idx::kBlocks * idx::kColumns + kb * idx::kColumns + n, 0.0f);
      }
      if (c0 == 1) {
        const int h = F == LogitsFault::kHeadWeightIndex ? (n % H + 1) % H : n % H;
        st(sw + g * idx::kColumns + n, valid ? ld(a.w + static_cast<std::int64_t>(row0 + g * G + n / H) * H + h) : 0.0f);
      }
    }
  }
  if (F != LogitsFault::kNoProxyFence) fence_proxy_async();
  sync_threads();

  // ---- 2. pages
  if (tid == 0) {
    issue_page(p_begin, 0);
    if (p_begin + 1 < p_end) issue_page(p_begin + 1, 1);
  }
  const int m0 = 16 * static_cast<int>(warp) + static_cast<int>(lane / 4), q = static_cast<int>(lane % 4);
  for (std::int32_t p = p_begin; p < p_end; ++p) {
    const int i = p - p_begin, buf = i & 1;
    if (F != LogitsFault::kNoPageWait) mbar_wait_parity(bars + buf, static_cast<unsigned>((i >> 1) & 1));
    {
      const int row = 32 * static_cast<int>(warp & 1u) + static_cast<int>(lane), c0 = static_cast<int>(warp >> 1);
      const sptr<const std::uint32_t> r = scast<const std::uint32_t>(raw + buf * kPage);
      if constexpr (KF == KeyFormat::kFp4) {
        const int srow = F == LogitsFault::kScaleRowMisread ? (row + 1) % idx::kPageRows : row;
        expand_q4_row<F == LogitsFault::kNibbleOrder>(r, row, c0, sA, sk, srow);
      } else {
        expand_fp8_row<F>(r, row, c0, sA, sk);
      }
    }
    if (F != LogitsFault::kNoProxyFence) fence_proxy_async();
    sync_threads();
    if (tid == 0 && p + 2 < p_end) issue_page(p + 2, buf);

    for (int g = 0; g < groups; ++g) {
      float acc[32];
      for (int e = 0; e < 32; ++e) acc[e] = 0.0f;
      for (int kb = 0; kb < idx::kBlocks; ++kb) {
        float d[32];
        for (int e = 0; e < 32; ++e) d[e] = 0.0f;
        wgmma_fence();
        wgmma_e4m3_ss<64>(d, make_smem_desc(sA + kb * 2048, 128, 256, Swizzle::kNone),
                          make_smem_desc(sB + g * 8192 + kb * 2048, 128, 256, Swizzle::kNone), false);
        wgmma_commit_group();
        wgmma_wait_group<0>();
        const sptr<float> sqk = sq + g * idx::kBlocks * idx::kColumns + kb * idx::kColumns;
        float k0 = 1.0f, k1 = 1.0f;  // FP4: the key rows' block scales (FP8: one scale, after the sum)
        if constexpr (KF == KeyFormat::kFp4) {
          k0 = ld(sk + kb * idx::kPageRows + m0);
          k1 = ld(sk + kb * idx::kPageRows + m0 + 8);
        }
        for (int c = 0; c < 8; ++c)
          for (int e = 0; e < 2; ++e) {
            const float sqn = ld(sqk + 8 * c + 2 * q + e);
            for (int half = 0; half < 2; ++half) {
              const int at = 4 * c + 2 * half + e;
              const float s = KF == KeyFormat::kFp4 ? idx::mul_rn(sqn, half == 0 ? k0 : k1) : sqn;
              acc[at] = idx::fma_rn(s, d[at], acc[at]);
            }
          }
      }
      // ---- epilogue: logits of the group's rows for keys 64p + m0 and 64p + m0 + 8
      for (int half = 0; half < 2; ++half) {
        const int m = m0 + 8 * half;
        const float kscale = KF == KeyFormat::kFp8 ? ld(sk + m) : 1.0f;
        float part[kSlots];
        for (int c = 0; c < 8; ++c)
          for (int e = 0; e < 2; ++e) {
            const int n = 8 * c + 2 * q + e;
            const float logit = KF == KeyFormat::kFp8 ? idx::mul_rn(acc[4 * c + 2 * half + e], kscale)
                                                      : acc[4 * c + 2 * half + e];
            const bool relu = F != LogitsFault::kReluMissing && F != LogitsFault::kReluAfterHeadSum;
            const float term = idx::mul_rn(ld(sw + g * idx::kColumns + n), relu ? idx::max_f(logit, 0.0f) : logit);
            const int slot = c / kPer;
            const bool first = e == 0 && c % kPer == 0;
            part[slot] = first ? term : idx::add_rn(part[slot], term);
          }
        for (int slot = 0; slot < kSlots; ++slot) {
          float v = part[slot];
          v = idx::add_rn(v, shfl_xor(kFullMask, v, 1));
          if (H >= 8) v = idx::add_rn(v, shfl_xor(kFullMask, v, 2));
          if (F == LogitsFault::kReluAfterHeadSum) v = idx::max_f(v, 0.0f);
          const int token = H == 4 ? 2 * slot + q / 2 : slot;
          // one lane per (row, key): H = 4 lanes q, q^1 share a token (q & 1 picks the key);
          // H >= 8 all four hold the sum (q & 1 picks the key, q >> 1 the slot's parity)
          const bool owner = (q & 1) == half && (H == 4 || (slot & 1) == (q >> 1));
          const int t = g * G + token;
          const std::int64_t j = static_cast<std::int64_t>(p) * idx::kPageRows + m;
          if (owner && t < nrows && j < ld(svis + t)) sink.store(t, j, v);
        }
      }
    }
    sink.page_done(p, p + 1 == p_end);
    sync_threads();  // A and sk are free for the next page
  }
  return true;
}

// The materialised logits: one fp32 store per (row, visible entry).
struct GlobalLogits {
  gptr<float> logits;
  std::int64_t stride;
  std::int32_t row0;
  V4REF_SIMT_DEVICE void store(int t, std::int64_t j, float v) {
    st(logits + static_cast<std::int64_t>(row0 + t) * stride + j, v);
  }
  V4REF_SIMT_DEVICE void page_done(std::int32_t, bool) {}
};

template <KeyFormat KF, int H, LogitsFault F = LogitsFault::kNone>
V4REF_SIMT_KERNEL(kThreads) index_logits_kernel(const LogitsArgs a) {
  GlobalLogits sink{a.logits, a.stride, ld(a.tiles + 3 * block_idx().x + 1)};
  logits_tile<KF, H, F>(a, sink);
}

// ------------------------------------------------------------------ the fused decode path
//
// Stage 1 (index_topk_partial_kernel): the logits pipeline above, but a page's scores go to a
// running selection in shared memory instead of global memory. Per tile row (at most 2: the
// next_n rows of one request) the selection is an array of S = pow2(K + P) 64-bit composites
// c = key(score) << 32 | (2^32 − 1 − j) (key: the order-preserving bits of topk_kernels, −0 on
// +0; NaN has none and is never a candidate), all distinct, so "the K largest composites" is the
// rule of verification.md §9 (higher score, then lower index). Slots [0, K) hold the selection,
// [K, K + P) the pending candidates: a score enters pending (shared atomic slot) when its
// composite beats θ, the K-th selected one (0 while fewer than K are selected). After a page
// that leaves fewer than 64 free pending slots, and after the last page, the whole array is
// bitonic-sorted in descending order (empty slots are 0, below every composite) and θ updated.
// The split's selection goes to `part` [rows][splits][K] (0-padded) and its count to `part_n`.
// Stage 2 (index_topk_merge_kernel): one CTA per row sorts the splits' partial selections,
// keeps the K largest and writes their entry indices in ascending order, −1 padding.

struct TopkArgs {
  std::int32_t k;                    // K_I: a power of two in [8, 1024]
  std::int32_t splits;               // grid.y of stage 1
  gptr<std::uint64_t> part;          // [R, splits, K]
  gptr<std::int32_t> part_n;         // [R, splits]
  gptr<std::int32_t> out;            // [R, K]
};

V4REF_SIMT_HD std::uint32_t pending_capacity(std::int32_t k) { return k < 64 ? 64u : static_cast<std::uint32_t>(k); }
V4REF_SIMT_HD std::uint32_t pow2_at_least(std::uint32_t n) {
  std::uint32_t p = 1;
  while (p < n) p <<= 1;
  return p;
}
V4REF_SIMT_HD std::uint32_t selection_slots(std::int32_t k) {
  return pow2_at_least(static_cast<std::uint32_t>(k) + pending_capacity(k));
}
template <KeyFormat KF>
V4REF_SIMT_HD unsigned partial_sel_offset() {
  return (indexer_smem_bytes<KF> + 15u) & ~15u;
}
// Shared bytes of stage 1: the logits pipeline, 2 rows of selection slots, counters.
template <KeyFormat KF>
V4REF_SIMT_HD unsigned partial_smem_bytes(std::int32_t k) {
  return partial_sel_offset<KF>() + 2u * selection_slots(k) * 8u + 32u;
}
V4REF_SIMT_HD unsigned merge_smem_bytes(std::int32_t k, std::int32_t splits) {
  return pow2_at_least(static_cast<std::uint32_t>(k) * static_cast<std::uint32_t>(splits)) * 8u +
         pow2_at_least(static_cast<std::uint32_t>(k)) * 4u;
}

// Order-preserving bits of a score; false for NaN (topk_kernels::score_key's rule).
V4REF_SIMT_HD bool order_key(float x, std::uint32_t* key) {
  std::uint32_t u;
#if defined(__CUDA_ARCH__)
  u = __float_as_uint(x);
#else
  std::memcpy(&u, &x, 4);
#endif
  if ((u & 0x7fffffffu) > 0x7f800000u) return false;
  if (u == 0x80000000u) u = 0;
  *key = (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
  return true;
}

// Bitonic sort of v[0, n) (n a power of two) by the whole CTA; descending when `desc`.
template <class T>
V4REF_SIMT_DEVICE void bitonic_sort(sptr<T> v, std::uint32_t n, bool desc) {
  const unsigned tid = thread_idx().x;
  for (std::uint32_t size = 2; size <= n; size <<= 1)
    for (std::uint32_t stride = size >> 1; stride > 0; stride >>= 1) {
      for (std::uint32_t t = tid; t < n / 2; t += kThreads) {
        const std::uint32_t i = 2 * t - (t & (stride - 1));  // bit `stride` of i is clear
        const std::uint32_t j = i + stride;
        const bool up = ((i & size) == 0) == desc;           // this run's direction
        const T x = ld(v + i), y = ld(v + j);
        if (up ? x < y : x > y) {
          st(v + i, y);
          st(v + j, x);
        }
      }
      sync_threads();
    }
}

template <LogitsFault F>
struct SharedSelection {
  sptr<std::uint64_t> slots;  // [2][S]
  sptr<std::uint32_t> ctr;    // [2] selected, [2] pending, [2][2] θ (as two words)
  std::uint32_t k, cap, S;
  int rows;                   // tile rows (1 or 2)
  V4REF_SIMT_DEVICE void store(int t, std::int64_t j, float v) {
    std::uint32_t key;
    if (!order_key(v, &key)) return;
    const std::uint64_t c = (static_cast<std::uint64_t>(key) << 32) | (0xFFFFFFFFu - static_cast<std::uint32_t>(j));
    const std::uint64_t theta = (static_cast<std::uint64_t>(ld(ctr + 4 + 2 * t)) << 32) | ld(ctr + 5 + 2 * t);
    if (c <= theta) return;
    const std::uint32_t at = atomic_add(ctr + 2 + t, 1u);
    if (at < cap) st(slots + t * S + k + at, c);  // a merge is due before the capacity is reached
  }
  // Sorts row t's slots when `force` or fewer than 64 pending slots are left. Every thread.
  V4REF_SIMT_DEVICE void maybe_merge(int t, bool force) {
    const unsigned tid = thread_idx().x;
    const std::uint32_t n_sel = ld(ctr + t), n_pend_raw = ld(ctr + 2 + t);
    const std::uint32_t n_pend = n_pend_raw < cap ? n_pend_raw : cap;
    if (!force && (n_pend + 64 <= cap || F == LogitsFault::kSelectionOverflow)) return;
    const sptr<std::uint64_t> v = slots + t * S;
    for (std::uint32_t i = tid; i < S; i += kThreads)
      if ((i >= n_sel && i < k) || i >= k + n_pend) st(v + i, std::uint64_t{0});
    sync_threads();
    bitonic_sort(v, S, true);
    if (tid == 0) {
      const std::uint32_t n = n_sel + n_pend < k ? n_sel + n_pend : k;
      st(ctr + t, n);
      st(ctr + 2 + t, 0u);
      const std::uint64_t theta = n == k ? ld(v + (k - 1)) : 0;
      st(ctr + 4 + 2 * t, static_cast<std::uint32_t>(theta >> 32));
      st(ctr + 5 + 2 * t, static_cast<std::uint32_t>(theta));
    }
    sync_threads();
  }
  V4REF_SIMT_DEVICE void page_done(std::int32_t, bool last) {
    sync_threads();  // the page's candidates are in
    for (int t = 0; t < rows; ++t) maybe_merge(t, last);
  }
};

template <KeyFormat KF, int H, LogitsFault F = LogitsFault::kNone>
V4REF_SIMT_KERNEL(kThreads) index_topk_partial_kernel(const LogitsArgs a, const TopkArgs tk) {
  const sptr<unsigned char> smem = dynamic_smem<unsigned char>();
  const std::uint32_t S = selection_slots(tk.k);
  SharedSelection<F> sel{scast<std::uint64_t>(smem + partial_sel_offset<KF>()),
                         scast<std::uint32_t>(smem + partial_sel_offset<KF>() + 2 * S * 8),
                         static_cast<std::uint32_t>(tk.k), pending_capacity(tk.k), S,
                         ld(a.tiles + 3 * block_idx().x + 2)};
  const unsigned tid = thread_idx().x;
  if (tid < 8) st(sel.ctr + tid, 0u);
  sync_threads();
  logits_tile<KF, H, F>(a, sel);
  // The split's selection of each of its rows (an empty one when it saw no page).
  const std::int32_t row0 = ld(a.tiles + 3 * block_idx().x + 1);
  const std::int32_t nrows = ld(a.tiles + 3 * block_idx().x + 2);
  for (int t = 0; t < nrows; ++t) {
    const std::int64_t r = row0 + t;
    const std::uint32_t n = ld(sel.ctr + t);
    const std::int64_t base = (r * tk.splits + block_idx().y) * tk.k;
    for (std::int32_t i = static_cast<std::int32_t>(tid); i < tk.k; i += kThreads)
      st(tk.part + base + i, static_cast<std::uint32_t>(i) < n ? ld(sel.slots + t * S + i) : std::uint64_t{0});
    if (tid == 0) st(tk.part_n + r * tk.splits + block_idx().y, static_cast<std::int32_t>(n));
  }
}

V4REF_SIMT_KERNEL(kThreads) index_topk_merge_kernel(const TopkArgs tk) {
  const std::int64_t r = block_idx().x;
  const unsigned tid = thread_idx().x;
  const std::uint32_t M = pow2_at_least(static_cast<std::uint32_t>(tk.k) * static_cast<std::uint32_t>(tk.splits));
  const std::uint32_t K2 = pow2_at_least(static_cast<std::uint32_t>(tk.k));
  const sptr<std::uint64_t> v = dynamic_smem<std::uint64_t>();
  const sptr<std::uint32_t> ix = scast<std::uint32_t>(v + M);
  const std::int64_t base = r * tk.splits * tk.k;
  for (std::uint32_t i = tid; i < M; i += kThreads)
    st(v + i, i < static_cast<std::uint32_t>(tk.k * tk.splits) ? ld(tk.part + base + i) : std::uint64_t{0});
  std::int32_t total = 0;
  for (std::int32_t s = 0; s < tk.splits; ++s) total += ld(tk.part_n + r * tk.splits + s);
  sync_threads();
  bitonic_sort(v, M, true);
  const std::uint32_t n = static_cast<std::uint32_t>(total < tk.k ? total : tk.k);
  for (std::uint32_t i = tid; i < K2; i += kThreads)
    st(ix + i, i < n ? 0xFFFFFFFFu - static_cast<std::uint32_t>(ld(v + i)) : 0xFFFFFFFFu);
  sync_threads();
  bitonic_sort(ix, K2, false);
  for (std::int32_t i = static_cast<std::int32_t>(tid); i < tk.k; i += kThreads)
    st(tk.out + r * tk.k + i, static_cast<std::uint32_t>(i) < n ? static_cast<std::int32_t>(ld(ix + i)) : -1);
}

}  // namespace v4ref::cuda::indexer_kernels
