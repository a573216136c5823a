// The top-k kernel on a Hopper GPU (label gpu; scripts/gpu): the device's selection equals the
// SIMT executor's run of the same source bit for bit (the kernel has no rounding: integer keys,
// counts and prefix sums), is the reference's set, and is the same on 20 reruns; a decode row of
// 262,144 candidates (1M context) too.
#include <gtest/gtest.h>

#include <vector>

#include "../common/gpu_test_support.hpp"
#include "../common/topk_inputs.hpp"
#include "v4ref/cuda/topk.hpp"
#include "v4ref/cuda/topk_simt.hpp"

namespace v4ref {
namespace {

TEST(TopkGpu, DeviceEqualsExecutorAndReference) {
  V4REF_REQUIRE_DEVICE();
  const test::TopkRows r = test::adversarial_topk_rows();
  for (const std::int64_t k : {64, 512, 1024}) {
    const std::vector<std::int32_t> dev =
        cuda::topk_host(r.scores.data(), r.rows(), r.stride, r.visible.data(), k);
    const std::vector<std::int32_t> sim =
        cuda::topk_simt(r.scores.data(), r.rows(), r.stride, r.visible.data(), k);
    EXPECT_EQ(dev, sim) << "k=" << k;
    for (std::int64_t row = 0; row < r.rows(); ++row) {
      const std::vector<std::int32_t> want = test::topk_reference(r, row, k);
      EXPECT_TRUE(std::equal(want.begin(), want.end(), dev.begin() + row * k))
          << r.names[static_cast<std::size_t>(row)] << " k=" << k;
    }
    for (int rep = 0; rep < 20; ++rep)
      ASSERT_EQ(cuda::topk_host(r.scores.data(), r.rows(), r.stride, r.visible.data(), k), dev);
  }
}

TEST(TopkGpu, OneMillionTokenDecodeRow) {
  V4REF_REQUIRE_DEVICE();
  const test::TopkRows r = test::one_million_context_row();
  for (const std::int64_t k : {512, 1024}) {
    const std::vector<std::int32_t> dev =
        cuda::topk_host(r.scores.data(), 1, r.stride, r.visible.data(), k);
    EXPECT_EQ(dev, test::topk_reference(r, 0, k)) << "k=" << k;
  }
}

}  // namespace
}  // namespace v4ref
