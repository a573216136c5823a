// The v4ref command-line tool, run as a user runs it.
#include <unistd.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "../common/test_support.hpp"
#include "v4ref/ref/checkpoint_layout.hpp"
#include "v4ref/ref/config_json.hpp"

namespace v4ref {
namespace {

const std::string kTool = std::string(V4REF_BINARY_DIR) + "/bin/v4ref";
const std::filesystem::path kTinyFlash = std::filesystem::path(V4REF_SOURCE_DIR) / "golden/checkpoints/tiny-flash-s0";

using RunResult = test::CommandResult;

RunResult run(const std::string& args) { return test::run_command(kTool + " " + args); }

std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("v4ref_cli_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p;
}

TEST(CliInspect, ListsEveryTensorWithItsDtypeAndShape) {
  const RunResult r = run("inspect " + kTinyFlash.string());
  ASSERT_EQ(r.status, 0) << r.out;
  const ModelConfig cfg = preset_config("tiny-flash");
  for (const TensorSpec& spec : expected_tensors(cfg)) {
    const std::string dtype(dtype_name(spec.dtype));
    const std::string shape = shape_string(spec.shape);
    bool found = false;
    std::size_t pos = 0;
    while ((pos = r.out.find(spec.name + " ", pos)) != std::string::npos) {
      const std::size_t eol = r.out.find('\n', pos);
      const std::string line = r.out.substr(pos, eol - pos);
      if (line.find(" " + dtype + " ") != std::string::npos && line.find(shape) != std::string::npos) found = true;
      pos = eol;
    }
    EXPECT_TRUE(found) << spec.name << " " << dtype << " " << shape << " not listed";
  }
  EXPECT_NE(r.out.find("valid:"), std::string::npos) << r.out;
}

TEST(CliInspect, JsonAgreesWithTheLayout) {
  const RunResult r = run("inspect " + kTinyFlash.string() + " --json --values");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  const ModelConfig cfg = preset_config("tiny-flash");
  EXPECT_TRUE(j["valid"].get<bool>());
  EXPECT_EQ(j["tensor_count"].get<std::int64_t>(), expected_tensor_count(cfg));
  EXPECT_EQ(j["tensors"].size(), static_cast<std::size_t>(expected_tensor_count(cfg)));
  std::uint64_t sum = 0;
  for (const auto& t : j["tensors"]) sum += t["bytes"].get<std::uint64_t>();
  EXPECT_EQ(sum, j["total_bytes"].get<std::uint64_t>());
}

TEST(CliInspect, ReportsLayoutProblemsAndExitsNonZero) {
  // The tiny-flash checkpoint checked against the tiny-pro config: wrong layer kinds and shapes.
  const RunResult r = run("inspect " + kTinyFlash.string() + " --preset tiny-pro --no-tensors");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("problem"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("missing"), std::string::npos) << r.out;
}

TEST(CliInspect, BadInputGetsAClearError) {
  RunResult r = run("inspect /nonexistent/checkpoint");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("/nonexistent/checkpoint"), std::string::npos) << r.out;

  // A truncated shard: the error names the file.
  const auto dir = temp_dir("truncated");
  std::filesystem::copy(kTinyFlash, dir, std::filesystem::copy_options::recursive);
  std::filesystem::path shard;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().starts_with("model-00001-of-")) shard = e.path();
  ASSERT_FALSE(shard.empty()) << "no first shard in " << dir;
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) - 100);
  r = run("inspect " + dir.string());
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find(shard.filename().string()), std::string::npos) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(CliMakeCheckpoint, WritesACheckpointThatInspectAccepts) {
  const auto dir = temp_dir("make");
  RunResult r = run("make-checkpoint --preset tiny-long --seed 5 --out " + dir.string());
  ASSERT_EQ(r.status, 0) << r.out;
  r = run("inspect " + dir.string() + " --no-tensors");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("tiny-long"), std::string::npos) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(CliMakeCheckpoint, UnknownPresetListsTheKnownOnes) {
  const RunResult r = run("make-checkpoint --preset tiny-nope --out /tmp/v4ref_cli_never");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("tiny-flash"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists("/tmp/v4ref_cli_never"));
}

TEST(CliConfig, PrintsPresetsAndDerivedSizes) {
  RunResult r = run("config --list");
  ASSERT_EQ(r.status, 0) << r.out;
  for (const std::string& name : preset_names()) EXPECT_NE(r.out.find(name), std::string::npos) << name;
  r = run("config --preset v4-flash");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["hidden_size"].get<int>(), 4096);
  EXPECT_EQ(j["_v4ref_derived"]["tensor_count"].get<int>(), 69187);
}

}  // namespace
}  // namespace v4ref
