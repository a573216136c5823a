// The indexer's logits kernel (cuda/src/indexer_kernels.cuh) from its own source in the SIMT
// executor: bit-for-bit the host model of its fp32 arithmetic (idx::logits_model), within the
// tolerance table's index_logits.logits bound of the exact logits, nothing written past the
// visible prefix, every injected fault caught, and the executor's analysis of a decode launch
// (traffic, bank conflicts, MMA count).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "../common/indexer_bound.hpp"
#include "../common/indexer_inputs.hpp"
#include "v4ref/compare/tolerance.hpp"
#include "v4ref/cuda/indexer.hpp"
#include "v4ref/cuda/indexer_simt.hpp"

namespace v4ref::cuda {
namespace {

using idx::KeyFormat;
using test::IndexerData;
using test::IndexerInputs;
using test::make_indexer_data;

constexpr float kPoison = -12345.0f;  // what the kernel must leave alone

std::vector<float> run(const IndexerData& d, const IndexerSimtOptions& o = {},
                       simt::LaunchReport* rep = nullptr) {
  std::vector<float> out(static_cast<std::size_t>(d.rows() * d.stride), kPoison);
  index_logits_simt(d.problem(), out.data(), o, rep);
  return out;
}

std::vector<float> model(const IndexerData& d) {
  std::vector<float> out(static_cast<std::size_t>(d.rows() * d.stride), kPoison);
  idx::logits_model(d.problem(), out.data());
  return out;
}

// Bitwise equality (−0 and +0 apart) with the model; the count of compared entries.
std::int64_t expect_bits_equal(const std::vector<float>& got, const std::vector<float>& want,
                               const std::string& what) {
  EXPECT_EQ(got.size(), want.size());
  std::int64_t n = 0, bad = 0;
  for (std::size_t i = 0; i < got.size() && i < want.size(); ++i) {
    std::uint32_t a = 0, b = 0;
    std::memcpy(&a, &got[i], 4);
    std::memcpy(&b, &want[i], 4);
    if (want[i] != kPoison) ++n;
    if (a != b && ++bad <= 5) ADD_FAILURE() << what << ": entry " << i << " got " << got[i] << " want " << want[i];
  }
  EXPECT_EQ(bad, 0) << what;
  return n;
}

struct Shape {
  const char* name;
  KeyFormat format;
  int heads;
  std::vector<std::int32_t> first_pos;
  int rows_per_request;
};

// Decode (next_n 1 and 2, several requests), prefill chunks (rows spanning tiles), first tokens.
std::vector<Shape> shapes() {
  std::vector<Shape> s;
  for (KeyFormat f : {KeyFormat::kFp4, KeyFormat::kFp8}) {
    s.push_back({"decode_h64_next1", f, 64, {300, 517, 2}, 1});
    s.push_back({"decode_h64_next2", f, 64, {255, 1030}, 2});
    s.push_back({"prefill_h4", f, 4, {190}, 40});
    s.push_back({"prefill_h8_first_tokens", f, 8, {0}, 37});
    s.push_back({"decode_h16_next2", f, 16, {63, 700}, 2});
    s.push_back({"prefill_h32", f, 32, {500}, 5});
  }
  return s;
}

TEST(IndexerSimt, EqualsTheHostModelBitForBit) {
  for (const Shape& sh : shapes()) {
    const IndexerData d = make_indexer_data(sh.format, sh.heads, sh.first_pos, sh.rows_per_request,
                                            IndexerInputs::kRandom, derive_seed("indexer_simt", sh.name, "", 1));
    for (const int pps : {0, 1, 3}) {
      IndexerSimtOptions o;
      o.pages_per_split = pps;
      o.run.seed = static_cast<std::uint64_t>(pps);
      simt::LaunchReport rep;
      const std::vector<float> got = run(d, o, &rep);
      ASSERT_TRUE(rep.ok()) << sh.name << " " << idx::format_name(sh.format) << "\n" << rep.summary();
      const std::int64_t n = expect_bits_equal(got, model(d), std::string(sh.name) + " " + idx::format_name(sh.format) +
                                                                  " pages_per_split " + std::to_string(pps));
      EXPECT_GT(n, 0);
    }
  }
}

// FP4 × FP4 block products are exact under any accumulation (indexer_tile.hpp): the 14-bit
// aligned-and-truncated tensor-core model gives the same bits. FP8 keys do not have that
// property: there the truncated model must stay within the tolerance row instead.
TEST(IndexerSimt, Fp4BitsDoNotDependOnTheMmaAccumulationModel) {
  const IndexerData d = make_indexer_data(KeyFormat::kFp4, 64, {1000, 333}, 2, IndexerInputs::kRandom,
                                          derive_seed("indexer_simt", "t14", "", 1));
  IndexerSimtOptions o;
  o.run.mma_model = simt::MmaModel::kAlignedTruncated;
  o.run.mma_bits = 14;
  expect_bits_equal(run(d, o), model(d), "fp4 under 14-bit truncation");
}

// Within index_logits.logits of the exact logits, for every input kind, both formats and both
// accumulation models; entries past the visible prefix stay untouched.
TEST(IndexerSimt, WithinTheToleranceRowOfTheExactLogits) {
  for (KeyFormat f : {KeyFormat::kFp4, KeyFormat::kFp8})
    for (IndexerInputs kind : {IndexerInputs::kRandom, IndexerInputs::kAllNegative, IndexerInputs::kEqualKeys,
                               IndexerInputs::kHugeTiny, IndexerInputs::kSaturated})
      for (simt::MmaModel mm : {simt::MmaModel::kIeeeFp32, simt::MmaModel::kAlignedTruncated}) {
        const IndexerData d = make_indexer_data(f, 8, {150, 77}, 3, kind,
                                                derive_seed("indexer_simt", "bound", "", static_cast<int>(kind)));
        IndexerSimtOptions o;
        o.run.mma_model = mm;
        o.run.mma_bits = 14;
        const test::LogitsJudgement j = test::judge_logits(d, run(d, o), kPoison);
        const char* model_name = mm == simt::MmaModel::kIeeeFp32 ? "ieee" : "t14";
        EXPECT_LE(j.worst, 1.0) << idx::format_name(f) << " kind " << static_cast<int>(kind) << " " << model_name;
        EXPECT_EQ(j.written_past, 0) << "written past the visible prefix";
        EXPECT_GT(j.visible, 0);
        if (kind == IndexerInputs::kAllNegative) EXPECT_EQ(j.zeros, j.visible) << "every ReLU vanishes: all scores 0";
        else EXPECT_LT(j.zeros, j.visible);
        std::printf("%s kind %d %s: worst error / allowed %.3g over %lld entries\n", idx::format_name(f),
                    static_cast<int>(kind), model_name, j.worst, static_cast<long long>(j.visible));
      }
}

// Every injected fault is caught: a finding of the executor, or bits that differ from the model.
TEST(IndexerSimt, EveryFaultIsCaught) {
  using indexer_kernels_fault = int;
  const char* names[] = {"none", "visible-off-by-one", "nibble-order", "scale-row-misread", "relu-missing",
                         "relu-after-head-sum", "head-weight-index", "page-table-offset", "no-proxy-fence",
                         "no-page-wait"};
  for (KeyFormat f : {KeyFormat::kFp4, KeyFormat::kFp8}) {
    // Two requests (page tables differ), positions ending in 3 mod 4 (the visibility edge),
    // heads with negative logits (ReLU matters) and unequal weights.
    const IndexerData d = make_indexer_data(f, 16, {259, 402}, 2, IndexerInputs::kRandom,
                                            derive_seed("indexer_simt", "faults", "", 2));
    const std::vector<float> want = model(d);
    for (indexer_kernels_fault fault = 1; fault <= 9; ++fault) {
      if (f == KeyFormat::kFp8 && fault == 2) continue;  // FP8 rows have no nibbles
      IndexerSimtOptions o;
      o.fault = fault;
      o.run.throw_on_error = false;
      simt::LaunchReport rep;
      const std::vector<float> got = run(d, o, &rep);
      const bool differs = std::memcmp(got.data(), want.data(), got.size() * 4) != 0;
      EXPECT_TRUE(!rep.ok() || differs) << names[fault] << " (" << idx::format_name(f) << ") went unnoticed";
      std::printf("fault %-20s %s: %s\n", names[fault], idx::format_name(f),
                  !rep.ok() ? rep.findings.front().kind.c_str() : "bits differ from the model");
    }
  }
}

// The executor's analysis of a Flash decode launch: 4 requests, one query token each, 2048
// visible entries (32 pages, two splits of the device grid) each, FP4 and FP8 keys.
TEST(IndexerSimt, DecodeLaunchAnalysis) {
  for (KeyFormat f : {KeyFormat::kFp4, KeyFormat::kFp8}) {
    const IndexerData d = make_indexer_data(f, 64, {8191, 8191, 8191, 8191}, 1, IndexerInputs::kRandom,
                                            derive_seed("indexer_simt", "analysis", "", 3));
    simt::LaunchReport rep;
    const std::vector<float> got = run(d, {}, &rep);  // the device's grid: 2 splits per request
    ASSERT_TRUE(rep.ok()) << rep.summary();
    expect_bits_equal(got, model(d), "analysis launch");
    std::printf("%s decode: traffic ratio %.3f, t_lower H100 %.2f us, mma %llu\n", idx::format_name(f),
                rep.traffic_ratio, rep.t_lower_h100_us, static_cast<unsigned long long>(rep.mix.mma));
    const std::string dir = std::string(V4REF_BINARY_DIR) + "/simt-reports";
    std::filesystem::create_directories(dir);
    simt::write_report(rep, dir + "/index_logits-" + idx::format_name(f) + "-decode-B4-N2048-H64.json");
    EXPECT_LE(rep.traffic_ratio, 1.10);
    EXPECT_GE(rep.traffic_ratio, 0.99);
    // MMA: 4 per page and group = the useful work (one query token fills the 64 columns).
    EXPECT_EQ(rep.mix.mma, 4u * 32u * 4u);
    EXPECT_DOUBLE_EQ(rep.mma_flops_fp8, 2.0 * 64 * 128 * 2048 * 4);  // 2·H·D·P
    for (const simt::SiteStats& s : rep.sites)
      if (s.space == "shared") {
        EXPECT_EQ(s.worst_bank_ways, 1) << s.site << " " << s.op << " " << s.access_bytes << " B";
      }
  }
}

// The rule of verification.md §9 on fp32 logits [R, stride]: per row the min(k, visible)
// largest, ties to the lower index, ascending, −1 padding.
std::vector<std::int32_t> rule_topk(const IndexerData& d, const std::vector<float>& logits, std::int32_t k) {
  std::vector<std::int32_t> out;
  for (std::int64_t r = 0; r < d.rows(); ++r) {
    const std::int64_t vis = idx::visible_entries(d.pos[static_cast<std::size_t>(r)]);
    std::vector<std::int64_t> j(static_cast<std::size_t>(vis));
    for (std::int64_t i = 0; i < vis; ++i) j[static_cast<std::size_t>(i)] = i;
    const float* row = logits.data() + r * d.stride;
    std::stable_sort(j.begin(), j.end(), [&](std::int64_t a, std::int64_t b) {
      const float x = row[a] == 0.0f ? 0.0f : row[a], y = row[b] == 0.0f ? 0.0f : row[b];  // −0 = +0
      return x > y;
    });
    if (static_cast<std::int64_t>(j.size()) > k) j.resize(static_cast<std::size_t>(k));
    std::sort(j.begin(), j.end());
    for (std::int32_t i = 0; i < k; ++i)
      out.push_back(i < static_cast<std::int32_t>(j.size()) ? static_cast<std::int32_t>(j[static_cast<std::size_t>(i)]) : -1);
  }
  return out;
}

// The fused decode path (logits never in global memory) selects exactly the set that the rule
// selects on the logits kernel's bits, for every split of the pages (the merge of partial
// selections), next_n 1 and 2, FP4 and FP8 keys, tie-heavy and short (visible < k) rows.
TEST(IndexerSimt, FusedDecodeSelectsTheSetOfTheLogits) {
  struct Fused {
    const char* name;
    KeyFormat format;
    int heads;
    std::vector<std::int32_t> first;
    int next_n;
    std::int32_t k;
    IndexerInputs kind;
  };
  const Fused cases[] = {
      {"flash_next1", KeyFormat::kFp4, 64, {4095, 1500, 2}, 1, 512, IndexerInputs::kRandom},
      {"flash_next2_fp8", KeyFormat::kFp8, 64, {3000, 2100}, 2, 512, IndexerInputs::kRandom},
      {"pro_k1024", KeyFormat::kFp4, 64, {8191}, 1, 1024, IndexerInputs::kRandom},
      {"tiny_h4_ties", KeyFormat::kFp4, 4, {900, 5, 0}, 2, 32, IndexerInputs::kAllNegative},
      {"tiny_h8_equal", KeyFormat::kFp8, 8, {700, 333}, 2, 64, IndexerInputs::kEqualKeys},
      {"tiny_h4_saturated", KeyFormat::kFp4, 4, {1200}, 2, 32, IndexerInputs::kSaturated},
  };
  for (const Fused& f : cases) {
    const IndexerData d = make_indexer_data(f.format, f.heads, f.first, f.next_n, f.kind,
                                            derive_seed("indexer_simt", "fused", f.name, 4));
    const std::vector<std::int32_t> want = rule_topk(d, model(d), f.k);
    for (const int pps : {0, 1, 3}) {
      IndexerSimtOptions o;
      o.pages_per_split = pps;
      simt::LaunchReport p1, p2;
      const std::vector<std::int32_t> got = index_topk_decode_simt(d.problem(), f.k, o, &p1, &p2);
      ASSERT_TRUE(p1.ok()) << f.name << "\n" << p1.summary();
      ASSERT_TRUE(p2.ok()) << f.name << "\n" << p2.summary();
      EXPECT_EQ(got, want) << f.name << " pages_per_split " << pps;
      // No logits reach global memory: the partial kernel's global stores are the partials only.
      for (const simt::SiteStats& s : p1.sites)
        if (s.space == "global" && s.op == "st") {
          EXPECT_LE(s.access_bytes, 8) << s.site;
        }
      if (pps == 0 && std::string(f.name) == "flash_next2_fp8") {
        const std::string dir = std::string(V4REF_BINARY_DIR) + "/simt-reports";
        std::filesystem::create_directories(dir);
        simt::write_report(p1, dir + "/index_topk_partial-fp8-decode-B2-next2-H64-k512.json");
        simt::write_report(p2, dir + "/index_topk_merge-fp8-decode-B2-next2-k512.json");
      }
      if (pps == 0)
        std::printf("fused %-18s partial: traffic ratio %.3f, t_lower H100 %.2f us; merge %.2f us\n", f.name,
                    p1.traffic_ratio, p1.t_lower_h100_us, p2.t_lower_h100_us);
    }
  }
}

TEST(IndexerSimt, FusedDecodeFaultsAreCaught) {
  // Positions 254 (63 visible < k: every entry counts) and 2002 (≡ 2 mod 4: the visibility edge;
  // its own page table differs from request 0's).
  const IndexerData d = make_indexer_data(KeyFormat::kFp4, 8, {254, 2002}, 2, IndexerInputs::kRandom,
                                          derive_seed("indexer_simt", "fused_faults", "", 5));
  const std::vector<std::int32_t> want = rule_topk(d, model(d), 64);
  for (int fault : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
    IndexerSimtOptions o;
    o.fault = fault;
    o.run.throw_on_error = false;
    simt::LaunchReport p1, p2;
    const std::vector<std::int32_t> got = index_topk_decode_simt(d.problem(), 64, o, &p1, &p2);
    EXPECT_TRUE(!p1.ok() || !p2.ok() || got != want) << "fault " << fault << " went unnoticed by the fused path";
  }
  EXPECT_THROW(index_topk_decode_simt(d.problem(), 48), ShapeError);  // k not a power of two
}

TEST(IndexerSimt, BadInputsAreNamed) {
  IndexerData d = make_indexer_data(KeyFormat::kFp4, 4, {100}, 2, IndexerInputs::kRandom, 7);
  d.page_table[0] = static_cast<std::int32_t>(d.num_pages);
  std::vector<float> out(static_cast<std::size_t>(d.rows() * d.stride));
  try {
    index_logits_simt(d.problem(), out.data());
    ADD_FAILURE() << "an out-of-range page went unnoticed";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("page_table[0][0]"), std::string::npos) << e.what();
  }
  d = make_indexer_data(KeyFormat::kFp4, 4, {100}, 2, IndexerInputs::kRandom, 7);
  d.heads = 12;
  EXPECT_THROW(index_logits_simt(d.problem(), out.data()), ShapeError);
  d = make_indexer_data(KeyFormat::kFp4, 4, {100}, 2, IndexerInputs::kRandom, 7);
  d.stride = 3;
  EXPECT_THROW(index_logits_simt(d.problem(), out.data()), ShapeError);
  // NaN codes where the kernel would read them: named, never silent Inf/NaN logits.
  const auto names = [&](IndexerData bad_d, const std::string& what) {
    std::vector<float> o(static_cast<std::size_t>(bad_d.rows() * bad_d.stride));
    try {
      index_logits_simt(bad_d.problem(), o.data());
      ADD_FAILURE() << what << " went unnoticed";
    } catch (const NumericError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
    EXPECT_THROW(index_topk_decode_simt(bad_d.problem(), 32), NumericError);
  };
  IndexerData q_nan = make_indexer_data(KeyFormat::kFp4, 4, {100}, 2, IndexerInputs::kRandom, 7);
  q_nan.q[5 * idx::kQ4RowBytes + 66] = 0xFF;
  names(q_nan, "q row 1 head 1: scale byte 2");
  IndexerData k_nan = make_indexer_data(KeyFormat::kFp4, 4, {100}, 2, IndexerInputs::kRandom, 7);
  k_nan.key_row(0, 9)[64] = 0xFF;
  names(k_nan, "key entry 9 of request 0");
  IndexerData c_nan = make_indexer_data(KeyFormat::kFp8, 4, {100}, 2, IndexerInputs::kRandom, 7);
  c_nan.key_row(0, 3)[17] = 0x7F;
  names(c_nan, "key entry 3 of request 0");
  IndexerData s_nan = make_indexer_data(KeyFormat::kFp8, 4, {100}, 2, IndexerInputs::kRandom, 7);
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(s_nan.key_row(0, 4) + 128, &inf, 4);
  names(s_nan, "the fp32 row scale is not finite");
}

}  // namespace
}  // namespace v4ref::cuda
