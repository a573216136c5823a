// Block quantizers: Q8 / Q4 activation fake-quant with KER scale arithmetic (v4-forward.md §2.5)
// and the fp8 block / fp4 expert weight quantizers (§1.5, §15.5–15.6). Dequantisation of stored
// weights lives in dequant.hpp; this file only produces codes.
#include "v4ref/ref/quant.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"

namespace v4ref::ref {
namespace {

constexpr double kFltMax = std::numeric_limits<float>::max();
constexpr int kUe8m0MinExponent = -127;        // code 0
constexpr int kUe8m0MaxExponent = 127;         // code 254 (255 is NaN)
constexpr std::int64_t kFp8WeightBlock = 128;  // §15.6: 128 rows x 128 columns
constexpr std::int64_t kFp4WeightBlock = 32;   // §15.6: 1 row x 32 columns

// The element format of an activation quantizer: its scale rule and codec.
struct ElementFormat {
  const char* op;  // function name for messages
  ScaleRule rule;
  std::uint8_t (*encode)(double);
  double (*decode)(std::uint8_t);
};

// KER casts with the saturating conversion (§2.5); the clamp already keeps |q| <= 448.
std::uint8_t encode_e4m3_sat(double q) { return fmt::e4m3_encode(q, fmt::Saturation::kSatFinite); }

constexpr ElementFormat kQ8Format{"q8", kQ8Rule, &encode_e4m3_sat, &fmt::e4m3_to_double};
constexpr ElementFormat kQ4Format{"q4", kQ4Rule, &fmt::e2m1_encode, &fmt::e2m1_to_double};

std::string str(std::int64_t v) { return std::to_string(v); }

void check_blocking(const char* op, std::size_t n, int block) {
  if (block <= 0) throw ShapeError(std::string(op) + ": block must be positive, got " + str(block));
  if (n % static_cast<std::size_t>(block) != 0)
    throw ShapeError(std::string(op) + ": x has " + str(static_cast<std::int64_t>(n)) +
                     " elements, expected a multiple of the block " + str(block) +
                     " (no partial tail block)");
}

void check_out(const char* op, std::size_t n_in, std::size_t n_out) {
  if (n_in != n_out)
    throw ShapeError(std::string(op) + ": out has " + str(static_cast<std::int64_t>(n_out)) +
                     " elements, expected " + str(static_cast<std::int64_t>(n_in)) +
                     " (the length of x)");
}

// Largest |x_i| of a block; NumericError on NaN/Inf or a magnitude fp32 cannot hold.
double block_amax(const char* op, std::span<const double> xb, std::size_t offset) {
  double amax = 0.0;
  for (std::size_t i = 0; i < xb.size(); ++i) {
    const double a = std::fabs(xb[i]);
    if (!(a <= kFltMax))
      throw NumericError(std::string(op) + ": x[" + str(static_cast<std::int64_t>(offset + i)) +
                         "] = " + std::to_string(xb[i]) +
                         ", expected a finite value with magnitude <= FLT_MAX");
    amax = std::max(amax, a);
  }
  return amax;
}

// One activation block: codes into `codes` ([xb.size()]), returns the ue8m0 scale byte.
std::uint8_t quantize_block(const ElementFormat& f, std::span<const double> xb, std::size_t offset,
                            std::span<std::uint8_t> codes) {
  const int k = act_scale_exponent(block_amax(f.op, xb, offset), f.rule);
  const double s = fmt::pow2(k);
  for (std::size_t i = 0; i < xb.size(); ++i) {
    const double q = std::clamp(xb[i] / s, -f.rule.qmax, f.rule.qmax);  // x/s exact: s = 2^k
    codes[i] = f.encode(q);
  }
  return static_cast<std::uint8_t>(k + 127);
}

BlockCodes quantize(const ElementFormat& f, std::span<const double> x, int block) {
  check_blocking(f.op, x.size(), block);
  const auto b = static_cast<std::size_t>(block);
  BlockCodes r;
  r.codes.resize(x.size());       // [n]
  r.scales.resize(x.size() / b);  // [n / block]
  for (std::size_t blk = 0; blk < r.scales.size(); ++blk)
    r.scales[blk] = quantize_block(f, x.subspan(blk * b, b), blk * b,
                                   std::span<std::uint8_t>(r.codes).subspan(blk * b, b));
  return r;
}

void fake_quant(const ElementFormat& f, std::span<const double> x, int block,
                std::span<double> out) {
  check_blocking(f.op, x.size(), block);
  check_out(f.op, x.size(), out.size());
  const auto b = static_cast<std::size_t>(block);
  std::vector<std::uint8_t> codes(b);  // [block], filled before out is written (out may alias x)
  for (std::size_t start = 0; start < x.size(); start += b) {
    const std::uint8_t u = quantize_block(f, x.subspan(start, b), start, codes);
    const double s = fmt::ue8m0_to_double(u);
    for (std::size_t i = 0; i < b; ++i)
      out[start + i] = fmt::round_bf16(f.decode(codes[i]) * s);  // exact, see quant.hpp
  }
}

// Exponent of a weight block's scale: exact smallest power of two, the activation floor for an
// all-zero block, clamped below to ue8m0's smallest exponent.
int weight_scale_exponent(const char* op, double amax, const ScaleRule& rule) {
  if (amax == 0.0) return act_scale_exponent(0.0, rule);
  const int k = std::max(smallest_pow2_scale_exponent(amax, rule.qmax), kUe8m0MinExponent);
  if (k > kUe8m0MaxExponent)
    throw NumericError(std::string(op) + ": block amax " + std::to_string(amax) +
                       " needs a scale 2^" + str(k) + ", above ue8m0's largest 2^127");
  return k;
}

void check_weight_shape(const char* op, std::size_t n, std::int64_t rows, std::int64_t cols) {
  if (rows <= 0 || cols <= 0)
    throw ShapeError(std::string(op) + ": expected positive [rows, cols], got [" + str(rows) +
                     ", " + str(cols) + "]");
  if (static_cast<std::size_t>(rows * cols) != n)
    throw ShapeError(std::string(op) + ": w has " + str(static_cast<std::int64_t>(n)) +
                     " elements, expected [" + str(rows) + ", " + str(cols) +
                     "] = " + str(rows * cols));
}

void require_finite_weight(const char* op, double v, std::int64_t i, std::int64_t j) {
  if (!std::isfinite(v))
    throw NumericError(std::string(op) + ": w contains " + std::to_string(v) + " at [" + str(i) +
                       ", " + str(j) + "]");
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

}  // namespace

int act_scale_exponent(double amax, const ScaleRule& rule) {
  if (!(amax >= 0.0) || amax > kFltMax)
    throw NumericError("act_scale_exponent: amax = " + std::to_string(amax) +
                       ", expected a finite value in [0, FLT_MAX]");
  const float a = std::max(static_cast<float>(amax), static_cast<float>(rule.amax_floor));
  const float inv_qmax = 1.0f / static_cast<float>(rule.qmax);  // fp32(1/qmax), correctly rounded
  const float t = a * inv_qmax;                                 // one fp32 rounding, as KER
  V4REF_ASSERT(std::isnormal(t));                               // the floors keep t >= 2^-126
  return fmt::ceil_log2_fp32_bits(t);
}

int smallest_pow2_scale_exponent(double amax, double qmax) {
  V4REF_ASSERT(amax > 0.0 && std::isfinite(amax) && qmax > 0.0);
  // ldexp(amax, -k) stays near qmax, so it is exact (never subnormal) for the k tried here.
  int k = fmt::floor_log2(amax) - fmt::floor_log2(qmax);
  while (std::ldexp(amax, -k) > qmax) ++k;
  while (std::ldexp(amax, -(k - 1)) <= qmax) --k;
  return k;
}

void q8_fake_quant(std::span<const double> x, int block, std::span<double> out) {
  fake_quant(kQ8Format, x, block, out);
}
BlockCodes q8_quantize(std::span<const double> x, int block) {
  return quantize(kQ8Format, x, block);
}

void q4_fake_quant(std::span<const double> x, int block, std::span<double> out) {
  fake_quant(kQ4Format, x, block, out);
}
BlockCodes q4_quantize(std::span<const double> x, int block) {
  return quantize(kQ4Format, x, block);
}

Fp8BlockWeightCodes quantize_fp8_block_weight(std::span<const double> w, std::int64_t rows,
                                              std::int64_t cols) {
  constexpr const char* kOp = "quantize_fp8_block_weight";
  check_weight_shape(kOp, w.size(), rows, cols);
  Fp8BlockWeightCodes q{rows, cols, std::vector<std::uint8_t>(w.size()), {}};
  const std::int64_t brows = ceil_div(rows, kFp8WeightBlock),
                     bcols = ceil_div(cols, kFp8WeightBlock);
  q.scales.resize(static_cast<std::size_t>(brows * bcols));  // [brows, bcols]
  for (std::int64_t bi = 0; bi < brows; ++bi) {
    const std::int64_t i0 = bi * kFp8WeightBlock, i1 = std::min(rows, i0 + kFp8WeightBlock);
    for (std::int64_t bj = 0; bj < bcols; ++bj) {
      const std::int64_t j0 = bj * kFp8WeightBlock, j1 = std::min(cols, j0 + kFp8WeightBlock);
      double amax = 0.0;
      for (std::int64_t i = i0; i < i1; ++i)
        for (std::int64_t j = j0; j < j1; ++j) {
          const double v = w[static_cast<std::size_t>(i * cols + j)];
          require_finite_weight(kOp, v, i, j);
          amax = std::max(amax, std::fabs(v));
        }
      const int k = weight_scale_exponent(kOp, amax, kQ8Rule);
      const double s = fmt::pow2(k);
      for (std::int64_t i = i0; i < i1; ++i)
        for (std::int64_t j = j0; j < j1; ++j) {
          const auto idx = static_cast<std::size_t>(i * cols + j);
          q.codes[idx] = fmt::e4m3_encode(w[idx] / s, fmt::Saturation::kSatFinite);
        }
      q.scales[static_cast<std::size_t>(bi * bcols + bj)] = static_cast<std::uint8_t>(k + 127);
    }
  }
  return q;
}

Fp4ExpertWeightCodes quantize_fp4_expert_weight(std::span<const double> w, std::int64_t rows,
                                                std::int64_t cols) {
  constexpr const char* kOp = "quantize_fp4_expert_weight";
  check_weight_shape(kOp, w.size(), rows, cols);
  if (cols % kFp4WeightBlock != 0)
    throw ShapeError(std::string(kOp) + ": cols = " + str(cols) +
                     ", expected a multiple of the fp4 block 32");
  const std::int64_t nblk = cols / kFp4WeightBlock;
  Fp4ExpertWeightCodes q{rows, cols, std::vector<std::uint8_t>(w.size() / 2),
                         std::vector<std::uint8_t>(static_cast<std::size_t>(rows * nblk))};
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t b = 0; b < nblk; ++b) {
      const std::int64_t j0 = b * kFp4WeightBlock;
      const double* wb = w.data() + i * cols + j0;  // [32]
      double amax = 0.0;
      for (std::int64_t j = 0; j < kFp4WeightBlock; ++j) {
        require_finite_weight(kOp, wb[j], i, j0 + j);
        amax = std::max(amax, std::fabs(wb[j]));
      }
      const int k = weight_scale_exponent(kOp, amax, kQ4Rule);
      const double s = fmt::pow2(k);
      std::uint8_t* pb = q.packed.data() + (i * cols + j0) / 2;  // [16]
      for (std::int64_t j = 0; j < kFp4WeightBlock; j += 2)
        pb[j / 2] = fmt::fp4_pack(fmt::e2m1_encode(wb[j] / s), fmt::e2m1_encode(wb[j + 1] / s));
      q.scales[static_cast<std::size_t>(i * nblk + b)] = static_cast<std::uint8_t>(k + 127);
    }
  }
  return q;
}

}  // namespace v4ref::ref
