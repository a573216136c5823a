// The mHC kernels (cuda/src/mhc_kernels.cuh) run from their own source in the SIMT executor:
// the same launches as mhc_pre / mhc_post / mhc_pack_fn on the device (mhc.hpp), on host arrays.
// Host compiler only (docs/simt.md).
#pragma once

#include <cstdint>
#include <vector>

#include "v4ref/cuda/mhc_tile.hpp"
#include "v4ref/cuda/simt/executor.hpp"

namespace v4ref::cuda {

struct MhcSimtOptions {
  int cluster = 16;   // S: CTAs per cluster (mhc_plan's choice on an H100 is 16)
  int clusters = 0;   // persistent clusters (at most the batches, as mhc_plan); 0: 4
  simt::RunOptions run;
  mhc::MhcFault fault = mhc::MhcFault::kNone;  // tests only
  std::uint16_t poison_u16 = 0x7FC1;
  std::uint32_t poison_f32 = 0x7FC0DEADu;
};

struct MhcSimtOutputs {
  std::vector<std::uint16_t> x_out, u;  // x_out: fused mode only
  std::vector<float> coef, mu;
  bool guards_intact = false;            // no byte around an output was written
  simt::LaunchReport pack, pre;          // the two launches: mhc_pack_fn_kernel, mhc_pre_kernel
};

// Packs fn through mhc_pack_fn_kernel, then runs mhc_pre_kernel<fused> (fused: p.f != null).
MhcSimtOutputs mhc_pre_simt(const mhc::Problem& p, const MhcSimtOptions& opt = {});

// mhc_post_kernel over `blocks` blocks of 256 threads (0: as many as items need, at most 8).
std::vector<std::uint16_t> mhc_post_simt(const mhc::Problem& p, int blocks = 0,
                                         const MhcSimtOptions& opt = {},
                                         simt::LaunchReport* report = nullptr);

}  // namespace v4ref::cuda
