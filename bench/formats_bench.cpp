// Throughput of the reference block quantizer and of fp4 nibble decoding (v4-forward.md §2.5,
// §15.5): q8_fake_quant over 1M doubles (blocks 128 and 64) and the scale-free decode of 1M
// packed e2m1 nibbles (the inner loop of the fp4 expert dequantisation). Bytes are input bytes.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/quant.hpp"

namespace {

constexpr std::size_t kElements = std::size_t{1} << 20;  // 1M

std::vector<double> activations() {
  v4ref::Rng rng(0xBE7C);
  std::vector<double> x(kElements);  // [1M] N(0, 1)
  for (double& v : x) v = rng.normal();
  return x;
}

void BM_q8_fake_quant(benchmark::State& state) {
  const int block = static_cast<int>(state.range(0));
  const std::vector<double> x = activations();
  std::vector<double> out(x.size());
  for (auto _ : state) {
    v4ref::ref::q8_fake_quant(x, block, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(x.size() * sizeof(double)));
}
BENCHMARK(BM_q8_fake_quant)->Arg(128)->Arg(64)->Unit(benchmark::kMillisecond);

void BM_fp4_nibble_decode(benchmark::State& state) {
  v4ref::Rng rng(0xF4DE);
  std::vector<std::uint8_t> packed(kElements / 2);  // [1M / 2] two nibbles per byte
  for (auto& b : packed) b = static_cast<std::uint8_t>(rng.next_u64());
  std::vector<double> out(kElements);  // [1M]
  for (auto _ : state) {
    for (std::size_t k = 0; k < packed.size(); ++k) {
      out[2 * k] = v4ref::fmt::e2m1_to_double(v4ref::fmt::fp4_low(packed[k]));
      out[2 * k + 1] = v4ref::fmt::e2m1_to_double(v4ref::fmt::fp4_high(packed[k]));
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(packed.size()));
}
BENCHMARK(BM_fp4_nibble_decode)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
