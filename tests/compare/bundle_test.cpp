// Failure bundles (compare/bundle.hpp): every stored set round-trips bit for bit (bf16 as raw bits,
// fp32, fp64 with −∞, index tensors, empty tensors), the provenance is there, foreign files are
// rejected, and a passing case replays to PASS (exit code 0 from `v4ref replay`).
#include "v4ref/compare/bundle.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <limits>

#include "../common/test_support.hpp"
#include "v4ref/ref/hdf5_store.hpp"

namespace v4ref::compare {
namespace {

Case find_case(const std::string& component, InputKind kind, PrecisionMode mode) {
  for (const Case& c : case_table(0))
    if (c.component == component && c.kind == kind && c.mode == mode && c.config == "tiny-flash")
      return c;
  throw Error("no case " + component);
}

void expect_same(const TensorSet& a, const TensorSet& b) {
  ASSERT_EQ(a.names(), b.names());
  for (const std::string& n : a.names()) {
    EXPECT_EQ(a.dtype(n), b.dtype(n)) << n;
    const Mat& x = a.at(n);
    const Mat& y = b.at(n);
    ASSERT_EQ(x.rows(), y.rows()) << n;
    ASSERT_EQ(x.cols(), y.cols()) << n;
    for (Eigen::Index i = 0; i < x.size(); ++i)
      EXPECT_TRUE(x.data()[i] == y.data()[i] ||
                  (std::isnan(x.data()[i]) && std::isnan(y.data()[i])))
          << n << " " << i;
  }
}

TEST(Bundle, RoundTripsEverySet) {
  test::TempDir dir("bundle_rt");
  // index_scores in official mode: bf16 inputs, −∞ scores, index outputs, Rx and B present; the
  // all-masked sink attention: an empty [0, D] key tensor.
  for (const Case& c :
       {find_case("index_scores", InputKind::kRandom, PrecisionMode::kOfficial),
        find_case("sink_attention", InputKind::kAllMasked, PrecisionMode::kExact)}) {
    const TensorSet inputs = component(c.component).make_inputs(c, case_config(c));
    const References refs = compute_references(c, inputs);
    const TensorSet k =
        fp32_implementation()->run(ComponentCall{c, case_config(c), c.policy(), inputs});
    const CaseResult res = judge_case(c, "fp32", "fp32", inputs, &k);
    const auto file = dir / (c.test_name() + ".h5");
    write_bundle(file, res, inputs, &k, refs);
    const Bundle b = read_bundle(file);
    EXPECT_EQ(b.c.name(), c.name());
    EXPECT_EQ(b.c.seed(), c.seed());
    EXPECT_EQ(b.verdict, res.pass ? "PASS" : "FAIL");
    expect_same(b.inputs, inputs);
    expect_same(b.impl, k);
    expect_same(b.ref_q, refs.ref_q);
    expect_same(b.ref_x, refs.ref_x);
    expect_same(b.baseline, refs.baseline);
    EXPECT_FALSE(b.report.empty());
    EXPECT_NE(b.metrics_json.find("\"outputs\""), std::string::npos);
    const H5Store h5(file, H5Store::Mode::kRead);
    const auto root = h5.attrs("/");
    for (const char* key :
         {"case", "seed", "compiler", "created_utc", "tolerance_rows", "command_line"})
      EXPECT_TRUE(root.count(key)) << key;
    if (inputs.dtype("q") == "bf16") {
      EXPECT_EQ(h5.read("inputs/q").dtype, LogicalDtype::kBF16);
    }
  }
}

TEST(Bundle, PassingCaseReplaysToPass) {
  test::TempDir dir("bundle_pass");
  const Case c = find_case("hadamard", InputKind::kRandom, PrecisionMode::kExact);
  const TensorSet inputs = component(c.component).make_inputs(c, case_config(c));
  const References refs = compute_references(c, inputs);
  const TensorSet k =
      fp32_implementation()->run(ComponentCall{c, case_config(c), c.policy(), inputs});
  const CaseResult res = judge_case(c, "fp32", "fp32", inputs, &k);
  ASSERT_TRUE(res.pass) << res.report();
  write_bundle(dir / "pass.h5", res, inputs, &k, refs);
  const ReplayResult r = replay_bundle(dir / "pass.h5");
  EXPECT_TRUE(r.stored.pass);
  ASSERT_TRUE(r.rerun.has_value());  // "fp32" is built in
  EXPECT_TRUE(r.rerun->pass);
  EXPECT_TRUE(r.reproduced());
  EXPECT_TRUE(r.reference_unchanged);
  EXPECT_NE(r.text().find("reproduced"), std::string::npos);
  EXPECT_EQ(r.json()["bundle_verdict"], "PASS");
  const std::filesystem::path exe = std::filesystem::path(V4REF_BINARY_DIR) / "bin" / "v4ref";
  if (std::filesystem::exists(exe)) {
    const int rc = std::system(
        (exe.string() + " replay " + (dir / "pass.h5").string() + " > /dev/null").c_str());
    EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
  }
}

TEST(Bundle, RejectsOtherFiles) {
  test::TempDir dir("bundle_bad");
  {
    H5Store h5(dir / "x.h5", H5Store::Mode::kCreate);
    h5.set_attr("/", "format", std::string("v4ref-trace"));
  }
  test::expect_error<FormatError>([&] { read_bundle(dir / "x.h5"); },
                                  {"x.h5", "not a v4ref failure bundle"});
}

TEST(Bundle, PathsNameSuiteCaseAndSeed) {
  const Case c = find_case("rms_norm", InputKind::kRandom, PrecisionMode::kExact);
  RunnerOptions o;
  o.bundle_dir = "failures";
  o.suite = "rms_diff";
  const std::string p = bundle_path(o, c).string();
  EXPECT_EQ(p.rfind("failures/rms_diff/rms_norm_tiny_flash_T17_n128_random_exact-", 0), 0u) << p;
  EXPECT_EQ(p.substr(p.size() - 3), ".h5");
}

}  // namespace
}  // namespace v4ref::compare
