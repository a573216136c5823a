// The core codecs (core/formats.hpp) compiled by nvcc for sm_90a give the same bits on the
// device as on the host: every e4m3, e2m1, ue8m0 and bf16 code decoded and re-encoded by
// v4ref::cuda::formats_round_trip_on_device() and compared bit for bit with the host codecs
// (v4-forward.md §15.5; verification.md §14). Skips without a device unless V4REF_REQUIRE_GPU=1.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../common/gpu_test_support.hpp"
#include "v4ref/cuda/check.hpp"
#include "v4ref/cuda/formats.hpp"
#include "v4ref/ref/core/formats.hpp"

namespace v4ref::cuda {
namespace {

// Counts elements whose bits differ; reports the first few with both values.
template <class T, class HostFn>
int count_bit_differences(const std::vector<T>& device, std::size_t expected_size, HostFn host,
                          const char* what) {
  EXPECT_EQ(device.size(), expected_size) << what;
  int bad = 0;
  for (std::size_t code = 0; code < device.size() && code < expected_size; ++code) {
    const T want = host(code);
    if (std::memcmp(&want, &device[code], sizeof(T)) == 0) continue;
    if (++bad <= 8)
      ADD_FAILURE() << what << ": code 0x" << std::hex << code << ": device " << +device[code]
                    << ", host " << +want;
  }
  return bad;
}

class FormatsGpu : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    if (device_available(&why)) result_ = new FormatsRoundTrip(formats_round_trip_on_device());
  }
  static void TearDownTestSuite() {
    delete result_;
    result_ = nullptr;
  }
  static FormatsRoundTrip* result_;
};
FormatsRoundTrip* FormatsGpu::result_ = nullptr;

TEST_F(FormatsGpu, E4m3DecodeAndReencodeMatchHost) {
  V4REF_REQUIRE_DEVICE();
  ASSERT_NE(result_, nullptr);
  EXPECT_EQ(count_bit_differences(
                result_->e4m3_decoded, 256,
                [](std::size_t c) { return fmt::e4m3_to_double(static_cast<std::uint8_t>(c)); },
                "e4m3 decode"),
            0);
  EXPECT_EQ(count_bit_differences(
                result_->e4m3_reencoded, 256,
                [](std::size_t c) {
                  return fmt::e4m3_encode(fmt::e4m3_to_double(static_cast<std::uint8_t>(c)));
                },
                "e4m3 re-encode"),
            0);
}

TEST_F(FormatsGpu, E2m1DecodeAndReencodeMatchHost) {
  V4REF_REQUIRE_DEVICE();
  ASSERT_NE(result_, nullptr);
  EXPECT_EQ(count_bit_differences(
                result_->e2m1_decoded, 16,
                [](std::size_t c) { return fmt::e2m1_to_double(static_cast<std::uint8_t>(c)); },
                "e2m1 decode"),
            0);
  EXPECT_EQ(count_bit_differences(
                result_->e2m1_reencoded, 16,
                [](std::size_t c) {
                  return fmt::e2m1_encode(fmt::e2m1_to_double(static_cast<std::uint8_t>(c)));
                },
                "e2m1 re-encode"),
            0);
}

TEST_F(FormatsGpu, Ue8m0DecodeMatchesHost) {
  V4REF_REQUIRE_DEVICE();
  ASSERT_NE(result_, nullptr);
  EXPECT_EQ(count_bit_differences(
                result_->ue8m0_decoded, 256,
                [](std::size_t c) { return fmt::ue8m0_to_double(static_cast<std::uint8_t>(c)); },
                "ue8m0 decode"),
            0);
}

TEST_F(FormatsGpu, Bf16ReencodeMatchesHost) {
  V4REF_REQUIRE_DEVICE();
  ASSERT_NE(result_, nullptr);
  // NaN codes re-encode to 0x7FC0 on both sides: the device runs the same codec, not cvt.rn.bf16.
  EXPECT_EQ(count_bit_differences(
                result_->bf16_reencoded, 65536,
                [](std::size_t c) {
                  return fmt::bf16_encode(fmt::bf16_to_double(static_cast<std::uint16_t>(c)));
                },
                "bf16 re-encode"),
            0);
}

}  // namespace
}  // namespace v4ref::cuda
