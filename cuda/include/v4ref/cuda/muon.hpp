// Batched BF16 Newton–Schulz on tensor cores and the Muon step on fp32 master weights
// (sm_90a; docs/muon.md). Implementation: cuda/src/muon_ns_bf16_sm90.cu.
//
// Per iteration and per batch of same-shape matrices X [n, m] (n <= m; tall inputs are
// transposed on the way in and out): three cuBLAS strided-batched GEMMs with bf16 operands,
// fp32 accumulation and fp32 output, each followed by an element kernel that applies the
// precision point below (the element math lives in muon_ns_tile.hpp, shared with the CPU
// executor). No atomics; the cuBLAS handle has no workspace, so no split-K reductions.
//
// Usable without a CUDA toolkit (the cpu test includes it by path): no CUDA headers here.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "muon_ns_tile.hpp"  // sibling include, so the header also resolves by path

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace v4ref::cuda {

// Where the Newton–Schulz path rounds (verification.md §2: the reference builds Rq from this
// list). Anything not listed stays fp32.
enum class NsPrecisionPoint {
  kNormSumsqFp32,    // ||U||_F² in fp32: ns::kNormParts fma partials, fixed pairwise tree; + eps, IEEE div
  kInputStoreBf16,   // X0 = bf16(U / (||U||_F + eps))
  kGramStoreBf16,    // A = X·Xᵀ: fp32 accumulation, stored bf16
  kPolyStoreBf16,    // B = b·A + c·A²: A² fp32 accumulation, combined in fp32, stored bf16
  kUpdateStoreBf16,  // X = a·X + B·X: B·X fp32 accumulation, combined in fp32, stored bf16
};

inline constexpr NsPrecisionPoint kMuonNsPrecisionPoints[] = {
    NsPrecisionPoint::kNormSumsqFp32, NsPrecisionPoint::kInputStoreBf16,
    NsPrecisionPoint::kGramStoreBf16, NsPrecisionPoint::kPolyStoreBf16,
    NsPrecisionPoint::kUpdateStoreBf16};

constexpr bool muon_ns_rounds_at(NsPrecisionPoint p) {
  for (NsPrecisionPoint q : kMuonNsPrecisionPoints)
    if (q == p) return true;
  return false;
}

// DeepSeek-V4's hybrid schedule in the kernel's fp32 coefficients (docs/muon.md §1).
inline std::vector<ns::StageF> v4_ns_stages() {
  return {{3.4445f, -4.7750f, 2.0315f, 8}, {2.0f, -1.5f, 0.5f, 2}};
}
inline std::vector<ns::StageF> keller_jordan_ns_stages(int iterations) {
  return {{3.4445f, -4.7750f, 2.0315f, iterations}};
}

// A batch of same-shape matrices, all on the device.
struct MuonNsBatch {
  std::int64_t batch = 0, rows = 0, cols = 0;
  const float* u = nullptr;      // [batch, rows, cols] fp32 input
  std::uint16_t* out = nullptr;  // [batch, rows, cols] bf16 codes, written
  float eps = 1e-7f;
};

struct MuonStepBatch {
  std::int64_t batch = 0, rows = 0, cols = 0;
  float* w = nullptr;        // [batch, rows, cols] fp32 masters, updated
  float* m = nullptr;        // [batch, rows, cols] fp32 momentum, updated
  const float* g = nullptr;  // [batch, rows, cols] fp32 gradient
  std::uint16_t* o = nullptr;  // optional [batch, rows, cols] bf16: receives O
  ns::StepScalars scalars;
  float eps = 1e-7f;
};

// Owns the cuBLAS handle and the device workspace (grown on demand). Not thread-safe.
class MuonNs {
 public:
  MuonNs();
  ~MuonNs();
  MuonNs(const MuonNs&) = delete;
  MuonNs& operator=(const MuonNs&) = delete;

  // The batched path: strided-batched GEMMs over the whole batch.
  void newton_schulz(const MuonNsBatch& p, const std::vector<ns::StageF>& stages,
                     CUstream_st* stream = nullptr);
  // Baseline: a plain loop over the matrices, three cublasGemmEx calls per iteration with
  // bf16 output and cuBLAS's alpha/beta epilogue (the textbook PyTorch formulation).
  void newton_schulz_per_matrix_cublas(const MuonNsBatch& p, const std::vector<ns::StageF>& stages,
                                       CUstream_st* stream = nullptr);
  // Momentum, Nesterov input, batched Newton–Schulz, decay and update.
  void step(const MuonStepBatch& p, const std::vector<ns::StageF>& stages,
            CUstream_st* stream = nullptr);
  // Sum of squares of each matrix of p.u as the batched path forms it (debug/testing).
  std::vector<float> sumsq(const MuonNsBatch& p, CUstream_st* stream = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Host conveniences for tests (allocate, copy, run, synchronize, copy back).
enum class NsPath { kBatched, kOneByOne, kPerMatrixCublas };
std::vector<std::uint16_t> newton_schulz_bf16_host(const std::vector<float>& u, std::int64_t batch,
                                                   std::int64_t rows, std::int64_t cols,
                                                   const std::vector<ns::StageF>& stages,
                                                   float eps, NsPath path = NsPath::kBatched);
// w and m updated in place; returns O of every matrix (bf16 codes).
std::vector<std::uint16_t> muon_step_host(std::vector<float>& w, std::vector<float>& m,
                                          const std::vector<float>& g, std::int64_t batch,
                                          std::int64_t rows, std::int64_t cols,
                                          const ns::StepScalars& s,
                                          const std::vector<ns::StageF>& stages, float eps);
std::vector<float> sumsq_host(const std::vector<float>& u, std::int64_t batch, std::int64_t rows,
                              std::int64_t cols);

// FLOPs of one NS iteration for X [n, m], n <= m (kernel-targets.md §4.8, conventional count):
// 2·n²·m (A = X·Xᵀ) + 2·n³ (A²) + 2·n²·m (B·X).
constexpr double ns_iteration_flops(std::int64_t n, std::int64_t m) {
  const double dn = static_cast<double>(n), dm = static_cast<double>(m);
  return 4.0 * dn * dn * dm + 2.0 * dn * dn * dn;
}

}  // namespace v4ref::cuda
