// Failure bundles (guide/verification.md §12): one HDF5 file per failing case with everything
// needed to replay it on any machine, and the replay itself (`v4ref replay BUNDLE`).
//
// Layout (H5Store, hdf5_store.hpp):
//   /                      attrs: format = "v4ref-bundle", format_version = 1, case (name),
//                          case_json, seed (hex), global_seed (hex), component, config, kind, mode,
//                          implementation, path, verdict ("FAIL" | "PASS"), error, command_line,
//                          tolerance_rows (one line per output), compiler, created_utc
//   /inputs/<name>         the inputs, stored in their format where HDF5 can hold it (bf16 as
//                          uint16 bits, fp32 as float32, everything else float64), attr dtype
//   /impl/<name>           K, the implementation's outputs (absent when it threw)
//   /ref_q/<name>          Rq (float64), including reference-only outputs
//   /ref_x/<name>          Rx (float64; modes other than exact)
//   /baseline/<name>       B (float64)
//   /report                the printed failure block, as uint8 text
//   /metrics_json          every judgement as JSON, as uint8 text
//
// Replay recomputes Rq, Rx and B from the stored inputs with the current build, judges the stored
// K again, and — when the implementation is registered in this process (runner.hpp
// find_implementation) — reruns it on the stored inputs and judges that too.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "v4ref/compare/runner.hpp"

namespace v4ref::compare {

struct Bundle {
  Case c;
  std::string implementation, path, verdict, error, command, report, metrics_json;
  TensorSet inputs, impl, ref_q, ref_x, baseline;
  bool has_impl = false;
};

// Writes the bundle of a judged case (creates the parent directories). IoError on failure.
void write_bundle(const std::filesystem::path& file, const CaseResult& result,
                  const TensorSet& inputs, const TensorSet* impl_out, const References& refs);
// FormatError naming the file if it is not a v4ref bundle.
Bundle read_bundle(const std::filesystem::path& file);

// Where run_case puts the bundle of a case.
std::filesystem::path bundle_path(const RunnerOptions& opts, const Case& c);

struct ReplayResult {
  Bundle bundle;
  CaseResult stored;                 // stored K judged against the recomputed references
  std::optional<CaseResult> rerun;   // the implementation rerun (when registered)
  bool reference_unchanged = false;  // recomputed Rq equals the stored Rq bitwise
  // The replay reaches the bundle's verdict (stored K, and the rerun when there is one).
  bool reproduced() const;
  std::string text() const;  // human-readable
  nlohmann::json json() const;
};

ReplayResult replay_bundle(const std::filesystem::path& file);

}  // namespace v4ref::compare
