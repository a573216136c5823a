// The top-k kernel (cuda/src/topk_kernels.cuh) from its own source in the SIMT executor against
// the reference's rule (ref::select_topk, verification.md §9): the selected sets are identical on
// adversarial rows, and each injected fault is caught.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "../common/topk_inputs.hpp"
#include "v4ref/cuda/topk.hpp"
#include "v4ref/cuda/topk_simt.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::cuda {
namespace {

using test::adversarial_topk_rows;
using test::TopkRows;
using test::topk_reference;

TEST(TopkSimt, SelectsTheReferenceSetOnAdversarialRows) {
  const TopkRows r = adversarial_topk_rows();
  for (const std::int64_t k : {64, 512}) {
    simt::LaunchReport rep;
    TopkSimtOptions o;
    o.run.seed = static_cast<std::uint64_t>(k);
    const std::vector<std::int32_t> got =
        topk_simt(r.scores.data(), r.rows(), r.stride, r.visible.data(), k, o, &rep);
    ASSERT_TRUE(rep.ok()) << rep.summary();
    for (std::int64_t row = 0; row < r.rows(); ++row) {
      const std::vector<std::int32_t> want = topk_reference(r, row, k);
      const std::vector<std::int32_t> mine(got.begin() + row * k, got.begin() + (row + 1) * k);
      EXPECT_EQ(mine, want) << r.names[static_cast<std::size_t>(row)] << " k=" << k;
    }
    EXPECT_GT(rep.traffic_ratio, 0.0);
  }
}

// Decode rows at 64K context (16,384 candidates, Flash and Pro k) with ties across the cut.
TEST(TopkSimt, DecodeRowAt64KContext) {
  TopkRows r;
  r.stride = 16384;
  Rng rng(derive_seed("topk_simt", "64k", "", 5));
  std::vector<float> row(16384);
  for (float& x : row) x = static_cast<float>(rng.normal());
  for (std::size_t i = 0; i < row.size(); i += 29) row[i] = 2.0f;  // 565 ties above the cut
  r.add("64k_decode", row, 16384);
  for (const std::int64_t k : {512, 1024}) {
    simt::LaunchReport rep;
    const std::vector<std::int32_t> got =
        topk_simt(r.scores.data(), 1, r.stride, r.visible.data(), k, {}, &rep);
    ASSERT_TRUE(rep.ok()) << rep.summary();
    EXPECT_EQ(got, topk_reference(r, 0, k)) << "k=" << k;
  }
}

struct FaultCase {
  int fault;
  const char* name;
};
void PrintTo(const FaultCase& c, std::ostream* os) { *os << c.name; }

class TopkSimtFault : public ::testing::TestWithParam<FaultCase> {};

TEST_P(TopkSimtFault, IsCaught) {
  const TopkRows r = adversarial_topk_rows();
  const std::int64_t k = 512;
  std::string how;
  for (std::uint64_t seed = 0; seed < 3 && how.empty(); ++seed) {
    TopkSimtOptions o;
    o.fault = GetParam().fault;
    o.run.seed = seed;
    o.run.throw_on_error = false;
    simt::LaunchReport rep;
    const std::vector<std::int32_t> got =
        topk_simt(r.scores.data(), r.rows(), r.stride, r.visible.data(), k, o, &rep);
    if (!rep.ok()) {
      how = rep.findings.front().kind;
      break;
    }
    for (std::int64_t row = 0; row < r.rows() && how.empty(); ++row)
      if (!std::equal(got.begin() + row * k, got.begin() + (row + 1) * k, topk_reference(r, row, k).begin()))
        how = "wrong set (" + r.names[static_cast<std::size_t>(row)] + ")";
  }
  EXPECT_FALSE(how.empty()) << GetParam().name << " went unnoticed";
  std::printf("fault %-24s caught by: %s\n", GetParam().name, how.c_str());
}

INSTANTIATE_TEST_SUITE_P(Faults, TopkSimtFault,
                         ::testing::Values(FaultCase{1, "ties_highest_index"},
                                           FaultCase{2, "visible_off_by_one"},
                                           FaultCase{3, "nan_selected"},
                                           FaultCase{4, "signed_zero_apart"},
                                           FaultCase{5, "histogram_no_barrier"},
                                           FaultCase{6, "tile_boundary_lost"}),
                         [](const ::testing::TestParamInfo<FaultCase>& i) { return i.param.name; });

}  // namespace
}  // namespace v4ref::cuda
