// CSA and HCA attention over the FP8 KV cache in the SIMT dialect (simt.hpp): compiled by nvcc in
// attention_fp8_sm90.cu and by the host compiler in cuda/simt/attention_simt.cpp, where the SIMT
// executor runs this same source (docs/cuda-attention.md, docs/simt.md). Formats, key lists and
// the arithmetic: attention_tile.hpp.
//
// CTA (x, y) = (query row x, heads 64y .. 64y + 63); 256 threads = warpgroups 0 and 1.
//   0. Q rows of the CTA's heads -> shared memory (bf16, wgmma A layout; heads >= H are zero).
//   per tile of 32 keys of the row's key list (window positions, then compressed slots):
//   1. each warp names 4 keys (row offset in the window or compressed cache, or masked) and
//      copies their raw rows into shared memory as sector-aligned images, 256 bytes per request
//      (one request never shares a sector with another: 19 sectors per 584-byte row);
//   2. every thread dequantises one 8-dim octet of 8 keys to bf16 and writes it twice: the K
//      tile [32 keys][D] (B operand of Q·Kᵀ) and Vᵀ [D][32 keys] (B operand of P·V). The pitches
//      (K: 528/1056 bytes between core matrices along D, Vᵀ: 272 between 8-dim groups) make both
//      stores conflict-free; masked keys are zero rows, so 0 · V never meets a NaN;
//   3. warpgroup g: S_g = Q[:, g-half] · K[:, g-half]ᵀ (D/32 wgmma m64n32k16), S = S_0 + S_1
//      through shared memory, the online softmax of attention_tile.hpp, P = bf16(p) -> shared,
//      O_g = α·O_g + P · Vᵀ[g-half] (2 wgmma m64n(D/2)k16).
//   finally, with m2 = max(m, sink): den = l·e^{m − m2} + e^{sink − m2}, o = bf16(O·e^{m − m2} /
//   den) staged through shared memory and written in 16-byte chunks, lse = m2 + ln(den).
//
// Dynamic shared memory (attention_smem_bytes<D>): Q / output staging | K | Vᵀ | raw row images
// [32][256·requests] | S partials [2][16][128] fp32 | P [2][2 k-steps][2080] | key codes [32]
// int64 | leads [32] int32.
//
// Fault injection (tests/compare/attention_runner_test.cpp, tests/simt/attention_simt_test.cpp):
// the template parameter F selects one defect; the device build instantiates kNone only.
#pragma once

#include <cstdint>

#include "v4ref/cuda/attention_tile.hpp"
#include "v4ref/cuda/simt/simt.hpp"

namespace v4ref::cuda::attention_kernels {

using namespace v4ref::cuda::simt;  // NOLINT: the dialect is the kernels' vocabulary
using attn::Kind;
using rn::add_rn;
using rn::div_rn;
using rn::exp_f32;
using rn::max_f;
using rn::mul_rn;

enum class AttnFault : int {
  kNone = 0,
  kSinkDropped,       // den = l: the sink term left out of the denominator
  kWindowLong,        // 129 window positions (t − 128 .. t)
  kWindowShort,       // 127 window positions (t − 126 .. t)
  kPaddingAsFirst,    // a −1 slot read as entry 0
  kPaddingAsLast,     // a −1 slot read as the last visible entry
  kRopeDroppedFromV,  // V = the nope dims only (MLA habit; V4's V is the whole rotated row)
  kScaleBlockShift,   // the scale of dims 64b + 32 .. 64b + 95 taken from block b + 1
  kLseBase2,          // lse = log2 of the denominator (and m in base 2)
  kLastTileSkipped,   // ⌊N_k / 32⌋ tiles: the partial last tile is lost
  kHeadBlock,         // every head block reads the queries of heads 0 .. 63
  kNoProxyFence,      // dequantised tiles reach the wgmma unfenced
};

constexpr int kThreads = attn::kThreads;
constexpr int kTile = attn::kTileKeys;
constexpr int kRows = attn::kHeadRows;

template <int D>
struct Layout {
  static constexpr int kRowBytes = attn::row_bytes(D);
  static constexpr int kOctets = D / 8;                           // 16-byte bf16 chunks of a row
  static constexpr int kNopeOctets = attn::nope_dims(D) / 8;
  static constexpr unsigned kStagePitch = 2 * D + 16;             // output staging row (bytes)
  static constexpr unsigned kALbo = 1040, kAStep = 2080;           // A (Q, P): per 16 dims / keys
  static constexpr unsigned kQOperand = (D / 16) * kAStep;
  static constexpr unsigned kQBytes = (kRows * kStagePitch > kQOperand ? kRows * kStagePitch : kQOperand + 127) / 128 * 128;
  static constexpr unsigned kKLbo = 528, kKStep = 1056;           // K: per 16 dims
  static constexpr unsigned kKBytes = (D / 16) * kKStep;
  static constexpr unsigned kVSbo = 272, kVStep = (D / 8) * kVSbo;  // Vᵀ: per 16 keys
  static constexpr unsigned kVBytes = 2 * kVStep;
  // Raw rows: each key's sector-aligned image of kRawRequests 256-byte requests (the row at
  // offset `lead` inside it).
  static constexpr int kRawRequests = (24 + kRowBytes + 255) / 256;
  static constexpr unsigned kRawPitch = 256 * kRawRequests;
  static constexpr unsigned kRawBytes = kTile * kRawPitch;
  static constexpr unsigned kOffQ = 0;
  static constexpr unsigned kOffK = kOffQ + kQBytes;
  static constexpr unsigned kOffV = kOffK + kKBytes;
  static constexpr unsigned kOffRaw = kOffV + kVBytes;
  static constexpr unsigned kOffS = kOffRaw + kRawBytes;
  static constexpr unsigned kOffP = kOffS + 2 * 16 * 128 * 4;
  static constexpr unsigned kPBytes = (2 * kAStep + 127) / 128 * 128;  // per warpgroup
  static constexpr unsigned kOffCode = kOffP + 2 * kPBytes;
  static constexpr unsigned kOffLead = kOffCode + kTile * 8;
  static constexpr unsigned kBytes = kOffLead + kTile * 4;
  static_assert(kQBytes % 128 == 0 && kKBytes % 128 == 0 && kVBytes % 16 == 0 && kOffRaw % 16 == 0);
};
template <int D>
constexpr unsigned attention_smem_bytes = Layout<D>::kBytes;

struct AttentionArgs {
  gptr<const std::uint16_t> q;             // [R, H, D] bf16
  gptr<const float> sink;                  // [H]
  gptr<const std::int32_t> pos, request;   // [R]
  gptr<const std::uint8_t> window_cache;   // [pages, 64, row]
  gptr<const std::int32_t> window_table;   // [B, window_pages]
  std::int32_t window_pages;
  gptr<const std::uint8_t> cmp_cache;      // [pages, 64, row]
  gptr<const std::int32_t> cmp_table;      // [B, cmp_pages]
  std::int32_t cmp_pages;
  gptr<const std::int32_t> selected;       // CSA [R, top_k]
  std::int32_t top_k;
  gptr<std::uint16_t> out;                 // [R, H, D] bf16
  gptr<float> lse;                         // [R, H]
};

// Chunk c (dims 8c .. 8c+7) of row m of a [64][D] bf16 A operand (Q, P): per 16-dim k-step
// (2080 bytes) the first 8-dim half's core matrices (8 rows each, SBO 128) then, LBO 1040 on, the
// second's. The pitches put 8 consecutive chunks of a row in 8 bank groups (conflict-free
// 16-byte stores of the Q prologue).
template <int D>
V4REF_SIMT_DEVICE unsigned a_chunk(int m, int c) {
  return static_cast<unsigned>((c / 2) * Layout<D>::kAStep + (m / 8) * 128 + (c % 2) * Layout<D>::kALbo + (m % 8) * 16);
}
// Chunk o (dims 8o .. 8o+7) of key k of the K tile [32][D] (B operand, N = keys).
template <int D>
V4REF_SIMT_DEVICE unsigned k_chunk(int k, int o) {
  return static_cast<unsigned>((o / 2) * Layout<D>::kKStep + (k / 8) * 128 + (o % 2) * Layout<D>::kKLbo + (k % 8) * 16);
}
// Chunk (keys 8c .. 8c+7) of dim n of the Vᵀ tile [D][32] (B operand, N = dims).
template <int D>
V4REF_SIMT_DEVICE unsigned v_chunk(int n, int c) {
  return static_cast<unsigned>((c / 2) * Layout<D>::kVStep + (n / 8) * Layout<D>::kVSbo + (c % 2) * 128 + (n % 8) * 16);
}

template <int D>
V4REF_SIMT_DEVICE float inv_sqrt_d() {
  return D == 512 ? 0.0441941738241592203f : 0.0883883476483184406f;  // fp32(1/sqrt(D))
}

// Key code of slot n of the row's key list: −1 masked, >= 0 window-cache byte offset,
// <= −2 compressed-cache byte offset −2 − code.
template <int D, Kind KD, AttnFault F>
V4REF_SIMT_DEVICE std::int64_t key_code(const AttentionArgs& a, std::int32_t r, std::int32_t b, std::int32_t t,
                                        std::int32_t first, std::int32_t n_win, std::int32_t n_keys, std::int32_t n) {
  constexpr std::int64_t RB = Layout<D>::kRowBytes;
  if (n < n_win) {
    const std::int32_t p = first + n;
    const std::int32_t page = ld(a.window_table + static_cast<std::int64_t>(b) * a.window_pages + (p / attn::kPageRows) % a.window_pages);
    return (static_cast<std::int64_t>(page) * attn::kPageRows + p % attn::kPageRows) * RB;
  }
  if (n >= n_keys) return -1;
  const std::int32_t slot = n - n_win;
  std::int32_t j = KD == Kind::kCsa ? ld(a.selected + static_cast<std::int64_t>(r) * a.top_k + slot) : slot;
  if (j < 0 && F == AttnFault::kPaddingAsFirst) j = 0;
  if (j < 0 && F == AttnFault::kPaddingAsLast) j = static_cast<std::int32_t>(attn::visible_entries(t, attn::kCsaRatio)) - 1;
  if (j < 0) return -1;
  const std::int32_t page = ld(a.cmp_table + static_cast<std::int64_t>(b) * a.cmp_pages + j / attn::kPageRows);
  return -2 - (static_cast<std::int64_t>(page) * attn::kPageRows + j % attn::kPageRows) * RB;
}

template <int D, Kind KD, AttnFault F>
V4REF_SIMT_KERNEL(kThreads) attention_kernel(const AttentionArgs a, const std::int32_t heads) {
  using L = Layout<D>;
  constexpr int kHalf = D / 2;          // dims per warpgroup
  constexpr int kN = kHalf / 8;         // 8-column groups of O per thread row
  const sptr<unsigned char> smem = dynamic_smem<unsigned char>();
  const sptr<unsigned char> sQ = smem + L::kOffQ, sK = smem + L::kOffK, sV = smem + L::kOffV, raw = smem + L::kOffRaw;
  const sptr<float> sS = scast<float>(smem + L::kOffS);
  const sptr<unsigned char> sP = smem + L::kOffP;
  const sptr<std::int64_t> scode = scast<std::int64_t>(smem + L::kOffCode);
  const sptr<std::int32_t> slead = scast<std::int32_t>(smem + L::kOffLead);
  const unsigned tid = thread_idx().x, warp = tid / 32, lane = tid % 32;
  const unsigned wg = tid / 128, wtid = tid % 128, wwarp = wtid / 32;

  const auto r = static_cast<std::int32_t>(block_idx().x);
  const int h0 = static_cast<int>(block_idx().y) * kRows;
  const std::int32_t t = ld(a.pos + r), b = ld(a.request + r);
  const std::int32_t n_win_exact = static_cast<std::int32_t>(attn::window_keys(t));
  const std::int32_t n_win = F == AttnFault::kWindowLong ? (t + 1 < 129 ? t + 1 : 129)
                             : F == AttnFault::kWindowShort ? (t + 1 < 127 ? t + 1 : 127)
                                                           : n_win_exact;
  const std::int32_t first = t - n_win + 1;
  const std::int32_t n_cmp = KD == Kind::kCsa ? a.top_k : static_cast<std::int32_t>(attn::visible_entries(t, attn::kHcaRatio));
  const std::int32_t n_keys = n_win + n_cmp;
  const std::int32_t n_tiles = F == AttnFault::kLastTileSkipped && n_keys > kTile ? n_keys / kTile : (n_keys + kTile - 1) / kTile;

  // ---- 0. queries (rows >= heads are zero)
  {
    const int qh0 = F == AttnFault::kHeadBlock ? 0 : h0;
    const gptr<const u32x4> q = gcast<const u32x4>(a.q + (static_cast<std::int64_t>(r) * heads + qh0) * D);
    for (int i = static_cast<int>(tid); i < kRows * L::kOctets; i += kThreads) {
      const int m = i / L::kOctets, c = i % L::kOctets;
      u32x4 v{};
      if (h0 + m < heads) v = ld(q + static_cast<std::int64_t>(m) * L::kOctets + c);
      st(scast<u32x4>(sQ + a_chunk<D>(m, c)), v);
    }
  }

  // Thread rows of the accumulators (warp-in-group wwarp): m0 = 16·wwarp + lane/4, m1 = m0 + 8.
  const int m0 = static_cast<int>(16 * wwarp + lane / 4);
  const int col0 = static_cast<int>(2 * (lane % 4));
  float o_acc[kHalf / 2];
  for (float& x : o_acc) x = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  const float scale = inv_sqrt_d<D>();

  for (std::int32_t tile = 0; tile < n_tiles; ++tile) {
    // ---- 1. key codes and raw rows: warp w owns keys 4w .. 4w + 3 of the tile
    {
      std::int64_t my_code = -1;
      std::int32_t my_lead = 0;
      if (lane < 4) {
        my_code = key_code<D, KD, F>(a, r, b, t, first, n_win, n_keys, tile * kTile + static_cast<std::int32_t>(4 * warp + lane));
        if (my_code != -1) {
          const gptr<const std::uint8_t> row = my_code >= 0 ? a.window_cache + my_code : a.cmp_cache + (-2 - my_code);
          my_lead = static_cast<std::int32_t>(reinterpret_cast<std::uintptr_t>(row.address()) % 32);  // 0, 8, 16, 24
        }
        st(scode + 4 * warp + lane, my_code);
        st(slead + 4 * warp + lane, my_lead);
      }
      for (int i = 0; i < 4; ++i) {
        const std::int64_t code = shfl(kFullMask, my_code, i);
        const std::int64_t lead = shfl(kFullMask, my_lead, i);
        if (code == -1) continue;  // warp-uniform
        const gptr<const std::uint8_t> row = code >= 0 ? a.window_cache + code : a.cmp_cache + (-2 - code);
        const sptr<unsigned char> dst = raw + (4 * warp + i) * L::kRawPitch;
        // The row's sector-aligned image: lane l of request s copies the word at 256 s + 8 l of
        // the image (row offset 256 s + 8 l − lead), so no sector is in two requests. Every lane
        // issues every load and store; a lane outside the row reads the row's first or last word
        // (a sector its request touches anyway) into an image byte nothing reads.
        for (int s = 0; s < L::kRawRequests; ++s) {
          const std::int64_t off = 256 * s + 8 * static_cast<std::int64_t>(lane) - lead;
          const std::int64_t at = off < 0 ? 0 : (off > L::kRowBytes - 8 ? L::kRowBytes - 8 : off);
          st(scast<std::uint64_t>(dst + 256 * s + 8 * static_cast<int>(lane)), ld(gcast<const std::uint64_t>(row + at)));
        }
      }
    }
    sync_threads();

    // ---- 2. dequantise: thread item (octet o, key octet ko) -> K chunks and Vᵀ chunks
    for (int item = static_cast<int>(tid); item < L::kOctets * (kTile / 8); item += kThreads) {
      const int o = item % L::kOctets, ko = item / L::kOctets;
      std::uint32_t v[8][4];
      V4REF_SIMT_UNROLL
      for (int j = 0; j < 8; ++j) {
        const int k = 8 * ko + j;
        V4REF_SIMT_UNROLL
        for (int w = 0; w < 4; ++w) v[j][w] = 0;
        if (ld(scode + k) != -1) {
          const sptr<const unsigned char> rowp = raw + k * L::kRawPitch + ld(slead + k);
          if (o < L::kNopeOctets) {
            const int blk = F == AttnFault::kScaleBlockShift ? ((o + 4) / 8 < L::kNopeOctets / 8 ? (o + 4) / 8 : o / 8) : o / 8;
            const std::uint32_t s = ld(rowp + attn::scale_offset(D) + blk);
            attn::dequant8(ld(scast<const std::uint64_t>(rowp + 8 * o)), attn::ue8m0_scale(s), v[j]);
          } else {
            const sptr<const std::uint32_t> rp = scast<const std::uint32_t>(rowp + attn::nope_dims(D) + 16 * (o - L::kNopeOctets));
            V4REF_SIMT_UNROLL
            for (int w = 0; w < 4; ++w) v[j][w] = ld(rp + w);
          }
        }
        st(scast<u32x4>(sK + k_chunk<D>(k, o)), u32x4{v[j][0], v[j][1], v[j][2], v[j][3]});
      }
      const bool v_zero = F == AttnFault::kRopeDroppedFromV && o >= L::kNopeOctets;
      V4REF_SIMT_UNROLL
      for (int jd = 0; jd < 8; ++jd) {  // dim 8o + jd, keys 8ko .. 8ko + 7
        std::uint32_t w[4];
        V4REF_SIMT_UNROLL
        for (int p = 0; p < 4; ++p) {
          const std::uint32_t lo = (v[2 * p][jd / 2] >> (16 * (jd % 2))) & 0xFFFFu;
          const std::uint32_t hi = (v[2 * p + 1][jd / 2] >> (16 * (jd % 2))) & 0xFFFFu;
          w[p] = v_zero ? 0u : lo | (hi << 16);
        }
        st(scast<u32x4>(sV + v_chunk<D>(8 * o + jd, ko)), u32x4{w[0], w[1], w[2], w[3]});
      }
    }
    if (F != AttnFault::kNoProxyFence) fence_proxy_async();
    sync_threads();

    // The thread's 8 columns' validity, read before barrier C: after it, warp 0 may already
    // write the next tile's codes.
    unsigned valid = 0;
    for (int i = 0; i < kTile / 8; ++i)
      for (int e = 0; e < 2; ++e) valid |= (ld(scode + 8 * i + col0 + e) != -1 ? 1u : 0u) << (2 * i + e);

    // ---- 3. S_g = Q[:, g-half] · K[:, g-half]ᵀ
    float s_acc[kTile / 2];
    for (float& x : s_acc) x = 0.0f;
    wgmma_fence();
    for (int ks = 0; ks < kHalf / 16; ++ks) {
      const int kd = static_cast<int>(wg) * (kHalf / 16) + ks;  // 16-dim step of the full row
      const std::uint64_t da = make_smem_desc(sQ + kd * static_cast<int>(L::kAStep), L::kALbo, 128, Swizzle::kNone);
      const std::uint64_t db = make_smem_desc(sK + kd * static_cast<int>(L::kKStep), L::kKLbo, 128, Swizzle::kNone);
      wgmma_bf16_ss<kTile>(s_acc, da, db, true);
    }
    wgmma_commit_group();
    wgmma_wait_group<0>();
    for (int i = 0; i < kTile / 2; ++i) st(sS + (wg * 16 + static_cast<unsigned>(i)) * 128 + wtid, s_acc[i]);
    sync_threads();
    for (int i = 0; i < kTile / 2; ++i)
      s_acc[i] = add_rn(s_acc[i], ld(sS + ((1 - wg) * 16 + static_cast<unsigned>(i)) * 128 + wtid));

    // ---- online softmax over the tile, rows m0 (ri = 0) and m0 + 8 (ri = 1)
    float alpha[2];
    for (int ri = 0; ri < 2; ++ri) {
      float mx = -INFINITY;
      for (int i = 0; i < kTile / 8; ++i)
        for (int e = 0; e < 2; ++e) {
          float& x = s_acc[4 * i + 2 * ri + e];
          x = (valid >> (2 * i + e) & 1u) == 0 ? -INFINITY : mul_rn(x, scale);
          mx = max_f(mx, x);
        }
      mx = max_f(mx, shfl_xor(kFullMask, mx, 1));
      mx = max_f(mx, shfl_xor(kFullMask, mx, 2));
      const float m_new = max_f(m_run[ri], mx);
      alpha[ri] = m_run[ri] == -INFINITY ? 0.0f : exp_f32(add_rn(m_run[ri], -m_new));
      float sum = 0.0f;
      for (int i = 0; i < kTile / 8; ++i)
        for (int e = 0; e < 2; ++e) {
          float& x = s_acc[4 * i + 2 * ri + e];
          x = x == -INFINITY ? 0.0f : exp_f32(add_rn(x, -m_new));
          sum = add_rn(sum, x);
        }
      sum = add_rn(sum, shfl_xor(kFullMask, sum, 1));
      sum = add_rn(sum, shfl_xor(kFullMask, sum, 2));
      l_run[ri] = add_rn(mul_rn(l_run[ri], alpha[ri]), sum);
      m_run[ri] = m_new;
    }
    // P = bf16(p) -> this warpgroup's A operand [64][32 keys]
    const sptr<unsigned char> myP = sP + wg * L::kPBytes;
    for (int i = 0; i < kTile / 8; ++i)
      for (int ri = 0; ri < 2; ++ri) {
        const std::uint32_t pr = static_cast<std::uint32_t>(rn::to_bf16(s_acc[4 * i + 2 * ri])) |
                                 (static_cast<std::uint32_t>(rn::to_bf16(s_acc[4 * i + 2 * ri + 1])) << 16);
        st(scast<std::uint32_t>(myP + a_chunk<D>(m0 + 8 * ri, i) + 2 * col0), pr);
      }
    fence_proxy_async();
    bar_sync(1 + static_cast<int>(wg), 128);

    // ---- O_g = α·O_g + P · Vᵀ[g-half]
    for (int i = 0; i < kN; ++i) {
      o_acc[4 * i] = mul_rn(o_acc[4 * i], alpha[0]);
      o_acc[4 * i + 1] = mul_rn(o_acc[4 * i + 1], alpha[0]);
      o_acc[4 * i + 2] = mul_rn(o_acc[4 * i + 2], alpha[1]);
      o_acc[4 * i + 3] = mul_rn(o_acc[4 * i + 3], alpha[1]);
    }
    wgmma_fence();
    for (int ks = 0; ks < kTile / 16; ++ks) {
      const std::uint64_t da = make_smem_desc(myP + ks * static_cast<int>(L::kAStep), L::kALbo, 128, Swizzle::kNone);
      const std::uint64_t db = make_smem_desc(sV + ks * static_cast<int>(L::kVStep) + static_cast<int>(wg) * (kHalf / 8) * static_cast<int>(L::kVSbo),
                                              128, L::kVSbo, Swizzle::kNone);
      wgmma_bf16_ss<kHalf>(o_acc, da, db, true);
    }
    wgmma_commit_group();
    wgmma_wait_group<0>();
  }

  // ---- finish: den, o = bf16(O / den) staged in shared memory (Q is dead), lse
  sync_threads();
  // With m2 = max(m, sink) no exponential overflows however far the sink and the logits are
  // apart: den2 = l·e^{m − m2} + e^{sink − m2}, o = O·e^{m − m2} / den2, lse = m2 + ln(den2)
  // (e^0 = 1 exactly: when the sink is below the max this is l + e^{sink − m} and O / den).
  float den[2], fo[2], m2[2];
  for (int ri = 0; ri < 2; ++ri) {
    const int h = h0 + m0 + 8 * ri;
    const float sk = h < heads ? ld(a.sink + h) : 0.0f;
    m2[ri] = max_f(m_run[ri], sk);
    fo[ri] = exp_f32(add_rn(m_run[ri], -m2[ri]));
    const float lo = mul_rn(l_run[ri], fo[ri]);
    den[ri] = F == AttnFault::kSinkDropped ? lo : add_rn(lo, exp_f32(add_rn(sk, -m2[ri])));
  }
  for (int i = 0; i < kN; ++i)
    for (int ri = 0; ri < 2; ++ri) {
      const float o0 = div_rn(mul_rn(o_acc[4 * i + 2 * ri], fo[ri]), den[ri]);
      const float o1 = div_rn(mul_rn(o_acc[4 * i + 2 * ri + 1], fo[ri]), den[ri]);
      const std::uint32_t pr = static_cast<std::uint32_t>(rn::to_bf16(o0)) | (static_cast<std::uint32_t>(rn::to_bf16(o1)) << 16);
      const unsigned col = wg * kHalf + 8 * static_cast<unsigned>(i) + static_cast<unsigned>(col0);
      st(scast<std::uint32_t>(sQ + static_cast<unsigned>(m0 + 8 * ri) * L::kStagePitch + 2 * col), pr);
    }
  if (wg == 0 && lane % 4 == 0)
    for (int ri = 0; ri < 2; ++ri) {
      const int h = h0 + m0 + 8 * ri;
      if (h >= heads) continue;
      const float lse = F == AttnFault::kLseBase2
                            ? add_rn(mul_rn(m2[ri], 1.44269504088896341f), log2f(den[ri]))
                            : add_rn(m2[ri], logf(den[ri]));
      st(a.lse + static_cast<std::int64_t>(r) * heads + h, lse);
    }
  sync_threads();
  {
    const gptr<u32x4> out = gcast<u32x4>(a.out + (static_cast<std::int64_t>(r) * heads + h0) * D);
    for (int i = static_cast<int>(tid); i < kRows * L::kOctets; i += kThreads) {
      const int m = i / L::kOctets, c = i % L::kOctets;
      if (h0 + m < heads) st(out + static_cast<std::int64_t>(m) * L::kOctets + c, ld(scast<const u32x4>(sQ + static_cast<unsigned>(m) * L::kStagePitch + 16 * c)));
    }
  }
}

}  // namespace v4ref::cuda::attention_kernels
