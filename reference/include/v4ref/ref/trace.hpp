// Named trace points of the forward pass: the one naming scheme of every intermediate tensor,
// and the container that records them (optionally filtered) and reads/writes them as HDF5.
//
// Names (v4-forward.md §3, §4, §5, §9, §10):
//   "embed"                      [T, d]        embedding rows of the input ids
//   "layers.{i}.{local}"         one block (local keys below, in forward order)
//   "hc_head.out"                [T, d]        final mHC collapse (§4.5)
//   "norm.out"                   [T, d]        final RMSNorm
//   "logits"                     [T, vocab]    LM head (§10.1)
//   MTP block k (§10.2):
//   "mtp.{k}.embed"              [T, d]        embedding rows of the MTP input ids
//   "mtp.{k}.enorm"              [T, d]        RMSNorm_enorm(embed)
//   "mtp.{k}.hnorm"              [T, hc·d]     RMSNorm_hnorm of every main-model stream
//   "mtp.{k}.{local}"            the MTP block (local keys below; "block.in" is X0)
//   "mtp.{k}.hc_head.out", "mtp.{k}.norm.out", "mtp.{k}.logits"
//
// Local keys of a block, in forward order (shapes per layer.hpp; CSA-only keys marked):
//   block.in  hc_attn.pre  hc_attn.post  hc_attn.comb  hc_attn.u  attn_norm  attn.c  attn.q
//   attn.kv  attn.compressed (CSA/HCA)  attn.index_keys (CSA)  attn.index_scores (CSA)
//   attn.topk_idx (CSA)  attn.o  attn.out  hc_attn.out  hc_ffn.pre  hc_ffn.post  hc_ffn.comb
//   hc_ffn.u  ffn_norm  ffn.scores  ffn.routed_idx  ffn.route_weights  ffn.out  block.out
// Index tensors (topk_idx, routed_idx) are stored as doubles (exact for any index < 2^53);
// −1 is padding. Decode traces hold one row per decoded position, in position order; for the
// cache tensors (attn.compressed, attn.index_keys) they hold the cache after the last step, and
// attn.index_scores rows are padded with −∞ to the widest row.
//
// HDF5 layout (trace files are the input of `v4ref bisect`): one float64 dataset per trace
// point at the root, named as above; dataset attribute "order" (int64, forward order); root
// attributes "format" = "v4ref-trace", "format_version" = 1, and whatever provenance the
// writer sets (config, checkpoint, precision, mode, ...); the input ids as the int64 dataset
// "tokens" (not a trace point).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "v4ref/ref/core/config.hpp"
#include "v4ref/ref/hdf5_store.hpp"
#include "v4ref/ref/linear.hpp"

namespace v4ref::ref {

namespace trace_names {

inline constexpr std::string_view kEmbed = "embed";
inline constexpr std::string_view kHcHeadOut = "hc_head.out";
inline constexpr std::string_view kNormOut = "norm.out";
inline constexpr std::string_view kLogits = "logits";
inline constexpr std::string_view kTokens = "tokens";  // input ids dataset of a trace file

// "layers.{i}." for main layers (i < n_layers), "mtp.{k}." for MTP block k = i − n_layers: the
// checkpoint's tensor prefix (LayerConfig::prefix).
std::string block_prefix(const ModelConfig& cfg, std::int64_t layer_index);
// prefix + local.
std::string layer(const ModelConfig& cfg, std::int64_t layer_index, std::string_view local);

// Local keys of a block in forward order (all kinds; a layer kind records a subset).
const std::vector<std::string>& block_keys();
// Whether a block of this kind records the local key.
bool block_records(LayerKind kind, std::string_view local);

// Every trace point of a full forward of `cfg` (main layers, head; MTP blocks if with_mtp) in
// forward order.
std::vector<std::string> forward_order(const ModelConfig& cfg, bool with_mtp);

}  // namespace trace_names

// Shell-style pattern match: '*' any run of characters (dots included), '?' one character.
bool glob_match(std::string_view pattern, std::string_view name);

// Recorded tensors, in the order they were put. A Trace built with patterns keeps only the
// names matching at least one of them (empty list: every name).
class Trace {
 public:
  explicit Trace(std::vector<std::string> patterns = {});

  bool wants(std::string_view name) const;
  // Stores (or replaces) the tensor if wanted.
  void put(const std::string& name, Mat value);
  // Appends rows to the tensor (created if absent); a narrower side is padded with `pad`.
  // Amortised: appended rows are kept aside and joined on the next read of the tensor.
  void append_rows(const std::string& name, const Mat& rows, double pad);

  bool has(std::string_view name) const;
  const Mat& at(std::string_view name) const;  // Error naming the key and where it came from
  const std::vector<std::string>& names() const { return order_; }
  std::size_t size() const { return order_.size(); }
  bool empty() const { return order_.empty(); }

  // Provenance written as root attributes.
  std::map<std::string, AttrValue>& attrs() { return attrs_; }
  const std::map<std::string, AttrValue>& attrs() const { return attrs_; }
  // Input ids (written as the "tokens" dataset).
  std::vector<std::int64_t>& tokens() { return tokens_; }
  const std::vector<std::int64_t>& tokens() const { return tokens_; }

  void write_hdf5(const std::filesystem::path& path) const;
  // FormatError naming the file if it is not a v4ref trace (format attribute) or a dataset is
  // not 1-D/2-D float64.
  static Trace read_hdf5(const std::filesystem::path& path);
  // Where the trace came from (file path or "in-memory"), for messages.
  const std::string& source() const { return source_; }

 private:
  std::vector<std::string> patterns_;
  std::vector<std::string> order_;
  void join_pending(const std::string& name) const;

  std::map<std::string, Mat, std::less<>> tensors_;
  struct Pending {
    std::vector<Mat> rows;
    double pad = 0;
  };
  // Rows appended since the last read (not thread-safe: one thread per Trace).
  mutable std::map<std::string, Pending, std::less<>> pending_;
  std::map<std::string, AttrValue> attrs_;
  std::vector<std::int64_t> tokens_;
  std::string source_ = "in-memory";
};

}  // namespace v4ref::ref
