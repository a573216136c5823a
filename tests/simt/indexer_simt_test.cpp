// The indexer's logits kernel (cuda/src/indexer_kernels.cuh) from its own source in the SIMT
// executor: bit-for-bit the host model of its fp32 arithmetic (idx::logits_model), within the
// tolerance table's index_logits.logits bound of the exact logits, nothing written past the
// visible prefix, every injected fault caught, and the executor's analysis of a decode launch
// (traffic, bank conflicts, MMA count).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

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
  const compare::ToleranceRow& row = compare::require_tolerance("index_logits.logits", "fp32");
  for (KeyFormat f : {KeyFormat::kFp4, KeyFormat::kFp8})
    for (IndexerInputs kind : {IndexerInputs::kRandom, IndexerInputs::kAllNegative, IndexerInputs::kEqualKeys,
                               IndexerInputs::kHugeTiny, IndexerInputs::kSaturated})
      for (simt::MmaModel mm : {simt::MmaModel::kIeeeFp32, simt::MmaModel::kAlignedTruncated}) {
        const IndexerData d = make_indexer_data(f, 8, {150, 77}, 3, kind,
                                                derive_seed("indexer_simt", "bound", "", static_cast<int>(kind)));
        IndexerSimtOptions o;
        o.run.mma_model = mm;
        o.run.mma_bits = 14;
        const std::vector<float> got = run(d, o);
        const test::ExactLogits ex = test::exact_logits(d);
        compare::Mat ref(d.rows(), d.stride), bound(d.rows(), d.stride);
        for (std::int64_t r = 0; r < d.rows(); ++r)
          for (std::int64_t j = 0; j < d.stride; ++j) {
            const auto i = static_cast<std::size_t>(r * d.stride + j);
            ref(r, j) = std::isfinite(ex.logits[i]) ? ex.logits[i] : 0.0;
            bound(r, j) = ex.bound[i];
          }
        compare::AllowanceInputs in;
        in.ref = &ref;
        in.abs_bound = &bound;
        in.n_eff = idx::kBlockDims + 1;
        const compare::Mat allowed = compare::allowance(row, in);
        int bad = 0;
        double worst = 0;
        std::int64_t zeros = 0, visible = 0;
        for (std::int64_t r = 0; r < d.rows(); ++r)
          for (std::int64_t j = 0; j < d.stride; ++j) {
            const auto i = static_cast<std::size_t>(r * d.stride + j);
            if (!std::isfinite(ex.logits[i])) {
              EXPECT_EQ(got[i], kPoison) << "written past the visible prefix: row " << r << " entry " << j;
              continue;
            }
            ++visible;
            zeros += got[i] == 0.0f ? 1 : 0;
            const double err = std::abs(static_cast<double>(got[i]) - ex.logits[i]);
            worst = std::max(worst, allowed(r, j) > 0 ? err / allowed(r, j) : (err > 0 ? 1e9 : 0));
            if (err > allowed(r, j) && ++bad <= 3)
              ADD_FAILURE() << idx::format_name(f) << " kind " << static_cast<int>(kind) << " row " << r << " key " << j
                            << ": got " << got[i] << " exact " << ex.logits[i] << " allowed " << allowed(r, j);
          }
        EXPECT_GT(visible, 0);
        if (kind == IndexerInputs::kAllNegative) EXPECT_EQ(zeros, visible) << "every ReLU vanishes: all scores 0";
        else EXPECT_LT(zeros, visible);
        std::printf("%s kind %d %s: worst error / allowed %.3g over %lld entries\n", idx::format_name(f),
                    static_cast<int>(kind), mm == simt::MmaModel::kIeeeFp32 ? "ieee" : "t14", worst,
                    static_cast<long long>(visible));
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

// The executor's analysis of a Flash decode launch: 4 requests, one query token each, 1024
// visible entries (16 pages) each, FP4 and FP8 keys.
TEST(IndexerSimt, DecodeLaunchAnalysis) {
  for (KeyFormat f : {KeyFormat::kFp4, KeyFormat::kFp8}) {
    const IndexerData d = make_indexer_data(f, 64, {4095, 4095, 4095, 4095}, 1, IndexerInputs::kRandom,
                                            derive_seed("indexer_simt", "analysis", "", 3));
    simt::LaunchReport rep;
    const std::vector<float> got = run(d, {}, &rep);  // the device's split: 2 CTAs per request
    ASSERT_TRUE(rep.ok()) << rep.summary();
    expect_bits_equal(got, model(d), "analysis launch");
    std::printf("%s decode: traffic ratio %.3f, t_lower H100 %.2f us, mma %llu\n", idx::format_name(f),
                rep.traffic_ratio, rep.t_lower_h100_us, static_cast<unsigned long long>(rep.mix.mma));
    EXPECT_LE(rep.traffic_ratio, 1.10);
    EXPECT_GE(rep.traffic_ratio, 0.99);
    // MMA: 4 per page and group = the useful work (one query token fills the 64 columns).
    EXPECT_EQ(rep.mix.mma, 4u * 16u * 4u);
    EXPECT_DOUBLE_EQ(rep.mma_flops_fp8, 2.0 * 64 * 128 * 1024 * 4);  // 2·H·D·P
    for (const simt::SiteStats& s : rep.sites)
      if (s.space == "shared") {
        EXPECT_EQ(s.worst_bank_ways, 1) << s.site << " " << s.op << " " << s.access_bytes << " B";
      }
  }
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
}

}  // namespace
}  // namespace v4ref::cuda
