// CSA and HCA attention over the FP8 KV cache (cuda/src/attention_kernels.cuh): the cache row
// format, the key list of a query, the work decomposition and the host-side checks, written once
// for host and device (docs/cuda-attention.md; v4-forward.md §5.3–5.4, §11.1, §11.4, §12;
// kernel-targets.md §4.3–4.4).
//
//   o[r, h] = Σ_s e^{ℓ_s} κ_s / (Σ_s e^{ℓ_s} + e^{sink_h}),   ℓ_s = q[r, h] · κ_s / sqrt(D)
//   lse[r, h] = ln(Σ_s e^{ℓ_s} + e^{sink_h})   (natural log of the denominator, sink included,
//                                               so o = Σ_s e^{ℓ_s − lse} κ_s)
//
// over the key list of query row r at position t of request b (the reference's order, §5.3):
//   window      positions first(t) .. t, first(t) = max(0, t − 127)          (n_win keys)
//   compressed  CSA: the k_I slots of selected[r] (−1 padding anywhere: skipped)
//               HCA: every complete entry j < ⌊(t+1)/128⌋
//
// Row format (the compressor writes it, compressor_tile.hpp; v4-forward.md §11.4), D = 512:
//   [448 e4m3 codes][64 bf16 rope values][7 ue8m0 scales, one per 64 nope dims][1 pad] = 584 B
// and in general [D−64 codes][64 bf16][(D−64)/64 scales][pad to 8] (D = 128: 200 bytes). A nope
// value is e4m3(code) · 2^(scale − 127); it is a bf16 value exactly (4 significant bits) whenever
// it is finite in bf16, which check_stored_values ensures. Rows are 8-byte aligned.
//
// Caches (pages of kPageRows = 64 rows, a page table per request):
//   window      position p of request b: logical page (p / 64) mod window_pages, row p mod 64.
//               window_pages = 2 is the official 128-slot ring buffer (slot p mod 128); a prefill
//               chunk passes enough pages to hold its whole span (no two live positions alias)
//   compressed  entry j of request b: logical page j / 64, row j mod 64
//
// Arithmetic (fp32; the kernel, docs/cuda-attention.md): Q and the dequantised K = V tile in
// bf16, S = Q·Kᵀ by wgmma (bf16 products, fp32 accumulation; each warpgroup contracts half of the
// D dims, the two halves added in fp32), ℓ = S · fp32(1/sqrt(D)); per row an online softmax over
// tiles of 32 keys: m = running max (masked keys −∞), p = exp_f32(ℓ − m) (fp32_rn.hpp), l = l·α +
// Σ p with α = exp_f32(m_old − m), P = bf16(p) into P·V (wgmma, fp32), O = O·α + P·V. At the end,
// with m2 = max(m, sink) (no overflow however dominant the sink): f = exp_f32(m − m2), den =
// l·f + exp_f32(sink − m2), o = bf16(O·f / den), lse = m2 + ln(den). The reference rounds
// e^{ℓ − M} to bf16 with the global max M; the kernel rounds at the running max, which the row
// attention_fp8.out of the tolerance table bounds.
//
// Work decomposition: one CTA per (query row, block of 64 heads); 256 threads = 2 warpgroups.
// Warpgroup g contracts dims [g·D/2, (g+1)·D/2) for S (partials exchanged through shared
// memory) and owns those output dims of O (D/4 fp32 accumulators per thread: 128 at D = 512).
//
// This header must stay self-contained (core headers only).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "v4ref/cuda/fp32_rn.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/host_device.hpp"

namespace v4ref::cuda::attn {

inline constexpr int kRope = 64;        // bf16 rope dims at the end of every row
inline constexpr int kScaleBlock = 64;  // nope dims per ue8m0 scale
inline constexpr int kWindow = 128;     // n_win
inline constexpr int kCsaRatio = 4;
inline constexpr int kHcaRatio = 128;
inline constexpr int kPageRows = 64;
inline constexpr int kTileKeys = 32;    // keys per main-loop tile (wgmma N of Q·Kᵀ)
inline constexpr int kHeadRows = 64;    // heads per CTA (wgmma M)
inline constexpr int kThreads = 256;    // two warpgroups

enum class Kind : int { kCsa = 0, kHca = 1 };
inline const char* kind_name(Kind k) { return k == Kind::kCsa ? "csa" : "hca"; }

V4REF_HD constexpr int nope_dims(int D) { return D - kRope; }
V4REF_HD constexpr int scale_count(int D) { return (D - kRope) / kScaleBlock; }
V4REF_HD constexpr int scale_offset(int D) { return D - kRope + 2 * kRope; }
V4REF_HD constexpr int row_bytes(int D) { return (scale_offset(D) + scale_count(D) + 7) / 8 * 8; }
static_assert(row_bytes(512) == 584 && row_bytes(128) == 200);

V4REF_HD inline std::int64_t window_first(std::int64_t t) { return t - kWindow + 1 < 0 ? 0 : t - kWindow + 1; }
V4REF_HD inline std::int64_t visible_entries(std::int64_t t, int ratio) { return (t + 1) / ratio; }

// 2^(s − 127) as an fp32 (s = 0: 2^-127, a subnormal; s = 255 is NaN-coded, rejected on the host).
V4REF_HD inline float ue8m0_scale(std::uint32_t s) {
  return fmt::float_from_bits(s == 0 ? 0x00400000u : (s & 0xFFu) << 23);
}

// Eight e4m3 codes (little-endian in w) times one power of two -> eight bf16 bit patterns packed
// in four words (dim 2i in the low half of word i). Exact: the product has 4 significant bits and
// lies in bf16's range (check_stored_values).
V4REF_HD inline void dequant8(std::uint64_t w, float scale, std::uint32_t (&out)[4]) {
  for (int i = 0; i < 4; ++i) {
    const auto c0 = static_cast<std::uint8_t>(w >> (16 * i));
    const auto c1 = static_cast<std::uint8_t>(w >> (16 * i + 8));
    const std::uint32_t b0 = fmt::float_bits(fmt::e4m3_to_float(c0) * scale) >> 16;
    const std::uint32_t b1 = fmt::float_bits(fmt::e4m3_to_float(c1) * scale) >> 16;
    out[i] = b0 | (b1 << 16);
  }
}

// A launch's arrays (host pointers; the device launcher takes device pointers of the same shapes).
struct AttentionProblem {
  Kind kind = Kind::kCsa;
  int head_dim = 512;                        // D: 512 (V4) or 128 (the tiny configs)
  int heads = 64;                            // H: 1 .. 64 or 128 (V4: 64 Flash, 128 Pro; tiny: 4, 8)
  std::int64_t rows = 0;                     // R query rows
  std::int64_t requests = 0;                 // B
  const std::uint16_t* q = nullptr;          // [R, H, D] bf16 bits
  const float* sink = nullptr;               // [H]
  const std::int32_t* pos = nullptr;         // [R] position t of each row
  const std::int32_t* request = nullptr;     // [R] request of each row
  const std::uint8_t* window_cache = nullptr;  // [window_num_pages, 64, row_bytes(D)]
  std::int64_t window_num_pages = 0;
  const std::int32_t* window_table = nullptr;  // [B, window_pages]
  std::int32_t window_pages = 0;
  const std::uint8_t* cmp_cache = nullptr;     // [cmp_num_pages, 64, row_bytes(D)]
  std::int64_t cmp_num_pages = 0;
  const std::int32_t* cmp_table = nullptr;     // [B, cmp_pages]
  std::int32_t cmp_pages = 0;
  const std::int32_t* selected = nullptr;      // CSA: [R, top_k] entry or −1
  std::int32_t top_k = 0;
};

inline int head_blocks(int heads) { return (heads + kHeadRows - 1) / kHeadRows; }

// Keys in the list of row r (window, then compressed slots including CSA padding).
V4REF_HD inline std::int64_t window_keys(std::int64_t t) { return t - window_first(t) + 1; }
inline std::int64_t compressed_slots(const AttentionProblem& p, std::int64_t t) {
  return p.kind == Kind::kCsa ? p.top_k : visible_entries(t, kHcaRatio);
}

// Byte offset of window position `pos` / compressed entry `j` of request b in its cache.
inline std::int64_t window_row_offset(const AttentionProblem& p, std::int64_t b, std::int64_t pos) {
  const std::int64_t page = p.window_table[b * p.window_pages + (pos / kPageRows) % p.window_pages];
  return (page * kPageRows + pos % kPageRows) * row_bytes(p.head_dim);
}
inline std::int64_t cmp_row_offset(const AttentionProblem& p, std::int64_t b, std::int64_t j) {
  const std::int64_t page = p.cmp_table[b * p.cmp_pages + j / kPageRows];
  return (page * kPageRows + j % kPageRows) * row_bytes(p.head_dim);
}

// Validates shapes and addressing: ShapeError naming the array, row, slot or page.
inline void check_problem(const AttentionProblem& p) {
  const auto bad = [](const std::string& why) { throw ShapeError("attention: " + why); };
  if (p.head_dim != 128 && p.head_dim != 512) bad("head_dim must be 128 or 512, got " + std::to_string(p.head_dim));
  if (!(p.heads > 0 && (p.heads <= kHeadRows || (p.heads % kHeadRows == 0 && p.heads <= 2 * kHeadRows))))
    bad("heads must be 1 .. 64 (one block, rows past H idle), 128, got " + std::to_string(p.heads));
  if (p.rows <= 0 || p.requests <= 0) bad("rows and requests must be positive");
  if (p.q == nullptr || p.sink == nullptr || p.pos == nullptr || p.request == nullptr || p.window_cache == nullptr ||
      p.window_table == nullptr)
    bad("q, sink, pos, request, window_cache and window_table must be given");
  if (p.window_pages * kPageRows < kWindow)
    bad("window_pages must be >= " + std::to_string(kWindow / kPageRows) +
        " (the ring must hold the 128 positions of a window), got " + std::to_string(p.window_pages));
  if (p.kind == Kind::kCsa && (p.top_k <= 0 || p.selected == nullptr))
    bad("CSA needs selected [R, top_k] with top_k > 0");
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const std::int64_t b = p.request[r], t = p.pos[r];
    const std::string row = "row " + std::to_string(r);
    if (b < 0 || b >= p.requests) bad(row + " names request " + std::to_string(b));
    if (t < 0) bad(row + " has position " + std::to_string(t));
    for (std::int64_t lp = window_first(t) / kPageRows; lp <= t / kPageRows; ++lp) {
      const std::int32_t page = p.window_table[b * p.window_pages + lp % p.window_pages];
      if (page < 0 || page >= p.window_num_pages)
        bad(row + ": window page " + std::to_string(page) + " (request " + std::to_string(b) + ", logical " +
            std::to_string(lp % p.window_pages) + ") outside [0, " + std::to_string(p.window_num_pages) + ")");
    }
    std::int64_t max_entry = -1;
    if (p.kind == Kind::kHca) {
      max_entry = visible_entries(t, kHcaRatio) - 1;
    } else {
      const std::int64_t vis = visible_entries(t, kCsaRatio);
      for (std::int32_t s = 0; s < p.top_k; ++s) {
        const std::int32_t j = p.selected[r * p.top_k + s];
        if (j < -1 || j >= vis)
          bad(row + " (position " + std::to_string(t) + ") selects entry " + std::to_string(j) + " in slot " +
              std::to_string(s) + ", outside [0, " + std::to_string(vis) + ") (−1 is padding)");
        if (j > max_entry) max_entry = j;
      }
    }
    if (max_entry >= 0) {
      if (p.cmp_cache == nullptr || p.cmp_table == nullptr) bad(row + " reads compressed entries: cmp_cache and cmp_table must be given");
      if (max_entry / kPageRows >= p.cmp_pages)
        bad(row + " reads compressed entry " + std::to_string(max_entry) + " beyond the " + std::to_string(p.cmp_pages) +
            " pages of its table");
      for (std::int64_t lp = 0; lp <= max_entry / kPageRows; ++lp) {
        const std::int32_t page = p.cmp_table[b * p.cmp_pages + lp];
        if (page < 0 || page >= p.cmp_num_pages)
          bad(row + ": compressed page " + std::to_string(page) + " (request " + std::to_string(b) + ", logical " +
              std::to_string(lp) + ") outside [0, " + std::to_string(p.cmp_num_pages) + ")");
      }
    }
  }
}

// One stored row: NumericError naming `what` when a code is NaN (e4m3 0x7F/0xFF, bf16 NaN/Inf,
// ue8m0 0xFF) or a nope value overflows bf16.
inline void check_row(const std::uint8_t* row, int D, const std::string& what) {
  const int nope = nope_dims(D);
  for (int blk = 0; blk < scale_count(D); ++blk) {
    const std::uint8_t s = row[scale_offset(D) + blk];
    if (s == 0xFF) throw NumericError(what + ": scale byte of dims " + std::to_string(64 * blk) + ".." +
                                      std::to_string(64 * blk + 63) + " is 0xFF (NaN in ue8m0)");
    for (int k = 64 * blk; k < 64 * blk + 64; ++k) {
      const std::uint8_t c = row[k];
      if ((c & 0x7F) == 0x7F) throw NumericError(what + ": dim " + std::to_string(k) + " holds the e4m3 NaN code");
      const float v = fmt::e4m3_to_float(c) * ue8m0_scale(s);
      if (!std::isfinite(v) || fmt::bf16_encode(v) != (fmt::float_bits(v) >> 16))
        throw NumericError(what + ": dim " + std::to_string(k) + " = e4m3 " + std::to_string(fmt::e4m3_to_float(c)) +
                           " x 2^" + std::to_string(static_cast<int>(s) - 127) + " is not a finite bf16 value");
    }
  }
  for (int k = 0; k < kRope; ++k) {
    std::uint16_t h;
    std::memcpy(&h, row + nope + 2 * k, 2);
    if ((h & 0x7F80u) == 0x7F80u) throw NumericError(what + ": rope dim " + std::to_string(nope + k) + " is not finite (bf16 " + std::to_string(h) + ")");
  }
}

// Every stored value a launch reads: the rows each query row's key list names, q and the sinks.
inline void check_stored_values(const AttentionProblem& p) {
  const int D = p.head_dim;
  for (std::int64_t i = 0; i < p.rows * p.heads * D; ++i)
    if ((p.q[i] & 0x7F80u) == 0x7F80u)
      throw NumericError("attention: q row " + std::to_string(i / (p.heads * D)) + " head " +
                         std::to_string(i / D % p.heads) + " dim " + std::to_string(i % D) + " is not finite");
  for (int h = 0; h < p.heads; ++h)
    if (!std::isfinite(p.sink[h])) throw NumericError("attention: sink of head " + std::to_string(h) + " is not finite");
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const std::int64_t b = p.request[r], t = p.pos[r];
    for (std::int64_t s = window_first(t); s <= t; ++s)
      check_row(p.window_cache + window_row_offset(p, b, s), D,
                "attention: window row of position " + std::to_string(s) + " (request " + std::to_string(b) + ")");
    for (std::int64_t n = 0; n < compressed_slots(p, t); ++n) {
      const std::int64_t j = p.kind == Kind::kCsa ? p.selected[r * p.top_k + n] : n;
      if (j >= 0)
        check_row(p.cmp_cache + cmp_row_offset(p, b, j), D,
                  "attention: compressed entry " + std::to_string(j) + " (request " + std::to_string(b) + ")");
    }
  }
}

// The real keys of row r: its window and its compressed entries (CSA padding excluded).
inline std::int64_t real_keys(const AttentionProblem& p, std::int64_t r) {
  const std::int64_t t = p.pos[r];
  std::int64_t keys = window_keys(t);
  if (p.kind == Kind::kHca) return keys + visible_entries(t, kHcaRatio);
  for (std::int32_t s = 0; s < p.top_k; ++s) keys += p.selected[r * p.top_k + s] >= 0;
  return keys;
}

// Compulsory bytes of a launch (kernel-targets.md §4.3–4.4): every key row a query reads (once,
// whatever the number of head blocks), q, the bf16 output and the fp32 lse; CSA also its index
// list.
inline double compulsory_bytes(const AttentionProblem& p) {
  double bytes = 0;
  for (std::int64_t r = 0; r < p.rows; ++r) {
    bytes += static_cast<double>(real_keys(p, r)) * row_bytes(p.head_dim);
    if (p.kind == Kind::kCsa) bytes += 4.0 * p.top_k;
    bytes += static_cast<double>(p.heads) * (2.0 * p.head_dim * 2 + 4);
  }
  return bytes;
}

// Useful MMA flops: 2·H·N_k·2D per row (QK and PV), N_k the real keys.
inline double useful_flops(const AttentionProblem& p) {
  double f = 0;
  for (std::int64_t r = 0; r < p.rows; ++r) f += 2.0 * p.heads * static_cast<double>(real_keys(p, r)) * 2.0 * p.head_dim;
  return f;
}

}  // namespace v4ref::cuda::attn
