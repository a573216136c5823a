// The mHC kernels (cuda/src/mhc_kernels.cuh) from their own source in the SIMT executor: the
// bits of the kernels' order on every seed and launch geometry, the traffic tables, and the
// control-flow faults that only running the source can see (docs/simt.md §5).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "../common/mhc_inputs.hpp"
#include "v4ref/cuda/mhc.hpp"
#include "v4ref/cuda/mhc_simt.hpp"

namespace v4ref::cuda {
namespace {

using mhc::MhcFault;
using test::MhcInputs;
using test::synthetic_mhc_inputs;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Geometry {
  const char* name;
  std::int64_t tokens, d;
  bool fused;
  int cluster, clusters;
};

// Shown by GoogleTest and ctest instead of the struct's bytes.
void PrintTo(const Geometry& c, std::ostream* os) { *os << c.name; }

class MhcSimt : public ::testing::TestWithParam<Geometry> {};

// The result does not depend on the block order, the interleaving of threads between
// synchronisation points, or the number of persistent clusters (bitwise): seeds 0..2 on the
// geometry's grid and seed 0 on one cluster give the same bits, and the executor reports nothing.
// (Before the kernels ran from their source, a hand-written re-implementation of this order was
// the CPU executor; the source reproduced it bit for bit on these geometries.)
TEST_P(MhcSimt, SameBitsOnEverySeedAndGrid) {
  const Geometry g = GetParam();
  const MhcInputs in = synthetic_mhc_inputs(std::string("simt/") + g.name, g.tokens, g.d, g.fused);
  MhcSimtOptions o;
  o.cluster = g.cluster;
  o.clusters = 1;
  const MhcSimtOutputs want = mhc_pre_simt(in.problem(), o);
  ASSERT_TRUE(want.pre.ok()) << want.pre.summary();
  for (const std::uint16_t u : want.u) ASSERT_NE(u, 0x7FC1) << "an element of u was not written";
  const std::vector<std::uint16_t> post = g.fused ? mhc_post_simt(in.problem(), 1, o)
                                                  : std::vector<std::uint16_t>{};
  if (g.fused) {
    EXPECT_EQ(post, want.x_out);  // the standalone write-back equals the fused one
  }
  for (std::uint64_t seed : {0u, 1u, 2u}) {
    o.clusters = g.clusters;
    o.run.seed = seed;
    const MhcSimtOutputs got = mhc_pre_simt(in.problem(), o);
    EXPECT_TRUE(got.pre.ok()) << got.pre.summary();
    EXPECT_TRUE(got.guards_intact);
    EXPECT_EQ(got.x_out, want.x_out) << "seed " << seed;
    EXPECT_EQ(got.u, want.u) << "seed " << seed;
    EXPECT_TRUE(same_bits(got.coef, want.coef)) << "seed " << seed;
    EXPECT_TRUE(same_bits(got.mu, want.mu)) << "seed " << seed;
    if (g.fused) {
      simt::LaunchReport pr;
      EXPECT_EQ(mhc_post_simt(in.problem(), 3, o, &pr), post) << "seed " << seed;
      EXPECT_TRUE(pr.ok()) << pr.summary();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Geometries, MhcSimt,
                         ::testing::Values(Geometry{"d512_fused_T45_S16_G1", 45, 512, true, 16, 1},
                                           Geometry{"d512_fused_T97_S4_G2", 97, 512, true, 4, 2},
                                           Geometry{"d512_pre_T97_S8_G3", 97, 512, false, 8, 3},
                                           Geometry{"d128_fused_T65_S1_G2", 65, 128, true, 1, 2},
                                           Geometry{"d256_fused_T1_S2_G1", 1, 256, true, 2, 1}),
                         [](const ::testing::TestParamInfo<Geometry>& i) { return i.param.name; });

// The memory tables of the fused launch, per access site of the source (what Nsight Compute's
// source view would show), written to the build tree for the report:
//   fn staging (cp.async, 16 B per lane, contiguous)        16 sectors per request
//   X and F (16 B per lane, lane = token)                   32 sectors per request: each lane uses
//                                                           half a sector, the next chunk's load
//                                                           the other half
//   fn in shared memory (16 B, one address per warp)        conflict-free (broadcast)
//   post / comb (4 B per lane, one 96-byte row per token)   ~32 sectors per request, re-read for
//                                                           every element: L1 absorbs them on the
//                                                           device, the table shows the cost
TEST(MhcSimt, FusedLaunchMemoryTables) {
  const std::int64_t T = 64, d = 512;
  const MhcInputs in = synthetic_mhc_inputs("simt/traffic", T, d, true);
  MhcSimtOptions o;
  o.cluster = 8;
  o.clusters = 2;
  const MhcSimtOutputs got = mhc_pre_simt(in.problem(), o);
  const simt::LaunchReport& r = got.pre;
  ASSERT_TRUE(r.ok()) << r.summary();
  std::uint64_t sectors = 0;
  int staging = 0, streams = 0, fn_shared = 0, rows = 0;
  for (const simt::SiteStats& s : r.sites) {
    sectors += s.sectors;
    if (s.op == "cp.async") {
      ++staging;
      EXPECT_EQ(s.sectors_per_request, 16.0) << s.site;
    } else if (s.space == "global" && s.op == "ld.nc" && s.access_bytes == 16) {
      ++streams;
      EXPECT_EQ(s.sectors_per_request, 32.0) << s.site;
    } else if (s.space == "shared" && s.op == "ld" && s.access_bytes == 16 &&
               s.site.find("mhc_tile.hpp") != std::string::npos) {
      ++fn_shared;
      EXPECT_EQ(s.worst_bank_ways, 1) << s.site;
    } else if (s.space == "global" && s.op == "ld" && s.access_bytes == 4) {
      ++rows;
      EXPECT_GT(s.sectors_per_request, 24.0) << s.site;
    }
  }
  EXPECT_EQ(staging, 1);
  EXPECT_EQ(streams, 2);   // X, F
  EXPECT_EQ(fn_shared, 2); // the two 16-byte halves of an 8-float fn group
  EXPECT_EQ(rows, 1);      // post and comb share post_value's load site
  EXPECT_EQ(sectors, r.sectors_g);
  EXPECT_DOUBLE_EQ(r.traffic_ratio,
                   static_cast<double>(r.sectors_g) * 32 / mhc_fused_bytes(T, d));
  EXPECT_GT(r.mix.cluster_barriers, 0u);
  // The counted fp32 work is the kernel's formula (mhc_fused_flops: 24 mixing fmas, the square
  // sum, the write-back and the collapse per element) plus the per-token coefficients (< 1%).
  EXPECT_GE(r.cuda_core_flops, mhc_fused_flops(T, d));
  EXPECT_LE(r.cuda_core_flops, 1.02 * mhc_fused_flops(T, d));
  const std::string dir = std::string(V4REF_BINARY_DIR) + "/simt-reports";
  std::filesystem::create_directories(dir);
  simt::write_report(r, dir + "/mhc_pre_fused-T64-d512.json");
  std::printf("mhc_pre_kernel<fused> T=64 d=512: traffic ratio %.2f, t_lower H100 %.2f us\n",
              r.traffic_ratio, r.t_lower_h100_us);
}

// ---------------------------------------------------------------- faults in control flow only

struct FaultCase {
  MhcFault fault;
  const char* name;
  bool post_kernel;  // the fault lives in mhc_post_kernel
};

// A fault is caught when the launch reports a finding (bounds, race, uninitialised read,
// cp.async, DSMEM, deadlock) or its outputs differ from the correct kernel's.
struct Verdict {
  bool caught = false;
  std::string how;
};

Verdict judge(const FaultCase& fc) {
  const MhcInputs in = synthetic_mhc_inputs("simt/faults", 45, 512, true);
  MhcSimtOptions good;
  good.cluster = 4;
  good.clusters = 1;
  const MhcSimtOutputs ref = mhc_pre_simt(in.problem(), good);
  const std::vector<std::uint16_t> ref_post = mhc_post_simt(in.problem(), 2, good);
  Verdict v;
  for (std::uint64_t seed = 0; seed < 3 && !v.caught; ++seed) {
    MhcSimtOptions o = good;
    o.fault = fc.fault;
    o.run.seed = seed;
    o.run.throw_on_error = false;
    if (fc.post_kernel) {
      simt::LaunchReport r;
      const std::vector<std::uint16_t> out = mhc_post_simt(in.problem(), 2, o, &r);
      if (!r.ok()) v = {true, r.findings.front().kind};
      else if (out != ref_post) v = {true, "wrong output"};
      continue;
    }
    const MhcSimtOutputs got = mhc_pre_simt(in.problem(), o);
    if (!got.pack.ok()) v = {true, got.pack.findings.front().kind};
    else if (!got.pre.ok()) v = {true, got.pre.findings.front().kind};
    else if (!got.guards_intact) v = {true, "guard overwritten"};
    else if (got.x_out != ref.x_out || got.u != ref.u || !same_bits(got.coef, ref.coef))
      v = {true, "wrong output"};
  }
  return v;
}

// Shown by GoogleTest and ctest instead of the struct's bytes.
void PrintTo(const FaultCase& c, std::ostream* os) { *os << c.name; }

class MhcSimtFault : public ::testing::TestWithParam<FaultCase> {};

TEST_P(MhcSimtFault, IsCaught) {
  const Verdict v = judge(GetParam());
  EXPECT_TRUE(v.caught) << GetParam().name << " went unnoticed";
  std::printf("fault %-28s caught by: %s\n", GetParam().name, v.how.c_str());
}

INSTANTIATE_TEST_SUITE_P(
    Faults, MhcSimtFault,
    ::testing::Values(FaultCase{MhcFault::kStagingOffsetByOne, "staging_offset_by_one", false},
                      FaultCase{MhcFault::kNoWarpSyncAfterStage, "no_wait_after_cp_async", false},
                      FaultCase{MhcFault::kDsmemRankWrong, "dsmem_rank_wrong", false},
                      FaultCase{MhcFault::kMissingClusterWait, "missing_cluster_wait", false},
                      FaultCase{MhcFault::kPartialsNoBarrier, "partials_no_barrier", false},
                      FaultCase{MhcFault::kTailGuardMissing, "coef_tail_guard_missing", false},
                      FaultCase{MhcFault::kCollapseTailOffByOne, "collapse_tail_off_by_one", false},
                      FaultCase{MhcFault::kPostGridStrideBound, "post_grid_stride_bound", true},
                      FaultCase{MhcFault::kPreDoubleBufferShared, "pre_not_double_buffered", false},
                      FaultCase{MhcFault::kLastClusterWaitMissing, "last_cluster_wait_missing", false},
                      FaultCase{MhcFault::kCoefWarpSyncMissing, "coef_warp_sync_missing", false},
                      FaultCase{MhcFault::kPackFnIndexSwap, "pack_fn_index_swap", false}),
    [](const ::testing::TestParamInfo<FaultCase>& i) { return i.param.name; });

}  // namespace
}  // namespace v4ref::cuda
