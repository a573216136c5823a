// The table-driven differential runner (guide/verification.md §1–§9, §12).
//
// A component is registered once with: its outputs, the input kinds it supports, an input
// generator (deterministic from the case's seeds), the fp64 reference (the function in
// reference/, under the case's PrecisionPolicy) and a plain fp32 port (the baseline B of the
// "c x baseline + floor" rule, with the same storage rounding). An Implementation computes the
// component's outputs from the same inputs; the runner compares them with Rq (tight gate, the
// path's row of the tolerance table), with Rx when the case's mode is not exact (loose gate),
// prints a failure block and writes a replayable HDF5 bundle (bundle.hpp).
//
// Plugging in an implementation (a CUDA kernel, the fp32 CPU port, another library):
//
//   class MyKernels : public compare::Implementation {
//     std::string name() const override { return "cuda-sm90"; }
//     std::string path() const override { return "fp32"; }           // tolerance path
//     bool supports(const compare::Case& c) const override { return c.component == "rms_norm"; }
//     compare::TensorSet run(const compare::ComponentCall& call) const override {
//       const Mat& x = call.inputs.at("x");                           // names: component docs
//       ...                                                           // upload, launch, download
//       compare::TensorSet out;  out.put("out", y, "bf16");  return out;
//     }
//   };
//   for (const Case& c : compare::case_table()) if (impl.supports(c)) run_case(c, impl);
//
// A mutant (a deliberately wrong component) is the reference with one component swapped:
//   SwappedImplementation m(reference_implementation(), "rms_norm", my_wrong_rms_norm, "mut-rms");
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "v4ref/compare/case.hpp"
#include "v4ref/compare/metrics.hpp"
#include "v4ref/compare/tolerance.hpp"
#include "v4ref/ref/core/config.hpp"

namespace v4ref::compare {

// What a component function receives.
struct ComponentCall {
  const Case& c;
  const ModelConfig& cfg;
  PrecisionPolicy policy;
  const TensorSet& inputs;
};

using ComponentFn = std::function<TensorSet(const ComponentCall&)>;

struct ComponentSpec {
  std::string name;                  // "rms_norm"
  std::string summary;               // what it computes and the spec section
  std::vector<std::string> inputs;   // input names, in order (documentation and bundles)
  std::vector<std::string> outputs;  // outputs an implementation must return
  std::vector<InputKind> kinds;      // supported input recipes
  // Generates the inputs of a case (deterministic from c.tensor_seed).
  std::function<TensorSet(const Case&, const ModelConfig&)> make_inputs;
  ComponentFn reference;      // fp64 reference; may add extra (reference-only) outputs:
                              // "<out>.abs_bound" (M of kBound rows), "selection_scores"
  ComponentFn baseline_fp32;  // fp32 port with the policy's storage rounding
  // Output -> the index output it is aligned by (route weights by routed expert id).
  std::vector<std::pair<std::string, std::string>> align_by;
  // Effective reduction length n_eff of kBound rows, per output (0 when unused).
  std::function<double(const Case&, const ModelConfig&, std::string_view output)> n_eff;
};

// Every registered component, in a fixed order.
const std::vector<ComponentSpec>& components();
// ConfigError listing the registered names when unknown.
const ComponentSpec& component(std::string_view name);

// The default case table: every component over tiny configs and input kinds, plus one real-shape
// case per component (slow = true where it takes more than about a second under ASan).
std::vector<Case> case_table(std::uint64_t global_seed = global_seed_from_env());

// The config a case names (preset_config, cached).
const ModelConfig& case_config(const Case& c);

// ------------------------------------------------------------------ implementations

class Implementation {
 public:
  virtual ~Implementation() = default;
  virtual std::string name() const = 0;
  // Tolerance path of its arithmetic: "fp64" or "fp32" (tolerance.hpp).
  virtual std::string path() const = 0;
  virtual bool supports(const Case& c) const = 0;
  // The component's outputs (every name of ComponentSpec::outputs, reference shapes) for the
  // call's inputs and policy. May throw; the runner reports the exception as the failure.
  virtual TensorSet run(const ComponentCall& call) const = 0;
};

// The fp64 reference itself (path fp64): passes every case bitwise; the base of mutants.
std::shared_ptr<const Implementation> reference_implementation();
// The fp32 ports used as baselines (path fp32): a plain fp32 implementation of each component.
std::shared_ptr<const Implementation> fp32_implementation();

// `base` with component `component` replaced by `fn` (a mutant, or a partial port).
class SwappedImplementation final : public Implementation {
 public:
  SwappedImplementation(std::shared_ptr<const Implementation> base, std::string component,
                        ComponentFn fn, std::string name, std::string path = "");
  std::string name() const override { return name_; }
  std::string path() const override { return path_; }
  bool supports(const Case& c) const override;
  TensorSet run(const ComponentCall& call) const override;

 private:
  std::shared_ptr<const Implementation> base_;
  std::string component_;
  ComponentFn fn_;
  std::string name_, path_;
};

// Implementations known by name (for `v4ref replay` to rerun one). "reference" and "fp32" are
// built in; tests and kernel libraries register theirs.
using ImplementationFactory = std::function<std::shared_ptr<const Implementation>()>;
void register_implementation(const std::string& name, ImplementationFactory factory);
std::shared_ptr<const Implementation> find_implementation(
    std::string_view name);  // nullptr if unknown
std::vector<std::string> implementation_names();

// ------------------------------------------------------------------ running and judging

struct RunnerOptions {
  // Failure bundles go to <bundle_dir>/<suite>/<case test name>-<seed8>.h5; empty: none written.
  std::filesystem::path bundle_dir = "failures";
  std::string suite = "diff";
  // The command that reruns the case, stored in the bundle (default: v4ref replay <bundle>).
  std::string command;
};

// The verdict on one output against one reference.
struct OutputJudgement {
  std::string output;             // "out"
  std::string gate;               // "tight" (vs Rq) or "loose" (vs Rx)
  std::string row_key, row_path;  // the tolerance row used
  std::string rule;               // rule_text(row)
  std::string dtype;              // the reference's output dtype
  Metrics metrics;
  double base_err = -1;     // max_abs(B, R) when the rule uses B, else −1
  double bound_ratio = -1;  // max_i |k_i − r_i| / allowed_i (elementwise rules)
  ElementRef bound_at;      // where bound_ratio is attained
  double allowed_at = 0;    // allowed_i there
  double median_allowed = 0;
  std::optional<SetAgreement> set;
  bool pass = false;
  std::vector<std::string> failures;  // why it failed, one line each
  std::vector<std::string> notes;
};

struct CaseResult {
  Case c;
  std::string implementation;
  std::string path;
  bool pass = false;
  std::string error;  // exception text when a side threw
  std::vector<OutputJudgement> outputs;
  std::filesystem::path bundle;  // written bundle, empty if none
  std::string command;           // replay command
  double seconds = 0;

  // The failure block of guide §3 (or a one-line PASS), all lines greppable.
  std::string report() const;
  nlohmann::json to_json() const;
};

// Generates the case's inputs, runs `impl`, judges it and (on failure) writes a bundle.
CaseResult run_case(const Case& c, const Implementation& impl, const RunnerOptions& opts = {});

// Judges given implementation outputs on given inputs: recomputes Rq, Rx and B. No bundle.
// `impl_out` null means the implementation threw (`error` holds why).
CaseResult judge_case(const Case& c, const std::string& impl_name, const std::string& path,
                      const TensorSet& inputs, const TensorSet* impl_out,
                      const std::string& error = "");

// The reference outputs Rq (case policy), Rx (exact; only when the mode is not exact) and the
// baseline B (fp32 port, case policy) of a case's inputs.
struct References {
  TensorSet ref_q, ref_x, baseline;
};
References compute_references(const Case& c, const TensorSet& inputs);

// judge_case with references already computed (compute_references on the same inputs).
CaseResult judge_case(const Case& c, const std::string& impl_name, const std::string& path,
                      const References& refs, const TensorSet* impl_out,
                      const std::string& error = "");

}  // namespace v4ref::compare
