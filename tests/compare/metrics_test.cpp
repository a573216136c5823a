// Metrics of compare/metrics.hpp on hand-computed examples: every number below is worked out in
// the comment next to it.
#include "v4ref/compare/metrics.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "../common/test_support.hpp"

namespace v4ref::compare {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

Mat row(std::initializer_list<double> v) {
  Mat m(1, static_cast<Eigen::Index>(v.size()));
  Eigen::Index i = 0;
  for (double x : v) m(0, i++) = x;
  return m;
}

TEST(Metrics, HandComputedValues) {
  // k = [1, 2, 3, 4], r = [1, 2, 3, 5]: d = [0, 0, 0, -1].
  const Metrics m = compare_tensors(row({1, 2, 3, 4}), row({1, 2, 3, 5}));
  EXPECT_EQ(m.compared, 4);
  EXPECT_DOUBLE_EQ(m.max_abs, 1.0);
  EXPECT_EQ(m.max_abs_at.col, 3);
  EXPECT_EQ(m.max_abs_at.k, 4.0);
  EXPECT_EQ(m.max_abs_at.r, 5.0);
  // rms(r) = sqrt(39/4); floor = 1e-3 rms(r); max_rel = 1/5.
  EXPECT_DOUBLE_EQ(m.rms_ref, std::sqrt(39.0 / 4));
  EXPECT_DOUBLE_EQ(m.rel_floor, 1e-3 * std::sqrt(39.0 / 4));
  EXPECT_DOUBLE_EQ(m.max_rel, 0.2);
  // ‖d‖ = 1, ‖r‖ = sqrt(39).
  EXPECT_DOUBLE_EQ(m.rel_fro, 1 / std::sqrt(39.0));
  EXPECT_DOUBLE_EQ(m.nmse, 1 / 39.0);
  // Σkr = 34, Σk² = 30, Σr² = 39: cos = 34/sqrt(1170), cos_diff = 1 − 68/69 = 1/69.
  EXPECT_DOUBLE_EQ(m.cos_sim, 34 / std::sqrt(1170.0));
  EXPECT_NEAR(m.cos_diff, 1 / 69.0, 1e-16);
  EXPECT_FALSE(m.both_zero);
  EXPECT_EQ(m.nonfinite_mismatch, 0);
}

TEST(Metrics, RelativeFloor) {
  // r = [0, 1e-6, 100]: rms = 100/sqrt(3) = 57.735, floor 0.057735; the element at r = 0 with
  // k = 1e-3 has rel 1e-3 / 0.057735 = 0.01732.
  const Mat k = row({1e-3, 2e-6, 100}), r = row({0, 1e-6, 100});
  const Metrics m = compare_tensors(k, r);
  EXPECT_NEAR(m.max_rel, 1e-3 / (1e-3 * 100 / std::sqrt(3.0)), 1e-12);
  EXPECT_EQ(m.max_rel_at.col, 0);
  MetricOptions o;
  o.rel_floor = 1e-9;  // given floor: 1e-3/1e-9 = 1e6
  EXPECT_NEAR(compare_tensors(k, r, o).max_rel, 1e6, 1e-3);
}

TEST(Metrics, UlpDistances) {
  EXPECT_EQ(ulp_distance(1.0, 1.0 + 0x1p-7, FloatType::kBf16), 1);  // next bf16 after 1
  EXPECT_EQ(ulp_distance(1.0, 1.0 + 0x1p-9, FloatType::kBf16), 0);  // rounds to 1 in bf16
  EXPECT_EQ(ulp_distance(1.0, 1.0 + 0x1p-23, FloatType::kFp32), 1);
  EXPECT_EQ(ulp_distance(1.0, 1.0 + 0x1p-52, FloatType::kFp64), 1);
  EXPECT_EQ(ulp_distance(-0.0, 0.0, FloatType::kFp32), 0);
  EXPECT_EQ(ulp_distance(-0x1p-149, 0x1p-149, FloatType::kFp32), 2);  // across zero
  EXPECT_EQ(ulp_distance(2.0, 1.0, FloatType::kBf16), 128);           // one binade = 2^7 bf16 steps
  EXPECT_EQ(ulp_of(1.0, FloatType::kBf16), 0x1p-7);
  EXPECT_EQ(ulp_of(-3.0, FloatType::kFp32), 0x1p-22);
  EXPECT_EQ(ulp_of(0.0, FloatType::kBf16), 0x1p-133);
  EXPECT_EQ(unit_roundoff(FloatType::kBf16), 0x1p-8);
  test::expect_error<NumericError>([] { ordered_bits(kNan, FloatType::kFp32); }, {"NaN"});
  // As a metric: max over the tensor, with its position.
  MetricOptions o;
  o.ulp = FloatType::kBf16;
  const Metrics m = compare_tensors(row({1.0, 2.0 + 0x1p-5}), row({1.0, 2.0}), o);
  EXPECT_EQ(m.max_ulp, 2);  // bf16 spacing at 2 is 2^-6
  EXPECT_EQ(m.max_ulp_at.col, 1);
  EXPECT_EQ(parse_float_type("f32"), FloatType::kFp32);
  EXPECT_FALSE(parse_float_type("e4m3"));
}

TEST(Metrics, NonfinitePatternAndMask) {
  // Equal NaN/+Inf pairs are skipped; −Inf against +Inf is a mismatch; one finite pair compared.
  const Metrics m = compare_tensors(row({kNan, kInf, 1, -kInf}), row({kNan, kInf, 2, kInf}));
  EXPECT_EQ(m.nonfinite_mismatch, 1);
  EXPECT_EQ(m.first_nonfinite_mismatch.col, 3);
  EXPECT_EQ(m.compared, 1);
  EXPECT_EQ(m.skipped, 2);
  EXPECT_EQ(m.max_abs, 1.0);
  EXPECT_EQ(m.nonfinite_impl, 3);
  EXPECT_EQ(m.nonfinite_ref, 3);
  // A finite value against NaN is a mismatch too.
  EXPECT_EQ(compare_tensors(row({1}), row({kNan})).nonfinite_mismatch, 1);
  const Mat mask = row({1, 0});
  MetricOptions o;
  o.mask = &mask;
  const Metrics mm = compare_tensors(row({1, 100}), row({1, 0}), o);
  EXPECT_EQ(mm.max_abs, 0.0);
  EXPECT_EQ(mm.skipped, 1);
}

TEST(Metrics, GuardsAndZeros) {
  const Metrics z = compare_tensors(Mat::Zero(2, 3), Mat::Zero(2, 3));
  EXPECT_TRUE(z.both_zero);
  EXPECT_EQ(z.cos_diff, 0.0);
  EXPECT_EQ(z.rel_fro, 0.0);
  // r = 0, k ≠ 0: rel_fro falls back to ‖k‖.
  EXPECT_DOUBLE_EQ(compare_tensors(row({3, 4}), row({0, 0})).rel_fro, 5.0);
  test::expect_error<ShapeError>(
      [] { compare_tensors(Mat::Zero(2, 3), Mat::Zero(3, 2), {}, "attn.o"); },
      {"attn.o", "[2, 3]", "[3, 2]"});
  EXPECT_NE(compare_tensors(row({1, 2}), row({1, 3})).summary().find("max_abs 1 at [0, 1]"),
            std::string::npos);
}

// ------------------------------------------------------------------ set agreement

// Scores of one row: entries 2 and 3 are a near tie (1e-9 apart) at the threshold θ = 3 of the
// reference top-3 {0, 1, 2}; entry 5 is invisible (−∞), 6 is NaN.
const Mat kScores = row({5, 4, 3, 3 - 1e-9, 1, -kInf, kNan});
const Mat kRef = row({0, 1, 2});

SetAgreement agree(std::initializer_list<double> impl, double tau) {
  return compare_selections(row(impl), kRef, kScores, Mat::Constant(1, 1, tau));
}

TEST(SetAgreement, NearTieRule) {
  EXPECT_TRUE(agree({2, 0, 1}, 0).pass());  // order does not matter
  const SetAgreement near = agree({0, 1, 3}, 1e-6);
  EXPECT_TRUE(near.pass()) << near.summary();
  EXPECT_EQ(near.swaps, 1);
  EXPECT_EQ(near.rows_with_swaps, 1);
  EXPECT_NEAR(near.worst_tie_ratio, 1e-9 / 1e-6, 1e-6);
  EXPECT_NEAR(near.mean_recall, 2.0 / 3, 1e-15);
  EXPECT_FALSE(agree({0, 1, 3}, 1e-12).pass());    // gap 1e-9 > τ
  EXPECT_FALSE(agree({0, 1, 3}, -1).pass());       // τ < 0: no swap allowed
  const SetAgreement far = agree({0, 1, 4}, 1.0);  // entry 4: |1 − 3| = 2 > 1
  EXPECT_FALSE(far.pass());
  EXPECT_EQ(far.unexplained, 1);
  EXPECT_EQ(far.first_bad_row, 0);
  EXPECT_NE(far.first_bad_detail.find("entry 4 (added)"), std::string::npos)
      << far.first_bad_detail;
  // Per-element τ: only entry 3's own τ and θ's (entry 2) matter.
  Mat tau = Mat::Zero(1, 7);
  tau(0, 2) = 1e-6;
  tau(0, 3) = 1e-6;
  EXPECT_TRUE(compare_selections(row({0, 1, 3}), kRef, kScores, tau).pass());
  tau(0, 3) = 1e-10;
  EXPECT_FALSE(compare_selections(row({0, 1, 3}), kRef, kScores, tau).pass());
}

TEST(SetAgreement, StructureErrors) {
  for (auto [impl, what] : std::vector<std::pair<Mat, std::string>>{
           {row({0, 1, 5}), "not selectable"},  // −∞: invisible entry
           {row({0, 1, 6}), "not selectable"},  // NaN
           {row({0, 0, 1}), "duplicate"},
           {row({0, 1, -1}), "selects 2 entries, reference 3"},
           {row({0, -1, 1}), "follows -1 padding"},
           {row({0, 1, 7}), "outside [0, 7)"},
           {row({0, 1, 2.5}), "not an index"}}) {
    const SetAgreement a = compare_selections(impl, kRef, kScores, Mat::Constant(1, 1, 1.0));
    EXPECT_FALSE(a.pass()) << what;
    EXPECT_EQ(a.structure_errors, 1) << what;
    EXPECT_NE(a.first_structure_error.find(what), std::string::npos) << a.first_structure_error;
  }
  // Padding after the valid entries is fine (fewer visible entries than k).
  const Mat sc = row({1, 2, -kInf, -kInf});
  EXPECT_TRUE(
      compare_selections(row({1, 0, -1}), row({1, 0, -1}), sc, Mat::Constant(1, 1, 0.0)).pass());
  test::expect_error<ShapeError>(
      [] {
        compare_selections(row({0}), row({0, 0}), kScores, Mat::Constant(1, 1, 0.0));
      },
      {"reference selection"});
}

TEST(SetAgreement, AlignByIndex) {
  // B selected experts [3, 5] with weights [0.1, 0.2]; A selected [5, 4].
  Mat bv(1, 2), bi(1, 2), ai(1, 2);
  bv << 0.1, 0.2;
  bi << 3, 5;
  ai << 5, 4;
  const Aligned a = align_by_index(bv, bi, ai);
  EXPECT_EQ(a.values(0, 0), 0.2);
  EXPECT_TRUE(std::isnan(a.values(0, 1)));
  EXPECT_EQ(a.mask(0, 0), 1);
  EXPECT_EQ(a.mask(0, 1), 0);
  EXPECT_EQ(a.missing, 1);
}

}  // namespace
}  // namespace v4ref::compare
