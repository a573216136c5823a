// Storage dtypes and their safetensors strings, parsed through one table (v4-forward.md §15.2).
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "v4ref/ref/core/error.hpp"

namespace v4ref {

enum class DType {
  kBF16,     // "BF16"    bfloat16
  kF16,      // "F16"     IEEE binary16
  kF32,      // "F32"     IEEE binary32
  kF64,      // "F64"     IEEE binary64
  kF8E4M3,   // "F8_E4M3" float8 e4m3fn (no Inf, NaN = 0x7F/0xFF)
  kF8E5M2,   // "F8_E5M2" float8 e5m2
  kF8E8M0,   // "F8_E8M0" unsigned power-of-two exponent byte (scales)
  kI8,       // "I8"      raw bytes; V4 experts pack two e2m1 values per byte
  kU8,       // "U8"
  kI32,      // "I32"
  kI64,      // "I64"     tid2eid
};

struct DTypeInfo {
  DType dtype;
  std::string_view name;  // safetensors dtype string
  std::size_t itemsize;   // bytes per element
};

inline constexpr std::array<DTypeInfo, 11> kDTypeTable = {{
    {DType::kBF16, "BF16", 2},
    {DType::kF16, "F16", 2},
    {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},
    {DType::kF8E4M3, "F8_E4M3", 1},
    {DType::kF8E5M2, "F8_E5M2", 1},
    {DType::kF8E8M0, "F8_E8M0", 1},
    {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},
    {DType::kI32, "I32", 4},
    {DType::kI64, "I64", 8},
}};

inline const DTypeInfo& dtype_info(DType d) {
  for (const auto& info : kDTypeTable)
    if (info.dtype == d) return info;
  throw DtypeError("dtype enum value " + std::to_string(static_cast<int>(d)) + " is not in the table");
}

inline std::string_view dtype_name(DType d) { return dtype_info(d).name; }
inline std::size_t dtype_size(DType d) { return dtype_info(d).itemsize; }

inline std::string accepted_dtype_names() {
  std::string s;
  for (const auto& info : kDTypeTable) {
    if (!s.empty()) s += ", ";
    s += info.name;
  }
  return s;
}

// Parses a safetensors dtype string; unknown strings are an error listing the accepted ones.
// `where` names the tensor/file for the message.
inline DType parse_dtype(std::string_view name, std::string_view where = {}) {
  for (const auto& info : kDTypeTable)
    if (info.name == name) return info.dtype;
  std::string msg = "unknown dtype \"" + std::string(name) + "\"";
  if (!where.empty()) msg += " (" + std::string(where) + ")";
  msg += "; accepted: " + accepted_dtype_names();
  throw DtypeError(msg);
}

}  // namespace v4ref
