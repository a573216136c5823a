// The indexer's logits kernel (cuda/src/indexer_kernels.cuh) from its own source in the SIMT
// executor, on host arrays (library v4ref_kernels_simt; docs/cuda-indexer.md, docs/simt.md).
#pragma once

#include <cstdint>
#include <vector>

#include "v4ref/cuda/indexer_tile.hpp"
#include "v4ref/cuda/simt/executor.hpp"

namespace v4ref::cuda {

struct IndexerSimtOptions {
  simt::RunOptions run;
  int pages_per_split = 0;  // pages per CTA along grid.y; 0: all of a tile's pages in one CTA
  int fault = 0;            // indexer_kernels::LogitsFault, tests only
};

// Runs index_logits_kernel on problem p: logits [R, stride] is read (its prior contents stay
// where the kernel does not write: j >= visible(r)) and written back. ShapeError naming the bad
// row, page or size (idx::make_tiles); NumericError naming a NaN-coded stored value
// (idx::check_stored_values); Error if the kernel wrote past the logits buffer.
void index_logits_simt(const idx::LogitsProblem& p, float* logits, const IndexerSimtOptions& opt = {},
                       simt::LaunchReport* report = nullptr);

// The fused decode path (index_topk_partial_kernel, then index_topk_merge_kernel): the top-k
// sets [R, k] (ascending, −1 padding) without materialised logits. `partial` and `merge` receive
// the two launches' reports.
std::vector<std::int32_t> index_topk_decode_simt(const idx::LogitsProblem& p, std::int32_t k,
                                                 const IndexerSimtOptions& opt = {},
                                                 simt::LaunchReport* partial = nullptr,
                                                 simt::LaunchReport* merge = nullptr);

}  // namespace v4ref::cuda
