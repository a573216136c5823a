// Cases and tensor sets of the differential runner (case.hpp).
#include "v4ref/compare/case.hpp"

#include <cctype>
#include <cmath>
#include <charconv>
#include <cstdio>
#include <cstdlib>

#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/core/formats.hpp"
#include "v4ref/ref/core/rng.hpp"

namespace v4ref::compare {

void TensorSet::put(const std::string& name, Mat value, std::string dtype) {
  auto it = items_.find(name);
  if (it == items_.end()) {
    order_.push_back(name);
    items_.emplace(name, std::make_pair(std::move(value), std::move(dtype)));
  } else {
    it->second = {std::move(value), std::move(dtype)};
  }
}

void require_inputs_on_their_grids(const TensorSet& inputs, const std::string& who) {
  for (const std::string& name : inputs.names()) {
    const std::string& dtype = inputs.dtype(name);
    double (*round)(double) = nullptr;
    if (dtype == "f32") round = &fmt::round_fp32;
    if (dtype == "bf16") round = &fmt::round_bf16;
    if (round == nullptr) continue;
    const Mat& m = inputs.at(name);
    for (Eigen::Index r = 0; r < m.rows(); ++r)
      for (Eigen::Index c = 0; c < m.cols(); ++c) {
        const double v = m(r, c);
        if (std::isfinite(v) && round(v) != v) {
          char buf[64];
          std::snprintf(buf, sizeof buf, "%.17g", v);
          throw NumericError(who + ": input " + name + "[" + std::to_string(r) + ", " +
                             std::to_string(c) + "] = " + buf + " is tagged " + dtype +
                             " but is not a " + dtype + " value");
        }
      }
  }
}

bool TensorSet::has(std::string_view name) const { return items_.find(name) != items_.end(); }

const Mat& TensorSet::at(std::string_view name) const {
  const auto it = items_.find(name);
  if (it == items_.end()) {
    std::string keys;
    for (const std::string& k : order_) keys += (keys.empty() ? "" : ", ") + k;
    throw MissingTensor("tensor \"" + std::string(name) + "\" not in the set (present: " +
                        (keys.empty() ? std::string("none") : keys) + ")");
  }
  return it->second.first;
}

const std::string& TensorSet::dtype(std::string_view name) const {
  at(name);  // error if absent
  return items_.find(name)->second.second;
}

namespace {
constexpr std::pair<InputKind, std::string_view> kKinds[] = {
    {InputKind::kRandom, "random"},
    {InputKind::kOutliers, "outliers"},
    {InputKind::kTopkTies, "topk_ties"},
    {InputKind::kAllMasked, "all_masked"},
    {InputKind::kFormatExtremes, "format_extremes"},
};
}  // namespace

std::string_view input_kind_name(InputKind k) {
  for (const auto& [kind, name] : kKinds)
    if (kind == k) return name;
  return "?";
}

InputKind parse_input_kind(std::string_view s) {
  std::string accepted;
  for (const auto& [kind, name] : kKinds) {
    if (name == s) return kind;
    accepted += (accepted.empty() ? "" : ", ") + std::string(name);
  }
  throw ConfigError("unknown input kind \"" + std::string(s) + "\"; accepted: " + accepted);
}

std::uint64_t global_seed_from_env() {
  const char* v = std::getenv("V4REF_SEED");
  if (v == nullptr || *v == '\0') return 0;
  std::string_view s(v);
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    base = 16;
  }
  std::uint64_t out = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  if (ec != std::errc() || p != s.data() + s.size())
    throw ConfigError("V4REF_SEED=\"" + std::string(v) +
                      "\" is not a decimal or 0x-hex 64-bit integer");
  return out;
}

std::string seed_hex(std::uint64_t seed) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(seed));
  return buf;
}

std::string Case::dims_string() const {
  std::string s;
  for (const auto& [k, v] : dims) s += (s.empty() ? "" : "_") + k + std::to_string(v);
  return s.empty() ? "scalar" : s;
}

std::string Case::name() const {
  return component + "/" + config + "/" + dims_string() + "/" + std::string(input_kind_name(kind)) +
         "/" + std::string(precision_mode_name(mode));
}

std::string Case::test_name() const {
  std::string s = name();
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
  return s;
}

std::uint64_t Case::seed() const { return derive_seed(name(), "", "", global_seed); }

std::uint64_t Case::tensor_seed(std::string_view tensor, const Shape& shape) const {
  std::string sh;
  for (std::int64_t d : shape) sh += (sh.empty() ? "" : "x") + std::to_string(d);
  return derive_seed(name(), tensor, sh, global_seed);
}

std::int64_t Case::dim(std::string_view key) const {
  for (const auto& [k, v] : dims)
    if (k == key) return v;
  throw ConfigError("case " + name() + ": no shape parameter \"" + std::string(key) + "\"");
}

std::int64_t Case::dim_or(std::string_view key, std::int64_t fallback) const {
  for (const auto& [k, v] : dims)
    if (k == key) return v;
  return fallback;
}

nlohmann::json Case::to_json() const {
  nlohmann::json d = nlohmann::json::array();
  for (const auto& [k, v] : dims) d.push_back({k, v});
  return {{"component", component},
          {"config", config},
          {"dims", d},
          {"kind", std::string(input_kind_name(kind))},
          {"mode", std::string(precision_mode_name(mode))},
          {"global_seed", seed_hex(global_seed)},
          {"slow", slow},
          {"name", name()},
          {"seed", seed_hex(seed())}};
}

Case Case::from_json(const nlohmann::json& j) {
  try {
    Case c;
    c.component = j.at("component").get<std::string>();
    c.config = j.at("config").get<std::string>();
    for (const auto& p : j.at("dims"))
      c.dims.emplace_back(p.at(0).get<std::string>(), p.at(1).get<std::int64_t>());
    c.kind = parse_input_kind(j.at("kind").get<std::string>());
    c.mode = parse_precision_mode(j.at("mode").get<std::string>());
    const std::string gs = j.at("global_seed").get<std::string>();
    c.global_seed = std::strtoull(gs.c_str(), nullptr, 0);
    c.slow = j.value("slow", false);
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(std::string("case description: ") + e.what());
  }
}

}  // namespace v4ref::compare
