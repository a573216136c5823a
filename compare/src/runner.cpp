// The differential runner: implementations, judging against the tolerance table, failure
// reports and bundles (runner.hpp).
#include "v4ref/compare/runner.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>

#include "v4ref/compare/bundle.hpp"
#include "v4ref/ref/core/error.hpp"

namespace v4ref::compare {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// ------------------------------------------------------------------ built-in implementations

class ReferenceImplementation final : public Implementation {
 public:
  std::string name() const override { return "reference"; }
  std::string path() const override { return "fp64"; }
  bool supports(const Case&) const override { return true; }
  TensorSet run(const ComponentCall& call) const override {
    const ComponentSpec& spec = component(call.c.component);
    const TensorSet all = spec.reference(call);
    TensorSet out;  // only the outputs an implementation returns
    for (const std::string& o : spec.outputs) out.put(o, all.at(o), all.dtype(o));
    return out;
  }
};

class Fp32Implementation final : public Implementation {
 public:
  std::string name() const override { return "fp32"; }
  std::string path() const override { return "fp32"; }
  bool supports(const Case& c) const override {
    return static_cast<bool>(component(c.component).baseline_fp32);
  }
  TensorSet run(const ComponentCall& call) const override {
    return component(call.c.component).baseline_fp32(call);
  }
};

struct Registry {
  std::mutex mu;
  std::map<std::string, ImplementationFactory, std::less<>> factories;
  Registry() {
    factories["reference"] = [] { return reference_implementation(); };
    factories["fp32"] = [] { return fp32_implementation(); };
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

FloatType out_float_type(const std::string& dtype, FloatType acc) {
  if (dtype == "bf16") return FloatType::kBf16;
  return acc;
}

std::string local_output(std::string_view key) {
  const auto dot = key.find('.');
  return std::string(dot == std::string_view::npos ? key : key.substr(dot + 1));
}

// allowed_i of an output under an elementwise row (baseline, bound, rel_rms, exact).
Mat output_allowance(const ToleranceRow& row, const Case& c, const std::string& output,
                     const Mat& r, const std::string& dtype, const References& refs,
                     const std::string& path, double* base_err) {
  const ComponentSpec& spec = component(c.component);
  AllowanceInputs in;
  in.ref = &r;
  in.acc = path_float_type(path);
  in.out = out_float_type(dtype, in.acc);
  if (row.rule == Rule::kBaseline) {
    if (!refs.baseline.has(output))
      throw Error("tolerance row " + std::string(row.key) + " needs the fp32 baseline of " +
                  output + ", which component " + c.component + " does not provide");
    const Metrics mb = compare_tensors(refs.baseline.at(output), r, {},
                                       c.component + "." + output + " (baseline)");
    in.base_err = mb.max_abs;
    if (base_err != nullptr) *base_err = mb.max_abs;
  }
  if (row.rule == Rule::kBound) {
    const std::string m = output + ".abs_bound";
    if (refs.ref_q.has(m)) in.abs_bound = &refs.ref_q.at(m);
    in.n_eff = spec.n_eff ? spec.n_eff(c, case_config(c), output) : 0.0;
  }
  return allowance(row, in);
}

// Judges K's output against R under one row.
OutputJudgement judge_output(const ToleranceRow& row, const std::string& gate, const Case& c,
                             const std::string& output, const TensorSet& impl, const Mat& r,
                             const std::string& dtype, const References& refs,
                             const std::string& path) {
  const ComponentSpec& spec = component(c.component);
  OutputJudgement j;
  j.output = output;
  j.gate = gate;
  j.row_key = row.key;
  j.row_path = row.path;
  j.rule = rule_text(row);
  j.dtype = dtype;
  auto fail = [&](const std::string& why) { j.failures.push_back(why); };
  if (!impl.has(output)) {
    fail("implementation returned no \"" + output + "\"");
    return j;
  }
  Mat k = impl.at(output);
  if (k.rows() != r.rows() || k.cols() != r.cols()) {
    fail(c.component + "." + output + ": implementation output is [" + std::to_string(k.rows()) +
         ", " + std::to_string(k.cols()) + "], reference is [" + std::to_string(r.rows()) + ", " +
         std::to_string(r.cols()) + "]");
    return j;
  }
  // Outputs aligned by an index output (route weights by expert id).
  Mat mask;
  for (const auto& [o, by] : spec.align_by)
    if (o == output && impl.has(by)) {
      const Mat& ref_idx = gate == "loose" ? refs.ref_x.at(by) : refs.ref_q.at(by);
      Aligned a = align_by_index(k, impl.at(by), ref_idx);
      k = std::move(a.values);
      mask = std::move(a.mask);
      if (a.missing > 0)
        j.notes.push_back(std::to_string(a.missing) +
                          " element(s) skipped: their index is not selected by the implementation");
    }
  MetricOptions mo;
  if (mask.size() > 0) mo.mask = &mask;
  const FloatType acc = path_float_type(path);
  if (row.rule == Rule::kUlp || dtype == "bf16" || dtype == "f32" || dtype == "f64")
    mo.ulp = out_float_type(dtype, acc);
  j.metrics = compare_tensors(k, r, mo, c.component + "." + output);
  const Metrics& m = j.metrics;
  if (m.nonfinite_mismatch > 0)
    fail("nonfinite pattern differs at " + std::to_string(m.nonfinite_mismatch) +
         " element(s), first " + m.first_nonfinite_mismatch.str());
  if (m.both_zero && r.size() > 0 && c.kind != InputKind::kAllMasked)
    fail("both tensors are zero (the case does not declare a zero output)");

  switch (row.rule) {
    case Rule::kExact:
      if (m.max_abs != 0) fail("not exact: " + m.summary());
      break;
    case Rule::kUlp:
      if (static_cast<double>(m.max_ulp) > row.c)
        fail("ulp " + std::to_string(m.max_ulp) + " > " + num(row.c) + " at " + m.max_ulp_at.str());
      break;
    case Rule::kBaseline:
    case Rule::kBound:
    case Rule::kRelRms: {
      const Mat allowed = output_allowance(row, c, output, r, dtype, refs, path, &j.base_err);
      std::vector<double> al;
      al.reserve(static_cast<std::size_t>(allowed.size()));
      double worst = 0;
      for (Eigen::Index i = 0; i < r.rows(); ++i)
        for (Eigen::Index q = 0; q < r.cols(); ++q) {
          if (mask.size() > 0 && mask(i, q) == 0) continue;
          if (!std::isfinite(k(i, q)) || !std::isfinite(r(i, q))) continue;
          al.push_back(allowed(i, q));
          const double d = std::fabs(k(i, q) - r(i, q));
          const double ratio = allowed(i, q) > 0 ? d / allowed(i, q) : (d == 0 ? 0.0 : HUGE_VAL);
          if (!j.bound_at.valid() || ratio > worst) {
            worst = ratio;
            j.bound_at = {i, q, k(i, q), r(i, q)};
            j.allowed_at = allowed(i, q);
          }
        }
      j.bound_ratio = worst;
      j.median_allowed = median(al);
      if (worst > 1)
        fail("bound_ratio " + num(worst) + " (" + num(100 * worst) + "% of allowed) at " +
             j.bound_at.str() + " allowed=" + num(j.allowed_at));
      // Vacuity (guide §8): a tolerance as large as the signal cannot fail.
      if (m.rms_ref > 0 && j.median_allowed * 10 > m.rms_ref)
        fail("vacuous tolerance: median allowed " + num(j.median_allowed) +
             " > rms(R)/10 = " + num(m.rms_ref / 10));
      break;
    }
    case Rule::kNearTieSet: {
      const TensorSet& rs = gate == "loose" ? refs.ref_x : refs.ref_q;
      const Mat& scores = rs.at(row.aux);
      const ToleranceRow& srow = require_tolerance(row.aux_row, path);
      const std::string sout = local_output(row.aux_row);
      const Mat allowed =
          output_allowance(srow, c, sout, rs.at(sout), rs.dtype(sout), refs, path, nullptr);
      Mat tau = row.c * allowed;
      for (Eigen::Index i = 0; i < tau.size(); ++i)
        if (!std::isfinite(tau.data()[i])) tau.data()[i] = 0;
      j.set = compare_selections(k, r, scores, tau);
      if (!j.set->pass())
        fail("selection: " + j.set->summary());
      else if (j.set->swaps > 0)
        j.notes.push_back(std::to_string(j.set->swaps) +
                          " explained near-tie swap(s), worst |s-θ|/τ " +
                          num(j.set->worst_tie_ratio));
      break;
    }
    case Rule::kStatistical:
      if (!(m.rel_fro <= row.c)) fail("rel_fro " + num(m.rel_fro) + " > " + num(row.c));
      break;
  }
  if (row.cos_diff_max > 0 && !m.both_zero && !(m.cos_diff <= row.cos_diff_max))
    fail("cos_diff " + num(m.cos_diff) + " > " + num(row.cos_diff_max));
  j.pass = j.failures.empty();
  return j;
}

std::string hex8(std::uint64_t seed) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08llx", static_cast<unsigned long long>(seed >> 32));
  return buf;
}

}  // namespace

// ------------------------------------------------------------------ implementations

std::shared_ptr<const Implementation> reference_implementation() {
  static const auto impl = std::make_shared<const ReferenceImplementation>();
  return impl;
}

std::shared_ptr<const Implementation> fp32_implementation() {
  static const auto impl = std::make_shared<const Fp32Implementation>();
  return impl;
}

SwappedImplementation::SwappedImplementation(std::shared_ptr<const Implementation> base,
                                             std::string component_name, ComponentFn fn,
                                             std::string name, std::string path)
    : base_(std::move(base)),
      component_(std::move(component_name)),
      fn_(std::move(fn)),
      name_(std::move(name)),
      path_(std::move(path)) {
  if (!base_) throw Error("SwappedImplementation " + name_ + ": no base implementation");
  component(component_);  // error if unknown
  if (path_.empty()) path_ = base_->path();
}

bool SwappedImplementation::supports(const Case& c) const {
  return c.component == component_ || base_->supports(c);
}

TensorSet SwappedImplementation::run(const ComponentCall& call) const {
  return call.c.component == component_ ? fn_(call) : base_->run(call);
}

void register_implementation(const std::string& name, ImplementationFactory factory) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.factories[name] = std::move(factory);
}

std::shared_ptr<const Implementation> find_implementation(std::string_view name) {
  Registry& r = registry();
  ImplementationFactory f;
  {
    std::lock_guard lock(r.mu);
    const auto it = r.factories.find(name);
    if (it == r.factories.end()) return nullptr;
    f = it->second;
  }
  return f();
}

std::vector<std::string> implementation_names() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  std::vector<std::string> out;
  for (const auto& [k, v] : r.factories) out.push_back(k);
  return out;
}

// ------------------------------------------------------------------ references and judging

References compute_references(const Case& c, const TensorSet& inputs) {
  const ComponentSpec& spec = component(c.component);
  const ModelConfig& cfg = case_config(c);
  References r;
  const ComponentCall q{c, cfg, c.policy(), inputs};
  r.ref_q = spec.reference(q);
  if (c.mode != PrecisionMode::kExact) {
    const ComponentCall x{c, cfg, PrecisionPolicy::exact(), inputs};
    r.ref_x = spec.reference(x);
  }
  if (spec.baseline_fp32) r.baseline = spec.baseline_fp32(q);
  return r;
}

namespace {

CaseResult judge_with(const Case& c, const std::string& impl_name, const std::string& path,
                      const TensorSet* impl_out, const std::string& error, const References& refs) {
  const ComponentSpec& spec = component(c.component);
  CaseResult res;
  res.c = c;
  res.implementation = impl_name;
  res.path = path;
  res.error = error;
  if (impl_out == nullptr) {
    res.pass = false;
    if (res.error.empty()) res.error = "implementation produced no outputs";
    return res;
  }
  bool pass = true;
  for (const std::string& o : spec.outputs) {
    const std::string key = c.component + "." + o;
    const ToleranceRow* tight = find_tolerance(key, path);
    if (tight == nullptr) {
      OutputJudgement j;
      j.output = o;
      j.gate = "tight";
      j.failures.push_back("no tolerance row for " + key + " on path " + path);
      res.outputs.push_back(j);
      pass = false;
      continue;
    }
    try {
      res.outputs.push_back(judge_output(*tight, "tight", c, o, *impl_out, refs.ref_q.at(o),
                                         refs.ref_q.dtype(o), refs, path));
    } catch (const std::exception& e) {
      OutputJudgement j;
      j.output = o;
      j.gate = "tight";
      j.failures.push_back(std::string("judging failed: ") + e.what());
      res.outputs.push_back(j);
    }
    pass = pass && res.outputs.back().pass;
    if (c.mode != PrecisionMode::kExact)
      if (const ToleranceRow* loose = find_tolerance(key, "loose");
          loose != nullptr && loose->path == "loose") {
        try {
          res.outputs.push_back(judge_output(*loose, "loose", c, o, *impl_out, refs.ref_x.at(o),
                                             refs.ref_x.dtype(o), refs, path));
        } catch (const std::exception& e) {
          OutputJudgement j;
          j.output = o;
          j.gate = "loose";
          j.failures.push_back(std::string("judging failed: ") + e.what());
          res.outputs.push_back(j);
        }
        pass = pass && res.outputs.back().pass;
      }
  }
  res.pass = pass && res.error.empty();
  return res;
}

}  // namespace

CaseResult judge_case(const Case& c, const std::string& impl_name, const std::string& path,
                      const TensorSet& inputs, const TensorSet* impl_out,
                      const std::string& error) {
  return judge_with(c, impl_name, path, impl_out, error, compute_references(c, inputs));
}

CaseResult judge_case(const Case& c, const std::string& impl_name, const std::string& path,
                      const References& refs, const TensorSet* impl_out, const std::string& error) {
  return judge_with(c, impl_name, path, impl_out, error, refs);
}

CaseResult run_case(const Case& c, const Implementation& impl, const RunnerOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  const ComponentSpec& spec = component(c.component);
  const ModelConfig& cfg = case_config(c);
  const TensorSet inputs = spec.make_inputs(c, cfg);
  require_inputs_on_their_grids(inputs, "case " + c.name());
  TensorSet out;
  std::string error;
  bool ok = true;
  try {
    out = impl.run(ComponentCall{c, cfg, c.policy(), inputs});
  } catch (const std::exception& e) {
    ok = false;
    error = std::string("implementation threw: ") + e.what();
  }
  const References refs = compute_references(c, inputs);
  CaseResult res = judge_with(c, impl.name(), impl.path(), ok ? &out : nullptr, error, refs);
  if (!res.pass && !opts.bundle_dir.empty()) {
    res.bundle = bundle_path(opts, c);
    res.command = opts.command.empty() ? "v4ref replay " + res.bundle.string() : opts.command;
    write_bundle(res.bundle, res, inputs, ok ? &out : nullptr, refs);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

std::filesystem::path bundle_path(const RunnerOptions& opts, const Case& c) {
  return opts.bundle_dir / opts.suite / (c.test_name() + "-" + hex8(c.seed()) + ".h5");
}

// ------------------------------------------------------------------ reports

std::string CaseResult::report() const {
  std::string head = " case=" + c.name() + " seed=" + seed_hex(c.seed()) +
                     " impl=" + implementation + " path=" + path;
  if (pass) {
    double worst = 0;
    std::string at;
    for (const OutputJudgement& j : outputs)
      if (j.bound_ratio > worst) {
        worst = j.bound_ratio;
        at = j.output;
      }
    return "PASS" + head +
           (at.empty() ? "" : " (worst bound_ratio " + num(worst) + " on " + at + ")") + "\n";
  }
  std::string s;
  if (!error.empty()) s += "FAIL " + c.component + head + "\n  error: " + error + "\n";
  for (const OutputJudgement& j : outputs) {
    if (j.pass) continue;
    s += "FAIL " + c.component + "." + j.output + head + "\n";
    s += "  gate " + j.gate + " [" + j.row_key + " @ " + j.row_path + "]: " + j.rule + "\n";
    for (const std::string& f : j.failures) s += "  " + f + "\n";
    s += "  " + j.metrics.summary() + "\n";
    if (j.base_err >= 0)
      s += "  base_err " + num(j.base_err) + " (B vs R)   median allowed " + num(j.median_allowed) +
           "\n";
    if (j.set) s += "  selection: " + j.set->summary() + "\n";
    for (const std::string& n : j.notes) s += "  note: " + n + "\n";
  }
  if (!bundle.empty()) s += "  bundle: " + bundle.string() + "\n";
  s += "  replay: " +
       (command.empty() ? "V4REF_SEED=" + seed_hex(c.global_seed) + " (case " + c.name() + ")"
                        : command) +
       "\n";
  return s;
}

nlohmann::json CaseResult::to_json() const {
  nlohmann::json outs = nlohmann::json::array();
  auto el = [](const ElementRef& e) {
    return e.valid() ? nlohmann::json{{"row", e.row}, {"col", e.col}, {"k", e.k}, {"r", e.r}}
                     : nlohmann::json();
  };
  for (const OutputJudgement& j : outputs) {
    nlohmann::json o{{"output", j.output},
                     {"gate", j.gate},
                     {"row", {{"key", j.row_key}, {"path", j.row_path}, {"rule", j.rule}}},
                     {"dtype", j.dtype},
                     {"pass", j.pass},
                     {"failures", j.failures},
                     {"notes", j.notes},
                     {"max_abs", j.metrics.max_abs},
                     {"max_abs_at", el(j.metrics.max_abs_at)},
                     {"max_rel", j.metrics.max_rel},
                     {"rel_fro", j.metrics.rel_fro},
                     {"cos_sim", j.metrics.cos_sim},
                     {"cos_diff", j.metrics.cos_diff},
                     {"nmse", j.metrics.nmse},
                     {"rms_ref", j.metrics.rms_ref},
                     {"nonfinite_mismatch", j.metrics.nonfinite_mismatch}};
    if (j.metrics.ulp_type) o["max_ulp"] = j.metrics.max_ulp;
    if (j.base_err >= 0) o["base_err"] = j.base_err;
    if (j.bound_ratio >= 0) {
      o["bound_ratio"] = j.bound_ratio;
      o["bound_at"] = el(j.bound_at);
      o["allowed_at"] = j.allowed_at;
      o["median_allowed"] = j.median_allowed;
    }
    if (j.set)
      o["selection"] = {{"swaps", j.set->swaps},
                        {"unexplained", j.set->unexplained},
                        {"structure_errors", j.set->structure_errors},
                        {"worst_tie_ratio", j.set->worst_tie_ratio},
                        {"mean_recall", j.set->mean_recall},
                        {"min_recall", j.set->min_recall}};
    outs.push_back(o);
  }
  return {{"case", c.to_json()},
          {"implementation", implementation},
          {"path", path},
          {"pass", pass},
          {"error", error},
          {"outputs", outs},
          {"bundle", bundle.string()},
          {"command", command},
          {"seconds", seconds}};
}

}  // namespace v4ref::compare
