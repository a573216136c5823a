// Failure bundles and their replay (bundle.hpp).
#include "v4ref/compare/bundle.hpp"

#include <chrono>
#include <cstring>
#include <ctime>

#include "v4ref/compare/version.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/hdf5_store.hpp"

namespace v4ref::compare {

namespace {

constexpr const char* kFormat = "v4ref-bundle";

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void write_text(H5Store& h5, const std::string& name, const std::string& text) {
  std::vector<std::uint8_t> b(text.begin(), text.end());
  h5.write_bits8(name, LogicalDtype::kU8, {static_cast<std::int64_t>(b.size())}, b);
}

std::string read_text(const H5Store& h5, const std::string& name) {
  if (!h5.contains(name)) return {};
  const StoredTensor t = h5.read(name);
  std::string s;
  s.reserve(t.raw.size());
  for (std::uint64_t v : t.raw) s.push_back(static_cast<char>(v));
  return s;
}

void write_set(H5Store& h5, const std::string& group, const TensorSet& set) {
  for (const std::string& name : set.names()) {
    const Mat& m = set.at(name);
    const std::string ds = group + "/" + name;
    const std::string& dtype = set.dtype(name);
    const Shape shape{m.rows(), m.cols()};
    const auto n = static_cast<std::size_t>(m.size());
    if (dtype == "bf16") {
      std::vector<std::uint16_t> bits(n);
      for (std::size_t i = 0; i < n; ++i) bits[i] = fmt::bf16_encode(m.data()[i]);
      h5.write_bits16(ds, LogicalDtype::kBF16, shape, bits);
    } else if (dtype == "f32") {
      std::vector<float> f(n);
      for (std::size_t i = 0; i < n; ++i) f[i] = static_cast<float>(m.data()[i]);
      h5.write_f32(ds, shape, f);
    } else {
      h5.write_f64(ds, shape, std::span<const double>(m.data(), n));
    }
    h5.set_attr(ds, "dtype", dtype);
  }
}

TensorSet read_set(const H5Store& h5, const std::string& group) {
  // names() is sorted; the order attribute restores insertion order.
  std::vector<std::pair<std::int64_t, std::string>> items;
  const std::string prefix = group + "/";
  for (const std::string& n : h5.names())
    if (n.rfind(prefix, 0) == 0) {
      const auto a = h5.attrs(n);
      const auto o = a.find("order");
      items.emplace_back(o != a.end() && std::holds_alternative<std::int64_t>(o->second)
                             ? std::get<std::int64_t>(o->second)
                             : 0,
                         n);
    }
  std::stable_sort(items.begin(), items.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  TensorSet set;
  for (const auto& [order, n] : items) {
    const StoredTensor t = h5.read(n);
    const std::int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
    const std::int64_t cols = t.shape.size() == 2 ? t.shape[1] : (t.shape.empty() ? 1 : t.shape[0]);
    Mat m(rows, cols);
    if (m.size() > 0)
      std::memcpy(m.data(), t.values.data(), sizeof(double) * static_cast<std::size_t>(m.size()));
    const auto d = t.attrs.find("dtype");
    set.put(n.substr(prefix.size()), std::move(m),
            d != t.attrs.end() && std::holds_alternative<std::string>(d->second)
                ? std::get<std::string>(d->second)
                : "f64");
  }
  return set;
}

void write_set_ordered(H5Store& h5, const std::string& group, const TensorSet& set) {
  write_set(h5, group, set);
  std::int64_t i = 0;
  for (const std::string& name : set.names()) h5.set_attr(group + "/" + name, "order", i++);
}

std::string attr_string(const std::map<std::string, AttrValue>& a, const std::string& key) {
  const auto it = a.find(key);
  if (it == a.end() || !std::holds_alternative<std::string>(it->second)) return {};
  return std::get<std::string>(it->second);
}

}  // namespace

void write_bundle(const std::filesystem::path& file, const CaseResult& result,
                  const TensorSet& inputs, const TensorSet* impl_out, const References& refs) {
  std::error_code ec;
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path(), ec);
  if (ec) throw IoError("cannot create " + file.parent_path().string() + ": " + ec.message());
  std::filesystem::remove(file, ec);
  H5Store h5(file, H5Store::Mode::kCreate);
  const Case& c = result.c;
  h5.set_attr("/", "format", std::string(kFormat));
  h5.set_attr("/", "format_version", std::int64_t{1});
  h5.set_attr("/", "case", c.name());
  h5.set_attr("/", "case_json", c.to_json().dump());
  h5.set_attr("/", "seed", seed_hex(c.seed()));
  h5.set_attr("/", "global_seed", seed_hex(c.global_seed));
  h5.set_attr("/", "component", c.component);
  h5.set_attr("/", "config", c.config);
  h5.set_attr("/", "kind", std::string(input_kind_name(c.kind)));
  h5.set_attr("/", "mode", std::string(precision_mode_name(c.mode)));
  h5.set_attr("/", "implementation", result.implementation);
  h5.set_attr("/", "path", result.path);
  h5.set_attr("/", "verdict", std::string(result.pass ? "PASS" : "FAIL"));
  h5.set_attr("/", "error", result.error);
  h5.set_attr("/", "command_line",
              result.command.empty() ? "v4ref replay " + file.string() : result.command);
  std::string rows;
  for (const OutputJudgement& j : result.outputs)
    rows +=
        j.output + " (" + j.gate + "): [" + j.row_key + " @ " + j.row_path + "] " + j.rule + "\n";
  h5.set_attr("/", "tolerance_rows", rows);
  h5.set_attr("/", "compiler", compiler_string());
  h5.set_attr("/", "created_utc", utc_now());
  write_set_ordered(h5, "inputs", inputs);
  if (impl_out != nullptr) write_set_ordered(h5, "impl", *impl_out);
  write_set_ordered(h5, "ref_q", refs.ref_q);
  if (!refs.ref_x.empty()) write_set_ordered(h5, "ref_x", refs.ref_x);
  if (!refs.baseline.empty()) write_set_ordered(h5, "baseline", refs.baseline);
  write_text(h5, "report", result.report());
  write_text(h5, "metrics_json", result.to_json().dump());
}

Bundle read_bundle(const std::filesystem::path& file) {
  const H5Store h5(file, H5Store::Mode::kRead);
  const auto root = h5.attrs("/");
  if (attr_string(root, "format") != kFormat)
    throw FormatError(file.string() + ": not a v4ref failure bundle (root attribute format = \"" +
                      std::string(kFormat) + "\" missing)");
  Bundle b;
  try {
    b.c = Case::from_json(nlohmann::json::parse(attr_string(root, "case_json")));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(file.string() + ": case_json is not valid JSON: " + e.what());
  }
  b.implementation = attr_string(root, "implementation");
  b.path = attr_string(root, "path");
  b.verdict = attr_string(root, "verdict");
  b.error = attr_string(root, "error");
  b.command = attr_string(root, "command_line");
  b.report = read_text(h5, "report");
  b.metrics_json = read_text(h5, "metrics_json");
  b.inputs = read_set(h5, "inputs");
  b.impl = read_set(h5, "impl");
  b.has_impl = !b.impl.empty();
  b.ref_q = read_set(h5, "ref_q");
  b.ref_x = read_set(h5, "ref_x");
  b.baseline = read_set(h5, "baseline");
  return b;
}

bool ReplayResult::reproduced() const {
  const bool want_pass = bundle.verdict == "PASS";
  if (stored.pass != want_pass) return false;
  return !rerun || rerun->pass == want_pass;
}

std::string ReplayResult::text() const {
  std::string s = "replay " + bundle.c.name() + "  seed=" + seed_hex(bundle.c.seed()) +
                  "  impl=" + bundle.implementation + "  path=" + bundle.path + "\n";
  s += "  bundle verdict: " + bundle.verdict +
       (bundle.error.empty() ? "" : " (" + bundle.error + ")") + "\n";
  s += std::string("  reference recomputed: ") +
       (reference_unchanged
            ? "bitwise equal to the stored Rq"
            : "DIFFERS from the stored Rq (the reference changed since the bundle was written)") +
       "\n";
  s += "  stored outputs judged again: " + std::string(stored.pass ? "PASS" : "FAIL") + "\n";
  if (!stored.pass) s += stored.report();
  if (rerun) {
    s += "  implementation " + bundle.implementation +
         " rerun: " + (rerun->pass ? "PASS" : "FAIL") + "\n";
    if (!rerun->pass) s += rerun->report();
  } else {
    s += "  implementation " + bundle.implementation +
         " is not registered in this process: not rerun\n";
  }
  s += std::string(reproduced()
                       ? "  reproduced: the replay reaches the bundle's verdict\n"
                       : "  NOT reproduced: the replay's verdict differs from the bundle's\n");
  return s;
}

nlohmann::json ReplayResult::json() const {
  nlohmann::json j{{"case", bundle.c.to_json()},
                   {"implementation", bundle.implementation},
                   {"path", bundle.path},
                   {"bundle_verdict", bundle.verdict},
                   {"reference_unchanged", reference_unchanged},
                   {"stored", stored.to_json()},
                   {"reproduced", reproduced()}};
  j["rerun"] = rerun ? rerun->to_json() : nlohmann::json();
  return j;
}

ReplayResult replay_bundle(const std::filesystem::path& file) {
  ReplayResult r;
  r.bundle = read_bundle(file);
  const Bundle& b = r.bundle;
  const References refs = compute_references(b.c, b.inputs);
  r.reference_unchanged = true;
  for (const std::string& n : refs.ref_q.names()) {
    if (!b.ref_q.has(n)) {
      r.reference_unchanged = false;
      continue;
    }
    const Mat& x = refs.ref_q.at(n);
    const Mat& y = b.ref_q.at(n);
    if (x.rows() != y.rows() || x.cols() != y.cols() ||
        (x.size() > 0 &&
         std::memcmp(x.data(), y.data(), sizeof(double) * static_cast<std::size_t>(x.size())) != 0))
      r.reference_unchanged = false;
  }
  r.stored =
      judge_case(b.c, b.implementation, b.path, b.inputs, b.has_impl ? &b.impl : nullptr, b.error);
  if (const auto impl = find_implementation(b.implementation)) {
    TensorSet out;
    std::string error;
    bool ok = true;
    try {
      out = impl->run(ComponentCall{b.c, case_config(b.c), b.c.policy(), b.inputs});
    } catch (const std::exception& e) {
      ok = false;
      error = std::string("implementation threw: ") + e.what();
    }
    r.rerun = judge_case(b.c, impl->name(), impl->path(), b.inputs, ok ? &out : nullptr, error);
  }
  return r;
}

}  // namespace v4ref::compare
