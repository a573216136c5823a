// The SIMT executor on small kernels written in the dialect: what each construct computes, and
// that each check fires on the bug it exists for (and stays quiet on the correct kernel).
#include "v4ref/cuda/simt/executor.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <vector>

#include "v4ref/compare/tolerance.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::cuda::simt {
namespace {

// ---------------------------------------------------------------- kernels under test

struct AxpyArgs {
  std::int64_t n;
  float a;
  gptr<const float> x;
  gptr<float> y;
  std::int64_t stride_bound;  // fault: the grid-stride loop runs to this bound instead of n
};

// y = a·x + y, grid-stride.
void axpy_kernel(const AxpyArgs& p) {
  const std::int64_t start = block_idx().x * std::int64_t{block_dim().x} + thread_idx().x;
  const std::int64_t step = std::int64_t{grid_dim().x} * block_dim().x;
  for (std::int64_t i = start; i < p.stride_bound; i += step)
    st(p.y + i, p.a * ldg(p.x + i) + ld(p.y + i));
}

struct SumArgs {
  std::int64_t n;
  gptr<const float> x;
  gptr<float> out;      // [gridDim.x] one partial per block
  bool skip_sync = false;  // fault: no barrier between the warp partials and their reduction
  int xor_first = 16;      // fault: a wrong first butterfly distance
};

// Block sum: warp butterflies, warp partials in shared memory, warp 0 reduces them.
void block_sum_kernel(const SumArgs& p) {
  const sptr<float> part = dynamic_smem<float>();
  const unsigned tid = thread_idx().x, lane = tid % 32, warp = tid / 32;
  const std::int64_t i = block_idx().x * std::int64_t{block_dim().x} + tid;
  float v = i < p.n ? ldg(p.x + i) : 0.0f;
  for (int m = p.xor_first; m >= 1; m /= 2) v += shfl_xor(kFullMask, v, m);
  if (lane == 0) st(part + warp, v);
  if (!p.skip_sync) sync_threads();
  if (warp == 0) {
    const unsigned warps = block_dim().x / 32;
    float s = lane < warps ? ld(part + lane) : 0.0f;
    for (int m = 16; m >= 1; m /= 2) s += shfl_xor(kFullMask, s, m);
    if (lane == 0) st(p.out + block_idx().x, s);
  }
}

float host_sum(const std::vector<float>& x, std::int64_t b0, std::int64_t b1) {
  // the kernel's order: lanes by butterfly, then warps by butterfly
  std::vector<float> warp_sums;
  for (std::int64_t w = b0; w < b1; w += 32) {
    float lanes[32];
    for (int l = 0; l < 32; ++l) lanes[l] = w + l < static_cast<std::int64_t>(x.size()) ? x[w + l] : 0.0f;
    for (int m = 16; m >= 1; m /= 2) {
      float next[32];
      for (int l = 0; l < 32; ++l) next[l] = lanes[l] + lanes[l ^ m];
      std::copy(next, next + 32, lanes);
    }
    warp_sums.push_back(lanes[0]);
  }
  float lanes[32] = {};
  for (std::size_t l = 0; l < warp_sums.size(); ++l) lanes[l] = warp_sums[l];
  for (int m = 16; m >= 1; m /= 2) {
    float next[32];
    for (int l = 0; l < 32; ++l) next[l] = lanes[l] + lanes[l ^ m];
    std::copy(next, next + 32, lanes);
  }
  return lanes[0];
}

std::vector<float> ramp(std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = 0.25f * static_cast<float>((i * 37) % 101) - 7.0f;
  return v;
}

LaunchConfig config(const char* name, unsigned grid, unsigned block, std::size_t smem = 0) {
  LaunchConfig c;
  c.kernel = name;
  c.grid = {grid, 1, 1};
  c.block = {block, 1, 1};
  c.smem_bytes = smem;
  return c;
}

// ---------------------------------------------------------------- what the constructs compute

TEST(SimtExecutor, AxpyComputesTheKernelAndCountsCoalescedAccesses) {
  const std::int64_t n = 1000;
  const std::vector<float> x = ramp(n), y0 = ramp(n);
  Buffer<float> bx("x", x), by("y", y0);
  LaunchConfig c = config("axpy", 3, 128);
  c.compulsory_bytes = 3.0 * 4 * n;
  const AxpyArgs a{n, 2.0f, bx.cptr(), by.ptr(), n};
  for (std::uint64_t seed : {0u, 1u, 7u}) {
    Buffer<float> y("y", y0);
    const AxpyArgs as{n, 2.0f, bx.cptr(), y.ptr(), n};
    const LaunchReport r = launch(c, [&] { axpy_kernel(as); }, {.seed = seed});
    const std::vector<float> got = y.read();
    for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], 2.0f * x[i] + y0[i]) << i;
    EXPECT_TRUE(y.guards_intact());
    // 1000 floats = 125 fully used 32-byte sectors per stream, 3 streams
    EXPECT_EQ(r.sectors_g, 3u * 125u);
    EXPECT_NEAR(r.traffic_ratio, 1.0, 1e-12);
    ASSERT_EQ(r.sites.size(), 3u);
    for (const SiteStats& s : r.sites) EXPECT_LE(s.sectors_per_request, 4.0) << s.site;
    EXPECT_GT(r.t_lower_h100_us, r.t_lower_h200_us);
  }
  (void)a;
}

TEST(SimtExecutor, BlockSumMatchesTheKernelOrderOnEverySeed) {
  const std::int64_t n = 700;
  const std::vector<float> x = ramp(n);
  for (std::uint64_t seed = 0; seed < 4; ++seed) {
    Buffer<float> bx("x", x), out("partials", 3, -1.0f);
    const SumArgs a{n, bx.cptr(), out.ptr()};
    const LaunchReport r =
        launch(config("block_sum", 3, 256, 8 * sizeof(float)), [&] { block_sum_kernel(a); }, {.seed = seed});
    const std::vector<float> got = out.read();
    for (int b = 0; b < 3; ++b) EXPECT_EQ(got[b], host_sum(x, 256 * b, 256 * b + 256)) << b;
    EXPECT_EQ(r.mix.barriers, 3u * 8u);  // one per warp per block
    EXPECT_GT(r.mix.shuffles, 0u);
  }
}

// ---------------------------------------------------------------- each check on its bug

TEST(SimtExecutor, GridStrideBoundPastTheEndIsOutOfBounds) {
  const std::int64_t n = 1000;
  Buffer<float> bx("x", ramp(n)), by("y", ramp(n));
  const AxpyArgs a{n, 2.0f, bx.cptr(), by.ptr(), n + 1};
  const LaunchReport r = launch(config("axpy", 3, 128), [&] { axpy_kernel(a); }, {.throw_on_error = false});
  ASSERT_TRUE(r.has("out_of_bounds")) << r.summary();
  EXPECT_NE(r.summary().find("buffer 'x'"), std::string::npos) << r.summary();
  EXPECT_NE(r.summary().find("block (1,0,0) thread (104,0,0)"), std::string::npos) << r.summary();
  EXPECT_TRUE(by.guards_intact());  // the failing store was not performed
}

TEST(SimtExecutor, MissingBarrierIsASharedRace) {
  const std::vector<float> x = ramp(512);
  Buffer<float> bx("x", x), out("partials", 2);
  SumArgs a{512, bx.cptr(), out.ptr()};
  a.skip_sync = true;
  const LaunchReport r = launch(config("block_sum", 2, 256, 32), [&] { block_sum_kernel(a); },
                                {.throw_on_error = false});
  EXPECT_TRUE(r.has("shared_race") || r.has("uninitialized_read")) << r.summary();
}

TEST(SimtExecutor, WrongButterflyChangesTheSum) {
  const std::vector<float> x = ramp(256);
  Buffer<float> bx("x", x), out("partials", 1);
  SumArgs a{256, bx.cptr(), out.ptr()};
  a.xor_first = 8;  // lanes 16..31 never reach lane 0
  launch(config("block_sum", 1, 256, 32), [&] { block_sum_kernel(a); });
  EXPECT_NE(out.read()[0], host_sum(x, 0, 256));
}

TEST(SimtExecutor, ReadingSharedMemoryNobodyWroteIsReported) {
  Buffer<float> out("out", 32);
  const gptr<float> o = out.ptr();
  const LaunchReport r = launch(config("uninit", 1, 32, 256), [&] {
    const sptr<float> s = dynamic_smem<float>();
    st(o + thread_idx().x, ld(s + thread_idx().x));
  }, {.throw_on_error = false});
  EXPECT_TRUE(r.has("uninitialized_read")) << r.summary();
}

TEST(SimtExecutor, SharedAccessPastTheDynamicSizeIsOutOfBounds) {
  const LaunchReport r = launch(config("smem_oob", 1, 64, 128), [&] {
    const sptr<float> s = dynamic_smem<float>();
    st(s + thread_idx().x, 1.0f);  // 64 floats into 128 bytes
  }, {.throw_on_error = false});
  ASSERT_TRUE(r.has("out_of_bounds")) << r.summary();
  EXPECT_NE(r.summary().find("past the 128 bytes"), std::string::npos) << r.summary();
}

TEST(SimtExecutor, BarrierInsideADivergentBranchDeadlocks) {
  const LaunchReport r = launch(config("divergent_barrier", 1, 64), [&] {
    if (thread_idx().x < 32) sync_threads();
  }, {.throw_on_error = false});
  ASSERT_TRUE(r.has("deadlock")) << r.summary();
  EXPECT_NE(r.summary().find("32 threads of block (0,0,0) waits in bar.sync 0"), std::string::npos)
      << r.summary();
}

TEST(SimtExecutor, TwoBlocksWritingTheSameBytesConflict) {
  Buffer<float> out("out", 32);
  const gptr<float> o = out.ptr();
  const LaunchReport r = launch(config("conflict", 2, 32), [&] { st(o + thread_idx().x, 1.0f); },
                                {.throw_on_error = false});
  EXPECT_TRUE(r.has("global_write_conflict")) << r.summary();
  Buffer<float> acc("acc", 1, 0.0f);
  const gptr<float> g = acc.ptr();
  launch(config("atomics", 4, 32), [&] { atomic_add(g, 1.0f); });
  EXPECT_EQ(acc.read()[0], 128.0f);
}

TEST(SimtExecutor, ShuffleFromALaneOutsideTheMaskIsReported) {
  Buffer<int> out("out", 32);
  const gptr<int> o = out.ptr();
  const LaunchReport r = launch(config("bad_mask", 1, 32), [&] {
    const unsigned lane = thread_idx().x;
    if (lane < 16) st(o + lane, shfl(0x0000ffffu, static_cast<int>(lane), 20));
  }, {.throw_on_error = false});
  EXPECT_TRUE(r.has("warp_collective")) << r.summary();
}

TEST(SimtExecutor, ShuffleAndVoteSemantics) {
  Buffer<int> out("out", 4 * 32);
  const gptr<int> o = out.ptr();
  launch(config("shfl", 1, 32), [&] {
    const int lane = static_cast<int>(thread_idx().x);
    st(o + lane, shfl_down(kFullMask, lane, 3u));        // lanes 29..31 keep their own
    st(o + 32 + lane, shfl_up(kFullMask, lane, 2u, 8));  // within groups of 8
    st(o + 64 + lane, shfl(kFullMask, lane, lane + 1, 16));
    st(o + 96 + lane, static_cast<int>(ballot(kFullMask, lane % 3 == 0)));
  });
  const std::vector<int> v = out.read();
  unsigned want_ballot = 0;
  for (int l = 0; l < 32; ++l) want_ballot |= (l % 3 == 0 ? 1u : 0u) << l;
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(v[l], l + 3 < 32 ? l + 3 : l);
    EXPECT_EQ(v[32 + l], l % 8 >= 2 ? l - 2 : l);
    EXPECT_EQ(v[64 + l], (l & ~15) | ((l + 1) & 15));
    EXPECT_EQ(static_cast<unsigned>(v[96 + l]), want_ballot);
  }
}

// A cluster of 4 blocks: each block writes its rank into its own shared memory, the cluster
// synchronises, each block reads its right neighbour's value through DSMEM.
void dsmem_ring(gptr<int> out, bool skip_cluster_sync, bool exit_early) {
  const sptr<int> s = dynamic_smem<int>();
  const unsigned rank = cluster_block_rank(), n = cluster_num_blocks();
  if (thread_idx().x == 0) st(s, static_cast<int>(100 + rank));
  if (!skip_cluster_sync) cluster_sync();
  if (thread_idx().x == 0) st(out + block_idx().x, ld(map_shared_rank(s, (rank + 1) % n)));
  if (!exit_early) cluster_sync();  // nobody exits while a neighbour may still read it
}

TEST(SimtExecutor, DsmemRingReadsTheNeighbour) {
  for (std::uint64_t seed = 0; seed < 3; ++seed) {
    Buffer<int> out("out", 8, -1);
    LaunchConfig c = config("dsmem_ring", 8, 64, 16);
    c.cluster = {4, 1, 1};
    launch(c, [&] { dsmem_ring(out.ptr(), false, false); }, {.seed = seed});
    const std::vector<int> v = out.read();
    for (int b = 0; b < 8; ++b) EXPECT_EQ(v[b], 100 + (b % 4 + 1) % 4) << b;
  }
}

TEST(SimtExecutor, DsmemWithoutClusterBarrierIsARaceOrUninitialised) {
  Buffer<int> out("out", 4, -1);
  LaunchConfig c = config("dsmem_ring", 4, 32, 16);
  c.cluster = {4, 1, 1};
  bool caught = false;
  for (std::uint64_t seed = 0; seed < 4 && !caught; ++seed) {
    const LaunchReport r = launch(c, [&] { dsmem_ring(out.ptr(), true, false); },
                                  {.seed = seed, .throw_on_error = false});
    caught = r.has("shared_race") || r.has("uninitialized_read");
  }
  EXPECT_TRUE(caught);
}

// cp.async of 16 floats per thread into shared memory, two groups, then a read.
void staged_copy(gptr<const float> in, gptr<float> out, int wait_pending) {
  const sptr<float> s = dynamic_smem<float>();
  const unsigned t = thread_idx().x;
  cp_async16(s + 4 * t, in + 4 * t);
  cp_async_commit();
  cp_async16(s + 128 + 4 * t, in + 128 + 4 * t);
  cp_async_commit();
  if (wait_pending == 0) cp_async_wait_group<0>();
  else cp_async_wait_group<1>();
  sync_threads();
  for (int k = 0; k < 4; ++k) st(out + 4 * t + k, ld(s + 128 + 4 * t + k));
  if (wait_pending != 0) cp_async_wait_all();
}

TEST(SimtExecutor, CpAsyncWaitCountOneShortIsCaught) {
  const std::vector<float> x = ramp(256);
  Buffer<float> in("in", x), out("out", 128);
  LaunchReport r = launch(config("staged_copy", 1, 32, 1024),
                          [&] { staged_copy(in.cptr(), out.ptr(), 0); });
  const std::vector<float> got = out.read();
  for (int i = 0; i < 128; ++i) ASSERT_EQ(got[i], x[128 + i]);
  EXPECT_EQ(r.mix.cp_async, 2u);
  r = launch(config("staged_copy", 1, 32, 1024), [&] { staged_copy(in.cptr(), out.ptr(), 1); },
             {.throw_on_error = false});
  EXPECT_TRUE(r.has("cp_async")) << r.summary();
}

// A producer/consumer pipeline on mbarriers: lane 0 of warp 0 streams `stages` chunks of 384
// floats through two shared buffers with bulk copies (full[b]: one arrival + the transaction
// bytes); warps 1..3 wait for full[b], add their share, and arrive on empty[b], which the producer
// waits for before it overwrites buffer b. Each fault breaks one ordering.
enum class PipeFault { kNone, kConsumerParity, kNoWaitEmpty, kNoExpectTx, kNoSyncAfterInit };

void pipeline(gptr<const float> src, gptr<float> out, int stages, PipeFault fault) {
  constexpr int kChunk = 384, kConsumers = 96;
  const sptr<std::uint64_t> bars = dynamic_smem<std::uint64_t>();  // full[2], empty[2]
  const sptr<float> buf = scast<float>(bars + 4);                  // [2][kChunk]
  const int tid = static_cast<int>(thread_idx().x);
  if (tid == 0) {
    for (int b = 0; b < 2; ++b) {
      mbar_init(bars + b, 1);
      mbar_init(bars + 2 + b, kConsumers);
    }
    fence_mbarrier_init();
  }
  if (fault != PipeFault::kNoSyncAfterInit) sync_threads();
  if (tid == 0) {
    for (int s = 0; s < stages; ++s) {
      const int b = s & 1;
      if (s >= 2 && fault != PipeFault::kNoWaitEmpty)
        mbar_wait_parity(bars + 2 + b, static_cast<unsigned>(((s >> 1) - 1) & 1));
      if (fault != PipeFault::kNoExpectTx) mbar_arrive_expect_tx(bars + b, kChunk * 4);
      else mbar_arrive(bars + b);
      bulk_copy_g2s(buf + b * kChunk, src + s * kChunk, kChunk * 4, bars + b);
    }
  } else if (tid >= 32) {
    const int c = tid - 32;
    float acc = 0.0f;
    for (int s = 0; s < stages; ++s) {
      const int b = s & 1;
      unsigned parity = static_cast<unsigned>((s >> 1) & 1);
      if (fault == PipeFault::kConsumerParity) parity ^= 1u;
      while (!mbar_try_wait_parity(bars + b, parity)) {
      }
      for (int i = c; i < kChunk; i += kConsumers) acc += ld(buf + b * kChunk + i);
      mbar_arrive(bars + 2 + b);
    }
    st(out + c, acc);
  }
}

LaunchReport run_pipeline(const std::vector<float>& x, int stages, PipeFault f, std::uint64_t seed,
                          std::vector<float>* got) {
  Buffer<float> src("src", x), out("out", 96, -1.0f);
  const gptr<const float> ps = src.cptr();
  const gptr<float> po = out.ptr();
  LaunchReport r = launch(config("pipeline", 1, 128, 4 * 8 + 2 * 384 * 4),
                          [&] { pipeline(ps, po, stages, f); },
                          {.seed = seed, .throw_on_error = false});
  *got = out.read();
  return r;
}

TEST(SimtExecutor, MbarrierPipelineAndItsFaults) {
  const int stages = 6;
  const std::vector<float> x = ramp(384 * stages);
  std::vector<float> want(96, 0.0f);
  for (int c = 0; c < 96; ++c)
    for (int s = 0; s < stages; ++s)
      for (int i = c; i < 384; i += 96) want[c] += x[s * 384 + i];
  std::vector<float> got;
  for (std::uint64_t seed : {0u, 1u, 2u}) {
    const LaunchReport r = run_pipeline(x, stages, PipeFault::kNone, seed, &got);
    ASSERT_TRUE(r.ok()) << r.summary();
    EXPECT_EQ(got, want);
  }
  const auto caught = [&](PipeFault f) {
    std::string kinds;
    for (std::uint64_t seed : {0u, 1u, 2u}) {
      const LaunchReport r = run_pipeline(x, stages, f, seed, &got);
      for (const Finding& fd : r.findings) kinds += fd.kind + " ";
      if (r.ok() && got != want) kinds += "wrong-output ";
    }
    return kinds;
  };
  // Each fault is caught on some seed; what catches it depends on the interleaving: a consumer
  // on the wrong parity reads a buffer before (uninitialized_read) or while (cp_async) its copy
  // lands, or races the next copy; a producer that does not wait for `empty` runs ahead and the
  // consumers then wait for a phase that has already passed (deadlock) or read a later stage.
  const std::string parity = caught(PipeFault::kConsumerParity);
  EXPECT_FALSE(parity.empty()) << "a consumer waiting on the wrong parity went unnoticed";
  const std::string ahead = caught(PipeFault::kNoWaitEmpty);
  EXPECT_FALSE(ahead.empty()) << "a producer overwriting unconsumed buffers went unnoticed";
  const std::string tx = caught(PipeFault::kNoExpectTx);
  EXPECT_NE(tx.find("deadlock"), std::string::npos) << tx;  // the phase never completes
  const std::string init = caught(PipeFault::kNoSyncAfterInit);
  EXPECT_FALSE(init.empty()) << "using mbarriers before their init is ordered went unnoticed";
  std::printf("mbarrier faults: parity [%s], no empty wait [%s], no expect_tx [%s], no sync after "
              "init [%s]\n", parity.c_str(), ahead.c_str(), tx.c_str(), init.c_str());
}

// A TMA tile of a [50, 100] bf16 tensor at (64, 40): the box runs past both edges (zeros there).
// Every thread reads back elements through the swizzle it assumes; the tile equals the tensor's
// box in every swizzle mode when reader and tensor map agree.
struct TmaCase {
  Swizzle map, reader;
  std::size_t smem_offset;  // of the tile in dynamic shared memory (after the mbarrier's 1024)
};

LaunchReport run_tma(const TmaCase& c, std::vector<std::uint16_t>* got, std::vector<std::uint16_t>* want) {
  constexpr std::uint64_t kRows = 50, kCols = 100, kStride = 208;  // 104 elements: 16-byte rows
  std::vector<std::uint16_t> x(kRows * kStride / 2);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<std::uint16_t>(i * 7 + 1);
  Buffer<std::uint16_t> src("tensor", x);
  const std::uint32_t box0 = c.map == Swizzle::kNone ? 64 : swizzle_span(c.map) / 2, box1 = 16;
  const TensorMap2d tm = encode_tensor_map_2d(src.cptr().address(), 2, kCols, kRows, kStride, box0,
                                              box1, c.map);
  const int c0 = 64, c1 = 40;
  want->assign(box0 * box1, 0);
  for (std::uint32_t y = 0; y < box1; ++y)
    for (std::uint32_t e = 0; e < box0; ++e)
      if (c1 + y < kRows && c0 + e < kCols) (*want)[y * box0 + e] = x[(c1 + y) * kStride / 2 + c0 + e];
  Buffer<std::uint16_t> out("out", box0 * box1, 0xFFFF);
  const gptr<std::uint16_t> po = out.ptr();
  const Swizzle reader = c.reader;
  const std::size_t at = c.smem_offset;
  const LaunchReport r = launch(config("tma_tile", 1, 64, 4096 + box0 * box1 * 2), [&] {
    const sptr<std::uint64_t> bar = dynamic_smem<std::uint64_t>();
    const sptr<unsigned char> tile = scast<unsigned char>(bar) + at;
    const unsigned tid = thread_idx().x;
    if (tid == 0) mbar_init(bar, 1);
    sync_threads();
    if (tid == 0) {
      mbar_arrive_expect_tx(bar, box0 * box1 * 2);
      tma_load_2d(tile, tm, c0, c1, bar);
    }
    mbar_wait_parity(bar, 0);
    for (std::uint32_t i = tid; i < box0 * box1; i += 64)
      st(po + i, ld(scast<std::uint16_t>(tile + swizzle_offset(reader, i * 2))));
  }, {.throw_on_error = false});
  *got = out.read();
  return r;
}

TEST(SimtExecutor, TmaTilesWithEverySwizzle) {
  std::vector<std::uint16_t> got, want;
  for (Swizzle s : {Swizzle::kNone, Swizzle::k32B, Swizzle::k64B, Swizzle::k128B}) {
    const LaunchReport r = run_tma({s, s, 1024}, &got, &want);
    ASSERT_TRUE(r.ok()) << r.summary();
    EXPECT_EQ(got, want) << "swizzle " << static_cast<int>(s);
    EXPECT_EQ(r.mix.tma, 1u);
  }
  // A reader assuming another swizzle than the tensor map gets other bytes.
  run_tma({Swizzle::k128B, Swizzle::k64B, 1024}, &got, &want);
  EXPECT_NE(got, want);
  // A 128-byte swizzled tile must start on a 1024-byte boundary.
  const LaunchReport r = run_tma({Swizzle::k128B, Swizzle::k128B, 1024 + 512}, &got, &want);
  EXPECT_TRUE(r.has("misaligned")) << r.summary();
  // The encoder refuses what cuTensorMapEncodeTiled refuses.
  Buffer<std::uint16_t> t("t", 4096);
  EXPECT_THROW(encode_tensor_map_2d(t.cptr().address(), 2, 64, 32, 128, 64, 8, Swizzle::k64B), Error);
  EXPECT_THROW(encode_tensor_map_2d(t.cptr().address(), 2, 64, 32, 120, 32, 8, Swizzle::k64B), Error);
  EXPECT_THROW(encode_tensor_map_2d(t.cptr().address(), 2, 64, 65, 128, 32, 8, Swizzle::k64B), Error);  // past the buffer
  EXPECT_NO_THROW(encode_tensor_map_2d(t.cptr().address(), 2, 64, 32, 128, 32, 8, Swizzle::k64B));
}

// wgmma m64n16k16 (bf16, fp32 accumulators) on operands in shared memory: staged by TMA with the
// 32-byte swizzle (rows of 16 bf16 = the span; SBO = 8 rows · 32 B), or by plain stores in the
// unswizzled core-matrix layout (LBO = 128 B along K, SBO = 256 B per 8 rows). Each thread writes
// its fragment back: D[row][col] by the register layout of the PTX ISA.
enum class WgFault { kNone, kDescSwizzle64, kWrongSbo, kNoProxyFence };

// The allowance of the tolerance table's "mma.out" row for [64, 16] outputs of one instruction
// with K products each: exact results r and abs-bounds M = Σ|a_k b_k|.
compare::Mat mma_allowance(const std::vector<double>& r, const std::vector<double>& m, int K) {
  compare::Mat ref(64, 16), bound(64, 16);
  for (int i = 0; i < 64 * 16; ++i) {
    ref(i / 16, i % 16) = r[static_cast<std::size_t>(i)];
    bound(i / 16, i % 16) = m[static_cast<std::size_t>(i)];
  }
  compare::AllowanceInputs in;
  in.ref = &ref;
  in.abs_bound = &bound;
  in.n_eff = K + 1;
  return compare::allowance(compare::require_tolerance("mma.out", "fp32"), in);
}

LaunchReport run_wgmma(bool tma, WgFault fault, const RunOptions& opt, const std::vector<std::uint16_t>& a,
                       const std::vector<std::uint16_t>& b, std::vector<float>* d_out) {
  Buffer<std::uint16_t> ga("A", a), gb("B", b);
  Buffer<float> out("D", 64 * 16, -1.0f);
  const TensorMap2d ta = encode_tensor_map_2d(ga.cptr().address(), 2, 16, 64, 32, 16, 64, Swizzle::k32B);
  const TensorMap2d tb = encode_tensor_map_2d(gb.cptr().address(), 2, 16, 16, 32, 16, 16, Swizzle::k32B);
  const gptr<const std::uint16_t> pa = ga.cptr(), pb = gb.cptr();
  const gptr<float> po = out.ptr();
  LaunchReport r = launch(config("wgmma_tile", 1, 128, 1024 + 2048 + 1024), [&] {
    const sptr<std::uint64_t> bar = dynamic_smem<std::uint64_t>();
    const sptr<unsigned char> sa = scast<unsigned char>(bar) + 1024, sb = sa + 2048;
    const unsigned tid = thread_idx().x;
    std::uint64_t da = 0, db = 0;
    if (tma) {
      if (tid == 0) {
        mbar_init(bar, 1);
        mbar_arrive_expect_tx(bar, 64 * 32 + 16 * 32);
        tma_load_2d(sa, ta, 0, 0, bar);
        tma_load_2d(sb, tb, 0, 0, bar);
      }
      sync_threads();
      mbar_wait_parity(bar, 0);
      const Swizzle ds = fault == WgFault::kDescSwizzle64 ? Swizzle::k64B : Swizzle::k32B;
      const std::uint32_t sbo = fault == WgFault::kWrongSbo ? 512 : 256;
      da = make_smem_desc(sa, 16, sbo, ds);
      db = make_smem_desc(sb, 16, sbo, ds);
    } else {
      for (unsigned i = tid; i < 64 * 16; i += 128) {  // core matrices: 8 rows x 16 B
        const unsigned row = i / 16, k = i % 16;
        st(scast<std::uint16_t>(sa + (row / 8) * 256 + (k / 8) * 128 + (row % 8) * 16) + k % 8, ld(pa + i));
        if (i < 16 * 16)
          st(scast<std::uint16_t>(sb + (row / 8) * 256 + (k / 8) * 128 + (row % 8) * 16) + k % 8, ld(pb + i));
      }
      if (fault != WgFault::kNoProxyFence) fence_proxy_async();  // st.shared -> wgmma operands
      sync_threads();
      da = make_smem_desc(sa, 128, 256, Swizzle::kNone);
      db = make_smem_desc(sb, 128, 256, Swizzle::kNone);
    }
    float d[8] = {};
    wgmma_fence();
    wgmma_bf16_ss<16>(d, da, db, false);
    wgmma_commit_group();
    wgmma_wait_group<0>();
    const unsigned warp = tid / 32, lane = tid % 32;
    for (int i = 0; i < 2; ++i)
      for (int q = 0; q < 4; ++q) {
        const unsigned row = 16 * warp + lane / 4 + (q / 2) * 8, col = 8 * i + 2 * (lane % 4) + q % 2;
        st(po + row * 16 + col, d[4 * i + q]);
      }
  }, opt);
  *d_out = out.read();
  return r;
}

TEST(SimtExecutor, WgmmaFromSwizzledAndCoreMatrixLayouts) {
  Rng rng(derive_seed("simt", "wgmma", "", 11));
  std::vector<std::uint16_t> a(64 * 16), b(16 * 16);
  const auto bf16 = [&](double x) {
    float f = static_cast<float>(x);
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return static_cast<std::uint16_t>(u >> 16);  // truncated to bf16: exactly representable
  };
  const auto val = [](std::uint16_t h) {
    const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  for (auto& x : a) x = bf16(std::ldexp(rng.normal(), static_cast<int>(rng.uniform() * 16) - 8));
  for (auto& x : b) x = bf16(rng.normal());
  // The IEEE model: products exact, summed in k order in fp32.
  std::vector<float> ieee(64 * 16);
  std::vector<double> exact(64 * 16), abs_sum(64 * 16);
  for (int m = 0; m < 64; ++m)
    for (int n = 0; n < 16; ++n) {
      float acc = 0.0f;
      for (int k = 0; k < 16; ++k) {
        acc = acc + val(a[m * 16 + k]) * val(b[n * 16 + k]);
        const double p = static_cast<double>(val(a[m * 16 + k])) * static_cast<double>(val(b[n * 16 + k]));
        exact[m * 16 + n] += p;
        abs_sum[m * 16 + n] += std::abs(p);
      }
      ieee[m * 16 + n] = acc;
    }
  std::vector<float> d;
  for (const bool tma : {true, false}) {
    const LaunchReport r = run_wgmma(tma, WgFault::kNone, {}, a, b, &d);
    ASSERT_TRUE(r.ok()) << r.summary();
    EXPECT_EQ(d, ieee) << (tma ? "TMA, 32-byte swizzle" : "core matrices");
    EXPECT_EQ(r.mix.mma, 1u);
    EXPECT_EQ(r.mma_flops_bf16, 2.0 * 64 * 16 * 16);
  }
  // The aligned-and-truncated model with 14 bits (FP8 on Hopper, DeepSeek-V3 report) and the IEEE
  // end both within the tolerance table's mma.out row, and the two models differ.
  RunOptions t14;
  t14.mma_model = MmaModel::kAlignedTruncated;
  t14.mma_bits = 14;
  ASSERT_TRUE(run_wgmma(true, WgFault::kNone, t14, a, b, &d).ok());
  int differ = 0;
  const compare::Mat allowed = mma_allowance(exact, abs_sum, 16);
  for (int i = 0; i < 64 * 16; ++i) {
    EXPECT_LE(std::abs(static_cast<double>(d[i]) - exact[i]), allowed(i / 16, i % 16)) << i;
    EXPECT_LE(std::abs(static_cast<double>(ieee[i]) - exact[i]), allowed(i / 16, i % 16)) << i;
    differ += d[i] != ieee[i] ? 1 : 0;
  }
  EXPECT_GT(differ, 0);
  // A descriptor whose swizzle differs from the TMA that wrote the tile, and a wrong stride.
  const LaunchReport sw = run_wgmma(true, WgFault::kDescSwizzle64, {.throw_on_error = false}, a, b, &d);
  EXPECT_TRUE(sw.has("swizzle_mismatch")) << sw.summary();
  const LaunchReport sbo = run_wgmma(true, WgFault::kWrongSbo, {.throw_on_error = false}, a, b, &d);
  EXPECT_TRUE(!sbo.ok() || d != ieee) << "a wrong stride byte offset went unnoticed";
  // Operands written with st.shared and no fence.proxy.async before the wgmma: the tensor cores
  // read through the async proxy and may see stale bytes.
  const LaunchReport nf = run_wgmma(false, WgFault::kNoProxyFence, {.throw_on_error = false}, a, b, &d);
  EXPECT_TRUE(nf.has("async_proxy")) << nf.summary();
  EXPECT_NE(nf.summary().find("fence.proxy.async"), std::string::npos) << nf.summary();
}

// wgmma m64n16k32 with fp8 e4m3 operands in the unswizzled core-matrix layout (16 values per
// 16-byte row of a core matrix): the IEEE model is the k-ordered fp32 sum of the exact products;
// the 14-bit aligned-truncated model stays within its bound.
TEST(SimtExecutor, WgmmaE4m3) {
  Rng rng(derive_seed("simt", "wgmma_e4m3", "", 5));
  std::vector<std::uint8_t> a(64 * 32), b(16 * 32);
  for (auto& x : a) x = fmt::e4m3_encode(std::ldexp(rng.normal(), static_cast<int>(rng.uniform() * 8) - 4));
  for (auto& x : b) x = fmt::e4m3_encode(rng.normal());
  std::vector<float> ieee(64 * 16);
  std::vector<double> exact(64 * 16), abs_sum(64 * 16);
  for (int m = 0; m < 64; ++m)
    for (int n = 0; n < 16; ++n) {
      float acc = 0.0f;
      for (int k = 0; k < 32; ++k) {
        const float p = fmt::e4m3_to_float(a[m * 32 + k]) * fmt::e4m3_to_float(b[n * 32 + k]);
        acc = acc + p;
        exact[m * 16 + n] += static_cast<double>(p);
        abs_sum[m * 16 + n] += std::abs(static_cast<double>(p));
      }
      ieee[m * 16 + n] = acc;
    }
  const auto run = [&](const RunOptions& opt) {
    Buffer<std::uint8_t> ga("A", a), gb("B", b);
    Buffer<float> out("D", 64 * 16, -1.0f);
    const gptr<const std::uint8_t> pa = ga.cptr(), pb = gb.cptr();
    const gptr<float> po = out.ptr();
    const LaunchReport r = launch(config("wgmma_e4m3", 1, 128, 4096), [&] {
      const sptr<unsigned char> sa = dynamic_smem<unsigned char>(), sb = sa + 2048;
      const unsigned tid = thread_idx().x;
      for (unsigned i = tid; i < 64 * 32; i += 128) {
        const unsigned row = i / 32, k = i % 32;
        st(sa + (row / 8) * 256 + (k / 16) * 128 + (row % 8) * 16 + k % 16, ld(pa + i));
        if (i < 16 * 32) st(sb + (row / 8) * 256 + (k / 16) * 128 + (row % 8) * 16 + k % 16, ld(pb + i));
      }
      fence_proxy_async();
      sync_threads();
      float d[8] = {};
      wgmma_fence();
      wgmma_e4m3_ss<16>(d, make_smem_desc(sa, 128, 256, Swizzle::kNone),
                        make_smem_desc(sb, 128, 256, Swizzle::kNone), false);
      wgmma_commit_group();
      wgmma_wait_group<0>();
      const unsigned warp = tid / 32, lane = tid % 32;
      for (int i = 0; i < 2; ++i)
        for (int q = 0; q < 4; ++q)
          st(po + (16 * warp + lane / 4 + (q / 2) * 8) * 16 + 8 * i + 2 * (lane % 4) + q % 2, d[4 * i + q]);
    }, opt);
    EXPECT_TRUE(r.ok()) << r.summary();
    return out.read();
  };
  EXPECT_EQ(run({}), ieee);
  RunOptions t14;
  t14.mma_model = MmaModel::kAlignedTruncated;
  t14.mma_bits = 14;
  const std::vector<float> d = run(t14);
  const compare::Mat allowed = mma_allowance(exact, abs_sum, 32);
  for (int i = 0; i < 64 * 16; ++i)
    EXPECT_LE(std::abs(static_cast<double>(d[i]) - exact[i]), allowed(i / 16, i % 16)) << i;
}

TEST(SimtExecutor, MbarrierMisuseIsNamed) {
  const LaunchReport zero = launch(config("mbar_zero", 1, 32, 64), [&] {
    const sptr<std::uint64_t> bar = dynamic_smem<std::uint64_t>();
    if (thread_idx().x == 0) mbar_init(bar, 0);
    sync_threads();
    mbar_arrive(bar);
  }, {.throw_on_error = false});
  EXPECT_TRUE(zero.has("mbarrier")) << zero.summary();
  EXPECT_NE(zero.summary().find("count 0"), std::string::npos) << zero.summary();
  EXPECT_NE(zero.summary().find("which no mbarrier.init initialised"), std::string::npos)
      << zero.summary();
}

TEST(SimtExecutor, BankConflictsOfAStridedSharedAccess) {
  LaunchReport r = launch(config("banks", 1, 32, 32 * 33 * 4), [&] {
    const sptr<float> s = dynamic_smem<float>();
    const unsigned t = thread_idx().x;
    st(s + t * 32, 1.0f);  // stride 32 words: every lane in bank 0
    st(s + t * 33, 2.0f);  // stride 33: conflict-free
  });
  ASSERT_EQ(r.sites.size(), 2u);
  EXPECT_EQ(r.sites[0].worst_bank_ways, 32) << r.sites[0].site;
  EXPECT_EQ(r.sites[1].worst_bank_ways, 1) << r.sites[1].site;
}

TEST(SimtExecutor, BadLaunchConfigurationsAreNamed) {
  auto k = [] {};
  LaunchConfig c = config("bad", 3, 64);
  c.cluster = {2, 1, 1};
  EXPECT_THROW(launch(c, k), LaunchError);
  c = config("bad", 1, 2048);
  EXPECT_THROW(launch(c, k), LaunchError);
  c = config("bad", 1, 32, 300000);
  try {
    launch(c, k);
    FAIL();
  } catch (const LaunchError& e) {
    EXPECT_NE(std::string(e.what()).find("'bad'"), std::string::npos);
  }
}

}  // namespace
}  // namespace v4ref::cuda::simt
