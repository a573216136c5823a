// The reference forward on a full-width V4-Flash checkpoint of one layer (label slow): the
// layer-by-layer path a user with the real weights takes. The checkpoint is generated once
// (`make_checkpoint`, ~9 GB: embed, head, layer 0 with 256 fp4 experts, the MTP block) into
// V4REF_FLASH_1L_DIR if set, else the build tree, and reused while its config matches.
// Checks: the layout check passes, weights stay in stored form (routed experts dequantised on
// demand, one at a time), logits finite and not saturated, the trace holds every point of the
// layer, decode from a split point equals prefill, MTP runs.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "v4ref/ref/checkpoint_gen.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/model.hpp"

namespace v4ref::ref {
namespace {

std::filesystem::path flash_one_layer() {
  const char* env = std::getenv("V4REF_FLASH_1L_DIR");
  const std::filesystem::path dir = env != nullptr ? std::filesystem::path(env)
                                                   : std::filesystem::path(V4REF_BINARY_DIR) / "flash-1L-s0";
  const ModelConfig cfg = first_layers(preset_config("v4-flash"), 1);
  const std::filesystem::path stamp = dir / "v4ref-generated.txt";
  if (std::filesystem::exists(stamp) && std::filesystem::exists(dir / "config.json") &&
      load_config(dir / "config.json").name == cfg.name)
    return dir;
  CheckpointGenOptions gen;
  gen.seed = 0;
  gen.shard_bytes = 1ull << 30;
  std::printf("generating %s into %s (once)\n", cfg.name.c_str(), dir.string().c_str());
  make_checkpoint(cfg, dir, gen);
  std::ofstream(stamp) << cfg.name << " seed 0\n";
  return dir;
}

TEST(ModelFlashSlow, OneFullWidthLayerPrefillDecodeMtpAndTrace) {
  const std::filesystem::path dir = flash_one_layer();
  const ModelConfig cfg = load_config(dir / "config.json");
  ASSERT_EQ(cfg.dim, 4096);
  ASSERT_EQ(cfg.n_routed_experts, 256);
  const Model m = Model::open(dir, cfg);  // layout check: every name, dtype and shape
  Rng rng(3);
  std::vector<std::int64_t> ids(12);
  for (auto& id : ids) id = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(cfg.vocab_size)));

  Trace trace({"layers.0.*", "logits"});
  const ForwardResult r = m.forward(ids, {}, &trace);
  ASSERT_EQ(r.logits.rows(), 12);
  ASSERT_EQ(r.logits.cols(), cfg.vocab_size);
  EXPECT_TRUE(r.logits.allFinite());
  const double amax = r.logits.cwiseAbs().maxCoeff();
  EXPECT_GT(amax, 1e-2);
  EXPECT_LT(amax, 1e3);
  std::printf("V4-Flash 1 layer, T = 12: max |logit| %.4g\n", amax);
  for (const std::string& k : trace_names::block_keys()) {
    if (trace_names::block_records(LayerKind::kSwa, k)) {
      EXPECT_TRUE(trace.has("layers.0." + k)) << k;
    }
  }

  DecodeState state;
  m.prefill_with_state(std::span(ids).first(8), state);
  for (std::int64_t t = 8; t < 12; ++t) {
    const Mat row = m.decode_step(ids[static_cast<std::size_t>(t)], state);
    const double rel = (row.row(0) - r.logits.row(t)).cwiseAbs().maxCoeff() / r.logits.row(t).cwiseAbs().maxCoeff();
    EXPECT_LE(rel, 1e-12) << "position " << t;
  }
  const std::vector<std::int64_t> next(ids.begin() + 1, ids.end());
  const Mat mtp = m.mtp_forward(r.streams.topRows(11), next);
  EXPECT_TRUE(mtp.allFinite());
}

}  // namespace
}  // namespace v4ref::ref
