// `v4ref cost`: decode FLOPs per generated token and KV-cache bytes of DeepSeek-V3.2, V4-Flash
// and V4-Pro versus context length (spec/cost-model.md §6.2, §8). Formats the results of
// v4ref/ref/cost_model.hpp; no formula lives here.
//
// JSON shape (--json):
//   {
//     "contexts": [L, ...],              // always a list
//     "conventions": {...},              // weights table, KV layout, L definition, scope
//     "targets": {...},                  // DeepSeek's published 1M ratios and the §8 tolerances
//     "models": {
//       "v3.2" | "v4-flash" | "v4-pro": {
//         "context", "flops_eqfp8_per_token", "flops_raw_per_token",
//         "prefill_flops_eqfp8_per_token", "prefill_flops_raw_per_token", "kv_bytes",
//         V4 only: "flops_ratio_vs_v3.2", "flops_raw_ratio_vs_v3.2", "kv_ratio_vs_v3.2",
//                  "prefill_flops_ratio_vs_v3.2"        (fractions, e.g. 0.267, not percent)
//         "breakdown": {"raw": {component: FLOPs}, "eqfp8": {component: FLOPs},
//                       "raw_by_class": {class: FLOPs}, "eqfp8_by_layer_kind": {kind: FLOPs}},
//         "kv_breakdown": {cache: bytes},
//         context-independent: "preset", "n_layers", "layer_kinds", "component_classes",
//                              "compressor_state_bytes", "active_params", "kv_entry_bytes"
//       }
//     }
//   }
// With exactly one context every per-context value is a scalar (so
// `v4ref cost --context 1048576 --json` gives models["v4-pro"]["flops_ratio_vs_v3.2"] = 0.267...);
// with several (or --sweep) every per-context value is an array parallel to "contexts".
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "v4ref/ref/config_json.hpp"
#include "v4ref/ref/core/error.hpp"
#include "v4ref/ref/cost_model.hpp"

namespace v4ref::cli {

namespace {

using ojson = nlohmann::ordered_json;
using ref::CostComponent;
using ref::CostCounter;
using ref::KvOptions;
using ref::PrecisionWeights;

struct CostArgs {
  std::vector<std::int64_t> contexts;
  bool json = false;
  bool sweep = false;
  int per_octave = 1;
  std::vector<std::string> weights;
  std::string kv_layout = "serving";
  bool paged = false;
  bool compressor_state = false;
  bool breakdown = false;
};

constexpr const char* kModels[] = {"v3.2", "v4-flash", "v4-pro"};

// L = 2^10 .. 2^20, with `per_octave` points per doubling (rounded to integers).
std::vector<std::int64_t> sweep_contexts(int per_octave) {
  std::vector<std::int64_t> out;
  for (int i = 0; i <= 10 * per_octave; ++i) {
    const double e = 10.0 + static_cast<double>(i) / per_octave;
    const auto L = static_cast<std::int64_t>(std::llround(std::exp2(e)));
    if (out.empty() || out.back() != L) out.push_back(L);
  }
  return out;
}

PrecisionWeights parse_weights(const std::vector<std::string>& items) {
  PrecisionWeights w;
  for (const std::string& item : items) {
    const auto eq = item.find('=');
    if (eq == std::string::npos)
      throw Error("--weights: expected name=value (e.g. fp4=0.5), got \"" + item + "\"");
    const std::string name = item.substr(0, eq), value = item.substr(eq + 1);
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != value.size())
      throw Error("--weights: value of " + name + " is not a number: \"" + value + "\"");
    w.set(name, v);
  }
  return w;
}

std::string context_label(std::int64_t L) {
  if (L >= (1 << 20) && L % (1 << 20) == 0) return std::to_string(L >> 20) + "M";
  if (L >= 1024 && L % 1024 == 0) return std::to_string(L >> 10) + "K";
  return std::to_string(L);
}

std::string kv_label(std::int64_t bytes) {
  char buf[64];
  const double mib = static_cast<double>(bytes) / (1 << 20);
  if (mib < 1024)
    std::snprintf(buf, sizeof buf, "%.1f MiB", mib);
  else
    std::snprintf(buf, sizeof buf, "%.3f GiB", mib / 1024);
  return buf;
}

ojson weights_json(const PrecisionWeights& w) {
  ojson j;
  for (ref::PrecisionClass p : ref::kAllPrecisionClasses) j[ref::precision_class_name(p)] = w.of(p);
  return j;
}

ojson conventions_json(const PrecisionWeights& w, const KvOptions& kv) {
  ojson j;
  j["weights"] = weights_json(w);
  j["kv_layout"] = ref::kv_layout_name(kv.layout);
  j["kv_paged"] = kv.paged;
  if (kv.paged) j["kv_page"] = {{"tokens", kv.page_tokens}, {"align_bytes", kv.page_align}};
  j["kv_includes_compressor_state"] = kv.compressor_state;
  j["L"] =
      "tokens in the sequence including the one being produced; the decode step at L processes "
      "position L-1; KV bytes are for a cache holding L tokens";
  j["flop"] = "one multiply-add = 2 FLOPs; matmul-class ops only (vector work excluded)";
  j["scope"] = "batch 1, main model (MTP excluded), LM head included, no embedding FLOPs";
  j["prefill"] = "prefill_* = mean over positions 1..L of the decode cost";
  j["spec"] = "shared/spec/cost-model.md";
  return j;
}

// One model at one context: every per-context value.
ojson model_point(const ModelConfig& cfg, std::int64_t L, const PrecisionWeights& w,
                  const KvOptions& kv) {
  const ref::CostPoint p = ref::cost_point(cfg, L, w, kv);
  const CostCounter dec = ref::decode_flops(cfg, L);
  ojson j;
  j["context"] = L;
  j["flops_eqfp8_per_token"] = p.flops_eqfp8;
  j["flops_raw_per_token"] = p.flops_raw;
  j["prefill_flops_eqfp8_per_token"] = p.prefill_flops_eqfp8_per_token;
  j["prefill_flops_raw_per_token"] = p.prefill_flops_raw_per_token;
  j["kv_bytes"] = p.kv_bytes;
  ojson b;
  const auto raw = dec.raw_by_component();
  const auto eq = dec.eqfp8_by_component(w);
  for (CostComponent c : ref::kAllCostComponents) {
    b["raw"][ref::cost_component_name(c)] = raw[static_cast<std::size_t>(c)];
    b["eqfp8"][ref::cost_component_name(c)] = eq[static_cast<std::size_t>(c)];
  }
  const auto by_class = dec.raw_by_class();
  for (ref::PrecisionClass c : ref::kAllPrecisionClasses)
    b["raw_by_class"][ref::precision_class_name(c)] = by_class[static_cast<std::size_t>(c)];
  const auto by_kind = dec.eqfp8_by_layer_kind(w);
  for (std::size_t k = 0; k < ref::kNumCostLayerKinds; ++k)
    if (by_kind[k] != 0)
      b["eqfp8_by_layer_kind"][ref::cost_layer_kind_name(static_cast<ref::CostLayerKind>(k))] =
          by_kind[k];
  j["breakdown"] = b;
  const auto by_cache = ref::kv_cache_counter(cfg, L, kv).kv_bytes_by_cache();
  ojson kvb = ojson::object();
  for (std::size_t k = 0; k < ref::kNumKvCacheKinds; ++k)
    if (by_cache[k] != 0)
      kvb[ref::kv_cache_kind_name(static_cast<ref::KvCacheKind>(k))] = by_cache[k];
  j["kv_breakdown"] = kvb;
  return j;
}

// Context-independent facts about a model.
ojson model_static(const ModelConfig& cfg, const KvOptions& kv) {
  ojson j;
  j["preset"] = cfg.name;
  j["n_layers"] = cfg.n_layers;
  ojson kinds = ojson::object();
  if (cfg.arch == Arch::kDeepseekV32) {
    kinds["v32"] = cfg.n_layers;
  } else {
    for (std::int64_t i = 0; i < cfg.n_layers; ++i) {
      const char* k = layer_kind_name(layer_config(cfg, i).kind);
      kinds[k] = kinds.value(k, 0) + 1;
    }
  }
  j["layer_kinds"] = kinds;
  // Which precision classes each component is charged at (from the analytic breakdown).
  const CostCounter one = ref::decode_flops(cfg, 1 << 20);
  ojson classes = ojson::object();
  for (CostComponent c : ref::kAllCostComponents) {
    const auto by = one.raw_by_class(c);
    ojson list = ojson::array();
    for (ref::PrecisionClass p : ref::kAllPrecisionClasses)
      if (by[static_cast<std::size_t>(p)] != 0) list.push_back(ref::precision_class_name(p));
    if (!list.empty()) classes[ref::cost_component_name(c)] = list;
  }
  j["component_classes"] = classes;
  std::int64_t state = 0;
  if (cfg.arch == Arch::kDeepseekV4)
    for (std::int64_t i = 0; i < cfg.n_layers; ++i)
      state += ref::compressor_state_bytes(cfg, layer_config(cfg, i));
  j["compressor_state_bytes"] = state;
  j["active_params"] = ref::active_params(cfg);
  const ref::KvEntryBytes e = ref::kv_entry_bytes(cfg, kv.layout);
  j["kv_entry_bytes"] = {{"main", e.main}, {"indexer", e.indexer}};
  return j;
}

// [{a: 1, b: {c: 2}}, {a: 3, b: {c: 4}}] -> {a: [1, 3], b: {c: [2, 4]}}.
ojson transpose(const std::vector<ojson>& points) {
  const ojson& first = points.front();
  if (!first.is_object()) {
    ojson arr = ojson::array();
    for (const ojson& p : points) arr.push_back(p);
    return arr;
  }
  ojson out = ojson::object();
  for (auto it = first.begin(); it != first.end(); ++it) {
    std::vector<ojson> col;
    col.reserve(points.size());
    for (const ojson& p : points) col.push_back(p.contains(it.key()) ? p.at(it.key()) : ojson(0));
    out[it.key()] = transpose(col);
  }
  return out;
}

void add_ratios(ojson& v4, const ojson& v32) {
  const auto ratio = [](const ojson& a, const ojson& b) {
    return a.get<double>() / b.get<double>();
  };
  v4["flops_ratio_vs_v3.2"] = ratio(v4["flops_eqfp8_per_token"], v32["flops_eqfp8_per_token"]);
  v4["flops_raw_ratio_vs_v3.2"] = ratio(v4["flops_raw_per_token"], v32["flops_raw_per_token"]);
  v4["kv_ratio_vs_v3.2"] = ratio(v4["kv_bytes"], v32["kv_bytes"]);
  v4["prefill_flops_ratio_vs_v3.2"] =
      ratio(v4["prefill_flops_eqfp8_per_token"], v32["prefill_flops_eqfp8_per_token"]);
}

ojson build_json(const std::vector<std::int64_t>& contexts, const PrecisionWeights& w,
                 const KvOptions& kv) {
  ojson out;
  out["tool"] = "v4ref cost";
  out["contexts"] = contexts;
  out["conventions"] = conventions_json(w, kv);
  out["targets"] = {{"context", 1 << 20},
                    {"source", "DeepSeek-V4 technical report, Introduction and §2.3.4"},
                    {"v4-flash", {{"flops_ratio", 0.10}, {"kv_ratio", 0.07}}},
                    {"v4-pro", {{"flops_ratio", 0.27}, {"kv_ratio", 0.10}}},
                    {"tolerance_pp", {{"flops", 1.0}, {"kv", 0.75}}}};
  std::vector<std::vector<ojson>> per_model(3);
  for (std::size_t m = 0; m < 3; ++m) {
    const ModelConfig cfg = preset_config(kModels[m]);
    for (std::int64_t L : contexts) per_model[m].push_back(model_point(cfg, L, w, kv));
  }
  for (std::size_t m = 1; m < 3; ++m)
    for (std::size_t i = 0; i < contexts.size(); ++i) add_ratios(per_model[m][i], per_model[0][i]);
  for (std::size_t m = 0; m < 3; ++m) {
    ojson j = contexts.size() == 1 ? per_model[m].front() : transpose(per_model[m]);
    const ojson s = model_static(preset_config(kModels[m]), kv);
    for (auto it = s.begin(); it != s.end(); ++it) j[it.key()] = it.value();
    out["models"][kModels[m]] = j;
  }
  return out;
}

void print_table(const std::vector<std::int64_t>& contexts, const PrecisionWeights& w,
                 const KvOptions& kv, bool breakdown) {
  const ModelConfig cfgs[] = {preset_config("v3.2"), preset_config("v4-flash"),
                              preset_config("v4-pro")};
  std::printf("Decode FLOPs per generated token (eqFP8) and KV cache per sequence "
              "(spec/cost-model.md)\n\n");
  std::printf("%8s | %10s | %10s %8s | %10s %8s | %11s | %11s %8s | %11s %8s\n", "L",
              "V3.2 GFLOP", "Flash", "(ratio)", "Pro", "(ratio)", "V3.2 KV", "Flash KV",
              "(ratio)", "Pro KV", "(ratio)");
  for (std::int64_t L : contexts) {
    double f[3];
    std::int64_t k[3];
    for (int m = 0; m < 3; ++m) {
      f[m] = ref::decode_flops(cfgs[m], L).total_eqfp8(w);
      k[m] = ref::kv_bytes(cfgs[m], L, kv);
    }
    const auto pct = [](double a, double b) { return 100.0 * a / b; };
    std::printf("%8s | %10.1f | %10.1f %7.1f%% | %10.1f %7.1f%% | %11s | %11s %7.2f%% | %11s %7.2f%%\n",
                context_label(L).c_str(), f[0] / 1e9, f[1] / 1e9, pct(f[1], f[0]), f[2] / 1e9,
                pct(f[2], f[0]), kv_label(k[0]).c_str(), kv_label(k[1]).c_str(),
                pct(static_cast<double>(k[1]), static_cast<double>(k[0])),
                kv_label(k[2]).c_str(), pct(static_cast<double>(k[2]), static_cast<double>(k[0])));
  }
  if (breakdown) {
    for (std::int64_t L : contexts) {
      std::printf("\nComponents at L = %s (GFLOPs per token: raw / eqFP8)\n",
                  context_label(L).c_str());
      std::printf("%-14s | %19s | %19s | %19s\n", "component", "V3.2", "V4-Flash", "V4-Pro");
      CostCounter cc[3];
      for (int m = 0; m < 3; ++m) cc[m] = ref::decode_flops(cfgs[m], L);
      for (CostComponent c : ref::kAllCostComponents) {
        if (c == CostComponent::kVector) continue;
        std::printf("%-14s", ref::cost_component_name(c));
        for (int m = 0; m < 3; ++m) {
          const auto i = static_cast<std::size_t>(c);
          std::printf(" | %9.3f %9.3f", static_cast<double>(cc[m].raw_by_component()[i]) / 1e9,
                      cc[m].eqfp8_by_component(w)[i] / 1e9);
        }
        std::printf("\n");
      }
      std::printf("%-14s", "total");
      for (int m = 0; m < 3; ++m)
        std::printf(" | %9.3f %9.3f", static_cast<double>(cc[m].total_raw()) / 1e9,
                    cc[m].total_eqfp8(w) / 1e9);
      std::printf("\n");
    }
  }
  std::printf("\nConventions: eqFP8 weights fp8 %g, fp4w %g, fp4 %g, bf16 %g, fp32 %g; KV layout %s%s%s;\n"
              "  L = tokens including the one produced (decode at position L-1, cache of L tokens);\n"
              "  1 multiply-add = 2 FLOPs; vector work and MTP excluded; LM head included.\n"
              "Targets at 1M (DeepSeek-V4 report): Flash 10%% FLOPs / 7%% KV, Pro 27%% / 10%%.\n",
              w.fp8, w.fp4w, w.fp4, w.bf16, w.fp32, ref::kv_layout_name(kv.layout),
              kv.paged ? ", paged" : "", kv.compressor_state ? ", with compressor state" : "");
}

}  // namespace

void register_cost(CLI::App& app) {
  auto args = std::make_shared<CostArgs>();
  CLI::App* cmd = app.add_subcommand(
      "cost", "Decode FLOPs per token and KV-cache bytes: V3.2 vs V4-Flash / V4-Pro "
              "(spec/cost-model.md)");
  cmd->add_option("--context", args->contexts,
                  "context length(s) L (default: 1K, 2K, ..., 1M)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 32));
  cmd->add_flag("--json", args->json, "print JSON instead of a table");
  cmd->add_flag("--sweep", args->sweep, "L = 1K .. 1M in powers of two (for plots)");
  cmd->add_option("--per-octave", args->per_octave, "with --sweep: points per doubling")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--weights", args->weights,
                  "eqFP8 weight overrides, name=value (fp8, fp4w, fp4, bf16, fp32)")
      ->delimiter(',');
  cmd->add_option("--kv-layout", args->kv_layout,
                  "KV entry layout: serving, payload, indexer-fp8, bf16, no-indexer");
  cmd->add_flag("--paged", args->paged, "paged KV: 256-token pages rounded up to 576 B");
  cmd->add_flag("--with-compressor-state", args->compressor_state,
                "include the V4 compressor state in the KV bytes");
  cmd->add_flag("--breakdown", args->breakdown, "table mode: print components per context");
  cmd->callback([args] {
    const PrecisionWeights w = parse_weights(args->weights);
    KvOptions kv;
    kv.layout = ref::parse_kv_layout(args->kv_layout);
    kv.paged = args->paged;
    kv.compressor_state = args->compressor_state;
    std::vector<std::int64_t> contexts = args->contexts;
    if (args->sweep) {
      const auto s = sweep_contexts(args->per_octave);
      contexts.insert(contexts.end(), s.begin(), s.end());
      std::sort(contexts.begin(), contexts.end());
      contexts.erase(std::unique(contexts.begin(), contexts.end()), contexts.end());
    }
    if (contexts.empty()) contexts = sweep_contexts(1);
    if (args->json)
      std::cout << build_json(contexts, w, kv).dump(2) << "\n";
    else
      print_table(contexts, w, kv, args->breakdown);
  });
}

}  // namespace v4ref::cli
