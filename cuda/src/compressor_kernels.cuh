// The compressor kernels in the SIMT dialect (simt.hpp): compiled by nvcc in
// compressor_fp8_sm90.cu and by the host compiler in cuda/simt/compressor_simt.cpp, where the
// SIMT executor runs this same source (docs/cuda-mhc-compressor.md §4, docs/simt.md; per-thread
// math compressor_tile.hpp).
//
// Per-channel softmax pooling, RMSNorm, RoPE, then the main compressor's Q8 cache row or the
// indexer compressor's Hadamard and Q4 cache row, for prefill and the §11.2 decode state machine.
// One cluster of Q = w/128 CTAs per entry (prefill) or per sequence (decode); CTA `rank` owns
// channels [128·rank, 128·rank + 128), 4 warps split the slots, lane l owns 4 channels (16-byte
// loads of a, g, ape). Pass 1 forms the logits (prefill: fp32(g + ape); decode: the state's) into
// shared memory and the per-channel max; pass 2 accumulates Σe and Σe·a per warp in slot order;
// warp 0 combines the warps in order, rounds the pooled vector to bf16, forms its square sum
// (4-term fma chain, xor butterfly) and the CTAs exchange those through distributed shared memory
// (each CTA publishes its sum in its own shared memory, cluster barrier, every CTA reads all Q in
// rank order, cluster barrier before exit). Then RMSNorm and RoPE (last CTA, lanes 16..31) and
// the kind's tail in warp 0:
//   main     Q8 (16 lanes per 64-channel block: shuffle max, e4m3 codes as one 4-byte store per
//            lane), the rope part as 8-byte stores;
//   indexer  (Q = 1) Hadamard: stages h = 1, 2 in each lane, h = 4..64 by xor shuffles over
//            lane offsets 1..16, one fp32 product by fp32(128^-1/2), bf16; Q4 over 8-lane blocks
//            (xor max 4, 2, 1); the 64 code bytes as 4-byte stores by the even lanes (their own
//            2 bytes and their odd partner's), the 4 scale bytes as one 4-byte store by lane 0.
// Decode: the step stores its token's row into the state first; only sequences whose block
// completes pool (the whole cluster takes the same branch), then CSA copies rows 4–7 to 0–3.
//
// Dynamic shared memory of a CTA (floats): logits [slots][128] | part_max, part_den, part_num
// [4][128] each | ssbox [8] (smem_floats()).
//
// Fault injection (tests/simt/compressor_simt_test.cpp): the template parameter F selects one
// control-flow defect; the device build instantiates kNone only.
#pragma once

#include <cstdint>

#include "v4ref/cuda/compressor_tile.hpp"
#include "v4ref/cuda/simt/simt.hpp"

namespace v4ref::cuda::compressor_kernels {

using namespace v4ref::cuda::simt;  // NOLINT: the dialect is the kernels' vocabulary
using cmp::CompressorFault;
using cmp::Dims;

V4REF_SIMT_HD int smem_floats(const Dims& dm) {
  return dm.slots() * cmp::kCtaChannels + 3 * cmp::kWarps * cmp::kCtaChannels +
         cmp::kMaxClusterCtas;
}

struct SmemLayout {
  int logits = 0, part_max = 0, part_den = 0, part_num = 0, ssbox = 0;
  V4REF_SIMT_HD explicit SmemLayout(const Dims& dm) {
    logits = 0;
    part_max = dm.slots() * cmp::kCtaChannels;
    part_den = part_max + cmp::kWarps * cmp::kCtaChannels;
    part_num = part_den + cmp::kWarps * cmp::kCtaChannels;
    ssbox = part_num + cmp::kWarps * cmp::kCtaChannels;
  }
};

// Where the slots of one entry come from. Prefill: token rows of a and g, logit = g + ape[row mod
// m]; decode: the sequence's state rows, logit = score (ape null).
struct Slots {
  gptr<const float> a;
  gptr<const float> g;    // gate (prefill) or score (decode)
  gptr<const float> ape;  // null: g already holds the logits
  std::int64_t stride = 0;  // floats per row (c·w)
  bool prefill = false;
  std::int64_t entry = 0;  // j
};

V4REF_SIMT_DEVICE std::int64_t slot_row(const Dims& dm, const Slots& src, int s) {
  return src.prefill ? cmp::prefill_row(dm, src.entry, s) : static_cast<std::int64_t>(s);
}

// Slot loads: the read-only path for prefill inputs; L2-coherent loads for the decode state,
// which this kernel itself has just written.
V4REF_SIMT_DEVICE f32x4 load_slot4(const Slots& src, gptr<const float> p) {
  return src.prefill ? ldg(gcast<const f32x4>(p)) : ldcg(gcast<const f32x4>(p));
}

struct EntryOut {
  gptr<std::uint8_t> row;             // the cache row
  gptr<std::uint16_t> dbg_pooled;     // [w] or null
  gptr<std::uint16_t> dbg_normed;     // [w] or null
  gptr<std::uint16_t> dbg_roped;      // [w] or null (indexer)
  gptr<std::uint16_t> dbg_hadamard;   // [w] or null (indexer)
  gptr<const float> cos;              // [32] of this entry
  gptr<const float> sin;
};

// Four bf16 values of one lane as one 8-byte word (channel order).
V4REF_SIMT_DEVICE std::uint64_t pack4_bf16(const std::uint16_t y[4]) {
  return static_cast<std::uint64_t>(y[0]) | (static_cast<std::uint64_t>(y[1]) << 16) |
         (static_cast<std::uint64_t>(y[2]) << 32) | (static_cast<std::uint64_t>(y[3]) << 48);
}
V4REF_SIMT_DEVICE void store_bf16x4(gptr<std::uint16_t> p, const std::uint16_t y[4]) {
  st(gcast<std::uint64_t>(p), pack4_bf16(y));
}

// Main tail (warp 0 of CTA `rank`): the rope part (bf16) and Q8 of the nope dims into the row.
// y: this lane's 4 channels from `ch`, normed (nope) or roped (rope).
template <CompressorFault F>
V4REF_SIMT_DEVICE void main_tail(const Dims& dm, const std::uint16_t y[4], const EntryOut& out,
                                 int rank, int lane, int ch) {
  const bool rope = ch >= dm.nope();
  if (rope) store_bf16x4(gcast<std::uint16_t>(out.row + dm.rope_offset() + 2 * (ch - dm.nope())), y);
  float amax = 0.0f;
  for (int q = 0; q < 4; ++q) amax = cmp::max_f(amax, fabsf(cmp::bf16_value(y[q])));
  // 16 lanes per 64-channel block: xor 8, 4, 2, 1 (xor 16 would mix two blocks)
  const int first = F == CompressorFault::kQ8ShuffleCrossesBlocks ? 16 : 8;
  for (int o = first; o > 0; o /= 2) amax = cmp::max_f(amax, shfl_xor(kFullMask, amax, o));
  if (!rope) {
    const int k = cmp::q8_scale_exponent(amax);
    unsigned codes = 0;
    for (int q = 0; q < 4; ++q)
      codes |= static_cast<unsigned>(cmp::q8_code(cmp::bf16_value(y[q]), k)) << (8 * q);
    st(gcast<unsigned>(out.row + ch), codes);
    if (ch % cmp::kQ8Block == 0)
      st(out.row + dm.scale_offset() + ch / cmp::kQ8Block, static_cast<std::uint8_t>(k + 127));
  }
  const int pad_end = F == CompressorFault::kRowPaddingPastEnd ? dm.row_bytes() + 8 : dm.row_bytes();
  if (rank == dm.ctas() - 1 && lane == 0)
    for (int b = dm.scale_offset() + dm.scales(); b < pad_end; ++b)
      st(out.row + b, std::uint8_t{0});
}

// Indexer tail (warp 0, the only CTA): Had of the roped entry, bf16, Q4 into the 68-byte row.
// y: this lane's channels 4·lane .. 4·lane + 3 after RoPE.
template <CompressorFault F>
V4REF_SIMT_DEVICE void indexer_tail(const std::uint16_t y[4], const EntryOut& out, int lane) {
  const int ch = lane * cmp::kLaneChannels;
  if (out.dbg_roped) store_bf16x4(out.dbg_roped + ch, y);
  float v[4];
  for (int q = 0; q < 4; ++q) v[q] = cmp::bf16_value(y[q]);
  cmp::hadamard_in_lane(v);           // h = 1, 2
  for (int o = 1; o < 32; o <<= 1) {  // h = 4·o: the partner is lane ^ o, same q
    const bool upper = (lane & o) != 0;
    const unsigned mask = F == CompressorFault::kHadamardHalfMask ? 0x0000ffffu : kFullMask;
    for (int q = 0; q < 4; ++q)
      v[q] = cmp::hadamard_butterfly(v[q], shfl_xor(mask, v[q], o), upper);
  }
  std::uint16_t h[4];
  for (int q = 0; q < 4; ++q) h[q] = cmp::hadamard_bf16(v[q]);
  if (out.dbg_hadamard) store_bf16x4(out.dbg_hadamard + ch, h);
  float amax = 0.0f;  // block of 32 channels = lanes 8b .. 8b + 7
  for (int q = 0; q < 4; ++q) amax = cmp::max_f(amax, fabsf(cmp::bf16_value(h[q])));
  for (int o = 4; o > 0; o /= 2) amax = cmp::max_f(amax, shfl_xor(kFullMask, amax, o));
  const int k = cmp::q4_scale_exponent(amax);
  std::uint8_t c[4];
  for (int q = 0; q < 4; ++q) c[q] = cmp::q4_code(cmp::bf16_value(h[q]), k);
  const unsigned bits = cmp::q4_lane_bits(c);  // row bytes 2·lane, 2·lane + 1
  const unsigned odd = shfl_xor(kFullMask, bits, 1);
  if ((lane & 1) == 0) st(gcast<unsigned>(out.row + 2 * lane), bits | (odd << 16));
  unsigned scales = 0;  // byte b = k of block b + 127 (lane 8b holds it)
  for (int b = 0; b < cmp::kIndexerWidth / cmp::kQ4Block; ++b)
    scales |= static_cast<unsigned>(shfl(kFullMask, k, 8 * b) + 127) << (8 * b);
  if (lane == 0) st(gcast<unsigned>(out.row + cmp::kIndexerWidth / 2), scales);
}

// The pooling, norm, rope and the kind's tail of one entry by one CTA of its cluster (all threads
// call it).
template <cmp::Kind K, CompressorFault F>
V4REF_SIMT_DEVICE void entry_pipeline(const Dims& dm, const Slots& src, gptr<const float> norm_w,
                                      float eps, const EntryOut& out, int rank) {
  const sptr<float> smem = dynamic_smem<float>();
  const SmemLayout L(dm);
  const sptr<float> logits = smem + L.logits, part_max = smem + L.part_max,
                    part_den = smem + L.part_den, part_num = smem + L.part_num,
                    ssbox = smem + L.ssbox;
  const int warp = static_cast<int>(thread_idx().x) >> 5, lane = static_cast<int>(thread_idx().x) & 31;
  const int spw = dm.slots_per_warp(), Q = dm.ctas();
  const int ch = rank * cmp::kCtaChannels + lane * cmp::kLaneChannels;  // entry channel of q = 0
  const int lc = lane * cmp::kLaneChannels;                             // local channel
  const float ninf = -__builtin_huge_valf();
  constexpr int C = cmp::kCtaChannels;
  // ---- pass 1: logits into shared memory, max per channel
  float mx[4] = {ninf, ninf, ninf, ninf};
  for (int s = warp * spw; s < (warp + 1) * spw; ++s) {
    const std::int64_t r = slot_row(dm, src, s);
    float l[4] = {ninf, ninf, ninf, ninf};
    if (r >= 0) {
      const int col = dm.channel(s, ch);
      const f32x4 g4 = load_slot4(src, src.g + r * src.stride + col);
      l[0] = g4.x;
      l[1] = g4.y;
      l[2] = g4.z;
      l[3] = g4.w;
      if (src.ape) {
        const f32x4 e4 = ldg(gcast<const f32x4>(src.ape + (r % dm.ratio) * src.stride + col));
        l[0] = cmp::slot_logit(g4.x, e4.x);
        l[1] = cmp::slot_logit(g4.y, e4.y);
        l[2] = cmp::slot_logit(g4.z, e4.z);
        l[3] = cmp::slot_logit(g4.w, e4.w);
      }
    }
    st(scast<f32x4>(logits + s * C) + lane, make_f32x4(l[0], l[1], l[2], l[3]));
    for (int q = 0; q < 4; ++q) mx[q] = cmp::max_f(mx[q], l[q]);
  }
  for (int q = 0; q < 4; ++q) st(part_max + warp * C + lc + q, mx[q]);
  if (F != CompressorFault::kNoBarrierAfterMax) sync_threads();
  float m4[4];
  for (int q = 0; q < 4; ++q)
    m4[q] = cmp::max_f(cmp::max_f(ld(part_max + lc + q), ld(part_max + C + lc + q)),
                       cmp::max_f(ld(part_max + 2 * C + lc + q), ld(part_max + 3 * C + lc + q)));
  // ---- pass 2: Σe and Σe·a per warp in slot order
  float den[4] = {0, 0, 0, 0}, num[4] = {0, 0, 0, 0};
  for (int s = warp * spw; s < (warp + 1) * spw; ++s) {
    const std::int64_t r = slot_row(dm, src, s);
    float a[4] = {0, 0, 0, 0};
    if (r >= 0) {
      const f32x4 a4 = load_slot4(src, src.a + r * src.stride + dm.channel(s, ch));
      a[0] = a4.x;
      a[1] = a4.y;
      a[2] = a4.z;
      a[3] = a4.w;
    }
    const f32x4 l4 = ld(scast<const f32x4>(logits + s * C) + lane);
    const float l[4] = {l4.x, l4.y, l4.z, l4.w};
    for (int q = 0; q < 4; ++q) cmp::pool_accumulate(l[q], m4[q], a[q], den[q], num[q]);
  }
  for (int q = 0; q < 4; ++q) {
    st(part_den + warp * C + lc + q, den[q]);
    st(part_num + warp * C + lc + q, num[q]);
  }
  sync_threads();
  // ---- warp 0: combine, bf16, square sum
  std::uint16_t p[4] = {0, 0, 0, 0};
  if (warp == 0) {
    float ss = 0.0f;
    for (int q = 0; q < 4; ++q) {
      float d = ld(part_den + lc + q), n = ld(part_num + lc + q);
      for (int w = 1; w < cmp::kWarps; ++w) {
        d = cmp::add_rn(d, ld(part_den + w * C + lc + q));
        n = cmp::add_rn(n, ld(part_num + w * C + lc + q));
      }
      p[q] = cmp::pooled_bf16(n, d);
      const float pv = cmp::bf16_value(p[q]);
      ss = cmp::fma_rn(pv, pv, ss);
    }
    for (int o = 16; o > 0; o /= 2) ss = cmp::add_rn(ss, shfl_xor(kFullMask, ss, o));
    if (lane == 0) st(ssbox + rank, ss);
  }
  // ---- the Q CTA sums, rank order (every CTA reads every CTA's box)
  if (Q > 1)
    cluster_sync();
  else
    sync_threads();
  if (warp == 0) {
    const auto box_of = [&](int r) {
      const unsigned owner = F == CompressorFault::kSsboxOwnRank ? static_cast<unsigned>(rank)
                                                                 : static_cast<unsigned>(r);
      return map_shared_rank(ssbox + r, owner);
    };
    // Rank 0's box through DSMEM (reading the local ssbox[0] first, as the kernel once did, read
    // a shared word that only rank 0 writes: an uninitialised read the SIMT executor reported).
    float total = Q > 1 ? ld(box_of(0)) : ld(ssbox);
    for (int r = 1; r < Q; ++r) total = cmp::add_rn(total, ld(box_of(r)));
    const float rho = cmp::inv_rms(total, dm.width, eps);
    std::uint16_t y[4];
    for (int q = 0; q < 4; ++q) y[q] = cmp::norm_bf16(cmp::bf16_value(p[q]), rho, ld(norm_w + ch + q));
    if (out.dbg_pooled) store_bf16x4(out.dbg_pooled + ch, p);
    if (out.dbg_normed) store_bf16x4(out.dbg_normed + ch, y);
    if (ch >= dm.nope()) {  // the last 64 channels: two pairs per lane
      const int jp = (ch - dm.nope()) / 2;
      cmp::rope_pair(cmp::bf16_value(y[0]), cmp::bf16_value(y[1]), ld(out.cos + jp),
                     ld(out.sin + jp), y[0], y[1]);
      cmp::rope_pair(cmp::bf16_value(y[2]), cmp::bf16_value(y[3]), ld(out.cos + jp + 1),
                     ld(out.sin + jp + 1), y[2], y[3]);
    }
    if constexpr (K == cmp::Kind::kIndexer)
      indexer_tail<F>(y, out, lane);
    else
      main_tail<F>(dm, y, out, rank, lane, ch);
  }
  // no CTA leaves while another may still read its box
  if (Q > 1 && F != CompressorFault::kNoExitClusterBarrier) cluster_sync();
}

// Debug outputs of entry (or sequence) e, [w] bf16 each; null stays null.
struct DebugPtrs {
  gptr<std::uint16_t> pooled, normed, roped, hadamard;
  V4REF_SIMT_DEVICE EntryOut entry(gptr<std::uint8_t> row, std::int64_t e, int width,
                                   gptr<const float> cos, gptr<const float> sin) const {
    const auto at = [&](gptr<std::uint16_t> q) { return q ? q + e * width : q; };
    return EntryOut{row, at(pooled), at(normed), at(roped), at(hadamard), cos, sin};
  }
};

struct PrefillArgs {
  Dims dm;
  gptr<const float> a, g, ape, norm_w;
  float eps;
  gptr<const float> cos, sin;
  gptr<std::uint8_t> cache;
  DebugPtrs dbg;
};

// Entry blockIdx.x / Q of a prefill, CTA `rank` of its cluster.
template <cmp::Kind K, CompressorFault F>
V4REF_SIMT_DEVICE void prefill_entry(const PrefillArgs& p) {
  const int Q = p.dm.ctas();
  const int rank = Q > 1 ? static_cast<int>(cluster_block_rank()) : 0;
  const std::int64_t j = block_idx().x / Q;
  const Slots src{p.a, p.g, p.ape, p.dm.cw(), true, j};
  const EntryOut out =
      p.dbg.entry(p.cache + j * p.dm.row_bytes(), j, p.dm.width, p.cos + j * 32, p.sin + j * 32);
  entry_pipeline<K, F>(p.dm, src, p.norm_w, p.eps, out, rank);
}

struct DecodeArgs {
  Dims dm;
  gptr<const std::int64_t> positions;
  gptr<const float> a, g, ape, norm_w;
  float eps;
  gptr<const float> cos, sin;
  gptr<float> state_kv, state_score;
  gptr<std::uint8_t> cache;
  std::int64_t entries_max;
  DebugPtrs dbg;
};

// Sequence blockIdx.x / Q of a decode step, CTA `rank` of its cluster.
template <cmp::Kind K, CompressorFault F>
V4REF_SIMT_DEVICE void decode_sequence(const DecodeArgs& p) {
  const Dims& dm = p.dm;
  const int Q = dm.ctas();
  const int rank = Q > 1 ? static_cast<int>(cluster_block_rank()) : 0;
  const std::int64_t b = block_idx().x / Q;
  const std::int64_t t = ld(p.positions + b);
  const int cw = dm.cw(), rows = dm.state_rows(), m = dm.ratio;
  const int r = static_cast<int>(t % m), row = (dm.csa() ? 4 : 0) + r;
  const gptr<float> kv = p.state_kv + b * rows * cw;
  const gptr<float> score = p.state_score + b * rows * cw;
  const unsigned tid = thread_idx().x;
  // Store the token's row: this CTA's channel slice of every series.
  for (int sidx = 0; sidx < dm.series(); ++sidx) {
    const int c = sidx * dm.width + rank * cmp::kCtaChannels + static_cast<int>(tid) * cmp::kLaneChannels;
    if (tid < cmp::kCtaChannels / cmp::kLaneChannels) {
      const f32x4 a4 = ldg(gcast<const f32x4>(p.a + b * cw + c)),
                  g4 = ldg(gcast<const f32x4>(p.g + b * cw + c)),
                  e4 = ldg(gcast<const f32x4>(p.ape + r * cw + c));
      st(gcast<f32x4>(kv + row * cw + c), a4);
      st(gcast<f32x4>(score + row * cw + c),
         make_f32x4(cmp::slot_logit(g4.x, e4.x), cmp::slot_logit(g4.y, e4.y),
                    cmp::slot_logit(g4.z, e4.z), cmp::slot_logit(g4.w, e4.w)));
    }
  }
  if ((t + 1) % m != 0) return;  // the whole cluster returns: same sequence, same position
  sync_threads();
  const std::int64_t j = t / m;
  // The state is written by this kernel: L2-coherent loads (ld.global.cg), not the read-only path.
  const Slots src{kv, score, gptr<const float>(), cw, false, j};
  const EntryOut out = p.dbg.entry(p.cache + (b * p.entries_max + j) * dm.row_bytes(), b, dm.width,
                                   p.cos + j * 32, p.sin + j * 32);
  entry_pipeline<K, F>(dm, src, p.norm_w, p.eps, out, rank);
  if (dm.csa()) {  // rows 4–7 become rows 0–3 (this CTA's slices of both series; pooling has read
                   // them)
    sync_threads();
    const int shift = F == CompressorFault::kStateShiftOffByOne ? 1 : 0;
    for (int i = static_cast<int>(tid); i < 4 * dm.series() * (cmp::kCtaChannels / 4);
         i += static_cast<int>(block_dim().x)) {
      const int rr = i / (dm.series() * 32), rem = i % (dm.series() * 32);
      const int c = (rem / 32) * dm.width + rank * cmp::kCtaChannels + (rem % 32) * 4;
      st(gcast<f32x4>(kv + rr * cw + c), ld(gcast<const f32x4>(kv + (4 + rr - shift) * cw + c)));
      st(gcast<f32x4>(score + rr * cw + c),
         ld(gcast<const f32x4>(score + (4 + rr - shift) * cw + c)));
    }
  }
}

// The two kinds are separate kernels (compressor_* and compressor_idx_*), instantiations of the
// same templates, so the main kernels carry no indexer code.
template <CompressorFault F = CompressorFault::kNone>
V4REF_SIMT_KERNEL(cmp::kThreads) compressor_prefill_kernel(const PrefillArgs p) {
  prefill_entry<cmp::Kind::kMain, F>(p);
}
template <CompressorFault F = CompressorFault::kNone>
V4REF_SIMT_KERNEL(cmp::kThreads) compressor_idx_prefill_kernel(const PrefillArgs p) {
  prefill_entry<cmp::Kind::kIndexer, F>(p);
}
template <CompressorFault F = CompressorFault::kNone>
V4REF_SIMT_KERNEL(cmp::kThreads) compressor_decode_kernel(const DecodeArgs p) {
  decode_sequence<cmp::Kind::kMain, F>(p);
}
template <CompressorFault F = CompressorFault::kNone>
V4REF_SIMT_KERNEL(cmp::kThreads) compressor_idx_decode_kernel(const DecodeArgs p) {
  decode_sequence<cmp::Kind::kIndexer, F>(p);
}

// The §11.2 hand-off state of one sequence after a prefill of T tokens (one thread per 4 floats).
V4REF_SIMT_KERNEL(256) compressor_state_kernel(Dims dm, std::int64_t tokens, gptr<const float> a,
                                               gptr<const float> g, gptr<const float> ape,
                                               gptr<float> kv, gptr<float> score) {
  const int cw = dm.cw(), rows = dm.state_rows(), m = dm.ratio, cur = dm.csa() ? 4 : 0;
  const std::int64_t done = (tokens / m) * m;
  const int n4 = rows * cw / 4;
  for (int i = static_cast<int>(block_idx().x * block_dim().x + thread_idx().x); i < n4;
       i += static_cast<int>(grid_dim().x * block_dim().x)) {
    const int rr = (4 * i) / cw, c = (4 * i) % cw;
    std::int64_t t = -1;
    if (rr >= cur && rr - cur < tokens - done) t = done + (rr - cur);
    if (dm.csa() && rr < 4 && done >= 4) t = done - 4 + rr;
    f32x4 kv4 = make_f32x4(0, 0, 0, 0);
    const float ninf = -__builtin_huge_valf();
    f32x4 sc4 = make_f32x4(ninf, ninf, ninf, ninf);
    if (t >= 0) {
      kv4 = ldg(gcast<const f32x4>(a + t * cw + c));
      const f32x4 g4 = ldg(gcast<const f32x4>(g + t * cw + c)),
                  e4 = ldg(gcast<const f32x4>(ape + (t % m) * cw + c));
      sc4 = make_f32x4(cmp::slot_logit(g4.x, e4.x), cmp::slot_logit(g4.y, e4.y),
                       cmp::slot_logit(g4.z, e4.z), cmp::slot_logit(g4.w, e4.w));
    }
    st(gcast<f32x4>(kv) + i, kv4);
    st(gcast<f32x4>(score) + i, sc4);
  }
}

}  // namespace v4ref::cuda::compressor_kernels
