// A bounded least-recently-used cache of dequantised weights (layers without their routed
// experts, and routed experts one by one), so that decoding a real-size checkpoint does not
// dequantise the same tensors again at every step while memory stays within a stated budget.
//
// Budget: the bytes the cached objects hold in double (the caller says how many each object
// holds). An object larger than the whole budget is returned but not kept. Inserting evicts the
// least recently used entries until the new one fits; an evicted object stays alive for as long
// as a caller still holds it (shared_ptr), so the resident total can exceed the budget by what
// the running computation holds — at most one layer's working set, as without a cache.
//
// Thread-safe: one mutex; a miss loads under the lock (loads are sequential in this codebase and
// two threads asking for one key must not both dequantise it).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace v4ref::ref {

class WeightCache {
 public:
  struct Stats {
    std::int64_t hits = 0;
    std::int64_t misses = 0;     // loads performed
    std::int64_t evictions = 0;  // entries dropped to make room
    std::int64_t not_kept = 0;   // loaded objects larger than the whole budget
    std::int64_t entries = 0;    // entries held now
    std::int64_t bytes = 0;      // bytes held now (<= budget)
  };

  // ConfigError for a negative budget.
  explicit WeightCache(std::int64_t budget_bytes);

  std::int64_t budget_bytes() const { return budget_; }
  Stats stats() const;

  // The object under `key`: the cached one (now most recently used), or load() — kept when
  // bytes_of(object) fits the budget. Exceptions from load() propagate; nothing is inserted.
  template <class T>
  std::shared_ptr<const T> get_or_load(const std::string& key, const std::function<T()>& load,
                                       const std::function<std::int64_t(const T&)>& bytes_of) {
    std::lock_guard lock(mu_);
    if (std::shared_ptr<const void> hit = find_locked(key)) return std::static_pointer_cast<const T>(hit);
    auto obj = std::make_shared<const T>(load());
    insert_locked(key, obj, bytes_of(*obj));
    return obj;
  }

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const void> object;
    std::int64_t bytes = 0;
  };
  std::shared_ptr<const void> find_locked(const std::string& key);
  void insert_locked(const std::string& key, std::shared_ptr<const void> object, std::int64_t bytes);

  std::int64_t budget_ = 0;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // front: most recently used
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  Stats stats_;
};

}  // namespace v4ref::ref
