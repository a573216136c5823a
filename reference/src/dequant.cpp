// Exact dequantisation of fp8 block-scaled and fp4 expert weights into double, row range by
// row range (v4-forward.md §1.5, §15.5–15.6).
//
// Every product below is exact in double: an e4m3 value has 4 significant bits and an e2m1
// value 2, a ue8m0 scale is a power of two in [2^-127, 2^127] and an F32 scale has 24
// significant bits, so no rounding happens anywhere (§1.5 "every dequantised weight value is
// exactly representable").
#include "v4ref/ref/dequant.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"

namespace v4ref {
namespace {

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

std::string coords(std::int64_t i, std::int64_t j) {
  return "[" + std::to_string(i) + ", " + std::to_string(j) + "]";
}

// All 256 e4m3fn codes decoded once (§15.5); 0x7F and 0xFF are NaN.
const std::array<double, 256>& e4m3_table() {
  static const std::array<double, 256> table = [] {
    std::array<double, 256> t{};
    for (int b = 0; b < 256; ++b) t[static_cast<std::size_t>(b)] = fmt::e4m3_to_double(static_cast<std::uint8_t>(b));
    return t;
  }();
  return table;
}

bool e4m3_is_nan(std::uint8_t code) { return (code & 0x7F) == 0x7F; }

std::uint8_t byte_at(const TensorView& t, std::int64_t flat) {
  return std::to_integer<std::uint8_t>(t.bytes()[static_cast<std::size_t>(flat)]);
}

// First bad element of a scan and how many there were.
struct BadCount {
  std::int64_t count = 0;
  std::int64_t i = 0, j = 0;
  void add(std::int64_t ii, std::int64_t jj) {
    if (count++ == 0) i = ii, j = jj;
  }
};

// Rows [r0, r1) of a [rows, cols] weight into `out` of (r1 − r0)·cols doubles.
void check_row_range(const std::string& name, std::int64_t rows, std::int64_t cols,
                     std::int64_t r0, std::int64_t r1, std::size_t out_size) {
  if (r0 < 0 || r1 < r0 || r1 > rows)
    throw ShapeError(name + ": row range [" + std::to_string(r0) + ", " + std::to_string(r1) +
                     ") outside [0, " + std::to_string(rows) + ")");
  const auto need = static_cast<std::size_t>((r1 - r0) * cols);
  if (out_size != need)
    throw ShapeError(name + ": output for rows [" + std::to_string(r0) + ", " + std::to_string(r1) +
                     ") of " + std::to_string(cols) + " columns needs " + std::to_string(need) +
                     " doubles, got " + std::to_string(out_size));
}

// Checks scale rows [b0, b1): NaN, Inf or non-positive values are a NumericError naming the
// scale, the first bad block coordinates, the count and the weight they belong to.
void check_scales(const TensorView& scale, std::int64_t b0, std::int64_t b1, const std::string& weight,
                  std::int64_t r0, std::int64_t r1) {
  const std::int64_t nb = scale.dim(1);
  BadCount bad;
  double first = 0.0;
  for (std::int64_t bi = b0; bi < b1; ++bi) {
    for (std::int64_t bj = 0; bj < nb; ++bj) {
      const double s = scale.to_double(bi * nb + bj);
      if (!(std::isfinite(s) && s > 0.0)) {
        if (bad.count == 0) first = s;
        bad.add(bi, bj);
      }
    }
  }
  if (bad.count > 0)
    throw NumericError(scale.name() + " contains " + (std::isnan(first) ? "NaN" : "invalid scale " + std::to_string(first)) +
                       " at " + coords(bad.i, bad.j) + " (first of " + std::to_string(bad.count) +
                       "), needed for rows [" + std::to_string(r0) + ", " + std::to_string(r1) +
                       ") of " + weight);
}

std::string open_missing(const Checkpoint& ckpt, const std::string& tensor, const std::string& why) {
  return tensor + " not found in checkpoint " + ckpt.dir().string() + ": " + why;
}

}  // namespace

// ==================================================================== fp8 block weight

Fp8BlockWeight::Fp8BlockWeight(TensorView weight, TensorView scale)
    : weight_(std::move(weight)), scale_(std::move(scale)) {
  if (weight_.dtype() != DType::kF8E4M3)
    throw DtypeError(weight_.name() + ": fp8 block weight must be F8_E4M3, got " +
                     std::string(dtype_name(weight_.dtype())));
  if (scale_.dtype() != DType::kF8E8M0 && scale_.dtype() != DType::kF32)
    throw DtypeError(scale_.name() + ": scale of " + weight_.name() +
                     " must be F8_E8M0 or F32 (Flash-Base), got " + std::string(dtype_name(scale_.dtype())));
  if (weight_.rank() != 2)
    throw ShapeError(weight_.name() + ": fp8 block weight must be [out, in], got " +
                     shape_string(weight_.shape()));
  rows_ = weight_.dim(0);
  cols_ = weight_.dim(1);
  const Shape expected = {ceil_div(rows_, kBlock), ceil_div(cols_, kBlock)};  // §15.6
  if (scale_.shape() != expected)
    throw ShapeError(scale_.name() + ": expected " + shape_string(expected) + " for weight " +
                     shape_string(weight_.shape()) + " (fp8 128x128 blocks, " + weight_.name() +
                     "), got " + shape_string(scale_.shape()));
}

Fp8BlockWeight Fp8BlockWeight::open(const Checkpoint& ckpt, const std::string& name) {
  const std::string w = name + ".weight", s = name + ".scale";
  if (!ckpt.contains(w)) throw MissingTensor(open_missing(ckpt, w, "the fp8 weight " + name));
  if (!ckpt.contains(s))
    throw MissingTensor(open_missing(ckpt, s, "the block scales that " + w + " needs"));
  return Fp8BlockWeight(ckpt.tensor(w), ckpt.tensor(s));
}

void Fp8BlockWeight::dequant_rows(std::int64_t r0, std::int64_t r1, std::span<double> out) const {
  check_row_range(weight_.name(), rows_, cols_, r0, r1, out.size());
  if (r1 == r0) return;
  check_scales(scale_, r0 / kBlock, (r1 - 1) / kBlock + 1, weight_.name(), r0, r1);
  const auto& table = e4m3_table();
  const std::int64_t nbc = scale_.dim(1);
  BadCount bad;
  for (std::int64_t i = r0; i < r1; ++i) {
    double* row = out.data() + (i - r0) * cols_;  // [cols]
    for (std::int64_t bj = 0; bj < nbc; ++bj) {
      const double s = scale_.to_double((i / kBlock) * nbc + bj);
      const std::int64_t j1 = std::min(cols_, (bj + 1) * kBlock);
      for (std::int64_t j = bj * kBlock; j < j1; ++j) {
        const std::uint8_t code = byte_at(weight_, i * cols_ + j);
        if (e4m3_is_nan(code)) bad.add(i, j);
        row[j] = table[code] * s;
      }
    }
  }
  if (bad.count > 0)
    throw NumericError(weight_.name() + " contains NaN (e4m3 code 0x7F/0xFF) at " +
                       coords(bad.i, bad.j) + " (first of " + std::to_string(bad.count) +
                       " in rows [" + std::to_string(r0) + ", " + std::to_string(r1) + "))");
}

std::vector<double> Fp8BlockWeight::dequant_all() const {
  std::vector<double> out(static_cast<std::size_t>(rows_ * cols_));  // [rows, cols]
  dequant_rows(0, rows_, out);
  return out;
}

// ==================================================================== fp4 expert weight

Fp4ExpertWeight::Fp4ExpertWeight(TensorView packed, TensorView scale)
    : packed_(std::move(packed)), scale_(std::move(scale)) {
  if (packed_.dtype() != DType::kI8)
    throw DtypeError(packed_.name() + ": packed fp4 expert weight must be I8, got " +
                     std::string(dtype_name(packed_.dtype())));
  if (scale_.dtype() != DType::kF8E8M0)
    throw DtypeError(scale_.name() + ": scale of " + packed_.name() + " must be F8_E8M0, got " +
                     std::string(dtype_name(scale_.dtype())));
  if (packed_.rank() != 2)
    throw ShapeError(packed_.name() + ": packed fp4 weight must be [out, in/2], got " +
                     shape_string(packed_.shape()));
  rows_ = packed_.dim(0);
  cols_ = 2 * packed_.dim(1);  // two e2m1 values per byte (§15.5)
  const Shape expected = {rows_, ceil_div(cols_, kBlock)};  // §15.6: [out, in/32]
  if (scale_.shape() != expected)
    throw ShapeError(scale_.name() + ": expected " + shape_string(expected) + " for weight " +
                     shape_string(packed_.shape()) + " (fp4 packed, logical " +
                     shape_string({rows_, cols_}) + ", " + packed_.name() + "), got " +
                     shape_string(scale_.shape()));
}

Fp4ExpertWeight Fp4ExpertWeight::open(const Checkpoint& ckpt, const std::string& name) {
  const std::string w = name + ".weight", s = name + ".scale";
  if (!ckpt.contains(w)) throw MissingTensor(open_missing(ckpt, w, "the fp4 expert weight " + name));
  if (!ckpt.contains(s))
    throw MissingTensor(open_missing(ckpt, s, "the per-32 scales that " + w + " needs"));
  return Fp4ExpertWeight(ckpt.tensor(w), ckpt.tensor(s));
}

void Fp4ExpertWeight::dequant_rows(std::int64_t r0, std::int64_t r1, std::span<double> out) const {
  check_row_range(packed_.name(), rows_, cols_, r0, r1, out.size());
  if (r1 == r0) return;
  check_scales(scale_, r0, r1, packed_.name(), r0, r1);
  const std::int64_t packed_cols = cols_ / 2;
  const std::int64_t nbc = scale_.dim(1);
  std::array<double, 16> e2m1{};
  for (std::uint8_t c = 0; c < 16; ++c) e2m1[c] = fmt::e2m1_to_double(c);
  // Rows are independent and nothing below throws (scales checked above): parallel over rows,
  // each element computed the same way whatever the thread count.
#pragma omp parallel for schedule(static) if ((r1 - r0) * cols_ > (1 << 18))
  for (std::int64_t i = r0; i < r1; ++i) {
    double* row = out.data() + (i - r0) * cols_;  // [cols]
    std::vector<double> s(static_cast<std::size_t>(nbc));  // the row's per-32 scales
    for (std::int64_t b = 0; b < nbc; ++b) s[static_cast<std::size_t>(b)] = scale_.to_double(i * nbc + b);
    for (std::int64_t k = 0; k < packed_cols; ++k) {
      const std::uint8_t b = byte_at(packed_, i * packed_cols + k);  // I8 read as unsigned
      const std::int64_t j = 2 * k;
      row[j] = e2m1[fmt::fp4_low(b)] * s[static_cast<std::size_t>(j / kBlock)];
      row[j + 1] = e2m1[fmt::fp4_high(b)] * s[static_cast<std::size_t>((j + 1) / kBlock)];
    }
  }
}

std::vector<double> Fp4ExpertWeight::dequant_all() const {
  std::vector<double> out(static_cast<std::size_t>(rows_ * cols_));  // [rows, cols]
  dequant_rows(0, rows_, out);
  return out;
}

// ==================================================================== any tensor

namespace {

constexpr std::string_view kWeightSuffix = ".weight";

std::vector<double> decode_plain(const TensorView& t) {
  std::vector<double> out(static_cast<std::size_t>(t.numel()));
  for (std::int64_t k = 0; k < t.numel(); ++k) out[static_cast<std::size_t>(k)] = t.to_double(k);
  return out;
}

}  // namespace

std::vector<double> load_as_double(const Checkpoint& ckpt, const std::string& tensor_name) {
  const bool is_weight = tensor_name.size() > kWeightSuffix.size() &&
                         tensor_name.ends_with(kWeightSuffix);
  if (is_weight) {
    const std::string prefix = tensor_name.substr(0, tensor_name.size() - kWeightSuffix.size());
    const std::string scale_name = prefix + ".scale";
    if (ckpt.contains(scale_name)) {
      const TensorView w = ckpt.tensor(tensor_name);
      std::vector<double> values;
      Shape shape;
      if (w.dtype() == DType::kI8) {
        const Fp4ExpertWeight q(w, ckpt.tensor(scale_name));
        values = q.dequant_all();
        shape = {q.rows(), q.cols()};
      } else if (w.dtype() == DType::kF8E4M3) {
        const Fp8BlockWeight q(w, ckpt.tensor(scale_name));
        values = q.dequant_all();
        shape = {q.rows(), q.cols()};
      } else {
        throw DtypeError(tensor_name + " has a scale tensor " + scale_name + " but dtype " +
                         std::string(dtype_name(w.dtype())) +
                         "; expected I8 (fp4 expert) or F8_E4M3 (fp8 block)");
      }
      require_finite(values, shape, tensor_name);
      return values;
    }
  }
  const TensorView t = ckpt.tensor(tensor_name);
  std::vector<double> values = decode_plain(t);
  require_finite(values, t.shape(), tensor_name);
  return values;
}

void require_finite(std::span<const double> values, const Shape& shape, const std::string& tensor) {
  const std::int64_t numel = shape_numel(shape);
  if (static_cast<std::int64_t>(values.size()) != numel)
    throw ShapeError(tensor + ": " + std::to_string(values.size()) + " values for shape " +
                     shape_string(shape) + " (" + std::to_string(numel) + " elements)");
  std::int64_t count = 0;
  std::size_t first = 0;
  for (std::size_t k = 0; k < values.size(); ++k) {
    if (!std::isfinite(values[k]) && count++ == 0) first = k;
  }
  if (count == 0) return;
  // Unravel the flat index of the first bad value into coordinates (row-major).
  Shape at(shape.size());
  auto rest = static_cast<std::int64_t>(first);
  for (std::size_t d = shape.size(); d-- > 0;) {
    at[d] = rest % shape[d];
    rest /= shape[d];
  }
  const double v = values[first];
  const char* what = std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
  throw NumericError(tensor + " contains " + what + " at " + shape_string(at) + " (first of " +
                     std::to_string(count) + ")");
}

}  // namespace v4ref
