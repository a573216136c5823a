// The indexer kernels (logits: cuda/src/indexer_kernels.cuh; top-k: cuda/src/topk_kernels.cuh)
// from their own source in the SIMT executor, judged by compare/'s differential runner
// (tests/common/indexer_implementation.hpp) on every case of the runner's table for
// index_logits, topk and indexer_decode over three global seeds; and every defect injected into
// the kernels' source (the mutants of docs/cuda-indexer.md) fails at least one of those cases.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "../common/indexer_implementation.hpp"
#include "v4ref/compare/runner.hpp"

namespace v4ref::compare {

void PrintTo(const Case& c, std::ostream* os) { *os << c.name() << " seed " << c.global_seed; }

namespace {

using test::IndexerFaultSite;
using test::IndexerKernels;

std::vector<Case> indexer_cases() {
  const IndexerKernels impl;
  std::vector<Case> out;
  for (std::uint64_t seed : {0u, 1u, 2u})
    for (const Case& c : case_table(seed))
      if (impl.supports(c) && !c.slow) out.push_back(c);
  return out;
}

class IndexerRunner : public ::testing::TestWithParam<Case> {};

TEST_P(IndexerRunner, KernelsPassTheFp32Rows) {
  const IndexerKernels impl;
  const CaseResult r = run_case(GetParam(), impl, RunnerOptions{{}, "", ""});
  EXPECT_TRUE(r.pass) << r.report();
  ASSERT_FALSE(r.outputs.empty());
  for (const OutputJudgement& j : r.outputs)
    std::printf("%-64s %-9s %-5s rel_fro %.2e bound_ratio %.3g %s\n", GetParam().name().c_str(), j.output.c_str(),
                j.gate.c_str(), j.metrics.rel_fro, j.bound_ratio,
                j.set ? j.set->summary().c_str() : "");
}

INSTANTIATE_TEST_SUITE_P(Cases, IndexerRunner, ::testing::ValuesIn(indexer_cases()),
                         [](const ::testing::TestParamInfo<Case>& p) {
                           return p.param.test_name() + "_s" + std::to_string(p.param.global_seed);
                         });

TEST(IndexerRunnerTable, CoversEveryComponentFormatAndKind) {
  std::map<std::string, int> n;
  for (const Case& c : indexer_cases())
    if (c.global_seed == 0)
      n[c.component + (c.dim_or("fmt", -1) >= 0 ? "/fmt" + std::to_string(c.dim("fmt")) : "") + "/" +
        std::string(input_kind_name(c.kind))]++;
  for (const char* key : {"index_logits/fmt0/random", "index_logits/fmt1/random", "index_logits/fmt0/topk_ties",
                          "index_logits/fmt0/all_masked", "index_logits/fmt1/format_extremes", "topk/random",
                          "topk/topk_ties", "topk/all_masked", "topk/format_extremes",
                          "indexer_decode/fmt0/random", "indexer_decode/fmt1/random",
                          "indexer_decode/fmt0/topk_ties", "indexer_decode/fmt1/all_masked"})
    EXPECT_GE(n[key], 1) << key;
}

// Each mutant of the kernels' source fails at least one tiny-config case of the table (seed 0).
TEST(IndexerRunnerMutants, EveryKernelDefectFailsACase) {
  struct Mutant {
    IndexerFaultSite site;
    int fault;
    const char* name;
  };
  const Mutant mutants[] = {
      {IndexerFaultSite::kLogits, 1, "logits: visibility off by one"},
      {IndexerFaultSite::kLogits, 2, "logits: nibble order"},
      {IndexerFaultSite::kLogits, 3, "logits: scale row misread"},
      {IndexerFaultSite::kLogits, 4, "logits: ReLU missing"},
      {IndexerFaultSite::kLogits, 5, "logits: ReLU after the head sum"},
      {IndexerFaultSite::kLogits, 6, "logits: head-weight index"},
      {IndexerFaultSite::kLogits, 7, "logits: page-table offset"},
      {IndexerFaultSite::kLogits, 8, "logits: no fence.proxy.async"},
      {IndexerFaultSite::kLogits, 9, "logits: no wait for the page copy"},
      {IndexerFaultSite::kLogits, 10, "fused: pending candidates lost"},
      {IndexerFaultSite::kTopk, 1, "top-k: ties to the higher index"},
      {IndexerFaultSite::kTopk, 2, "top-k: visibility off by one"},
      {IndexerFaultSite::kTopk, 3, "top-k: NaN selected"},
      {IndexerFaultSite::kTopk, 4, "top-k: -0 and +0 apart"},
      {IndexerFaultSite::kTopk, 5, "top-k: histogram cleared without a barrier"},
      {IndexerFaultSite::kTopk, 6, "top-k: a candidate lost at a tile boundary"},
  };
  std::vector<Case> cases;  // the tiny-config cases of seed 0 (the V4-Flash ones add time only)
  for (const Case& c : indexer_cases())
    if (c.global_seed == 0 && c.config == "tiny-flash") cases.push_back(c);
  for (const Mutant& m : mutants) {
    const IndexerKernels impl(m.site, m.fault);
    int failed = 0, run = 0;
    std::string first;
    for (const Case& c : cases) {
      if (m.site == IndexerFaultSite::kTopk && c.component == "index_logits") continue;
      if (m.site == IndexerFaultSite::kLogits && c.component == "topk") continue;
      ++run;
      const CaseResult r = run_case(c, impl, RunnerOptions{{}, "", ""});
      if (!r.pass && failed++ == 0) first = c.name();
    }
    std::printf("mutant %-44s failed %2d/%2d cases (first: %s)\n", m.name, failed, run, first.c_str());
    EXPECT_GE(failed, 1) << m.name << " passed every case";
  }
}

}  // namespace
}  // namespace v4ref::compare
