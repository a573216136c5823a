// Safetensors checkpoint files: a validating, mmap-backed reader, sharded checkpoints through
// model.safetensors.index.json, and a writer (v4-forward.md §15.1–15.3).
//
// Reading never copies a tensor: a TensorView points into the mapped file and decodes elements
// on demand (memcpy, no alignment assumption, §15.1). All offsets are 64-bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "v4ref/ref/core/dtype.hpp"

namespace v4ref {

using Shape = std::vector<std::int64_t>;

std::string shape_string(const Shape& s);       // "[2048, 4096]"
// Product of the dims, 1 for []. ShapeError on a negative dim or on overflow of int64.
std::int64_t shape_numel(const Shape& s);

// One entry of a safetensors header.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kU8;
  Shape shape;
  std::uint64_t begin = 0;  // byte offsets relative to the data section, end exclusive
  std::uint64_t end = 0;
  std::int64_t numel() const { return shape_numel(shape); }
  std::uint64_t nbytes() const { return end - begin; }
};

// A read-only memory map of a whole file (RAII).
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// A tensor inside a mapped file. Cheap to copy; keeps the mapping alive.
class TensorView {
 public:
  TensorView() = default;
  TensorView(std::shared_ptr<const MappedFile> file, TensorInfo info, std::span<const std::byte> bytes);

  const std::string& name() const { return info_.name; }
  DType dtype() const { return info_.dtype; }
  const Shape& shape() const { return info_.shape; }
  std::int64_t numel() const { return info_.numel(); }
  std::int64_t dim(std::size_t i) const;  // ShapeError naming the tensor if i >= rank
  std::size_t rank() const { return info_.shape.size(); }
  const TensorInfo& info() const { return info_; }
  std::span<const std::byte> bytes() const { return bytes_; }
  const std::filesystem::path& file() const;

  // Raw element bits (memcpy). T's size must equal the dtype's item size.
  template <class T>
  T raw(std::int64_t flat) const;

  // Exact decode of element `flat` to double for BF16, F16, F32, F64, F8_E4M3, F8_E5M2,
  // F8_E8M0, U8, I8 (as signed), I32 and I64. I8 used as packed fp4 is decoded by dequant.hpp.
  // NaN codes decode to NaN (callers reject them, dequant.hpp); an I64 value that double
  // cannot hold exactly is a NumericError.
  double to_double(std::int64_t flat) const;

  // Checks with errors naming tensor and file: "expected [a, b], got [c, d]".
  void require_shape(const Shape& expected) const;
  void require_dtype(DType expected) const;

 private:
  // Throws Error naming the tensor unless elem_size == itemsize and 0 <= flat < numel.
  void check_element(std::size_t elem_size, std::int64_t flat) const;

  std::shared_ptr<const MappedFile> file_;
  TensorInfo info_;
  std::span<const std::byte> bytes_;
};

template <class T>
T TensorView::raw(std::int64_t flat) const {
  static_assert(std::is_trivially_copyable_v<T>, "raw<T> needs a trivially copyable T");
  check_element(sizeof(T), flat);
  T v;
  std::memcpy(&v, bytes_.data() + static_cast<std::size_t>(flat) * sizeof(T), sizeof(T));
  return v;
}

// One .safetensors file, header validated on open: length field within the file and under a
// 100 MB cap, JSON object, known dtypes, shapes non-negative, end − begin = numel × itemsize,
// offsets inside the data section, no overlaps, no holes, unique names. Errors are FormatError
// or DtypeError naming the file and the tensor.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const;
  // Sorted by data offset (the order of the bytes in the file), ties by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool contains(std::string_view name) const;
  TensorView tensor(std::string_view name) const;  // MissingTensor naming the file
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::uint64_t header_size() const { return header_size_; }

 private:
  std::shared_ptr<const MappedFile> file_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> by_name_;
  std::map<std::string, std::string> metadata_;
  std::uint64_t header_size_ = 0;
};

// A checkpoint directory: model.safetensors.index.json plus shards, or a single
// model.safetensors. Shards open lazily on first use. The index is checked against the shards
// when a shard is opened (every tensor the index places in a shard must be there, and nothing
// the index does not name, FormatError); a shard named by the index but absent is an IoError
// naming the shard and the index, raised by open(). Shard file names containing "/", "\\" or
// ".." are rejected (FormatError). Copies share the state; tensor() is thread-safe.
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const;
  bool contains(std::string_view name) const;
  TensorView tensor(std::string_view name) const;  // MissingTensor naming the checkpoint
  std::vector<std::string> names() const;          // sorted
  std::string shard_of(std::string_view name) const;  // file name of the shard holding it
  std::vector<std::string> shard_files() const;    // sorted, unique
  // Opens every shard and checks it against the index (used by `v4ref inspect`).
  void open_all_shards() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// Builds a .safetensors file in memory and writes it: header padded with spaces to a
// multiple of 8 bytes, tensors in insertion order, packed without gaps.
class SafetensorsWriter {
 public:
  // ShapeError if data.size() != numel × itemsize; Error on a duplicate, empty or
  // "__metadata__" name.
  void add(const std::string& name, DType dtype, const Shape& shape, std::span<const std::byte> data);
  void set_metadata(const std::string& key, const std::string& value);
  std::uint64_t data_bytes() const { return data_.size(); }
  std::size_t size() const { return entries_.size(); }
  std::vector<std::string> names() const;
  // Writes a temporary file beside `path`, then renames it over `path`. IoError on failure.
  void write(const std::filesystem::path& path) const;

 private:
  std::vector<TensorInfo> entries_;
  std::vector<std::byte> data_;
  std::map<std::string, std::string> metadata_;
};

// Writes model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {...}},
// pretty-printed, keys sorted; temporary file then rename. IoError on failure.
void write_safetensors_index(const std::filesystem::path& dir,
                             const std::map<std::string, std::string>& weight_map,
                             std::uint64_t total_size);

}  // namespace v4ref
