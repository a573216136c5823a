// The attention kernel (cuda/src/attention_kernels.cuh) from its own source in the SIMT executor:
// decode (ring window of 2 pages) equals prefill (linear window) bit for bit, the head blocks of
// H = 128 are independent, bad stored values are named errors, and the executor's analysis of a
// V4-Flash decode launch (traffic, MMA work, shared-memory conflicts). Correctness against the
// reference: tests/compare/attention_runner_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "../common/attention_implementation.hpp"
#include "v4ref/cuda/attention_simt.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::cuda {
namespace {

using test::AttentionData;

// A random stored row: e4m3 codes (no NaN code), scales 2^-4 .. 2^4, bf16 rope values ~ N(0, 1).
void random_row(Rng& rng, int D, std::uint8_t* row) {
  for (int k = 0; k < attn::nope_dims(D); ++k) {
    auto c = static_cast<std::uint8_t>(rng.below(256));
    if ((c & 0x7F) == 0x7F) c ^= 1;
    if ((c & 0x78) >= 0x60) c &= 0xBF;  // |value| < 64: logits of a sane softmax
    row[k] = c;
  }
  for (int k = 0; k < attn::kRope; ++k) {
    const std::uint16_t h = fmt::bf16_encode(rng.normal(0.0, 1.0));
    std::memcpy(row + attn::nope_dims(D) + 2 * k, &h, 2);
  }
  for (int b = 0; b < attn::scale_count(D); ++b)
    row[attn::scale_offset(D) + b] = static_cast<std::uint8_t>(127 - 8 + static_cast<int>(rng.below(5)));
}

// One request: positions [0, total) in the window cache (linear table, or a ring of 2 pages holding
// the 128 positions up to ring_t), n_cmp compressed entries, rows at `positions`; CSA selections
// of top_k slots (random distinct visible entries, then −1) or HCA.
AttentionData make_data(attn::Kind kind, int D, int H, std::int64_t total, std::int64_t n_cmp,
                        const std::vector<std::int32_t>& positions, std::int32_t top_k, std::uint64_t seed,
                        std::int64_t ring_t = -1) {
  Rng rng(seed);
  AttentionData a;
  a.kind = kind;
  a.D = D;
  a.H = H;
  const auto rb = static_cast<std::size_t>(attn::row_bytes(D));
  for (std::size_t i = 0; i < positions.size() * static_cast<std::size_t>(H * D); ++i)
    a.q.push_back(fmt::bf16_encode(rng.normal(0.0, 1.0)));
  for (int h = 0; h < H; ++h) a.sink.push_back(static_cast<float>(rng.normal(0.0, 1.0)));
  a.pos = positions;
  a.request.assign(positions.size(), 0);
  // The same stored rows whatever the layout: row s drawn from a per-position stream.
  const auto row_of = [&](std::uint64_t tag, std::int64_t s, std::uint8_t* dst) {
    Rng r(derive_seed("attention_simt", "row", "", seed ^ (tag << 40) ^ static_cast<std::uint64_t>(s)));
    random_row(r, D, dst);
  };
  a.window_pages = ring_t >= 0 ? 2 : static_cast<std::int32_t>(std::max<std::int64_t>(2, (total + 63) / 64));
  a.window_table = test::shuffled_pages(1, a.window_pages, seed + 1);
  a.window_cache.assign(static_cast<std::size_t>(a.window_pages + 1) * 64 * rb, 0xFF);
  for (std::int64_t s = ring_t >= 0 ? attn::window_first(ring_t) : 0; s < (ring_t >= 0 ? ring_t + 1 : total); ++s) {
    const std::int64_t page = a.window_table[static_cast<std::size_t>((s / 64) % a.window_pages)];
    row_of(1, s, a.window_cache.data() + (page * 64 + s % 64) * static_cast<std::int64_t>(rb));
  }
  a.cmp_pages = static_cast<std::int32_t>(std::max<std::int64_t>(1, (n_cmp + 63) / 64));
  a.cmp_table = test::shuffled_pages(1, a.cmp_pages, seed + 2);
  a.cmp_cache.assign(static_cast<std::size_t>(a.cmp_pages + 1) * 64 * rb, 0xFF);
  for (std::int64_t j = 0; j < n_cmp; ++j)
    row_of(2, j, a.cmp_cache.data() + (a.cmp_table[static_cast<std::size_t>(j / 64)] * 64 + j % 64) * static_cast<std::int64_t>(rb));
  if (kind == attn::Kind::kCsa) {
    a.top_k = top_k;
    for (const std::int32_t t : positions) {
      const std::int64_t vis = std::min<std::int64_t>(n_cmp, attn::visible_entries(t, attn::kCsaRatio));
      std::vector<std::int32_t> all(static_cast<std::size_t>(vis));
      for (std::int64_t j = 0; j < vis; ++j) all[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(j);
      for (std::size_t i = all.size(); i > 1; --i) std::swap(all[i - 1], all[rng.below(i)]);
      for (std::int32_t s = 0; s < top_k; ++s) a.selected.push_back(s < vis ? all[static_cast<std::size_t>(s)] : -1);
    }
  }
  return a;
}

struct Result {
  std::vector<std::uint16_t> out;
  std::vector<float> lse;
};

Result run(const AttentionData& a, int fault = 0, simt::LaunchReport* rep = nullptr) {
  Result r;
  r.out.assign(static_cast<std::size_t>(a.rows() * a.H * a.D), 0x7FC1);
  r.lse.assign(static_cast<std::size_t>(a.rows() * a.H), std::numeric_limits<float>::quiet_NaN());
  AttentionSimtOptions o;
  o.fault = fault;
  o.run.throw_on_error = fault == 0;
  attention_simt(a.problem(), r.out.data(), r.lse.data(), o, rep);
  return r;
}

// The launch wrote every output: no NaN poison or non-finite value left, not all zero (the
// comparisons below would also hold between two launches that wrote nothing).
void expect_written(const Result& r, const std::string& what) {
  bool nonzero = false;
  for (std::size_t i = 0; i < r.out.size(); ++i) {
    ASSERT_NE(r.out[i] & 0x7F80u, 0x7F80u) << what << ": out[" << i << "] not written or not finite";
    nonzero = nonzero || (r.out[i] & 0x7FFFu) != 0;
  }
  for (std::size_t i = 0; i < r.lse.size(); ++i) ASSERT_TRUE(std::isfinite(r.lse[i])) << what << ": lse[" << i << "]";
  EXPECT_TRUE(nonzero) << what << ": every output is zero";
}

// Decode (each row alone, its window in a ring of 2 pages that holds only its 128 positions)
// and prefill (all rows, every position in a linear table) give the same bits: the window's
// addressing, the first tokens (t < 127) and the ring wrap (t >= 128) included.
TEST(AttentionSimt, DecodeEqualsPrefillBitForBit) {
  for (attn::Kind kind : {attn::Kind::kCsa, attn::Kind::kHca}) {
    const std::vector<std::int32_t> pos = {0, 3, 126, 127, 128, 191, 255, 300};
    const std::uint64_t seed = derive_seed("attention_simt", "decode_prefill", attn::kind_name(kind), 1);
    const Result chunk = run(make_data(kind, 128, 4, 301, 75, pos, 32, seed));  // all rows at once
    ASSERT_EQ(chunk.out.size(), pos.size() * 4 * 128);
    expect_written(chunk, "chunk");
    for (std::size_t i = 0; i < pos.size(); ++i) {
      const Result dec = run(make_data(kind, 128, 4, 301, 75, {pos[i]}, 32, seed, pos[i]));
      // The decode data re-draws q and the selections for its single row: compare it with a
      // prefill of that row alone (same draws), and that with the chunk's row i below.
      const Result one = run(make_data(kind, 128, 4, 301, 75, {pos[i]}, 32, seed));
      expect_written(dec, "decode t=" + std::to_string(pos[i]));
      EXPECT_EQ(dec.out, one.out) << attn::kind_name(kind) << " t=" << pos[i];
      EXPECT_EQ(std::memcmp(dec.lse.data(), one.lse.data(), 4 * dec.lse.size()), 0) << attn::kind_name(kind) << " t=" << pos[i];
    }
  }
}

// H = 128: heads 64 .. 127 of a launch equal a launch of those heads alone (their queries and
// sinks): the second head block reads its own queries. The head-block mutant (every block reads
// heads 0 .. 63) breaks it.
TEST(AttentionSimt, HeadBlocksAreIndependent) {
  const std::vector<std::int32_t> pos = {130, 200};
  const AttentionData full = make_data(attn::Kind::kHca, 128, 128, 201, 2, pos, 0, 7);
  AttentionData upper = full;
  upper.H = 64;
  upper.q.clear();
  upper.sink.assign(full.sink.begin() + 64, full.sink.end());
  for (std::size_t r = 0; r < pos.size(); ++r)
    upper.q.insert(upper.q.end(), full.q.begin() + static_cast<std::ptrdiff_t>((r * 128 + 64) * 128),
                   full.q.begin() + static_cast<std::ptrdiff_t>((r * 128 + 128) * 128));
  const Result b = run(upper);
  expect_written(b, "heads 64..127 alone");
  for (int fault : {0, 10}) {
    const Result a = run(full, fault);
    bool same = true;
    for (std::size_t r = 0; r < pos.size(); ++r)
      same = same && std::equal(b.out.begin() + static_cast<std::ptrdiff_t>(r * 64 * 128),
                                b.out.begin() + static_cast<std::ptrdiff_t>((r + 1) * 64 * 128),
                                a.out.begin() + static_cast<std::ptrdiff_t>((r * 128 + 64) * 128));
    EXPECT_EQ(same, fault == 0) << "fault " << fault;
  }
}

TEST(AttentionSimt, BadStoredValuesAndSelectionsAreNamedErrors) {
  AttentionData a = make_data(attn::Kind::kCsa, 128, 4, 200, 40, {150}, 32, 3);
  AttentionData nan_scale = a;
  // the scale byte of the window row of position 150
  const std::int64_t off = attn::window_row_offset(nan_scale.problem(), 0, 150) + attn::scale_offset(128);
  nan_scale.window_cache[static_cast<std::size_t>(off)] = 0xFF;
  try {
    run(nan_scale);
    ADD_FAILURE() << "no error for a 0xFF scale";
  } catch (const NumericError& e) {
    EXPECT_NE(std::string(e.what()).find("position 150"), std::string::npos) << e.what();
  }
  AttentionData bad_sel = a;
  bad_sel.selected[3] = 37;  // visible at t = 150: entries 0 .. 36
  try {
    run(bad_sel);
    ADD_FAILURE() << "no error for an invisible entry";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("entry 37"), std::string::npos) << e.what();
  }
}

// The executor's analysis of a V4-Flash CSA decode row (H = 64, D = 512, k_I = 512 of 2047
// visible entries, t = 8191: N_k = 640 = 20 tiles) and an HCA row (N_k = 64 + 128).
TEST(AttentionSimt, DecodeLaunchAnalysis) {
  for (attn::Kind kind : {attn::Kind::kCsa, attn::Kind::kHca}) {
    const std::int32_t t = kind == attn::Kind::kCsa ? 8191 : 8191;
    const AttentionData a = make_data(kind, 512, 64, t + 1, kind == attn::Kind::kCsa ? 2047 : 64, {t}, 512, 11, t);
    simt::LaunchReport rep;
    run(a, 0, &rep);
    ASSERT_TRUE(rep.ok()) << rep.summary();
    std::printf("%s decode: traffic ratio %.3f, t_lower H100 %.2f us, mma %llu, bf16 MMA flops %.4g (useful %.4g)\n",
                attn::kind_name(kind), rep.traffic_ratio, rep.t_lower_h100_us,
                static_cast<unsigned long long>(rep.mix.mma), rep.mma_flops_bf16, attn::useful_flops(a.problem()));
    const std::string dir = std::string(V4REF_BINARY_DIR) + "/simt-reports";
    std::filesystem::create_directories(dir);
    simt::write_report(rep, dir + "/attention-" + attn::kind_name(kind) + "-decode-H64-D512.json");
    EXPECT_LE(rep.traffic_ratio, 1.10);
    EXPECT_GE(rep.traffic_ratio, 0.99);
    // N_k is a multiple of 32 and H = 64: the MMA work is exactly the useful work.
    EXPECT_DOUBLE_EQ(rep.mma_flops_bf16, attn::useful_flops(a.problem()));
    for (const simt::SiteStats& s : rep.sites)
      if (s.space == "global")
        std::printf("  global site %s %s %d B: %llu requests, %llu lanes, %.2f sectors/request\n", s.site.c_str(),
                    s.op.c_str(), s.access_bytes, static_cast<unsigned long long>(s.requests),
                    static_cast<unsigned long long>(s.lanes), s.sectors_per_request);
    // No shared-memory bank conflict anywhere: the Q prologue, the raw row images, the K, Vᵀ
    // and P stores, the S exchange and the output staging (docs/cuda-attention.md §2).
    for (const simt::SiteStats& s : rep.sites)
      if (s.space == "shared") {
        EXPECT_EQ(s.worst_bank_ways, 1) << s.site << " " << s.op << " " << s.access_bytes << " B";
      }
    for (const simt::SiteStats& s : rep.sites)
      if (s.space == "shared" && s.worst_bank_ways > 1)
        std::printf("  shared site %s %s %d B: worst %d ways (mean %.2f) over %llu requests\n", s.site.c_str(),
                    s.op.c_str(), s.access_bytes, s.worst_bank_ways, s.mean_bank_ways,
                    static_cast<unsigned long long>(s.requests));
  }
}

}  // namespace
}  // namespace v4ref::cuda
