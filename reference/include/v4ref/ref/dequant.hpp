// Exact dequantisation of stored weights into double, per row block or per expert, on demand
// (v4-forward.md §1.5, §15.5–15.6). A real Flash layer does not fit in 24 GiB as double, so
// nothing here materialises more than the rows asked for.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "v4ref/ref/safetensors.hpp"

namespace v4ref {

// An fp8 e4m3 weight [out, in] with block scales [ceil(out/128), ceil(in/128)] stored as
// F8_E8M0 (released checkpoints) or F32 (Flash-Base experts):
//   W[i, j] = e4m3(Q[i, j]) · S[i/128, j/128].
class Fp8BlockWeight {
 public:
  static constexpr std::int64_t kBlock = 128;
  // `name` is the weight's prefix without ".weight", e.g. "layers.0.attn.wq_a".
  static Fp8BlockWeight open(const Checkpoint& ckpt, const std::string& name);
  Fp8BlockWeight(TensorView weight, TensorView scale);  // validates dtypes and shapes

  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  // Rows [r0, r1) into out (row-major, (r1−r0)·cols doubles). NumericError with coordinates
  // on a NaN weight code or a NaN/non-positive scale.
  void dequant_rows(std::int64_t r0, std::int64_t r1, std::span<double> out) const;
  std::vector<double> dequant_all() const;
  const TensorView& weight() const { return weight_; }
  const TensorView& scale() const { return scale_; }

 private:
  TensorView weight_, scale_;
  std::int64_t rows_ = 0, cols_ = 0;
};

// A routed-expert fp4 e2m1 weight, logical [out, in], stored packed as I8 [out, in/2] (low
// nibble = even column) with F8_E8M0 scales [out, in/32]:
//   W[i, j] = e2m1(nib(i, j)) · S[i, j/32].
class Fp4ExpertWeight {
 public:
  static constexpr std::int64_t kBlock = 32;
  static Fp4ExpertWeight open(const Checkpoint& ckpt, const std::string& name);
  Fp4ExpertWeight(TensorView packed, TensorView scale);  // validates dtypes and shapes

  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }  // logical columns = 2 × packed columns
  void dequant_rows(std::int64_t r0, std::int64_t r1, std::span<double> out) const;
  std::vector<double> dequant_all() const;
  const TensorView& packed() const { return packed_; }
  const TensorView& scale() const { return scale_; }

 private:
  TensorView packed_, scale_;
  std::int64_t rows_ = 0, cols_ = 0;
};

// Any stored tensor as double: plain dtypes decoded exactly; "<name>.weight" with a "<name>.scale"
// beside it dequantised (fp8 block or fp4 expert, chosen by dtype and scale shape). Rejects NaN
// and Inf with the tensor name and the coordinates of the first bad element.
std::vector<double> load_as_double(const Checkpoint& ckpt, const std::string& tensor_name);

// Throws NumericError "<tensor> contains NaN at [i, j] (first of n)" if any value is not finite.
void require_finite(std::span<const double> values, const Shape& shape, const std::string& tensor);

}  // namespace v4ref
