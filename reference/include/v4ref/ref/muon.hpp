// Muon optimizer step in double precision, and the Muon / AdamW parameter split of a V4
// checkpoint (docs/muon.md; tensor list: v4-forward.md §1.4 through expected_tensors()).
//
// The update of one matrix parameter W [rows, cols] with gradient G (docs/muon.md §1):
//   M  <- mu·M + G                                   momentum buffer
//   U  =  G + mu·M   (Nesterov)   or   M   (plain)
//   X0 =  U / (||U||_F + eps), transposed when rows > cols so X is n x m with n <= m
//   X  <- a·X + (b·A + c·A²)·X,  A = X·Xᵀ          per stage of the NS schedule
//   O  =  X (transposed back)
//   W  <- W·(1 − lr·wd) − lr·gamma·sqrt(max(rows, cols))·O
// The Newton–Schulz part is templated on the accumulator (double for Rx/Rq, float for the
// baseline B of verification.md §2) and takes a storage-rounding policy (bf16 at the points
// the CUDA path declares); there is one copy of the math.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "v4ref/ref/checkpoint_layout.hpp"
#include "v4ref/ref/core/config.hpp"

namespace v4ref::ref {

// ---------------------------------------------------------------- Newton–Schulz

struct NsCoefficients {
  double a = 0, b = 0, c = 0;  // p(s) = a·s + b·s³ + c·s⁵ on each singular value s
};

struct NsStage {
  NsCoefficients coeffs;
  int iterations = 0;
};

using NsSchedule = std::vector<NsStage>;

// Keller Jordan's quintic (3.4445, −4.7750, 2.0315): maximal slope at 0, does not converge
// to 1 but to a band around it.
inline constexpr NsCoefficients kNsKellerJordan{3.4445, -4.7750, 2.0315};
// (2, −1.5, 0.5): p(1) = 1, p'(1) = 0, converges quadratically to 1 on (0, ~1.5).
inline constexpr NsCoefficients kNsConvergent{2.0, -1.5, 0.5};
// Added to ||U||_F before dividing (Keller Jordan's and Moonlight's value).
inline constexpr double kNsEps = 1e-7;

// DeepSeek-V4's hybrid schedule: 8 iterations of kNsKellerJordan, then 2 of kNsConvergent.
NsSchedule v4_ns_schedule();
// `iterations` of kNsKellerJordan only (the original Muon uses 5).
NsSchedule keller_jordan_ns_schedule(int iterations = 5);
int total_iterations(const NsSchedule& schedule);

// Dense row-major matrix of doubles.
struct MuonMatrix {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<double> data;  // [rows, cols]

  MuonMatrix() = default;
  MuonMatrix(std::int64_t r, std::int64_t c)
      : rows(r), cols(c), data(static_cast<std::size_t>(r * c), 0.0) {}
  double& at(std::int64_t i, std::int64_t j) { return data[static_cast<std::size_t>(i * cols + j)]; }
  double at(std::int64_t i, std::int64_t j) const {
    return data[static_cast<std::size_t>(i * cols + j)];
  }
};

MuonMatrix transpose(const MuonMatrix& m);
double frobenius_norm(const MuonMatrix& m);

// Storage rounding at the NS precision points (the `of(kernel)` policy, verification.md §2).
// Everything between two points keeps the accumulator type.
struct NsRounding {
  bool input_bf16 = false;   // X0 = U / (||U||_F + eps) stored as bf16
  bool gram_bf16 = false;    // A = X·Xᵀ stored as bf16
  bool poly_bf16 = false;    // B = b·A + c·A² stored as bf16
  bool update_bf16 = false;  // X_new = a·X + B·X stored as bf16
};

enum class NsAccumulate { kDouble, kFloat };

// Newton–Schulz orthogonalisation of u (any shape; works on the transpose when rows > cols).
//   Rx: newton_schulz(u, s)                                        exact
//   Rq: newton_schulz(u, s, eps, bf16 points, NsAccumulate::kDouble)
//   B : newton_schulz(u, s, eps, bf16 points, NsAccumulate::kFloat)
// With kFloat the input is first converted to float (callers pass fp32-representable data).
MuonMatrix newton_schulz(const MuonMatrix& u, const NsSchedule& schedule, double eps = kNsEps,
                         const NsRounding& rounding = {},
                         NsAccumulate accumulate = NsAccumulate::kDouble);

// The scalar map the schedule applies to one singular value of the normalised input.
double ns_scalar_map(double s, const NsSchedule& schedule);

// ---------------------------------------------------------------- the optimizer step

struct MuonHyper {
  double lr = 0.02;
  double momentum = 0.95;    // mu
  bool nesterov = true;
  double weight_decay = 0.1;  // decoupled: W <- W·(1 − lr·wd)
  double rms_scale = 0.2;    // gamma: update RMS matched to AdamW's ~0.2 (Moonlight)
  double ns_eps = kNsEps;
  NsSchedule schedule = v4_ns_schedule();
};

// gamma·sqrt(max(rows, cols)): the factor that makes RMS(O) ≈ gamma for an orthogonal O.
double muon_update_scale(const MuonHyper& h, std::int64_t rows, std::int64_t cols);

// One Muon step on one matrix: updates w and the momentum buffer m in place and returns the
// orthogonalised update O (before scaling), for diagnostics.
MuonMatrix muon_step(MuonMatrix& w, MuonMatrix& m, const MuonMatrix& g, const MuonHyper& h);

// ---------------------------------------------------------------- parameter split

enum class OptimizerGroup {
  kMuon,         // 2-D weight matrices
  kAdamW,        // embed, head, RMSNorm weights, mHC base/scale, attn_sink, compressor ape
  kNoGradient,   // ffn.gate.tid2eid (fixed hash table), ffn.gate.bias (balancing rule)
  kQuantScale,   // .scale siblings of fp8/fp4 weights: storage format, follow their weight
};

const char* optimizer_group_name(OptimizerGroup g);

// One independent Muon matrix: a tensor, or one block of a tensor whose rows are independent
// matrices (attn.wo_a = G blocks of [o_lora_rank, H·D/G], v4-forward.md §5.5).
struct MuonBlock {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t count = 1;  // blocks of this shape in the tensor
};

struct ParamAssignment {
  std::string name;
  OptimizerGroup group = OptimizerGroup::kAdamW;
  Shape logical_shape;
  MuonBlock block;     // valid for kMuon
  const char* reason = "";  // one line: why this group
};

// Every tensor of expected_tensors(cfg), in the same order, with its group.
std::vector<ParamAssignment> split_parameters(const ModelConfig& cfg);

// Distinct Muon matrix shapes [rows, cols] (logical: fp4 experts unpacked, wo_a per group)
// with their multiplicity, sorted by (rows, cols).
struct MatrixShapeCount {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t count = 0;
};
std::vector<MatrixShapeCount> muon_matrix_shapes(const ModelConfig& cfg);

// The same, keyed by the Newton–Schulz problem (min(rows, cols), max(rows, cols)): [r, c] and
// [c, r] run the same iteration.
std::vector<MatrixShapeCount> muon_ns_shapes(const ModelConfig& cfg);

}  // namespace v4ref::ref
