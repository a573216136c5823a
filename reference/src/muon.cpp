// Muon optimizer step (double reference) and the V4 Muon / AdamW parameter split
// (docs/muon.md). GEMMs are plain loops: every output element is one sum in ascending k, so
// results do not depend on the OpenMP thread count (verification.md §11).
#include "v4ref/ref/muon.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <string_view>
#include <utility>

#include "v4ref/ref/core/formats.hpp"

namespace v4ref::ref {

NsSchedule v4_ns_schedule() { return {{kNsKellerJordan, 8}, {kNsConvergent, 2}}; }

NsSchedule keller_jordan_ns_schedule(int iterations) { return {{kNsKellerJordan, iterations}}; }

int total_iterations(const NsSchedule& schedule) {
  int n = 0;
  for (const NsStage& s : schedule) n += s.iterations;
  return n;
}

MuonMatrix transpose(const MuonMatrix& m) {
  MuonMatrix t(m.cols, m.rows);
  for (std::int64_t i = 0; i < m.rows; ++i)
    for (std::int64_t j = 0; j < m.cols; ++j) t.at(j, i) = m.at(i, j);
  return t;
}

double frobenius_norm(const MuonMatrix& m) {
  double s = 0;
  for (double x : m.data) s += x * x;
  return std::sqrt(s);
}

double ns_scalar_map(double s, const NsSchedule& schedule) {
  for (const NsStage& st : schedule)
    for (int i = 0; i < st.iterations; ++i) {
      const double s2 = s * s;
      s = st.coeffs.a * s + (st.coeffs.b * s2 + st.coeffs.c * s2 * s2) * s;
    }
  return s;
}

namespace {

// Row-major matrix in the accumulator type T.
template <class T>
struct Mat {
  std::int64_t rows = 0, cols = 0;
  std::vector<T> v;
  Mat(std::int64_t r, std::int64_t c) : rows(r), cols(c), v(static_cast<std::size_t>(r * c), T(0)) {}
  T& operator()(std::int64_t i, std::int64_t j) { return v[static_cast<std::size_t>(i * cols + j)]; }
  T operator()(std::int64_t i, std::int64_t j) const {
    return v[static_cast<std::size_t>(i * cols + j)];
  }
};

// Storage point: round every element to bf16 when the policy says so.
template <class T>
void store_point(Mat<T>& m, bool bf16) {
  if (!bf16) return;
  for (T& x : m.v) x = static_cast<T>(fmt::round_bf16(static_cast<double>(x)));
}

// C = A·Bᵀ, C_ij = Σ_k A_ik·B_jk  (k ascending).
template <class T>
Mat<T> gemm_nt(const Mat<T>& a, const Mat<T>& b) {
  Mat<T> c(a.rows, b.rows);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < a.rows; ++i)
    for (std::int64_t j = 0; j < b.rows; ++j) {
      T s = 0;
      for (std::int64_t k = 0; k < a.cols; ++k) s += a(i, k) * b(j, k);
      c(i, j) = s;
    }
  return c;
}

// C = A·B, C_ij = Σ_k A_ik·B_kj  (k ascending, row i accumulated as axpys).
template <class T>
Mat<T> gemm_nn(const Mat<T>& a, const Mat<T>& b) {
  Mat<T> c(a.rows, b.cols);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < a.rows; ++i) {
    T* ci = &c.v[static_cast<std::size_t>(i * c.cols)];
    for (std::int64_t k = 0; k < a.cols; ++k) {
      const T aik = a(i, k);
      const T* bk = &b.v[static_cast<std::size_t>(k * b.cols)];
      for (std::int64_t j = 0; j < b.cols; ++j) ci[j] += aik * bk[j];
    }
  }
  return c;
}

// X0 = U / (||U||_F + eps), with the sum of squares in T in row-major order.
template <class T>
void normalize(Mat<T>& x, double eps) {
  T sumsq = 0;
  for (T e : x.v) sumsq += e * e;
  const T denom = std::sqrt(sumsq) + static_cast<T>(eps);
  for (T& e : x.v) e = e / denom;
}

// One iteration X <- a·X + (b·A + c·A²)·X with A = X·Xᵀ, storage points from the policy.
template <class T>
Mat<T> ns_iteration(const Mat<T>& x, const NsCoefficients& k, const NsRounding& r) {
  Mat<T> a = gemm_nt(x, x);  // [n, n]
  store_point(a, r.gram_bf16);
  const Mat<T> a2 = gemm_nn(a, a);  // [n, n]
  Mat<T> b(a.rows, a.cols);
  const T kb = static_cast<T>(k.b), kc = static_cast<T>(k.c), ka = static_cast<T>(k.a);
  for (std::size_t i = 0; i < b.v.size(); ++i) b.v[i] = kb * a.v[i] + kc * a2.v[i];
  store_point(b, r.poly_bf16);
  Mat<T> y = gemm_nn(b, x);  // [n, m]
  for (std::size_t i = 0; i < y.v.size(); ++i) y.v[i] = ka * x.v[i] + y.v[i];
  store_point(y, r.update_bf16);
  return y;
}

template <class T>
MuonMatrix newton_schulz_in(const MuonMatrix& u, const NsSchedule& schedule, double eps,
                            const NsRounding& rounding) {
  const bool tall = u.rows > u.cols;  // iterate on the smaller Gram matrix
  const std::int64_t n = tall ? u.cols : u.rows, m = tall ? u.rows : u.cols;
  Mat<T> x(n, m);
  for (std::int64_t i = 0; i < u.rows; ++i)
    for (std::int64_t j = 0; j < u.cols; ++j)
      (tall ? x(j, i) : x(i, j)) = static_cast<T>(u.at(i, j));
  normalize(x, eps);
  store_point(x, rounding.input_bf16);
  for (const NsStage& st : schedule)
    for (int it = 0; it < st.iterations; ++it) x = ns_iteration(x, st.coeffs, rounding);
  MuonMatrix out(u.rows, u.cols);
  for (std::int64_t i = 0; i < u.rows; ++i)
    for (std::int64_t j = 0; j < u.cols; ++j)
      out.at(i, j) = static_cast<double>(tall ? x(j, i) : x(i, j));
  return out;
}

}  // namespace

MuonMatrix newton_schulz(const MuonMatrix& u, const NsSchedule& schedule, double eps,
                         const NsRounding& rounding, NsAccumulate accumulate) {
  if (u.rows <= 0 || u.cols <= 0 || u.data.size() != static_cast<std::size_t>(u.rows * u.cols))
    throw ShapeError("newton_schulz.u: expected a non-empty [rows, cols] matrix with rows·cols "
                     "values, got [" + std::to_string(u.rows) + ", " + std::to_string(u.cols) +
                     "] with " + std::to_string(u.data.size()) + " values");
  if (!(eps >= 0)) throw Error("newton_schulz: eps must be >= 0, got " + std::to_string(eps));
  for (const NsStage& st : schedule)
    if (st.iterations < 0)
      throw Error("newton_schulz: negative iteration count " + std::to_string(st.iterations));
  return accumulate == NsAccumulate::kDouble ? newton_schulz_in<double>(u, schedule, eps, rounding)
                                             : newton_schulz_in<float>(u, schedule, eps, rounding);
}

double muon_update_scale(const MuonHyper& h, std::int64_t rows, std::int64_t cols) {
  return h.rms_scale * std::sqrt(static_cast<double>(std::max(rows, cols)));
}

MuonMatrix muon_step(MuonMatrix& w, MuonMatrix& m, const MuonMatrix& g, const MuonHyper& h) {
  const auto same = [&](const MuonMatrix& x) { return x.rows == w.rows && x.cols == w.cols; };
  if (!same(m) || !same(g))
    throw ShapeError("muon_step: w [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                     "], momentum [" + std::to_string(m.rows) + ", " + std::to_string(m.cols) +
                     "], grad [" + std::to_string(g.rows) + ", " + std::to_string(g.cols) +
                     "]: shapes must agree");
  MuonMatrix u(w.rows, w.cols);
  for (std::size_t i = 0; i < w.data.size(); ++i) {
    m.data[i] = h.momentum * m.data[i] + g.data[i];
    u.data[i] = h.nesterov ? g.data[i] + h.momentum * m.data[i] : m.data[i];
  }
  MuonMatrix o = newton_schulz(u, h.schedule, h.ns_eps);
  const double decay = 1.0 - h.lr * h.weight_decay;
  const double step = h.lr * muon_update_scale(h, w.rows, w.cols);
  for (std::size_t i = 0; i < w.data.size(); ++i) w.data[i] = w.data[i] * decay - step * o.data[i];
  return o;
}

// ---------------------------------------------------------------- parameter split

const char* optimizer_group_name(OptimizerGroup g) {
  switch (g) {
    case OptimizerGroup::kMuon: return "muon";
    case OptimizerGroup::kAdamW: return "adamw";
    case OptimizerGroup::kNoGradient: return "no_gradient";
    case OptimizerGroup::kQuantScale: return "quant_scale";
  }
  return "?";
}

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

ParamAssignment classify(const ModelConfig& cfg, const TensorSpec& t) {
  ParamAssignment p;
  p.name = t.name;
  p.logical_shape = t.logical_shape;
  const std::string_view n = t.name;
  const auto set = [&p](OptimizerGroup g, const char* why) {
    p.group = g;
    p.reason = why;
    return p;
  };
  if (t.role == TensorRole::kFp8Scale || t.role == TensorRole::kFp4Scale)
    return set(OptimizerGroup::kQuantScale, "block scale of a stored fp8/fp4 weight, not a parameter");
  if (n == "embed.weight") return set(OptimizerGroup::kAdamW, "embedding (V4 report: AdamW)");
  if (n == "head.weight") return set(OptimizerGroup::kAdamW, "prediction head (V4 report: AdamW)");
  if (ends_with(n, "gate.tid2eid"))
    return set(OptimizerGroup::kNoGradient, "hash-routing table: fixed integers, not trained");
  if (ends_with(n, "gate.bias"))
    return set(OptimizerGroup::kNoGradient,
               "auxiliary-loss-free balancing bias: moved by the load-balance rule, not by a gradient");
  if (ends_with(n, "norm.weight")) return set(OptimizerGroup::kAdamW, "RMSNorm weight (V4 report: AdamW)");
  const bool hc = n.find("hc_") != std::string_view::npos;
  if (hc && ends_with(n, "_base"))
    return set(OptimizerGroup::kAdamW, "mHC static bias b (V4 report: AdamW)");
  if (hc && ends_with(n, "_scale"))
    return set(OptimizerGroup::kAdamW, "mHC gating factor alpha (V4 report: AdamW)");
  if (ends_with(n, "attn_sink"))
    return set(OptimizerGroup::kAdamW, "per-head sink logit, a vector (inferred: AdamW)");
  if (ends_with(n, ".ape"))
    return set(OptimizerGroup::kAdamW,
               "compressor positional bias, additive embedding-like table (inferred: AdamW)");
  if (t.logical_shape.size() == 2) {
    const std::int64_t rows = t.logical_shape[0], cols = t.logical_shape[1];
    if (ends_with(n, "attn.wo_a.weight")) {
      // Grouped projection: rows g·R_o .. (g+1)·R_o−1 act on group g's input only (§5.5).
      p.block = {cfg.o_lora_rank, cols, cfg.o_groups};
      if (rows != cfg.o_groups * cfg.o_lora_rank)
        throw ShapeError(t.name + ": expected " + std::to_string(cfg.o_groups * cfg.o_lora_rank) +
                         " rows (o_groups·o_lora_rank), got " + std::to_string(rows));
      return set(OptimizerGroup::kMuon, "grouped projection: o_groups independent matrices (inferred)");
    }
    p.block = {rows, cols, 1};
    if (hc) return set(OptimizerGroup::kMuon, "mHC dynamic projection matrix phi (fn)");
    return set(OptimizerGroup::kMuon, "2-D weight matrix");
  }
  throw Error("split_parameters: tensor " + t.name + " matches no rule (shape rank " +
              std::to_string(t.logical_shape.size()) + ")");
}

std::vector<MatrixShapeCount> to_list(const std::map<std::pair<std::int64_t, std::int64_t>,
                                                     std::int64_t>& counts) {
  std::vector<MatrixShapeCount> out;
  for (const auto& [shape, count] : counts) out.push_back({shape.first, shape.second, count});
  return out;
}

}  // namespace

std::vector<ParamAssignment> split_parameters(const ModelConfig& cfg) {
  std::vector<ParamAssignment> out;
  for (const TensorSpec& t : expected_tensors(cfg)) out.push_back(classify(cfg, t));
  return out;
}

std::vector<MatrixShapeCount> muon_matrix_shapes(const ModelConfig& cfg) {
  std::map<std::pair<std::int64_t, std::int64_t>, std::int64_t> counts;
  for (const ParamAssignment& p : split_parameters(cfg))
    if (p.group == OptimizerGroup::kMuon) counts[{p.block.rows, p.block.cols}] += p.block.count;
  return to_list(counts);
}

std::vector<MatrixShapeCount> muon_ns_shapes(const ModelConfig& cfg) {
  std::map<std::pair<std::int64_t, std::int64_t>, std::int64_t> counts;
  for (const MatrixShapeCount& s : muon_matrix_shapes(cfg))
    counts[{std::min(s.rows, s.cols), std::max(s.rows, s.cols)}] += s.count;
  return to_list(counts);
}

}  // namespace v4ref::ref
