// The Muon element kernels in the SIMT dialect (simt.hpp): compiled by nvcc in
// muon_ns_bf16_sm90.cu and by the host compiler in cuda/simt/muon_simt.cpp, where the SIMT
// executor runs this same source between host GEMMs of cuBLAS's documented semantics
// (docs/muon.md; per-element math muon_ns_tile.hpp; docs/simt.md).
//
// Fault injection (tests/simt/muon_simt_test.cpp): the template parameter F selects one
// control-flow defect; the device build instantiates kNone only.
#pragma once

#include <cstdint>

#include "v4ref/cuda/muon_ns_tile.hpp"
#include "v4ref/cuda/simt/simt.hpp"

namespace v4ref::cuda::muon_kernels {

using namespace v4ref::cuda::simt;  // NOLINT: the dialect is the kernels' vocabulary
using ns::MuonFault;

constexpr int kElemThreads = 256;
constexpr int kTile = 32;     // transpose tile
constexpr int kTileRows = 8;  // threads per tile column
// Dynamic shared memory of the transpose kernels: a [32][33] tile (fp32 or bf16, padded against
// bank conflicts), and of the tree combine: the 8192 partials.
constexpr std::size_t kTileSmemFloat = kTile * (kTile + 1) * sizeof(float);
constexpr std::size_t kTileSmemBf16 = kTile * (kTile + 1) * sizeof(std::uint16_t);
constexpr std::size_t kCombineSmem = ns::kNormParts * sizeof(float);

// Grid-stride index range of the element kernels.
#define V4REF_MUON_GRID_STRIDE(i, total)                                                     \
  for (std::int64_t i = block_idx().x * static_cast<std::int64_t>(block_dim().x) +          \
                        thread_idx().x;                                                     \
       i < (total); i += static_cast<std::int64_t>(grid_dim().x) * block_dim().x)

// ---------------------------------------------------------------- normalisation

// Partial p of matrix blockIdx.y: elements p, p + kNormParts, ... (precision point 0).
template <MuonFault F = MuonFault::kNone>
V4REF_SIMT_KERNEL(ns::kNormThreads) sumsq_partial_kernel(gptr<const float> u, std::int64_t count,
                                                         gptr<float> partial) {
  const int p = static_cast<int>(block_idx().x) * ns::kNormThreads + static_cast<int>(thread_idx().x);
  const gptr<const float> ub = u + static_cast<std::int64_t>(block_idx().y) * count;
  float acc = 0.0f;
  for (std::int64_t i = p; i < count; i += ns::kNormParts) acc = ns::sumsq_accumulate(acc, ld(ub + i));
  st(partial + static_cast<std::int64_t>(block_idx().y) * ns::kNormParts + p, acc);
}

// The pairwise tree of ns::tree_combine, one level per barrier (same additions, same order).
template <MuonFault F = MuonFault::kNone>
V4REF_SIMT_KERNEL(1024) sumsq_combine_kernel(gptr<const float> partial, float eps,
                                             gptr<float> sumsq, gptr<float> denom) {
  const sptr<float> p = dynamic_smem<float>();
  const gptr<const float> pb = partial + static_cast<std::int64_t>(block_idx().x) * ns::kNormParts;
  const int tid = static_cast<int>(thread_idx().x), threads = static_cast<int>(block_dim().x);
  for (int t = tid; t < ns::kNormParts; t += threads) st(p + t, ld(pb + t));
  sync_threads();
  for (int s = ns::kNormParts / 2; s > 0; s /= 2) {
    for (int t = tid; t < s; t += threads) st(p + t, ld(p + t) + ld(p + t + s));
    if (F != MuonFault::kTreeLevelNoBarrier) sync_threads();
  }
  if (F == MuonFault::kTreeLevelNoBarrier) sync_threads();
  if (tid == 0) {
    const float total = ld(p);
    st(sumsq + block_idx().x, total);
    st(denom + block_idx().x, ns::norm_denominator(total, eps));
  }
}

// Wide or square input: X = bf16(U / denom) elementwise (precision point 1).
template <MuonFault F = MuonFault::kNone>
V4REF_SIMT_KERNEL(kElemThreads) normalize_kernel(gptr<const float> u, std::int64_t per_matrix,
                                                 std::int64_t total, gptr<const float> denom,
                                                 gptr<std::uint16_t> x) {
  V4REF_MUON_GRID_STRIDE(i, total)
  st(x + i, ns::normalize_store(ld(u + i), ld(denom + i / per_matrix)));
}

// Tall input U [rows, cols]: X [cols, rows] = bf16(Uᵀ / denom), through a shared tile.
template <MuonFault F = MuonFault::kNone>
V4REF_SIMT_KERNEL(kTile* kTileRows) normalize_transpose_kernel(gptr<const float> u, std::int64_t rows,
                                                               std::int64_t cols, gptr<const float> denom,
                                                               gptr<std::uint16_t> x) {
  const sptr<float> tile = dynamic_smem<float>();  // [32][33]
  const std::int64_t b = block_idx().z, r0 = static_cast<std::int64_t>(block_idx().y) * kTile,
                     c0 = static_cast<std::int64_t>(block_idx().x) * kTile;
  const unsigned tx = thread_idx().x, ty = thread_idx().y;
  const gptr<const float> ub = u + b * rows * cols;
  const gptr<std::uint16_t> xb = x + b * rows * cols;
  const int pitch = F == MuonFault::kTileUnpadded ? kTile : kTile + 1;
  for (int k = 0; k < kTile; k += kTileRows) {
    const std::int64_t r = r0 + ty + k, c = c0 + tx;
    if (r < rows && c < cols) st(tile + (ty + k) * pitch + tx, ld(ub + r * cols + c));
  }
  sync_threads();
  const float d = ld(denom + b);
  for (int k = 0; k < kTile; k += kTileRows) {
    const std::int64_t c = c0 + ty + k, r = r0 + tx;
    const std::int64_t rmax = F == MuonFault::kTransposeTailGuard ? rows + 1 : rows;
    if (r < rmax && c < cols)
      st(xb + c * rows + r, ns::normalize_store(ld(tile + tx * pitch + ty + k), d));
  }
}

// X [cols, rows] -> out [rows, cols] (tall inputs only).
template <MuonFault F = MuonFault::kNone>
V4REF_SIMT_KERNEL(kTile* kTileRows) transpose_out_kernel(gptr<const std::uint16_t> x, std::int64_t rows,
                                                         std::int64_t cols, gptr<std::uint16_t> out) {
  const sptr<std::uint16_t> tile = dynamic_smem<std::uint16_t>();  // [32][33]
  const std::int64_t b = block_idx().z, c0 = static_cast<std::int64_t>(block_idx().y) * kTile,
                     r0 = static_cast<std::int64_t>(block_idx().x) * kTile;
  const unsigned tx = thread_idx().x, ty = thread_idx().y;
  const gptr<const std::uint16_t> xb = x + b * rows * cols;
  const gptr<std::uint16_t> ob = out + b * rows * cols;
  for (int k = 0; k < kTile; k += kTileRows) {
    const std::int64_t c = c0 + ty + k, r = r0 + tx;
    if (r < rows && c < cols) st(tile + (ty + k) * (kTile + 1) + tx, ld(xb + c * rows + r));
  }
  if (F != MuonFault::kTransposeNoBarrier) sync_threads();
  for (int k = 0; k < kTile; k += kTileRows) {
    const std::int64_t r = r0 + ty + k, c = c0 + tx;
    if (r < rows && c < cols) st(ob + r * cols + c, ld(tile + tx * (kTile + 1) + ty + k));
  }
}

// ---------------------------------------------------------------- iteration epilogues

template <MuonFault F = MuonFault::kNone>
V4REF_SIMT_KERNEL(kElemThreads) gram_epilogue_kernel(gptr<const float> af, std::int64_t total,
                                                     gptr<std::uint16_t> a) {
  V4REF_MUON_GRID_STRIDE(i, total)
  st(a + i, ns::gram_store(ld(af + i)));
}

template <MuonFault F = MuonFault::kNone>
V4REF_SIMT_KERNEL(kElemThreads) poly_epilogue_kernel(gptr<const std::uint16_t> a, gptr<const float> a2f,
                                                     std::int64_t total, float kb, float kc,
                                                     gptr<std::uint16_t> b) {
  V4REF_MUON_GRID_STRIDE(i, total)
  st(b + i, ns::poly_store(ns::bf16_load(ld(a + i)), ld(a2f + i), kb, kc));
}

template <MuonFault F = MuonFault::kNone>
V4REF_SIMT_KERNEL(kElemThreads) update_epilogue_kernel(gptr<std::uint16_t> x, gptr<const float> yf,
                                                       std::int64_t total, float ka) {
  const std::int64_t bound = F == MuonFault::kEpilogueStrideBound ? total + 1 : total;
  V4REF_MUON_GRID_STRIDE(i, bound)
  st(x + i, ns::update_store(ns::bf16_load(ld(x + i)), ld(yf + i), ka));
}

// ---------------------------------------------------------------- Muon step element kernels

template <MuonFault F = MuonFault::kNone>
V4REF_SIMT_KERNEL(kElemThreads) momentum_kernel(gptr<float> m, gptr<const float> g, gptr<float> u,
                                                std::int64_t total, ns::StepScalars s) {
  V4REF_MUON_GRID_STRIDE(i, total) {
    const float gi = ld(g + i);
    const float mn = ns::momentum_update(ld(m + i), gi, s.mu);
    st(m + i, mn);
    st(u + i, ns::ns_input(gi, mn, s));
  }
}

template <MuonFault F = MuonFault::kNone>
V4REF_SIMT_KERNEL(kElemThreads) apply_kernel(gptr<float> w, gptr<const std::uint16_t> o,
                                             std::int64_t total, ns::StepScalars s) {
  V4REF_MUON_GRID_STRIDE(i, total)
  st(w + i, ns::apply_update(ld(w + i), ns::bf16_load(ld(o + i)), s));
}

#undef V4REF_MUON_GRID_STRIDE

}  // namespace v4ref::cuda::muon_kernels
