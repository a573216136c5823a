// Shared by the gpu-labelled tests: skip without a usable CUDA device, or fail when the run
// demands one (V4REF_REQUIRE_GPU=1, as on a lent GPU machine).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "v4ref/compare/runner.hpp"
#include "v4ref/cuda/check.hpp"

namespace v4ref::test {

inline bool gpu_required() {
  const char* v = std::getenv("V4REF_REQUIRE_GPU");
  return v != nullptr && std::string(v) == "1";
}

// Every case of the runner's table (seeds `seeds`) that `impl` supports passes its rows; returns
// how many ran.
inline int expect_table_passes(const compare::Implementation& impl, std::initializer_list<std::uint64_t> seeds) {
  int n = 0;
  for (const std::uint64_t seed : seeds)
    for (const compare::Case& c : compare::case_table(seed)) {
      if (!impl.supports(c)) continue;
      const compare::CaseResult r = compare::run_case(c, impl, compare::RunnerOptions{{}, "", ""});
      EXPECT_TRUE(r.pass) << r.report();
      ++n;
    }
  return n;
}

}  // namespace v4ref::test

// Use at the top of a TEST body.
#define V4REF_REQUIRE_DEVICE()                                                              \
  do {                                                                                      \
    std::string v4ref_why;                                                                  \
    if (!::v4ref::cuda::device_available(&v4ref_why)) {                                     \
      if (::v4ref::test::gpu_required())                                                    \
        FAIL() << "V4REF_REQUIRE_GPU=1 but no usable CUDA device: " << v4ref_why;           \
      GTEST_SKIP() << "no CUDA device (" << v4ref_why << "); set V4REF_REQUIRE_GPU=1 to fail"; \
    }                                                                                       \
  } while (0)
