// The checkpoint generator writes the official layout (v4-forward.md §1.4, §15) for any config,
// deterministically, with values a forward pass can use.
#include "v4ref/ref/checkpoint_gen.hpp"

#include <unistd.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref {
namespace {

std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("v4ref_gen_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p;
}

double rms(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s / static_cast<double>(v.size()));
}

class CheckpointGenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CheckpointGenTest, WritesEveryTensorOfTheLayoutWithFiniteValues) {
  const ModelConfig cfg = preset_config(GetParam());
  const auto dir = temp_dir(GetParam());
  CheckpointGenOptions opt;
  opt.seed = 7;
  opt.shard_bytes = 256 * 1024;
  const auto shards = make_checkpoint(cfg, dir, opt);
  EXPECT_GE(shards.size(), 2u) << "tiny checkpoints must exercise the sharded index";

  const Checkpoint ckpt = Checkpoint::open(dir);
  ckpt.open_all_shards();
  const auto problems = check_layout(ckpt, cfg);
  for (const auto& p : problems) ADD_FAILURE() << p.tensor << ": " << p.message;
  EXPECT_EQ(static_cast<std::int64_t>(ckpt.names().size()), expected_tensor_count(cfg));
  EXPECT_EQ(load_config(dir / "config.json"), cfg);

  for (const TensorSpec& spec : expected_tensors(cfg)) {
    if (spec.role == TensorRole::kFp8Scale || spec.role == TensorRole::kFp4Scale) continue;
    const std::vector<double> v = load_as_double(ckpt, spec.name);  // throws on NaN/Inf
    ASSERT_EQ(static_cast<std::int64_t>(v.size()), shape_numel(spec.logical_shape)) << spec.name;
    if (spec.name.ends_with(".tid2eid")) continue;
    // No degenerate tensors: a generator bug that wrote zeros would pass the layout check.
    EXPECT_GT(rms(v), 0.0) << spec.name;
    if (spec.role == TensorRole::kFp8Weight || spec.role == TensorRole::kFp4Weight) {
      // Fan-in scaled: rms(W) ≈ 1/sqrt(in), after fp8/fp4 rounding within 25%.
      const double expected = 1.0 / std::sqrt(static_cast<double>(spec.logical_shape[1]));
      EXPECT_NEAR(rms(v) / expected, 1.0, 0.25) << spec.name;
    }
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(TinyConfigs, CheckpointGenTest,
                         ::testing::Values("tiny-flash", "tiny-pro", "tiny-long"));

TEST(CheckpointGen, IsDeterministicAndSeedSensitive) {
  const ModelConfig cfg = preset_config("tiny-flash");
  for (const TensorSpec& spec : expected_tensors(cfg)) {
    if (spec.name != "layers.2.attn.wq_b.weight" && spec.name != "layers.4.ffn.experts.3.w2.weight" &&
        spec.name != "layers.0.ffn.gate.tid2eid" && spec.name != "embed.weight")
      continue;
    const auto a = generate_tensor_bytes(cfg, spec, 0);
    const auto b = generate_tensor_bytes(cfg, spec, 0);
    const auto c = generate_tensor_bytes(cfg, spec, 1);
    EXPECT_EQ(a, b) << spec.name;
    EXPECT_NE(a, c) << spec.name;
  }
}

TEST(CheckpointGen, HashRoutingTablePicksDistinctValidExperts) {
  const ModelConfig cfg = preset_config("tiny-flash");
  const auto dir = temp_dir("tid2eid");
  make_checkpoint(cfg, dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  for (std::int64_t layer = 0; layer < cfg.n_hash_layers; ++layer) {
    const TensorView t = ckpt.tensor("layers." + std::to_string(layer) + ".ffn.gate.tid2eid");
    std::set<std::int64_t> used;
    for (std::int64_t v = 0; v < cfg.vocab_size; ++v) {
      std::set<std::int64_t> row;
      for (std::int64_t k = 0; k < cfg.n_activated_experts; ++k) {
        const auto e = t.raw<std::int64_t>(v * cfg.n_activated_experts + k);
        ASSERT_GE(e, 0);
        ASSERT_LT(e, cfg.n_routed_experts);
        row.insert(e);
        used.insert(e);
      }
      EXPECT_EQ(static_cast<std::int64_t>(row.size()), cfg.n_activated_experts) << "token " << v;
    }
    EXPECT_EQ(static_cast<std::int64_t>(used.size()), cfg.n_routed_experts) << "every expert reachable";
  }
  std::filesystem::remove_all(dir);
}

TEST(CheckpointGen, RejectsInvalidConfigs) {
  ModelConfig cfg = preset_config("tiny-flash");
  cfg.compress_ratios.pop_back();
  EXPECT_THROW(make_checkpoint(cfg, temp_dir("bad")), ConfigError);
}

}  // namespace
}  // namespace v4ref
