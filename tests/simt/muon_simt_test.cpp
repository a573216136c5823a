// The Muon element kernels (cuda/src/muon_kernels.cuh) from their own source in the SIMT
// executor: the memory tables of the transposes and the control-flow faults (docs/simt.md §5).
// Numerics against the reference: muon_executor_test.cpp.
#include <gtest/gtest.h>

#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "../common/muon_test_support.hpp"
#include "v4ref/cuda/muon.hpp"
#include "v4ref/cuda/muon_simt.hpp"

namespace v4ref::cuda {
namespace {

using ns::MuonFault;

std::vector<float> input(std::int64_t rows, std::int64_t cols) {
  return test::random_fp32(static_cast<std::size_t>(rows * cols),
                           derive_seed("muon_simt", "u", std::to_string(rows) + "x" + std::to_string(cols),
                                       test::global_seed()),
                           1.0);
}

const simt::SiteStats* site_of(const simt::LaunchReport& r, const char* space, const char* op) {
  for (const simt::SiteStats& s : r.sites)
    if (s.space == space && s.op == op) return &s;
  return nullptr;
}

// The transposes read and write their shared tile column-wise through a 33-element pitch. The fp32
// tile is conflict-free; without the padding column every lane of a request hits one bank (32
// ways). The bf16 tile of transpose_out is not quite: a column read at an odd row offset puts
// lane 31 (byte 66·31 + 2 = 2048) in lane 0's bank, so its worst request is 2-way.
TEST(MuonSimt, TransposeTilesAreConflictFree) {
  const std::vector<float> u = input(96, 48);
  std::vector<simt::LaunchReport> reports;
  MuonSimtOptions o;
  o.reports = &reports;
  const std::vector<std::uint16_t> good = muon_newton_schulz_simt(u.data(), 96, 48, v4_ns_stages(), 1e-7f, o);
  int checked = 0;
  for (const simt::LaunchReport& r : reports) {
    EXPECT_TRUE(r.ok()) << r.summary();
    if (r.config.kernel != "normalize_transpose_kernel" && r.config.kernel != "transpose_out_kernel")
      continue;
    for (const simt::SiteStats& s : r.sites)
      if (s.space == "shared") {
        const bool bf16_column_read = r.config.kernel == "transpose_out_kernel" && s.op == "ld";
        EXPECT_EQ(s.worst_bank_ways, bf16_column_read ? 2 : 1) << r.config.kernel << " " << s.site;
        ++checked;
      }
  }
  EXPECT_EQ(checked, 4);  // a store and a load in each transpose
  reports.clear();
  o.fault = MuonFault::kTileUnpadded;
  EXPECT_EQ(muon_newton_schulz_simt(u.data(), 96, 48, v4_ns_stages(), 1e-7f, o), good);
  const simt::SiteStats* ld = site_of(reports.at(2), "shared", "ld");
  ASSERT_EQ(reports.at(2).config.kernel, "normalize_transpose_kernel");
  ASSERT_NE(ld, nullptr);
  EXPECT_EQ(ld->worst_bank_ways, 32) << ld->site;
}

struct FaultCase {
  MuonFault fault;
  const char* name;
  std::int64_t rows, cols;
};

// Shown by GoogleTest and ctest instead of the struct's bytes.
void PrintTo(const FaultCase& c, std::ostream* os) { *os << c.name; }

class MuonSimtFault : public ::testing::TestWithParam<FaultCase> {};

TEST_P(MuonSimtFault, IsCaught) {
  const FaultCase& fc = GetParam();
  const std::vector<float> u = input(fc.rows, fc.cols);
  const std::vector<std::uint16_t> want =
      muon_newton_schulz_simt(u.data(), fc.rows, fc.cols, v4_ns_stages(), 1e-7f);
  std::string how;
  for (std::uint64_t seed = 0; seed < 3 && how.empty(); ++seed) {
    std::vector<simt::LaunchReport> reports;
    MuonSimtOptions o;
    o.fault = fc.fault;
    o.run.seed = seed;
    o.run.throw_on_error = false;
    o.reports = &reports;
    const std::vector<std::uint16_t> got =
        muon_newton_schulz_simt(u.data(), fc.rows, fc.cols, v4_ns_stages(), 1e-7f, o);
    for (const simt::LaunchReport& r : reports)
      if (!r.ok() && how.empty()) how = r.findings.front().kind;
    if (how.empty() && got != want) how = "wrong output";
  }
  EXPECT_FALSE(how.empty()) << fc.name << " went unnoticed";
  std::printf("fault %-28s caught by: %s\n", fc.name, how.c_str());
}

INSTANTIATE_TEST_SUITE_P(
    Faults, MuonSimtFault,
    ::testing::Values(FaultCase{MuonFault::kTreeLevelNoBarrier, "tree_level_no_barrier", 64, 128},
                      FaultCase{MuonFault::kTransposeTailGuard, "transpose_tail_guard", 90, 40},
                      FaultCase{MuonFault::kTransposeNoBarrier, "transpose_no_barrier", 96, 48},
                      FaultCase{MuonFault::kEpilogueStrideBound, "epilogue_stride_bound", 64, 128}),
    [](const ::testing::TestParamInfo<FaultCase>& i) { return i.param.name; });

}  // namespace
}  // namespace v4ref::cuda
