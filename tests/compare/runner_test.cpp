// The differential runner (compare/runner.hpp) over its own case table:
//   * the table covers every component and every input kind a component declares;
//   * the fp64 reference and the plain fp32 port pass every (non-slow) case — the port is the
//     baseline B, so this also checks the table's rows are not tighter than an honest fp32 code;
//   * every case can fail: the reference output with one element pushed out of tolerance (or one
//     selection index dropped) is rejected — no gate is vacuous;
//   * the attention path components (q_path, kv_path, index_query) reproduce the layer forward's
//     own trace points bitwise on the forward's inputs, in every precision mode;
//   * a mutant (the reference with rms_norm swapped for a wrong one) fails, writes a bundle, and
//     the bundle replays to the same verdict, both from the stored outputs and by rerunning the
//     registered mutant; an implementation that throws is reported and replayable too.
#include "v4ref/compare/runner.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <ostream>
#include <set>

#include "../common/test_support.hpp"
#include "v4ref/compare/bundle.hpp"
#include "v4ref/ref/attention.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/model.hpp"
#include "v4ref/ref/quant.hpp"

namespace v4ref::compare {

// GoogleTest prints a case by its name (found by ADL).
void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }

namespace {

std::vector<Case> quick_cases() {
  std::vector<Case> out;
  for (const Case& c : case_table(0))
    if (!c.slow) out.push_back(c);
  return out;
}

TEST(RunnerTable, CoversEveryComponentAndKind) {
  const std::vector<Case> cases = case_table(0);
  std::set<std::string> names;
  for (const Case& c : cases) {
    EXPECT_TRUE(names.insert(c.name()).second) << "duplicate case " << c.name();
    const ComponentSpec& spec = component(c.component);
    EXPECT_NE(std::find(spec.kinds.begin(), spec.kinds.end(), c.kind), spec.kinds.end())
        << c.name() << ": kind not supported by the component";
  }
  for (const ComponentSpec& spec : components()) {
    bool real = false;
    for (InputKind k : spec.kinds) {
      bool seen = false;
      for (const Case& c : cases) seen = seen || (c.component == spec.name && c.kind == k);
      EXPECT_TRUE(seen) << spec.name << " declares kind " << input_kind_name(k)
                        << " but no case uses it";
    }
    for (const Case& c : cases) real = real || (c.component == spec.name && c.config == "v4-flash");
    // sinkhorn's real shape is the tiny one (hc = 4 in every config).
    if (spec.name != "sinkhorn") {
      EXPECT_TRUE(real) << spec.name << " has no real-shape (v4-flash) case";
    }
    EXPECT_TRUE(spec.reference && spec.baseline_fp32 && spec.make_inputs) << spec.name;
  }
}

TEST(RunnerTable, InputsAreDeterministicAndSeeded) {
  const Case c = case_table(0).front();
  const ModelConfig& cfg = case_config(c);
  const TensorSet a = component(c.component).make_inputs(c, cfg);
  const TensorSet b = component(c.component).make_inputs(c, cfg);
  Case other = c;
  other.global_seed = 7;
  const TensorSet d = component(c.component).make_inputs(other, cfg);
  ASSERT_EQ(a.names(), b.names());
  for (const std::string& n : a.names()) EXPECT_TRUE(a.at(n) == b.at(n)) << n;
  EXPECT_FALSE(a.at("x") == d.at("x")) << "V4REF_SEED must change the data";
  EXPECT_NE(c.seed(), other.seed());
  EXPECT_EQ(Case::from_json(c.to_json()).name(), c.name());
}

// Every case's inputs hold exactly what their dtype stores (run_case enforces it too), and a
// value off its grid is rejected with its name, element and value.
TEST(RunnerTable, InputsLieOnTheirDtypeGrids) {
  for (const Case& c : case_table(0))
    EXPECT_NO_THROW(require_inputs_on_their_grids(
        component(c.component).make_inputs(c, case_config(c)), c.name()));
  TensorSet bad;
  Mat x = Mat::Constant(2, 3, 0.5);
  x(1, 2) = 0.1;  // not a float
  bad.put("scale", x, "f32");
  try {
    require_inputs_on_their_grids(bad, "case demo");
    ADD_FAILURE() << "no exception";
  } catch (const NumericError& e) {
    EXPECT_NE(std::string(e.what()).find("case demo: input scale[1, 2] = 0.10000000000000001 is tagged f32"),
              std::string::npos) << e.what();
  }
  bad.put("scale", Mat::Constant(2, 3, fmt::round_fp32(0.1)), "f32");
  EXPECT_NO_THROW(require_inputs_on_their_grids(bad, "case demo"));
  bad.put("x", Mat::Constant(1, 1, fmt::round_fp32(0.1)), "bf16");
  EXPECT_THROW(require_inputs_on_their_grids(bad, "case demo"), NumericError);
}

TEST(RunnerTable, GlobalSeedFromEnvironment) {
  ::setenv("V4REF_SEED", "0x10", 1);
  EXPECT_EQ(global_seed_from_env(), 16u);
  EXPECT_EQ(case_table().front().global_seed, 16u);
  ::setenv("V4REF_SEED", "12", 1);
  EXPECT_EQ(global_seed_from_env(), 12u);
  ::setenv("V4REF_SEED", "0xZZ", 1);
  test::expect_error<ConfigError>([] { global_seed_from_env(); }, {"V4REF_SEED", "0xZZ"});
  ::unsetenv("V4REF_SEED");
  EXPECT_EQ(global_seed_from_env(), 0u);
  EXPECT_EQ(seed_hex(0x5e1f03a2c4d9e117ull), "0x5e1f03a2c4d9e117");
}

class RunnerCases : public ::testing::TestWithParam<Case> {};

TEST_P(RunnerCases, ReferencePasses) {
  const CaseResult r = run_case(GetParam(), *reference_implementation(), RunnerOptions{{}, "", ""});
  EXPECT_TRUE(r.pass) << r.report();
}

TEST_P(RunnerCases, Fp32PortPasses) {
  const CaseResult r = run_case(GetParam(), *fp32_implementation(), RunnerOptions{{}, "", ""});
  EXPECT_TRUE(r.pass) << r.report();
  for (const OutputJudgement& j : r.outputs)
    if (j.bound_ratio >= 0) {
      // B itself sits at max_abs(B, R) / (c max_abs(B, R) + floor) <= 1/c of the allowance.
      EXPECT_LE(j.bound_ratio, 0.51) << GetParam().name() << " " << j.output;
    }
}

// The reference's own outputs, pushed out of tolerance in one element: every gate must fail.
TEST_P(RunnerCases, EveryGateCanFail) {
  const Case& c = GetParam();
  const ComponentSpec& spec = component(c.component);
  const TensorSet inputs = spec.make_inputs(c, case_config(c));
  const References refs = compute_references(c, inputs);
  for (const std::string& o : spec.outputs) {
    TensorSet k;
    for (const std::string& n : spec.outputs) k.put(n, refs.ref_q.at(n), refs.ref_q.dtype(n));
    Mat bad = refs.ref_q.at(o);
    if (bad.size() == 0) continue;
    if (refs.ref_q.dtype(o) == "index") {
      // Drop the first selected entry of the first row that selects something.
      bool done = false;
      for (Eigen::Index t = 0; t < bad.rows() && !done; ++t)
        if (bad(t, 0) >= 0) {
          bad(t, 0) = -1;
          done = true;
        }
      if (!done) continue;  // nothing selected anywhere (all masked)
    } else {
      // A 25% error on the largest element (1e-3 absolute on an all-zero output): far outside
      // any derived allowance, bf16-level ones included.
      Eigen::Index at = 0;
      for (Eigen::Index i = 0; i < bad.size(); ++i)
        if (std::isfinite(bad.data()[i]) && (!std::isfinite(bad.data()[at]) ||
                                             std::fabs(bad.data()[i]) > std::fabs(bad.data()[at])))
          at = i;
      bad.data()[at] += bad.data()[at] != 0 ? 0.25 * bad.data()[at] : 1e-3;
    }
    k.put(o, bad, refs.ref_q.dtype(o));
    for (const std::string path : {"fp32", "fp64"}) {
      const CaseResult r = judge_case(c, "perturbed", path, refs, &k);
      EXPECT_FALSE(r.pass) << c.name() << ": perturbing " << o << " was not caught on path "
                           << path;
    }
  }
}

// An all-zero output never passes (guide §8): every output whose reference is not zero, replaced by
// zeros, is rejected on both paths.
TEST_P(RunnerCases, AllZeroOutputFails) {
  const Case& c = GetParam();
  const ComponentSpec& spec = component(c.component);
  const TensorSet inputs = spec.make_inputs(c, case_config(c));
  const References refs = compute_references(c, inputs);
  for (const std::string& o : spec.outputs) {
    const Mat& r = refs.ref_q.at(o);
    if (r.size() == 0 || (r.array() == 0).all()) continue;  // a declared zero output
    TensorSet k;
    for (const std::string& n : spec.outputs) k.put(n, refs.ref_q.at(n), refs.ref_q.dtype(n));
    k.put(o, Mat::Zero(r.rows(), r.cols()), refs.ref_q.dtype(o));
    for (const std::string path : {"fp32", "fp64"}) {
      EXPECT_FALSE(judge_case(c, "zeros", path, refs, &k).pass)
          << c.name() << ": an all-zero " << o << " passes on path " << path;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Table, RunnerCases, ::testing::ValuesIn(quick_cases()),
                         [](const ::testing::TestParamInfo<Case>& p) {
                           return p.param.test_name();
                         });

// The hash router's inputs make the table matter: in every case some token's tid2eid row differs
// from the top-k of its scores, so a router that ignores the table (§9.1) is visible.
TEST(RunnerTable, HashRouterTableDecidesTheSet) {
  std::int64_t cases = 0;
  for (const Case& c : case_table(0)) {
    if (c.component != "hash_router") continue;
    ++cases;
    const TensorSet inputs = component(c.component).make_inputs(c, case_config(c));
    const References refs = compute_references(c, inputs);
    const Mat& scores = refs.ref_q.at("scores");
    const Mat& idx = refs.ref_q.at("routed_idx");
    std::int64_t differ = 0;
    for (Eigen::Index t = 0; t < scores.rows(); ++t) {
      std::vector<Eigen::Index> order(static_cast<std::size_t>(scores.cols()));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](Eigen::Index a, Eigen::Index b) { return scores(t, a) > scores(t, b); });
      std::set<double> top, row;
      for (Eigen::Index i = 0; i < idx.cols(); ++i) {
        top.insert(static_cast<double>(order[static_cast<std::size_t>(i)]));
        row.insert(idx(t, i));
      }
      differ += top != row;
    }
    EXPECT_GT(differ, 0) << c.name();
  }
  EXPECT_GE(cases, 4);
}

// Every key window case has full windows (t >= n_win − 1), where an off-by-one start shows; the
// tiny cases also cross the first full window, so the clamp at 0 is exercised next to it.
TEST(RunnerTable, KeyWindowCasesCrossTheWindowBoundary) {
  for (const Case& c : case_table(0)) {
    if (c.component != "key_window") continue;
    const ModelConfig& cfg = case_config(c);
    const Mat pos = component(c.component).make_inputs(c, cfg).at("positions");
    EXPECT_GE(pos.maxCoeff(), static_cast<double>(cfg.window_size)) << c.name();
    if (c.config == "tiny-flash") {
      EXPECT_LT(pos.minCoeff(), static_cast<double>(cfg.window_size - 1)) << c.name();
    }
  }
}

// The attention_core selections keep the indexer's contract: every selected entry j of query t
// is visible, j < ⌊(t+1)/4⌋, distinct within its row, with −1 only as trailing padding; the
// random-kind cases have padded and unpadded rows and full and partial windows, the
// format_extremes case has rows of every padding length class (none, all, partial).
TEST(RunnerTable, AttentionCoreSelectionsAreVisibleAndTrailingPadded) {
  std::int64_t cases = 0;
  for (const Case& c : case_table(0)) {
    if (c.component != "attention_core") continue;
    ++cases;
    const ModelConfig& cfg = case_config(c);
    const Mat sel = component(c.component).make_inputs(c, cfg).at("selected");
    const std::int64_t q0 = c.dim("q_start"), K = c.dim("K");
    ASSERT_EQ(sel.cols(), K) << c.name();
    std::int64_t full = 0, empty = 0, partial = 0;
    for (Eigen::Index i = 0; i < sel.rows(); ++i) {
      const std::int64_t t = q0 + i;
      std::set<double> seen;
      std::int64_t n = 0;
      while (n < K && sel(i, n) >= 0) ++n;
      for (std::int64_t j = 0; j < K; ++j) {
        if (j < n) {
          EXPECT_LT(sel(i, j), static_cast<double>(ref::visible_entries(t, 4)))
              << c.name() << " row " << i;
          EXPECT_TRUE(seen.insert(sel(i, j)).second) << c.name() << " row " << i;
        } else {
          EXPECT_EQ(sel(i, j), -1.0) << c.name() << " row " << i << ": padding not trailing";
        }
      }
      full += n == K;
      empty += n == 0;
      partial += n > 0 && n < K;
    }
    if (c.kind == InputKind::kAllMasked) {
      EXPECT_EQ(empty, sel.rows()) << c.name();
    } else if (c.config == "tiny-flash") {
      EXPECT_GT(full, 0) << c.name();
      EXPECT_GT(partial, 0) << c.name();
      if (c.kind == InputKind::kFormatExtremes) {
        EXPECT_GT(empty, 0) << c.name();
      }
      EXPECT_LT(q0, cfg.window_size - 1) << c.name() << ": no partial window";
      EXPECT_GE(q0 + sel.rows() - 1, cfg.window_size) << c.name() << ": no full window";
    } else {
      EXPECT_GT(partial, 0) << c.name() << ": K = " << K << " rows without padding only";
    }
  }
  EXPECT_GE(cases, 6);
}

// An all-padding selection is window-only attention: the all_masked case equals attention_core
// with no selection lists and equals sink_attention over the window rows of each query, in the
// exact and official policies, bitwise.
TEST(RunnerTable, AllPaddingSelectionIsWindowOnlyAttention) {
  for (const Case& c : case_table(0)) {
    if (c.component != "attention_core" || c.kind != InputKind::kAllMasked) continue;
    const ModelConfig& cfg = case_config(c);
    const TensorSet in = component(c.component).make_inputs(c, cfg);
    const std::int64_t q0 = c.dim("q_start"), H = cfg.n_heads, D = cfg.head_dim;
    const Mat& q = in.at("q");
    const Mat& kv = in.at("kv");
    const ref::Vec sink = Eigen::Map<const ref::Vec>(in.at("sink").data(), H);
    for (const PrecisionPolicy& pol : {PrecisionPolicy::exact(), PrecisionPolicy::official()}) {
      Case cm = c;
      cm.mode = pol == PrecisionPolicy::exact() ? PrecisionMode::kExact : PrecisionMode::kOfficial;
      const Mat padded = component(c.component).reference({cm, cfg, pol, in}).at("out");
      const Mat none = ref::attention_core(q, kv, in.at("compressed"), {}, sink, q0, cfg, pol);
      EXPECT_TRUE(padded == none) << c.name();
      for (Eigen::Index i = 0; i < q.rows(); ++i) {
        const ref::WindowRange w = ref::window_range(q0 + i, cfg.window_size);
        const Mat qh = Eigen::Map<const Mat>(q.row(i).data(), H, D);
        const Mat oh = ref::sink_attention(qh, kv.middleRows(w.first, w.size()), sink,
                                           1.0 / std::sqrt(static_cast<double>(D)), pol);
        EXPECT_TRUE(padded.row(i) == Eigen::Map<const Eigen::RowVectorXd>(oh.data(), H * D))
            << c.name() << " query " << i;
      }
    }
  }
}

// The attention paths are the forward's own computation: on the inputs a layer of the tiny-flash
// checkpoint hands its attention (the attn_norm trace point, the layer's weights, positions
// 0 .. T−1) the q_path and kv_path references reproduce the layer's attn.c, attn.q and attn.kv
// bitwise in every precision mode (so the K=V Q8 of the nope dims sits where the forward applies
// it), and in the CSA layer the index_query outputs fed to index_scores (with the layer's index
// keys) reproduce its attn.index_scores.
TEST(RunnerTable, AttentionPathsReproduceTheForward) {
  const std::filesystem::path dir =
      std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "checkpoints" / "tiny-flash-s0";
  const ModelConfig cfg = load_config(dir / "config.json");
  constexpr std::int64_t kT = 41;  // 10 CSA entries; rows 0-2 see none
  Rng rng(derive_seed("runner_test", "attention paths", std::to_string(kT)));
  std::vector<std::int64_t> tokens(static_cast<std::size_t>(kT));
  for (auto& t : tokens)
    t = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(cfg.vocab_size)));
  Mat positions(kT, 1);
  for (std::int64_t t = 0; t < kT; ++t) positions(t, 0) = static_cast<double>(t);
  const auto row = [](const ref::Vec& v) { return Mat(v.transpose()); };
  for (const PrecisionMode mode :
       {PrecisionMode::kExact, PrecisionMode::kQat, PrecisionMode::kOfficial}) {
    ref::ModelOptions mo;
    mo.policy = PrecisionPolicy::of(mode);
    mo.keep_weights = true;
    const ref::Model model = ref::Model::open(dir, cfg, mo);
    ref::ForwardRequest req;
    req.last_layer = 2;  // swa swa csa
    ref::Trace trace;
    model.forward(tokens, req, &trace);
    bool csa_seen = false;
    for (std::int64_t i = 0; i <= 2; ++i) {
      const auto lw = model.layer_weights(i);
      const LayerConfig& layer = lw->layer;
      const auto at = [&](const char* local) {
        return trace.at(ref::trace_names::layer(cfg, i, local));
      };
      const auto run = [&](const std::string& comp,
                           std::vector<std::pair<std::string, std::int64_t>> dims,
                           const TensorSet& in) {
        Case c;
        c.component = comp;
        c.dims = std::move(dims);
        c.mode = mode;
        return component(comp).reference({c, cfg, mo.policy, in});
      };
      const std::string where = layer.prefix + " " + std::string(precision_mode_name(mode));
      const std::int64_t yarn = layer.rope_yarn ? 1 : 0;
      ASSERT_EQ(layer.rope_base, yarn ? cfg.compress_rope_theta : cfg.rope_theta) << where;
      TensorSet qin;
      qin.put("x", at("attn_norm"));
      qin.put("wq_a", lw->attn.wq_a.w);
      qin.put("q_norm", row(lw->attn.q_norm));
      qin.put("wq_b", lw->attn.wq_b.w);
      qin.put("positions", positions);
      const TensorSet q = run("q_path", {{"T", kT}, {"p0", 0}, {"yarn", yarn}}, qin);
      EXPECT_TRUE(q.at("c") == at("attn.c")) << where;
      EXPECT_TRUE(q.at("q") == at("attn.q")) << where;
      TensorSet kin;
      kin.put("x", at("attn_norm"));
      kin.put("wkv", lw->attn.wkv.w);
      kin.put("kv_norm", row(lw->attn.kv_norm));
      kin.put("positions", positions);
      EXPECT_TRUE(run("kv_path", {{"T", kT}, {"p0", 0}, {"yarn", yarn}}, kin).at("kv") ==
                  at("attn.kv"))
          << where;
      if (layer.kind != LayerKind::kCsa) continue;
      csa_seen = true;
      ASSERT_TRUE(lw->indexer.has_value());
      TensorSet iin;
      iin.put("c", at("attn.c"));
      iin.put("x", at("attn_norm"));
      iin.put("wq_b", lw->indexer->wq_b.w);
      iin.put("weights_proj", lw->indexer->weights_proj.w);
      iin.put("positions", positions);
      const TensorSet iq = run("index_query", {{"T", kT}, {"p0", 0}}, iin);
      TensorSet sin;
      sin.put("q", iq.at("q"));
      sin.put("weights", iq.at("weights"));
      sin.put("keys", at("attn.index_keys"));
      sin.put("positions", positions);
      const TensorSet sc = run("index_scores",
                               {{"T", kT},
                                {"p0", 0},
                                {"H", cfg.index_n_heads},
                                {"D", cfg.index_head_dim},
                                {"K", cfg.index_topk}},
                               sin);
      EXPECT_TRUE(sc.at("scores") == at("attn.index_scores")) << where;
      EXPECT_TRUE(sc.at("topk_idx") == at("attn.topk_idx")) << where;
    }
    EXPECT_TRUE(csa_seen);
  }
}

// The query heads come out unit-RMS (§2.2: the rotation keeps each head's norm), and the qat and
// official K=V cases hold the Q8 of §2.5 item 2 on the nope dims only: against the same policy
// without kv_window_q8_64 the rope dims are bitwise equal and the nope dims are Q8(·; 64) of the
// unquantised ones, with codes that actually move the values.
TEST(RunnerTable, QueryHeadsAreUnitRmsAndKvQ8TouchesTheNopeDimsOnly) {
  std::int64_t q_cases = 0, kv_cases = 0;
  for (const Case& c : case_table(0)) {
    if (c.slow || (c.component != "q_path" && c.component != "kv_path")) continue;
    const ModelConfig& cfg = case_config(c);
    const ComponentSpec& spec = component(c.component);
    const TensorSet in = spec.make_inputs(c, cfg);
    const TensorSet r = spec.reference({c, cfg, c.policy(), in});
    const std::int64_t D = cfg.head_dim, r_dim = cfg.rope_head_dim;
    if (c.component == "q_path" && c.mode == PrecisionMode::kExact) {
      ++q_cases;
      const Mat& q = r.at("q");
      for (Eigen::Index t = 0; t < q.rows(); ++t)
        for (std::int64_t h = 0; h < cfg.n_heads; ++h) {
          const double rms =
              std::sqrt(q.row(t).segment(h * D, D).squaredNorm() / static_cast<double>(D));
          EXPECT_NEAR(rms, 1.0, 1e-5) << c.name() << " token " << t << " head " << h;
        }
    }
    if (c.component == "kv_path" && c.mode != PrecisionMode::kExact) {
      ++kv_cases;
      PrecisionPolicy no_q8 = c.policy();
      no_q8.disable(QuantPoint::kKvWindowQ8);
      const Mat& kv = r.at("kv");
      const Mat raw = spec.reference({c, cfg, no_q8, in}).at("kv");
      EXPECT_TRUE(kv.rightCols(r_dim) == raw.rightCols(r_dim)) << c.name();
      std::int64_t moved = 0;
      for (Eigen::Index t = 0; t < kv.rows(); ++t) {
        std::vector<double> nope(raw.row(t).data(), raw.row(t).data() + (D - r_dim)),
            q8(static_cast<std::size_t>(D - r_dim));
        ref::q8_fake_quant(nope, 64, q8);
        for (std::int64_t i = 0; i < D - r_dim; ++i) {
          EXPECT_EQ(kv(t, i), q8[static_cast<std::size_t>(i)])
              << c.name() << " [" << t << ", " << i << "]";
          moved += kv(t, i) != raw(t, i);
        }
      }
      EXPECT_GT(moved, kv.rows() * (D - r_dim) / 2) << c.name();
    }
  }
  EXPECT_GE(q_cases, 2);
  EXPECT_GE(kv_cases, 2);
}

// ------------------------------------------------------------------ mutants, bundles, replay

TensorSet wrong_rms_norm(const ComponentCall& call) {
  // The classic bug: mean of squares over n − 1 instead of n (a 1/(2n) relative error).
  TensorSet out = component("rms_norm").reference(call);
  const Mat& x = call.inputs.at("x");
  const double n = static_cast<double>(x.cols());
  Mat y = out.at("out") * std::sqrt((n - 1) / n);
  out.put("out", y, out.dtype("out"));
  return out;
}

std::shared_ptr<const Implementation> rms_mutant() {
  return std::make_shared<SwappedImplementation>(
      reference_implementation(), "rms_norm", wrong_rms_norm, "test-mutant-rms-n-minus-1", "fp32");
}

Case rms_case() {
  for (const Case& c : case_table(0))
    if (c.component == "rms_norm" && c.kind == InputKind::kRandom &&
        c.mode == PrecisionMode::kExact)
      return c;
  throw Error("no rms_norm case");
}

TEST(RunnerMutant, IsCaughtBundledAndReplayed) {
  test::TempDir dir("runner_mutant");
  register_implementation("test-mutant-rms-n-minus-1", rms_mutant);
  const Case c = rms_case();
  RunnerOptions opts;
  opts.bundle_dir = dir.path();
  opts.suite = "runner_test";
  const CaseResult r = run_case(c, *rms_mutant(), opts);
  ASSERT_FALSE(r.pass);
  const std::string rep = r.report();
  EXPECT_NE(rep.find("FAIL rms_norm.out"), std::string::npos) << rep;
  EXPECT_NE(rep.find("bound_ratio"), std::string::npos) << rep;
  EXPECT_NE(rep.find("seed=" + seed_hex(c.seed())), std::string::npos) << rep;
  ASSERT_FALSE(r.bundle.empty());
  ASSERT_TRUE(std::filesystem::exists(r.bundle)) << r.bundle;
  EXPECT_EQ(r.bundle.parent_path().filename(), "runner_test");

  const Bundle b = read_bundle(r.bundle);
  EXPECT_EQ(b.c.name(), c.name());
  EXPECT_EQ(b.verdict, "FAIL");
  EXPECT_EQ(b.implementation, "test-mutant-rms-n-minus-1");
  EXPECT_TRUE(b.has_impl);
  EXPECT_NE(b.command.find("v4ref replay"), std::string::npos);
  const TensorSet inputs = component("rms_norm").make_inputs(c, case_config(c));
  for (const std::string& n : inputs.names()) EXPECT_TRUE(b.inputs.at(n) == inputs.at(n)) << n;
  EXPECT_EQ(b.inputs.dtype("x"), "bf16");

  const ReplayResult rp = replay_bundle(r.bundle);
  EXPECT_TRUE(rp.reference_unchanged);
  EXPECT_FALSE(rp.stored.pass);
  ASSERT_TRUE(rp.rerun.has_value());
  EXPECT_FALSE(rp.rerun->pass);
  EXPECT_TRUE(rp.reproduced()) << rp.text();
  ASSERT_FALSE(rp.stored.outputs.empty());
  EXPECT_DOUBLE_EQ(rp.stored.outputs[0].bound_ratio, r.outputs[0].bound_ratio);

  // The CLI replays the stored outputs (the mutant is not registered in that process).
  const std::filesystem::path exe = std::filesystem::path(V4REF_BINARY_DIR) / "bin" / "v4ref";
  if (std::filesystem::exists(exe)) {
    const std::string cmd =
        exe.string() + " replay " + r.bundle.string() + " > " + (dir / "out.txt").string();
    const int rc = std::system(cmd.c_str());
    EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 1)
        << "v4ref replay must exit 1 on a reproduced failure";
    const std::string json =
        exe.string() + " replay --json " + r.bundle.string() + " > " + (dir / "out.json").string();
    EXPECT_NE(std::system(json.c_str()), 0);
    EXPECT_GT(std::filesystem::file_size(dir / "out.json"), 100u);
  }
}

TEST(RunnerMutant, ThrowingImplementationIsReported) {
  test::TempDir dir("runner_throw");
  const Case c = rms_case();
  const SwappedImplementation thrower(
      reference_implementation(), "rms_norm",
      [](const ComponentCall&) -> TensorSet { throw ShapeError("kernel launch failed"); },
      "test-thrower", "fp32");
  RunnerOptions opts;
  opts.bundle_dir = dir.path();
  const CaseResult r = run_case(c, thrower, opts);
  EXPECT_FALSE(r.pass);
  EXPECT_NE(r.report().find("kernel launch failed"), std::string::npos) << r.report();
  const ReplayResult rp = replay_bundle(r.bundle);
  EXPECT_FALSE(rp.bundle.has_impl);
  EXPECT_FALSE(rp.stored.pass);
  EXPECT_TRUE(rp.reproduced());
}

TEST(RunnerMutant, WrongShapeIsNamed) {
  const Case c = rms_case();
  const SwappedImplementation wrong(
      reference_implementation(), "rms_norm",
      [](const ComponentCall& call) {
        TensorSet out;
        out.put("out", Mat::Zero(call.inputs.at("x").rows(), call.inputs.at("x").cols() - 1));
        return out;
      },
      "test-wrong-shape", "fp32");
  const CaseResult r = run_case(c, wrong, RunnerOptions{{}, "", ""});
  EXPECT_FALSE(r.pass);
  EXPECT_NE(
      r.report().find("rms_norm.out: implementation output is [17, 127], reference is [17, 128]"),
      std::string::npos)
      << r.report();
}

}  // namespace
}  // namespace v4ref::compare

