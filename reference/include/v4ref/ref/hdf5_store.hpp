// HDF5 tensor store: named tensors with shape, a logical dtype and provenance attributes.
// Low-precision data (bf16, e4m3fn, packed e2m1, ue8m0) is kept as raw bits in unsigned
// integer datasets with a `logical_dtype` attribute, since HDF5 1.10 has no such types
// (guide/verification.md §12–13). Compression: none or gzip + shuffle, so any plain HDF5 build
// reads the files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "v4ref/ref/safetensors.hpp"

namespace v4ref {

// What the numbers of a stored tensor mean; the string is the `logical_dtype` attribute.
enum class LogicalDtype {
  kF64,     // "f64"     float64 dataset
  kF32,     // "f32"     float32 dataset
  kBF16,    // "bf16"    uint16 dataset of bf16 bit patterns
  kE4M3,    // "e4m3fn"  uint8 dataset of e4m3fn codes
  kE2M1x2,  // "e2m1x2"  uint8 dataset, two e2m1 nibbles per byte (low nibble = even column)
  kUE8M0,   // "ue8m0"   uint8 dataset of exponent bytes
  kI64,     // "i64"     int64 dataset
  kI32,     // "i32"     int32 dataset
  kU8,      // "u8"      uint8 dataset
};

std::string_view logical_dtype_name(LogicalDtype d);
LogicalDtype parse_logical_dtype(std::string_view name, std::string_view where = {});

using AttrValue = std::variant<std::string, double, std::int64_t>;

// A tensor read back from a store: the values as stored (bit patterns for the raw encodings)
// and, for every encoding, the exactly decoded doubles.
struct StoredTensor {
  std::string name;
  Shape shape;
  LogicalDtype dtype = LogicalDtype::kF64;
  std::vector<double> values;        // decoded exactly (bf16/e4m3/ue8m0 decoded; e2m1x2 unpacked)
  std::vector<std::uint64_t> raw;    // stored integers (raw encodings and integer dtypes), else empty
  std::map<std::string, AttrValue> attrs;
};

class H5Store {
 public:
  enum class Mode { kCreate, kRead };
  H5Store(const std::filesystem::path& path, Mode mode);
  ~H5Store();
  H5Store(const H5Store&) = delete;
  H5Store& operator=(const H5Store&) = delete;

  // Writers. `name` may contain dots and slashes (slashes create groups). ShapeError if the
  // span does not hold prod(shape) elements (prod(shape)/2 bytes for e2m1x2, whose shape is the
  // logical one).
  void write_f64(const std::string& name, const Shape& shape, std::span<const double> data);
  void write_f32(const std::string& name, const Shape& shape, std::span<const float> data);
  void write_bits16(const std::string& name, LogicalDtype dtype, const Shape& shape,
                    std::span<const std::uint16_t> data);
  void write_bits8(const std::string& name, LogicalDtype dtype, const Shape& shape,
                   std::span<const std::uint8_t> data);
  void write_i64(const std::string& name, const Shape& shape, std::span<const std::int64_t> data);
  void write_i32(const std::string& name, const Shape& shape, std::span<const std::int32_t> data);

  // Attributes on the file root ("" or "/") or on a dataset/group by name.
  void set_attr(const std::string& object, const std::string& key, const AttrValue& value);
  std::map<std::string, AttrValue> attrs(const std::string& object) const;

  bool contains(const std::string& name) const;
  std::vector<std::string> names() const;  // every dataset, full path without leading '/', sorted
  StoredTensor read(const std::string& name) const;  // MissingTensor naming the file
  const std::filesystem::path& path() const { return path_; }

 private:
  void write_dataset(const std::string& name, LogicalDtype dtype, const Shape& shape,
                     std::int64_t hid_type, const void* data, std::size_t count);
  std::filesystem::path path_;
  std::int64_t file_ = -1;
  Mode mode_;
};

}  // namespace v4ref
