// The top-k kernel in the SIMT executor (topk_simt.hpp): one block per row, as topk_fp32_sm90.cu.
#include "v4ref/cuda/topk_simt.hpp"

#include <functional>
#include <string>

#include "../src/topk_kernels.cuh"
#include "v4ref/cuda/topk.hpp"

namespace v4ref::cuda {
namespace {

using topk_kernels::TopkFault;

template <TopkFault F>
std::function<void()> kernel_of(const topk_kernels::TopkArgs& a) {
  return [a] { topk_kernels::topk_kernel<F>(a); };
}

std::function<void()> kernel_for(int fault, const topk_kernels::TopkArgs& a) {
  switch (static_cast<TopkFault>(fault)) {
    case TopkFault::kNone: return kernel_of<TopkFault::kNone>(a);
    case TopkFault::kTiesHighestIndex: return kernel_of<TopkFault::kTiesHighestIndex>(a);
    case TopkFault::kVisibleOffByOne: return kernel_of<TopkFault::kVisibleOffByOne>(a);
    case TopkFault::kNanSelected: return kernel_of<TopkFault::kNanSelected>(a);
    case TopkFault::kSignedZeroApart: return kernel_of<TopkFault::kSignedZeroApart>(a);
    case TopkFault::kHistogramNoBarrier: return kernel_of<TopkFault::kHistogramNoBarrier>(a);
    case TopkFault::kTileBoundaryLost: return kernel_of<TopkFault::kTileBoundaryLost>(a);
  }
  throw Error("topk_simt: unknown fault " + std::to_string(fault));
}

}  // namespace

std::vector<std::int32_t> topk_simt(const float* scores, std::int64_t rows, std::int64_t stride,
                                    const std::int64_t* visible, std::int64_t k,
                                    const TopkSimtOptions& opt, simt::LaunchReport* report) {
  if (rows <= 0 || stride < 0 || k < 0)
    throw ShapeError("topk_simt: rows must be > 0 and stride, k >= 0, got " + std::to_string(rows) +
                     ", " + std::to_string(stride) + ", " + std::to_string(k));
  double visible_total = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (visible[r] < 0 || visible[r] > stride)
      throw ShapeError("topk_simt: row " + std::to_string(r) + " sees " + std::to_string(visible[r]) +
                       " entries, the row has " + std::to_string(stride));
    visible_total += static_cast<double>(visible[r]);
  }
  simt::Buffer<float> s("scores", scores, static_cast<std::size_t>(rows * stride));
  simt::Buffer<std::int64_t> v("visible", visible, static_cast<std::size_t>(rows));
  simt::Buffer<std::int32_t> out("out", static_cast<std::size_t>(rows * k), 0x7fffffff);
  const topk_kernels::TopkArgs a{rows, stride, s.cptr(), v.cptr(), k, out.ptr()};
  simt::LaunchConfig c;
  c.kernel = "topk_kernel";
  c.grid = {static_cast<unsigned>(rows), 1, 1};
  c.block = {topk_kernels::kThreads, 1, 1};
  c.smem_bytes = topk_kernels::topk_smem_bytes;
  c.compulsory_bytes = topk_bytes(rows, visible_total, k);
  simt::LaunchReport r = simt::launch(c, kernel_for(opt.fault, a), opt.run);
  if (!out.guards_intact()) throw Error("topk_simt: a guard of the output was written");
  if (report != nullptr) *report = std::move(r);
  return out.read();
}

}  // namespace v4ref::cuda
