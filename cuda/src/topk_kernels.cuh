// The indexer's top-k selection in the SIMT dialect (simt.hpp): compiled by nvcc in
// topk_fp32_sm90.cu and by the host compiler in cuda/simt/topk_simt.cpp (docs/simt.md; the rule
// is verification.md §9 and ref::select_topk: the min(k, #non-NaN visible) largest scores, on
// equal scores the lower index, NaN never, −0 = +0, ±∞ ordinary; the result is a set).
//
// One block per row. Scores become order-preserving 32-bit keys (−0 folded onto +0). Four
// MSB-first radix passes of 8 bits over the visible prefix find the key T of the take-th largest
// score and how many entries equal to T are still needed; then one pass in index order, a tile of
// blockDim entries at a time, writes every entry above T and the first `need` entries equal to T
// (a block prefix sum per tile: the output is in ascending index order), and −1 pads the row to k.
//
// Dynamic shared memory: the 256-bin histogram, warp totals for the scans, and the row's state
// (topk_smem_bytes).
//
// Fault injection (tests/simt/topk_simt_test.cpp): the template parameter F selects one defect.
#pragma once

#include <cstdint>
#include <cstring>

#include "v4ref/cuda/simt/simt.hpp"

namespace v4ref::cuda::topk_kernels {

using namespace v4ref::cuda::simt;  // NOLINT: the dialect is the kernels' vocabulary

constexpr int kThreads = 256;
constexpr int kBins = 256;
constexpr int kWarps = kThreads / 32;

enum class TopkFault : int {
  kNone = 0,
  kTiesHighestIndex,     // among equal scores the higher indices are taken
  kVisibleOffByOne,      // one entry past the visible prefix is a candidate
  kNanSelected,          // NaN scores are candidates (they map above +inf)
  kSignedZeroApart,      // −0 is not folded onto +0
  kHistogramNoBarrier,   // the histogram is cleared without a barrier before the next pass
  kTileBoundaryLost,     // the last entry of every tile but the last is skipped
};

// Shared layout (32-bit words): hist [256] | warp sums [2][8] | state [4]
constexpr std::size_t kSmemWords = kBins + 2 * kWarps + 4;
constexpr std::size_t topk_smem_bytes = kSmemWords * 4;

struct TopkArgs {
  std::int64_t rows, stride;          // scores [rows, stride] fp32
  gptr<const float> scores;
  gptr<const std::int64_t> visible;   // [rows]: the visible prefix of each row (<= stride)
  std::int64_t k;
  gptr<std::int32_t> out;             // [rows, k]: selected indices ascending, −1 padding
};

// The order-preserving key of a score; NaN has no key (returns false).
template <TopkFault F>
V4REF_SIMT_HD bool score_key(float x, std::uint32_t* key) {
#if defined(__CUDA_ARCH__)
  std::uint32_t u = __float_as_uint(x);
#else
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
#endif
  if ((u & 0x7fffffffu) > 0x7f800000u && F != TopkFault::kNanSelected) return false;  // NaN
  if (u == 0x80000000u && F != TopkFault::kSignedZeroApart) u = 0;                      // −0 → +0
  *key = (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
  return true;
}

// Inclusive prefix sum of v over the block (every thread calls it); returns the prefix and sets
// *total to the block's sum. `sums` is [kWarps] of shared memory; two barriers.
V4REF_SIMT_DEVICE unsigned block_scan(unsigned v, sptr<unsigned> sums, unsigned* total) {
  const unsigned lane = thread_idx().x & 31u, warp = thread_idx().x >> 5;
  for (unsigned o = 1; o < 32; o <<= 1) {
    const unsigned n = shfl_up(kFullMask, v, o);
    if (lane >= o) v += n;
  }
  if (lane == 31) st(sums + warp, v);
  sync_threads();
  unsigned before = 0, all = 0;
  for (unsigned w = 0; w < static_cast<unsigned>(kWarps); ++w) {
    const unsigned s = ld(sums + w);
    if (w < warp) before += s;
    all += s;
  }
  sync_threads();  // the sums are rewritten by the next scan
  *total = all;
  return before + v;
}

template <TopkFault F = TopkFault::kNone>
V4REF_SIMT_KERNEL(kThreads) topk_kernel(const TopkArgs a) {
  const sptr<unsigned> hist = dynamic_smem<unsigned>();
  const sptr<unsigned> sums = hist + kBins;           // two scans' warp sums
  const sptr<unsigned> state = sums + 2 * kWarps;     // prefix, remaining, threshold found
  const std::int64_t row = block_idx().x;
  const unsigned tid = thread_idx().x;
  const gptr<const float> s = a.scores + row * a.stride;
  const gptr<std::int32_t> out = a.out + row * a.k;
  std::int64_t n = ld(a.visible + row);
  if (F == TopkFault::kVisibleOffByOne && n < a.stride) ++n;
  // ---- candidates: the non-NaN visible entries
  unsigned mine = 0;
  for (std::int64_t j = tid; j < n; j += kThreads) {
    std::uint32_t key;
    mine += score_key<F>(ldg(s + j), &key) ? 1u : 0u;
  }
  unsigned valid = 0;
  block_scan(mine, sums, &valid);
  const std::int64_t take = a.k < static_cast<std::int64_t>(valid) ? a.k : valid;
  // ---- radix select: the key T of the take-th largest, and how many entries equal to T to take
  std::uint32_t prefix = 0, prefix_mask = 0;
  unsigned remaining = static_cast<unsigned>(take);
  for (int shift = 24; shift >= 0 && take > 0; shift -= 8) {
    for (int b = static_cast<int>(tid); b < kBins; b += kThreads) st(hist + b, 0u);
    if (F != TopkFault::kHistogramNoBarrier) sync_threads();
    for (std::int64_t j = tid; j < n; j += kThreads) {
      std::uint32_t key;
      if (score_key<F>(ldg(s + j), &key) && (key & prefix_mask) == prefix)
        atomic_add(hist + ((key >> shift) & 0xffu), 1u);
    }
    sync_threads();
    if (tid == 0) {  // the bin, from the top, where the count reaches `remaining`
      unsigned above = 0;
      int bin = kBins - 1;
      for (; bin > 0; --bin) {
        const unsigned c = ld(hist + bin);
        if (above + c >= remaining) break;
        above += c;
      }
      st(state, prefix | (static_cast<std::uint32_t>(bin) << shift));
      st(state + 1, remaining - above);
    }
    sync_threads();
    prefix = ld(state);
    remaining = ld(state + 1);
    prefix_mask |= 0xffu << shift;
    sync_threads();  // state and hist are rewritten by the next pass
  }
  // ---- selection in index order: every key above T, the first `remaining` keys equal to T
  const std::uint32_t threshold = prefix;
  unsigned written = 0, ties_taken = 0;
  const std::int64_t tiles = (n + kThreads - 1) / kThreads;
  for (std::int64_t t = 0; t < tiles && take > 0; ++t) {
    // Ties in descending index order when the fault asks for it: walk the tiles backwards.
    const std::int64_t tile = F == TopkFault::kTiesHighestIndex ? tiles - 1 - t : t;
    const std::int64_t j = tile * kThreads + tid;
    bool above = false, tie = false;
    const bool lost = F == TopkFault::kTileBoundaryLost && tid == kThreads - 1 && tile + 1 < tiles;
    std::uint32_t key = 0;
    if (j < n && !lost && score_key<F>(ldg(s + j), &key)) {
      above = key > threshold;
      tie = key == threshold;
    }
    unsigned n_ties = 0, n_above = 0;
    const unsigned tie_rank = block_scan(tie ? 1u : 0u, sums, &n_ties) - (tie ? 1u : 0u);
    const bool take_tie = tie && ties_taken + tie_rank < remaining;
    const unsigned pick = (above || take_tie) ? 1u : 0u;
    const unsigned pos = block_scan(pick, sums + kWarps, &n_above) - pick;
    if (pick != 0) st(out + written + pos, static_cast<std::int32_t>(j));
    written += n_above;
    ties_taken = ties_taken + n_ties < remaining ? ties_taken + n_ties : remaining;
  }
  for (std::int64_t i = static_cast<std::int64_t>(written) + tid; i < a.k; i += kThreads)
    st(out + i, std::int32_t{-1});
}

}  // namespace v4ref::cuda::topk_kernels
