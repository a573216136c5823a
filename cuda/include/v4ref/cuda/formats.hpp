// Device-side execution of the core number-format codecs (reference/.../core/formats.hpp):
// the same constexpr-free host/device code decoded and re-encoded on the GPU, so a gpu test
// can check that nvcc compiles the codecs to the same bits as the host compiler.
#pragma once

#include <cstdint>
#include <vector>

namespace v4ref::cuda {

struct FormatsRoundTrip {
  std::vector<double> e4m3_decoded;    // [256]
  std::vector<std::uint8_t> e4m3_reencoded;  // [256]
  std::vector<double> e2m1_decoded;    // [16]
  std::vector<std::uint8_t> e2m1_reencoded;  // [16]
  std::vector<double> ue8m0_decoded;   // [256]
  std::vector<std::uint16_t> bf16_reencoded;  // [65536], encode(decode(h))
};

// Runs every code of every format through the device codecs.
FormatsRoundTrip formats_round_trip_on_device();

}  // namespace v4ref::cuda
