// The compressor kernels in the SIMT executor (compressor_simt.hpp): compressor_kernels.cuh
// compiled by the host compiler, launched with the geometry compressor_fp8_sm90.cu uses.
#include "v4ref/cuda/compressor_simt.hpp"

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "../src/compressor_kernels.cuh"
#include "v4ref/cuda/compressor.hpp"

namespace v4ref::cuda {
namespace {

using cmp::CompressorFault;
using cmp::Dims;
using compressor_kernels::DebugPtrs;
using compressor_kernels::DecodeArgs;
using compressor_kernels::PrefillArgs;
using simt::Buffer;
using simt::gptr;

std::size_t smem_bytes(const Dims& dm) {
  return static_cast<std::size_t>(compressor_kernels::smem_floats(dm)) * sizeof(float);
}

simt::LaunchConfig cluster_config(const char* name, const Dims& dm, std::int64_t clusters) {
  simt::LaunchConfig c;
  c.kernel = name;
  c.grid = {static_cast<unsigned>(clusters * dm.ctas()), 1, 1};
  c.block = {cmp::kThreads, 1, 1};
  c.cluster = {static_cast<unsigned>(dm.ctas()), 1, 1};
  c.smem_bytes = smem_bytes(dm);
  return c;
}

// The kernel of (kind, fault) for the prefill and the decode launch.
template <CompressorFault F>
std::function<void()> prefill_of(const Dims& dm, const PrefillArgs& a) {
  if (dm.indexer()) return [a] { compressor_kernels::compressor_idx_prefill_kernel<F>(a); };
  return [a] { compressor_kernels::compressor_prefill_kernel<F>(a); };
}
template <CompressorFault F>
std::function<void()> decode_of(const Dims& dm, const DecodeArgs& a) {
  if (dm.indexer()) return [a] { compressor_kernels::compressor_idx_decode_kernel<F>(a); };
  return [a] { compressor_kernels::compressor_decode_kernel<F>(a); };
}

#define V4REF_COMPRESSOR_FAULTS(X)              \
  X(kNone) X(kQ8ShuffleCrossesBlocks) X(kRowPaddingPastEnd) X(kHadamardHalfMask) \
  X(kNoBarrierAfterMax) X(kSsboxOwnRank) X(kNoExitClusterBarrier) X(kStateShiftOffByOne)

std::function<void()> prefill_kernel(CompressorFault f, const Dims& dm, const PrefillArgs& a) {
  switch (f) {
#define V4REF_CASE(name) \
  case CompressorFault::name: return prefill_of<CompressorFault::name>(dm, a);
    V4REF_COMPRESSOR_FAULTS(V4REF_CASE)
#undef V4REF_CASE
  }
  return prefill_of<CompressorFault::kNone>(dm, a);
}
std::function<void()> decode_kernel(CompressorFault f, const Dims& dm, const DecodeArgs& a) {
  switch (f) {
#define V4REF_CASE(name) \
  case CompressorFault::name: return decode_of<CompressorFault::name>(dm, a);
    V4REF_COMPRESSOR_FAULTS(V4REF_CASE)
#undef V4REF_CASE
  }
  return decode_of<CompressorFault::kNone>(dm, a);
}

// A debug buffer of `n` bf16 values, initialised from the caller's array (or absent).
struct DebugBuffers {
  std::unique_ptr<Buffer<std::uint16_t>> pooled, normed, roped, hadamard;
  DebugBuffers(const cmp::EntryDebug& dbg, std::size_t n) {
    const auto make = [n](std::uint16_t* host, const char* name) {
      return host == nullptr ? nullptr : std::make_unique<Buffer<std::uint16_t>>(name, host, n);
    };
    pooled = make(dbg.pooled, "dbg_pooled");
    normed = make(dbg.normed, "dbg_normed");
    roped = make(dbg.roped, "dbg_roped");
    hadamard = make(dbg.hadamard, "dbg_hadamard");
  }
  DebugPtrs ptrs() const {
    const auto at = [](const std::unique_ptr<Buffer<std::uint16_t>>& b) {
      return b ? b->ptr() : gptr<std::uint16_t>();
    };
    return DebugPtrs{at(pooled), at(normed), at(roped), at(hadamard)};
  }
  void copy_back(const cmp::EntryDebug& dbg) const {
    const auto back = [](const std::unique_ptr<Buffer<std::uint16_t>>& b, std::uint16_t* host) {
      if (b) {
        if (!b->guards_intact()) throw Error("compressor simt: a guard of " + b->name() + " was written");
        const std::vector<std::uint16_t> v = b->read();
        std::copy(v.begin(), v.end(), host);
      }
    };
    back(pooled, dbg.pooled);
    back(normed, dbg.normed);
    back(roped, dbg.roped);
    back(hadamard, dbg.hadamard);
  }
};

void require_debug(const Dims& dm, const cmp::EntryDebug& dbg, const char* who) {
  if (!dm.indexer() && (dbg.roped != nullptr || dbg.hadamard != nullptr))
    throw Error(std::string(who) +
                ": dbg_roped / dbg_hadamard exist for the indexer compressor only (main kind)");
}

}  // namespace

simt::LaunchReport compressor_prefill_simt(const cmp::PrefillProblem& p, std::uint8_t* cache,
                                           const cmp::EntryDebug& dbg,
                                           const CompressorSimtOptions& opt) {
  const Dims dm = cmp::make_dims(p.dm.ratio, p.dm.width, p.dm.kind);
  if (p.tokens < 0)
    throw ShapeError("compressor_prefill_simt: tokens must be >= 0, got " + std::to_string(p.tokens));
  require_debug(dm, dbg, "compressor_prefill_simt");
  const std::int64_t T = p.tokens, E = T / dm.ratio;
  if (E == 0) return {};
  const auto cw = static_cast<std::size_t>(dm.cw());
  Buffer<float> a("a", p.a, static_cast<std::size_t>(T) * cw), g("g", p.g, static_cast<std::size_t>(T) * cw),
      ape("ape", p.ape, static_cast<std::size_t>(dm.ratio) * cw), nw("norm_w", p.norm_w, static_cast<std::size_t>(dm.width)),
      cs("cos", p.cos, static_cast<std::size_t>(E) * 32), sn("sin", p.sin, static_cast<std::size_t>(E) * 32);
  Buffer<std::uint8_t> rows("cache", cache, static_cast<std::size_t>(E * dm.row_bytes()));
  const DebugBuffers d(dbg, static_cast<std::size_t>(E * dm.width));
  const PrefillArgs args{dm,         a.cptr(),  g.cptr(),  ape.cptr(), nw.cptr(), p.eps,
                         cs.cptr(),  sn.cptr(), rows.ptr(), d.ptrs()};
  simt::LaunchConfig c = cluster_config(dm.indexer() ? "compressor_idx_prefill_kernel"
                                                     : "compressor_prefill_kernel",
                                        dm, E);
  c.compulsory_bytes = compressor_prefill_bytes(dm, T);
  simt::LaunchReport r = simt::launch(c, prefill_kernel(opt.fault, dm, args), opt.run);
  if (!rows.guards_intact()) throw Error("compressor_prefill_simt: a guard of the cache was written");
  const std::vector<std::uint8_t> out = rows.read();
  std::copy(out.begin(), out.end(), cache);
  d.copy_back(dbg);
  return r;
}

cmp::DecodeState compressor_prefill_state_simt(const cmp::PrefillProblem& p,
                                               const CompressorSimtOptions& opt,
                                               simt::LaunchReport* report) {
  const Dims dm = cmp::make_dims(p.dm.ratio, p.dm.width, p.dm.kind);
  const auto cw = static_cast<std::size_t>(dm.cw());
  const auto T = static_cast<std::size_t>(std::max<std::int64_t>(p.tokens, 0));
  Buffer<float> a("a", p.a, T * cw), g("g", p.g, T * cw),
      ape("ape", p.ape, static_cast<std::size_t>(dm.ratio) * cw);
  const auto n = static_cast<std::size_t>(dm.state_rows()) * cw;
  Buffer<float> kv("state_kv", n, -1.0f), score("state_score", n, -1.0f);
  simt::LaunchConfig c;
  c.kernel = "compressor_state_kernel";
  c.grid = {4, 1, 1};  // the device uses 64 blocks of a grid-stride loop; 4 cover the tests' states
  c.block = {256, 1, 1};
  const gptr<const float> pa = a.cptr(), pg = g.cptr(), pe = ape.cptr();
  const gptr<float> pk = kv.ptr(), ps = score.ptr();
  const std::int64_t tokens = p.tokens;
  simt::LaunchReport r = simt::launch(
      c, [=] { compressor_kernels::compressor_state_kernel(dm, tokens, pa, pg, pe, pk, ps); }, opt.run);
  cmp::DecodeState st(dm);
  st.kv = kv.read();
  st.score = score.read();
  if (report != nullptr) *report = std::move(r);
  return st;
}

bool compressor_decode_step_simt(const Dims& dm_in, cmp::DecodeState& st, std::int64_t t,
                                 const float* a_t, const float* g_t, const float* ape,
                                 const float* norm_w, float eps, const cmp::RopeRow& rope,
                                 std::uint8_t* out_row, const cmp::EntryDebug& dbg,
                                 const CompressorSimtOptions& opt, simt::LaunchReport* report) {
  const Dims dm = cmp::make_dims(dm_in.ratio, dm_in.width, dm_in.kind);
  require_debug(dm, dbg, "compressor_decode_step_simt");
  if (t < 0) throw ShapeError("compressor_decode_step_simt: position must be >= 0, got " + std::to_string(t));
  const auto cw = static_cast<std::size_t>(dm.cw());
  const std::int64_t j = t / dm.ratio;
  const bool completes = (t + 1) % dm.ratio == 0;
  // The kernel addresses the rope table and the cache by entry j: rows 0..j, row j the real one.
  std::vector<float> cos_tab(static_cast<std::size_t>(j + 1) * 32, 0.0f), sin_tab(cos_tab.size(), 0.0f);
  if (completes) {
    std::copy(rope.cos, rope.cos + 32, cos_tab.begin() + j * 32);
    std::copy(rope.sin, rope.sin + 32, sin_tab.begin() + j * 32);
  }
  const std::int64_t pos = t;
  Buffer<std::int64_t> positions("positions", &pos, 1);
  Buffer<float> a("a", a_t, cw), g("g", g_t, cw), pe("ape", ape, static_cast<std::size_t>(dm.ratio) * cw),
      nw("norm_w", norm_w, static_cast<std::size_t>(dm.width)), cs("cos", cos_tab), sn("sin", sin_tab),
      kv("state_kv", st.kv), score("state_score", st.score);
  const auto rb = static_cast<std::size_t>(dm.row_bytes());
  Buffer<std::uint8_t> rows("cache", static_cast<std::size_t>(j + 1) * rb, 0xA5);
  if (completes && out_row != nullptr) std::memcpy(rows.host() + j * rb, out_row, rb);
  const DebugBuffers d(dbg, static_cast<std::size_t>(dm.width));
  const DecodeArgs args{dm,        positions.cptr(), a.cptr(),  g.cptr(),    pe.cptr(),
                        nw.cptr(), eps,              cs.cptr(), sn.cptr(),   kv.ptr(),
                        score.ptr(), rows.ptr(),     j + 1,     d.ptrs()};
  simt::LaunchConfig c = cluster_config(dm.indexer() ? "compressor_idx_decode_kernel"
                                                     : "compressor_decode_kernel",
                                        dm, 1);
  c.compulsory_bytes = compressor_decode_bytes(dm, 1, completes ? 1 : 0);
  simt::LaunchReport r = simt::launch(c, decode_kernel(opt.fault, dm, args), opt.run);
  if (!rows.guards_intact()) throw Error("compressor_decode_step_simt: a guard of the cache was written");
  st.kv = kv.read();
  st.score = score.read();
  if (completes && out_row != nullptr) std::memcpy(out_row, rows.read().data() + j * rb, rb);
  if (completes) d.copy_back(dbg);
  if (report != nullptr) *report = std::move(r);
  return completes;
}

}  // namespace v4ref::cuda
