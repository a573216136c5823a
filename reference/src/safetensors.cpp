// Safetensors reader (mmap, validated header), sharded checkpoints and writer
// (v4-forward.md §15.1–15.3).
//
// Every header check of §15.1 is done on open: length field under a 100 MB cap and inside the
// file, JSON object, unique keys (nlohmann keeps the last of duplicate keys silently, so the
// parse runs through a callback that records the keys of every object), known dtypes (§15.2),
// non-negative integer shapes, end − begin = numel × itemsize with 64-bit overflow checks,
// offsets inside the data section, no overlaps and no holes. Elements are read with memcpy
// (no alignment assumption) and decoded exactly (§15.5).
#include "v4ref/ref/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <fstream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"

namespace v4ref {
namespace {

using nlohmann::json;

// §15.1: "a sanity cap on N (e.g. 100 MB) protects against corrupt files".
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr std::uint64_t kLengthFieldBytes = 8;  // u64 LE header length
constexpr const char* kIndexFileName = "model.safetensors.index.json";
constexpr const char* kSingleFileName = "model.safetensors";

std::string quoted(const std::filesystem::path& p) { return p.string(); }

// a·b in uint64, or nullopt-like false on overflow.
bool mul_u64(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  return !__builtin_mul_overflow(a, b, &out);
}

// ------------------------------------------------------------------ exact decoders (§15.5)

// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
double f16_to_double(std::uint16_t h) {
  const int e = (h >> 10) & 0x1F;
  const int m = h & 0x3FF;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 31) {
    return m == 0 ? sign * std::numeric_limits<double>::infinity()
                  : std::numeric_limits<double>::quiet_NaN();
  }
  if (e == 0) return sign * m * fmt::pow2(-24);  // (m/1024)·2^-14
  return sign * (1024 + m) * fmt::pow2(e - 25);  // (1 + m/1024)·2^(e−15)
}

// float8 e5m2 (IEEE-like): 1 sign, 5 exponent (bias 15), 2 mantissa bits, Inf and NaN.
double e5m2_to_double(std::uint8_t b) {
  const int e = (b >> 2) & 0x1F;
  const int m = b & 0x3;
  const double sign = (b & 0x80) ? -1.0 : 1.0;
  if (e == 31) {
    return m == 0 ? sign * std::numeric_limits<double>::infinity()
                  : std::numeric_limits<double>::quiet_NaN();
  }
  if (e == 0) return sign * m * fmt::pow2(-16);  // (m/4)·2^-14
  return sign * (4 + m) * fmt::pow2(e - 17);     // (1 + m/4)·2^(e−15)
}

// True if the int64 v is exactly a double (at most 53 significant bits).
bool int64_fits_double(std::int64_t v) {
  const std::uint64_t mag =
      v < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
  if (mag == 0) return true;
  const std::uint64_t odd = mag >> std::countr_zero(mag);
  return odd < (std::uint64_t{1} << 53);
}

// ------------------------------------------------------------------ JSON with unique keys

// Parses `text` as JSON; FormatError naming `where` on a syntax error or on a key repeated
// within one object (checked at every nesting level).
json parse_json_unique_keys(std::string_view text, const std::string& where) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const json::parser_callback_t cb = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      default:
        break;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    throw FormatError(where + ": not valid JSON (" + e.what() + ")");
  }
  if (!duplicate.empty()) throw FormatError(where + ": duplicate key \"" + duplicate + "\"");
  return j;
}

// ------------------------------------------------------------------ header parsing

std::uint64_t read_u64_le(std::span<const std::byte> b) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint64_t>(b[static_cast<std::size_t>(i)]);
  return v;
}

// A JSON number that is a non-negative integer fitting int64; `what` names it for the message.
std::uint64_t json_non_negative(const json& v, const std::string& what) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      throw FormatError(what + " = " + std::to_string(u) + " exceeds 2^63 - 1");
    return u;
  }
  if (v.is_number_integer()) throw FormatError(what + " = " + v.dump() + " is negative");
  throw FormatError(what + " = " + v.dump() + " is not a non-negative integer");
}

Shape parse_shape(const json& j, const std::string& where) {
  if (!j.is_array()) throw FormatError(where + ": \"shape\" must be an array, got " + j.dump());
  Shape shape;
  for (std::size_t i = 0; i < j.size(); ++i)
    shape.push_back(static_cast<std::int64_t>(
        json_non_negative(j[i], where + ": shape[" + std::to_string(i) + "]")));
  return shape;
}

// Bytes a tensor of this dtype and shape needs, with overflow checks.
std::uint64_t tensor_nbytes(DType dtype, const Shape& shape, const std::string& where) {
  std::uint64_t n = 1;
  for (const auto d : shape) {
    if (!mul_u64(n, static_cast<std::uint64_t>(d), n))
      throw FormatError(where + ": element count of shape " + shape_string(shape) +
                        " overflows 64 bits");
  }
  std::uint64_t bytes = 0;
  if (!mul_u64(n, dtype_size(dtype), bytes) ||
      n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    throw FormatError(where + ": byte count of shape " + shape_string(shape) + " " +
                      std::string(dtype_name(dtype)) + " overflows 64 bits");
  return bytes;
}

const json& require_key(const json& entry, const char* key, const std::string& where) {
  const auto it = entry.find(key);
  if (it == entry.end()) throw FormatError(where + ": missing \"" + key + "\"");
  return *it;
}

// One tensor entry of the header; `data_size` is the length of the data section.
TensorInfo parse_tensor_entry(const std::string& name, const json& entry, std::uint64_t data_size,
                              const std::string& file) {
  const std::string where = file + ": tensor " + name;
  if (!entry.is_object()) throw FormatError(where + ": entry must be an object, got " + entry.dump());
  TensorInfo info;
  info.name = name;
  const json& dt = require_key(entry, "dtype", where);
  if (!dt.is_string()) throw FormatError(where + ": \"dtype\" must be a string, got " + dt.dump());
  info.dtype = parse_dtype(dt.get<std::string>(), where);
  info.shape = parse_shape(require_key(entry, "shape", where), where);
  const json& off = require_key(entry, "data_offsets", where);
  if (!off.is_array() || off.size() != 2)
    throw FormatError(where + ": \"data_offsets\" must be [begin, end], got " + off.dump());
  info.begin = json_non_negative(off[0], where + ": data_offsets[0]");
  info.end = json_non_negative(off[1], where + ": data_offsets[1]");
  if (info.begin > info.end)
    throw FormatError(where + ": data_offsets [" + std::to_string(info.begin) + ", " +
                      std::to_string(info.end) + "] has begin > end");
  const std::uint64_t need = tensor_nbytes(info.dtype, info.shape, where);
  if (info.end - info.begin != need)
    throw ShapeError(where + ": dtype " + std::string(dtype_name(info.dtype)) + " shape " +
                     shape_string(info.shape) + " needs " + std::to_string(need) +
                     " bytes but data_offsets span " + std::to_string(info.end - info.begin));
  if (info.end > data_size)
    throw FormatError(where + " needs bytes [" + std::to_string(info.begin) + ", " +
                      std::to_string(info.end) + ") of the data section but the file has only " +
                      std::to_string(data_size) + " (truncated?)");
  return info;
}

std::map<std::string, std::string> parse_metadata(const json& j, const std::string& file) {
  if (!j.is_object()) throw FormatError(file + ": \"__metadata__\" must be an object, got " + j.dump());
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : j.items()) {
    if (!v.is_string())
      throw FormatError(file + ": __metadata__[\"" + k + "\"] must be a string, got " + v.dump());
    out.emplace(k, v.get<std::string>());
  }
  return out;
}

// Sorts by offset and checks that the tensors tile [0, data_size) exactly.
void check_tiling(std::vector<TensorInfo>& tensors, std::uint64_t data_size, const std::string& file) {
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  std::uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : tensors) {
    if (t.begin < pos)
      throw FormatError(file + ": tensor " + t.name + " bytes [" + std::to_string(t.begin) + ", " +
                        std::to_string(t.end) + ") overlap tensor " + prev->name + " bytes [" +
                        std::to_string(prev->begin) + ", " + std::to_string(prev->end) + ")");
    if (t.begin > pos)
      throw FormatError(file + ": hole of " + std::to_string(t.begin - pos) +
                        " bytes in the data section at [" + std::to_string(pos) + ", " +
                        std::to_string(t.begin) + ") before tensor " + t.name);
    pos = t.end;
    prev = &t;
  }
  if (pos != data_size)
    throw FormatError(file + ": data section has " + std::to_string(data_size) +
                      " bytes but the tensors cover only [0, " + std::to_string(pos) + "); " +
                      std::to_string(data_size - pos) + " trailing bytes belong to no tensor");
}

// ------------------------------------------------------------------ file writing

// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
void write_file_atomically(const std::filesystem::path& path, std::span<const char> bytes) {
  static std::atomic<unsigned> counter{0};
  std::filesystem::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError("cannot create " + quoted(tmp) + " (writing " + quoted(path) + ")");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      throw IoError("write of " + std::to_string(bytes.size()) + " bytes to " + quoted(tmp) +
                    " failed (writing " + quoted(path) + ")");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw IoError("cannot rename " + quoted(tmp) + " to " + quoted(path) + ": " + ec.message());
  }
}

bool bad_shard_name(const std::string& s) {
  return s.empty() || s.find('/') != std::string::npos || s.find('\\') != std::string::npos ||
         s.find("..") != std::string::npos;
}

}  // namespace

// ==================================================================== shapes

std::string shape_string(const Shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

std::int64_t shape_numel(const Shape& s) {
  std::int64_t n = 1;
  for (const auto d : s) {
    if (d < 0) throw ShapeError("shape " + shape_string(s) + " has a negative dimension");
    if (__builtin_mul_overflow(n, d, &n))
      throw ShapeError("element count of shape " + shape_string(s) + " overflows int64");
  }
  return n;
}

// ==================================================================== MappedFile

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError("cannot open " + quoted(path) + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw IoError("cannot stat " + quoted(path) + ": " + std::strerror(err));
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw IoError("cannot mmap " + quoted(path) + " (" + std::to_string(size_) +
                    " bytes): " + std::strerror(err));
    }
    data_ = static_cast<const std::byte*>(p);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

// ==================================================================== TensorView

TensorView::TensorView(std::shared_ptr<const MappedFile> file, TensorInfo info,
                       std::span<const std::byte> bytes)
    : file_(std::move(file)), info_(std::move(info)), bytes_(bytes) {
  V4REF_ASSERT(bytes_.size() == info_.nbytes());
}

const std::filesystem::path& TensorView::file() const {
  static const std::filesystem::path kNone;
  return file_ ? file_->path() : kNone;
}

std::int64_t TensorView::dim(std::size_t i) const {
  if (i >= rank())
    throw ShapeError(name() + " (" + quoted(file()) + "): dim " + std::to_string(i) +
                     " requested of a rank-" + std::to_string(rank()) + " tensor " +
                     shape_string(shape()));
  return info_.shape[i];
}

void TensorView::check_element(std::size_t elem_size, std::int64_t flat) const {
  const std::size_t itemsize = dtype_size(dtype());
  if (elem_size != itemsize)
    throw Error(name() + " (" + quoted(file()) + "): raw read of a " + std::to_string(elem_size) +
                "-byte type from a " + std::string(dtype_name(dtype())) + " tensor (" +
                std::to_string(itemsize) + " bytes per element)");
  if (flat < 0 || flat >= numel())
    throw Error(name() + " (" + quoted(file()) + "): element " + std::to_string(flat) +
                " out of range for shape " + shape_string(shape()) + " (" +
                std::to_string(numel()) + " elements)");
}

double TensorView::to_double(std::int64_t flat) const {
  switch (dtype()) {
    case DType::kBF16: return fmt::bf16_to_double(raw<std::uint16_t>(flat));
    case DType::kF16: return f16_to_double(raw<std::uint16_t>(flat));
    case DType::kF32: return static_cast<double>(raw<float>(flat));
    case DType::kF64: return raw<double>(flat);
    case DType::kF8E4M3: return fmt::e4m3_to_double(raw<std::uint8_t>(flat));
    case DType::kF8E5M2: return e5m2_to_double(raw<std::uint8_t>(flat));
    case DType::kF8E8M0: return fmt::ue8m0_to_double(raw<std::uint8_t>(flat));
    case DType::kU8: return raw<std::uint8_t>(flat);
    case DType::kI8: return raw<std::int8_t>(flat);
    case DType::kI32: return raw<std::int32_t>(flat);
    case DType::kI64: {
      const auto v = raw<std::int64_t>(flat);
      if (!int64_fits_double(v))
        throw NumericError(name() + " (" + quoted(file()) + "): element " + std::to_string(flat) +
                           " = " + std::to_string(v) + " is not exactly representable as double");
      return static_cast<double>(v);
    }
  }
  throw DtypeError(name() + ": to_double has no decoder for dtype " +
                   std::string(dtype_name(dtype())));
}

void TensorView::require_shape(const Shape& expected) const {
  if (shape() != expected)
    throw ShapeError(name() + " (" + quoted(file()) + "): expected " + shape_string(expected) +
                     ", got " + shape_string(shape()));
}

void TensorView::require_dtype(DType expected) const {
  if (dtype() != expected)
    throw DtypeError(name() + " (" + quoted(file()) + "): expected dtype " +
                     std::string(dtype_name(expected)) + ", got " +
                     std::string(dtype_name(dtype())));
}

// ==================================================================== SafetensorsFile

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile f;
  f.file_ = std::make_shared<const MappedFile>(path);
  const std::string file = quoted(path);
  const auto bytes = f.file_->bytes();
  if (bytes.size() < kLengthFieldBytes)
    throw FormatError(file + ": " + std::to_string(bytes.size()) +
                      " bytes is too short for the 8-byte header length");
  const std::uint64_t n = read_u64_le(bytes.first(kLengthFieldBytes));
  if (n > kMaxHeaderBytes)
    throw FormatError(file + ": header length " + std::to_string(n) + " exceeds the cap of " +
                      std::to_string(kMaxHeaderBytes) + " bytes (corrupt file?)");
  if (n > bytes.size() - kLengthFieldBytes)
    throw FormatError(file + ": header length " + std::to_string(n) + " runs past the end of the " +
                      std::to_string(bytes.size()) + "-byte file");
  f.header_size_ = n;

  const auto* text = reinterpret_cast<const char*>(bytes.data() + kLengthFieldBytes);
  const json header = parse_json_unique_keys(std::string_view(text, n), file + ": header");
  if (!header.is_object())
    throw FormatError(file + ": header must be a JSON object, got " +
                      std::string(header.type_name()));

  const std::uint64_t data_start = kLengthFieldBytes + n;
  const std::uint64_t data_size = bytes.size() - data_start;
  for (const auto& [key, entry] : header.items()) {
    if (key == "__metadata__") {
      f.metadata_ = parse_metadata(entry, file);
      continue;
    }
    f.tensors_.push_back(parse_tensor_entry(key, entry, data_size, file));
  }
  check_tiling(f.tensors_, data_size, file);
  for (std::size_t i = 0; i < f.tensors_.size(); ++i) f.by_name_.emplace(f.tensors_[i].name, i);
  return f;
}

const std::filesystem::path& SafetensorsFile::path() const { return file_->path(); }

bool SafetensorsFile::contains(std::string_view name) const {
  return by_name_.find(std::string(name)) != by_name_.end();
}

TensorView SafetensorsFile::tensor(std::string_view name) const {
  const auto it = by_name_.find(std::string(name));
  if (it == by_name_.end())
    throw MissingTensor(std::string(name) + " not found in " + quoted(path()) + " (" +
                        std::to_string(tensors_.size()) + " tensors)");
  const TensorInfo& info = tensors_[it->second];
  const std::size_t offset = static_cast<std::size_t>(kLengthFieldBytes + header_size_ + info.begin);
  return TensorView(file_, info, file_->bytes().subspan(offset, static_cast<std::size_t>(info.nbytes())));
}

// ==================================================================== Checkpoint

struct Checkpoint::State {
  std::filesystem::path dir;
  std::filesystem::path index;                    // empty for a single model.safetensors
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  std::map<std::string, std::vector<std::string>> shard_tensors;  // shard -> tensors (sorted)
  mutable std::mutex mutex;
  mutable std::map<std::string, std::shared_ptr<const SafetensorsFile>> open_shards;

  std::string index_label() const { return index.empty() ? quoted(dir) : quoted(index); }
  std::shared_ptr<const SafetensorsFile> shard(const std::string& shard_name) const;
  void check_shard_against_index(const SafetensorsFile& f, const std::string& shard_name) const;
};

void Checkpoint::State::check_shard_against_index(const SafetensorsFile& f,
                                                  const std::string& shard_name) const {
  for (const auto& name : shard_tensors.at(shard_name)) {
    if (!f.contains(name))
      throw FormatError(index_label() + " assigns tensor " + name + " to shard " + shard_name +
                        ", but " + quoted(f.path()) + " does not contain it");
  }
  for (const auto& t : f.tensors()) {
    const auto it = weight_map.find(t.name);
    if (it == weight_map.end())
      throw FormatError("shard " + quoted(f.path()) + " holds tensor " + t.name + ", which " +
                        index_label() + " does not name");
    if (it->second != shard_name)
      throw FormatError("shard " + quoted(f.path()) + " holds tensor " + t.name + ", which " +
                        index_label() + " assigns to shard " + it->second);
  }
}

std::shared_ptr<const SafetensorsFile> Checkpoint::State::shard(const std::string& shard_name) const {
  std::lock_guard<std::mutex> lock(mutex);
  const auto it = open_shards.find(shard_name);
  if (it != open_shards.end()) return it->second;
  const std::filesystem::path p = dir / shard_name;
  if (!std::filesystem::exists(p))
    throw IoError("shard " + shard_name + " named by " + index_label() + " does not exist (" +
                  quoted(p) + ")");
  auto f = std::make_shared<const SafetensorsFile>(SafetensorsFile::open(p));
  check_shard_against_index(*f, shard_name);
  open_shards.emplace(shard_name, f);
  return f;
}

namespace {

// weight_map of model.safetensors.index.json, validated: names -> shard file names.
std::map<std::string, std::string> read_index(const std::filesystem::path& index) {
  const std::string where = quoted(index);
  std::ifstream in(index, std::ios::binary);
  if (!in) throw IoError("cannot open " + where);
  std::stringstream ss;
  ss << in.rdbuf();
  const json j = parse_json_unique_keys(ss.str(), where);
  if (!j.is_object()) throw FormatError(where + ": must be a JSON object");
  const auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object())
    throw FormatError(where + ": missing or non-object \"weight_map\"");
  std::map<std::string, std::string> out;
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string())
      throw FormatError(where + ": weight_map[\"" + name + "\"] must be a string, got " + shard.dump());
    const auto s = shard.get<std::string>();
    if (bad_shard_name(s))
      throw FormatError(where + ": weight_map[\"" + name + "\"] = \"" + s +
                        "\" is not a plain file name in the checkpoint directory");
    out.emplace(name, s);
  }
  return out;
}

}  // namespace

Checkpoint Checkpoint::open(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir))
    throw IoError("checkpoint directory " + quoted(dir) + " does not exist or is not a directory");
  auto st = std::make_shared<State>();
  st->dir = dir;
  const auto index = dir / kIndexFileName;
  const auto single = dir / kSingleFileName;
  if (std::filesystem::exists(index)) {
    st->index = index;
    st->weight_map = read_index(index);
  } else if (std::filesystem::exists(single)) {
    auto f = std::make_shared<const SafetensorsFile>(SafetensorsFile::open(single));
    for (const auto& t : f->tensors()) st->weight_map.emplace(t.name, kSingleFileName);
    st->open_shards.emplace(kSingleFileName, std::move(f));
  } else {
    throw IoError("checkpoint directory " + quoted(dir) + " has neither " + kIndexFileName +
                  " nor " + kSingleFileName);
  }
  for (const auto& [name, shard] : st->weight_map) st->shard_tensors[shard].push_back(name);
  for (const auto& [shard, names] : st->shard_tensors) {
    if (!std::filesystem::exists(dir / shard))
      throw IoError("shard " + shard + " named by " + st->index_label() + " (e.g. for tensor " +
                    names.front() + ") does not exist in " + quoted(dir));
  }
  Checkpoint c;
  c.state_ = std::move(st);
  return c;
}

const std::filesystem::path& Checkpoint::dir() const { return state_->dir; }

bool Checkpoint::contains(std::string_view name) const {
  return state_->weight_map.find(std::string(name)) != state_->weight_map.end();
}

std::string Checkpoint::shard_of(std::string_view name) const {
  const auto it = state_->weight_map.find(std::string(name));
  if (it == state_->weight_map.end())
    throw MissingTensor(std::string(name) + " not found in checkpoint " + quoted(dir()) + " (" +
                        std::to_string(state_->weight_map.size()) + " tensors)");
  return it->second;
}

TensorView Checkpoint::tensor(std::string_view name) const {
  const std::string shard = shard_of(name);
  return state_->shard(shard)->tensor(name);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(state_->weight_map.size());
  for (const auto& kv : state_->weight_map) out.push_back(kv.first);
  return out;
}

std::vector<std::string> Checkpoint::shard_files() const {
  std::vector<std::string> out;
  for (const auto& kv : state_->shard_tensors) out.push_back(kv.first);
  return out;
}

void Checkpoint::open_all_shards() const {
  for (const auto& kv : state_->shard_tensors) state_->shard(kv.first);
}

// ==================================================================== writer

void SafetensorsWriter::add(const std::string& name, DType dtype, const Shape& shape,
                            std::span<const std::byte> data) {
  if (name.empty() || name == "__metadata__")
    throw Error("safetensors writer: invalid tensor name \"" + name + "\"");
  for (const auto& e : entries_)
    if (e.name == name) throw Error("safetensors writer: duplicate tensor name " + name);
  const auto numel = static_cast<std::uint64_t>(shape_numel(shape));
  std::uint64_t need = 0;
  if (!mul_u64(numel, dtype_size(dtype), need))
    throw ShapeError("safetensors writer: " + name + " shape " + shape_string(shape) +
                     " byte count overflows 64 bits");
  if (data.size() != need)
    throw ShapeError("safetensors writer: " + name + " dtype " + std::string(dtype_name(dtype)) +
                     " shape " + shape_string(shape) + " needs " + std::to_string(need) +
                     " bytes, got " + std::to_string(data.size()));
  TensorInfo info;
  info.name = name;
  info.dtype = dtype;
  info.shape = shape;
  info.begin = data_.size();
  info.end = info.begin + need;
  data_.insert(data_.end(), data.begin(), data.end());
  entries_.push_back(std::move(info));
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

std::vector<std::string> SafetensorsWriter::names() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e.name);
  return out;
}

void SafetensorsWriter::write(const std::filesystem::path& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  for (const auto& e : entries_) {
    header[e.name] = {{"dtype", std::string(dtype_name(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {e.begin, e.end}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // §15.1: right-padded with spaces
  std::vector<char> out(kLengthFieldBytes + text.size() + data_.size());
  std::uint64_t n = text.size();
  for (std::size_t i = 0; i < kLengthFieldBytes; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  std::memcpy(out.data() + kLengthFieldBytes, text.data(), text.size());
  if (!data_.empty()) std::memcpy(out.data() + kLengthFieldBytes + text.size(), data_.data(), data_.size());
  write_file_atomically(path, out);
}

void write_safetensors_index(const std::filesystem::path& dir,
                             const std::map<std::string, std::string>& weight_map,
                             std::uint64_t total_size) {
  json j;
  j["metadata"] = {{"total_size", total_size}};
  j["weight_map"] = json::object();
  for (const auto& [name, shard] : weight_map) {
    if (bad_shard_name(shard))
      throw Error("write_safetensors_index: shard \"" + shard + "\" for tensor " + name +
                  " is not a plain file name");
    j["weight_map"][name] = shard;
  }
  const std::string text = j.dump(2) + "\n";
  write_file_atomically(dir / kIndexFileName, text);
}

}  // namespace v4ref
