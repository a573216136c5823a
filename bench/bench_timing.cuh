// Timing and device buffers shared by the hand-timed GPU benches (bench/mhc_bench.cu,
// bench/compressor_bench.cu). Method (docs/cuda-mhc-compressor.md §2.6):
//   - CUDA events around the launches on a private non-blocking stream;
//   - cold L2 by default: a scratch buffer larger than L2 is overwritten before every sample,
//     outside the events (--warm skips it);
//   - short cases (`graph`): one sample is a CUDA graph of kGraphLaunches launches rotating over
//     `sets` input sets (chosen by the caller to exceed 2x L2 together), divided by
//     kGraphLaunches, so launch overhead and L2 reuse do not count;
//   - sample 0 warms up and is dropped; the median of the next `reps` is returned.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <functional>
#include <vector>

#include "bench_report.hpp"
#include "v4ref/cuda/check.hpp"

namespace v4ref::bench {

inline constexpr int kGraphLaunches = 20;
inline constexpr double kHbmBytesPerSecond = 3.35e12;  // H100 SXM HBM3 (kernel-targets.md §1)
inline constexpr std::size_t kScratchBytes = std::size_t{256} << 20;  // > 5× the 50 MB L2
inline constexpr double kL2Bytes = 50e6;

// 64 random bits of element i of a fill with `seed` (splitmix64 finaliser): deterministic
// synthetic inputs generated on the device, independent of the launch shape.
__host__ __device__ inline std::uint64_t fill_bits(std::uint64_t seed, std::int64_t i) {
  std::uint64_t z = seed + static_cast<std::uint64_t>(i) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The stream a timed `launch` must enqueue on (captured into the graph when there is one).
inline cudaStream_t& bench_stream() {
  thread_local cudaStream_t s = nullptr;
  return s;
}

// Owning device allocation (at least 16 bytes, so empty shapes still get a valid pointer).
struct DeviceBuffer {
  void* p = nullptr;
  std::size_t bytes = 0;
  explicit DeviceBuffer(std::size_t b) : bytes(b) {
    V4REF_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(b, 16)));
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

template <class T>
void upload(const DeviceBuffer& d, const std::vector<T>& h) {
  V4REF_CUDA_CHECK(cudaMemcpy(d.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}
template <class T>
std::vector<T> download(const DeviceBuffer& d, std::size_t n) {
  std::vector<T> h(n);
  V4REF_CUDA_CHECK(cudaMemcpy(h.data(), d.p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

// A cuBLAS / cuBLASLt status (0 = CUBLAS_STATUS_SUCCESS) that is not success: runtime_error
// naming the call (the baselines' errors become the bench case's error).
inline void check_cublas(int status, const char* call) {
  if (status != 0) throw std::runtime_error(std::string(call) + " failed: status " + std::to_string(status));
}
#define V4REF_CUBLAS_CHECK(expr) ::v4ref::bench::check_cublas(static_cast<int>(expr), #expr)

inline double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median time in µs of one `launch(set)`, set in [0, sets).
inline double time_us(const BenchOptions& o, void* scratch, std::size_t scratch_bytes, int sets,
                      bool graph, const std::function<void(int)>& launch) {
  cudaStream_t s;
  V4REF_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t a, b;
  V4REF_CUDA_CHECK(cudaEventCreate(&a));
  V4REF_CUDA_CHECK(cudaEventCreate(&b));
  cudaGraphExec_t exec = nullptr;
  bench_stream() = s;
  std::vector<double> samples;
  for (int r = 0; r < o.reps + 1; ++r) {
    if (!o.warm) V4REF_CUDA_CHECK(cudaMemsetAsync(scratch, r & 0xFF, scratch_bytes, s));
    if (graph && exec == nullptr) {
      cudaGraph_t g;
      V4REF_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      for (int i = 0; i < kGraphLaunches; ++i) launch(i % sets);
      V4REF_CUDA_CHECK(cudaStreamEndCapture(s, &g));
      V4REF_CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
      V4REF_CUDA_CHECK(cudaGraphDestroy(g));
    }
    V4REF_CUDA_CHECK(cudaEventRecord(a, s));
    if (graph)
      V4REF_CUDA_CHECK(cudaGraphLaunch(exec, s));
    else
      launch(r % sets);
    V4REF_CUDA_CHECK(cudaEventRecord(b, s));
    V4REF_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    V4REF_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    if (r > 0) samples.push_back(ms * 1e3 / (graph ? kGraphLaunches : 1));
  }
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaStreamDestroy(s);
  bench_stream() = nullptr;
  return median_of(samples);
}

// The start of every hand-timed bench's main: the command line (bench_report.hpp) and a usable
// device. False when the bench must exit with *rc (2: bad arguments, 1: no device), having said why.
inline bool bench_start(int argc, char** argv, const char* name, BenchOptions* o, int* rc) {
  try {
    *o = parse_bench_args(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s: %s\n%s\n", name, e.what(), bench_usage(argv[0]).c_str());
    *rc = 2;
    return false;
  }
  std::string why;
  if (!v4ref::cuda::device_available(&why)) {
    std::fprintf(stderr, "%s: no CUDA device (%s)\n", name, why.c_str());
    *rc = 1;
    return false;
  }
  return true;
}

// The context numbers of a device: SM count, clocks, driver and runtime versions.
inline BenchContext device_context(const char* executable, const BenchOptions& o) {
  cudaDeviceProp prop{};
  V4REF_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  int driver = 0, runtime = 0, clock_khz = 0, mem_clock_khz = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, 0);
  BenchContext c;
  c.executable = executable;
  c.device = prop.name;
  c.git_sha = git_sha();
  c.date = utc_now();
  c.reps = o.reps;
  c.cold_l2 = !o.warm;
  c.numbers = {{"sm_count", static_cast<double>(prop.multiProcessorCount)},
               {"sm_clock_khz", static_cast<double>(clock_khz)},
               {"mem_clock_khz", static_cast<double>(mem_clock_khz)},
               {"cuda_driver", static_cast<double>(driver)},
               {"cuda_runtime", static_cast<double>(runtime)}};
  return c;
}

// bench_start, then the device's context and the default output path
// (reports/data/<component>-<device>-<sha>.json): the start of every hand-timed bench's main.
inline bool bench_session(int argc, char** argv, const char* component, BenchOptions* o, BenchContext* ctx,
                          int* rc) {
  const std::string name = std::string(component) + "_bench";
  if (!bench_start(argc, argv, name.c_str(), o, rc)) return false;
  *ctx = device_context(name.c_str(), *o);
  if (o->out.empty()) o->out = default_out_path(component, ctx->device, ctx->git_sha);
  return true;
}

}  // namespace v4ref::bench
