#include "config_source.hpp"

#include "v4ref/ref/config_json.hpp"

namespace v4ref::cli {

ModelConfig resolve_config(ConfigSource& src, const std::filesystem::path& checkpoint) {
  if (!src.preset.empty()) {
    src.describe = "preset " + src.preset;
    return preset_config(src.preset);
  }
  if (!src.file.empty()) {
    src.describe = src.file.string();
    return load_config(src.file);
  }
  if (!checkpoint.empty() && std::filesystem::exists(checkpoint / "config.json")) {
    src.describe = (checkpoint / "config.json").string();
    return load_config(checkpoint / "config.json");
  }
  throw ConfigError("no config: give --preset NAME or --config FILE" +
                    (checkpoint.empty() ? std::string()
                                        : " (and " + (checkpoint / "config.json").string() + " does not exist)"));
}

}  // namespace v4ref::cli
