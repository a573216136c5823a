// The top-k kernel from its source in the SIMT executor on a decode row of 262,144 candidates
// (1M context, label slow): the reference's set for Flash's and Pro's k.
#include <gtest/gtest.h>

#include <vector>

#include "../common/topk_inputs.hpp"
#include "v4ref/cuda/topk_simt.hpp"

namespace v4ref {
namespace {

TEST(TopkSimtSlow, DecodeRowAt1MContext) {
  const test::TopkRows r = test::one_million_context_row();
  for (const std::int64_t k : {512, 1024}) {
    cuda::TopkSimtOptions o;
    o.run.analysis = false;
    EXPECT_EQ(cuda::topk_simt(r.scores.data(), 1, r.stride, r.visible.data(), k, o),
              test::topk_reference(r, 0, k))
        << "k=" << k;
  }
}

}  // namespace
}  // namespace v4ref
