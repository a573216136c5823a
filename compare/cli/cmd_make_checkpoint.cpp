// `v4ref make-checkpoint`: a synthetic checkpoint in the official layout for any config.
#include <iostream>

#include "commands.hpp"
#include "config_source.hpp"
#include "v4ref/ref/checkpoint_gen.hpp"
#include "v4ref/ref/config_json.hpp"

namespace v4ref::cli {
namespace {

struct MakeOptions {
  ConfigSource config;
  std::filesystem::path out;
  std::uint64_t seed = 0;
  std::uint64_t shard_bytes = 1ull << 20;
  std::int64_t n_layers = -1;
};

}  // namespace

void register_make_checkpoint(CLI::App& app) {
  auto opt = std::make_shared<MakeOptions>();
  CLI::App* cmd = app.add_subcommand("make-checkpoint",
                                     "Write a synthetic checkpoint in the official V4 layout (safetensors shards + index + config.json)");
  cmd->add_option("--preset", opt->config.preset, "built-in config (v4-flash, v4-pro, tiny-flash, ...)");
  cmd->add_option("--config", opt->config.file, "config.json to generate for")->check(CLI::ExistingFile);
  cmd->add_option("--out", opt->out, "output directory")->required();
  cmd->add_option("--seed", opt->seed, "seed of the weight generator")->capture_default_str();
  cmd->add_option("--shard-bytes", opt->shard_bytes, "start a new shard after this many bytes")->capture_default_str();
  cmd->add_option("--n-layers", opt->n_layers, "keep only the first N main layers (plus MTP)");
  cmd->callback([opt] {
    ModelConfig cfg = resolve_config(opt->config);
    if (opt->n_layers >= 0) cfg = first_layers(cfg, opt->n_layers);
    CheckpointGenOptions gen;
    gen.seed = opt->seed;
    gen.shard_bytes = opt->shard_bytes;
    const auto files = make_checkpoint(cfg, opt->out, gen);
    std::cout << "wrote " << opt->out.string() << ": config " << cfg.name << ", seed " << opt->seed << ", "
              << files.size() << " shard(s)\n";
  });
}

}  // namespace v4ref::cli
