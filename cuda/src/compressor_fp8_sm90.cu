// The compressors on Hopper: per-channel softmax pooling, RMSNorm, RoPE, then the main
// compressor's Q8 cache row or the indexer compressor's Hadamard and Q4 cache row, for prefill
// and the §11.2 decode state machine (docs/cuda-mhc-compressor.md §4; header
// cuda/include/v4ref/cuda/compressor.hpp; per-thread math compressor_tile.hpp).
//
// One cluster of Q = w/128 CTAs per entry (prefill) or per sequence (decode); CTA `rank` owns
// channels [128·rank, 128·rank + 128), 4 warps split the slots, lane l owns 4 channels (16-byte
// loads of a, g, ape). Pass 1 forms the logits (prefill: fp32(g + ape); decode: the state's) into
// shared memory and the per-channel max; pass 2 accumulates Σe and Σe·a per warp in slot order;
// warp 0 combines the warps in order, rounds the pooled vector to bf16, forms its square sum
// (4-term fma chain, xor butterfly) and the CTAs exchange those through distributed shared memory
// (each CTA publishes its sum in its own shared memory, cluster barrier, every CTA reads all Q in
// rank order, cluster barrier before exit). Then RMSNorm and RoPE (last CTA, lanes 16..31) and
// the kind's tail in warp 0:
//   main     Q8 (16 lanes per 64-channel block: shuffle max, e4m3 codes as one 4-byte store per
//            lane), the rope part as 8-byte stores;
//   indexer  (Q = 1) Hadamard: stages h = 1, 2 in each lane, h = 4..64 by __shfl_xor_sync over
//            lane offsets 1..16, one fp32 product by fp32(128^-1/2), bf16; Q4 over 8-lane blocks
//            (xor max 4, 2, 1); the 64 code bytes as 4-byte stores by the even lanes (their own
//            2 bytes and their odd partner's), the 4 scale bytes as one 4-byte store by lane 0.
// The two kinds are separate kernels (compressor_* and compressor_idx_*), instantiations of the
// same templates, so the main kernels carry no indexer code.
// Decode: the step stores its token's row into the state first; only sequences whose block
// completes pool (the whole cluster takes the same branch), then CSA copies rows 4–7 to 0–3.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/compressor.hpp"
#include "v4ref/cuda/compressor_tile.hpp"

namespace v4ref::cuda {
namespace {

namespace cg = cooperative_groups;
using cmp::Dims;

// Where the slots of one entry come from. Prefill: token rows of a and g, logit = g + ape[row mod
// m]; decode: the sequence's state rows, logit = score (ape == nullptr).
struct Slots {
  const float* a = nullptr;
  const float* g = nullptr;    // gate (prefill) or score (decode)
  const float* ape = nullptr;  // null: g already holds the logits
  std::int64_t stride = 0;     // floats per row (c·w)
  bool prefill = false;
  std::int64_t entry = 0;  // j
};

__device__ __forceinline__ std::int64_t slot_row(const Dims& dm, const Slots& src, int s) {
  return src.prefill ? cmp::prefill_row(dm, src.entry, s) : static_cast<std::int64_t>(s);
}

__device__ __forceinline__ float4 ldg4(const float* p) {
  return __ldg(reinterpret_cast<const float4*>(p));
}
// Slot loads: the read-only path for prefill inputs; L2-coherent loads for the decode state,
// which this kernel itself has just written.
__device__ __forceinline__ float4 load_slot4(const Slots& src, const float* p) {
  return src.prefill ? __ldg(reinterpret_cast<const float4*>(p))
                     : __ldcg(reinterpret_cast<const float4*>(p));
}

struct EntryOut {
  std::uint8_t* row = nullptr;            // the cache row
  std::uint16_t* dbg_pooled = nullptr;    // [w] or null
  std::uint16_t* dbg_normed = nullptr;    // [w] or null
  std::uint16_t* dbg_roped = nullptr;     // [w] or null (indexer)
  std::uint16_t* dbg_hadamard = nullptr;  // [w] or null (indexer)
  const float* cos = nullptr;             // [32] of this entry
  const float* sin = nullptr;
};

// Four bf16 values of one lane as one 8-byte word (channel order).
__device__ __forceinline__ uint2 pack4_bf16(const std::uint16_t y[4]) {
  return make_uint2(y[0] | (static_cast<unsigned>(y[1]) << 16),
                    y[2] | (static_cast<unsigned>(y[3]) << 16));
}

// Main tail (warp 0 of CTA `rank`): the rope part (bf16) and Q8 of the nope dims into the row.
// y: this lane's 4 channels from `ch`, normed (nope) or roped (rope).
__device__ __forceinline__ void main_tail(const Dims& dm, const std::uint16_t y[4],
                                          const EntryOut& out, int rank, int lane, int ch) {
  const bool rope = ch >= dm.nope();
  if (rope)
    *reinterpret_cast<uint2*>(out.row + dm.rope_offset() + 2 * (ch - dm.nope())) = pack4_bf16(y);
  float amax = 0.0f;
  for (int q = 0; q < 4; ++q) amax = cmp::max_f(amax, fabsf(cmp::bf16_value(y[q])));
  for (int o = 8; o > 0; o /= 2) amax = cmp::max_f(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if (!rope) {
    const int k = cmp::q8_scale_exponent(amax);
    unsigned codes = 0;
    for (int q = 0; q < 4; ++q)
      codes |= static_cast<unsigned>(cmp::q8_code(cmp::bf16_value(y[q]), k)) << (8 * q);
    *reinterpret_cast<unsigned*>(out.row + ch) = codes;
    if (ch % cmp::kQ8Block == 0)
      out.row[dm.scale_offset() + ch / cmp::kQ8Block] = static_cast<std::uint8_t>(k + 127);
  }
  if (rank == dm.ctas() - 1 && lane == 0)
    for (int b = dm.scale_offset() + dm.scales(); b < dm.row_bytes(); ++b) out.row[b] = 0;
}

// Indexer tail (warp 0, the only CTA): Had of the roped entry, bf16, Q4 into the 68-byte row.
// y: this lane's channels 4·lane .. 4·lane + 3 after RoPE.
__device__ __forceinline__ void indexer_tail(const std::uint16_t y[4], const EntryOut& out,
                                             int lane) {
  constexpr unsigned kFull = 0xffffffffu;
  const int ch = lane * cmp::kLaneChannels;
  if (out.dbg_roped != nullptr) *reinterpret_cast<uint2*>(out.dbg_roped + ch) = pack4_bf16(y);
  float v[4];
  for (int q = 0; q < 4; ++q) v[q] = cmp::bf16_value(y[q]);
  cmp::hadamard_in_lane(v);           // h = 1, 2
  for (int o = 1; o < 32; o <<= 1) {  // h = 4·o: the partner is lane ^ o, same q
    const bool upper = (lane & o) != 0;
    for (int q = 0; q < 4; ++q)
      v[q] = cmp::hadamard_butterfly(v[q], __shfl_xor_sync(kFull, v[q], o), upper);
  }
  std::uint16_t h[4];
  for (int q = 0; q < 4; ++q) h[q] = cmp::hadamard_bf16(v[q]);
  if (out.dbg_hadamard != nullptr) *reinterpret_cast<uint2*>(out.dbg_hadamard + ch) = pack4_bf16(h);
  float amax = 0.0f;  // block of 32 channels = lanes 8b .. 8b + 7
  for (int q = 0; q < 4; ++q) amax = cmp::max_f(amax, fabsf(cmp::bf16_value(h[q])));
  for (int o = 4; o > 0; o /= 2) amax = cmp::max_f(amax, __shfl_xor_sync(kFull, amax, o));
  const int k = cmp::q4_scale_exponent(amax);
  std::uint8_t c[4];
  for (int q = 0; q < 4; ++q) c[q] = cmp::q4_code(cmp::bf16_value(h[q]), k);
  const unsigned bits = cmp::q4_lane_bits(c);  // row bytes 2·lane, 2·lane + 1
  const unsigned odd = __shfl_xor_sync(kFull, bits, 1);
  if ((lane & 1) == 0) *reinterpret_cast<unsigned*>(out.row + 2 * lane) = bits | (odd << 16);
  unsigned scales = 0;  // byte b = k of block b + 127 (lane 8b holds it)
  for (int b = 0; b < cmp::kIndexerWidth / cmp::kQ4Block; ++b)
    scales |= static_cast<unsigned>(__shfl_sync(kFull, k, 8 * b) + 127) << (8 * b);
  if (lane == 0) *reinterpret_cast<unsigned*>(out.row + cmp::kIndexerWidth / 2) = scales;
}

// The pooling, norm, rope and the kind's tail of one entry by one CTA of its cluster (all threads
// call it). `logits` is shared memory [slots][128]; `ssbox` shared [Q].
template <cmp::Kind K>
__device__ void entry_pipeline(const Dims& dm, const Slots& src, const float* __restrict__ norm_w,
                               float eps, const EntryOut& out, float* logits, float* ssbox,
                               const cg::cluster_group& cluster, int rank) {
  __shared__ float part_max[cmp::kWarps][cmp::kCtaChannels];
  __shared__ float part_den[cmp::kWarps][cmp::kCtaChannels];
  __shared__ float part_num[cmp::kWarps][cmp::kCtaChannels];
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int spw = dm.slots_per_warp(), Q = dm.ctas();
  const int ch = rank * cmp::kCtaChannels + lane * cmp::kLaneChannels;  // entry channel of q = 0
  const int lc = lane * cmp::kLaneChannels;                             // local channel
  const float ninf = __int_as_float(0xff800000);
  // ---- pass 1: logits into shared memory, max per channel
  float mx[4] = {ninf, ninf, ninf, ninf};
  for (int s = warp * spw; s < (warp + 1) * spw; ++s) {
    const std::int64_t r = slot_row(dm, src, s);
    float l[4] = {ninf, ninf, ninf, ninf};
    if (r >= 0) {
      const int col = dm.channel(s, ch);
      const float4 g4 = load_slot4(src, src.g + r * src.stride + col);
      l[0] = g4.x;
      l[1] = g4.y;
      l[2] = g4.z;
      l[3] = g4.w;
      if (src.ape != nullptr) {
        const float4 e4 = ldg4(src.ape + (r % dm.ratio) * src.stride + col);
        l[0] = cmp::slot_logit(g4.x, e4.x);
        l[1] = cmp::slot_logit(g4.y, e4.y);
        l[2] = cmp::slot_logit(g4.z, e4.z);
        l[3] = cmp::slot_logit(g4.w, e4.w);
      }
    }
    reinterpret_cast<float4*>(logits + s * cmp::kCtaChannels)[lane] =
        make_float4(l[0], l[1], l[2], l[3]);
    for (int q = 0; q < 4; ++q) mx[q] = cmp::max_f(mx[q], l[q]);
  }
  for (int q = 0; q < 4; ++q) part_max[warp][lc + q] = mx[q];
  __syncthreads();
  float m4[4];
  for (int q = 0; q < 4; ++q)
    m4[q] = cmp::max_f(cmp::max_f(part_max[0][lc + q], part_max[1][lc + q]),
                       cmp::max_f(part_max[2][lc + q], part_max[3][lc + q]));
  // ---- pass 2: Σe and Σe·a per warp in slot order
  float den[4] = {0, 0, 0, 0}, num[4] = {0, 0, 0, 0};
  for (int s = warp * spw; s < (warp + 1) * spw; ++s) {
    const std::int64_t r = slot_row(dm, src, s);
    float a[4] = {0, 0, 0, 0};
    if (r >= 0) {
      const float4 a4 = load_slot4(src, src.a + r * src.stride + dm.channel(s, ch));
      a[0] = a4.x;
      a[1] = a4.y;
      a[2] = a4.z;
      a[3] = a4.w;
    }
    const float4 l4 = reinterpret_cast<const float4*>(logits + s * cmp::kCtaChannels)[lane];
    const float l[4] = {l4.x, l4.y, l4.z, l4.w};
    for (int q = 0; q < 4; ++q) cmp::pool_accumulate(l[q], m4[q], a[q], den[q], num[q]);
  }
  for (int q = 0; q < 4; ++q) {
    part_den[warp][lc + q] = den[q];
    part_num[warp][lc + q] = num[q];
  }
  __syncthreads();
  // ---- warp 0: combine, bf16, square sum
  std::uint16_t p[4] = {0, 0, 0, 0};
  if (warp == 0) {
    float ss = 0.0f;
    for (int q = 0; q < 4; ++q) {
      float d = part_den[0][lc + q], n = part_num[0][lc + q];
      for (int w = 1; w < cmp::kWarps; ++w) {
        d = cmp::add_rn(d, part_den[w][lc + q]);
        n = cmp::add_rn(n, part_num[w][lc + q]);
      }
      p[q] = cmp::pooled_bf16(n, d);
      const float pv = cmp::bf16_value(p[q]);
      ss = cmp::fma_rn(pv, pv, ss);
    }
    for (int o = 16; o > 0; o /= 2) ss = cmp::add_rn(ss, __shfl_xor_sync(0xffffffffu, ss, o));
    if (lane == 0) ssbox[rank] = ss;
  }
  // ---- the Q CTA sums, rank order (every CTA reads every CTA's box)
  if (Q > 1)
    cluster.sync();
  else
    __syncthreads();
  if (warp == 0) {
    float total = ssbox[0];
    if (Q > 1) total = *cluster.map_shared_rank(ssbox + 0, 0u);
    for (int r = 1; r < Q; ++r)
      total = cmp::add_rn(total, *cluster.map_shared_rank(ssbox + r, static_cast<unsigned>(r)));
    const float rho = cmp::inv_rms(total, dm.width, eps);
    std::uint16_t y[4];
    for (int q = 0; q < 4; ++q) y[q] = cmp::norm_bf16(cmp::bf16_value(p[q]), rho, norm_w[ch + q]);
    if (out.dbg_pooled != nullptr) *reinterpret_cast<uint2*>(out.dbg_pooled + ch) = pack4_bf16(p);
    if (out.dbg_normed != nullptr) *reinterpret_cast<uint2*>(out.dbg_normed + ch) = pack4_bf16(y);
    if (ch >= dm.nope()) {  // the last 64 channels: two pairs per lane
      const int jp = (ch - dm.nope()) / 2;
      cmp::rope_pair(cmp::bf16_value(y[0]), cmp::bf16_value(y[1]), out.cos[jp], out.sin[jp], y[0],
                     y[1]);
      cmp::rope_pair(cmp::bf16_value(y[2]), cmp::bf16_value(y[3]), out.cos[jp + 1], out.sin[jp + 1],
                     y[2], y[3]);
    }
    if constexpr (K == cmp::Kind::kIndexer)
      indexer_tail(y, out, lane);
    else
      main_tail(dm, y, out, rank, lane, ch);
  }
  if (Q > 1) cluster.sync();  // no CTA leaves while another may still read its box
}

// Debug outputs of entry (or sequence) e, [w] bf16 each; null stays null.
struct DebugPtrs {
  std::uint16_t* pooled;
  std::uint16_t* normed;
  std::uint16_t* roped;
  std::uint16_t* hadamard;
  __device__ __forceinline__ EntryOut entry(std::uint8_t* row, std::int64_t e, int width,
                                            const float* cos, const float* sin) const {
    const auto at = [&](std::uint16_t* q) { return q != nullptr ? q + e * width : nullptr; };
    return EntryOut{row, at(pooled), at(normed), at(roped), at(hadamard), cos, sin};
  }
};

struct PrefillArgs {
  Dims dm;
  const float* a;
  const float* g;
  const float* ape;
  const float* norm_w;
  float eps;
  const float* cos;
  const float* sin;
  std::uint8_t* cache;
  DebugPtrs dbg;
};

// Entry blockIdx.x / Q of a prefill, CTA `rank` of its cluster.
template <cmp::Kind K>
__device__ __forceinline__ void prefill_entry(const PrefillArgs& p, float* logits, float* ssbox) {
  const cg::cluster_group cluster = cg::this_cluster();
  const int Q = p.dm.ctas();
  const int rank = Q > 1 ? static_cast<int>(cluster.block_rank()) : 0;
  const std::int64_t j = blockIdx.x / Q;
  const Slots src{p.a, p.g, p.ape, p.dm.cw(), true, j};
  const EntryOut out =
      p.dbg.entry(p.cache + j * p.dm.row_bytes(), j, p.dm.width, p.cos + j * 32, p.sin + j * 32);
  entry_pipeline<K>(p.dm, src, p.norm_w, p.eps, out, logits, ssbox, cluster, rank);
}

__global__ void __launch_bounds__(cmp::kThreads)
    compressor_prefill_kernel(const __grid_constant__ PrefillArgs p) {
  extern __shared__ float4 smem4[];
  __shared__ float ssbox[cmp::kMaxClusterCtas];
  prefill_entry<cmp::Kind::kMain>(p, reinterpret_cast<float*>(smem4), ssbox);
}

__global__ void __launch_bounds__(cmp::kThreads)
    compressor_idx_prefill_kernel(const __grid_constant__ PrefillArgs p) {
  extern __shared__ float4 smem4[];
  __shared__ float ssbox[cmp::kMaxClusterCtas];
  prefill_entry<cmp::Kind::kIndexer>(p, reinterpret_cast<float*>(smem4), ssbox);
}

struct DecodeArgs {
  Dims dm;
  const std::int64_t* positions;
  const float* a;
  const float* g;
  const float* ape;
  const float* norm_w;
  float eps;
  const float* cos;
  const float* sin;
  float* state_kv;
  float* state_score;
  std::uint8_t* cache;
  std::int64_t entries_max;
  DebugPtrs dbg;
};

// Sequence blockIdx.x / Q of a decode step, CTA `rank` of its cluster.
template <cmp::Kind K>
__device__ __forceinline__ void decode_sequence(const DecodeArgs& p, float* logits, float* ssbox) {
  const cg::cluster_group cluster = cg::this_cluster();
  const Dims& dm = p.dm;
  const int Q = dm.ctas();
  const int rank = Q > 1 ? static_cast<int>(cluster.block_rank()) : 0;
  const std::int64_t b = blockIdx.x / Q;
  const std::int64_t t = p.positions[b];
  const int cw = dm.cw(), rows = dm.state_rows(), m = dm.ratio;
  const int r = static_cast<int>(t % m), row = (dm.csa() ? 4 : 0) + r;
  float* kv = p.state_kv + b * rows * cw;
  float* score = p.state_score + b * rows * cw;
  // Store the token's row: this CTA's channel slice of every series.
  for (int sidx = 0; sidx < dm.series(); ++sidx) {
    const int c = sidx * dm.width + rank * cmp::kCtaChannels +
                  static_cast<int>(threadIdx.x) * cmp::kLaneChannels;
    if (threadIdx.x < cmp::kCtaChannels / cmp::kLaneChannels) {
      const float4 a4 = ldg4(p.a + b * cw + c), g4 = ldg4(p.g + b * cw + c),
                   e4 = ldg4(p.ape + r * cw + c);
      reinterpret_cast<float4*>(kv + row * cw + c)[0] = a4;
      reinterpret_cast<float4*>(score + row * cw + c)[0] =
          make_float4(cmp::slot_logit(g4.x, e4.x), cmp::slot_logit(g4.y, e4.y),
                      cmp::slot_logit(g4.z, e4.z), cmp::slot_logit(g4.w, e4.w));
    }
  }
  if ((t + 1) % m != 0) return;  // the whole cluster returns: same sequence, same position
  __syncthreads();
  const std::int64_t j = t / m;
  // The state is written by this kernel: L2-coherent loads (ld.global.cg), not the read-only path.
  const Slots src{kv, score, nullptr, cw, false, j};
  const EntryOut out = p.dbg.entry(p.cache + (b * p.entries_max + j) * dm.row_bytes(), b, dm.width,
                                   p.cos + j * 32, p.sin + j * 32);
  entry_pipeline<K>(dm, src, p.norm_w, p.eps, out, logits, ssbox, cluster, rank);
  if (dm.csa()) {  // rows 4–7 become rows 0–3 (this CTA's slices of both series; pooling has read
                   // them)
    __syncthreads();
    for (int i = static_cast<int>(threadIdx.x); i < 4 * dm.series() * (cmp::kCtaChannels / 4);
         i += blockDim.x) {
      const int rr = i / (dm.series() * 32), rem = i % (dm.series() * 32);
      const int c = (rem / 32) * dm.width + rank * cmp::kCtaChannels + (rem % 32) * 4;
      reinterpret_cast<float4*>(kv + rr * cw + c)[0] =
          reinterpret_cast<const float4*>(kv + (4 + rr) * cw + c)[0];
      reinterpret_cast<float4*>(score + rr * cw + c)[0] =
          reinterpret_cast<const float4*>(score + (4 + rr) * cw + c)[0];
    }
  }
}

__global__ void __launch_bounds__(cmp::kThreads)
    compressor_decode_kernel(const __grid_constant__ DecodeArgs p) {
  extern __shared__ float4 smem4[];
  __shared__ float ssbox[cmp::kMaxClusterCtas];
  decode_sequence<cmp::Kind::kMain>(p, reinterpret_cast<float*>(smem4), ssbox);
}

__global__ void __launch_bounds__(cmp::kThreads)
    compressor_idx_decode_kernel(const __grid_constant__ DecodeArgs p) {
  extern __shared__ float4 smem4[];
  __shared__ float ssbox[cmp::kMaxClusterCtas];
  decode_sequence<cmp::Kind::kIndexer>(p, reinterpret_cast<float*>(smem4), ssbox);
}

// The §11.2 hand-off state of one sequence after a prefill of T tokens (one thread per 4 floats).
__global__ void compressor_state_kernel(Dims dm, std::int64_t tokens, const float* __restrict__ a,
                                        const float* __restrict__ g, const float* __restrict__ ape,
                                        float* __restrict__ kv, float* __restrict__ score) {
  const int cw = dm.cw(), rows = dm.state_rows(), m = dm.ratio, cur = dm.csa() ? 4 : 0;
  const std::int64_t done = (tokens / m) * m;
  const int n4 = rows * cw / 4;
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n4;
       i += static_cast<int>(gridDim.x * blockDim.x)) {
    const int rr = (4 * i) / cw, c = (4 * i) % cw;
    std::int64_t t = -1;
    if (rr >= cur && rr - cur < tokens - done) t = done + (rr - cur);
    if (dm.csa() && rr < 4 && done >= 4) t = done - 4 + rr;
    float4 kv4 = make_float4(0, 0, 0, 0);
    const float ninf = __int_as_float(0xff800000);
    float4 sc4 = make_float4(ninf, ninf, ninf, ninf);
    if (t >= 0) {
      kv4 = ldg4(a + t * cw + c);
      const float4 g4 = ldg4(g + t * cw + c), e4 = ldg4(ape + (t % m) * cw + c);
      sc4 = make_float4(cmp::slot_logit(g4.x, e4.x), cmp::slot_logit(g4.y, e4.y),
                        cmp::slot_logit(g4.z, e4.z), cmp::slot_logit(g4.w, e4.w));
    }
    reinterpret_cast<float4*>(kv)[i] = kv4;
    reinterpret_cast<float4*>(score)[i] = sc4;
  }
}

void require_ptr(const void* p, const char* what, std::size_t align = 16, bool allow_null = false) {
  if (p == nullptr) {
    if (allow_null) return;
    throw Error(std::string("compressor: ") + what + " is null");
  }
  if (reinterpret_cast<std::uintptr_t>(p) % align != 0)
    throw Error(std::string("compressor: ") + what + " must be " + std::to_string(align) +
                "-byte aligned");
}

template <class Kernel, class Args>
void launch_cluster(Kernel k, const Args& args, std::int64_t clusters, int Q, std::size_t smem,
                    cudaStream_t s) {
  V4REF_CUDA_CHECK(
      cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(clusters * Q));
  cfg.blockDim = dim3(cmp::kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(Q);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  V4REF_CUDA_CHECK(cudaLaunchKernelEx(&cfg, k, args));
  V4REF_CUDA_CHECK_LAUNCH();
}

}  // namespace

namespace {

// The launch's dims, validated (make_dims: ShapeError / ConfigError naming the value).
Dims checked_dims(const Dims& d) { return cmp::make_dims(d.ratio, d.width, d.kind); }

// Cache rows: 8-byte aligned for the main kind (584 = 8·73), 4-byte for the indexer (68 = 4·17;
// the kernel writes the indexer row in 4-byte words).
std::size_t cache_alignment(const Dims& dm) { return dm.indexer() ? 4 : 8; }

DebugPtrs checked_debug(const Dims& dm, std::uint16_t* pooled, std::uint16_t* normed,
                        std::uint16_t* roped, std::uint16_t* hadamard, const char* who) {
  if (!dm.indexer() && (roped != nullptr || hadamard != nullptr))
    throw Error(std::string(who) +
                ": dbg_roped / dbg_hadamard exist for the indexer compressor only (main kind)");
  require_ptr(pooled, "dbg_pooled", 8, true);
  require_ptr(normed, "dbg_normed", 8, true);
  require_ptr(roped, "dbg_roped", 8, true);
  require_ptr(hadamard, "dbg_hadamard", 8, true);
  return DebugPtrs{pooled, normed, roped, hadamard};
}

std::size_t logit_smem_bytes(const Dims& dm) {
  return static_cast<std::size_t>(dm.slots()) * cmp::kCtaChannels * sizeof(float);
}

}  // namespace

void compressor_prefill(const CompressorPrefillLaunch& p, CUstream_st* stream) {
  const Dims dm = checked_dims(p.dm);
  if (p.tokens < 0)
    throw ShapeError("compressor_prefill: tokens must be >= 0, got " + std::to_string(p.tokens));
  const std::int64_t entries = p.tokens / dm.ratio;
  if (entries == 0) return;
  if (entries > (std::int64_t{1} << 28)) throw ShapeError("compressor_prefill: too many entries");
  require_ptr(p.a, "a");
  require_ptr(p.g, "g");
  require_ptr(p.ape, "ape");
  require_ptr(p.norm_w, "norm_w");
  require_ptr(p.cos, "cos");
  require_ptr(p.sin, "sin");
  require_ptr(p.cache, "cache", cache_alignment(dm));
  const DebugPtrs dbg = checked_debug(dm, p.dbg_pooled, p.dbg_normed, p.dbg_roped, p.dbg_hadamard,
                                      "compressor_prefill");
  const PrefillArgs a{dm, p.a, p.g, p.ape, p.norm_w, p.eps, p.cos, p.sin, p.cache, dbg};
  if (dm.indexer())
    launch_cluster(compressor_idx_prefill_kernel, a, entries, dm.ctas(), logit_smem_bytes(dm),
                   stream);
  else
    launch_cluster(compressor_prefill_kernel, a, entries, dm.ctas(), logit_smem_bytes(dm), stream);
}

void compressor_prefill_state(const CompressorPrefillLaunch& p, float* state_kv, float* state_score,
                              CUstream_st* stream) {
  const Dims dm = checked_dims(p.dm);
  require_ptr(state_kv, "state_kv");
  require_ptr(state_score, "state_score");
  if (p.tokens > 0) {
    require_ptr(p.a, "a");
    require_ptr(p.g, "g");
    require_ptr(p.ape, "ape");
  }
  compressor_state_kernel<<<64, 256, 0, stream>>>(dm, p.tokens, p.a, p.g, p.ape, state_kv,
                                                  state_score);
  V4REF_CUDA_CHECK_LAUNCH();
}

void compressor_decode(const CompressorDecodeLaunch& p, CUstream_st* stream) {
  const Dims dm = checked_dims(p.dm);
  if (p.batch <= 0) return;
  for (const auto& [ptr, what] :
       {std::make_pair(static_cast<const void*>(p.a), "a"),
        std::make_pair(static_cast<const void*>(p.g), "g"),
        std::make_pair(static_cast<const void*>(p.ape), "ape"),
        std::make_pair(static_cast<const void*>(p.norm_w), "norm_w"),
        std::make_pair(static_cast<const void*>(p.cos), "cos"),
        std::make_pair(static_cast<const void*>(p.sin), "sin"),
        std::make_pair(static_cast<const void*>(p.state_kv), "state_kv"),
        std::make_pair(static_cast<const void*>(p.state_score), "state_score")})
    require_ptr(ptr, what);
  require_ptr(p.positions, "positions", 8);
  require_ptr(p.cache, "cache", cache_alignment(dm));
  const DebugPtrs dbg = checked_debug(dm, p.dbg_pooled, p.dbg_normed, p.dbg_roped, p.dbg_hadamard,
                                      "compressor_decode");
  const DecodeArgs a{dm,    p.positions, p.a,        p.g,           p.ape,   p.norm_w,      p.eps,
                     p.cos, p.sin,       p.state_kv, p.state_score, p.cache, p.entries_max, dbg};
  if (dm.indexer())
    launch_cluster(compressor_idx_decode_kernel, a, p.batch, dm.ctas(), logit_smem_bytes(dm),
                   stream);
  else
    launch_cluster(compressor_decode_kernel, a, p.batch, dm.ctas(), logit_smem_bytes(dm), stream);
}

// ---------------------------------------------------------------- host conveniences

namespace {

template <class T>
struct Dev {
  T* p = nullptr;
  std::size_t n = 0;
  explicit Dev(std::size_t count, const T* init = nullptr) : n(count) {
    V4REF_CUDA_CHECK(
        cudaMalloc(reinterpret_cast<void**>(&p), std::max<std::size_t>(count, 1) * sizeof(T)));
    if (init != nullptr && count > 0)
      V4REF_CUDA_CHECK(cudaMemcpy(p, init, count * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<T> get() const {
    std::vector<T> h(n);
    if (n > 0) V4REF_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

}  // namespace

CompressorHostOut compressor_prefill_host(const cmp::PrefillProblem& hp, bool with_state) {
  const Dims& dm = hp.dm;
  const std::int64_t E = hp.tokens / dm.ratio, T = hp.tokens;
  const auto cw = static_cast<std::size_t>(dm.cw());
  Dev<float> a(static_cast<std::size_t>(T) * cw, hp.a), g(static_cast<std::size_t>(T) * cw, hp.g),
      ape(static_cast<std::size_t>(dm.ratio) * cw, hp.ape),
      nw(static_cast<std::size_t>(dm.width), hp.norm_w),
      cs(static_cast<std::size_t>(std::max<std::int64_t>(E, 1)) * 32, hp.cos),
      sn(static_cast<std::size_t>(std::max<std::int64_t>(E, 1)) * 32, hp.sin);
  Dev<std::uint8_t> cache(static_cast<std::size_t>(E * dm.row_bytes()));
  const auto dbg_n = static_cast<std::size_t>(E * dm.width);
  Dev<std::uint16_t> pooled(dbg_n), normed(dbg_n), roped(dm.indexer() ? dbg_n : 0),
      hadamard(dm.indexer() ? dbg_n : 0);
  V4REF_CUDA_CHECK(cudaMemset(cache.p, 0xA5, cache.n));
  for (const Dev<std::uint16_t>* d : {&pooled, &normed, &roped, &hadamard})
    V4REF_CUDA_CHECK(cudaMemset(d->p, 0xFF, d->n * 2));
  CompressorPrefillLaunch p;
  p.dm = dm;
  p.tokens = T;
  p.a = a.p;
  p.g = g.p;
  p.ape = ape.p;
  p.norm_w = nw.p;
  p.eps = hp.eps;
  p.cos = cs.p;
  p.sin = sn.p;
  p.cache = cache.p;
  p.dbg_pooled = pooled.p;
  p.dbg_normed = normed.p;
  if (dm.indexer()) {
    p.dbg_roped = roped.p;
    p.dbg_hadamard = hadamard.p;
  }
  compressor_prefill(p);
  CompressorHostOut out;
  if (with_state) {
    Dev<float> kv(static_cast<std::size_t>(dm.state_rows()) * cw),
        sc(static_cast<std::size_t>(dm.state_rows()) * cw);
    compressor_prefill_state(p, kv.p, sc.p);
    V4REF_CUDA_CHECK(cudaDeviceSynchronize());
    out.state_kv = kv.get();
    out.state_score = sc.get();
  }
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  out.cache = cache.get();
  out.pooled = pooled.get();
  out.normed = normed.get();
  out.roped = roped.get();
  out.hadamard = hadamard.get();
  return out;
}

void compressor_decode_host(const Dims& dm, std::int64_t t0, std::int64_t steps, const float* a,
                            const float* g, const float* ape, const float* norm_w, float eps,
                            const std::vector<float>& cos, const std::vector<float>& sin,
                            cmp::DecodeState& state, std::vector<std::uint8_t>& cache) {
  const auto cw = static_cast<std::size_t>(dm.cw());
  const std::int64_t entries_max = static_cast<std::int64_t>(cache.size()) / dm.row_bytes();
  Dev<float> da(static_cast<std::size_t>(steps) * cw, a),
      dg(static_cast<std::size_t>(steps) * cw, g),
      dape(static_cast<std::size_t>(dm.ratio) * cw, ape),
      dnw(static_cast<std::size_t>(dm.width), norm_w), dcos(cos.size(), cos.data()),
      dsin(sin.size(), sin.data()), kv(state.kv.size(), state.kv.data()),
      sc(state.score.size(), state.score.data());
  Dev<std::uint8_t> dcache(cache.size(), cache.data());
  Dev<std::int64_t> pos(1);
  for (std::int64_t i = 0; i < steps; ++i) {
    const std::int64_t t = t0 + i;
    V4REF_CUDA_CHECK(cudaMemcpy(pos.p, &t, sizeof t, cudaMemcpyHostToDevice));
    CompressorDecodeLaunch p;
    p.dm = dm;
    p.batch = 1;
    p.positions = pos.p;
    p.a = da.p + i * static_cast<std::int64_t>(cw);
    p.g = dg.p + i * static_cast<std::int64_t>(cw);
    p.ape = dape.p;
    p.norm_w = dnw.p;
    p.eps = eps;
    p.cos = dcos.p;
    p.sin = dsin.p;
    p.state_kv = kv.p;
    p.state_score = sc.p;
    p.cache = dcache.p;
    p.entries_max = entries_max;
    compressor_decode(p);
  }
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  state.kv = kv.get();
  state.score = sc.get();
  cache = dcache.get();
}

}  // namespace v4ref::cuda
