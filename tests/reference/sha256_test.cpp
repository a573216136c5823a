// SHA-256 against the FIPS 180-4 / NIST example vectors.
#include "v4ref/ref/sha256.hpp"

#include "v4ref/ref/core/error.hpp"

#include <unistd.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace v4ref {
namespace {

TEST(Sha256, NistVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, MillionAInChunksAcrossBlockBoundaries) {
  Sha256 h;
  const std::string chunk(997, 'a');  // a prime length so chunks straddle 64-byte blocks
  std::size_t left = 1000000;
  while (left > 0) {
    const std::size_t n = std::min(left, chunk.size());
    h.update(std::string_view(chunk.data(), n));
    left -= n;
  }
  const auto digest = h.finish();
  EXPECT_EQ(to_hex(digest), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, FileEqualsText) {
  const auto path = std::filesystem::temp_directory_path() / ("v4ref_sha256_test_" + std::to_string(::getpid()) + ".txt");
  {
    std::ofstream out(path, std::ios::binary);
    out << "abc";
  }
  EXPECT_EQ(sha256_file(path), sha256_hex("abc"));
  std::filesystem::remove(path);
  EXPECT_THROW(sha256_file(path), IoError);
}

}  // namespace
}  // namespace v4ref
