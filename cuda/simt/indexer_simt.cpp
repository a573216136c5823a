// The indexer's logits kernel in the SIMT executor (indexer_simt.hpp), launched as
// indexer_fp8_sm90.cu launches it on the device.
#include "v4ref/cuda/indexer_simt.hpp"

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "../src/indexer_kernels.cuh"
#include "v4ref/cuda/indexer.hpp"

namespace v4ref::cuda {
namespace {

using indexer_kernels::LogitsFault;
using idx::KeyFormat;

template <KeyFormat KF, int H, LogitsFault F>
std::function<void()> kernel_of(const indexer_kernels::LogitsArgs& a) {
  return [a] { indexer_kernels::index_logits_kernel<KF, H, F>(a); };
}

template <KeyFormat KF, int H>
std::function<void()> by_fault(int fault, const indexer_kernels::LogitsArgs& a) {
  switch (static_cast<LogitsFault>(fault)) {
    case LogitsFault::kNone: return kernel_of<KF, H, LogitsFault::kNone>(a);
    case LogitsFault::kVisibleOffByOne: return kernel_of<KF, H, LogitsFault::kVisibleOffByOne>(a);
    case LogitsFault::kNibbleOrder: return kernel_of<KF, H, LogitsFault::kNibbleOrder>(a);
    case LogitsFault::kScaleRowMisread: return kernel_of<KF, H, LogitsFault::kScaleRowMisread>(a);
    case LogitsFault::kReluMissing: return kernel_of<KF, H, LogitsFault::kReluMissing>(a);
    case LogitsFault::kReluAfterHeadSum: return kernel_of<KF, H, LogitsFault::kReluAfterHeadSum>(a);
    case LogitsFault::kHeadWeightIndex: return kernel_of<KF, H, LogitsFault::kHeadWeightIndex>(a);
    case LogitsFault::kPageTableOffset: return kernel_of<KF, H, LogitsFault::kPageTableOffset>(a);
    case LogitsFault::kNoProxyFence: return kernel_of<KF, H, LogitsFault::kNoProxyFence>(a);
    case LogitsFault::kNoPageWait: return kernel_of<KF, H, LogitsFault::kNoPageWait>(a);
  }
  throw Error("index_logits_simt: unknown fault " + std::to_string(fault));
}

template <KeyFormat KF>
std::function<void()> by_heads(int heads, int fault, const indexer_kernels::LogitsArgs& a) {
  switch (heads) {
    case 4: return by_fault<KF, 4>(fault, a);
    case 8: return by_fault<KF, 8>(fault, a);
    case 16: return by_fault<KF, 16>(fault, a);
    case 32: return by_fault<KF, 32>(fault, a);
    default: return by_fault<KF, 64>(fault, a);
  }
}

}  // namespace

void index_logits_simt(const idx::LogitsProblem& p, float* logits, const IndexerSimtOptions& opt,
                       simt::LaunchReport* report) {
  const std::vector<idx::Tile> tiles = idx::make_tiles(p);
  const LogitsGrid grid = logits_grid(p, tiles, opt.pages_per_split);
  const int rb = idx::row_bytes(p.format);
  std::vector<std::int32_t> tile_words;
  for (const idx::Tile& t : tiles) tile_words.insert(tile_words.end(), {t.request, t.row0, t.nrows});
  const auto R = static_cast<std::size_t>(p.rows), H = static_cast<std::size_t>(p.heads);
  simt::Buffer<std::uint8_t> q("q", p.q, R * H * idx::kQ4RowBytes);
  simt::Buffer<float> w("w", p.w, R * H);
  simt::Buffer<std::int32_t> pos("pos", p.pos, R);
  simt::Buffer<std::int32_t> tl("tiles", tile_words.data(), tile_words.size());
  simt::Buffer<std::int32_t> pt("page_table", p.page_table, static_cast<std::size_t>(p.requests * p.max_pages));
  simt::Buffer<std::uint8_t> cache("cache", p.cache, static_cast<std::size_t>(p.num_pages) * idx::kPageRows * rb);
  simt::Buffer<float> out("logits", logits, R * static_cast<std::size_t>(p.stride));
  const indexer_kernels::LogitsArgs a{q.cptr(), w.cptr(), pos.cptr(), tl.cptr(), pt.cptr(),
                                      static_cast<std::int32_t>(p.max_pages), cache.cptr(),
                                      grid.pages_per_split, out.ptr(), p.stride};
  simt::LaunchConfig c;
  c.kernel = std::string("index_logits_kernel<") + idx::format_name(p.format) + ", H=" + std::to_string(p.heads) + ">";
  c.grid = {static_cast<unsigned>(tiles.size()), static_cast<unsigned>(grid.splits), 1};
  c.block = {indexer_kernels::kThreads, 1, 1};
  c.smem_bytes = p.format == KeyFormat::kFp4 ? indexer_kernels::indexer_smem_bytes<KeyFormat::kFp4>
                                             : indexer_kernels::indexer_smem_bytes<KeyFormat::kFp8>;
  c.compulsory_bytes = logits_bytes(p);
  simt::LaunchReport r = simt::launch(
      c, p.format == KeyFormat::kFp4 ? by_heads<KeyFormat::kFp4>(p.heads, opt.fault, a)
                                     : by_heads<KeyFormat::kFp8>(p.heads, opt.fault, a),
      opt.run);
  if (!out.guards_intact()) throw Error("index_logits_simt: a guard of the logits was written");
  const std::vector<float> o = out.read();
  std::copy(o.begin(), o.end(), logits);
  if (report != nullptr) *report = std::move(r);
}

}  // namespace v4ref::cuda
