// v4ref: command-line entry point. Subcommands register themselves in this file.
#include <CLI/CLI.hpp>
#include <iostream>

#include "v4ref/ref/core/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"v4ref: reference implementation and verification suite for DeepSeek-V4"};
  app.require_subcommand(1);
  try {
    CLI11_PARSE(app, argc, argv);
  } catch (const v4ref::Error& e) {
    std::cerr << "v4ref: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
