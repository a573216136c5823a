// Deterministic random numbers: a counter-based splitmix64 generator with our own uniform and
// normal transforms, so data is identical across standard libraries and machines
// (guide/verification.md §6; std::normal_distribution is implementation-defined and unused).
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

namespace v4ref {

inline constexpr std::uint64_t fnv1a64(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

inline constexpr std::uint64_t rotl64(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// The splitmix64 finaliser: a bijective 64-bit mixer.
inline constexpr std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// seed(case, tensor, shape) of guide/verification.md §6; `global` is V4REF_SEED (default 0).
inline constexpr std::uint64_t derive_seed(std::string_view case_name, std::string_view tensor,
                                           std::string_view shape, std::uint64_t global = 0) {
  return mix64(fnv1a64(case_name) ^ rotl64(fnv1a64(tensor), 21) ^ rotl64(fnv1a64(shape), 42) ^ global);
}

class Rng {
 public:
  explicit constexpr Rng(std::uint64_t seed) : state_(seed) {}

  constexpr std::uint64_t next_u64() {
    state_ += 0x9e3779b97f4a7c15ull;
    return mix64(state_);
  }
  // Uniform in [0, 1) with 53 random bits.
  constexpr double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n), n > 0 (rejection-free multiply-shift; bias < 2^-64·n).
  std::uint64_t below(std::uint64_t n) {
    __extension__ using U128 = unsigned __int128;  // GCC/Clang extension, fine under -pedantic
    return static_cast<std::uint64_t>((static_cast<U128>(next_u64()) * n) >> 64);
  }
  // Standard normal by the Box–Muller transform (one value per call, the pair's sine half kept).
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - uniform();  // (0, 1]
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double theta = 2.0 * 3.141592653589793238462643383279502884 * u2;
    spare_ = r * std::sin(theta);
    has_spare_ = true;
    return r * std::cos(theta);
  }
  double normal(double mean, double stddev) { return mean + stddev * normal(); }

 private:
  std::uint64_t state_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace v4ref
