// The tolerance table (compare/tolerance.hpp, compare/src/tolerance_table.cpp): its invariants
// (a reason per row, unique keys, every runner output covered on both paths, selection rows
// pointing at score rows that exist) and the allowance formulas on hand-computed values.
#include "v4ref/compare/tolerance.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "../common/test_support.hpp"
#include "v4ref/compare/runner.hpp"

namespace v4ref::compare {
namespace {

TEST(ToleranceTable, RowsAreWellFormed) {
  const std::set<std::string> paths = {"fp32", "fp64", "loose", "bf16", "baseline", "*"};
  std::set<std::pair<std::string, std::string>> seen;
  for (const ToleranceRow& row : tolerance_table()) {
    const std::string id = std::string(row.key) + " @ " + std::string(row.path);
    EXPECT_FALSE(row.key.empty());
    EXPECT_TRUE(paths.count(std::string(row.path))) << id;
    EXPECT_TRUE(seen.emplace(row.key, row.path).second) << "duplicate row " << id;
    EXPECT_GE(row.reason.size(), 40u) << id << ": every row states its derivation";
    switch (row.rule) {
      case Rule::kExact:
        break;
      case Rule::kNearTieSet:
        EXPECT_GT(row.c, 0) << id;
        EXPECT_FALSE(row.aux.empty()) << id;
        EXPECT_FALSE(row.aux_row.empty()) << id;
        break;
      case Rule::kBaseline:
      case Rule::kBound:
        EXPECT_GT(row.c, 0) << id;
        EXPECT_GT(row.floor, 0) << id << ": never a zero floor (guide §4)";
        break;
      default:
        EXPECT_GT(row.c, 0) << id;
    }
    if (row.cos_diff_max > 0) {
      EXPECT_LT(row.cos_diff_max, 0.1) << id;
    }
    EXPECT_NE(rule_text(row).find(rule_name(row.rule)), std::string::npos);
  }
}

TEST(ToleranceTable, EveryRunnerOutputHasTightRows) {
  for (const ComponentSpec& spec : components())
    for (const std::string& o : spec.outputs) {
      const std::string key = spec.name + "." + o;
      for (const char* path : {"fp32", "fp64"}) {
        const ToleranceRow* row = find_tolerance(key, path);
        ASSERT_NE(row, nullptr) << key << " has no row on path " << path;
        if (row->rule == Rule::kNearTieSet) {
          EXPECT_NE(find_tolerance(row->aux_row, path), nullptr) << key << " -> " << row->aux_row;
        }
      }
      // A loose row, when present, is a statistical gate ("*" rows are never loose gates).
      if (const ToleranceRow* loose = find_tolerance(key, "loose");
          loose != nullptr && loose->path == "loose") {
        EXPECT_EQ(loose->rule, Rule::kStatistical) << key;
      }
    }
}

TEST(ToleranceTable, TraceRowsAndLookup) {
  // Selections first (any path), then the statistical row of the path.
  EXPECT_EQ(find_tolerance("trace.attn.topk_idx", "bf16")->rule, Rule::kNearTieSet);
  EXPECT_EQ(find_tolerance("trace.ffn.routed_idx", "fp32")->rule, Rule::kNearTieSet);
  const ToleranceRow* o = find_tolerance("trace.attn.o", "fp32");
  ASSERT_NE(o, nullptr);
  EXPECT_EQ(o->rule, Rule::kStatistical);
  EXPECT_DOUBLE_EQ(o->c, 5e-4);
  EXPECT_DOUBLE_EQ(find_tolerance("trace.logits", "bf16")->cos_diff_max, 1e-3);
  EXPECT_EQ(find_tolerance("trace.logits", "baseline")->rule, Rule::kBaseline);
  // Looser paths are looser.
  for (const char* k : {"trace.attn.o", "trace.block.out"})
    EXPECT_LT(find_tolerance(k, "fp64")->c, find_tolerance(k, "fp32")->c) << k;
  EXPECT_LT(find_tolerance("trace.attn.o", "fp32")->c, find_tolerance("trace.attn.o", "bf16")->c);
  EXPECT_EQ(find_tolerance("rms_norm.out", "fp16"), nullptr);
  test::expect_error<ConfigError>([] { require_tolerance("rms_norm.out", "fp16"); },
                                  {"rms_norm.out", "fp16", "fp32", "fp64", "tolerance_table.cpp"});
  test::expect_error<ConfigError>([] { require_tolerance("nothing.out", "fp32"); },
                                  {"no row for this key"});
}

TEST(ToleranceTable, AllowanceFormulas) {
  Mat r(1, 4);
  r << 1, -2, 0.5, 0;
  const double rms = std::sqrt((1 + 4 + 0.25) / 4.0);  // 1.1456: ulp_fp32 = 2^-23
  // Baseline: c · base_err + floor · ulp_out(max(|r|, rms)).
  AllowanceInputs in;
  in.ref = &r;
  in.base_err = 1e-6;
  const Mat a = allowance(require_tolerance("rms_norm.out", "fp32"), in);
  EXPECT_DOUBLE_EQ(a(0, 0), 2e-6 + 2 * 0x1p-23);  // max(1, rms) = rms in [1, 2)
  EXPECT_DOUBLE_EQ(a(0, 1), 2e-6 + 2 * 0x1p-22);  // |r| = 2
  EXPECT_DOUBLE_EQ(a(0, 3), 2e-6 + 2 * 0x1p-23);  // r = 0: the floor at rms scale
  ASSERT_GT(rms, 1.0);
  // bf16 outputs: the floor is in bf16 ulps.
  in.out = FloatType::kBf16;
  EXPECT_DOUBLE_EQ(allowance(require_tolerance("rms_norm.out", "fp32"), in)(0, 1),
                   2e-6 + 2 * 0x1p-6);
  // Bound: κ n_eff u_acc M + floor ulp(rms); out == acc adds no u_out term.
  Mat m = Mat::Constant(1, 4, 4.0);
  AllowanceInputs bi;
  bi.ref = &r;
  bi.abs_bound = &m;
  bi.n_eff = 8;
  const Mat b = allowance(require_tolerance("hadamard.out", "fp32"), bi);
  EXPECT_DOUBLE_EQ(b(0, 2), 8 * 0x1p-24 * 4 + 2 * 0x1p-23);
  bi.abs_bound = nullptr;
  test::expect_error<Error>([&] { allowance(require_tolerance("hadamard.out", "fp32"), bi); },
                            {"abs-bound"});
  // Rel-rms (fp64 implementations): 2^-40 (|r| + rms).
  AllowanceInputs ri;
  ri.ref = &r;
  const Mat c = allowance(require_tolerance("rms_norm.out", "fp64"), ri);
  EXPECT_DOUBLE_EQ(c(0, 1), 0x1p-40 * 2 + 0x1p-40 * rms);
  EXPECT_TRUE((allowance(require_tolerance("dequant_fp8.out", "fp32"), ri).array() == 0).all());
  test::expect_error<Error>([&] { allowance(require_tolerance("trace.attn.o", "fp32"), ri); },
                            {"no elementwise"});
}

}  // namespace
}  // namespace v4ref::compare
