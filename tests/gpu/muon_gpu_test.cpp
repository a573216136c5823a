// The CUDA Muon path (cuda/src/muon_ns_bf16_sm90.cu) on the device against the double
// reference: the differential cases of muon_executor_test.cpp with the same gates, bitwise
// reruns, batched vs one-by-one equality, the device sum of squares against the executor's
// (same partial structure: bitwise), and three Muon steps on tiny-flash (docs/muon.md §4).
// Skips without a device unless V4REF_REQUIRE_GPU=1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/muon.hpp"
#include "v4ref/cuda/muon_ns_tile.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/muon.hpp"
#include "../common/muon_test_support.hpp"

namespace v4ref {
namespace {

using test::max_abs;
using test::rel_fro;
using test::rounding_of_kernel;
using test::ulp_bf16;

namespace ns = cuda::ns;
using ref::MuonMatrix;

#define V4REF_REQUIRE_DEVICE()                                                     \
  do {                                                                             \
    std::string why;                                                               \
    if (!cuda::device_available(&why)) {                                           \
      const char* req = std::getenv("V4REF_REQUIRE_GPU");                          \
      if (req != nullptr && std::string(req) == "1")                               \
        FAIL() << "V4REF_REQUIRE_GPU=1 but no usable CUDA device: " << why;        \
      GTEST_SKIP() << "no CUDA device (" << why << "); set V4REF_REQUIRE_GPU=1 to fail"; \
    }                                                                              \
  } while (0)

struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

std::uint64_t seed_of(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

std::vector<float> random_fp32(std::int64_t count, std::uint64_t seed, double sd) {
  Rng rng{seed};
  std::vector<float> v(static_cast<std::size_t>(count));
  for (float& x : v) x = static_cast<float>(sd * rng.normal());
  return v;
}

MuonMatrix slice(const std::vector<float>& v, std::int64_t j, std::int64_t r, std::int64_t c) {
  MuonMatrix m(r, c);
  for (std::int64_t i = 0; i < r * c; ++i) m.data[static_cast<std::size_t>(i)] = v[static_cast<std::size_t>(j * r * c + i)];
  return m;
}
MuonMatrix decode_slice(const std::vector<std::uint16_t>& v, std::int64_t j, std::int64_t r, std::int64_t c) {
  MuonMatrix m(r, c);
  for (std::int64_t i = 0; i < r * c; ++i)
    m.data[static_cast<std::size_t>(i)] = fmt::bf16_to_double(v[static_cast<std::size_t>(j * r * c + i)]);
  return m;
}



struct Case {
  std::string name;
  std::int64_t rows, cols;
};

std::vector<Case> cases() {
  std::vector<Case> v = {{"wide_64x128", 64, 128}, {"tall_256x96", 256, 96}, {"tall_96x48", 96, 48},
                         {"square_80x80", 80, 80}, {"odd_33x257", 33, 257}};
  for (const ref::MatrixShapeCount& s : ref::muon_matrix_shapes(preset_config("tiny-flash")))
    if (s.rows * s.cols >= 64 * 64 && s.rows * s.cols <= 256 * 128)
      v.push_back({"tiny_flash_" + std::to_string(s.rows) + "x" + std::to_string(s.cols), s.rows, s.cols});
  return v;
}

constexpr std::int64_t kBatch = 3;  // same-shape matrices per launch

class MuonGpuDiff : public ::testing::TestWithParam<Case> {};

// Same gates as MuonExecutorDiff (c = 2 baseline gate vs Rq and vs Rx, elementwise form, loose
// rel_F <= 2e-2), per matrix of a batched launch.
TEST_P(MuonGpuDiff, BaselineAndLooseGates) {
  V4REF_REQUIRE_DEVICE();
  const Case& c = GetParam();
  const std::uint64_t seed = seed_of("muon_ns/" + c.name);
  const std::vector<float> u = random_fp32(kBatch * c.rows * c.cols, seed, 1.0);
  const std::vector<std::uint16_t> out =
      cuda::newton_schulz_bf16_host(u, kBatch, c.rows, c.cols, cuda::v4_ns_stages(), 1e-7f);
  const ref::NsSchedule sched = ref::v4_ns_schedule();
  for (std::int64_t j = 0; j < kBatch; ++j) {
    const MuonMatrix um = slice(u, j, c.rows, c.cols);
    const MuonMatrix rx = ref::newton_schulz(um, sched);
    const MuonMatrix rq = ref::newton_schulz(um, sched, ref::kNsEps, rounding_of_kernel());
    const MuonMatrix b = ref::newton_schulz(um, sched, ref::kNsEps, rounding_of_kernel(), ref::NsAccumulate::kFloat);
    const MuonMatrix k = decode_slice(out, j, c.rows, c.cols);
    for (double x : k.data) ASSERT_TRUE(std::isfinite(x)) << c.name << " matrix " << j;
    double amax = 0;
    for (double x : rq.data) amax = std::max(amax, std::abs(x));
    const double floor_f = 2 * ulp_bf16(amax) / ref::frobenius_norm(rq);
    const double k_rq = rel_fro(k, rq), b_rq = rel_fro(b, rq), k_rx = rel_fro(k, rx), b_rx = rel_fro(b, rx);
    std::printf("%-24s[%lld] seed=0x%016llx relF K/Rq %.3e B/Rq %.3e K/Rx %.3e B/Rx %.3e\n", c.name.c_str(),
                static_cast<long long>(j), static_cast<unsigned long long>(seed), k_rq, b_rq, k_rx, b_rx);
    EXPECT_LE(k_rq, 2 * b_rq + floor_f) << c.name << "[" << j << "] seed " << seed;
    EXPECT_LE(k_rx, 2 * b_rx + floor_f) << c.name << "[" << j << "] seed " << seed;
    const double mb = max_abs(b, rq);
    double worst = 0;
    for (std::size_t i = 0; i < k.data.size(); ++i)
      worst = std::max(worst, std::abs(k.data[i] - rq.data[i]) / (2 * mb + 2 * ulp_bf16(rq.data[i])));
    EXPECT_LE(worst, 1.0) << c.name << "[" << j << "]: bound ratio";
    EXPECT_LE(k_rx, 2e-2) << c.name << "[" << j << "]";
  }
}

// 20 reruns give the same bits; the batch computed one matrix at a time gives the same bits
// (no split-K: the handle has no workspace); the per-matrix cuBLAS baseline passes the loose
// gate against the batched result's reference.
TEST_P(MuonGpuDiff, DeterminismAndBatchInvariance) {
  V4REF_REQUIRE_DEVICE();
  const Case& c = GetParam();
  const std::vector<float> u = random_fp32(kBatch * c.rows * c.cols, seed_of("muon_det/" + c.name), 1.0);
  const auto run = [&](cuda::NsPath p) {
    return cuda::newton_schulz_bf16_host(u, kBatch, c.rows, c.cols, cuda::v4_ns_stages(), 1e-7f, p);
  };
  const std::vector<std::uint16_t> first = run(cuda::NsPath::kBatched);
  for (int r = 1; r < 20; ++r) {
    const std::vector<std::uint16_t> again = run(cuda::NsPath::kBatched);
    const auto mm = std::mismatch(first.begin(), first.end(), again.begin());
    ASSERT_TRUE(mm.first == first.end())
        << c.name << " rerun " << r << ": first difference at element " << (mm.first - first.begin())
        << " (" << *mm.first << " vs " << *mm.second << ")";
  }
  const std::vector<std::uint16_t> single = run(cuda::NsPath::kOneByOne);
  const auto mm = std::mismatch(first.begin(), first.end(), single.begin());
  EXPECT_TRUE(mm.first == first.end()) << c.name << ": batched vs one-by-one differ first at element "
                                       << (mm.first - first.begin());
  const std::vector<std::uint16_t> base = run(cuda::NsPath::kPerMatrixCublas);
  for (std::int64_t j = 0; j < kBatch; ++j) {
    const MuonMatrix rx = ref::newton_schulz(slice(u, j, c.rows, c.cols), ref::v4_ns_schedule());
    EXPECT_LE(rel_fro(decode_slice(base, j, c.rows, c.cols), rx), 2e-2) << c.name << " baseline";
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, MuonGpuDiff, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// The device sum of squares uses the executor's partial structure and tree: bitwise equal.
TEST(MuonGpu, SumOfSquaresBitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  for (const auto& [r, c] : std::vector<std::pair<std::int64_t, std::int64_t>>{{64, 128}, {300, 257}, {1, 5}}) {
    const std::vector<float> u = random_fp32(2 * r * c, seed_of("muon_sumsq"), 1.0);
    const std::vector<float> dev = cuda::sumsq_host(u, 2, r, c);
    for (std::int64_t j = 0; j < 2; ++j)
      EXPECT_EQ(dev[static_cast<std::size_t>(j)], ns::executor_sumsq(u.data() + j * r * c, r * c)) << r << "x" << c;
  }
}

// Three Muon steps on two matrices of every tiny-flash Muon shape: device vs the double
// reference, with the bounds of MuonExecutorEndToEnd.
TEST(MuonGpu, TinyFlashThreeSteps) {
  V4REF_REQUIRE_DEVICE();
  const ModelConfig cfg = preset_config("tiny-flash");
  ref::MuonHyper h;
  h.lr = 0.02;
  h.momentum = 0.95;
  h.weight_decay = 0.1;
  h.rms_scale = 0.2;
  constexpr int kSteps = 3;
  constexpr std::int64_t kMats = 2;
  constexpr double kU32 = 0x1.0p-24;
  for (const ref::MatrixShapeCount& s : ref::muon_matrix_shapes(cfg)) {
    const std::string name = "muon_e2e/" + cfg.name + "/" + std::to_string(s.rows) + "x" + std::to_string(s.cols);
    const std::int64_t count = s.rows * s.cols;
    std::vector<float> wk = random_fp32(kMats * count, seed_of(name + "/w"), 1.0 / std::sqrt(static_cast<double>(s.cols)));
    std::vector<float> mk(wk.size(), 0.0f);
    std::vector<MuonMatrix> wr, mr;
    for (std::int64_t j = 0; j < kMats; ++j) {
      wr.push_back(slice(wk, j, s.rows, s.cols));
      mr.emplace_back(s.rows, s.cols);
    }
    const ns::StepScalars sc = ns::step_scalars(h.lr, h.momentum, h.weight_decay, h.rms_scale, s.rows, s.cols, h.nesterov);
    const double step = h.lr * ref::muon_update_scale(h, s.rows, s.cols);
    std::vector<double> allowed(wk.size(), 0.0), gabs(wk.size(), 0.0);
    for (int t = 0; t < kSteps; ++t) {
      const std::vector<float> g = random_fp32(kMats * count, seed_of(name + "/g" + std::to_string(t)), 1e-2);
      const std::vector<std::uint16_t> ok =
          cuda::muon_step_host(wk, mk, g, kMats, s.rows, s.cols, sc, cuda::v4_ns_stages(), 1e-7f);
      for (std::int64_t j = 0; j < kMats; ++j) {
        const MuonMatrix orf = ref::muon_step(wr[static_cast<std::size_t>(j)], mr[static_cast<std::size_t>(j)],
                                              slice(g, j, s.rows, s.cols), h);
        const MuonMatrix okj = decode_slice(ok, j, s.rows, s.cols);
        EXPECT_LE(rel_fro(okj, orf), 2e-2) << name << "[" << j << "] step " << t;
        for (std::int64_t i = 0; i < count; ++i) {
          const auto e = static_cast<std::size_t>(j * count + i);
          const auto l = static_cast<std::size_t>(i);
          allowed[e] += 8 * kU32 * std::abs(wr[static_cast<std::size_t>(j)].data[l]) +
                        step * std::abs(okj.data[l] - orf.data[l]);
          gabs[e] = h.momentum * gabs[e] + std::abs(static_cast<double>(g[e]));
        }
      }
    }
    double ratio_w = 0, ratio_m = 0;
    for (std::int64_t j = 0; j < kMats; ++j)
      for (std::int64_t i = 0; i < count; ++i) {
        const auto e = static_cast<std::size_t>(j * count + i);
        const auto l = static_cast<std::size_t>(i);
        ratio_w = std::max(ratio_w, std::abs(static_cast<double>(wk[e]) - wr[static_cast<std::size_t>(j)].data[l]) / allowed[e]);
        ratio_m = std::max(ratio_m, std::abs(static_cast<double>(mk[e]) - mr[static_cast<std::size_t>(j)].data[l]) / (2 * kSteps * kU32 * gabs[e]));
      }
    EXPECT_LE(ratio_w, 1.0) << name;
    EXPECT_LE(ratio_m, 1.0) << name;
  }
}

}  // namespace
}  // namespace v4ref
