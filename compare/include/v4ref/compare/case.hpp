// Cases of the differential runner and the named tensors they carry (guide/verification.md §6,
// §7; guide/style.md "Case tables").
//
// A case is data: component x config x shape x input kind x precision mode x seed. Its name,
//   "<component>/<config>/<dims>/<kind>/<mode>"   e.g. "rms_norm/tiny-flash/T17_n128/random/exact"
// is printed, filtered on and hashed into every tensor seed:
//   seed(tensor) = derive_seed(name, tensor, shape_string, V4REF_SEED)   (core/rng.hpp)
// so adding or removing other cases never changes this case's data, and V4REF_SEED=<value>
// (environment, decimal or 0x-hex, default 0) replays a sweep member.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "v4ref/ref/core/precision_policy.hpp"
#include "v4ref/ref/linear.hpp"
#include "v4ref/ref/safetensors.hpp"

namespace v4ref::compare {

using ref::Mat;

// Named tensors in insertion order. Values are doubles holding exactly the stored values; `dtype`
// says in which format they are exactly representable (what a kernel receives or returns):
//   "f64", "f32", "bf16", "e4m3" (codes as values), "fp8_block128" (e4m3 x ue8m0 per 128x128),
//   "fp4_block32" (e2m1 x ue8m0 per 1x32), "ue8m0" (scale bytes as values), "index" (integers,
//   −1 padding), "i64".
class TensorSet {
 public:
  void put(const std::string& name, Mat value, std::string dtype = "f64");
  bool has(std::string_view name) const;
  const Mat& at(std::string_view name) const;  // Error naming the key and the keys present
  const std::string& dtype(std::string_view name) const;
  const std::vector<std::string>& names() const { return order_; }
  std::size_t size() const { return order_.size(); }
  bool empty() const { return order_.empty(); }

 private:
  std::vector<std::string> order_;
  std::map<std::string, std::pair<Mat, std::string>, std::less<>> items_;
};

// Every input a case hands to an implementation must hold exactly what its dtype can store: a
// value tagged "f32" or "bf16" that is not on that grid would reach a kernel already rounded
// while the reference sees the unrounded double. NumericError naming `who`, the tensor, the
// element [r, c], its value and dtype. Non-finite values pass (adversarial kinds use them).
void require_inputs_on_their_grids(const TensorSet& inputs, const std::string& who);

// Input recipes (guide §7). Each component lists the kinds it supports.
enum class InputKind {
  kRandom,          // physically scaled random data
  kOutliers,        // 0.1% of channels x100 / one huge value per quant block / large logits
  kTopkTies,        // duplicated keys or gate rows (identical scores), all-zero ReLU rows
  kAllMasked,       // rows with nothing visible (no keys, no visible index entry)
  kFormatExtremes,  // fp8/fp4 range ends: +-448, subnormals, e2m1 tie points, extreme scales
};

std::string_view input_kind_name(InputKind k);   // "random", "outliers", "topk_ties", ...
InputKind parse_input_kind(std::string_view s);  // ConfigError listing the accepted names

// The global seed V4REF_SEED from the environment (0 when unset); ConfigError if malformed.
std::uint64_t global_seed_from_env();
// "0x5e1f03a2c4d9e117"
std::string seed_hex(std::uint64_t seed);

struct Case {
  std::string component;                                   // "rms_norm"
  std::string config = "tiny-flash";                       // preset_config() name
  std::vector<std::pair<std::string, std::int64_t>> dims;  // ordered shape parameters
  InputKind kind = InputKind::kRandom;
  PrecisionMode mode = PrecisionMode::kExact;  // the policy Rq is built with
  std::uint64_t global_seed = 0;               // V4REF_SEED
  bool slow = false;                           // real shapes: label slow

  std::string dims_string() const;  // "T17_n128"
  std::string name() const;         // see the file comment
  // GoogleTest-safe form of name(): every character outside [A-Za-z0-9_] becomes '_'.
  std::string test_name() const;
  // The printed seed of the case: derive_seed(name(), "", "", global_seed).
  std::uint64_t seed() const;
  // The seed of one tensor of this case (guide §6).
  std::uint64_t tensor_seed(std::string_view tensor, const Shape& shape) const;
  // A shape parameter; ConfigError naming the case if absent.
  std::int64_t dim(std::string_view key) const;
  std::int64_t dim_or(std::string_view key, std::int64_t fallback) const;
  PrecisionPolicy policy() const { return PrecisionPolicy::of(mode); }

  nlohmann::json to_json() const;
  static Case from_json(const nlohmann::json& j);  // ConfigError on missing/ill-typed fields
};

}  // namespace v4ref::compare
