// The indexer's top-k selection on Hopper (cuda/src/topk_kernels.cuh; rule: verification.md §9,
// ref::select_topk): per row the min(k, #non-NaN visible) largest scores, ties to the lower
// index, −1 padding; indices in ascending order. Usable without a CUDA toolkit.
#pragma once

#include <cstdint>
#include <vector>

struct CUstream_st;

namespace v4ref::cuda {

struct TopkLaunch {
  std::int64_t rows = 0, stride = 0;          // scores [rows, stride] fp32 (device)
  const float* scores = nullptr;
  const std::int64_t* visible = nullptr;      // [rows] (device): visible prefix of each row
  std::int64_t k = 0;                         // 512 (Flash) / 1024 (Pro)
  std::int32_t* out = nullptr;                // [rows, k] (device)
};

void topk(const TopkLaunch& p, CUstream_st* stream = nullptr);

// Host convenience (tests): scores [rows, stride] and visible [rows] on the host, through the
// device; returns [rows, k].
std::vector<std::int32_t> topk_host(const float* scores, std::int64_t rows, std::int64_t stride,
                                    const std::int64_t* visible, std::int64_t k);

// Compulsory bytes (kernel-targets.md §4.2): the visible scores read once, the indices written.
inline double topk_bytes(std::int64_t rows, double visible_total, std::int64_t k) {
  return 4.0 * visible_total + 4.0 * static_cast<double>(rows) * static_cast<double>(k);
}

}  // namespace v4ref::cuda
