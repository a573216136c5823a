// `v4ref bisect A B --baseline C` with C the float32 port's own trace (`v4ref forward --impl
// fp32`): the allowance of every trace point becomes 2 × max|C − A| + 2 ulp_fp32 at that point
// (tolerance row trace.* @ baseline) instead of the statistical fp32 rel_fro budget. A bug whose
// effect is far below that budget — the mHC pre/post coefficients without + hc_eps (§4.2), a
// 1e-6 absolute change — passes the statistical row but is named, at its first tensor, under
// the baseline row; the port itself passes against its own baseline at ratio ≤ 1/2.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <variant>
#include <vector>

#include "../common/test_support.hpp"
#include "v4ref/compare/bisect.hpp"
#include "v4ref/compare/fp32_forward.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/model.hpp"

namespace v4ref::compare {
namespace {

using ref::Trace;

struct Traces {
  Trace a;  // reference, exact, chained
  Trace c;  // the fp32 port, chained: the baseline
  Trace b;  // the fp32 port with the pre/post coefficients' + hc_eps dropped, chained
  BisectOptions opts;
};

const Traces& traces() {
  static const Traces t = [] {
    const std::filesystem::path dir =
        std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "checkpoints" / "tiny-flash-s0";
    const ModelConfig cfg = load_config(dir / "config.json");
    ref::ModelOptions mo;
    mo.keep_weights = true;
    const ref::Model model = ref::Model::open(dir, cfg, mo);
    Rng rng(derive_seed("bisect_baseline_test", "tokens", "96", 0));
    std::vector<std::int64_t> ids(96);
    for (auto& id : ids) id = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(cfg.vocab_size)));
    Traces r;
    model.forward(ids, {}, &r.a);
    Fp32Forward(model).forward(ids, {}, &r.c);
    Fp32Components eps_dropped = default_fp32_components();
    eps_dropped.hc_split = [base = eps_dropped.hc_split](const float* mu, const F32HcParams& p,
                                                         std::int64_t hc, float eps) {
      F32HcSplit s = base(mu, p, hc, eps);
      for (float& v : s.pre) v -= eps;  // σ(·) without + hc_eps
      for (float& v : s.post) v -= eps;
      return s;
    };
    Fp32Forward(model, eps_dropped, "fp32-port-no-hc-eps").forward(ids, {}, &r.b);
    r.opts.mode = BisectMode::kChained;
    r.opts.path = "fp32";
    load_route_bias(model.checkpoint(), cfg, r.opts);
    return r;
  }();
  return t;
}

double worst_ratio(const BisectReport& r) {
  double w = 0;
  for (const PointResult& p : r.points) w = std::max(w, p.ratio);
  return w;
}

TEST(BisectBaseline, ThePortPassesAgainstItsOwnBaselineAtHalfTheAllowance) {
  const Traces& t = traces();
  BisectOptions o = t.opts;
  o.baseline = &t.c;
  const BisectReport r = bisect_traces(t.a, t.c, o);
  EXPECT_TRUE(r.pass()) << r.text();
  EXPECT_TRUE(r.with_baseline);
  EXPECT_LE(worst_ratio(r), 0.5 + 1e-12) << "B = C sits at max|C−A| / (2 max|C−A| + 2 ulp)";
  EXPECT_GT(r.points.size(), 100u);
}

TEST(BisectBaseline, ASmallBugPassesTheStatisticalRowButNotTheBaselineRow) {
  const Traces& t = traces();
  const BisectReport stat = bisect_traces(t.a, t.b, t.opts);
  std::printf("without baseline: %s, worst ratio %.3g\n", stat.pass() ? "PASS" : "FAIL", worst_ratio(stat));
  EXPECT_TRUE(stat.pass()) << "the statistical fp32 row was expected to be too coarse for a "
                              "1e-6 change; if it now catches it, this test's premise changed\n"
                           << stat.text();

  BisectOptions o = t.opts;
  o.baseline = &t.c;
  const BisectReport r = bisect_traces(t.a, t.b, o);
  ASSERT_FALSE(r.pass()) << r.text();
  ASSERT_NE(r.first(), nullptr);
  EXPECT_EQ(r.first()->name, "layers.0.hc_attn.pre") << r.text();
  EXPECT_NE(r.first()->row.find("baseline"), std::string::npos) << r.first()->row;
  std::printf("with baseline: first failing point %s, ratio %.3g (%s)\n", r.first()->name.c_str(),
              r.first()->ratio, r.first()->gate.c_str());
}

// The commands a user runs: the two forwards, then bisect with the port's trace as baseline.
TEST(BisectBaselineCli, ForwardImplFp32WritesTheBaselineTrace) {
  const std::string exe = std::string(V4REF_BINARY_DIR) + "/bin/v4ref";
  const std::string ckpt = std::string(V4REF_SOURCE_DIR) + "/golden/checkpoints/tiny-flash-s0";
  const test::TempDir tmp("bisect_baseline");
  const std::filesystem::path dir = tmp.path();
  const std::string fwd = exe + " forward --quiet --checkpoint " + ckpt + " --random 40 --seed 5 --trace ";
  const test::CommandResult a = test::run_command(fwd + (dir / "a.h5").string());
  ASSERT_EQ(a.status, 0) << a.out;
  const test::CommandResult c = test::run_command(fwd + (dir / "c.h5").string() + " --impl fp32");
  ASSERT_EQ(c.status, 0) << c.out;
  EXPECT_NE(c.out.find("fp32 port"), std::string::npos) << c.out;
  const Trace ct = Trace::read_hdf5(dir / "c.h5");
  EXPECT_EQ(std::get<std::string>(ct.attrs().at("implementation")), "fp32-port");
  EXPECT_TRUE(ct.has("logits"));
  EXPECT_NE(ct.at("logits"), Trace::read_hdf5(dir / "a.h5").at("logits")) << "fp32 logits equal the fp64 ones";

  const test::CommandResult b = test::run_command(exe + " bisect " + (dir / "a.h5").string() + " " + (dir / "c.h5").string() +
                        " --mode chained --baseline " + (dir / "c.h5").string());
  EXPECT_EQ(b.status, 0) << b.out;
  EXPECT_NE(b.out.find("RESULT: PASS"), std::string::npos) << b.out;

  for (const char* bad : {" --precision qat", " --mtp", " --impl cuda"}) {
    const test::CommandResult e = test::run_command(fwd + (dir / "x.h5").string() + " --impl fp32" + bad);
    EXPECT_NE(e.status, 0) << bad << ": " << e.out;
    EXPECT_NE(e.out.find("impl"), std::string::npos) << bad << ": " << e.out;
  }
}

}  // namespace
}  // namespace v4ref::compare
