// Config JSON parsing and writing, and the built-in presets (v4-forward.md §1.1–1.2, §16.4;
// cost-model.md §3). Parsing is strict: a key the forward needs is required unless the spec
// names its default as the released value; a key whose value the reference cannot honour
// (num_key_value_heads != 1, tied embeddings, another quantisation) is refused.
#include "v4ref/ref/config_json.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>

namespace v4ref {
namespace {

using nlohmann::json;

constexpr const char* kFlavourHfV4 = "HF config.json, model_type deepseek_v4";
constexpr const char* kFlavourHfV32 = "HF config.json, model_type deepseek_v32";
constexpr const char* kFlavourOffV4 = "official inference/config.json, V4 ModelArgs names";
constexpr const char* kFlavourOffV32 = "official inference/config.json, V3.2 ModelArgs names";

std::string json_kind(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return "non-integer number";
    case json::value_t::string:
      return "string";
    case json::value_t::array:
      return "array";
    case json::value_t::object:
      return "object";
    default:
      return "value";
  }
}

std::string json_excerpt(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Typed access to one JSON object. Every failure names the source, the key path, what was
// expected and what was found.
class Reader {
 public:
  Reader(const json& obj, std::string source, std::string flavour, std::string path = "")
      : obj_(obj),
        source_(std::move(source)),
        flavour_(std::move(flavour)),
        path_(std::move(path)) {}

  bool has(const char* key) const { return obj_.contains(key); }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(source_ + ": key \"" + path_ + key + "\": " + what);
  }

  const json& require(const char* key) const {
    const auto it = obj_.find(key);
    if (it == obj_.end())
      throw ConfigError(source_ + ": required key \"" + path_ + key + "\" is missing (" + flavour_ +
                        ")");
    return *it;
  }

  [[noreturn]] void wrong_type(const std::string& key, const std::string& expected,
                               const json& v) const {
    fail(key, "expected " + expected + ", got " + json_kind(v) + " " + json_excerpt(v));
  }

  std::int64_t as_int(const std::string& key, const json& v) const {
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail(key, "integer " + v.dump() + " out of range");
      return static_cast<std::int64_t>(u);
    }
    if (v.is_number_integer()) return v.get<std::int64_t>();
    wrong_type(key, "integer", v);
  }

  std::int64_t integer(const char* key) const { return as_int(key, require(key)); }
  std::int64_t integer_or(const char* key, std::int64_t dflt) const {
    return has(key) ? integer(key) : dflt;
  }

  double number(const char* key) const {
    const json& v = require(key);
    if (!v.is_number()) wrong_type(key, "number", v);
    return v.get<double>();
  }
  double number_or(const char* key, double dflt) const { return has(key) ? number(key) : dflt; }

  std::string string(const char* key) const {
    const json& v = require(key);
    if (!v.is_string()) wrong_type(key, "string", v);
    return v.get<std::string>();
  }

  bool boolean(const char* key) const {
    const json& v = require(key);
    if (!v.is_boolean()) wrong_type(key, "boolean", v);
    return v.get<bool>();
  }

  std::vector<std::int64_t> int_list(const char* key) const {
    const json& v = require(key);
    if (!v.is_array()) wrong_type(key, "array of integers", v);
    std::vector<std::int64_t> out;
    for (std::size_t i = 0; i < v.size(); ++i)
      out.push_back(as_int(std::string(key) + "[" + std::to_string(i) + "]", v[i]));
    return out;
  }

  Reader object(const char* key) const {
    const json& v = require(key);
    if (!v.is_object()) wrong_type(key, "object", v);
    return Reader(v, source_, flavour_, path_ + key + ".");
  }

  // A string key that must hold exactly `expected`; `why` says what the reference relies on.
  void expect_string(const char* key, const std::string& expected, const std::string& why) const {
    const std::string got = string(key);
    if (got != expected)
      fail(key, "expected \"" + expected + "\", got \"" + got + "\" (" + why + ")");
  }
  void expect_string_if_present(const char* key, const std::string& expected,
                                const std::string& why) const {
    if (has(key)) expect_string(key, expected, why);
  }
  void expect_bool_if_present(const char* key, bool expected, const std::string& why) const {
    if (has(key) && boolean(key) != expected)
      fail(key, std::string("expected ") + (expected ? "true" : "false") + ", got " +
                    (expected ? "false" : "true") + " (" + why + ")");
  }

  const std::string& source() const { return source_; }

 private:
  const json& obj_;
  std::string source_;
  std::string flavour_;
  std::string path_;
};

// "dir/tiny-flash.json" -> "tiny-flash"; "DeepSeek-V4-Flash/config.json" and
// "DeepSeek-V4-Flash/inference/config.json" -> "DeepSeek-V4-Flash"; anything else unchanged.
std::string name_from_source(const std::string& source) {
  const std::filesystem::path p(source);
  if (p.extension() != ".json") return source;
  std::string stem = p.stem().string();
  if (stem != "config") return stem;
  std::filesystem::path dir = p.parent_path();
  if (dir.filename() == "inference") dir = dir.parent_path();
  const std::string parent = dir.filename().string();
  return parent.empty() || parent == "." ? source : parent;
}

// The config's name: HF's "_name_or_path" when the file has one (v4ref writes it), else derived
// from the file path.
std::string config_name(const json& j, const std::string& source) {
  const auto it = j.find("_name_or_path");
  if (it != j.end() && it->is_string() && !it->get<std::string>().empty()) return it->get<std::string>();
  return name_from_source(source);
}

// §1.1 notes: kv_source_layers, index_source_layers, candidate_*, engram_* belong to later,
// architecturally different releases; ignoring them would silently compute the wrong model.
void refuse_later_architecture_keys(const json& j, const std::string& source) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k == "kv_source_layers" || k == "index_source_layers" || k.starts_with("candidate_") ||
        k.starts_with("engram_"))
      throw ConfigError(source + ": key \"" + k +
                        "\" belongs to a later, architecturally different release (v4-forward.md "
                        "§1.1 notes); refusing the config rather than ignoring the key");
  }
}

int ratio_int(const Reader& r, std::size_t i, std::int64_t v) {
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    r.fail("compress_ratios[" + std::to_string(i) + "]",
           "value " + std::to_string(v) + " out of range");
  return static_cast<int>(v);
}

// §1.2: n_layers + n_mtp_layers entries; a longer list (re-releases) is truncated with the
// surplus recorded, a shorter one is an error. Needs n_layers and n_mtp_layers already set.
void read_compress_ratios(const Reader& r, ModelConfig& c, const char* layers_key,
                          const char* mtp_key) {
  const std::vector<std::int64_t> raw = r.int_list("compress_ratios");
  std::vector<int> ratios;
  for (std::size_t i = 0; i < raw.size(); ++i) ratios.push_back(ratio_int(r, i, raw[i]));
  const std::int64_t need = c.n_total_layers();
  if (c.n_layers > 0 && c.n_mtp_layers >= 0) {
    if (static_cast<std::int64_t>(ratios.size()) < need)
      throw ConfigError(r.source() + ": key \"compress_ratios\": has " +
                        std::to_string(ratios.size()) + " entries, need " + layers_key + " + " +
                        mtp_key + " = " + std::to_string(need) + " (v4-forward.md §1.2)");
    const auto keep = static_cast<std::ptrdiff_t>(need);
    c.compress_ratios_extra.assign(ratios.begin() + keep, ratios.end());
    ratios.resize(static_cast<std::size_t>(need));
  }
  c.compress_ratios = std::move(ratios);
}

ExpertDtype parse_expert_dtype(const Reader& r, const char* key) {
  const std::string s = r.string(key);
  if (s == "fp4") return ExpertDtype::kFp4;
  if (s == "fp8") return ExpertDtype::kFp8;
  r.fail(key, "expected \"fp4\" or \"fp8\", got \"" + s + "\"");
}

const char* expert_dtype_name(ExpertDtype d) { return d == ExpertDtype::kFp4 ? "fp4" : "fp8"; }

// rope_scaling {type: yarn, factor, original_max_position_embeddings, beta_fast, beta_slow}.
// Released files write "type"; a config re-saved by transformers writes "rope_type".
YarnConfig read_hf_yarn(const Reader& r) {
  const Reader y = r.object("rope_scaling");
  std::string type;
  if (y.has("type")) type = y.string("type");
  if (y.has("rope_type")) {
    const std::string t2 = y.string("rope_type");
    if (!type.empty() && t2 != type)
      y.fail("rope_type", "\"" + t2 + "\" contradicts rope_scaling.type \"" + type + "\"");
    type = t2;
  }
  if (!y.has("type") && !y.has("rope_type")) (void)y.require("type");
  if (type != "yarn")
    y.fail(y.has("type") ? "type" : "rope_type",
           "expected \"yarn\", got \"" + type + "\" (compressed layers use YaRN, §2.3)");
  YarnConfig yarn;
  yarn.factor = y.number("factor");
  yarn.original_seq_len = y.integer("original_max_position_embeddings");
  yarn.beta_fast = y.number("beta_fast");
  yarn.beta_slow = y.number("beta_slow");
  return yarn;
}

// quantization_config (optional; a bf16 checkpoint has none). When present it must describe the
// released format: fp8 e4m3 weights, ue8m0 block scales of 128x128 (§1.1, §15.6).
void check_quantization_config(const Reader& r, bool require_scale_fmt) {
  if (!r.has("quantization_config")) return;
  const Reader q = r.object("quantization_config");
  const std::string why = "the reference decodes fp8 e4m3 weights with ue8m0 128x128 block scales";
  q.expect_string("quant_method", "fp8", why);
  q.expect_string("fmt", "e4m3", why);
  if (require_scale_fmt)
    q.expect_string("scale_fmt", "ue8m0", why);
  else
    q.expect_string_if_present("scale_fmt", "ue8m0", why);
  q.expect_string_if_present("activation_scheme", "dynamic", why);
  const std::vector<std::int64_t> block = q.int_list("weight_block_size");
  if (block != std::vector<std::int64_t>{128, 128})
    q.fail("weight_block_size",
           "expected [128, 128], got " + json(block).dump() + " (" + why + ")");
}

// HF keys shared by V4 and V3.2 whose released values are fixed.
void check_hf_common(const Reader& r) {
  r.expect_bool_if_present("tie_word_embeddings", false,
                           "V4 and V3.2 keep separate embed and head matrices, §1.1");
  r.expect_string_if_present("hidden_act", "silu", "the experts use clamped SwiGLU, §9.2");
  r.expect_string_if_present("topk_method", "noaux_tc", "bias-corrected top-k routing, §9.1");
  r.expect_bool_if_present("norm_topk_prob", true,
                           "top-k weights are always normalised for non-softmax scores, §1.1");
}

ModelConfig finish(ModelConfig c, const std::string& source) {
  try {
    validate(c);
  } catch (const ConfigError& e) {
    throw ConfigError(source + ": " + e.what());
  }
  return c;
}

// Fields of V4 that V3.2 does not have are zero (or empty) in a V3.2 ModelConfig.
ModelConfig v32_blank() {
  ModelConfig c;
  c.arch = Arch::kDeepseekV32;
  c.compress_rope_theta = 0;
  c.hc_mult = 0;
  c.hc_sinkhorn_iters = 0;
  c.hc_eps = 0;
  c.swiglu_limit = 0;
  c.score_func.clear();
  c.expert_dtype = ExpertDtype::kFp8;  // V3.2 ships fp8 routed experts (128x128 block scales)
  return c;
}

ModelConfig parse_hf_v4(const json& j, const std::string& source) {
  const Reader r(j, source, kFlavourHfV4);
  ModelConfig c;
  c.name = config_name(j, source);
  c.arch = Arch::kDeepseekV4;
  c.vocab_size = r.integer("vocab_size");
  c.dim = r.integer("hidden_size");
  c.n_layers = r.integer("num_hidden_layers");
  c.n_heads = r.integer("num_attention_heads");
  if (r.has("num_key_value_heads") && r.integer("num_key_value_heads") != 1)
    r.fail("num_key_value_heads",
           "expected 1 (V4 attends to a single shared K=V head, §1.1), got " +
               std::to_string(r.integer("num_key_value_heads")));
  c.head_dim = r.integer("head_dim");
  c.rope_head_dim = r.integer("qk_rope_head_dim");
  c.q_lora_rank = r.integer("q_lora_rank");
  c.o_groups = r.integer("o_groups");
  c.o_lora_rank = r.integer("o_lora_rank");
  c.window_size = r.integer("sliding_window");
  c.n_mtp_layers = r.integer_or("num_nextn_predict_layers", 1);  // §1.1: released value 1
  read_compress_ratios(r, c, "num_hidden_layers", "num_nextn_predict_layers");
  c.rope_theta = r.number("rope_theta");
  c.compress_rope_theta = r.number("compress_rope_theta");
  c.yarn = read_hf_yarn(r);
  c.max_position_embeddings = r.integer("max_position_embeddings");
  c.index_n_heads = r.integer("index_n_heads");
  c.index_head_dim = r.integer("index_head_dim");
  c.index_topk = r.integer("index_topk");
  c.hc_mult = r.integer("hc_mult");
  c.hc_sinkhorn_iters = r.integer("hc_sinkhorn_iters");
  c.hc_eps = r.number_or("hc_eps", 1e-6);  // §1.1: absent from some configs, default 1e-6
  c.n_routed_experts = r.integer("n_routed_experts");
  c.n_shared_experts = r.integer("n_shared_experts");
  c.n_activated_experts = r.integer("num_experts_per_tok");
  c.moe_inter_dim = r.integer("moe_intermediate_size");
  c.route_scale = r.number("routed_scaling_factor");
  c.score_func = r.string("scoring_func");
  c.n_hash_layers = r.integer("num_hash_layers");
  c.swiglu_limit = r.number("swiglu_limit");
  c.norm_eps = r.number_or("rms_norm_eps", 1e-6);
  // §1.1: present in the Pro config.json, absent from the Flash one; both ship fp4 experts.
  c.expert_dtype =
      r.has("expert_dtype") ? parse_expert_dtype(r, "expert_dtype") : ExpertDtype::kFp4;
  c.bos_token_id = r.integer_or("bos_token_id", 0);
  c.eos_token_id = r.integer_or("eos_token_id", 1);
  check_hf_common(r);
  r.expect_bool_if_present("attention_bias", false, "no linear layer of V4 has a bias, §0.2");
  check_quantization_config(r, /*require_scale_fmt=*/true);
  return finish(std::move(c), source);
}

ModelConfig parse_hf_v32(const json& j, const std::string& source) {
  const Reader r(j, source, kFlavourHfV32);
  ModelConfig c = v32_blank();
  c.name = config_name(j, source);
  c.vocab_size = r.integer("vocab_size");
  c.dim = r.integer("hidden_size");
  c.n_layers = r.integer("num_hidden_layers");
  c.n_heads = r.integer("num_attention_heads");
  c.q_lora_rank = r.integer("q_lora_rank");
  c.kv_lora_rank = r.integer("kv_lora_rank");
  c.qk_nope_head_dim = r.integer("qk_nope_head_dim");
  c.qk_rope_head_dim = r.integer("qk_rope_head_dim");
  c.v_head_dim = r.integer("v_head_dim");
  c.first_k_dense_replace = r.integer("first_k_dense_replace");
  c.intermediate_size = r.integer("intermediate_size");
  c.moe_inter_dim = r.integer("moe_intermediate_size");
  c.n_routed_experts = r.integer("n_routed_experts");
  c.n_shared_experts = r.integer("n_shared_experts");
  c.n_activated_experts = r.integer("num_experts_per_tok");
  c.route_scale = r.number("routed_scaling_factor");
  c.score_func = r.string("scoring_func");
  c.index_n_heads = r.integer("index_n_heads");
  c.index_head_dim = r.integer("index_head_dim");
  c.index_topk = r.integer("index_topk");
  c.max_position_embeddings = r.integer("max_position_embeddings");
  c.rope_theta = r.number("rope_theta");
  c.yarn = read_hf_yarn(r);
  c.n_mtp_layers = r.integer_or("num_nextn_predict_layers", 1);
  c.norm_eps = r.number_or("rms_norm_eps", 1e-6);
  c.bos_token_id = r.integer_or("bos_token_id", 0);
  c.eos_token_id = r.integer_or("eos_token_id", 1);
  check_hf_common(r);
  check_quantization_config(r, /*require_scale_fmt=*/false);
  return finish(std::move(c), source);
}

// The fp8 format keys of the official inference config (§1.1 last table rows).
void check_inference_dtype(const Reader& r) {
  const std::string why = "the released weights are fp8 with ue8m0 scales, §1.1";
  r.expect_string("dtype", "fp8", why);
  r.expect_string_if_present("scale_fmt", "ue8m0", why);
  r.expect_string_if_present("scale_dtype", "fp8", why);
}

// YaRN in ModelArgs names; max_position_embeddings = original_seq_len * rope_factor (§16.4).
void read_inference_yarn(const Reader& r, ModelConfig& c) {
  c.yarn.factor = r.number("rope_factor");
  c.yarn.original_seq_len = r.integer("original_seq_len");
  c.yarn.beta_fast = r.number("beta_fast");
  c.yarn.beta_slow = r.number("beta_slow");
  c.rope_theta = r.number("rope_theta");
  c.max_position_embeddings = static_cast<std::int64_t>(
      std::llround(static_cast<double>(c.yarn.original_seq_len) * c.yarn.factor));
}

ModelConfig parse_inference_v4(const Reader& r) {
  ModelConfig c;
  c.name = name_from_source(r.source());
  c.arch = Arch::kDeepseekV4;
  c.vocab_size = r.integer("vocab_size");
  c.dim = r.integer("dim");
  c.n_layers = r.integer("n_layers");
  c.n_heads = r.integer("n_heads");
  c.head_dim = r.integer("head_dim");
  c.rope_head_dim = r.integer("rope_head_dim");
  c.q_lora_rank = r.integer("q_lora_rank");
  c.o_groups = r.integer("o_groups");
  c.o_lora_rank = r.integer("o_lora_rank");
  c.window_size = r.integer("window_size");
  c.n_mtp_layers = r.integer_or("n_mtp_layers", 1);  // absent from ICFG-P; ModelArgs default 1
  read_compress_ratios(r, c, "n_layers", "n_mtp_layers");
  c.compress_rope_theta = r.number("compress_rope_theta");
  read_inference_yarn(r, c);
  c.index_n_heads = r.integer("index_n_heads");
  c.index_head_dim = r.integer("index_head_dim");
  c.index_topk = r.integer("index_topk");
  c.hc_mult = r.integer("hc_mult");
  c.hc_sinkhorn_iters = r.integer("hc_sinkhorn_iters");
  c.hc_eps = r.number_or("hc_eps", 1e-6);  // absent from ICFG-P; ModelArgs default 1e-6
  c.n_routed_experts = r.integer("n_routed_experts");
  c.n_shared_experts = r.integer("n_shared_experts");
  c.n_activated_experts = r.integer("n_activated_experts");
  c.moe_inter_dim = r.integer("moe_inter_dim");
  c.route_scale = r.number("route_scale");
  c.score_func = r.string("score_func");
  c.n_hash_layers = r.integer("n_hash_layers");
  c.swiglu_limit = r.number("swiglu_limit");
  c.norm_eps = r.number_or("norm_eps", 1e-6);  // absent from ICFG-P; ModelArgs default 1e-6
  // Required here: the ModelArgs default (None) is not the released value.
  c.expert_dtype = parse_expert_dtype(r, "expert_dtype");
  check_inference_dtype(r);
  return c;
}

ModelConfig parse_inference_v32(const Reader& r) {
  ModelConfig c = v32_blank();
  c.name = name_from_source(r.source());
  c.vocab_size = r.integer("vocab_size");
  c.dim = r.integer("dim");
  c.n_layers = r.integer("n_layers");
  c.n_heads = r.integer("n_heads");
  c.q_lora_rank = r.integer("q_lora_rank");
  c.kv_lora_rank = r.integer("kv_lora_rank");
  c.qk_nope_head_dim = r.integer("qk_nope_head_dim");
  c.qk_rope_head_dim = r.integer("qk_rope_head_dim");
  c.v_head_dim = r.integer("v_head_dim");
  c.first_k_dense_replace = r.integer("n_dense_layers");
  c.intermediate_size = r.integer("inter_dim");
  c.moe_inter_dim = r.integer("moe_inter_dim");
  c.n_routed_experts = r.integer("n_routed_experts");
  c.n_shared_experts = r.integer("n_shared_experts");
  c.n_activated_experts = r.integer("n_activated_experts");
  c.route_scale = r.number("route_scale");
  c.score_func = r.string("score_func");
  c.index_n_heads = r.integer("index_n_heads");
  c.index_head_dim = r.integer("index_head_dim");
  c.index_topk = r.integer("index_topk");
  read_inference_yarn(r, c);
  c.norm_eps = r.number_or("norm_eps", 1e-6);
  check_inference_dtype(r);
  return c;
}

// ---- presets ---------------------------------------------------------------------------------

std::vector<int> repeat_pair(int a, int b, int times) {
  std::vector<int> out;
  for (int i = 0; i < times; ++i) {
    out.push_back(a);
    out.push_back(b);
  }
  return out;
}

std::vector<int> concat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Values shared by every V4 preset: the released RoPE/YaRN, mHC, routing and clamp settings
// (§1.1). The tiny configs keep them so their RoPE tables and mixing are the real ones.
ModelConfig v4_common(const char* name) {
  ModelConfig c;
  c.name = name;
  c.arch = Arch::kDeepseekV4;
  c.head_dim = 512;
  c.rope_head_dim = 64;
  c.window_size = 128;
  c.rope_theta = 10000;
  c.compress_rope_theta = 160000;
  c.yarn = YarnConfig{16, 65536, 32, 1};
  c.max_position_embeddings = 1048576;
  c.index_n_heads = 64;
  c.index_head_dim = 128;
  c.hc_mult = 4;
  c.hc_sinkhorn_iters = 20;
  c.hc_eps = 1e-6;
  c.n_shared_experts = 1;
  c.n_activated_experts = 6;
  c.score_func = "sqrtsoftplus";
  c.n_hash_layers = 3;
  c.swiglu_limit = 10;
  c.n_mtp_layers = 1;
  c.norm_eps = 1e-6;
  c.expert_dtype = ExpertDtype::kFp4;
  c.vocab_size = 129280;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  return c;
}

// V4-Flash (§1.1 table, §1.2: [0,0] + [4,128]x20 + [4,0]).
ModelConfig preset_v4_flash() {
  ModelConfig c = v4_common("v4-flash");
  c.dim = 4096;
  c.n_layers = 43;
  c.n_heads = 64;
  c.q_lora_rank = 1024;
  c.o_groups = 8;
  c.o_lora_rank = 1024;
  c.compress_ratios = concat(concat({0, 0}, repeat_pair(4, 128, 20)), {4, 0});
  c.index_topk = 512;
  c.n_routed_experts = 256;
  c.moe_inter_dim = 2048;
  c.route_scale = 1.5;
  return c;
}

// V4-Pro (§1.1 table, §1.2: [128,128] + [4,128]x29 + [4,0]).
ModelConfig preset_v4_pro() {
  ModelConfig c = v4_common("v4-pro");
  c.dim = 7168;
  c.n_layers = 61;
  c.n_heads = 128;
  c.q_lora_rank = 1536;
  c.o_groups = 16;
  c.o_lora_rank = 1024;
  c.compress_ratios = concat(concat({128, 128}, repeat_pair(4, 128, 29)), {4, 0});
  c.index_topk = 1024;
  c.n_routed_experts = 384;
  c.moe_inter_dim = 3072;
  c.route_scale = 2.5;
  return c;
}

// DeepSeek-V3.2 (cost-model.md §3; HF config.json of deepseek-ai/DeepSeek-V3.2): MLA + DSA,
// layers 0-2 dense, sigmoid routing, YaRN factor 40 over 4096.
ModelConfig preset_v32() {
  ModelConfig c = v32_blank();
  c.name = "v3.2";
  c.vocab_size = 129280;
  c.dim = 7168;
  c.n_layers = 61;
  c.n_heads = 128;
  c.q_lora_rank = 1536;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.first_k_dense_replace = 3;
  c.intermediate_size = 18432;
  c.moe_inter_dim = 2048;
  c.n_routed_experts = 256;
  c.n_shared_experts = 1;
  c.n_activated_experts = 8;
  c.route_scale = 2.5;
  c.score_func = "sigmoid";
  c.index_n_heads = 64;
  c.index_head_dim = 128;
  c.index_topk = 2048;
  c.max_position_embeddings = 163840;
  c.rope_theta = 10000;
  c.yarn = YarnConfig{40, 4096, 32, 1};
  c.n_mtp_layers = 1;
  c.norm_eps = 1e-6;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  return c;
}

// Tiny configs. Shared choices (each one a rule the tests assert):
//  * head_dim 128 = 64 nope + 64 rope: rope width as released, nope one Q8 block of 64 (§2.5);
//  * the real ratios 4 and 128 only (the HF oracle accepts no others) and the released
//    RoPE bases and YaRN parameters, so the per-layer RoPE tables equal the real model's;
//  * every fp8 weight dimension <= 128 or a multiple of 128 (the HF loader infers the block
//    size from the scale grid), and every input width of an fp8/fp4 linear (hidden, q_lora,
//    o_groups x o_lora, expert width) a multiple of 128, since the official forward
//    fake-quantises those inputs in blocks of 128 (§2.5) and so the qat/official modes run;
//  * index_head_dim 128 (power of two for the Hadamard rotation, > 64 rope dims);
//  * index_topk below 512/4 = 128, the CSA entry count of a 512-token sequence, so top-k
//    selection really discards entries;
//  * small vocabularies and widths so 512-1024 token prefills stay cheap in double precision.
ModelConfig tiny_common(const char* name) {
  ModelConfig c = v4_common(name);
  c.head_dim = 128;
  c.vocab_size = 1024;
  c.index_n_heads = 4;
  c.index_head_dim = 128;
  c.n_activated_experts = 2;
  c.n_routed_experts = 8;
  c.moe_inter_dim = 128;
  return c;
}

// Flash-like: two SWA layers first, then CSA/HCA alternating; layers 0-2 hash-routed (SWA and
// CSA hash layers), layers 3-4 bias-routed (HCA and CSA), MTP block SWA. d 128, 4 heads in 2
// output groups (2 heads per group), q_lora 128, o_lora 64: q width 512, wo_a [128, 256].
ModelConfig preset_tiny_flash() {
  ModelConfig c = tiny_common("tiny-flash");
  c.dim = 128;
  c.n_layers = 5;
  c.n_heads = 4;
  c.q_lora_rank = 128;
  c.o_groups = 2;
  c.o_lora_rank = 64;
  c.compress_ratios = {0, 0, 4, 128, 4, 0};
  c.max_position_embeddings = 4096;
  c.index_topk = 32;
  c.route_scale = 1.5;
  return c;
}

// Pro-like: HCA first layers ([128, 128] then CSA/HCA), so a hash-routed HCA layer exists and
// no main layer is SWA-only (the MTP block still is). More heads and groups than tiny-flash
// (8 heads in 4 groups, 8 indexer heads, top-64); 12 experts, 4 per token, route_scale 2.5 as
// released for Pro. d and the expert width stay 128 to keep the committed checkpoint small.
ModelConfig preset_tiny_pro() {
  ModelConfig c = tiny_common("tiny-pro");
  c.dim = 128;
  c.n_layers = 5;
  c.n_heads = 8;
  c.q_lora_rank = 128;
  c.o_groups = 4;
  c.o_lora_rank = 64;
  c.compress_ratios = {128, 128, 4, 128, 4, 0};
  c.max_position_embeddings = 4096;
  c.index_n_heads = 8;
  c.index_topk = 64;
  c.n_routed_experts = 12;
  c.n_activated_experts = 4;
  c.route_scale = 2.5;
  return c;
}

// Long sequences crossing many compression boundaries: CSA, HCA, CSA (+ SWA MTP), a 32-token
// window (a quarter of one HCA block, so compressed entries carry most of the context) and
// top-16 of the CSA entries. One hash layer (CSA) and two bias-routed layers.
ModelConfig preset_tiny_long() {
  ModelConfig c = tiny_common("tiny-long");
  c.dim = 128;
  c.n_layers = 3;
  c.n_heads = 4;
  c.q_lora_rank = 128;
  c.o_groups = 2;
  c.o_lora_rank = 64;
  c.window_size = 32;
  c.compress_ratios = {4, 128, 4, 0};
  c.max_position_embeddings = 8192;
  c.index_topk = 16;
  c.n_hash_layers = 1;
  c.route_scale = 1.5;
  return c;
}

struct Preset {
  const char* name;
  ModelConfig (*make)();
};

constexpr Preset kPresets[] = {
    {"v4-flash", preset_v4_flash}, {"v4-pro", preset_v4_pro},
    {"v3.2", preset_v32},          {"tiny-flash", preset_tiny_flash},
    {"tiny-pro", preset_tiny_pro}, {"tiny-long", preset_tiny_long},
};

// ---- writing ---------------------------------------------------------------------------------

json quantization_config_json() {
  return json{{"quant_method", "fp8"},
              {"fmt", "e4m3"},
              {"activation_scheme", "dynamic"},
              {"scale_fmt", "ue8m0"},
              {"weight_block_size", {128, 128}}};
}

json yarn_json(const YarnConfig& y) {
  return json{{"type", "yarn"},
              {"factor", y.factor},
              {"original_max_position_embeddings", y.original_seq_len},
              {"beta_fast", y.beta_fast},
              {"beta_slow", y.beta_slow}};
}

json to_hf_v4(const ModelConfig& c) {
  std::vector<int> ratios = c.compress_ratios;
  ratios.insert(ratios.end(), c.compress_ratios_extra.begin(), c.compress_ratios_extra.end());
  json j;
  j["architectures"] = {"DeepseekV4ForCausalLM"};
  j["model_type"] = "deepseek_v4";
  j["torch_dtype"] = "bfloat16";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.dim;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = 1;
  j["head_dim"] = c.head_dim;
  j["qk_rope_head_dim"] = c.rope_head_dim;
  j["q_lora_rank"] = c.q_lora_rank;
  j["o_groups"] = c.o_groups;
  j["o_lora_rank"] = c.o_lora_rank;
  j["sliding_window"] = c.window_size;
  j["compress_ratios"] = ratios;
  j["compress_rope_theta"] = c.compress_rope_theta;
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling"] = yarn_json(c.yarn);
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["index_n_heads"] = c.index_n_heads;
  j["index_head_dim"] = c.index_head_dim;
  j["index_topk"] = c.index_topk;
  j["hc_mult"] = c.hc_mult;
  j["hc_sinkhorn_iters"] = c.hc_sinkhorn_iters;
  j["hc_eps"] = c.hc_eps;
  j["n_routed_experts"] = c.n_routed_experts;
  j["n_shared_experts"] = c.n_shared_experts;
  j["num_experts_per_tok"] = c.n_activated_experts;
  j["moe_intermediate_size"] = c.moe_inter_dim;
  j["routed_scaling_factor"] = c.route_scale;
  j["scoring_func"] = c.score_func;
  j["norm_topk_prob"] = true;
  j["topk_method"] = "noaux_tc";
  j["num_hash_layers"] = c.n_hash_layers;
  j["swiglu_limit"] = c.swiglu_limit;
  j["num_nextn_predict_layers"] = c.n_mtp_layers;
  j["rms_norm_eps"] = c.norm_eps;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = false;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  j["expert_dtype"] = expert_dtype_name(c.expert_dtype);
  j["quantization_config"] = quantization_config_json();
  return j;
}

json to_hf_v32(const ModelConfig& c) {
  json j;
  j["architectures"] = {"DeepseekV32ForCausalLM"};
  j["model_type"] = "deepseek_v32";
  j["torch_dtype"] = "bfloat16";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.dim;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_heads;
  j["q_lora_rank"] = c.q_lora_rank;
  j["kv_lora_rank"] = c.kv_lora_rank;
  j["qk_nope_head_dim"] = c.qk_nope_head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["v_head_dim"] = c.v_head_dim;
  j["first_k_dense_replace"] = c.first_k_dense_replace;
  j["intermediate_size"] = c.intermediate_size;
  j["moe_intermediate_size"] = c.moe_inter_dim;
  j["n_routed_experts"] = c.n_routed_experts;
  j["n_shared_experts"] = c.n_shared_experts;
  j["num_experts_per_tok"] = c.n_activated_experts;
  j["routed_scaling_factor"] = c.route_scale;
  j["scoring_func"] = c.score_func;
  j["norm_topk_prob"] = true;
  j["topk_method"] = "noaux_tc";
  j["index_n_heads"] = c.index_n_heads;
  j["index_head_dim"] = c.index_head_dim;
  j["index_topk"] = c.index_topk;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling"] = yarn_json(c.yarn);
  j["num_nextn_predict_layers"] = c.n_mtp_layers;
  j["rms_norm_eps"] = c.norm_eps;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = false;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["quantization_config"] = quantization_config_json();
  return j;
}

}  // namespace

ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw ConfigError(source + ": expected a JSON object, got " + json_kind(j));
  refuse_later_architecture_keys(j, source);
  const Reader r(j, source, "HF config.json");
  const std::string model_type = r.string("model_type");
  if (model_type == "deepseek_v4") return parse_hf_v4(j, source);
  if (model_type == "deepseek_v32") return parse_hf_v32(j, source);
  r.fail("model_type", "expected \"deepseek_v4\" or \"deepseek_v32\", got \"" + model_type + "\"");
}

ModelConfig parse_inference_config(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw ConfigError(source + ": expected a JSON object, got " + json_kind(j));
  refuse_later_architecture_keys(j, source);
  // V3.2's ModelArgs carry the MLA latent rank; V4's do not (§1.1).
  const bool v32 = j.contains("kv_lora_rank");
  const Reader r(j, source, v32 ? kFlavourOffV32 : kFlavourOffV4);
  return finish(v32 ? parse_inference_v32(r) : parse_inference_v4(r), source);
}

ModelConfig parse_config_json(const nlohmann::json& j, const std::string& source) {
  if (j.is_object() && j.contains("model_type")) return parse_hf_config(j, source);
  return parse_inference_config(j, source);
}

ModelConfig load_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot open config file " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw IoError("cannot read config file " + path.string());
  json j;
  try {
    j = json::parse(text.str());
  } catch (const json::parse_error& e) {
    throw ConfigError(path.string() + ": not valid JSON: " + e.what());
  }
  return parse_config_json(j, path.string());
}

nlohmann::json to_hf_config_json(const ModelConfig& cfg) {
  json j = cfg.arch == Arch::kDeepseekV32 ? to_hf_v32(cfg) : to_hf_v4(cfg);
  if (!cfg.name.empty()) j["_name_or_path"] = cfg.name;  // read back by config_name()
  return j;
}

ModelConfig preset_config(std::string_view name) {
  for (const Preset& p : kPresets)
    if (name == p.name) return p.make();
  std::string names;
  for (const Preset& p : kPresets) names += std::string(names.empty() ? "" : ", ") + p.name;
  throw ConfigError("unknown preset \"" + std::string(name) + "\"; accepted: " + names);
}

std::vector<std::string> preset_names() {
  std::vector<std::string> out;
  for (const Preset& p : kPresets) out.emplace_back(p.name);
  return out;
}

ModelConfig first_layers(ModelConfig cfg, std::int64_t n) {
  if (n < 1 || n > cfg.n_layers)
    throw ConfigError("first_layers: " + std::to_string(n) + " outside [1, " + std::to_string(cfg.n_layers) +
                      "] (layers of config " + cfg.name + ")");
  std::vector<int> ratios(cfg.compress_ratios.begin(), cfg.compress_ratios.begin() + n);
  ratios.insert(ratios.end(), cfg.compress_ratios.begin() + cfg.n_layers, cfg.compress_ratios.end());
  cfg.compress_ratios = ratios;
  cfg.n_hash_layers = std::min(cfg.n_hash_layers, n);
  cfg.n_layers = n;
  cfg.name += "-" + std::to_string(n) + "L";
  validate(cfg);
  return cfg;
}

}  // namespace v4ref
