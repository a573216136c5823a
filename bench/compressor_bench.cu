// Compressor kernel time against the HBM roofline (kernel-targets.md §4.5;
// docs/cuda-mhc-compressor.md §4.6).
//
// Cases (Flash and Pro alike, the widths do not change): prefill of the main compressor at
// w = 512, C4 (m = 4, c = 2) and C128 (m = 128, c = 1), and of the indexer compressor `idx`
// (m = 4, c = 2, w = 128: Hadamard, Q4, 68-byte rows) at T = 4096, 8192, 16384, 65536; decode,
// B = 128 sequences: `decode_store` (no block completes: state row writes only) and `decode_pool`
// (every sequence completes a block: state row write, pooling of the whole state, cache row).
// bytes: compulsory traffic (compressor_prefill_bytes, compressor_decode_bytes). target_us:
// kernel-targets.md §4.5 (T = 8192: C4 ≤ 25.5 µs, C128 ≤ 12.5 µs, indexer ≤ 6.4 µs; decode
// ≤ 4 µs per layer at B = 128).
// Timing as bench/mhc_bench.cu (bench/bench_timing.cuh): cold L2 (256 MiB scratch overwritten before each sample),
// a CUDA graph of 20 launches over rotating input sets for cases under 200 µs of roofline time,
// median of 5 (--reps). Correct before fast: the first launch's first and last 8 entries are
// compared bit for bit with the CPU executor. Output (bench/bench_report.hpp): Google Benchmark's JSON layout to --out
// (default reports/data/compressor-<device>-<sha>.json). No Google Benchmark library is linked.
//
//   build-cuda/bench/compressor_bench [--out=PATH] [--filter=SUBSTRING] [--reps=N] [--warm]
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
#include "v4ref/cuda/compressor.hpp"
#include "v4ref/cuda/compressor_simt.hpp"
#include "v4ref/cuda/compressor_tile.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace {

using namespace v4ref;  // NOLINT: bench file (v4ref::cuda spelled out: ::cuda is libcu++'s)
using bench::DeviceBuffer;
namespace cmp = v4ref::cuda::cmp;

using bench::kL2Bytes;
using bench::kScratchBytes;
constexpr double kHbm = bench::kHbmBytesPerSecond;
constexpr double kTargetPctHbm = 80.0;  // kernel-targets.md §4.5: >= 80% of HBM bandwidth

__global__ void fill_f32(float* p, std::int64_t n, std::uint64_t seed, float scale) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t z = bench::fill_bits(seed, i);
    p[i] = (static_cast<float>(z >> 40) * (1.0f / 16777216.0f) - 0.5f) * scale;
  }
}

// Weights shared by every set: ape, norm, rope table.
struct Weights {
  cmp::Dims dm;
  std::vector<float> ape, norm_w, cos, sin;
  DeviceBuffer d_ape, d_norm, d_cos, d_sin;
  Weights(cmp::Dims d, std::int64_t entries)
      : dm(d),
        d_ape(static_cast<std::size_t>(d.ratio * d.cw()) * 4),
        d_norm(static_cast<std::size_t>(d.width) * 4),
        d_cos(static_cast<std::size_t>(entries) * 128),
        d_sin(static_cast<std::size_t>(entries) * 128) {
    Rng rng(derive_seed("compressor_bench", "w", std::to_string(d.ratio)));
    for (int i = 0; i < d.ratio * d.cw(); ++i)
      ape.push_back(static_cast<float>(0.5 * rng.normal()));
    for (int i = 0; i < d.width; ++i)
      norm_w.push_back(static_cast<float>(1.0 + 0.1 * rng.normal()));
    std::vector<float> omega(32);
    for (int k = 0; k < 32; ++k)
      omega[static_cast<std::size_t>(k)] = static_cast<float>(std::pow(160000.0, -2.0 * k / 64.0));
    cmp::rope_table(omega.data(), entries, d.ratio, cos, sin);
    V4REF_CUDA_CHECK(cudaMemcpy(d_ape.p, ape.data(), ape.size() * 4, cudaMemcpyHostToDevice));
    V4REF_CUDA_CHECK(
        cudaMemcpy(d_norm.p, norm_w.data(), norm_w.size() * 4, cudaMemcpyHostToDevice));
    V4REF_CUDA_CHECK(cudaMemcpy(d_cos.p, cos.data(), cos.size() * 4, cudaMemcpyHostToDevice));
    V4REF_CUDA_CHECK(cudaMemcpy(d_sin.p, sin.data(), sin.size() * 4, cudaMemcpyHostToDevice));
  }
};

template <class T>
std::vector<T> download(const void* dev, std::size_t first, std::size_t count) {
  std::vector<T> h(count);
  V4REF_CUDA_CHECK(cudaMemcpy(h.data(), static_cast<const T*>(dev) + first, count * sizeof(T),
                              cudaMemcpyDeviceToHost));
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  bench::BenchOptions o;
  bench::BenchContext ctx;
  if (int rc = 0; !bench::bench_session(argc, argv, "compressor", &o, &ctx, &rc)) return rc;
  DeviceBuffer scratch(kScratchBytes);
  std::vector<bench::BenchResult> results;

  // The three compressors of a layer: main C4 / C128 at w = 512, the indexer's at w = 128.
  struct Variant {
    std::string label;
    int ratio;
    int width;
    cmp::Kind kind;
    double target_prefill_t8192_us;
  };
  const std::vector<Variant> kinds = {{"compressor_c4", 4, 512, cmp::Kind::kMain, 25.5},
                                      {"compressor_c128", 128, 512, cmp::Kind::kMain, 12.5},
                                      {"compressor_idx", 4, 128, cmp::Kind::kIndexer, 6.4}};
  constexpr double kDecodeTargetUs = 4.0;

  // ---- prefill
  for (const Variant& kd : kinds)
    for (const std::int64_t T : {4096, 8192, 16384, 65536}) {
      const int ratio = kd.ratio;
      const std::string name = kd.label + "/prefill/T" + std::to_string(T);
      if (!bench::selected(o, name)) continue;
      bench::BenchResult r;
      r.name = name;
      try {
        const cmp::Dims dm = cmp::make_dims(ratio, kd.width, kd.kind);
        const std::int64_t E = T / ratio;
        const Weights w(dm, E);
        const double bytes = v4ref::cuda::compressor_prefill_bytes(dm, T);
        const double t_roof_us = bytes / kHbm * 1e6;
        const bool graph = t_roof_us < 200.0;
        const int sets =
            graph ? static_cast<int>(std::clamp(std::ceil(2 * kL2Bytes / bytes), 1.0, 20.0)) : 1;
        std::vector<std::unique_ptr<DeviceBuffer>> a, g, cache;
        for (int i = 0; i < sets; ++i) {
          a.push_back(std::make_unique<DeviceBuffer>(static_cast<std::size_t>(T * dm.cw()) * 4));
          g.push_back(std::make_unique<DeviceBuffer>(static_cast<std::size_t>(T * dm.cw()) * 4));
          cache.push_back(std::make_unique<DeviceBuffer>(static_cast<std::size_t>(E * dm.row_bytes())));
          fill_f32<<<1024, 256>>>(a.back()->as<float>(), T * dm.cw(), 0xA000u + i, 3.4f);
          fill_f32<<<1024, 256>>>(g.back()->as<float>(), T * dm.cw(), 0xB000u + i, 3.4f);
        }
        V4REF_CUDA_CHECK(cudaDeviceSynchronize());
        const auto launch = [&](int i) {
          v4ref::cuda::CompressorPrefillLaunch p;
          p.dm = dm;
          p.tokens = T;
          p.a = a[static_cast<std::size_t>(i)]->as<float>();
          p.g = g[static_cast<std::size_t>(i)]->as<float>();
          p.ape = w.d_ape.as<float>();
          p.norm_w = w.d_norm.as<float>();
          p.cos = w.d_cos.as<float>();
          p.sin = w.d_sin.as<float>();
          p.cache = cache[static_cast<std::size_t>(i)]->as<std::uint8_t>();
          v4ref::cuda::compressor_prefill(p, bench::bench_stream());
        };
                launch(0);
        V4REF_CUDA_CHECK(cudaDeviceSynchronize());
        // Correct before fast: entries [0, 8) and [E − 8, E) against the executor (the tokens
        // those entries read: blocks j−1 and j).
        for (const std::int64_t j0 : {std::int64_t{0}, std::max<std::int64_t>(0, E - 8)}) {
          const std::int64_t t_first = std::max<std::int64_t>(0, (j0 - 1) * ratio),
                             t_end = (j0 + 8) * ratio;
          const auto ha = download<float>(a[0]->p, static_cast<std::size_t>(t_first * dm.cw()),
                                          static_cast<std::size_t>((t_end - t_first) * dm.cw()));
          const auto hg = download<float>(g[0]->p, static_cast<std::size_t>(t_first * dm.cw()),
                                          static_cast<std::size_t>((t_end - t_first) * dm.cw()));
          // Shift the problem so its token 0 is t_first (a multiple of m: entries keep their
          // positions through the rope table offset).
          cmp::PrefillProblem p;
          p.dm = dm;
          p.tokens = t_end - t_first;
          p.a = ha.data();
          p.g = hg.data();
          p.ape = w.ape.data();
          p.norm_w = w.norm_w.data();
          p.cos = w.cos.data() + (t_first / ratio) * 32;
          p.sin = w.sin.data() + (t_first / ratio) * 32;
          std::vector<std::uint8_t> rows(
              static_cast<std::size_t>((p.tokens / ratio) * dm.row_bytes()));
          v4ref::cuda::compressor_prefill_simt(p, rows.data());
          // Entry 0 of the shifted problem has no previous block for CSA when t_first > 0:
          // compare only entries whose slots are all inside the window.
          const std::int64_t skip = (ratio == 4 && t_first > 0) ? 1 : 0;
          const std::int64_t n = p.tokens / ratio - skip;
          const auto dev = download<std::uint8_t>(
              cache[0]->p, static_cast<std::size_t>((t_first / ratio + skip) * dm.row_bytes()),
              static_cast<std::size_t>(n * dm.row_bytes()));
          if (!std::equal(dev.begin(), dev.end(), rows.begin() + skip * dm.row_bytes()))
            throw std::runtime_error(
                "correctness gate failed: cache rows differ from the executor near entry " +
                std::to_string(j0));
        }
        r.us = bench::time_us(o, scratch.p, kScratchBytes, sets, graph, launch);
        const double t = r.us * 1e-6;
        r.counters = {{"tokens", static_cast<double>(T)},
                      {"entries", static_cast<double>(E)},
                      {"bytes", bytes},
                      {"GBps", bytes / t * 1e-9},
                      {"pct_hbm", 100.0 * bytes / (t * kHbm)},
                      {"pct_roof", 100.0 * t_roof_us / r.us},
                      {"t_roof_us", t_roof_us},
                      {"target_pct", kTargetPctHbm},
                      {"graph", graph ? 1.0 : 0.0},
                      {"cold_l2", o.warm ? 0.0 : 1.0}};
        if (T == 8192) r.counters.emplace_back("target_us", kd.target_prefill_t8192_us);
        std::printf("%-34s %10.2f us  %7.1f GB/s  %5.1f%% HBM\n", name.c_str(), r.us,
                    bytes / t * 1e-9, 100.0 * bytes / (t * kHbm));
      } catch (const std::exception& e) {
        r.error = e.what();
        std::printf("%-34s ERROR %s\n", name.c_str(), e.what());
      }
      results.push_back(r);
    }

  // ---- decode, B = 128
  for (const Variant& kd : kinds)
    for (const bool complete : {false, true}) {
      const int ratio = kd.ratio;
      const std::string name = kd.label + (complete ? "/decode_pool/B128" : "/decode_store/B128");
      if (!bench::selected(o, name)) continue;
      bench::BenchResult r;
      r.name = name;
      try {
        constexpr std::int64_t kB = 128;
        const cmp::Dims dm = cmp::make_dims(ratio, kd.width, kd.kind);
        const std::int64_t entries_max = 4;
        const Weights w(dm, entries_max);
        const std::int64_t t = complete ? ratio - 1 : 0;  // position of every sequence
        const std::size_t state_floats = static_cast<std::size_t>(kB * dm.state_rows() * dm.cw());
        DeviceBuffer a(static_cast<std::size_t>(kB * dm.cw()) * 4),
            g(static_cast<std::size_t>(kB * dm.cw()) * 4), kv(state_floats * 4),
            sc(state_floats * 4),
            cache(static_cast<std::size_t>(kB * entries_max * dm.row_bytes())),
            pos(static_cast<std::size_t>(kB) * 8);
        fill_f32<<<1024, 256>>>(a.as<float>(), kB * dm.cw(), 0xC000u, 3.4f);
        fill_f32<<<1024, 256>>>(g.as<float>(), kB * dm.cw(), 0xD000u, 3.4f);
        fill_f32<<<1024, 256>>>(kv.as<float>(), static_cast<std::int64_t>(state_floats), 0xE000u,
                                3.4f);
        fill_f32<<<1024, 256>>>(sc.as<float>(), static_cast<std::int64_t>(state_floats), 0xF000u,
                                3.4f);
        const std::vector<std::int64_t> hp(static_cast<std::size_t>(kB), t);
        V4REF_CUDA_CHECK(cudaMemcpy(pos.p, hp.data(), hp.size() * 8, cudaMemcpyHostToDevice));
        V4REF_CUDA_CHECK(cudaDeviceSynchronize());
        const auto launch = [&](int) {
          v4ref::cuda::CompressorDecodeLaunch p;
          p.dm = dm;
          p.batch = kB;
          p.positions = pos.as<std::int64_t>();
          p.a = a.as<float>();
          p.g = g.as<float>();
          p.ape = w.d_ape.as<float>();
          p.norm_w = w.d_norm.as<float>();
          p.cos = w.d_cos.as<float>();
          p.sin = w.d_sin.as<float>();
          p.state_kv = kv.as<float>();
          p.state_score = sc.as<float>();
          p.cache = cache.as<std::uint8_t>();
          p.entries_max = entries_max;
          v4ref::cuda::compressor_decode(p, bench::bench_stream());
        };
        // Correct before fast: sequence 0's step against the executor from the same state.
        cmp::DecodeState st(dm);
        st.kv = download<float>(kv.p, 0, st.kv.size());
        st.score = download<float>(sc.p, 0, st.score.size());
        const auto ha = download<float>(a.p, 0, static_cast<std::size_t>(dm.cw()));
        const auto hg = download<float>(g.p, 0, static_cast<std::size_t>(dm.cw()));
                launch(0);
        V4REF_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<std::uint8_t> row(static_cast<std::size_t>(dm.row_bytes()));
        const bool done = v4ref::cuda::compressor_decode_step_simt(
            dm, st, t, ha.data(), hg.data(), w.ape.data(), w.norm_w.data(), 1e-6f,
            cmp::RopeRow{w.cos.data(), w.sin.data()}, row.data());
        if (done && download<std::uint8_t>(cache.p, 0, row.size()) != row)
          throw std::runtime_error(
              "correctness gate failed: decode cache row differs from the executor");
        if (download<float>(kv.p, 0, st.kv.size()) != st.kv)
          throw std::runtime_error(
              "correctness gate failed: decode state differs from the executor");
        r.us = bench::time_us(o, scratch.p, kScratchBytes, 1, true, launch);
        const double bytes = v4ref::cuda::compressor_decode_bytes(dm, kB, complete ? kB : 0);
        r.counters = {{"batch", static_cast<double>(kB)},
                      {"bytes", bytes},
                      {"GBps", bytes / (r.us * 1e-6) * 1e-9},
                      {"pct_hbm", 100.0 * bytes / (r.us * 1e-6 * kHbm)},
                      {"pct_roof", 100.0 * (bytes / kHbm * 1e6) / r.us},
                      {"t_roof_us", bytes / kHbm * 1e6},
                      {"target_us", kDecodeTargetUs},
                      // the 4 µs budget as a fraction of roofline time (launch-bound shapes)
                      {"target_pct", 100.0 * (bytes / kHbm * 1e6) / kDecodeTargetUs},
                      {"graph", 1.0},
                      {"cold_l2", o.warm ? 0.0 : 1.0}};
        std::printf("%-34s %10.2f us\n", name.c_str(), r.us);
      } catch (const std::exception& e) {
        r.error = e.what();
        std::printf("%-34s ERROR %s\n", name.c_str(), e.what());
      }
      results.push_back(r);
    }

  bench::write_text_file(o.out, bench::bench_json(ctx, results));
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}
