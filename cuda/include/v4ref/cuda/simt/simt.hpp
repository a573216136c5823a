// The device dialect: the small set of functions v4ref's kernels are written against
// (docs/simt.md). Under nvcc every function is the native instruction, force-inlined; under the
// host compiler it runs in the SIMT executor (executor.hpp), which sees every access, barrier and
// collective and checks and counts them.
//
// Rules a kernel follows so that both sides compute the same thing:
//   - global memory only through gptr<T> (no raw dereference): ld / ldg / ldcg / st / atomic_add;
//   - shared memory only dynamic (one buffer per block, dynamic_smem<T>(), carved by offsets)
//     and only through sptr<T>: ld / st / atomic_add, map_shared_rank for DSMEM;
//   - indices from thread_idx() / block_idx() / ..., barriers and collectives from here;
//   - arithmetic in plain C++ on registers (fp32 with the kernels' own *_rn helpers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#include <cooperative_groups.h>
#include <cuda.h>
#include <cuda_runtime.h>
#define V4REF_SIMT_DEVICE __device__ __forceinline__
#define V4REF_SIMT_HD __host__ __device__ __forceinline__
#define V4REF_SIMT_KERNEL(max_threads) __global__ void __launch_bounds__(max_threads)
#define V4REF_SIMT_COUNT_ALU(kind)
#define V4REF_SIMT_UNROLL _Pragma("unroll")
#else
#include <cstring>
#include <source_location>
#define V4REF_SIMT_DEVICE inline
#define V4REF_SIMT_HD inline
#define V4REF_SIMT_KERNEL(max_threads) inline void
// Counts one fp32 operation of the per-thread math for the executor's instruction mix.
#define V4REF_SIMT_COUNT_ALU(kind) \
  ::v4ref::cuda::simt::detail::count_alu(::v4ref::cuda::simt::detail::Alu::kind)
#define V4REF_SIMT_UNROLL
#endif

namespace v4ref::cuda::simt {

inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr int kWarpSize = 32;

struct idx3 {
  unsigned x = 0, y = 0, z = 0;
};

#if defined(__CUDACC__)
using u32x4 = ::uint4;
using f32x4 = ::float4;
V4REF_SIMT_HD f32x4 make_f32x4(float a, float b, float c, float d) { return ::make_float4(a, b, c, d); }
#else
struct alignas(16) u32x4 {
  std::uint32_t x, y, z, w;
};
struct alignas(16) f32x4 {
  float x, y, z, w;
};
inline f32x4 make_f32x4(float a, float b, float c, float d) { return f32x4{a, b, c, d}; }
#endif

namespace detail {
struct Access;  // befriended by the pointer types: the dialect's functions read their address
}

// A global-memory pointer: arithmetic and conversions, no dereference.
template <class T>
class gptr {
 public:
  gptr() = default;
  V4REF_SIMT_HD explicit gptr(T* p) : p_(p) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  V4REF_SIMT_HD gptr(gptr<U> o) : p_(o.address()) {}  // NOLINT: T* -> const T*
  V4REF_SIMT_HD gptr operator+(std::int64_t n) const { return gptr(p_ + n); }
  V4REF_SIMT_HD gptr operator-(std::int64_t n) const { return gptr(p_ - n); }
  V4REF_SIMT_HD gptr& operator+=(std::int64_t n) {
    p_ += n;
    return *this;
  }
  V4REF_SIMT_HD explicit operator bool() const { return p_ != nullptr; }
  V4REF_SIMT_HD bool operator==(const gptr& o) const { return p_ == o.p_; }
  // The address, for launchers, messages and pointer comparisons; kernels never dereference it.
  V4REF_SIMT_HD T* address() const { return p_; }

 private:
  T* p_ = nullptr;
};

// A shared-memory pointer (this block's dynamic shared memory or, after map_shared_rank, another
// block's of the cluster): arithmetic and conversions, no dereference.
template <class T>
class sptr {
 public:
  sptr() = default;
  V4REF_SIMT_HD explicit sptr(T* p) : p_(p) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  V4REF_SIMT_HD sptr(sptr<U> o) : p_(o.address()) {}  // NOLINT: T* -> const T*
  V4REF_SIMT_HD sptr operator+(std::int64_t n) const { return sptr(p_ + n); }
  V4REF_SIMT_HD sptr& operator+=(std::int64_t n) {
    p_ += n;
    return *this;
  }
  V4REF_SIMT_HD T* address() const { return p_; }

 private:
  T* p_ = nullptr;
};

template <class U, class T>
V4REF_SIMT_HD gptr<U> gcast(gptr<T> p) {
  return gptr<U>(reinterpret_cast<U*>(p.address()));
}
template <class U, class T>
V4REF_SIMT_HD sptr<U> scast(sptr<T> p) {
  return sptr<U>(reinterpret_cast<U*>(p.address()));
}

// Shared-memory swizzle of TMA tiles (and of the wgmma operand layouts): inside an atom of 8 rows
// of the span (256, 512 or 1024 bytes), the 16-byte chunk bits [4, 4 + b) of a byte offset are
// XORed with its row bits [7, 7 + b); b = 1, 2, 3 for 32-, 64- and 128-byte spans.
enum class Swizzle : std::uint8_t { kNone = 0, k32B = 1, k64B = 2, k128B = 3 };
V4REF_SIMT_HD constexpr std::uint32_t swizzle_offset(Swizzle s, std::uint32_t off) {
  const std::uint32_t mask = (1u << static_cast<unsigned>(s)) - 1u;
  return off ^ (((off >> 7) & mask) << 4);
}
// The span of a swizzled row (bytes) and the alignment a swizzled tile needs (its atom; 128
// bytes, TMA's minimum, without swizzle).
V4REF_SIMT_HD constexpr std::uint32_t swizzle_span(Swizzle s) {
  return s == Swizzle::kNone ? 0u : 16u << static_cast<unsigned>(s);
}
V4REF_SIMT_HD constexpr std::uint32_t swizzle_alignment(Swizzle s) {
  return 128u << static_cast<unsigned>(s);
}

// The wgmma shared-memory matrix descriptor (PTX ISA, "matrix descriptor"): start address,
// leading- and stride-dimension byte offsets, each >> 4 in a 14-bit field (bits 0, 16, 32), and
// the swizzle mode in bits 62-63 (1: 128 B, 2: 64 B, 3: 32 B, 0: none). K-major operands:
//   no swizzle  core matrices of 8 rows x 16 bytes; LBO = bytes between core matrices along K,
//               SBO = bytes between groups of 8 rows
//   swizzled    rows of the span (32/64/128 B) along K, 8 rows an atom; SBO = bytes between
//               atoms (groups of 8 rows); LBO unused
V4REF_SIMT_HD constexpr std::uint64_t desc_swizzle_code(Swizzle s) {
  return s == Swizzle::k128B ? 1u : s == Swizzle::k64B ? 2u : s == Swizzle::k32B ? 3u : 0u;
}
V4REF_SIMT_HD constexpr std::uint64_t encode_smem_desc(std::uint32_t smem_addr, std::uint32_t lbo,
                                                       std::uint32_t sbo, Swizzle s) {
  return (static_cast<std::uint64_t>((smem_addr >> 4) & 0x3FFFu)) |
         (static_cast<std::uint64_t>((lbo >> 4) & 0x3FFFu) << 16) |
         (static_cast<std::uint64_t>((sbo >> 4) & 0x3FFFu) << 32) | (desc_swizzle_code(s) << 62);
}

#if defined(__CUDACC__)
// ================================================================ device: native instructions

V4REF_SIMT_DEVICE idx3 thread_idx() { return {threadIdx.x, threadIdx.y, threadIdx.z}; }
V4REF_SIMT_DEVICE idx3 block_idx() { return {blockIdx.x, blockIdx.y, blockIdx.z}; }
V4REF_SIMT_DEVICE idx3 block_dim() { return {blockDim.x, blockDim.y, blockDim.z}; }
V4REF_SIMT_DEVICE idx3 grid_dim() { return {gridDim.x, gridDim.y, gridDim.z}; }
V4REF_SIMT_DEVICE unsigned cluster_block_rank() {
  return cooperative_groups::this_cluster().block_rank();
}
V4REF_SIMT_DEVICE unsigned cluster_num_blocks() {
  return cooperative_groups::this_cluster().num_blocks();
}

template <class T>
V4REF_SIMT_DEVICE sptr<T> dynamic_smem() {
  extern __shared__ __align__(1024) unsigned char v4ref_simt_smem[];
  return sptr<T>(reinterpret_cast<T*>(v4ref_simt_smem));
}

// ---- barriers
V4REF_SIMT_DEVICE void sync_threads() { __syncthreads(); }
V4REF_SIMT_DEVICE void bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
V4REF_SIMT_DEVICE void sync_warp(unsigned mask = kFullMask) { __syncwarp(mask); }
V4REF_SIMT_DEVICE void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release;\n" ::: "memory");
}
V4REF_SIMT_DEVICE void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory");
}
V4REF_SIMT_DEVICE void cluster_sync() {
  cluster_arrive();
  cluster_wait();
}
template <class T>
V4REF_SIMT_DEVICE sptr<T> map_shared_rank(sptr<T> p, unsigned rank) {
  return sptr<T>(cooperative_groups::this_cluster().map_shared_rank(p.address(), rank));
}

// ---- warp collectives
template <class T>
V4REF_SIMT_DEVICE T shfl(unsigned mask, T v, int src, int width = kWarpSize) {
  return __shfl_sync(mask, v, src, width);
}
template <class T>
V4REF_SIMT_DEVICE T shfl_xor(unsigned mask, T v, int lane_mask, int width = kWarpSize) {
  return __shfl_xor_sync(mask, v, lane_mask, width);
}
template <class T>
V4REF_SIMT_DEVICE T shfl_down(unsigned mask, T v, unsigned delta, int width = kWarpSize) {
  return __shfl_down_sync(mask, v, delta, width);
}
template <class T>
V4REF_SIMT_DEVICE T shfl_up(unsigned mask, T v, unsigned delta, int width = kWarpSize) {
  return __shfl_up_sync(mask, v, delta, width);
}
V4REF_SIMT_DEVICE unsigned ballot(unsigned mask, bool p) { return __ballot_sync(mask, p); }
V4REF_SIMT_DEVICE bool vote_any(unsigned mask, bool p) { return __any_sync(mask, p) != 0; }
V4REF_SIMT_DEVICE bool vote_all(unsigned mask, bool p) { return __all_sync(mask, p) != 0; }

// ---- global memory
// Loads and stores are __host__ __device__ so that per-thread math templated on the pointer type
// (the *_tile.hpp headers) compiles in nvcc's host pass too; only the device pass executes them.
template <class T>
V4REF_SIMT_HD std::remove_const_t<T> ld(gptr<T> p) {
  return *p.address();
}
template <class T>
V4REF_SIMT_HD std::remove_const_t<T> ldg(gptr<T> p) {  // ld.global.nc (read-only path)
#if defined(__CUDA_ARCH__)
  return __ldg(p.address());
#else
  return *p.address();
#endif
}
template <class T>
V4REF_SIMT_HD std::remove_const_t<T> ldcg(gptr<T> p) {  // ld.global.cg (L2 only)
#if defined(__CUDA_ARCH__)
  return __ldcg(p.address());
#else
  return *p.address();
#endif
}
template <class T>
V4REF_SIMT_HD void st(gptr<T> p, std::type_identity_t<T> v) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, u32x4>) {
    // One st.global.v4 (nvcc may otherwise split a 16-byte struct store).
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(p.address()), "r"(v.x),
                 "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
  } else if constexpr (std::is_same_v<T, f32x4>) {
    asm volatile("st.global.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(p.address()), "f"(v.x),
                 "f"(v.y), "f"(v.z), "f"(v.w)
                 : "memory");
  } else {
    *p.address() = v;
  }
#else
  *p.address() = v;
#endif
}
template <class T>
V4REF_SIMT_DEVICE T atomic_add(gptr<T> p, std::type_identity_t<T> v) {
  return atomicAdd(p.address(), v);
}

// ---- shared memory
template <class T>
V4REF_SIMT_HD std::remove_const_t<T> ld(sptr<T> p) {
  return *p.address();
}
template <class T>
V4REF_SIMT_HD void st(sptr<T> p, std::type_identity_t<T> v) {
  *p.address() = v;
}
template <class T>
V4REF_SIMT_DEVICE T atomic_add(sptr<T> p, std::type_identity_t<T> v) {
  return atomicAdd(p.address(), v);
}

// ---- cp.async (16 bytes per instruction, L2 only) and its groups
template <class T, class U>
V4REF_SIMT_DEVICE void cp_async16(sptr<T> dst, gptr<U> src) {
  const auto d = static_cast<unsigned>(__cvta_generic_to_shared(dst.address()));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src.address())
               : "memory");
}
V4REF_SIMT_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
V4REF_SIMT_DEVICE void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
V4REF_SIMT_DEVICE void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// ---- mbarrier (8 bytes of shared memory) and the bulk copy that completes on one
V4REF_SIMT_DEVICE unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
V4REF_SIMT_DEVICE void mbar_init(sptr<std::uint64_t> bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar.address())), "r"(count)
               : "memory");
}
V4REF_SIMT_DEVICE void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
V4REF_SIMT_DEVICE void mbar_arrive(sptr<std::uint64_t> bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar.address()))
               : "memory");
}
V4REF_SIMT_DEVICE void mbar_arrive_expect_tx(sptr<std::uint64_t> bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                   smem_u32(bar.address())),
               "r"(bytes)
               : "memory");
}
V4REF_SIMT_DEVICE bool mbar_try_wait_parity(sptr<std::uint64_t> bar, unsigned parity) {
  unsigned ok = 0;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      " selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(ok)
      : "r"(smem_u32(bar.address())), "r"(parity)
      : "memory");
  return ok != 0;
}
V4REF_SIMT_DEVICE void mbar_wait_parity(sptr<std::uint64_t> bar, unsigned parity) {
  while (!mbar_try_wait_parity(bar, parity)) {
  }
}
// ---- wgmma (warpgroup MMA from shared memory; both operands K-major)
template <class T>
V4REF_SIMT_DEVICE std::uint64_t make_smem_desc(sptr<T> p, std::uint32_t lbo, std::uint32_t sbo,
                                               Swizzle s) {
  return encode_smem_desc(smem_u32(p.address()), lbo, sbo, s);
}
V4REF_SIMT_DEVICE void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
// Orders this thread's earlier generic-proxy shared writes (st.shared, cp.async) before later
// async-proxy reads (wgmma operands, bulk/TMA copies) once a barrier orders the two threads.
V4REF_SIMT_DEVICE void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
V4REF_SIMT_DEVICE void wgmma_commit_group() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
V4REF_SIMT_DEVICE void wgmma_wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// D[64, N] (+)= A[64, 16] · B[N, 16]ᵀ, bf16 operands from shared memory (descriptors), fp32
// accumulators in the warpgroup's registers: thread (warp w, lane l) holds rows 16w + l/4 and
// 16w + l/4 + 8, columns 8i + 2(l mod 4) and + 1, as d[4i], d[4i+1] (first row), d[4i+2],
// d[4i+3] (second row).
template <int N>
V4REF_SIMT_DEVICE void wgmma_bf16_ss(float (&d)[N / 2], std::uint64_t desc_a, std::uint64_t desc_b,
                                     bool accumulate);
template <>
V4REF_SIMT_DEVICE void wgmma_bf16_ss<16>(float (&d)[8], std::uint64_t desc_a, std::uint64_t desc_b, bool accumulate) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %10, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7"
      "}, %8, %9, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<unsigned>(accumulate))
      : "memory");
}
template <>
V4REF_SIMT_DEVICE void wgmma_bf16_ss<64>(float (&d)[32], std::uint64_t desc_a, std::uint64_t desc_b, bool accumulate) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %34, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<unsigned>(accumulate))
      : "memory");
}

template <>
V4REF_SIMT_DEVICE void wgmma_bf16_ss<32>(float (&d)[16], std::uint64_t desc_a, std::uint64_t desc_b, bool accumulate) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %18, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15"
      "}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<unsigned>(accumulate))
      : "memory");
}
template <>
V4REF_SIMT_DEVICE void wgmma_bf16_ss<256>(float (&d)[128], std::uint64_t desc_a, std::uint64_t desc_b, bool accumulate) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %130, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, "
      "%40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, "
      "%72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, "
      "%88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, "
      "%104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, "
      "%120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<unsigned>(accumulate))
      : "memory");
}

// D[64, N] (+)= A[64, 32] · B[N, 32]ᵀ, fp8 e4m3 operands (K-major, 32 bytes of K per row),
// the same accumulator layout as wgmma_bf16_ss.
template <int N>
V4REF_SIMT_DEVICE void wgmma_e4m3_ss(float (&d)[N / 2], std::uint64_t desc_a, std::uint64_t desc_b,
                                     bool accumulate);
template <>
V4REF_SIMT_DEVICE void wgmma_e4m3_ss<16>(float (&d)[8], std::uint64_t desc_a, std::uint64_t desc_b, bool accumulate) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %10, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7"
      "}, %8, %9, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<unsigned>(accumulate))
      : "memory");
}
template <>
V4REF_SIMT_DEVICE void wgmma_e4m3_ss<64>(float (&d)[32], std::uint64_t desc_a, std::uint64_t desc_b, bool accumulate) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %34, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, "
      "%24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<unsigned>(accumulate))
      : "memory");
}

// A 2-D tensor map (CUtensorMap, encoded on the host by cuTensorMapEncodeTiled), passed to the
// kernel as a __grid_constant__ parameter.
struct TensorMap2d {  // CUtensorMap carries its own 64-byte alignment
  CUtensorMap map;
};
// TMA tiled load of the box at (c0, c1) (elements, innermost first) into dst, completing as
// transaction bytes on bar; out-of-bounds elements are zero.
template <class T>
V4REF_SIMT_DEVICE void tma_load_2d(sptr<T> dst, const TensorMap2d& tm, int c0, int c1,
                                   sptr<std::uint64_t> bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem_u32(dst.address())),
      "l"(&tm.map), "r"(c0), "r"(c1), "r"(smem_u32(bar.address()))
      : "memory");
}
// cp.async.bulk global -> shared of `bytes` (a multiple of 16, 16-byte aligned), completing as
// transaction bytes on `bar`.
template <class T, class U>
V4REF_SIMT_DEVICE void bulk_copy_g2s(sptr<T> dst, gptr<U> src, unsigned bytes,
                                     sptr<std::uint64_t> bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          smem_u32(dst.address())),
      "l"(src.address()), "r"(bytes), "r"(smem_u32(bar.address()))
      : "memory");
}

// A constant array in global memory (a __device__ variable), read through gptr.
#define V4REF_SIMT_DEVICE_ARRAY(type, name, count)                                 \
  __device__ const type name##_storage[count] = {};                                \
  V4REF_SIMT_DEVICE ::v4ref::cuda::simt::gptr<const type> name() {                 \
    return ::v4ref::cuda::simt::gptr<const type>(name##_storage);                  \
  }

#else
// ================================================================ host: the SIMT executor

using Loc = std::source_location;

namespace detail {
enum class Op : std::uint8_t { kLoad, kLoadNc, kLoadCg, kStore, kAtomic };
enum class Alu : std::uint8_t { kFma, kAdd, kMul, kDiv, kSqrt };
void count_alu(Alu kind) noexcept;  // no-op outside a launch
// Each returns false when the access failed a check (it is then recorded and not performed).
bool global_access(const void* addr, std::size_t bytes, Op op, const Loc& loc);
bool shared_access(const void* addr, std::size_t bytes, Op op, const Loc& loc);
void* dynamic_smem_base();
idx3 thread_idx();
idx3 block_idx();
idx3 block_dim();
idx3 grid_dim();
unsigned cluster_block_rank();
unsigned cluster_num_blocks();
void bar_sync(int id, int threads, const Loc& loc);
void sync_warp(unsigned mask, const Loc& loc);
void cluster_arrive(const Loc& loc);
void cluster_wait(const Loc& loc);
void* map_shared_rank(const void* p, unsigned rank, const Loc& loc);
enum class Shfl : std::uint8_t { kIdx, kXor, kDown, kUp };
std::uint64_t shfl(unsigned mask, std::uint64_t bits, int arg, int width, Shfl kind, int words,
                   const Loc& loc);
enum class Vote : std::uint8_t { kBallot, kAny, kAll };
unsigned vote(unsigned mask, bool p, Vote kind, const Loc& loc);
void cp_async(void* smem_dst, const void* gmem_src, std::size_t bytes, const Loc& loc);
void mbar_init(void* bar, unsigned count, const Loc& loc);
void mbar_arrive(void* bar, unsigned expect_tx, bool with_tx, const Loc& loc);
bool mbar_wait(void* bar, unsigned parity, bool block, const Loc& loc);
void bulk_copy(void* smem_dst, const void* gmem_src, std::size_t bytes, void* bar, const Loc& loc);
}  // namespace detail

// A 2-D tensor map as the executor keeps it (the device's CUtensorMap holds the same fields):
// made by simt::encode_tensor_map_2d (executor.hpp), which checks cuTensorMapEncodeTiled's rules.
struct TensorMap2d {
  const unsigned char* global = nullptr;
  std::uint32_t elem_bytes = 0;
  std::uint64_t dims[2] = {0, 0};  // elements, innermost first
  std::uint64_t row_stride = 0;    // bytes between rows (dimension 1)
  std::uint32_t box[2] = {0, 0};
  Swizzle swizzle = Swizzle::kNone;
};

namespace detail {
void tma_load_2d(void* smem_dst, const TensorMap2d& tm, int c0, int c1, void* bar,
                 const Loc& loc);
std::uint32_t smem_address(const void* p, const Loc& loc);
enum class MmaType : std::uint8_t { kBf16, kE4m3 };
void wgmma(float* d, int n, MmaType type, std::uint64_t desc_a, std::uint64_t desc_b,
           bool accumulate, const Loc& loc);
void wgmma_sync(const char* what, const Loc& loc);
void fence_proxy_async(const Loc& loc);
void cp_async_commit(const Loc& loc);
void cp_async_wait(int pending, const Loc& loc);
const void* device_array(const char* name, std::size_t bytes);
}  // namespace detail

inline idx3 thread_idx() { return detail::thread_idx(); }
inline idx3 block_idx() { return detail::block_idx(); }
inline idx3 block_dim() { return detail::block_dim(); }
inline idx3 grid_dim() { return detail::grid_dim(); }
inline unsigned cluster_block_rank() { return detail::cluster_block_rank(); }
inline unsigned cluster_num_blocks() { return detail::cluster_num_blocks(); }

template <class T>
sptr<T> dynamic_smem() {
  return sptr<T>(static_cast<T*>(detail::dynamic_smem_base()));
}

inline void sync_threads(const Loc& loc = Loc::current()) {
  detail::bar_sync(0, -1, loc);
}
inline void bar_sync(int id, int threads, const Loc& loc = Loc::current()) {
  detail::bar_sync(id, threads, loc);
}
inline void sync_warp(unsigned mask = kFullMask, const Loc& loc = Loc::current()) {
  detail::sync_warp(mask, loc);
}
inline void cluster_arrive(const Loc& loc = Loc::current()) { detail::cluster_arrive(loc); }
inline void cluster_wait(const Loc& loc = Loc::current()) { detail::cluster_wait(loc); }
inline void cluster_sync(const Loc& loc = Loc::current()) {
  detail::cluster_arrive(loc);
  detail::cluster_wait(loc);
}
template <class T>
sptr<T> map_shared_rank(sptr<T> p, unsigned rank, const Loc& loc = Loc::current()) {
  return sptr<T>(static_cast<T*>(detail::map_shared_rank(p.address(), rank, loc)));
}

namespace detail {
template <class T>
std::uint64_t to_bits(const T& v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move 4 or 8 bytes");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(std::uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <class T>
T shuffle(unsigned mask, T v, int arg, int width, Shfl kind, const Loc& loc) {
  return from_bits<T>(
      detail::shfl(mask, to_bits(v), arg, width, kind, sizeof(T) > 4 ? 2 : 1, loc));
}
}  // namespace detail

template <class T>
T shfl(unsigned mask, T v, int src, int width = kWarpSize, const Loc& loc = Loc::current()) {
  return detail::shuffle(mask, v, src, width, detail::Shfl::kIdx, loc);
}
template <class T>
T shfl_xor(unsigned mask, T v, int lane_mask, int width = kWarpSize,
           const Loc& loc = Loc::current()) {
  return detail::shuffle(mask, v, lane_mask, width, detail::Shfl::kXor, loc);
}
template <class T>
T shfl_down(unsigned mask, T v, unsigned delta, int width = kWarpSize,
            const Loc& loc = Loc::current()) {
  return detail::shuffle(mask, v, static_cast<int>(delta), width, detail::Shfl::kDown, loc);
}
template <class T>
T shfl_up(unsigned mask, T v, unsigned delta, int width = kWarpSize,
          const Loc& loc = Loc::current()) {
  return detail::shuffle(mask, v, static_cast<int>(delta), width, detail::Shfl::kUp, loc);
}
inline unsigned ballot(unsigned mask, bool p, const Loc& loc = Loc::current()) {
  return detail::vote(mask, p, detail::Vote::kBallot, loc);
}
inline bool vote_any(unsigned mask, bool p, const Loc& loc = Loc::current()) {
  return detail::vote(mask, p, detail::Vote::kAny, loc) != 0;
}
inline bool vote_all(unsigned mask, bool p, const Loc& loc = Loc::current()) {
  return detail::vote(mask, p, detail::Vote::kAll, loc) != 0;
}

namespace detail {
template <class T, class P>
std::remove_const_t<T> load(P p, Op op, const Loc& loc, bool shared) {
  std::remove_const_t<T> v{};
  const bool ok = shared ? shared_access(p.address(), sizeof(T), op, loc)
                         : global_access(p.address(), sizeof(T), op, loc);
  if (ok) std::memcpy(&v, p.address(), sizeof(T));
  return v;
}
template <class T, class P>
void store(P p, const T& v, Op op, const Loc& loc, bool shared) {
  const bool ok = shared ? shared_access(p.address(), sizeof(T), op, loc)
                         : global_access(p.address(), sizeof(T), op, loc);
  if (ok) std::memcpy(p.address(), &v, sizeof(T));
}
}  // namespace detail

template <class T>
std::remove_const_t<T> ld(gptr<T> p, const Loc& loc = Loc::current()) {
  return detail::load<T>(p, detail::Op::kLoad, loc, false);
}
template <class T>
std::remove_const_t<T> ldg(gptr<T> p, const Loc& loc = Loc::current()) {
  return detail::load<T>(p, detail::Op::kLoadNc, loc, false);
}
template <class T>
std::remove_const_t<T> ldcg(gptr<T> p, const Loc& loc = Loc::current()) {
  return detail::load<T>(p, detail::Op::kLoadCg, loc, false);
}
template <class T>
void st(gptr<T> p, std::type_identity_t<T> v, const Loc& loc = Loc::current()) {
  detail::store(p, v, detail::Op::kStore, loc, false);
}
template <class T>
T atomic_add(gptr<T> p, std::type_identity_t<T> v, const Loc& loc = Loc::current()) {
  T old{};
  if (!detail::global_access(p.address(), sizeof(T), detail::Op::kAtomic, loc)) return old;
  std::memcpy(&old, p.address(), sizeof(T));
  const T nv = old + v;
  std::memcpy(p.address(), &nv, sizeof(T));
  return old;
}

template <class T>
std::remove_const_t<T> ld(sptr<T> p, const Loc& loc = Loc::current()) {
  return detail::load<T>(p, detail::Op::kLoad, loc, true);
}
template <class T>
void st(sptr<T> p, std::type_identity_t<T> v, const Loc& loc = Loc::current()) {
  detail::store(p, v, detail::Op::kStore, loc, true);
}
template <class T>
T atomic_add(sptr<T> p, std::type_identity_t<T> v, const Loc& loc = Loc::current()) {
  T old{};
  if (!detail::shared_access(p.address(), sizeof(T), detail::Op::kAtomic, loc)) return old;
  std::memcpy(&old, p.address(), sizeof(T));
  const T nv = old + v;
  std::memcpy(p.address(), &nv, sizeof(T));
  return old;
}

template <class T, class U>
void cp_async16(sptr<T> dst, gptr<U> src, const Loc& loc = Loc::current()) {
  detail::cp_async(dst.address(), src.address(), 16, loc);
}
inline void cp_async_commit(const Loc& loc = Loc::current()) { detail::cp_async_commit(loc); }
template <int N>
void cp_async_wait_group(const Loc& loc = Loc::current()) {
  detail::cp_async_wait(N, loc);
}
// cp.async.wait_all: commit the open group, then wait for every group.
inline void cp_async_wait_all(const Loc& loc = Loc::current()) {
  detail::cp_async_commit(loc);
  detail::cp_async_wait(0, loc);
}

inline void mbar_init(sptr<std::uint64_t> bar, unsigned count, const Loc& loc = Loc::current()) {
  detail::mbar_init(bar.address(), count, loc);
}
inline void fence_mbarrier_init() {}  // the executor orders init by the barrier that follows
inline void mbar_arrive(sptr<std::uint64_t> bar, const Loc& loc = Loc::current()) {
  detail::mbar_arrive(bar.address(), 0, false, loc);
}
inline void mbar_arrive_expect_tx(sptr<std::uint64_t> bar, unsigned bytes,
                                  const Loc& loc = Loc::current()) {
  detail::mbar_arrive(bar.address(), bytes, true, loc);
}
// Non-blocking: a false answer lets the other threads run before the caller retries.
inline bool mbar_try_wait_parity(sptr<std::uint64_t> bar, unsigned parity,
                                 const Loc& loc = Loc::current()) {
  return detail::mbar_wait(bar.address(), parity, false, loc);
}
inline void mbar_wait_parity(sptr<std::uint64_t> bar, unsigned parity,
                             const Loc& loc = Loc::current()) {
  detail::mbar_wait(bar.address(), parity, true, loc);
}
template <class T, class U>
void bulk_copy_g2s(sptr<T> dst, gptr<U> src, unsigned bytes, sptr<std::uint64_t> bar,
                   const Loc& loc = Loc::current()) {
  detail::bulk_copy(dst.address(), src.address(), bytes, bar.address(), loc);
}
template <class T>
void tma_load_2d(sptr<T> dst, const TensorMap2d& tm, int c0, int c1, sptr<std::uint64_t> bar,
                 const Loc& loc = Loc::current()) {
  detail::tma_load_2d(dst.address(), tm, c0, c1, bar.address(), loc);
}

// wgmma: descriptors hold the shared address as the device would see it (the offset in the
// block's 1024-byte aligned dynamic shared memory); the product is computed when the whole
// warpgroup has issued it, under the executor's accumulation model (RunOptions::mma_model).
template <class T>
std::uint64_t make_smem_desc(sptr<T> p, std::uint32_t lbo, std::uint32_t sbo, Swizzle s,
                             const Loc& loc = Loc::current()) {
  return encode_smem_desc(detail::smem_address(p.address(), loc), lbo, sbo, s);
}
inline void wgmma_fence(const Loc& loc = Loc::current()) { detail::wgmma_sync("wgmma.fence", loc); }
inline void fence_proxy_async(const Loc& loc = Loc::current()) {
  detail::fence_proxy_async(loc);
}
inline void wgmma_commit_group(const Loc& loc = Loc::current()) {
  detail::wgmma_sync("wgmma.commit_group", loc);
}
template <int N>
void wgmma_wait_group(const Loc& loc = Loc::current()) {
  detail::wgmma_sync("wgmma.wait_group", loc);
}
template <int N>
void wgmma_bf16_ss(float (&d)[N / 2], std::uint64_t desc_a, std::uint64_t desc_b, bool accumulate,
                   const Loc& loc = Loc::current()) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N is a multiple of 8 in [8, 256]");
  detail::wgmma(d, N, detail::MmaType::kBf16, desc_a, desc_b, accumulate, loc);
}
template <int N>
void wgmma_e4m3_ss(float (&d)[N / 2], std::uint64_t desc_a, std::uint64_t desc_b, bool accumulate,
                   const Loc& loc = Loc::current()) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk32: N is a multiple of 8 in [8, 256]");
  detail::wgmma(d, N, detail::MmaType::kE4m3, desc_a, desc_b, accumulate, loc);
}

#define V4REF_SIMT_DEVICE_ARRAY(type, name, count)                                         \
  inline ::v4ref::cuda::simt::gptr<const type> name() {                                    \
    return ::v4ref::cuda::simt::gptr<const type>(static_cast<const type*>(                 \
        ::v4ref::cuda::simt::detail::device_array(#name, sizeof(type) * (count))));         \
  }

#endif

}  // namespace v4ref::cuda::simt
