// The runner's real-shape cases marked slow (V4-Flash compressors and expert; label slow): the
// fp64 reference and the fp32 port pass, and a 25% error on the largest output element is caught.
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>

#include "v4ref/compare/runner.hpp"

namespace v4ref::compare {

void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }

namespace {

std::vector<Case> slow_cases() {
  std::vector<Case> out;
  for (const Case& c : case_table(0))
    if (c.slow) out.push_back(c);
  return out;
}

class RunnerSlowCases : public ::testing::TestWithParam<Case> {};

TEST_P(RunnerSlowCases, ReferenceAndFp32PortPassAndErrorsAreCaught) {
  const Case& c = GetParam();
  const ComponentSpec& spec = component(c.component);
  const TensorSet inputs = spec.make_inputs(c, case_config(c));
  const References refs = compute_references(c, inputs);
  const TensorSet k =
      fp32_implementation()->run(ComponentCall{c, case_config(c), c.policy(), inputs});
  const CaseResult fp32 = judge_case(c, "fp32", "fp32", refs, &k);
  EXPECT_TRUE(fp32.pass) << fp32.report();
  TensorSet r;
  for (const std::string& o : spec.outputs) r.put(o, refs.ref_q.at(o), refs.ref_q.dtype(o));
  const CaseResult self = judge_case(c, "reference", "fp64", refs, &r);
  EXPECT_TRUE(self.pass) << self.report();
  Mat bad = r.at(spec.outputs[0]);
  Eigen::Index at = 0;
  for (Eigen::Index i = 0; i < bad.size(); ++i)
    if (std::fabs(bad.data()[i]) > std::fabs(bad.data()[at])) at = i;
  bad.data()[at] *= 1.25;
  r.put(spec.outputs[0], bad, refs.ref_q.dtype(spec.outputs[0]));
  EXPECT_FALSE(judge_case(c, "perturbed", "fp32", refs, &r).pass);
}

INSTANTIATE_TEST_SUITE_P(Table, RunnerSlowCases, ::testing::ValuesIn(slow_cases()),
                         [](const ::testing::TestParamInfo<Case>& p) {
                           return p.param.test_name();
                         });

}  // namespace
}  // namespace v4ref::compare
