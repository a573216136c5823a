// The linear-layer primitive (v4-forward.md §0.2, §2.5 item 1, §12).
#include "v4ref/ref/linear.hpp"

#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/dequant.hpp"
#include "v4ref/ref/quant.hpp"

namespace v4ref::ref {

std::string dims(std::int64_t rows, std::int64_t cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

Vec load_vector(const Checkpoint& ckpt, const std::string& name, std::int64_t n) {
  ckpt.tensor(name).require_shape({n});
  const std::vector<double> v = load_as_double(ckpt, name);
  return Eigen::Map<const Vec>(v.data(), n);
}

LinearWeight load_linear(const Checkpoint& ckpt, const std::string& prefix, std::int64_t out,
                         std::int64_t in) {
  LinearWeight lw;
  lw.name = prefix;
  const std::string wname = prefix + ".weight";
  const TensorView t = ckpt.tensor(wname);
  const bool has_scale = ckpt.contains(prefix + ".scale");
  if (t.dtype() == DType::kI8 && has_scale) {
    lw.storage = WeightStorage::kFp4;
  } else if (t.dtype() == DType::kF8E4M3) {
    if (!has_scale) throw MissingTensor(prefix + ".scale (scale of fp8 weight " + wname + ") not found");
    lw.storage = WeightStorage::kFp8;
  } else if (t.dtype() == DType::kBF16) {
    lw.storage = WeightStorage::kBf16;
  } else if (t.dtype() == DType::kF32) {
    lw.storage = WeightStorage::kF32;
  } else {
    throw DtypeError(wname + ": dtype " + std::string(dtype_name(t.dtype())) + " is not a linear weight dtype");
  }
  lw.act_q8 = lw.storage == WeightStorage::kFp8 || lw.storage == WeightStorage::kFp4;
  const std::vector<double> values = load_as_double(ckpt, wname);
  if (static_cast<std::int64_t>(values.size()) != out * in)
    throw ShapeError(wname + ": expected logical [" + std::to_string(out) + ", " + std::to_string(in) +
                     "], got " + shape_string(t.shape()) + " (" + std::to_string(values.size()) + " values)");
  lw.w = Eigen::Map<const Mat>(values.data(), out, in);
  return lw;
}

void round_bf16_if(Mat& m, const PrecisionPolicy& policy, QuantPoint point) {
  if (!policy.on(point)) return;
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = fmt::round_bf16(m.data()[i]);
}

Mat apply_linear(const LinearWeight& lw, const Mat& x, const PrecisionPolicy& policy) {
  if (x.cols() != lw.w.cols())
    throw ShapeError(lw.name + ": input is [" + std::to_string(x.rows()) + ", " + std::to_string(x.cols()) +
                     "], expected [T, " + std::to_string(lw.w.cols()) + "]");
  Mat y;
  if (lw.act_q8 && policy.on(QuantPoint::kActQ8)) {
    Mat xq(x.rows(), x.cols());
    for (Eigen::Index t = 0; t < x.rows(); ++t)
      q8_fake_quant(std::span<const double>(x.row(t).data(), static_cast<std::size_t>(x.cols())), 128,
                    std::span<double>(xq.row(t).data(), static_cast<std::size_t>(x.cols())));
    y = xq * lw.w.transpose();
  } else {
    y = x * lw.w.transpose();
  }
  round_bf16_if(y, policy, QuantPoint::kBf16Linear);
  return y;
}

}  // namespace v4ref::ref
