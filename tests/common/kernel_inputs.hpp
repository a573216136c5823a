// Shared by the mHC and compressor kernel tests, on the CPU executor (tests/reference, label cpu)
// and on the device (tests/gpu): the repository root, the run's seed, the tiny checkpoints, and
// seeded bf16 / fp32 data (the project's v4ref::Rng, verification.md §6). No CUDA toolkit needed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref::test {

// The repository root: $V4REF_SOURCE_DIR when set (ctest sets it; a copied build tree on another
// machine can point it at its checkout), else the configure-time path.
inline std::filesystem::path source_dir() {
  const char* v = std::getenv("V4REF_SOURCE_DIR");
  return v != nullptr && *v != '\0' ? std::filesystem::path(v)
                                    : std::filesystem::path(V4REF_SOURCE_DIR);
}

// V4REF_SEED (strtoull, base 0), default 0.
inline std::uint64_t seed_from_env() {
  const char* v = std::getenv("V4REF_SEED");
  return v == nullptr || *v == '\0' ? 0 : std::strtoull(v, nullptr, 0);
}

// A tiny checkpoint of golden/checkpoints (e.g. "tiny-flash-s0"): its config and weights.
struct TinyCheckpoint {
  ModelConfig cfg;
  Checkpoint ckpt;
};

inline TinyCheckpoint open_tiny_checkpoint(const std::string& preset) {
  const std::filesystem::path dir = source_dir() / "golden/checkpoints" / preset;
  return {load_config(dir / "config.json"), Checkpoint::open(dir)};
}

// [n] bf16 codes of N(0, sd²) draws from Rng(seed).
inline std::vector<std::uint16_t> random_bf16_codes(std::size_t n, std::uint64_t seed, double sd) {
  Rng rng(seed);
  std::vector<std::uint16_t> v(n);
  for (auto& h : v) h = fmt::bf16_encode(sd * rng.normal());
  return v;
}

// [n] fp32 values of N(mean, sd²) draws from Rng(seed).
inline std::vector<float> random_f32(std::size_t n, std::uint64_t seed, double mean, double sd) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(mean + sd * rng.normal());
  return v;
}

}  // namespace v4ref::test
