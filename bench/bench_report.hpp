// The result file every hand-timed GPU bench writes (bench/mhc_bench.cu, bench/compressor_bench.cu):
// Google Benchmark's JSON layout, so reports/make_report.py reads it beside the files that
// Google Benchmark executables (bench/muon_bench.cu) write themselves.
//
// Host-only C++17 (nvcc compiles it inside the .cu benches); tests/bench/bench_report_test.cpp
// runs it on the CPU in CI, including the report generator on a file it wrote.
//
// Layout of one file:
//   {"context": {"date", "executable", "device", "git_sha", "reps", "cold_l2", <numbers>...},
//    "benchmarks": [{"name", "run_name", "run_type": "aggregate", "aggregate_name": "median",
//                    "repetitions", "iterations": 1, "time_unit": "us",
//                    "real_time", "cpu_time", <counters>...}                    -- a measured case
//                   {..., "error_occurred": true, "error_message"}              -- a failed case
//   ]}
// Counters the report understands: pct_roof (time at the roofline / measured time, in %),
// target_pct (the kernel's target as a % of roofline, kernel-targets.md), baseline_us, speedup.
#pragma once

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace v4ref::bench {

// Command line shared by the hand-timed benches:
//   [--out=PATH] [--filter=SUBSTRING] [--reps=N] [--warm]
struct BenchOptions {
  std::string out;     // empty: default_out_path()
  std::string filter;  // run only cases whose name contains it
  int reps = 5;        // timed samples per case; the median is reported
  bool warm = false;   // keep L2 warm between samples (default: overwrite a scratch buffer)
};

inline std::string bench_usage(std::string_view program) {
  return "usage: " + std::string(program) +
         " [--out=PATH] [--filter=SUBSTRING] [--reps=N] [--warm]";
}

// Parses argv[1..]; throws std::invalid_argument naming the bad argument.
inline BenchOptions parse_bench_args(int argc, const char* const* argv) {
  BenchOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--out=", 0) == 0) {
      o.out = a.substr(6);
      if (o.out.empty()) throw std::invalid_argument("--out= needs a path");
    } else if (a.rfind("--filter=", 0) == 0) {
      o.filter = a.substr(9);
    } else if (a.rfind("--reps=", 0) == 0) {
      const std::string v = a.substr(7);
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > 1000)
        throw std::invalid_argument("--reps needs an integer in [1, 1000], got '" + v + "'");
      o.reps = static_cast<int>(n);
    } else if (a == "--warm") {
      o.warm = true;
    } else {
      throw std::invalid_argument("unknown argument '" + a + "'");
    }
  }
  return o;
}

inline bool selected(const BenchOptions& o, std::string_view case_name) {
  return o.filter.empty() || case_name.find(o.filter) != std::string_view::npos;
}

struct BenchResult {
  std::string name;
  double us = 0;  // median time per launch
  std::vector<std::pair<std::string, double>> counters;
  std::string error;  // non-empty: the case failed (correctness gate, CUDA error) and has no time
};

struct BenchContext {
  std::string executable, device, git_sha, date;  // date: ISO 8601 UTC (utc_now())
  int reps = 0;
  bool cold_l2 = true;
  std::vector<std::pair<std::string, double>> numbers;  // sm_count, clocks, driver, probe, ...
};

// JSON string contents: quotes, backslashes and every control character escaped; other bytes
// (UTF-8 included) pass through.
inline std::string json_escape(std::string_view s) {
  std::string o;
  o.reserve(s.size());
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (c == '\n') {
      o += "\\n";
    } else if (c == '\t') {
      o += "\\t";
    } else if (c == '\r') {
      o += "\\r";
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      o += buf;
    } else {
      o += c;
    }
  }
  return o;
}

// A JSON number with round-trip precision; JSON has no NaN or infinity, so those become null.
inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// A measured case must have a finite positive time and finite counters; otherwise it is turned
// into a failed case that says why, so no file ever carries a number that was not measured.
inline BenchResult checked(BenchResult r) {
  if (!r.error.empty()) return r;
  if (!std::isfinite(r.us) || r.us <= 0) {
    r.error = "no valid time (" + json_number(r.us) + " us)";
    return r;
  }
  for (const auto& [k, v] : r.counters)
    if (!std::isfinite(v)) {
      r.error = "counter '" + k + "' is not finite";
      return r;
    }
  return r;
}

// For every measured case named `prefix`/rest, adds baseline_us and speedup from the measured
// case `baseline_prefix`/rest of the same run (e.g. "mhc_fused/" against "mhc_unfused/").
inline void add_baseline_counters(std::vector<BenchResult>& results, std::string_view prefix,
                                  std::string_view baseline_prefix) {
  for (BenchResult& r : results) {
    if (r.name.rfind(prefix, 0) != 0 || !r.error.empty()) continue;
    const std::string base = std::string(baseline_prefix) + r.name.substr(prefix.size());
    for (const BenchResult& b : results)
      if (b.name == base && b.error.empty() && b.us > 0) {
        r.counters.emplace_back("baseline_us", b.us);
        r.counters.emplace_back("speedup", b.us / r.us);
      }
  }
}

inline std::string bench_json(const BenchContext& ctx, const std::vector<BenchResult>& results) {
  std::ostringstream js;
  js << "{\n  \"context\": {\"date\": \"" << json_escape(ctx.date) << "\", \"executable\": \""
     << json_escape(ctx.executable) << "\", \"device\": \"" << json_escape(ctx.device)
     << "\", \"git_sha\": \"" << json_escape(ctx.git_sha) << "\", \"reps\": " << ctx.reps
     << ", \"cold_l2\": " << (ctx.cold_l2 ? "true" : "false");
  for (const auto& [k, v] : ctx.numbers) js << ", \"" << json_escape(k) << "\": " << json_number(v);
  js << "},\n  \"benchmarks\": [";
  bool first = true;
  for (const BenchResult& raw : results) {
    const BenchResult r = checked(raw);
    js << (first ? "\n" : ",\n") << "    {\"name\": \"" << json_escape(r.name)
       << "\", \"run_name\": \"" << json_escape(r.name)
       << "\", \"run_type\": \"aggregate\", \"aggregate_name\": \"median\", \"repetitions\": "
       << ctx.reps << ", \"iterations\": 1, \"time_unit\": \"us\"";
    if (!r.error.empty()) {
      js << ", \"error_occurred\": true, \"error_message\": \"" << json_escape(r.error) << "\"";
    } else {
      js << ", \"real_time\": " << json_number(r.us) << ", \"cpu_time\": " << json_number(r.us);
      for (const auto& [k, v] : r.counters) js << ", \"" << json_escape(k) << "\": " << json_number(v);
    }
    js << "}";
    first = false;
  }
  js << "\n  ]\n}\n";
  return js.str();
}

// Writes `text` to `path` (parent folders created); throws std::runtime_error naming the path.
inline void write_text_file(const std::filesystem::path& path, const std::string& text) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

// The device name with every non-alphanumeric character replaced by '_' (a file-name part).
inline std::string device_tag(std::string_view device) {
  std::string t(device);
  for (char& c : t)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return t.empty() ? "unknown_device" : t;
}

// The commit the binary was built from: V4REF_GIT_SHA at compile time, else the environment
// variable of that name (scripts/gpu sets it), else "unknown".
inline std::string git_sha() {
#ifdef V4REF_GIT_SHA
  return V4REF_GIT_SHA;
#else
  const char* e = std::getenv("V4REF_GIT_SHA");
  return e != nullptr && *e != '\0' ? e : "unknown";
#endif
}

// reports/data/<kernel>-<device>-<sha>.json, the folder scripts/verify passes to the report.
inline std::string default_out_path(std::string_view kernel, std::string_view device,
                                    std::string_view sha) {
  return "reports/data/" + std::string(kernel) + "-" + device_tag(device) + "-" + std::string(sha) +
         ".json";
}

inline std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return date;
}

}  // namespace v4ref::bench
