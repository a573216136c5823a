// v4ref: command-line entry point.
#include <iostream>

#include "commands.hpp"
#include "v4ref/ref/core/error.hpp"

namespace v4ref::cli {
int& exit_code() {
  static int code = 0;
  return code;
}
}  // namespace v4ref::cli

int main(int argc, char** argv) {
  CLI::App app{"v4ref: reference implementation and numerical verification suite for DeepSeek-V4"};
  app.require_subcommand(1);
  v4ref::cli::register_inspect(app);
  v4ref::cli::register_make_checkpoint(app);
  v4ref::cli::register_config(app);
  v4ref::cli::register_cost(app);
  v4ref::cli::register_replay(app);
  v4ref::cli::register_bisect(app);
  v4ref::cli::register_forward(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const v4ref::Error& e) {
    std::cerr << "v4ref: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "v4ref: unexpected error: " << e.what() << "\n";
    return 1;
  }
  return v4ref::cli::exit_code();
}
