// The CSA layers of the tiny checkpoints end to end with the indexer kernels' selection: the
// reference computes a layer's indexer queries, head weights and keys under the official policy
// (Q4 queries and keys, bf16 weights), the fused decode path (cuda/src/indexer_kernels.cuh, in
// the SIMT executor) selects from them, and the attention sub-block run with that selection
// equals the one run with the exact-arithmetic selection of the same stored values, bit for bit
// (every near-tie swap is reported; none are expected at fp32 resolution). The official bf16
// scoring (PyTorch's bf16 einsum, bf16_index_scores) is printed for comparison: its exact bf16
// ties make its tie-broken selection differ from any fp32 kernel's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "../common/indexer_implementation.hpp"
#include "../common/test_support.hpp"
#include "v4ref/cuda/indexer_simt.hpp"
#include "v4ref/ref/attention.hpp"
#include "v4ref/ref/compressor.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/indexer.hpp"
#include "v4ref/ref/layer.hpp"
#include "v4ref/ref/rope.hpp"

namespace v4ref {
namespace {

using ref::Mat;
namespace idx = cuda::idx;

constexpr std::int64_t kT = 300;

std::vector<std::vector<std::int64_t>> ascending(std::vector<std::vector<std::int64_t>> s) {
  for (auto& v : s) std::sort(v.begin(), v.end());
  return s;
}

class IndexerLayer : public ::testing::TestWithParam<std::string> {};

TEST_P(IndexerLayer, CsaLayerWithTheKernelsSelectionEqualsTheExactSelectionLayer) {
  const std::filesystem::path dir =
      std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "checkpoints" / (GetParam() + "-s0");
  const ModelConfig cfg = load_config(dir / "config.json");
  const Checkpoint ckpt = Checkpoint::open(dir);
  const PrecisionPolicy pol = PrecisionPolicy::official();
  int layers = 0;
  for (std::int64_t li = 0; li < cfg.n_total_layers(); ++li) {
    const ref::LayerWeights w = ref::load_layer(ckpt, cfg, li, ref::ExpertLoading::kOnDemand);
    if (w.layer.kind != LayerKind::kCsa) continue;
    SCOPED_TRACE(GetParam() + " layer " + std::to_string(li));
    Rng rng(derive_seed("indexer_layer", GetParam(), "x", static_cast<std::uint64_t>(li)));
    Mat x(kT, cfg.dim);
    for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = fmt::round_bf16(rng.normal());
    const ref::RopeTable table = ref::rope_table_for(cfg, w.layer);
    const std::vector<std::int64_t> pos = ref::position_range(0, kT);
    const ref::QueryPath qp = ref::attention_query(x, w.attn, cfg, table, pos, pol);
    const ref::IndexerPrefill ip =
        ref::indexer_prefill(x, qp.c, *w.indexer, table, cfg.norm_eps, cfg.index_topk, pol);
    const Mat entries = ref::compress_prefill(x, *w.compressor, table, cfg.norm_eps, pol);
    const std::int64_t K = cfg.index_topk, H = cfg.index_n_heads;

    // The exact scores of the stored values and their selection (the rule of §9).
    const Mat exact = ref::index_scores(ip.queries, ip.head_weights, ip.keys, pos, H, cfg.index_head_dim,
                                        PrecisionPolicy::exact());
    std::vector<std::vector<std::int64_t>> sel_exact;
    for (std::int64_t t = 0; t < kT; ++t)
      sel_exact.push_back(ref::index_topk(
          std::span<const double>(exact.row(t).data(), static_cast<std::size_t>(exact.cols())), t, K));

    // The kernels' selection: the fused decode path over all T rows.
    std::vector<std::int32_t> rows(static_cast<std::size_t>(kT));
    std::iota(rows.begin(), rows.end(), 0);
    const test::IndexerData ki = test::encode_indexer_data(
        ip.queries, ip.head_weights, ip.keys, rows, std::vector<std::int32_t>(static_cast<std::size_t>(kT), 0), 1,
        ip.keys.rows(), static_cast<int>(H), idx::KeyFormat::kFp4, derive_seed("indexer_layer", "pages", "", 1));
    cuda::simt::LaunchReport r1, r2;
    const std::vector<std::int32_t> got =
        cuda::index_topk_decode_simt(ki.problem(), static_cast<std::int32_t>(K), {}, &r1, &r2);
    ASSERT_TRUE(r1.ok() && r2.ok()) << r1.summary() << r2.summary();
    std::vector<std::vector<std::int64_t>> sel_kernel(static_cast<std::size_t>(kT));
    for (std::int64_t t = 0; t < kT; ++t)
      for (std::int64_t i = 0; i < K; ++i)
        if (const std::int32_t j = got[static_cast<std::size_t>(t * K + i)]; j >= 0)
          sel_kernel[static_cast<std::size_t>(t)].push_back(j);

    int differ = 0, differ_official = 0;
    for (std::int64_t t = 0; t < kT; ++t) {
      std::vector<std::int64_t> a = sel_exact[static_cast<std::size_t>(t)], o = ip.topk[static_cast<std::size_t>(t)];
      std::sort(a.begin(), a.end());
      std::sort(o.begin(), o.end());
      if (a != sel_kernel[static_cast<std::size_t>(t)]) {
        ++differ;
        ADD_FAILURE() << "row " << t << ": the kernel's selection differs from the exact selection";
      }
      differ_official += o != a ? 1 : 0;
    }
    EXPECT_EQ(differ, 0);
    // The sub-block with either selection, entries in the same (ascending) order: bit for bit.
    const Mat out_kernel = ref::attention_sublayer(x, w.attn, cfg, w.layer, entries, ascending(sel_kernel), pol);
    const Mat out_exact = ref::attention_sublayer(x, w.attn, cfg, w.layer, entries, ascending(sel_exact), pol);
    EXPECT_EQ(std::memcmp(out_kernel.data(), out_exact.data(), static_cast<std::size_t>(out_kernel.size()) * 8), 0);
    // Against the official bf16 scoring (informational: exact bf16 ties break differently).
    const Mat out_official = ref::attention_sublayer_prefill(x, w, cfg, w.layer, pol);
    std::printf("%s layer %lld: kernel = exact selection in %lld/%lld rows; the official bf16 scoring "
                "selects differently in %d rows (max |layer out diff| %.3g)\n",
                GetParam().c_str(), static_cast<long long>(li), static_cast<long long>(kT - differ),
                static_cast<long long>(kT), differ_official, (out_official - out_kernel).cwiseAbs().maxCoeff());
    ++layers;
  }
  EXPECT_GE(layers, 1);
}

INSTANTIATE_TEST_SUITE_P(TinyCheckpoints, IndexerLayer, ::testing::Values("tiny-flash", "tiny-pro"), test::param_name);

}  // namespace
}  // namespace v4ref
