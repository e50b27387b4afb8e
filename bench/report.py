"""The bench's reports: a Markdown table, results.json, results.md and chart.png."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from flaxsent.bench.flops import PEAK_TFLOPS
from flaxsent.bench.parity import (
    BF16_MIN_ARGMAX,
    BF16_REL_MAX_ABS,
    FP32_MAX_ABS,
    INT8_MIN_ARGMAX,
    INT8_REL_MAX_ABS,
)
from flaxsent.bench.results_folder import write_record

COLUMNS = ("strategy", "dtype", "dev", "runs (pass s)", "sent/s", "real tok/s", "pad eff",
           "model TFLOP/s (MFU)", "compile cold / warm (s)", "first result cold / warm (s)",
           "peak RSS (MiB)", "max |Δ|", "mean |Δ|", "argmax", "parity")
FAMILY_COLORS = {"torch": "#7f7f7f", "ort": "#2ca02c", "flax": "#1f77b4"}


def _num(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, fmt)


def _pair(a: float | None, b: float | None) -> str:
    if a is None and b is None:
        return "–"
    return f"{_num(a, '.2f')} / {_num(b, '.2f')}"


def _runs(r: dict[str, Any]) -> str:
    """'3 (10.6-18.9 s)': timed passes and their range."""
    times = r["seconds"]

    def secs(t: float) -> str:
        return f"{t:.1f}" if t >= 10 else f"{t:.2f}"

    if len(times) == 1:
        return f"1 ({secs(times[0])} s)"
    return f"{len(times)} ({secs(min(times))}–{secs(max(times))} s)"


def _dtype_cell(r: dict[str, Any]) -> str:
    """'fp32', 'bf16', 'bf16 (autocast)', 'fp16 (autocast)', 'int8', or 'fp32 (default prec.)'
    for float32 at the backend's fast precision."""
    if r.get("quantize"):
        return r["quantize"]
    tag = {"bfloat16": "bf16", "float16": "fp16"}.get(r["dtype"])
    if tag:
        return f"{tag} (autocast)" if r["family"] == "torch" else tag
    return "fp32" if r.get("precision", "highest") == "highest" else "fp32 (default prec.)"


def _parity_cell(r: dict[str, Any]) -> str:
    p = r["parity"]
    if p.get("reference"):
        return "reference"
    if p["parity_ok"] and not p.get("agreement_ok", True):  # random weights: reported only
        return f"ok (argmax < {100 * p['min_argmax']:g}%: random weights)"
    if p["parity_ok"]:
        return "ok"
    if not p.get("agreement_ok", True):  # reported, never hidden: below its agreement floor
        return f"**FAIL** (argmax < {100 * p['min_argmax']:g}%)"
    return "**FAIL**"


def _flops_cell(r: dict[str, Any]) -> str:
    """'0.26' (model TFLOP/s) or '412 (41.7%)' with the MFU where the device's peak is known."""
    tflops = r.get("model_tflops_per_s")
    if tflops is None:
        return "–"
    cell = f"{tflops:.3g}"
    return cell + (f" ({100 * r['mfu']:.1f}%)" if r.get("mfu") is not None else "")


def table(record: dict[str, Any]) -> str:
    """One row per strategy: speed, padding, cold start, memory and parity."""
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|"]
    for r in record["strategies"]:
        p = r["parity"]
        ref = p.get("reference")
        name = r["name"] + (f" (b{r['batch_size']})" if r.get("batch_size") else "")
        cells = [
            name, _dtype_cell(r), str(r["n_devices"]),
            _runs(r), _num(r["sentences_per_s"], ".1f"),
            _num(r["real_tokens_per_s"], ",.0f"), _num(100 * r["padding_efficiency"], ".0f") + "%",
            _flops_cell(r), _pair(r["compile_cold_s"], r["compile_warm_s"]),
            _pair(r["first_result_cold_s"], r["first_result_warm_s"]),
            _num(r["peak_rss_mb"], ",.0f") + (f" (+{r['peak_device_mb']:,.0f} dev)"
                                                if r.get("peak_device_mb") else ""),
            "–" if ref else _num(p["max_abs"], ".1e"),
            "–" if ref else _num(p["mean_abs"], ".1e"),
            "–" if ref else _num(100 * p["argmax_agreement"], ".1f") + "%",
            _parity_cell(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _torch_device(record: dict[str, Any]) -> str:
    return next((r.get("device") or "cpu" for r in record["strategies"]
                 if r["family"] == "torch"), "cpu")


def _threads(record: dict[str, Any]) -> str:
    """'threads: PyTorch 2, XLA 2 (each given 2, ...)': what each side was given and ran with."""
    s = record["settings"]
    xla = s["xla_threads"] if s["xla_threads"] is not None else "?"
    ort = ", ONNX Runtime intra-op " + str(s["threads"]) \
        if any(r["family"] == "ort" for r in record["strategies"]) else ""
    return (f"threads: PyTorch {s['torch_threads']}, XLA {xla}{ort} (each given {s['threads']}, "
            f"the cores this process may use; XLA via {s['xla_threads_set_by']})")


def _code(record: dict[str, Any]) -> str:
    """The commit the bench ran, and whether tracked files had changed since."""
    git = record["git"]
    if git["commit"] is None:
        return "not a git checkout"
    return f"commit {git['commit'][:12]}" + (" + uncommitted changes" if git["dirty"] else "")


def header(record: dict[str, Any]) -> str:
    """What ran where: model (random or real weights), corpus, machine, threads, versions."""
    m, c, v = record["model"], record["corpus"], record["versions"]
    stats = c["length_stats"]
    source = c.get("generator") or f"{c['source']} ({c['format']})"
    lib = ", ".join(f"{k} {v[k]}" for k in ("jax", "flax", "torch", "transformers") if v.get(k))
    return "\n".join([
        f"**model:** {m['label']} — weights: **{m['weights']}**",
        f"**corpus:** {c['n']} sentences, {source}; tokens/sentence mean {stats['mean']:.1f}, "
        f"median {stats['median']:.0f}, max {stats['max']:.0f}; {c['real_tokens']:,} real "
        f"tokens ([CLS]/[SEP] counted), {c['n_truncated']} truncated",
        f"**machine:** {record['machine_label']}; PyTorch on {_torch_device(record)}; "
        f"{_threads(record)}; {record['machine']['platform']}",
        f"**code:** flaxsent {v.get('flaxsent')} ({_code(record)}); python {v['python']}, {lib}",
    ])


def logit_scale(record: dict[str, Any]) -> str:
    """'mean |logit| 2.31, max 4.02': the scale a |Δlogit| is read against."""
    scale = record["reference_logit_scale"]
    return f"mean |logit| {scale['mean_abs']:.3g}, max {scale['max_abs']:.3g}"


def legend(record: dict[str, Any]) -> str:
    """How to read the columns, the tolerances, and the run's notes."""
    mode = record["mode"]
    budget = "" if mode["budget_s"] == math.inf else \
        f", up to {mode['repeats']} passes or {mode['budget_s']:g} s per strategy"
    items = [
        f"sent/s and real tok/s: median of the timed full passes ('runs'{budget}) after "
        "warm-up, tokenizing included; real tokens are the same for every strategy.",
        "pad eff: real / computed tokens (PyTorch: rows x each batch's longest).",
        "compile / first result / peak RSS: fresh processes; cold = empty JAX compilation "
        "cache, warm = a second process reusing it. First result = launch to one sentence "
        "classified (imports, weights, compile included). Peak RSS = high-water mark after "
        "loading and running every shape the corpus needs once (PyTorch: its heaviest batch); "
        "'dev': peak accelerator memory where the backend reports it.",
        f"parity vs {record['settings']['reference']} (PyTorch fp32) on every sentence: fp32 "
        f"FAILs past max |Δlogit| {FP32_MAX_ABS:g}; bf16 FAILs past max |Δlogit| "
        f"{BF16_REL_MAX_ABS:g} x max(1, mean |reference logit|) or argmax agreement below "
        f"{100 * BF16_MIN_ARGMAX:g}%, as do fp16 and fp32 at default precision (TF32 on NVIDIA "
        "GPUs, bf16 passes on TPUs): bf16 keeps about 3 significant digits, so its error grows "
        f"with the logits; int8 FAILs past {INT8_REL_MAX_ABS:g} x max(1, mean |reference logit|)"
        f" or argmax agreement below {100 * INT8_MIN_ARGMAX:g}% (an int8 step is 1/127 of a "
        "whole row's or tensor's range; on random weights the agreement is reported, not "
        "failed). Read |Δ| against the reference's own "
        f"logits: {logit_scale(record)} over the corpus (a small |Δ| between near-zero logits "
        "proves little).",
        _flops_legend(record),
    ]
    items += _prepared_legend(record)
    items += record.get("notes", [])
    return "\n".join(f"- {item}" for item in items)


def _flops_legend(record: dict[str, Any]) -> str:
    """How model TFLOP/s and MFU are counted, for this run's model and corpus."""
    f = record.get("model_flops") or {}
    if not f:
        return "model TFLOP/s: not computed"
    peaks = ", ".join(key for key, _ in PEAK_TFLOPS)
    where = f"peak of {f['accelerator']}" if f.get("accelerator") else \
        "no accelerator: MFU is left empty on a CPU (no published peak)"
    return (f"model TFLOP/s: model FLOPs of a pass ({f['per_pass']:.3g}, "
            f"{f['per_real_token'] / 1e6:.3g} MFLOP a real token: 2 x "
            f"{f['encoder_matmul_params']:,} encoder matmul weights, attention's 4·L·d per "
            "token and layer, the head per sentence; padding not counted) over the median pass; "
            f"MFU: that over the device's published dense peak for the row's arithmetic "
            f"(fp32, tf32, bf16, fp16, int8; table for {peaks}); {where}.")


def _prepared_legend(record: dict[str, Any]) -> list[str]:
    """What the peers' one-time preparation did and took (untimed, apart from every row)."""
    prepared = (record.get("peers") or {}).get("prepared") or {}
    items = []
    ort = prepared.get("onnxruntime")
    if ort and "error" not in ort:
        fused = ", ".join(f"{k} {v}" for k, v in ort["fused_operators"].items()) or "none"
        variants = "; ".join(
            f"{k.replace('_', '-')} {100 * v['argmax_agreement']:.1f}% (max |Δ| "
            f"{v['max_abs']:.2g})" for k, v in ort["int8_variants"].items())
        items.append(
            f"ort-sorted's model, prepared once and untimed ({ort['prepare_s']:.1f} s): "
            f"torch.onnx.export {ort['export_s']:.1f} s (opset {ort['opset']}), BERT fusion "
            f"{ort['fuse_s']:.1f} s (fused: {fused}), quantize_dynamic {ort['quantize_s']:.1f} s"
            f"; int8 weights {ort['int8_weights'].replace('_', '-')}, the better argmax "
            f"agreement with PyTorch fp32 on the first {ort['selection_sentences']} sentences "
            f"({variants}).")
    flax_ort = prepared.get("flax-ort")
    if flax_ort and "error" not in flax_ort:
        items.append(f"flax-ort's folder, exported once and untimed: `{flax_ort['command']}`,"
                     f" {flax_ort['export_s']:.1f} s; graphs: {', '.join(flax_ort['files'])}.")
    for name, info in prepared.items():
        if "error" in info:
            items.append(f"preparing {name} FAILED: {info['error'][:300]}")
    return items


def markdown(record: dict[str, Any]) -> str:
    """The stdout report: header, table, legend."""
    failing = [r["key"] for r in record["strategies"] if not r["parity_ok"]]
    verdict = "all strategies within parity tolerance" if record["parity_ok"] else \
        "PARITY FAILURE: " + ", ".join(failing)
    if record.get("failed_strategies"):
        verdict += "; FAILED to run: " + ", ".join(record["failed_strategies"])
    return "\n\n".join([f"## flaxsent bench — {verdict}", header(record), table(record),
                        legend(record), f"total wall time: {record['wall_s']:.0f} s"])


def shape_table(record: dict[str, Any]) -> str:
    """max |Δlogit| per shape the sentences ran in (rows) and strategy (columns)."""
    rows = [r for r in record["strategies"] if not r["parity"].get("reference")]
    shapes: dict[str, int] = {}
    for r in rows:
        for g in r["parity"]["per_shape"]:
            shapes.setdefault(g["shape"], g["n"])
    lines = ["| shape (rows x length x texts a row) | n | " + " | ".join(r["key"] for r in rows)
             + " |", "|---|---:|" + "---:|" * len(rows)]
    for label, n in shapes.items():
        cells = []
        for r in rows:
            g = next((g for g in r["parity"]["per_shape"] if g["shape"] == label), None)
            cells.append("–" if g is None else
                         f"{g['max_abs']:.1e} ({100 * g['argmax_agreement']:.0f}%)")
        lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shape_speed_table(record: dict[str, Any]) -> str:
    """flaxsent's default plan, each shape's sentences run alone: speed and padding."""
    r = next((r for r in record["strategies"] if r.get("per_shape")), None)
    if r is None:
        return "(not measured)"
    lines = ["| shape | kind | sentences | batches | sent/s | real tok/s | pad eff |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for g in r["per_shape"]:
        lines.append(f"| {g['shape']} | {'packed' if g['packed'] else 'bucket'} | {g['n']} | "
                     f"{g['batches']} | {g['sentences_per_s']:.1f} | "
                     f"{g['real_tokens_per_s']:,.0f} | {100 * g['padding_efficiency']:.0f}% |")
    return "\n".join(lines)


def describe_rows(record: dict[str, Any]) -> str:
    """What each strategy did; for flaxsent, the shapes it compiled."""
    lines = []
    for r in record["strategies"]:
        line = f"- **{r['key']}**: {r['description']}"
        if r.get("compiled_shapes"):
            shapes = ", ".join("x".join(map(str, s)) for s in r["compiled_shapes"])
            line += f"; compiled shapes: {shapes}"
        if r.get("variants"):
            line += "; tried batch sizes: " + ", ".join(
                f"{v['batch_size']} ({v['sentences_per_s']:.1f}/s)" for v in r["variants"])
        lines.append(line)
    return "\n".join(lines)


def results_md(record: dict[str, Any]) -> str:
    return "\n\n".join([
        markdown(record),
        "### strategies", describe_rows(record),
        "### flaxsent's shapes: each shape's sentences alone (flax-bucketed, fp32)",
        shape_speed_table(record),
        f"### parity per shape: max |Δlogit| (argmax agreement); reference {logit_scale(record)}",
        shape_table(record),
        f"created {record['created_utc']} by `{record['command']}`",
    ]) + "\n"


def chart(record: dict[str, Any], path: Path) -> None:
    """Throughput per strategy (red: parity failure) and max |Δlogit| per shape."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = record["strategies"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 0.5 * len(rows) + 3.5))
    names = [r["key"] for r in rows]
    speeds = [r["sentences_per_s"] for r in rows]
    colors = ["#d62728" if not r["parity_ok"] else FAMILY_COLORS.get(r["family"], "#1f77b4")
              for r in rows]
    y = range(len(rows))
    n = record["corpus"]["n"]
    spread = [[s - n / max(r["seconds"]) for s, r in zip(speeds, rows, strict=True)],
              [n / min(r["seconds"]) - s for s, r in zip(speeds, rows, strict=True)]]
    ax1.barh(list(y), speeds, color=colors, xerr=spread, capsize=3, ecolor="#333333")
    ax1.set_yticks(list(y), names)
    ax1.invert_yaxis()
    for i, r in enumerate(rows):
        label = f"  {speeds[i]:.1f}/s, pad {100 * r['padding_efficiency']:.0f}%"
        ax1.text(n / min(r["seconds"]), i, label + ("" if r["parity_ok"] else "  PARITY FAIL"),
                 va="center", fontsize=8)
    ax1.set_xlim(0, max(n / min(r["seconds"]) for r in rows) * 1.45)
    ax1.set_xlabel("sentences / s (median pass; whiskers: slowest and fastest pass)")
    ax1.set_title("throughput (grey: PyTorch, green: ONNX Runtime, blue: flaxsent, red: parity "
                  "failure)", fontsize=9)

    floor = 1e-9
    for r in rows:
        per = r["parity"].get("per_shape") or []
        if not per:
            continue
        xs = [f"{b['shape'].split(' (')[0]}\n{b['shape'].split(' (')[-1][:-1]}, n={b['n']}"
              for b in per]
        ys = [max(b["max_abs"], floor) for b in per]
        style = ":" if r.get("quantize") else "--" if r["dtype"] != "float32" else "-"
        ax2.plot(xs, ys, style, marker="o", label=r["key"],
                 color="#d62728" if not r["parity_ok"] else None)
    ax2.axhline(FP32_MAX_ABS, color="k", lw=0.8, ls=":")
    ax2.text(0, FP32_MAX_ABS, " fp32 tolerance", fontsize=7, va="bottom")
    reduced = {r["parity"].get("tolerance_class", "bfloat16"): r["parity"]["limit"] for r in rows
               if r["parity"].get("limit", 0) > FP32_MAX_ABS}
    for kind, limit in sorted(reduced.items()):
        ax2.axhline(limit, color="k", lw=0.8, ls="-.")
        ax2.text(0, limit, f" {'bf16' if kind == 'bfloat16' else kind} tolerance", fontsize=7,
                 va="bottom")
    ax2.set_yscale("log")
    ax2.set_xlabel("shape the sentences ran in (default plan)")
    ax2.set_ylabel(f"max |Δlogit| vs PyTorch fp32 (floor {floor:g})")
    ax2.set_title("parity per shape", fontsize=9)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=7)
    m = record["model"]
    fig.suptitle(f"flaxsent bench — {record['machine_label']}\n{m['label']} "
                 f"(weights: {m['weights']}); {record['corpus']['n']} sentences", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_reports(record: dict[str, Any], out_dir: Path) -> str:
    """Write results.json, results.md and chart.png into out_dir; return the stdout Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_record(out_dir, "results", _jsonable(record), results_md(record))
    chart(record, out_dir / "chart.png")
    return markdown(record)
