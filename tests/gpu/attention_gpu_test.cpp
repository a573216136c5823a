// The attention kernel on a Hopper GPU (label gpu; scripts/gpu): every attention_fp8 case of the
// runner's table passes its tolerance rows with the device as the backend; 20 reruns of the
// V4-Flash cases give identical bits.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "../common/attention_implementation.hpp"
#include "../common/gpu_test_support.hpp"
#include "v4ref/cuda/attention.hpp"

namespace v4ref {
namespace {

test::AttentionBackend device_backend() {
  return [](const cuda::attn::AttentionProblem& p, std::uint16_t* out, float* lse, int) {
    cuda::attention_host(p, out, lse);
  };
}

TEST(AttentionGpu, RunnerCasesOnTheDevice) {
  V4REF_REQUIRE_DEVICE();
  const test::AttentionKernel impl(0, device_backend(), "cuda-sm90");
  EXPECT_GT(test::expect_table_passes(impl, {0, 1, 2}), 0);
}

// 20 launches of one V4-Flash-shaped problem give the same bits.
TEST(AttentionGpu, RerunsAreBitIdentical) {
  V4REF_REQUIRE_DEVICE();
  for (const compare::Case& c : compare::case_table(0)) {
    if (c.component != "attention_fp8" || c.config != "v4-flash") continue;
    const ModelConfig& cfg = compare::case_config(c);
    const compare::TensorSet in = compare::component(c.component).make_inputs(c, cfg);
    const test::AttentionData a = test::encode_attention_data(
        in.at("q"), in.at("kv"), in.at("compressed"), in.at("selected"), in.at("sink"), c.dim("q_start"),
        c.dim_or("hca", 0) != 0 ? cuda::attn::Kind::kHca : cuda::attn::Kind::kCsa, static_cast<int>(cfg.n_heads),
        static_cast<int>(cfg.head_dim), 0, 1);
    std::vector<std::uint16_t> first, out(static_cast<std::size_t>(a.rows() * a.H * a.D));
    std::vector<float> lse0, lse(static_cast<std::size_t>(a.rows() * a.H));
    for (int i = 0; i < 20; ++i) {
      cuda::attention_host(a.problem(), out.data(), lse.data());
      if (i == 0) first = out, lse0 = lse;
      ASSERT_EQ(out, first) << c.name() << " rerun " << i;
      ASSERT_EQ(std::memcmp(lse.data(), lse0.data(), 4 * lse.size()), 0) << c.name() << " rerun " << i;
    }
  }
}

}  // namespace
}  // namespace v4ref
