// Trace point names and the trace container (trace.hpp).
#include "v4ref/ref/trace.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include "v4ref/ref/core/error.hpp"

namespace v4ref::ref {

namespace trace_names {

std::string block_prefix(const ModelConfig& cfg, std::int64_t layer_index) {
  return layer_config(cfg, layer_index).prefix;
}

std::string layer(const ModelConfig& cfg, std::int64_t layer_index, std::string_view local) {
  return block_prefix(cfg, layer_index) + std::string(local);
}

const std::vector<std::string>& block_keys() {
  static const std::vector<std::string> keys = {
      "block.in",      "hc_attn.pre",      "hc_attn.post",   "hc_attn.comb",    "hc_attn.u",
      "attn_norm",     "attn.c",           "attn.q",         "attn.kv",         "attn.compressed",
      "attn.index_keys", "attn.index_scores", "attn.topk_idx", "attn.o",        "attn.out",
      "hc_attn.out",   "hc_ffn.pre",       "hc_ffn.post",    "hc_ffn.comb",     "hc_ffn.u",
      "ffn_norm",      "ffn.scores",       "ffn.routed_idx", "ffn.route_weights", "ffn.out",
      "block.out"};
  return keys;
}

bool block_records(LayerKind kind, std::string_view local) {
  if (local == "attn.compressed") return kind != LayerKind::kSwa;
  if (local == "attn.index_keys" || local == "attn.index_scores" || local == "attn.topk_idx")
    return kind == LayerKind::kCsa;
  return true;
}

std::vector<std::string> forward_order(const ModelConfig& cfg, bool with_mtp) {
  std::vector<std::string> out{std::string(kEmbed)};
  auto add_block = [&](std::int64_t i) {
    const LayerConfig lc = layer_config(cfg, i);
    for (const std::string& k : block_keys())
      if (block_records(lc.kind, k)) out.push_back(lc.prefix + k);
  };
  for (std::int64_t i = 0; i < cfg.n_layers; ++i) add_block(i);
  out.emplace_back(kHcHeadOut);
  out.emplace_back(kNormOut);
  out.emplace_back(kLogits);
  if (with_mtp)
    for (std::int64_t k = 0; k < cfg.n_mtp_layers; ++k) {
      const std::string p = block_prefix(cfg, cfg.n_layers + k);
      for (const char* s : {"embed", "enorm", "hnorm"}) out.push_back(p + s);
      add_block(cfg.n_layers + k);
      for (std::string_view s : {kHcHeadOut, kNormOut, kLogits}) out.push_back(p + std::string(s));
    }
  return out;
}

}  // namespace trace_names

bool glob_match(std::string_view pattern, std::string_view name) {
  // Iterative wildcard match with backtracking to the last '*'.
  std::size_t p = 0, n = 0, star = std::string_view::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

Trace::Trace(std::vector<std::string> patterns) : patterns_(std::move(patterns)) {}

bool Trace::wants(std::string_view name) const {
  if (patterns_.empty()) return true;
  return std::any_of(patterns_.begin(), patterns_.end(),
                     [&](const std::string& p) { return glob_match(p, name); });
}

void Trace::put(const std::string& name, Mat value) {
  if (!wants(name)) return;
  pending_.erase(name);
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    order_.push_back(name);
    tensors_.emplace(name, std::move(value));
  } else {
    it->second = std::move(value);
  }
}

void Trace::append_rows(const std::string& name, const Mat& rows, double pad) {
  if (!wants(name)) return;
  if (tensors_.find(name) == tensors_.end()) {
    order_.push_back(name);
    tensors_.emplace(name, Mat(0, rows.cols()));
  }
  Pending& p = pending_[name];
  p.rows.push_back(rows);
  p.pad = pad;
}

void Trace::join_pending(const std::string& name) const {
  const auto it = pending_.find(name);
  if (it == pending_.end()) return;
  Mat& cur = const_cast<Mat&>(tensors_.find(name)->second);
  Eigen::Index rows = cur.rows(), cols = cur.cols();
  for (const Mat& r : it->second.rows) {
    rows += r.rows();
    cols = std::max(cols, r.cols());
  }
  Mat next = Mat::Constant(rows, cols, it->second.pad);
  next.topLeftCorner(cur.rows(), cur.cols()) = cur;
  Eigen::Index r0 = cur.rows();
  for (const Mat& r : it->second.rows) {
    next.block(r0, 0, r.rows(), r.cols()) = r;
    r0 += r.rows();
  }
  cur = std::move(next);
  pending_.erase(it);
}

bool Trace::has(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

const Mat& Trace::at(std::string_view name) const {
  const auto it = tensors_.find(name);
  if (it != tensors_.end()) join_pending(it->first);
  if (it == tensors_.end()) {
    std::string near;
    int shown = 0;
    for (const std::string& k : order_)
      if (shown < 8 && k.find(std::string(name.substr(0, name.find('.') + 1))) == 0) {
        near += (near.empty() ? "" : ", ") + k;
        ++shown;
      }
    throw MissingTensor("trace " + source_ + ": no tensor \"" + std::string(name) + "\" (" +
                        std::to_string(order_.size()) + " present" +
                        (near.empty() ? "" : "; e.g. " + near) + ")");
  }
  return it->second;
}

void Trace::write_hdf5(const std::filesystem::path& path) const {
  H5Store h5(path, H5Store::Mode::kCreate);
  h5.set_attr("/", "format", std::string("v4ref-trace"));
  h5.set_attr("/", "format_version", std::int64_t{1});
  for (const auto& [k, v] : attrs_) h5.set_attr("/", k, v);
  if (!tokens_.empty())
    h5.write_i64(std::string(trace_names::kTokens), {static_cast<std::int64_t>(tokens_.size())}, tokens_);
  std::int64_t order = 0;
  for (const std::string& name : order_) {
    const Mat& m = at(name);
    h5.write_f64(name, {m.rows(), m.cols()},
                 std::span<const double>(m.data(), static_cast<std::size_t>(m.size())));
    h5.set_attr(name, "order", order++);
  }
}

Trace Trace::read_hdf5(const std::filesystem::path& path) {
  const H5Store h5(path, H5Store::Mode::kRead);
  const auto root = h5.attrs("/");
  const auto f = root.find("format");
  if (f == root.end() || !std::holds_alternative<std::string>(f->second) ||
      std::get<std::string>(f->second) != "v4ref-trace")
    throw FormatError(path.string() + ": not a v4ref trace (root attribute format = \"v4ref-trace\" missing)");
  Trace t;
  t.source_ = path.string();
  for (const auto& [k, v] : root)
    if (k != "format" && k != "format_version") t.attrs_[k] = v;
  std::vector<std::pair<std::int64_t, std::string>> ordered;
  for (const std::string& name : h5.names()) {
    if (name == trace_names::kTokens) {
      const StoredTensor s = h5.read(name);
      t.tokens_.assign(s.raw.begin(), s.raw.end());
      continue;
    }
    const auto a = h5.attrs(name);
    const auto o = a.find("order");
    if (o == a.end()) continue;  // helper datasets (not trace points)
    if (!std::holds_alternative<std::int64_t>(o->second))
      throw FormatError(path.string() + ": dataset \"" + name + "\" has a non-integer order attribute");
    ordered.emplace_back(std::get<std::int64_t>(o->second), name);
  }
  std::sort(ordered.begin(), ordered.end());
  for (const auto& [ord, name] : ordered) {
    const StoredTensor s = h5.read(name);
    if (s.dtype != LogicalDtype::kF64 || s.shape.empty() || s.shape.size() > 2)
      throw FormatError(path.string() + ": trace point \"" + name + "\" must be a 1-D or 2-D float64 dataset, got " +
                        std::string(logical_dtype_name(s.dtype)) + " " + shape_string(s.shape));
    const std::int64_t rows = s.shape.size() == 2 ? s.shape[0] : 1;
    const std::int64_t cols = s.shape.size() == 2 ? s.shape[1] : s.shape[0];
    Mat m = Eigen::Map<const Mat>(s.values.data(), rows, cols);
    t.order_.push_back(name);
    t.tensors_.emplace(name, std::move(m));
  }
  return t;
}

}  // namespace v4ref::ref
