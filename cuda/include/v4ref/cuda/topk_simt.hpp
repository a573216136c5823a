// The top-k kernel (cuda/src/topk_kernels.cuh) from its own source in the SIMT executor, on host
// arrays (library v4ref_kernels_simt; docs/simt.md).
#pragma once

#include <cstdint>
#include <vector>

#include "v4ref/cuda/simt/executor.hpp"

namespace v4ref::cuda {

struct TopkSimtOptions {
  simt::RunOptions run;
  int fault = 0;  // topk_kernels::TopkFault, tests only
};

// scores [rows, stride], visible [rows]; returns [rows, k] indices (ascending, −1 padding).
std::vector<std::int32_t> topk_simt(const float* scores, std::int64_t rows, std::int64_t stride,
                                    const std::int64_t* visible, std::int64_t k,
                                    const TopkSimtOptions& opt = {},
                                    simt::LaunchReport* report = nullptr);

}  // namespace v4ref::cuda
