// The CUDA mHC kernels (cuda/src/mhc_bf16_sm90.cu) on the device (label gpu;
// docs/cuda-mhc-compressor.md §2.5). The CPU executor runs the kernels' own per-thread math and
// reduction order (mhc_tile.hpp) and passes every reference gate in
// tests/reference/mhc_executor_test.cpp (label cpu); here the device must reproduce the
// executor's outputs BIT FOR BIT on the same differential cases (synthetic Flash/Pro shapes,
// adversarial inputs, the tiny checkpoints' real weights), which carries every CPU gate over to
// the device. Plus: poisoned outputs with guard regions and both poison families, unchanged
// inputs, 20 bitwise reruns, grid and batch invariance (1..3 persistent clusters, many batches per
// cluster), cluster 8 vs 16, the standalone write-back, the exhaustive fp32 -> bf16 conversion
// check, and a direct reference gate on the checkpoint chain.
// Skips without a device unless V4REF_REQUIRE_GPU=1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../common/gpu_test_support.hpp"
#include "../common/mhc_inputs.hpp"
#include "v4ref/cuda/mhc_simt.hpp"
#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/mhc.hpp"
#include "v4ref/cuda/mhc_simt.hpp"
#include "v4ref/cuda/mhc_tile.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/mhc.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref {
namespace {

namespace mhc = cuda::mhc;
using test::MhcInputs;
using test::scale_streams;
using test::seed_from_env;
using test::synthetic_mhc_inputs;
using DiffCase = test::MhcCase;

// ---------------------------------------------------------------- device vs executor

struct ExecOut {
  std::vector<std::uint16_t> x_out, u;
  std::vector<float> coef, mu;
};

ExecOut executor(const mhc::Tiling& tl, const MhcInputs& in) {
  const auto T = static_cast<std::size_t>(in.tokens), D = static_cast<std::size_t>(in.d);
  ExecOut e;
  e.x_out.assign(in.fused ? T * 4 * D : 0, 0x7FC1);
  e.u.assign(T * D, 0x7FC1);
  e.coef.assign(T * 24, 0.0f);
  e.mu.assign(T * 24, 0.0f);
  cuda::MhcSimtOptions o;  // the kernel's own source in the SIMT executor, same cluster size
  o.cluster = tl.cluster;
  cuda::MhcSimtOutputs r = cuda::mhc_pre_simt(in.problem(), o);
  e.x_out = std::move(r.x_out);
  e.u = std::move(r.u);
  e.coef = std::move(r.coef);
  e.mu = std::move(r.mu);
  return e;
}

template <class T>
std::string first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size())
    return "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) {
      double x, y;
      if constexpr (sizeof(T) == 2) {
        x = fmt::bf16_to_double(static_cast<std::uint16_t>(a[i]));
        y = fmt::bf16_to_double(static_cast<std::uint16_t>(b[i]));
      } else {
        x = static_cast<double>(a[i]);
        y = static_cast<double>(b[i]);
      }
      return "first difference at element " + std::to_string(i) + ": " + std::to_string(x) +
             " vs " + std::to_string(y);
    }
  return "";
}

bool same_bits(const cuda::MhcHostOutputs& k, const ExecOut& e, const std::string& where) {
  const std::string dx = first_difference(k.x_out, e.x_out), du = first_difference(k.u, e.u),
                    dc = first_difference(k.coef, e.coef), dm = first_difference(k.mu, e.mu);
  EXPECT_EQ(dx, "") << where << ": x_out device vs executor";
  EXPECT_EQ(du, "") << where << ": u device vs executor";
  EXPECT_EQ(dc, "") << where << ": coef device vs executor";
  EXPECT_EQ(dm, "") << where << ": mu device vs executor";
  return dx.empty() && du.empty() && dc.empty() && dm.empty();
}

// The device run of a case against the executor with the launch's own tiling, both poison
// families, guards and inputs.
void device_case(const MhcInputs& in, const cuda::MhcOptions& opt) {
  const cuda::MhcHostOutputs a = cuda::mhc_pre_host(in.problem(), opt, 0x7FC1, 0x7FC0DEADu);
  const cuda::MhcHostOutputs b =
      cuda::mhc_pre_host(in.problem(), opt, 0x7F7F, fmt::float_bits(1e20f));
  const mhc::Tiling& tl = a.plan.tiling;
  const std::string where = in.name + " (cluster " + std::to_string(tl.cluster) + ", W " +
                            std::to_string(tl.warps) + ", chunks " + std::to_string(tl.chunks) +
                            ", " + std::to_string(a.plan.clusters) + " clusters, smem " +
                            std::to_string(a.plan.smem_bytes) +
                            " B) V4REF_SEED=" + std::to_string(seed_from_env());
  std::printf("%s\n", where.c_str());
  EXPECT_TRUE(a.guards_intact && b.guards_intact) << where << ": a guard region was written";
  EXPECT_TRUE(a.inputs_intact && b.inputs_intact) << where << ": an input changed";
  same_bits(a, executor(tl, in), where);
  EXPECT_EQ(first_difference(a.x_out, b.x_out) + first_difference(a.u, b.u) +
                first_difference(a.coef, b.coef),
            "")
      << where << ": the result depends on the poison";
}

// The executor test's synthetic cases, plus longer ones where each cluster runs several batches.
std::vector<DiffCase> diff_cases() {
  return {
      {"flash_fused_T33_S16", 33, 4096, true, 16},     {"flash_fused_T17_S8", 17, 4096, true, 8},
      {"flash_pre_T17_S16", 17, 4096, false, 16},      {"pro_fused_T33_S16", 33, 7168, true, 16},
      {"pro_pre_T1_S16", 1, 7168, false, 16},          {"d512_fused_T32_S16", 32, 512, true, 16},
      {"d512_fused_T97_S4", 97, 512, true, 4},         {"d128_fused_T65_S1", 65, 128, true, 1},
      {"flash_fused_T1000_S16", 1000, 4096, true, 16}, {"pro_fused_T520_S16", 520, 7168, true, 16}};
}

class MhcGpuDiff : public ::testing::TestWithParam<DiffCase> {};

TEST_P(MhcGpuDiff, BitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  const DiffCase& c = GetParam();
  cuda::MhcOptions opt;
  opt.cluster = c.cluster;
  device_case(synthetic_mhc_inputs("mhc/" + c.name, c.tokens, c.d, c.fused), opt);
}

INSTANTIATE_TEST_SUITE_P(Cases, MhcGpuDiff, ::testing::ValuesIn(diff_cases()),
                         [](const ::testing::TestParamInfo<DiffCase>& i) { return i.param.name; });

TEST(MhcGpuAdversarial, BitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  const int huge[4] = {40, 40, 40, 40}, tiny[4] = {-120, -120, -120, -120},
            mixed[4] = {30, 0, 0, -30};
  for (const auto& [name, e, fused] :
       {std::make_tuple("huge", huge, true), std::make_tuple("tiny", tiny, false),
        std::make_tuple("mixed", mixed, true)}) {
    MhcInputs in = synthetic_mhc_inputs(std::string("mhc/adv_") + name, 33, 512, fused);
    scale_streams(in, e);
    device_case(in, {});
  }
  MhcInputs spiky = synthetic_mhc_inputs("mhc/adv_spiky", 40, 512, true);
  spiky.s.scale[2] = 30.0f;
  for (int i = 8; i < 24; ++i)
    spiky.base[static_cast<std::size_t>(i)] = (i % 3 == 0) ? 8.0f : -8.0f;
  device_case(spiky, {});
}

// 20 runs give the same bits, for every persistent grid size (1, 2, 3 clusters: 33, 17, 11
// batches per cluster) and the automatic one: the double-buffered pipeline across batches never
// mixes two batches up.
TEST(MhcGpu, TwentyBitwiseRerunsAndGridInvariance) {
  V4REF_REQUIRE_DEVICE();
  for (const std::int64_t d : {4096, 7168}) {
    const MhcInputs in = synthetic_mhc_inputs("mhc/reruns_" + std::to_string(d), 1050, d, true);
    const cuda::MhcHostOutputs first = cuda::mhc_pre_host(in.problem());
    same_bits(first, executor(first.plan.tiling, in), in.name + " vs executor");
    for (int r = 1; r < 20; ++r) {
      cuda::MhcOptions opt;
      opt.max_clusters = r <= 3 ? r : 0;
      const cuda::MhcHostOutputs again = cuda::mhc_pre_host(in.problem(), opt);
      ASSERT_EQ(again.plan.tiling.cluster, first.plan.tiling.cluster);
      EXPECT_EQ(first_difference(first.x_out, again.x_out) + first_difference(first.u, again.u) +
                    first_difference(first.coef, again.coef) + first_difference(first.mu, again.mu),
                "")
          << in.name << " rerun " << r << " (" << again.plan.clusters << " clusters)";
    }
  }
}

// A token alone gives the bits it gets inside 1050 tokens (no dependence on T or on its batch).
TEST(MhcGpu, BatchInvariance) {
  V4REF_REQUIRE_DEVICE();
  const MhcInputs all = synthetic_mhc_inputs("mhc/gpu_batch_invariance", 1050, 4096, true);
  const cuda::MhcHostOutputs ka = cuda::mhc_pre_host(all.problem());
  for (const std::int64_t t : {0, 31, 32, 1049}) {
    MhcInputs one = all;
    one.tokens = 1;
    one.x.assign(all.x.begin() + t * 4 * 4096, all.x.begin() + (t + 1) * 4 * 4096);
    one.f.assign(all.f.begin() + t * 4096, all.f.begin() + (t + 1) * 4096);
    one.coef_in.assign(all.coef_in.begin() + t * 24, all.coef_in.begin() + (t + 1) * 24);
    const cuda::MhcHostOutputs k1 = cuda::mhc_pre_host(one.problem());
    EXPECT_TRUE(std::equal(k1.u.begin(), k1.u.end(), ka.u.begin() + t * 4096)) << "token " << t;
    EXPECT_EQ(0, std::memcmp(k1.coef.data(), ka.coef.data() + t * 24, 24 * 4)) << "token " << t;
  }
}

TEST(MhcGpu, StandaloneWriteBackBitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  for (const std::int64_t d : {512, 4096, 7168}) {
    const MhcInputs in = synthetic_mhc_inputs("mhc/post_only_" + std::to_string(d), 77, d, true);
    const std::vector<std::uint16_t> k = cuda::mhc_post_host(in.problem());
    const std::vector<std::uint16_t> e = cuda::mhc_post_simt(in.problem());
    EXPECT_EQ(first_difference(k, e), "") << in.name;
  }
}

TEST(MhcGpu, Bf16ConversionExhaustive) {
  V4REF_REQUIRE_DEVICE();
  EXPECT_EQ(cuda::mhc_bf16_conversion_mismatches(), 0u);
}

// Which cluster size the device schedules (16 needs the non-portable cluster attribute).
TEST(MhcGpu, PlanOfTheV4Shapes) {
  V4REF_REQUIRE_DEVICE();
  for (const std::int64_t d : {4096, 7168})
    for (const std::int64_t T : {1, 128, 8192, 65536}) {
      const cuda::MhcPlan p = cuda::mhc_plan(T, d, true);
      std::printf(
          "d=%lld T=%lld: cluster %d, W %d, chunks %d, %d clusters, %d threads, smem %zu B\n",
          static_cast<long long>(d), static_cast<long long>(T), p.tiling.cluster, p.tiling.warps,
          p.tiling.chunks, p.clusters, p.threads, p.smem_bytes);
      EXPECT_GE(p.clusters, 1);
    }
}

// The tiny checkpoints' chain (as in MhcExecutorCheckpoint): every launch bitwise equal to the
// executor, and the last sub-block's u checked directly against the double reference run on the
// device's own streams and coefficients (the collapse's explained-flip rule).
TEST(MhcGpu, TinyCheckpointChains) {
  V4REF_REQUIRE_DEVICE();
  for (const char* preset : {"tiny-flash-s0", "tiny-pro-s0", "tiny-long-s0"}) {
    const auto [cfg, ckpt] = test::open_tiny_checkpoint(preset);
    const std::int64_t T = 45, d = cfg.dim;
    std::vector<std::uint16_t> x = test::chain_start_streams(preset, T, d);
    std::vector<float> coef;
    for (std::int64_t l = 0; l < cfg.n_layers; ++l)
      for (const char* which : {"attn", "ffn"}) {
        const ref::HcParams hp = ref::load_hc_params(ckpt, cfg, layer_config(cfg, l).prefix, which);
        const MhcInputs in = test::chain_launch(preset, cfg, hp, T, x, coef);
        const cuda::MhcHostOutputs k = cuda::mhc_pre_host(in.problem());
        ASSERT_TRUE(same_bits(k, executor(k.plan.tiling, in), in.name));
        // Direct reference gate on u: teacher-forced collapse of the device's X' with its pre.
        ref::Mat xk(T, 4 * d);
        const std::vector<std::uint16_t>& xs = in.fused ? k.x_out : in.x;
        for (Eigen::Index i = 0; i < xk.size(); ++i)
          xk.data()[i] = fmt::bf16_to_double(xs[static_cast<std::size_t>(i)]);
        std::vector<ref::HcMix> mix(static_cast<std::size_t>(T));
        for (std::int64_t t = 0; t < T; ++t) {
          mix[static_cast<std::size_t>(t)].pre.resize(4);
          mix[static_cast<std::size_t>(t)].post.resize(4);
          mix[static_cast<std::size_t>(t)].comb = ref::Mat::Zero(4, 4);
          for (int kk = 0; kk < 4; ++kk) {
            mix[static_cast<std::size_t>(t)].pre(kk) =
                k.coef[static_cast<std::size_t>(t * 24 + kk)];
            mix[static_cast<std::size_t>(t)].post(kk) = 0;
          }
        }
        const ref::Mat u_ex = ref::hc_collapse(xk, mix, 4, PrecisionPolicy::exact());
        for (std::int64_t t = 0; t < T; ++t)
          for (std::int64_t i = 0; i < d; ++i) {
            double m = 0;
            for (int kk = 0; kk < 4; ++kk)
              m += std::abs(mix[static_cast<std::size_t>(t)].pre(kk) * xk(t, kk * d + i));
            const double s = u_ex(t, i), slack = 4 * 0x1.0p-24 / (1 - 4 * 0x1.0p-24) * m;
            const double kv = fmt::bf16_to_double(k.u[static_cast<std::size_t>(t * d + i)]);
            ASSERT_TRUE(fmt::round_bf16(s - slack) <= kv && kv <= fmt::round_bf16(s + slack))
                << in.name << " u[" << t << ", " << i << "] = " << kv << ", exact " << s;
          }
        if (in.fused) x = k.x_out;
        coef = k.coef;
      }
  }
}

}  // namespace
}  // namespace v4ref
