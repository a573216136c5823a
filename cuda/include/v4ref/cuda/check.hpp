// Error checking for CUDA runtime calls and kernel launches (guide/style.md).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "v4ref/ref/core/error.hpp"

namespace v4ref::cuda {

class CudaError : public ::v4ref::Error {
 public:
  using ::v4ref::Error::Error;
};

inline void check_cuda(cudaError_t status, const char* expr, const char* file, int line) {
  if (status != cudaSuccess)
    throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + expr + " failed: " +
                    cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

// True when a CUDA device can be used; `why` receives the reason when not.
bool device_available(std::string* why = nullptr);

}  // namespace v4ref::cuda

#define V4REF_CUDA_CHECK(expr) ::v4ref::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)
#define V4REF_CUDA_CHECK_LAUNCH() V4REF_CUDA_CHECK(cudaGetLastError())
