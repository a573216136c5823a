// Subcommands of the v4ref command-line tool; each file registers one.
#pragma once

#include <CLI/CLI.hpp>

namespace v4ref::cli {

// The process exit code a subcommand wants (set by its callback).
int& exit_code();

void register_inspect(CLI::App& app);
void register_make_checkpoint(CLI::App& app);
void register_config(CLI::App& app);
void register_cost(CLI::App& app);
void register_replay(CLI::App& app);
void register_bisect(CLI::App& app);
void register_forward(CLI::App& app);  // forward and decode

}  // namespace v4ref::cli
