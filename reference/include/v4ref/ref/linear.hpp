// Dense matrices of the reference and the one linear-layer primitive (v4-forward.md §0.2: a
// linear with stored weight W ∈ R^{out×in} computes y = W x; no V4 linear has a bias).
//
// Activations are row-major [T, features] (one token per row); weights are [out, in] doubles
// holding the exactly dequantised stored values.
#pragma once

#include <Eigen/Dense>
#include <string>

#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref::ref {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vec = Eigen::VectorXd;

// How a weight is stored decides which rounding points apply to its linear (§2.5 item 1).
enum class WeightStorage {
  kFp8,   // e4m3 + 128x128 ue8m0 scales: W8A8 GEMM, Q8(input;128) under kActQ8
  kFp4,   // packed e2m1 + per-32 scales (routed experts): Q8(input;128) under kActQ8
  kBf16,  // used as stored (compressor, weights_proj, gate, head, wo_a after conversion)
  kF32,
};

struct LinearWeight {
  std::string name;  // tensor prefix, e.g. "layers.2.attn.wq_a"
  Mat w;             // [out, in]
  WeightStorage storage = WeightStorage::kBf16;
  // Whether the official forward fake-quantises this linear's input. True for fp8/fp4 weights
  // except wo_a, which the official converter dequantises to bf16 (§15.7).
  bool act_q8 = false;

  std::int64_t out_features() const { return w.rows(); }
  std::int64_t in_features() const { return w.cols(); }
};

// "[rows, cols]" for shape messages.
std::string dims(std::int64_t rows, std::int64_t cols);

// A stored 1-D tensor of n values (norm weights, biases, sinks) as double: ShapeError naming the
// tensor and both shapes otherwise; the loader's errors for missing tensors and NaN.
Vec load_vector(const Checkpoint& ckpt, const std::string& name, std::int64_t n);

// Loads "<prefix>.weight" (and its ".scale" when quantised), dequantised exactly into double.
// `expected` is the logical [out, in]; ShapeError naming the tensor on mismatch. `act_q8`
// defaults to "stored as fp8/fp4".
LinearWeight load_linear(const Checkpoint& ckpt, const std::string& prefix, std::int64_t out,
                         std::int64_t in);

// Y = X Wᵀ for X [T, in] -> [T, out]. Under kActQ8 (and lw.act_q8) each row of X is first
// fake-quantised with Q8(·;128); under kBf16Linear the output is rounded to bf16.
// ShapeError naming the weight if X has the wrong width.
Mat apply_linear(const LinearWeight& lw, const Mat& x, const PrecisionPolicy& policy);

// Rounds every element to bf16 when `point` is on in `policy`.
void round_bf16_if(Mat& m, const PrecisionPolicy& policy, QuantPoint point);

}  // namespace v4ref::ref
