// Build provenance strings used in reports, bundles and golden files.
#pragma once

#include <string>

namespace v4ref::compare {

std::string compiler_string();

}  // namespace v4ref::compare
