// CSA and HCA attention (cuda/src/attention_kernels.cuh) from its own source in the SIMT
// executor, on host arrays (library v4ref_kernels_simt; docs/cuda-attention.md, docs/simt.md).
#pragma once

#include <cstdint>

#include "v4ref/cuda/attention_tile.hpp"
#include "v4ref/cuda/simt/executor.hpp"

namespace v4ref::cuda {

struct AttentionSimtOptions {
  simt::RunOptions run;
  int fault = 0;  // attention_kernels::AttnFault, tests only
};

// Runs attention_kernel on problem p: out [R, H, D] bf16 bits and lse [R, H] are written (their
// prior contents are the poison the kernel must overwrite). ShapeError from attn::check_problem,
// NumericError from attn::check_stored_values; Error if a guard of an output was written.
void attention_simt(const attn::AttentionProblem& p, std::uint16_t* out, float* lse,
                    const AttentionSimtOptions& opt = {}, simt::LaunchReport* report = nullptr);

}  // namespace v4ref::cuda
