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

#include "../common/gpu_test_support.hpp"
#include "../common/muon_test_support.hpp"
#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/muon.hpp"
#include "v4ref/cuda/muon_ns_tile.hpp"
#include "v4ref/cuda/muon_simt.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/muon.hpp"

namespace v4ref {
namespace {

using test::NsCase;

namespace ns = cuda::ns;
using ref::MuonMatrix;

MuonMatrix slice(const std::vector<float>& v, std::int64_t j, std::int64_t r, std::int64_t c) {
  MuonMatrix m(r, c);
  for (std::int64_t i = 0; i < r * c; ++i)
    m.data[static_cast<std::size_t>(i)] = v[static_cast<std::size_t>(j * r * c + i)];
  return m;
}
MuonMatrix decode_slice(const std::vector<std::uint16_t>& v, std::int64_t j, std::int64_t r,
                        std::int64_t c) {
  MuonMatrix m(r, c);
  for (std::int64_t i = 0; i < r * c; ++i)
    m.data[static_cast<std::size_t>(i)] =
        fmt::bf16_to_double(v[static_cast<std::size_t>(j * r * c + i)]);
  return m;
}

std::vector<NsCase> cases() {
  std::vector<NsCase> v = test::ns_diff_cases();
  v.push_back({"odd_33x257", 33, 257});
  return v;
}

// Matrices first .. first + count − 1 of case c, one buffer [count, rows, cols].
std::vector<float> batch_input(const NsCase& c, std::uint64_t global, int first,
                               std::int64_t count) {
  std::vector<float> u;
  for (int j = first; j < first + count; ++j) {
    const std::vector<float> one = test::ns_case_input(c, global, j);
    u.insert(u.end(), one.begin(), one.end());
  }
  return u;
}

constexpr std::int64_t kBatch = 3;  // same-shape matrices per launch

class MuonGpuDiff : public ::testing::TestWithParam<NsCase> {};

// The gates of MuonExecutorDiff (docs/muon.md §4), per matrix of a batched launch. Matrix 0 of
// each case is the executor test's input.
TEST_P(MuonGpuDiff, BaselineAndLooseGates) {
  V4REF_REQUIRE_DEVICE();
  const NsCase& c = GetParam();
  const std::uint64_t global = test::global_seed();
  const std::vector<float> u = batch_input(c, global, 0, kBatch);
  const std::vector<std::uint16_t> out =
      cuda::newton_schulz_bf16_host(u, kBatch, c.rows, c.cols, cuda::v4_ns_stages(), 1e-7f);
  for (std::int64_t j = 0; j < kBatch; ++j) {
    const MuonMatrix um = slice(u, j, c.rows, c.cols);
    const test::NsReferences r = test::ns_references(um);
    const MuonMatrix k = decode_slice(out, j, c.rows, c.cols);
    for (double x : k.data) ASSERT_TRUE(std::isfinite(x)) << c.name << " matrix " << j;
    const test::NsErrorModel md = test::ns_error_model(um, ref::v4_ns_schedule());
    const test::NsGateReport g = test::ns_gates(md, k, r.rq, r.b, r.rx);
    std::printf("%-24s[%lld] V4REF_SEED=%llu %s\n", c.name.c_str(), static_cast<long long>(j),
                static_cast<unsigned long long>(global), g.line().c_str());
    const std::string where =
        "muon_ns/" + c.name + "[" + std::to_string(j) + "] V4REF_SEED=" + std::to_string(global);
    EXPECT_LE(g.tight_ratio, 1.0) << where << ": relF(K, Rq) over the baseline allowance";
    EXPECT_LE(g.elem_ratio, 1.0) << where << ": |K − Rq| elementwise over the baseline allowance";
    EXPECT_LE(g.loose_ratio, 1.0) << where << ": relF(K, Rx) over 2·relF(B, Rx) + floor";
    EXPECT_LE(g.model_ratio, 1.0) << where << ": relF(K, Rx) over 4·(model)";
    EXPECT_GT(g.k_rx_all, 0.0) << where << ": bf16 path identical to fp64 is suspicious";
  }
}

// 20 reruns give the same bits; the batch computed one matrix at a time gives the same bits
// (no split-K: the handle has no workspace); the per-matrix cuBLAS baseline passes the loose
// model gate against Rx (on the resolved rows, as K does). Matrices 3..5 of the case.
TEST_P(MuonGpuDiff, DeterminismAndBatchInvariance) {
  V4REF_REQUIRE_DEVICE();
  const NsCase& c = GetParam();
  const std::uint64_t global = test::global_seed();
  const std::vector<float> u = batch_input(c, global, kBatch, kBatch);
  const auto run = [&](cuda::NsPath p) {
    return cuda::newton_schulz_bf16_host(u, kBatch, c.rows, c.cols, cuda::v4_ns_stages(), 1e-7f, p);
  };
  const std::vector<std::uint16_t> first = run(cuda::NsPath::kBatched);
  for (int r = 1; r < 20; ++r) {
    const std::vector<std::uint16_t> again = run(cuda::NsPath::kBatched);
    const auto mm = std::mismatch(first.begin(), first.end(), again.begin());
    ASSERT_TRUE(mm.first == first.end())
        << c.name << " rerun " << r << ": first difference at element "
        << (mm.first - first.begin()) << " (" << *mm.first << " vs " << *mm.second << ")";
  }
  const std::vector<std::uint16_t> single = run(cuda::NsPath::kOneByOne);
  const auto mm = std::mismatch(first.begin(), first.end(), single.begin());
  EXPECT_TRUE(mm.first == first.end())
      << c.name << ": batched vs one-by-one differ first at element " << (mm.first - first.begin());
  const std::vector<std::uint16_t> base = run(cuda::NsPath::kPerMatrixCublas);
  for (std::int64_t j = 0; j < kBatch; ++j) {
    const MuonMatrix um = slice(u, j, c.rows, c.cols);
    const MuonMatrix rx = ref::newton_schulz(um, ref::v4_ns_schedule());
    const test::NsErrorModel md = test::ns_error_model(um, ref::v4_ns_schedule());
    EXPECT_LE(test::resolved_rel_fro(md, decode_slice(base, j, c.rows, c.cols), rx),
              test::kNsModelKappa * md.rel_resolved)
        << c.name << "[" << j << "] baseline, V4REF_SEED=" << global;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, MuonGpuDiff, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<NsCase>& i) { return i.param.name; });

// The device sum of squares uses the executor's partial structure and tree: bitwise equal.
TEST(MuonGpu, SumOfSquaresBitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  for (const auto& [r, c] :
       std::vector<std::pair<std::int64_t, std::int64_t>>{{64, 128}, {300, 257}, {1, 5}}) {
    const std::vector<float> u = test::random_fp32(
        2 * r * c, derive_seed("muon_sumsq", "u", test::shape_string(r, c), test::global_seed()),
        1.0);
    const std::vector<float> dev = cuda::sumsq_host(u, 2, r, c);
    for (std::int64_t j = 0; j < 2; ++j)
      EXPECT_EQ(dev[static_cast<std::size_t>(j)], cuda::muon_sumsq_simt(u.data() + j * r * c, 1, r * c, 1e-7f)[0])
          << r << "x" << c;
  }
}

// Three Muon steps on two matrices of every tiny-flash Muon shape: device vs the double
// reference, with the bounds of MuonExecutorEndToEnd (O: loose model gate of its input U).
TEST(MuonGpu, TinyFlashThreeSteps) {
  V4REF_REQUIRE_DEVICE();
  const ModelConfig cfg = preset_config("tiny-flash");
  const ref::MuonHyper h = test::end_to_end_hyper();
  constexpr int kSteps = 3;
  constexpr std::int64_t kMats = 2;
  constexpr double kU32 = 0x1.0p-24;
  for (const ref::MatrixShapeCount& s : ref::muon_matrix_shapes(cfg)) {
    const std::string shape = test::shape_string(s.rows, s.cols);
    const std::string name = "muon_e2e/" + cfg.name + "/" + shape;
    const std::uint64_t global = test::global_seed();
    const std::int64_t count = s.rows * s.cols;
    std::vector<float> wk = test::random_fp32(kMats * count, derive_seed(name, "w", shape, global),
                                              1.0 / std::sqrt(static_cast<double>(s.cols)));
    std::vector<float> mk(wk.size(), 0.0f);
    std::vector<MuonMatrix> wr, mr;
    for (std::int64_t j = 0; j < kMats; ++j) {
      wr.push_back(slice(wk, j, s.rows, s.cols));
      mr.emplace_back(s.rows, s.cols);
    }
    const ns::StepScalars sc =
        ns::step_scalars(h.lr, h.momentum, h.weight_decay, h.rms_scale, s.rows, s.cols, h.nesterov);
    const double step = h.lr * ref::muon_update_scale(h, s.rows, s.cols);
    std::vector<double> allowed(wk.size(), 0.0), gabs(wk.size(), 0.0);
    for (int t = 0; t < kSteps; ++t) {
      const std::vector<float> g = test::random_fp32(
          kMats * count, derive_seed(name, "g" + std::to_string(t), shape, global), 1e-2);
      const std::vector<std::uint16_t> ok =
          cuda::muon_step_host(wk, mk, g, kMats, s.rows, s.cols, sc, cuda::v4_ns_stages(), 1e-7f);
      for (std::int64_t j = 0; j < kMats; ++j) {
        const auto js = static_cast<std::size_t>(j);
        const MuonMatrix ur =
            test::step_ns_input(mr[js], g.data() + j * count, h);  // before the step
        const MuonMatrix orf = ref::muon_step(wr[js], mr[js], slice(g, j, s.rows, s.cols), h);
        const MuonMatrix okj = decode_slice(ok, j, s.rows, s.cols);
        const test::NsErrorModel md = test::ns_error_model(ur, h.schedule, h.ns_eps);
        EXPECT_LE(test::resolved_rel_fro(md, okj, orf), test::kNsModelKappa * md.rel_resolved)
            << name << "[" << j << "] step " << t << " V4REF_SEED=" << global;
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
        ratio_w = std::max(ratio_w, std::abs(static_cast<double>(wk[e]) -
                                             wr[static_cast<std::size_t>(j)].data[l]) /
                                        allowed[e]);
        ratio_m = std::max(ratio_m, std::abs(static_cast<double>(mk[e]) -
                                             mr[static_cast<std::size_t>(j)].data[l]) /
                                        (2 * kSteps * kU32 * gabs[e]));
      }
    EXPECT_LE(ratio_w, 1.0) << name;
    EXPECT_LE(ratio_m, 1.0) << name;
  }
}

}  // namespace
}  // namespace v4ref
