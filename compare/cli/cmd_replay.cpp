// `v4ref replay BUNDLE`: reruns a failure bundle of the differential runner
// (guide/verification.md §12; compare/bundle.hpp). Recomputes Rq, Rx and the fp32 baseline from the
// stored inputs, judges the stored implementation outputs again and, when the implementation is
// registered in this executable ("reference", "fp32"), reruns it.
//
// Exit code: 0 when the case now passes, 1 when it still fails, 2 when the file cannot be replayed.
// --json prints the replay (case, verdicts, every metric) as one JSON object.
#include <iostream>
#include <memory>
#include <string>

#include "commands.hpp"
#include "v4ref/compare/bundle.hpp"

namespace v4ref::cli {

namespace {
struct ReplayArgs {
  std::string bundle;
  bool json = false;
};
}  // namespace

void register_replay(CLI::App& app) {
  auto args = std::make_shared<ReplayArgs>();
  CLI::App* cmd =
      app.add_subcommand("replay", "Replay a failure bundle of the differential runner (HDF5)");
  cmd->add_option("bundle", args->bundle,
                  "bundle file written by a failing case (failures/<suite>/<case>-<seed>.h5)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_flag("--json", args->json, "print the replay as JSON");
  cmd->callback([args] {
    const compare::ReplayResult r = compare::replay_bundle(args->bundle);
    if (args->json)
      std::cout << r.json().dump(2) << "\n";
    else
      std::cout << r.text();
    const bool fails = !r.stored.pass || (r.rerun && !r.rerun->pass);
    exit_code() = fails ? 1 : 0;
  });
}

}  // namespace v4ref::cli
