// Walsh–Hadamard rotation (v4-forward.md §2.4), Sylvester order, scale n^{-1/2}.
#include "v4ref/ref/hadamard.hpp"

#include <cmath>
#include <string>

#include "v4ref/ref/core/error.hpp"

namespace v4ref::ref {
namespace {
bool is_pow2(std::int64_t n) { return n >= 1 && (n & (n - 1)) == 0; }
}  // namespace

void hadamard_inplace(std::span<double> x) {
  const auto n = static_cast<std::int64_t>(x.size());
  if (!is_pow2(n))
    throw ShapeError("hadamard: length must be a power of two >= 1, got " + std::to_string(n));
  // Butterfly stage h combines (i, i+h) within blocks of 2h: after the stage for h, every block of
  // 2h holds H_{2h} applied to it — the Sylvester recursion H_{2k} = [[H_k, H_k], [H_k, −H_k]].
  for (std::int64_t h = 1; h < n; h *= 2)
    for (std::int64_t b = 0; b < n; b += 2 * h)
      for (std::int64_t i = b; i < b + h; ++i) {
        const double a = x[static_cast<std::size_t>(i)];
        const double c = x[static_cast<std::size_t>(i + h)];
        x[static_cast<std::size_t>(i)] = a + c;
        x[static_cast<std::size_t>(i + h)] = a - c;
      }
  const double s = 1.0 / std::sqrt(static_cast<double>(n));
  for (double& v : x) v *= s;
}

Mat hadamard_blocks(const Mat& x, std::int64_t n) {
  if (!is_pow2(n))
    throw ShapeError("hadamard_blocks: block length must be a power of two >= 1, got " + std::to_string(n));
  if (x.cols() % n != 0)
    throw ShapeError("hadamard_blocks: input width must be a multiple of " + std::to_string(n) +
                     ", got [" + std::to_string(x.rows()) + ", " + std::to_string(x.cols()) + "]");
  Mat y = x;
  for (Eigen::Index t = 0; t < y.rows(); ++t)
    for (Eigen::Index b = 0; b < y.cols(); b += n)
      hadamard_inplace(std::span<double>(y.row(t).data() + b, static_cast<std::size_t>(n)));
  return y;
}

}  // namespace v4ref::ref
