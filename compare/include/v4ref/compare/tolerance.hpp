// The tolerance table (guide/verification.md §4, §5): one row per (output, precision path), each
// with the rule that turns the reference output into an allowance and the reason for its
// constants. The rows themselves live in ONE place, compare/src/tolerance_table.cpp; this header
// declares the row type, the lookup and the allowance formulas.
//
// Keys:
//   "<component>.<output>"   outputs of the differential runner (runner.hpp), e.g. "rms_norm.out"
//   "trace.<local glob>"     trace points for `v4ref bisect`, matched against the local key of a
//                            point ("attn.o", "hc_ffn.comb", "logits"; '*' and '?' as in
//                            ref::glob_match); the first matching row in table order wins
// Paths:
//   runner  "fp64"   a double-precision implementation (another fp64 port, a mutant) vs Rq
//           "fp32"   fp32 accumulation with the case's storage rounding (a kernel, the fp32 CPU
//                    port) vs Rq: the tight gate
//           "loose"  any implementation vs Rx (exact math): checks the quantisation design;
//                    applied only when the case's precision mode is not exact
//   trace   "fp64", "fp32", "bf16" (a forward whose stored activations are bf16), and "baseline"
//           (when bisect is given an fp32 baseline trace)
//   "*" in a row matches every path (except "loose": a loose gate needs an explicit row).
//
// Rules (allowed_i: allowance of element i; ratio = |k_i − r_i| / allowed_i, gate ratio <= 1):
//   kExact        k == r bitwise (equal values; NaN pattern equal)
//   kUlp          ulp(k_i, r_i) <= c in the output's float type
//   kBaseline     allowed_i = c · max_abs(B, R) + floor · ulp_out(max(|r_i|, rms(r)))
//                 (FlashAttention's rule; B = the fp32 baseline on the same inputs)
//   kBound        allowed_i = c · n_eff · u_acc · M_i + u_out · |r_i| + floor · ulp_out(rms(r))
//                 (Higham's γ_n bound with M = the reference's abs-bound tensor, "<out>.abs_bound",
//                 and n_eff from the component, e.g. the butterfly depth)
//   kRelRms       allowed_i = c · |r_i| + floor · rms(r)
//   kNearTieSet   selections agree up to swaps whose reference scores lie within
//                 τ_j = c · allowed_j(scores) of the threshold (metrics.hpp compare_selections);
//                 `aux` names the score tensor, `aux_row` the row that gives allowed(scores)
//   kStatistical  rel_fro(k, r) <= c (and cos_diff <= cos_diff_max when set): for trace points
//                 and loose gates, where an elementwise bound is not available
// Any row may add a cos_diff gate (cos_diff_max > 0).
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "v4ref/compare/metrics.hpp"

namespace v4ref::compare {

enum class Rule { kExact, kUlp, kBaseline, kBound, kRelRms, kNearTieSet, kStatistical };

std::string_view rule_name(Rule r);

struct ToleranceRow {
  std::string_view key;
  std::string_view path;
  Rule rule = Rule::kExact;
  double c = 0;              // the rule's constant (see above)
  double floor = 0;          // kBaseline/kBound: ulps of the output type; kRelRms: × rms(r)
  double cos_diff_max = 0;   // extra gate; 0 = none
  std::string_view aux;      // kNearTieSet: score tensor name
  std::string_view aux_row;  // kNearTieSet: key of the row giving allowed(scores)
  std::string_view reason;   // derivation of the constants
};

// Every row, in table order.
std::span<const ToleranceRow> tolerance_table();

// The row for (key, path): runner keys match exactly; "trace.*" keys by glob, first match wins.
// nullptr when none.
const ToleranceRow* find_tolerance(std::string_view key, std::string_view path);
// The same, ConfigError naming the key, the path and the paths the table has for the key.
const ToleranceRow& require_tolerance(std::string_view key, std::string_view path);

// One line: "kBaseline c=2 floor=2ulp: max_abs <= 2 x base_err + 2 ulp_out".
std::string rule_text(const ToleranceRow& row);

// Float type in which a path accumulates: fp64 for "fp64", fp32 otherwise.
FloatType path_float_type(std::string_view path);

// Inputs of the elementwise allowance.
struct AllowanceInputs {
  const Mat* ref = nullptr;        // R (required)
  double base_err = 0;             // kBaseline: max_abs(B, R)
  const Mat* abs_bound = nullptr;  // kBound: M, same shape as R
  double n_eff = 0;                // kBound: effective reduction length (see rule)
  FloatType acc = FloatType::kFp32;
  FloatType out = FloatType::kFp32;
};

// allowed_i for kBaseline, kBound, kRelRms (same shape as R); kExact gives zeros. Error for the
// other rules, and for kBound without M.
Mat allowance(const ToleranceRow& row, const AllowanceInputs& in);

}  // namespace v4ref::compare
