"""The report of an ahead-of-time TPU compile: a Markdown table for stdout, aot.json beside it."""

from __future__ import annotations

import datetime
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from flaxsent.aot.compile import AotRun, corpus_estimate, estimate
from flaxsent.io import durable

ESTIMATE_NOTE = ("ESTIMATES, not measurements: a roofline per device, max(FLOPs / peak, bytes "
                 "accessed / HBM bandwidth), from XLA's cost analysis and the chip's published "
                 "bf16 peak and HBM bandwidth; no host, input-transfer or launch time. XLA counts "
                 "every operation's bytes as if from HBM (the memory term is pessimistic where "
                 "TPU keeps data in VMEM); the peak-FLOPs ceiling is the compute term alone.")
_KINDS = {"mesh": "forward, jit mesh (Engine)", "pmap": "forward, pmap (PmapEngine)",
          "train": "train step (TrainStep)"}


def _versions() -> dict[str, str | None]:
    """Python and the libraries the compiled programs depend on, libtpu included."""
    from flaxsent.io.machine import versions
    out = versions()
    try:
        out["libtpu"] = metadata.version("libtpu")
    except metadata.PackageNotFoundError:
        out["libtpu"] = None
    return out


def to_json(run: AotRun) -> dict[str, Any]:
    """Everything the run found, with the machine it compiled on and the estimates' inputs."""
    from flaxsent.io.machine import cpu_model, git_state
    programs = []
    for p in run.programs:
        entry = p.as_dict()
        entry["fits_hbm"] = p.memory["total"] <= run.topology.device_hbm_bytes
        entry["estimate"] = estimate(run, p)
        programs.append(entry)
    train = run.train_plan
    return {
        "kind": "flaxsent-aot",
        "date": datetime.date.today().isoformat(),
        "estimate_note": ESTIMATE_NOTE,
        "topology": run.topology.describe(),
        "compiled_on": {"cpu_model": cpu_model(), "versions": _versions(), "git": git_state(),
                        "seconds": round(run.seconds, 1)},
        "model": {"source": run.model, "weights": "not read (compiling needs shapes only)",
                  "config": run.config},
        "dtype": run.dtype, "quantize": run.quantize, "matmul_precision": run.precision,
        "plan": {"shapes": [list(s.as_tuple()) for s in run.plan.shapes()],
                 "max_length": run.plan.max_length,
                 "traced": {kind: [list(t) for t in shapes] for kind, shapes in run.traced.items()},
                 # the same shapes at full rows (the classifier adds rungs of fewer rows)
                 "same_as_classifier_default": run.plan.shapes() == run.classifier_plan.shapes(),
                 "classifier_default_shapes": [list(s.as_tuple())
                                               for s in run.classifier_plan.shapes()]},
        "train_plan": None if train is None else {
            "shapes": [list(s.as_tuple()) for s in train.shapes()],
            "compiled": "the shape the recipe's 32-example steps take most on the corpus"},
        "programs": programs,
        "corpus_estimate": corpus_estimate(run),
        **({"corpus_estimate_int8": corpus_estimate(run, "int8")} if run.quantize == "int8"
           else {}),
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def _padding(tiles: dict[str, int]) -> str:
    return f"+{(tiles['tiled'] / tiles['logical'] - 1) * 100:.0f}%" if tiles["logical"] else "–"


def _memory(m: dict[str, int]) -> str:
    """args + temp + out + code (- aliased) = total, in MB."""
    text = " + ".join(_mb(m[k]) for k in ("arguments", "temporaries", "outputs", "generated_code"))
    if m["aliased"]:
        text += f" - {_mb(m['aliased'])} aliased"
    return f"{text} = **{_mb(m['total'])}**"


def _row(p: dict[str, Any], topo: dict[str, Any]) -> str:
    """One compiled program as a table row."""
    est, m = p["estimate"], p["memory"]
    shape = "x".join(map(str, p["shape"]))
    hbm = m["total"] / (topo["chip_hbm_gb"] * 1e9 / topo["devices_per_chip"])
    unit = "examples" if p["kind"] == "train" else "sentences"
    int8 = ", **int8**" if p.get("quantize", "none") == "int8" else ""
    return (f"| {_KINDS[p['kind']]}{int8} | {shape} | {p['shape'][0] // topo['devices']} "
            f"| {p['flops'] / 1e9:,.1f} | {p['bytes_accessed'] / 1e9:,.2f} | {_memory(m)} "
            f"| {hbm:.1%}{'' if p['fits_hbm'] else ' (does not fit)'} "
            f"| {_padding(p['tiles']['batch'])} / {_padding(p['tiles']['weights'])} "
            f"| {p['compile_s']:.1f} | {est['seconds'] * 1e3:.2f} ({est['bound']}) "
            f"| **{est['items_per_s']:,.0f}** {unit} ({p['items'] / est['compute_s']:,.0f}) |")


def markdown(report: dict[str, Any]) -> str:
    """The report (`to_json`'s) as Markdown: the slice, a row per program, the corpus estimate."""
    topo, built, cfg = report["topology"], report["compiled_on"], report["model"]["config"]
    plan, corpus = report["plan"], report["corpus_estimate"]
    batches = ", ".join(f"{k} x {shape}" for shape, k in corpus["batches"].items())
    int8 = report.get("corpus_estimate_int8")
    same = "the same" if plan["same_as_classifier_default"] else \
        f"different: {plan['classifier_default_shapes']}"
    lines = [
        f"## flaxsent aot: {topo['name']} ({topo['devices']} x {topo['device_kind']}), "
        f"{report['dtype']}{' and int8' if int8 else ''}",
        "",
        f"Model: {report['model']['source']} (dim {cfg['dim']}, {cfg['n_layers']} layers; "
        f"weights not read). Compiled {report['date']} by libtpu {built['versions']['libtpu']} "
        f"for compile-only devices, on a CPU host ({built['cpu_model']}) with no TPU. Figures "
        f"are per device, from XLA. {topo['chip']}: {topo['chip_bf16_tflops']:g} TFLOP/s bf16, "
        f"{topo['chip_hbm_gb']:g} GB HBM at {topo['chip_hbm_bandwidth_gbps']:g} GB/s per chip "
        f"({topo['source']}); {topo['devices_per_chip']} device(s) per chip.",
        "",
        "| program | shape (rows x len x slots) | rows/device | GFLOP/device "
        "| GB accessed/device | memory/device, MB (args + temp + out + code) | of HBM "
        "| tile padding (batch / weights) | compile s | est. ms/run (bound) "
        "| **est. items/s per slice** (peak-FLOPs ceiling) |",
        "|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|",
        *(_row(p, topo) for p in report["programs"]),
        "",
        f"**Corpus ESTIMATE:** the SST-2-like corpus ({corpus['sentences']} sentences, mean "
        f"{corpus['mean_tokens']:.1f} tokens, {corpus['texts_per_packed_row']:.2f} texts per "
        f"packed row) as the classifier batches it ({batches}): "
        f"**{corpus['sentences_per_s']:,.0f} sentences/s per slice**."
        + (f" int8 (the encoder's dense layers as int8 x int8 -> int32 matmuls at "
           f"{topo['chip_int8_tops']:g} TOP/s per chip, the rest {report['dtype']}): "
           f"**{int8['sentences_per_s']:,.0f} sentences/s per slice**." if int8 else ""),
        "",
        f"Plan: {len(plan['shapes'])} shape(s), rows a multiple of 8 per device; the "
        f"`Classifier`'s default plan on this slice is {same}.",
    ]
    if report["train_plan"]:
        lines[-1] += (f" Training: the step ladder {report['train_plan']['shapes']}; compiled: "
                      f"{report['train_plan']['compiled']}.")
    lines += ["", ESTIMATE_NOTE + " Compile times were measured on a shared CPU: they vary "
              "with its load."]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: str | Path) -> Path:
    """Write the report as aot.json and aot.md into `out` (created); the JSON's path."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "aot.json"
    durable.write_text(path, json.dumps(report, indent=2) + "\n")
    durable.write_text(folder / "aot.md", markdown(report))
    return path
