// The committed tiny checkpoints (golden/checkpoints/) match their manifest, load through the
// sharded reader, satisfy their config's layout, and are reproduced bit for bit by the
// generator from (preset, seed): the loader reads them back exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "v4ref/ref/checkpoint_gen.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/sha256.hpp"

namespace v4ref {
namespace {

const std::filesystem::path kGolden = std::filesystem::path(V4REF_SOURCE_DIR) / "golden";

std::vector<std::filesystem::path> committed_checkpoints() {
  std::vector<std::filesystem::path> dirs;
  for (const auto& e : std::filesystem::directory_iterator(kGolden / "checkpoints"))
    if (e.is_directory()) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

TEST(GoldenManifest, EveryListedFileMatchesItsChecksumAndEveryDataFileIsListed) {
  std::ifstream in(kGolden / "MANIFEST.sha256");
  ASSERT_TRUE(in) << "golden/MANIFEST.sha256 missing";
  std::set<std::string> listed;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string digest, path;
    ls >> digest >> path;
    ASSERT_EQ(digest.size(), 64u) << line;
    EXPECT_EQ(sha256_file(kGolden / path), digest) << path;
    listed.insert(path);
    ++n;
  }
  EXPECT_GT(n, 0);
  for (const auto& e : std::filesystem::recursive_directory_iterator(kGolden / "checkpoints")) {
    if (!e.is_regular_file()) continue;
    const std::string rel = std::filesystem::relative(e.path(), kGolden).string();
    EXPECT_TRUE(listed.contains(rel)) << rel << " is not in golden/MANIFEST.sha256 (run golden/write-manifest)";
  }
}

TEST(GoldenCheckpoints, AtLeastThreeConfigsAreBundled) {
  std::set<std::string> presets;
  for (const auto& dir : committed_checkpoints()) {
    const std::string name = dir.filename().string();
    presets.insert(name.substr(0, name.rfind("-s")));
  }
  EXPECT_TRUE(presets.contains("tiny-flash"));
  EXPECT_TRUE(presets.contains("tiny-pro"));
  EXPECT_TRUE(presets.contains("tiny-long"));
}

TEST(GoldenCheckpoints, LoadBackBitExactlyAndMatchTheirConfig) {
  for (const auto& dir : committed_checkpoints()) {
    SCOPED_TRACE(dir.string());
    const std::string name = dir.filename().string();
    const std::string preset = name.substr(0, name.rfind("-s"));
    const std::uint64_t seed = std::stoull(name.substr(name.rfind("-s") + 2));
    const ModelConfig cfg = preset_config(preset);
    EXPECT_EQ(load_config(dir / "config.json"), cfg);
    const Checkpoint ckpt = Checkpoint::open(dir);
    ckpt.open_all_shards();
    const auto problems = check_layout(ckpt, cfg);
    for (const auto& p : problems) ADD_FAILURE() << p.tensor << ": " << p.message;
    for (const TensorSpec& spec : expected_tensors(cfg)) {
      const TensorView t = ckpt.tensor(spec.name);
      const std::vector<std::byte> expected = generate_tensor_bytes(cfg, spec, seed);
      ASSERT_EQ(t.bytes().size(), expected.size()) << spec.name;
      ASSERT_TRUE(std::equal(expected.begin(), expected.end(), t.bytes().begin())) << spec.name;
    }
  }
}

}  // namespace
}  // namespace v4ref
