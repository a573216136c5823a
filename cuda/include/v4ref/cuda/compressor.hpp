// The compressors on Hopper (sm_90a), for prefill and for the §11.2 decode state machine
// (docs/cuda-mhc-compressor.md §4; v4-forward.md §6, §7.1, §11.2):
//   main    (Dims::kind = cmp::Kind::kMain, CSA m = 4 or HCA m = 128, w = 128·Q): pooling,
//           RMSNorm, RoPE and the Q8 cache row;
//   indexer (cmp::Kind::kIndexer, m = 4, w = 128): pooling, RMSNorm, RoPE, Hadamard and the
//           68-byte Q4 cache row.
// Implementation: cuda/src/compressor_fp8_sm90.cu; per-thread math and CPU executor:
// compressor_tile.hpp. Post-projection only: a = W_kv x and g = W_gate x (fp32) come from a
// separate GEMM.
//
// Usable without a CUDA toolkit (the cpu tests include it): no CUDA headers here.
#pragma once

#include <cstdint>
#include <vector>

#include "compressor_tile.hpp"  // sibling include, so the header also resolves by path

struct CUstream_st;

namespace v4ref::cuda {

// Where the compressor kernels round (verification.md §2). The reference's points are
// store_bf16_pooled, store_bf16_norm, rope_fp32_angle, store_bf16_rope, then ckv_q8_64 (main) or
// store_bf16_hadamard and idx_k_q4_32 (indexer); the logits are fp32(g + ape) as the official
// fp32 state holds them, the rest fp32.
enum class CompressorPrecisionPoint {
  kLogitFp32,          // slot logit fp32(g + ape[r]) (the §11.2 state is fp32)
  kPooledStoreBf16,    // pooled vector (fp32 softmax pooling) rounded to bf16
  kNormStoreBf16,      // RMSNorm output (fp32) rounded to bf16
  kRopeFp32Angle,      // θ = fp32(fp32(p)·fp32(ω)), cos/sin of it (host table)
  kRopeStoreBf16,      // rotated pairs (fp32) rounded to bf16
  kCkvQ8,              // main: Q8(·; 64) on the nope dims: e4m3 codes + ue8m0 scales
  kHadamardStoreBf16,  // indexer: fp32 butterflies of the bf16 entry, one fp32 product by
                       // fp32(128^-1/2), rounded to bf16 (the official rotate_activation returns
                       // bf16; v4-forward.md §2.4)
  kIdxKQ4,             // indexer: Q4(·; 32) on all 128 dims: e2m1 codes + ue8m0 scales (§2.5)
};

inline constexpr CompressorPrecisionPoint kCompressorPrecisionPoints[] = {
    CompressorPrecisionPoint::kLogitFp32,     CompressorPrecisionPoint::kPooledStoreBf16,
    CompressorPrecisionPoint::kNormStoreBf16, CompressorPrecisionPoint::kRopeFp32Angle,
    CompressorPrecisionPoint::kRopeStoreBf16, CompressorPrecisionPoint::kCkvQ8};

inline constexpr CompressorPrecisionPoint kIndexerCompressorPrecisionPoints[] = {
    CompressorPrecisionPoint::kLogitFp32,     CompressorPrecisionPoint::kPooledStoreBf16,
    CompressorPrecisionPoint::kNormStoreBf16, CompressorPrecisionPoint::kRopeFp32Angle,
    CompressorPrecisionPoint::kRopeStoreBf16, CompressorPrecisionPoint::kHadamardStoreBf16,
    CompressorPrecisionPoint::kIdxKQ4};

constexpr bool compressor_rounds_at(CompressorPrecisionPoint p, cmp::Kind kind = cmp::Kind::kMain) {
  if (kind == cmp::Kind::kIndexer) {
    for (CompressorPrecisionPoint q : kIndexerCompressorPrecisionPoints)
      if (q == p) return true;
    return false;
  }
  for (CompressorPrecisionPoint q : kCompressorPrecisionPoints)
    if (q == p) return true;
  return false;
}

// Device pointers; every pointer 16-byte aligned except `cache` (main 8; indexer 4: its rows are
// 68 bytes, so consecutive rows are only 4-byte aligned) and the debug outputs (8).
// dbg_roped and dbg_hadamard exist for the indexer only (an Error if set for the main kind).
struct CompressorPrefillLaunch {
  cmp::Dims dm;
  std::int64_t tokens = 0;        // T, from position 0; entries = T / m
  const float* a = nullptr;       // [T, c·w]
  const float* g = nullptr;       // [T, c·w]
  const float* ape = nullptr;     // [m, c·w]
  const float* norm_w = nullptr;  // [w]
  float eps = 1e-6f;
  const float* cos = nullptr;             // [T/m, 32]
  const float* sin = nullptr;             // [T/m, 32]
  std::uint8_t* cache = nullptr;          // [T/m, row_bytes]
  std::uint16_t* dbg_pooled = nullptr;    // optional [T/m, w] bf16
  std::uint16_t* dbg_normed = nullptr;    // optional [T/m, w] bf16 (before RoPE)
  std::uint16_t* dbg_roped = nullptr;     // optional, indexer: [T/m, w] bf16 (Hadamard input)
  std::uint16_t* dbg_hadamard = nullptr;  // optional, indexer: [T/m, w] bf16 (Q4 input)
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
  std::uint16_t* dbg_pooled = nullptr;    // optional [B, w]
  std::uint16_t* dbg_normed = nullptr;    // optional [B, w]
  std::uint16_t* dbg_roped = nullptr;     // optional, indexer: [B, w]
  std::uint16_t* dbg_hadamard = nullptr;  // optional, indexer: [B, w]
};

void compressor_prefill(const CompressorPrefillLaunch& p, CUstream_st* stream = nullptr);
// The §11.2 hand-off state of one sequence after the prefill of p.tokens tokens.
void compressor_prefill_state(const CompressorPrefillLaunch& p, float* state_kv, float* state_score,
                              CUstream_st* stream = nullptr);
void compressor_decode(const CompressorDecodeLaunch& p, CUstream_st* stream = nullptr);

// Host conveniences for tests (outputs pre-filled with 0xA5 poison).
struct CompressorHostOut {
  std::vector<std::uint8_t> cache;
  std::vector<std::uint16_t> pooled, normed, roped, hadamard;  // roped, hadamard: indexer only
  std::vector<float> state_kv, state_score;
};
CompressorHostOut compressor_prefill_host(const cmp::PrefillProblem& p, bool with_state);
// Decode steps t = t0 .. t0 + steps − 1 of one sequence from `state` (updated), a/g rows [steps,
// c·w]; cache [entries_max, row_bytes] (updated).
void compressor_decode_host(const cmp::Dims& dm, std::int64_t t0, std::int64_t steps,
                            const float* a, const float* g, const float* ape, const float* norm_w,
                            float eps, const std::vector<float>& cos, const std::vector<float>& sin,
                            cmp::DecodeState& state, std::vector<std::uint8_t>& cache);

// Compulsory bytes (kernel-targets.md §4.5), prefill: T·2·c·w·4 (a and g) + (T/m)·(row_bytes +
// 256) (cache rows and the 32 + 32 fp32 rope table entries) + m·c·w·4 (ape) + w·4 (norm). The
// indexer's rows are 68 bytes (cost-model.md), the main compressor's row_bytes() (584 at w = 512).
// kernel-targets.md's formula omits the rope table and the norm weight (0.8 % of C4 main, 3.0 %
// of the indexer at T = 8192).
constexpr double compressor_prefill_bytes(const cmp::Dims& dm, std::int64_t tokens) {
  return static_cast<double>(tokens) * 2.0 * dm.cw() * 4.0 +
         static_cast<double>(tokens / dm.ratio) * (dm.row_bytes() + 2.0 * 32 * 4) +
         static_cast<double>(dm.ratio) * dm.cw() * 4.0 + dm.width * 4.0;
}

// Compulsory bytes of one decode launch of `batch` sequences, of which `completing` complete a
// block: every sequence reads its a, g rows (2·c·w·4) and writes its state row (kv and score,
// 2·c·w·4); a completing one reads the whole state (2·rows·c·w·4), its rope table entry (256)
// and writes a cache row (row_bytes) and, CSA, the copy of rows 4–7 into 0–3 (2·4·c·w·4 written;
// its reads are the state read already counted). ape and the norm weight once (m·c·w·4 + w·4).
constexpr double compressor_decode_bytes(const cmp::Dims& dm, std::int64_t batch,
                                         std::int64_t completing) {
  const double row = 2.0 * dm.cw() * 4.0;  // one state row, kv and score
  const double pool =
      dm.state_rows() * row + 2.0 * 32 * 4 + dm.row_bytes() + (dm.csa() ? 4 * row : 0);
  return static_cast<double>(batch) * 2.0 * row + static_cast<double>(completing) * pool +
         static_cast<double>(dm.ratio) * dm.cw() * 4.0 + dm.width * 4.0;
}

}  // namespace v4ref::cuda
