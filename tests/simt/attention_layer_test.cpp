// The CSA and HCA layers of the tiny checkpoints end to end through the attention kernel: the
// reference computes a layer's queries, its window K=V rows and its compressed entries under the
// official policy (Q8 nope dims: exactly the values 200-byte cache rows hold) and the indexer's
// selection (CSA) or every visible entry (HCA); the kernel (cuda/src/attention_kernels.cuh, in
// the SIMT executor) attends over the encoded cache for the queries at positions 240 .. 299, and
// compare/'s judge holds its output and
// lse to the rows attention_fp8.out / .lse against attention_core (the reference's attn.o before
// de-rotation) on those real tensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "../common/attention_implementation.hpp"
#include "../common/test_support.hpp"
#include "v4ref/compare/runner.hpp"
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

constexpr std::int64_t kT = 300;   // two HCA entries (t = 127, 255), 75 CSA entries
constexpr std::int64_t kQ0 = 240;  // the kernel's query rows: positions 240 .. 299 (HCA entry 1
                                   // appears at t = 255; every window full, the ring wrapped)

class AttentionLayer : public ::testing::TestWithParam<std::string> {};

TEST_P(AttentionLayer, CsaAndHcaLayersThroughTheKernelPassTheRows) {
  const std::filesystem::path dir =
      std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "checkpoints" / (GetParam() + "-s0");
  const ModelConfig cfg = load_config(dir / "config.json");
  const Checkpoint ckpt = Checkpoint::open(dir);
  const PrecisionPolicy pol = PrecisionPolicy::official();
  int csa = 0, hca = 0;
  for (std::int64_t li = 0; li < cfg.n_total_layers(); ++li) {
    const ref::LayerWeights w = ref::load_layer(ckpt, cfg, li, ref::ExpertLoading::kOnDemand);
    if (w.layer.kind != LayerKind::kCsa && w.layer.kind != LayerKind::kHca) continue;
    const bool is_csa = w.layer.kind == LayerKind::kCsa;
    SCOPED_TRACE(GetParam() + " layer " + std::to_string(li));
    Rng rng(derive_seed("attention_layer", GetParam(), "x", static_cast<std::uint64_t>(li)));
    Mat x(kT, cfg.dim);
    for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = fmt::round_bf16(rng.normal());
    const ref::RopeTable table = ref::rope_table_for(cfg, w.layer);
    const std::vector<std::int64_t> pos = ref::position_range(0, kT);
    const ref::QueryPath qp = ref::attention_query(x, w.attn, cfg, table, pos, pol);
    const Mat kv = ref::attention_kv(x, w.attn, cfg, table, pos, pol);
    const Mat entries = ref::compress_prefill(x, *w.compressor, table, cfg.norm_eps, pol);
    std::vector<std::vector<std::int64_t>> lists;
    if (is_csa)
      lists = ref::indexer_prefill(x, qp.c, *w.indexer, table, cfg.norm_eps, cfg.index_topk, pol).topk;
    else
      lists = ref::all_visible_selections(0, kT, w.layer.ratio);
    std::size_t width = 1;
    for (const auto& l : lists) width = std::max(width, l.size());
    Mat sel = Mat::Constant(kT - kQ0, static_cast<Eigen::Index>(width), -1.0);
    for (std::int64_t t = kQ0; t < kT; ++t)
      for (std::size_t i = 0; i < lists[static_cast<std::size_t>(t)].size(); ++i)
        sel(t - kQ0, static_cast<Eigen::Index>(i)) = static_cast<double>(lists[static_cast<std::size_t>(t)][i]);

    compare::Case c;
    c.component = "attention_fp8";
    c.config = GetParam();
    c.mode = PrecisionMode::kOfficial;
    c.dims = {{"Tq", kT - kQ0}, {"q_start", kQ0}, {"N", entries.rows()}, {"K", static_cast<std::int64_t>(width)},
              {"hca", is_csa ? 0 : 1}};
    const ModelConfig& pc = compare::case_config(c);
    ASSERT_EQ(pc.n_heads, cfg.n_heads);
    ASSERT_EQ(pc.head_dim, cfg.head_dim);
    ASSERT_EQ(pc.window_size, cfg.window_size);
    compare::TensorSet in;
    in.put("q", Mat(qp.q.bottomRows(kT - kQ0)), "bf16");
    in.put("kv", kv, "bf16");
    in.put("compressed", entries.rows() > 0 ? entries : Mat::Zero(1, cfg.head_dim), "bf16");
    in.put("selected", sel, "index");
    Mat sink(1, cfg.n_heads);
    for (std::int64_t h = 0; h < cfg.n_heads; ++h) sink(0, h) = w.attn.attn_sink(h);
    in.put("sink", sink, "f32");

    const test::AttentionKernel impl;
    compare::ComponentCall call{c, pc, pol, in};
    const compare::TensorSet out = impl.run(call);
    const compare::CaseResult r = compare::judge_case(c, impl.name(), impl.path(), in, &out);
    EXPECT_TRUE(r.pass) << r.report();
    for (const compare::OutputJudgement& j : r.outputs)
      std::printf("%s layer %lld (%s, %lld entries): %-4s rel_fro %.2e bound_ratio %.3g\n", GetParam().c_str(),
                  static_cast<long long>(li), is_csa ? "CSA" : "HCA", static_cast<long long>(entries.rows()),
                  j.output.c_str(), j.metrics.rel_fro, j.bound_ratio);
    (is_csa ? csa : hca)++;
  }
  EXPECT_GE(csa, 1);
  EXPECT_GE(hca, 1);
}

INSTANTIATE_TEST_SUITE_P(TinyCheckpoints, AttentionLayer, ::testing::Values("tiny-flash", "tiny-pro"), test::param_name);

}  // namespace
}  // namespace v4ref
