// The layer-by-layer debugger (guide/verification.md §10): walk the trace points of two forwards
// in forward order, name the first tensor out of tolerance, then list every failing sub-step of
// the block it belongs to.
//
//   A  the reference trace (ref::Model::forward with a Trace; `v4ref run --trace` or similar)
//   B  the trace of the implementation under test, same tokens, same trace names (trace.hpp)
//
// Modes:
//   teacher-forced  B's block i was fed A's layers.{i}.block.in (ForwardRequest::teacher), so
//                   errors cannot accumulate across blocks: the first failing point names the
//                   faulty component. Checked: every block.in of B must equal A's bitwise, or the
//                   comparison is reported invalid (B was chained).
//   chained         B ran end to end; every point is still compared, with the tolerance of block
//                   b (0-based, in forward order) multiplied by (b + 1) for rel_fro and (b + 1)²
//                   for cos_diff (a linear drift budget: each block adds at most one block's
//                   error when the blocks are non-expansive). The per-block table shows how the
//                   drift grows.
// Tolerances: the "trace.<local key>" rows of the tolerance table for the chosen path (fp64, fp32,
// bf16); with a baseline trace C (an fp32 forward on the same tokens) every point C holds is judged
// with the baseline rule instead: max_abs(B, A) <= 2 max_abs(C, A) + 2 ulp_fp32.
// Selections (attn.topk_idx, ffn.routed_idx) are compared as sets with the near-tie rule on A's
// scores; route weights are compared per expert id.
//
// Against a live implementation: bisect_live() runs a BlockImplementation block by block on A's
// tokens — teacher-forced from A's block inputs, or chained on its own outputs — builds B and
// bisects it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "v4ref/compare/metrics.hpp"
#include "v4ref/ref/layer.hpp"
#include "v4ref/ref/model.hpp"
#include "v4ref/ref/trace.hpp"

namespace v4ref::compare {

enum class BisectMode { kChained, kTeacherForced };
std::string_view bisect_mode_name(BisectMode m);   // "chained", "teacher-forced"
BisectMode parse_bisect_mode(std::string_view s);  // ConfigError listing the accepted names

struct BisectOptions {
  BisectMode mode = BisectMode::kTeacherForced;
  std::string path = "fp32";             // trace rows: fp64 | fp32 | bf16
  const ref::Trace* baseline = nullptr;  // optional fp32 baseline trace C
  // Gate bias e per block prefix ("layers.3."), for the near-tie rule on s_e + bias_e; blocks in
  // hash_blocks route by token id (sets must be equal). Without either, routed sets must match.
  std::map<std::string, ref::Vec> route_bias;
  std::set<std::string> hash_blocks;
};

// Fills route_bias / hash_blocks from a checkpoint ("<prefix>ffn.gate.bias"), every main layer
// and MTP block of cfg.
void load_route_bias(const Checkpoint& ckpt, const ModelConfig& cfg, BisectOptions& opts);

struct PointResult {
  std::string name;         // "layers.3.attn.o"
  std::string block;        // "layers.3." / "mtp.0." / "" (model level: embed, head)
  std::string local;        // "attn.o"
  std::int64_t budget = 1;  // chained-mode multiplier of the rel_fro allowance
  bool pass = true;
  std::string status;  // "ok", "FAIL", "shape", "missing" (in B)
  std::string row;     // "trace.* @ fp32"
  std::string gate;    // the rule as applied, e.g. "rel_fro <= 5e-4 x 3"
  double ratio = 0;    // worst gate value / allowance (<= 1 passes)
  double allowed = 0;  // allowance of the gated quantity (rel_fro, or max |b − a|)
  Metrics metrics;
  std::optional<SetAgreement> set;
  std::string detail;  // failure reason or notes
};

struct BlockSummary {
  std::string block;  // "" = model level
  std::int64_t points = 0, failed = 0;
  double worst_ratio = 0;
  std::string worst_point;
  double out_rel_fro = -1;  // rel_fro of block.out (−1: none)
};

struct BisectReport {
  std::string a_source, b_source, path;
  BisectMode mode = BisectMode::kTeacherForced;
  bool with_baseline = false;
  std::vector<PointResult> points;          // A's forward order, shared points and missing ones
  std::vector<BlockSummary> blocks;         // forward order
  std::vector<std::string> only_in_b;       // B's points A lacks (ignored)
  std::vector<std::string> errors;          // the comparison itself is invalid
  std::string stopped;  // a live implementation stopped early (threw, or chained non-finite output)
  std::optional<std::size_t> first_fail;    // index into points
  std::vector<std::size_t> block_failures;  // failing points of first_fail's block, in order

  bool pass() const { return errors.empty() && !first_fail && stopped.empty(); }
  const PointResult* first() const { return first_fail ? &points[*first_fail] : nullptr; }
  std::string text() const;             // the human summary
  nlohmann::ordered_json json() const;  // summary keys first, then blocks and points
};

BisectReport bisect_traces(const ref::Trace& a, const ref::Trace& b,
                           const BisectOptions& opts = {});

// ------------------------------------------------------------------ live implementations

// An implementation of whole blocks (a CUDA layer, the fp32 forward, a mutant).
class BlockImplementation {
 public:
  virtual ~BlockImplementation() = default;
  virtual std::string name() const = 0;
  // Block `layer` (0 .. n_layers−1) of `model` on streams x [T, hc·d]: returns the output streams
  // and records the block's trace points (local keys, trace_names::block_keys()) in `trace`.
  virtual ref::Mat run_block(const ref::Model& model, std::int64_t layer, const ref::Mat& x,
                             std::span<const std::int64_t> tokens,
                             ref::LayerTrace& trace) const = 0;
};

// ref::block_forward with the model's weights and policy.
std::shared_ptr<const BlockImplementation> reference_blocks();

struct LiveBisect {
  ref::Trace b;  // the implementation's trace (embed copied from A; head by the reference)
  BisectReport report;
};

// Runs `impl` on every main layer with A's tokens and bisects the result against A (which must
// come from Model::forward on the same model, over all layers). Teacher-forced: block i gets A's
// layers.{i}.block.in and the head reads A's last block.out (as Model::forward with a teacher);
// chained: block 0 gets A's layers.0.block.in, block i > 0 the implementation's own output.
// The run stops at the first block that throws (its points are then missing from B) or, chained,
// whose output streams hold a NaN or ±Inf (its points are in B, so the first failure names the
// tensor; no later block could meaningfully run on them). Either way report.stopped says where
// and why, later blocks and the head are missing from B, and the report fails.
LiveBisect bisect_live(const ref::Model& model, const ref::Trace& a,
                       const BlockImplementation& impl, const BisectOptions& opts = {});

}  // namespace v4ref::compare
