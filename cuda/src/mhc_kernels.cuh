// The mHC kernels in the SIMT dialect (simt.hpp): compiled by nvcc in mhc_bf16_sm90.cu and by
// the host compiler in cuda/simt/mhc_simt.cpp, where the SIMT executor runs this same source
// (docs/cuda-mhc-compressor.md §2, docs/simt.md; per-thread math mhc_tile.hpp).
//
// mhc_pre_kernel<kPost>: a persistent grid of clusters of S CTAs. Cluster c runs the
// 32-token batches c, c + G, c + 2G, ...; CTA `rank` owns elements [rank·d/S, (rank+1)·d/S) of
// every stream, so one token's 4d inputs are read exactly once, by S CTAs side by side.
// Per CTA: W stream warps (lane = token, `chunks` 8-element chunks per thread, 16-byte loads
// and stores) and one coefficient warp. Per batch:
//   A  stream warps: load X (and F, post, comb), write X' (fused), accumulate the 25 sums of
//      their lane's token against fn (a warp-broadcast 16-byte load per 8 fn values)
//   R  stream warps: reduce the warps' partials (fixed order) and push each token's 25 CTA sums
//      into the shared memory of the token's owner CTA (rank = lane mod S) — DSMEM stores
//   K  coefficient warp of the owner: sum the S CTA sums (rank order), coefficients + Sinkhorn
//      (one lane per token), write the coefficient row, push pre to every CTA of the cluster
//   C  stream warps: re-read their X' (L2) and write u = Σ pre_k X'_k
// Two split cluster barriers per batch order R before K and K before C. The stream warps run
// A of the next batch while K runs, and C of a batch after A of the next one:
//   stream:  A(b) [wait'(b−1)] R(b) arrive(b) C(b−1) wait(b) arrive'(b)    … wait'(last) C(last)
//   coef  :  arrive(b) wait(b) K(b) arrive'(b) wait'(b)
// Hazards: the inbox is rewritten only after wait'(b) (every owner has read it in K(b)); the pre
// buffer is double-buffered (K(b+1) may run while C(b) reads); the warp partials are rewritten
// only after wait(b). The first cluster barrier makes sure every CTA runs before any DSMEM store;
// the last (wait'(last)) that no CTA exits while another may still write into it.
//
// Fault injection (tests/simt/mhc_simt_test.cpp): the template parameter F selects one
// control-flow defect in this very source; the device build instantiates only F = kNone, where
// every fault branch folds away.
#pragma once

#include <cstdint>

#include "v4ref/cuda/mhc_tile.hpp"
#include "v4ref/cuda/simt/simt.hpp"

namespace v4ref::cuda::mhc_kernels {

using namespace v4ref::cuda::simt;  // NOLINT: the dialect is the kernels' vocabulary

constexpr int kMaxThreads = (mhc::kMaxStreamWarps + 1) * 32;  // 288: at most 8 stream warps + 1
constexpr int kPostThreads = 256;

using mhc::MhcFault;

struct PreArgs {
  mhc::Tiling t;
  std::int64_t tokens;
  std::int64_t batches;
  gptr<const std::uint16_t> x;
  gptr<const std::uint16_t> f;
  gptr<const float> coef_in;
  gptr<const float> fn;
  gptr<const float> base;
  mhc::Scalars s;
  gptr<std::uint16_t> x_out;
  gptr<std::uint16_t> u;
  gptr<float> coef;
  gptr<float> mu;
};

struct PostArgs {
  std::int64_t tokens, d;
  gptr<const std::uint16_t> x;
  gptr<const std::uint16_t> f;
  gptr<const float> coef_in;
  gptr<std::uint16_t> x_out;
};

V4REF_SIMT_DEVICE_ARRAY(float, kZeroRow, mhc::kMix)

V4REF_SIMT_DEVICE void unpack(const u32x4& v, std::uint32_t* w) {
  w[0] = v.x;
  w[1] = v.y;
  w[2] = v.z;
  w[3] = v.w;
}
V4REF_SIMT_DEVICE u32x4 pack(const std::uint32_t* w) { return u32x4{w[0], w[1], w[2], w[3]}; }

// Shared-memory layout of a CTA (floats; every region a multiple of 4 floats):
//   fn slice: the packed blocks of the CTA's chunks | warp partials [W][25][32] | inbox
//   [S][slots][25] | pre [2][32][4] | coef-warp staging: pre [slots][4], sums [slots][25]
struct SmemLayout {
  int fn = 0, pw = 0, inbox = 0, q = 0, pre_st = 0, sums = 0, total = 0;
  V4REF_HD explicit SmemLayout(const mhc::Tiling& t) {
    fn = 0;
    pw = (t.per_cta() / mhc::kChunk) * mhc::kFnBlock;
    inbox = pw + t.warps * mhc::kSums * mhc::kBatch;
    q = inbox + mhc::kBatch * mhc::kSums;
    pre_st = q + 2 * mhc::kBatch * 4;
    sums = pre_st + t.slots() * 4;
    total = sums + t.slots() * mhc::kSums;
  }
};

// ---------------------------------------------------------------- phase C: collapse

template <bool kPost, MhcFault F>
V4REF_SIMT_DEVICE void collapse_batch(const PreArgs& a, int rank, int warp, int lane,
                                      std::int64_t batch, sptr<const float> q) {
  const std::int64_t tok = batch * mhc::kBatch + lane;
  const std::int64_t last = F == MhcFault::kCollapseTailOffByOne ? a.tokens + 1 : a.tokens;
  if (tok >= last) return;
  const mhc::Tiling& t = a.t;
  const f32x4 p4 = ld(scast<const f32x4>(q) + lane);
  const float pre[4] = {p4.x, p4.y, p4.z, p4.w};
  const std::int64_t d = t.d;
  for (int c = 0; c < t.chunks; ++c) {
    const int i0 = t.element(rank, warp, c);
    std::uint32_t xs[mhc::kStreams][mhc::kChunk / 2];
    for (int k = 0; k < mhc::kStreams; ++k) {
      const std::int64_t off = tok * 4 * d + k * d + i0;
      // X' was written by this thread in phase A: read it back through L2 (ld.global.cg).
      const u32x4 v = kPost ? ldcg(gcast<const u32x4>(a.x_out + off))
                            : ldg(gcast<const u32x4>(a.x + off));
      unpack(v, xs[k]);
    }
    std::uint32_t uo[mhc::kChunk / 2];
    for (int p = 0; p < mhc::kChunk / 2; ++p) {
      std::uint16_t h[2];
      for (int half = 0; half < 2; ++half) {
        float xv[mhc::kStreams];
        for (int k = 0; k < mhc::kStreams; ++k)
          xv[k] = mhc::bf16_value(mhc::bf16_at(xs[k], 2 * p + half));
        h[half] = mhc::collapse_value(pre, xv);
      }
      uo[p] = mhc::bf16_pair(h[0], h[1]);
    }
    st(gcast<u32x4>(a.u + tok * d + i0), pack(uo));
  }
}

// ---------------------------------------------------------------- stream warps

template <bool kPost, MhcFault F>
V4REF_SIMT_DEVICE void stream_warp(const PreArgs& a, sptr<const float> fn_warp, sptr<float> smem,
                                   const SmemLayout& L, int rank, int warp, int lane,
                                   int cluster_id, int clusters, int iters) {
  const mhc::Tiling& t = a.t;
  const int S = t.cluster, W = t.warps, slots = t.slots();
  const std::int64_t d = t.d;
  const sptr<float> pw = smem + L.pw;
  const sptr<float> inbox = smem + L.inbox;
  const sptr<float> qpre = smem + L.q;
  for (int it = 0; it < iters; ++it) {
    const std::int64_t batch = cluster_id + static_cast<std::int64_t>(it) * clusters;
    const std::int64_t tok = batch * mhc::kBatch + lane;
    const bool valid = tok < a.tokens;
    // post and comb of this lane's token, read through L1 inside each chunk (kept out of the
    // registers that the 25 sums and the fn loads need); lanes past the end read zeros.
    const gptr<const float> row = (kPost && valid) ? a.coef_in + tok * mhc::kMix : kZeroRow();
    // ---- phase A: chunk c+1 is loaded before chunk c is computed (one chunk of loads in flight
    // per thread beyond the warp's own latency hiding)
    float acc[mhc::kSums];
    for (int v = 0; v < mhc::kSums; ++v) acc[v] = 0.0f;
    const gptr<const std::uint16_t> x_tok = a.x + tok * 4 * d;
    const gptr<const std::uint16_t> f_tok = kPost ? a.f + tok * d : gptr<const std::uint16_t>();
    const auto load = [&](int c, mhc::RawChunk& raw) {
      if (!valid) {
        raw = mhc::RawChunk{};  // lanes past the end contribute zeros
        return;
      }
      const int i0 = t.element(rank, warp, c);
      for (int k = 0; k < mhc::kStreams; ++k)
        unpack(ldg(gcast<const u32x4>(x_tok + k * d + i0)), raw.x[k]);
      if (kPost) unpack(ldg(gcast<const u32x4>(f_tok + i0)), raw.f);
    };
    mhc::RawChunk cur, nxt;
    load(0, cur);
    for (int c = 0; c < t.chunks; ++c) {
      if (c + 1 < t.chunks) load(c + 1, nxt);
      std::uint32_t out[mhc::kStreams][mhc::kChunk / 2];
      mhc::chunk_mix<kPost>(cur, row + mhc::kPostOff, row + mhc::kCombOff,
                            fn_warp + c * mhc::kFnBlock, out, acc);
      if (kPost && valid) {
        const int i0 = t.element(rank, warp, c);
        for (int k = 0; k < mhc::kStreams; ++k)
          st(gcast<u32x4>(a.x_out + tok * 4 * d + k * d + i0), pack(out[k]));
      }
      cur = nxt;
    }
    if (it > 0) cluster_wait();  // ': pre of the previous batch pushed, every inbox read
    // ---- phase R
    for (int v = 0; v < mhc::kSums; ++v) st(pw + (warp * mhc::kSums + v) * mhc::kBatch + lane, acc[v]);
    if (F != MhcFault::kPartialsNoBarrier) bar_sync(1, W * 32);  // stream warps only
    for (int idx = warp * 32 + lane; idx < mhc::kBatch * mhc::kSums; idx += W * 32) {
      const int v = idx / mhc::kBatch, l = idx % mhc::kBatch;
      float s = ld(pw + v * mhc::kBatch + l);
      for (int w = 1; w < W; ++w) s = mhc::add_rn(s, ld(pw + (w * mhc::kSums + v) * mhc::kBatch + l));
      const int owner = F == MhcFault::kDsmemRankWrong ? (l + 1) % S : l % S;
      const sptr<float> dst = map_shared_rank(inbox, static_cast<unsigned>(owner));
      st(dst + (rank * slots + l / S) * mhc::kSums + v, s);
    }
    cluster_arrive();
    // ---- phase C of the previous batch, while the owners run K of this one
    const int prev_buf = F == MhcFault::kPreDoubleBufferShared ? 0 : ((it - 1) & 1);
    if (it > 0) collapse_batch<kPost, F>(a, rank, warp, lane, batch - clusters, qpre + prev_buf * 128);
    cluster_wait();
    cluster_arrive();  // '
  }
  if (F != MhcFault::kLastClusterWaitMissing) cluster_wait();  // ' of the last batch
  if (iters > 0) {
    const int last_buf = F == MhcFault::kPreDoubleBufferShared ? 0 : ((iters - 1) & 1);
    collapse_batch<kPost, F>(a, rank, warp, lane,
                          cluster_id + static_cast<std::int64_t>(iters - 1) * clusters,
                          qpre + last_buf * 128);
  }
  if (F == MhcFault::kLastClusterWaitMissing) cluster_wait();
}

// ---------------------------------------------------------------- coefficient warp

template <MhcFault F>
V4REF_SIMT_DEVICE void coef_warp(const PreArgs& a, sptr<float> smem, const SmemLayout& L, int rank,
                                 int lane, int cluster_id, int clusters, int iters) {
  const mhc::Tiling& t = a.t;
  const int S = t.cluster, slots = t.slots();
  const sptr<const float> inbox = smem + L.inbox;
  const sptr<float> qpre = smem + L.q;
  const sptr<float> pre_st = smem + L.pre_st;
  const sptr<float> sums = smem + L.sums;
  for (int it = 0; it < iters; ++it) {
    const std::int64_t batch = cluster_id + static_cast<std::int64_t>(it) * clusters;
    cluster_arrive();
    if (F != MhcFault::kMissingClusterWait) cluster_wait();  // every CTA's sums are in
    for (int idx = lane; idx < slots * mhc::kSums; idx += 32) {
      const int slot = idx / mhc::kSums, v = idx % mhc::kSums;
      float s = ld(inbox + slot * mhc::kSums + v);
      for (int src = 1; src < S; ++src) s = mhc::add_rn(s, ld(inbox + (src * slots + slot) * mhc::kSums + v));
      st(sums + idx, s);
    }
    if (F == MhcFault::kMissingClusterWait) cluster_wait();
    if (F != MhcFault::kCoefWarpSyncMissing) sync_warp();
    for (int slot = lane; slot < slots; slot += 32) {
      const int l = slot * S + rank;
      const std::int64_t tok = batch * mhc::kBatch + l;
      float mu[mhc::kMix], coef[mhc::kMix];
      mhc::coefficients(sums + slot * mhc::kSums, 4 * t.d, a.base, a.s, mu, coef);
      if (tok < a.tokens || F == MhcFault::kTailGuardMissing) {
        const gptr<f32x4> co = gcast<f32x4>(a.coef + tok * mhc::kMix);
        for (int i = 0; i < 6; ++i)
          st(co + i, make_f32x4(coef[4 * i], coef[4 * i + 1], coef[4 * i + 2], coef[4 * i + 3]));
        if (a.mu) {
          const gptr<f32x4> mo = gcast<f32x4>(a.mu + tok * mhc::kMix);
          for (int i = 0; i < 6; ++i)
            st(mo + i, make_f32x4(mu[4 * i], mu[4 * i + 1], mu[4 * i + 2], mu[4 * i + 3]));
        }
      }
      st(scast<f32x4>(pre_st) + slot, make_f32x4(coef[0], coef[1], coef[2], coef[3]));
    }
    sync_warp();
    const int buf = F == MhcFault::kPreDoubleBufferShared ? 0 : (it & 1);
    const sptr<float> q = qpre + buf * 128;
    for (int idx = lane; idx < S * slots; idx += 32) {
      const int dst = idx % S, slot = idx / S;
      const sptr<float> remote = map_shared_rank(q, static_cast<unsigned>(dst));
      st(scast<f32x4>(remote) + (slot * S + rank), ld(scast<const f32x4>(pre_st) + slot));
    }
    cluster_arrive();  // '
    cluster_wait();
  }
}

// ---------------------------------------------------------------- the kernels

template <bool kPost, MhcFault F = MhcFault::kNone>
V4REF_SIMT_KERNEL(kMaxThreads) mhc_pre_kernel(const PreArgs a) {
  const sptr<float> smem = dynamic_smem<float>();
  const mhc::Tiling& t = a.t;
  const SmemLayout L(t);
  const int S = t.cluster;
  const int rank = static_cast<int>(cluster_block_rank());
  const int cluster_id = static_cast<int>(block_idx().x) / S,
            clusters = static_cast<int>(grid_dim().x) / S;
  const int warp = static_cast<int>(thread_idx().x) >> 5, lane = static_cast<int>(thread_idx().x) & 31;
  // Each stream warp stages the packed fn blocks of its own chunks (cp.async, 16 bytes per
  // lane and instruction); nobody else reads them, so a warp-level wait suffices later.
  const std::int64_t first_block = static_cast<std::int64_t>(rank) * (t.per_cta() / mhc::kChunk) +
                                   static_cast<std::int64_t>(warp) * t.chunks;
  const sptr<float> fn_warp = smem + L.fn + warp * t.chunks * mhc::kFnBlock;
  if (warp < t.warps) {
    const gptr<const float> src = a.fn + first_block * mhc::kFnBlock;
    const int shift = F == MhcFault::kStagingOffsetByOne ? 4 : 0;
    for (int i = lane; i < t.chunks * mhc::kFnBlock / 4; i += 32) {
      if (shift != 0 && 4 * i + shift >= t.chunks * mhc::kFnBlock) continue;
      cp_async16(fn_warp + 4 * i + shift, src + 4 * i);
    }
    cp_async_commit();
  }
  cluster_arrive();
  cluster_wait();  // every CTA of the cluster runs: DSMEM stores are safe from here on
  const int iters = static_cast<int>((a.batches - cluster_id + clusters - 1) / clusters);
  if (warp < t.warps) {
    if (F != MhcFault::kNoWarpSyncAfterStage) {
      cp_async_wait_all();
      sync_warp();
    }
    stream_warp<kPost, F>(a, fn_warp, smem, L, rank, warp, lane, cluster_id, clusters, iters);
    if (F == MhcFault::kNoWarpSyncAfterStage) cp_async_wait_all();
  } else {
    coef_warp<F>(a, smem, L, rank, lane, cluster_id, clusters, iters);
  }
}

// Standalone write-back: one thread per (token, 8-element chunk), grid-stride.
template <MhcFault F = MhcFault::kNone>
V4REF_SIMT_KERNEL(kPostThreads) mhc_post_kernel(const PostArgs a) {
  const std::int64_t per_tok = a.d / mhc::kChunk, total = a.tokens * per_tok;
  const std::int64_t bound =
      F == MhcFault::kPostGridStrideBound ? total + block_dim().x : total;
  for (std::int64_t item = block_idx().x * static_cast<std::int64_t>(block_dim().x) + thread_idx().x;
       item < bound; item += static_cast<std::int64_t>(grid_dim().x) * block_dim().x) {
    const std::int64_t tok = item / per_tok, i0 = (item % per_tok) * mhc::kChunk;
    const gptr<const f32x4> c4 = gcast<const f32x4>(a.coef_in + tok * mhc::kMix + mhc::kPostOff);
    const f32x4 p = ldg(c4);
    const float post[4] = {p.x, p.y, p.z, p.w};
    float comb[16];
    for (int j = 0; j < 4; ++j) {
      const f32x4 c = ldg(c4 + 1 + j);
      comb[4 * j] = c.x;
      comb[4 * j + 1] = c.y;
      comb[4 * j + 2] = c.z;
      comb[4 * j + 3] = c.w;
    }
    mhc::RawChunk raw;
    for (int k = 0; k < mhc::kStreams; ++k)
      unpack(ldg(gcast<const u32x4>(a.x + tok * 4 * a.d + k * a.d + i0)), raw.x[k]);
    unpack(ldg(gcast<const u32x4>(a.f + tok * a.d + i0)), raw.f);
    std::uint16_t h[mhc::kChunk][mhc::kStreams];
    for (int e = 0; e < mhc::kChunk; ++e) {
      float xv[mhc::kStreams];
      for (int j = 0; j < mhc::kStreams; ++j) xv[j] = mhc::bf16_value(mhc::bf16_at(raw.x[j], e));
      const float f = mhc::bf16_value(mhc::bf16_at(raw.f, e));
      for (int k = 0; k < mhc::kStreams; ++k)
        h[e][k] = mhc::to_bf16(mhc::post_value(post, comb, k, f, xv));
    }
    std::uint32_t out[mhc::kStreams][mhc::kChunk / 2];
    for (int k = 0; k < mhc::kStreams; ++k)
      for (int p2 = 0; p2 < mhc::kChunk / 2; ++p2)
        out[k][p2] = mhc::bf16_pair(h[2 * p2][k], h[2 * p2 + 1][k]);
    for (int k = 0; k < mhc::kStreams; ++k)
      st(gcast<u32x4>(a.x_out + tok * 4 * a.d + k * a.d + i0), pack(out[k]));
  }
}

// fn [24, 4d] -> packed blocks (mhc_tile.hpp, packed_fn_index), one thread per packed element.
template <MhcFault F = MhcFault::kNone>
V4REF_SIMT_KERNEL(256) mhc_pack_fn_kernel(gptr<const float> fn, gptr<float> packed, std::int64_t d) {
  const std::int64_t n = mhc::kMix * 4 * d;
  for (std::int64_t p = block_idx().x * static_cast<std::int64_t>(block_dim().x) + thread_idx().x;
       p < n; p += static_cast<std::int64_t>(grid_dim().x) * block_dim().x) {
    const std::int64_t g = p / mhc::kFnBlock;
    const int rem = static_cast<int>(p % mhc::kFnBlock), kr = rem / mhc::kChunk;
    int k = kr / mhc::kMix, r = kr % mhc::kMix;
    if (F == MhcFault::kPackFnIndexSwap) {
      k = kr % mhc::kStreams;
      r = kr / mhc::kStreams;
    }
    st(packed + p, ldg(fn + (r * 4 * d + k * d + g * mhc::kChunk + rem % mhc::kChunk)));
  }
}

}  // namespace v4ref::cuda::mhc_kernels
