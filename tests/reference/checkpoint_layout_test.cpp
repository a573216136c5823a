// Tensor inventory of the official V4 checkpoint layout against the spec (v4-forward.md §1.4,
// §15.4, §15.6): the count self-check (Flash 69,187, Pro 145,116), unique names, and
// spot-checked shapes and dtypes of both released models; the tiny configs' fp8 weights fit
// the 128x128 scale grid the HF loader reads.
#include "v4ref/ref/checkpoint_layout.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "v4ref/ref/config_json.hpp"

namespace v4ref {
namespace {

std::map<std::string, TensorSpec> by_name(const ModelConfig& cfg) {
  std::map<std::string, TensorSpec> out;
  for (const TensorSpec& t : expected_tensors(cfg)) out.emplace(t.name, t);
  return out;
}

// Expects tensor `name` with `dtype` and stored `shape`.
void expect_tensor(const std::map<std::string, TensorSpec>& m, const std::string& name, DType dtype,
                   const Shape& shape) {
  const auto it = m.find(name);
  ASSERT_NE(it, m.end()) << name << " missing";
  EXPECT_EQ(it->second.dtype, dtype) << name;
  EXPECT_EQ(it->second.shape, shape) << name;
}

std::vector<std::string> v4_presets() {
  std::vector<std::string> out;
  for (const std::string& n : preset_names())
    if (preset_config(n).arch == Arch::kDeepseekV4) out.push_back(n);
  return out;
}

TEST(CheckpointLayout, CountsMatchPublishedInventories) {  // §15.3, §15.4
  EXPECT_EQ(expected_tensor_count(preset_config("v4-flash")), 69187);
  EXPECT_EQ(expected_tensor_count(preset_config("v4-pro")), 145116);
}

TEST(CheckpointLayout, ListAgreesWithCountAndNamesAreUnique) {
  const std::vector<std::string> names = v4_presets();
  ASSERT_EQ(names.size(), 5u);
  for (const std::string& name : names) {
    const ModelConfig cfg = preset_config(name);
    const std::vector<TensorSpec> tensors = expected_tensors(cfg);
    EXPECT_EQ(static_cast<std::int64_t>(tensors.size()), expected_tensor_count(cfg)) << name;
    std::set<std::string> seen;
    for (const TensorSpec& t : tensors)
      EXPECT_TRUE(seen.insert(t.name).second) << name << ": " << t.name;
    // Per-layer lists concatenate to the full list after the 6 globals.
    std::size_t n = 6;
    for (std::int64_t i = 0; i < cfg.n_total_layers(); ++i)
      n += expected_layer_tensors(cfg, i).size();
    EXPECT_EQ(n, tensors.size()) << name;
  }
}

TEST(CheckpointLayout, FlashShapes) {  // §1.4, §15.6
  const auto m = by_name(preset_config("v4-flash"));
  expect_tensor(m, "embed.weight", DType::kBF16, {129280, 4096});
  expect_tensor(m, "hc_head_fn", DType::kF32, {4, 16384});
  expect_tensor(m, "layers.0.hc_attn_fn", DType::kF32, {24, 16384});
  expect_tensor(m, "layers.0.attn.attn_sink", DType::kF32, {64});
  expect_tensor(m, "layers.0.attn.wq_a.weight", DType::kF8E4M3, {1024, 4096});
  expect_tensor(m, "layers.0.attn.wq_a.scale", DType::kF8E8M0, {8, 32});
  expect_tensor(m, "layers.0.attn.wq_b.scale", DType::kF8E8M0, {256, 8});
  expect_tensor(m, "layers.0.attn.wkv.scale", DType::kF8E8M0, {4, 32});
  expect_tensor(m, "layers.5.attn.wo_a.weight", DType::kF8E4M3, {8192, 4096});
  expect_tensor(m, "layers.5.attn.wo_a.scale", DType::kF8E8M0, {64, 32});
  expect_tensor(m, "layers.5.attn.wo_b.scale", DType::kF8E8M0, {32, 64});
  expect_tensor(m, "layers.4.attn.indexer.wq_b.scale", DType::kF8E8M0, {64, 8});
  expect_tensor(m, "layers.7.ffn.experts.255.w1.weight", DType::kI8, {2048, 2048});
  expect_tensor(m, "layers.7.ffn.experts.255.w1.scale", DType::kF8E8M0, {2048, 128});
  expect_tensor(m, "layers.7.ffn.experts.0.w2.weight", DType::kI8, {4096, 1024});
  expect_tensor(m, "layers.7.ffn.experts.0.w2.scale", DType::kF8E8M0, {4096, 64});
  expect_tensor(m, "layers.7.ffn.shared_experts.w1.scale", DType::kF8E8M0, {16, 32});
  expect_tensor(m, "layers.7.ffn.shared_experts.w2.scale", DType::kF8E8M0, {32, 16});
  // CSA layer 2: main compressor with overlap (c = 2), indexer compressor of width 128.
  expect_tensor(m, "layers.2.attn.compressor.ape", DType::kF32, {4, 1024});
  expect_tensor(m, "layers.2.attn.compressor.wkv.weight", DType::kBF16, {1024, 4096});
  expect_tensor(m, "layers.2.attn.indexer.compressor.ape", DType::kF32, {4, 256});
  expect_tensor(m, "layers.2.attn.indexer.compressor.norm.weight", DType::kBF16, {128});
  expect_tensor(m, "layers.2.attn.indexer.weights_proj.weight", DType::kBF16, {64, 4096});
  // HCA layer 3: one series, no indexer.
  expect_tensor(m, "layers.3.attn.compressor.ape", DType::kF32, {128, 512});
  expect_tensor(m, "layers.3.attn.compressor.wgate.weight", DType::kBF16, {512, 4096});
  EXPECT_FALSE(m.contains("layers.3.attn.indexer.wq_b.weight"));
  // SWA layers 0, 1 and the MTP block: no compressor.
  EXPECT_FALSE(m.contains("layers.1.attn.compressor.ape"));
  EXPECT_FALSE(m.contains("mtp.0.attn.compressor.ape"));
  // MTP extras.
  expect_tensor(m, "mtp.0.e_proj.weight", DType::kF8E4M3, {4096, 4096});
  expect_tensor(m, "mtp.0.e_proj.scale", DType::kF8E8M0, {32, 32});
  expect_tensor(m, "mtp.0.h_proj.weight", DType::kF8E4M3, {4096, 4096});
  expect_tensor(m, "mtp.0.hc_head_fn", DType::kF32, {4, 16384});
  expect_tensor(m, "mtp.0.hc_head_scale", DType::kF32, {1});
}

TEST(CheckpointLayout, ProShapes) {  // §1.4, §15.6
  const auto m = by_name(preset_config("v4-pro"));
  expect_tensor(m, "layers.0.attn.wq_a.scale", DType::kF8E8M0, {12, 56});
  expect_tensor(m, "layers.0.attn.wq_b.scale", DType::kF8E8M0, {512, 12});
  expect_tensor(m, "layers.0.attn.wkv.scale", DType::kF8E8M0, {4, 56});
  expect_tensor(m, "layers.0.attn.wo_a.weight", DType::kF8E4M3, {16384, 4096});
  expect_tensor(m, "layers.0.attn.wo_a.scale", DType::kF8E8M0, {128, 32});
  expect_tensor(m, "layers.0.attn.wo_b.scale", DType::kF8E8M0, {56, 128});
  expect_tensor(m, "layers.2.attn.indexer.wq_b.scale", DType::kF8E8M0, {64, 12});
  expect_tensor(m, "layers.9.ffn.experts.383.w1.weight", DType::kI8, {3072, 3584});
  expect_tensor(m, "layers.9.ffn.experts.383.w1.scale", DType::kF8E8M0, {3072, 224});
  expect_tensor(m, "layers.9.ffn.experts.17.w2.weight", DType::kI8, {7168, 1536});
  expect_tensor(m, "layers.9.ffn.experts.17.w2.scale", DType::kF8E8M0, {7168, 96});
  expect_tensor(m, "layers.9.ffn.shared_experts.w1.scale", DType::kF8E8M0, {24, 56});
  expect_tensor(m, "layers.9.ffn.shared_experts.w2.scale", DType::kF8E8M0, {56, 24});
  // Pro starts with two HCA layers.
  expect_tensor(m, "layers.0.attn.compressor.ape", DType::kF32, {128, 512});
  expect_tensor(m, "layers.1.attn.compressor.ape", DType::kF32, {128, 512});
  expect_tensor(m, "layers.60.attn.compressor.ape", DType::kF32, {4, 1024});
  expect_tensor(m, "layers.60.attn.indexer.compressor.ape", DType::kF32, {4, 256});
  expect_tensor(m, "mtp.0.e_proj.weight", DType::kF8E4M3, {7168, 7168});
}

TEST(CheckpointLayout, RoutingTensorsByLayer) {  // §1.2, §15.8 item 5
  for (const char* name : {"v4-flash", "v4-pro"}) {
    const ModelConfig cfg = preset_config(name);
    const auto m = by_name(cfg);
    for (std::int64_t i = 0; i < cfg.n_layers; ++i) {
      const std::string p = "layers." + std::to_string(i) + ".ffn.gate.";
      if (i < 3) {
        expect_tensor(m, p + "tid2eid", DType::kI64, {129280, 6});
        EXPECT_FALSE(m.contains(p + "bias")) << name << " " << p;
      } else {
        expect_tensor(m, p + "bias", DType::kF32, {cfg.n_routed_experts});
        EXPECT_FALSE(m.contains(p + "tid2eid")) << name << " " << p;
      }
    }
    expect_tensor(m, "mtp.0.ffn.gate.bias", DType::kF32, {cfg.n_routed_experts});
    EXPECT_FALSE(m.contains("mtp.0.ffn.gate.tid2eid"));
    // The MTP block shares embed and head with the main model (§15.4).
    for (const auto& [n, t] : m) {
      EXPECT_FALSE(n.starts_with("mtp.0.embed")) << n;
      EXPECT_FALSE(n.starts_with("mtp.0.head")) << n;
    }
  }
}

TEST(CheckpointLayout, TinyFp8WeightsFitTheScaleGrid) {  // §16.4: HF infers blocks from the grid
  for (const char* name : {"tiny-flash", "tiny-pro", "tiny-long"}) {
    for (const TensorSpec& t : expected_tensors(preset_config(name))) {
      if (t.role == TensorRole::kFp8Weight) {
        for (const std::int64_t n : t.shape) {
          EXPECT_TRUE(n <= 128 || n % 128 == 0) << name << ": " << t.name << " dim " << n;
        }
      }
      if (t.role == TensorRole::kFp4Weight) {
        EXPECT_EQ(t.logical_shape[1] % 32, 0) << name << ": " << t.name;
      }
    }
  }
}

}  // namespace
}  // namespace v4ref
