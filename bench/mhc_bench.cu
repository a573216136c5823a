// mHC kernel time on the V4-Flash / V4-Pro shapes against the HBM roofline
// (kernel-targets.md §4.6; docs/cuda-mhc-compressor.md §2.6).
//
// Cases, for d = 4096 (Flash) and 7168 (Pro), decode T = 1, 16, 128 and prefill T = 4096, 8192,
// 16384, 65536 tokens:
//   fused     mhc_pre with F: write-back of layer l + pre of layer l+1, bytes 20d + 176 per token
//   pre       mhc_pre without F (first layer), bytes 10d + 96 per token
//   post      mhc_post (last layer), bytes 18d + 80 per token
//   unfused   baseline in the same run: mhc_post, then mhc_pre (pre only) re-reading X' — the
//             same math as `fused` in two launches; pct figures use the fused case's bytes
// bytes are compulsory HBM traffic (every input read once, every output written once; fn once).
// Timing (bench/bench_timing.cuh): CUDA events around the launches; cold L2 by default (a 256 MiB scratch overwritten
// before each timed sample, outside the events); cases under 200 µs of expected time run a CUDA
// graph of 20 launches rotating over input sets larger than 2× L2 and divide by 20. 5 samples
// (--reps), median reported. A 1 GiB device-to-device copy gives the achievable bandwidth
// (pct_probe). Correct before fast: the first launch of every case is compared bit for bit with
// the CPU executor (mhc_tile.hpp) on its first 33 and last 31 tokens; a mismatch gives no number.
// Output (bench/bench_report.hpp): Google Benchmark's JSON layout (reports/make_report.py reads
// it; pct_roof against target_pct = 80 is plotted), written to --out
// (default reports/data/mhc-<device>-<sha>.json). No Google Benchmark library is linked, so the
// binary needs only the CUDA driver at run time (cudart is static).
//
//   build-cuda/bench/mhc_bench [--out=PATH] [--filter=SUBSTRING] [--reps=N] [--warm]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_timing.cuh"
#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/mhc.hpp"
#include "v4ref/cuda/mhc_simt.hpp"
#include "v4ref/cuda/mhc_tile.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace {

using namespace v4ref;  // NOLINT: bench file (v4ref::cuda spelled out: ::cuda is libcu++'s)
using bench::DeviceBuffer;
namespace mhc = v4ref::cuda::mhc;

using bench::kL2Bytes;
using bench::kScratchBytes;
constexpr double kHbm = bench::kHbmBytesPerSecond;
constexpr double kTargetPctHbm = 80.0;  // kernel-targets.md §4.6: >= 80% of HBM bandwidth

// Deterministic bf16 N(0,1)-like data: sum of 4 uniforms, scaled.
__global__ void fill_bf16(std::uint16_t* p, std::int64_t n, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t z = bench::fill_bits(seed, i);
    float s = 0;
    for (int k = 0; k < 4; ++k)
      s += static_cast<float>((z >> (16 * k)) & 0xFFFF) * (1.0f / 65536.0f);
    p[i] = mhc::bf16_rne_bits((s - 2.0f) * 1.7320508f);
  }
}

// One input set of a shape: X, F, coefficient rows (from a pre-only run), outputs.
struct Set {
  std::int64_t T, d;
  DeviceBuffer x, f, coef_in, xo, u, coef;
  Set(std::int64_t t, std::int64_t dd)
      : T(t),
        d(dd),
        x(static_cast<std::size_t>(t * 4 * dd) * 2),
        f(static_cast<std::size_t>(t * dd) * 2),
        coef_in(static_cast<std::size_t>(t) * 96),
        xo(static_cast<std::size_t>(t * 4 * dd) * 2),
        u(static_cast<std::size_t>(t * dd) * 2),
        coef(static_cast<std::size_t>(t) * 96) {}
};

struct Weights {
  DeviceBuffer fn_packed, base;
  mhc::Scalars s;
  explicit Weights(std::int64_t d) : fn_packed(static_cast<std::size_t>(24 * 4 * d) * 4), base(96) {
    Rng rng(derive_seed("mhc_bench", "fn", std::to_string(d)));
    std::vector<float> fn(static_cast<std::size_t>(24 * 4 * d)), b(24);
    for (float& v : fn)
      v = static_cast<float>(rng.normal() / std::sqrt(4.0 * static_cast<double>(d)));
    for (float& v : b) v = static_cast<float>(0.5 * rng.normal());
    for (float& v : s.scale) v = static_cast<float>(rng.uniform(0.2, 1.0));
    DeviceBuffer raw(fn.size() * 4);
    V4REF_CUDA_CHECK(cudaMemcpy(raw.p, fn.data(), fn.size() * 4, cudaMemcpyHostToDevice));
    V4REF_CUDA_CHECK(cudaMemcpy(base.p, b.data(), 96, cudaMemcpyHostToDevice));
    v4ref::cuda::mhc_pack_fn(raw.as<float>(), fn_packed.as<float>(), d);
    V4REF_CUDA_CHECK(cudaDeviceSynchronize());
    host_fn = fn;
    host_base = b;
  }
  std::vector<float> host_fn, host_base;
};

v4ref::cuda::MhcPreLaunch pre_launch(const Set& st, const Weights& w, bool fused,
                              const std::uint16_t* x_in) {
  v4ref::cuda::MhcPreLaunch p;
  p.tokens = st.T;
  p.d = st.d;
  p.x = x_in;
  p.f = fused ? st.f.as<std::uint16_t>() : nullptr;
  p.coef_in = fused ? st.coef_in.as<float>() : nullptr;
  p.fn = w.fn_packed.as<float>();
  p.base = w.base.as<float>();
  p.s = w.s;
  p.x_out = fused ? st.xo.as<std::uint16_t>() : nullptr;
  p.u = st.u.as<std::uint16_t>();
  p.coef = st.coef.as<float>();
  return p;
}

template <class T>
std::vector<T> download_rows(const void* dev, std::int64_t first, std::int64_t rows,
                             std::int64_t width) {
  std::vector<T> h(static_cast<std::size_t>(rows * width));
  V4REF_CUDA_CHECK(cudaMemcpy(h.data(), static_cast<const T*>(dev) + first * width,
                              h.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

// Bitwise check of the device outputs of `st` against the executor on token rows [first, first+n).
std::string check_rows(const Set& st, const Weights& w, bool fused, bool post_only,
                       std::int64_t first, std::int64_t n) {
  const std::int64_t d = st.d;
  const auto x = download_rows<std::uint16_t>(st.x.p, first, n, 4 * d);
  const auto f = download_rows<std::uint16_t>(st.f.p, first, n, d);
  const auto ci = download_rows<float>(st.coef_in.p, first, n, 24);
  mhc::Problem p;
  p.tokens = n;
  p.d = d;
  p.x = x.data();
  p.f = (fused || post_only) ? f.data() : nullptr;
  p.coef_in = (fused || post_only) ? ci.data() : nullptr;
  p.fn = w.host_fn.data();
  p.base = w.host_base.data();
  p.s = w.s;
  if (post_only) {
    const std::vector<std::uint16_t> e = v4ref::cuda::mhc_post_simt(p);
    return e == download_rows<std::uint16_t>(st.xo.p, first, n, 4 * d)
               ? ""
               : "x_out differs from the executor";
  }
  const v4ref::cuda::MhcPlan plan = v4ref::cuda::mhc_plan(st.T, d, fused);
  v4ref::cuda::MhcSimtOptions o;  // the kernel's own source in the SIMT executor
  o.cluster = plan.tiling.cluster;
  o.run.analysis = false;
  const v4ref::cuda::MhcSimtOutputs r = v4ref::cuda::mhc_pre_simt(p, o);
  const std::vector<std::uint16_t>& xo = r.x_out;
  const std::vector<std::uint16_t>& u = r.u;
  const std::vector<float>& coef = r.coef;
  if (fused && xo != download_rows<std::uint16_t>(st.xo.p, first, n, 4 * d))
    return "x_out differs from the executor";
  if (u != download_rows<std::uint16_t>(st.u.p, first, n, d)) return "u differs from the executor";
  const auto kc = download_rows<float>(st.coef.p, first, n, 24);
  if (std::memcmp(kc.data(), coef.data(), coef.size() * 4) != 0)
    return "coef differs from the executor";
  return "";
}

double copy_probe_gbps(void* scratch) {
  constexpr std::size_t kBytes = std::size_t{1} << 30;
  DeviceBuffer a(kBytes), b(kBytes);
  V4REF_CUDA_CHECK(cudaMemset(a.p, 1, kBytes));
  bench::BenchOptions o;
  o.reps = 5;
  const double us = bench::time_us(o, scratch, kScratchBytes, 1, false, [&](int) {
    V4REF_CUDA_CHECK(cudaMemcpyAsync(b.p, a.p, kBytes, cudaMemcpyDeviceToDevice, bench::bench_stream()));
  });
  return 2.0 * kBytes / (us * 1e-6) * 1e-9;  // read + write
}

}  // namespace

int main(int argc, char** argv) {
  bench::BenchOptions o;
  bench::BenchContext ctx;
  if (int rc = 0; !bench::bench_session(argc, argv, "mhc", &o, &ctx, &rc)) return rc;

  DeviceBuffer scratch(kScratchBytes);
  const double probe = copy_probe_gbps(scratch.p);
  ctx.numbers.emplace_back("copy_probe_GBps", probe);
  std::printf("device %s, copy probe %.0f GB/s\n", ctx.device.c_str(), probe);

  std::vector<bench::BenchResult> results;
  for (const auto& [model, d] :
       {std::make_pair("flash", std::int64_t{4096}), std::make_pair("pro", std::int64_t{7168})}) {
    const Weights w(d);
    for (const std::int64_t T : {1, 16, 128, 4096, 8192, 16384, 65536}) {
      for (const char* kind : {"fused", "pre", "post", "unfused"}) {
        const std::string name =
            std::string("mhc_") + kind + "/" + model + "/T" + std::to_string(T);
        if (!bench::selected(o, name)) continue;
        bench::BenchResult r;
        r.name = name;
        try {
          const bool fused = std::strcmp(kind, "fused") == 0, pre = std::strcmp(kind, "pre") == 0,
                     post = std::strcmp(kind, "post") == 0,
                     unfused = std::strcmp(kind, "unfused") == 0;
          const double bytes = (fused || unfused) ? v4ref::cuda::mhc_fused_bytes(T, d)
                               : pre              ? v4ref::cuda::mhc_pre_bytes(T, d)
                                                  : v4ref::cuda::mhc_post_bytes(T, d);
          const double t_roof_us = bytes / kHbm * 1e6;
          const bool graph = t_roof_us < 200.0;
          const int sets =
              graph ? static_cast<int>(std::clamp(std::ceil(2 * kL2Bytes / bytes), 1.0, 20.0)) : 1;
          std::vector<std::unique_ptr<Set>> st;
          for (int i = 0; i < sets; ++i) {
            st.push_back(std::make_unique<Set>(T, d));
            fill_bf16<<<1024, 256>>>(st.back()->x.as<std::uint16_t>(), T * 4 * d, 0x5EED00ull + i);
            fill_bf16<<<1024, 256>>>(st.back()->f.as<std::uint16_t>(), T * d, 0xF00D00ull + i);
            V4REF_CUDA_CHECK(cudaGetLastError());
            // Realistic coefficient rows: a pre-only run on the streams.
            v4ref::cuda::MhcPreLaunch p0 =
                pre_launch(*st.back(), w, false, st.back()->x.as<std::uint16_t>());
            p0.coef = st.back()->coef_in.as<float>();
            v4ref::cuda::mhc_pre(p0);
          }
          V4REF_CUDA_CHECK(cudaDeviceSynchronize());
          const auto launch = [&](int i) {
            Set& s = *st[static_cast<std::size_t>(i)];
            if (fused)
              v4ref::cuda::mhc_pre(pre_launch(s, w, true, s.x.as<std::uint16_t>()), {}, bench::bench_stream());
            if (pre)
              v4ref::cuda::mhc_pre(pre_launch(s, w, false, s.x.as<std::uint16_t>()), {}, bench::bench_stream());
            if (post || unfused)
              v4ref::cuda::mhc_post({s.T, s.d, s.x.as<std::uint16_t>(), s.f.as<std::uint16_t>(),
                              s.coef_in.as<float>(), s.xo.as<std::uint16_t>()},
                             bench::bench_stream());
            if (unfused)
              v4ref::cuda::mhc_pre(pre_launch(s, w, false, s.xo.as<std::uint16_t>()), {}, bench::bench_stream());
          };
          // Correct before fast.
          launch(0);
          V4REF_CUDA_CHECK(cudaDeviceSynchronize());
          if (!unfused) {
            const std::int64_t head = std::min<std::int64_t>(T, 33),
                               tail = std::min<std::int64_t>(T - head, 31);
            std::string err = check_rows(*st[0], w, fused, post, 0, head);
            if (err.empty() && tail > 0) err = check_rows(*st[0], w, fused, post, T - tail, tail);
            if (!err.empty()) throw std::runtime_error("correctness gate failed: " + err);
          }
          r.us = bench::time_us(o, scratch.p, kScratchBytes, sets, graph, launch);
          const double t = r.us * 1e-6;
          const v4ref::cuda::MhcPlan plan = v4ref::cuda::mhc_plan(T, d, fused || unfused);
          r.counters = {{"tokens", static_cast<double>(T)},
                        {"d", static_cast<double>(d)},
                        {"bytes", bytes},
                        {"GBps", bytes / t * 1e-9},
                        {"pct_hbm", 100.0 * bytes / (t * kHbm)},
                        {"pct_probe", 100.0 * bytes / (t * probe * 1e9)},
                        {"pct_roof", 100.0 * t_roof_us / r.us},
                        {"t_roof_us", t_roof_us},
                        {"target_pct", kTargetPctHbm},
                        {"flops", (fused || unfused) ? v4ref::cuda::mhc_fused_flops(T, d) : 0.0},
                        {"cluster", static_cast<double>(plan.tiling.cluster)},
                        {"clusters", static_cast<double>(plan.clusters)},
                        {"graph", graph ? 1.0 : 0.0},
                        {"cold_l2", o.warm ? 0.0 : 1.0}};
          std::printf("%-28s %10.2f us  %7.1f GB/s  %5.1f%% HBM  %5.1f%% probe\n", name.c_str(),
                      r.us, bytes / t * 1e-9, 100.0 * bytes / (t * kHbm),
                      100.0 * bytes / (t * probe * 1e9));
        } catch (const std::exception& e) {
          r.error = e.what();
          std::printf("%-28s ERROR %s\n", name.c_str(), e.what());
        }
        results.push_back(r);
      }
    }
  }
  // Baseline counters: the unfused time next to the fused one.
  bench::add_baseline_counters(results, "mhc_fused/", "mhc_unfused/");
  bench::write_text_file(o.out, bench::bench_json(ctx, results));
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}
