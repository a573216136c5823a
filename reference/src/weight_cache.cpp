// Bounded LRU of dequantised weights (weight_cache.hpp).
#include "v4ref/ref/weight_cache.hpp"

#include <utility>

#include "v4ref/ref/core/error.hpp"

namespace v4ref::ref {

WeightCache::WeightCache(std::int64_t budget_bytes) : budget_(budget_bytes) {
  if (budget_bytes < 0)
    throw ConfigError("weight cache: budget must be >= 0 bytes, got " + std::to_string(budget_bytes));
}

WeightCache::Stats WeightCache::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::shared_ptr<const void> WeightCache::find_locked(const std::string& key) {
  const auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);  // now most recently used
  ++stats_.hits;
  return it->second->object;
}

void WeightCache::insert_locked(const std::string& key, std::shared_ptr<const void> object,
                                std::int64_t bytes) {
  ++stats_.misses;
  if (bytes > budget_) {
    ++stats_.not_kept;
    return;
  }
  while (stats_.bytes + bytes > budget_) {
    const Entry& victim = lru_.back();
    stats_.bytes -= victim.bytes;
    index_.erase(victim.key);
    lru_.pop_back();
    ++stats_.evictions;
  }
  lru_.push_front(Entry{key, std::move(object), bytes});
  index_[key] = lru_.begin();
  stats_.bytes += bytes;
  stats_.entries = static_cast<std::int64_t>(lru_.size());
}

}  // namespace v4ref::ref
