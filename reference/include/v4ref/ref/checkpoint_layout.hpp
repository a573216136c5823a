// The tensor inventory of a V4 checkpoint in the official layout, derived from a config
// (v4-forward.md §1.4, §15.4, §15.6): names, stored dtypes and shapes. Used by the checkpoint
// generator, by `v4ref inspect` to validate a checkpoint against its config, and by the
// count self-check (Flash 69,187 tensors, Pro 145,116).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/core/dtype.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref {

// What a stored tensor is, beyond its dtype.
enum class TensorRole {
  kPlain,      // used as stored (bf16 / fp32 / int64)
  kFp8Weight,  // F8_E4M3 [out, in], has a ".scale" sibling
  kFp8Scale,   // F8_E8M0 [ceil(out/128), ceil(in/128)]
  kFp4Weight,  // I8 packed [out, in/2], has a ".scale" sibling
  kFp4Scale,   // F8_E8M0 [out, in/32]
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::kBF16;
  Shape shape;          // stored shape
  Shape logical_shape;  // dequantised shape ([out, in] for fp4 weights; = shape otherwise)
  TensorRole role = TensorRole::kPlain;
};

// Every tensor of a checkpoint for `cfg`, in a fixed order: globals, then layers 0..n−1, then
// the MTP blocks.
std::vector<TensorSpec> expected_tensors(const ModelConfig& cfg);

// The tensors of one layer (main layer i < n_layers, or MTP block i − n_layers).
std::vector<TensorSpec> expected_layer_tensors(const ModelConfig& cfg, std::int64_t layer);

// The count formula of §15.4: per layer 29 + 6E (+11 CSA, +4 HCA), 6 globals, MTP 39 + 6E.
std::int64_t expected_tensor_count(const ModelConfig& cfg);

// Problems found when checking a checkpoint against a config: missing tensors, unexpected
// tensors, wrong dtype or shape, tid2eid values >= E. Empty = consistent.
struct LayoutProblem {
  std::string tensor;
  std::string message;
};
std::vector<LayoutProblem> check_layout(const Checkpoint& ckpt, const ModelConfig& cfg,
                                        bool check_values = true);

}  // namespace v4ref
