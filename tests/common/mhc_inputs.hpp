// Inputs of the mHC kernels (cuda/include/v4ref/cuda/mhc_tile.hpp), shared by the CPU executor
// test (tests/reference/mhc_executor_test.cpp) and the device test (tests/gpu/mhc_gpu_test.cpp),
// so that both run on the same bits: synthetic Flash / Pro-shape launches, the adversarial stream
// scaling, and the launches of a tiny checkpoint's hyper-connection chain.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "kernel_inputs.hpp"
#include "v4ref/cuda/mhc_tile.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/mhc.hpp"

namespace v4ref::test {

// One launch's data as the kernel receives it (bf16 / fp32 bits).
struct MhcInputs {
  std::string name;
  std::int64_t tokens = 0, d = 0;
  bool fused = false;
  std::vector<std::uint16_t> x, f;  // [T, 4d], [T, d] bf16 codes
  std::vector<float> coef_in;       // [T, 24]
  std::vector<float> fn, base;      // [24, 4d], [24]
  cuda::mhc::Scalars s;
  cuda::mhc::Problem problem() const {
    cuda::mhc::Problem p;
    p.tokens = tokens;
    p.d = d;
    p.x = x.data();
    p.f = fused ? f.data() : nullptr;
    p.coef_in = fused ? coef_in.data() : nullptr;
    p.fn = fn.data();
    p.base = base.data();
    p.s = s;
    return p;
  }
};

// The reference's view of a launch's weights: fn [24, 4d], base [24], scale [3].
inline ref::HcParams hc_params_of(const MhcInputs& in) {
  constexpr int kMix = cuda::mhc::kMix;
  ref::HcParams p;
  p.name = in.name;
  p.fn.resize(kMix, 4 * in.d);
  for (Eigen::Index i = 0; i < p.fn.size(); ++i)
    p.fn.data()[i] = in.fn[static_cast<std::size_t>(i)];
  p.base.resize(kMix);
  for (int i = 0; i < kMix; ++i) p.base(i) = in.base[static_cast<std::size_t>(i)];
  p.scale.resize(3);
  for (int i = 0; i < 3; ++i) p.scale(i) = in.s.scale[i];
  return p;
}

// Coefficient rows [T, 24] of a plausible previous pre: the reference split of random mixing
// logits (post in (0, 2), comb doubly stochastic up to §4.3's 20 steps), rounded to fp32.
inline std::vector<float> previous_coefficients(const MhcInputs& in, std::uint64_t seed) {
  constexpr int kMix = cuda::mhc::kMix;
  const ref::HcParams p = hc_params_of(in);
  Rng rng(seed);
  std::vector<float> out(static_cast<std::size_t>(in.tokens * kMix));
  for (std::int64_t t = 0; t < in.tokens; ++t) {
    ref::Vec mu(kMix);
    for (int r = 0; r < kMix; ++r) mu(r) = rng.normal();
    const ref::HcMix m = ref::hc_split(mu, p, 4, in.s.sinkhorn_iters, in.s.hc_eps);
    float* row = out.data() + t * kMix;
    for (int k = 0; k < 4; ++k) {
      row[k] = static_cast<float>(m.pre(k));
      row[4 + k] = static_cast<float>(m.post(k));
      for (int j = 0; j < 4; ++j) row[8 + 4 * j + k] = static_cast<float>(m.comb(j, k));
    }
  }
  return out;
}

// A synthetic launch of `tokens` tokens of width d (pre only, or fused with the write-back):
// X, F ~ N(0, x_sd²) in bf16, and weights in the checkpoint generator's ranges
// (reference/src/checkpoint_gen.cpp): fn ~ N(0, 1/sqrt(4d)), base ~ N(0, 0.5), scale ~ U(0.2, 1).
// Every tensor has its own seed derive_seed(name, tensor, "TxD", V4REF_SEED).
inline MhcInputs synthetic_mhc_inputs(const std::string& name, std::int64_t tokens, std::int64_t d,
                                      bool fused, double x_sd = 1.0) {
  constexpr int kMix = cuda::mhc::kMix;
  const std::uint64_t g = seed_from_env();
  const std::string shape = std::to_string(tokens) + "x" + std::to_string(d);
  MhcInputs in;
  in.name = name;
  in.tokens = tokens;
  in.d = d;
  in.fused = fused;
  const auto T = static_cast<std::size_t>(tokens), D = static_cast<std::size_t>(d);
  in.x = random_bf16_codes(T * 4 * D, derive_seed(name, "x", shape, g), x_sd);
  in.fn = random_f32(kMix * 4 * D, derive_seed(name, "fn", shape, g), 0.0,
                     1.0 / std::sqrt(4.0 * static_cast<double>(d)));
  in.base = random_f32(kMix, derive_seed(name, "base", shape, g), 0.0, 0.5);
  Rng rs(derive_seed(name, "scale", shape, g));
  for (float& s : in.s.scale) s = static_cast<float>(rs.uniform(0.2, 1.0));
  if (fused) {
    in.f = random_bf16_codes(T * D, derive_seed(name, "f", shape, g), x_sd);
    in.coef_in = previous_coefficients(in, derive_seed(name, "coef_in", shape, g));
  }
  return in;
}

// A synthetic differential case: synthetic_mhc_inputs("mhc/" + name, tokens, d, fused), run with
// cluster size `cluster`.
struct MhcCase {
  std::string name;
  std::int64_t tokens, d;
  bool fused;
  int cluster;
};

// Shown by GoogleTest and ctest instead of the struct's bytes.
inline void PrintTo(const MhcCase& c, std::ostream* os) { *os << c.name; }

// Scales a launch's streams (and F) per stream by 2^e[k] (exact in bf16 while in range).
inline void scale_streams(MhcInputs& in, const int e[4]) {
  for (std::int64_t t = 0; t < in.tokens; ++t)
    for (int k = 0; k < 4; ++k)
      for (std::int64_t i = 0; i < in.d; ++i) {
        auto& h = in.x[static_cast<std::size_t>(t * 4 * in.d + k * in.d + i)];
        h = fmt::bf16_encode(std::ldexp(fmt::bf16_to_double(h), e[k]));
      }
  if (in.fused)
    for (auto& h : in.f) h = fmt::bf16_encode(std::ldexp(fmt::bf16_to_double(h), e[0]));
}

// ---------------------------------------------------------------- a tiny checkpoint's chain
//
// The chain through every layer of a tiny checkpoint, as the model runs it: pre (attn, layer 0)
// on the embedding streams, then per sub-block a fused launch (write-back of the previous
// sub-block with a random sublayer output F, pre with this sub-block's real hc_*_fn/base/scale),
// each on the previous launch's outputs (x_out, coef).

// The embedding streams the chain of `preset` starts from: [T, 4d] bf16 codes, N(0, 1).
inline std::vector<std::uint16_t> chain_start_streams(const std::string& preset,
                                                      std::int64_t tokens, std::int64_t d) {
  return random_bf16_codes(
      static_cast<std::size_t>(tokens * 4 * d),
      derive_seed("mhc/" + preset, "x", std::to_string(tokens), seed_from_env()), 1.0);
}

// The launch of sub-block `hp` of `preset` on streams x [T, 4d]: pre only when coef_in is empty
// (the chain's first launch), else fused with coef_in [T, 24] and F [T, d] ~ N(0, 1) in bf16.
inline MhcInputs chain_launch(const std::string& preset, const ModelConfig& cfg,
                              const ref::HcParams& hp, std::int64_t tokens,
                              const std::vector<std::uint16_t>& x,
                              const std::vector<float>& coef_in) {
  MhcInputs in;
  in.name = "mhc/" + preset + "/" + hp.name;
  in.tokens = tokens;
  in.d = cfg.dim;
  in.fused = !coef_in.empty();
  in.x = x;
  for (Eigen::Index i = 0; i < hp.fn.size(); ++i)
    in.fn.push_back(static_cast<float>(hp.fn.data()[i]));
  for (int i = 0; i < 24; ++i) in.base.push_back(static_cast<float>(hp.base(i)));
  for (int i = 0; i < 3; ++i) in.s.scale[i] = static_cast<float>(hp.scale(i));
  in.s.norm_eps = static_cast<float>(cfg.norm_eps);
  in.s.hc_eps = static_cast<float>(cfg.hc_eps);
  in.s.sinkhorn_iters = static_cast<int>(cfg.hc_sinkhorn_iters);
  if (in.fused) {
    in.f =
        random_bf16_codes(static_cast<std::size_t>(tokens * cfg.dim),
                          derive_seed(in.name, "f", std::to_string(tokens), seed_from_env()), 1.0);
    in.coef_in = coef_in;
  }
  return in;
}

}  // namespace v4ref::test
