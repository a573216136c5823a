// Helpers shared by the test files: deterministic random data (the project's own generator,
// guide/verification.md §6 — std::normal_distribution is implementation-defined and not used),
// exception checks that read the message, byte views, temporary directories and shell commands.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>
#include <unistd.h>

#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/linear.hpp"

namespace v4ref::test {

// [rows, cols] with N(0, sigma²) entries drawn from Rng(seed).
// A gtest parameter name from a checkpoint or config name ("tiny-flash" -> "tiny_flash").
inline std::string param_name(const ::testing::TestParamInfo<std::string>& p) {
  std::string s = p.param;
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

inline ref::Mat random_mat(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double sigma = 1.0) {
  Rng rng(seed);
  ref::Mat m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = rng.normal(0.0, sigma);
  return m;
}

// The same, every entry rounded to bf16 (the stored format of activations and bf16 weights).
inline ref::Mat random_bf16_mat(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double sigma = 1.0) {
  ref::Mat m = random_mat(rows, cols, seed, sigma);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = fmt::round_bf16(m.data()[i]);
  return m;
}

// Runs fn and expects exception E whose message contains every string in `parts`.
template <class E>
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing \"" << p << "\" in: " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return;
  }
  ADD_FAILURE() << "no exception thrown";
}

template <class T>
std::vector<std::byte> as_bytes(const std::vector<T>& v) {
  std::vector<std::byte> out(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// A path under the system temp folder that no other test process uses: ctest runs every test
// case as its own process, two at a time, so fixed names (even in SetUpTestSuite) race.
// Shape: <tmp>/v4ref_<tag>_<suite>_<test>_<pid>.
inline std::filesystem::path unique_temp_path(const std::string& tag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const auto* suite = ::testing::UnitTest::GetInstance()->current_test_suite();
  std::string name = "v4ref_" + tag;
  if (info != nullptr)
    name += std::string("_") + info->test_suite_name() + "_" + info->name();
  else if (suite != nullptr)
    name += std::string("_") + suite->name();
  name += "_" + std::to_string(::getpid());
  for (char& c : name)
    if (c == '/') c = '_';
  return std::filesystem::temp_directory_path() / name;
}

// A fresh directory under the system temp folder, removed on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = unique_temp_path(tag);
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Runs `cmd` through the shell; its exit status (−1 if it did not exit normally) and stdout and
// stderr together.
struct CommandResult {
  int status = -1;
  std::string out;
};
inline CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

}  // namespace v4ref::test
