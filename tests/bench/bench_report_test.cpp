// The result files of the hand-timed GPU benches (bench/bench_report.hpp), checked on the CPU:
// the layout reports/make_report.py reads, no number that was not measured, escaping, the
// command line, and the report generator turning such a file into the roofline plot and table.
// The numbers below are made up for the test and written only under a temporary folder.
#include "bench_report.hpp"

#include "../common/test_support.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace v4ref::bench {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

BenchContext test_context() {
  BenchContext c;
  c.executable = "mhc_bench";
  c.device = "Test Device 80GB";
  c.git_sha = "0123abc";
  c.date = "2026-01-02T03:04:05Z";
  c.reps = 5;
  c.cold_l2 = true;
  c.numbers = {{"sm_count", 132}, {"copy_probe_GBps", 2950.5}};
  return c;
}

BenchResult measured(const std::string& name, double us, double pct_roof, double target) {
  BenchResult r;
  r.name = name;
  r.us = us;
  r.counters = {{"bytes", 6.73e8}, {"pct_roof", pct_roof}, {"target_pct", target}};
  return r;
}

const json* find_bench(const json& j, const std::string& name) {
  for (const json& b : j.at("benchmarks"))
    if (b.at("name") == name) return &b;
  return nullptr;
}

TEST(BenchReport, FileHasGoogleBenchmarkLayoutWithRoundTripNumbers) {
  BenchResult failed;
  failed.name = "mhc_post/pro/T1";
  failed.error = "correctness gate failed: u differs from the executor";
  const std::vector<BenchResult> rs = {measured("mhc_fused/flash/T8192", 243.123456789012345, 82.7, 80),
                                       failed};
  const json j = json::parse(bench_json(test_context(), rs));

  const json& ctx = j.at("context");
  EXPECT_EQ(ctx.at("executable"), "mhc_bench");
  EXPECT_EQ(ctx.at("device"), "Test Device 80GB");
  EXPECT_EQ(ctx.at("git_sha"), "0123abc");
  EXPECT_EQ(ctx.at("date"), "2026-01-02T03:04:05Z");
  EXPECT_EQ(ctx.at("reps"), 5);
  EXPECT_EQ(ctx.at("cold_l2"), true);
  EXPECT_EQ(ctx.at("sm_count"), 132);
  EXPECT_EQ(ctx.at("copy_probe_GBps"), 2950.5);

  ASSERT_EQ(j.at("benchmarks").size(), 2u);
  const json* m = find_bench(j, "mhc_fused/flash/T8192");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->at("run_name"), "mhc_fused/flash/T8192");
  EXPECT_EQ(m->at("run_type"), "aggregate");
  EXPECT_EQ(m->at("aggregate_name"), "median");
  EXPECT_EQ(m->at("repetitions"), 5);
  EXPECT_EQ(m->at("time_unit"), "us");
  EXPECT_EQ(m->at("real_time").get<double>(), 243.123456789012345);  // %.17g round-trips
  EXPECT_EQ(m->at("cpu_time").get<double>(), 243.123456789012345);
  EXPECT_EQ(m->at("pct_roof").get<double>(), 82.7);
  EXPECT_EQ(m->at("target_pct").get<double>(), 80.0);
  EXPECT_FALSE(m->contains("error_occurred"));

  const json* f = find_bench(j, "mhc_post/pro/T1");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->at("error_occurred"), true);
  EXPECT_EQ(f->at("error_message"), "correctness gate failed: u differs from the executor");
  EXPECT_FALSE(f->contains("real_time")) << "a failed case must carry no time";
  EXPECT_FALSE(f->contains("pct_roof"));
}

TEST(BenchReport, NoFileCarriesATimeThatWasNotMeasured) {
  const double nan = std::nan("");
  const double inf = HUGE_VAL;
  std::vector<BenchResult> rs = {measured("nan_time", nan, 50, 80), measured("zero_time", 0, 50, 80),
                                 measured("negative_time", -1, 50, 80),
                                 measured("inf_time", inf, 50, 80),
                                 measured("nan_counter", 10, nan, 80)};
  const json j = json::parse(bench_json(test_context(), rs));  // still valid JSON
  for (const BenchResult& r : rs) {
    const json* b = find_bench(j, r.name);
    ASSERT_NE(b, nullptr) << r.name;
    EXPECT_EQ(b->value("error_occurred", false), true) << r.name;
    EXPECT_FALSE(b->contains("real_time")) << r.name;
  }
  EXPECT_NE(find_bench(j, "nan_counter")->at("error_message").get<std::string>().find("pct_roof"),
            std::string::npos);
  EXPECT_EQ(json_number(nan), "null");
  EXPECT_EQ(json_number(-inf), "null");
  EXPECT_EQ(json::parse(json_number(0.1)).get<double>(), 0.1);
}

TEST(BenchReport, StringsAreEscapedAndReadBackUnchanged) {
  const std::string nasty = std::string("say \"hi\" \\ tab\there\nline\x01\x1f end, 3 \xC2\xB5s");
  BenchContext c = test_context();
  c.device = nasty;
  BenchResult r;
  r.name = nasty;
  r.error = nasty;
  const json j = json::parse(bench_json(c, {r}));
  EXPECT_EQ(j.at("context").at("device"), nasty);
  EXPECT_EQ(j.at("benchmarks").at(0).at("name"), nasty);
  EXPECT_EQ(j.at("benchmarks").at(0).at("error_message"), nasty);
  EXPECT_EQ(json_escape("a\x02" "b"), "a\\u0002b");
}

TEST(BenchReport, BaselineCountersPairCasesOfTheSameShape) {
  BenchResult broken;
  broken.name = "mhc_unfused/pro/T1";
  broken.error = "CUDA error";
  std::vector<BenchResult> rs = {measured("mhc_fused/flash/T16", 4.0, 50, 80),
                                 measured("mhc_unfused/flash/T16", 10.0, 20, 80),
                                 measured("mhc_fused/pro/T1", 3.0, 10, 80), broken,
                                 measured("mhc_fused/pro/T16", 5.0, 10, 80)};
  add_baseline_counters(rs, "mhc_fused/", "mhc_unfused/");
  const auto counter = [](const BenchResult& r, const std::string& k) -> std::optional<double> {
    for (const auto& [key, v] : r.counters)
      if (key == k) return v;
    return std::nullopt;
  };
  EXPECT_EQ(counter(rs[0], "baseline_us"), 10.0);
  EXPECT_EQ(counter(rs[0], "speedup"), 2.5);
  EXPECT_FALSE(counter(rs[1], "speedup")) << "the baseline itself gets no speedup";
  EXPECT_FALSE(counter(rs[2], "speedup")) << "a failed baseline gives no speedup";
  EXPECT_FALSE(counter(rs[4], "speedup")) << "no baseline of that shape";
}

TEST(BenchReport, CommandLineParsesAndNamesABadArgument) {
  const char* good[] = {"bench", "--out=x/y.json", "--filter=T8192", "--reps=9", "--warm"};
  const BenchOptions o = parse_bench_args(5, good);
  EXPECT_EQ(o.out, "x/y.json");
  EXPECT_EQ(o.filter, "T8192");
  EXPECT_EQ(o.reps, 9);
  EXPECT_TRUE(o.warm);
  EXPECT_TRUE(selected(o, "mhc_fused/flash/T8192"));
  EXPECT_FALSE(selected(o, "mhc_fused/flash/T4096"));
  EXPECT_TRUE(selected(BenchOptions{}, "anything"));

  for (const std::string bad : {"--reps=0", "--reps=abc", "--reps=", "--reps=3x", "--bogus", "--out="}) {
    const char* argv[] = {"bench", bad.c_str()};
    try {
      parse_bench_args(2, argv);
      ADD_FAILURE() << bad << " accepted";
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      EXPECT_TRUE(what.find(bad.substr(0, bad.find('='))) != std::string::npos ||
                  what.find(bad.substr(bad.find('=') + 1)) != std::string::npos)
          << bad << ": " << what;
    }
  }
}

TEST(BenchReport, DefaultPathNamesKernelDeviceAndCommit) {
  EXPECT_EQ(device_tag("NVIDIA H100 80GB HBM3"), "NVIDIA_H100_80GB_HBM3");
  EXPECT_EQ(device_tag(""), "unknown_device");
  EXPECT_EQ(default_out_path("mhc", "NVIDIA H200", "abc123"), "reports/data/mhc-NVIDIA_H200-abc123.json");
  EXPECT_FALSE(git_sha().empty());
  EXPECT_EQ(utc_now().size(), 20u);  // YYYY-MM-DDTHH:MM:SSZ
}

fs::path temp_dir(const std::string& tag) {
  const fs::path p = fs::temp_directory_path() / ("v4ref_bench_report_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

TEST(BenchReport, WriteFailureNamesThePath) {
  const fs::path dir = temp_dir("write");
  write_text_file(dir / "sub" / "a.json", "{}");
  EXPECT_TRUE(fs::exists(dir / "sub" / "a.json"));
  std::ofstream(dir / "plain") << "x";
  try {
    write_text_file(dir / "plain" / "b.json", "{}");
    ADD_FAILURE() << "writing under a regular file succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("plain"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

int run_shell(const std::string& cmd, std::string* out) {
  const test::CommandResult r = test::run_command(cmd);
  *out += r.out;
  return r.status;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// reports/make_report.py on a file written by bench_json and on one in the layout Google
// Benchmark itself writes with repetitions (bench/muon_bench.cu): the roofline plot exists, every
// case appears once with its fraction, target and verdict, and a failed case says why.
TEST(BenchReport, ReportPlotsTheFractionOfRooflineAgainstTheTarget) {
  std::string probe;
  if (run_shell("/usr/bin/python3 -c 'import matplotlib'", &probe) != 0)
    GTEST_SKIP() << "no /usr/bin/python3 with matplotlib (scripts/deps installs python3-matplotlib)";
  const fs::path dir = temp_dir("report");
  const std::string tool = std::string(V4REF_BINARY_DIR) + "/bin/v4ref";
  std::string out;
  ASSERT_EQ(run_shell(tool + " cost --json --sweep > " + (dir / "cost.json").string(), &out), 0) << out;

  BenchResult failed;
  failed.name = "mhc_pre/pro/T65536";
  failed.error = "correctness gate failed: coef differs";
  const std::vector<BenchResult> rs = {measured("mhc_fused/flash/T8192", 243.0, 82.7, 80),
                                       measured("mhc_fused/pro/T8192", 500.0, 70.2, 80), failed};
  write_text_file(dir / "data" / "mhc-Test_Device-0123abc.json", bench_json(test_context(), rs));
  // Google Benchmark's own layout with --benchmark_repetitions: iterations plus mean / median /
  // stddev aggregates; only the median stands for the case.
  const json gb = {
      {"context", {{"executable", "muon_bench"}}},
      {"benchmarks",
       json::array({{{"name", "muon/7168x4096"}, {"run_name", "muon/7168x4096"}, {"run_type", "iteration"},
                     {"real_time", 1.0}, {"time_unit", "ms"}, {"pct_roof", 60.0}},
                    {{"name", "muon/7168x4096_mean"}, {"run_name", "muon/7168x4096"}, {"run_type", "aggregate"},
                     {"aggregate_name", "mean"}, {"real_time", 1.1}, {"time_unit", "ms"}, {"pct_roof", 61.0}},
                    {{"name", "muon/7168x4096_median"}, {"run_name", "muon/7168x4096"}, {"run_type", "aggregate"},
                     {"aggregate_name", "median"}, {"real_time", 1.05}, {"time_unit", "ms"},
                     {"pct_roof", 71.5}, {"target_pct", 70.0}},
                    {{"name", "muon/7168x4096_stddev"}, {"run_name", "muon/7168x4096"}, {"run_type", "aggregate"},
                     {"aggregate_name", "stddev"}, {"real_time", 0.01}, {"time_unit", "ms"}}})}};
  write_text_file(dir / "data" / "muon-Test_Device-0123abc.json", gb.dump(1));
  write_text_file(dir / "data" / "broken.json", "{ not json");

  const std::string script = std::string(V4REF_SOURCE_DIR) + "/reports/make_report.py";
  out.clear();
  ASSERT_EQ(run_shell("/usr/bin/python3 " + script + " --cost " + (dir / "cost.json").string() +
                          " --bench-dir " + (dir / "data").string() + " --out " + (dir / "out").string(),
                      &out),
            0)
      << out;
  ASSERT_TRUE(fs::exists(dir / "out" / "bench_roofline.png"));
  EXPECT_GT(fs::file_size(dir / "out" / "bench_roofline.png"), 5000u);
  const std::string md = read_text(dir / "out" / "summary.md");
  const std::string html = read_text(dir / "out" / "index.html");
  EXPECT_NE(md.find("(bench_roofline.png)"), std::string::npos);
  EXPECT_NE(html.find("bench_roofline.png"), std::string::npos);
  const auto row = [&](const std::string& name) {
    const std::size_t a = md.find("| " + name + " |");
    return a == std::string::npos ? std::string() : md.substr(a, md.find('\n', a) - a);
  };
  EXPECT_NE(row("mhc_fused/flash/T8192").find("| 82.7 | 80 | meets target |"), std::string::npos)
      << row("mhc_fused/flash/T8192");
  EXPECT_NE(row("mhc_fused/pro/T8192").find("| 70.2 | 80 | below target |"), std::string::npos)
      << row("mhc_fused/pro/T8192");
  EXPECT_NE(row("mhc_pre/pro/T65536").find("FAILED: correctness gate failed: coef differs"),
            std::string::npos)
      << row("mhc_pre/pro/T65536");
  EXPECT_NE(row("muon/7168x4096_median").find("| 71.5 | 70 | meets target |"), std::string::npos)
      << md;
  EXPECT_EQ(row("muon/7168x4096"), "") << "iterations are represented by their median";
  EXPECT_EQ(row("muon/7168x4096_mean"), "");
  EXPECT_EQ(row("muon/7168x4096_stddev"), "");
  EXPECT_NE(md.find("broken.json"), std::string::npos) << "an unreadable file is named";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace v4ref::bench
