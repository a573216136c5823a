// Build provenance strings used in reports, bundles and golden files.
#include "v4ref/compare/version.hpp"

namespace v4ref::compare {

std::string compiler_string() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "unknown";
#endif
}

}  // namespace v4ref::compare
