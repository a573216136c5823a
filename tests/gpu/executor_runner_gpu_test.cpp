// The mHC and compressor kernels on the device, judged by compare/'s differential runner through
// the same adapter and cases as tests/compare/executor_runner_test.cpp (which runs the kernels'
// CPU executors in CI): tests/common/executor_implementation.hpp with a device KernelBackend
// (mhc_pre_host, mhc_post_host, compressor_prefill_host of cuda/). Every case must pass the fp32
// rows of the tolerance table and leave no poison; each integration fault must still be caught.
// Skips without a device unless V4REF_REQUIRE_GPU=1 (scripts/gpu sets it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <ostream>
#include <string>
#include <vector>

#include "../common/executor_implementation.hpp"
#include "../common/gpu_test_support.hpp"
#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/compressor.hpp"
#include "v4ref/cuda/mhc.hpp"

namespace v4ref::compare {

// GoogleTest prints a case by its name (found by ADL).
void PrintTo(const Case& c, std::ostream* os) { *os << c.name() << " seed " << c.global_seed; }

namespace {

test::KernelBackend device_backend() {
  test::KernelBackend b;
  b.name = "cuda-sm90";
  b.mhc_pre = [](const cuda::mhc::Problem& p, std::uint16_t* u, float* coef) {
    const cuda::MhcHostOutputs o = cuda::mhc_pre_host(p);
    if (!o.guards_intact) throw std::runtime_error("mhc_pre wrote outside its outputs");
    if (!o.inputs_intact) throw std::runtime_error("mhc_pre changed its inputs");
    std::memcpy(u, o.u.data(), o.u.size() * sizeof(std::uint16_t));
    std::memcpy(coef, o.coef.data(), o.coef.size() * sizeof(float));
  };
  b.mhc_post = [](const cuda::mhc::Problem& p, std::uint16_t* x_out) {
    const std::vector<std::uint16_t> o = cuda::mhc_post_host(p);
    std::memcpy(x_out, o.data(), o.size() * sizeof(std::uint16_t));
  };
  b.compressor_prefill = [](const cuda::cmp::PrefillProblem& p, std::uint8_t* rows) {
    const cuda::CompressorHostOut o = cuda::compressor_prefill_host(p, false);
    std::memcpy(rows, o.cache.data(), o.cache.size());
  };
  // Prefill of the first p tokens with its hand-off state on the device, then the decode steps
  // on the device from that state.
  b.compressor_decode = [](const cuda::cmp::PrefillProblem& all, std::int64_t p, std::uint8_t* rows,
                           const std::function<void(cuda::cmp::DecodeState&)>& state_fault) {
    const cuda::cmp::Dims& dm = all.dm;
    cuda::cmp::PrefillProblem head = all;
    head.tokens = p;
    const cuda::CompressorHostOut o = cuda::compressor_prefill_host(head, true);
    cuda::cmp::DecodeState st(dm);
    st.kv = o.state_kv;
    st.score = o.state_score;
    if (state_fault) state_fault(st);
    const std::int64_t entries = all.tokens / dm.ratio;
    std::vector<std::uint8_t> cache(static_cast<std::size_t>(std::max<std::int64_t>(entries, 1) * dm.row_bytes()), 0xFF);
    const std::vector<float> cos(all.cos, all.cos + std::max<std::int64_t>(entries, 1) * 32),
        sin(all.sin, all.sin + std::max<std::int64_t>(entries, 1) * 32);
    cuda::compressor_decode_host(dm, p, all.tokens - p, all.a + p * dm.cw(), all.g + p * dm.cw(),
                                 all.ape, all.norm_w, all.eps, cos, sin, st, cache);
    const std::size_t from = static_cast<std::size_t>((p / dm.ratio) * dm.row_bytes());
    std::memcpy(rows + from, cache.data() + from, cache.size() - from);
  };
  return b;
}

class ExecutorRunnerGpu : public ::testing::TestWithParam<Case> {};

TEST_P(ExecutorRunnerGpu, DeviceKernelsPassTheFp32Rows) {
  V4REF_REQUIRE_DEVICE();
  const test::KernelExecutors device(test::ExecutorFault::kNone, device_backend());
  const CaseResult r = run_case(GetParam(), device, RunnerOptions{"failures", "gpu", ""});
  EXPECT_TRUE(r.pass) << r.report();
  for (const OutputJudgement& j : r.outputs) {
    EXPECT_TRUE(std::isfinite(j.metrics.max_abs)) << j.output << ": poison left in the output";
    std::printf("%-58s %-8s %-5s rel_fro %.2e  bound_ratio %.3f\n", GetParam().name().c_str(),
                j.output.c_str(), j.gate.c_str(), j.metrics.rel_fro, j.bound_ratio);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ExecutorRunnerGpu, ::testing::ValuesIn(test::executor_runner_cases()),
                         [](const ::testing::TestParamInfo<Case>& p) {
                           return p.param.test_name() + "_s" + std::to_string(p.param.global_seed);
                         });

TEST(ExecutorRunnerGpuFaults, IntegrationFaultsAreCaughtOnTheDevice) {
  V4REF_REQUIRE_DEVICE();
  int caught = 0, total = 0;
  for (const test::ExecutorFault f : test::kExecutorFaults) {
    const test::KernelExecutors impl(f, device_backend());
    for (const Case& c : test::executor_runner_cases()) {
      if (c.global_seed != 0 || !test::fault_touches(f, c)) continue;
      ++total;
      const CaseResult r = run_case(c, impl, RunnerOptions{{}, "", ""});
      caught += r.pass ? 0 : 1;
      EXPECT_FALSE(r.pass) << impl.name() << " passed " << c.name();
    }
  }
  std::printf("device integration faults caught: %d/%d cases\n", caught, total);
  EXPECT_EQ(caught, total);
}

}  // namespace
}  // namespace v4ref::compare
