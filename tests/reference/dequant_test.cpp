// Exact dequantisation (v4-forward.md §1.5, §15.5–15.6): fp8 e4m3 with 128x128 ue8m0 or F32
// block scales and packed fp4 e2m1 experts with per-32 ue8m0 scales, checked element by element
// against the formulas evaluated independently here (own decoders, std::ldexp), plus the errors.
#include "v4ref/ref/dequant.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "v4ref/ref/core/error.hpp"
#include "../common/test_support.hpp"

namespace v4ref {
namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------------ independent decoders

// e4m3fn from the field definitions of §15.5 (not the library's codec).
double e4m3_ref(std::uint8_t b) {
  const int e = (b >> 3) & 0xF, m = b & 7;
  const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
  return (b & 0x80) ? -mag : mag;
}

// e2m1 nibble value table of §1.5.
double e2m1_ref(unsigned nibble) {
  static constexpr std::array<double, 8> kMag = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  const double v = kMag[nibble & 7];
  return (nibble & 8) ? -v : v;
}

double ue8m0_ref(std::uint8_t u) { return std::ldexp(1.0, u - 127); }

// ------------------------------------------------------------------ helpers

using test::as_bytes;

using test::expect_error;

// Deterministic e4m3 test code for element (i, j), never a NaN code.
std::uint8_t fp8_code(std::int64_t i, std::int64_t j) {
  auto c = static_cast<std::uint8_t>((i * 31 + j * 17 + 3) & 0xFF);
  if ((c & 0x7F) == 0x7F) c ^= 0x01;  // 0x7F -> 0x7E (448), 0xFF -> 0xFE (-448)
  return c;
}

class DequantTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("v4ref_dq_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Checkpoint write(const SafetensorsWriter& w) const {
    w.write(dir_ / "model.safetensors");
    return Checkpoint::open(dir_);
  }

  // fp8 weight [rows, cols] with codes fp8_code and ue8m0 scales 120 + 3·bi + bj.
  static void add_fp8(SafetensorsWriter& w, const std::string& p, std::int64_t rows, std::int64_t cols) {
    std::vector<std::uint8_t> q(static_cast<std::size_t>(rows * cols));
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j) q[static_cast<std::size_t>(i * cols + j)] = fp8_code(i, j);
    const std::int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
    std::vector<std::uint8_t> s(static_cast<std::size_t>(br * bc));
    for (std::int64_t bi = 0; bi < br; ++bi)
      for (std::int64_t bj = 0; bj < bc; ++bj)
        s[static_cast<std::size_t>(bi * bc + bj)] = static_cast<std::uint8_t>(120 + 3 * bi + bj);
    w.add(p + ".weight", DType::kF8E4M3, {rows, cols}, as_bytes(q));
    w.add(p + ".scale", DType::kF8E8M0, {br, bc}, as_bytes(s));
  }

  fs::path dir_;
};

// ------------------------------------------------------------------ fp8 block weights

TEST_F(DequantTest, Fp8CrossesBlockBordersElementByElement) {
  SafetensorsWriter w;
  add_fp8(w, "layers.3.attn.wq_a", 130, 260);  // scale [2, 3]: partial last blocks in both dims
  const Checkpoint ckpt = write(w);
  const auto q = Fp8BlockWeight::open(ckpt, "layers.3.attn.wq_a");
  ASSERT_EQ(q.rows(), 130);
  ASSERT_EQ(q.cols(), 260);
  const std::vector<double> got = q.dequant_all();
  ASSERT_EQ(got.size(), 130u * 260u);
  std::int64_t nonzero = 0;
  for (std::int64_t i = 0; i < 130; ++i) {
    for (std::int64_t j = 0; j < 260; ++j) {
      const auto scode = static_cast<std::uint8_t>(120 + 3 * (i / 128) + j / 128);
      const double want = e4m3_ref(fp8_code(i, j)) * ue8m0_ref(scode);
      ASSERT_EQ(got[static_cast<std::size_t>(i * 260 + j)], want) << "at [" << i << ", " << j << "]";
      nonzero += want != 0.0;
    }
  }
  EXPECT_GT(nonzero, 30000);  // the pattern is not trivially zero
  // Spot values by hand: [129, 259] lies in block [1, 2], scale code 125 = 2^-2;
  // code (129·31 + 259·17 + 3) & 0xFF = 8405 & 0xFF = 0xD5: sign 1, e = 10, m = 5 -> −(13/8)·2^3.
  EXPECT_EQ(fp8_code(129, 259), 0xD5);
  EXPECT_EQ(got[129 * 260 + 259], -13.0 * 0.25);
}

TEST_F(DequantTest, Fp8F32ScalesAccepted) {
  SafetensorsWriter w;
  std::vector<std::uint8_t> q(200 * 130);
  for (std::int64_t i = 0; i < 200; ++i)
    for (std::int64_t j = 0; j < 130; ++j) q[static_cast<std::size_t>(i * 130 + j)] = fp8_code(i, j);
  const std::vector<float> s = {0.375f, 1.25f, 3.0e-3f, 7.0f};  // [2, 2], not powers of 2
  w.add("layers.0.ffn.experts.1.w1.weight", DType::kF8E4M3, {200, 130}, as_bytes(q));
  w.add("layers.0.ffn.experts.1.w1.scale", DType::kF32, {2, 2}, as_bytes(s));
  const Checkpoint ckpt = write(w);
  const auto fw = Fp8BlockWeight::open(ckpt, "layers.0.ffn.experts.1.w1");
  const auto got = fw.dequant_all();
  for (std::int64_t i = 0; i < 200; ++i)
    for (std::int64_t j = 0; j < 130; ++j)
      ASSERT_EQ(got[static_cast<std::size_t>(i * 130 + j)],
                e4m3_ref(fp8_code(i, j)) * static_cast<double>(s[static_cast<std::size_t>((i / 128) * 2 + j / 128)]))
          << "at [" << i << ", " << j << "]";
  // load_as_double takes the same path (F8_E4M3 weight with a .scale beside it).
  EXPECT_EQ(load_as_double(ckpt, "layers.0.ffn.experts.1.w1.weight"), got);
}

TEST_F(DequantTest, Fp8SubnormalCodes) {
  SafetensorsWriter w;
  const std::vector<std::uint8_t> q = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x80, 0x81, 0x87, 0x08};
  w.add("w.weight", DType::kF8E4M3, {1, 12}, as_bytes(q));
  w.add("w.scale", DType::kF8E8M0, {1, 1}, as_bytes(std::vector<std::uint8_t>{127}));
  const auto got = Fp8BlockWeight::open(write(w), "w").dequant_all();
  for (int m = 0; m < 8; ++m) EXPECT_EQ(got[static_cast<std::size_t>(m)], m * std::ldexp(1.0, -9)) << "m=" << m;
  EXPECT_EQ(got[8], 0.0);
  EXPECT_TRUE(std::signbit(got[8]));  // 0x80 = −0
  EXPECT_EQ(got[9], -std::ldexp(1.0, -9));
  EXPECT_EQ(got[10], -7 * std::ldexp(1.0, -9));
  EXPECT_EQ(got[11], std::ldexp(1.0, -6));  // smallest normal
}

TEST_F(DequantTest, Fp8RowRangeEqualsSliceOfAll) {
  SafetensorsWriter w;
  add_fp8(w, "x", 300, 140);
  const auto q = Fp8BlockWeight::open(write(w), "x");
  const auto all = q.dequant_all();
  const std::int64_t r0 = 100, r1 = 260;  // crosses row blocks 0|1|2
  std::vector<double> part(static_cast<std::size_t>((r1 - r0) * 140), -12345.0);
  q.dequant_rows(r0, r1, part);
  for (std::size_t k = 0; k < part.size(); ++k)
    ASSERT_EQ(part[k], all[static_cast<std::size_t>(r0 * 140) + k]) << "flat " << k;
  std::vector<double> none;
  q.dequant_rows(5, 5, none);
  std::vector<double> wrong(10);
  expect_error<ShapeError>([&] { q.dequant_rows(0, 1, wrong); }, {"x.weight", "140", "got 10"});
  expect_error<ShapeError>([&] { q.dequant_rows(299, 301, wrong); }, {"x.weight", "[299, 301)", "300"});
}

TEST_F(DequantTest, Fp8NanCodeNamesCoordinates) {
  SafetensorsWriter w;
  std::vector<std::uint8_t> q(4 * 8, 0x38);  // 1.0
  q[3 * 8 + 5] = 0x7F;
  q[3 * 8 + 6] = 0xFF;
  w.add("layers.2.attn.wkv.weight", DType::kF8E4M3, {4, 8}, as_bytes(q));
  w.add("layers.2.attn.wkv.scale", DType::kF8E8M0, {1, 1}, as_bytes(std::vector<std::uint8_t>{127}));
  const Checkpoint ckpt = write(w);
  const auto fw = Fp8BlockWeight::open(ckpt, "layers.2.attn.wkv");
  expect_error<NumericError>([&] { (void)fw.dequant_all(); },
                             {"layers.2.attn.wkv.weight", "NaN", "[3, 5]", "first of 2"});
  std::vector<double> rows(3 * 8);
  fw.dequant_rows(0, 3, rows);  // rows without the NaN decode fine
  EXPECT_EQ(rows[0], 1.0);
  expect_error<NumericError>([&] { (void)load_as_double(ckpt, "layers.2.attn.wkv.weight"); },
                             {"layers.2.attn.wkv.weight", "[3, 5]"});
}

TEST_F(DequantTest, Fp8NanScaleNamesBlock) {
  SafetensorsWriter w;
  std::vector<std::uint8_t> q(256 * 256, 0x38);
  w.add("m.weight", DType::kF8E4M3, {256, 256}, as_bytes(q));
  w.add("m.scale", DType::kF8E8M0, {2, 2}, as_bytes(std::vector<std::uint8_t>{127, 127, 127, 0xFF}));
  const auto fw = Fp8BlockWeight::open(write(w), "m");
  expect_error<NumericError>([&] { (void)fw.dequant_all(); },
                             {"m.scale", "NaN", "[1, 1]", "first of 1", "m.weight"});
  std::vector<double> top(128 * 256);
  fw.dequant_rows(0, 128, top);  // block row 0 is clean: on-demand decode works
  EXPECT_EQ(top[5], 1.0);
}

TEST_F(DequantTest, Fp8WrongScaleShapeAndDtype) {
  SafetensorsWriter w;
  std::vector<std::uint8_t> q(130 * 260, 0x38);
  w.add("layers.3.attn.wq_a.weight", DType::kF8E4M3, {130, 260}, as_bytes(q));
  w.add("layers.3.attn.wq_a.scale", DType::kF8E8M0, {1, 3}, as_bytes(std::vector<std::uint8_t>(3, 127)));
  w.add("bf.weight", DType::kBF16, {1, 1}, as_bytes(std::vector<std::uint16_t>{0x3F80}));
  w.add("bf.scale", DType::kF8E8M0, {1, 1}, as_bytes(std::vector<std::uint8_t>{127}));
  w.add("i32s.weight", DType::kF8E4M3, {1, 1}, as_bytes(std::vector<std::uint8_t>{0x38}));
  w.add("i32s.scale", DType::kI32, {1, 1}, as_bytes(std::vector<std::int32_t>{1}));
  const Checkpoint ckpt = write(w);
  expect_error<ShapeError>([&] { Fp8BlockWeight::open(ckpt, "layers.3.attn.wq_a"); },
                           {"layers.3.attn.wq_a.scale: expected [2, 3] for weight [130, 260]",
                            "layers.3.attn.wq_a.weight", "got [1, 3]"});
  expect_error<DtypeError>([&] { Fp8BlockWeight::open(ckpt, "bf"); }, {"bf.weight", "F8_E4M3", "BF16"});
  expect_error<DtypeError>([&] { Fp8BlockWeight::open(ckpt, "i32s"); }, {"i32s.scale", "F8_E8M0 or F32", "I32"});
  expect_error<DtypeError>([&] { (void)load_as_double(ckpt, "bf.weight"); }, {"bf.weight", "bf.scale", "BF16"});
}

TEST_F(DequantTest, MissingScaleNamesWeight) {
  SafetensorsWriter w;
  w.add("layers.1.attn.wo_b.weight", DType::kF8E4M3, {1, 2}, as_bytes(std::vector<std::uint8_t>{0x38, 0x40}));
  w.add("layers.1.ffn.experts.0.w2.weight", DType::kI8, {1, 16}, as_bytes(std::vector<std::uint8_t>(16, 0x22)));
  const Checkpoint ckpt = write(w);
  expect_error<MissingTensor>([&] { Fp8BlockWeight::open(ckpt, "layers.1.attn.wo_b"); },
                              {"layers.1.attn.wo_b.scale not found", dir_.string(), "layers.1.attn.wo_b.weight"});
  expect_error<MissingTensor>([&] { Fp4ExpertWeight::open(ckpt, "layers.1.ffn.experts.0.w2"); },
                              {"layers.1.ffn.experts.0.w2.scale not found", "layers.1.ffn.experts.0.w2.weight"});
  expect_error<MissingTensor>([&] { Fp8BlockWeight::open(ckpt, "nothing"); }, {"nothing.weight"});
  // Without a scale beside it, load_as_double decodes the stored codes as they are.
  EXPECT_EQ(load_as_double(ckpt, "layers.1.attn.wo_b.weight"), (std::vector<double>{1.0, 2.0}));
}

// ------------------------------------------------------------------ fp4 expert weights

TEST_F(DequantTest, Fp4KnownBytesAndPer32Scales) {
  // Logical [3, 64] -> packed I8 [3, 32], scale [3, 2].
  const std::int64_t rows = 3, pcols = 32, cols = 64;
  std::vector<std::uint8_t> p(static_cast<std::size_t>(rows * pcols));
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t k = 0; k < pcols; ++k)
      p[static_cast<std::size_t>(i * pcols + k)] = static_cast<std::uint8_t>((i * 37 + k * 11 + 5) & 0xFF);
  p[0] = 0x2F;  // column 0 = nibble 0xF = −6, column 1 = nibble 0x2 = 1
  p[16] = 0x9A;  // column 32 = 0xA = −1 (second scale block), column 33 = 0x9 = −0.5
  const std::vector<std::uint8_t> s = {127 + 1, 127 - 3, 127, 127 + 5, 127 - 1, 127 + 2};
  SafetensorsWriter w;
  w.add("layers.3.ffn.experts.7.w2.weight", DType::kI8, {rows, pcols}, as_bytes(p));
  w.add("layers.3.ffn.experts.7.w2.scale", DType::kF8E8M0, {rows, 2}, as_bytes(s));
  const Checkpoint ckpt = write(w);
  const auto fw = Fp4ExpertWeight::open(ckpt, "layers.3.ffn.experts.7.w2");
  ASSERT_EQ(fw.rows(), rows);
  ASSERT_EQ(fw.cols(), cols);
  const auto got = fw.dequant_all();
  EXPECT_EQ(got[0], -6.0 * 2.0);     // s[0, 0] = 2^1
  EXPECT_EQ(got[1], 1.0 * 2.0);
  EXPECT_EQ(got[32], -1.0 * 0.125);  // s[0, 1] = 2^-3
  EXPECT_EQ(got[33], -0.5 * 0.125);
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) {
      const std::uint8_t b = p[static_cast<std::size_t>(i * pcols + j / 2)];
      const unsigned nib = j % 2 == 0 ? (b & 0xFu) : (b >> 4);
      const double want = e2m1_ref(nib) * ue8m0_ref(s[static_cast<std::size_t>(i * 2 + j / 32)]);
      ASSERT_EQ(got[static_cast<std::size_t>(i * cols + j)], want) << "at [" << i << ", " << j << "]";
    }
  }
  std::vector<double> mid(static_cast<std::size_t>(cols));
  fw.dequant_rows(1, 2, mid);
  for (std::int64_t j = 0; j < cols; ++j) ASSERT_EQ(mid[static_cast<std::size_t>(j)], got[static_cast<std::size_t>(cols + j)]);
  EXPECT_EQ(load_as_double(ckpt, "layers.3.ffn.experts.7.w2.weight"), got);
}

TEST_F(DequantTest, Fp4NanScaleAndWrongShape) {
  SafetensorsWriter w;
  w.add("e.weight", DType::kI8, {4, 32}, as_bytes(std::vector<std::uint8_t>(128, 0x11)));
  w.add("e.scale", DType::kF8E8M0, {4, 2}, as_bytes(std::vector<std::uint8_t>{127, 127, 127, 127, 127, 0xFF, 0xFF, 127}));
  w.add("layers.3.ffn.experts.7.w2.weight", DType::kI8, {4, 16}, as_bytes(std::vector<std::uint8_t>(64, 0x11)));
  w.add("layers.3.ffn.experts.7.w2.scale", DType::kF8E8M0, {4, 2}, as_bytes(std::vector<std::uint8_t>(8, 127)));
  w.add("f.weight", DType::kU8, {1, 16}, as_bytes(std::vector<std::uint8_t>(16, 0)));
  w.add("f.scale", DType::kF8E8M0, {1, 1}, as_bytes(std::vector<std::uint8_t>{127}));
  const Checkpoint ckpt = write(w);
  const auto fw = Fp4ExpertWeight::open(ckpt, "e");
  expect_error<NumericError>([&] { (void)fw.dequant_all(); }, {"e.scale", "NaN", "[2, 1]", "first of 2", "e.weight"});
  std::vector<double> ok(2 * 64);
  fw.dequant_rows(0, 2, ok);
  EXPECT_EQ(ok[0], 0.5);  // nibble 1 · 2^0
  expect_error<ShapeError>([&] { Fp4ExpertWeight::open(ckpt, "layers.3.ffn.experts.7.w2"); },
                           {"layers.3.ffn.experts.7.w2.scale: expected [4, 1] for weight [4, 16] (fp4 packed",
                            "layers.3.ffn.experts.7.w2.weight", "got [4, 2]"});
  expect_error<DtypeError>([&] { Fp4ExpertWeight::open(ckpt, "f"); }, {"f.weight", "I8", "U8"});
}

// ------------------------------------------------------------------ plain tensors, require_finite

TEST_F(DequantTest, LoadPlainTensorsExactly) {
  SafetensorsWriter w;
  w.add("norm.weight", DType::kBF16, {3}, as_bytes(std::vector<std::uint16_t>{0x3F80, 0x3FC0, 0xC100}));
  w.add("layers.0.ffn.gate.tid2eid", DType::kI64, {1, 2}, as_bytes(std::vector<std::int64_t>{3, 250}));
  w.add("hc_head_base", DType::kF32, {2, 3}, as_bytes(std::vector<float>{1, 2, 3, 4, NAN, NAN}));
  w.add("hc_head_scale", DType::kF32, {1}, as_bytes(std::vector<float>{-INFINITY}));
  const Checkpoint ckpt = write(w);
  EXPECT_EQ(load_as_double(ckpt, "norm.weight"), (std::vector<double>{1.0, 1.5, -8.0}));
  EXPECT_EQ(load_as_double(ckpt, "layers.0.ffn.gate.tid2eid"), (std::vector<double>{3.0, 250.0}));
  expect_error<NumericError>([&] { (void)load_as_double(ckpt, "hc_head_base"); },
                             {"hc_head_base contains NaN at [1, 1] (first of 2)"});
  expect_error<NumericError>([&] { (void)load_as_double(ckpt, "hc_head_scale"); },
                             {"hc_head_scale contains -Inf at [0] (first of 1)"});
  expect_error<MissingTensor>([&] { (void)load_as_double(ckpt, "head.weight"); }, {"head.weight", "not found"});
}

TEST(RequireFinite, ShapeAndCoordinates) {
  const std::vector<double> v = {0, 1, 2, 3, 4, std::numeric_limits<double>::infinity()};
  expect_error<NumericError>([&] { require_finite(v, {2, 3}, "t"); }, {"t contains +Inf at [1, 2] (first of 1)"});
  expect_error<ShapeError>([&] { require_finite(v, {2, 2}, "t"); }, {"t", "[2, 2]", "6 values"});
  const std::vector<double> ok = {1, 2, 3, 4};
  require_finite(ok, {2, 2}, "t");
}

}  // namespace
}  // namespace v4ref
