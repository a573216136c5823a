// Compile-only kernels that use every SIMT dialect function no shipped kernel uses yet (mbarrier,
// bulk and TMA copies, votes, the shuffle variants, shared atomics), so that nvcc and ptxas check
// their inline PTX in CI (docs/simt.md §1). Never launched.
#include "v4ref/cuda/simt/simt.hpp"

namespace v4ref::cuda::simt_dialect {

using namespace v4ref::cuda::simt;  // NOLINT: the dialect is the kernels' vocabulary

__global__ void simt_dialect_async_copy_kernel(gptr<const float> src, gptr<float> out) {
  const sptr<std::uint64_t> bar = dynamic_smem<std::uint64_t>();
  const sptr<float> buf = scast<float>(bar + 2);
  if (thread_idx().x == 0) {
    mbar_init(bar, 1);
    mbar_init(bar + 1, block_dim().x);
    fence_mbarrier_init();
  }
  sync_threads();
  if (thread_idx().x == 0) {
    mbar_arrive_expect_tx(bar, 256);
    bulk_copy_g2s(buf, src, 256, bar);
  }
  mbar_wait_parity(bar, 0);
  const float v = ld(buf + thread_idx().x % 64);
  const unsigned lanes = ballot(kFullMask, v > 0.0f);
  const bool any = vote_any(kFullMask, v < 0.0f), all = vote_all(kFullMask, v == v);
  float w = shfl(kFullMask, v, 3) + shfl_down(kFullMask, v, 1u) + shfl_up(kFullMask, v, 1u);
  atomic_add(scast<unsigned>(buf + 64), lanes);
  st(out + thread_idx().x, w + (any ? 1.0f : 0.0f) + (all ? 2.0f : 0.0f));
  mbar_arrive(bar + 1);
}

__global__ void simt_dialect_tma_kernel(const __grid_constant__ TensorMap2d tm, gptr<float> out) {
  const sptr<std::uint64_t> bar = dynamic_smem<std::uint64_t>();
  const sptr<float> tile = scast<float>(bar + 128);  // 1024 bytes in: a 128-byte swizzled tile
  if (thread_idx().x == 0) {
    mbar_init(bar, 1);
    mbar_arrive_expect_tx(bar, 4096);
    tma_load_2d(tile, tm, 0, 0, bar);
  }
  mbar_wait_parity(bar, 0);
  st(out + thread_idx().x,
     ld(tile + swizzle_offset(Swizzle::k128B, thread_idx().x * 4) / 4));
}

__global__ void simt_dialect_wgmma_kernel(gptr<float> out) {
  const sptr<unsigned char> smem = dynamic_smem<unsigned char>();
  const std::uint64_t da = make_smem_desc(smem, 16, 256, Swizzle::k32B);
  const std::uint64_t db = make_smem_desc(smem + 2048, 128, 256, Swizzle::kNone);
  float d16[8] = {};
  float d64[32] = {};
  wgmma_fence();
  wgmma_bf16_ss<16>(d16, da, db, false);
  wgmma_bf16_ss<64>(d64, da, db, true);
  wgmma_e4m3_ss<16>(d16, da, db, true);
  wgmma_e4m3_ss<64>(d64, da, db, true);
  wgmma_commit_group();
  wgmma_wait_group<0>();
  float s = 0.0f;
  for (float v : d16) s += v;
  for (float v : d64) s += v;
  st(out + thread_idx().x, s);
}

}  // namespace v4ref::cuda::simt_dialect
