// The whole model (v4-forward.md §3, §10, §11) on the committed tiny checkpoints:
//   * prefill logits at every position, finite and position-causal;
//   * token-by-token decode through the official caches equals prefill, from an empty state and
//     from prefill/decode split points on both sides of every compression boundary kind
//     (tiny-long: 3+ full HCA blocks, 100+ CSA entries; tiny-flash / tiny-pro: every layer kind);
//   * the traces: names in forward order, filters, chained vs teacher-forced, layer ranges, HDF5
//     round trip, decode traces equal prefill traces row by row;
//   * MTP against its definition from the shared sub-blocks, and MTP decode = MTP prefill;
//   * instrumented counting: each decode step charges exactly decode_flops(cfg, t + 1), a whole
//     sequence exactly prefill_flops(cfg, T), and the caches hold kv_cache_counter(cfg, T) bytes;
//   * bad input: ids out of range, empty sequences, sequences past the configured maximum,
//     layers out of range, a checkpoint missing a tensor, a config contradicting the checkpoint.
#include "v4ref/ref/model.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/linear.hpp"
#include "v4ref/ref/mhc.hpp"
#include "v4ref/ref/norm.hpp"
#include "../common/test_support.hpp"

namespace v4ref::ref {
namespace {

using test::expect_error;

std::filesystem::path ckpt_dir(const std::string& name) {
  return std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "checkpoints" / (name + "-s0");
}

Model open_tiny(const std::string& name, PrecisionPolicy policy = PrecisionPolicy::exact()) {
  ModelOptions o;
  o.policy = policy;
  o.keep_weights = true;
  return Model::open(ckpt_dir(name), load_config(ckpt_dir(name) / "config.json"), o);
}

std::vector<std::int64_t> tokens_for(const ModelConfig& cfg, std::int64_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(cfg.vocab_size)));
  return ids;
}

// max_t ‖a_t − b_t‖∞ / ‖b_t‖∞ over rows.
double max_row_rel(const Mat& a, const Mat& b) {
  EXPECT_EQ(a.rows(), b.rows());
  EXPECT_EQ(a.cols(), b.cols());
  double worst = 0;
  for (Eigen::Index t = 0; t < std::min(a.rows(), b.rows()); ++t) {
    const double den = b.row(t).cwiseAbs().maxCoeff();
    worst = std::max(worst, (a.row(t) - b.row(t)).cwiseAbs().maxCoeff() / std::max(den, 1e-300));
  }
  return worst;
}

bool bitwise_equal(const Mat& a, const Mat& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  return std::equal(a.data(), a.data() + a.size(), b.data(),
                    [](double x, double y) { return std::bit_cast<std::uint64_t>(x) == std::bit_cast<std::uint64_t>(y); });
}

// Decode tokens[from..) from `state`, stacking logits rows.
Mat decode_rest(const Model& m, std::span<const std::int64_t> tokens, std::int64_t from, DecodeState& state,
                Trace* trace = nullptr) {
  Mat out(static_cast<Eigen::Index>(tokens.size()) - from, m.config().vocab_size);
  for (std::int64_t t = from; t < static_cast<std::int64_t>(tokens.size()); ++t)
    out.row(t - from) = m.decode_step(tokens[static_cast<std::size_t>(t)], state, trace).row(0);
  return out;
}

// Decode = prefill is a rounding-level identity in exact mode (same math, other summation
// order only in the compressor pooling and attention key order): ~1e-12 relative to each row's
// largest logit is the requirement; measured values are ~1e-14.
constexpr double kDecodeRel = 1e-12;
// Same math, other summation order (row counts): a few ulps after error growth through the layers.
constexpr double kRoundingRel = 1e-13;

// ---------------------------------------------------------------- prefill

TEST(ModelPrefill, LogitsAtEveryPositionFiniteAndCausal) {
  for (const std::string name : {"tiny-flash", "tiny-pro"}) {
    const Model m = open_tiny(name);
    const auto ids = tokens_for(m.config(), 140, 11);
    const ForwardResult full = m.forward(ids);
    ASSERT_EQ(full.logits.rows(), 140) << name;
    ASSERT_EQ(full.logits.cols(), m.config().vocab_size) << name;
    EXPECT_TRUE(full.logits.allFinite()) << name;
    EXPECT_GT(full.logits.cwiseAbs().maxCoeff(), 1e-3) << name << ": logits all ~0";
    // Position causality. Not bitwise: Eigen's GEMM blocking depends on the row count, and the
    // MoE groups rows per expert, so other T give other summation orders (1-ulp effects). A
    // leak of a later position would show at the 1e-3 level; rounding stays below 1e-13.
    const ForwardResult prefix = m.forward(std::span(ids).first(131));
    EXPECT_LE(max_row_rel(prefix.logits, full.logits.topRows(131)), kRoundingRel) << name;
    auto ids2 = ids;
    ids2.back() = (ids2.back() + 1) % m.config().vocab_size;
    const ForwardResult changed = m.forward(ids2);
    EXPECT_LE(max_row_rel(changed.logits.topRows(139), full.logits.topRows(139)), kRoundingRel) << name;
    EXPECT_GT(max_row_rel(changed.logits.bottomRows(1), full.logits.bottomRows(1)), 1e-3) << name;
  }
}

TEST(ModelPrefill, PiecesComposeTheForward) {
  // §3 by hand from the exposed pieces: embed → streams → blocks → hc_head → norm → head.
  const Model m = open_tiny("tiny-flash");
  const ModelConfig& cfg = m.config();
  const auto ids = tokens_for(cfg, 40, 5);
  Mat x = m.expand_streams(m.embed(ids));
  for (std::int64_t k = 1; k < cfg.hc_mult; ++k)
    EXPECT_EQ(x.middleCols(k * cfg.dim, cfg.dim), x.leftCols(cfg.dim));
  for (std::int64_t i = 0; i < cfg.n_layers; ++i) {
    const auto w = m.layer_weights(i);
    x = block_forward(x, ids, *w, cfg, w->layer, m.policy());
  }
  const Mat by_hand = m.logits_from_streams(x);
  EXPECT_TRUE(bitwise_equal(by_hand, m.forward(ids).logits));
}

// ---------------------------------------------------------------- decode

TEST(ModelDecode, TokenByTokenEqualsPrefillAcrossManyCompressionBoundaries) {
  // tiny-long: [csa, hca, csa | mtp], window 32, K_I 16: T = 520 gives 4 complete HCA blocks
  // (entries at 127, 255, 383, 511), 130 CSA entries (top-16 selection from t = 67 on) and
  // window wrap-around 16 times.
  const Model m = open_tiny("tiny-long");
  const auto ids = tokens_for(m.config(), 520, 21);
  const Mat prefill = m.forward(ids).logits;
  DecodeState state = m.start_state();
  const Mat decoded = decode_rest(m, ids, 0, state);
  const double rel = max_row_rel(decoded, prefill);
  EXPECT_LE(rel, kDecodeRel);
  std::printf("tiny-long T=520 decode vs prefill: max row-relative %.3g\n", rel);
  EXPECT_EQ(state.position, 520);
  EXPECT_EQ(state.layers[1].compressed.rows(), 520 / 128);
  EXPECT_EQ(state.layers[0].compressed.rows(), 520 / 4);
  EXPECT_EQ(state.layers[0].index_keys.rows(), 520 / 4);
}

TEST(ModelDecode, EveryLayerKindFromAnySplitPoint) {
  // tiny-flash (swa, swa, csa, hca, csa) and tiny-pro (hca, hca, csa, hca, csa): split points
  // around CSA block ends (4k−1, 4k, 4k+1), before/after the first HCA entry (127, 128, 129),
  // and 1 (a one-token prefill).
  for (const std::string name : {"tiny-flash", "tiny-pro"}) {
    const Model m = open_tiny(name);
    const auto ids = tokens_for(m.config(), 200, 31);
    const Mat prefill = m.forward(ids).logits;
    for (const std::int64_t split : {1, 3, 4, 5, 127, 128, 129, 199}) {
      DecodeState state;
      const ForwardResult head = m.prefill_with_state(std::span(ids).first(static_cast<std::size_t>(split)), state);
      EXPECT_LE(max_row_rel(head.logits, prefill.topRows(split)), kRoundingRel) << name << " split " << split;
      const Mat tail = decode_rest(m, ids, split, state);
      EXPECT_LE(max_row_rel(tail, prefill.bottomRows(200 - split)), kDecodeRel) << name << " split " << split;
    }
  }
}

TEST(ModelDecode, QatAndOfficialModesAlsoAgree) {
  // The quantisation points act per position (Q8 per 64/128 values of one row, bf16 rounding
  // of one value), so decode and prefill quantise the same values up to summation order
  // (~1e-15 relative). A rounding could flip only for an input within ~1e-15 of a rounding
  // boundary: ~1e-13 per element, ~1e-7 over the ~1e6 quantised values of this run. The bound
  // is therefore the exact-mode one; a failure here is a real decode/prefill difference.
  for (const PrecisionPolicy& policy : {PrecisionPolicy::qat(), PrecisionPolicy::official()}) {
    const Model m = open_tiny("tiny-flash", policy);
    const auto ids = tokens_for(m.config(), 136, 41);
    const Mat prefill = m.forward(ids).logits;
    DecodeState state = m.start_state();
    const Mat decoded = decode_rest(m, ids, 0, state);
    const double rel = max_row_rel(decoded, prefill);
    EXPECT_LE(rel, kDecodeRel) << policy.describe();
    std::printf("tiny-flash %s decode vs prefill: max row-relative %.3g\n", policy.describe().c_str(), rel);
  }
}

TEST(ModelDecode, DecodeTraceEqualsPrefillTraceRowByRow) {
  const Model m = open_tiny("tiny-flash");
  const auto ids = tokens_for(m.config(), 136, 51);
  Trace pre;
  m.forward(ids, {}, &pre);
  Trace dec;
  DecodeState state = m.start_state();
  decode_rest(m, ids, 0, state, &dec);
  for (const std::string& n : pre.names()) {
    ASSERT_TRUE(dec.has(n)) << n;
    const Mat& a = dec.at(n);
    const Mat& b = pre.at(n);
    ASSERT_EQ(a.rows(), b.rows()) << n;
    ASSERT_EQ(a.cols(), b.cols()) << n;
    if (n.find("topk_idx") != std::string::npos || n.find("routed_idx") != std::string::npos) {
      EXPECT_EQ(a, b) << n;
      continue;
    }
    const Mat fa = a.unaryExpr([](double v) { return std::isfinite(v) ? v : 0.0; });
    const Mat fb = b.unaryExpr([](double v) { return std::isfinite(v) ? v : 0.0; });
    EXPECT_EQ(a.array().isInf().count(), b.array().isInf().count()) << n;
    EXPECT_LE((fa - fb).cwiseAbs().maxCoeff(), 1e-12 * std::max(1.0, fb.cwiseAbs().maxCoeff())) << n;
  }
}

// ---------------------------------------------------------------- traces

TEST(ModelTrace, NamesFollowTheForwardOrderAndFiltersApply) {
  const Model m = open_tiny("tiny-pro");
  const ModelConfig& cfg = m.config();
  const auto ids = tokens_for(cfg, 132, 61);
  Trace all;
  m.forward(ids, {}, &all);
  std::vector<std::string> expected = trace_names::forward_order(cfg, false);
  EXPECT_EQ(all.names(), expected);
  EXPECT_EQ(all.at("layers.2.attn.topk_idx").cols(), cfg.index_topk);
  EXPECT_EQ(all.at("layers.0.attn.compressed").rows(), 1);  // HCA: ⌊132/128⌋
  EXPECT_EQ(all.at("layers.0.hc_attn.comb").cols(), cfg.hc_mult * cfg.hc_mult);
  EXPECT_EQ(all.at("layers.4.ffn.routed_idx").cols(), cfg.n_activated_experts);
  EXPECT_EQ(all.tokens(), ids);

  Trace some({"layers.3.attn.*", "logits"});
  m.forward(ids, {}, &some);
  for (const std::string& n : some.names())
    EXPECT_TRUE(n == "logits" || n.rfind("layers.3.attn.", 0) == 0) << n;
  EXPECT_TRUE(some.has("layers.3.attn.compressed"));
  EXPECT_TRUE(bitwise_equal(some.at("logits"), all.at("logits")));
  EXPECT_TRUE(glob_match("layers.*.attn.q", "layers.12.attn.q"));
  EXPECT_FALSE(glob_match("layers.?.attn.q", "layers.12.attn.q"));
}

TEST(ModelTrace, TeacherForcedEqualsChainedOnTheReferenceTrace) {
  const Model m = open_tiny("tiny-flash");
  const ModelConfig& cfg = m.config();
  const auto ids = tokens_for(cfg, 72, 71);
  Trace chained;
  const ForwardResult c = m.forward(ids, {}, &chained);
  // Fed from its own trace, every layer reproduces it bitwise.
  ForwardRequest tf;
  tf.teacher = &chained;
  Trace forced;
  const ForwardResult f = m.forward(ids, tf, &forced);
  for (const std::string& n : forced.names())
    EXPECT_TRUE(bitwise_equal(forced.at(n), chained.at(n))) << n;
  EXPECT_TRUE(bitwise_equal(f.logits, c.logits));
  // A perturbed input of layer 2 changes layer 2's outputs under teacher forcing, and no other
  // layer's (each reads the teacher's input).
  Trace teacher = chained;
  Mat in2 = teacher.at("layers.2.block.in");
  in2(5, 7) += 0.5;
  teacher.put("layers.2.block.in", in2);
  tf.teacher = &teacher;
  Trace forced2;
  m.forward(ids, tf, &forced2);
  EXPECT_FALSE(bitwise_equal(forced2.at("layers.2.block.out"), chained.at("layers.2.block.out")));
  EXPECT_TRUE(bitwise_equal(forced2.at("layers.3.block.out"), chained.at("layers.3.block.out")));
  // Layer range: chained run of 0..2 traces only 1..2, identical to the full run.
  ForwardRequest range;
  range.first_layer = 1;
  range.last_layer = 2;
  Trace part;
  const ForwardResult pr = m.forward(ids, range, &part);
  EXPECT_EQ(pr.logits.size(), 0);
  EXPECT_FALSE(part.has("embed"));
  EXPECT_FALSE(part.has("layers.0.block.out"));
  EXPECT_FALSE(part.has("layers.3.block.in"));
  EXPECT_TRUE(bitwise_equal(part.at("layers.2.block.out"), chained.at("layers.2.block.out")));
  EXPECT_TRUE(bitwise_equal(pr.streams, chained.at("layers.2.block.out")));
}

TEST(ModelTrace, Hdf5RoundTrip) {
  const Model m = open_tiny("tiny-flash");
  const auto ids = tokens_for(m.config(), 20, 81);
  Trace t;
  t.attrs()["precision"] = std::string("exact");
  m.forward(ids, {}, &t);
  test::TempDir dir("model");
  t.write_hdf5(dir.path() / "trace.h5");
  const Trace r = Trace::read_hdf5(dir.path() / "trace.h5");
  EXPECT_EQ(r.names(), t.names());
  EXPECT_EQ(r.tokens(), ids);
  for (const std::string& n : t.names()) EXPECT_TRUE(bitwise_equal(r.at(n), t.at(n))) << n;
  EXPECT_EQ(std::get<std::string>(r.attrs().at("precision")), "exact");
  expect_error<MissingTensor>([&] { (void)r.at("layers.9.attn.q"); }, {"layers.9.attn.q", "trace.h5"});
}

// ---------------------------------------------------------------- MTP

TEST(ModelMtp, MatchesItsDefinitionFromTheSharedSubBlocks) {
  // §10.2 assembled here from the components (not from Model's MTP code): enorm/hnorm, e_proj,
  // h_proj broadcast to every stream, the MTP block (SWA, score routing), mtp.0.hc_head,
  // mtp.0.norm, the shared head.
  const Model m = open_tiny("tiny-flash");
  const ModelConfig& cfg = m.config();
  const Checkpoint& ck = m.checkpoint();
  const auto ids = tokens_for(cfg, 50, 91);
  const ForwardResult main = m.forward(ids);
  std::vector<std::int64_t> next(ids.begin() + 1, ids.end());
  next.push_back(3);
  Trace tr;
  const Mat mtp = m.mtp_forward(main.streams, next, 0, &tr);

  const std::int64_t T = 50, d = cfg.dim, hc = cfg.hc_mult;
  auto vec = [&](const std::string& n) {
    const auto v = load_as_double(ck, n);
    return Vec(Eigen::Map<const Vec>(v.data(), static_cast<Eigen::Index>(v.size())));
  };
  const PrecisionPolicy ex = PrecisionPolicy::exact();
  const Mat e = rms_norm(m.embed(next), vec("mtp.0.enorm.weight"), cfg.norm_eps, ex);
  const Mat pe = e * load_linear(ck, "mtp.0.e_proj", d, d).w.transpose();
  const Mat h_proj = load_linear(ck, "mtp.0.h_proj", d, d).w;
  const Vec hnorm = vec("mtp.0.hnorm.weight");
  Mat x0(T, hc * d);
  for (std::int64_t k = 0; k < hc; ++k) {
    const Mat stream = main.streams.middleCols(k * d, d);
    x0.middleCols(k * d, d) = pe + rms_norm(stream, hnorm, cfg.norm_eps, ex) * h_proj.transpose();
  }
  EXPECT_LE((x0 - tr.at("mtp.0.block.in")).cwiseAbs().maxCoeff(), 1e-12 * x0.cwiseAbs().maxCoeff());
  const auto w = m.layer_weights(cfg.n_layers);
  EXPECT_TRUE(w->layer.is_mtp);
  EXPECT_EQ(w->layer.kind, LayerKind::kSwa);
  EXPECT_FALSE(w->layer.hash_routed);
  const Mat x1 = block_forward(x0, next, *w, cfg, w->layer, ex);
  const Mat y = hc_head(x1, load_hc_head_params(ck, cfg, "mtp.0."), cfg, ex);
  const Mat head_t = m.head_logits(Mat::Identity(d, d));  // I·headᵀ = headᵀ [d, vocab]
  const Mat logits = rms_norm(y, vec("mtp.0.norm.weight"), cfg.norm_eps, ex) * head_t;
  EXPECT_LE(max_row_rel(mtp, logits), 1e-12);
  // The MTP logits differ from the main head's (own hc_head, norm, block).
  EXPECT_GT((mtp - main.logits).cwiseAbs().maxCoeff(), 1e-3);

  // MTP decode through its own window cache equals the prefill form.
  DecodeState state = m.start_state();
  for (std::int64_t t = 0; t < T; ++t) {
    const Mat row = m.mtp_decode_step(main.streams.row(t), next[static_cast<std::size_t>(t)], state);
    EXPECT_LE(max_row_rel(row, mtp.row(t)), kDecodeRel) << t;
  }
}

// ---------------------------------------------------------------- instrumented counting

TEST(ModelCost, DecodeCountsEqualTheAnalyticModelExactly) {
  for (const std::string name : {"tiny-flash", "tiny-pro", "tiny-long"}) {
    const Model m = open_tiny(name);
    const ModelConfig& cfg = m.config();
    const std::int64_t T = 140;
    const auto ids = tokens_for(cfg, T, 101);
    DecodeState state = m.start_state();
    CostCounter total;
    for (std::int64_t t = 0; t < T; ++t) {
      CostCounter step;
      m.decode_step(ids[static_cast<std::size_t>(t)], state, nullptr, &step);
      const auto diff = step.matmul_differences(decode_flops(cfg, t + 1));
      EXPECT_TRUE(diff.empty()) << name << " step " << t << ": " << (diff.empty() ? "" : diff.front());
      total.merge(step);
    }
    const auto diff = total.matmul_differences(prefill_flops(cfg, T));
    EXPECT_TRUE(diff.empty()) << name << ": " << (diff.empty() ? "" : diff.front());
    EXPECT_GT(total.total_raw(), 0);
    // The caches hold exactly the analytic KV bytes (serving layout; with compressor state).
    EXPECT_TRUE(state.kv_counter(cfg).kv_differences(kv_cache_counter(cfg, T)).empty()) << name;
    KvOptions with_state;
    with_state.compressor_state = true;
    EXPECT_TRUE(state.kv_counter(cfg, with_state).kv_differences(kv_cache_counter(cfg, T, with_state)).empty())
        << name;
  }
}

// ---------------------------------------------------------------- errors

TEST(ModelErrors, BadInputGetsAClearError) {
  const Model m = open_tiny("tiny-flash");
  const ModelConfig& cfg = m.config();
  const std::vector<std::int64_t> none;
  expect_error<ShapeError>([&] { m.forward(none); }, {"empty sequence"});
  const std::vector<std::int64_t> big{1, 2, cfg.vocab_size};
  expect_error<ShapeError>([&] { m.forward(big); }, {"token id 1024", "position 2", "[0, 1024)"});
  const std::vector<std::int64_t> neg{-1};
  expect_error<ShapeError>([&] { m.forward(neg); }, {"token id -1", "position 0"});
  const std::vector<std::int64_t> too_long(static_cast<std::size_t>(cfg.max_position_embeddings + 1), 1);
  expect_error<ShapeError>([&] { m.forward(too_long); }, {"max_position_embeddings"});
  DecodeState state = m.start_state();
  state.position = cfg.max_position_embeddings;
  for (auto& c : state.layers) c.next_position = state.position;
  expect_error<ShapeError>([&] { m.decode_step(1, state); }, {"max_position_embeddings"});
  ForwardRequest r;
  r.last_layer = cfg.n_layers;
  expect_error<ShapeError>([&] { m.forward(big); }, {"token id"});
  const std::vector<std::int64_t> ok{1, 2, 3};
  expect_error<ConfigError>([&] { m.forward(ok, r); }, {"layer range", "outside"});
  expect_error<ConfigError>([&] { (void)parse_layer_range("2-9", cfg.n_layers); }, {"2-9", "out of range"});
  expect_error<ConfigError>([&] { (void)parse_layer_range("x", cfg.n_layers); }, {"not a number"});
  EXPECT_EQ(parse_layer_range("1-3", 5), (std::pair<std::int64_t, std::int64_t>{1, 3}));
  EXPECT_EQ(parse_layer_range("all", 5), (std::pair<std::int64_t, std::int64_t>{0, 4}));
  Trace empty_teacher;
  ForwardRequest tf;
  tf.teacher = &empty_teacher;
  expect_error<MissingTensor>([&] { m.forward(ok, tf); }, {"layers.0.block.in"});
  expect_error<ShapeError>([&] { m.mtp_forward(Mat::Zero(3, 7), ok); }, {"X_L", "[3, 512]"});
  expect_error<ConfigError>([&] { m.mtp_forward(Mat::Zero(3, cfg.hc_dim()), ok, 1); }, {"MTP block 1"});
}

TEST(ModelErrors, CheckpointMissingATensorOrContradictingTheConfig) {
  const Checkpoint src = Checkpoint::open(ckpt_dir("tiny-flash"));
  test::TempDir dir("model");
  SafetensorsWriter w;
  for (const std::string& n : src.names()) {
    if (n == "layers.2.attn.indexer.weights_proj.weight") continue;
    const TensorView t = src.tensor(n);
    w.add(n, t.dtype(), t.shape(), t.bytes());
  }
  w.write(dir.path() / "model.safetensors");
  std::filesystem::copy_file(ckpt_dir("tiny-flash") / "config.json", dir.path() / "config.json");
  const ModelConfig cfg = load_config(dir.path() / "config.json");
  expect_error<ConfigError>([&] { (void)Model::open(dir.path(), cfg); },
               {"does not match config", "layers.2.attn.indexer.weights_proj.weight"});
  // Without the layout check the first use of the layer names the tensor.
  ModelOptions lax;
  lax.check_layout = false;
  const Model m = Model::open(dir.path(), cfg, lax);
  const std::vector<std::int64_t> ok{1, 2, 3};
  expect_error<MissingTensor>([&] { m.forward(ok); }, {"layers.2.attn.indexer.weights_proj.weight"});
  // A config that contradicts the checkpoint (tiny-pro's on tiny-flash's weights).
  expect_error<ConfigError>([&] { (void)Model::open(ckpt_dir("tiny-flash"), load_config(ckpt_dir("tiny-pro") / "config.json")); },
               {"does not match config"});
}

}  // namespace
}  // namespace v4ref::ref
