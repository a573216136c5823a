// Batched BF16 Newton–Schulz for Muon on Hopper, and the Muon step on fp32 masters
// (docs/muon.md; header cuda/include/v4ref/cuda/muon.hpp).
//
// Layout: every matrix is row-major. X [n, m] (n <= m) row-major is, to cuBLAS (column-major),
// the m x n matrix Xc = Xᵀ. With that reading:
//   A  = X·Xᵀ      -> C(n x n) = Xcᵀ·Xc         gemm(T, N, n, n, m)
//   A² = A·A       -> C(n x n) = A·A            gemm(N, N, n, n, n)
//   Y  = B·X       -> Yc(m x n) = Xc·Bᵀ         gemm(N, T, m, n, n)
// (A, A², B are read elementwise by position only, so their storage order does not matter to
// the epilogues; no symmetry is assumed anywhere.)
// Precision points: kMuonNsPrecisionPoints; element math: muon_ns_tile.hpp; the element kernels
// are in muon_kernels.cuh (SIMT dialect: the executor runs the same source on the CPU).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/muon.hpp"
#include "v4ref/cuda/muon_ns_tile.hpp"
#include "muon_kernels.cuh"

namespace v4ref::cuda {
namespace {

void check_cublas(cublasStatus_t s, const char* expr, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + expr + " failed: " +
                    cublasGetStatusString(s));
}
#define V4REF_CUBLAS_CHECK(expr) check_cublas((expr), #expr, __FILE__, __LINE__)

using muon_kernels::kElemThreads;
using muon_kernels::kTile;
using muon_kernels::kTileRows;
using simt::gptr;
namespace mk = muon_kernels;

int elem_blocks(std::int64_t count) {
  const std::int64_t b = (count + kElemThreads - 1) / kElemThreads;
  return static_cast<int>(b < 65536 ? b : 65536);  // grid-stride loops cover the rest
}

// ---------------------------------------------------------------- host helpers

struct DevBuf {
  void* p = nullptr;
  std::size_t bytes = 0;
  DevBuf() = default;
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (p != nullptr) cudaFree(p);  // no throw from a destructor
  }
  void ensure(std::size_t b) {
    if (b <= bytes) return;
    if (p != nullptr) V4REF_CUDA_CHECK(cudaFree(p));
    p = nullptr;
    bytes = 0;
    V4REF_CUDA_CHECK(cudaMalloc(&p, b));
    bytes = b;
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

void require_device_pointer(const void* ptr, const char* what) {
  if (ptr == nullptr) throw Error(std::string("muon: ") + what + " is null");
  cudaPointerAttributes attr{};
  V4REF_CUDA_CHECK(cudaPointerGetAttributes(&attr, ptr));
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw Error(std::string("muon: ") + what + " is not device memory");
}

void require_shape(std::int64_t batch, std::int64_t rows, std::int64_t cols, const char* where) {
  constexpr std::int64_t kMaxDim = 1 << 20;  // cuBLAS int dimensions and grid.y of the tiles
  if (batch <= 0 || rows <= 0 || cols <= 0 || rows > kMaxDim || cols > kMaxDim || batch > 65535)
    throw ShapeError(std::string(where) + ": expected batch in [1, 65535] and rows, cols in [1, 2^20], got [" +
                     std::to_string(batch) + ", " + std::to_string(rows) + ", " +
                     std::to_string(cols) + "]");
}

}  // namespace

struct MuonNs::Impl {
  cublasHandle_t handle = nullptr;
  DevBuf x, xn, yf, af, a, b, partial, sums, u, o;

  Impl() {
    V4REF_CUBLAS_CHECK(cublasCreate(&handle));
    // No workspace: excludes split-K algorithms, so each output element is one ascending-k
    // accumulation and the result does not depend on the batch size chosen by the caller.
    V4REF_CUBLAS_CHECK(cublasSetWorkspace(handle, nullptr, 0));
  }
  ~Impl() {
    if (handle != nullptr) cublasDestroy(handle);
  }

  // Sum of squares and denominators of every matrix of u into sums[0..batch) and
  // sums[batch..2·batch).
  void norms(const float* u_dev, std::int64_t batch, std::int64_t count, float eps,
             cudaStream_t s) {
    partial.ensure(static_cast<std::size_t>(batch) * ns::kNormParts * sizeof(float));
    sums.ensure(static_cast<std::size_t>(2 * batch) * sizeof(float));
    mk::sumsq_partial_kernel<<<dim3(ns::kNormBlocks, static_cast<unsigned>(batch)),
                               ns::kNormThreads, 0, s>>>(gptr<const float>(u_dev), count,
                                                         gptr<float>(partial.as<float>()));
    V4REF_CUDA_CHECK_LAUNCH();
    mk::sumsq_combine_kernel<<<static_cast<unsigned>(batch), 1024, mk::kCombineSmem, s>>>(
        gptr<const float>(partial.as<float>()), eps, gptr<float>(sums.as<float>()),
        gptr<float>(sums.as<float>() + batch));
    V4REF_CUDA_CHECK_LAUNCH();
  }

  // X [batch, n, m] = bf16(U / denom), transposed for tall inputs.
  void normalize(const MuonNsBatch& p, cudaStream_t s) {
    const std::int64_t count = p.rows * p.cols, total = p.batch * count;
    x.ensure(static_cast<std::size_t>(total) * sizeof(std::uint16_t));
    norms(p.u, p.batch, count, p.eps, s);
    const float* denom = sums.as<float>() + p.batch;
    if (p.rows > p.cols) {
      const dim3 grid(static_cast<unsigned>((p.cols + kTile - 1) / kTile),
                      static_cast<unsigned>((p.rows + kTile - 1) / kTile),
                      static_cast<unsigned>(p.batch));
      mk::normalize_transpose_kernel<<<grid, dim3(kTile, kTileRows), mk::kTileSmemFloat, s>>>(
          gptr<const float>(p.u), p.rows, p.cols, gptr<const float>(denom),
          gptr<std::uint16_t>(x.as<std::uint16_t>()));
    } else {
      mk::normalize_kernel<<<elem_blocks(total), kElemThreads, 0, s>>>(
          gptr<const float>(p.u), count, total, gptr<const float>(denom),
          gptr<std::uint16_t>(x.as<std::uint16_t>()));
    }
    V4REF_CUDA_CHECK_LAUNCH();
  }

  void write_out(const MuonNsBatch& p, const std::uint16_t* xs, cudaStream_t s) {
    const std::int64_t total = p.batch * p.rows * p.cols;
    if (p.rows > p.cols) {
      const dim3 grid(static_cast<unsigned>((p.rows + kTile - 1) / kTile),
                      static_cast<unsigned>((p.cols + kTile - 1) / kTile),
                      static_cast<unsigned>(p.batch));
      mk::transpose_out_kernel<<<grid, dim3(kTile, kTileRows), mk::kTileSmemBf16, s>>>(
          gptr<const std::uint16_t>(xs), p.rows, p.cols, gptr<std::uint16_t>(p.out));
      V4REF_CUDA_CHECK_LAUNCH();
    } else {
      V4REF_CUDA_CHECK(cudaMemcpyAsync(p.out, xs, static_cast<std::size_t>(total) * sizeof(std::uint16_t),
                                       cudaMemcpyDeviceToDevice, s));
    }
  }
};

MuonNs::MuonNs() : impl_(std::make_unique<Impl>()) {}
MuonNs::~MuonNs() = default;

void MuonNs::newton_schulz(const MuonNsBatch& p, const std::vector<ns::StageF>& stages,
                           CUstream_st* stream) {
  require_shape(p.batch, p.rows, p.cols, "MuonNs::newton_schulz");
  require_device_pointer(p.u, "MuonNsBatch.u");
  require_device_pointer(p.out, "MuonNsBatch.out");
  Impl& I = *impl_;
  const cudaStream_t s = stream;
  V4REF_CUBLAS_CHECK(cublasSetStream(I.handle, s));
  const int n = static_cast<int>(p.rows < p.cols ? p.rows : p.cols);
  const int m = static_cast<int>(p.rows < p.cols ? p.cols : p.rows);
  const auto batch = static_cast<int>(p.batch);
  const long long snm = static_cast<long long>(n) * m, snn = static_cast<long long>(n) * n;
  const std::int64_t total_nm = p.batch * snm, total_nn = p.batch * snn;
  I.normalize(p, s);
  I.yf.ensure(static_cast<std::size_t>(total_nm) * sizeof(float));
  I.af.ensure(static_cast<std::size_t>(total_nn) * sizeof(float));
  I.a.ensure(static_cast<std::size_t>(total_nn) * sizeof(std::uint16_t));
  I.b.ensure(static_cast<std::size_t>(total_nn) * sizeof(std::uint16_t));
  auto* x = I.x.as<std::uint16_t>();
  auto* a = I.a.as<std::uint16_t>();
  auto* b = I.b.as<std::uint16_t>();
  float* af = I.af.as<float>();
  float* yf = I.yf.as<float>();
  const float one = 1.0f, zero = 0.0f;
  for (const ns::StageF& st : stages)
    for (int it = 0; it < st.iterations; ++it) {
      V4REF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
          I.handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, m, &one, x, CUDA_R_16BF, m, snm, x, CUDA_R_16BF,
          m, snm, &zero, af, CUDA_R_32F, n, snn, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      mk::gram_epilogue_kernel<<<elem_blocks(total_nn), kElemThreads, 0, s>>>(
          gptr<const float>(af), total_nn, gptr<std::uint16_t>(a));
      V4REF_CUDA_CHECK_LAUNCH();
      V4REF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
          I.handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, snn, a, CUDA_R_16BF,
          n, snn, &zero, af, CUDA_R_32F, n, snn, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      mk::poly_epilogue_kernel<<<elem_blocks(total_nn), kElemThreads, 0, s>>>(
          gptr<const std::uint16_t>(a), gptr<const float>(af), total_nn, st.b, st.c,
          gptr<std::uint16_t>(b));
      V4REF_CUDA_CHECK_LAUNCH();
      V4REF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
          I.handle, CUBLAS_OP_N, CUBLAS_OP_T, m, n, n, &one, x, CUDA_R_16BF, m, snm, b, CUDA_R_16BF,
          n, snn, &zero, yf, CUDA_R_32F, m, snm, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      mk::update_epilogue_kernel<<<elem_blocks(total_nm), kElemThreads, 0, s>>>(
          gptr<std::uint16_t>(x), gptr<const float>(yf), total_nm, st.a);
      V4REF_CUDA_CHECK_LAUNCH();
    }
  I.write_out(p, x, s);
}

void MuonNs::newton_schulz_per_matrix_cublas(const MuonNsBatch& p,
                                             const std::vector<ns::StageF>& stages,
                                             CUstream_st* stream) {
  require_shape(p.batch, p.rows, p.cols, "MuonNs::newton_schulz_per_matrix_cublas");
  require_device_pointer(p.u, "MuonNsBatch.u");
  require_device_pointer(p.out, "MuonNsBatch.out");
  Impl& I = *impl_;
  const cudaStream_t s = stream;
  V4REF_CUBLAS_CHECK(cublasSetStream(I.handle, s));
  const int n = static_cast<int>(p.rows < p.cols ? p.rows : p.cols);
  const int m = static_cast<int>(p.rows < p.cols ? p.cols : p.rows);
  const std::size_t snm = static_cast<std::size_t>(n) * m, snn = static_cast<std::size_t>(n) * n;
  I.normalize(p, s);
  I.xn.ensure(snm * sizeof(std::uint16_t));
  I.a.ensure(snn * sizeof(std::uint16_t));
  I.b.ensure(snn * sizeof(std::uint16_t));
  auto* a = I.a.as<std::uint16_t>();
  auto* b = I.b.as<std::uint16_t>();
  const float one = 1.0f, zero = 0.0f;
  for (std::int64_t j = 0; j < p.batch; ++j) {
    std::uint16_t* home = I.x.as<std::uint16_t>() + j * static_cast<std::int64_t>(snm);
    std::uint16_t* cur = home;
    std::uint16_t* nxt = I.xn.as<std::uint16_t>();
    for (const ns::StageF& st : stages)
      for (int it = 0; it < st.iterations; ++it) {
        const float kb = st.b, kc = st.c, ka = st.a;
        V4REF_CUBLAS_CHECK(cublasGemmEx(I.handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, m, &one, cur,
                                        CUDA_R_16BF, m, cur, CUDA_R_16BF, m, &zero, a, CUDA_R_16BF,
                                        n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        V4REF_CUDA_CHECK(cudaMemcpyAsync(b, a, snn * sizeof(std::uint16_t), cudaMemcpyDeviceToDevice, s));
        V4REF_CUBLAS_CHECK(cublasGemmEx(I.handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &kc, a,
                                        CUDA_R_16BF, n, a, CUDA_R_16BF, n, &kb, b, CUDA_R_16BF, n,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        V4REF_CUDA_CHECK(cudaMemcpyAsync(nxt, cur, snm * sizeof(std::uint16_t), cudaMemcpyDeviceToDevice, s));
        V4REF_CUBLAS_CHECK(cublasGemmEx(I.handle, CUBLAS_OP_N, CUBLAS_OP_T, m, n, n, &one, cur,
                                        CUDA_R_16BF, m, b, CUDA_R_16BF, n, &ka, nxt, CUDA_R_16BF, m,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        std::swap(cur, nxt);
      }
    if (cur != home)
      V4REF_CUDA_CHECK(cudaMemcpyAsync(home, cur, snm * sizeof(std::uint16_t), cudaMemcpyDeviceToDevice, s));
  }
  I.write_out(p, I.x.as<std::uint16_t>(), s);
}

void MuonNs::step(const MuonStepBatch& p, const std::vector<ns::StageF>& stages,
                  CUstream_st* stream) {
  require_shape(p.batch, p.rows, p.cols, "MuonNs::step");
  require_device_pointer(p.w, "MuonStepBatch.w");
  require_device_pointer(p.m, "MuonStepBatch.m");
  require_device_pointer(p.g, "MuonStepBatch.g");
  Impl& I = *impl_;
  const cudaStream_t s = stream;
  const std::int64_t total = p.batch * p.rows * p.cols;
  I.u.ensure(static_cast<std::size_t>(total) * sizeof(float));
  std::uint16_t* o = p.o;
  if (o == nullptr) {
    I.o.ensure(static_cast<std::size_t>(total) * sizeof(std::uint16_t));
    o = I.o.as<std::uint16_t>();
  }
  mk::momentum_kernel<<<elem_blocks(total), kElemThreads, 0, s>>>(
      gptr<float>(p.m), gptr<const float>(p.g), gptr<float>(I.u.as<float>()), total, p.scalars);
  V4REF_CUDA_CHECK_LAUNCH();
  newton_schulz({p.batch, p.rows, p.cols, I.u.as<float>(), o, p.eps}, stages, stream);
  mk::apply_kernel<<<elem_blocks(total), kElemThreads, 0, s>>>(
      gptr<float>(p.w), gptr<const std::uint16_t>(o), total, p.scalars);
  V4REF_CUDA_CHECK_LAUNCH();
}

std::vector<float> MuonNs::sumsq(const MuonNsBatch& p, CUstream_st* stream) {
  require_shape(p.batch, p.rows, p.cols, "MuonNs::sumsq");
  require_device_pointer(p.u, "MuonNsBatch.u");
  impl_->norms(p.u, p.batch, p.rows * p.cols, p.eps, stream);
  std::vector<float> out(static_cast<std::size_t>(p.batch));
  V4REF_CUDA_CHECK(cudaMemcpyAsync(out.data(), impl_->sums.as<float>(), out.size() * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream));
  V4REF_CUDA_CHECK(cudaStreamSynchronize(stream));
  return out;
}

// ---------------------------------------------------------------- host conveniences

namespace {

template <class T>
void upload(DevBuf& d, const std::vector<T>& h) {
  d.ensure(h.size() * sizeof(T));
  V4REF_CUDA_CHECK(cudaMemcpy(d.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <class T>
void download(std::vector<T>& h, const DevBuf& d) {
  V4REF_CUDA_CHECK(cudaMemcpy(h.data(), d.p, h.size() * sizeof(T), cudaMemcpyDeviceToHost));
}

void require_size(std::size_t got, std::int64_t batch, std::int64_t rows, std::int64_t cols,
                  const char* what) {
  if (got != static_cast<std::size_t>(batch * rows * cols))
    throw ShapeError(std::string(what) + ": expected " + std::to_string(batch * rows * cols) +
                     " values for [" + std::to_string(batch) + ", " + std::to_string(rows) + ", " +
                     std::to_string(cols) + "], got " + std::to_string(got));
}

}  // namespace

std::vector<std::uint16_t> newton_schulz_bf16_host(const std::vector<float>& u, std::int64_t batch,
                                                   std::int64_t rows, std::int64_t cols,
                                                   const std::vector<ns::StageF>& stages, float eps,
                                                   NsPath path) {
  require_shape(batch, rows, cols, "newton_schulz_bf16_host");
  require_size(u.size(), batch, rows, cols, "newton_schulz_bf16_host.u");
  DevBuf du, dout;
  upload(du, u);
  dout.ensure(u.size() * sizeof(std::uint16_t));
  MuonNs ns_run;
  const std::int64_t count = rows * cols;
  switch (path) {
    case NsPath::kBatched:
      ns_run.newton_schulz({batch, rows, cols, du.as<float>(), dout.as<std::uint16_t>(), eps}, stages);
      break;
    case NsPath::kOneByOne:
      for (std::int64_t j = 0; j < batch; ++j)
        ns_run.newton_schulz({1, rows, cols, du.as<float>() + j * count,
                              dout.as<std::uint16_t>() + j * count, eps},
                             stages);
      break;
    case NsPath::kPerMatrixCublas:
      ns_run.newton_schulz_per_matrix_cublas(
          {batch, rows, cols, du.as<float>(), dout.as<std::uint16_t>(), eps}, stages);
      break;
  }
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::uint16_t> out(u.size());
  download(out, dout);
  return out;
}

std::vector<std::uint16_t> muon_step_host(std::vector<float>& w, std::vector<float>& m,
                                          const std::vector<float>& g, std::int64_t batch,
                                          std::int64_t rows, std::int64_t cols,
                                          const ns::StepScalars& s,
                                          const std::vector<ns::StageF>& stages, float eps) {
  require_shape(batch, rows, cols, "muon_step_host");
  require_size(w.size(), batch, rows, cols, "muon_step_host.w");
  require_size(m.size(), batch, rows, cols, "muon_step_host.m");
  require_size(g.size(), batch, rows, cols, "muon_step_host.g");
  DevBuf dw, dm, dg, dout;
  upload(dw, w);
  upload(dm, m);
  upload(dg, g);
  dout.ensure(w.size() * sizeof(std::uint16_t));
  MuonNs ns_run;
  MuonStepBatch p;
  p.batch = batch;
  p.rows = rows;
  p.cols = cols;
  p.w = dw.as<float>();
  p.m = dm.as<float>();
  p.g = dg.as<float>();
  p.o = dout.as<std::uint16_t>();
  p.scalars = s;
  p.eps = eps;
  ns_run.step(p, stages);
  V4REF_CUDA_CHECK(cudaDeviceSynchronize());
  download(w, dw);
  download(m, dm);
  std::vector<std::uint16_t> out(w.size());
  download(out, dout);
  return out;
}

std::vector<float> sumsq_host(const std::vector<float>& u, std::int64_t batch, std::int64_t rows,
                              std::int64_t cols) {
  require_shape(batch, rows, cols, "sumsq_host");
  require_size(u.size(), batch, rows, cols, "sumsq_host.u");
  DevBuf du;
  upload(du, u);
  MuonNs ns_run;
  return ns_run.sumsq({batch, rows, cols, du.as<float>(), nullptr, 1e-7f});
}

}  // namespace v4ref::cuda
