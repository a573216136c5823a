// CSA and HCA attention in the SIMT executor (attention_simt.hpp), launched as
// attention_fp8_sm90.cu launches it on the device.
#include "v4ref/cuda/attention_simt.hpp"

#include <algorithm>
#include <functional>
#include <string>

#include "../src/attention_kernels.cuh"

namespace v4ref::cuda {
namespace {

using attention_kernels::AttnFault;
using attn::Kind;

template <int D, Kind K, AttnFault F>
std::function<void()> make(const attention_kernels::AttentionArgs& a, std::int32_t heads) {
  return [a, heads] { attention_kernels::attention_kernel<D, K, F>(a, heads); };
}

template <int D, Kind K>
std::function<void()> by_fault(int fault, const attention_kernels::AttentionArgs& a, std::int32_t heads) {
  switch (static_cast<AttnFault>(fault)) {
    case AttnFault::kNone: return make<D, K, AttnFault::kNone>(a, heads);
    case AttnFault::kSinkDropped: return make<D, K, AttnFault::kSinkDropped>(a, heads);
    case AttnFault::kWindowLong: return make<D, K, AttnFault::kWindowLong>(a, heads);
    case AttnFault::kWindowShort: return make<D, K, AttnFault::kWindowShort>(a, heads);
    case AttnFault::kPaddingAsFirst: return make<D, K, AttnFault::kPaddingAsFirst>(a, heads);
    case AttnFault::kPaddingAsLast: return make<D, K, AttnFault::kPaddingAsLast>(a, heads);
    case AttnFault::kRopeDroppedFromV: return make<D, K, AttnFault::kRopeDroppedFromV>(a, heads);
    case AttnFault::kScaleBlockShift: return make<D, K, AttnFault::kScaleBlockShift>(a, heads);
    case AttnFault::kLseBase2: return make<D, K, AttnFault::kLseBase2>(a, heads);
    case AttnFault::kLastTileSkipped: return make<D, K, AttnFault::kLastTileSkipped>(a, heads);
    case AttnFault::kHeadBlock: return make<D, K, AttnFault::kHeadBlock>(a, heads);
    case AttnFault::kNoProxyFence: return make<D, K, AttnFault::kNoProxyFence>(a, heads);
  }
  throw Error("attention_simt: unknown fault " + std::to_string(fault));
}

std::function<void()> kernel_for(const attn::AttentionProblem& p, int fault, const attention_kernels::AttentionArgs& a) {
  const auto h = static_cast<std::int32_t>(p.heads);
  if (p.head_dim == 512)
    return p.kind == Kind::kCsa ? by_fault<512, Kind::kCsa>(fault, a, h) : by_fault<512, Kind::kHca>(fault, a, h);
  return p.kind == Kind::kCsa ? by_fault<128, Kind::kCsa>(fault, a, h) : by_fault<128, Kind::kHca>(fault, a, h);
}

}  // namespace

void attention_simt(const attn::AttentionProblem& p, std::uint16_t* out, float* lse, const AttentionSimtOptions& opt,
                    simt::LaunchReport* report) {
  attn::check_problem(p);
  attn::check_stored_values(p);
  const auto R = static_cast<std::size_t>(p.rows), H = static_cast<std::size_t>(p.heads),
             D = static_cast<std::size_t>(p.head_dim), B = static_cast<std::size_t>(p.requests);
  const std::size_t rb = static_cast<std::size_t>(attn::row_bytes(p.head_dim));
  simt::Buffer<std::uint16_t> q("q", p.q, R * H * D);
  simt::Buffer<float> sink("sink", p.sink, H);
  simt::Buffer<std::int32_t> pos("pos", p.pos, R), req("request", p.request, R);
  simt::Buffer<std::uint8_t> wcache("window_cache", p.window_cache, static_cast<std::size_t>(p.window_num_pages) * attn::kPageRows * rb);
  simt::Buffer<std::int32_t> wtable("window_table", p.window_table, B * static_cast<std::size_t>(p.window_pages));
  const bool has_cmp = p.cmp_cache != nullptr && p.cmp_table != nullptr;
  simt::Buffer<std::uint8_t> ccache("cmp_cache", has_cmp ? p.cmp_cache : nullptr,
                                    has_cmp ? static_cast<std::size_t>(p.cmp_num_pages) * attn::kPageRows * rb : 0);
  simt::Buffer<std::int32_t> ctable("cmp_table", has_cmp ? p.cmp_table : nullptr, has_cmp ? B * static_cast<std::size_t>(p.cmp_pages) : 0);
  const bool csa = p.kind == Kind::kCsa;
  simt::Buffer<std::int32_t> sel("selected", csa ? p.selected : nullptr, csa ? R * static_cast<std::size_t>(p.top_k) : 0);
  simt::Buffer<std::uint16_t> o("out", out, R * H * D);
  simt::Buffer<float> l("lse", lse, R * H);
  const attention_kernels::AttentionArgs a{q.cptr(),     sink.cptr(),  pos.cptr(),    req.cptr(),
                                           wcache.cptr(), wtable.cptr(), p.window_pages, ccache.cptr(),
                                           ctable.cptr(), p.cmp_pages,   sel.cptr(),     p.top_k,
                                           o.ptr(),       l.ptr()};
  simt::LaunchConfig c;
  c.kernel = std::string("attention_kernel<") + attn::kind_name(p.kind) + ", D=" + std::to_string(p.head_dim) +
             ", H=" + std::to_string(p.heads) + ">";
  c.grid = {static_cast<unsigned>(p.rows), static_cast<unsigned>(attn::head_blocks(p.heads)), 1};
  c.block = {attention_kernels::kThreads, 1, 1};
  c.smem_bytes = p.head_dim == 512 ? attention_kernels::attention_smem_bytes<512> : attention_kernels::attention_smem_bytes<128>;
  c.compulsory_bytes = attn::compulsory_bytes(p);
  simt::LaunchReport r = simt::launch(c, kernel_for(p, opt.fault, a), opt.run);
  if (!o.guards_intact() || !l.guards_intact()) throw Error("attention_simt: a guard of the outputs was written");
  const std::vector<std::uint16_t> ov = o.read();
  const std::vector<float> lv = l.read();
  std::copy(ov.begin(), ov.end(), out);
  std::copy(lv.begin(), lv.end(), lse);
  if (report != nullptr) *report = std::move(r);
}

}  // namespace v4ref::cuda
