// Self-checks of the config layer: presets against the spec tables (v4-forward.md §1.1–1.3,
// cost-model.md §3), the per-layer view (§1.2, §2.3), the rules every tiny config must keep,
// the golden config files, JSON parsing errors and the HF round trip.
//
// Set V4REF_WRITE_GOLDEN_CONFIGS=1 to (re)write golden/configs/<tiny>.json from the presets;
// the golden test then checks the files it wrote.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <set>
#include <string>

#include "v4ref/ref/config_json.hpp"

namespace v4ref {
namespace {

using nlohmann::json;

const std::string kSource = "test/tiny-flash.json";

// Runs `fn`, expects a ConfigError whose message contains every one of `parts`.
void expect_config_error(const std::function<void()>& fn,
                         std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message lacks \"" << p << "\": " << msg;
    return;
  } catch (const std::exception& e) {
    FAIL() << "expected ConfigError, got another exception: " << e.what();
  }
  FAIL() << "expected ConfigError, nothing was thrown";
}

// The HF form without "_name_or_path", so the parsed name comes from the file path.
json anonymous_hf_json(const std::string& preset) {
  json j = to_hf_config_json(preset_config(preset));
  j.erase("_name_or_path");
  return j;
}
json tiny_flash_json() { return anonymous_hf_json("tiny-flash"); }

void expect_parse_error(const json& j, std::initializer_list<std::string> parts) {
  expect_config_error([&] { (void)parse_hf_config(j, kSource); }, parts);
}

bool is_power_of_two(std::int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// ---- released presets ------------------------------------------------------------------------

TEST(ConfigPresets, DerivedSizesMatchSpecTable) {  // v4-forward.md §1.3
  const ModelConfig f = preset_config("v4-flash");
  const ModelConfig p = preset_config("v4-pro");
  EXPECT_EQ(f.hc_dim(), 16384);
  EXPECT_EQ(p.hc_dim(), 28672);
  EXPECT_EQ(f.hc_mix_dim(), 24);
  EXPECT_EQ(p.hc_mix_dim(), 24);
  EXPECT_EQ(f.q_dim(), 32768);
  EXPECT_EQ(p.q_dim(), 65536);
  EXPECT_EQ(f.heads_per_group(), 8);
  EXPECT_EQ(p.heads_per_group(), 8);
  EXPECT_EQ(f.group_in_dim(), 4096);
  EXPECT_EQ(p.group_in_dim(), 4096);
  EXPECT_EQ(f.o_dim(), 8192);
  EXPECT_EQ(p.o_dim(), 16384);
  EXPECT_EQ(f.index_q_dim(), 8192);
  EXPECT_EQ(p.index_q_dim(), 8192);
  EXPECT_EQ(f.nope_dim(), 448);
  for (const ModelConfig* c : {&f, &p}) {
    EXPECT_DOUBLE_EQ(1.0 / std::sqrt(static_cast<double>(c->head_dim)), 0.04419417382415922);
    EXPECT_DOUBLE_EQ(1.0 / std::sqrt(static_cast<double>(c->index_head_dim)) /
                         std::sqrt(static_cast<double>(c->index_n_heads)),
                     0.011048543456039806);
  }
}

TEST(ConfigPresets, ReleasedValuesMatchSpecTable) {  // v4-forward.md §1.1
  const ModelConfig f = preset_config("v4-flash");
  const ModelConfig p = preset_config("v4-pro");
  EXPECT_EQ(f.dim, 4096);
  EXPECT_EQ(p.dim, 7168);
  EXPECT_EQ(f.n_layers, 43);
  EXPECT_EQ(p.n_layers, 61);
  EXPECT_EQ(f.n_heads, 64);
  EXPECT_EQ(p.n_heads, 128);
  EXPECT_EQ(f.q_lora_rank, 1024);
  EXPECT_EQ(p.q_lora_rank, 1536);
  EXPECT_EQ(f.o_groups, 8);
  EXPECT_EQ(p.o_groups, 16);
  EXPECT_EQ(f.index_topk, 512);
  EXPECT_EQ(p.index_topk, 1024);
  EXPECT_EQ(f.n_routed_experts, 256);
  EXPECT_EQ(p.n_routed_experts, 384);
  EXPECT_EQ(f.moe_inter_dim, 2048);
  EXPECT_EQ(p.moe_inter_dim, 3072);
  EXPECT_EQ(f.route_scale, 1.5);
  EXPECT_EQ(p.route_scale, 2.5);
  for (const ModelConfig* c : {&f, &p}) {
    EXPECT_EQ(c->arch, Arch::kDeepseekV4);
    EXPECT_EQ(c->vocab_size, 129280);
    EXPECT_EQ(c->head_dim, 512);
    EXPECT_EQ(c->rope_head_dim, 64);
    EXPECT_EQ(c->o_lora_rank, 1024);
    EXPECT_EQ(c->window_size, 128);
    EXPECT_EQ(c->rope_theta, 10000);
    EXPECT_EQ(c->compress_rope_theta, 160000);
    EXPECT_EQ(c->yarn, (YarnConfig{16, 65536, 32, 1}));
    EXPECT_EQ(c->max_position_embeddings, 1048576);
    EXPECT_EQ(c->index_n_heads, 64);
    EXPECT_EQ(c->index_head_dim, 128);
    EXPECT_EQ(c->hc_mult, 4);
    EXPECT_EQ(c->hc_sinkhorn_iters, 20);
    EXPECT_EQ(c->hc_eps, 1e-6);
    EXPECT_EQ(c->n_shared_experts, 1);
    EXPECT_EQ(c->n_activated_experts, 6);
    EXPECT_EQ(c->score_func, "sqrtsoftplus");
    EXPECT_EQ(c->n_hash_layers, 3);
    EXPECT_EQ(c->swiglu_limit, 10);
    EXPECT_EQ(c->n_mtp_layers, 1);
    EXPECT_EQ(c->norm_eps, 1e-6);
    EXPECT_EQ(c->expert_dtype, ExpertDtype::kFp4);
    EXPECT_EQ(c->bos_token_id, 0);
    EXPECT_EQ(c->eos_token_id, 1);
    EXPECT_TRUE(c->compress_ratios_extra.empty());
  }
  EXPECT_EQ(f.compress_ratios.size(), 44u);
  EXPECT_EQ(p.compress_ratios.size(), 62u);
}

TEST(ConfigPresets, V32MatchesCostModel) {  // cost-model.md §3
  const ModelConfig c = preset_config("v3.2");
  EXPECT_NO_THROW(validate(c));
  EXPECT_EQ(c.arch, Arch::kDeepseekV32);
  EXPECT_EQ(c.dim, 7168);
  EXPECT_EQ(c.n_layers, 61);
  EXPECT_EQ(c.first_k_dense_replace, 3);
  EXPECT_EQ(c.intermediate_size, 18432);
  EXPECT_EQ(c.n_heads, 128);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.qk_nope_head_dim, 128);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.v_head_dim, 128);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.index_topk, 2048);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.n_activated_experts, 8);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.moe_inter_dim, 2048);
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.score_func, "sigmoid");
  EXPECT_EQ(c.yarn, (YarnConfig{40, 4096, 32, 1}));
  EXPECT_EQ(c.max_position_embeddings, 163840);
  // V4-only structure is absent.
  EXPECT_TRUE(c.compress_ratios.empty());
  EXPECT_EQ(c.hc_mult, 0);
  EXPECT_EQ(c.head_dim, 0);
  EXPECT_EQ(c.o_groups, 0);
}

TEST(ConfigPresets, FlashLayerKinds) {  // v4-forward.md §1.2
  const ModelConfig c = preset_config("v4-flash");
  ASSERT_EQ(c.n_total_layers(), 44);
  for (std::int64_t i = 0; i < c.n_total_layers(); ++i) {
    const LayerConfig lc = layer_config(c, i);
    LayerKind want = LayerKind::kSwa;
    if (i >= 2 && i <= 42) want = i % 2 == 0 ? LayerKind::kCsa : LayerKind::kHca;
    EXPECT_EQ(lc.kind, want) << "layer " << i;
    EXPECT_EQ(lc.is_mtp, i == 43) << "layer " << i;
  }
  EXPECT_EQ(layer_config(c, 43).prefix, "mtp.0.");
  EXPECT_EQ(layer_config(c, 42).prefix, "layers.42.");
  EXPECT_THROW((void)layer_config(c, 44), ConfigError);
}

TEST(ConfigPresets, ProLayerKinds) {  // v4-forward.md §1.2
  const ModelConfig c = preset_config("v4-pro");
  ASSERT_EQ(c.n_total_layers(), 62);
  int swa = 0, csa = 0, hca = 0;
  for (std::int64_t i = 0; i < c.n_total_layers(); ++i) {
    const LayerConfig lc = layer_config(c, i);
    LayerKind want = LayerKind::kHca;
    if (i == 61)
      want = LayerKind::kSwa;
    else if (i >= 2 && i % 2 == 0)
      want = LayerKind::kCsa;
    EXPECT_EQ(lc.kind, want) << "layer " << i;
    if (i < 61) {
      swa += lc.kind == LayerKind::kSwa;
      csa += lc.kind == LayerKind::kCsa;
      hca += lc.kind == LayerKind::kHca;
    }
  }
  EXPECT_EQ(swa, 0);
  EXPECT_EQ(csa, 30);
  EXPECT_EQ(hca, 31);
}

TEST(ConfigPresets, HashLayersAndMtpNeverHash) {  // v4-forward.md §1.2
  for (const char* name : {"v4-flash", "v4-pro"}) {
    const ModelConfig c = preset_config(name);
    for (std::int64_t i = 0; i < c.n_total_layers(); ++i)
      EXPECT_EQ(layer_config(c, i).hash_routed, i <= 2) << name << " layer " << i;
  }
  // The MTP block is not hash-routed even when num_hash_layers covers every main layer.
  ModelConfig c = preset_config("tiny-long");
  c.n_hash_layers = c.n_layers;
  validate(c);
  EXPECT_TRUE(layer_config(c, c.n_layers - 1).hash_routed);
  EXPECT_FALSE(layer_config(c, c.n_layers).hash_routed);
}

TEST(ConfigPresets, RopePerLayerKind) {  // v4-forward.md §2.3
  for (const std::string& name : preset_names()) {
    const ModelConfig c = preset_config(name);
    if (c.arch != Arch::kDeepseekV4) continue;
    for (std::int64_t i = 0; i < c.n_total_layers(); ++i) {
      const LayerConfig lc = layer_config(c, i);
      if (lc.kind == LayerKind::kSwa) {
        EXPECT_EQ(lc.rope_base, 10000) << name << " layer " << i;
        EXPECT_FALSE(lc.rope_yarn) << name << " layer " << i;
      } else {
        EXPECT_EQ(lc.rope_base, 160000) << name << " layer " << i;
        EXPECT_TRUE(lc.rope_yarn) << name << " layer " << i;
      }
      EXPECT_EQ(lc.overlap, lc.kind == LayerKind::kCsa) << name << " layer " << i;
    }
  }
}

TEST(ConfigPresets, NamesAndValidation) {
  const std::vector<std::string> names = preset_names();
  EXPECT_EQ(names, (std::vector<std::string>{"v4-flash", "v4-pro", "v3.2", "tiny-flash", "tiny-pro",
                                             "tiny-long"}));
  for (const std::string& name : names) {
    const ModelConfig c = preset_config(name);
    EXPECT_EQ(c.name, name);
    EXPECT_NO_THROW(validate(c)) << name;
  }
}

TEST(ConfigPresets, UnknownPresetListsNames) {
  expect_config_error(
      [] { (void)preset_config("v4-mega"); },
      {"\"v4-mega\"", "v4-flash", "v4-pro", "v3.2", "tiny-flash", "tiny-pro", "tiny-long"});
}

// ---- tiny configs ----------------------------------------------------------------------------

class TinyConfigRules : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyConfigRules, KeepsEveryStructuralFeature) {
  const ModelConfig c = preset_config(GetParam());
  ASSERT_NO_THROW(validate(c));
  EXPECT_EQ(c.arch, Arch::kDeepseekV4);
  std::set<LayerKind> kinds;
  bool hash_main = false, bias_main = false;
  for (std::int64_t i = 0; i < c.n_total_layers(); ++i) {
    const LayerConfig lc = layer_config(c, i);
    kinds.insert(lc.kind);
    if (!lc.is_mtp) (lc.hash_routed ? hash_main : bias_main) = true;
    EXPECT_TRUE(lc.ratio == 0 || lc.ratio == 4 || lc.ratio == 128)  // the HF oracle's ratios
        << "layer " << i << " ratio " << lc.ratio;
  }
  EXPECT_EQ(kinds, (std::set<LayerKind>{LayerKind::kSwa, LayerKind::kCsa, LayerKind::kHca}));
  EXPECT_TRUE(hash_main) << "needs a hash-routed MoE layer (layer < num_hash_layers)";
  EXPECT_TRUE(bias_main) << "needs a bias-routed MoE layer";
  EXPECT_EQ(c.n_mtp_layers, 1);
  EXPECT_EQ(c.compress_ratios.back(), 0);
  EXPECT_FALSE(layer_config(c, c.n_layers).hash_routed);
  EXPECT_EQ(c.hc_mult, 4);
  EXPECT_GE(c.n_routed_experts, 4);
  EXPECT_GE(c.n_activated_experts, 2);
  EXPECT_LT(c.n_activated_experts, c.n_routed_experts);
}

TEST_P(TinyConfigRules, DimensionsFitTheQuantisedFormats) {
  const ModelConfig c = preset_config(GetParam());
  // Every fp8 weight dimension (§1.4): <= 128 or a multiple of 128, since the HF loader infers
  // the block size from the scale grid (§16.4).
  const std::int64_t fp8_dims[] = {c.dim,     c.q_lora_rank,    c.q_dim(),       c.head_dim,
                                   c.o_dim(), c.group_in_dim(), c.index_q_dim(), c.moe_inter_dim};
  for (const std::int64_t n : fp8_dims) EXPECT_TRUE(n <= 128 || n % 128 == 0) << "fp8 dim " << n;
  EXPECT_EQ(c.dim % 32, 0) << "fp4 scale blocks";
  EXPECT_EQ(c.moe_inter_dim % 32, 0) << "fp4 scale blocks";
  EXPECT_TRUE(is_power_of_two(c.index_head_dim)) << "Hadamard rotation";
  EXPECT_GT(c.index_head_dim, c.rope_head_dim);
  EXPECT_EQ(c.rope_head_dim, 64) << "rope width as released";
  EXPECT_GT(c.head_dim, c.rope_head_dim);
  EXPECT_EQ(c.nope_dim() % 64, 0) << "Q8 KV blocks of 64";
  // Inputs of fp8/fp4 linears are fake-quantised per 128 in the qat/official modes (§2.5).
  for (const std::int64_t n : {c.dim, c.q_lora_rank, c.o_dim(), c.moe_inter_dim})
    EXPECT_EQ(n % 128, 0) << "Q8 input width " << n;
}

TEST_P(TinyConfigRules, CheapAndSelective) {
  const ModelConfig c = preset_config(GetParam());
  EXPECT_LT(c.index_topk, 512 / 4) << "top-k must discard CSA entries of a 512-token sequence";
  EXPECT_LT(c.window_size, 512) << "compressed entries must matter in a 512-token sequence";
  EXPECT_LE(c.dim, 256);
  EXPECT_LE(c.q_dim(), 1024);
  EXPECT_LE(c.vocab_size, 4096);
  EXPECT_LE(c.n_routed_experts, 16);
  EXPECT_LE(c.n_total_layers(), 6);
  // Released RoPE and YaRN settings, so the per-layer tables are the real ones.
  EXPECT_EQ(c.rope_theta, 10000);
  EXPECT_EQ(c.compress_rope_theta, 160000);
  EXPECT_EQ(c.yarn, (YarnConfig{16, 65536, 32, 1}));
  EXPECT_EQ(c.score_func, "sqrtsoftplus");
  EXPECT_EQ(c.swiglu_limit, 10);
}

INSTANTIATE_TEST_SUITE_P(Presets, TinyConfigRules,
                         ::testing::Values("tiny-flash", "tiny-pro", "tiny-long"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           std::string s = param_info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(TinyConfigs, SpecificLayouts) {
  const ModelConfig f = preset_config("tiny-flash");
  EXPECT_EQ(f.compress_ratios, (std::vector<int>{0, 0, 4, 128, 4, 0}));
  EXPECT_EQ(f.n_hash_layers, 3);
  const ModelConfig p = preset_config("tiny-pro");
  EXPECT_EQ(p.compress_ratios, (std::vector<int>{128, 128, 4, 128, 4, 0}));
  EXPECT_EQ(p.route_scale, 2.5);
  const ModelConfig l = preset_config("tiny-long");
  EXPECT_EQ(l.compress_ratios, (std::vector<int>{4, 128, 4, 0}));
  EXPECT_LT(l.window_size, 128) << "window shorter than one HCA block";
  EXPECT_GE(l.max_position_embeddings, 8192);
}

TEST(TinyConfigs, GoldenFilesEqualPresets) {
  const std::filesystem::path dir = std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "configs";
  const char* write = std::getenv("V4REF_WRITE_GOLDEN_CONFIGS");
  for (const char* name : {"tiny-flash", "tiny-pro", "tiny-long"}) {
    const std::filesystem::path file = dir / (std::string(name) + ".json");
    const ModelConfig preset = preset_config(name);
    if (write != nullptr && std::string(write) == "1") {
      std::ofstream out(file);
      out << to_hf_config_json(preset).dump(2) << "\n";
    }
    ASSERT_TRUE(std::filesystem::exists(file)) << file;
    EXPECT_EQ(load_config(file), preset) << file;
    std::ifstream in(file);
    EXPECT_EQ(json::parse(in), to_hf_config_json(preset)) << file << " has other keys or values";
  }
}

// ---- round trip ------------------------------------------------------------------------------

TEST(ConfigJson, RoundTripEveryPreset) {
  for (const std::string& name : preset_names()) {
    const ModelConfig c = preset_config(name);
    const json j = to_hf_config_json(c);
    EXPECT_EQ(parse_hf_config(j, c.name), c) << name;
    // Through text as well: numbers must survive printing.
    EXPECT_EQ(parse_hf_config(json::parse(j.dump()), c.name), c) << name;
    EXPECT_EQ(parse_config_json(j, c.name), c) << name;
    // "_name_or_path" carries the name through a checkpoint directory of any name.
    EXPECT_EQ(parse_hf_config(j, "/data/some-dir/config.json").name, c.name) << name;
  }
}

TEST(ConfigJson, HfFormHasReleasedFrame) {
  const json j = anonymous_hf_json("v4-flash");
  EXPECT_EQ(j["architectures"], json::array({"DeepseekV4ForCausalLM"}));
  EXPECT_EQ(j["model_type"], "deepseek_v4");
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_EQ(j["compress_ratios"].size(), 44u);
  EXPECT_EQ(j["rope_scaling"]["type"], "yarn");
  EXPECT_EQ(j["rope_scaling"]["original_max_position_embeddings"], 65536);
  EXPECT_EQ(j["quantization_config"]["weight_block_size"], json::array({128, 128}));
  EXPECT_EQ(j["quantization_config"]["scale_fmt"], "ue8m0");
  EXPECT_EQ(j["num_key_value_heads"], 1);
  EXPECT_EQ(j["tie_word_embeddings"], false);
}

TEST(ConfigJson, LongerCompressRatiosAreTruncatedAndRecorded) {  // §1.2 re-releases
  json j = anonymous_hf_json("v4-flash");
  j["compress_ratios"].push_back(4);
  j["compress_ratios"].push_back(128);
  const ModelConfig c = parse_hf_config(j, "DeepSeek-V4-Flash-0731/config.json");
  EXPECT_EQ(c.name, "DeepSeek-V4-Flash-0731");
  EXPECT_EQ(c.compress_ratios.size(), 44u);
  EXPECT_EQ(c.compress_ratios_extra, (std::vector<int>{4, 128}));
  EXPECT_EQ(layer_config(c, 43).kind, LayerKind::kSwa);
  // The extras survive a round trip and do not change the layer list.
  EXPECT_EQ(parse_hf_config(to_hf_config_json(c), c.name), c);
}

TEST(ConfigJson, OptionalKeysTakeReleasedDefaults) {  // §1.1: absent from some released files
  json j = anonymous_hf_json("v4-flash");
  for (const char* key : {"expert_dtype", "hc_eps", "num_nextn_predict_layers", "rms_norm_eps",
                          "quantization_config", "num_key_value_heads", "bos_token_id",
                          "eos_token_id", "tie_word_embeddings", "norm_topk_prob", "topk_method"})
    j.erase(key);
  ModelConfig want = preset_config("v4-flash");
  want.name = "DeepSeek-V4-Flash";
  EXPECT_EQ(parse_hf_config(j, "DeepSeek-V4-Flash/config.json"), want);
}

// The official inference/config.json of V4-Pro: exactly the ModelArgs keys listed in §1.1.
json pro_inference_json() {
  json j;
  j["vocab_size"] = 129280;
  j["dim"] = 7168;
  j["moe_inter_dim"] = 3072;
  j["n_layers"] = 61;
  j["n_hash_layers"] = 3;
  j["n_heads"] = 128;
  j["n_routed_experts"] = 384;
  j["n_shared_experts"] = 1;
  j["n_activated_experts"] = 6;
  j["score_func"] = "sqrtsoftplus";
  j["route_scale"] = 2.5;
  j["swiglu_limit"] = 10.0;
  j["q_lora_rank"] = 1536;
  j["head_dim"] = 512;
  j["rope_head_dim"] = 64;
  j["o_groups"] = 16;
  j["o_lora_rank"] = 1024;
  j["window_size"] = 128;
  j["original_seq_len"] = 65536;
  j["rope_theta"] = 10000;
  j["rope_factor"] = 16;
  j["beta_fast"] = 32;
  j["beta_slow"] = 1;
  j["index_n_heads"] = 64;
  j["index_head_dim"] = 128;
  j["index_topk"] = 1024;
  j["hc_mult"] = 4;
  j["hc_sinkhorn_iters"] = 20;
  j["dtype"] = "fp8";
  j["scale_fmt"] = "ue8m0";
  j["expert_dtype"] = "fp4";
  j["compress_rope_theta"] = 160000;
  j["compress_ratios"] = preset_config("v4-pro").compress_ratios;
  return j;
}

TEST(ConfigJson, OfficialInferenceConfigMatchesPreset) {
  ModelConfig want = preset_config("v4-pro");
  want.name = "DeepSeek-V4-Pro";
  const json j = pro_inference_json();
  EXPECT_EQ(parse_inference_config(j, "DeepSeek-V4-Pro/inference/config.json"), want);
  EXPECT_EQ(parse_config_json(j, "DeepSeek-V4-Pro/inference/config.json"), want);
}

TEST(ConfigJson, OfficialInferenceConfigErrors) {
  json j = pro_inference_json();
  j.erase("swiglu_limit");  // the ModelArgs default (0) is not the released value
  expect_config_error([&] { (void)parse_config_json(j, "inference/config.json"); },
                      {"\"swiglu_limit\"", "missing", "inference/config.json", "official"});
  j = pro_inference_json();
  j["dtype"] = "bf16";
  expect_config_error([&] { (void)parse_config_json(j, "x.json"); },
                      {"\"dtype\"", "\"fp8\"", "\"bf16\""});
  j = pro_inference_json();
  j["compress_ratios"].erase(j["compress_ratios"].size() - 1);
  expect_config_error([&] { (void)parse_config_json(j, "x.json"); },
                      {"compress_ratios", "61", "62", "n_layers + n_mtp_layers"});
}

TEST(ConfigJson, OfficialV32InferenceConfigMatchesPreset) {
  json j;
  j["vocab_size"] = 129280;
  j["dim"] = 7168;
  j["inter_dim"] = 18432;
  j["moe_inter_dim"] = 2048;
  j["n_layers"] = 61;
  j["n_dense_layers"] = 3;
  j["n_heads"] = 128;
  j["n_routed_experts"] = 256;
  j["n_shared_experts"] = 1;
  j["n_activated_experts"] = 8;
  j["n_expert_groups"] = 8;
  j["n_limited_groups"] = 4;
  j["route_scale"] = 2.5;
  j["score_func"] = "sigmoid";
  j["q_lora_rank"] = 1536;
  j["kv_lora_rank"] = 512;
  j["qk_nope_head_dim"] = 128;
  j["qk_rope_head_dim"] = 64;
  j["v_head_dim"] = 128;
  j["dtype"] = "fp8";
  j["scale_fmt"] = "ue8m0";
  j["index_n_heads"] = 64;
  j["index_head_dim"] = 128;
  j["index_topk"] = 2048;
  j["original_seq_len"] = 4096;
  j["rope_theta"] = 10000.0;
  j["rope_factor"] = 40;
  j["beta_fast"] = 32;
  j["beta_slow"] = 1;
  j["mscale"] = 1.0;
  EXPECT_EQ(parse_config_json(j, "v3.2"), preset_config("v3.2"));
}

// ---- errors ----------------------------------------------------------------------------------

TEST(ConfigErrors, CompressRatiosTooShort) {
  json j = tiny_flash_json();
  j["compress_ratios"] = {0, 0, 4, 128, 4};  // the MTP entry is missing
  expect_parse_error(j, {kSource, "compress_ratios", "has 5 entries", "need", "= 6"});
}

TEST(ConfigErrors, RatioThree) {
  json j = tiny_flash_json();
  j["compress_ratios"][2] = 3;
  expect_parse_error(j,
                     {kSource, "compress_ratios[2] = 3", "accepted: 0 (SWA), 4 (CSA), 128 (HCA)"});
}

TEST(ConfigErrors, MtpEntryNonZero) {
  json j = tiny_flash_json();
  j["compress_ratios"][5] = 4;
  expect_parse_error(j, {kSource, "compress_ratios[5] = 4", "MTP"});
}

TEST(ConfigErrors, RopeDimsNotBelowHeadDim) {
  json j = tiny_flash_json();
  j["qk_rope_head_dim"] = 128;
  expect_parse_error(j, {kSource, "qk_rope_head_dim (128)", "head_dim (128)"});
}

TEST(ConfigErrors, NopeDimNotMultipleOf64) {
  json j = tiny_flash_json();
  j["head_dim"] = 160;
  expect_parse_error(j, {kSource, "head_dim - qk_rope_head_dim (160 - 64)", "multiple of 64"});
}

TEST(ConfigErrors, Q8InputWidthNotMultipleOf128) {
  json j = tiny_flash_json();
  j["q_lora_rank"] = 64;
  expect_parse_error(j, {kSource, "q_lora_rank = 64", "multiple of 128"});
}

TEST(ConfigErrors, HeadsNotDivisibleByGroups) {
  json j = tiny_flash_json();
  j["num_attention_heads"] = 5;
  expect_parse_error(j, {kSource, "num_attention_heads (5)", "o_groups (2)"});
}

TEST(ConfigErrors, MissingKey) {
  json j = tiny_flash_json();
  j.erase("sliding_window");
  expect_parse_error(j, {kSource, "required key \"sliding_window\" is missing", "deepseek_v4"});
  j = tiny_flash_json();
  j["rope_scaling"].erase("original_max_position_embeddings");
  expect_parse_error(j, {kSource, "\"rope_scaling.original_max_position_embeddings\"", "missing"});
  j = tiny_flash_json();
  j.erase("model_type");  // without model_type the HF parser cannot tell the architecture
  expect_parse_error(j, {kSource, "\"model_type\"", "missing"});
}

TEST(ConfigErrors, WrongType) {
  json j = tiny_flash_json();
  j["hidden_size"] = "128";
  expect_parse_error(j, {kSource, "\"hidden_size\"", "expected integer", "got string \"128\""});
  j = tiny_flash_json();
  j["index_topk"] = 32.5;
  expect_parse_error(j, {"\"index_topk\"", "expected integer", "got non-integer number 32.5"});
  j = tiny_flash_json();
  j["compress_ratios"] = "0,0,4";
  expect_parse_error(j, {"\"compress_ratios\"", "expected array of integers", "got string"});
  j = tiny_flash_json();
  j["compress_ratios"][1] = "4";
  expect_parse_error(j, {"\"compress_ratios[1]\"", "expected integer"});
  j = tiny_flash_json();
  j["rope_scaling"] = 16;
  expect_parse_error(j, {"\"rope_scaling\"", "expected object", "got integer 16"});
  j = tiny_flash_json();
  j["scoring_func"] = 1;
  expect_parse_error(j, {"\"scoring_func\"", "expected string"});
}

TEST(ConfigErrors, LaterArchitectureKeysRefused) {
  for (const char* key :
       {"kv_source_layers", "index_source_layers", "candidate_topk", "engram_vocab_size"}) {
    json j = tiny_flash_json();
    j[key] = json::array({0, 1});
    expect_parse_error(j, {kSource, std::string("\"") + key + "\"", "later"});
    json k = pro_inference_json();
    k[key] = 1;
    expect_config_error([&] { (void)parse_inference_config(k, "x.json"); }, {"x.json", key});
  }
}

TEST(ConfigErrors, SwigluLimitZero) {
  json j = tiny_flash_json();
  j["swiglu_limit"] = 0;
  expect_parse_error(j, {kSource, "swiglu_limit must be > 0", "got 0"});
  j = tiny_flash_json();
  j["swiglu_limit"] = -2.5;
  expect_parse_error(j, {kSource, "swiglu_limit must be > 0", "got -2.5"});
}

TEST(ConfigErrors, OriginalMaxPositionZero) {
  json j = tiny_flash_json();
  j["rope_scaling"]["original_max_position_embeddings"] = 0;
  expect_parse_error(j, {kSource, "original_max_position_embeddings must be > 0", "got 0"});
}

TEST(ConfigErrors, KeyValueHeadsTwo) {
  json j = tiny_flash_json();
  j["num_key_value_heads"] = 2;
  expect_parse_error(j, {kSource, "\"num_key_value_heads\"", "expected 1", "got 2"});
}

TEST(ConfigErrors, RefusedValues) {
  json j = tiny_flash_json();
  j["tie_word_embeddings"] = true;
  expect_parse_error(j, {"\"tie_word_embeddings\"", "expected false", "got true"});
  j = tiny_flash_json();
  j["scoring_func"] = "sigmoid";
  expect_parse_error(j, {kSource, "scoring_func \"sigmoid\"", "sqrtsoftplus"});
  j = tiny_flash_json();
  j["rope_scaling"]["type"] = "linear";
  expect_parse_error(j, {"\"rope_scaling.type\"", "expected \"yarn\"", "\"linear\""});
  j = tiny_flash_json();
  j["model_type"] = "deepseek_v3";
  expect_parse_error(j, {"\"model_type\"", "deepseek_v4", "\"deepseek_v3\""});
  j = tiny_flash_json();
  j["expert_dtype"] = "fp16";
  expect_parse_error(j, {"\"expert_dtype\"", "\"fp16\""});
}

TEST(ConfigErrors, QuantizationConfig) {
  json j = tiny_flash_json();
  j["quantization_config"]["weight_block_size"] = {64, 64};
  expect_parse_error(j, {"\"quantization_config.weight_block_size\"", "[128, 128]", "[64,64]"});
  j = tiny_flash_json();
  j["quantization_config"]["scale_fmt"] = "fp32";
  expect_parse_error(j, {"\"quantization_config.scale_fmt\"", "\"ue8m0\"", "\"fp32\""});
  j = tiny_flash_json();
  j["quantization_config"]["fmt"] = "e5m2";
  expect_parse_error(j, {"\"quantization_config.fmt\"", "\"e4m3\"", "\"e5m2\""});
  j = tiny_flash_json();
  j["quantization_config"]["quant_method"] = "awq";
  expect_parse_error(j, {"\"quantization_config.quant_method\"", "\"awq\""});
}

TEST(ConfigErrors, FilesNamedInErrors) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("v4ref_config_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::filesystem::path bad = dir / "broken.json";
  { std::ofstream(bad) << "{\"model_type\": \"deepseek_v4\", "; }
  expect_config_error([&] { (void)load_config(bad); }, {bad.string(), "not valid JSON"});
  const std::filesystem::path short_window = dir / "tiny-bad.json";
  {
    json j = tiny_flash_json();
    j["swiglu_limit"] = 0.0;
    std::ofstream(short_window) << j.dump();
  }
  expect_config_error([&] { (void)load_config(short_window); },
                      {short_window.string(), "config tiny-bad", "swiglu_limit"});
  EXPECT_THROW((void)load_config(dir / "absent.json"), IoError);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace v4ref
