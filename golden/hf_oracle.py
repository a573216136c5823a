#!/usr/bin/env python3
"""Oracle goldens: the Hugging Face transformers DeepSeek-V4 port, run truly in float64 on the CPU.

Run through golden/generate (which builds the pinned virtual environment golden/.venv and the
seed-1 checkpoints); see docs/golden.md for the design. For every case of CASES this script

  1. loads the tiny checkpoint through transformers' own loading path: AutoModelForCausalLM
     with FineGrainedFP8Config(dequantize=True) (HF's CPU dequantiser for the fp8 e4m3 weights
     with ue8m0 128x128 scales and the I8-packed fp4 experts with 1x32 scales) and
     output_loading_info=True; any missing, unexpected (other than mtp.*), mismatched key or
     loading error aborts;
  2. casts the parameters HF leaves in the checkpoint dtype (bf16 norms, gate, embed, head,
     compressor projections) to float64 (exact) and checks EVERY parameter and buffer bit for bit
     against an independent decode of the safetensors files written here (own header parser,
     own e4m3 / e2m1 / ue8m0 / bf16 decoders, own name mapping from v4-forward.md §16.4);
  3. runs the unpatched model once under a dispatch-level dtype audit, to record HF's float32
     islands (v4-forward.md §16.2) and their effect on the logits;
  4. raises the islands to float64 by re-compiling the affected HF functions from their installed
     source with literal substitutions (".float()" -> ".double()", "torch.float32" ->
     "torch.float64", ...; each substitution must match an exact expected count, so a changed
     transformers version fails loudly); installed files are never edited;
  5. recomputes every rotary table in float64 and checks the YaRN compress table (ω_16 =
     2.265625e-3, not the plain-θ 2.5e-3) and the main table against v4-forward.md §2.3;
  6. runs the prefill (position 0, stateless: use_cache=False) under the dtype audit, which must
     see no floating tensor other than float64 in any ATen op, with forward hooks that capture
     the trace points and assert float64;
  7. writes the trace points in the v4ref trace format (reference/include/v4ref/ref/trace.hpp)
     plus provenance attributes to golden/data/hf/<case>.h5.

Semantic differences between HF and the official forward (v4-forward.md §16.1) are handled as
documented in docs/golden.md; the only change to HF's behaviour besides the precision patches is
the index top-k tie rule (a documented switch: equal scores -> lower index first, v4ref's rule;
HF's torch.topk leaves ties unspecified).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import inspect
import json
import math
import os
import platform
import struct
import subprocess
import sys
import textwrap
import types
from collections import Counter
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# Cases. Token ids: numpy PCG64(token_seed).integers(0, vocab_size, length) (printed and stored).
# ---------------------------------------------------------------------------------------------
#   tiny-flash: SWA, SWA, CSA, HCA, CSA; window 128, K_I = 32.  T = 192: one complete HCA block
#               (plus a partial one), 48 CSA entries > K_I (top-k really selects), window crossed.
#   tiny-pro:   HCA, HCA, CSA, HCA, CSA (Pro-like: HCA first layers); K_I = 64.  T = 288: two
#               complete HCA blocks, 72 CSA entries > K_I.
#   tiny-long:  CSA, HCA, CSA; window 32, K_I = 16.  T = 768: six HCA blocks, 192 CSA entries,
#               the window crossed 24 times over.
CASES = [
    dict(name="tiny-flash-s0", preset="tiny-flash", weight_seed=0, length=192, token_seed=4_000_000_000),
    dict(name="tiny-flash-s1", preset="tiny-flash", weight_seed=1, length=192, token_seed=4_000_000_001),
    dict(name="tiny-pro-s0", preset="tiny-pro", weight_seed=0, length=288, token_seed=4_000_000_010),
    dict(name="tiny-pro-s1", preset="tiny-pro", weight_seed=1, length=288, token_seed=4_000_000_011),
    dict(name="tiny-long-s0", preset="tiny-long", weight_seed=0, length=768, token_seed=4_000_000_020),
    dict(name="tiny-long-s1", preset="tiny-long", weight_seed=1, length=768, token_seed=4_000_000_021),
]

# Row subsets (documented in docs/golden.md). Every trace dataset carries the string attribute
# "golden.rows": "all" (every row), or the name of an int64 helper dataset listing the rows it
# holds ("golden.positions" for [T, ·] points, "golden.entries.<m>" for compressed entries).
# The C++ test selects the same rows of v4ref's trace.
ALL_ROW_POINTS = ("hc_attn.post", "hc_ffn.post", "attn.topk_idx", "ffn.scores", "ffn.routed_idx",
                  "ffn.route_weights")  # narrow: every position is kept
ENTRY_POINTS = ("attn.compressed", "attn.index_keys")
MAX_ALL_ENTRIES = 64


def golden_positions(length: int, window: int) -> list[int]:
    """The first positions and both sides of the first CSA boundary (entry 0 becomes visible at
    t = 3), both sides of the window edge (token 0 leaves the window at t = window), both sides
    of every HCA boundary (entry k−1 becomes visible at t = 128k − 1), quarters of the sequence
    and its last position."""
    p = {0, 1, 2, 3, 4, 7}
    p |= {window - 1, window}
    p |= {128 * k + d for k in range(1, length // 128 + 1) for d in (-2, -1)}
    p |= {length * q // 4 for q in (1, 2, 3)}
    p |= {length - 1}
    return sorted(x for x in p if 0 <= x < length)


def golden_entries(n: int) -> list[int]:
    """Compressed entries kept when a layer has more than MAX_ALL_ENTRIES: the first and last 8
    and every 8th in between."""
    return sorted({j for j in range(n) if j < 8 or j >= n - 8 or j % 8 == 7})


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


CHECKPOINT_HASH_RULE = (
    "sha256 of the text made of one line '<sha256 hex>  <file name>\\n' per file of the checkpoint "
    "directory (config.json, model.safetensors.index.json and every *.safetensors shard), "
    "sorted by file name in byte order: `cd DIR && sha256sum config.json "
    "model.safetensors.index.json *.safetensors | LC_ALL=C sort -k2 | sha256sum`"
)


def checkpoint_manifest(d: Path) -> str:
    names = sorted([p.name for p in d.iterdir() if p.name.endswith(".safetensors")]
                   + ["config.json", "model.safetensors.index.json"])
    return "".join(f"{sha256_file(d / n)}  {n}\n" for n in names)


def log(msg: str) -> None:
    print(f"[hf_oracle] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Independent checkpoint decode (own safetensors parser and format decoders, v4-forward.md §15)
# ---------------------------------------------------------------------------------------------

def _e4m3_table() -> np.ndarray:
    t = np.zeros(256, dtype=np.float64)
    for b in range(256):
        s, e, m = b >> 7, (b >> 3) & 0xF, b & 7
        if e == 15 and m == 7:
            t[b] = np.nan
        elif e == 0:
            t[b] = (m / 8.0) * 2.0 ** -6
        else:
            t[b] = (1 + m / 8.0) * 2.0 ** (e - 7)
        if s:
            t[b] = -t[b]
    return t


E4M3 = _e4m3_table()
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float64)


class RawCheckpoint:
    def __init__(self, d: Path):
        self.dir = d
        index = json.loads((d / "model.safetensors.index.json").read_text())
        self.weight_map: dict[str, str] = index["weight_map"]
        self._headers: dict[str, tuple[dict, int]] = {}

    def _header(self, shard: str):
        if shard not in self._headers:
            with open(self.dir / shard, "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                self._headers[shard] = (json.loads(f.read(n)), 8 + n)
        return self._headers[shard]

    def raw(self, name: str) -> tuple[str, list[int], bytes]:
        shard = self.weight_map[name]
        hdr, base = self._header(shard)
        e = hdr[name]
        b0, b1 = e["data_offsets"]
        with open(self.dir / shard, "rb") as f:
            f.seek(base + b0)
            data = f.read(b1 - b0)
        return e["dtype"], e["shape"], data

    def decode(self, name: str) -> np.ndarray:
        dt, shape, data = self.raw(name)
        if dt == "BF16":
            u = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
            return u.view(np.float32).astype(np.float64).reshape(shape)
        if dt == "F32":
            return np.frombuffer(data, dtype="<f4").astype(np.float64).reshape(shape)
        if dt == "I64":
            return np.frombuffer(data, dtype="<i8").reshape(shape)
        if dt == "F8_E4M3":
            return E4M3[np.frombuffer(data, dtype=np.uint8)].reshape(shape)
        if dt == "F8_E8M0":
            u = np.frombuffer(data, dtype=np.uint8).astype(np.float64)
            return np.exp2(u - 127.0).reshape(shape)
        if dt == "I8":  # packed fp4: low nibble = even column
            u = np.frombuffer(data, dtype=np.uint8)
            out = np.stack([E2M1[u & 0xF], E2M1[u >> 4]], axis=-1)
            return out.reshape(shape[0], shape[1] * 2)
        raise ValueError(f"{name}: unexpected dtype {dt}")

    def weight(self, name: str) -> np.ndarray:
        """Dequantised weight `name` (…".weight" or a plain parameter), exact in float64."""
        w = self.decode(name)
        scale = name[: -len(".weight")] + ".scale" if name.endswith(".weight") else None
        if scale is None or scale not in self.weight_map:
            return w
        s = self.decode(scale)
        br, bc = -(-w.shape[0] // s.shape[0]), -(-w.shape[1] // s.shape[1])
        if self.raw(name)[0] == "I8":
            assert (br, bc) == (1, 32), name
        full = np.repeat(np.repeat(s, br, axis=0), bc, axis=1)[: w.shape[0], : w.shape[1]]
        return w * full


def official_to_hf(name: str) -> tuple[str, object] | None:
    """Official tensor name -> (HF parameter name, selector) from v4-forward.md §16.4, written
    independently of transformers' conversion_mapping.py. selector: None (whole tensor) or
    ("gate_up", e, half) / ("down", e) for the stacked routed experts. None for .scale / mtp."""
    if name.endswith(".scale") or name.startswith("mtp."):
        return None
    glob = {"embed.weight": "model.embed_tokens.weight", "head.weight": "lm_head.weight",
            "norm.weight": "model.norm.weight", "hc_head_fn": "model.hc_head.hc_fn",
            "hc_head_base": "model.hc_head.hc_base", "hc_head_scale": "model.hc_head.hc_scale"}
    if name in glob:
        return glob[name], None
    parts = name.split(".")
    assert parts[0] == "layers", name
    i, rest = parts[1], ".".join(parts[2:])
    p = f"model.layers.{i}."
    simple = {
        "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
        "hc_attn_fn": "attn_hc.fn", "hc_attn_base": "attn_hc.base", "hc_attn_scale": "attn_hc.scale",
        "hc_ffn_fn": "ffn_hc.fn", "hc_ffn_base": "ffn_hc.base", "hc_ffn_scale": "ffn_hc.scale",
        "attn.attn_sink": "self_attn.sinks", "attn.wq_a.weight": "self_attn.q_a_proj.weight",
        "attn.q_norm.weight": "self_attn.q_a_norm.weight", "attn.wq_b.weight": "self_attn.q_b_proj.weight",
        "attn.wkv.weight": "self_attn.kv_proj.weight", "attn.kv_norm.weight": "self_attn.kv_norm.weight",
        "attn.wo_a.weight": "self_attn.o_a_proj.weight", "attn.wo_b.weight": "self_attn.o_b_proj.weight",
        "attn.compressor.wkv.weight": "self_attn.compressor.kv_proj.weight",
        "attn.compressor.wgate.weight": "self_attn.compressor.gate_proj.weight",
        "attn.compressor.ape": "self_attn.compressor.position_bias",
        "attn.compressor.norm.weight": "self_attn.compressor.kv_norm.weight",
        "attn.indexer.wq_b.weight": "self_attn.compressor.indexer.q_b_proj.weight",
        "attn.indexer.weights_proj.weight": "self_attn.compressor.indexer.scorer.weights_proj.weight",
        "attn.indexer.compressor.wkv.weight": "self_attn.compressor.indexer.kv_proj.weight",
        "attn.indexer.compressor.wgate.weight": "self_attn.compressor.indexer.gate_proj.weight",
        "attn.indexer.compressor.ape": "self_attn.compressor.indexer.position_bias",
        "attn.indexer.compressor.norm.weight": "self_attn.compressor.indexer.kv_norm.weight",
        "ffn.gate.weight": "mlp.gate.weight", "ffn.gate.bias": "mlp.gate.e_score_correction_bias",
        "ffn.gate.tid2eid": "mlp.gate.tid2eid",
        "ffn.shared_experts.w1.weight": "mlp.shared_experts.gate_proj.weight",
        "ffn.shared_experts.w3.weight": "mlp.shared_experts.up_proj.weight",
        "ffn.shared_experts.w2.weight": "mlp.shared_experts.down_proj.weight",
    }
    if rest in simple:
        return p + simple[rest], None
    if rest.startswith("ffn.experts."):
        _, _, e, w, _ = rest.split(".")
        e = int(e)
        if w == "w1":
            return p + "mlp.experts.gate_up_proj", ("gate_up", e, 0)
        if w == "w3":
            return p + "mlp.experts.gate_up_proj", ("gate_up", e, 1)
        if w == "w2":
            return p + "mlp.experts.down_proj", ("down", e)
    raise KeyError(f"no HF mapping for {name}")


# ---------------------------------------------------------------------------------------------
# Precision patches (v4-forward.md §16.2): recompile HF functions with literal substitutions
# ---------------------------------------------------------------------------------------------

def _stable_topk(scores, k):
    """Top-k with the documented tie rule of v4ref (select_topk: score descending, equal scores
    -> lower index first). Returns an object with .indices like torch.topk."""
    import torch
    order = torch.sort(-scores, dim=-1, stable=True).indices[..., :k]
    return types.SimpleNamespace(indices=order, values=torch.gather(scores, -1, order))


def patch_source(owner, attr: str, subs: list[tuple[str, str, int]], record: list, reason: str):
    raw = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
    func = raw.__func__ if isinstance(raw, staticmethod) else raw
    func = inspect.unwrap(func)
    module = sys.modules[func.__module__]
    src = textwrap.dedent(inspect.getsource(func))
    new = src
    done = []
    for old, rep, count in subs:
        n = new.count(old)
        if n != count:
            raise RuntimeError(f"patch {owner.__name__}.{attr}: expected {count} occurrence(s) of {old!r}, "
                               f"found {n} (transformers changed? re-check v4-forward.md §16.2)")
        new = new.replace(old, rep)
        done.append({"old": old, "new": rep, "count": count})
    ns: dict = {}
    code = compile(new, f"<hf_oracle float64 patch of {func.__module__}.{func.__qualname__}>", "exec")
    exec(code, module.__dict__, ns)
    obj = ns[func.__name__]
    setattr(owner, attr, obj)
    record.append({"target": f"{func.__module__}.{func.__qualname__}", "reason": reason,
                   "original_source_sha256": sha256_bytes(src.encode()),
                   "patched_source_sha256": sha256_bytes(new.encode()), "substitutions": done})


def apply_float64_patches(record: list):
    import transformers.modeling_rope_utils as ropeu
    import transformers.models.deepseek_v4.modeling_deepseek_v4 as m

    m._golden_stable_topk = _stable_topk
    F64 = "torch.float64"
    patch_source(m.DeepseekV4RMSNorm, "forward", [("torch.float32", F64, 1)], record,
                 "§16.2.1 weighted RMSNorm normalised in fp32")
    patch_source(m.DeepseekV4UnweightedRMSNorm, "forward", [(".float()", ".double()", 1)], record,
                 "§16.2.2 unweighted RMSNorm (q_b_norm, mHC input norm): 1/RMS in fp32")
    patch_source(m.DeepseekV4HyperConnection, "forward", [(".float()", ".double()", 2)], record,
                 "§16.2.3 mHC: flattened streams and fn cast to fp32 (pre/post/comb, Sinkhorn)")
    patch_source(m.DeepseekV4HyperHead, "forward", [(".float()", ".double()", 4)], record,
                 "§16.2.3 hc_head: streams, fn, scale, base cast to fp32")
    patch_source(m.DeepseekV4RotaryEmbedding, "forward",
                 [(".float()", ".double()", 1), ("dtype=torch.float)", "dtype=torch.float64)", 1)], record,
                 "§16.2.4 RoPE angles position x inv_freq and cos/sin in fp32")
    patch_source(m.DeepseekV4RotaryEmbedding, "compute_default_rope_parameters",
                 [("dtype=torch.float)", "dtype=torch.float64)", 1)], record,
                 "§16.2.4 main (plain) RoPE inv_freq built in fp32")
    patch_source(ropeu, "_compute_yarn_parameters",
                 [("dtype=torch.float32)", "dtype=torch.float64)", 1),
                  ("dtype=torch.float)", "dtype=torch.float64)", 2)], record,
                 "§16.2.4 compress (YaRN) RoPE inv_freq and ramp built in fp32")
    patch_source(m, "apply_rotary_pos_emb", [(".float()", ".double()", 2)], record,
                 "§16.2.4 rotation of the rope slice evaluated in fp32")
    for cls in (m.DeepseekV4HCACompressor, m.DeepseekV4CSACompressor):
        patch_source(cls, "forward", [("dtype=torch.float32", "dtype=torch.float64", 1)], record,
                     "§16.2.5 compressor pooling softmax in fp32")
    patch_source(m.DeepseekV4Indexer, "forward",
                 [("dtype=torch.float32", "dtype=torch.float64", 1),
                  ("index_scores.topk(top_k, dim=-1)", "_golden_stable_topk(index_scores, top_k)", 2)], record,
                 "§16.2.5 indexer compressor softmax in fp32; plus the documented top-k tie switch "
                 "(equal scores -> lower index first, as v4ref; torch.topk leaves ties unspecified)")
    patch_source(m.DeepseekV4IndexerScorer, "forward", [(".float()", ".double()", 3)], record,
                 "§16.2.6 index scorer: queries, keys, head weights cast to fp32")


# ---------------------------------------------------------------------------------------------
# Dtype audit: every ATen op of the forward, every floating tensor it reads or writes
# ---------------------------------------------------------------------------------------------

def make_audit():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class DtypeAudit(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = 0
            self.offending = Counter()
            self.dtypes = Counter()

        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.ops += 1
            for t in tree_flatten((args, kwargs, out))[0]:
                if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
                    self.dtypes[str(t.dtype)] += 1
                    if t.dtype != torch.float64:
                        self.offending[f"{func}:{t.dtype}"] += 1
            return out

    return DtypeAudit()


# ---------------------------------------------------------------------------------------------
# Capture of the trace points (names of reference/include/v4ref/ref/trace.hpp)
# ---------------------------------------------------------------------------------------------

class Capture:
    def __init__(self, model):
        import torch
        import transformers.models.deepseek_v4.modeling_deepseek_v4 as m

        self.torch = torch
        self.m = m
        self.points: dict[str, np.ndarray] = {}
        self.handles = []
        self.stack: list[tuple[object, str]] = []  # (module, role) of the attention family
        self.rope_calls: dict[int, int] = {}
        self.layer_of: dict[int, int] = {}
        base = model.model
        self.model = model

        def put(name, t):
            assert isinstance(t, torch.Tensor), name
            assert t.dtype in (torch.float64, torch.int64), f"{name}: {t.dtype} is not float64"
            a = t.detach().to(torch.float64).cpu().numpy()
            if a.ndim >= 1 and a.shape[0] == 1:
                a = a[0]
            assert name not in self.points, f"{name} captured twice"
            self.points[name] = np.ascontiguousarray(a)

        self.put = put
        self.hook(base.embed_tokens, lambda mod, i, o: put("embed", o))
        for li, layer in enumerate(base.layers):
            pre = f"layers.{li}."
            self.layer_of[id(layer.self_attn)] = li

            def block_in(mod, args, kwargs, pre=pre):
                hs = args[0] if args else kwargs["hidden_states"]
                put(pre + "block.in", hs.reshape(hs.shape[0], hs.shape[1], -1))

            self.handles.append(layer.register_forward_pre_hook(block_in, with_kwargs=True))
            self.hook(layer, lambda mod, i, o, pre=pre: put(pre + "block.out", o.reshape(o.shape[0], o.shape[1], -1)))

            def hc_out(which):
                def f(mod, i, o, pre=pre):
                    post, comb, collapsed = o
                    put(pre + f"{which}.post", post)
                    put(pre + f"{which}.comb", comb.reshape(comb.shape[0], comb.shape[1], -1))
                    put(pre + f"{which}.u", collapsed)
                return f

            self.hook(layer.attn_hc, hc_out("hc_attn"))
            self.hook(layer.ffn_hc, hc_out("hc_ffn"))
            self.handles.append(layer.ffn_hc.register_forward_pre_hook(
                lambda mod, args, pre=pre: put(pre + "hc_attn.out", args[0].reshape(args[0].shape[0], args[0].shape[1], -1))))
            self.hook(layer.input_layernorm, lambda mod, i, o, pre=pre: put(pre + "attn_norm", o))
            self.hook(layer.post_attention_layernorm, lambda mod, i, o, pre=pre: put(pre + "ffn_norm", o))
            at = layer.self_attn
            self.hook(at.q_a_norm, lambda mod, i, o, pre=pre: put(pre + "attn.c", o))
            self.hook(at, lambda mod, i, o, pre=pre: put(pre + "attn.out", o[0]))
            self.stacked(at, "attn")
            if at.compressor is not None:
                self.hook(at.compressor, lambda mod, i, o, pre=pre: put(pre + "attn.compressed", o[0][:, 0]))
                self.stacked(at.compressor, "compressor")
                if isinstance(at.compressor, m.DeepseekV4CSACompressor):
                    ix = at.compressor.indexer
                    self.stacked(ix, "indexer")
                    self.hook(ix, lambda mod, i, o, pre=pre: put(pre + "attn.topk_idx", o))
                    self.hook(ix.scorer, lambda mod, i, o, pre=pre: put(pre + "golden.index_scores_unmasked", o))
            mlp = layer.mlp

            def gate_hook(mod, i, o, pre=pre):
                logits, weights, indices = o
                put(pre + "ffn.scores", mod.score_fn(logits))  # HF's own score_fn on its logits
                put(pre + "ffn.routed_idx", indices)
                put(pre + "ffn.route_weights", weights)
                put(pre + "golden.chosen_score_sum", mod.score_fn(logits).gather(1, indices).sum(-1, keepdim=True))

            self.hook(mlp.gate, gate_hook)
            self.hook(mlp, lambda mod, i, o, pre=pre: put(pre + "ffn.out", o))
        self.hook(base.hc_head, lambda mod, i, o: put("hc_head.out", o))
        self.hook(base.norm, lambda mod, i, o: put("norm.out", o))

        # RoPE calls: inside an attention module, call 0 rotates q, call 1 the K=V rows, call 2
        # de-rotates the core attention output (its input is "attn.o"); inside the indexer, call
        # 0 rotates the indexer keys ("attn.index_keys"), call 1 the indexer queries.
        inner = m.apply_rotary_pos_emb

        def rope(x, cos, sin, unsqueeze_dim=1):
            y = inner(x, cos, sin, unsqueeze_dim)
            if self.stack:
                mod, role = self.stack[-1]
                n = self.rope_calls[id(mod)]
                self.rope_calls[id(mod)] = n + 1
                if role == "attn":
                    pre = f"layers.{self.layer_of[id(mod)]}."
                    if n == 0:
                        put(pre + "attn.q", y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1))
                    elif n == 1:
                        assert y.shape[1] == 1
                        put(pre + "attn.kv", y[:, 0])
                    elif n == 2:
                        put(pre + "attn.o", x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1))
                    else:
                        raise AssertionError("unexpected 4th RoPE call in an attention module")
                elif role == "indexer" and n == 0:
                    li = self.layer_of[self.owner_attn[id(mod)]]
                    put(f"layers.{li}.golden.index_keys_raw", y[:, 0])
            return y

        self.inner_rope = inner
        m.apply_rotary_pos_emb = rope
        self.owner_attn = {}
        for layer in base.layers:
            c = layer.self_attn.compressor
            if c is not None and hasattr(c, "indexer"):
                self.owner_attn[id(c.indexer)] = id(layer.self_attn)

    def hook(self, mod, fn):
        self.handles.append(mod.register_forward_hook(fn))

    def stacked(self, mod, role):
        def push(m_, args):
            self.stack.append((m_, role))
            self.rope_calls[id(m_)] = 0

        def pop(m_, args, out):
            top = self.stack.pop()
            assert top[0] is m_
            if role == "attn":
                assert self.rope_calls[id(m_)] == 3, "attention module made %d RoPE calls" % self.rope_calls[id(m_)]

        self.handles.append(mod.register_forward_pre_hook(push))
        self.handles.append(mod.register_forward_hook(pop))


# ---------------------------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------------------------

def hadamard(n: int) -> np.ndarray:
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / math.sqrt(n)


def run_case(case: dict, ckpt_dir: Path) -> dict:
    """Steps 1–3: load, check the weights, run unpatched under the audit."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, FineGrainedFP8Config

    log(f"case {case['name']}: checkpoint {ckpt_dir}")
    cfg_text = (ckpt_dir / "config.json").read_text()
    cfg_json = json.loads(cfg_text)
    manifest = checkpoint_manifest(ckpt_dir)
    ckpt_sha = sha256_bytes(manifest.encode())
    T = case["length"]
    vocab = cfg_json["vocab_size"]
    tokens = np.random.Generator(np.random.PCG64(case["token_seed"])).integers(0, vocab, T, dtype=np.int64)
    log(f"  tokens: numpy PCG64({case['token_seed']}).integers(0, {vocab}, {T}) -> {tokens[:8].tolist()} ...")
    assert T <= cfg_json["max_position_embeddings"]

    # ---- 1. load through transformers' own path ------------------------------------------
    hf_cfg = AutoConfig.from_pretrained(ckpt_dir)
    assert type(hf_cfg).__name__ == "DeepseekV4Config"
    qc = FineGrainedFP8Config(dequantize=True, weight_block_size=(128, 128), expert_dtype="fp4")
    model, info = AutoModelForCausalLM.from_pretrained(
        ckpt_dir, dtype=torch.float64, quantization_config=qc, output_loading_info=True,
        attn_implementation="eager", experts_implementation="eager")
    model.eval()
    problems = {k: sorted(v) if isinstance(v, (set, list)) else v for k, v in info.items()}
    bad = {k: [x for x in v if not str(x).startswith("mtp.") and not str(x).startswith("model.mtp.")]
           for k, v in problems.items() if isinstance(v, list)}
    if any(bad.values()):
        raise RuntimeError(f"loading problems: {bad}")
    assert model.config._attn_implementation == "eager"
    assert model.config._experts_implementation == "eager", model.config._experts_implementation
    assert model.config.layer_types == [
        {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}[r]
        for r in cfg_json["compress_ratios"][: cfg_json["num_hidden_layers"]]]

    # ---- 2. float64 everywhere, weights checked against an independent decode ----------------
    non64 = Counter()
    for n, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.is_floating_point() and p.dtype != torch.float64:
            non64[f"{n.split('.')[-2] if n.count('.') else n}.{n.split('.')[-1]}:{p.dtype}"] += 1
    model.to(torch.float64)
    for n, p in list(model.named_parameters()) + list(model.named_buffers()):
        assert not p.is_floating_point() or p.dtype == torch.float64, n

    raw = RawCheckpoint(ckpt_dir)
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    covered: dict[str, int] = Counter()
    n_checked = 0
    n_quant = Counter()
    for name in sorted(raw.weight_map):
        mp = official_to_hf(name)
        if mp is None:
            continue
        hf_name, sel = mp
        want = raw.weight(name)
        got = params[hf_name].detach()
        if sel is not None:
            I = cfg_json["moe_intermediate_size"]
            got = got[sel[1], sel[2] * I:(sel[2] + 1) * I] if sel[0] == "gate_up" else got[sel[1]]
        got = got.cpu().numpy()
        if got.dtype == np.int64:
            ok = np.array_equal(got, want)
        else:
            ok = got.shape == want.shape and np.array_equal(got.view(np.uint64), want.astype(np.float64).view(np.uint64))
        if not ok:
            diff = np.max(np.abs(got.astype(np.float64) - want)) if got.shape == want.shape else "shape"
            raise RuntimeError(f"weight {name} -> {hf_name}{sel or ''}: HF value differs from the exact decode ({diff})")
        covered[hf_name] += 1
        n_checked += 1
        n_quant[raw.raw(name)[0]] += 1
    E = cfg_json["n_routed_experts"]
    for hf_name, t in params.items():
        if "rotary_emb" in hf_name:
            continue
        expect = 2 * E if hf_name.endswith("gate_up_proj") else (E if hf_name.endswith("experts.down_proj") else 1)
        if covered.get(hf_name, 0) != expect:
            raise RuntimeError(f"HF parameter {hf_name} not covered by the checkpoint check ({covered.get(hf_name, 0)}/{expect})")
    log(f"  weights: {n_checked} checkpoint tensors bit-exact in HF ({dict(n_quant)})")

    # ---- 3. unpatched run under the dtype audit (records the fp32 islands) -------------------
    ids = torch.tensor(tokens[None, :], dtype=torch.long)
    audit0 = make_audit()
    with torch.no_grad(), audit0:
        logits_fp32_islands = model(input_ids=ids, use_cache=False, logits_to_keep=0).logits[0].clone()
    islands = Counter()
    for k, v in audit0.offending.items():
        islands[k.split(":")[0]] += v
    log(f"  unpatched: {audit0.ops} ATen ops, {sum(audit0.offending.values())} non-float64 tensor uses")

    return dict(model=model, ids=ids, tokens=tokens, cfg_json=cfg_json, cfg_text=cfg_text, manifest=manifest,
                ckpt_sha=ckpt_sha, problems=problems, non64=non64, n_checked=n_checked, n_quant=n_quant,
                audit0=audit0, islands=islands, logits_fp32_islands=logits_fp32_islands)


def finish_case(case: dict, st: dict, out_path: Path, versions: dict, pip_freeze: str, generator_sha: dict,
                patches: list) -> dict:
    """Steps 5–7 (after the float64 patches): rotary tables, audited float64 run, HDF5 file."""
    import torch
    import h5py
    import transformers.modeling_rope_utils as ropeu
    import transformers.models.deepseek_v4.modeling_deepseek_v4 as m

    model, ids, tokens, cfg_json = st["model"], st["ids"], st["tokens"], st["cfg_json"]
    T = len(tokens)

    # ---- 5. float64 rotary tables and the YaRN check (v4-forward.md §2.3, §16.4) -------------
    yarn = {}
    n_rot = 0
    for name, mod in model.named_modules():
        if isinstance(mod, m.DeepseekV4RotaryEmbedding):
            n_rot += 1
            for lt in mod.layer_types:
                fn = mod.compute_default_rope_parameters if mod.rope_type[lt] == "default" else \
                    ropeu._compute_yarn_parameters
                inv, scaling = fn(mod.config, None, layer_type=lt)
                assert inv.dtype == torch.float64, (name, lt, inv.dtype)
                assert scaling == 1.0, (name, lt, scaling)
                getattr(mod, f"{lt}_inv_freq").data = inv.clone()
                getattr(mod, f"{lt}_original_inv_freq").data = inv.clone()
                w = inv.numpy()
                if lt == "compress":
                    ref = {0: 1.0, 8: 0.05, 15: 3.635538583622384e-3, 16: 2.265625e-3, 20: 2.9697777826169085e-4,
                           24: 1.953125e-5, 25: 5.372312671356501e-6, 31: 5.680529036909976e-7}
                else:
                    ref = {1: 0.7498942093324559, 31: 1.333521432163324e-4}
                for j, v in ref.items():
                    if abs(w[j] - v) > 1e-14 * abs(v):
                        raise RuntimeError(f"{name}.{lt}_inv_freq[{j}] = {w[j]!r}, expected {v!r} (YaRN not loaded?)")
                yarn[lt] = {str(j): float(w[j]) for j in ref}
    assert abs(yarn["compress"]["16"] - 2.265625e-3) < 1e-17 and abs(yarn["compress"]["16"] - 2.5e-3) > 1e-4
    log(f"  rotary: {n_rot} modules rebuilt in float64; compress ω_16 = {yarn['compress']['16']!r}")

    # ---- 6. patched run: audit + capture ------------------------------------------------------
    cap = Capture(model)
    audit = make_audit()
    try:
        with torch.no_grad(), audit:
            out = model(input_ids=ids, use_cache=False, logits_to_keep=0)
    finally:
        for h in cap.handles:
            h.remove()
        m.apply_rotary_pos_emb = cap.inner_rope
    logits = out.logits[0]
    assert logits.dtype == torch.float64
    cap.put("logits", logits)
    if audit.offending:
        raise RuntimeError(f"non-float64 floating tensors in the patched forward: {dict(audit.offending)}")
    log(f"  patched: {audit.ops} ATen ops, every floating tensor float64 ({dict(audit.dtypes)})")
    island_effect = float((logits - st["logits_fp32_islands"]).abs().max() / logits.abs().max())
    log(f"  effect of the fp32 islands on the logits: max |Δ| / max |logit| = {island_effect:.3e}")

    P = cap.points
    L = cfg_json["num_hidden_layers"]
    win = cfg_json["sliding_window"]
    K_I = cfg_json["index_topk"]
    ratios = cfg_json["compress_ratios"][:L]
    hc = cfg_json["hc_mult"]

    # Derived / re-expressed points (each documented in docs/golden.md):
    stats = {"topk_boundary_ties": 0, "topk_min_rel_gap": float("inf"), "router_min_rel_gap": float("inf"),
             "router_min_chosen_sum": float("inf")}
    Hd = hadamard(cfg_json["index_head_dim"])
    for li in range(L):
        pre = f"layers.{li}."
        if ratios[li] == 4:
            # index scores: HF's scorer output; v4ref stores −inf where invisible (j >= (t+1)/4).
            sc = P.pop(pre + "golden.index_scores_unmasked").copy()
            N = sc.shape[1]
            vis = (np.arange(T)[:, None] + 1) // 4
            sc[np.arange(N)[None, :] >= vis] = -np.inf
            P[pre + "attn.index_scores"] = sc
            # selections: pad to K_I with −1 (v4ref's width), check the tie / near-tie situation
            sel = P[pre + "attn.topk_idx"].astype(np.float64)
            if sel.shape[1] < K_I:
                sel = np.concatenate([sel, -np.ones((T, K_I - sel.shape[1]))], axis=1)
            P[pre + "attn.topk_idx"] = sel
            for t in range(T):
                v = min(int(vis[t, 0]), N)
                k = min(K_I, v)
                if k == 0 or k == v:
                    continue
                s = np.sort(sc[t, :v])[::-1]
                gap = s[k - 1] - s[k]
                if gap == 0:
                    stats["topk_boundary_ties"] += 1
                else:
                    stats["topk_min_rel_gap"] = min(stats["topk_min_rel_gap"], gap / max(abs(s[k - 1]), 1e-300))
            # indexer keys: v4ref stores them after the Hadamard rotation (exact mode too, §2.4);
            # HF has no Hadamard. Had is orthogonal and symmetric: golden = Had · K_HF.
            raw_keys = P.pop(pre + "golden.index_keys_raw")
            P[pre + "attn.index_keys"] = raw_keys @ Hd.T
        # router: HF's order is torch.topk(sorted=False) (score layers) or tid2eid (hash layers);
        # re-order score layers to v4ref's rank order (biased score descending, lower index first).
        idx = P[pre + "ffn.routed_idx"].astype(np.int64)
        wts = P[pre + "ffn.route_weights"]
        scores = P[pre + "ffn.scores"]
        gate = model.model.layers[li].mlp.gate
        sums = P.pop(pre + "golden.chosen_score_sum")[:, 0]
        stats["router_min_chosen_sum"] = min(stats["router_min_chosen_sum"], float(sums.min()))
        if hasattr(gate, "e_score_correction_bias") and not hasattr(gate, "tid2eid"):
            biased = scores + gate.e_score_correction_bias.detach().numpy()[None, :]
            for t in range(T):
                order = sorted(range(idx.shape[1]), key=lambda s: (-biased[t, idx[t, s]], idx[t, s]))
                idx[t] = idx[t, order]
                wts[t] = wts[t, order]
                srt = np.sort(biased[t])[::-1]
                kk = idx.shape[1]
                stats["router_min_rel_gap"] = min(stats["router_min_rel_gap"],
                                                  (srt[kk - 1] - srt[kk]) / max(abs(srt[kk - 1]), 1e-300))
                assert set(idx[t].tolist()) == set(np.argsort(-biased[t], kind="stable")[:kk].tolist())
        else:
            assert np.array_equal(idx, gate.tid2eid.numpy()[tokens]), "hash routing != tid2eid[token]"
        P[pre + "ffn.routed_idx"] = idx.astype(np.float64)
        P[pre + "ffn.route_weights"] = wts
        # block.in of layer li > 0 is layer li−1's block.out (same tensor): kept once.
        if li > 0:
            assert np.array_equal(P[pre + "block.in"], P[f"layers.{li - 1}.block.out"])
            del P[pre + "block.in"]
    # The router normaliser of HF adds 1e−20 (OFF: plain sum); it is a float64 no-op when every
    # chosen-score sum exceeds 1e−20 · 2^53 ≈ 9.0e−5 (then s + 1e−20 == s exactly).
    assert stats["router_min_chosen_sum"] > 1e-4, stats
    # the embedding expanded to the streams is layer 0's block.in (stream-major)
    assert np.array_equal(P["layers.0.block.in"], np.tile(P["embed"], (1, hc)))

    # ---- order, row subset, write --------------------------------------------------------------
    positions = golden_positions(T, win)
    keys = ["block.in", "hc_attn.pre", "hc_attn.post", "hc_attn.comb", "hc_attn.u", "attn_norm", "attn.c",
            "attn.q", "attn.kv", "attn.compressed", "attn.index_keys", "attn.index_scores", "attn.topk_idx",
            "attn.o", "attn.out", "hc_attn.out", "hc_ffn.pre", "hc_ffn.post", "hc_ffn.comb", "hc_ffn.u",
            "ffn_norm", "ffn.scores", "ffn.routed_idx", "ffn.route_weights", "ffn.out", "block.out"]
    order = ["embed"] + [f"layers.{li}.{k}" for li in range(L) for k in keys] + ["hc_head.out", "norm.out", "logits"]
    present = [n for n in order if n in P]
    unknown = set(P) - set(present)
    assert not unknown, unknown
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".h5.tmp")

    class Attrs:
        """Root/dataset attributes as v4ref's H5Store writes them: strings fixed-length UTF-8
        (NULLPAD), integers int64, reals float64 (h5py's default variable-length strings are
        not read by H5Store)."""

        def __init__(self, obj):
            self.obj = obj

        def __setitem__(self, key, value):
            if isinstance(value, str):
                b = value.encode("utf-8") or b"\0"
                self.obj.attrs.create(key, np.array(b, dtype=f"S{len(b)}"), dtype=h5py.string_dtype("utf-8", len(b)))
            elif isinstance(value, (bool, np.bool_)):
                raise TypeError(key)
            elif isinstance(value, (int, np.integer)):
                self.obj.attrs.create(key, np.int64(value), dtype=np.int64)
            elif isinstance(value, (float, np.floating)):
                self.obj.attrs.create(key, np.float64(value), dtype=np.float64)
            else:
                raise TypeError(f"attribute {key}: {type(value)}")

    rows_all = rows_pos = 0
    with h5py.File(tmp, "w", libver="earliest") as f:
        a = Attrs(f)
        a["format"] = "v4ref-trace"
        a["format_version"] = np.int64(1)
        a["golden.kind"] = "oracle"
        a["golden.oracle"] = "huggingface-transformers-float64"
        a["golden.case"] = case["name"]
        a["golden.preset"] = case["preset"]
        a["seed"] = np.int64(case["weight_seed"])
        a["golden.weight_seed"] = np.int64(case["weight_seed"])
        a["golden.token_seed"] = np.int64(case["token_seed"])
        a["golden.token_rule"] = f"numpy.random.Generator(numpy.random.PCG64({case['token_seed']})).integers(0, {cfg_json['vocab_size']}, {T}, dtype=int64)"
        a["golden.length"] = np.int64(T)
        a["policy"] = "exact"
        a["golden.compare_with"] = "v4ref Model::forward, PrecisionPolicy::exact(), prefill from position 0"
        a["created_utc"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        a["generator"] = "golden/generate -> golden/hf_oracle.py"
        for k, v in generator_sha.items():
            a[f"generator.{k}.sha256"] = v
        a["config_json"] = st["cfg_text"]
        a["config_sha256"] = sha256_bytes(st["cfg_text"].encode())
        a["checkpoint"] = f"{case['preset']} seed {case['weight_seed']} (v4ref make-checkpoint --preset {case['preset']} --seed {case['weight_seed']}, default --shard-bytes 1048576)"
        a["checkpoint_sha256"] = st["ckpt_sha"]
        a["checkpoint_sha256_rule"] = CHECKPOINT_HASH_RULE
        a["checkpoint_files"] = st["manifest"]
        for k, v in versions.items():
            a[f"version.{k}"] = str(v)
        a["oracle.pip_freeze"] = pip_freeze
        a["oracle.loading"] = (
            "transformers AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float64, "
            "quantization_config=FineGrainedFP8Config(dequantize=True, weight_block_size=(128,128), expert_dtype='fp4'), "
            "attn_implementation='eager', experts_implementation='eager', output_loading_info=True) on the CPU: "
            "HF's own conversion mapping (official names -> HF modules, .scale -> weight_scale_inv) and its own "
            "dequantiser (fp8 e4m3 x ue8m0 128x128 blocks, I8-packed fp4 e2m1 x ue8m0 1x32 blocks, block size "
            "inferred from the scale grid). No weight was dequantised by this script.")
        a["oracle.loading_info"] = json.dumps({k: v for k, v in st["problems"].items()}, default=str)
        a["oracle.cast_to_float64"] = json.dumps(
            {"rule": "HF left these parameters in the checkpoint dtype; model.to(torch.float64) (exact)",
             "params": dict(st["non64"])})
        a["oracle.weight_check"] = (
            f"{st['n_checked']} checkpoint tensors ({dict(st['n_quant'])}) equal bit for bit to an independent "
            "float64 decode (own safetensors parser, e4m3/e2m1/ue8m0/bf16 decoders, own name map of "
            "v4-forward.md §16.4); every HF parameter/buffer covered")
        a["oracle.patches"] = json.dumps(patches)
        a["oracle.dtype_audit"] = json.dumps({
            "method": "torch TorchDispatchMode over the whole forward: every floating tensor read or written by "
                      "every ATen op must be float64",
            "patched_ops": audit.ops, "patched_non_float64": 0, "patched_dtypes": dict(audit.dtypes),
            "unpatched_ops": st["audit0"].ops, "unpatched_non_float64_uses_by_op": dict(st["islands"])})
        a["oracle.island_effect_on_logits"] = island_effect
        a["oracle.rope_tables"] = json.dumps({"modules_rebuilt_float64": n_rot, "reference_values": yarn,
                                              "check": "compress ω_16 = 2.265625e-3 (YaRN), not 2.5e-3 (plain θ)"})
        a["oracle.selection_stats"] = json.dumps(stats)
        a["oracle.switches"] = json.dumps(SWITCHES)
        a["golden.rows_rule"] = (
            "each trace dataset's attribute golden.rows is 'all' or names the int64 helper dataset listing the "
            "rows it holds: golden.positions (positions: %s) for [T, ·] points other than %s; "
            "golden.entries.<m> (the first and last 8 and every 8th compressed entry) for %s when a layer has "
            "more than %d entries. layers.{i}.block.in for i > 0 is omitted: it is layers.{i-1}.block.out "
            "(checked equal)." % (golden_positions.__doc__.strip(), ", ".join(ALL_ROW_POINTS),
                                  " and ".join(ENTRY_POINTS), MAX_ALL_ENTRIES))
        f.create_dataset("tokens", data=tokens.astype(np.int64))
        f.create_dataset("golden.positions", data=np.array(positions, dtype=np.int64))
        entry_sets = {}
        for o, name in enumerate(present):
            arr = np.asarray(P[name], dtype=np.float64)
            if arr.ndim == 1:
                arr = arr[None, :]
            local = name.split(".", 2)[-1] if name.startswith("layers.") else name
            if local in ENTRY_POINTS:
                li = int(name.split(".")[1])
                helper = f"golden.entries.{ratios[li]}"
                if arr.shape[0] > MAX_ALL_ENTRIES:
                    ent = golden_entries(arr.shape[0])
                    if helper in entry_sets:
                        assert entry_sets[helper] == ent
                    else:
                        entry_sets[helper] = ent
                        f.create_dataset(helper, data=np.array(ent, dtype=np.int64))
                    arr = arr[ent]
                    rows = helper
                else:
                    rows = "all"
            elif local in ALL_ROW_POINTS:
                assert arr.shape[0] == T, name
                rows = "all"
                rows_all += 1
            else:
                assert arr.shape[0] == T, name
                arr = arr[positions]
                rows = "golden.positions"
                rows_pos += 1
            ds = f.create_dataset(name, data=arr, compression="gzip", compression_opts=9, shuffle=True)
            da = Attrs(ds)
            da["order"] = np.int64(o)
            da["golden.rows"] = rows
            if local == "attn.index_keys":
                da["golden.note"] = "Had_128 · (HF indexer key after RoPE): v4ref stores keys after the Hadamard rotation"
            if local == "ffn.routed_idx":
                da["golden.note"] = "score layers re-ordered to rank order (biased score desc, lower index first); hash layers in tid2eid order"
    os.replace(tmp, out_path)
    size = out_path.stat().st_size
    log(f"  wrote {out_path} ({size / 1e6:.2f} MB, {len(present)} points: {rows_pos} on {len(positions)} positions, {rows_all} on all {T})")
    return {"size": size, "points": len(present), "stats": stats, "island_effect": island_effect}


SWITCHES = {
    "qat_simulation": "OFF fake-quantises (Q8 window/compressed KV, Had+Q4 indexer, W8A8); HF has none -> compared with v4ref PrecisionPolicy::exact() (no quantisation point on). Matched.",
    "hadamard": "v4ref applies the orthogonal Had_128 to indexer queries and keys in every mode, HF never: scores equal in exact arithmetic; the golden attn.index_keys = Had_128 · K_HF (re-expressed, not loosened).",
    "router_normaliser": "HF divides by sum + 1e-20, OFF/v4ref by the plain sum: a float64 no-op here (every chosen-score sum > 1e-4 > 1e-20·2^53, asserted). Matched.",
    "index_topk_ties": "OFF ranks bf16 scores, HF fp32 scores with torch.topk (ties unspecified); here both sides rank float64 scores and break exact ties toward the lower index (switch applied to HF's DeepseekV4Indexer.forward; v4ref select_topk). Matched.",
    "mtp": "HF has no MTP (mtp.* ignored on load): no MTP golden; v4ref's MTP block is verified through its definition from the golden-checked sub-blocks (docs/golden.md).",
    "logits": "OFF returns the last position only; HF and v4ref all positions: compared at the stored positions.",
    "call_shape": "one prefill from position 0 (HF stateless path, use_cache=False; v4ref Model::forward). Decode is not compared with HF.",
    "hc_pre": "HF consumes the mHC pre weights inside DeepseekV4HyperConnection.forward and does not expose them: hc_attn.pre / hc_ffn.pre are not in the golden (covered through hc_*.u = Σ pre_k X_k).",
    "router_order": "HF torch.topk(sorted=False) order is arbitrary: score-layer selections re-ordered to rank order; compared as sets with weights matched per expert.",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", required=True, nargs="+",
                    help="directories holding <preset>-s<seed>/ checkpoints (searched in order)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (golden/data/hf)")
    ap.add_argument("--cases", nargs="*", help="subset of case names")
    args = ap.parse_args()

    import torch
    import transformers
    import h5py
    import safetensors
    import accelerate

    torch.manual_seed(0)
    versions = {"python": platform.python_version(), "torch": str(torch.__version__),
                "transformers": transformers.__version__, "numpy": np.__version__, "h5py": h5py.__version__,
                "hdf5": h5py.version.hdf5_version, "safetensors": safetensors.__version__,
                "accelerate": accelerate.__version__, "platform": platform.platform()}
    import transformers.models.deepseek_v4.modeling_deepseek_v4 as m
    import transformers.modeling_rope_utils as ropeu
    versions["transformers_modeling_deepseek_v4_sha256"] = sha256_file(Path(m.__file__))
    versions["transformers_modeling_rope_utils_sha256"] = sha256_file(Path(ropeu.__file__))
    pip_freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                                check=True).stdout
    here = Path(__file__).resolve().parent
    generator_sha = {"hf_oracle.py": sha256_file(here / "hf_oracle.py"), "generate": sha256_file(here / "generate"),
                     "requirements.txt": sha256_file(here / "requirements.txt")}
    log(f"versions: {json.dumps(versions)}")

    cases = [c for c in CASES if not args.cases or c["name"] in args.cases]
    roots = [Path(p) for p in args.checkpoints]
    # Unpatched runs first (the islands are measured before the class-level patches go in).
    states = []
    for c in cases:
        d = next((r / f"{c['preset']}-s{c['weight_seed']}" for r in roots
                  if (r / f"{c['preset']}-s{c['weight_seed']}" / "config.json").exists()), None)
        if d is None:
            raise SystemExit(f"checkpoint {c['preset']}-s{c['weight_seed']} not found in {roots}")
        states.append(run_case(c, d))
    patches: list = []
    apply_float64_patches(patches)
    log(f"float64 patches applied to {len(patches)} HF functions")
    results = {}
    for c, st in zip(cases, states):
        results[c["name"]] = finish_case(c, st, args.out / f"{c['name']}.h5", versions, pip_freeze, generator_sha,
                                         patches)
        del st["model"]
    total = sum(r["size"] for r in results.values())
    log(f"total {total / 1e6:.2f} MB in {len(results)} files")
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
