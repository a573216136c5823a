// The mHC and compressor kernels' CPU executors judged by compare/'s differential runner
// (tests/common/executor_implementation.hpp): every official-mode case of the runner's table for
// hc_pre, hc_post, compressor and indexer_compressor, plus official-mode cases of the other input
// kinds, ratios and the real V4-Flash widths, over three global seeds, must pass the fp32 rows
// of the tolerance table; each deliberate integration fault must be caught.
// (The executor tests in tests/reference/*_executor_test.cpp gate every rounding point of the
// kernels on their own inputs; this test puts the same arithmetic through the runner's cases,
// tolerance table and failure bundles, as a CUDA implementation of the runner would be.)
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "../common/executor_implementation.hpp"
#include "v4ref/compare/runner.hpp"

namespace v4ref::compare {

// GoogleTest prints a case by its name (found by ADL).
void PrintTo(const Case& c, std::ostream* os) { *os << c.name() << " seed " << c.global_seed; }

namespace {

using test::ExecutorFault;
using test::KernelExecutors;

class ExecutorRunner : public ::testing::TestWithParam<Case> {};

TEST_P(ExecutorRunner, KernelArithmeticPassesTheFp32Rows) {
  const KernelExecutors impl;
  ASSERT_TRUE(impl.supports(GetParam()));
  const CaseResult r = run_case(GetParam(), impl, RunnerOptions{{}, "", ""});
  EXPECT_TRUE(r.pass) << r.report();
  ASSERT_FALSE(r.outputs.empty());
  for (const OutputJudgement& j : r.outputs) {
    EXPECT_TRUE(std::isfinite(j.metrics.max_abs)) << j.output << ": poison left in the output";
    std::printf("%-58s %-8s %-5s rel_fro %.2e  bound_ratio %.3f\n", GetParam().name().c_str(),
                j.output.c_str(), j.gate.c_str(), j.metrics.rel_fro, j.bound_ratio);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ExecutorRunner, ::testing::ValuesIn(test::executor_runner_cases()),
                         [](const ::testing::TestParamInfo<Case>& p) {
                           return p.param.test_name() + "_s" + std::to_string(p.param.global_seed);
                         });

TEST(ExecutorRunnerTable, CoversEveryKernelComponentInTheRunnersOwnTable) {
  const KernelExecutors impl;
  std::map<std::string, int> from_table;
  for (const Case& c : case_table(0))
    if (impl.supports(c)) ++from_table[c.component];
  for (const char* comp : {"hc_pre", "hc_post", "compressor", "indexer_compressor",
                           "compressor_decode", "indexer_compressor_decode"})
    EXPECT_GE(from_table[comp], 1) << comp << " has no official-mode case in case_table()";
  // Exact-mode cases are refused, not silently approximated.
  for (const Case& c : case_table(0))
    if (c.mode == PrecisionMode::kExact && c.component == "hc_pre") {
      EXPECT_FALSE(impl.supports(c));
      const ComponentSpec& spec = component(c.component);
      const TensorSet in = spec.make_inputs(c, case_config(c));
      EXPECT_THROW(impl.run({c, case_config(c), PrecisionPolicy::exact(), in}), ConfigError);
      break;
    }
}

// Integration faults: the runner must fail every case the fault touches.
TEST(ExecutorRunnerFaults, EveryFaultIsCaughtOnEveryCaseItTouches) {
  int caught = 0, total = 0;
  for (const ExecutorFault f : test::kExecutorFaults) {
    const KernelExecutors impl(f);
    for (const Case& c : test::executor_runner_cases()) {
      if (c.global_seed != 0 || !test::fault_touches(f, c)) continue;
      ++total;
      const CaseResult r = run_case(c, impl, RunnerOptions{{}, "", ""});
      if (!r.pass) ++caught;
      EXPECT_FALSE(r.pass) << impl.name() << " passed " << c.name() << "\n" << r.report();
    }
  }
  std::printf("executor integration faults caught: %d/%d cases\n", caught, total);
  EXPECT_EQ(caught, total);
}

}  // namespace
}  // namespace v4ref::compare
