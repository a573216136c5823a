// Inputs of the indexer's logits kernel (cuda/include/v4ref/cuda/indexer_tile.hpp) for the SIMT
// tests, the runner adapter and the gpu tests: Q4 query rows, head weights, a paged cache of Q4
// or FP8 key rows with a shuffled (non-contiguous) page table, and the exact logits in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "v4ref/cuda/indexer_tile.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::test {

namespace idx = cuda::idx;

// How the codes are drawn (verification.md §7 adversarial inputs).
enum class IndexerInputs {
  kRandom,          // uniform codes, scales 2^-3 .. 2^3
  kAllNegative,     // every head logit <= 0: every score is exactly 0 (the tie rule alone decides)
  kEqualKeys,       // every key row identical: all-equal score rows
  kHugeTiny,        // query scales 2^40 .. 2^44 and key scales 2^-60 .. 2^-56 (fp32 range kept)
  kSaturated,       // every code ±6 (the FP4 saturation edge), scales 2^0
};

struct IndexerData {
  idx::KeyFormat format = idx::KeyFormat::kFp4;
  int heads = 4;
  std::int64_t requests = 1, max_pages = 1, num_pages = 1, stride = 1;
  std::vector<std::uint8_t> q;         // [R, H, 68]
  std::vector<float> w;                // [R, H]
  std::vector<std::int32_t> pos, request;
  std::vector<std::int32_t> page_table;  // [B, max_pages]
  std::vector<std::uint8_t> cache;     // [num_pages, 64, row_bytes]

  std::int64_t rows() const { return static_cast<std::int64_t>(pos.size()); }
  idx::LogitsProblem problem() const {
    idx::LogitsProblem p;
    p.format = format;
    p.heads = heads;
    p.rows = rows();
    p.q = q.data();
    p.w = w.data();
    p.pos = pos.data();
    p.request = request.data();
    p.requests = requests;
    p.page_table = page_table.data();
    p.max_pages = max_pages;
    p.cache = cache.data();
    p.num_pages = num_pages;
    p.stride = stride;
    return p;
  }
  // Row j of request b's logical sequence in the cache.
  const std::uint8_t* key_row(std::int32_t b, std::int64_t j) const {
    const std::int64_t phys = page_table[static_cast<std::size_t>(b * max_pages + j / idx::kPageRows)];
    return cache.data() + (phys * idx::kPageRows + j % idx::kPageRows) * idx::row_bytes(format);
  }
  std::uint8_t* key_row(std::int32_t b, std::int64_t j) {
    return const_cast<std::uint8_t*>(static_cast<const IndexerData&>(*this).key_row(b, j));
  }
};

inline std::uint8_t random_e4m3(Rng& rng) {
  for (;;) {
    const auto c = static_cast<std::uint8_t>(rng.uniform() * 256.0);
    if ((c & 0x7F) != 0x7F) return c;  // not NaN
  }
}

// One Q4 row: random codes (or all ±6), scales 2^(e_lo .. e_hi).
inline void q4_row(Rng& rng, std::uint8_t* row, int e_lo, int e_hi, bool saturated, bool nonneg) {
  for (int b = 0; b < 64; ++b) {
    std::uint8_t lo = static_cast<std::uint8_t>(rng.uniform() * 16.0) & 0xF;
    std::uint8_t hi = static_cast<std::uint8_t>(rng.uniform() * 16.0) & 0xF;
    if (saturated) {
      lo = static_cast<std::uint8_t>(7 | (rng.uniform() < 0.5 ? 8 : 0));
      hi = static_cast<std::uint8_t>(7 | (rng.uniform() < 0.5 ? 8 : 0));
    }
    if (nonneg) {
      lo &= 7;
      hi &= 7;
    }
    row[b] = static_cast<std::uint8_t>(lo | (hi << 4));
  }
  for (int k = 0; k < 4; ++k)
    row[64 + k] = static_cast<std::uint8_t>(127 + e_lo + static_cast<int>(rng.uniform() * (e_hi - e_lo + 1)));
}

// A problem: `rows_per_request` query rows per request at positions starting at `first_pos[b]`
// (consecutive), keys for every visible entry, pages shuffled over a cache with spare pages.
inline IndexerData make_indexer_data(idx::KeyFormat format, int heads,
                                     const std::vector<std::int32_t>& first_pos, int rows_per_request,
                                     IndexerInputs kind, std::uint64_t seed) {
  Rng rng(seed);
  IndexerData d;
  d.format = format;
  d.heads = heads;
  d.requests = static_cast<std::int64_t>(first_pos.size());
  std::int64_t max_vis = 1;
  for (std::size_t b = 0; b < first_pos.size(); ++b)
    for (int i = 0; i < rows_per_request; ++i) {
      d.pos.push_back(first_pos[b] + i);
      d.request.push_back(static_cast<std::int32_t>(b));
      max_vis = std::max<std::int64_t>(max_vis, idx::visible_entries(first_pos[b] + i));
    }
  d.stride = max_vis + 3;  // a padded stride: the kernel must not rely on stride == visible
  d.max_pages = (max_vis + idx::kPageRows - 1) / idx::kPageRows;
  d.num_pages = d.requests * d.max_pages + 3;  // spare pages the table never names
  std::vector<std::int32_t> perm(static_cast<std::size_t>(d.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  for (std::size_t i = perm.size(); i > 1; --i)
    std::swap(perm[i - 1], perm[static_cast<std::size_t>(rng.uniform() * static_cast<double>(i)) % i]);
  d.page_table.assign(perm.begin(), perm.begin() + d.requests * d.max_pages);
  const int rb = idx::row_bytes(format);
  d.cache.resize(static_cast<std::size_t>(d.num_pages * idx::kPageRows * rb));
  const bool sat = kind == IndexerInputs::kSaturated;
  const int klo = kind == IndexerInputs::kHugeTiny ? -60 : sat ? 0 : -3;
  const int khi = kind == IndexerInputs::kHugeTiny ? -56 : sat ? 0 : 3;
  std::vector<std::uint8_t> first_row(static_cast<std::size_t>(rb));
  for (std::int64_t r = 0; r < d.num_pages * idx::kPageRows; ++r) {
    std::uint8_t* row = d.cache.data() + r * rb;
    if (format == idx::KeyFormat::kFp4) {
      q4_row(rng, row, klo, khi, sat, kind == IndexerInputs::kAllNegative);
    } else {
      for (int k = 0; k < 128; ++k) {
        row[k] = sat ? static_cast<std::uint8_t>(0x7E | (rng.uniform() < 0.5 ? 0x80 : 0)) : random_e4m3(rng);
        if (kind == IndexerInputs::kAllNegative) row[k] &= 0x7F;
      }
      const float s = kind == IndexerInputs::kHugeTiny
                          ? static_cast<float>(std::ldexp(1.0 + rng.uniform(), -62))
                          : static_cast<float>(std::ldexp(1.0 + rng.uniform(), -8));
      std::memcpy(row + 128, &s, 4);
    }
    if (kind == IndexerInputs::kEqualKeys) {
      if (r == 0) std::memcpy(first_row.data(), row, static_cast<std::size_t>(rb));
      else std::memcpy(row, first_row.data(), static_cast<std::size_t>(rb));
    }
  }
  const std::int64_t R = d.rows();
  d.q.resize(static_cast<std::size_t>(R * heads * idx::kQ4RowBytes));
  d.w.resize(static_cast<std::size_t>(R * heads));
  const int qlo = kind == IndexerInputs::kHugeTiny ? 40 : sat ? 0 : -3;
  const int qhi = kind == IndexerInputs::kHugeTiny ? 44 : sat ? 0 : 3;
  for (std::int64_t i = 0; i < R * heads; ++i) {
    std::uint8_t* row = d.q.data() + i * idx::kQ4RowBytes;
    q4_row(rng, row, qlo, qhi, sat, false);
    if (kind == IndexerInputs::kAllNegative)  // negative queries against non-negative keys
      for (int b = 0; b < 64; ++b) row[b] |= 0x88;
    d.w[static_cast<std::size_t>(i)] =
        static_cast<float>(fmt::round_bf16(rng.normal() / std::sqrt(128.0 * heads)));
  }
  return d;
}

// Exact logits and the abs bound of the index_logits.logits row, M = Σ_h |w_h| Σ_blocks
// max_k |q_k K_k|, per (row, visible key), in double
// from the stored values; [R, stride], −∞ (logits) and 0 (bound) where invisible.
struct ExactLogits {
  std::vector<double> logits, bound;
};
inline ExactLogits exact_logits(const IndexerData& d) {
  const std::int64_t R = d.rows(), H = d.heads, S = d.stride;
  ExactLogits out;
  out.logits.assign(static_cast<std::size_t>(R * S), -INFINITY);
  out.bound.assign(static_cast<std::size_t>(R * S), 0.0);
  const auto values = [&](const std::uint8_t* row, bool q4, double* v) {
    if (q4) {
      for (int k = 0; k < 128; ++k)
        v[k] = fmt::e2m1_to_double((row[k / 2] >> (4 * (k % 2))) & 0xF) * fmt::ue8m0_to_double(row[64 + k / 32]);
    } else {
      float s = 0;
      std::memcpy(&s, row + 128, 4);
      for (int k = 0; k < 128; ++k) v[k] = static_cast<double>(fmt::e4m3_to_float(row[k])) * static_cast<double>(s);
    }
  };
  std::vector<double> qv(static_cast<std::size_t>(H * 128)), kv(128);
  for (std::int64_t r = 0; r < R; ++r) {
    for (std::int64_t h = 0; h < H; ++h)
      values(d.q.data() + (r * H + h) * idx::kQ4RowBytes, true, qv.data() + h * 128);
    const std::int64_t vis = idx::visible_entries(d.pos[static_cast<std::size_t>(r)]);
    for (std::int64_t j = 0; j < vis; ++j) {
      values(d.key_row(d.request[static_cast<std::size_t>(r)], j), d.format == idx::KeyFormat::kFp4, kv.data());
      double sum = 0, m = 0;
      for (std::int64_t h = 0; h < H; ++h) {
        double dot = 0, adot = 0;  // adot: Σ over blocks of the block's largest |q_k K_k|
        for (int b = 0; b < 4; ++b) {
          double mx = 0;
          for (int k = 32 * b; k < 32 * b + 32; ++k) {
            const double prod = qv[static_cast<std::size_t>(h * 128 + k)] * kv[static_cast<std::size_t>(k)];
            dot += prod;
            mx = std::max(mx, std::abs(prod));
          }
          adot += mx;
        }
        const double wh = static_cast<double>(d.w[static_cast<std::size_t>(r * H + h)]);
        sum += wh * std::max(dot, 0.0);
        m += std::abs(wh) * adot;
      }
      out.logits[static_cast<std::size_t>(r * S + j)] = sum;
      out.bound[static_cast<std::size_t>(r * S + j)] = m;
    }
  }
  return out;
}

// n_eff of the index_logits.logits row (compare/src/components.cpp index_logits_n_eff).
inline double index_logits_n_eff(idx::KeyFormat f, int heads) {
  return f == idx::KeyFormat::kFp8 ? 33.0 : static_cast<double>(heads + 6) * 32.0 / 4096.0;
}

}  // namespace v4ref::test
