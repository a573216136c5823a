// The bounded LRU of dequantised weights (weight_cache.hpp) and its use by the Model:
//   * least-recently-used eviction within the byte budget, objects larger than the budget
//     returned but not kept, a failing load inserts nothing, a negative budget is an error;
//   * decode with the cache is bitwise the decode without it (a large budget and one that
//     holds about one layer), reuses layers and experts across steps, and never holds more
//     than its budget.
#include "v4ref/ref/weight_cache.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/model.hpp"
#include "../common/test_support.hpp"

namespace v4ref::ref {
namespace {

using test::expect_error;

// An object of a stated size whose loads are counted.
struct Blob {
  std::string name;
  std::int64_t bytes = 0;
};

struct Loader {
  std::vector<std::string> loads;
  std::shared_ptr<const Blob> get(WeightCache& cache, const std::string& key, std::int64_t bytes) {
    return cache.get_or_load<Blob>(
        key,
        [&] {
          loads.push_back(key);
          return Blob{key, bytes};
        },
        [](const Blob& b) { return b.bytes; });
  }
};

TEST(WeightCache, EvictsTheLeastRecentlyUsedEntryToStayWithinBudget) {
  WeightCache cache(100);
  Loader l;
  l.get(cache, "a", 40);
  l.get(cache, "b", 40);
  EXPECT_EQ(l.get(cache, "a", 40)->name, "a");  // hit: a becomes most recently used
  l.get(cache, "c", 40);                         // 120 > 100: b (least recent) goes, not a
  EXPECT_EQ(l.loads, (std::vector<std::string>{"a", "b", "c"}));
  l.get(cache, "a", 40);  // still cached
  EXPECT_EQ(l.loads.size(), 3u);
  l.get(cache, "b", 40);  // evicted earlier: loaded again, and now c is the least recent
  EXPECT_EQ(l.loads.back(), "b");
  l.get(cache, "c", 40);
  EXPECT_EQ(l.loads.back(), "c");
  const WeightCache::Stats s = cache.stats();
  EXPECT_EQ(s.hits, 2);
  EXPECT_EQ(s.misses, 5);
  EXPECT_EQ(s.evictions, 3);
  EXPECT_EQ(s.entries, 2);
  EXPECT_EQ(s.bytes, 80);
}

TEST(WeightCache, ObjectsLargerThanTheBudgetAreReturnedButNotKept) {
  WeightCache cache(100);
  Loader l;
  l.get(cache, "small", 60);
  const auto big = l.get(cache, "big", 101);
  EXPECT_EQ(big->bytes, 101);
  l.get(cache, "big", 101);
  EXPECT_EQ(l.loads, (std::vector<std::string>{"small", "big", "big"}));
  l.get(cache, "small", 60);  // the oversized object did not push it out
  EXPECT_EQ(l.loads.size(), 3u);
  EXPECT_EQ(cache.stats().not_kept, 2);
  EXPECT_EQ(cache.stats().bytes, 60);
}

TEST(WeightCache, AFailingLoadInsertsNothing) {
  WeightCache cache(100);
  const std::function<Blob()> fail = []() -> Blob { throw std::runtime_error("truncated file"); };
  const std::function<std::int64_t(const Blob&)> size = [](const Blob& b) { return b.bytes; };
  EXPECT_THROW(cache.get_or_load<Blob>("x", fail, size), std::runtime_error);
  EXPECT_EQ(cache.stats().entries, 0);
  Loader l;
  l.get(cache, "x", 10);
  EXPECT_EQ(l.loads.size(), 1u);
}

TEST(WeightCache, ZeroBudgetKeepsNothingAndNegativeBudgetIsAnError) {
  WeightCache cache(0);
  Loader l;
  l.get(cache, "a", 1);
  l.get(cache, "a", 1);
  EXPECT_EQ(l.loads.size(), 2u);
  expect_error<ConfigError>([] { WeightCache bad(-1); }, {"weight cache", "-1"});
}

// ---- the Model with a cache (tiny-flash: every layer kind, bias and hash routing)

std::filesystem::path ckpt_dir(const std::string& name) {
  return std::filesystem::path(V4REF_SOURCE_DIR) / "golden" / "checkpoints" / (name + "-s0");
}

Model open_tiny(const std::string& name, std::int64_t cache_bytes) {
  ModelOptions o;
  o.weight_cache_bytes = cache_bytes;
  return Model::open(ckpt_dir(name), load_config(ckpt_dir(name) / "config.json"), o);
}

Mat decode_all(const Model& m, const std::vector<std::int64_t>& ids) {
  DecodeState state = m.start_state();
  Mat out(static_cast<Eigen::Index>(ids.size()), m.config().vocab_size);
  for (std::size_t t = 0; t < ids.size(); ++t)
    out.row(static_cast<Eigen::Index>(t)) = m.decode_step(ids[t], state).row(0);
  return out;
}

bool bitwise_equal(const Mat& a, const Mat& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Eigen::Index i = 0; i < a.size(); ++i)
    if (std::bit_cast<std::uint64_t>(a.data()[i]) != std::bit_cast<std::uint64_t>(b.data()[i])) return false;
  return true;
}

std::vector<std::int64_t> tokens(const ModelConfig& cfg, std::int64_t n) {
  Rng rng(derive_seed("weight_cache", "tokens", cfg.name));
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(cfg.vocab_size)));
  return ids;
}

TEST(ModelWeightCache, DecodeIsBitwiseTheSameAndReusesLayersAndExperts) {
  const Model plain = open_tiny("tiny-flash", 0);
  EXPECT_EQ(plain.weight_cache(), nullptr);
  const std::vector<std::int64_t> ids = tokens(plain.config(), 12);
  const Mat want = decode_all(plain, ids);

  const Model cached = open_tiny("tiny-flash", std::int64_t{1} << 32);
  ASSERT_NE(cached.weight_cache(), nullptr);
  EXPECT_TRUE(bitwise_equal(decode_all(cached, ids), want));
  const WeightCache::Stats s = cached.weight_cache()->stats();
  const ModelConfig& cfg = cached.config();
  // Every layer loaded once; every routed expert at most once per layer; nothing evicted.
  EXPECT_EQ(s.evictions, 0);
  EXPECT_EQ(s.not_kept, 0);
  EXPECT_LE(s.misses, cfg.n_layers * (1 + cfg.n_routed_experts));
  EXPECT_GE(s.misses, cfg.n_layers);
  // 12 steps × n_layers layer requests, all but the first per layer hits.
  EXPECT_GE(s.hits, 11 * cfg.n_layers);
  EXPECT_EQ(s.entries, s.misses);
  EXPECT_LE(s.bytes, cached.weight_cache()->budget_bytes());
}

TEST(ModelWeightCache, ABudgetOfAboutOneLayerEvictsAndStaysExact) {
  const Model plain = open_tiny("tiny-flash", 0);
  const std::vector<std::int64_t> ids = tokens(plain.config(), 6);
  const Mat want = decode_all(plain, ids);
  const std::int64_t one_layer = resident_bytes(*plain.layer_weights(0));
  ASSERT_GT(one_layer, 0);

  const Model small = open_tiny("tiny-flash", one_layer + one_layer / 2);
  EXPECT_TRUE(bitwise_equal(decode_all(small, ids), want));
  const WeightCache::Stats s = small.weight_cache()->stats();
  EXPECT_GT(s.evictions, 0);
  EXPECT_LE(s.bytes, small.weight_cache()->budget_bytes());
}

TEST(ModelWeightCache, NegativeBudgetIsAConfigError) {
  expect_error<ConfigError>([] { open_tiny("tiny-flash", -5); }, {"weight_cache_bytes", "-5"});
}

}  // namespace
}  // namespace v4ref::ref
