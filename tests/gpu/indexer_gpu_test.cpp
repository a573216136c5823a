// The indexer's logits kernel on a Hopper GPU (label gpu; scripts/gpu): FP4 keys give the host
// model's bits (idx::logits_model; the block sums are exact under any accumulation, the fp32 tail
// is deterministic), and so the SIMT executor's; FP8 keys stay within the tolerance row
// index_logits.logits of the exact logits (the tensor cores' accumulation is not the executor's
// IEEE model); 20 reruns give identical bits; the fused decode path selects the top-k kernel's
// set on the device's own logits; the indexer runner cases pass on the device; a V4-Flash decode
// batch at 64K context.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../common/gpu_test_support.hpp"
#include "../common/indexer_bound.hpp"
#include "../common/indexer_implementation.hpp"
#include "../common/indexer_inputs.hpp"
#include "v4ref/compare/tolerance.hpp"
#include "v4ref/cuda/indexer.hpp"
#include "v4ref/cuda/topk.hpp"

namespace v4ref {
namespace {

using cuda::idx::KeyFormat;
using test::IndexerData;
using test::IndexerInputs;

constexpr float kPoison = -12345.0f;

std::vector<float> on_device(const IndexerData& d, std::int32_t pages_per_split = 0) {
  std::vector<float> out(static_cast<std::size_t>(d.rows() * d.stride), kPoison);
  cuda::index_logits_host(d.problem(), out.data(), pages_per_split);
  return out;
}

std::vector<float> on_model(const IndexerData& d) {
  std::vector<float> out(static_cast<std::size_t>(d.rows() * d.stride), kPoison);
  cuda::idx::logits_model(d.problem(), out.data());
  return out;
}

// Worst |device − exact| / allowed over the visible entries; entries past them must be poison.
double worst_ratio(const IndexerData& d, const std::vector<float>& got) {
  const test::LogitsJudgement j = test::judge_logits(d, got, kPoison);
  EXPECT_EQ(j.written_past, 0) << "written past the visible prefix";
  return j.worst;
}

TEST(IndexerGpu, Fp4BitsEqualTheModelAndFp8StaysInTheBound) {
  V4REF_REQUIRE_DEVICE();
  struct Shape {
    int heads;
    std::vector<std::int32_t> first;
    int rows;
  };
  const Shape shapes[] = {{64, {300, 517, 2}, 1}, {64, {255, 1030}, 2}, {4, {190}, 40}, {8, {0}, 37}, {16, {63, 700}, 2}};
  for (KeyFormat f : {KeyFormat::kFp4, KeyFormat::kFp8})
    for (const Shape& s : shapes)
      for (IndexerInputs kind : {IndexerInputs::kRandom, IndexerInputs::kAllNegative, IndexerInputs::kEqualKeys,
                                 IndexerInputs::kHugeTiny, IndexerInputs::kSaturated}) {
        const IndexerData d = test::make_indexer_data(f, s.heads, s.first, s.rows, kind,
                                                      derive_seed("indexer_gpu", "shapes", "", static_cast<int>(kind)));
        const std::vector<float> dev = on_device(d);
        if (f == KeyFormat::kFp4) {
          EXPECT_EQ(std::memcmp(dev.data(), on_model(d).data(), dev.size() * 4), 0)
              << "fp4 H=" << s.heads << " kind " << static_cast<int>(kind);
        }
        EXPECT_LE(worst_ratio(d, dev), 1.0) << cuda::idx::format_name(f) << " H=" << s.heads;
        for (int rep = 0; rep < 20; ++rep)
          ASSERT_EQ(std::memcmp(on_device(d).data(), dev.data(), dev.size() * 4), 0) << "rerun " << rep;
      }
}

// V4-Flash decode: 8 requests at 64K context (16,384 entries each, the kernel-targets shape at
// B = 8), next_n 1 and 2, FP4 bit-exact, FP8 within the bound (exact logits on the CPU).
TEST(IndexerGpu, FlashDecodeAt64KContext) {
  V4REF_REQUIRE_DEVICE();
  for (KeyFormat f : {KeyFormat::kFp4, KeyFormat::kFp8})
    for (int next_n : {1, 2}) {
      const IndexerData d = test::make_indexer_data(f, 64, std::vector<std::int32_t>(8, 65536 - next_n), next_n,
                                                    IndexerInputs::kRandom, derive_seed("indexer_gpu", "64k", "", next_n));
      const std::vector<float> dev = on_device(d);
      if (f == KeyFormat::kFp4) EXPECT_EQ(std::memcmp(dev.data(), on_model(d).data(), dev.size() * 4), 0);
      else EXPECT_LE(worst_ratio(d, dev), 1.0);
    }
}

// The fused decode path on the device selects exactly the top-k kernel's set on the device's
// own logits (the same bits feed both), at 64K context, next_n 1 and 2, k 512 and 1024; 20
// identical reruns.
TEST(IndexerGpu, FusedDecodeEqualsLogitsThenTopk) {
  V4REF_REQUIRE_DEVICE();
  for (KeyFormat f : {KeyFormat::kFp4, KeyFormat::kFp8})
    for (int next_n : {1, 2})
      for (std::int32_t k : {512, 1024}) {
        const IndexerData d = test::make_indexer_data(f, 64, std::vector<std::int32_t>(8, 65536 - next_n), next_n,
                                                      IndexerInputs::kRandom, derive_seed("indexer_gpu", "fused", "", k));
        const std::vector<float> logits = on_device(d);
        std::vector<std::int64_t> vis;
        for (std::int32_t t : d.pos) vis.push_back(cuda::idx::visible_entries(t));
        const std::vector<std::int32_t> want = cuda::topk_host(logits.data(), d.rows(), d.stride, vis.data(), k);
        const std::vector<std::int32_t> got = cuda::index_topk_decode_host(d.problem(), k);
        EXPECT_EQ(got, want) << cuda::idx::format_name(f) << " next_n " << next_n << " k " << k;
        for (int rep = 0; rep < 20; ++rep) ASSERT_EQ(cuda::index_topk_decode_host(d.problem(), k), got);
      }
}

// The runner's index_logits / topk / indexer_decode cases with the device as the backend.
TEST(IndexerGpu, RunnerCasesOnTheDevice) {
  V4REF_REQUIRE_DEVICE();
  test::IndexerBackend b;
  b.name = "cuda-sm90";
  b.logits = [](const cuda::idx::LogitsProblem& p, float* logits, int) { cuda::index_logits_host(p, logits); };
  b.topk = [](const float* s, std::int64_t rows, std::int64_t stride, const std::int64_t* vis, std::int64_t k, int) {
    return cuda::topk_host(s, rows, stride, vis, k);
  };
  b.topk_decode = [](const cuda::idx::LogitsProblem& p, std::int32_t k, int) {
    return cuda::index_topk_decode_host(p, k);
  };
  const test::IndexerKernels impl(test::IndexerFaultSite::kNone, 0, b);
  EXPECT_GT(test::expect_table_passes(impl, {0, 1, 2}), 0);
}

}  // namespace
}  // namespace v4ref
