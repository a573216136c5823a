// Synthetic checkpoints in the official V4 layout (v4-forward.md §1.4, §15).
#include "v4ref/ref/checkpoint_gen.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>

#include "v4ref/ref/checkpoint_layout.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/quant.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

bool ends_with(const std::string& s, std::string_view suffix) { return s.ends_with(suffix); }

// Name of the weight a scale belongs to: "<p>.scale" -> "<p>.weight".
std::string weight_of_scale(const std::string& scale_name) {
  return scale_name.substr(0, scale_name.size() - std::string(".scale").size()) + ".weight";
}

template <class T>
void append_value(std::vector<std::byte>& out, T value) {
  const auto* p = reinterpret_cast<const std::byte*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

// How the values of a plain (bf16 / fp32) tensor are distributed. Scales follow the usual
// fan-in rule so every projection keeps activations O(1): the forward stays finite and the
// logits unsaturated.
struct Distribution {
  enum Kind { kNormal, kUniform } kind = kNormal;
  double a = 0;  // mean, or lower bound
  double b = 1;  // standard deviation, or upper bound
};

Distribution plain_distribution(const ModelConfig& cfg, const std::string& name) {
  const double d = static_cast<double>(cfg.dim);
  const double inv_sqrt_d = 1.0 / std::sqrt(d);
  if (ends_with(name, "norm.weight")) return {Distribution::kNormal, 1.0, 0.1};  // RMSNorm gains near 1
  if (name == "embed.weight") return {Distribution::kNormal, 0.0, 1.0};
  if (name == "head.weight") return {Distribution::kNormal, 0.0, inv_sqrt_d};
  if (ends_with(name, "_fn"))  // hc_{attn,ffn,head}_fn act on the RMS-normalised 4d streams
    return {Distribution::kNormal, 0.0, 1.0 / std::sqrt(static_cast<double>(cfg.hc_dim()))};
  if (ends_with(name, "_base")) return {Distribution::kNormal, 0.0, 0.5};
  if (ends_with(name, "_scale")) return {Distribution::kUniform, 0.2, 1.0};
  if (ends_with(name, "attn_sink")) return {Distribution::kNormal, 0.0, 1.0};
  if (ends_with(name, ".ape")) return {Distribution::kNormal, 0.0, 0.5};
  if (ends_with(name, "gate.bias")) return {Distribution::kNormal, 0.0, 0.1};
  // compressor wkv / wgate, indexer weights_proj, gate.weight: projections of the d-wide input
  return {Distribution::kNormal, 0.0, inv_sqrt_d};
}

std::vector<double> draw(const Distribution& dist, std::int64_t n, Rng& rng) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& x : v) x = dist.kind == Distribution::kNormal ? rng.normal(dist.a, dist.b) : rng.uniform(dist.a, dist.b);
  return v;
}

Rng tensor_rng(const std::string& name, const Shape& shape, std::uint64_t seed) {
  return Rng(derive_seed("checkpoint", name, shape_string(shape), seed));
}

// The double matrix behind a quantised weight [out, in]: N(0, 1/sqrt(in)).
std::vector<double> weight_matrix(const std::string& weight_name, const Shape& logical, std::uint64_t seed) {
  Rng rng = tensor_rng(weight_name, logical, seed);
  const Distribution dist{Distribution::kNormal, 0.0, 1.0 / std::sqrt(static_cast<double>(logical[1]))};
  return draw(dist, shape_numel(logical), rng);
}

std::vector<std::byte> tid2eid_bytes(const ModelConfig& cfg, const TensorSpec& spec, std::uint64_t seed) {
  Rng rng = tensor_rng(spec.name, spec.shape, seed);
  const std::int64_t vocab = spec.shape[0], k = spec.shape[1];
  std::vector<std::byte> out;
  out.reserve(static_cast<std::size_t>(vocab * k) * 8);
  std::vector<std::int64_t> row;
  for (std::int64_t v = 0; v < vocab; ++v) {
    row.clear();
    while (static_cast<std::int64_t>(row.size()) < k) {  // k distinct experts per token
      const auto e = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(cfg.n_routed_experts)));
      if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
    }
    for (std::int64_t e : row) append_value(out, e);
  }
  return out;
}

std::vector<std::byte> as_bytes(const std::vector<std::uint8_t>& v) {
  std::vector<std::byte> out(v.size());
  std::memcpy(out.data(), v.data(), v.size());
  return out;
}

// fp8 scales stored as F32 (Flash-Base experts): the power of two as a float.
std::vector<std::byte> ue8m0_as_f32(const std::vector<std::uint8_t>& scales) {
  std::vector<std::byte> out;
  for (std::uint8_t s : scales) append_value(out, static_cast<float>(fmt::ue8m0_to_double(s)));
  return out;
}

// The layout entry of a weight, searched among its own block's tensors ("layers.{i}." /
// "mtp.{k}.") when it has one: the whole layout of a real model is ~70k entries.
TensorSpec find_spec(const ModelConfig& cfg, const std::string& name) {
  std::vector<TensorSpec> specs;
  std::int64_t index = -1;
  for (const auto& [prefix, base] : {std::pair<std::string, std::int64_t>{"layers.", 0}, {"mtp.", cfg.n_layers}})
    if (name.rfind(prefix, 0) == 0) {
      const std::size_t dot = name.find('.', prefix.size());
      if (dot != std::string::npos) index = base + std::stoll(name.substr(prefix.size(), dot - prefix.size()));
    }
  specs = index >= 0 && index < cfg.n_total_layers() ? expected_layer_tensors(cfg, index) : expected_tensors(cfg);
  for (const TensorSpec& s : specs)
    if (s.name == name) return s;
  throw MissingTensor(name + " is not part of the layout");
}

}  // namespace

std::vector<std::byte> generate_tensor_bytes(const ModelConfig& cfg, const TensorSpec& spec,
                                             std::uint64_t seed) {
  switch (spec.role) {
    case TensorRole::kPlain: {
      if (spec.dtype == DType::kI64) return tid2eid_bytes(cfg, spec, seed);
      Rng rng = tensor_rng(spec.name, spec.shape, seed);
      const std::vector<double> v = draw(plain_distribution(cfg, spec.name), shape_numel(spec.shape), rng);
      std::vector<std::byte> out;
      out.reserve(v.size() * dtype_size(spec.dtype));
      for (double x : v) {
        if (spec.dtype == DType::kBF16)
          append_value(out, fmt::bf16_encode(x));
        else if (spec.dtype == DType::kF32)
          append_value(out, static_cast<float>(x));
        else
          throw DtypeError(spec.name + ": the generator has no rule for plain dtype " +
                           std::string(dtype_name(spec.dtype)));
      }
      return out;
    }
    case TensorRole::kFp8Weight:
    case TensorRole::kFp8Scale: {
      const std::string weight = spec.role == TensorRole::kFp8Weight ? spec.name : weight_of_scale(spec.name);
      const Shape logical = spec.role == TensorRole::kFp8Weight
                                ? spec.shape
                                : find_spec(cfg, weight).shape;
      const ref::Fp8BlockWeightCodes q =
          ref::quantize_fp8_block_weight(weight_matrix(weight, logical, seed), logical[0], logical[1]);
      if (spec.role == TensorRole::kFp8Weight) return as_bytes(q.codes);
      return spec.dtype == DType::kF32 ? ue8m0_as_f32(q.scales) : as_bytes(q.scales);
    }
    case TensorRole::kFp4Weight:
    case TensorRole::kFp4Scale: {
      const std::string weight = spec.role == TensorRole::kFp4Weight ? spec.name : weight_of_scale(spec.name);
      const Shape logical = spec.role == TensorRole::kFp4Weight
                                ? spec.logical_shape
                                : find_spec(cfg, weight).logical_shape;
      const ref::Fp4ExpertWeightCodes q =
          ref::quantize_fp4_expert_weight(weight_matrix(weight, logical, seed), logical[0], logical[1]);
      return as_bytes(spec.role == TensorRole::kFp4Weight ? q.packed : q.scales);
    }
  }
  throw Error("unreachable tensor role for " + spec.name);
}

std::vector<std::string> make_checkpoint(const ModelConfig& cfg, const std::filesystem::path& dir,
                                         const CheckpointGenOptions& options) {
  validate(cfg);
  std::filesystem::create_directories(dir);
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string fname = entry.path().filename().string();
    if (fname.ends_with(".safetensors") || fname == "model.safetensors.index.json" || fname == "config.json")
      std::filesystem::remove(entry.path());
  }
  const std::vector<TensorSpec> specs = expected_tensors(cfg);

  // Assign tensors to shards by their byte sizes first, so every shard knows the shard count.
  std::vector<std::size_t> shard_of(specs.size());
  std::size_t shard = 0;
  std::uint64_t in_shard = 0, total = 0;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(shape_numel(specs[i].shape)) * dtype_size(specs[i].dtype);
    if (in_shard > 0 && in_shard + bytes > options.shard_bytes) {
      ++shard;
      in_shard = 0;
    }
    shard_of[i] = shard;
    in_shard += bytes;
    total += bytes;
  }
  const std::size_t n_shards = shard + 1;
  std::vector<std::string> files;
  for (std::size_t s = 0; s < n_shards; ++s) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", s + 1, n_shards);
    files.emplace_back(buf);
  }

  std::map<std::string, std::string> weight_map;
  std::size_t next = 0;
  for (std::size_t s = 0; s < n_shards; ++s) {
    SafetensorsWriter writer;
    writer.set_metadata("format", "pt");
    writer.set_metadata("generator", "v4ref make-checkpoint");
    writer.set_metadata("config", cfg.name);
    writer.set_metadata("seed", std::to_string(options.seed));
    const std::size_t first = next;
    while (next < specs.size() && shard_of[next] == s) ++next;
    // Tensors are independent (seeded by name): generate the shard's tensors in parallel, then
    // add them in layout order, so the bytes do not depend on the thread count.
    const auto n = static_cast<std::int64_t>(next - first);
    std::vector<std::vector<std::byte>> bytes(static_cast<std::size_t>(n));
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
    for (std::int64_t i = 0; i < n; ++i) {
      try {
        bytes[static_cast<std::size_t>(i)] = generate_tensor_bytes(cfg, specs[first + static_cast<std::size_t>(i)], options.seed);
      } catch (...) {
        errors[static_cast<std::size_t>(i)] = std::current_exception();
      }
    }
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    for (std::size_t i = first; i < next; ++i) {
      const TensorSpec& spec = specs[i];
      writer.add(spec.name, spec.dtype, spec.shape, bytes[i - first]);
      std::vector<std::byte>().swap(bytes[i - first]);
      weight_map[spec.name] = files[s];
    }
    writer.write(dir / files[s]);
  }
  write_safetensors_index(dir, weight_map, total);
  std::ofstream config_out(dir / "config.json");
  config_out << to_hf_config_json(cfg).dump(2) << "\n";
  if (!config_out) throw IoError("cannot write " + (dir / "config.json").string());
  return files;
}

}  // namespace v4ref
