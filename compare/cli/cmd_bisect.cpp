// `v4ref bisect A.h5 B.h5`: the layer-by-layer debugger (guide/verification.md §10;
// compare/bisect.hpp). A is the reference trace, B the implementation's, both in the trace file
// format of reference/include/v4ref/ref/trace.hpp. Walks the trace points in forward order, names
// the first one out of tolerance and lists every failing sub-step of its block.
//
//   --mode teacher-forced|chained   how B was produced (default teacher-forced: B's blocks were fed
//                                   A's block inputs; checked)
//   --path fp64|fp32|bf16           tolerance rows "trace.*" of that path (default fp32)
//   --baseline C.h5                 an fp32 baseline trace: judge points with the baseline rule
//   --checkpoint DIR                read the router gate biases (near-tie rule on s_e + bias_e)
//   --json                          print the whole report as JSON
//
// Exit code: 0 pass, 1 a point is out of tolerance, 2 the comparison is invalid.
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "commands.hpp"
#include "v4ref/compare/bisect.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref::cli {

namespace {
struct BisectArgs {
  std::string a, b, mode = "teacher-forced", path = "fp32", baseline, checkpoint;
  bool json = false;
};
}  // namespace

void register_bisect(CLI::App& app) {
  auto args = std::make_shared<BisectArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bisect",
      "Compare two forward traces point by point and name the first tensor out of tolerance");
  cmd->add_option("a", args->a, "reference trace (HDF5, v4ref-trace)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("b", args->b, "trace of the implementation under test")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--mode", args->mode, "teacher-forced (default) or chained")
      ->check(CLI::IsMember({"teacher-forced", "chained"}));
  cmd->add_option("--path", args->path,
                  "tolerance path of B's arithmetic: fp64, fp32 (default), bf16")
      ->check(CLI::IsMember({"fp64", "fp32", "bf16"}));
  cmd->add_option("--baseline", args->baseline, "fp32 baseline trace C on the same tokens")
      ->check(CLI::ExistingFile);
  cmd->add_option("--checkpoint", args->checkpoint,
                  "checkpoint directory (config.json + safetensors) for the gate biases")
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("--json", args->json, "print the report as JSON");
  cmd->callback([args] {
    const ref::Trace a = ref::Trace::read_hdf5(args->a);
    const ref::Trace b = ref::Trace::read_hdf5(args->b);
    std::optional<ref::Trace> c;
    compare::BisectOptions opts;
    opts.mode = compare::parse_bisect_mode(args->mode);
    opts.path = args->path;
    if (!args->baseline.empty()) {
      c = ref::Trace::read_hdf5(args->baseline);
      opts.baseline = &*c;
    }
    if (!args->checkpoint.empty()) {
      const std::filesystem::path dir(args->checkpoint);
      compare::load_route_bias(Checkpoint::open(dir), load_config(dir / "config.json"), opts);
    }
    const compare::BisectReport rep = compare::bisect_traces(a, b, opts);
    if (args->json)
      std::cout << rep.json().dump(2) << "\n";
    else
      std::cout << rep.text();
    exit_code() = rep.errors.empty() ? (rep.pass() ? 0 : 1) : 2;
  });
}

}  // namespace v4ref::cli
