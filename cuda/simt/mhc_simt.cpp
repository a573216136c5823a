// The mHC kernels in the SIMT executor (mhc_simt.hpp): mhc_kernels.cuh compiled by the host
// compiler, launched with the geometry mhc_bf16_sm90.cu uses on the device.
#include "v4ref/cuda/mhc_simt.hpp"

#include <algorithm>
#include <bit>
#include <string>

#include "../src/mhc_kernels.cuh"
#include "v4ref/cuda/mhc.hpp"

namespace v4ref::cuda {
namespace {

using mhc::MhcFault;
using mhc_kernels::PostArgs;
using mhc_kernels::PreArgs;
using simt::Buffer;
using simt::gptr;

void require_tokens(const mhc::Problem& p, const char* where) {
  if (p.tokens < 0 || p.tokens > (std::int64_t{1} << 31))
    throw ShapeError(std::string(where) + ": tokens must be in [0, 2^31], got " +
                     std::to_string(p.tokens));
}

template <bool kPost, MhcFault F>
void pre_body(const PreArgs& a) {
  mhc_kernels::mhc_pre_kernel<kPost, F>(a);
}

// The kernel instantiation of (fused, fault): one body per fault, the faults the tests inject.
template <MhcFault F>
std::function<void()> pre_kernel(bool fused, const PreArgs& a) {
  if (fused) return [a] { pre_body<true, F>(a); };
  return [a] { pre_body<false, F>(a); };
}

std::function<void()> pre_kernel_for(MhcFault f, bool fused, const PreArgs& a) {
  switch (f) {
    case MhcFault::kNone: return pre_kernel<MhcFault::kNone>(fused, a);
    case MhcFault::kStagingOffsetByOne: return pre_kernel<MhcFault::kStagingOffsetByOne>(fused, a);
    case MhcFault::kNoWarpSyncAfterStage: return pre_kernel<MhcFault::kNoWarpSyncAfterStage>(fused, a);
    case MhcFault::kDsmemRankWrong: return pre_kernel<MhcFault::kDsmemRankWrong>(fused, a);
    case MhcFault::kMissingClusterWait: return pre_kernel<MhcFault::kMissingClusterWait>(fused, a);
    case MhcFault::kPartialsNoBarrier: return pre_kernel<MhcFault::kPartialsNoBarrier>(fused, a);
    case MhcFault::kTailGuardMissing: return pre_kernel<MhcFault::kTailGuardMissing>(fused, a);
    case MhcFault::kCollapseTailOffByOne: return pre_kernel<MhcFault::kCollapseTailOffByOne>(fused, a);
    case MhcFault::kPreDoubleBufferShared: return pre_kernel<MhcFault::kPreDoubleBufferShared>(fused, a);
    case MhcFault::kLastClusterWaitMissing: return pre_kernel<MhcFault::kLastClusterWaitMissing>(fused, a);
    case MhcFault::kCoefWarpSyncMissing: return pre_kernel<MhcFault::kCoefWarpSyncMissing>(fused, a);
    default: return pre_kernel<MhcFault::kNone>(fused, a);  // faults of the other kernels
  }
}

}  // namespace

MhcSimtOutputs mhc_pre_simt(const mhc::Problem& p, const MhcSimtOptions& opt) {
  require_tokens(p, "mhc_pre_simt");
  if (p.x == nullptr || p.fn == nullptr || p.base == nullptr)
    throw Error("mhc_pre_simt: x, fn and base are required");
  if (p.f != nullptr && p.coef_in == nullptr)
    throw Error("mhc_pre_simt: the fused mode needs coef_in");
  const bool fused = p.f != nullptr;
  const mhc::Tiling t = mhc::make_tiling(p.d, opt.cluster);
  const auto T = static_cast<std::size_t>(p.tokens), d = static_cast<std::size_t>(p.d);
  const std::int64_t batches = (p.tokens + mhc::kBatch - 1) / mhc::kBatch;
  // mhc_plan's rule: never more clusters than batches (a cluster without a batch would run the
  // stream warps' final cluster wait without an arrive).
  const int clusters = static_cast<int>(std::max<std::int64_t>(
      1, std::min<std::int64_t>(batches, opt.clusters > 0 ? opt.clusters : 4)));
  const std::size_t n_fn = static_cast<std::size_t>(mhc::kMix) * 4 * d;
  Buffer<std::uint16_t> x("x", p.x, T * 4 * d);
  Buffer<std::uint16_t> f("f", fused ? p.f : nullptr, fused ? T * d : 0);
  Buffer<float> coef_in("coef_in", fused ? p.coef_in : nullptr, fused ? T * mhc::kMix : 0);
  Buffer<float> fn("fn", p.fn, n_fn), fn_packed("fn_packed", n_fn, 0.0f),
      base("base", p.base, mhc::kMix);
  const float poison_f = std::bit_cast<float>(opt.poison_f32);
  Buffer<std::uint16_t> x_out("x_out", fused ? T * 4 * d : 0, opt.poison_u16),
      u("u", T * d, opt.poison_u16);
  Buffer<float> coef("coef", T * mhc::kMix, poison_f), mu("mu", T * mhc::kMix, poison_f);

  MhcSimtOutputs out;
  // mhc_pack_fn: the device launch's geometry (256 threads, blocks to cover, at most 4096)
  simt::LaunchConfig pc;
  pc.kernel = "mhc_pack_fn_kernel";
  pc.grid = {static_cast<unsigned>(std::min<std::size_t>((n_fn + 255) / 256, 4096)), 1, 1};
  pc.block = {256, 1, 1};
  pc.compulsory_bytes = 2.0 * 4.0 * static_cast<double>(n_fn);
  const gptr<const float> fn_in = fn.cptr();
  const gptr<float> fn_out = fn_packed.ptr();
  const std::int64_t dd = p.d;
  if (opt.fault == MhcFault::kPackFnIndexSwap)
    out.pack = simt::launch(pc, [=] { mhc_kernels::mhc_pack_fn_kernel<MhcFault::kPackFnIndexSwap>(fn_in, fn_out, dd); }, opt.run);
  else
    out.pack = simt::launch(pc, [=] { mhc_kernels::mhc_pack_fn_kernel(fn_in, fn_out, dd); }, opt.run);

  PreArgs a{};
  a.t = t;
  a.tokens = p.tokens;
  a.batches = batches;
  a.x = x.cptr();
  a.f = fused ? f.cptr() : gptr<const std::uint16_t>();
  a.coef_in = fused ? coef_in.cptr() : gptr<const float>();
  a.fn = fn_packed.cptr();
  a.base = base.cptr();
  a.s = p.s;
  a.x_out = fused ? x_out.ptr() : gptr<std::uint16_t>();
  a.u = u.ptr();
  a.coef = coef.ptr();
  a.mu = mu.ptr();
  simt::LaunchConfig c;
  c.kernel = fused ? "mhc_pre_kernel<fused>" : "mhc_pre_kernel<pre>";
  c.grid = {static_cast<unsigned>(clusters * t.cluster), 1, 1};
  c.block = {static_cast<unsigned>((t.warps + 1) * 32), 1, 1};
  c.cluster = {static_cast<unsigned>(t.cluster), 1, 1};
  c.smem_bytes = static_cast<std::size_t>(mhc_kernels::SmemLayout(t).total) * sizeof(float);
  c.compulsory_bytes = fused ? mhc_fused_bytes(p.tokens, p.d) : mhc_pre_bytes(p.tokens, p.d);
  if (p.tokens > 0) out.pre = simt::launch(c, pre_kernel_for(opt.fault, fused, a), opt.run);
  if (fused) out.x_out = x_out.read();
  out.u = u.read();
  out.coef = coef.read();
  out.mu = mu.read();
  out.guards_intact = x_out.guards_intact() && u.guards_intact() && coef.guards_intact() &&
                      mu.guards_intact() && fn_packed.guards_intact();
  return out;
}

std::vector<std::uint16_t> mhc_post_simt(const mhc::Problem& p, int blocks,
                                         const MhcSimtOptions& opt, simt::LaunchReport* report) {
  require_tokens(p, "mhc_post_simt");
  if (p.x == nullptr || p.f == nullptr || p.coef_in == nullptr)
    throw Error("mhc_post_simt: x, f and coef_in are required");
  if (p.d <= 0 || p.d % mhc::kChunk != 0)
    throw ShapeError("mhc_post_simt: d must be a positive multiple of 8, got " + std::to_string(p.d));
  const auto T = static_cast<std::size_t>(p.tokens), d = static_cast<std::size_t>(p.d);
  Buffer<std::uint16_t> x("x", p.x, T * 4 * d), f("f", p.f, T * d);
  Buffer<float> coef_in("coef_in", p.coef_in, T * mhc::kMix);
  Buffer<std::uint16_t> x_out("x_out", T * 4 * d, opt.poison_u16);
  const std::int64_t items = p.tokens * (p.d / mhc::kChunk);
  if (blocks <= 0)
    blocks = static_cast<int>(std::min<std::int64_t>((items + mhc_kernels::kPostThreads - 1) /
                                                         mhc_kernels::kPostThreads, 8));
  simt::LaunchConfig c;
  c.kernel = "mhc_post_kernel";
  c.grid = {static_cast<unsigned>(std::max(blocks, 1)), 1, 1};
  c.block = {mhc_kernels::kPostThreads, 1, 1};
  c.compulsory_bytes = mhc_post_bytes(p.tokens, p.d);
  const PostArgs a{p.tokens, p.d, x.cptr(), f.cptr(), coef_in.cptr(), x_out.ptr()};
  simt::LaunchReport r;
  if (items > 0) {
    if (opt.fault == MhcFault::kPostGridStrideBound)
      r = simt::launch(c, [a] { mhc_kernels::mhc_post_kernel<MhcFault::kPostGridStrideBound>(a); }, opt.run);
    else
      r = simt::launch(c, [a] { mhc_kernels::mhc_post_kernel(a); }, opt.run);
  }
  if (!x_out.guards_intact()) throw Error("mhc_post_simt: a guard around x_out was overwritten");
  if (report != nullptr) *report = std::move(r);
  return x_out.read();
}

}  // namespace v4ref::cuda
