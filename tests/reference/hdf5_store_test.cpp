// HDF5 tensor store: round trips of every logical dtype, attributes, groups, errors.
#include "v4ref/ref/hdf5_store.hpp"

#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <fstream>

#include "v4ref/ref/core/formats.hpp"

namespace v4ref {
namespace {

class H5StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("v4ref_h5_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + ".h5");
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::filesystem::path path_;
};

TEST_F(H5StoreTest, Float64RoundTripIsBitExactAndAttributesSurvive) {
  std::vector<double> v(6000);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.1 * static_cast<double>(i)) * 1e-3 + 1.0 / 3.0;
  v[17] = -0.0;
  v[18] = std::numeric_limits<double>::denorm_min();
  {
    H5Store s(path_, H5Store::Mode::kCreate);
    s.write_f64("layers.7.attn.q", {2, 3000}, v);  // large enough to be chunked + compressed
    s.set_attr("layers.7.attn.q", "policy", std::string("exact"));
    s.set_attr("/", "seed", std::int64_t{0x5e1f03a2});
    s.set_attr("", "tolerance", 1.25e-4);
  }
  H5Store r(path_, H5Store::Mode::kRead);
  const StoredTensor t = r.read("layers.7.attn.q");
  EXPECT_EQ(t.shape, (Shape{2, 3000}));
  EXPECT_EQ(t.dtype, LogicalDtype::kF64);
  ASSERT_EQ(t.values.size(), v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    ASSERT_EQ(fmt::double_bits(t.values[i]), fmt::double_bits(v[i])) << "element " << i;
  EXPECT_EQ(std::get<std::string>(t.attrs.at("policy")), "exact");
  EXPECT_EQ(std::get<std::string>(t.attrs.at("logical_dtype")), "f64");
  const auto root = r.attrs("/");
  EXPECT_EQ(std::get<std::int64_t>(root.at("seed")), 0x5e1f03a2);
  EXPECT_EQ(std::get<double>(root.at("tolerance")), 1.25e-4);
}

// Attributes as h5py writes them by default: variable-length UTF-8 strings (and fixed-length
// UTF-8 ones), on the root and on a dataset.
TEST_F(H5StoreTest, ReadsUtf8StringAttributesAsH5pyWritesThem) {
  {
    H5Store s(path_, H5Store::Mode::kCreate);
    s.write_f64("x", {1, 2}, std::vector<double>{1.0, 2.0});
  }
  const std::string text = "provenance: transformers 5.23.0, \u00e9t\u00e9 \u2713";
  const auto add = [&](hid_t obj, const char* key, bool vlen) {
    const hid_t type = H5Tcopy(H5T_C_S1);
    ASSERT_GE(H5Tset_size(type, vlen ? H5T_VARIABLE : text.size()), 0);
    ASSERT_GE(H5Tset_cset(type, H5T_CSET_UTF8), 0);
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate2(obj, key, type, space, H5P_DEFAULT, H5P_DEFAULT);
    const char* p = text.c_str();
    ASSERT_GE(vlen ? H5Awrite(attr, type, &p) : H5Awrite(attr, type, text.data()), 0);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
  };
  {
    const hid_t f = H5Fopen(path_.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    add(f, "note_vlen", true);
    add(f, "note_fixed", false);
    const hid_t d = H5Dopen2(f, "x", H5P_DEFAULT);
    ASSERT_GE(d, 0);
    add(d, "source", true);
    H5Dclose(d);
    H5Fclose(f);
  }
  H5Store r(path_, H5Store::Mode::kRead);
  const auto root = r.attrs("/");
  EXPECT_EQ(std::get<std::string>(root.at("note_vlen")), text);
  EXPECT_EQ(std::get<std::string>(root.at("note_fixed")), text);
  EXPECT_EQ(std::get<std::string>(r.read("x").attrs.at("source")), text);
}

TEST_F(H5StoreTest, RawEncodingsKeepBitsAndDecodeExactly) {
  std::vector<std::uint16_t> bf16 = {0x3F80, 0xC000, 0x0001, 0x7F7F, 0x8000};
  std::vector<std::uint8_t> e4m3 = {0x00, 0x01, 0x38, 0x7E, 0xFE, 0x80};
  std::vector<std::uint8_t> e2m1 = {0x2F, 0x71};  // logical [1, 4]: -6, 1, 0.5, 6
  std::vector<std::uint8_t> ue8m0 = {127, 0, 254};
  std::vector<std::int64_t> ids = {0, 5, -1, 1LL << 40};
  {
    H5Store s(path_, H5Store::Mode::kCreate);
    s.write_bits16("a/bf16", LogicalDtype::kBF16, {5}, bf16);
    s.write_bits8("a/e4m3", LogicalDtype::kE4M3, {2, 3}, e4m3);
    s.write_bits8("a/e2m1", LogicalDtype::kE2M1x2, {1, 4}, e2m1);
    s.write_bits8("scales", LogicalDtype::kUE8M0, {3}, ue8m0);
    s.write_i64("ids", {4}, ids);
    s.write_f64("scalar", {}, std::vector<double>{2.5});
  }
  H5Store r(path_, H5Store::Mode::kRead);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"a/bf16", "a/e2m1", "a/e4m3", "ids", "scalar", "scales"}));
  const StoredTensor b = r.read("a/bf16");
  EXPECT_EQ(b.raw, (std::vector<std::uint64_t>{0x3F80, 0xC000, 0x0001, 0x7F7F, 0x8000}));
  EXPECT_EQ(b.values[0], 1.0);
  EXPECT_EQ(b.values[1], -2.0);
  EXPECT_EQ(b.values[2], std::ldexp(1.0, -133));
  const StoredTensor e = r.read("a/e4m3");
  EXPECT_EQ(e.shape, (Shape{2, 3}));
  EXPECT_EQ(e.values[1], std::ldexp(1.0, -9));
  EXPECT_EQ(e.values[2], 1.0);
  EXPECT_EQ(e.values[3], 448.0);
  EXPECT_EQ(e.values[4], -448.0);
  const StoredTensor f = r.read("a/e2m1");
  EXPECT_EQ(f.shape, (Shape{1, 4}));
  EXPECT_EQ(f.values, (std::vector<double>{-6.0, 1.0, 0.5, 6.0}));
  const StoredTensor s = r.read("scales");
  EXPECT_EQ(s.values, (std::vector<double>{1.0, std::ldexp(1.0, -127), std::ldexp(1.0, 127)}));
  const StoredTensor i = r.read("ids");
  EXPECT_EQ(i.values[3], static_cast<double>(1LL << 40));
  EXPECT_EQ(static_cast<std::int64_t>(i.raw[2]), -1);
  const StoredTensor sc = r.read("scalar");
  EXPECT_TRUE(sc.shape.empty());
  EXPECT_EQ(sc.values, std::vector<double>{2.5});
}

TEST_F(H5StoreTest, WrongSizesAndDtypesAreRejectedWithTheTensorName) {
  H5Store s(path_, H5Store::Mode::kCreate);
  try {
    s.write_f64("L00.attn.q", {2, 3}, std::vector<double>(5));
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("L00.attn.q"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(s.write_bits8("x", LogicalDtype::kE2M1x2, {1, 3}, std::vector<std::uint8_t>(2)), ShapeError);
  EXPECT_THROW(s.write_bits16("y", LogicalDtype::kE4M3, {1}, std::vector<std::uint16_t>(1)), DtypeError);
  s.write_f64("z", {1}, std::vector<double>{1});
  EXPECT_THROW(s.write_f64("z", {1}, std::vector<double>{1}), IoError);
}

TEST_F(H5StoreTest, MissingTensorAndNonHdf5FilesGiveClearErrors) {
  {
    H5Store s(path_, H5Store::Mode::kCreate);
    s.write_f64("present", {1}, std::vector<double>{1});
  }
  H5Store r(path_, H5Store::Mode::kRead);
  EXPECT_FALSE(r.contains("absent"));
  EXPECT_FALSE(r.contains("deep/absent/x"));
  try {
    (void)r.read("absent");
    FAIL();
  } catch (const MissingTensor& e) {
    EXPECT_NE(std::string(e.what()).find(path_.string()), std::string::npos);
  }
  const auto junk = path_.string() + ".junk";
  std::ofstream(junk) << "not an hdf5 file";
  EXPECT_THROW(H5Store(junk, H5Store::Mode::kRead), FormatError);
  std::filesystem::remove(junk);
  EXPECT_THROW(H5Store("/nonexistent/dir/x.h5", H5Store::Mode::kRead), IoError);
}

TEST(LogicalDtype, UnknownNamesListTheAcceptedOnes) {
  EXPECT_EQ(parse_logical_dtype("e4m3fn"), LogicalDtype::kE4M3);
  try {
    (void)parse_logical_dtype("fp8");
    FAIL();
  } catch (const DtypeError& e) {
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos);
  }
}

}  // namespace
}  // namespace v4ref
