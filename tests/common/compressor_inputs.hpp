// Inputs of the compressor kernels, main and indexer (cuda/include/v4ref/cuda/compressor_tile.hpp),
// shared by the CPU executor test (tests/reference/compressor_executor_test.cpp) and the device
// test (tests/gpu/compressor_gpu_test.cpp), so that both run on the same bits: synthetic cases,
// the adversarial modifications, and fp32 projections through a tiny checkpoint's real weights.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "kernel_inputs.hpp"
#include "v4ref/cuda/compressor_tile.hpp"
#include "v4ref/ref/compressor.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/rope.hpp"

namespace v4ref::test {

// One prefill's data as the kernel receives it (fp32), plus the RoPE table the reference uses.
struct CompressorInputs {
  std::string name;
  cuda::cmp::Dims dm;
  std::int64_t tokens = 0;
  std::vector<float> a, g;      // [T, cw] projections (cw = c·w)
  std::vector<float> ape;       // [m, cw]
  std::vector<float> norm_w;    // [w], bf16 values
  std::vector<float> cos, sin;  // [entries, 32] from cmp::rope_table
  float eps = 1e-6f;
  ref::RopeTable rope;
  cuda::cmp::PrefillProblem problem() const {
    cuda::cmp::PrefillProblem p;
    p.dm = dm;
    p.tokens = tokens;
    p.a = a.data();
    p.g = g.data();
    p.ape = ape.data();
    p.norm_w = norm_w.data();
    p.eps = eps;
    p.cos = cos.data();
    p.sin = sin.data();
    return p;
  }
};

// The RoPE table of the synthetic cases: base 160000 with YaRN, 64 rope dims.
inline ref::RopeTable synthetic_compressor_rope() {
  return ref::make_rope_table(160000.0, true, YarnConfig{}, 64);
}

// Sets the RoPE table and the kernel's cos / sin rows for max(1, T/m, table_entries) entries.
inline void set_rope(CompressorInputs& in, const ref::RopeTable& rope,
                     std::int64_t table_entries = 0) {
  in.rope = rope;
  std::vector<float> om(in.rope.omega_fp32.begin(), in.rope.omega_fp32.end());
  cuda::cmp::rope_table(om.data(),
                        std::max<std::int64_t>({1, in.tokens / in.dm.ratio, table_entries}),
                        in.dm.ratio, in.cos, in.sin);
}

// A synthetic prefill of `tokens` tokens for the compressor of dims dm: a ~ N(0, a_sd²),
// g ~ N(0, g_sd²), ape ~ N(0, ape_sd²), norm weight bf16(N(1, 0.1²)), each drawn from
// derive_seed(name, tensor, "<T>x<w>m<m>", V4REF_SEED); the synthetic RoPE table, its rows for
// max(1, T/m, table_entries) entries.
inline CompressorInputs synthetic_inputs(const std::string& name, const cuda::cmp::Dims& dm,
                                         std::int64_t tokens, double a_sd = 1.0, double g_sd = 1.0,
                                         double ape_sd = 0.5, std::int64_t table_entries = 0) {
  const std::uint64_t gs = seed_from_env();
  const int ratio = dm.ratio, width = dm.width;
  const std::string shape =
      std::to_string(tokens) + "x" + std::to_string(width) + "m" + std::to_string(ratio);
  CompressorInputs in;
  in.name = name;
  in.dm = dm;
  in.tokens = tokens;
  const auto n = static_cast<std::size_t>(tokens * in.dm.cw());
  in.a = random_f32(n, derive_seed(name, "a", shape, gs), 0.0, a_sd);
  in.g = random_f32(n, derive_seed(name, "g", shape, gs), 0.0, g_sd);
  in.ape = random_f32(static_cast<std::size_t>(ratio * in.dm.cw()),
                      derive_seed(name, "ape", shape, gs), 0.0, ape_sd);
  in.norm_w =
      random_f32(static_cast<std::size_t>(width), derive_seed(name, "norm", shape, gs), 1.0, 0.1);
  for (float& w : in.norm_w) w = static_cast<float>(fmt::round_bf16(w));
  set_rope(in, synthetic_compressor_rope(), table_entries);
  return in;
}

// The main compressor: m = 4 (CSA) or 128 (HCA), width w.
inline CompressorInputs synthetic_compressor_inputs(const std::string& name, int ratio,
                                                    std::int64_t width, std::int64_t tokens,
                                                    double a_sd = 1.0, double g_sd = 1.0,
                                                    double ape_sd = 0.5,
                                                    std::int64_t table_entries = 0) {
  return synthetic_inputs(name, cuda::cmp::make_dims(ratio, width), tokens, a_sd, g_sd, ape_sd,
                          table_entries);
}

// The indexer compressor of a CSA layer: m = 4, c = 2, w = 128 (§7.1).
inline CompressorInputs synthetic_indexer_inputs(const std::string& name, std::int64_t tokens,
                                                 double a_sd = 1.0, double g_sd = 1.0,
                                                 double ape_sd = 0.5,
                                                 std::int64_t table_entries = 0) {
  return synthetic_inputs(name, cuda::cmp::make_dims(4, 128, cuda::cmp::Kind::kIndexer), tokens,
                          a_sd, g_sd, ape_sd, table_entries);
}

// A synthetic differential case: ratio m, width w, T tokens (the indexer's: m = 4, w = 128).
struct CompressorCase {
  std::string name;
  int ratio;
  std::int64_t width, tokens;
};

// Shown by GoogleTest and ctest instead of the struct's bytes.
inline void PrintTo(const CompressorCase& c, std::ostream* os) { *os << c.name; }

// ---------------------------------------------------------------- adversarial modifications

// Key magnitudes through the norm weight: w ← bf16(w·2^shift).
inline void scale_norm_weight(CompressorInputs& in, int shift) {
  for (float& w : in.norm_w)
    w = static_cast<float>(fmt::round_bf16(std::ldexp(static_cast<double>(w), shift)));
}

// Channel magnitudes spread over 2^±40: a's channel c scaled by 2^e[c mod w], e uniform in
// [−40, 40] from derive_seed(name, "exponent", "", V4REF_SEED).
inline void spread_channel_magnitudes(CompressorInputs& in) {
  Rng rng(derive_seed(in.name, "exponent", "", seed_from_env()));
  std::vector<int> e(static_cast<std::size_t>(in.dm.width));
  for (int& x : e) x = static_cast<int>(rng.below(81)) - 40;
  const int cw = in.dm.cw();
  for (std::int64_t t = 0; t < in.tokens; ++t)
    for (int c = 0; c < cw; ++c) {
      float& a = in.a[static_cast<std::size_t>(t * cw + c)];
      a = std::ldexp(a, e[static_cast<std::size_t>(c % in.dm.width)]);
    }
}

// ---------------------------------------------------------------- a tiny checkpoint's weights

// The bf16 inputs x [T, dim] ~ N(0, 1) of layer `layer`, from derive_seed(tag, "x", layer,
// V4REF_SEED).
inline ref::Mat checkpoint_tokens(const std::string& tag, std::int64_t layer, std::int64_t tokens,
                                  std::int64_t dim) {
  Rng rng(derive_seed(tag, "x", std::to_string(layer), seed_from_env()));
  ref::Mat x(tokens, dim);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = fmt::round_bf16(rng.normal());
  return x;
}

// The compressor `cw` of layer lc on x [T, dim]: a = x·wkvᵀ, g = x·wgateᵀ in fp32, the real ape
// and norm weight, the config's norm eps and the layer's RoPE table.
inline CompressorInputs checkpoint_compressor_inputs(const std::string& name,
                                                     const cuda::cmp::Dims& dm,
                                                     const ref::CompressorWeights& cw,
                                                     const ref::Mat& x, const ModelConfig& cfg,
                                                     const LayerConfig& lc) {
  const ref::Mat a = x * cw.wkv.w.transpose(), g = x * cw.wgate.w.transpose();
  CompressorInputs in;
  in.name = name;
  in.dm = dm;
  in.tokens = x.rows();
  for (Eigen::Index i = 0; i < a.size(); ++i) {
    in.a.push_back(static_cast<float>(a.data()[i]));
    in.g.push_back(static_cast<float>(g.data()[i]));
  }
  for (Eigen::Index i = 0; i < cw.ape.size(); ++i)
    in.ape.push_back(static_cast<float>(cw.ape.data()[i]));
  for (int i = 0; i < cw.width; ++i) in.norm_w.push_back(static_cast<float>(cw.norm(i)));
  in.eps = static_cast<float>(cfg.norm_eps);
  set_rope(in, ref::rope_table_for(cfg, lc));
  return in;
}

}  // namespace v4ref::test
