// Reading and writing model configs (v4-forward.md §1.1–1.2, §16.4; cost-model.md §3).
//
// Three JSON flavours are accepted:
//   * the Hugging Face config.json of V4 (model_type "deepseek_v4", HF key names of §1.1),
//   * the Hugging Face config.json of DeepSeek-V3.2 (model_type "deepseek_v32"),
//   * the official inference/config.json (keys = ModelArgs field names: dim, n_layers, ...;
//     V3.2 when it carries kv_lora_rank).
// The flavour is chosen by keys: `model_type` present -> HF, absent -> official inference.
// Every parse ends with validate(); every problem is a ConfigError that names the source (file),
// the key, what was expected and what was found.
//
// Presets: the released V4-Flash, V4-Pro and V3.2 configurations and the tiny test configs
// ("tiny-flash", "tiny-pro", "tiny-long"; also stored as golden/configs/<name>.json).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "v4ref/ref/core/config.hpp"

namespace v4ref {

// A Hugging Face config.json (model_type "deepseek_v4" or "deepseek_v32"). `source` names the
// input in error messages; the config's name is derived from it ("dir/tiny-flash.json" ->
// "tiny-flash", "DeepSeek-V4-Flash/config.json" -> "DeepSeek-V4-Flash", otherwise `source`).
// compress_ratios longer than n_layers + n_mtp_layers is truncated, the surplus kept in
// compress_ratios_extra (§1.2); shorter is an error.
ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& source);

// The official inference/config.json (ModelArgs names). Keys the official config omits take the
// ModelArgs defaults the spec lists as the released values (hc_eps, n_mtp_layers, norm_eps: §1.1);
// max_position_embeddings (a runtime argument there) is original_seq_len * rope_factor, which is
// what HF derives as well (§16.4).
ModelConfig parse_inference_config(const nlohmann::json& j, const std::string& source);

// Either flavour: `model_type` present -> parse_hf_config, else parse_inference_config.
ModelConfig parse_config_json(const nlohmann::json& j, const std::string& source);

// Reads and parses a config file (either flavour). IoError if it cannot be read, ConfigError if
// it is not JSON or not a valid config.
ModelConfig load_config(const std::filesystem::path& path);

// The HF config.json form of `cfg` (V4 or V3.2), such that
// parse_hf_config(to_hf_config_json(cfg), cfg.name) == cfg.
nlohmann::json to_hf_config_json(const ModelConfig& cfg);

// Built-in configurations: "v4-flash", "v4-pro", "v3.2", "tiny-flash", "tiny-pro", "tiny-long".
// Unknown names are a ConfigError listing the accepted ones.
ModelConfig preset_config(std::string_view name);
std::vector<std::string> preset_names();

// The first n main layers of a config (and its MTP blocks): a full-width model of a few layers,
// e.g. to generate a one-layer V4-Flash checkpoint. Name gets "-{n}L". ConfigError if n is
// outside [1, n_layers].
ModelConfig first_layers(ModelConfig cfg, std::int64_t n);

}  // namespace v4ref
