// Tensor inventory of the official V4 checkpoint layout (v4-forward.md §1.4, §15.4, §15.6).
#include "v4ref/ref/checkpoint_layout.hpp"

#include <set>

namespace v4ref {
namespace {

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

class Inventory {
 public:
  explicit Inventory(std::vector<TensorSpec>& out) : out_(out) {}

  void plain(const std::string& name, DType dtype, Shape shape) {
    out_.push_back({name, dtype, shape, shape, TensorRole::kPlain});
  }
  // fp8 e4m3 weight [out, in] + ue8m0 128x128 block scales (§15.6).
  void fp8(const std::string& prefix, std::int64_t out, std::int64_t in,
           DType scale_dtype = DType::kF8E8M0) {
    out_.push_back({prefix + ".weight", DType::kF8E4M3, {out, in}, {out, in}, TensorRole::kFp8Weight});
    const Shape s = {ceil_div(out, 128), ceil_div(in, 128)};
    out_.push_back({prefix + ".scale", scale_dtype, s, s, TensorRole::kFp8Scale});
  }
  // fp4 e2m1 expert weight, logical [out, in], packed I8 [out, in/2] + ue8m0 [out, in/32].
  void fp4(const std::string& prefix, std::int64_t out, std::int64_t in) {
    out_.push_back({prefix + ".weight", DType::kI8, {out, in / 2}, {out, in}, TensorRole::kFp4Weight});
    const Shape s = {out, in / 32};
    out_.push_back({prefix + ".scale", DType::kF8E8M0, s, s, TensorRole::kFp4Scale});
  }

 private:
  std::vector<TensorSpec>& out_;
};

void add_hc(Inventory& inv, const ModelConfig& cfg, const std::string& p, const std::string& which) {
  inv.plain(p + "hc_" + which + "_fn", DType::kF32, {cfg.hc_mix_dim(), cfg.hc_dim()});
  inv.plain(p + "hc_" + which + "_base", DType::kF32, {cfg.hc_mix_dim()});
  inv.plain(p + "hc_" + which + "_scale", DType::kF32, {3});
}

// Compressor of width w with ratio m (§6): wkv/wgate [c·w, d], ape [m, c·w], norm [w].
void add_compressor(Inventory& inv, const ModelConfig& cfg, const std::string& p, int m,
                    std::int64_t w) {
  const std::int64_t c = m == 4 ? 2 : 1;
  inv.plain(p + "wkv.weight", DType::kBF16, {c * w, cfg.dim});
  inv.plain(p + "wgate.weight", DType::kBF16, {c * w, cfg.dim});
  inv.plain(p + "ape", DType::kF32, {m, c * w});
  inv.plain(p + "norm.weight", DType::kBF16, {w});
}

void add_block(Inventory& inv, const ModelConfig& cfg, const LayerConfig& lc) {
  const std::string& p = lc.prefix;
  const std::int64_t d = cfg.dim;
  inv.plain(p + "attn_norm.weight", DType::kBF16, {d});
  inv.plain(p + "ffn_norm.weight", DType::kBF16, {d});
  add_hc(inv, cfg, p, "attn");
  add_hc(inv, cfg, p, "ffn");
  inv.plain(p + "attn.attn_sink", DType::kF32, {cfg.n_heads});
  inv.fp8(p + "attn.wq_a", cfg.q_lora_rank, d);
  inv.plain(p + "attn.q_norm.weight", DType::kBF16, {cfg.q_lora_rank});
  inv.fp8(p + "attn.wq_b", cfg.q_dim(), cfg.q_lora_rank);
  inv.fp8(p + "attn.wkv", cfg.head_dim, d);
  inv.plain(p + "attn.kv_norm.weight", DType::kBF16, {cfg.head_dim});
  inv.fp8(p + "attn.wo_a", cfg.o_dim(), cfg.group_in_dim());
  inv.fp8(p + "attn.wo_b", d, cfg.o_dim());
  if (lc.kind != LayerKind::kSwa) add_compressor(inv, cfg, p + "attn.compressor.", lc.ratio, cfg.head_dim);
  if (lc.kind == LayerKind::kCsa) {
    inv.fp8(p + "attn.indexer.wq_b", cfg.index_q_dim(), cfg.q_lora_rank);
    inv.plain(p + "attn.indexer.weights_proj.weight", DType::kBF16, {cfg.index_n_heads, d});
    add_compressor(inv, cfg, p + "attn.indexer.compressor.", 4, cfg.index_head_dim);
  }
  const std::int64_t E = cfg.n_routed_experts;
  inv.plain(p + "ffn.gate.weight", DType::kBF16, {E, d});
  if (lc.hash_routed)
    inv.plain(p + "ffn.gate.tid2eid", DType::kI64, {cfg.vocab_size, cfg.n_activated_experts});
  else
    inv.plain(p + "ffn.gate.bias", DType::kF32, {E});
  const std::int64_t I = cfg.moe_inter_dim;
  for (std::int64_t e = 0; e < E; ++e) {
    const std::string ep = p + "ffn.experts." + std::to_string(e) + ".";
    if (cfg.expert_dtype == ExpertDtype::kFp4) {
      inv.fp4(ep + "w1", I, d);
      inv.fp4(ep + "w2", d, I);
      inv.fp4(ep + "w3", I, d);
    } else {  // Flash-Base: fp8 experts with fp32 block scales (§1.1)
      inv.fp8(ep + "w1", I, d, DType::kF32);
      inv.fp8(ep + "w2", d, I, DType::kF32);
      inv.fp8(ep + "w3", I, d, DType::kF32);
    }
  }
  inv.fp8(p + "ffn.shared_experts.w1", I, d);
  inv.fp8(p + "ffn.shared_experts.w2", d, I);
  inv.fp8(p + "ffn.shared_experts.w3", I, d);
  if (lc.is_mtp) {
    inv.fp8(p + "e_proj", d, d);
    inv.fp8(p + "h_proj", d, d);
    inv.plain(p + "enorm.weight", DType::kBF16, {d});
    inv.plain(p + "hnorm.weight", DType::kBF16, {d});
    inv.plain(p + "norm.weight", DType::kBF16, {d});
    inv.plain(p + "hc_head_fn", DType::kF32, {cfg.hc_mult, cfg.hc_dim()});
    inv.plain(p + "hc_head_base", DType::kF32, {cfg.hc_mult});
    inv.plain(p + "hc_head_scale", DType::kF32, {1});
  }
}

}  // namespace

std::vector<TensorSpec> expected_layer_tensors(const ModelConfig& cfg, std::int64_t layer) {
  std::vector<TensorSpec> out;
  Inventory inv(out);
  add_block(inv, cfg, layer_config(cfg, layer));
  return out;
}

std::vector<TensorSpec> expected_tensors(const ModelConfig& cfg) {
  std::vector<TensorSpec> out;
  Inventory inv(out);
  inv.plain("embed.weight", DType::kBF16, {cfg.vocab_size, cfg.dim});
  inv.plain("head.weight", DType::kBF16, {cfg.vocab_size, cfg.dim});
  inv.plain("norm.weight", DType::kBF16, {cfg.dim});
  inv.plain("hc_head_fn", DType::kF32, {cfg.hc_mult, cfg.hc_dim()});
  inv.plain("hc_head_base", DType::kF32, {cfg.hc_mult});
  inv.plain("hc_head_scale", DType::kF32, {1});
  for (std::int64_t i = 0; i < cfg.n_total_layers(); ++i) add_block(inv, cfg, layer_config(cfg, i));
  return out;
}

std::int64_t expected_tensor_count(const ModelConfig& cfg) {
  const std::int64_t E = cfg.n_routed_experts;
  std::int64_t n = 6;
  for (std::int64_t i = 0; i < cfg.n_total_layers(); ++i) {
    const LayerConfig lc = layer_config(cfg, i);
    n += lc.is_mtp ? 39 + 6 * E : 29 + 6 * E;
    if (lc.kind == LayerKind::kCsa) n += 11;
    if (lc.kind == LayerKind::kHca) n += 4;
  }
  return n;
}

std::vector<LayoutProblem> check_layout(const Checkpoint& ckpt, const ModelConfig& cfg,
                                        bool check_values) {
  std::vector<LayoutProblem> problems;
  std::set<std::string> expected_names;
  for (const TensorSpec& spec : expected_tensors(cfg)) {
    expected_names.insert(spec.name);
    if (!ckpt.contains(spec.name)) {
      problems.push_back({spec.name, "missing (expected " + std::string(dtype_name(spec.dtype)) +
                                         " " + shape_string(spec.shape) + ")"});
      continue;
    }
    const TensorView t = ckpt.tensor(spec.name);
    if (t.dtype() != spec.dtype)
      problems.push_back({spec.name, "dtype " + std::string(dtype_name(t.dtype())) + ", expected " +
                                         std::string(dtype_name(spec.dtype))});
    if (t.shape() != spec.shape)
      problems.push_back({spec.name, "shape " + shape_string(t.shape()) + ", expected " +
                                         shape_string(spec.shape) + " for config " + cfg.name});
    if (check_values && spec.name.ends_with(".tid2eid") && t.dtype() == DType::kI64 &&
        t.shape() == spec.shape) {
      for (std::int64_t k = 0; k < t.numel(); ++k) {
        const auto v = t.raw<std::int64_t>(k);
        if (v < 0 || v >= cfg.n_routed_experts) {
          const std::int64_t cols = spec.shape[1];
          problems.push_back({spec.name, "expert id " + std::to_string(v) + " at [" +
                                             std::to_string(k / cols) + ", " +
                                             std::to_string(k % cols) + "] outside [0, " +
                                             std::to_string(cfg.n_routed_experts) + ")"});
          break;
        }
      }
    }
  }
  for (const std::string& name : ckpt.names())
    if (!expected_names.contains(name))
      problems.push_back({name, "unexpected tensor (not part of the layout for config " + cfg.name + ")"});
  return problems;
}

}  // namespace v4ref
