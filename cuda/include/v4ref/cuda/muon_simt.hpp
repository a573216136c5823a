// The Muon element kernels (cuda/src/muon_kernels.cuh) run from their own source in the SIMT
// executor, with the GEMMs between them done on the host by the documented semantics of the
// cuBLAS calls of muon_ns_bf16_sm90.cu (bf16 inputs, fp32 accumulation in ascending k, no split-K:
// the handle has no workspace). Host compiler (library v4ref_kernels_simt; docs/simt.md).
#pragma once

#include <cstdint>
#include <vector>

#include "v4ref/cuda/muon_ns_tile.hpp"
#include "v4ref/cuda/simt/executor.hpp"

namespace v4ref::cuda {

struct MuonSimtOptions {
  simt::RunOptions run;
  ns::MuonFault fault = ns::MuonFault::kNone;  // tests only
  // Blocks of the grid-stride element kernels (the device uses ceil(total/256), at most 65536;
  // the kernels are grid-stride, so fewer blocks cover the same elements).
  int elem_blocks = 4;
  std::vector<simt::LaunchReport>* reports = nullptr;  // every launch's report, when set
};

// ||U||_F² of each of `batch` matrices of `count` floats (sumsq_partial + sumsq_combine).
std::vector<float> muon_sumsq_simt(const float* u, std::int64_t batch, std::int64_t count,
                                   float eps, const MuonSimtOptions& opt = {});

// Newton–Schulz of one row-major [rows, cols] fp32 matrix as MuonNs::newton_schulz runs it;
// returns the bf16 codes [rows, cols].
std::vector<std::uint16_t> muon_newton_schulz_simt(const float* u, std::int64_t rows,
                                                   std::int64_t cols,
                                                   const std::vector<ns::StageF>& stages, float eps,
                                                   const MuonSimtOptions& opt = {});

// One Muon step on fp32 masters w and momentum m (in place), gradient g, as MuonNs::step;
// returns O (bf16 codes).
std::vector<std::uint16_t> muon_step_simt(float* w, float* m, const float* g, std::int64_t rows,
                                          std::int64_t cols, const ns::StepScalars& s,
                                          const std::vector<ns::StageF>& stages, float eps,
                                          const MuonSimtOptions& opt = {});

}  // namespace v4ref::cuda
