// Helpers shared by the Muon tests on the CPU executor and on the device: the reference
// rounding policy built from the kernel's declared precision points (verification.md §2:
// "policy of(kernel)") and the metrics the gates use.
#pragma once

#include <algorithm>
#include <cmath>

#include "v4ref/cuda/muon.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/muon.hpp"

namespace v4ref::test {

// The reference policy of(kernel): built from the CUDA header's declared list.
inline ref::NsRounding rounding_of_kernel() {
  using cuda::NsPrecisionPoint;
  ref::NsRounding r;
  r.input_bf16 = cuda::muon_ns_rounds_at(NsPrecisionPoint::kInputStoreBf16);
  r.gram_bf16 = cuda::muon_ns_rounds_at(NsPrecisionPoint::kGramStoreBf16);
  r.poly_bf16 = cuda::muon_ns_rounds_at(NsPrecisionPoint::kPolyStoreBf16);
  r.update_bf16 = cuda::muon_ns_rounds_at(NsPrecisionPoint::kUpdateStoreBf16);
  return r;
}

// ||k − r||_F / ||r||_F
inline double rel_fro(const ref::MuonMatrix& k, const ref::MuonMatrix& r) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < k.data.size(); ++i) {
    d += (k.data[i] - r.data[i]) * (k.data[i] - r.data[i]);
    n += r.data[i] * r.data[i];
  }
  return std::sqrt(d / n);
}

inline double max_abs(const ref::MuonMatrix& k, const ref::MuonMatrix& r) {
  double d = 0;
  for (std::size_t i = 0; i < k.data.size(); ++i) d = std::max(d, std::abs(k.data[i] - r.data[i]));
  return d;
}

// Spacing of bf16 at |x| (normal range; the subnormal spacing below it).
inline double ulp_bf16(double x) {
  const double a = std::abs(x);
  return a < 0x1.0p-126 ? 0x1.0p-133 : fmt::pow2(fmt::floor_log2(a) - 7);
}

}  // namespace v4ref::test
