// The float32 port (compare/fp32_forward.hpp) as a real second implementation, against the fp64
// reference in exact mode on the three bundled checkpoints (tiny-flash: swa swa csa hca csa;
// tiny-pro: hca hca csa hca csa; tiny-long: csa hca csa with a 32-token window):
//   * weight preparation through the port's own dequant components equals the reference loader
//     bit for bit (fp8 and fp4 codes decoded exactly in float);
//   * teacher-forced (every block fed the reference's block input) and chained (end to end from
//     the embedding) traces pass `bisect` with the "trace.* @ fp32" rows, and the chained logits
//     agree on the top-1 token at every position; per trace-point class the worst rel_fro is
//     printed (the numbers quoted in docs/compare-mutants.md);
//   * the port's components pass the differential runner's exact-mode cases (path fp32);
//   * vacuity: a port that returns one NaN, or zeros, in one tensor fails at exactly that trace
//     point (teacher-forced traces; live through BlockImplementation, where every other point
//     passes; chained, where the NaN reaches the logits); a component that writes nothing leaves
//     the poison fill; incomplete component tables and non-exact models are rejected.
// Sequence lengths: T = 150 (tiny-flash, tiny-long) and 140 (tiny-pro): past one HCA block
// (m = 128) and past the sliding window of every checkpoint; tiny-flash (K_I = 32) and tiny-long
// (K_I = 16) also pass K_I visible CSA entries, so the top-k truncates there.
// One TEST per checkpoint: gtest_discover_tests runs every TEST in its own process, and the
// reference forward of the fixture is the expensive part under the sanitizers.
#include "v4ref/compare/fp32_forward.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>

#include "../common/test_support.hpp"
#include "v4ref/compare/bisect.hpp"
#include "v4ref/compare/runner.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::compare {
namespace {

using ref::Trace;

const std::filesystem::path kCkptDir =
    std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "checkpoints";

struct Fixture {
  std::string name;
  ModelConfig cfg;
  ref::Model model;
  std::vector<std::int64_t> tokens;
  Trace a;  // reference, chained, exact
  std::shared_ptr<const Fp32Forward> port;
  BisectOptions opts;  // fp32 path, route bias from the checkpoint
  Trace b;             // the port, teacher-forced on a
  double port_seconds = 0;
};

const Fixture& fx(const std::string& name, std::int64_t T) {
  static std::map<std::string, std::unique_ptr<Fixture>> cache;
  auto& slot = cache[name];
  if (!slot) {
    const std::filesystem::path dir = kCkptDir / (name + "-s0");
    ModelConfig cfg = load_config(dir / "config.json");
    ref::ModelOptions mo;
    mo.keep_weights = true;
    ref::Model model = ref::Model::open(dir, cfg, mo);
    Rng rng(derive_seed("fp32_forward_test", name, std::to_string(T)));
    std::vector<std::int64_t> tokens(static_cast<std::size_t>(T));
    for (auto& t : tokens)
      t = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(cfg.vocab_size)));
    Trace a;
    model.forward(tokens, {}, &a);
    auto port = std::make_shared<const Fp32Forward>(model);
    BisectOptions o;
    o.path = "fp32";
    load_route_bias(model.checkpoint(), cfg, o);
    slot = std::make_unique<Fixture>(
        Fixture{name, cfg, model, tokens, std::move(a), port, o, Trace(), 0.0});
    const auto t0 = std::chrono::steady_clock::now();
    ref::ForwardRequest req;
    req.teacher = &slot->a;
    slot->port->forward(tokens, req, &slot->b);
    slot->port_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return *slot;
}

struct CkptParam {
  std::string name;
  std::int64_t T;
};

const std::vector<CkptParam> kCkpts = {{"tiny-flash", 150}, {"tiny-pro", 140}, {"tiny-long", 150}};

void PrintTo(const CkptParam& p, std::ostream* os) { *os << p.name << " T=" << p.T; }

std::string param_name(const ::testing::TestParamInfo<CkptParam>& p) {
  std::string s = p.param.name;
  for (char& c : s)
    if (c == '-') c = '_';
  return s;
}

// Worst rel_fro per trace-point class (local key) over all blocks, and the worst ratio.
void print_agreement(const std::string& title, const BisectReport& r) {
  std::map<std::string, std::pair<double, double>> worst;  // local -> (rel_fro, ratio)
  std::vector<std::string> order;
  for (const PointResult& p : r.points) {
    if (p.status == "missing") continue;
    if (!worst.count(p.local)) order.push_back(p.local);
    auto& w = worst[p.local];
    if (!p.set) w.first = std::max(w.first, p.metrics.rel_fro);
    w.second = std::max(w.second, p.ratio);
  }
  std::printf("%s\n  %-20s %12s %10s\n", title.c_str(), "point class", "max rel_fro", "max ratio");
  for (const std::string& k : order)
    std::printf("  %-20s %12.3e %10.3g\n", k.c_str(), worst[k].first, worst[k].second);
}

class Fp32ForwardCkpt : public ::testing::TestWithParam<CkptParam> {};

// One test per checkpoint (one process under ctest: the reference forward is paid once).
TEST_P(Fp32ForwardCkpt, AgreesWithTheReference) {
  const Fixture& f = fx(GetParam().name, GetParam().T);
  // Weight preparation through the port's dequant components equals the reference loader.
  auto same = [](const F32Mat& m, const ref::Mat& d, const std::string& what) {
    ASSERT_EQ(m.rows, d.rows()) << what;
    ASSERT_EQ(m.cols, d.cols()) << what;
    for (std::int64_t i = 0; i < m.size(); ++i)
      ASSERT_EQ(static_cast<double>(m.v[static_cast<std::size_t>(i)]), d.data()[i])
          << what << " element " << i;
  };
  for (std::int64_t i = 0; i < f.cfg.n_layers; ++i) {
    const F32LayerWeights& w = f.port->layer_weights(i);
    const auto r = f.model.layer_weights(i);
    same(w.wq_a, r->attn.wq_a.w, "wq_a");
    same(w.wq_b, r->attn.wq_b.w, "wq_b");
    same(w.wkv, r->attn.wkv.w, "wkv");
    same(w.wo_a, r->attn.wo_a.w, "wo_a");
    same(w.wo_b, r->attn.wo_b.w, "wo_b");
    if (r->indexer) same(w.index_wq_b, r->indexer->wq_b.w, "indexer.wq_b");
    same(w.shared.w1, r->moe.shared.w1.w, "shared.w1");
    same(w.shared.w2, r->moe.shared.w2.w, "shared.w2");
    for (std::int64_t e = 0; e < r->moe.n_experts; ++e) {
      const auto ex = r->moe.experts.get(e);
      same(w.experts[static_cast<std::size_t>(e)].w1, ex->w1.w, "expert w1 (fp4)");
      same(w.experts[static_cast<std::size_t>(e)].w2, ex->w2.w, "expert w2 (fp4)");
      same(w.experts[static_cast<std::size_t>(e)].w3, ex->w3.w, "expert w3 (fp4)");
    }
  }

  // Teacher-forced: every block fed the reference's block input.
  EXPECT_EQ(f.b.at("logits").rows(), static_cast<Eigen::Index>(f.tokens.size()));
  BisectOptions o = f.opts;
  o.mode = BisectMode::kTeacherForced;
  const BisectReport r = bisect_traces(f.a, f.b, o);
  EXPECT_TRUE(r.pass()) << r.text();
  EXPECT_TRUE(r.errors.empty());
  // Every point of the reference trace except the embedding (not recomputed under a teacher) is
  // present in the port's trace.
  std::int64_t missing = 0;
  for (const PointResult& p : r.points) missing += p.status == "missing" && p.name != "embed";
  EXPECT_EQ(missing, 0) << r.text();
  print_agreement(f.name + " teacher-forced, T = " + std::to_string(f.tokens.size()) +
                      " (port forward " + std::to_string(f.port_seconds) + " s)",
                  r);

  // Chained: end to end from the embedding.
  Trace b;
  f.port->forward(f.tokens, {}, &b);
  BisectOptions oc = f.opts;
  oc.mode = BisectMode::kChained;
  const BisectReport rc = bisect_traces(f.a, b, oc);
  EXPECT_TRUE(rc.pass()) << rc.text();
  ASSERT_EQ(b.names().size(), f.a.names().size());
  for (std::size_t i = 0; i < b.names().size(); ++i)
    EXPECT_EQ(b.names()[i], f.a.names()[i]) << "trace order";
  print_agreement(f.name + " chained (allowance x (block + 1))", rc);
  // Top-1 agreement of the logits (guide §5, model logits row).
  const ref::Mat& la = f.a.at("logits");
  const ref::Mat& lb = b.at("logits");
  std::int64_t agree = 0;
  for (Eigen::Index t = 0; t < la.rows(); ++t) {
    Eigen::Index ia = 0, ib = 0;
    la.row(t).maxCoeff(&ia);
    lb.row(t).maxCoeff(&ib);
    agree += ia == ib;
  }
  EXPECT_EQ(agree, la.rows());
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, Fp32ForwardCkpt, ::testing::ValuesIn(kCkpts), param_name);

// ------------------------------------------------------------------ vacuity: poisoned outputs

// The port with one trace tensor of one layer replaced: a single NaN, or all zeros.
class PoisonedPort final : public BlockImplementation {
 public:
  PoisonedPort(const Fp32Forward& port, std::int64_t layer, std::string key, bool nan)
      : port_(port), layer_(layer), key_(std::move(key)), nan_(nan) {}
  std::string name() const override { return "poisoned-" + key_; }
  ref::Mat run_block(const ref::Model& model, std::int64_t layer, const ref::Mat& x,
                     std::span<const std::int64_t> tokens, ref::LayerTrace& trace) const override {
    ref::Mat out = port_.run_block(model, layer, x, tokens, trace);
    if (layer == layer_) {
      ref::Mat& m = trace.tensors.at(key_);
      if (nan_)
        m(m.rows() / 2, m.cols() / 3) = std::numeric_limits<double>::quiet_NaN();
      else
        m.setZero();
      if (key_ == "block.out") out = m;
    }
    return out;
  }

 private:
  const Fp32Forward& port_;
  std::int64_t layer_;
  std::string key_;
  bool nan_;
};

TEST(Fp32ForwardPoison, PoisonedOutputsFailAtThatPoint) {
  const Fixture& f = fx("tiny-flash", 150);
  BisectOptions o = f.opts;
  o.mode = BisectMode::kTeacherForced;
  struct P {
    std::string name;
    bool nan;
  };
  // The port's teacher-forced trace with one returned tensor poisoned: a single NaN, or zeros.
  for (const P& p : {P{"layers.2.attn.o", true}, P{"layers.1.ffn.out", false},
                     P{"layers.3.attn.compressed", true}, P{"layers.4.attn.index_scores", true},
                     P{"layers.0.hc_attn.comb", false}, P{"logits", true},
                     P{"layers.2.attn.index_keys", false}}) {
    Trace b = f.b;
    ref::Mat m = b.at(p.name);
    if (p.nan)
      m(m.rows() / 2, m.cols() / 3) = std::numeric_limits<double>::quiet_NaN();
    else
      m.setZero();
    b.put(p.name, m);
    const BisectReport r = bisect_traces(f.a, b, o);
    ASSERT_TRUE(r.first()) << p.name << "\n" << r.text();
    EXPECT_EQ(r.first()->name, p.name) << r.text();
    if (p.nan) {
      EXPECT_GT(r.first()->metrics.nonfinite_mismatch, 0) << p.name;
    }
  }
  // Live, through BlockImplementation::run_block (the interface a CUDA layer implements): the port
  // returning zeros for the ffn.out it reports in layer 1 (its streams stay right). Every other
  // point passes, so the live path itself agrees with the reference.
  const LiveBisect rl = bisect_live(f.model, f.a, PoisonedPort(*f.port, 1, "ffn.out", false), o);
  ASSERT_TRUE(rl.report.first()) << rl.report.text();
  EXPECT_EQ(rl.report.first()->name, "layers.1.ffn.out");
  for (const BlockSummary& bs : rl.report.blocks) {
    EXPECT_EQ(bs.failed, bs.block == "layers.1." ? 1 : 0) << bs.block << "\n" << rl.report.text();
  }
  for (const std::string& n : f.b.names())
    if (n.rfind("layers.", 0) == 0) {
      EXPECT_TRUE(rl.b.has(n)) << n;
    }
  // Chained, through the port's own forward (bisect_live would hand the NaN streams to the
  // reference head, which rejects them): one NaN written by the attention of layer 0 at t = 75
  // reaches every later point, and the first failure still names where it was born.
  Fp32Components c = default_fp32_components();
  auto calls = std::make_shared<std::int64_t>(0);
  c.sink_attention = [calls, base = c.sink_attention](const float* q, const F32Mat& keys,
                                                      std::span<const float> sink, std::int64_t h,
                                                      std::int64_t d, float scale, float* out) {
    base(q, keys, sink, h, d, scale, out);
    if ((*calls)++ == 75) out[3] = std::numeric_limits<float>::quiet_NaN();
  };
  const Fp32Forward nan_port(f.model, c, "nan-at-t75");
  Trace b;
  nan_port.forward(f.tokens, {}, &b);
  BisectOptions oc = f.opts;
  oc.mode = BisectMode::kChained;
  const BisectReport rc = bisect_traces(f.a, b, oc);
  ASSERT_TRUE(rc.first()) << rc.text();
  EXPECT_EQ(rc.first()->name, "layers.0.attn.o");
  EXPECT_GT(rc.first()->metrics.nonfinite_mismatch, 0);
  EXPECT_FALSE(rc.points.back().pass) << "the NaN reaches the logits";

  // Output buffers start poisoned: a component that writes nothing leaves the poison NaN.
  const F32Mat p = F32Mat::poisoned(2, 3);
  for (float v : p.v) EXPECT_TRUE(std::isnan(v));
  EXPECT_EQ(fmt::float_bits(f32_poison()), 0x7FC0DEADu);
  Fp32Components lazy = default_fp32_components();
  lazy.sink_attention = [](const float*, const F32Mat&, std::span<const float>, std::int64_t,
                           std::int64_t, float, float*) {};
  const Fp32Forward port(f.model, lazy, "writes-nothing");
  ref::ForwardRequest req;
  req.teacher = &f.a;
  req.last_layer = 0;
  Trace bl;
  port.forward(f.tokens, req, &bl);
  const BisectReport rw = bisect_traces(f.a, bl, o);
  ASSERT_TRUE(rw.first()) << rw.text();
  EXPECT_EQ(rw.first()->name, "layers.0.attn.o");
  EXPECT_GT(rw.first()->metrics.nonfinite_mismatch, 0);
}

// ------------------------------------------------------------------ the component runner

TEST(Fp32ForwardRunner, PortComponentsPassTheExactCases) {
  const auto impl = fp32_port_implementation();
  RunnerOptions ro;
  ro.bundle_dir.clear();
  std::int64_t run = 0;
  for (const Case& c : case_table()) {
    if (c.slow || !impl->supports(c)) continue;
    const CaseResult r = run_case(c, *impl, ro);
    EXPECT_TRUE(r.pass) << r.report();
    ++run;
  }
  // Every mapped component has at least one exact case.
  for (const std::string& comp : fp32_port_component_names()) {
    bool any = false;
    for (const Case& c : case_table())
      any = any || (c.component == comp && !c.slow && impl->supports(c));
    EXPECT_TRUE(any) << comp;
  }
  EXPECT_GE(run, 25);
  std::printf("fp32 port: %lld exact runner cases passed\n", static_cast<long long>(run));
}

TEST(Fp32ForwardRunner, NonExactCasesAreNotClaimed) {
  const auto impl = fp32_port_implementation();
  for (const Case& c : case_table())
    if (c.mode != PrecisionMode::kExact) {
      EXPECT_FALSE(impl->supports(c)) << c.name();
    }
}

// ------------------------------------------------------------------ errors

TEST(Fp32ForwardErrors, IncompleteTableAndWrongModeAreRejected) {
  const ModelConfig cfg = load_config(kCkptDir / "tiny-flash-s0" / "config.json");
  const ref::Model model = ref::Model::open(kCkptDir / "tiny-flash-s0", cfg);
  const Fp32Forward port(model);
  const std::vector<std::int64_t> tokens = {1, 2, 3};
  Fp32Components c = default_fp32_components();
  c.swiglu = nullptr;
  test::expect_error<ConfigError>([&] { Fp32Forward p(model, c); }, {"swiglu", "empty"});
  test::expect_error<ConfigError>([&] { fp32_port_component(c, "expert"); }, {"swiglu"});
  test::expect_error<ConfigError>([&] { fp32_port_component(default_fp32_components(), "nope"); },
                                  {"nope", "rms_norm"});
  ref::ModelOptions mo;
  mo.policy = PrecisionPolicy::official();
  const ref::Model official = ref::Model::open(kCkptDir / "tiny-flash-s0", cfg, mo);
  test::expect_error<ConfigError>([&] { Fp32Forward p(official); }, {"exact mode"});
  test::expect_error<ConfigError>(
      [&] {
        port.forward(tokens, ref::ForwardRequest{3, 1, nullptr});
      },
      {"layer range"});
}

TEST(Fp32ForwardErrors, WeightsMustBeExactFloats) {
  ref::Mat m(1, 2);
  m << 1.0, 1.0 + 0x1p-40;
  test::expect_error<NumericError>([&] { to_f32_exact(m, "w.test"); }, {"w.test", "[0, 1]"});
}

TEST(Fp32ForwardRope, OmegaMatchesTheSpecValues) {
  // v4-forward.md §2.3 reference values (base 160000 with YaRN; base 10000 without).
  const YarnConfig y;
  const std::vector<float> w = rope_omega_f32(160000, true, y, 64);
  EXPECT_EQ(w[0], 1.0f);
  EXPECT_EQ(w[8], static_cast<float>(0.05));
  EXPECT_EQ(w[15], static_cast<float>(3.635538583622384e-3));
  EXPECT_EQ(w[20], static_cast<float>(2.9697777826169085e-4));
  EXPECT_EQ(w[31], static_cast<float>(5.680529036909976e-7));
  const std::vector<float> v = rope_omega_f32(10000, false, y, 64);
  EXPECT_EQ(v[1], static_cast<float>(0.7498942093324559));
  EXPECT_EQ(v[31], static_cast<float>(1.333521432163324e-4));
}

}  // namespace
}  // namespace v4ref::compare
