// Resolving the config a command works with: --preset NAME, --config FILE, or the
// config.json inside a checkpoint directory.
#pragma once

#include <filesystem>
#include <string>

#include "v4ref/ref/core/config.hpp"

namespace v4ref::cli {

struct ConfigSource {
  std::string preset;            // --preset
  std::filesystem::path file;    // --config
  std::string describe;          // filled by resolve(): where the config came from
};

// Precedence: --preset, then --config, then <checkpoint>/config.json. ConfigError if none.
ModelConfig resolve_config(ConfigSource& src, const std::filesystem::path& checkpoint = {});

}  // namespace v4ref::cli
