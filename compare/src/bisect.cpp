// The layer-by-layer debugger (bisect.hpp).
#include "v4ref/compare/bisect.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "v4ref/compare/tolerance.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/dequant.hpp"

namespace v4ref::compare {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

std::string short_num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// "layers.12.attn.o" -> ("layers.12.", "attn.o"); model-level names -> ("", name).
std::pair<std::string, std::string> split_name(const std::string& name) {
  for (const char* head : {"layers.", "mtp."}) {
    const std::size_t n = std::strlen(head);
    if (name.compare(0, n, head) != 0) continue;
    std::size_t i = n;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
    if (i > n && i < name.size() && name[i] == '.')
      return {name.substr(0, i + 1), name.substr(i + 1)};
  }
  return {"", name};
}

bool bitwise_equal(const Mat& x, const Mat& y) {
  return x.rows() == y.rows() && x.cols() == y.cols() &&
         (x.size() == 0 || std::memcmp(x.data(), y.data(),
                                       sizeof(double) * static_cast<std::size_t>(x.size())) == 0);
}

double row_rms(const Mat& m, Eigen::Index t) {
  double s = 0;
  std::int64_t n = 0;
  for (Eigen::Index j = 0; j < m.cols(); ++j)
    if (std::isfinite(m(t, j))) {
      s += m(t, j) * m(t, j);
      ++n;
    }
  return n > 0 ? std::sqrt(s / static_cast<double>(n)) : 0.0;
}

// τ per row for a selection point: factor × max(observed |s_B − s_A| on the row, allowed rel_fro
// of the scores point × rms(s_A row)).
Mat selection_tau(const Mat& sa, const Mat* sb, double factor, double rel_allowed) {
  Mat tau(sa.rows(), sa.cols());
  for (Eigen::Index t = 0; t < sa.rows(); ++t) {
    double obs = 0;
    if (sb != nullptr && sb->rows() == sa.rows() && sb->cols() == sa.cols())
      for (Eigen::Index j = 0; j < sa.cols(); ++j)
        if (std::isfinite(sa(t, j)) && std::isfinite((*sb)(t, j)))
          obs = std::max(obs, std::fabs((*sb)(t, j) - sa(t, j)));
    tau.row(t).setConstant(factor * std::max(obs, rel_allowed * row_rms(sa, t)));
  }
  return tau;
}

struct Judge {
  const ref::Trace& a;
  const ref::Trace& b;
  const BisectOptions& opts;

  // Statistical row of a local key on the chosen path.
  const ToleranceRow& stat_row(const std::string& local) const {
    return require_tolerance("trace." + local, opts.path);
  }

  void judge(PointResult& p) const {
    const Mat& ma = a.at(p.name);
    const Mat& mb = b.at(p.name);
    if (ma.rows() != mb.rows() || ma.cols() != mb.cols()) {
      p.pass = false;
      p.status = "shape";
      p.detail = "A is [" + std::to_string(ma.rows()) + ", " + std::to_string(ma.cols()) +
                 "], B is [" + std::to_string(mb.rows()) + ", " + std::to_string(mb.cols()) + "]";
      return;
    }
    const ToleranceRow& row = require_tolerance("trace." + p.local, opts.path);
    if (row.rule == Rule::kNearTieSet) return judge_selection(p, row, ma, mb);

    Mat mask, aligned;
    const Mat* k = &mb;
    if (p.local == "ffn.route_weights" && a.has(p.block + "ffn.routed_idx") &&
        b.has(p.block + "ffn.routed_idx")) {
      Aligned al =
          align_by_index(mb, b.at(p.block + "ffn.routed_idx"), a.at(p.block + "ffn.routed_idx"));
      aligned = std::move(al.values);
      mask = std::move(al.mask);
      k = &aligned;
      if (al.missing > 0)
        p.detail = std::to_string(al.missing) + " weight(s) of experts B did not select skipped";
    }
    MetricOptions mo;
    if (mask.size() > 0) mo.mask = &mask;
    p.metrics = compare_tensors(*k, ma, mo, p.name);
    const Metrics& m = p.metrics;
    std::vector<std::string> why;
    if (m.nonfinite_mismatch > 0)
      why.push_back("nonfinite pattern differs at " + std::to_string(m.nonfinite_mismatch) +
                    " element(s), first " + m.first_nonfinite_mismatch.str());

    const bool use_baseline = opts.baseline != nullptr && opts.baseline->has(p.name);
    if (use_baseline) {
      const ToleranceRow& brow = require_tolerance("trace." + p.local, "baseline");
      const Mat& mc = opts.baseline->at(p.name);
      const Metrics mcm = compare_tensors(mc, ma, {}, p.name + " (baseline)");
      AllowanceInputs in;
      in.ref = &ma;
      in.base_err = mcm.max_abs;
      const Mat allowed = allowance(brow, in);
      double worst = 0, allowed_at = 0;
      for (Eigen::Index i = 0; i < ma.size(); ++i) {
        if (mask.size() > 0 && mask.data()[i] == 0) continue;
        const double x = (*k).data()[i], y = ma.data()[i];
        if (!std::isfinite(x) || !std::isfinite(y)) continue;
        const double r = allowed.data()[i] > 0 ? std::fabs(x - y) / allowed.data()[i]
                                               : (x == y ? 0.0 : HUGE_VAL);
        if (r >= worst) {
          worst = r;
          allowed_at = allowed.data()[i];
        }
      }
      p.row = std::string(brow.key) + " @ baseline";
      p.gate = "|b - a| <= " + short_num(brow.c) + " x max_abs(C, A) [" + short_num(mcm.max_abs) +
               "] + " + short_num(brow.floor) + " ulp_fp32";
      p.ratio = worst;
      p.allowed = allowed_at;
      if (worst > 1)
        why.push_back("max |b - a| is " + short_num(worst) + "x its allowance " +
                      short_num(allowed_at));
    } else {
      const ToleranceRow& srow = stat_row(p.local);
      const double budget = static_cast<double>(p.budget);
      const double allowed = srow.c * budget;
      p.row = std::string(srow.key) + " @ " + opts.path;
      p.allowed = allowed;
      p.gate = "rel_fro <= " + short_num(srow.c) +
               (p.budget > 1 ? " x " + std::to_string(p.budget) : "");
      p.ratio = allowed > 0 ? m.rel_fro / allowed : (m.rel_fro == 0 ? 0.0 : HUGE_VAL);
      if (p.ratio > 1) why.push_back("rel_fro " + num(m.rel_fro) + " > " + num(allowed));
      if (srow.cos_diff_max > 0 && !m.both_zero) {
        const double cmax = srow.cos_diff_max * budget * budget;
        p.gate += ", cos_diff <= " + short_num(cmax);
        const double cr = m.cos_diff / cmax;
        p.ratio = std::max(p.ratio, cr);
        if (cr > 1) why.push_back("cos_diff " + num(m.cos_diff) + " > " + num(cmax));
      }
    }
    if (m.nonfinite_mismatch > 0) p.ratio = std::max(p.ratio, HUGE_VAL);
    p.pass = why.empty();
    p.status = p.pass ? "ok" : "FAIL";
    for (const std::string& w : why) p.detail += (p.detail.empty() ? "" : "; ") + w;
  }

  void judge_selection(PointResult& p, const ToleranceRow& row, const Mat& ma,
                       const Mat& mb) const {
    p.row = std::string(row.key) + " @ " + opts.path;
    const std::string scores_name = p.block + std::string(row.aux);
    if (!a.has(scores_name)) {
      p.pass = bitwise_equal(ma, mb);
      p.status = p.pass ? "ok" : "FAIL";
      p.gate = "equal (no scores " + scores_name + " in A)";
      p.detail = p.pass ? "" : "selections differ and A has no scores to apply the near-tie rule";
      p.ratio = p.pass ? 0 : HUGE_VAL;
      return;
    }
    Mat sa = a.at(scores_name);
    const Mat* sb = b.has(scores_name) ? &b.at(scores_name) : nullptr;
    Mat sb_biased;
    bool no_swaps = false;
    std::string note;
    if (p.local == "ffn.routed_idx") {
      if (opts.hash_blocks.count(p.block) != 0) {
        no_swaps = true;
        note = "hash-routed block: sets must be equal";
      } else if (const auto it = opts.route_bias.find(p.block);
                 it != opts.route_bias.end() && it->second.size() == sa.cols()) {
        for (Eigen::Index t = 0; t < sa.rows(); ++t) sa.row(t) += it->second.transpose();
        if (sb != nullptr) {
          sb_biased = *sb;
          for (Eigen::Index t = 0; t < sb_biased.rows(); ++t)
            sb_biased.row(t) += it->second.transpose();
          sb = &sb_biased;
        }
      } else {
        no_swaps = true;
        note = "gate bias unknown (pass the checkpoint): routed sets must be equal";
      }
    }
    const ToleranceRow& srow = stat_row(std::string(row.aux));
    Mat tau = no_swaps ? Mat::Constant(1, 1, -1.0)
                       : selection_tau(sa, sb, row.c,
                                       srow.rule == Rule::kStatistical
                                           ? srow.c * static_cast<double>(p.budget)
                                           : 0.0);
    p.gate = no_swaps
                 ? "sets equal"
                 : "sets equal up to near-tie swaps (tau = " + short_num(row.c) + " x score error)";
    try {
      p.set = compare_selections(mb, ma, sa, tau);
    } catch (const ShapeError& e) {
      p.pass = false;
      p.status = "FAIL";
      p.detail = e.what();
      p.ratio = HUGE_VAL;
      return;
    }
    p.pass = p.set->pass();
    p.status = p.pass ? "ok" : "FAIL";
    p.ratio = p.pass ? (p.set->swaps > 0 ? p.set->worst_tie_ratio : 0.0)
                     : std::max(1.0, p.set->worst_tie_ratio);
    p.detail =
        p.pass
            ? (p.set->swaps > 0 ? std::to_string(p.set->swaps) + " explained near-tie swap(s)" : "")
            : p.set->summary();
    if (!note.empty()) p.detail += (p.detail.empty() ? "" : "; ") + note;
  }
};

}  // namespace

std::string_view bisect_mode_name(BisectMode m) {
  return m == BisectMode::kChained ? "chained" : "teacher-forced";
}

BisectMode parse_bisect_mode(std::string_view s) {
  if (s == "chained") return BisectMode::kChained;
  if (s == "teacher-forced" || s == "teacher") return BisectMode::kTeacherForced;
  throw ConfigError("unknown bisect mode \"" + std::string(s) +
                    "\"; accepted: chained, teacher-forced");
}

void load_route_bias(const Checkpoint& ckpt, const ModelConfig& cfg, BisectOptions& opts) {
  for (std::int64_t i = 0; i < cfg.n_total_layers(); ++i) {
    const LayerConfig lc = layer_config(cfg, i);
    if (lc.hash_routed) {
      opts.hash_blocks.insert(lc.prefix);
      continue;
    }
    const std::vector<double> b = load_as_double(ckpt, lc.prefix + "ffn.gate.bias");
    opts.route_bias[lc.prefix] =
        Eigen::Map<const ref::Vec>(b.data(), static_cast<Eigen::Index>(b.size()));
  }
}

BisectReport bisect_traces(const ref::Trace& a, const ref::Trace& b, const BisectOptions& opts) {
  BisectReport rep;
  rep.a_source = a.source();
  rep.b_source = b.source();
  rep.path = opts.path;
  rep.mode = opts.mode;
  rep.with_baseline = opts.baseline != nullptr;
  for (const std::string& n : b.names())
    if (!a.has(n)) rep.only_in_b.push_back(n);

  const Judge judge{a, b, opts};
  // Chained budget: block b (0-based, in order of first appearance) gets 1 + b; model-level points
  // get 1 + the number of blocks before them (embed 1, the head 1 + n_layers).
  std::vector<std::string> block_order;
  for (const std::string& name : a.names()) {
    auto [block, local] = split_name(name);
    std::int64_t index = static_cast<std::int64_t>(block_order.size());
    if (!block.empty()) {
      const auto it = std::find(block_order.begin(), block_order.end(), block);
      index = it - block_order.begin();
      if (it == block_order.end()) block_order.push_back(block);
    }
    PointResult p;
    p.name = name;
    p.block = block;
    p.local = local;
    p.budget = opts.mode == BisectMode::kChained ? 1 + index : 1;
    if (!b.has(name)) {
      p.status = "missing";
      p.detail = "not in B";
      rep.points.push_back(std::move(p));
      continue;
    }
    if (opts.mode == BisectMode::kTeacherForced && local == "block.in" &&
        !bitwise_equal(a.at(name), b.at(name))) {
      const Mat& x = a.at(name);
      const Mat& y = b.at(name);
      std::string d = "shapes differ";
      if (x.rows() == y.rows() && x.cols() == y.cols())
        d = "max_abs " + num((x - y).cwiseAbs().maxCoeff());
      rep.errors.push_back(
          "teacher-forced mode: B's " + name + " differs from A's (" + d +
          "): B was not fed A's block inputs; record B with ForwardRequest::teacher = A, or use "
          "--mode chained");
    }
    try {
      judge.judge(p);
    } catch (const std::exception& e) {
      p.pass = false;
      p.status = "FAIL";
      p.detail = std::string("cannot compare: ") + e.what();
      p.ratio = HUGE_VAL;
    }
    rep.points.push_back(std::move(p));
  }
  if (rep.points.empty() || std::all_of(rep.points.begin(), rep.points.end(),
                                        [](const PointResult& p) { return p.status == "missing"; }))
    rep.errors.push_back("no trace point of A is present in B");

  // First failure, its block's failures, per-block summaries.
  for (std::size_t i = 0; i < rep.points.size(); ++i)
    if (!rep.points[i].pass) {
      rep.first_fail = i;
      break;
    }
  if (rep.first_fail) {
    const std::string& blk = rep.points[*rep.first_fail].block;
    for (std::size_t i = 0; i < rep.points.size(); ++i)
      if (rep.points[i].block == blk && !rep.points[i].pass) rep.block_failures.push_back(i);
  }
  for (const PointResult& p : rep.points) {
    if (rep.blocks.empty() || rep.blocks.back().block != p.block) {
      BlockSummary s;
      s.block = p.block;
      rep.blocks.push_back(s);
    }
    BlockSummary& s = rep.blocks.back();
    if (p.status == "missing") continue;
    ++s.points;
    s.failed += !p.pass;
    if (s.worst_point.empty() || p.ratio > s.worst_ratio) {
      s.worst_ratio = p.ratio;
      s.worst_point = p.local;
    }
    if (p.local == "block.out") s.out_rel_fro = p.metrics.rel_fro;
  }
  return rep;
}

std::string BisectReport::text() const {
  char line[512];
  std::string s = "v4ref bisect  A = " + a_source + "  B = " + b_source + "\n";
  s += "  mode " + std::string(bisect_mode_name(mode)) + ", tolerance path " + path +
       (with_baseline ? " (baseline trace given: baseline rule where it has the point)" : "") +
       "\n";
  std::int64_t compared = 0, missing = 0;
  for (const PointResult& p : points) (p.status == "missing" ? missing : compared)++;
  s += "  " + std::to_string(compared) + " points compared, " + std::to_string(missing) +
       " missing in B, " + std::to_string(only_in_b.size()) + " only in B\n";
  for (const std::string& e : errors) s += "INVALID: " + e + "\n";
  if (!stopped.empty()) s += "STOPPED: " + stopped + "\n";
  if (!first_fail) {
    s += errors.empty() && stopped.empty()
             ? "PASS: every shared trace point is within tolerance\n"
             : "";
  } else {
    const PointResult& f = points[*first_fail];
    s += "\nFIRST FAILURE: " + f.name + "   [" + f.gate + "]\n";
    s += "  " + f.detail + "\n";
    if (!f.set) s += "  " + f.metrics.summary() + "\n";
    s += "\nFailing points of " + (f.block.empty() ? std::string("the model level") : f.block) +
         " in forward order:\n";
    std::snprintf(line, sizeof line, "  %-22s %-7s %10s %10s %9s %10s  %s\n", "point", "status",
                  "rel_fro", "allowed", "ratio", "cos_diff", "max_abs at");
    s += line;
    for (std::size_t i : block_failures) {
      const PointResult& p = points[i];
      std::snprintf(
          line, sizeof line, "  %-22s %-7s %10s %10s %9s %10s  %s\n", p.local.c_str(),
          p.status.c_str(), p.set ? "-" : num(p.metrics.rel_fro).c_str(), num(p.allowed).c_str(),
          short_num(p.ratio).c_str(), p.set ? "-" : num(p.metrics.cos_diff).c_str(),
          p.set ? p.set->summary().substr(0, 60).c_str() : p.metrics.max_abs_at.str().c_str());
      s += line;
    }
    s += "  (the first row is the first sub-step out of tolerance";
    s += mode == BisectMode::kTeacherForced
             ? "; blocks are teacher-forced, so it names the faulty component)\n"
             : "; chained mode: errors accumulate, confirm with --mode teacher-forced)\n";
  }
  s += "\nPer block:\n";
  std::snprintf(line, sizeof line, "  %-12s %7s %7s %12s  %-20s %14s\n", "block", "points",
                "failed", "worst ratio", "worst point", "block.out rel");
  s += line;
  for (const BlockSummary& b : blocks) {
    std::snprintf(line, sizeof line, "  %-12s %7lld %7lld %12s  %-20s %14s\n",
                  b.block.empty() ? "(model)" : b.block.c_str(), static_cast<long long>(b.points),
                  static_cast<long long>(b.failed),
                  b.points > 0 ? short_num(b.worst_ratio).c_str() : "-", b.worst_point.c_str(),
                  b.out_rel_fro >= 0 ? num(b.out_rel_fro).c_str() : "-");
    s += line;
  }
  if (pass())
    s += "RESULT: PASS\n";
  else if (!errors.empty())
    s += "RESULT: INVALID\n";
  else if (first_fail)
    s += "RESULT: FAIL at " + points[*first_fail].name + "\n";
  else
    s += "RESULT: FAIL (stopped)\n";
  return s;
}

nlohmann::ordered_json BisectReport::json() const {
  auto point_json = [](const PointResult& p) {
    nlohmann::ordered_json j{{"name", p.name},
                             {"block", p.block},
                             {"local", p.local},
                             {"status", p.status},
                             {"pass", p.pass},
                             {"row", p.row},
                             {"gate", p.gate},
                             {"budget", p.budget},
                             {"ratio", std::isfinite(p.ratio) ? nlohmann::ordered_json(p.ratio)
                                                              : nlohmann::ordered_json("inf")},
                             {"allowed", p.allowed},
                             {"detail", p.detail}};
    if (p.status != "missing" && !p.set) {
      const Metrics& m = p.metrics;
      j["metrics"] = {{"rel_fro", m.rel_fro},
                      {"cos_diff", m.cos_diff},
                      {"cos_sim", m.cos_sim},
                      {"nmse", m.nmse},
                      {"max_abs", m.max_abs},
                      {"max_rel", m.max_rel},
                      {"max_abs_at", {m.max_abs_at.row, m.max_abs_at.col}},
                      {"nonfinite_mismatch", m.nonfinite_mismatch}};
    }
    if (p.set)
      j["selection"] = {{"swaps", p.set->swaps},
                        {"unexplained", p.set->unexplained},
                        {"structure_errors", p.set->structure_errors},
                        {"mean_recall", p.set->mean_recall},
                        {"first_bad_row", p.set->first_bad_row}};
    return j;
  };
  nlohmann::ordered_json j;
  j["tool"] = "v4ref bisect";
  j["a"] = a_source;
  j["b"] = b_source;
  j["mode"] = std::string(bisect_mode_name(mode));
  j["path"] = path;
  j["baseline"] = with_baseline;
  j["pass"] = pass();
  j["errors"] = errors;
  j["stopped"] = stopped;
  j["first_failure"] = first_fail ? point_json(points[*first_fail]) : nlohmann::ordered_json();
  nlohmann::ordered_json bf = nlohmann::ordered_json::array();
  for (std::size_t i : block_failures) bf.push_back(points[i].name);
  j["first_block_failures"] = bf;
  nlohmann::ordered_json blk = nlohmann::ordered_json::array();
  for (const BlockSummary& b : blocks)
    blk.push_back(
        {{"block", b.block},
         {"points", b.points},
         {"failed", b.failed},
         {"worst_ratio", std::isfinite(b.worst_ratio) ? nlohmann::ordered_json(b.worst_ratio)
                                                      : nlohmann::ordered_json("inf")},
         {"worst_point", b.worst_point},
         {"block_out_rel_fro", b.out_rel_fro}});
  j["blocks"] = blk;
  nlohmann::ordered_json pts = nlohmann::ordered_json::array();
  for (const PointResult& p : points) pts.push_back(point_json(p));
  j["points"] = pts;
  j["only_in_b"] = only_in_b;
  return j;
}

// ------------------------------------------------------------------ live

namespace {

class ReferenceBlocks final : public BlockImplementation {
 public:
  std::string name() const override { return "reference"; }
  ref::Mat run_block(const ref::Model& model, std::int64_t layer, const ref::Mat& x,
                     std::span<const std::int64_t> tokens, ref::LayerTrace& trace) const override {
    const auto w = model.layer_weights(layer);
    return ref::block_forward(x, tokens, *w, model.config(), w->layer, model.policy(), &trace);
  }
};

}  // namespace

std::shared_ptr<const BlockImplementation> reference_blocks() {
  static const auto impl = std::make_shared<const ReferenceBlocks>();
  return impl;
}

LiveBisect bisect_live(const ref::Model& model, const ref::Trace& a,
                       const BlockImplementation& impl, const BisectOptions& opts) {
  const ModelConfig& cfg = model.config();
  const std::vector<std::int64_t>& tokens = a.tokens();
  if (tokens.empty()) throw Error("bisect_live: trace " + a.source() + " has no token ids");
  LiveBisect out;
  ref::Trace& b = out.b;
  b.tokens() = tokens;
  b.attrs()["implementation"] = impl.name();
  b.attrs()["mode"] = std::string(bisect_mode_name(opts.mode));
  if (a.has(ref::trace_names::kEmbed))
    b.put(std::string(ref::trace_names::kEmbed), a.at(ref::trace_names::kEmbed));
  ref::Mat x;
  std::string stopped;
  for (std::int64_t i = 0; i < cfg.n_layers && stopped.empty(); ++i) {
    const std::string in = ref::trace_names::layer(cfg, i, "block.in");
    if (i == 0 || opts.mode == BisectMode::kTeacherForced) x = a.at(in);
    const std::string prefix = ref::trace_names::block_prefix(cfg, i);
    ref::LayerTrace lt;
    try {
      x = impl.run_block(model, i, x, tokens, lt);
    } catch (const std::exception& e) {
      stopped = impl.name() + " threw in " + prefix + "run_block: " + e.what() +
                "; this block's points, later blocks and the head are not in B";
      break;
    }
    for (const std::string& k : ref::trace_names::block_keys()) {
      auto it = lt.tensors.find(k);
      if (it != lt.tensors.end()) b.put(prefix + k, std::move(it->second));
    }
    if (!b.has(prefix + "block.out")) b.put(prefix + "block.out", x);
    if (opts.mode == BisectMode::kChained && !x.allFinite())
      stopped = prefix + "block.out of " + impl.name() +
                " holds non-finite values; chained mode cannot feed them on, so later blocks and "
                "the head are not in B";
  }
  if (stopped.empty()) {
    const ref::Mat& last = opts.mode == BisectMode::kTeacherForced
                               ? a.at(ref::trace_names::layer(cfg, cfg.n_layers - 1, "block.out"))
                               : x;
    model.logits_from_streams(last, &b);
  }
  out.report = bisect_traces(a, b, opts);
  out.report.b_source = "live " + impl.name();
  out.report.stopped = stopped;
  return out;
}

}  // namespace v4ref::compare
