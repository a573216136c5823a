// The CUDA compressors (cuda/src/compressor_fp8_sm90.cu: main and indexer) on the device (label
// gpu; docs/cuda-mhc-compressor.md §4.5). The CPU executor (compressor_tile.hpp) runs the
// kernels' own per-thread math and reduction order and passes the reference gates of
// tests/reference/compressor_executor_test.cpp; here the device must reproduce it bit for bit:
// prefill cache rows and the debug intermediates (pooled, normed; indexer also roped and the
// bf16 Hadamard output) on the executor test's cases, the prefill hand-off state, decode steps
// after a hand-off (single sequence and a batch at mixed positions), the tiny-flash checkpoint's
// indexer compressors, both poison families, 20 bitwise reruns.
// Skips without a device unless V4REF_REQUIRE_GPU=1.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../common/compressor_inputs.hpp"
#include "../common/gpu_test_support.hpp"
#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/compressor.hpp"
#include "v4ref/cuda/compressor_simt.hpp"
#include "v4ref/cuda/compressor_tile.hpp"
#include "v4ref/ref/compressor.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref {
namespace {

namespace cmp = cuda::cmp;
using test::synthetic_compressor_inputs;
using test::synthetic_indexer_inputs;
using Case = test::CompressorCase;
using Inputs = test::CompressorInputs;

struct Exec {
  std::vector<std::uint8_t> cache;
  std::vector<std::uint16_t> pooled, normed, roped, hadamard;  // roped, hadamard: indexer
};

Exec executor(const Inputs& in) {
  const std::int64_t E = in.tokens / in.dm.ratio;
  Exec e;
  e.cache.assign(static_cast<std::size_t>(E * in.dm.row_bytes()), 0x5A);
  e.pooled.assign(static_cast<std::size_t>(E * in.dm.width), 0);
  e.normed.assign(e.pooled.size(), 0);
  cmp::EntryDebug dbg{e.pooled.data(), e.normed.data(), nullptr, nullptr};
  if (in.dm.indexer()) {
    e.roped.assign(e.pooled.size(), 0);
    e.hadamard.assign(e.pooled.size(), 0);
    dbg.roped = e.roped.data();
    dbg.hadamard = e.hadamard.data();
  }
  cuda::compressor_prefill_simt(in.problem(), e.cache.data(), dbg);
  return e;
}

// Device prefill (buffers poisoned with 0xA5 / 0xFFFF) = executor (0x5A / 0) bit for bit: cache,
// every debug output, and (with_state) the hand-off state.
void expect_prefill_bitwise(const Inputs& in, bool with_state) {
  const Exec e = executor(in);
  const cuda::CompressorHostOut k = cuda::compressor_prefill_host(in.problem(), with_state);
  EXPECT_EQ(k.cache, e.cache)
      << in.name
      << ": cache rows (the device buffer was poisoned with 0xA5, the executor's with 0x5A)";
  EXPECT_EQ(k.pooled, e.pooled) << in.name << ": pooled";
  EXPECT_EQ(k.normed, e.normed) << in.name << ": normed";
  EXPECT_EQ(k.roped, e.roped) << in.name << ": roped";
  EXPECT_EQ(k.hadamard, e.hadamard) << in.name << ": hadamard";
  if (!with_state) return;
  const cmp::DecodeState st = cuda::compressor_prefill_state_simt(in.problem());
  EXPECT_EQ(0, std::memcmp(k.state_kv.data(), st.kv.data(), st.kv.size() * 4))
      << in.name << ": hand-off state kv";
  EXPECT_EQ(0, std::memcmp(k.state_score.data(), st.score.data(), st.score.size() * 4))
      << in.name << ": hand-off state score";
}

class CompressorGpuDiff : public ::testing::TestWithParam<Case> {};

TEST_P(CompressorGpuDiff, PrefillBitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  const Case& c = GetParam();
  expect_prefill_bitwise(
      synthetic_compressor_inputs("compressor/" + c.name, c.ratio, c.width, c.tokens), true);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CompressorGpuDiff,
    ::testing::Values(Case{"c4_w512_T37", 4, 512, 37}, Case{"c128_w512_T300", 128, 512, 300},
                      Case{"c4_w128_T19", 4, 128, 19}, Case{"c128_w128_T130", 128, 128, 130},
                      Case{"c4_w512_T8192", 4, 512, 8192}, Case{"c128_w512_T8192", 128, 512, 8192}),
    [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

TEST(CompressorGpu, AdversarialBitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  for (const Inputs& in :
       {synthetic_compressor_inputs("compressor/adv_spiky_c4", 4, 512, 33, 1.0, 20.0, 20.0),
        synthetic_compressor_inputs("compressor/adv_spiky_c128", 128, 128, 256, 1.0, 20.0, 20.0),
        synthetic_compressor_inputs("compressor/adv_huge", 4, 512, 21, 1e15),
        synthetic_compressor_inputs("compressor/adv_tiny", 4, 512, 21, 1e-15)}) {
    const cuda::CompressorHostOut k = cuda::compressor_prefill_host(in.problem(), false);
    EXPECT_EQ(k.cache, executor(in).cache) << in.name;
  }
}

// ---- the indexer compressor (m = 4, w = 128: Hadamard, Q4, 68-byte rows)

void expect_decode_bitwise(const Inputs& full, std::int64_t t0);  // below

class CompressorGpuIndexerDiff : public ::testing::TestWithParam<Case> {};

TEST_P(CompressorGpuIndexerDiff, PrefillBitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  expect_prefill_bitwise(synthetic_indexer_inputs("indexer/" + GetParam().name, GetParam().tokens),
                         true);
}

INSTANTIATE_TEST_SUITE_P(Cases, CompressorGpuIndexerDiff,
                         ::testing::Values(Case{"T37", 4, 128, 37}, Case{"T19", 4, 128, 19},
                                           Case{"T300", 4, 128, 300}, Case{"T8192", 4, 128, 8192}),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// The executor test's adversarial indexer inputs (same names, seeds and modifications).
TEST(CompressorGpu, IndexerAdversarialBitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  std::vector<Inputs> cases = {synthetic_indexer_inputs("indexer/adv_spiky", 33, 1.0, 20.0, 20.0),
                               synthetic_indexer_inputs("indexer/adv_huge", 21, 1e15),
                               synthetic_indexer_inputs("indexer/adv_tiny", 21, 1e-15),
                               synthetic_indexer_inputs("indexer/adv_boundaries", 4096)};
  for (const auto& [name, shift] : {std::make_pair("indexer/adv_huge_keys", 100),
                                    std::make_pair("indexer/adv_tiny_keys", -120)}) {
    Inputs in = synthetic_indexer_inputs(name, 25);
    test::scale_norm_weight(in, shift);
    cases.push_back(in);
  }
  {
    Inputs in = synthetic_indexer_inputs("indexer/adv_mixed", 41);
    test::spread_channel_magnitudes(in);
    cases.push_back(in);
  }
  {
    Inputs in = synthetic_indexer_inputs("indexer/adv_zero", 16);
    std::fill(in.a.begin() + 4 * in.dm.cw(), in.a.begin() + 12 * in.dm.cw(), 0.0f);
    cases.push_back(in);
  }
  for (const Inputs& in : cases) expect_prefill_bitwise(in, false);
}

// The tiny-flash checkpoint's indexer compressors (every CSA layer) on fp32 projections of
// random inputs, as in the executor test: device = executor, prefill and hand-off state.
TEST(CompressorGpu, IndexerTinyFlashCheckpoint) {
  V4REF_REQUIRE_DEVICE();
  const auto [cfg, ckpt] = test::open_tiny_checkpoint("tiny-flash-s0");
  for (std::int64_t layer = 0; layer < cfg.n_layers; ++layer) {
    const LayerConfig lc = layer_config(cfg, layer);
    if (lc.kind != LayerKind::kCsa) continue;
    const ref::CompressorWeights cw =
        ref::load_layer_compressor(ckpt, cfg, layer, ref::CompressorKind::kIndexer);
    constexpr std::int64_t T = 97;
    const ref::Mat x = test::checkpoint_tokens("indexer/tiny-flash", layer, T, cfg.dim);
    const Inputs in = test::checkpoint_compressor_inputs(
        "indexer/tiny-flash/" + cw.prefix, cmp::make_dims(4, cw.width, cmp::Kind::kIndexer), cw, x,
        cfg, lc);
    expect_prefill_bitwise(in, true);
    expect_decode_bitwise(in, 18);
  }
}

// Decode steps t0 .. T − 1 of `full` after a prefill hand-off at t0, on the device and in the
// executor: equal cache rows and state bit for bit.
void expect_decode_bitwise(const Inputs& full, std::int64_t t0) {
  const std::int64_t t1 = full.tokens;
  Inputs head = full;
  head.tokens = t0;
  const cmp::Dims& dm = full.dm;
  const int cw = dm.cw(), ratio = dm.ratio;
  const std::int64_t entries_max = t1 / ratio + 1;
  cmp::DecodeState se = cuda::compressor_prefill_state_simt(head.problem()), sk = se;
  std::vector<std::uint8_t> ce(static_cast<std::size_t>(entries_max * dm.row_bytes()), 0xA5),
      ck = ce;
  for (std::int64_t t = t0; t < t1; ++t) {
    const std::int64_t j = t / ratio;
    cuda::compressor_decode_step_simt(dm, se, t, full.a.data() + t * cw, full.g.data() + t * cw,
                              full.ape.data(), full.norm_w.data(), full.eps,
                              cmp::RopeRow{full.cos.data() + j * 32, full.sin.data() + j * 32},
                              ce.data() + j * dm.row_bytes());
  }
  cuda::compressor_decode_host(dm, t0, t1 - t0, full.a.data() + t0 * cw, full.g.data() + t0 * cw,
                               full.ape.data(), full.norm_w.data(), full.eps, full.cos, full.sin,
                               sk, ck);
  const std::string where =
      full.name + " w " + std::to_string(dm.width) + " from " + std::to_string(t0);
  EXPECT_EQ(ck, ce) << where << ": cache";
  EXPECT_EQ(0, std::memcmp(sk.kv.data(), se.kv.data(), se.kv.size() * 4)) << where << ": state kv";
  EXPECT_EQ(0, std::memcmp(sk.score.data(), se.score.data(), se.score.size() * 4))
      << where << ": state score";
}

// Decode steps after a prefill hand-off equal the executor's decode (and so the prefill of the
// longer sequence, tested on the CPU), including the state.
TEST(CompressorGpu, DecodeBitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  for (const auto& [ratio, t0, t1] :
       {std::make_tuple(4, 0, 23), std::make_tuple(4, 9, 30), std::make_tuple(128, 100, 300)})
    for (const std::int64_t width : {128, 512})
      expect_decode_bitwise(synthetic_compressor_inputs(
                                "compressor/decode_m" + std::to_string(ratio), ratio, width, t1),
                            t0);
}

TEST(CompressorGpu, IndexerDecodeBitwiseEqualToExecutor) {
  V4REF_REQUIRE_DEVICE();
  for (const auto& [t0, t1] : {std::make_pair(0, 23), std::make_pair(9, 30), std::make_pair(12, 17),
                               std::make_pair(3, 41)})
    expect_decode_bitwise(synthetic_indexer_inputs("indexer/decode", t1), t0);
}

// One batched decode launch: 96 sequences at positions 0..95 (a quarter complete a CSA block),
// each equal to its own executor step (cache rows, state, and the debug outputs of the
// completing sequences).
void expect_batched_decode_bitwise(const Inputs& in) {
  constexpr std::int64_t kB = 96;
  const cmp::Dims& dm = in.dm;
  const int cw = dm.cw(), rows = dm.state_rows();
  const std::int64_t entries_max = kB / 4 + 1;
  std::vector<float> kv, sc;
  std::vector<std::int64_t> pos(kB);
  std::vector<std::uint8_t> cache(static_cast<std::size_t>(kB * entries_max * dm.row_bytes()),
                                  0xA5);
  std::vector<std::uint8_t> want = cache;
  for (std::int64_t b = 0; b < kB; ++b) {
    pos[static_cast<std::size_t>(b)] = b;
    Inputs head = in;
    head.tokens = b;  // a hand-off state after b tokens of the same data, then step b
    cmp::DecodeState st = cuda::compressor_prefill_state_simt(head.problem());
    kv.insert(kv.end(), st.kv.begin(), st.kv.end());
    sc.insert(sc.end(), st.score.begin(), st.score.end());
  }
  std::vector<float> kv_want = kv, sc_want = sc;
  // Debug outputs [B, w]: written only by completing sequences; both sides start poisoned.
  const int n_dbg = dm.indexer() ? 4 : 2;
  std::vector<std::vector<std::uint16_t>> dbg(
      static_cast<std::size_t>(n_dbg),
      std::vector<std::uint16_t>(static_cast<std::size_t>(kB * dm.width), 0x7FC1));
  std::vector<std::vector<std::uint16_t>> dbg_want = dbg;
  cmp::EntryDebug edbg{dbg_want[0].data(), dbg_want[1].data(), nullptr, nullptr};
  if (dm.indexer()) {
    edbg.roped = dbg_want[2].data();
    edbg.hadamard = dbg_want[3].data();
  }
  for (std::int64_t b = 0; b < kB; ++b) {
    cmp::DecodeState st(dm);
    std::copy(kv.begin() + b * rows * cw, kv.begin() + (b + 1) * rows * cw, st.kv.begin());
    std::copy(sc.begin() + b * rows * cw, sc.begin() + (b + 1) * rows * cw, st.score.begin());
    const std::int64_t j = b / 4;
    cuda::compressor_decode_step_simt(
        dm, st, b, in.a.data() + b * cw, in.g.data() + b * cw, in.ape.data(), in.norm_w.data(),
        in.eps, cmp::RopeRow{in.cos.data() + j * 32, in.sin.data() + j * 32},
        want.data() + (b * entries_max + j) * dm.row_bytes(), edbg.at(b, dm.width));
    std::copy(st.kv.begin(), st.kv.end(), kv_want.begin() + b * rows * cw);
    std::copy(st.score.begin(), st.score.end(), sc_want.begin() + b * rows * cw);
  }
  // Device: one launch for all 96 sequences.
  float *dkv, *dsc, *da, *dg, *dape, *dnw, *dcos, *dsin;
  std::int64_t* dpos;
  std::uint8_t* dcache;
  const auto up = [](auto*& d, const auto& h) {
    V4REF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d), h.size() * sizeof(h[0])));
    V4REF_CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(h[0]), cudaMemcpyHostToDevice));
  };
  up(dkv, kv);
  up(dsc, sc);
  up(da, in.a);
  up(dg, in.g);
  up(dape, in.ape);
  up(dnw, in.norm_w);
  up(dcos, in.cos);
  up(dsin, in.sin);
  up(dpos, pos);
  up(dcache, cache);
  std::vector<std::uint16_t*> ddbg(4, nullptr);
  for (int i = 0; i < n_dbg; ++i)
    up(ddbg[static_cast<std::size_t>(i)], dbg[static_cast<std::size_t>(i)]);
  cuda::CompressorDecodeLaunch p;
  p.dm = dm;
  p.batch = kB;
  p.positions = dpos;
  p.a = da;  // row b of a is token b: exactly the token each sequence decodes
  p.g = dg;
  p.ape = dape;
  p.norm_w = dnw;
  p.eps = in.eps;
  p.cos = dcos;
  p.sin = dsin;
  p.state_kv = dkv;
  p.state_score = dsc;
  p.cache = dcache;
  p.entries_max = entries_max;
  p.dbg_pooled = ddbg[0];
  p.dbg_normed = ddbg[1];
  p.dbg_roped = ddbg[2];
  p.dbg_hadamard = ddbg[3];
  cuda::compressor_decode(p);
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  V4REF_CUDA_CHECK(cudaMemcpy(cache.data(), dcache, cache.size(), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n_dbg; ++i) {
    auto& h = dbg[static_cast<std::size_t>(i)];
    V4REF_CUDA_CHECK(cudaMemcpy(h.data(), ddbg[static_cast<std::size_t>(i)], h.size() * 2,
                                cudaMemcpyDeviceToHost));
    cudaFree(ddbg[static_cast<std::size_t>(i)]);
  }
  V4REF_CUDA_CHECK(cudaMemcpy(kv.data(), dkv, kv.size() * 4, cudaMemcpyDeviceToHost));
  V4REF_CUDA_CHECK(cudaMemcpy(sc.data(), dsc, sc.size() * 4, cudaMemcpyDeviceToHost));
  for (void* d : {static_cast<void*>(dkv), static_cast<void*>(dsc), static_cast<void*>(da),
                  static_cast<void*>(dg), static_cast<void*>(dape), static_cast<void*>(dnw),
                  static_cast<void*>(dcos), static_cast<void*>(dsin), static_cast<void*>(dpos),
                  static_cast<void*>(dcache)})
    cudaFree(d);
  EXPECT_EQ(cache, want) << in.name << ": cache (untouched rows keep 0xA5 on both sides)";
  EXPECT_EQ(0, std::memcmp(kv.data(), kv_want.data(), kv.size() * 4)) << in.name << ": state kv";
  EXPECT_EQ(0, std::memcmp(sc.data(), sc_want.data(), sc.size() * 4)) << in.name << ": state score";
  for (int i = 0; i < n_dbg; ++i)
    EXPECT_EQ(dbg[static_cast<std::size_t>(i)], dbg_want[static_cast<std::size_t>(i)])
        << in.name << ": debug output " << i << " (pooled, normed, roped, hadamard)";
}

TEST(CompressorGpu, BatchedDecodeMixedPositions) {
  V4REF_REQUIRE_DEVICE();
  expect_batched_decode_bitwise(
      synthetic_compressor_inputs("compressor/decode_batch", 4, 512, 96, 1.0, 1.0, 0.5, 96));
  expect_batched_decode_bitwise(
      synthetic_indexer_inputs("indexer/decode_batch", 96, 1.0, 1.0, 0.5, 96));
}

TEST(CompressorGpu, TwentyBitwiseReruns) {
  V4REF_REQUIRE_DEVICE();
  for (const int ratio : {4, 128}) {
    const Inputs in = synthetic_compressor_inputs("compressor/reruns", ratio, 512, 4096);
    const cuda::CompressorHostOut first = cuda::compressor_prefill_host(in.problem(), false);
    for (int r = 1; r < 20; ++r) {
      const cuda::CompressorHostOut again = cuda::compressor_prefill_host(in.problem(), false);
      ASSERT_EQ(again.cache, first.cache) << "m " << ratio << " rerun " << r;
    }
  }
  // The indexer: cache rows and every debug output, 20 runs.
  const Inputs in = synthetic_indexer_inputs("indexer/reruns", 4096);
  const cuda::CompressorHostOut first = cuda::compressor_prefill_host(in.problem(), true);
  for (int r = 1; r < 20; ++r) {
    const cuda::CompressorHostOut again = cuda::compressor_prefill_host(in.problem(), true);
    ASSERT_EQ(again.cache, first.cache) << "indexer rerun " << r;
    ASSERT_EQ(again.hadamard, first.hadamard) << "indexer rerun " << r;
    ASSERT_EQ(again.roped, first.roped) << "indexer rerun " << r;
    ASSERT_EQ(again.normed, first.normed) << "indexer rerun " << r;
    ASSERT_EQ(again.pooled, first.pooled) << "indexer rerun " << r;
    ASSERT_EQ(again.state_kv, first.state_kv) << "indexer rerun " << r;
  }
}

}  // namespace
}  // namespace v4ref
