// HDF5 tensor store (guide/verification.md §12–13): raw bits + logical_dtype attributes.
#include "v4ref/ref/hdf5_store.hpp"

#include <hdf5.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "v4ref/ref/core/formats.hpp"

namespace v4ref {
namespace {

struct LogicalDtypeInfo {
  LogicalDtype dtype;
  std::string_view name;
};
constexpr std::array<LogicalDtypeInfo, 9> kLogicalDtypes = {{
    {LogicalDtype::kF64, "f64"},
    {LogicalDtype::kF32, "f32"},
    {LogicalDtype::kBF16, "bf16"},
    {LogicalDtype::kE4M3, "e4m3fn"},
    {LogicalDtype::kE2M1x2, "e2m1x2"},
    {LogicalDtype::kUE8M0, "ue8m0"},
    {LogicalDtype::kI64, "i64"},
    {LogicalDtype::kI32, "i32"},
    {LogicalDtype::kU8, "u8"},
}};

// RAII for HDF5 identifiers.
class Hid {
 public:
  using Closer = herr_t (*)(hid_t);
  Hid(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Hid() {
    if (id_ >= 0) closer_(id_);
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  Closer closer_;
};

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw IoError("HDF5 " + path.string() + ": " + what);
}

void check(herr_t status, const std::filesystem::path& path, const std::string& what) {
  if (status < 0) fail(path, what);
}

std::string clean_name(const std::string& name) {
  if (name.empty() || name == "/") return "/";
  return name.front() == '/' ? name : "/" + name;
}

void write_string_attr(hid_t obj, const std::string& key, const std::string& value,
                       const std::filesystem::path& path) {
  Hid type(H5Tcopy(H5T_C_S1), H5Tclose);
  check(H5Tset_size(type.get(), std::max<std::size_t>(value.size(), 1)), path, "string type");
  check(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), path, "string pad");
  check(H5Tset_cset(type.get(), H5T_CSET_UTF8), path, "string charset");
  Hid space(H5Screate(H5S_SCALAR), H5Sclose);
  if (H5Aexists(obj, key.c_str()) > 0) check(H5Adelete(obj, key.c_str()), path, "delete attr " + key);
  Hid attr(H5Acreate2(obj, key.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) fail(path, "cannot create attribute " + key);
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  check(H5Awrite(attr.get(), type.get(), padded.data()), path, "write attribute " + key);
}

template <class T>
void write_scalar_attr(hid_t obj, const std::string& key, T value, hid_t type,
                       const std::filesystem::path& path) {
  Hid space(H5Screate(H5S_SCALAR), H5Sclose);
  if (H5Aexists(obj, key.c_str()) > 0) check(H5Adelete(obj, key.c_str()), path, "delete attr " + key);
  Hid attr(H5Acreate2(obj, key.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) fail(path, "cannot create attribute " + key);
  check(H5Awrite(attr.get(), type, &value), path, "write attribute " + key);
}

AttrValue read_attr(hid_t attr, const std::string& key, const std::filesystem::path& path) {
  Hid type(H5Aget_type(attr), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls == H5T_STRING) {
    if (H5Tis_variable_str(type.get()) > 0) {
      // The memory type takes the file's character set: h5py writes UTF-8 strings, and HDF5
      // refuses to convert UTF-8 to the default ASCII.
      Hid mem(H5Tcopy(H5T_C_S1), H5Tclose);
      check(H5Tset_size(mem.get(), H5T_VARIABLE), path, "vlen string");
      check(H5Tset_cset(mem.get(), H5Tget_cset(type.get())), path, "vlen string character set");
      char* s = nullptr;
      check(H5Aread(attr, mem.get(), &s), path, "read attribute " + key);
      std::string out = s != nullptr ? s : "";
      H5free_memory(s);
      return out;
    }
    const std::size_t n = H5Tget_size(type.get());
    std::string buf(n, '\0');
    check(H5Aread(attr, type.get(), buf.data()), path, "read attribute " + key);
    buf.resize(std::strlen(buf.c_str()));
    return buf;
  }
  if (cls == H5T_FLOAT) {
    double v = 0;
    check(H5Aread(attr, H5T_NATIVE_DOUBLE, &v), path, "read attribute " + key);
    return v;
  }
  if (cls == H5T_INTEGER) {
    std::int64_t v = 0;
    check(H5Aread(attr, H5T_NATIVE_INT64, &v), path, "read attribute " + key);
    return v;
  }
  return std::string("<unsupported attribute type>");
}

herr_t collect_attr(hid_t obj, const char* name, const H5A_info_t*, void* out) {
  auto* ctx = static_cast<std::pair<std::map<std::string, AttrValue>*, const std::filesystem::path*>*>(out);
  Hid attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) return -1;
  (*ctx->first)[name] = read_attr(attr.get(), name, *ctx->second);
  return 0;
}

herr_t collect_dataset(hid_t, const char* name, const H5O_info_t* info, void* out) {
  if (info->type == H5O_TYPE_DATASET) static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

std::size_t count_of(const Shape& shape) { return static_cast<std::size_t>(shape_numel(shape)); }

}  // namespace

std::string_view logical_dtype_name(LogicalDtype d) {
  for (const auto& e : kLogicalDtypes)
    if (e.dtype == d) return e.name;
  return "?";
}

LogicalDtype parse_logical_dtype(std::string_view name, std::string_view where) {
  for (const auto& e : kLogicalDtypes)
    if (e.name == name) return e.dtype;
  std::string accepted;
  for (const auto& e : kLogicalDtypes) accepted += (accepted.empty() ? "" : ", ") + std::string(e.name);
  throw DtypeError("unknown logical_dtype \"" + std::string(name) + "\"" +
                   (where.empty() ? "" : " (" + std::string(where) + ")") + "; accepted: " + accepted);
}

H5Store::H5Store(const std::filesystem::path& path, Mode mode) : path_(path), mode_(mode) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors are reported through exceptions
  if (mode == Mode::kCreate) {
    file_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file_ < 0) fail(path, "cannot create file");
  } else {
    if (!std::filesystem::exists(path)) throw IoError("HDF5 file " + path.string() + " does not exist");
    file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file_ < 0) throw FormatError("HDF5 file " + path.string() + " cannot be opened (not HDF5 or corrupt)");
  }
}

H5Store::~H5Store() {
  if (file_ >= 0) H5Fclose(file_);
}

void H5Store::write_dataset(const std::string& name, LogicalDtype dtype, const Shape& shape,
                            std::int64_t hid_type, const void* data, std::size_t count) {
  if (mode_ != Mode::kCreate) fail(path_, "opened read-only; cannot write " + name);
  Shape stored = shape;
  if (dtype == LogicalDtype::kE2M1x2) {
    if (shape.empty() || shape.back() % 2 != 0)
      throw ShapeError(name + ": e2m1x2 needs an even last dimension, got " + shape_string(shape));
    stored.back() /= 2;
  }
  if (count != count_of(stored))
    throw ShapeError(name + ": " + std::to_string(count) + " elements given for shape " +
                     shape_string(stored) + " (" + std::to_string(count_of(stored)) + " expected)");
  std::vector<hsize_t> dims(stored.begin(), stored.end());
  Hid space(stored.empty() ? H5Screate(H5S_SCALAR)
                           : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
            H5Sclose);
  Hid lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  check(H5Pset_create_intermediate_group(lcpl.get(), 1), path_, "link property");
  Hid dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  const bool compress = count >= 4096 && std::none_of(dims.begin(), dims.end(), [](hsize_t d) { return d == 0; });
  if (compress) {
    // Chunks of whole trailing rows, about 1 MiB each.
    std::vector<hsize_t> chunk = dims;
    const std::size_t item = H5Tget_size(hid_type);
    std::size_t row_bytes = item;
    for (std::size_t i = 1; i < dims.size(); ++i) row_bytes *= dims[i];
    chunk[0] = std::max<hsize_t>(1, std::min<hsize_t>(dims[0], (1u << 20) / std::max<std::size_t>(row_bytes, 1)));
    check(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), path_, "chunk " + name);
    check(H5Pset_shuffle(dcpl.get()), path_, "shuffle " + name);
    check(H5Pset_deflate(dcpl.get(), 4), path_, "deflate " + name);
  }
  const std::string full = clean_name(name);
  if (H5Lexists(file_, full.c_str(), H5P_DEFAULT) > 0) fail(path_, "dataset " + name + " already exists");
  Hid ds(H5Dcreate2(file_, full.c_str(), hid_type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
         H5Dclose);
  if (!ds.ok()) fail(path_, "cannot create dataset " + name);
  if (count > 0) check(H5Dwrite(ds.get(), hid_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), path_, "write " + name);
  write_string_attr(ds.get(), "logical_dtype", std::string(logical_dtype_name(dtype)), path_);
  if (dtype == LogicalDtype::kE2M1x2) write_string_attr(ds.get(), "logical_shape", shape_string(shape), path_);
}

void H5Store::write_f64(const std::string& name, const Shape& shape, std::span<const double> data) {
  write_dataset(name, LogicalDtype::kF64, shape, H5T_NATIVE_DOUBLE, data.data(), data.size());
}
void H5Store::write_f32(const std::string& name, const Shape& shape, std::span<const float> data) {
  write_dataset(name, LogicalDtype::kF32, shape, H5T_NATIVE_FLOAT, data.data(), data.size());
}
void H5Store::write_bits16(const std::string& name, LogicalDtype dtype, const Shape& shape,
                           std::span<const std::uint16_t> data) {
  if (dtype != LogicalDtype::kBF16)
    throw DtypeError(name + ": 16-bit raw data must be bf16, got " + std::string(logical_dtype_name(dtype)));
  write_dataset(name, dtype, shape, H5T_NATIVE_UINT16, data.data(), data.size());
}
void H5Store::write_bits8(const std::string& name, LogicalDtype dtype, const Shape& shape,
                          std::span<const std::uint8_t> data) {
  if (dtype != LogicalDtype::kE4M3 && dtype != LogicalDtype::kE2M1x2 && dtype != LogicalDtype::kUE8M0 &&
      dtype != LogicalDtype::kU8)
    throw DtypeError(name + ": 8-bit raw data must be e4m3fn, e2m1x2, ue8m0 or u8, got " +
                     std::string(logical_dtype_name(dtype)));
  write_dataset(name, dtype, shape, H5T_NATIVE_UINT8, data.data(), data.size());
}
void H5Store::write_i64(const std::string& name, const Shape& shape, std::span<const std::int64_t> data) {
  write_dataset(name, LogicalDtype::kI64, shape, H5T_NATIVE_INT64, data.data(), data.size());
}
void H5Store::write_i32(const std::string& name, const Shape& shape, std::span<const std::int32_t> data) {
  write_dataset(name, LogicalDtype::kI32, shape, H5T_NATIVE_INT32, data.data(), data.size());
}

void H5Store::set_attr(const std::string& object, const std::string& key, const AttrValue& value) {
  if (mode_ != Mode::kCreate) fail(path_, "opened read-only; cannot set attribute " + key);
  Hid obj(H5Oopen(file_, clean_name(object).c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.ok()) throw MissingTensor("HDF5 " + path_.string() + ": object " + object + " not found");
  if (const auto* s = std::get_if<std::string>(&value)) {
    write_string_attr(obj.get(), key, *s, path_);
  } else if (const auto* d = std::get_if<double>(&value)) {
    write_scalar_attr(obj.get(), key, *d, H5T_NATIVE_DOUBLE, path_);
  } else {
    write_scalar_attr(obj.get(), key, std::get<std::int64_t>(value), H5T_NATIVE_INT64, path_);
  }
}

std::map<std::string, AttrValue> H5Store::attrs(const std::string& object) const {
  Hid obj(H5Oopen(file_, clean_name(object).c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.ok()) throw MissingTensor("HDF5 " + path_.string() + ": object " + object + " not found");
  std::map<std::string, AttrValue> out;
  std::pair<std::map<std::string, AttrValue>*, const std::filesystem::path*> ctx{&out, &path_};
  hsize_t idx = 0;
  check(H5Aiterate2(obj.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr, &ctx), path_,
        "iterate attributes of " + object);
  return out;
}

bool H5Store::contains(const std::string& name) const {
  const std::string full = clean_name(name);
  // H5Lexists requires every intermediate group to exist: walk the path.
  std::size_t pos = 1;
  while (true) {
    const std::size_t next = full.find('/', pos);
    const std::string prefix = full.substr(0, next);
    if (H5Lexists(file_, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  H5O_info_t info;
  if (H5Oget_info_by_name(file_, full.c_str(), &info, H5P_DEFAULT) < 0) return false;
  return info.type == H5O_TYPE_DATASET;
}

std::vector<std::string> H5Store::names() const {
  std::vector<std::string> out;
  check(H5Ovisit(file_, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &out), path_, "visit");
  std::sort(out.begin(), out.end());
  return out;
}

StoredTensor H5Store::read(const std::string& name) const {
  if (!contains(name)) throw MissingTensor(name + " not found in HDF5 file " + path_.string());
  Hid ds(H5Dopen2(file_, clean_name(name).c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) fail(path_, "cannot open dataset " + name);
  StoredTensor t;
  t.name = name;
  t.attrs = attrs(name);
  Hid space(H5Dget_space(ds.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(rank, 0)));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  Shape stored(dims.begin(), dims.end());
  const std::size_t n = count_of(stored);

  Hid type(H5Dget_type(ds.get()), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  const std::size_t size = H5Tget_size(type.get());
  auto it = t.attrs.find("logical_dtype");
  if (it != t.attrs.end() && std::holds_alternative<std::string>(it->second)) {
    t.dtype = parse_logical_dtype(std::get<std::string>(it->second), path_.string() + ":" + name);
  } else if (cls == H5T_FLOAT) {
    t.dtype = size == 8 ? LogicalDtype::kF64 : LogicalDtype::kF32;
  } else if (cls == H5T_INTEGER) {
    t.dtype = size == 8 ? LogicalDtype::kI64 : (size == 4 ? LogicalDtype::kI32 : LogicalDtype::kU8);
  } else {
    throw DtypeError(path_.string() + ":" + name + ": unsupported HDF5 type class without logical_dtype");
  }

  t.shape = stored;
  switch (t.dtype) {
    case LogicalDtype::kF64:
    case LogicalDtype::kF32:
      t.values.resize(n);
      if (n) check(H5Dread(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.values.data()), path_, "read " + name);
      break;
    case LogicalDtype::kI64:
    case LogicalDtype::kI32: {
      std::vector<std::int64_t> v(n);
      if (n) check(H5Dread(ds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), path_, "read " + name);
      t.raw.assign(v.begin(), v.end());
      for (std::int64_t x : v) t.values.push_back(static_cast<double>(x));
      break;
    }
    case LogicalDtype::kBF16: {
      std::vector<std::uint16_t> v(n);
      if (n) check(H5Dread(ds.get(), H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), path_, "read " + name);
      t.raw.assign(v.begin(), v.end());
      for (std::uint16_t x : v) t.values.push_back(fmt::bf16_to_double(x));
      break;
    }
    case LogicalDtype::kE4M3:
    case LogicalDtype::kUE8M0:
    case LogicalDtype::kU8:
    case LogicalDtype::kE2M1x2: {
      std::vector<std::uint8_t> v(n);
      if (n) check(H5Dread(ds.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), path_, "read " + name);
      t.raw.assign(v.begin(), v.end());
      if (t.dtype == LogicalDtype::kE2M1x2) {
        if (!t.shape.empty()) t.shape.back() *= 2;
        for (std::uint8_t x : v) {
          t.values.push_back(fmt::e2m1_to_double(fmt::fp4_low(x)));
          t.values.push_back(fmt::e2m1_to_double(fmt::fp4_high(x)));
        }
      } else {
        for (std::uint8_t x : v)
          t.values.push_back(t.dtype == LogicalDtype::kE4M3   ? fmt::e4m3_to_double(x)
                             : t.dtype == LogicalDtype::kUE8M0 ? fmt::ue8m0_to_double(x)
                                                              : static_cast<double>(x));
      }
      break;
    }
  }
  return t;
}

}  // namespace v4ref
