// CSA and HCA attention over the FP8 KV cache on Hopper (cuda/src/attention_kernels.cuh; formats,
// key lists and arithmetic: attention_tile.hpp; docs/cuda-attention.md). Usable without a CUDA
// toolkit: the shapes and checks are shared with the SIMT executor's launcher.
#pragma once

#include <cstdint>
#include <vector>

#include "v4ref/cuda/attention_tile.hpp"

struct CUstream_st;

namespace v4ref::cuda {

// Device arrays of one launch (the shapes of attn::AttentionProblem).
struct AttentionDeviceArrays {
  const std::uint16_t* q = nullptr;            // [R, H, D] bf16, 16-byte aligned
  const float* sink = nullptr;                 // [H]
  const std::int32_t* pos = nullptr;           // [R]
  const std::int32_t* request = nullptr;       // [R]
  const std::uint8_t* window_cache = nullptr;  // [pages, 64, row_bytes(D)], 8-byte aligned
  const std::int32_t* window_table = nullptr;  // [B, window_pages]
  const std::uint8_t* cmp_cache = nullptr;     // [pages, 64, row_bytes(D)], 8-byte aligned
  const std::int32_t* cmp_table = nullptr;     // [B, cmp_pages]
  const std::int32_t* selected = nullptr;      // CSA [R, top_k]
  std::uint16_t* out = nullptr;                // [R, H, D] bf16, 16-byte aligned
  float* lse = nullptr;                        // [R, H]
};

// Device launch: grid (R, ⌈H/64⌉), 256 threads. `host` holds host copies of pos, request, the
// page tables and selected (validated by attn::check_problem); the stored values in device memory
// are not read on the host (the host convenience below and the executor launcher check them).
void attention(const attn::AttentionProblem& host, const AttentionDeviceArrays& dev, CUstream_st* stream = nullptr);

// Host convenience (tests): host arrays through the device, checked by attn::check_stored_values.
// out [R, H, D] bf16 bits and lse [R, H] are written.
void attention_host(const attn::AttentionProblem& p, std::uint16_t* out, float* lse);

}  // namespace v4ref::cuda
