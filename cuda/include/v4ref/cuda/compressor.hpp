// The main compressor on Hopper (sm_90a): pooling, RMSNorm, RoPE and the Q8 cache row, for
// prefill and for the §11.2 decode state machine (docs/cuda-mhc-compressor.md §4;
// v4-forward.md §6, §11.2). Implementation: cuda/src/compressor_fp8_sm90.cu; per-thread math and
// CPU executor: compressor_tile.hpp. Post-projection only: a = W_kv x and g = W_gate x (fp32)
// come from a separate GEMM.
//
// Usable without a CUDA toolkit (the cpu tests include it): no CUDA headers here.
#pragma once

#include <cstdint>
#include <vector>

#include "compressor_tile.hpp"  // sibling include, so the header also resolves by path

struct CUstream_st;

namespace v4ref::cuda {

// Where the compressor kernels round (verification.md §2). The reference's points are
// store_bf16_pooled, store_bf16_norm, rope_fp32_angle, store_bf16_rope and ckv_q8_64; the
// logits are fp32(g + ape) as the official fp32 state holds them, the rest fp32.
enum class CompressorPrecisionPoint {
  kLogitFp32,        // slot logit fp32(g + ape[r]) (the §11.2 state is fp32)
  kPooledStoreBf16,  // pooled vector (fp32 softmax pooling) rounded to bf16
  kNormStoreBf16,    // RMSNorm output (fp32) rounded to bf16
  kRopeFp32Angle,    // θ = fp32(fp32(p)·fp32(ω)), cos/sin of it (host table)
  kRopeStoreBf16,    // rotated pairs (fp32) rounded to bf16
  kCkvQ8,            // Q8(·; 64) on the nope dims: e4m3 codes + ue8m0 scales
};

inline constexpr CompressorPrecisionPoint kCompressorPrecisionPoints[] = {
    CompressorPrecisionPoint::kLogitFp32,     CompressorPrecisionPoint::kPooledStoreBf16,
    CompressorPrecisionPoint::kNormStoreBf16, CompressorPrecisionPoint::kRopeFp32Angle,
    CompressorPrecisionPoint::kRopeStoreBf16, CompressorPrecisionPoint::kCkvQ8};

constexpr bool compressor_rounds_at(CompressorPrecisionPoint p) {
  for (CompressorPrecisionPoint q : kCompressorPrecisionPoints)
    if (q == p) return true;
  return false;
}

// Device pointers; every pointer 16-byte aligned except `cache` (8).
struct CompressorPrefillLaunch {
  cmp::Dims dm;
  std::int64_t tokens = 0;        // T, from position 0; entries = T / m
  const float* a = nullptr;       // [T, c·w]
  const float* g = nullptr;       // [T, c·w]
  const float* ape = nullptr;     // [m, c·w]
  const float* norm_w = nullptr;  // [w]
  float eps = 1e-6f;
  const float* cos = nullptr;           // [T/m, 32]
  const float* sin = nullptr;           // [T/m, 32]
  std::uint8_t* cache = nullptr;        // [T/m, row_bytes]
  std::uint16_t* dbg_pooled = nullptr;  // optional [T/m, w] bf16
  std::uint16_t* dbg_normed = nullptr;  // optional [T/m, w] bf16
};

// One decode step for a batch of B sequences, token t_b of sequence b (t_b read from `positions`
// on the device, so a captured graph can be replayed step after step).
struct CompressorDecodeLaunch {
  cmp::Dims dm;
  std::int64_t batch = 0;
  const std::int64_t* positions = nullptr;  // [B]
  const float* a = nullptr;                 // [B, c·w]
  const float* g = nullptr;                 // [B, c·w]
  const float* ape = nullptr;
  const float* norm_w = nullptr;
  float eps = 1e-6f;
  const float* cos = nullptr;  // [entries_max, 32]
  const float* sin = nullptr;
  float* state_kv = nullptr;     // [B, state_rows, c·w]
  float* state_score = nullptr;  // [B, state_rows, c·w]
  std::uint8_t* cache =
      nullptr;  // [B, entries_max, row_bytes]; entry t_b / m written on completion
  std::int64_t entries_max = 0;
  std::uint16_t* dbg_pooled = nullptr;  // optional [B, w]
  std::uint16_t* dbg_normed = nullptr;  // optional [B, w]
};

void compressor_prefill(const CompressorPrefillLaunch& p, CUstream_st* stream = nullptr);
// The §11.2 hand-off state of one sequence after the prefill of p.tokens tokens.
void compressor_prefill_state(const CompressorPrefillLaunch& p, float* state_kv, float* state_score,
                              CUstream_st* stream = nullptr);
void compressor_decode(const CompressorDecodeLaunch& p, CUstream_st* stream = nullptr);

// Host conveniences for tests (outputs pre-filled with 0xA5 poison).
struct CompressorHostOut {
  std::vector<std::uint8_t> cache;
  std::vector<std::uint16_t> pooled, normed;
  std::vector<float> state_kv, state_score;
};
CompressorHostOut compressor_prefill_host(const cmp::PrefillProblem& p, bool with_state);
// Decode steps t = t0 .. t0 + steps − 1 of one sequence from `state` (updated), a/g rows [steps,
// c·w]; cache [entries_max, row_bytes] (updated).
void compressor_decode_host(const cmp::Dims& dm, std::int64_t t0, std::int64_t steps,
                            const float* a, const float* g, const float* ape, const float* norm_w,
                            float eps, const std::vector<float>& cos, const std::vector<float>& sin,
                            cmp::DecodeState& state, std::vector<std::uint8_t>& cache);

// Compulsory bytes (kernel-targets.md §4.5): prefill T·2·c·w·4 (a and g) + (T/m)·row_bytes +
// m·c·w·4 (ape) + w·4; decode per step and sequence: 2·c·w·4 in, the state row written (2·c·w·4),
// and on completion the state read (2·rows·c·w·4) and a cache row written.
constexpr double compressor_prefill_bytes(const cmp::Dims& dm, std::int64_t tokens) {
  return static_cast<double>(tokens) * 2.0 * dm.cw() * 4.0 +
         static_cast<double>(tokens / dm.ratio) * (dm.row_bytes() + 2.0 * 32 * 4) +
         static_cast<double>(dm.ratio) * dm.cw() * 4.0 + dm.width * 4.0;
}

}  // namespace v4ref::cuda
