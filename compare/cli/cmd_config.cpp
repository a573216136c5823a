// `v4ref config`: print a built-in or file config as HF config.json, with derived sizes.
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "config_source.hpp"
#include "v4ref/ref/checkpoint_layout.hpp"
#include "v4ref/ref/config_json.hpp"

namespace v4ref::cli {

void register_config(CLI::App& app) {
  auto src = std::make_shared<ConfigSource>();
  auto list = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("config", "Print a config (HF config.json form) or list the presets");
  cmd->add_option("--preset", src->preset, "built-in config");
  cmd->add_option("--config", src->file, "config.json to read and validate")->check(CLI::ExistingFile);
  cmd->add_flag("--list", *list, "list the built-in presets");
  cmd->callback([src, list] {
    if (*list) {
      for (const std::string& name : preset_names()) std::cout << name << "\n";
      return;
    }
    const ModelConfig cfg = resolve_config(*src);
    nlohmann::ordered_json j = to_hf_config_json(cfg);
    if (cfg.arch == Arch::kDeepseekV4)
      j["_v4ref_derived"] = {{"hc_dim", cfg.hc_dim()},          {"hc_mix_dim", cfg.hc_mix_dim()},
                             {"q_dim", cfg.q_dim()},            {"group_in_dim", cfg.group_in_dim()},
                             {"o_dim", cfg.o_dim()},            {"index_q_dim", cfg.index_q_dim()},
                             {"tensor_count", expected_tensor_count(cfg)}};
    std::cout << j.dump(2) << "\n";
  });
}

}  // namespace v4ref::cli
