// `v4ref inspect`: a checkpoint's config, tensors, dtypes, byte sizes and validation problems.
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.hpp"
#include "config_source.hpp"
#include "v4ref/ref/checkpoint_layout.hpp"
#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref::cli {
namespace {

struct InspectOptions {
  std::filesystem::path checkpoint;
  ConfigSource config;
  bool json = false;
  bool values = false;
  bool no_tensors = false;
  std::string filter;
};

std::string human_bytes(std::uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string layer_summary(const ModelConfig& cfg) {
  std::ostringstream os;
  for (std::int64_t i = 0; i < cfg.n_total_layers(); ++i) {
    const LayerConfig lc = layer_config(cfg, i);
    if (i) os << " | ";
    os << (lc.is_mtp ? "mtp." + std::to_string(i - cfg.n_layers) : std::to_string(i)) << " "
       << layer_kind_name(lc.kind) << (lc.hash_routed ? " hash" : "");
  }
  return os.str();
}

struct TensorRow {
  std::string name, dtype, shape, shard;
  std::uint64_t bytes = 0;
};

int run_inspect(InspectOptions& opt) {
  const Checkpoint ckpt = Checkpoint::open(opt.checkpoint);
  ckpt.open_all_shards();  // validates every shard header against the index
  std::vector<LayoutProblem> problems;
  ModelConfig cfg;
  bool have_config = true;
  try {
    cfg = resolve_config(opt.config, opt.checkpoint);
  } catch (const ConfigError& e) {
    have_config = false;
    problems.push_back({"config", e.what()});
  }
  if (have_config) {
    for (auto& p : check_layout(ckpt, cfg)) problems.push_back(std::move(p));
  }
  std::vector<TensorRow> rows;
  std::map<std::string, std::pair<std::int64_t, std::uint64_t>> by_dtype;
  std::uint64_t total = 0;
  for (const std::string& name : ckpt.names()) {
    const TensorView t = ckpt.tensor(name);
    const std::uint64_t bytes = t.info().nbytes();
    total += bytes;
    auto& agg = by_dtype[std::string(dtype_name(t.dtype()))];
    agg.first += 1;
    agg.second += bytes;
    if (!opt.filter.empty() && name.find(opt.filter) == std::string::npos) continue;
    rows.push_back({name, std::string(dtype_name(t.dtype())), shape_string(t.shape()), ckpt.shard_of(name), bytes});
    if (opt.values && !name.ends_with(".scale")) {
      try {
        (void)load_as_double(ckpt, name);
      } catch (const Error& e) {
        problems.push_back({name, e.what()});
      }
    }
  }

  if (opt.json) {
    nlohmann::ordered_json j;
    j["checkpoint"] = opt.checkpoint.string();
    j["shards"] = ckpt.shard_files();
    j["tensor_count"] = ckpt.names().size();
    j["total_bytes"] = total;
    if (have_config) {
      j["config"] = {{"name", cfg.name}, {"source", opt.config.describe},
                     {"expected_tensor_count", expected_tensor_count(cfg)}, {"layers", layer_summary(cfg)}};
    }
    auto& jd = j["by_dtype"];
    for (const auto& [dt, agg] : by_dtype) jd[dt] = {{"tensors", agg.first}, {"bytes", agg.second}};
    if (!opt.no_tensors) {
      auto& jt = j["tensors"];
      jt = nlohmann::ordered_json::array();
      for (const TensorRow& r : rows)
        jt.push_back({{"name", r.name}, {"dtype", r.dtype}, {"shape", ckpt.tensor(r.name).shape()},
                      {"bytes", r.bytes}, {"shard", r.shard}});
    }
    auto& jp = j["problems"];
    jp = nlohmann::ordered_json::array();
    for (const auto& p : problems) jp.push_back({{"tensor", p.tensor}, {"message", p.message}});
    j["valid"] = problems.empty();
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "checkpoint  " << opt.checkpoint.string() << "  (" << ckpt.shard_files().size()
              << " shards, " << ckpt.names().size() << " tensors, " << human_bytes(total) << ")\n";
    if (have_config) {
      std::cout << "config      " << cfg.name << " from " << opt.config.describe << ": d=" << cfg.dim
                << " layers=" << cfg.n_layers << "+" << cfg.n_mtp_layers << " MTP, heads=" << cfg.n_heads
                << "x" << cfg.head_dim << " (rope " << cfg.rope_head_dim << "), q_lora=" << cfg.q_lora_rank
                << ", o_groups=" << cfg.o_groups << "x" << cfg.o_lora_rank << ", window=" << cfg.window_size
                << ", experts=" << cfg.n_routed_experts << " top-" << cfg.n_activated_experts
                << " I=" << cfg.moe_inter_dim << ", vocab=" << cfg.vocab_size << "\n";
      std::cout << "layers      " << layer_summary(cfg) << "\n";
    }
    if (!opt.no_tensors) {
      std::cout << "\n" << std::left << std::setw(52) << "tensor" << std::setw(9) << "dtype" << std::setw(18)
                << "shape" << std::right << std::setw(12) << "bytes" << "  shard\n";
      for (const TensorRow& r : rows)
        std::cout << std::left << std::setw(52) << r.name << std::setw(9) << r.dtype << std::setw(18) << r.shape
                  << std::right << std::setw(12) << r.bytes << "  " << r.shard << "\n";
    }
    std::cout << "\nby dtype\n";
    for (const auto& [dt, agg] : by_dtype)
      std::cout << "  " << std::left << std::setw(9) << dt << std::right << std::setw(8) << agg.first
                << " tensors " << std::setw(12) << human_bytes(agg.second) << "\n";
    if (problems.empty()) {
      std::cout << "\nvalid: " << ckpt.names().size() << " tensors match the layout of config " << cfg.name
                << " (v4-forward.md §1.4, §15.4)" << (opt.values ? "; every value finite" : "") << "\n";
    } else {
      std::cout << "\n" << problems.size() << " problem(s):\n";
      for (const auto& p : problems) std::cout << "  " << p.tensor << ": " << p.message << "\n";
    }
  }
  return problems.empty() ? 0 : 2;
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto opt = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "List a checkpoint's config, tensors, dtypes and byte sizes, and validate it against the config");
  cmd->add_option("--checkpoint,checkpoint", opt->checkpoint, "checkpoint directory (index + shards)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--preset", opt->config.preset, "validate against a built-in config");
  cmd->add_option("--config", opt->config.file, "validate against this config.json")->check(CLI::ExistingFile);
  cmd->add_flag("--json", opt->json, "machine-readable output");
  cmd->add_flag("--values", opt->values, "decode every tensor and reject NaN/Inf (slow on real checkpoints)");
  cmd->add_flag("--no-tensors", opt->no_tensors, "omit the per-tensor table");
  cmd->add_option("--filter", opt->filter, "list only tensors whose name contains this text");
  cmd->callback([opt] { exit_code() = run_inspect(*opt); });
}

}  // namespace v4ref::cli
