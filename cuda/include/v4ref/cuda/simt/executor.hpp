// The SIMT executor: runs a kernel written in the dialect (simt.hpp) on the CPU, every CUDA
// thread a fiber, with the checks compute-sanitizer would make and the memory tables Nsight
// Compute would show (docs/simt.md). Built by the host compiler (library v4ref_simt); host code
// of a .cu file may call it too.
//
//   simt::Buffer<float> in("x", host_x);                 // global memory with guard zones
//   simt::Buffer<float> out("y", n, poison);
//   simt::LaunchConfig cfg{"my_kernel", {blocks}, {256}, {1}, smem_bytes};
//   cfg.compulsory_bytes = ...;                          // the kernel's formula (kernel-targets)
//   simt::LaunchReport r = simt::launch(cfg, [&] { my_kernel(args); }, {.seed = 3});
//
// launch() throws LaunchError (every finding named: kernel, block, thread, address, site) unless
// RunOptions::throw_on_error is false; then the findings are in the report.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "v4ref/cuda/simt/simt.hpp"
#include "v4ref/ref/core/error.hpp"

namespace v4ref::cuda::simt {

struct LaunchConfig {
  std::string kernel;          // name in every message and in the report
  idx3 grid{1, 1, 1};          // blocks
  idx3 block{1, 1, 1};         // threads per block
  idx3 cluster{1, 1, 1};       // blocks per cluster (each dimension divides grid's)
  std::size_t smem_bytes = 0;  // dynamic shared memory per block
  double compulsory_bytes = 0; // the kernel's bytes formula (0: no traffic ratio)
  double mma_flops = 0;        // useful tensor-core FLOPs (0: the executed wgmma FLOPs count)
};

// How the tensor cores accumulate (docs/simt.md §2): the device's order and rounding inside an
// MMA are not published, so the executor takes a model and tests derive their bounds from the
// worse of the two ends.
enum class MmaModel {
  kIeeeFp32,          // products exact, added to the accumulator one by one in k order (RN)
  kAlignedTruncated,  // per instruction, the accumulator and all products aligned to the largest
                      // exponent and truncated to `mma_bits` bits, summed exactly, truncated to fp32
};

struct RunOptions {
  std::uint64_t seed = 0;     // block order and the interleaving of threads between sync points
  bool throw_on_error = true;
  bool analysis = true;       // per-site traffic and bank tables
  int max_findings = 16;      // the launch stops after this many
  MmaModel mma_model = MmaModel::kIeeeFp32;
  int mma_bits = 25;          // kAlignedTruncated: bits kept below the largest exponent (FP8: ~14)
};

// What a check found. kind: out_of_bounds, misaligned, shared_race, uninitialized_read,
// global_write_conflict, barrier_mismatch, deadlock, warp_collective, cp_async, dsmem,
// mbarrier, tma, swizzle_mismatch, async_proxy, wgmma, kernel_exception.
struct Finding {
  std::string kind;
  std::string message;
};

// One load/store/cp.async site of the kernel source, over all its warp-level requests.
struct SiteStats {
  std::string site;   // file:line:column
  std::string space;  // global | shared
  std::string op;     // ld, ld.nc, ld.cg, st, atom, cp.async
  int access_bytes = 0;
  std::uint64_t requests = 0;  // warp-level instructions
  std::uint64_t lanes = 0;     // thread-level accesses
  std::uint64_t sectors = 0;   // global: 32-byte sectors over all requests
  double sectors_per_request = 0;
  int worst_bank_ways = 0;     // shared: worst over requests (1 = conflict-free)
  double mean_bank_ways = 0;
};

struct InstructionMix {
  std::uint64_t global_loads = 0, global_stores = 0, global_atomics = 0;
  std::uint64_t shared_loads = 0, shared_stores = 0, shared_atomics = 0;
  std::uint64_t cp_async = 0, shuffles = 0, votes = 0;
  std::uint64_t barriers = 0, warp_syncs = 0, cluster_barriers = 0;
  std::uint64_t tma = 0, mma = 0;
  // fp32 operations of the kernels' *_rn helpers (thread-level counts / 32: warp instructions)
  std::uint64_t fp32_fma = 0, fp32_add = 0, fp32_mul = 0, fp32_div = 0, fp32_sqrt = 0;
};

struct LaunchReport {
  LaunchConfig config;
  std::uint64_t seed = 0;
  std::vector<Finding> findings;
  InstructionMix mix;           // warp-level instruction counts
  std::vector<SiteStats> sites;
  std::uint64_t sectors_g = 0;  // global 32-byte sectors, summed over requests
  double traffic_ratio = 0;     // sectors_g · 32 / compulsory_bytes (0 when no formula given)
  double mma_flops_bf16 = 0, mma_flops_fp8 = 0;  // executed by wgmma (2·64·N·K per instruction)
  double cuda_core_flops = 0;   // 2·fma + add + mul + div + sqrt of the counted helpers
  // max(sectors_g·32 / HBM, bf16 MMA / 989 T + fp8 MMA / 1979 T, CUDA-core flops / 67 T): a
  // lower bound of the launch's time, not a prediction
  double t_lower_h100_us = 0;
  double t_lower_h200_us = 0;
  bool ok() const { return findings.empty(); }
  bool has(const std::string& kind) const;
  std::string summary() const;  // the findings, one per line
  std::string json() const;     // the whole report
};

class LaunchError : public Error {
 public:
  LaunchError(const std::string& what, LaunchReport report)
      : Error(what), report_(std::move(report)) {}
  const LaunchReport& report() const { return report_; }

 private:
  LaunchReport report_;
};

LaunchReport launch(const LaunchConfig& cfg, const std::function<void()>& kernel,
                    const RunOptions& opt = {});

// Writes r.json() to `path` atomically (temp file + rename).
void write_report(const LaunchReport& r, const std::string& path);

// A 2-D tensor map over `global` (a live Buffer's memory): dims and box in elements (innermost
// first), row_stride in bytes. Checks cuTensorMapEncodeTiled's rules (16-byte aligned base,
// row stride a multiple of 16 below 2^40, dims in [1, 2^32], box in [1, 256] with the inner box a
// multiple of 16 bytes and no wider than the swizzle span) and throws Error naming the field.
TensorMap2d encode_tensor_map_2d(const void* global, std::uint32_t elem_bytes,
                                 std::uint64_t dim0, std::uint64_t dim1, std::uint64_t row_stride,
                                 std::uint32_t box0, std::uint32_t box1, Swizzle swizzle);

// ---------------------------------------------------------------- global memory

// Global memory the executor knows: every kernel access must fall inside a live Buffer. Guard
// zones before and after hold a pattern; an access into them is an out_of_bounds finding (with
// the buffer's name and the offset), and guards_intact() says whether host code wrote there.
class BufferBase {
 public:
  static constexpr std::size_t kGuardBytes = 256;
  BufferBase(std::string name, std::size_t bytes);
  ~BufferBase();
  BufferBase(const BufferBase&) = delete;
  BufferBase& operator=(const BufferBase&) = delete;
  const std::string& name() const { return name_; }
  std::size_t bytes() const { return bytes_; }
  bool guards_intact() const;

 protected:
  unsigned char* body() const { return base_ + kGuardBytes; }

 private:
  std::string name_;
  std::size_t bytes_;
  unsigned char* base_;
};

template <class T>
class Buffer : public BufferBase {
 public:
  Buffer(std::string name, std::size_t n, const T& fill = T{})
      : BufferBase(std::move(name), n * sizeof(T)), n_(n) {
    for (std::size_t i = 0; i < n; ++i) std::memcpy(body() + i * sizeof(T), &fill, sizeof(T));
  }
  Buffer(std::string name, const T* src, std::size_t n)
      : BufferBase(std::move(name), n * sizeof(T)), n_(n) {
    if (n != 0) std::memcpy(body(), src, n * sizeof(T));
  }
  Buffer(std::string name, const std::vector<T>& src) : Buffer(std::move(name), src.data(), src.size()) {}
  std::size_t size() const { return n_; }
  gptr<T> ptr() const { return gptr<T>(reinterpret_cast<T*>(body())); }
  gptr<const T> cptr() const { return gptr<const T>(reinterpret_cast<const T*>(body())); }
  // Host-side contents (not seen by the executor's checks: use them between launches only).
  T* host() { return reinterpret_cast<T*>(body()); }
  std::vector<T> read() const {
    std::vector<T> out(n_);
    if (n_ != 0) std::memcpy(out.data(), body(), n_ * sizeof(T));
    return out;
  }

 private:
  std::size_t n_;
};

}  // namespace v4ref::cuda::simt
