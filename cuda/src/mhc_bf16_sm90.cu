// mHC on Hopper: the fused write-back + pre kernel (and its pre-only mode) on thread-block
// clusters, and the standalone write-back (docs/cuda-mhc-compressor.md §2; header
// cuda/include/v4ref/cuda/mhc.hpp; per-thread math mhc_tile.hpp; v4-forward.md §4).
//
// mhc_pre_kernel<kPost>: a persistent grid of clusters of S CTAs. Cluster c runs the
// 32-token batches c, c + G, c + 2G, ...; CTA `rank` owns elements [rank·d/S, (rank+1)·d/S) of
// every stream, so one token's 4d inputs are read exactly once, by S CTAs side by side.
// Per CTA: W stream warps (lane = token, `chunks` 8-element chunks per thread, 16-byte loads
// and stores) and one coefficient warp. Per batch:
//   A  stream warps: load X (and F, post, comb), write X' (fused), accumulate the 25 sums of
//      their lane's token against fn (a warp-broadcast 16-byte load per 8 fn values)
//   R  stream warps: reduce the warps' partials (fixed order) and push each token's 25 CTA sums
//      into the shared memory of the token's owner CTA (rank = lane mod S) — DSMEM stores
//   K  coefficient warp of the owner: sum the S CTA sums (rank order), coefficients + Sinkhorn
//      (one lane per token), write the coefficient row, push pre to every CTA of the cluster
//   C  stream warps: re-read their X' (L2) and write u = Σ pre_k X'_k
// Two split cluster barriers per batch order R before K and K before C. The stream warps run
// A of the next batch while K runs, and C of a batch after A of the next one:
//   stream:  A(b) [wait'(b−1)] R(b) arrive(b) C(b−1) wait(b) arrive'(b)    … wait'(last) C(last)
//   coef  :  arrive(b) wait(b) K(b) arrive'(b) wait'(b)
// Hazards: the inbox is rewritten only after wait'(b) (every owner has read it in K(b)); the pre
// buffer is double-buffered (K(b+1) may run while C(b) reads); the warp partials are rewritten
// only after wait(b). The first cluster barrier makes sure every CTA runs before any DSMEM store;
// the last (wait'(last)) that no CTA exits while another may still write into it.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/mhc.hpp"
#include "v4ref/cuda/mhc_tile.hpp"

namespace v4ref::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kMaxThreads = (mhc::kMaxStreamWarps + 1) * 32;  // 288: at most 8 stream warps + 1
constexpr int kPostThreads = 256;

struct PreArgs {
  mhc::Tiling t;
  std::int64_t tokens;
  std::int64_t batches;
  const std::uint16_t* x;
  const std::uint16_t* f;
  const float* coef_in;
  const float* fn;
  const float* base;
  mhc::Scalars s;
  std::uint16_t* x_out;
  std::uint16_t* u;
  float* coef;
  float* mu;
};

struct PostArgs {
  std::int64_t tokens, d;
  const std::uint16_t* x;
  const std::uint16_t* f;
  const float* coef_in;
  std::uint16_t* x_out;
};

__device__ const float kZeroRow[mhc::kMix] = {};

__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory");
}
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src) {
  const auto dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem_src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// Named barrier 1: the stream warps of a CTA only (the coefficient warp never joins it).
__device__ __forceinline__ void stream_warps_sync(int threads) {
  asm volatile("bar.sync 1, %0;\n" ::"r"(threads) : "memory");
}

__device__ __forceinline__ void unpack(const uint4& v, std::uint32_t* w) {
  w[0] = v.x;
  w[1] = v.y;
  w[2] = v.z;
  w[3] = v.w;
}
// 16-byte global store as one st.global.v4 (nvcc otherwise may scalarise a uint4 assignment
// into four 4-byte stores).
__device__ __forceinline__ void store16(void* p, const std::uint32_t* w) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "r"(w[0]), "r"(w[1]),
               "r"(w[2]), "r"(w[3])
               : "memory");
}

// Shared-memory layout of a CTA (floats; every region a multiple of 4 floats):
//   fn slice: the packed blocks of the CTA's chunks | warp partials [W][25][32] | inbox
//   [S][slots][25] | pre [2][32][4] | coef-warp staging: pre [slots][4], sums [slots][25]
struct SmemLayout {
  int fn = 0, pw = 0, inbox = 0, q = 0, pre_st = 0, sums = 0, total = 0;
  __host__ __device__ explicit SmemLayout(const mhc::Tiling& t) {
    fn = 0;
    pw = (t.per_cta() / mhc::kChunk) * mhc::kFnBlock;
    inbox = pw + t.warps * mhc::kSums * mhc::kBatch;
    q = inbox + mhc::kBatch * mhc::kSums;
    pre_st = q + 2 * mhc::kBatch * 4;
    sums = pre_st + t.slots() * 4;
    total = sums + t.slots() * mhc::kSums;
  }
};

// ---------------------------------------------------------------- phase C: collapse

template <bool kPost>
__device__ __forceinline__ void collapse_batch(const PreArgs& a, int rank, int warp, int lane,
                                               std::int64_t batch, const float* q) {
  const std::int64_t tok = batch * mhc::kBatch + lane;
  if (tok >= a.tokens) return;
  const mhc::Tiling& t = a.t;
  const float4 p4 = reinterpret_cast<const float4*>(q)[lane];
  const float pre[4] = {p4.x, p4.y, p4.z, p4.w};
  const std::int64_t d = t.d;
  for (int c = 0; c < t.chunks; ++c) {
    const int i0 = t.element(rank, warp, c);
    std::uint32_t xs[mhc::kStreams][mhc::kChunk / 2];
    for (int k = 0; k < mhc::kStreams; ++k) {
      const std::int64_t off = tok * 4 * d + k * d + i0;
      // X' was written by this thread in phase A: read it back through L2 (ld.global.cg).
      const uint4 v = kPost ? __ldcg(reinterpret_cast<const uint4*>(a.x_out + off))
                            : __ldg(reinterpret_cast<const uint4*>(a.x + off));
      unpack(v, xs[k]);
    }
    std::uint32_t uo[mhc::kChunk / 2];
    for (int p = 0; p < mhc::kChunk / 2; ++p) {
      std::uint16_t h[2];
      for (int half = 0; half < 2; ++half) {
        float xv[mhc::kStreams];
        for (int k = 0; k < mhc::kStreams; ++k)
          xv[k] = mhc::bf16_value(mhc::bf16_at(xs[k], 2 * p + half));
        h[half] = mhc::collapse_value(pre, xv);
      }
      uo[p] = mhc::bf16_pair(h[0], h[1]);
    }
    store16(a.u + tok * d + i0, uo);
  }
}

// ---------------------------------------------------------------- stream warps

template <bool kPost>
__device__ __forceinline__ void stream_warp(const PreArgs& a, const float* fn_warp, float* smem,
                                            const SmemLayout& L, const cg::cluster_group& cluster,
                                            int rank, int warp, int lane, int cluster_id,
                                            int clusters, int iters) {
  const mhc::Tiling& t = a.t;
  const int S = t.cluster, W = t.warps, slots = t.slots();
  const std::int64_t d = t.d;
  float* pw = smem + L.pw;
  float* inbox = smem + L.inbox;
  float* qpre = smem + L.q;
  for (int it = 0; it < iters; ++it) {
    const std::int64_t batch = cluster_id + static_cast<std::int64_t>(it) * clusters;
    const std::int64_t tok = batch * mhc::kBatch + lane;
    const bool valid = tok < a.tokens;
    // post and comb of this lane's token, read through L1 inside each chunk (kept out of the
    // registers that the 25 sums and the fn loads need); lanes past the end read zeros.
    const float* row = (kPost && valid) ? a.coef_in + tok * mhc::kMix : kZeroRow;
    // ---- phase A: chunk c+1 is loaded before chunk c is computed (one chunk of loads in flight
    // per thread beyond the warp's own latency hiding)
    float acc[mhc::kSums];
    for (int v = 0; v < mhc::kSums; ++v) acc[v] = 0.0f;
    const std::uint16_t* x_tok = a.x + tok * 4 * d;
    const std::uint16_t* f_tok = kPost ? a.f + tok * d : nullptr;
    const auto load = [&](int c, mhc::RawChunk& raw) {
      if (!valid) {
        raw = mhc::RawChunk{};  // lanes past the end contribute zeros
        return;
      }
      const int i0 = t.element(rank, warp, c);
      for (int k = 0; k < mhc::kStreams; ++k)
        unpack(__ldg(reinterpret_cast<const uint4*>(x_tok + k * d + i0)), raw.x[k]);
      if (kPost) unpack(__ldg(reinterpret_cast<const uint4*>(f_tok + i0)), raw.f);
    };
    mhc::RawChunk cur, nxt;
    load(0, cur);
    for (int c = 0; c < t.chunks; ++c) {
      if (c + 1 < t.chunks) load(c + 1, nxt);
      std::uint32_t out[mhc::kStreams][mhc::kChunk / 2];
      mhc::chunk_mix<kPost>(cur, row + mhc::kPostOff, row + mhc::kCombOff,
                            fn_warp + c * mhc::kFnBlock, out, acc);
      if (kPost && valid) {
        const int i0 = t.element(rank, warp, c);
        for (int k = 0; k < mhc::kStreams; ++k) store16(a.x_out + tok * 4 * d + k * d + i0, out[k]);
      }
      cur = nxt;
    }
    if (it > 0) cluster_wait();  // ': pre of the previous batch pushed, every inbox read
    // ---- phase R
    for (int v = 0; v < mhc::kSums; ++v) pw[(warp * mhc::kSums + v) * mhc::kBatch + lane] = acc[v];
    stream_warps_sync(W * 32);
    for (int idx = warp * 32 + lane; idx < mhc::kBatch * mhc::kSums; idx += W * 32) {
      const int v = idx / mhc::kBatch, l = idx % mhc::kBatch;
      float s = pw[v * mhc::kBatch + l];
      for (int w = 1; w < W; ++w) s = mhc::add_rn(s, pw[(w * mhc::kSums + v) * mhc::kBatch + l]);
      float* dst = cluster.map_shared_rank(inbox, static_cast<unsigned>(l % S));
      dst[(rank * slots + l / S) * mhc::kSums + v] = s;
    }
    cluster_arrive();
    // ---- phase C of the previous batch, while the owners run K of this one
    if (it > 0)
      collapse_batch<kPost>(a, rank, warp, lane, batch - clusters, qpre + ((it - 1) & 1) * 128);
    cluster_wait();
    cluster_arrive();  // '
  }
  cluster_wait();  // ' of the last batch
  if (iters > 0)
    collapse_batch<kPost>(a, rank, warp, lane,
                          cluster_id + static_cast<std::int64_t>(iters - 1) * clusters,
                          qpre + ((iters - 1) & 1) * 128);
}

// ---------------------------------------------------------------- coefficient warp

__device__ __forceinline__ void coef_warp(const PreArgs& a, float* smem, const SmemLayout& L,
                                          const cg::cluster_group& cluster, int rank, int lane,
                                          int cluster_id, int clusters, int iters) {
  const mhc::Tiling& t = a.t;
  const int S = t.cluster, slots = t.slots();
  const float* inbox = smem + L.inbox;
  float* qpre = smem + L.q;
  float* pre_st = smem + L.pre_st;
  float* sums = smem + L.sums;
  for (int it = 0; it < iters; ++it) {
    const std::int64_t batch = cluster_id + static_cast<std::int64_t>(it) * clusters;
    cluster_arrive();
    cluster_wait();  // every CTA's sums of this batch are in the inbox
    for (int idx = lane; idx < slots * mhc::kSums; idx += 32) {
      const int slot = idx / mhc::kSums, v = idx % mhc::kSums;
      float s = inbox[slot * mhc::kSums + v];
      for (int src = 1; src < S; ++src)
        s = mhc::add_rn(s, inbox[(src * slots + slot) * mhc::kSums + v]);
      sums[idx] = s;
    }
    __syncwarp();
    for (int slot = lane; slot < slots; slot += 32) {
      const int l = slot * S + rank;
      const std::int64_t tok = batch * mhc::kBatch + l;
      float mu[mhc::kMix], coef[mhc::kMix];
      mhc::coefficients(sums + slot * mhc::kSums, 4 * t.d, a.base, a.s, mu, coef);
      if (tok < a.tokens) {
        float4* co = reinterpret_cast<float4*>(a.coef + tok * mhc::kMix);
        for (int i = 0; i < 6; ++i)
          co[i] = make_float4(coef[4 * i], coef[4 * i + 1], coef[4 * i + 2], coef[4 * i + 3]);
        if (a.mu != nullptr) {
          float4* mo = reinterpret_cast<float4*>(a.mu + tok * mhc::kMix);
          for (int i = 0; i < 6; ++i)
            mo[i] = make_float4(mu[4 * i], mu[4 * i + 1], mu[4 * i + 2], mu[4 * i + 3]);
        }
      }
      reinterpret_cast<float4*>(pre_st)[slot] = make_float4(coef[0], coef[1], coef[2], coef[3]);
    }
    __syncwarp();
    float* q = qpre + (it & 1) * 128;
    for (int idx = lane; idx < S * slots; idx += 32) {
      const int dst = idx % S, slot = idx / S;
      float* remote = cluster.map_shared_rank(q, static_cast<unsigned>(dst));
      reinterpret_cast<float4*>(remote)[slot * S + rank] =
          reinterpret_cast<const float4*>(pre_st)[slot];
    }
    cluster_arrive();  // '
    cluster_wait();
  }
}

// ---------------------------------------------------------------- the kernels

template <bool kPost>
__global__ void __launch_bounds__(kMaxThreads, 1)
    mhc_pre_kernel(const __grid_constant__ PreArgs a) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const cg::cluster_group cluster = cg::this_cluster();
  const mhc::Tiling& t = a.t;
  const SmemLayout L(t);
  const int S = t.cluster;
  const int rank = static_cast<int>(cluster.block_rank());
  const int cluster_id = static_cast<int>(blockIdx.x) / S,
            clusters = static_cast<int>(gridDim.x) / S;
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  // Each stream warp stages the packed fn blocks of its own chunks (cp.async, 16 bytes per
  // lane and instruction); nobody else reads them, so a warp-level wait suffices later.
  const std::int64_t first_block = static_cast<std::int64_t>(rank) * (t.per_cta() / mhc::kChunk) +
                                   static_cast<std::int64_t>(warp) * t.chunks;
  float* fn_warp = smem + L.fn + warp * t.chunks * mhc::kFnBlock;
  if (warp < t.warps) {
    const float* src = a.fn + first_block * mhc::kFnBlock;
    for (int i = lane; i < t.chunks * mhc::kFnBlock / 4; i += 32)
      cp_async16(fn_warp + 4 * i, src + 4 * i);
    cp_async_commit();
  }
  cluster_arrive();
  cluster_wait();  // every CTA of the cluster runs: DSMEM stores are safe from here on
  const int iters = static_cast<int>((a.batches - cluster_id + clusters - 1) / clusters);
  if (warp < t.warps) {
    cp_async_wait_all();
    __syncwarp();
    stream_warp<kPost>(a, fn_warp, smem, L, cluster, rank, warp, lane, cluster_id, clusters, iters);
  } else {
    coef_warp(a, smem, L, cluster, rank, lane, cluster_id, clusters, iters);
  }
}

// Standalone write-back: one thread per (token, 8-element chunk), grid-stride.
__global__ void __launch_bounds__(kPostThreads)
    mhc_post_kernel(const __grid_constant__ PostArgs a) {
  const std::int64_t per_tok = a.d / mhc::kChunk, total = a.tokens * per_tok;
  for (std::int64_t item = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       item < total; item += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t tok = item / per_tok, i0 = (item % per_tok) * mhc::kChunk;
    const float4* c4 = reinterpret_cast<const float4*>(a.coef_in + tok * mhc::kMix + mhc::kPostOff);
    const float4 p = __ldg(c4);
    const float post[4] = {p.x, p.y, p.z, p.w};
    float comb[16];
    for (int j = 0; j < 4; ++j) {
      const float4 c = __ldg(c4 + 1 + j);
      comb[4 * j] = c.x;
      comb[4 * j + 1] = c.y;
      comb[4 * j + 2] = c.z;
      comb[4 * j + 3] = c.w;
    }
    mhc::RawChunk raw;
    for (int k = 0; k < mhc::kStreams; ++k)
      unpack(__ldg(reinterpret_cast<const uint4*>(a.x + tok * 4 * a.d + k * a.d + i0)), raw.x[k]);
    unpack(__ldg(reinterpret_cast<const uint4*>(a.f + tok * a.d + i0)), raw.f);
    std::uint16_t h[mhc::kChunk][mhc::kStreams];
    for (int e = 0; e < mhc::kChunk; ++e) {
      float xv[mhc::kStreams];
      for (int j = 0; j < mhc::kStreams; ++j) xv[j] = mhc::bf16_value(mhc::bf16_at(raw.x[j], e));
      const float f = mhc::bf16_value(mhc::bf16_at(raw.f, e));
      for (int k = 0; k < mhc::kStreams; ++k)
        h[e][k] = mhc::to_bf16(mhc::post_value(post, comb, k, f, xv));
    }
    std::uint32_t out[mhc::kStreams][mhc::kChunk / 2];
    for (int k = 0; k < mhc::kStreams; ++k)
      for (int p = 0; p < mhc::kChunk / 2; ++p)
        out[k][p] = mhc::bf16_pair(h[2 * p][k], h[2 * p + 1][k]);
    for (int k = 0; k < mhc::kStreams; ++k) store16(a.x_out + tok * 4 * a.d + k * a.d + i0, out[k]);
  }
}

// fn [24, 4d] -> packed blocks (mhc_tile.hpp, packed_fn_index), one thread per packed element.
__global__ void mhc_pack_fn_kernel(const float* __restrict__ fn, float* __restrict__ packed,
                                   std::int64_t d) {
  const std::int64_t n = mhc::kMix * 4 * d;
  for (std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; p < n;
       p += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t g = p / mhc::kFnBlock;
    const int rem = static_cast<int>(p % mhc::kFnBlock), kr = rem / mhc::kChunk;
    const int k = kr / mhc::kMix, r = kr % mhc::kMix;
    packed[p] = fn[r * 4 * d + k * d + g * mhc::kChunk + rem % mhc::kChunk];
  }
}

// Every non-NaN float through the device conversion and the host formula.
__global__ void bf16_conversion_check_kernel(unsigned long long* mismatches) {
  unsigned long long local = 0;
  for (std::uint64_t i = blockIdx.x * static_cast<std::uint64_t>(blockDim.x) + threadIdx.x;
       i < (std::uint64_t{1} << 32); i += static_cast<std::uint64_t>(gridDim.x) * blockDim.x) {
    const float x = __uint_as_float(static_cast<unsigned>(i));
    if (x != x) continue;
    if (mhc::to_bf16(x) != mhc::bf16_rne_bits(x)) ++local;
  }
  if (local != 0) atomicAdd(mismatches, local);
}

// ---------------------------------------------------------------- host side

using PreKernel = void (*)(PreArgs);

PreKernel pre_kernel(bool fused) { return fused ? mhc_pre_kernel<true> : mhc_pre_kernel<false>; }

int smem_optin_bytes() {
  int dev = 0, bytes = 0;
  V4REF_CUDA_CHECK(cudaGetDevice(&dev));
  V4REF_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return bytes;
}

// Sets the kernel's attributes and returns how many clusters of S CTAs can be resident at once
// (0: none; the configuration cannot run). Cached per (device, kernel, S, threads, smem).
int max_active_clusters(PreKernel k, int S, int threads, std::size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<int, void*, int, int, std::size_t>, int> cache;
  int dev = 0;
  V4REF_CUDA_CHECK(cudaGetDevice(&dev));
  const auto key = std::make_tuple(dev, reinterpret_cast<void*>(k), S, threads, smem);
  const std::lock_guard<std::mutex> lock(mu);
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  // The device's opt-in maximum, not this configuration's size: the attribute is per kernel, and a
  // later query for a smaller configuration must not lower it under a cached larger one.
  V4REF_CUDA_CHECK(
      cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_optin_bytes()));
  if (S > 8)
    V4REF_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(S));
  cfg.blockDim = dim3(static_cast<unsigned>(threads));
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(S);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  int n = 0;
  const cudaError_t st = cudaOccupancyMaxActiveClusters(&n, k, &cfg);
  if (st != cudaSuccess) {
    (void)cudaGetLastError();  // an unsupported cluster size is an answer (0), not an error
    n = 0;
  }
  cache[key] = n;
  return n;
}

void require_pointer(const void* p, const char* what, bool allow_null = false) {
  if (p == nullptr) {
    if (allow_null) return;
    throw Error(std::string("mhc: ") + what + " is null");
  }
  if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0)
    throw Error(std::string("mhc: ") + what + " must be 16-byte aligned");
  cudaPointerAttributes attr{};
  V4REF_CUDA_CHECK(cudaPointerGetAttributes(&attr, p));
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw Error(std::string("mhc: ") + what + " is not device memory");
}

void require_tokens(std::int64_t tokens, const char* where) {
  if (tokens < 0 || tokens > (std::int64_t{1} << 31))
    throw ShapeError(std::string(where) + ": tokens must be in [0, 2^31], got " +
                     std::to_string(tokens));
}

}  // namespace

MhcPlan mhc_plan(std::int64_t tokens, std::int64_t d, bool fused, const MhcOptions& opt) {
  require_tokens(tokens, "mhc_plan");
  const std::int64_t batches = (tokens + mhc::kBatch - 1) / mhc::kBatch;
  const std::vector<int> sizes =
      opt.cluster != 0 ? std::vector<int>{opt.cluster} : std::vector<int>{16, 8};
  const auto optin = static_cast<std::size_t>(smem_optin_bytes());
  std::string why;
  for (const int S : sizes) {
    const mhc::Tiling t = mhc::make_tiling(d, S);
    const int threads = (t.warps + 1) * 32;
    const std::size_t bytes = static_cast<std::size_t>(SmemLayout(t).total) * sizeof(float);
    if (bytes > optin) {
      why += " cluster " + std::to_string(S) + ": needs " + std::to_string(bytes) +
             " bytes of shared memory, the device allows " + std::to_string(optin) + ";";
      continue;
    }
    int n = max_active_clusters(pre_kernel(fused), S, threads, bytes);
    if (n == 0) {
      why += " cluster " + std::to_string(S) + ": not schedulable;";
      continue;
    }
    if (opt.max_clusters > 0) n = std::min(n, opt.max_clusters);
    MhcPlan p;
    p.tiling = t;
    p.clusters = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(n, batches)));
    p.threads = threads;
    p.smem_bytes = bytes;
    return p;
  }
  throw Error("mhc_plan: d = " + std::to_string(d) + " cannot run on this device:" + why);
}

MhcPlan mhc_pre(const MhcPreLaunch& p, const MhcOptions& opt, CUstream_st* stream) {
  require_tokens(p.tokens, "mhc_pre");
  const bool fused = p.f != nullptr;
  const MhcPlan plan = mhc_plan(p.tokens, p.d, fused, opt);
  if (p.tokens == 0) return plan;
  require_pointer(p.x, "x");
  require_pointer(p.fn, "fn");
  require_pointer(p.base, "base");
  require_pointer(p.u, "u");
  require_pointer(p.coef, "coef");
  require_pointer(p.mu, "mu", true);
  if (fused) {
    require_pointer(p.f, "f");
    require_pointer(p.coef_in, "coef_in");
    require_pointer(p.x_out, "x_out");
    if (p.x_out == p.x) throw Error("mhc_pre: x_out must not alias x (other CTAs still read x)");
  }
  if (p.s.sinkhorn_iters < 1)
    throw ConfigError("mhc_pre: sinkhorn_iters must be >= 1, got " +
                      std::to_string(p.s.sinkhorn_iters));
  PreArgs a{};
  a.t = plan.tiling;
  a.tokens = p.tokens;
  a.batches = (p.tokens + mhc::kBatch - 1) / mhc::kBatch;
  a.x = p.x;
  a.f = p.f;
  a.coef_in = p.coef_in;
  a.fn = p.fn;
  a.base = p.base;
  a.s = p.s;
  a.x_out = p.x_out;
  a.u = p.u;
  a.coef = p.coef;
  a.mu = p.mu;
  const int S = plan.tiling.cluster;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(plan.clusters * S));
  cfg.blockDim = dim3(static_cast<unsigned>(plan.threads));
  cfg.dynamicSmemBytes = plan.smem_bytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(S);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  V4REF_CUDA_CHECK(cudaLaunchKernelEx(&cfg, pre_kernel(fused), a));
  V4REF_CUDA_CHECK_LAUNCH();
  return plan;
}

void mhc_post(const MhcPostLaunch& p, CUstream_st* stream) {
  require_tokens(p.tokens, "mhc_post");
  if (p.d <= 0 || p.d % mhc::kChunk != 0)
    throw ShapeError("mhc_post: d must be a positive multiple of 8, got " + std::to_string(p.d));
  if (p.tokens == 0) return;
  require_pointer(p.x, "x");
  require_pointer(p.f, "f");
  require_pointer(p.coef_in, "coef_in");
  require_pointer(p.x_out, "x_out");
  int dev = 0, sms = 0;
  V4REF_CUDA_CHECK(cudaGetDevice(&dev));
  V4REF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const std::int64_t items = p.tokens * (p.d / mhc::kChunk);
  const std::int64_t blocks =
      std::min<std::int64_t>((items + kPostThreads - 1) / kPostThreads, 8LL * sms);
  const PostArgs a{p.tokens, p.d, p.x, p.f, p.coef_in, p.x_out};
  mhc_post_kernel<<<static_cast<unsigned>(blocks), kPostThreads, 0, stream>>>(a);
  V4REF_CUDA_CHECK_LAUNCH();
}

void mhc_pack_fn(const float* fn, float* packed, std::int64_t d, CUstream_st* stream) {
  if (d <= 0 || d % mhc::kChunk != 0)
    throw ShapeError("mhc_pack_fn: d must be a positive multiple of 8, got " + std::to_string(d));
  require_pointer(fn, "fn");
  require_pointer(packed, "packed fn");
  const std::int64_t n = mhc::kMix * 4 * d;
  const auto blocks = static_cast<unsigned>(std::min<std::int64_t>((n + 255) / 256, 4096));
  mhc_pack_fn_kernel<<<blocks, 256, 0, stream>>>(fn, packed, d);
  V4REF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------- host conveniences

namespace {

constexpr std::size_t kGuardBytes = 4096;

// A device buffer with 4 KiB guards before and after, all filled with a poison pattern.
struct Guarded {
  unsigned char* base = nullptr;
  std::size_t bytes = 0;
  std::vector<unsigned char> pattern;  // full contents as written (guards + body)
  Guarded(std::size_t n, const void* elem, std::size_t elem_size) : bytes(n) {
    pattern.resize(n + 2 * kGuardBytes);
    for (std::size_t i = 0; i < pattern.size(); i += elem_size)
      std::memcpy(pattern.data() + i, elem, std::min(elem_size, pattern.size() - i));
    V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&base), pattern.size()));
    V4REF_CUDA_CHECK(cudaMemcpy(base, pattern.data(), pattern.size(), cudaMemcpyHostToDevice));
  }
  ~Guarded() {
    if (base != nullptr) cudaFree(base);
  }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  void* body() const { return base + kGuardBytes; }
  template <class T>
  std::vector<T> read(bool* guards_ok) const {
    std::vector<unsigned char> all(pattern.size());
    V4REF_CUDA_CHECK(cudaMemcpy(all.data(), base, all.size(), cudaMemcpyDeviceToHost));
    *guards_ok = *guards_ok &&
                 std::equal(all.begin(), all.begin() + kGuardBytes, pattern.begin()) &&
                 std::equal(all.end() - kGuardBytes, all.end(), pattern.end() - kGuardBytes);
    std::vector<T> out(bytes / sizeof(T));
    std::memcpy(out.data(), all.data() + kGuardBytes, bytes);
    return out;
  }
};

template <class T>
struct DeviceCopy {
  T* p = nullptr;
  std::size_t n = 0;
  DeviceCopy(const T* h, std::size_t count) : n(count) {
    if (h == nullptr || count == 0) return;
    V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), count * sizeof(T)));
    V4REF_CUDA_CHECK(cudaMemcpy(p, h, count * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceCopy() {
    if (p != nullptr) cudaFree(p);
  }
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
  bool unchanged(const T* h) const {
    if (p == nullptr) return true;
    std::vector<T> back(n);
    V4REF_CUDA_CHECK(cudaMemcpy(back.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return std::memcmp(back.data(), h, n * sizeof(T)) == 0;
  }
};

}  // namespace

MhcHostOutputs mhc_pre_host(const mhc::Problem& hp, const MhcOptions& opt, std::uint16_t poison_u16,
                            std::uint32_t poison_f32) {
  const auto T = static_cast<std::size_t>(hp.tokens), d = static_cast<std::size_t>(hp.d);
  const bool fused = hp.f != nullptr;
  DeviceCopy<std::uint16_t> x(hp.x, T * 4 * d), f(hp.f, fused ? T * d : 0);
  DeviceCopy<float> ci(hp.coef_in, fused ? T * mhc::kMix : 0), fn(hp.fn, mhc::kMix * 4 * d),
      fnp(hp.fn, mhc::kMix * 4 * d), base(hp.base, mhc::kMix);
  mhc_pack_fn(fn.p, fnp.p, hp.d);
  Guarded xo(fused ? T * 4 * d * 2 : 0, &poison_u16, 2), u(T * d * 2, &poison_u16, 2),
      coef(T * mhc::kMix * 4, &poison_f32, 4), mu(T * mhc::kMix * 4, &poison_f32, 4);
  MhcPreLaunch p;
  p.tokens = hp.tokens;
  p.d = hp.d;
  p.x = x.p;
  p.f = f.p;
  p.coef_in = ci.p;
  p.fn = fnp.p;
  p.base = base.p;
  p.s = hp.s;
  p.x_out = fused ? static_cast<std::uint16_t*>(xo.body()) : nullptr;
  p.u = static_cast<std::uint16_t*>(u.body());
  p.coef = static_cast<float*>(coef.body());
  p.mu = static_cast<float*>(mu.body());
  MhcHostOutputs out;
  out.plan = mhc_pre(p, opt);
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  bool ok = true;
  if (fused) out.x_out = xo.read<std::uint16_t>(&ok);
  out.u = u.read<std::uint16_t>(&ok);
  out.coef = coef.read<float>(&ok);
  out.mu = mu.read<float>(&ok);
  out.guards_intact = ok;
  out.inputs_intact = x.unchanged(hp.x) && f.unchanged(hp.f) && ci.unchanged(hp.coef_in) &&
                      fn.unchanged(hp.fn) && base.unchanged(hp.base);
  return out;
}

std::vector<std::uint16_t> mhc_post_host(const mhc::Problem& hp, std::uint16_t poison_u16) {
  const auto T = static_cast<std::size_t>(hp.tokens), d = static_cast<std::size_t>(hp.d);
  DeviceCopy<std::uint16_t> x(hp.x, T * 4 * d), f(hp.f, T * d);
  DeviceCopy<float> ci(hp.coef_in, T * mhc::kMix);
  Guarded xo(T * 4 * d * 2, &poison_u16, 2);
  mhc_post({hp.tokens, hp.d, x.p, f.p, ci.p, static_cast<std::uint16_t*>(xo.body())});
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  bool ok = true;
  std::vector<std::uint16_t> out = xo.read<std::uint16_t>(&ok);
  if (!ok) throw Error("mhc_post_host: a guard region around x_out was overwritten");
  return out;
}

std::uint64_t mhc_bf16_conversion_mismatches() {
  unsigned long long* dev = nullptr;
  V4REF_CUDA_CHECK(cudaMalloc(&dev, sizeof *dev));
  V4REF_CUDA_CHECK(cudaMemset(dev, 0, sizeof *dev));
  bf16_conversion_check_kernel<<<4096, 256>>>(dev);
  V4REF_CUDA_CHECK_LAUNCH();
  unsigned long long host = 0;
  V4REF_CUDA_CHECK(cudaMemcpy(&host, dev, sizeof host, cudaMemcpyDeviceToHost));
  V4REF_CUDA_CHECK(cudaFree(dev));
  return host;
}

}  // namespace v4ref::cuda
