// The compressor kernels (cuda/src/compressor_kernels.cuh) run from their own source in the SIMT
// executor: the launches of compressor_prefill, compressor_prefill_state and compressor_decode
// (compressor.hpp) on host arrays. Host compiler (library v4ref_kernels_simt; docs/simt.md).
#pragma once

#include <cstdint>

#include "v4ref/cuda/compressor_tile.hpp"
#include "v4ref/cuda/simt/executor.hpp"

namespace v4ref::cuda {

struct CompressorSimtOptions {
  simt::RunOptions run;
  cmp::CompressorFault fault = cmp::CompressorFault::kNone;  // tests only
};

// compressor_prefill: entries j < T/m into cache rows [T/m][row_bytes] (the rows' previous bytes
// are the buffer's initial contents, so poison stays visible), optional debug outputs [T/m][w].
simt::LaunchReport compressor_prefill_simt(const cmp::PrefillProblem& p, std::uint8_t* cache,
                                           const cmp::EntryDebug& dbg = {},
                                           const CompressorSimtOptions& opt = {});

// compressor_prefill_state: the §11.2 hand-off state after p.tokens tokens.
cmp::DecodeState compressor_prefill_state_simt(const cmp::PrefillProblem& p,
                                               const CompressorSimtOptions& opt = {},
                                               simt::LaunchReport* report = nullptr);

// compressor_decode for one sequence at position t (a_t, g_t [c·w]): updates the state; when the
// block completes writes cache row t/m into out_row (and the debug outputs, [w] each) and returns
// true.
bool compressor_decode_step_simt(const cmp::Dims& dm, cmp::DecodeState& st, std::int64_t t,
                                 const float* a_t, const float* g_t, const float* ape,
                                 const float* norm_w, float eps, const cmp::RopeRow& rope,
                                 std::uint8_t* out_row, const cmp::EntryDebug& dbg = {},
                                 const CompressorSimtOptions& opt = {},
                                 simt::LaunchReport* report = nullptr);

}  // namespace v4ref::cuda
