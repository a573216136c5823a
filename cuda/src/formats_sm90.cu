// Every code of bf16, e4m3fn, e2m1 and ue8m0 decoded and re-encoded on the device with the
// core codecs (v4-forward.md §15.5). One thread per code.
#include <cuda_runtime.h>

#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/formats.hpp"
#include "v4ref/ref/core/formats.hpp"

namespace v4ref::cuda {
namespace {

__global__ void e4m3_round_trip_kernel(double* decoded, std::uint8_t* reencoded) {
  const int code = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (code >= 256) return;
  const double v = fmt::e4m3_to_double(static_cast<std::uint8_t>(code));
  decoded[code] = v;
  reencoded[code] = fmt::e4m3_encode(v);
}

__global__ void e2m1_round_trip_kernel(double* decoded, std::uint8_t* reencoded) {
  const int code = static_cast<int>(threadIdx.x);
  if (code >= 16) return;
  const double v = fmt::e2m1_to_double(static_cast<std::uint8_t>(code));
  decoded[code] = v;
  reencoded[code] = fmt::e2m1_encode(v);
}

__global__ void ue8m0_decode_kernel(double* decoded) {
  const int code = static_cast<int>(threadIdx.x);
  if (code < 256) decoded[code] = fmt::ue8m0_to_double(static_cast<std::uint8_t>(code));
}

__global__ void bf16_round_trip_kernel(std::uint16_t* reencoded) {
  const int code = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (code >= 65536) return;
  reencoded[code] = fmt::bf16_encode(fmt::bf16_to_double(static_cast<std::uint16_t>(code)));
}

template <class T>
std::vector<T> download(const T* device, std::size_t n) {
  std::vector<T> host(n);
  V4REF_CUDA_CHECK(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

}  // namespace

bool device_available(std::string* why) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    if (why != nullptr)
      *why = status != cudaSuccess ? std::string("cudaGetDeviceCount: ") + cudaGetErrorString(status)
                                   : std::string("no CUDA device");
    return false;
  }
  return true;
}

FormatsRoundTrip formats_round_trip_on_device() {
  double *e4m3_dec = nullptr, *e2m1_dec = nullptr, *ue8m0_dec = nullptr;
  std::uint8_t *e4m3_enc = nullptr, *e2m1_enc = nullptr;
  std::uint16_t* bf16_enc = nullptr;
  V4REF_CUDA_CHECK(cudaMalloc(&e4m3_dec, 256 * sizeof(double)));
  V4REF_CUDA_CHECK(cudaMalloc(&e4m3_enc, 256));
  V4REF_CUDA_CHECK(cudaMalloc(&e2m1_dec, 16 * sizeof(double)));
  V4REF_CUDA_CHECK(cudaMalloc(&e2m1_enc, 16));
  V4REF_CUDA_CHECK(cudaMalloc(&ue8m0_dec, 256 * sizeof(double)));
  V4REF_CUDA_CHECK(cudaMalloc(&bf16_enc, 65536 * sizeof(std::uint16_t)));
  e4m3_round_trip_kernel<<<1, 256>>>(e4m3_dec, e4m3_enc);
  V4REF_CUDA_CHECK_LAUNCH();
  e2m1_round_trip_kernel<<<1, 16>>>(e2m1_dec, e2m1_enc);
  V4REF_CUDA_CHECK_LAUNCH();
  ue8m0_decode_kernel<<<1, 256>>>(ue8m0_dec);
  V4REF_CUDA_CHECK_LAUNCH();
  bf16_round_trip_kernel<<<256, 256>>>(bf16_enc);
  V4REF_CUDA_CHECK_LAUNCH();
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  FormatsRoundTrip r;
  r.e4m3_decoded = download(e4m3_dec, 256);
  r.e4m3_reencoded = download(e4m3_enc, 256);
  r.e2m1_decoded = download(e2m1_dec, 16);
  r.e2m1_reencoded = download(e2m1_enc, 16);
  r.ue8m0_decoded = download(ue8m0_dec, 256);
  r.bf16_reencoded = download(bf16_enc, 65536);
  for (void* p : {static_cast<void*>(e4m3_dec), static_cast<void*>(e4m3_enc),
                  static_cast<void*>(e2m1_dec), static_cast<void*>(e2m1_enc),
                  static_cast<void*>(ue8m0_dec), static_cast<void*>(bf16_enc)})
    V4REF_CUDA_CHECK(cudaFree(p));
  return r;
}

}  // namespace v4ref::cuda
