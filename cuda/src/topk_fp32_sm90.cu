// The top-k selection on Hopper: the host side (header cuda/include/v4ref/cuda/topk.hpp). The
// kernel is topk_kernels.cuh, in the SIMT dialect: the same source runs in the SIMT executor on
// the CPU (cuda/simt/topk_simt.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "topk_kernels.cuh"
#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/topk.hpp"

namespace v4ref::cuda {

void topk(const TopkLaunch& p, CUstream_st* stream) {
  if (p.rows < 0 || p.stride < 0 || p.k < 0 || p.rows > 2147483647LL)
    throw ShapeError("topk: rows, stride and k must be >= 0 (rows < 2^31), got " +
                     std::to_string(p.rows) + ", " + std::to_string(p.stride) + ", " +
                     std::to_string(p.k));
  if (p.rows == 0) return;
  if (p.scores == nullptr || p.visible == nullptr || p.out == nullptr)
    throw Error("topk: scores, visible and out must be device pointers");
  const topk_kernels::TopkArgs a{p.rows,
                                 p.stride,
                                 simt::gptr<const float>(p.scores),
                                 simt::gptr<const std::int64_t>(p.visible),
                                 p.k,
                                 simt::gptr<std::int32_t>(p.out)};
  topk_kernels::topk_kernel<<<static_cast<unsigned>(p.rows), topk_kernels::kThreads,
                              topk_kernels::topk_smem_bytes, stream>>>(a);
  V4REF_CUDA_CHECK_LAUNCH();
}

std::vector<std::int32_t> topk_host(const float* scores, std::int64_t rows, std::int64_t stride,
                                    const std::int64_t* visible, std::int64_t k) {
  const auto n = static_cast<std::size_t>(rows * stride), no = static_cast<std::size_t>(rows * k);
  float* ds = nullptr;
  std::int64_t* dv = nullptr;
  std::int32_t* dout = nullptr;
  V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ds), std::max<std::size_t>(n, 1) * 4));
  V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dv), static_cast<std::size_t>(rows) * 8));
  V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dout), std::max<std::size_t>(no, 1) * 4));
  V4REF_CUDA_CHECK(cudaMemcpy(ds, scores, n * 4, cudaMemcpyHostToDevice));
  V4REF_CUDA_CHECK(cudaMemcpy(dv, visible, static_cast<std::size_t>(rows) * 8, cudaMemcpyHostToDevice));
  V4REF_CUDA_CHECK(cudaMemset(dout, 0x7f, std::max<std::size_t>(no, 1) * 4));
  topk({rows, stride, ds, dv, k, dout});
  std::vector<std::int32_t> out(no);
  V4REF_CUDA_CHECK(cudaMemcpy(out.data(), dout, no * 4, cudaMemcpyDeviceToHost));
  cudaFree(ds);
  cudaFree(dv);
  cudaFree(dout);
  return out;
}

}  // namespace v4ref::cuda
