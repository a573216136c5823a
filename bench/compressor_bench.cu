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
// Timing as bench/mhc_bench.cu: cold L2 (256 MiB scratch overwritten before each sample),
// a CUDA graph of 20 launches over rotating input sets for cases under 200 µs of roofline time,
// median of 5 (--reps). Correct before fast: the first launch's first and last 8 entries are
// compared bit for bit with the CPU executor. Output: Google Benchmark's JSON layout to --out
// (default reports/data/compressor-<device>-<sha>.json). No Google Benchmark library is linked.
//
//   build-cuda/bench/compressor_bench [--out=PATH] [--filter=SUBSTRING] [--reps=N] [--warm]
#include <cuda_runtime.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/compressor.hpp"
#include "v4ref/cuda/compressor_tile.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace {

using namespace v4ref;  // NOLINT: bench file
namespace cmp = cuda::cmp;

constexpr double kHbm = 3.35e12;
constexpr std::size_t kScratchBytes = std::size_t{256} << 20;
constexpr double kL2Bytes = 50e6;
thread_local cudaStream_t g_stream = nullptr;

__global__ void fill_f32(float* p, std::int64_t n, std::uint64_t seed, float scale) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::uint64_t z = seed + static_cast<std::uint64_t>(i) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = (static_cast<float>(z >> 40) * (1.0f / 16777216.0f) - 0.5f) * scale;
  }
}

struct Buf {
  void* p = nullptr;
  std::size_t bytes = 0;
  explicit Buf(std::size_t b) : bytes(b) {
    V4REF_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(b, 16)));
  }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

struct Options {
  std::string out, filter;
  int reps = 5;
  bool warm = false;
};

double time_us(const Options& o, void* scratch, int sets, bool graph,
               const std::function<void(int)>& launch) {
  cudaStream_t s;
  V4REF_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t a, b;
  V4REF_CUDA_CHECK(cudaEventCreate(&a));
  V4REF_CUDA_CHECK(cudaEventCreate(&b));
  cudaGraphExec_t exec = nullptr;
  constexpr int kLaunches = 20;
  g_stream = s;
  std::vector<double> samples;
  for (int r = 0; r < o.reps + 1; ++r) {
    if (!o.warm) V4REF_CUDA_CHECK(cudaMemsetAsync(scratch, r & 0xFF, kScratchBytes, s));
    if (graph && exec == nullptr) {
      cudaGraph_t g;
      V4REF_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      for (int i = 0; i < kLaunches; ++i) launch(i % sets);
      V4REF_CUDA_CHECK(cudaStreamEndCapture(s, &g));
      V4REF_CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
      V4REF_CUDA_CHECK(cudaGraphDestroy(g));
    }
    V4REF_CUDA_CHECK(cudaEventRecord(a, s));
    if (graph)
      V4REF_CUDA_CHECK(cudaGraphLaunch(exec, s));
    else
      launch(r % sets);
    V4REF_CUDA_CHECK(cudaEventRecord(b, s));
    V4REF_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    V4REF_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    if (r > 0) samples.push_back(ms * 1e3 / (graph ? kLaunches : 1));
  }
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaStreamDestroy(s);
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

// Weights shared by every set: ape, norm, rope table.
struct Weights {
  cmp::Dims dm;
  std::vector<float> ape, norm_w, cos, sin;
  Buf d_ape, d_norm, d_cos, d_sin;
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

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) o += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return o;
}

struct Result {
  std::string name, error;
  double us = 0;
  std::vector<std::pair<std::string, double>> counters;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--out=", 0) == 0)
      o.out = a.substr(6);
    else if (a.rfind("--filter=", 0) == 0)
      o.filter = a.substr(9);
    else if (a.rfind("--reps=", 0) == 0)
      o.reps = std::max(1, std::atoi(a.c_str() + 7));
    else if (a == "--warm")
      o.warm = true;
    else {
      std::fprintf(stderr, "usage: %s [--out=PATH] [--filter=SUBSTRING] [--reps=N] [--warm]\n",
                   argv[0]);
      return 2;
    }
  }
  std::string why;
  if (!cuda::device_available(&why)) {
    std::fprintf(stderr, "compressor_bench: no CUDA device (%s)\n", why.c_str());
    return 1;
  }
  cudaDeviceProp prop{};
  V4REF_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  const std::string sha =
      std::getenv("V4REF_GIT_SHA") != nullptr ? std::getenv("V4REF_GIT_SHA") : "unknown";
  std::string dev_tag = prop.name;
  for (char& c : dev_tag)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  if (o.out.empty()) o.out = "reports/data/compressor-" + dev_tag + "-" + sha + ".json";
  Buf scratch(kScratchBytes);
  std::vector<Result> results;

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
      if (!o.filter.empty() && name.find(o.filter) == std::string::npos) continue;
      Result r;
      r.name = name;
      try {
        const cmp::Dims dm = cmp::make_dims(ratio, kd.width, kd.kind);
        const std::int64_t E = T / ratio;
        const Weights w(dm, E);
        const double bytes = cuda::compressor_prefill_bytes(dm, T);
        const double t_roof_us = bytes / kHbm * 1e6;
        const bool graph = t_roof_us < 200.0;
        const int sets =
            graph ? static_cast<int>(std::clamp(std::ceil(2 * kL2Bytes / bytes), 1.0, 20.0)) : 1;
        std::vector<std::unique_ptr<Buf>> a, g, cache;
        for (int i = 0; i < sets; ++i) {
          a.push_back(std::make_unique<Buf>(static_cast<std::size_t>(T * dm.cw()) * 4));
          g.push_back(std::make_unique<Buf>(static_cast<std::size_t>(T * dm.cw()) * 4));
          cache.push_back(std::make_unique<Buf>(static_cast<std::size_t>(E * dm.row_bytes())));
          fill_f32<<<1024, 256>>>(a.back()->as<float>(), T * dm.cw(), 0xA000u + i, 3.4f);
          fill_f32<<<1024, 256>>>(g.back()->as<float>(), T * dm.cw(), 0xB000u + i, 3.4f);
        }
        V4REF_CUDA_CHECK(cudaDeviceSynchronize());
        const auto launch = [&](int i) {
          cuda::CompressorPrefillLaunch p;
          p.dm = dm;
          p.tokens = T;
          p.a = a[static_cast<std::size_t>(i)]->as<float>();
          p.g = g[static_cast<std::size_t>(i)]->as<float>();
          p.ape = w.d_ape.as<float>();
          p.norm_w = w.d_norm.as<float>();
          p.cos = w.d_cos.as<float>();
          p.sin = w.d_sin.as<float>();
          p.cache = cache[static_cast<std::size_t>(i)]->as<std::uint8_t>();
          cuda::compressor_prefill(p, g_stream);
        };
        g_stream = nullptr;
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
          cmp::executor_prefill(p, rows.data());
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
        r.us = time_us(o, scratch.p, sets, graph, launch);
        const double t = r.us * 1e-6;
        r.counters = {{"tokens", static_cast<double>(T)},
                      {"entries", static_cast<double>(E)},
                      {"bytes", bytes},
                      {"GBps", bytes / t * 1e-9},
                      {"pct_hbm", 100.0 * bytes / (t * kHbm)},
                      {"pct_roof", 100.0 * t_roof_us / r.us},
                      {"t_roof_us", t_roof_us},
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
      if (!o.filter.empty() && name.find(o.filter) == std::string::npos) continue;
      Result r;
      r.name = name;
      try {
        constexpr std::int64_t kB = 128;
        const cmp::Dims dm = cmp::make_dims(ratio, kd.width, kd.kind);
        const std::int64_t entries_max = 4;
        const Weights w(dm, entries_max);
        const std::int64_t t = complete ? ratio - 1 : 0;  // position of every sequence
        const std::size_t state_floats = static_cast<std::size_t>(kB * dm.state_rows() * dm.cw());
        Buf a(static_cast<std::size_t>(kB * dm.cw()) * 4),
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
          cuda::CompressorDecodeLaunch p;
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
          cuda::compressor_decode(p, g_stream);
        };
        // Correct before fast: sequence 0's step against the executor from the same state.
        cmp::DecodeState st(dm);
        st.kv = download<float>(kv.p, 0, st.kv.size());
        st.score = download<float>(sc.p, 0, st.score.size());
        const auto ha = download<float>(a.p, 0, static_cast<std::size_t>(dm.cw()));
        const auto hg = download<float>(g.p, 0, static_cast<std::size_t>(dm.cw()));
        g_stream = nullptr;
        launch(0);
        V4REF_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<std::uint8_t> row(static_cast<std::size_t>(dm.row_bytes()));
        const bool done = cmp::executor_decode_step(
            dm, st, t, ha.data(), hg.data(), w.ape.data(), w.norm_w.data(), 1e-6f,
            cmp::RopeRow{w.cos.data(), w.sin.data()}, row.data());
        if (done && download<std::uint8_t>(cache.p, 0, row.size()) != row)
          throw std::runtime_error(
              "correctness gate failed: decode cache row differs from the executor");
        if (download<float>(kv.p, 0, st.kv.size()) != st.kv)
          throw std::runtime_error(
              "correctness gate failed: decode state differs from the executor");
        r.us = time_us(o, scratch.p, 1, true, launch);
        const double bytes = cuda::compressor_decode_bytes(dm, kB, complete ? kB : 0);
        r.counters = {{"batch", static_cast<double>(kB)},
                      {"bytes", bytes},
                      {"GBps", bytes / (r.us * 1e-6) * 1e-9},
                      {"pct_hbm", 100.0 * bytes / (r.us * 1e-6 * kHbm)},
                      {"t_roof_us", bytes / kHbm * 1e6},
                      {"target_us", kDecodeTargetUs},
                      {"graph", 1.0},
                      {"cold_l2", o.warm ? 0.0 : 1.0}};
        std::printf("%-34s %10.2f us\n", name.c_str(), r.us);
      } catch (const std::exception& e) {
        r.error = e.what();
        std::printf("%-34s ERROR %s\n", name.c_str(), e.what());
      }
      results.push_back(r);
    }

  std::ostringstream js;
  std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  js << "{\n  \"context\": {\"date\": \"" << date
     << "\", \"executable\": \"compressor_bench\", \"device\": \"" << json_escape(prop.name)
     << "\", \"sm_count\": " << prop.multiProcessorCount << ", \"cuda_driver\": " << driver
     << ", \"cuda_runtime\": " << runtime << ", \"git_sha\": \"" << json_escape(sha)
     << "\", \"reps\": " << o.reps << ", \"cold_l2\": " << (o.warm ? "false" : "true")
     << "},\n  \"benchmarks\": [";
  bool first = true;
  for (const Result& r : results) {
    js << (first ? "\n" : ",\n") << "    {\"name\": \"" << json_escape(r.name)
       << "\", \"run_name\": \"" << json_escape(r.name)
       << "\", \"run_type\": \"aggregate\", \"aggregate_name\": \"median\", \"repetitions\": "
       << o.reps << ", \"iterations\": 1, \"time_unit\": \"us\"";
    if (!r.error.empty()) {
      js << ", \"error_occurred\": true, \"error_message\": \"" << json_escape(r.error) << "\"";
    } else {
      js << ", \"real_time\": " << r.us << ", \"cpu_time\": " << r.us;
      for (const auto& [k, v] : r.counters) js << ", \"" << k << "\": " << v;
    }
    js << "}";
    first = false;
  }
  js << "\n  ]\n}\n";
  const std::filesystem::path out(o.out);
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
  std::ofstream(out) << js.str();
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}
