"""`python -m flaxsent.bench.dist_overhead`: Beam and Ray Data against `flaxsent predict`.

The same generated sentences go through each engine as a user runs it, each in a fresh process
on a warm compilation cache: `flaxsent predict` (the CLI) on a text file and on a Parquet file;
the README's Beam pipeline (DirectRunner, text file in, JSONL out); the README's Ray Data job
(local cluster, Parquet in, Parquet out). Every run is timed wall-clock, start-up included, at
two file sizes: the difference gives each engine's steady rate (sentences/s) and its fixed cost
(seconds of start-up), so the overhead of an engine is both a rate ratio and extra seconds.
Every run's output is counted: an engine that loses or duplicates a row fails the bench.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from flaxsent.bench.child import run_child
from flaxsent.bench.results_folder import write_record
from flaxsent.bench.sysinfo import CpuContention, machine_info, machine_label

from flaxsent.core.devices import pin_cpu_where_no_accelerator
from flaxsent.embedded.corpus import generate_corpus
from flaxsent.embedded.default_model import default_model_folder
from flaxsent.io.machine import git_state, versions

ENGINES = ("predict-txt", "beam", "predict-parquet", "ray")
BASELINE = {"beam": "predict-txt", "ray": "predict-parquet"}  # same input file


def write_inputs(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """The same n sentences as reviews.txt (one a line) and reviews.parquet (a text column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    texts = generate_corpus(n, seed=seed)
    txt, parquet = folder / "reviews.txt", folder / "reviews.parquet"
    txt.write_text("\n".join(texts) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": texts, "id": list(range(n))}), parquet)
    return txt, parquet


# ------------------------------------------------------------------ the engines, one a process

def beam_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """The README's Beam pipeline on the DirectRunner: text file in, JSONL out."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference

    from flaxsent.integrations.beam import FlaxsentModelHandler

    def to_json(result: Any) -> str:
        text = result.example.decode("utf-8", errors="backslashreplace")
        return json.dumps({"text": text, **result.inference}, ensure_ascii=False)

    with beam.Pipeline(runner="DirectRunner") as pipeline:
        _ = (pipeline
             | beam.io.ReadFromText(spec["input"], coder=beam.coders.BytesCoder())
             | RunInference(FlaxsentModelHandler(spec["model"], platform=spec["platform"]))
             | beam.Map(to_json)
             | beam.io.WriteToText(spec["output"], shard_name_template=""))
    with open(spec["output"], "rb") as f:
        return {"rows_out": sum(1 for _ in f)}


def ray_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """The README's Ray Data job on a local cluster: Parquet in, Parquet out."""
    import pyarrow.parquet as pq
    import ray

    from flaxsent.integrations.ray import FlaxsentPredictor
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False)
    try:
        ds = ray.data.read_parquet(spec["input"])
        ds = ds.map_batches(FlaxsentPredictor, fn_constructor_kwargs={"model_path": spec["model"]},
                            compute=ray.data.ActorPoolStrategy(size=1), batch_size=4096,
                            batch_format="pandas")
        ds.write_parquet(spec["output"])
    finally:
        ray.shutdown()
    return {"rows_out": pq.read_table(spec["output"]).num_rows}


def _predict(model: str, source: Path, output: Path) -> dict[str, Any]:
    """`flaxsent predict SOURCE -o OUTPUT` as a user runs it."""
    cmd = [sys.executable, "-m", "flaxsent", "predict", str(source), "--model", model,
           "-o", str(output), "--force", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    if output.suffix == ".parquet":
        import pyarrow.parquet as pq
        return {"rows_out": pq.read_table(output).num_rows}
    with open(output, "rb") as f:
        return {"rows_out": sum(1 for _ in f)}


def run_engine(engine: str, model: str, txt: Path, parquet: Path, out_dir: Path,
               platform: str) -> dict[str, Any]:
    """One timed run of `engine` in a fresh process: wall seconds and rows written."""
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "predict-txt": lambda: _predict(model, txt, out_dir / "predict.jsonl"),
        "predict-parquet": lambda: _predict(model, parquet, out_dir / "predict.parquet"),
        "beam": lambda: run_child(beam_in_child, {
            "model": model, "input": str(txt), "output": str(out_dir / "beam.jsonl"),
            "platform": platform}, timeout_s=None),
        "ray": lambda: run_child(ray_in_child, {
            "model": model, "input": str(parquet), "output": str(out_dir / "ray")},
            timeout_s=None),
    }
    shutil.rmtree(out_dir / "ray", ignore_errors=True)  # Ray adds files to a folder
    start = time.perf_counter()
    out = runs[engine]()
    out["seconds"] = time.perf_counter() - start
    return out


# ------------------------------------------------------------------ the report

def summarize(walls: dict[str, dict[int, float]], small: int, big: int) -> dict[str, Any]:
    """Per engine: steady sentences/s and fixed seconds from the two sizes (None when the big
    file was not slower: too few rows to tell); each scale-out engine's overhead against
    predict on its input file."""
    out: dict[str, Any] = {}
    for engine, by_size in walls.items():
        extra = by_size[big] - by_size[small]
        rate = (big - small) / extra if extra > 0 else None
        out[engine] = {"wall_s": {str(k): round(v, 2) for k, v in by_size.items()},
                       "steady_sentences_per_s": round(rate, 1) if rate else None,
                       "fixed_s": round(by_size[small] - small / rate, 2) if rate else None}
    for engine, base in BASELINE.items():
        if engine not in out or base not in out:
            continue
        mine, theirs = out[engine], out[base]
        measured = mine["steady_sentences_per_s"] and theirs["steady_sentences_per_s"]
        mine["vs_predict"] = {
            "baseline": base,
            "steady_rate_ratio": round(mine["steady_sentences_per_s"]
                                       / theirs["steady_sentences_per_s"], 3)
            if measured else None,
            "extra_fixed_s": round(mine["fixed_s"] - theirs["fixed_s"], 2) if measured else None,
            "wall_ratio_at_big": round(mine["wall_s"][str(big)] / theirs["wall_s"][str(big)], 3),
        }
    return out


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    small, big = report["rows"]
    lines = [f"Machine: {report['machine_label']}; model: {report['model']}",
             f"CPU used by other processes during the runs: {report['other_cpu_share']:.0%}", "",
             f"| engine | wall {small} rows (s) | wall {big} rows (s) | steady sent/s | "
             "fixed s | vs predict (rate, extra fixed s) |",
             "|---|---|---|---|---|---|"]
    for engine, r in report["engines"].items():
        vs = r.get("vs_predict")
        rel = "-" if not vs else "n/a (more --rows)" if vs["steady_rate_ratio"] is None else \
            f"{vs['steady_rate_ratio']:.2f}x, {vs['extra_fixed_s']:+.1f} s"
        rate, fixed = (r["steady_sentences_per_s"], r["fixed_s"])
        lines.append(f"| {engine} | {r['wall_s'][str(small)]} | {r['wall_s'][str(big)]} | "
                     f"{'n/a' if rate is None else rate} | {'n/a' if fixed is None else fixed} "
                     f"| {rel} |")
    return "\n".join(lines)


def _version(name: str) -> str | None:
    """An installed package's version, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Measure and print the report (JSON and Markdown also written to --out when given)."""
    pin_cpu_where_no_accelerator()
    parser = argparse.ArgumentParser(prog="python -m flaxsent.bench.dist_overhead")
    parser.add_argument("--model", default=None,
                        help="model folder (default: the embedded full-size random-weight one)")
    parser.add_argument("--rows", type=int, default=2000,
                        help="sentences of the big file; the small one has a quarter")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs per engine and size; the fastest counts")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--platform", default="cpu",
                        help="the JAX platform the Beam handler sizes its batches for")
    parser.add_argument("--out", default=None, help="write dist_overhead.json/.md here")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or args.rows < 8 or args.repeats < 1:
        parser.error(f"--engines: unknown {unknown}" if unknown
                     else "--rows must be >= 8 and --repeats >= 1")
    model = args.model or str(default_model_folder())
    small, big = args.rows // 4, args.rows
    walls: dict[str, dict[int, float]] = {e: {} for e in engines}
    contention = CpuContention()
    with tempfile.TemporaryDirectory(prefix="flaxsent-dist-") as tmp:
        for n in (small, big):
            folder = Path(tmp) / str(n)
            folder.mkdir()
            txt, parquet = write_inputs(folder, n)
            # warm the persistent compilation cache every engine then starts from
            _predict(model, txt, folder / "warm.jsonl")
            for engine in engines:
                for _ in range(args.repeats):
                    out = run_engine(engine, model, txt, parquet, folder, args.platform)
                    if "error" in out:
                        raise SystemExit(f"{engine} on {n} rows failed: {out['error']}")
                    if out["rows_out"] != n:
                        raise SystemExit(f"{engine} wrote {out['rows_out']} rows for {n}")
                    walls[engine][n] = min(walls[engine].get(n, float("inf")), out["seconds"])
    machine = machine_info()
    report = {
        "rows": [small, big],
        "model": model if args.model else "embedded DistilBERT-base SST-2 (RANDOM weights)",
        "engines": summarize(walls, small, big),
        "other_cpu_share": round(contention.other_share(), 3),
        "machine": machine, "machine_label": machine_label(machine), "code": git_state(),
        "versions": {**versions(), **{name: _version(name) for name in ("apache-beam", "ray")}},
    }
    table = markdown(report)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_record(out, "dist_overhead", report, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
