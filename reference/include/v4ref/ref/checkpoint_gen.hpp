// Synthetic checkpoints in the official V4 layout (v4-forward.md §1.4, §15): every tensor of
// expected_tensors(cfg) with the official name, dtype and shape, values drawn from a seeded
// generator with scales that keep a forward pass well-conditioned, written as safetensors
// shards with model.safetensors.index.json and an HF config.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "v4ref/ref/checkpoint_layout.hpp"
#include "v4ref/ref/core/config.hpp"

namespace v4ref {

struct CheckpointGenOptions {
  std::uint64_t seed = 0;
  // A new shard starts once the current one holds this many bytes (tiny checkpoints are split
  // into several shards so the index path is exercised).
  std::uint64_t shard_bytes = 1ull << 20;
};

// The stored bytes of one tensor of the layout, generated deterministically from
// (seed, tensor name): the same tensor is identical whatever else the checkpoint holds.
std::vector<std::byte> generate_tensor_bytes(const ModelConfig& cfg, const TensorSpec& spec,
                                             std::uint64_t seed);

// Writes the checkpoint into `dir` (created if needed; existing *.safetensors, the index and
// config.json there are replaced). Returns the shard file names.
std::vector<std::string> make_checkpoint(const ModelConfig& cfg, const std::filesystem::path& dir,
                                         const CheckpointGenOptions& options = {});

}  // namespace v4ref
