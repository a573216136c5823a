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

// Kernel makers: Maker::of<KF, H, F>() returns the launch closure.
struct LogitsMaker {
  indexer_kernels::LogitsArgs a;
  template <KeyFormat KF, int H, LogitsFault F>
  std::function<void()> of() const {
    const indexer_kernels::LogitsArgs x = a;
    return [x] { indexer_kernels::index_logits_kernel<KF, H, F>(x); };
  }
};
struct PartialMaker {
  indexer_kernels::LogitsArgs a;
  indexer_kernels::TopkArgs tk;
  template <KeyFormat KF, int H, LogitsFault F>
  std::function<void()> of() const {
    const indexer_kernels::LogitsArgs x = a;
    const indexer_kernels::TopkArgs y = tk;
    return [x, y] { indexer_kernels::index_topk_partial_kernel<KF, H, F>(x, y); };
  }
};

template <KeyFormat KF, int H, class M>
std::function<void()> by_fault(int fault, const M& m) {
  switch (static_cast<LogitsFault>(fault)) {
    case LogitsFault::kNone: return m.template of<KF, H, LogitsFault::kNone>();
    case LogitsFault::kVisibleOffByOne: return m.template of<KF, H, LogitsFault::kVisibleOffByOne>();
    case LogitsFault::kNibbleOrder: return m.template of<KF, H, LogitsFault::kNibbleOrder>();
    case LogitsFault::kScaleRowMisread: return m.template of<KF, H, LogitsFault::kScaleRowMisread>();
    case LogitsFault::kReluMissing: return m.template of<KF, H, LogitsFault::kReluMissing>();
    case LogitsFault::kReluAfterHeadSum: return m.template of<KF, H, LogitsFault::kReluAfterHeadSum>();
    case LogitsFault::kHeadWeightIndex: return m.template of<KF, H, LogitsFault::kHeadWeightIndex>();
    case LogitsFault::kPageTableOffset: return m.template of<KF, H, LogitsFault::kPageTableOffset>();
    case LogitsFault::kNoProxyFence: return m.template of<KF, H, LogitsFault::kNoProxyFence>();
    case LogitsFault::kNoPageWait: return m.template of<KF, H, LogitsFault::kNoPageWait>();
    case LogitsFault::kSelectionOverflow: return m.template of<KF, H, LogitsFault::kSelectionOverflow>();
  }
  throw Error("indexer_simt: unknown fault " + std::to_string(fault));
}

template <class M>
std::function<void()> kernel_for(KeyFormat f, int heads, int fault, const M& m) {
  const auto by_heads = [&]<KeyFormat KF>() -> std::function<void()> {
    switch (heads) {
      case 4: return by_fault<KF, 4>(fault, m);
      case 8: return by_fault<KF, 8>(fault, m);
      case 16: return by_fault<KF, 16>(fault, m);
      case 32: return by_fault<KF, 32>(fault, m);
      default: return by_fault<KF, 64>(fault, m);
    }
  };
  return f == KeyFormat::kFp4 ? by_heads.template operator()<KeyFormat::kFp4>()
                              : by_heads.template operator()<KeyFormat::kFp8>();
}

// The problem's arrays as executor buffers.
struct Buffers {
  simt::Buffer<std::uint8_t> q, cache;
  simt::Buffer<float> w;
  simt::Buffer<std::int32_t> pos, tiles, table;
  Buffers(const idx::LogitsProblem& p, const std::vector<idx::Tile>& tl)
      : q("q", p.q, static_cast<std::size_t>(p.rows * p.heads * idx::kQ4RowBytes)),
        cache("cache", p.cache, static_cast<std::size_t>(p.num_pages) * idx::kPageRows * idx::row_bytes(p.format)),
        w("w", p.w, static_cast<std::size_t>(p.rows * p.heads)),
        pos("pos", p.pos, static_cast<std::size_t>(p.rows)),
        tiles("tiles", tile_words(tl)),
        table("page_table", p.page_table, static_cast<std::size_t>(p.requests * p.max_pages)) {}
  static std::vector<std::int32_t> tile_words(const std::vector<idx::Tile>& tl) {
    std::vector<std::int32_t> v;
    for (const idx::Tile& t : tl) v.insert(v.end(), {t.request, t.row0, t.nrows});
    return v;
  }
  indexer_kernels::LogitsArgs args(const idx::LogitsProblem& p, std::int32_t pages_per_split, simt::gptr<float> logits,
                                   std::int64_t stride) const {
    return {q.cptr(), w.cptr(), pos.cptr(), tiles.cptr(), table.cptr(), static_cast<std::int32_t>(p.max_pages),
            cache.cptr(), pages_per_split, logits, stride};
  }
};

}  // namespace

void index_logits_simt(const idx::LogitsProblem& p, float* logits, const IndexerSimtOptions& opt,
                       simt::LaunchReport* report) {
  const std::vector<idx::Tile> tiles = idx::make_tiles(p);
  idx::check_stored_values(p);
  const LogitsGrid grid = logits_grid(p, tiles, opt.pages_per_split);
  const Buffers b(p, tiles);
  simt::Buffer<float> out("logits", logits, static_cast<std::size_t>(p.rows * p.stride));
  simt::LaunchConfig c;
  c.kernel = std::string("index_logits_kernel<") + idx::format_name(p.format) + ", H=" + std::to_string(p.heads) + ">";
  c.grid = {static_cast<unsigned>(tiles.size()), static_cast<unsigned>(grid.splits), 1};
  c.block = {indexer_kernels::kThreads, 1, 1};
  c.smem_bytes = p.format == KeyFormat::kFp4 ? indexer_kernels::indexer_smem_bytes<KeyFormat::kFp4>
                                             : indexer_kernels::indexer_smem_bytes<KeyFormat::kFp8>;
  c.compulsory_bytes = logits_bytes(p);
  simt::LaunchReport r = simt::launch(
      c, kernel_for(p.format, p.heads, opt.fault, LogitsMaker{b.args(p, grid.pages_per_split, out.ptr(), p.stride)}),
      opt.run);
  if (!out.guards_intact()) throw Error("index_logits_simt: a guard of the logits was written");
  const std::vector<float> o = out.read();
  std::copy(o.begin(), o.end(), logits);
  if (report != nullptr) *report = std::move(r);
}

std::vector<std::int32_t> index_topk_decode_simt(const idx::LogitsProblem& p, std::int32_t k,
                                                 const IndexerSimtOptions& opt, simt::LaunchReport* partial,
                                                 simt::LaunchReport* merge) {
  check_topk_k(k);
  const std::vector<idx::Tile> tiles = idx::make_tiles(p, 2);
  idx::check_stored_values(p);
  const LogitsGrid grid = topk_decode_grid(p, tiles, k, opt.pages_per_split);
  const Buffers b(p, tiles);
  const auto R = static_cast<std::size_t>(p.rows), S = static_cast<std::size_t>(grid.splits);
  simt::Buffer<float> no_logits("logits (unused)", 1, 0.0f);
  simt::Buffer<std::uint64_t> part("part", R * S * static_cast<std::size_t>(k), 0xDEADBEEFDEADBEEFull);
  simt::Buffer<std::int32_t> part_n("part_n", R * S, -7);
  simt::Buffer<std::int32_t> out("out", R * static_cast<std::size_t>(k), 0x7fffffff);
  const indexer_kernels::TopkArgs tk{k, grid.splits, part.ptr(), part_n.ptr(), out.ptr()};
  simt::LaunchConfig c;
  c.kernel = std::string("index_topk_partial_kernel<") + idx::format_name(p.format) + ", H=" + std::to_string(p.heads) + ">";
  c.grid = {static_cast<unsigned>(tiles.size()), static_cast<unsigned>(grid.splits), 1};
  c.block = {indexer_kernels::kThreads, 1, 1};
  c.smem_bytes = p.format == KeyFormat::kFp4 ? indexer_kernels::partial_smem_bytes<KeyFormat::kFp4>(k)
                                             : indexer_kernels::partial_smem_bytes<KeyFormat::kFp8>(k);
  // Compulsory: the logits kernel's bytes less the logits it does not write, plus the partials.
  double written = 0;
  for (std::int64_t r = 0; r < p.rows; ++r) written += 4.0 * static_cast<double>(idx::visible_entries(p.pos[r]));
  c.compulsory_bytes = logits_bytes(p) - written + static_cast<double>(R * S) * (8.0 * k + 4.0);
  simt::LaunchReport r1 = simt::launch(
      c, kernel_for(p.format, p.heads, opt.fault, PartialMaker{b.args(p, grid.pages_per_split, no_logits.ptr(), 1), tk}),
      opt.run);
  simt::LaunchConfig m;
  m.kernel = "index_topk_merge_kernel";
  m.grid = {static_cast<unsigned>(R), 1, 1};
  m.block = {indexer_kernels::kThreads, 1, 1};
  m.smem_bytes = indexer_kernels::merge_smem_bytes(k, grid.splits);
  m.compulsory_bytes = static_cast<double>(R * S) * (8.0 * k + 4.0) + static_cast<double>(R) * 4.0 * k;
  simt::LaunchReport r2 = r1.ok() ? simt::launch(m, [tk] { indexer_kernels::index_topk_merge_kernel(tk); }, opt.run)
                                  : simt::LaunchReport{};
  if (!part.guards_intact() || !out.guards_intact()) throw Error("index_topk_decode_simt: a guard was written");
  if (partial != nullptr) *partial = std::move(r1);
  if (merge != nullptr) *merge = std::move(r2);
  return out.read();
}

}  // namespace v4ref::cuda
