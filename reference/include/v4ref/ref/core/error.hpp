// Error types of v4ref. Every message says what, where, expected and got
// (guide/style.md, "Error handling").
#pragma once

#include <stdexcept>
#include <string>

namespace v4ref {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A tensor or argument has the wrong shape.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A tensor that the config or the checkpoint index promises is absent.
class MissingTensor : public Error {
 public:
  using Error::Error;
};

// An unknown or unexpected dtype string or dtype.
class DtypeError : public Error {
 public:
  using Error::Error;
};

// NaN/Inf or an out-of-range value in weights or inputs.
class NumericError : public Error {
 public:
  using Error::Error;
};

// A config field is inconsistent, missing or contradicts the checkpoint.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A file is malformed: truncated, bad header, overlapping offsets, ...
class FormatError : public Error {
 public:
  using Error::Error;
};

// The operating system refused: missing file, mmap failure, write failure.
class IoError : public Error {
 public:
  using Error::Error;
};

}  // namespace v4ref

// Internal invariant checks, active in Debug and sanitizer builds.
#if !defined(NDEBUG) || defined(V4REF_ENABLE_ASSERT)
#define V4REF_ASSERT(cond)                                                                 \
  do {                                                                                     \
    if (!(cond))                                                                           \
      throw ::v4ref::Error(std::string("internal assertion failed: " #cond " at ") +      \
                           __FILE__ + ":" + std::to_string(__LINE__));                     \
  } while (0)
#else
#define V4REF_ASSERT(cond) \
  do {                     \
  } while (0)
#endif
