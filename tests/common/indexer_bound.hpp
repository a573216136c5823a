// The allowance of the tolerance row index_logits.logits for a problem's logits (tests of the
// indexer's logits kernel on the executor and on the device): the exact logits in double, the
// row's abs bound and n_eff (compare/src/components.cpp), and the worst error ÷ allowance.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "indexer_inputs.hpp"
#include "v4ref/compare/tolerance.hpp"

namespace v4ref::test {

struct LogitsJudgement {
  double worst = 0;            // max |got − exact| / allowed over the visible entries
  std::int64_t visible = 0;    // entries compared
  std::int64_t zeros = 0;      // of them exactly 0 in `got`
  std::int64_t written_past = 0;  // entries past the visible prefix that are not `poison`
};

inline LogitsJudgement judge_logits(const IndexerData& d, const std::vector<float>& got, float poison) {
  const ExactLogits ex = exact_logits(d);
  compare::Mat ref(d.rows(), d.stride), bound(d.rows(), d.stride);
  for (std::int64_t r = 0; r < d.rows(); ++r)
    for (std::int64_t j = 0; j < d.stride; ++j) {
      const auto i = static_cast<std::size_t>(r * d.stride + j);
      ref(r, j) = std::isfinite(ex.logits[i]) ? ex.logits[i] : 0.0;
      bound(r, j) = ex.bound[i];
    }
  compare::AllowanceInputs in;
  in.ref = &ref;
  in.abs_bound = &bound;
  in.n_eff = index_logits_n_eff(d.format, d.heads);
  const compare::Mat allowed = compare::allowance(compare::require_tolerance("index_logits.logits", "fp32"), in);
  LogitsJudgement j;
  for (std::int64_t r = 0; r < d.rows(); ++r)
    for (std::int64_t e = 0; e < d.stride; ++e) {
      const auto i = static_cast<std::size_t>(r * d.stride + e);
      if (!std::isfinite(ex.logits[i])) {
        j.written_past += got[i] != poison ? 1 : 0;
        continue;
      }
      ++j.visible;
      j.zeros += got[i] == 0.0f ? 1 : 0;
      const double err = std::abs(static_cast<double>(got[i]) - ex.logits[i]);
      j.worst = std::max(j.worst, allowed(r, e) > 0 ? err / allowed(r, e) : (err > 0 ? 1e9 : 0.0));
    }
  return j;
}

}  // namespace v4ref::test
