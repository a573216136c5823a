// The CUDA main compressor's math, run on the CPU in the kernels' own cluster / warp / lane and
// reduction order (cuda/include/v4ref/cuda/compressor_tile.hpp), against the double reference
// (reference/src/compressor.cpp: pool_entry, postprocess_entry, compress_prefill,
// compress_decode_step): label cpu (docs/cuda-mhc-compressor.md §4.4).
//
// The reference sees exactly the kernel's inputs: the fp32 projections a, g and the fp32 slot
// logits fp32(g + ape) (the official fp32 state), laid out as the §11.2 state rows.
// Every rounding point is gated on the kernel's own input to it (teacher forcing through the
// executor's debug outputs), with bounds derived in docs/cuda-mhc-compressor.md §4.4:
//   pooled (bf16)   K in [bf16(p − δ), bf16(p + δ)], δ = (2·ε + (2S + 2)·u)·Σα|a|·1.01,
//                   ε = (max (M − l) over present slots + 2)·u: exp's argument error and
//                   exp_f32's ≤ 1.001 ulp change every weight by at most ε relatively (twice:
//                   numerator and denominator), S-term sums, one division
//   normed (bf16)   K in [bf16(y − δ), bf16(y + δ)], δ = (h/2 + 6)·u·|y|, h = 4 + 5 + (Q − 1)
//                   the square-sum tree height (positive terms), 4 roundings for ρ, 2 products
//   rope (bf16)     δ = 4·u·(|x| + |y|): fp32 cos/sin (one rounding each) and 2 roundings
//   Q8              codes and scales equal to ref::q8_quantize of the kernel's normed values
//   end to end      vs Rq (postprocess_entry under the declared points): nope dims within one
//                   e4m3 step (2^-3·|v| + 2^-9·s), rope dims within 2 bf16 ulp;
//                   vs Rx (exact policy): nope |K − Rx| <= 2^-3·|Rx| + 2^-9·s (the tolerance
//                   table's loose row), rope within 2 bf16 ulp + 3·2^-9·(|x| + |y|) (the three
//                   declared bf16 roundings upstream: pooled, normed, rope)
// Plus: every byte of every cache row written (two poison families, equal results), decode
// steps after a prefill hand-off give exactly the prefill's entries and state, the tiny
// checkpoints' real compressor weights, adversarial logits and magnitudes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "v4ref/cuda/compressor.hpp"
#include "v4ref/cuda/compressor_tile.hpp"
#include "v4ref/ref/compressor.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/quant.hpp"
#include "v4ref/ref/rope.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref {
namespace {

namespace cmp = cuda::cmp;
using ref::Mat;
using ref::Vec;

constexpr double kU32 = 0x1.0p-24;
constexpr double kInf = std::numeric_limits<double>::infinity();

std::filesystem::path source_dir() {
  const char* v = std::getenv("V4REF_SOURCE_DIR");
  return v != nullptr && *v != '\0' ? std::filesystem::path(v)
                                    : std::filesystem::path(V4REF_SOURCE_DIR);
}

std::uint64_t global_seed() {
  const char* v = std::getenv("V4REF_SEED");
  return v == nullptr || *v == '\0' ? 0 : std::strtoull(v, nullptr, 0);
}

double bf16_ulp(double x) {
  const double a = std::max(std::abs(x), 0x1.0p-126);
  return std::ldexp(1.0, fmt::floor_log2(a) - 7);
}

bool in_interval(std::uint16_t k, double s, double slack) {
  const double kv = fmt::bf16_to_double(k);
  return fmt::round_bf16(s - slack) <= kv && kv <= fmt::round_bf16(s + slack);
}

// ---------------------------------------------------------------- inputs

struct Inputs {
  std::string name;
  cmp::Dims dm;
  std::int64_t tokens = 0;
  std::vector<float> a, g, ape, norm_w, cos, sin;
  float eps = 1e-6f;
  ref::RopeTable rope;
  cmp::PrefillProblem problem() const {
    cmp::PrefillProblem p;
    p.dm = dm;
    p.tokens = tokens;
    p.a = a.data();
    p.g = g.data();
    p.ape = ape.data();
    p.norm_w = norm_w.data();
    p.eps = eps;
    p.cos = cos.data();
    p.sin = sin.data();
    return p;
  }
};

std::vector<float> normal_f32(std::size_t n, std::uint64_t seed, double mean, double sd) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(mean + sd * rng.normal());
  return v;
}

ref::RopeTable compress_rope() { return ref::make_rope_table(160000.0, true, YarnConfig{}, 64); }

void finish(Inputs& in) {
  in.rope = compress_rope();
  std::vector<float> om(in.rope.omega_fp32.begin(), in.rope.omega_fp32.end());
  cmp::rope_table(om.data(), std::max<std::int64_t>(1, in.tokens / in.dm.ratio), in.dm.ratio,
                  in.cos, in.sin);
}

Inputs synthetic(const std::string& name, int ratio, std::int64_t width, std::int64_t tokens,
                 double a_sd = 1.0, double g_sd = 1.0, double ape_sd = 0.5) {
  const std::uint64_t gs = global_seed();
  const std::string shape =
      std::to_string(tokens) + "x" + std::to_string(width) + "m" + std::to_string(ratio);
  Inputs in;
  in.name = name;
  in.dm = cmp::make_dims(ratio, width);
  in.tokens = tokens;
  const auto n = static_cast<std::size_t>(tokens * in.dm.cw());
  in.a = normal_f32(n, derive_seed(name, "a", shape, gs), 0.0, a_sd);
  in.g = normal_f32(n, derive_seed(name, "g", shape, gs), 0.0, g_sd);
  in.ape = normal_f32(static_cast<std::size_t>(ratio * in.dm.cw()),
                      derive_seed(name, "ape", shape, gs), 0.0, ape_sd);
  in.norm_w =
      normal_f32(static_cast<std::size_t>(width), derive_seed(name, "norm", shape, gs), 1.0, 0.1);
  for (float& w : in.norm_w) w = static_cast<float>(fmt::round_bf16(w));
  finish(in);
  return in;
}

// ---------------------------------------------------------------- running the executor

struct Out {
  std::vector<std::uint8_t> cache;
  std::vector<std::uint16_t> pooled, normed;
};

Out run(const Inputs& in, std::uint8_t poison) {
  const std::int64_t E = in.tokens / in.dm.ratio;
  Out o;
  o.cache.assign(static_cast<std::size_t>(E * in.dm.row_bytes()), poison);
  o.pooled.assign(static_cast<std::size_t>(E * in.dm.width), 0x7FC1);
  o.normed.assign(o.pooled.size(), 0x7FC1);
  cmp::executor_prefill(in.problem(), o.cache.data(), o.pooled.data(), o.normed.data());
  return o;
}

// ---------------------------------------------------------------- reference side

ref::CompressorWeights weights_of(const Inputs& in) {
  ref::CompressorWeights w;
  w.prefix = in.name + ".";
  w.kind = ref::CompressorKind::kMain;
  w.ratio = in.dm.ratio;
  w.width = in.dm.width;
  w.norm.resize(in.dm.width);
  for (int i = 0; i < in.dm.width; ++i) w.norm(i) = in.norm_w[static_cast<std::size_t>(i)];
  return w;
}

PrecisionPolicy rq_policy() {
  PrecisionPolicy p = PrecisionPolicy::exact();
  for (QuantPoint q : {QuantPoint::kBf16Pooled, QuantPoint::kBf16Norm, QuantPoint::kFp32RopeAngle,
                       QuantPoint::kBf16Rope, QuantPoint::kCkvQ8})
    p.enable(q);
  return p;
}

// The state-layout rows (kv, score) of prefill entry j from the kernel's fp32 inputs.
void entry_rows(const Inputs& in, std::int64_t j, Mat& kv, Mat& score) {
  const cmp::Dims& dm = in.dm;
  const int S = dm.slots(), cw = dm.cw();
  kv = Mat::Zero(S, cw);
  score = Mat::Constant(S, cw, -kInf);
  for (int s = 0; s < S; ++s) {
    const std::int64_t t = cmp::prefill_row(dm, j, s);
    if (t < 0) continue;
    for (int c = 0; c < cw; ++c) {
      kv(s, c) = in.a[static_cast<std::size_t>(t * cw + c)];
      score(s, c) = cmp::slot_logit(in.g[static_cast<std::size_t>(t * cw + c)],
                                    in.ape[static_cast<std::size_t>((t % dm.ratio) * cw + c)]);
    }
  }
}

struct Report {
  std::size_t pooled_flips = 0, normed_flips = 0, rope_flips = 0, e2e_code_diffs = 0;
  double e2e_ratio = 0, loose_ratio = 0;
};

std::uint16_t row_bf16(const std::uint8_t* row, int byte) {
  return static_cast<std::uint16_t>(row[byte] | (row[byte + 1] << 8));
}

Report check(const Inputs& in) {
  const cmp::Dims& dm = in.dm;
  const std::string where =
      in.name + " (m = " + std::to_string(dm.ratio) + ", w = " + std::to_string(dm.width) +
      ", T = " + std::to_string(in.tokens) + ") V4REF_SEED=" + std::to_string(global_seed());
  const Out k = run(in, 0xA5), k2 = run(in, 0x5A);
  EXPECT_EQ(k.cache, k2.cache) << where << ": a cache byte depends on the poison (not written)";
  const ref::CompressorWeights w = weights_of(in);
  const PrecisionPolicy pq = rq_policy();
  const std::int64_t E = in.tokens / dm.ratio;
  const int W = dm.width, R = cmp::kRope, N = dm.nope(), Q = dm.ctas();
  Report rep;
  for (std::int64_t j = 0; j < E; ++j) {
    const std::uint8_t* row = k.cache.data() + j * dm.row_bytes();
    const std::uint16_t* kp = k.pooled.data() + j * W;
    const std::uint16_t* ky = k.normed.data() + j * W;
    Mat kv, score;
    entry_rows(in, j, kv, score);
    // ---- pooled
    const Vec p = ref::pool_entry(kv, score, dm.ratio, W);
    const Vec pabs = ref::pool_entry(kv.cwiseAbs(), score, dm.ratio, W);
    for (int i = 0; i < W; ++i) {
      double mx = -kInf, spread = 0;
      for (int s = 0; s < dm.slots(); ++s) mx = std::max(mx, score(s, dm.channel(s, i)));
      for (int s = 0; s < dm.slots(); ++s)
        if (std::isfinite(score(s, dm.channel(s, i))))
          spread = std::max(spread, mx - score(s, dm.channel(s, i)));
      const double delta = (2 * (spread + 2) * kU32 + (2 * dm.slots() + 2) * kU32) * pabs(i) * 1.01;
      if (fmt::bf16_encode(p(i)) != kp[i]) ++rep.pooled_flips;
      EXPECT_TRUE(in_interval(kp[i], p(i), delta))
          << where << " entry " << j << " pooled[" << i << "] = " << fmt::bf16_to_double(kp[i])
          << ", exact " << p(i);
    }
    // ---- normed, teacher-forced on K's pooled values
    double ss = 0;
    for (int i = 0; i < W; ++i) ss += std::pow(fmt::bf16_to_double(kp[i]), 2);
    const double rho = 1 / std::sqrt(ss / W + static_cast<double>(in.eps));
    const int h = 4 + 5 + (Q - 1);
    for (int i = 0; i < W; ++i) {
      const double y = static_cast<double>(in.norm_w[static_cast<std::size_t>(i)]) *
                       fmt::bf16_to_double(kp[i]) * rho;
      if (fmt::bf16_encode(y) != ky[i]) ++rep.normed_flips;
      EXPECT_TRUE(in_interval(ky[i], y, (h / 2.0 + 6) * kU32 * std::abs(y)))
          << where << " entry " << j << " normed[" << i << "] = " << fmt::bf16_to_double(ky[i])
          << ", exact " << y;
    }
    // ---- rope, teacher-forced on K's normed values
    for (int jp = 0; jp < R / 2; ++jp) {
      const double x = fmt::bf16_to_double(ky[N + 2 * jp]),
                   y = fmt::bf16_to_double(ky[N + 2 * jp + 1]);
      const double th = ref::rope_angle(in.rope, j * dm.ratio, jp, pq);
      const double ex = x * std::cos(th) - y * std::sin(th),
                   ey = x * std::sin(th) + y * std::cos(th);
      const double delta = 4 * kU32 * (std::abs(x) + std::abs(y));
      const std::uint16_t kx = row_bf16(row, dm.rope_offset() + 4 * jp),
                          kyy = row_bf16(row, dm.rope_offset() + 4 * jp + 2);
      rep.rope_flips += (fmt::bf16_encode(ex) != kx) + (fmt::bf16_encode(ey) != kyy);
      EXPECT_TRUE(in_interval(kx, ex, delta) && in_interval(kyy, ey, delta))
          << where << " entry " << j << " rope pair " << jp;
    }
    // ---- Q8, teacher-forced: exact codes and scales
    std::vector<double> nope(static_cast<std::size_t>(N));
    for (int i = 0; i < N; ++i) nope[static_cast<std::size_t>(i)] = fmt::bf16_to_double(ky[i]);
    const ref::BlockCodes bc = ref::q8_quantize(nope, cmp::kQ8Block);
    int code_diffs = 0, first = -1;
    for (int i = 0; i < N; ++i)
      if (row[i] != bc.codes[static_cast<std::size_t>(i)] && code_diffs++ == 0) first = i;
    EXPECT_EQ(code_diffs, 0) << where << " entry " << j
                             << ": e4m3 codes differ from q8_quantize, first at " << first;
    for (int b = 0; b < dm.scales(); ++b)
      EXPECT_EQ(row[dm.scale_offset() + b], bc.scales[static_cast<std::size_t>(b)])
          << where << " entry " << j << " scale " << b;
    for (int b = dm.scale_offset() + dm.scales(); b < dm.row_bytes(); ++b)
      EXPECT_EQ(row[b], 0) << where << " pad";
    // ---- end to end vs Rq and Rx
    const Vec rq = ref::postprocess_entry(p, j, w, in.rope, in.eps, pq);
    const Vec rx = ref::postprocess_entry(p, j, w, in.rope, in.eps, PrecisionPolicy::exact());
    for (int i = 0; i < W; ++i) {
      double kval, step, loose;
      if (i < N) {
        const double s = fmt::ue8m0_to_double(row[dm.scale_offset() + i / cmp::kQ8Block]);
        kval = fmt::e4m3_to_double(row[i]) * s;
        step = 0x1.0p-3 * std::max(std::abs(kval), std::abs(rq(i))) + 0x1.0p-9 * s * 2;
        loose = 0x1.0p-3 * std::abs(rx(i)) + 0x1.0p-9 * s;
        if (std::abs(kval - rq(i)) > 0) ++rep.e2e_code_diffs;
      } else {
        kval = fmt::bf16_to_double(row_bf16(row, dm.rope_offset() + 2 * (i - N)));
        step = 2 * bf16_ulp(rq(i));
        const int pair0 = N + 2 * ((i - N) / 2);
        loose =
            2 * bf16_ulp(rx(i)) + 3 * 0x1.0p-9 * (std::abs(rx(pair0)) + std::abs(rx(pair0 + 1)));
      }
      rep.e2e_ratio = std::max(rep.e2e_ratio, std::abs(kval - rq(i)) / step);
      rep.loose_ratio = std::max(rep.loose_ratio, std::abs(kval - rx(i)) / loose);
    }
  }
  EXPECT_LE(rep.e2e_ratio, 1.0) << where << ": end to end vs Rq over one e4m3 step / 2 bf16 ulp";
  EXPECT_LE(rep.loose_ratio, 1.0) << where << ": end to end vs Rx over the loose tolerance";
  std::printf(
      "%-36s entries %-4lld flips: pooled %zu normed %zu rope %zu | e2e vs Rq %.3f (%zu nope "
      "values differ) | vs Rx %.3f\n",
      in.name.c_str(), static_cast<long long>(E), rep.pooled_flips, rep.normed_flips,
      rep.rope_flips, rep.e2e_ratio, rep.e2e_code_diffs, rep.loose_ratio);
  return rep;
}

// ---------------------------------------------------------------- tests

TEST(CompressorExecutor, DeclaredPrecisionPoints) {
  using P = cuda::CompressorPrecisionPoint;
  for (P p : {P::kLogitFp32, P::kPooledStoreBf16, P::kNormStoreBf16, P::kRopeFp32Angle,
              P::kRopeStoreBf16, P::kCkvQ8})
    EXPECT_TRUE(cuda::compressor_rounds_at(p));
}

TEST(CompressorExecutor, RowLayout) {
  const cmp::Dims v4 = cmp::make_dims(4, 512), tiny = cmp::make_dims(128, 128);
  EXPECT_EQ(v4.row_bytes(), 584);  // kernel-targets.md §3: 448 e4m3 + 64 bf16 + 7 ue8m0 + pad
  EXPECT_EQ(v4.scales(), 7);
  EXPECT_EQ(v4.ctas(), 4);
  EXPECT_EQ(tiny.row_bytes(), 200);
  EXPECT_THROW(cmp::make_dims(8, 512), ConfigError);
  EXPECT_THROW(cmp::make_dims(4, 500), ShapeError);
}

struct Case {
  std::string name;
  int ratio;
  std::int64_t width, tokens;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class CompressorExecutorDiff : public ::testing::TestWithParam<Case> {};

TEST_P(CompressorExecutorDiff, Gates) {
  const Case& c = GetParam();
  check(synthetic("compressor/" + c.name, c.ratio, c.width, c.tokens));
}

INSTANTIATE_TEST_SUITE_P(Cases, CompressorExecutorDiff,
                         ::testing::Values(Case{"c4_w512_T37", 4, 512, 37},
                                           Case{"c128_w512_T300", 128, 512, 300},
                                           Case{"c4_w128_T19", 4, 128, 19},
                                           Case{"c128_w128_T130", 128, 128, 130},
                                           Case{"c4_w512_T3_no_entry", 4, 512, 3}),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// Saturated softmax: logits with spread ±40 (ape ±20, g ±20): most slots get weight ~0.
TEST(CompressorExecutorAdversarial, SpikyLogits) {
  check(synthetic("compressor/adv_spiky_c4", 4, 512, 33, 1.0, 20.0, 20.0));
  check(synthetic("compressor/adv_spiky_c128", 128, 128, 256, 1.0, 20.0, 20.0));
}

// Huge and tiny values (the RMSNorm makes the entry scale-free; ss in fp32 stays finite).
TEST(CompressorExecutorAdversarial, ValueMagnitudes) {
  check(synthetic("compressor/adv_huge", 4, 512, 21, 1e15));
  check(synthetic("compressor/adv_tiny", 4, 512, 21, 1e-15));
}

// An all-zero block: pooled 0, ρ = 1/sqrt(eps), normed 0, Q8 amax floor: codes 0, scale 2^-22.
TEST(CompressorExecutorAdversarial, ZeroBlock) {
  Inputs in = synthetic("compressor/adv_zero", 4, 512, 16);
  std::fill(in.a.begin() + 4 * in.dm.cw(), in.a.begin() + 12 * in.dm.cw(), 0.0f);  // blocks 1 and 2
  check(in);
  const Out k = run(in, 0xA5);
  const std::uint8_t* row = k.cache.data() + 2 * in.dm.row_bytes();  // entry 2 reads blocks 1 and 2
  for (int i = 0; i < in.dm.nope(); ++i) EXPECT_EQ(row[i], 0);
  EXPECT_EQ(row[in.dm.scale_offset()], 127 - 22);  // ceil(log2(fp32(1e-4)·fp32(1/448))) = -22
}

// Decode after a prefill hand-off reproduces the prefill of the longer sequence bit for bit
// (entries and the final state), for both ratios and hand-offs inside and at block ends.
TEST(CompressorExecutor, DecodeEqualsPrefill) {
  for (const auto& [ratio, t0, t1] :
       {std::make_tuple(4, 0, 23), std::make_tuple(4, 9, 30), std::make_tuple(4, 12, 17),
        std::make_tuple(128, 100, 300), std::make_tuple(128, 256, 390)}) {
    const Inputs full = synthetic("compressor/decode_m" + std::to_string(ratio), ratio, 128, t1);
    Inputs head = full;
    head.tokens = t0;
    const cmp::Dims& dm = full.dm;
    const int cw = dm.cw();
    const Out kf = run(full, 0xA5);
    cmp::DecodeState st = cmp::executor_prefill_state(head.problem());
    std::vector<std::uint8_t> row(static_cast<std::size_t>(dm.row_bytes()), 0xA5);
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t j = t / ratio;
      const bool done = cmp::executor_decode_step(
          dm, st, t, full.a.data() + t * cw, full.g.data() + t * cw, full.ape.data(),
          full.norm_w.data(), full.eps,
          cmp::RopeRow{full.cos.data() + j * 32, full.sin.data() + j * 32}, row.data());
      ASSERT_EQ(done, (t + 1) % ratio == 0);
      if (done) {
        EXPECT_TRUE(std::equal(row.begin(), row.end(), kf.cache.begin() + j * dm.row_bytes()))
            << "m " << ratio << " entry " << j << " (hand-off at " << t0 << ")";
      }
    }
    // The live rows of the state (the partial block, and for CSA the last complete block) equal
    // the prefill hand-off; the other rows are stale in decode (never read before rewritten,
    // as in the official state machine) and initial after a prefill.
    const cmp::DecodeState want = cmp::executor_prefill_state(full.problem());
    const int cur = dm.csa() ? 4 : 0, partial = static_cast<int>(t1 % ratio);
    std::vector<int> live;
    for (int r = 0; r < partial; ++r) live.push_back(cur + r);
    if (dm.csa() && t1 >= 4)
      for (int r = 0; r < 4; ++r) live.push_back(r);
    for (const int r : live) {
      EXPECT_EQ(0, std::memcmp(st.kv.data() + r * cw, want.kv.data() + r * cw,
                               static_cast<std::size_t>(cw) * 4))
          << "m " << ratio << " state kv row " << r;
      EXPECT_EQ(0, std::memcmp(st.score.data() + r * cw, want.score.data() + r * cw,
                               static_cast<std::size_t>(cw) * 4))
          << "m " << ratio << " state score row " << r;
    }
  }
}

// The tiny checkpoints' real main-compressor weights (CSA and HCA layers): a, g are the fp32
// projections of random inputs; the executor is gated as above, and its dequantised entries are
// compared with ref::compress_prefill on the same x (double projections) by the loose rule.
TEST(CompressorExecutorCheckpoint, TinyFlashCsaAndHca) {
  const std::filesystem::path dir = source_dir() / "golden/checkpoints/tiny-flash-s0";
  const ModelConfig cfg = load_config(dir / "config.json");
  const Checkpoint ckpt = Checkpoint::open(dir);
  for (std::int64_t layer = 0; layer < cfg.n_layers; ++layer) {
    const LayerConfig lc = layer_config(cfg, layer);
    if (lc.ratio == 0) continue;
    const ref::CompressorWeights cw =
        ref::load_layer_compressor(ckpt, cfg, layer, ref::CompressorKind::kMain);
    const std::int64_t T = lc.ratio == 4 ? 41 : 300;
    Rng rng(derive_seed("compressor/tiny-flash", "x", std::to_string(layer), global_seed()));
    Mat x(T, cfg.dim);
    for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = fmt::round_bf16(rng.normal());
    const Mat a = x * cw.wkv.w.transpose(), g = x * cw.wgate.w.transpose();
    Inputs in;
    in.name = "compressor/tiny-flash/" + cw.prefix;
    in.dm = cmp::make_dims(lc.ratio, cw.width);
    in.tokens = T;
    for (Eigen::Index i = 0; i < a.size(); ++i) {
      in.a.push_back(static_cast<float>(a.data()[i]));
      in.g.push_back(static_cast<float>(g.data()[i]));
    }
    for (Eigen::Index i = 0; i < cw.ape.size(); ++i)
      in.ape.push_back(static_cast<float>(cw.ape.data()[i]));
    for (int i = 0; i < cw.width; ++i) in.norm_w.push_back(static_cast<float>(cw.norm(i)));
    in.eps = static_cast<float>(cfg.norm_eps);
    finish(in);
    in.rope = ref::rope_table_for(cfg, lc);
    std::vector<float> om(in.rope.omega_fp32.begin(), in.rope.omega_fp32.end());
    cmp::rope_table(om.data(), std::max<std::int64_t>(1, T / lc.ratio), lc.ratio, in.cos, in.sin);
    check(in);
    // Against the full reference forward of the compressor (double projections of x).
    const Mat ref_entries = ref::compress_prefill(x, cw, in.rope, cfg.norm_eps, rq_policy());
    const Out k = run(in, 0xA5);
    ASSERT_EQ(ref_entries.rows(), T / lc.ratio);
    double worst = 0;
    for (Eigen::Index j = 0; j < ref_entries.rows(); ++j) {
      const std::uint8_t* row = k.cache.data() + j * in.dm.row_bytes();
      for (int i = 0; i < in.dm.width; ++i) {
        const double r = ref_entries(j, i);
        double kv, allowed;
        if (i < in.dm.nope()) {
          const double s = fmt::ue8m0_to_double(row[in.dm.scale_offset() + i / 64]);
          kv = fmt::e4m3_to_double(row[i]) * s;
          allowed = 0x1.0p-3 * std::max(std::abs(r), std::abs(kv)) + 0x1.0p-8 * s;
        } else {
          kv = fmt::bf16_to_double(row_bf16(row, in.dm.rope_offset() + 2 * (i - in.dm.nope())));
          allowed = 4 * bf16_ulp(r);
        }
        worst = std::max(worst, std::abs(kv - r) / allowed);
      }
    }
    std::printf("  vs ref::compress_prefill (double projections): worst %.3f of one step\n", worst);
    EXPECT_LE(worst, 1.0) << in.name;
  }
}

}  // namespace
}  // namespace v4ref
