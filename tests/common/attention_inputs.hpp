// The attention kernel's inputs (cuda/src/attention_kernels.cuh) as host arrays: cache rows
// encoded from values, one owning problem (AttentionData), shuffled page tables. Shared by the
// tests (tests/common/attention_implementation.hpp) and bench/attention_bench.cu (core headers
// only: no Eigen, no compare/).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "v4ref/cuda/attention_tile.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::test {

// One cache row from D values: nope dims in blocks of 64 as e4m3 codes × one power of two, rope
// dims as bf16. ShapeError naming `what` when a value is not of that form.
inline void encode_cache_row(const double* v, int D, std::uint8_t* row, const std::string& what) {
  namespace attn = cuda::attn;
  std::memset(row, 0, static_cast<std::size_t>(attn::row_bytes(D)));
  for (int b = 0; b < attn::scale_count(D); ++b) {
    double amax = 0;
    for (int k = 64 * b; k < 64 * b + 64; ++k) amax = std::max(amax, std::abs(v[k]));
    int e = amax == 0 ? 0 : static_cast<int>(std::ceil(std::log2(amax / 448.0)));
    bool found = false;
    for (int tries = 0; tries < 4 && !found; ++tries, ++e) {
      found = e >= -127 && e <= 127;
      for (int k = 64 * b; k < 64 * b + 64 && found; ++k) {
        const double x = std::ldexp(v[k], -e);
        found = fmt::e4m3_to_double(fmt::e4m3_encode(x)) == x;
      }
      if (found) {
        row[attn::scale_offset(D) + b] = static_cast<std::uint8_t>(e + 127);
        for (int k = 64 * b; k < 64 * b + 64; ++k) row[k] = fmt::e4m3_encode(std::ldexp(v[k], -e));
      }
    }
    if (!found)
      throw ShapeError(what + ": dims " + std::to_string(64 * b) + ".." + std::to_string(64 * b + 63) +
                       " are not e4m3 codes times one power of two (not Q8(.;64)-valued)");
  }
  for (int k = attn::nope_dims(D); k < D; ++k) {
    const std::uint16_t h = fmt::bf16_encode(v[k]);
    if (fmt::bf16_to_double(h) != v[k]) throw ShapeError(what + ": rope dim " + std::to_string(k) + " is not bf16-valued");
    std::memcpy(row + attn::nope_dims(D) + 2 * (k - attn::nope_dims(D)), &h, 2);
  }
}

// A problem's arrays (owning): one request unless built otherwise.
struct AttentionData {
  cuda::attn::Kind kind = cuda::attn::Kind::kCsa;
  int D = 512, H = 64;
  std::int64_t requests = 1;
  std::vector<std::uint16_t> q;
  std::vector<float> sink;
  std::vector<std::int32_t> pos, request, window_table, cmp_table, selected;
  std::vector<std::uint8_t> window_cache, cmp_cache;
  std::int32_t window_pages = 0, cmp_pages = 0, top_k = 0;

  std::int64_t rows() const { return static_cast<std::int64_t>(pos.size()); }
  cuda::attn::AttentionProblem problem() const {
    namespace attn = cuda::attn;
    attn::AttentionProblem p;
    p.kind = kind;
    p.head_dim = D;
    p.heads = H;
    p.rows = rows();
    p.requests = requests;
    p.q = q.data();
    p.sink = sink.data();
    p.pos = pos.data();
    p.request = request.data();
    p.window_cache = window_cache.data();
    p.window_num_pages = static_cast<std::int64_t>(window_cache.size()) / (attn::kPageRows * attn::row_bytes(D));
    p.window_table = window_table.data();
    p.window_pages = window_pages;
    p.cmp_cache = cmp_cache.empty() ? nullptr : cmp_cache.data();
    p.cmp_num_pages = static_cast<std::int64_t>(cmp_cache.size()) / (attn::kPageRows * attn::row_bytes(D));
    p.cmp_table = cmp_table.empty() ? nullptr : cmp_table.data();
    p.cmp_pages = cmp_pages;
    p.selected = selected.empty() ? nullptr : selected.data();
    p.top_k = top_k;
    return p;
  }
};

// Shuffled physical pages: `logical` pages per request and one spare per request, every row of
// the cache NaN-coded (0xFF) until written.
inline std::vector<std::int32_t> shuffled_pages(std::int64_t requests, std::int32_t logical, std::uint64_t seed) {
  std::vector<std::int32_t> perm(static_cast<std::size_t>(requests * (logical + 1)));
  std::iota(perm.begin(), perm.end(), 0);
  Rng rng(seed);
  for (std::size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng.below(i)]);
  perm.resize(static_cast<std::size_t>(requests * logical));
  return perm;
}

}  // namespace v4ref::test
