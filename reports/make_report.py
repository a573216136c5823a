#!/usr/bin/python3
"""Cost report: DeepSeek-V4 vs V3.2 decode FLOPs per token and KV-cache bytes (spec/cost-model.md §8).

Reads the JSON of `v4ref cost --json --sweep` (the formulas live in the C++ cost model; this
script only formats them) and, when present, a verification JSON and Google Benchmark JSON files.
Writes <out>/index.html, <out>/summary.md and PNG figures. Sections whose inputs are absent are
kept with a note saying so.

    python3 reports/make_report.py --cost reports/out/cost.json \
        [--verify reports/out/verify.json] [--bench-dir reports/data] --out reports/out

Needs only Debian's python3 and python3-matplotlib (Agg backend).
"""

import argparse
import datetime
import glob
import html
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after use())

MODELS = ["v3.2", "v4-flash", "v4-pro"]
LABELS = {"v3.2": "DeepSeek-V3.2", "v4-flash": "V4-Flash", "v4-pro": "V4-Pro"}
COLORS = {"v3.2": "#444444", "v4-flash": "#1f77b4", "v4-pro": "#d62728"}
TABLE_CONTEXTS = [4096, 32768, 131072, 524288, 1048576]
# Components in stacking order, with a fixed colour each.
COMPONENTS = [
    ("attn_core", "#d62728"),
    ("indexer_score", "#ff7f0e"),
    ("proj_attn", "#1f77b4"),
    ("proj_indexer", "#aec7e8"),
    ("compressor", "#9467bd"),
    ("mhc", "#c5b0d5"),
    ("moe_routed", "#2ca02c"),
    ("moe_shared", "#98df8a"),
    ("router", "#bcbd22"),
    ("dense_ffn", "#8c564b"),
    ("lm_head", "#7f7f7f"),
]


def fail(msg):
    print("make_report.py: error: " + msg, file=sys.stderr)
    sys.exit(1)


def as_list(v, n):
    """Per-context values: arrays when several contexts were requested, scalars for one."""
    return v if isinstance(v, list) else [v] * n


def load_cost(path):
    try:
        with open(path) as f:
            cost = json.load(f)
    except (OSError, ValueError) as e:
        fail("cannot read cost JSON %s: %s" % (path, e))
    for key in ("contexts", "models", "conventions"):
        if key not in cost:
            fail("%s: missing key '%s' (expected the output of `v4ref cost --json --sweep`)" % (path, key))
    n = len(cost["contexts"])
    for m in MODELS:
        if m not in cost["models"]:
            fail("%s: model '%s' missing" % (path, m))
        model = cost["models"][m]
        for key in ("flops_eqfp8_per_token", "flops_raw_per_token", "kv_bytes", "context"):
            model[key] = as_list(model[key], n)
        for key in ("flops_ratio_vs_v3.2", "kv_ratio_vs_v3.2", "flops_raw_ratio_vs_v3.2"):
            if key in model:
                model[key] = as_list(model[key], n)
        for part in ("raw", "eqfp8"):
            for comp, v in model["breakdown"][part].items():
                model["breakdown"][part][comp] = as_list(v, n)
    return cost


def conventions_text(cost):
    c = cost["conventions"]
    w = c["weights"]
    weights = ", ".join("%s %g" % (k, v) for k, v in w.items())
    layout = c["kv_layout"] + (", paged" if c.get("kv_paged") else "")
    if c.get("kv_includes_compressor_state"):
        layout += ", with compressor state"
    return [
        "eqFP8 weights: " + weights,
        "KV layout: " + layout + " (headline excludes compressor state)",
        "L: " + c["L"],
        "FLOP: " + c["flop"],
        "Scope: " + c["scope"],
    ]


def add_footer(fig, lines):
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=6.5, va="bottom", ha="left", color="#555555",
             wrap=True)


def log2_ticks(ax, contexts):
    ticks = [L for L in contexts if L & (L - 1) == 0]
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([ctx_label(L) for L in ticks], fontsize=8)
    ax.set_xlim(min(contexts), max(contexts))


def ctx_label(L):
    if L >= 1 << 20 and L % (1 << 20) == 0:
        return "%dM" % (L >> 20)
    if L >= 1024 and L % 1024 == 0:
        return "%dK" % (L >> 10)
    return str(L)


def plot_flops(cost, out):
    ctx = cost["contexts"]
    fig, ax = plt.subplots(figsize=(8, 5.4))
    for m in MODELS:
        model = cost["models"][m]
        ax.plot(ctx, [v / 1e9 for v in model["flops_eqfp8_per_token"]], color=COLORS[m], lw=2,
                label=LABELS[m] + " (eqFP8)")
        ax.plot(ctx, [v / 1e9 for v in model["flops_raw_per_token"]], color=COLORS[m], lw=1.2,
                ls="--", label=LABELS[m] + " (raw)")
    log2_ticks(ax, ctx)
    ax.set_yscale("log")
    ax.set_xlabel("context length L (tokens, log scale)")
    ax.set_ylabel("GFLOPs per generated token (log scale)")
    ax.set_title("Decode FLOPs per token vs context: eqFP8 (solid) and raw (dashed)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.subplots_adjust(bottom=0.25)
    add_footer(fig, conventions_text(cost)[:3])
    path = os.path.join(out, "flops_vs_context.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return os.path.basename(path)


def plot_stacked(cost, out):
    ctx = cost["contexts"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), sharey=False)
    handles = None
    for ax, m in zip(axes, MODELS):
        eq = cost["models"][m]["breakdown"]["eqfp8"]
        comps = [(c, col) for c, col in COMPONENTS if any(v != 0 for v in eq.get(c, [0]))]
        ys = [[v / 1e9 for v in eq[c]] for c, _ in comps]
        handles = ax.stackplot(ctx, ys, colors=[col for _, col in comps],
                               labels=[c for c, _ in comps])
        log2_ticks(ax, ctx)
        ax.set_xlabel("context length L (log scale)")
        ax.set_ylabel("eqFP8 GFLOPs per token")
        ax.set_title(LABELS[m] + ": eqFP8 by component")
        ax.grid(True, alpha=0.3)
        ax.legend(handles[::-1], [c for c, _ in comps][::-1], fontsize=7, loc="upper left")
    fig.subplots_adjust(bottom=0.24, wspace=0.28)
    add_footer(fig, conventions_text(cost)[:3])
    path = os.path.join(out, "flops_stacked_components.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.path.basename(path)


def plot_kv(cost, out):
    ctx = cost["contexts"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    gib = float(1 << 30)
    with_state = cost["conventions"].get("kv_includes_compressor_state", False)
    for m in MODELS:
        model = cost["models"][m]
        kv = model["kv_bytes"]
        ax1.plot(ctx, [v / gib for v in kv], color=COLORS[m], lw=2, label=LABELS[m])
        ax2.plot(ctx, [v / L for v, L in zip(kv, ctx)], color=COLORS[m], lw=2, label=LABELS[m])
        state = model.get("compressor_state_bytes", 0)
        if state and not with_state:
            ax1.plot(ctx, [(v + state) / gib for v in kv], color=COLORS[m], lw=1, ls=":",
                     label=LABELS[m] + " + compressor state")
            ax2.plot(ctx, [(v + state) / L for v, L in zip(kv, ctx)], color=COLORS[m], lw=1,
                     ls=":", label=LABELS[m] + " + compressor state")
    for ax in (ax1, ax2):
        log2_ticks(ax, ctx)
        ax.set_yscale("log")
        ax.set_xlabel("context length L (tokens, log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("KV cache per sequence (GiB, log scale)")
    ax1.set_title("KV-cache bytes per sequence")
    ax2.set_ylabel("KV bytes per token of context (log scale)")
    ax2.set_title("KV-cache bytes per token of context")
    fig.subplots_adjust(bottom=0.24, wspace=0.25)
    add_footer(fig, conventions_text(cost)[1:3])
    path = os.path.join(out, "kv_vs_context.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.path.basename(path)


def plot_ratios(cost, out):
    ctx = cost["contexts"]
    fig, ax = plt.subplots(figsize=(8, 5.2))
    targets = cost.get("targets", {})
    for m in MODELS[1:]:
        model = cost["models"][m]
        ax.plot(ctx, [100 * v for v in model["flops_ratio_vs_v3.2"]], color=COLORS[m], lw=2,
                label=LABELS[m] + " FLOPs (eqFP8)")
        ax.plot(ctx, [100 * v for v in model["kv_ratio_vs_v3.2"]], color=COLORS[m], lw=1.5,
                ls="-.", label=LABELS[m] + " KV")
        t = targets.get(m)
        if t:
            L = targets.get("context", 1 << 20)
            ax.plot([L], [100 * t["flops_ratio"]], marker="*", ms=12, color=COLORS[m], ls="none",
                    label=LABELS[m] + " published FLOPs target")
            ax.plot([L], [100 * t["kv_ratio"]], marker="D", ms=7, color=COLORS[m], ls="none",
                    mfc="white", label=LABELS[m] + " published KV target")
    log2_ticks(ax, ctx)
    ax.set_xlim(min(ctx), max(ctx) * 1.25)  # room for the 1M target markers
    ax.set_xlabel("context length L (tokens, log scale)")
    ax.set_ylabel("V4 / V3.2 (%)")
    ax.set_title("Ratios vs DeepSeek-V3.2 (markers: published 1M targets)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.subplots_adjust(bottom=0.25)
    add_footer(fig, conventions_text(cost)[:3])
    path = os.path.join(out, "ratios_vs_context.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return os.path.basename(path)


def ratio_table(cost):
    """Rows for 4K/32K/128K/512K/1M: (L, model, flops %, kv %, target flops, target kv, flags)."""
    ctx = cost["contexts"]
    targets = cost.get("targets", {})
    tol = targets.get("tolerance_pp", {"flops": 1.0, "kv": 0.75})
    rows = []
    for L in TABLE_CONTEXTS:
        for m in MODELS[1:]:
            if L not in ctx:
                rows.append((L, m, None, None, None, None, "not in input"))
                continue
            i = ctx.index(L)
            model = cost["models"][m]
            f = 100 * model["flops_ratio_vs_v3.2"][i]
            k = 100 * model["kv_ratio_vs_v3.2"][i]
            tf = tk = None
            flags = []
            t = targets.get(m)
            if t and L == targets.get("context", 1 << 20):
                tf, tk = 100 * t["flops_ratio"], 100 * t["kv_ratio"]
                if abs(f - tf) > tol["flops"]:
                    flags.append("FLOPs off by %.2f pp" % (f - tf))
                if abs(k - tk) > tol["kv"]:
                    flags.append("KV off by %.2f pp" % (k - tk))
                if not flags:
                    flags.append("within tolerance")
            rows.append((L, m, f, k, tf, tk, "; ".join(flags)))
    return rows, tol


def fmt(v, spec):
    return "–" if v is None else spec % v


def load_verify(path):
    if not path:
        return None, "no --verify given"
    if not os.path.exists(path):
        return None, "%s not found" % path
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return None, "%s unreadable: %s" % (path, e)


def verify_rows(data):
    """Generic summary: a list of results with name + status/passed, or top-level scalars."""
    items = None
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        for key in ("results", "tests", "cases", "checks"):
            if isinstance(data.get(key), list):
                items = data[key]
                break
    rows = []
    if items is not None:
        for it in items:
            if not isinstance(it, dict):
                continue
            name = it.get("name") or it.get("case") or it.get("id") or "?"
            status = it.get("status")
            if status is None and "passed" in it:
                status = "pass" if it["passed"] else "FAIL"
            detail = ", ".join("%s=%s" % (k, v) for k, v in it.items()
                               if k not in ("name", "case", "id", "status", "passed")
                               and not isinstance(v, (dict, list)))
            rows.append((str(name), str(status), detail))
    elif isinstance(data, dict):
        for k, v in data.items():
            if not isinstance(v, (dict, list)):
                rows.append((k, str(v), ""))
    return rows


BENCH_SKIP = ("real_time", "cpu_time", "iterations", "repetitions", "repetition_index", "threads",
              "family_index", "per_family_instance_index", "pct_roof", "target_pct")


def finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def load_bench(bench_dir):
    """Google Benchmark JSON files (bench/*_bench write that layout): one row per benchmark, the
    median aggregate where repetitions made aggregates. pct_roof is the time at the roofline as a
    % of the measured time; target_pct the kernel's target on that scale (kernel-targets.md)."""
    if not bench_dir:
        return [], "no --bench-dir given"
    if not os.path.isdir(bench_dir):
        return [], "%s not found" % bench_dir
    rows, unreadable = [], []
    for path in sorted(glob.glob(os.path.join(bench_dir, "*.json"))):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            unreadable.append("%s (%s)" % (os.path.basename(path), err))
            continue
        if not isinstance(data, dict):
            continue
        ctx = data.get("context", {}) if isinstance(data.get("context"), dict) else {}
        benches = [b for b in data.get("benchmarks", []) if isinstance(b, dict)]
        has_median = {b.get("run_name") for b in benches
                      if b.get("run_type") == "aggregate" and b.get("aggregate_name") == "median"}
        for b in benches:
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                continue  # mean / stddev / cv of repetitions
            if b.get("run_type") == "iteration" and b.get("run_name") in has_median:
                continue  # the median aggregate stands for them
            extra = ", ".join("%s=%.4g" % (k, v) for k, v in b.items()
                              if finite(v) and k not in BENCH_SKIP)
            rows.append({
                "file": os.path.basename(path),
                "device": str(ctx.get("device", "")),
                "name": str(b.get("name", "?")),
                "time": b.get("real_time") if finite(b.get("real_time")) else None,
                "unit": str(b.get("time_unit", "")),
                "pct_roof": b.get("pct_roof") if finite(b.get("pct_roof")) else None,
                "target_pct": b.get("target_pct") if finite(b.get("target_pct")) else None,
                "error": str(b.get("error_message", "error")) if b.get("error_occurred") else "",
                "extra": extra,
            })
    note = ("unreadable: " + "; ".join(unreadable)) if unreadable else None
    if not rows:
        return [], "no Google Benchmark JSON in %s%s" % (bench_dir, "; " + note if note else "")
    return rows, note


def bench_verdict(r):
    if r["error"]:
        return "FAILED: " + r["error"]
    if r["pct_roof"] is None:
        return ""
    if r["target_pct"] is None:
        return "no target"
    return "meets target" if r["pct_roof"] >= r["target_pct"] else "below target"


def plot_bench(rows, out):
    """Measured time as a fraction of the roofline time, per benchmark, with its target."""
    pts = [r for r in rows if r["pct_roof"] is not None and not r["error"]]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.24 * len(pts)))
    ys = list(range(len(pts)))[::-1]
    colors = ["#2ca02c" if r["target_pct"] is not None and r["pct_roof"] >= r["target_pct"]
              else ("#d62728" if r["target_pct"] is not None else "#7f7f7f") for r in pts]
    ax.barh(ys, [r["pct_roof"] for r in pts], color=colors, height=0.7)
    tx = [(r["target_pct"], y) for r, y in zip(pts, ys) if r["target_pct"] is not None]
    if tx:
        ax.scatter([t for t, _ in tx], [y for _, y in tx], marker="|", s=160, color="black",
                   zorder=3, label="target")
        ax.legend(fontsize=8, loc="lower right")
    ax.axvline(100, color="#444", lw=0.8, ls=":")
    ax.set_yticks(ys)
    ax.set_yticklabels(["%s  [%s]" % (r["name"], r["file"].split("-")[0]) for r in pts], fontsize=7)
    ax.set_xlabel("% of roofline (time at the roofline / measured time)")
    devices = sorted({r["device"] for r in pts if r["device"]})
    ax.set_title("Kernel performance as a fraction of the roofline%s" %
                 (" (" + ", ".join(devices) + ")" if devices else ""), fontsize=10)
    ax.set_xlim(0, max(105, max(r["pct_roof"] for r in pts) * 1.05))
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fname = "bench_roofline.png"
    fig.savefig(os.path.join(out, fname), dpi=110)
    plt.close(fig)
    return fname


def load_accuracy(paths):
    """Bisect reports (`v4ref bisect A B --json`): per trace point, the error as a fraction of
    its tolerance ("ratio", <= 1 passes) and the relative Frobenius error."""
    out, notes = [], []
    for path in paths or []:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            notes.append("%s unreadable: %s" % (path, e))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("points"), list):
            notes.append("%s: not a `v4ref bisect --json` report" % path)
            continue
        label = data.get("label") or os.path.splitext(os.path.basename(path))[0]
        pts = []
        for p in data["points"]:
            r = p.get("ratio")
            r = float("inf") if r == "inf" else r
            m = p.get("metrics") or {}
            block = p.get("block", "")
            if not block:  # model level: the embedding before the blocks, the head after them
                block = "embed" if p.get("name") == "embed" else "head"
            pts.append({"name": p.get("name", "?"), "block": block,
                        "local": p.get("local", p.get("name", "?")), "status": p.get("status", "?"),
                        "ratio": r, "rel_fro": m.get("rel_fro")})
        out.append({"label": label, "path": path, "mode": data.get("mode", "?"),
                    "tol_path": data.get("path", "?"), "pass": data.get("pass"), "points": pts,
                    "first": (data.get("first_failure") or {}).get("name")})
    return out, "; ".join(notes)


def block_order(points):
    seen = []
    for p in points:
        if p["block"] not in seen:
            seen.append(p["block"])
    return seen


def plot_accuracy(acc, out, idx):
    """Error / tolerance of every trace point, by block (x) and sub-step (colour)."""
    blocks = block_order(acc["points"])
    locals_ = []
    for p in acc["points"]:
        if p["local"] not in locals_:
            locals_.append(p["local"])
    fig, ax = plt.subplots(figsize=(11, 4.8))
    cmap = plt.get_cmap("tab20")
    for li, loc in enumerate(locals_):
        xs, ys = [], []
        for p in acc["points"]:
            r = p["ratio"]
            if p["local"] != loc or r is None:
                continue
            xs.append(blocks.index(p["block"]) + (li - len(locals_) / 2) * 0.6 / max(len(locals_), 1))
            ys.append(max(min(r, 1e3), 1e-6) if r == r else 1e3)
        ax.scatter(xs, ys, s=14, color=cmap(li % 20), label=loc)
    ax.axhline(1.0, color="#b00", lw=1.2, ls="--")
    ax.text(len(blocks) - 0.5, 1.15, "tolerance", color="#b00", ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 2e3)
    ax.set_xticks(range(len(blocks)))
    ax.set_xticklabels([b.rstrip(".") for b in blocks], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("error / tolerance (clipped to [1e-6, 1e3])")
    ax.set_title("%s\n(%s; tolerance: %s)" % (acc["label"], acc["mode"], acc["tol_path"]), fontsize=9)
    ax.legend(fontsize=6, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    fig.tight_layout()
    fname = "accuracy_%d.png" % idx
    fig.savefig(os.path.join(out, fname), dpi=110)
    plt.close(fig)
    return fname


def accuracy_table(acc):
    """Worst ratio and rel_fro per sub-step over all blocks."""
    by = {}
    for p in acc["points"]:
        r = p["ratio"] if p["ratio"] is not None else float("nan")
        cur = by.setdefault(p["local"], [0.0, None, 0, 0])
        if r == r and r > cur[0]:
            cur[0] = r
        if p["rel_fro"] is not None and (cur[1] is None or p["rel_fro"] > cur[1]):
            cur[1] = p["rel_fro"]
        cur[2] += 1
        cur[3] += 0 if p["status"] == "ok" else 1
    return [(k, v[0], v[1], v[2], v[3]) for k, v in by.items()]


def load_simt(simt_dir):
    """The SIMT executor's launch reports (docs/simt.md §4): one JSON per launch."""
    if not simt_dir:
        return [], "no --simt-dir given"
    if not os.path.isdir(simt_dir):
        return [], "%s does not exist (run the cpu tests first)" % simt_dir
    rows = []
    for name in sorted(os.listdir(simt_dir)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(simt_dir, name)
        try:
            with open(path) as f:
                r = json.load(f)
            r["file"] = name
            for key in ("kernel", "traffic_ratio", "t_lower_us", "mix", "sites", "findings"):
                if key not in r:
                    raise ValueError("missing key '%s'" % key)
        except (OSError, ValueError) as err:
            fail("%s: not a SIMT launch report: %s" % (path, err))
        rows.append(r)
    return rows, "" if rows else "no launch reports in %s" % simt_dir


def simt_html(simt, note, e):
    h = ["<h2>Kernels in the SIMT executor</h2>",
         "<p>Each kernel's own source run on the CPU (docs/simt.md): what it requests from global "
         "memory against the compulsory bytes of guide/kernel-targets.md, per access site the "
         "sectors per warp request and the shared-memory bank ways, and the instruction mix. "
         "<code>t_lower</code> is a lower bound from the requested bytes, not a prediction. "
         "L1/L2 hits are not modelled.</p>"]
    if not simt:
        return h + ["<p class='note'>Skipped: %s.</p>" % e(note)]
    for r in simt:
        mix = ", ".join("%s %d" % (k, v) for k, v in r["mix"].items() if v)
        h.append("<h3>%s</h3><p><code>%s</code>: grid %s, block %s, cluster %s, %s bytes of shared "
                 "memory; traffic ratio <b>%.2f</b>; t_lower H100 %.2f µs, H200 %.2f µs; findings: "
                 "%d. Mix: %s.</p>" % (
                     e(r["kernel"]), e(r["file"]), r.get("grid"), r.get("block"), r.get("cluster"),
                     r.get("smem_bytes"), r["traffic_ratio"], r["t_lower_us"]["H100"],
                     r["t_lower_us"]["H200"], len(r["findings"]), e(mix)))
        h.append("<table><tr><th class='l'>site</th><th class='l'>space</th><th class='l'>op</th>"
                 "<th>bytes/lane</th><th>requests</th><th>sectors/request</th><th>worst bank ways</th>"
                 "</tr>")
        for st in r["sites"]:
            h.append("<tr><td class='l'>%s</td><td class='l'>%s</td><td class='l'>%s</td><td>%d</td>"
                     "<td>%d</td><td>%s</td><td>%s</td></tr>" % (
                         e(st["site"]), e(st["space"]), e(st["op"]), st["access_bytes"],
                         st["requests"],
                         "%.2f" % st["sectors_per_request"] if st["space"] == "global" else "",
                         st["worst_bank_ways"] if st["space"] == "shared" else ""))
        h.append("</table>")
    return h


def write_outputs(cost, figs, table, tol, verify, verify_note, bench, bench_note, out, cost_path,
                  accuracy=(), accuracy_note="", accuracy_figs=(), bench_fig=None, simt=(),
                  simt_note=""):
    conv = conventions_text(cost)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    one_m = None
    if 1048576 in cost["contexts"]:
        i = cost["contexts"].index(1048576)
        one_m = {m: (100 * cost["models"][m]["flops_ratio_vs_v3.2"][i],
                     100 * cost["models"][m]["kv_ratio_vs_v3.2"][i]) for m in MODELS[1:]}

    # ---- Markdown
    md = ["# DeepSeek-V4 cost report", "",
          "Generated %s from `%s` (spec/cost-model.md)." % (stamp, cost_path), ""]
    if one_m:
        md += ["**At 1M tokens: V4-Flash %.1f%% FLOPs / %.2f%% KV, V4-Pro %.1f%% FLOPs / %.2f%% KV "
               "of DeepSeek-V3.2** (published: 10%% / 7%% and 27%% / 10%%)." %
               (one_m["v4-flash"][0], one_m["v4-flash"][1], one_m["v4-pro"][0], one_m["v4-pro"][1]), ""]
    md += ["## Conventions", ""] + ["* " + c for c in conv] + [""]
    md += ["## Ratios vs V3.2", "",
           "Tolerance (§8): %.2f pp FLOPs, %.2f pp KV against the published 1M targets." %
           (tol["flops"], tol["kv"]), "",
           "| L | model | FLOPs (eqFP8) | KV | target FLOPs | target KV | flag |",
           "|---|---|---|---|---|---|---|"]
    for L, m, f, k, tf, tk, flag in table:
        md.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            ctx_label(L), LABELS[m], fmt(f, "%.1f%%"), fmt(k, "%.2f%%"), fmt(tf, "%.0f%%"),
            fmt(tk, "%.0f%%"), flag))
    md += ["", "## Figures", ""]
    for title, fname in figs:
        md += ["### " + title, "", "![%s](%s)" % (title, fname), ""]
    md += ["## Verification", ""]
    if verify is None:
        md += ["Skipped: " + verify_note + ".", ""]
    else:
        rows = verify_rows(verify)
        md += ["| name | status | detail |", "|---|---|---|"]
        md += ["| %s | %s | %s |" % r for r in rows] or ["(no rows recognised)"]
        md.append("")
    md += ["## Accuracy (error as a fraction of tolerance, per trace point)", ""]
    if not accuracy:
        md += ["Skipped: " + (accuracy_note or "no --accuracy reports given") + ".", ""]
    for acc, fname in zip(accuracy, accuracy_figs):
        md += ["### " + acc["label"], "",
               "`%s`: mode %s, tolerance path %s, %s%s." % (
                   acc["path"], acc["mode"], acc["tol_path"], "PASS" if acc["pass"] else "FAIL",
                   "" if not acc["first"] else " (first failing point: %s)" % acc["first"]), "",
               "![%s](%s)" % (acc["label"], fname), "",
               "| sub-step | worst error/tolerance | worst rel_fro | points | failed |", "|---|---|---|---|---|"]
        md += ["| %s | %.3g | %s | %d | %d |" % (k, r, fmt(f, "%.3g"), n, b) for k, r, f, n, b in accuracy_table(acc)]
        md.append("")
    md += ["## Benchmarks", ""]
    if not bench:
        md += ["Skipped: " + bench_note + ".", ""]
    else:
        if bench_fig:
            md += ["![kernel performance as a fraction of the roofline](%s)" % bench_fig, ""]
        if bench_note:
            md += ["Note: " + bench_note + ".", ""]
        md += ["| file | benchmark | time | unit | % of roofline | target | verdict | counters |",
               "|---|---|---|---|---|---|---|---|"]
        md += ["| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["file"], r["name"], fmt(r["time"], "%.4g"), r["unit"], fmt(r["pct_roof"], "%.1f"),
            fmt(r["target_pct"], "%.0f"), bench_verdict(r), r["extra"]) for r in bench]
        md.append("")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md))

    # ---- HTML
    e = html.escape
    conv_html = "<ul class='conv'>" + "".join("<li>%s</li>" % e(c) for c in conv) + "</ul>"
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>DeepSeek-V4 cost report</title>",
         "<style>body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
         "td.l,th.l{text-align:left}.fig{display:flex;gap:1em;align-items:flex-start;margin:1em 0}"
         ".fig img{max-width:900px;border:1px solid #ddd}.conv{font-size:0.8em;color:#444;max-width:360px}"
         ".flag-bad{color:#b00;font-weight:bold}.flag-ok{color:#070}.note{color:#666;font-style:italic}</style>",
         "</head><body><h1>DeepSeek-V4 cost report</h1>",
         "<p>Generated %s from <code>%s</code> (spec/cost-model.md).</p>" % (e(stamp), e(cost_path))]
    if one_m:
        h.append("<p><b>At 1M tokens: V4-Flash %.1f%% FLOPs / %.2f%% KV, V4-Pro %.1f%% FLOPs / "
                 "%.2f%% KV of DeepSeek-V3.2</b> (published: 10%% / 7%% and 27%% / 10%%).</p>" %
                 (one_m["v4-flash"][0], one_m["v4-flash"][1], one_m["v4-pro"][0], one_m["v4-pro"][1]))
    h.append("<h2>Ratios vs V3.2</h2><p>Tolerance (§8): %.2f pp FLOPs, %.2f pp KV against the "
             "published 1M targets.</p>" % (tol["flops"], tol["kv"]))
    h.append("<div class='fig'><table><tr><th>L</th><th class='l'>model</th><th>FLOPs (eqFP8)</th>"
             "<th>KV</th><th>target FLOPs</th><th>target KV</th><th class='l'>flag</th></tr>")
    for L, m, f, k, tf, tk, flag in table:
        cls = "flag-ok" if flag == "within tolerance" else ("flag-bad" if "off by" in flag else "")
        h.append("<tr><td>%s</td><td class='l'>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                 "<td class='l %s'>%s</td></tr>" % (
                     ctx_label(L), LABELS[m], fmt(f, "%.1f%%"), fmt(k, "%.2f%%"),
                     fmt(tf, "%.0f%%"), fmt(tk, "%.0f%%"), cls, e(flag)))
    h.append("</table>" + conv_html + "</div>")
    h.append("<h2>Figures</h2>")
    for title, fname in figs:
        h.append("<h3>%s</h3><div class='fig'><img src='%s' alt='%s'>%s</div>" % (
            e(title), e(fname), e(title), conv_html))
    h.append("<h2>Verification</h2>")
    if verify is None:
        h.append("<p class='note'>Skipped: %s.</p>" % e(verify_note))
    else:
        h.append("<table><tr><th class='l'>name</th><th class='l'>status</th><th class='l'>detail</th></tr>")
        for n, s, d in verify_rows(verify):
            h.append("<tr><td class='l'>%s</td><td class='l'>%s</td><td class='l'>%s</td></tr>" % (
                e(n), e(s), e(d)))
        h.append("</table>")
    h.append("<h2>Accuracy</h2><p>Every trace point of a forward compared with the reference "
             "(<code>v4ref bisect --json</code>): error as a fraction of its tolerance-table row; "
             "points above the dashed line fail.</p>")
    if not accuracy:
        h.append("<p class='note'>Skipped: %s.</p>" % e(accuracy_note or "no --accuracy reports given"))
    for acc, fname in zip(accuracy, accuracy_figs):
        h.append("<h3>%s</h3><p><code>%s</code>: mode %s, tolerance path %s, <b>%s</b>%s.</p>" % (
            e(acc["label"]), e(acc["path"]), e(acc["mode"]), e(acc["tol_path"]),
            "PASS" if acc["pass"] else "FAIL",
            "" if not acc["first"] else " (first failing point: %s)" % e(acc["first"])))
        h.append("<div class='fig'><img src='%s' alt='%s'><table><tr><th class='l'>sub-step</th>"
                 "<th>worst err/tol</th><th>worst rel_fro</th><th>points</th><th>failed</th></tr>" % (
                     e(fname), e(acc["label"])))
        for k, r, f, n, b in accuracy_table(acc):
            h.append("<tr><td class='l'>%s</td><td>%.3g</td><td>%s</td><td>%d</td><td>%d</td></tr>" % (
                e(k), r, fmt(f, "%.3g"), n, b))
        h.append("</table></div>")
    h.append("<h2>Benchmarks</h2>")
    if not bench:
        h.append("<p class='note'>Skipped: %s.</p>" % e(bench_note))
    else:
        if bench_fig:
            h.append("<div class='fig'><img src='%s' alt='kernel performance as a fraction of the "
                     "roofline'></div>" % e(bench_fig))
        if bench_note:
            h.append("<p class='note'>Note: %s.</p>" % e(bench_note))
        h.append("<table><tr><th class='l'>file</th><th class='l'>benchmark</th><th>time</th>"
                 "<th class='l'>unit</th><th>% of roofline</th><th>target</th>"
                 "<th class='l'>verdict</th><th class='l'>counters</th></tr>")
        for r in bench:
            v = bench_verdict(r)
            cls = "flag-ok" if v == "meets target" else ("flag-bad" if v.startswith(("FAILED", "below")) else "")
            h.append("<tr><td class='l'>%s</td><td class='l'>%s</td><td>%s</td><td class='l'>%s</td>"
                     "<td>%s</td><td>%s</td><td class='l %s'>%s</td><td class='l'>%s</td></tr>" % (
                         e(r["file"]), e(r["name"]), fmt(r["time"], "%.4g"), e(r["unit"]),
                         fmt(r["pct_roof"], "%.1f"), fmt(r["target_pct"], "%.0f"), cls, e(v),
                         e(r["extra"])))
        h.append("</table>")
    h += simt_html(simt, simt_note, e)
    h.append("</body></html>")
    with open(os.path.join(out, "index.html"), "w") as f:
        f.write("\n".join(h))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cost", required=True, help="JSON from `v4ref cost --json --sweep`")
    ap.add_argument("--verify", help="verification/test metrics JSON (optional)")
    ap.add_argument("--bench-dir", help="folder of Google Benchmark JSON files (optional)")
    ap.add_argument("--accuracy", nargs="*", default=[],
                    help="`v4ref bisect --json` reports to plot (optional)")
    ap.add_argument("--simt-dir", help="folder of SIMT executor launch reports (optional)")
    ap.add_argument("--out", required=True, help="output folder")
    a = ap.parse_args()
    cost = load_cost(a.cost)
    if len(cost["contexts"]) < 2:
        fail("%s has %d context(s); produce it with `v4ref cost --json --sweep`" %
             (a.cost, len(cost["contexts"])))
    os.makedirs(a.out, exist_ok=True)
    figs = [
        ("eqFP8 and raw GFLOPs per token vs context", plot_flops(cost, a.out)),
        ("eqFP8 GFLOPs per token by component", plot_stacked(cost, a.out)),
        ("KV-cache bytes vs context", plot_kv(cost, a.out)),
        ("V4 / V3.2 ratios vs context", plot_ratios(cost, a.out)),
    ]
    table, tol = ratio_table(cost)
    verify, verify_note = load_verify(a.verify)
    bench, bench_note = load_bench(a.bench_dir)
    accuracy, accuracy_note = load_accuracy(a.accuracy)
    accuracy_figs = [plot_accuracy(acc, a.out, i) for i, acc in enumerate(accuracy)]
    bench_fig = plot_bench(bench, a.out)
    simt, simt_note = load_simt(a.simt_dir)
    write_outputs(cost, figs, table, tol, verify, verify_note, bench, bench_note, a.out, a.cost,
                  accuracy, accuracy_note, accuracy_figs, bench_fig, simt, simt_note)
    bad = [r for r in table if "off by" in r[6]]
    print("wrote %s (%d figures); %s" % (
        os.path.join(a.out, "index.html"), len(figs),
        "ratio flags: %d outside tolerance" % len(bad) if bad else "all 1M ratios within tolerance"))


if __name__ == "__main__":
    main()
