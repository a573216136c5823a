// Score rows of the top-k kernel's tests (tests/simt/topk_simt_test.cpp, tests/gpu/topk_gpu_test.cpp)
// and the reference's selection of them (ref::select_topk, as the ascending set the kernel writes).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/indexer.hpp"

namespace v4ref::test {

struct TopkRows {
  std::int64_t stride = 0;
  std::vector<float> scores;          // [rows, stride]
  std::vector<std::int64_t> visible;  // [rows]
  std::vector<std::string> names;
  std::int64_t rows() const { return static_cast<std::int64_t>(visible.size()); }
  void add(const std::string& name, std::vector<float> row, std::int64_t vis) {
    row.resize(static_cast<std::size_t>(stride), 1e30f);  // beyond the visible prefix: never chosen
    scores.insert(scores.end(), row.begin(), row.end());
    visible.push_back(vis);
    names.push_back(name);
  }
};

// Rows of length 1300 (six tiles of 256, a partial one): the cases of the verification guide.
inline TopkRows adversarial_topk_rows() {
  TopkRows r;
  r.stride = 1300;
  Rng rng(derive_seed("topk_simt", "rows", "", 7));
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> v(1300);
  for (float& x : v) x = static_cast<float>(rng.normal());
  r.add("random", v, 1300);
  r.add("random_prefix_700", v, 700);
  r.add("fewer_visible_than_k", v, 37);
  r.add("nothing_visible", v, 0);
  std::vector<float> zeros(1300, 0.0f);
  for (std::size_t i = 0; i < zeros.size(); i += 3) zeros[i] = static_cast<float>(rng.normal());
  r.add("two_thirds_exact_zero_ties", zeros, 1300);  // ReLU'd heads: score 0 ties
  r.add("all_equal", std::vector<float>(1300, 0.75f), 1300);
  std::vector<float> signed_zero(1300);
  for (std::size_t i = 0; i < signed_zero.size(); ++i)
    signed_zero[i] = i % 2 == 0 ? -0.0f : (i % 5 == 0 ? 1.0f : 0.0f);
  r.add("signed_zeros_tie", signed_zero, 1300);
  std::vector<float> special = v;
  for (std::size_t i = 0; i < special.size(); i += 7) special[i] = nan;
  for (std::size_t i = 3; i < special.size(); i += 97) special[i] = inf;
  for (std::size_t i = 5; i < special.size(); i += 89) special[i] = -inf;
  r.add("nan_and_infinities", special, 1300);
  std::vector<float> magnitudes = v;
  for (std::size_t i = 0; i < magnitudes.size(); ++i)
    magnitudes[i] = std::ldexp(magnitudes[i], static_cast<int>(i % 250) - 125);
  r.add("huge_and_tiny", magnitudes, 1300);
  std::vector<float> mostly_nan(1300, nan);
  for (std::size_t i = 0; i < 20; ++i) mostly_nan[i * 61] = static_cast<float>(i);
  r.add("mostly_nan", mostly_nan, 1300);
  std::vector<float> tile_edges = v;
  for (std::size_t i = 255; i < tile_edges.size(); i += 256) tile_edges[i] = 50.0f;  // top at tile ends
  r.add("tops_at_tile_boundaries", tile_edges, 1300);
  return r;
}

inline std::vector<std::int32_t> topk_reference(const TopkRows& r, std::int64_t row, std::int64_t k) {
  std::vector<double> s(static_cast<std::size_t>(r.visible[static_cast<std::size_t>(row)]));
  for (std::size_t j = 0; j < s.size(); ++j)
    s[j] = static_cast<double>(r.scores[static_cast<std::size_t>(row * r.stride) + j]);
  std::vector<std::int32_t> want;
  for (const std::int64_t j : ref::select_topk(s, k)) want.push_back(static_cast<std::int32_t>(j));
  std::sort(want.begin(), want.end());
  want.resize(static_cast<std::size_t>(k), -1);
  return want;
}

// One decode row of 262,144 candidates (1M context) with ties across the cut at 2.5.
inline TopkRows one_million_context_row() {
  TopkRows r;
  r.stride = 262144;
  Rng rng(derive_seed("topk", "1m", "", 3));
  std::vector<float> row(262144);
  for (float& x : row) x = static_cast<float>(rng.normal());
  for (std::size_t i = 0; i < row.size(); i += 1000) row[i] = 2.5f;
  r.add("1m_decode", row, 262144);
  return r;
}

}  // namespace v4ref::test
