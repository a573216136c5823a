// The layer debugger (compare/bisect.hpp) on the committed tiny-flash checkpoint (5 layers:
// swa, swa, csa, hca, csa; 12 tokens):
//   * A against itself passes; one perturbed tensor is named exactly, alone;
//   * a live block implementation with a wrong MoE in layer 3: teacher-forced, the failures stay
//     inside layer 3 (ffn.out then block.out); chained, they propagate to layer 4 and the head, the
//     first failure is still layers.3.ffn.out; a chained B given as teacher-forced is rejected;
//   * an implementation that produces NaN (chained: the run stops there, the tensor is named) or
//     throws (reported as a stopped run, not propagated);
//   * selections: near-tie swaps are explained, far swaps and unknown-bias swaps fail;
//   * the baseline rule, the text and JSON outputs, and the `v4ref bisect` command.
#include "v4ref/compare/bisect.hpp"

#include <limits>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../common/test_support.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/mhc.hpp"

namespace v4ref::compare {
namespace {

using ref::Trace;

const std::filesystem::path kCkpt =
    std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "checkpoints" / "tiny-flash-s0";

struct Fixture {
  ModelConfig cfg;
  ref::Model model;
  Trace a;
};

const Fixture& fx() {
  static const Fixture f = [] {
    ModelConfig cfg = load_config(kCkpt / "config.json");
    ref::ModelOptions mo;
    mo.keep_weights = true;
    ref::Model model = ref::Model::open(kCkpt, cfg, mo);
    Rng rng(derive_seed("bisect_test", "tokens", "12"));
    std::vector<std::int64_t> tokens(12);
    for (auto& t : tokens)
      t = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(cfg.vocab_size)));
    Trace a;
    model.forward(tokens, {}, &a);
    return Fixture{cfg, model, std::move(a)};
  }();
  return f;
}

Trace perturbed(const Trace& a, const std::string& name, double rel) {
  Trace b = a;
  Mat m = a.at(name);
  m *= (1.0 + rel);
  b.put(name, m);
  return b;
}

TEST(Bisect, IdenticalTracesPass) {
  const BisectReport r = bisect_traces(fx().a, fx().a);
  EXPECT_TRUE(r.pass()) << r.text();
  EXPECT_FALSE(r.first());
  EXPECT_EQ(r.points.size(), fx().a.size());
  // Model level, 5 blocks, head: the block summaries follow the forward order.
  ASSERT_GE(r.blocks.size(), 7u);
  EXPECT_EQ(r.blocks[0].block, "");
  EXPECT_EQ(r.blocks[1].block, "layers.0.");
  EXPECT_EQ(r.blocks[5].block, "layers.4.");
  EXPECT_NE(r.text().find("RESULT: PASS"), std::string::npos);
}

TEST(Bisect, NamesExactlyThePerturbedTensor) {
  for (const std::string name :
       {"layers.2.attn.o", "layers.0.hc_attn.comb", "layers.4.ffn.out", "logits"}) {
    const Trace b = perturbed(fx().a, name, 1e-2);
    const BisectReport r = bisect_traces(fx().a, b);
    ASSERT_TRUE(r.first()) << name;
    EXPECT_EQ(r.first()->name, name);
    ASSERT_EQ(r.block_failures.size(), 1u) << r.text();
    std::int64_t failed = 0;
    for (const PointResult& p : r.points) failed += !p.pass;
    EXPECT_EQ(failed, 1) << r.text();
    EXPECT_NEAR(r.first()->metrics.rel_fro, 1e-2, 1e-12);
    EXPECT_EQ(r.json()["first_failure"]["name"], name);
    EXPECT_NE(r.text().find("FIRST FAILURE: " + name), std::string::npos) << r.text();
  }
  // Below the fp32 allowance (5e-4): passes; the fp64 path (1e-9) catches it.
  const Trace small = perturbed(fx().a, "layers.2.attn.o", 1e-5);
  EXPECT_TRUE(bisect_traces(fx().a, small).pass());
  BisectOptions fp64;
  fp64.path = "fp64";
  const BisectReport r64 = bisect_traces(fx().a, small, fp64);
  ASSERT_TRUE(r64.first());
  EXPECT_EQ(r64.first()->name, "layers.2.attn.o");
}

TEST(Bisect, ShapeAndMissingPoints) {
  Trace b = fx().a;
  b.put("layers.1.attn.q", Mat::Zero(3, 3));
  const BisectReport r = bisect_traces(fx().a, b);
  ASSERT_TRUE(r.first());
  EXPECT_EQ(r.first()->name, "layers.1.attn.q");
  EXPECT_EQ(r.first()->status, "shape");

  Trace partial({"layers.3.*"});
  for (const std::string& n : fx().a.names()) partial.put(n, fx().a.at(n));
  const BisectReport rp = bisect_traces(fx().a, partial);
  EXPECT_TRUE(rp.pass()) << rp.text();
  std::int64_t missing = 0;
  for (const PointResult& p : rp.points) missing += p.status == "missing";
  EXPECT_GT(missing, 0);
  EXPECT_TRUE(bisect_traces(fx().a, Trace({"nothing"})).errors.size() == 1);
}

// The reference block with a wrong MoE: ffn.out scaled by (1 + eps), block.out recomputed.
class WrongMoeBlocks final : public BlockImplementation {
 public:
  WrongMoeBlocks(std::int64_t layer, double eps) : layer_(layer), eps_(eps) {}
  std::string name() const override { return "wrong-moe"; }
  Mat run_block(const ref::Model& model, std::int64_t layer, const Mat& x,
                std::span<const std::int64_t> tokens, ref::LayerTrace& trace) const override {
    Mat out = reference_blocks()->run_block(model, layer, x, tokens, trace);
    if (layer != layer_) return out;
    const std::int64_t hc = model.config().hc_mult;
    const Mat f = trace.at("ffn.out") * (1.0 + eps_);
    const Mat& post = trace.at("hc_ffn.post");
    const Mat& comb = trace.at("hc_ffn.comb");
    std::vector<ref::HcMix> mix(static_cast<std::size_t>(f.rows()));
    for (Eigen::Index t = 0; t < f.rows(); ++t) {
      mix[static_cast<std::size_t>(t)].pre = ref::Vec::Ones(hc);
      mix[static_cast<std::size_t>(t)].post = post.row(t).transpose();
      mix[static_cast<std::size_t>(t)].comb = Eigen::Map<const Mat>(comb.row(t).data(), hc, hc);
    }
    out = ref::hc_post(f, trace.at("hc_attn.out"), mix, hc, model.policy());
    trace.tensors["ffn.out"] = f;
    trace.tensors["block.out"] = out;
    return out;
  }

 private:
  std::int64_t layer_;
  double eps_;
};

std::int64_t failed_in(const BisectReport& r, const std::string& block) {
  for (const BlockSummary& s : r.blocks)
    if (s.block == block) return s.failed;
  return -1;
}

TEST(BisectLive, ReferenceBlocksPassBothModes) {
  for (BisectMode m : {BisectMode::kTeacherForced, BisectMode::kChained}) {
    BisectOptions o;
    o.mode = m;
    o.path = "fp64";
    const LiveBisect r = bisect_live(fx().model, fx().a, *reference_blocks(), o);
    EXPECT_TRUE(r.report.pass()) << r.report.text();
  }
}

TEST(BisectLive, TeacherForcedKeepsTheFaultInItsLayer) {
  BisectOptions o;
  o.mode = BisectMode::kTeacherForced;
  const LiveBisect r = bisect_live(fx().model, fx().a, WrongMoeBlocks(3, 0.2), o);
  ASSERT_TRUE(r.report.first()) << r.report.text();
  EXPECT_EQ(r.report.first()->name, "layers.3.ffn.out");
  ASSERT_EQ(r.report.block_failures.size(), 2u) << r.report.text();
  EXPECT_EQ(r.report.points[r.report.block_failures[1]].name, "layers.3.block.out");
  EXPECT_EQ(failed_in(r.report, "layers.4."), 0) << r.report.text();
  EXPECT_EQ(failed_in(r.report, ""), 0)
      << "the head reads A's last block.out in teacher-forced mode";
  EXPECT_TRUE(r.report.errors.empty());
  EXPECT_NE(r.report.text().find("teacher-forced, so it names the faulty component"),
            std::string::npos);
}

TEST(BisectLive, ChainedPropagatesAndTeacherForcedCheckRejectsIt) {
  BisectOptions o;
  o.mode = BisectMode::kChained;
  const LiveBisect r = bisect_live(fx().model, fx().a, WrongMoeBlocks(3, 0.2), o);
  ASSERT_TRUE(r.report.first()) << r.report.text();
  EXPECT_EQ(r.report.first()->name, "layers.3.ffn.out");
  EXPECT_GT(failed_in(r.report, "layers.4."), 0) << r.report.text();
  EXPECT_EQ(failed_in(r.report, "layers.2."), 0);
  // The chained budget grows with depth: block b gets (b + 1) x the allowance.
  for (const PointResult& p : r.report.points) {
    if (p.name == "layers.4.attn.o") {
      EXPECT_EQ(p.budget, 5);
    }
  }

  // The same chained trace bisected as if it were teacher-forced: invalid, naming the input.
  BisectOptions tf;
  const BisectReport bad = bisect_traces(fx().a, r.b, tf);
  ASSERT_FALSE(bad.errors.empty());
  EXPECT_NE(bad.errors[0].find("layers.4.block.in"), std::string::npos) << bad.errors[0];
  EXPECT_FALSE(bad.pass());
  EXPECT_NE(bad.text().find("RESULT: INVALID"), std::string::npos);
}

// An implementation that fails at block `layer`: NaN in the MoE output (so in block.out) or a
// thrown error, as a broken kernel or a failed launch would.
class FailingBlocks final : public BlockImplementation {
 public:
  enum class How { kNaN, kThrow };
  FailingBlocks(std::int64_t layer, How how) : layer_(layer), how_(how) {}
  std::string name() const override { return "failing"; }
  Mat run_block(const ref::Model& model, std::int64_t layer, const Mat& x,
                std::span<const std::int64_t> tokens, ref::LayerTrace& trace) const override {
    if (layer == layer_ && how_ == How::kThrow) throw Error("launch failed (injected)");
    Mat out = reference_blocks()->run_block(model, layer, x, tokens, trace);
    if (layer != layer_) return out;
    out(0, 0) = std::numeric_limits<double>::quiet_NaN();
    trace.tensors["block.out"] = out;
    return out;
  }

 private:
  std::int64_t layer_;
  How how_;
};

TEST(BisectLive, ChainedNaNStopsAndNamesTheTensor) {
  BisectOptions o;
  o.mode = BisectMode::kChained;
  const LiveBisect r = bisect_live(fx().model, fx().a, FailingBlocks(2, FailingBlocks::How::kNaN), o);
  EXPECT_FALSE(r.report.pass());
  ASSERT_TRUE(r.report.first()) << r.report.text();
  EXPECT_EQ(r.report.first()->name, "layers.2.block.out");
  EXPECT_NE(r.report.stopped.find("layers.2.block.out"), std::string::npos) << r.report.stopped;
  EXPECT_FALSE(r.b.has("layers.3.block.in"));
  EXPECT_FALSE(r.b.has(std::string(ref::trace_names::kLogits)));
  const std::string text = r.report.text();
  EXPECT_NE(text.find("STOPPED: layers.2.block.out"), std::string::npos) << text;
  EXPECT_NE(text.find("RESULT: FAIL at layers.2.block.out"), std::string::npos) << text;
  EXPECT_EQ(r.report.json()["stopped"], r.report.stopped);
  // Teacher-forced: later blocks get A's inputs, so the run goes on and only layer 2 fails.
  BisectOptions tf;
  const LiveBisect t = bisect_live(fx().model, fx().a, FailingBlocks(2, FailingBlocks::How::kNaN), tf);
  EXPECT_TRUE(t.report.stopped.empty());
  EXPECT_EQ(failed_in(t.report, "layers.3."), 0) << t.report.text();
  ASSERT_TRUE(t.report.first());
  EXPECT_EQ(t.report.first()->name, "layers.2.block.out");
}

TEST(BisectLive, ThrowingImplementationIsReportedNotPropagated) {
  for (BisectMode m : {BisectMode::kTeacherForced, BisectMode::kChained}) {
    BisectOptions o;
    o.mode = m;
    const LiveBisect r =
        bisect_live(fx().model, fx().a, FailingBlocks(1, FailingBlocks::How::kThrow), o);
    EXPECT_FALSE(r.report.pass());
    EXPECT_NE(r.report.stopped.find("launch failed (injected)"), std::string::npos);
    EXPECT_NE(r.report.stopped.find("layers.1."), std::string::npos) << r.report.stopped;
    EXPECT_FALSE(r.b.has("layers.1.block.out"));
    EXPECT_NE(r.report.text().find("RESULT: FAIL (stopped)"), std::string::npos)
        << r.report.text();
  }
}

// ------------------------------------------------------------------ selections, synthetic traces

Trace routing_trace(const Mat& scores, const Mat& idx) {
  Trace t;
  t.put("layers.0.ffn.scores", scores);
  t.put("layers.0.ffn.routed_idx", idx);
  Mat w = Mat::Constant(idx.rows(), idx.cols(), 0.5);
  t.put("layers.0.ffn.route_weights", w);
  return t;
}

TEST(BisectSelection, NearTieSwapsAreExplainedOthersFail) {
  // Row 0: experts 0, 1 selected; expert 2 trails expert 1 by 1e-9 (a near tie), expert 3 by 1.
  Mat s(1, 4);
  s << 3.0, 2.0, 2.0 - 1e-9, 1.0;
  Mat sel(1, 2);
  sel << 0, 1;
  const Trace a = routing_trace(s, sel);
  Mat near(1, 2), far(1, 2);
  near << 0, 2;
  far << 0, 3;
  BisectOptions o;
  o.route_bias["layers.0."] = ref::Vec::Zero(4);
  const BisectReport rn = bisect_traces(a, routing_trace(s, near), o);
  EXPECT_TRUE(rn.pass()) << rn.text();
  ASSERT_TRUE(rn.points[1].set);
  EXPECT_EQ(rn.points[1].set->swaps, 1);
  const BisectReport rf = bisect_traces(a, routing_trace(s, far), o);
  ASSERT_TRUE(rf.first());
  EXPECT_EQ(rf.first()->name, "layers.0.ffn.routed_idx");
  // A bias that opens the gap turns the near tie into a real difference.
  BisectOptions ob;
  ob.route_bias["layers.0."] = (ref::Vec(4) << 0, 0.5, 0, 0).finished();
  EXPECT_FALSE(bisect_traces(a, routing_trace(s, near), ob).pass());
  // Without bias (or in a hash-routed block) any difference fails.
  const BisectReport nb = bisect_traces(a, routing_trace(s, near));
  ASSERT_TRUE(nb.first());
  EXPECT_NE(nb.first()->detail.find("gate bias unknown"), std::string::npos) << nb.first()->detail;
  BisectOptions oh;
  oh.hash_blocks.insert("layers.0.");
  EXPECT_FALSE(bisect_traces(a, routing_trace(s, near), oh).pass());
}

TEST(BisectSelection, RouteBiasFromCheckpoint) {
  BisectOptions o;
  load_route_bias(Checkpoint::open(kCkpt), fx().cfg, o);
  // tiny-flash: 3 hash layers, then biased layers and the MTP block.
  EXPECT_EQ(o.hash_blocks.count("layers.0."), 1u);
  EXPECT_EQ(o.hash_blocks.count("layers.2."), 1u);
  ASSERT_EQ(o.route_bias.count("layers.3."), 1u);
  EXPECT_EQ(o.route_bias.at("layers.3.").size(), fx().cfg.n_routed_experts);
  EXPECT_EQ(o.route_bias.count("mtp.0."), 1u);
}

TEST(BisectBaseline, BaselineRuleScalesWithTheBaselineError) {
  const std::string name = "layers.2.attn.o";
  const Trace c = perturbed(fx().a, name, 1e-3);  // "fp32 baseline" error 1e-3 relative
  BisectOptions o;
  o.baseline = &c;
  EXPECT_TRUE(bisect_traces(fx().a, perturbed(fx().a, name, 1.5e-3), o).pass());
  const BisectReport r = bisect_traces(fx().a, perturbed(fx().a, name, 3e-3), o);
  ASSERT_TRUE(r.first());
  EXPECT_EQ(r.first()->name, name);
  EXPECT_NEAR(r.first()->ratio, 1.5, 0.01);
  EXPECT_NE(r.first()->row.find("baseline"), std::string::npos);
}

TEST(Bisect, ModeNames) {
  EXPECT_EQ(parse_bisect_mode("chained"), BisectMode::kChained);
  EXPECT_EQ(parse_bisect_mode("teacher-forced"), BisectMode::kTeacherForced);
  test::expect_error<ConfigError>([] { parse_bisect_mode("forced"); },
                                  {"forced", "chained, teacher-forced"});
}

// ------------------------------------------------------------------ the CLI

int run(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(BisectCli, NamesTheTensorAndExitsByVerdict) {
  const std::filesystem::path exe = std::filesystem::path(V4REF_BINARY_DIR) / "bin" / "v4ref";
  if (!std::filesystem::exists(exe)) GTEST_SKIP() << "v4ref executable not built: " << exe;
  test::TempDir dir("bisect_cli");
  fx().a.write_hdf5(dir / "a.h5");
  perturbed(fx().a, "layers.2.attn.o", 1e-2).write_hdf5(dir / "b.h5");
  const std::string base = exe.string() + " bisect " + (dir / "a.h5").string() + " ";
  EXPECT_EQ(run(base + (dir / "a.h5").string() + " > " + (dir / "same.txt").string()), 0);
  EXPECT_EQ(run(base + (dir / "b.h5").string() + " > " + (dir / "out.txt").string()), 1);
  EXPECT_NE(slurp(dir / "out.txt").find("FIRST FAILURE: layers.2.attn.o"), std::string::npos)
      << slurp(dir / "out.txt");
  EXPECT_EQ(run(base + (dir / "b.h5").string() + " --json --checkpoint " + kCkpt.string() + " > " +
                (dir / "out.json").string()),
            1);
  const nlohmann::json j = nlohmann::json::parse(slurp(dir / "out.json"));
  EXPECT_EQ(j["first_failure"]["name"], "layers.2.attn.o");
  EXPECT_EQ(j["first_block_failures"].size(), 1u);
  EXPECT_EQ(j["mode"], "teacher-forced");

  BisectOptions chained;
  chained.mode = BisectMode::kChained;
  bisect_live(fx().model, fx().a, WrongMoeBlocks(3, 0.2), chained).b.write_hdf5(dir / "chained.h5");
  EXPECT_EQ(run(base + (dir / "chained.h5").string() + " > " + (dir / "inv.txt").string()), 2);
  EXPECT_EQ(
      run(base + (dir / "chained.h5").string() + " --mode chained > " + (dir / "ch.txt").string()),
      1);
  EXPECT_NE(slurp(dir / "ch.txt").find("FIRST FAILURE: layers.3.ffn.out"), std::string::npos)
      << slurp(dir / "ch.txt");
}

}  // namespace
}  // namespace v4ref::compare
