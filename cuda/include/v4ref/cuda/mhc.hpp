// mHC on Hopper (sm_90a): the fused write-back + pre kernel, the pre kernel and the standalone
// write-back (docs/cuda-mhc-compressor.md §2; v4-forward.md §4). Implementation:
// cuda/src/mhc_bf16_sm90.cu; per-thread math and CPU executor: mhc_tile.hpp.
//
//   mhc_pre, fused (f != null): X' = bf16(post ⊗ F + Cᵀ X); μ, pre/post/comb from X'; u = Σ pre_k
//   X'_k mhc_pre, pre only (f == null): the same with X' = X (first layer after the embedding)
//   mhc_post: X' = bf16(post ⊗ F + Cᵀ X) only (last layer, before hc_head)
// One launch, no atomics, no workspace: every output element is written exactly once and the
// result does not depend on T, on the grid or on where fn lives (bitwise; the gpu test checks).
//
// Usable without a CUDA toolkit (the cpu tests include it): no CUDA headers here.
#pragma once

#include <cstdint>
#include <vector>

#include "mhc_tile.hpp"  // sibling include, so the header also resolves by path

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace v4ref::cuda {

// Where the mHC kernels round (verification.md §2: the reference builds Rq from this list).
// Everything else is fp32 with IEEE rounding.
enum class MhcPrecisionPoint {
  kStreamsStoreBf16,   // X' = post ⊗ F + Cᵀ X in fp32, stored bf16 (store_bf16_residual)
  kCollapseStoreBf16,  // u = Σ pre_k X'_k in fp32, stored bf16 (store_bf16_residual)
  kMixFp32,            // μ: fp32 fma sums of bf16 X' times fp32 fn (no tf32 rounding of fn)
  kCoefFp32,           // pre / post / comb in fp32 (sigmoid and Sinkhorn: mhc_tile.hpp)
};

inline constexpr MhcPrecisionPoint kMhcPrecisionPoints[] = {
    MhcPrecisionPoint::kStreamsStoreBf16, MhcPrecisionPoint::kCollapseStoreBf16,
    MhcPrecisionPoint::kMixFp32, MhcPrecisionPoint::kCoefFp32};

constexpr bool mhc_rounds_at(MhcPrecisionPoint p) {
  for (MhcPrecisionPoint q : kMhcPrecisionPoints)
    if (q == p) return true;
  return false;
}

// Device pointers of one launch. Alignment: every pointer 16 bytes.
struct MhcPreLaunch {
  std::int64_t tokens = 0, d = 0;
  const std::uint16_t* x = nullptr;  // [T, 4d] bf16 streams
  const std::uint16_t* f = nullptr;  // [T, d] bf16 sublayer output (fused) or null (pre only)
  const float* coef_in = nullptr;    // [T, 24] the previous pre's coefficient rows (fused)
  const float* fn = nullptr;         // [24·4d] fp32, packed (mhc_pack_fn; mhc_tile.hpp)
  const float* base = nullptr;       // [24] fp32
  mhc::Scalars s;
  std::uint16_t* x_out = nullptr;  // [T, 4d] bf16 (fused; must not alias x)
  std::uint16_t* u = nullptr;      // [T, d] bf16
  float* coef = nullptr;           // [T, 24] fp32
  float* mu = nullptr;             // [T, 24] fp32, optional (debug / tests)
};

struct MhcPostLaunch {
  std::int64_t tokens = 0, d = 0;
  const std::uint16_t* x = nullptr;  // [T, 4d]
  const std::uint16_t* f = nullptr;  // [T, d]
  const float* coef_in = nullptr;    // [T, 24]
  std::uint16_t* x_out = nullptr;    // [T, 4d]
};

struct MhcOptions {
  int cluster = 0;       // 0: 16 when the device can schedule it, else 8
  int max_clusters = 0;  // 0: as many as fit (cudaOccupancyMaxActiveClusters); tests vary it
};

// What a launch resolved to (for tests and the bench).
struct MhcPlan {
  mhc::Tiling tiling;
  int clusters = 0;  // persistent clusters in the grid
  int threads = 0;   // per CTA: (W + 1) warps
  std::size_t smem_bytes = 0;
};

// The tiling and grid a launch of mhc_pre would use (fused: f != null).
MhcPlan mhc_plan(std::int64_t tokens, std::int64_t d, bool fused, const MhcOptions& opt = {});
MhcPlan mhc_pre(const MhcPreLaunch& p, const MhcOptions& opt = {}, CUstream_st* stream = nullptr);
void mhc_post(const MhcPostLaunch& p, CUstream_st* stream = nullptr);
// fn [24, 4d] (official layout) -> the kernels' packed layout (once per weight load).
void mhc_pack_fn(const float* fn, float* packed, std::int64_t d, CUstream_st* stream = nullptr);

// Host conveniences for tests: copy in, run, synchronize, copy out. Outputs are pre-filled on
// the device with `poison_u16` / `poison_f32` bit patterns so a missed element shows.
struct MhcHostOutputs {
  std::vector<std::uint16_t> x_out, u;
  std::vector<float> coef, mu;
  MhcPlan plan;
  bool guards_intact = false;  // 4 KiB before and after every output still hold the poison
  bool inputs_intact = false;  // the device inputs read back unchanged after the launch
};
MhcHostOutputs mhc_pre_host(const mhc::Problem& p, const MhcOptions& opt = {},
                            std::uint16_t poison_u16 = 0x7FC1,
                            std::uint32_t poison_f32 = 0x7FC0DEADu);
std::vector<std::uint16_t> mhc_post_host(const mhc::Problem& p, std::uint16_t poison_u16 = 0x7FC1);

// Exhaustive check of the device's fp32 -> bf16 conversion (to_bf16 on the device) against the
// host bit formula (bf16_rne_bits) over all 2^32 floats, NaNs excluded. Returns the number of
// mismatching non-NaN inputs.
std::uint64_t mhc_bf16_conversion_mismatches();

// Compulsory HBM bytes (kernel-targets.md §4.6: 20d per token in bf16, fn once), plus the
// coefficient rows: 80 bytes read (post and comb of the previous pre), 96 written.
//   fused     : F 2d + X 8d + X' 8d + u 2d + 80 + 96 per token, fn 4·24·4d + base 96 once
//   pre only  : X 8d + u 2d + 96 per token, fn and base once
//   write-back: F 2d + X 8d + X' 8d + 80 per token
constexpr double mhc_fused_bytes(std::int64_t tokens, std::int64_t d) {
  return static_cast<double>(tokens) * (20.0 * d + 80.0 + 96.0) + 24.0 * 4.0 * d * 4.0 + 96.0;
}
constexpr double mhc_pre_bytes(std::int64_t tokens, std::int64_t d) {
  return static_cast<double>(tokens) * (10.0 * d + 96.0) + 24.0 * 4.0 * d * 4.0 + 96.0;
}
constexpr double mhc_post_bytes(std::int64_t tokens, std::int64_t d) {
  return static_cast<double>(tokens) * (18.0 * d + 80.0);
}
// fp32 operations per token of the fused kernel: 24·4d fma (μ) + 4d (square sum) + 5·4d
// (write-back) + 4d (collapse), 2 flops per fma.
constexpr double mhc_fused_flops(std::int64_t tokens, std::int64_t d) {
  return static_cast<double>(tokens) * 2.0 * (24.0 + 1.0 + 5.0 + 1.0) * 4.0 * d;
}

}  // namespace v4ref::cuda
