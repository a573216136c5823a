// Safetensors reader/writer and sharded checkpoints (v4-forward.md §15.1–15.3): bit-exact round
// trips of every dtype, header layout, exact decoders (§15.5), and one test per malformed file
// asserting the error type and that the message names the file and the tensor.
#include "v4ref/ref/safetensors.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "v4ref/ref/core/error.hpp"
#include "../common/test_support.hpp"

namespace v4ref {
namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------------ helpers

using test::as_bytes;

using test::expect_error;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("v4ref_st_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes a file with a hand-made header (padded to 8) and data section; `n_override`
  // replaces the length field.
  fs::path write_raw(const std::string& file, std::string header, std::size_t data_bytes,
                     std::uint64_t n_override = 0) const {
    header.append((8 - header.size() % 8) % 8, ' ');
    const std::uint64_t n = n_override ? n_override : header.size();
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
    bytes += header;
    bytes.append(data_bytes, '\x11');
    const fs::path p = dir_ / file;
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  fs::path dir_;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// ------------------------------------------------------------------ round trips

TEST_F(SafetensorsTest, RoundTripEveryDtypeBitExact) {
  const std::vector<std::uint16_t> bf16 = {0x3F80, 0xC040, 0x0001, 0x7F80};
  const std::vector<std::uint16_t> f16 = {0x3C00, 0x0001, 0x7BFF, 0xFC00, 0x8000, 0x7E00};
  const std::vector<float> f32 = {1.5f, -0.1f, std::numeric_limits<float>::denorm_min()};
  const std::vector<double> f64 = {3.141592653589793, -0.0, 1e-310};
  const std::vector<std::uint8_t> e4m3 = {0x7E, 0x01, 0x08, 0xB8, 0x7F};
  const std::vector<std::uint8_t> e5m2 = {0x3C, 0x7B, 0x01, 0x7C, 0xFF, 0x83};
  const std::vector<std::uint8_t> e8m0 = {127, 0, 254, 255};
  const std::vector<std::uint8_t> u8 = {0, 200, 255};
  const std::vector<std::uint8_t> i8 = {0xFF, 0x80, 0x7F};
  const std::vector<std::int32_t> i32 = {-7, std::numeric_limits<std::int32_t>::max()};
  const std::vector<std::int64_t> i64 = {-5, std::int64_t{1} << 53, std::int64_t{1} << 62};
  const std::vector<float> scalar = {2.25f};

  SafetensorsWriter w;
  w.add("bf16", DType::kBF16, {2, 2}, as_bytes(bf16));
  w.add("f16", DType::kF16, {6}, as_bytes(f16));
  w.add("f32", DType::kF32, {3}, as_bytes(f32));
  w.add("f64", DType::kF64, {3, 1}, as_bytes(f64));
  w.add("e4m3", DType::kF8E4M3, {5}, as_bytes(e4m3));
  w.add("e5m2", DType::kF8E5M2, {6}, as_bytes(e5m2));
  w.add("e8m0", DType::kF8E8M0, {4}, as_bytes(e8m0));
  w.add("u8", DType::kU8, {3}, as_bytes(u8));
  w.add("i8", DType::kI8, {3}, as_bytes(i8));
  w.add("i32", DType::kI32, {2}, as_bytes(i32));
  w.add("i64", DType::kI64, {3}, as_bytes(i64));
  w.add("scalar", DType::kF32, {}, as_bytes(scalar));
  w.add("empty", DType::kBF16, {0, 3}, {});
  EXPECT_EQ(w.size(), 13u);
  const fs::path p = dir_ / "all.safetensors";
  w.write(p);

  const auto f = SafetensorsFile::open(p);
  ASSERT_EQ(f.tensors().size(), 13u);
  auto same_bytes = [&](const char* name, const std::vector<std::byte>& want, DType dt, const Shape& shape) {
    const TensorView t = f.tensor(name);
    EXPECT_EQ(t.dtype(), dt) << name;
    EXPECT_EQ(t.shape(), shape) << name;
    ASSERT_EQ(t.bytes().size(), want.size()) << name;
    EXPECT_EQ(0, want.empty() ? 0 : std::memcmp(t.bytes().data(), want.data(), want.size())) << name;
  };
  same_bytes("bf16", as_bytes(bf16), DType::kBF16, {2, 2});
  same_bytes("f64", as_bytes(f64), DType::kF64, {3, 1});
  same_bytes("i64", as_bytes(i64), DType::kI64, {3});
  same_bytes("scalar", as_bytes(scalar), DType::kF32, {});
  same_bytes("empty", {}, DType::kBF16, {0, 3});
  EXPECT_EQ(f.tensor("scalar").numel(), 1);
  EXPECT_EQ(f.tensor("empty").numel(), 0);

  // Exact decodes (§15.5), values derived by hand from the bit patterns.
  const auto bf = f.tensor("bf16");
  EXPECT_EQ(bf.to_double(0), 1.0);
  EXPECT_EQ(bf.to_double(1), -3.0);
  EXPECT_EQ(bf.to_double(2), std::ldexp(1.0, -133));
  EXPECT_TRUE(std::isinf(bf.to_double(3)));
  const auto h = f.tensor("f16");
  EXPECT_EQ(h.to_double(0), 1.0);
  EXPECT_EQ(h.to_double(1), std::ldexp(1.0, -24));
  EXPECT_EQ(h.to_double(2), 65504.0);
  EXPECT_EQ(h.to_double(3), -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::signbit(h.to_double(4)) && h.to_double(4) == 0.0);
  EXPECT_TRUE(std::isnan(h.to_double(5)));
  const auto s = f.tensor("f32");
  EXPECT_EQ(s.to_double(0), 1.5);
  EXPECT_EQ(s.to_double(1), static_cast<double>(-0.1f));
  EXPECT_EQ(s.to_double(2), std::ldexp(1.0, -149));
  EXPECT_EQ(f.tensor("f64").to_double(0), 3.141592653589793);
  EXPECT_EQ(f.tensor("f64").to_double(2), 1e-310);
  const auto q = f.tensor("e4m3");
  EXPECT_EQ(q.to_double(0), 448.0);
  EXPECT_EQ(q.to_double(1), std::ldexp(1.0, -9));
  EXPECT_EQ(q.to_double(2), std::ldexp(1.0, -6));
  EXPECT_EQ(q.to_double(3), -1.0);
  EXPECT_TRUE(std::isnan(q.to_double(4)));
  const auto e5 = f.tensor("e5m2");
  EXPECT_EQ(e5.to_double(0), 1.0);
  EXPECT_EQ(e5.to_double(1), 57344.0);  // (1 + 3/4)·2^15, largest finite
  EXPECT_EQ(e5.to_double(2), std::ldexp(1.0, -16));
  EXPECT_EQ(e5.to_double(3), std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(e5.to_double(4)));
  EXPECT_EQ(e5.to_double(5), -0.75 * std::ldexp(1.0, -14));
  const auto sc = f.tensor("e8m0");
  EXPECT_EQ(sc.to_double(0), 1.0);
  EXPECT_EQ(sc.to_double(1), std::ldexp(1.0, -127));
  EXPECT_EQ(sc.to_double(2), std::ldexp(1.0, 127));
  EXPECT_TRUE(std::isnan(sc.to_double(3)));
  EXPECT_EQ(f.tensor("u8").to_double(1), 200.0);
  EXPECT_EQ(f.tensor("i8").to_double(0), -1.0);
  EXPECT_EQ(f.tensor("i8").to_double(1), -128.0);
  EXPECT_EQ(f.tensor("i8").to_double(2), 127.0);
  EXPECT_EQ(f.tensor("i32").to_double(0), -7.0);
  EXPECT_EQ(f.tensor("i32").to_double(1), 2147483647.0);
  EXPECT_EQ(f.tensor("i64").to_double(1), 9007199254740992.0);
  EXPECT_EQ(f.tensor("i64").to_double(2), std::ldexp(1.0, 62));  // 2^62 is exactly a double
  EXPECT_EQ(f.tensor("i64").raw<std::int64_t>(0), -5);
  EXPECT_EQ(f.tensor("scalar").to_double(0), 2.25);
}

TEST_F(SafetensorsTest, Int64NotRepresentableIsNumericError) {
  const std::vector<std::int64_t> v = {(std::int64_t{1} << 53) + 1};
  SafetensorsWriter w;
  w.add("tid2eid", DType::kI64, {1}, as_bytes(v));
  w.write(dir_ / "i.safetensors");
  const auto f = SafetensorsFile::open(dir_ / "i.safetensors");
  expect_error<NumericError>([&] { (void)f.tensor("tid2eid").to_double(0); },
                             {"tid2eid", "9007199254740993"});
}

TEST_F(SafetensorsTest, HeaderPaddedToMultipleOf8AndInsertionOrder) {
  for (int len = 1; len <= 9; ++len) {
    SafetensorsWriter w;
    const std::vector<std::uint8_t> one = {7};
    w.add(std::string(static_cast<std::size_t>(len), 'z'), DType::kU8, {1}, as_bytes(one));
    w.add("a", DType::kU8, {1}, as_bytes(one));
    const fs::path p = dir_ / ("pad" + std::to_string(len) + ".safetensors");
    w.write(p);
    const std::string bytes = read_file(p);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
    EXPECT_EQ(n % 8, 0u) << "name length " << len;
    EXPECT_EQ(bytes.size(), 8 + n + 2);  // data packed without gaps
    const std::string header = bytes.substr(8, n);
    const auto close = header.rfind('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << header;
    EXPECT_LT(header.find("\"z"), header.find("\"a\"")) << "insertion order lost: " << header;
    EXPECT_EQ(SafetensorsFile::open(p).header_size(), n);
  }
}

TEST_F(SafetensorsTest, MetadataRoundTrip) {
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.set_metadata("note", "v4ref test");
  const std::vector<float> v = {1.0f};
  w.add("x", DType::kF32, {1}, as_bytes(v));
  w.write(dir_ / "m.safetensors");
  const auto f = SafetensorsFile::open(dir_ / "m.safetensors");
  const std::map<std::string, std::string> want = {{"format", "pt"}, {"note", "v4ref test"}};
  EXPECT_EQ(f.metadata(), want);
  EXPECT_TRUE(f.contains("x"));
  EXPECT_FALSE(f.contains("__metadata__"));
}

TEST_F(SafetensorsTest, TensorsSortedByOffset) {
  SafetensorsWriter w;
  const std::vector<std::uint8_t> v = {1, 2};
  w.add("zeta", DType::kU8, {2}, as_bytes(v));
  w.add("alpha", DType::kU8, {2}, as_bytes(v));
  w.write(dir_ / "o.safetensors");
  const auto f = SafetensorsFile::open(dir_ / "o.safetensors");
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "zeta");
  EXPECT_EQ(f.tensors()[0].begin, 0u);
  EXPECT_EQ(f.tensors()[1].name, "alpha");
  EXPECT_EQ(f.tensors()[1].begin, 2u);
}

// ------------------------------------------------------------------ writer and view errors

TEST_F(SafetensorsTest, WriterRejectsDuplicateAndSizeMismatch) {
  SafetensorsWriter w;
  const std::vector<float> v = {1.0f, 2.0f};
  w.add("x", DType::kF32, {2}, as_bytes(v));
  expect_error<Error>([&] { w.add("x", DType::kF32, {2}, as_bytes(v)); }, {"duplicate", "x"});
  expect_error<ShapeError>([&] { w.add("y", DType::kF32, {3}, as_bytes(v)); },
                           {"y", "F32", "[3]", "12", "8"});
  expect_error<Error>([&] { w.add("__metadata__", DType::kF32, {2}, as_bytes(v)); }, {"__metadata__"});
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(w.data_bytes(), 8u);
  EXPECT_EQ(w.names(), std::vector<std::string>{"x"});
}

TEST_F(SafetensorsTest, WriterIoErrorOnMissingDirectory) {
  SafetensorsWriter w;
  expect_error<IoError>([&] { w.write(dir_ / "no_such_dir" / "x.safetensors"); }, {"no_such_dir"});
}

TEST_F(SafetensorsTest, ViewChecksNameTheTensor) {
  SafetensorsWriter w;
  const std::vector<float> v = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  w.add("layers.0.attn.attn_sink", DType::kF32, {2, 3}, as_bytes(v));
  w.write(dir_ / "v.safetensors");
  const auto t = SafetensorsFile::open(dir_ / "v.safetensors").tensor("layers.0.attn.attn_sink");
  EXPECT_EQ(t.dim(1), 3);
  EXPECT_EQ(t.raw<float>(5), 6.0f);
  expect_error<ShapeError>([&] { (void)t.dim(2); }, {"layers.0.attn.attn_sink", "[2, 3]"});
  expect_error<Error>([&] { (void)t.raw<double>(0); }, {"layers.0.attn.attn_sink", "F32"});
  expect_error<Error>([&] { (void)t.raw<float>(6); }, {"layers.0.attn.attn_sink", "out of range"});
  expect_error<Error>([&] { (void)t.raw<float>(-1); }, {"layers.0.attn.attn_sink"});
  expect_error<ShapeError>([&] { t.require_shape({3, 2}); },
                           {"layers.0.attn.attn_sink", "v.safetensors", "expected [3, 2], got [2, 3]"});
  expect_error<DtypeError>([&] { t.require_dtype(DType::kBF16); },
                           {"layers.0.attn.attn_sink", "BF16", "F32"});
  t.require_shape({2, 3});
  t.require_dtype(DType::kF32);
}

TEST(ShapeHelpers, StringAndNumel) {
  EXPECT_EQ(shape_string({}), "[]");
  EXPECT_EQ(shape_string({2048, 4096}), "[2048, 4096]");
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(shape_numel({0, 5}), 0);
  EXPECT_EQ(shape_numel({129280, 4096}), 529530880);
  EXPECT_THROW(shape_numel({-1, 2}), ShapeError);
  EXPECT_THROW(shape_numel({std::int64_t{1} << 40, std::int64_t{1} << 40}), ShapeError);
}

// ------------------------------------------------------------------ malformed files

TEST_F(SafetensorsTest, TruncatedFile) {
  SafetensorsWriter w;
  const std::vector<float> v(16, 1.0f);
  w.add("head.weight", DType::kF32, {4, 4}, as_bytes(v));
  const fs::path p = dir_ / "trunc.safetensors";
  w.write(p);
  fs::resize_file(p, fs::file_size(p) - 10);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); },
                            {p.string(), "tensor head.weight", "needs bytes [0, 64)",
                             "the file has only 54"});
}

TEST_F(SafetensorsTest, FileShorterThanLengthField) {
  const fs::path p = dir_ / "tiny.safetensors";
  std::ofstream(p, std::ios::binary).write("abc", 3);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); }, {p.string(), "too short"});
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFile) {
  const fs::path p = write_raw("past.safetensors", "{}", 0, 1000);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); },
                            {p.string(), "header length 1000", "past the end"});
}

TEST_F(SafetensorsTest, HeaderLengthOverCap) {
  const fs::path p = write_raw("cap.safetensors", "{}", 0, 200'000'000);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); },
                            {p.string(), "200000000", "cap"});
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  const fs::path p = write_raw("notjson.safetensors", "{\"a\": {\"dtype\": ", 0);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); }, {p.string(), "not valid JSON"});
}

TEST_F(SafetensorsTest, HeaderNotObject) {
  const fs::path p = write_raw("array.safetensors", "[1, 2, 3]", 0);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); },
                            {p.string(), "must be a JSON object", "array"});
}

TEST_F(SafetensorsTest, OverlappingOffsets) {
  const fs::path p = write_raw(
      "overlap.safetensors",
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
      12);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); },
                            {p.string(), "tensor b", "overlap tensor a", "[4, 12)", "[0, 8)"});
}

TEST_F(SafetensorsTest, OffsetsOutOfRange) {
  const fs::path p = write_raw(
      "range.safetensors", R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); },
                            {p.string(), "tensor w needs bytes [0, 8) of the data section",
                             "the file has only 4"});
}

TEST_F(SafetensorsTest, BeginAfterEnd) {
  const fs::path p = write_raw(
      "rev.safetensors", R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}})", 4);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); }, {p.string(), "tensor w", "begin > end"});
}

TEST_F(SafetensorsTest, HoleBetweenTensors) {
  const fs::path p = write_raw(
      "hole.safetensors",
      R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
          "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
      12);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); },
                            {p.string(), "hole of 4 bytes", "[4, 8)", "before tensor b"});
}

TEST_F(SafetensorsTest, TrailingBytesAfterLastTensor) {
  const fs::path p = write_raw(
      "tail.safetensors", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 8);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); },
                            {p.string(), "4 trailing bytes", "[0, 4)"});
}

TEST_F(SafetensorsTest, UnknownDtypeListsAccepted) {
  const fs::path p = write_raw(
      "dtype.safetensors",
      R"({"layers.0.attn.wq_a.weight": {"dtype": "F8_E4M3FN", "shape": [1], "data_offsets": [0, 1]}})", 1);
  expect_error<DtypeError>([&] { SafetensorsFile::open(p); },
                           {p.string(), "layers.0.attn.wq_a.weight", "\"F8_E4M3FN\"", "accepted:",
                            "F8_E4M3", "BF16", "I64"});
}

TEST_F(SafetensorsTest, ShapeByteCountMismatch) {
  const fs::path p = write_raw(
      "count.safetensors", R"({"norm.weight": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8);
  expect_error<ShapeError>([&] { SafetensorsFile::open(p); },
                           {p.string(), "norm.weight", "F32", "[3]", "needs 12 bytes",
                            "data_offsets span 8"});
}

TEST_F(SafetensorsTest, NegativeShape) {
  const fs::path p = write_raw(
      "neg.safetensors", R"({"x": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}})", 0);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); }, {p.string(), "tensor x", "shape[0]", "negative"});
}

TEST_F(SafetensorsTest, NonIntegerShape) {
  const fs::path p = write_raw(
      "float.safetensors", R"({"x": {"dtype": "U8", "shape": [1.5], "data_offsets": [0, 1]}})", 1);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); },
                            {p.string(), "tensor x", "shape[0] = 1.5", "not a non-negative integer"});
}

TEST_F(SafetensorsTest, MissingDataOffsets) {
  const fs::path p = write_raw("nooff.safetensors", R"({"x": {"dtype": "U8", "shape": [1]}})", 1);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); }, {p.string(), "tensor x", "data_offsets"});
}

TEST_F(SafetensorsTest, DuplicateTensorName) {
  const fs::path p = write_raw(
      "dup.safetensors",
      R"({"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
          "x": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
      2);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); }, {p.string(), "duplicate key \"x\""});
}

TEST_F(SafetensorsTest, MetadataMustBeStrings) {
  const fs::path p = write_raw("meta.safetensors", R"({"__metadata__": {"n": 3}})", 0);
  expect_error<FormatError>([&] { SafetensorsFile::open(p); }, {p.string(), "__metadata__", "\"n\""});
}

TEST_F(SafetensorsTest, MissingFileIsIoError) {
  expect_error<IoError>([&] { SafetensorsFile::open(dir_ / "absent.safetensors"); }, {"absent.safetensors"});
}

TEST_F(SafetensorsTest, UnknownTensorInFile) {
  SafetensorsWriter w;
  w.write(dir_ / "e.safetensors");
  const auto f = SafetensorsFile::open(dir_ / "e.safetensors");
  EXPECT_TRUE(f.tensors().empty());
  expect_error<MissingTensor>([&] { (void)f.tensor("nope"); }, {"nope", "e.safetensors", "0 tensors"});
}

// ------------------------------------------------------------------ checkpoints

class CheckpointTest : public SafetensorsTest {
 protected:
  // shard 1: a [2] F32 = {1, 2}, b [1] BF16 = {0x4000 = 2}; shard 2: c [2, 2] I32 = {5, 6, 7, 8}.
  void write_two_shards() const {
    SafetensorsWriter s1, s2;
    s1.add("a", DType::kF32, {2}, as_bytes(std::vector<float>{1.0f, 2.0f}));
    s1.add("b", DType::kBF16, {1}, as_bytes(std::vector<std::uint16_t>{0x4000}));
    s2.add("c", DType::kI32, {2, 2}, as_bytes(std::vector<std::int32_t>{5, 6, 7, 8}));
    s1.write(dir_ / kShard1);
    s2.write(dir_ / kShard2);
  }
  void write_index(const std::map<std::string, std::string>& wm) const {
    write_safetensors_index(dir_, wm, 26);
  }
  static constexpr const char* kShard1 = "model-00001-of-00002.safetensors";
  static constexpr const char* kShard2 = "model-00002-of-00002.safetensors";
  std::map<std::string, std::string> good_map() const {
    return {{"a", kShard1}, {"b", kShard1}, {"c", kShard2}};
  }
};

TEST_F(CheckpointTest, ShardedRoundTripThroughIndex) {
  write_two_shards();
  write_index(good_map());
  const auto ckpt = Checkpoint::open(dir_);
  EXPECT_EQ(ckpt.dir(), dir_);
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ckpt.shard_files(), (std::vector<std::string>{kShard1, kShard2}));
  EXPECT_EQ(ckpt.shard_of("c"), kShard2);
  EXPECT_TRUE(ckpt.contains("b"));
  EXPECT_FALSE(ckpt.contains("d"));
  const TensorView c = ckpt.tensor("c");
  EXPECT_EQ(c.shape(), (Shape{2, 2}));
  EXPECT_EQ(c.to_double(3), 8.0);
  EXPECT_EQ(c.file(), dir_ / kShard2);
  EXPECT_EQ(ckpt.tensor("b").to_double(0), 2.0);
  EXPECT_EQ(ckpt.tensor("a").to_double(1), 2.0);
  ckpt.open_all_shards();

  // The index file is JSON with metadata.total_size and the weight map.
  const std::string idx = read_file(dir_ / "model.safetensors.index.json");
  EXPECT_NE(idx.find("\"total_size\": 26"), std::string::npos) << idx;
  EXPECT_NE(idx.find("\"c\": \"model-00002-of-00002.safetensors\""), std::string::npos) << idx;
}

TEST_F(CheckpointTest, ConcurrentLookupsShareShards) {
  write_two_shards();
  write_index(good_map());
  const auto ckpt = Checkpoint::open(dir_);
  std::vector<std::thread> threads;
  std::vector<double> got(8, 0.0);
  for (std::size_t k = 0; k < got.size(); ++k)
    threads.emplace_back([&, k] { got[k] = ckpt.tensor(k % 2 ? "c" : "a").to_double(0); });
  for (auto& t : threads) t.join();
  for (std::size_t k = 0; k < got.size(); ++k) EXPECT_EQ(got[k], k % 2 ? 5.0 : 1.0);
}

TEST_F(CheckpointTest, SingleFileCheckpoint) {
  SafetensorsWriter w;
  w.add("embed.weight", DType::kBF16, {1, 2}, as_bytes(std::vector<std::uint16_t>{0x3F80, 0xBF80}));
  w.write(dir_ / "model.safetensors");
  const auto ckpt = Checkpoint::open(dir_);
  EXPECT_EQ(ckpt.names(), std::vector<std::string>{"embed.weight"});
  EXPECT_EQ(ckpt.shard_of("embed.weight"), "model.safetensors");
  EXPECT_EQ(ckpt.tensor("embed.weight").to_double(1), -1.0);
}

TEST_F(CheckpointTest, UnknownTensorLookup) {
  write_two_shards();
  write_index(good_map());
  const auto ckpt = Checkpoint::open(dir_);
  expect_error<MissingTensor>([&] { (void)ckpt.tensor("layers.9.ffn.gate.bias"); },
                              {"layers.9.ffn.gate.bias not found in checkpoint", dir_.string(), "(3 tensors)"});
  expect_error<MissingTensor>([&] { (void)ckpt.shard_of("zz"); }, {"zz", dir_.string()});
}

TEST_F(CheckpointTest, MissingShardFile) {
  write_two_shards();
  fs::remove(dir_ / kShard2);
  write_index(good_map());
  expect_error<IoError>([&] { Checkpoint::open(dir_); },
                        {kShard2, "model.safetensors.index.json", "tensor c"});
}

TEST_F(CheckpointTest, IndexNamesTensorAbsentFromShard) {
  write_two_shards();
  auto wm = good_map();
  wm["ghost"] = kShard2;
  write_index(wm);
  const auto ckpt = Checkpoint::open(dir_);
  EXPECT_EQ(ckpt.tensor("a").to_double(0), 1.0);  // shard 1 is consistent
  expect_error<FormatError>([&] { (void)ckpt.tensor("c"); },
                            {"assigns tensor ghost to shard", kShard2, "does not contain it"});
  expect_error<FormatError>([&] { ckpt.open_all_shards(); }, {"ghost", kShard2});
}

TEST_F(CheckpointTest, ShardHoldsTensorTheIndexDoesNotName) {
  write_two_shards();
  auto wm = good_map();
  wm.erase("b");
  write_index(wm);
  const auto ckpt = Checkpoint::open(dir_);
  expect_error<FormatError>([&] { (void)ckpt.tensor("a"); },
                            {kShard1, "holds tensor b", "does not name"});
}

TEST_F(CheckpointTest, ShardHoldsTensorIndexPlacesElsewhere) {
  write_two_shards();
  SafetensorsWriter s2;
  s2.add("c", DType::kI32, {2, 2}, as_bytes(std::vector<std::int32_t>{5, 6, 7, 8}));
  s2.add("b", DType::kBF16, {1}, as_bytes(std::vector<std::uint16_t>{0x4000}));
  s2.write(dir_ / kShard2);
  write_index(good_map());
  const auto ckpt = Checkpoint::open(dir_);
  expect_error<FormatError>([&] { (void)ckpt.tensor("c"); },
                            {kShard2, "holds tensor b", "assigns to shard", kShard1});
}

TEST_F(CheckpointTest, ShardNameWithPathRejected) {
  write_two_shards();
  auto wm = good_map();
  wm["c"] = std::string("../") + kShard2;
  const std::string text = R"({"metadata": {}, "weight_map": {"c": "../x.safetensors"}})";
  std::ofstream(dir_ / "model.safetensors.index.json") << text;
  expect_error<FormatError>([&] { Checkpoint::open(dir_); },
                            {"model.safetensors.index.json", "weight_map[\"c\"]", "../x.safetensors"});
  EXPECT_THROW(write_safetensors_index(dir_, wm, 0), Error);
}

TEST_F(CheckpointTest, IndexWithoutWeightMap) {
  std::ofstream(dir_ / "model.safetensors.index.json") << R"({"metadata": {}})";
  expect_error<FormatError>([&] { Checkpoint::open(dir_); }, {"model.safetensors.index.json", "weight_map"});
}

TEST_F(CheckpointTest, EmptyDirectory) {
  expect_error<IoError>([&] { Checkpoint::open(dir_); },
                        {dir_.string(), "model.safetensors.index.json", "model.safetensors"});
  expect_error<IoError>([&] { Checkpoint::open(dir_ / "nothing"); }, {"nothing"});
}

}  // namespace
}  // namespace v4ref
