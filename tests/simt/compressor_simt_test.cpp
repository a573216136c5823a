// The compressor kernels (cuda/src/compressor_kernels.cuh) from their own source in the SIMT
// executor: seed invariance, the memory tables, and the control-flow faults that only running the
// source can see (docs/simt.md §5). Numerics against the reference: compressor_executor_test.cpp.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "../common/compressor_inputs.hpp"
#include "v4ref/cuda/compressor.hpp"
#include "v4ref/cuda/compressor_simt.hpp"

namespace v4ref::cuda {
namespace {

using cmp::CompressorFault;
using test::CompressorInputs;

struct KernelRun {
  std::vector<std::uint8_t> cache;
  simt::LaunchReport report;
  // decode: the rows the decode steps complete after the hand-off at p, and the final state
  std::vector<std::uint8_t> decoded;
  std::vector<float> kv, score;
  bool ok = true;
  std::string first;
};

KernelRun prefill(const CompressorInputs& in, const CompressorSimtOptions& o) {
  KernelRun r;
  r.cache.assign(static_cast<std::size_t>(in.tokens / in.dm.ratio * in.dm.row_bytes()), 0xA5);
  r.report = compressor_prefill_simt(in.problem(), r.cache.data(), {}, o);
  r.ok = r.report.ok();
  if (!r.ok) r.first = r.report.findings.front().kind;
  return r;
}

KernelRun decode(const CompressorInputs& in, std::int64_t p, const CompressorSimtOptions& o) {
  KernelRun r;
  cmp::PrefillProblem head = in.problem();
  head.tokens = p;
  cmp::DecodeState st = compressor_prefill_state_simt(head, o);
  const cmp::Dims& dm = in.dm;
  const auto rb = static_cast<std::size_t>(dm.row_bytes());
  for (std::int64_t t = p; t < in.tokens; ++t) {
    const std::int64_t j = t / dm.ratio;
    std::vector<std::uint8_t> row(rb, 0xA5);
    simt::LaunchReport rep;
    const bool done = compressor_decode_step_simt(
        dm, st, t, in.a.data() + t * dm.cw(), in.g.data() + t * dm.cw(), in.ape.data(),
        in.norm_w.data(), in.eps, cmp::RopeRow{in.cos.data() + j * 32, in.sin.data() + j * 32},
        row.data(), {}, o, &rep);
    if (!rep.ok() && r.ok) {
      r.ok = false;
      r.first = rep.findings.front().kind;
    }
    if (done) r.decoded.insert(r.decoded.end(), row.begin(), row.end());
  }
  r.kv = st.kv;
  r.score = st.score;
  return r;
}

// ---------------------------------------------------------------- invariance and tables

TEST(CompressorSimt, SameBitsOnEverySeed) {
  const CompressorInputs main = test::synthetic_compressor_inputs("simt/c4_w512", 4, 512, 37);
  const CompressorInputs idx = test::synthetic_indexer_inputs("simt/idx", 37);
  const CompressorInputs hca = test::synthetic_compressor_inputs("simt/c128_w256", 128, 256, 260);
  for (const CompressorInputs* in : {&main, &idx, &hca}) {
    CompressorSimtOptions o;
    const KernelRun want = prefill(*in, o);
    ASSERT_TRUE(want.ok) << want.report.summary();
    for (std::uint64_t seed : {1u, 2u, 3u}) {
      o.run.seed = seed;
      const KernelRun got = prefill(*in, o);
      EXPECT_TRUE(got.ok) << got.report.summary();
      EXPECT_EQ(got.cache, want.cache) << in->name << " seed " << seed;
    }
  }
}

// The prefill's memory tables, per access site (docs/simt.md §4): a, g and ape are 16 B per lane
// over contiguous channels (16 sectors per request); the logits tile is read back with no bank
// conflict; the traffic over the compulsory bytes is the CSA overlap (each token row is read by
// two entries) plus ape per entry, which L2 absorbs on the device.
TEST(CompressorSimt, PrefillMemoryTables) {
  const CompressorInputs in = test::synthetic_compressor_inputs("simt/tables", 4, 512, 64);
  const KernelRun r = prefill(in, {});
  ASSERT_TRUE(r.ok) << r.report.summary();
  int streams = 0;
  for (const simt::SiteStats& s : r.report.sites) {
    if (s.space == "global" && s.access_bytes == 16 && s.op != "st") {
      ++streams;
      EXPECT_EQ(s.sectors_per_request, 16.0) << s.site;
    }
    if (s.space == "shared" && s.access_bytes == 16) {
      EXPECT_EQ(s.worst_bank_ways, 1) << s.site;
    }
  }
  EXPECT_EQ(streams, 2);  // a and g share load_slot4's site; ape
  EXPECT_GT(r.report.traffic_ratio, 1.0);
  EXPECT_LT(r.report.traffic_ratio, 3.5);
  const std::string dir = std::string(V4REF_BINARY_DIR) + "/simt-reports";
  std::filesystem::create_directories(dir);
  simt::write_report(r.report, dir + "/compressor_prefill-c4-w512-T64.json");
  std::printf("compressor_prefill_kernel c4 w512 T=64: traffic ratio %.2f\n", r.report.traffic_ratio);
}

// ---------------------------------------------------------------- faults in control flow only

struct FaultCase {
  CompressorFault fault;
  const char* name;
  enum { kMain, kHca, kIndexer } shape;
  bool decode;
};

// Shown by GoogleTest and ctest instead of the struct's bytes.
void PrintTo(const FaultCase& c, std::ostream* os) { *os << c.name; }

class CompressorSimtFault : public ::testing::TestWithParam<FaultCase> {};

TEST_P(CompressorSimtFault, IsCaught) {
  const FaultCase& fc = GetParam();
  const CompressorInputs in =
      fc.shape == FaultCase::kIndexer ? test::synthetic_indexer_inputs("simt/fault_idx", 24)
      : fc.shape == FaultCase::kHca ? test::synthetic_compressor_inputs("simt/fault_hca", 128, 512, 256)
                                    : test::synthetic_compressor_inputs("simt/fault_c4", 4, 512, 24);
  const std::int64_t p = 5;  // decode: hand-off after 5 tokens, then one step per token
  const KernelRun want = fc.decode ? decode(in, p, {}) : prefill(in, {});
  ASSERT_TRUE(want.ok) << want.first;
  std::string how;
  for (std::uint64_t seed = 0; seed < 3 && how.empty(); ++seed) {
    CompressorSimtOptions o;
    o.fault = fc.fault;
    o.run.seed = seed;
    o.run.throw_on_error = false;
    const KernelRun got = fc.decode ? decode(in, p, o) : prefill(in, o);
    if (!got.ok) how = got.first;
    else if (got.cache != want.cache || got.decoded != want.decoded || got.kv != want.kv)
      how = "wrong output";
  }
  EXPECT_FALSE(how.empty()) << fc.name << " went unnoticed";
  std::printf("fault %-28s caught by: %s\n", fc.name, how.c_str());
}

INSTANTIATE_TEST_SUITE_P(
    Faults, CompressorSimtFault,
    ::testing::Values(
        FaultCase{CompressorFault::kQ8ShuffleCrossesBlocks, "q8_shuffle_crosses_blocks", FaultCase::kMain, false},
        FaultCase{CompressorFault::kRowPaddingPastEnd, "row_padding_past_end", FaultCase::kMain, false},
        FaultCase{CompressorFault::kHadamardHalfMask, "hadamard_half_mask", FaultCase::kIndexer, false},
        FaultCase{CompressorFault::kNoBarrierAfterMax, "no_barrier_after_max", FaultCase::kHca, false},
        FaultCase{CompressorFault::kSsboxOwnRank, "ssbox_own_rank", FaultCase::kMain, false},
        FaultCase{CompressorFault::kNoExitClusterBarrier, "no_exit_cluster_barrier", FaultCase::kMain, false},
        FaultCase{CompressorFault::kStateShiftOffByOne, "state_shift_off_by_one", FaultCase::kMain, true}),
    [](const ::testing::TestParamInfo<FaultCase>& i) { return i.param.name; });

}  // namespace
}  // namespace v4ref::cuda
