// The precision policy: the one place where rounding points of the forward pass are named
// (guide/style.md "Precision policy", guide/verification.md §2). The math is written once in
// double; a policy only decides where values are rounded.
//
//   exact    : no rounding anywhere (weights are the exactly dequantised stored values).
//   qat      : the fake-quant points of the official forward (v4-forward.md §2.5).
//   official : qat plus the bf16/fp32 storage rounding points of the official code (§12), so an
//              implementation that follows the official numerics can be held to a tight gate.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "v4ref/ref/core/error.hpp"

namespace v4ref {

enum class QuantPoint : std::uint8_t {
  // --- QAT fake-quant points (§2.5) ---
  kActQ8,          // Q8(·;128) on the input of every fp8/fp4-weight linear
  kKvWindowQ8,     // Q8(·;64) on window KV dims [0, D−r) after RoPE
  kCkvQ8,          // Q8(·;64) on main compressed entries, dims [0, D−r)
  kIdxQQ4,         // Q4(·;32) on indexer queries after the Hadamard rotation
  kIdxKQ4,         // Q4(·;32) on indexer keys after the Hadamard rotation
  // --- storage rounding of the official code (§12) ---
  kBf16Residual,   // residual streams between sub-blocks; embedding output; mHC collapse output
  kBf16Norm,       // every weighted RMSNorm output
  kBf16QHeadNorm,  // per-head query RMS norm evaluated in bf16 arithmetic (§2.2)
  kBf16Linear,     // linear outputs (fp32 accumulation inside, bf16 out)
  kBf16Rope,       // RoPE result rounded to bf16
  kFp32RopeAngle,  // ω_j and angles p·ω_j formed in fp32 (§2.3)
  kBf16Pooled,     // compressor pooled vector rounded to bf16 before its RMSNorm (§6.3)
  kBf16IndexScore, // index scores computed and ranked in bf16 (§7.3, §12)
  kBf16AttnProbs,  // unnormalised attention probabilities rounded to bf16 before P·V (§12)
  kBf16AttnOut,    // attention output rounded to bf16
  kBf16ExpertHidden,  // expert intermediate rounded to bf16 before W2 (§9.3, §12)
  kBf16MoeOut,     // MoE output (fp32 sum of routed + shared outputs) rounded to bf16 (§9.3)
  kBf16Hadamard,   // indexer Had output rounded to bf16 before Q4 (OFF rotate_activation takes and
                   // returns bf16; §2.4, §2.5 items 4–5)
  kCount
};

inline constexpr std::array<std::string_view, static_cast<std::size_t>(QuantPoint::kCount)> kQuantPointNames = {
    "act_q8_128",      "kv_window_q8_64",  "ckv_q8_64",       "idx_q_q4_32",   "idx_k_q4_32",
    "store_bf16_residual", "store_bf16_norm", "bf16_q_head_norm", "store_bf16_linear",
    "store_bf16_rope", "rope_fp32_angle", "store_bf16_pooled", "bf16_index_scores",
    "store_bf16_attn_probs", "store_bf16_attn_out", "store_bf16_expert_hidden",
    "store_bf16_moe_out", "store_bf16_hadamard"};

inline std::string_view quant_point_name(QuantPoint p) {
  return kQuantPointNames.at(static_cast<std::size_t>(p));
}

enum class PrecisionMode { kExact, kQat, kOfficial };

class PrecisionPolicy {
 public:
  constexpr PrecisionPolicy() = default;

  static constexpr PrecisionPolicy exact() { return {}; }
  static constexpr PrecisionPolicy qat() {
    PrecisionPolicy p;
    for (QuantPoint q : {QuantPoint::kActQ8, QuantPoint::kKvWindowQ8, QuantPoint::kCkvQ8,
                         QuantPoint::kIdxQQ4, QuantPoint::kIdxKQ4})
      p.enable(q);
    return p;
  }
  static constexpr PrecisionPolicy official() {
    PrecisionPolicy p = qat();
    for (std::size_t i = static_cast<std::size_t>(QuantPoint::kBf16Residual);
         i < static_cast<std::size_t>(QuantPoint::kCount); ++i)
      p.enable(static_cast<QuantPoint>(i));
    return p;
  }
  static constexpr PrecisionPolicy of(PrecisionMode m) {
    return m == PrecisionMode::kExact ? exact() : (m == PrecisionMode::kQat ? qat() : official());
  }

  constexpr bool on(QuantPoint q) const { return (bits_ >> static_cast<unsigned>(q)) & 1u; }
  constexpr PrecisionPolicy& enable(QuantPoint q) {
    bits_ |= 1u << static_cast<unsigned>(q);
    return *this;
  }
  constexpr PrecisionPolicy& disable(QuantPoint q) {
    bits_ &= ~(1u << static_cast<unsigned>(q));
    return *this;
  }
  constexpr bool operator==(const PrecisionPolicy&) const = default;
  constexpr std::uint32_t bits() const { return bits_; }

  // "act_q8_128,kv_window_q8_64,..." (empty for exact)
  std::string describe() const {
    std::string s;
    for (std::size_t i = 0; i < kQuantPointNames.size(); ++i)
      if (on(static_cast<QuantPoint>(i))) s += (s.empty() ? "" : ",") + std::string(kQuantPointNames[i]);
    return s;
  }

 private:
  std::uint32_t bits_ = 0;
};

inline PrecisionMode parse_precision_mode(std::string_view s) {
  if (s == "exact") return PrecisionMode::kExact;
  if (s == "qat") return PrecisionMode::kQat;
  if (s == "official") return PrecisionMode::kOfficial;
  throw ConfigError("unknown precision mode \"" + std::string(s) + "\"; accepted: exact, qat, official");
}

inline std::string_view precision_mode_name(PrecisionMode m) {
  return m == PrecisionMode::kExact ? "exact" : (m == PrecisionMode::kQat ? "qat" : "official");
}

}  // namespace v4ref
