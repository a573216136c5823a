// The Muon element kernels in the SIMT executor (muon_simt.hpp), between host GEMMs with the
// semantics of muon_ns_bf16_sm90.cu's cuBLAS calls.
#include "v4ref/cuda/muon_simt.hpp"

#include <algorithm>
#include <string>

#include "../src/muon_kernels.cuh"

namespace v4ref::cuda {
namespace {

namespace mk = muon_kernels;
using ns::MuonFault;
using simt::Buffer;
using simt::gptr;

struct Launcher {
  const MuonSimtOptions& opt;
  void operator()(const char* name, simt::idx3 grid, simt::idx3 block, std::size_t smem,
                  double bytes, const std::function<void()>& k) const {
    simt::LaunchConfig c;
    c.kernel = name;
    c.grid = grid;
    c.block = block;
    c.smem_bytes = smem;
    c.compulsory_bytes = bytes;
    simt::LaunchReport r = simt::launch(c, k, opt.run);
    if (opt.reports != nullptr) opt.reports->push_back(std::move(r));
  }
  simt::idx3 elem_grid(std::int64_t total) const {
    const std::int64_t need = (total + mk::kElemThreads - 1) / mk::kElemThreads;
    return {static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(need, opt.elem_blocks))), 1, 1};
  }
};

// The kernel instantiation with fault F when the options ask for it.
#define V4REF_MUON_KERNEL(kernel, fault_value) \
  (opt.fault == (fault_value) ? mk::kernel<(fault_value)> : mk::kernel<MuonFault::kNone>)

void require_shape(std::int64_t rows, std::int64_t cols, const char* where) {
  if (rows <= 0 || cols <= 0 || rows > (1 << 20) || cols > (1 << 20))
    throw ShapeError(std::string(where) + ": rows and cols must be in [1, 2^20], got [" +
                     std::to_string(rows) + ", " + std::to_string(cols) + "]");
}

// Sums of squares and denominators of `batch` matrices in u into sums [batch] and denom [batch].
void norms(const Launcher& L, const MuonSimtOptions& opt, gptr<const float> u, std::int64_t batch,
           std::int64_t count, float eps, Buffer<float>& sums, Buffer<float>& denom) {
  Buffer<float> partial("partial", static_cast<std::size_t>(batch) * ns::kNormParts, 0.0f);
  const gptr<float> pp = partial.ptr();
  const auto partial_k = V4REF_MUON_KERNEL(sumsq_partial_kernel, MuonFault::kNone);
  L("sumsq_partial_kernel", {ns::kNormBlocks, static_cast<unsigned>(batch), 1}, {ns::kNormThreads, 1, 1}, 0,
    4.0 * static_cast<double>(batch) * (static_cast<double>(count) + ns::kNormParts),
    [=] { partial_k(u, count, pp); });
  const gptr<const float> pc = partial.cptr();
  const gptr<float> ps = sums.ptr(), pd = denom.ptr();
  const auto combine_k = V4REF_MUON_KERNEL(sumsq_combine_kernel, MuonFault::kTreeLevelNoBarrier);
  L("sumsq_combine_kernel", {static_cast<unsigned>(batch), 1, 1}, {1024, 1, 1}, mk::kCombineSmem,
    4.0 * static_cast<double>(batch) * (ns::kNormParts + 2), [=] { combine_k(pc, eps, ps, pd); });
}

}  // namespace

std::vector<float> muon_sumsq_simt(const float* u, std::int64_t batch, std::int64_t count,
                                   float eps, const MuonSimtOptions& opt) {
  if (batch <= 0 || count <= 0)
    throw ShapeError("muon_sumsq_simt: batch and count must be positive, got " +
                     std::to_string(batch) + ", " + std::to_string(count));
  const Launcher L{opt};
  Buffer<float> in("u", u, static_cast<std::size_t>(batch * count));
  Buffer<float> sums("sumsq", static_cast<std::size_t>(batch), -1.0f),
      denom("denom", static_cast<std::size_t>(batch), -1.0f);
  norms(L, opt, in.cptr(), batch, count, eps, sums, denom);
  return sums.read();
}

std::vector<std::uint16_t> muon_newton_schulz_simt(const float* u, std::int64_t rows,
                                                   std::int64_t cols,
                                                   const std::vector<ns::StageF>& stages, float eps,
                                                   const MuonSimtOptions& opt) {
  require_shape(rows, cols, "muon_newton_schulz_simt");
  const Launcher L{opt};
  const bool tall = rows > cols;
  const std::int64_t n = tall ? cols : rows, m = tall ? rows : cols;
  const std::int64_t nm = n * m, nn = n * n;
  Buffer<float> in("u", u, static_cast<std::size_t>(nm));
  Buffer<float> sums("sumsq", 1, -1.0f), denom("denom", 1, -1.0f);
  norms(L, opt, in.cptr(), 1, nm, eps, sums, denom);
  Buffer<std::uint16_t> x("x", static_cast<std::size_t>(nm), 0x7FC1);
  {
    const gptr<const float> pu = in.cptr(), pd = denom.cptr();
    const gptr<std::uint16_t> px = x.ptr();
    if (tall) {
      const auto k = V4REF_MUON_KERNEL(normalize_transpose_kernel, MuonFault::kTileUnpadded);
      const auto k2 = V4REF_MUON_KERNEL(normalize_transpose_kernel, MuonFault::kTransposeTailGuard);
      const auto kernel = opt.fault == MuonFault::kTransposeTailGuard ? k2 : k;
      L("normalize_transpose_kernel",
        {static_cast<unsigned>((cols + mk::kTile - 1) / mk::kTile),
         static_cast<unsigned>((rows + mk::kTile - 1) / mk::kTile), 1},
        {mk::kTile, mk::kTileRows, 1}, mk::kTileSmemFloat, 6.0 * static_cast<double>(nm),
        [=] { kernel(pu, rows, cols, pd, px); });
    } else {
      const auto kernel = V4REF_MUON_KERNEL(normalize_kernel, MuonFault::kNone);
      L("normalize_kernel", L.elem_grid(nm), {mk::kElemThreads, 1, 1}, 0, 6.0 * static_cast<double>(nm),
        [=] { kernel(pu, nm, nm, pd, px); });
    }
  }
  Buffer<float> af("af", static_cast<std::size_t>(nn), 0.0f), yf("yf", static_cast<std::size_t>(nm), 0.0f);
  Buffer<std::uint16_t> a("a", static_cast<std::size_t>(nn), 0x7FC1), b("b", static_cast<std::size_t>(nn), 0x7FC1);
  const auto bf = [](std::uint16_t h) { return ns::bf16_load(h); };
  for (const ns::StageF& st : stages)
    for (int it = 0; it < st.iterations; ++it) {
      // cuBLAS gemm(T, N): A = X·Xᵀ, fp32, ascending k
      const std::uint16_t* xh = x.host();
      float* afh = af.host();
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
          float acc = 0.0f;
          for (std::int64_t k = 0; k < m; ++k) acc += bf(xh[i * m + k]) * bf(xh[j * m + k]);
          afh[i * n + j] = acc;
        }
      const auto gram = V4REF_MUON_KERNEL(gram_epilogue_kernel, MuonFault::kNone);
      const gptr<const float> pa = af.cptr();
      const gptr<std::uint16_t> pA = a.ptr();
      L("gram_epilogue_kernel", L.elem_grid(nn), {mk::kElemThreads, 1, 1}, 0, 6.0 * static_cast<double>(nn),
        [=] { gram(pa, nn, pA); });
      // gemm(N, N): A² in fp32
      const std::uint16_t* ah = a.host();
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
          float acc = 0.0f;
          for (std::int64_t k = 0; k < n; ++k) acc += bf(ah[i * n + k]) * bf(ah[k * n + j]);
          afh[i * n + j] = acc;
        }
      const auto poly = V4REF_MUON_KERNEL(poly_epilogue_kernel, MuonFault::kNone);
      const gptr<const std::uint16_t> pAc = a.cptr();
      const gptr<std::uint16_t> pB = b.ptr();
      const float kb = st.b, kc = st.c, ka = st.a;
      L("poly_epilogue_kernel", L.elem_grid(nn), {mk::kElemThreads, 1, 1}, 0, 8.0 * static_cast<double>(nn),
        [=] { poly(pAc, pa, nn, kb, kc, pB); });
      // gemm(N, T): Y = B·X, row i as axpys in ascending k
      const std::uint16_t* bh = b.host();
      float* yh = yf.host();
      std::fill(yh, yh + nm, 0.0f);
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t k = 0; k < n; ++k) {
          const float bik = bf(bh[i * n + k]);
          for (std::int64_t j = 0; j < m; ++j) yh[i * m + j] += bik * bf(xh[k * m + j]);
        }
      const auto update = V4REF_MUON_KERNEL(update_epilogue_kernel, MuonFault::kEpilogueStrideBound);
      const gptr<std::uint16_t> px = x.ptr();
      const gptr<const float> py = yf.cptr();
      L("update_epilogue_kernel", L.elem_grid(nm), {mk::kElemThreads, 1, 1}, 0, 8.0 * static_cast<double>(nm),
        [=] { update(px, py, nm, ka); });
    }
  if (!tall) return x.read();
  Buffer<std::uint16_t> out("out", static_cast<std::size_t>(nm), 0x7FC1);
  const auto k = V4REF_MUON_KERNEL(transpose_out_kernel, MuonFault::kTransposeNoBarrier);
  const gptr<const std::uint16_t> px = x.cptr();
  const gptr<std::uint16_t> po = out.ptr();
  L("transpose_out_kernel",
    {static_cast<unsigned>((rows + mk::kTile - 1) / mk::kTile),
     static_cast<unsigned>((cols + mk::kTile - 1) / mk::kTile), 1},
    {mk::kTile, mk::kTileRows, 1}, mk::kTileSmemBf16, 4.0 * static_cast<double>(nm),
    [=] { k(px, rows, cols, po); });
  return out.read();
}

std::vector<std::uint16_t> muon_step_simt(float* w, float* m, const float* g, std::int64_t rows,
                                          std::int64_t cols, const ns::StepScalars& s,
                                          const std::vector<ns::StageF>& stages, float eps,
                                          const MuonSimtOptions& opt) {
  require_shape(rows, cols, "muon_step_simt");
  const Launcher L{opt};
  const std::int64_t total = rows * cols;
  const auto n = static_cast<std::size_t>(total);
  Buffer<float> bw("w", w, n), bm("m", m, n), u("u", n, 0.0f);
  Buffer<float> bg("g", g, n);
  {
    const auto k = V4REF_MUON_KERNEL(momentum_kernel, MuonFault::kNone);
    const gptr<float> pm = bm.ptr(), pu = u.ptr();
    const gptr<const float> pg = bg.cptr();
    L("momentum_kernel", L.elem_grid(total), {mk::kElemThreads, 1, 1}, 0, 16.0 * static_cast<double>(total),
      [=] { k(pm, pg, pu, total, s); });
  }
  const std::vector<std::uint16_t> o = muon_newton_schulz_simt(u.host(), rows, cols, stages, eps, opt);
  Buffer<std::uint16_t> bo("o", o);
  {
    const auto k = V4REF_MUON_KERNEL(apply_kernel, MuonFault::kNone);
    const gptr<float> pw = bw.ptr();
    const gptr<const std::uint16_t> po = bo.cptr();
    L("apply_kernel", L.elem_grid(total), {mk::kElemThreads, 1, 1}, 0, 10.0 * static_cast<double>(total),
      [=] { k(pw, po, total, s); });
  }
  const std::vector<float> wn = bw.read(), mn = bm.read();
  std::copy(wn.begin(), wn.end(), w);
  std::copy(mn.begin(), mn.end(), m);
  return o;
}

}  // namespace v4ref::cuda
