// `v4ref forward` and `v4ref decode`: the reference model (reference/model.hpp) on any
// checkpoint in the official layout, layer by layer, with named traces written to HDF5.
//
//   v4ref forward --checkpoint DIR --tokens FILE [--layers 0-3] [--trace out.h5]
//                 [--trace-filter 'layers.*.attn.*' ...] [--teacher in.h5] [--precision exact]
//                 [--mtp] [--keep-weights] [--impl reference|fp32]
//   v4ref decode  --checkpoint DIR --tokens FILE [--prefill N] [--generate N] [--check]
//                 [--trace out.h5]
//
// --impl fp32 runs compare/'s float32 forward (fp32_forward.hpp) instead of the reference: its
// trace is the baseline C of `v4ref bisect A B --baseline C`, which turns the statistical fp32
// allowance of every trace point into "2 × the plain fp32 error at that point + 2 ulp".
//
// Tokens: a text file of integer ids separated by whitespace or commas, or a v4ref trace file
// (its "tokens" dataset); or --random N [--seed S] for deterministic random ids.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "config_source.hpp"
#include "v4ref/compare/fp32_forward.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/rng.hpp"
#include "v4ref/ref/model.hpp"

namespace v4ref::cli {
namespace {

using ref::DecodeState;
using ref::ForwardRequest;
using ref::Mat;
using ref::Model;
using ref::ModelOptions;
using ref::Trace;
using ref::WeightCache;

struct Common {
  std::filesystem::path checkpoint;
  ConfigSource config;
  std::filesystem::path tokens_file;
  std::int64_t random_tokens = 0;
  std::uint64_t seed = 0;
  std::string precision = "exact";
  std::filesystem::path trace_path;
  std::vector<std::string> trace_filter;
  bool keep_weights = false;
  double weight_cache_gib = 0;
  bool quiet = false;
};

void add_common(CLI::App* cmd, Common& c) {
  cmd->add_option("--checkpoint", c.checkpoint, "checkpoint directory (official layout)")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--preset", c.config.preset, "built-in config instead of <checkpoint>/config.json");
  cmd->add_option("--config", c.config.file, "config.json instead of <checkpoint>/config.json")->check(CLI::ExistingFile);
  cmd->add_option("--tokens", c.tokens_file, "token ids: text file (whitespace/comma separated) or a v4ref trace .h5")
      ->check(CLI::ExistingFile);
  cmd->add_option("--random", c.random_tokens, "use N deterministic random token ids instead of --tokens");
  cmd->add_option("--seed", c.seed, "seed of --random")->capture_default_str();
  cmd->add_option("--precision", c.precision, "rounding mode: exact, qat or official")->capture_default_str();
  cmd->add_option("--trace", c.trace_path, "write the named intermediate tensors to this HDF5 file");
  cmd->add_option("--trace-filter", c.trace_filter, "keep only trace points matching these patterns ('*', '?')");
  cmd->add_flag("--keep-weights", c.keep_weights,
                "keep every layer's dequantised weights in memory (tiny checkpoints; default: one layer at a time)");
  cmd->add_option("--weight-cache", c.weight_cache_gib,
                  "keep recently used dequantised layers and experts, up to this many GiB in double "
                  "(real-size checkpoints; decode steps reuse them; results unchanged)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--quiet", c.quiet, "no progress lines on stderr");
}

// One line on what the weight cache did (nothing without --weight-cache).
void print_weight_cache(const Model& m) {
  const std::shared_ptr<const WeightCache> cache = m.weight_cache();
  if (!cache) return;
  const WeightCache::Stats s = cache->stats();
  std::printf("weight cache: %lld hits, %lld loads, %lld evictions, %lld too large; holds %lld entries, "
              "%.2f of %.2f GiB\n",
              static_cast<long long>(s.hits), static_cast<long long>(s.misses),
              static_cast<long long>(s.evictions), static_cast<long long>(s.not_kept),
              static_cast<long long>(s.entries), static_cast<double>(s.bytes) / (1ull << 30),
              static_cast<double>(cache->budget_bytes()) / (1ull << 30));
}

std::vector<std::int64_t> read_tokens(const Common& c, std::int64_t vocab) {
  if (c.random_tokens > 0) {
    Rng rng(c.seed);
    std::vector<std::int64_t> ids(static_cast<std::size_t>(c.random_tokens));
    for (auto& id : ids) id = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(vocab)));
    return ids;
  }
  if (c.tokens_file.empty()) throw ConfigError("no tokens: give --tokens FILE or --random N");
  if (c.tokens_file.extension() == ".h5") {
    const Trace t = Trace::read_hdf5(c.tokens_file);
    if (t.tokens().empty()) throw FormatError(c.tokens_file.string() + ": trace has no \"tokens\" dataset");
    return t.tokens();
  }
  std::ifstream in(c.tokens_file);
  if (!in) throw IoError("cannot read " + c.tokens_file.string());
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  for (char& ch : text)
    if (ch == ',') ch = ' ';
  std::istringstream words(text);
  std::vector<std::int64_t> ids;
  std::string w;
  while (words >> w) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(w, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != w.size())
      throw ConfigError(c.tokens_file.string() + ": token " + std::to_string(ids.size()) + " \"" + w +
                        "\" is not an integer id");
    ids.push_back(v);
  }
  return ids;
}

// Progress on stderr, at most about once a second plus the last step.
ref::ProgressFn progress_printer(bool quiet) {
  if (quiet) return {};
  auto start = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
  auto last = std::make_shared<double>(-1.0);
  return [start, last](std::string_view stage, std::int64_t done, std::int64_t total) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - *start).count();
    if (done != total && s - *last < 1.0) return;
    *last = s;
    std::fprintf(stderr, "%.*s: %lld/%lld (%.1f s)\n", static_cast<int>(stage.size()), stage.data(),
                 static_cast<long long>(done), static_cast<long long>(total), s);
  };
}

Model open_model(Common& c) {
  const ModelConfig cfg = resolve_config(c.config, c.checkpoint);
  ModelOptions o;
  o.policy = PrecisionPolicy::of(parse_precision_mode(c.precision));
  if (c.keep_weights && c.weight_cache_gib > 0)
    throw ConfigError("--keep-weights keeps every layer already; --weight-cache is for a bounded cache, give one of them");
  o.keep_weights = c.keep_weights;
  o.weight_cache_bytes = static_cast<std::int64_t>(c.weight_cache_gib * static_cast<double>(1ull << 30));
  o.progress = progress_printer(c.quiet);
  return Model::open(c.checkpoint, cfg, o);
}

void set_provenance(Trace& t, const Common& c, const Model& m, const std::string& mode) {
  t.attrs()["config"] = m.config().name;
  t.attrs()["config_source"] = c.config.describe;
  t.attrs()["checkpoint"] = c.checkpoint.string();
  t.attrs()["precision"] = c.precision;
  t.attrs()["mode"] = mode;
  t.attrs()["producer"] = std::string("v4ref");
}

void print_top(const Mat& logits, std::int64_t row, const char* what) {
  std::vector<std::pair<double, std::int64_t>> v;
  for (Eigen::Index j = 0; j < logits.cols(); ++j) v.emplace_back(logits(row, j), j);
  const std::size_t k = std::min<std::size_t>(5, v.size());
  std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  std::printf("%s top-%zu:", what, k);
  for (std::size_t i = 0; i < k; ++i) std::printf(" %lld (%.6g)", static_cast<long long>(v[i].second), v[i].first);
  std::printf("\n");
}

struct ForwardOptions {
  Common c;
  std::string layers = "all";
  std::filesystem::path teacher;
  bool mtp = false;
  std::string impl = "reference";
};

struct DecodeOptions {
  Common c;
  std::int64_t prefill = 0;
  std::int64_t generate = 0;
  bool check = false;
};

double max_row_rel(const Mat& a, const Mat& b) {
  double worst = 0;
  for (Eigen::Index t = 0; t < a.rows(); ++t)
    worst = std::max(worst, (a.row(t) - b.row(t)).cwiseAbs().maxCoeff() / std::max(b.row(t).cwiseAbs().maxCoeff(), 1e-300));
  return worst;
}

std::int64_t argmax(const Mat& logits) {
  Eigen::Index j = 0;
  logits.row(0).maxCoeff(&j);
  return j;
}

}  // namespace

void register_forward(CLI::App& app) {
  auto opt = std::make_shared<ForwardOptions>();
  CLI::App* cmd = app.add_subcommand("forward", "Run the reference prefill on a checkpoint, optionally tracing every intermediate tensor");
  add_common(cmd, opt->c);
  cmd->add_option("--layers", opt->layers, "layers to run/trace: N, A-B or all (chained: earlier layers run untraced)")
      ->capture_default_str();
  cmd->add_option("--teacher", opt->teacher, "teacher-forced: feed each layer its input from this trace")->check(CLI::ExistingFile);
  cmd->add_flag("--mtp", opt->mtp, "also run MTP block 0 on the next tokens (positions 0..T-2)");
  cmd->add_option("--impl", opt->impl,
                  "reference (fp64) or fp32: the float32 port, whose trace is the baseline C of "
                  "`v4ref bisect --baseline` (exact precision, no --mtp)")
      ->check(CLI::IsMember({"reference", "fp32"}))
      ->capture_default_str();
  cmd->callback([opt] {
    Common& c = opt->c;
    const Model m = open_model(c);
    const ModelConfig& cfg = m.config();
    const std::vector<std::int64_t> ids = read_tokens(c, cfg.vocab_size);
    const auto [first, last] = ref::parse_layer_range(opt->layers, cfg.n_layers);
    ForwardRequest req;
    req.first_layer = first;
    req.last_layer = last;
    std::optional<Trace> teacher;
    if (!opt->teacher.empty()) {
      teacher = Trace::read_hdf5(opt->teacher);
      req.teacher = &*teacher;
    }
    Trace trace(c.trace_filter);
    const bool tracing = !c.trace_path.empty();
    const auto t0 = std::chrono::steady_clock::now();
    const bool fp32 = opt->impl == "fp32";
    if (fp32 && c.precision != "exact")
      throw ConfigError("--impl fp32: the float32 port implements the exact math; drop --precision " + c.precision);
    if (fp32 && opt->mtp) throw ConfigError("--impl fp32 has no MTP block; drop --mtp");
    ref::ForwardResult r;
    if (fp32) {
      m.check_tokens(ids);
      r.logits = compare::Fp32Forward(m).forward(ids, req, tracing ? &trace : nullptr);
    } else {
      r = m.forward(ids, req, tracing ? &trace : nullptr);
    }
    if (opt->mtp) {
      if (last != cfg.n_layers - 1 || req.teacher != nullptr)
        throw ConfigError("--mtp needs the chained run of every layer (--layers all, no --teacher)");
      if (ids.size() < 2) throw ConfigError("--mtp needs at least two tokens");
      const std::vector<std::int64_t> next(ids.begin() + 1, ids.end());
      const Mat mtp = m.mtp_forward(r.streams.topRows(static_cast<Eigen::Index>(next.size())), next, 0,
                                    tracing ? &trace : nullptr);
      print_top(mtp, mtp.rows() - 1, "mtp logits at the last position");
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("forward: config %s, %zu tokens, layers %lld-%lld (%s), precision %s, %s, %.2f s\n", cfg.name.c_str(),
                ids.size(), static_cast<long long>(first), static_cast<long long>(last),
                req.teacher != nullptr ? "teacher-forced" : "chained", c.precision.c_str(),
                fp32 ? "fp32 port" : "reference", secs);
    if (r.logits.size() > 0) {
      if (!r.logits.allFinite()) throw NumericError("forward: non-finite logits");
      print_top(r.logits, r.logits.rows() - 1, "logits at the last position");
    }
    if (tracing) {
      set_provenance(trace, c, m, req.teacher != nullptr ? "teacher-forced" : "chained");
      trace.attrs()["implementation"] = fp32 ? std::string("fp32-port") : std::string("reference");
      trace.write_hdf5(c.trace_path);
      std::printf("trace: %zu tensors -> %s\n", trace.size(), c.trace_path.string().c_str());
    }
  });

  auto dopt = std::make_shared<DecodeOptions>();
  CLI::App* dec = app.add_subcommand("decode", "Run the reference token by token through the official caches");
  add_common(dec, dopt->c);
  dec->add_option("--prefill", dopt->prefill, "prefill the first N tokens, decode the rest (0: decode all)")
      ->capture_default_str();
  dec->add_option("--generate", dopt->generate, "then generate N greedy tokens")->capture_default_str();
  dec->add_flag("--check", dopt->check, "compare the decoded logits with a prefill of the same sequence");
  dec->callback([dopt] {
    Common& c = dopt->c;
    const Model m = open_model(c);
    const ModelConfig& cfg = m.config();
    std::vector<std::int64_t> ids = read_tokens(c, cfg.vocab_size);
    const auto n = static_cast<std::int64_t>(ids.size());
    if (dopt->prefill < 0 || dopt->prefill > n)
      throw ConfigError("--prefill " + std::to_string(dopt->prefill) + " outside [0, " + std::to_string(n) + "]");
    m.check_tokens(ids);
    Trace trace(c.trace_filter);
    const bool tracing = !c.trace_path.empty();
    const auto t0 = std::chrono::steady_clock::now();
    DecodeState state = m.start_state();
    Mat logits(0, cfg.vocab_size);
    if (dopt->prefill > 0) {
      logits = m.prefill_with_state(std::span(ids).first(static_cast<std::size_t>(dopt->prefill)), state,
                                    tracing ? &trace : nullptr)
                   .logits;
    }
    const ref::ProgressFn progress = progress_printer(c.quiet);
    const std::int64_t total = n - dopt->prefill + dopt->generate;
    Mat out(total, cfg.vocab_size);
    for (std::int64_t s = 0; s < total; ++s) {
      const std::int64_t t = dopt->prefill + s;
      if (t >= n) ids.push_back(argmax(out.row(s - 1)));
      out.row(s) = m.decode_step(ids[static_cast<std::size_t>(t)], state, tracing ? &trace : nullptr).row(0);
      if (progress) progress("decode", s + 1, total);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("decode: config %s, prefill %lld, decoded %lld, precision %s, %.2f s\n", cfg.name.c_str(),
                static_cast<long long>(dopt->prefill), static_cast<long long>(total), c.precision.c_str(), secs);
    if (dopt->generate > 0) {
      std::printf("generated:");
      for (std::int64_t i = n; i < static_cast<std::int64_t>(ids.size()); ++i) std::printf(" %lld", static_cast<long long>(ids[static_cast<std::size_t>(i)]));
      std::printf("\n");
    }
    if (total > 0) print_top(out, total - 1, "logits at the last position");
    print_weight_cache(m);
    if (dopt->check) {
      const Mat all = m.forward(ids).logits;
      const Eigen::Index rows = std::min<Eigen::Index>(out.rows(), all.rows() - dopt->prefill);
      const double rel = max_row_rel(out.topRows(rows), all.middleRows(dopt->prefill, rows));
      std::printf("check: decode vs prefill, max row-relative difference %.3g over %lld positions\n", rel,
                  static_cast<long long>(rows));
      if (!(rel <= 1e-10)) {
        std::printf("check: FAILED (bound 1e-10)\n");
        exit_code() = 1;
      }
    }
    if (tracing) {
      set_provenance(trace, c, m, "decode");
      trace.attrs()["prefill_tokens"] = dopt->prefill;
      trace.write_hdf5(c.trace_path);
      std::printf("trace: %zu tensors -> %s\n", trace.size(), c.trace_path.string().c_str());
    }
  });
}

}  // namespace v4ref::cli
