"""The benchmark harness: the same inputs through PyTorch and flaxsent, timed and compared.

`run_harness(BenchOptions(...))` loads the model (the embedded random-weight default or a real
checkpoint) and the corpus, times every strategy in this process after its warm-up (median of
several passes), measures cold starts in fresh processes (see `probe.py`), compares every
strategy's logits with PyTorch fp32 on every sentence, and writes the reports.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flaxsent.bench import flops, parity, peers, report, sysinfo
from flaxsent.bench.child import add_probe_figures, probe_strategy
from flaxsent.bench.results_folder import results_folder
from flaxsent.bench.strategies import (
    FLAX_NAMES,
    FLAX_ORT,
    NAMES,
    SORTED_BATCHES,
    SORTED_BATCHES_GPU,
    TORCH_BATCH,
    CompileMeter,
    RunContext,
    Strategy,
)
from flaxsent.bench.timing import add_figures, shape_groups, time_strategy

from flaxsent.core.plan import ShapePlan, batch_budget
from flaxsent.embedded.corpus import CORPUS_STATS_TARGET, generate_corpus, token_length_stats
from flaxsent.embedded.default_model import SEED, default_config, default_model_folder
from flaxsent.errors import FlaxsentError
from flaxsent.io.machine import git_state, versions
from flaxsent.io.readers import read_records

REFERENCE = "torch-pipeline"
DTYPE_CHOICES = ("float32", "bfloat16", "both")


@dataclasses.dataclass(frozen=True)
class Mode:
    """How much work a run does: sentences of the embedded corpus, repeats, time per strategy."""

    name: str
    n_sentences: int
    repeats: int
    budget_s: float  # stop repeating once the next pass would take a strategy past this
    bf16_all: bool  # bf16 for every flax strategy, or only for flax-bucketed
    torch_compile: bool


MODES = {
    "quick": Mode("quick", 64, 1, math.inf, False, False),
    "default": Mode("default", 872, 3, 60.0, False, False),
    "full": Mode("full", 872, 5, 600.0, True, True),
}
# On an accelerator the embedded corpus is this many times larger (872 x 64 = 55,808 sentences)
# unless --sentences says otherwise: 872 sentences took an H200 25 ms a pass, too short to time
# or to fill its batches; at 64x a flaxsent bf16 pass lasts about 1.5 s and PyTorch fp32's
# several seconds. --quick keeps its 64 sentences everywhere.
ACCELERATOR_SCALE = 64


@dataclasses.dataclass
class BenchOptions:
    """Everything `flaxsent bench` takes, plus hooks for tests (perturb, probes, progress)."""

    model: str | None = None  # HF PyTorch folder or Hub id; None: the embedded default
    data: str | None = None  # text / TSV / CSV / JSONL file; None: the embedded corpus
    out: str | os.PathLike | None = None  # None: bench/results/<UTC timestamp>
    dtype: str = "both"
    devices: int | None = None  # devices of the data-parallel strategies; None: all local
    quick: bool = False
    full: bool = False
    repeats: int | None = None  # None: the mode's
    budget_s: float | None = None  # None: the mode's
    only: Sequence[str] | None = None  # strategy names to run (torch-pipeline always runs)
    probes: bool = True  # cold/warm compile, first result, peak memory in fresh processes
    progress: bool = True  # tqdm bar on stderr
    print_table: bool = True  # the Markdown table on stdout
    seed: int = 0  # of the embedded corpus
    # sentences: of the embedded corpus, or the first N of --data; None: the mode's (872; x
    # ACCELERATOR_SCALE on an accelerator; --quick 64)
    sentences: int | None = None
    model_cache: str | os.PathLike | None = None  # where the default model is kept
    # Called with the flat Flax params (path -> array) before the flaxsent side loads them;
    # the PyTorch side keeps the original weights (used to prove parity failures are caught).
    perturb: Callable[[dict[str, np.ndarray]], Any] | None = None


@dataclasses.dataclass
class BenchResult:
    """The JSON record, each strategy's logits (input order) and where the reports went."""

    record: dict[str, Any]
    logits: dict[str, np.ndarray]
    out_dir: Path
    markdown: str

    @property
    def parity_ok(self) -> bool:
        return bool(self.record["parity_ok"])

    @property
    def exit_code(self) -> int:
        """0 when every strategy ran and is within its parity tolerance, else 1."""
        return 0 if self.parity_ok and not self.record["failed_strategies"] else 1


def _mode(opts: BenchOptions) -> Mode:
    if opts.quick and opts.full:
        raise FlaxsentError("--quick and --full exclude each other; pass one")
    mode = MODES["quick" if opts.quick else "full" if opts.full else "default"]
    if opts.repeats is not None:
        if isinstance(opts.repeats, bool) or not isinstance(opts.repeats, int) \
                or opts.repeats < 1:
            raise FlaxsentError(f"--repeats {opts.repeats!r}: must be a positive integer")
        mode = dataclasses.replace(mode, repeats=opts.repeats)
    if opts.devices is not None and (isinstance(opts.devices, bool)
                                     or not isinstance(opts.devices, int) or opts.devices < 1):
        raise FlaxsentError(f"--devices {opts.devices!r}: must be a positive integer")
    if opts.sentences is not None and (isinstance(opts.sentences, bool)
                                       or not isinstance(opts.sentences, int)
                                       or opts.sentences < 1):
        raise FlaxsentError(f"--sentences {opts.sentences!r}: must be a positive integer")
    if opts.budget_s is not None:
        if not opts.budget_s > 0:
            raise FlaxsentError(f"--budget {opts.budget_s!r}: must be a positive number of "
                                "seconds")
        mode = dataclasses.replace(mode, budget_s=float(opts.budget_s))
    return mode


def plan_strategies(opts: BenchOptions, mode: Mode, accelerator: bool = False,
                    available: peers.Peers | None = None) -> list[Strategy]:
    """The strategies to run, reference first; torch-sorted and ort-sorted come in their
    batch-size variants.

    On an accelerator (`accelerator`: JAX runs on a GPU or TPU, PyTorch on the GPU when it has
    one) flaxsent fp32 also runs at default precision. `available` (peers.detect: None, none of
    them) adds the peers this host runs: PyTorch autocast (bf16; fp16 on a GPU) at its best,
    ONNX Runtime fp32 and int8 at its best, flaxsent int8 and flaxsent on ONNX Runtime.
    `--dtype float32` leaves out the bf16, fp16 and int8 rows; `--dtype bfloat16` runs the
    flaxsent bf16 rows and PyTorch's autocast ones; int8 runs with the default (both).
    """
    if opts.dtype not in DTYPE_CHOICES:
        raise FlaxsentError(f"--dtype {opts.dtype!r}: choose one of {', '.join(DTYPE_CHOICES)}")
    only = set(opts.only) if opts.only else None
    unknown = sorted((only or set()) - set(NAMES))
    if unknown:
        raise FlaxsentError(f"unknown strategy {', '.join(unknown)}: choose from "
                            f"{', '.join(NAMES)}")

    def wanted(name: str) -> bool:
        return only is None or name in only

    avail = available or peers.Peers()
    fp32 = opts.dtype in ("float32", "both")
    low = opts.dtype in ("bfloat16", "both")
    int8 = opts.dtype == "both"
    out = [Strategy(REFERENCE, batch_size=TORCH_BATCH)]  # always: it is the reference
    sweep = SORTED_BATCHES_GPU if accelerator else SORTED_BATCHES
    if wanted("torch-sorted"):
        out += [Strategy("torch-sorted", batch_size=b) for b in sweep]
        if low:
            out += [Strategy("torch-sorted", dtype, batch_size=b)
                    for dtype in avail.torch_autocast for b in sweep]
    if mode.torch_compile and wanted("torch-compile") or only and "torch-compile" in only:
        out.append(Strategy("torch-compile", batch_size=TORCH_BATCH))
    if avail.ort and wanted("ort-sorted"):
        out += [Strategy("ort-sorted", batch_size=b) for b in sweep]
        if int8:
            out += [Strategy("ort-sorted", batch_size=b, quantize="int8") for b in sweep]
    flax = [n for n in FLAX_NAMES if wanted(n)]
    if fp32:
        out += [Strategy(n) for n in flax]
        if accelerator:
            out += [Strategy(n, precision="default") for n in flax if n == "flax-bucketed"]
    if low:
        every = mode.bf16_all or opts.dtype == "bfloat16"
        out += [Strategy(n, "bfloat16") for n in flax if every or n == "flax-bucketed"]
    if int8 and "flax-bucketed" in flax:
        out.append(Strategy("flax-bucketed", quantize="int8"))
    if avail.flax_ort and wanted(FLAX_ORT):
        out += [Strategy(FLAX_ORT)] if fp32 else []
        out += [Strategy(FLAX_ORT, quantize="int8")] if int8 else []
    return out


def skipped_notes(opts: BenchOptions, available: peers.Peers) -> list[str]:
    """A note for each peer this host does not run and this run would have run (its reason)."""
    only = set(opts.only) if opts.only else None
    wants = {"torch-sorted[bf16]": opts.dtype in ("bfloat16", "both"),
             "ort-sorted": True, "flax-bucketed[int8]": opts.dtype == "both", FLAX_ORT: True}
    notes = []
    for row, why in available.skipped.items():
        name = row.split("[")[0]
        if wants.get(row, True) and (only is None or name in only):
            notes.append(f"{row} not run here: {why}")
    return notes


def _model_folder(opts: BenchOptions) -> tuple[Path, dict[str, Any]]:
    """The HF PyTorch folder both sides load, and how to describe its weights."""
    from flaxsent.core import checkpoint as ckpt
    if opts.model is None:
        folder = default_model_folder(quick=opts.quick, root=opts.model_cache)
        size = "tiny (--quick)" if opts.quick else "DistilBERT-base SST-2"
        return folder, {"source": "embedded default", "folder": str(folder), "weights": "random",
                        "label": f"{size} architecture, seeded random weights (seed {SEED}, "
                                 "scaled to logits of about 3), NOT a trained model"}
    folder = ckpt.resolve_source(opts.model)
    kind = ckpt.checkpoint_kind(folder)
    if kind != "torch":
        raise FlaxsentError(
            f"{opts.model}: a converted flaxsent folder; the bench needs the HF PyTorch folder "
            "(PyTorch is the reference): pass the original, or run `flaxsent export` first")
    return folder, {"source": str(opts.model), "folder": str(folder), "weights": "real",
                    "label": f"{opts.model} (real weights)"}


def corpus_size(opts: BenchOptions, mode: Mode, accelerator: bool = False) -> int:
    """Sentences of the embedded corpus: --sentences, else the mode's (x ACCELERATOR_SCALE on an
    accelerator, --quick excepted)."""
    if opts.sentences is not None:
        return opts.sentences
    scale = ACCELERATOR_SCALE if accelerator and not opts.quick else 1
    return mode.n_sentences * scale


def _corpus(opts: BenchOptions, mode: Mode, accelerator: bool = False,
            ) -> tuple[list[str], dict[str, Any]]:
    n = corpus_size(opts, mode, accelerator)
    if opts.data is not None:  # read as `flaxsent predict` reads it; a bad row stops the bench
        limit = n if opts.quick or opts.sentences is not None else None
        with read_records(opts.data) as reader:
            texts = reader.texts(limit)
        if not texts:
            raise FlaxsentError(f"--data {opts.data}: holds no sentences")
        description = {"source": opts.data, "format": reader.fmt, "n": len(texts)}
        if reader.text_column is not None:
            description["column"] = reader.text_column
        if limit is not None:
            why = "--sentences" if opts.sentences is not None else "--quick"
            description["note"] = f"first {len(texts)} sentences at most ({why})"
        return texts, description
    try:
        texts = generate_corpus(n, seed=opts.seed)
    except (TypeError, ValueError) as e:
        raise FlaxsentError(f"--seed {opts.seed!r}: {e}") from None
    return texts, {"source": "embedded SST-2-like corpus",
                   "generator": f"flaxsent.embedded.corpus.generate_corpus({n}, "
                                f"seed={opts.seed})",
                   "target": dict(CORPUS_STATS_TARGET),
                   "n": len(texts)}


def _perturbed_copy(folder: Path, dst: Path,
                    perturb: Callable[[dict[str, np.ndarray]], Any]) -> Path:
    """A converted flaxsent folder of `folder` whose params went through `perturb`."""
    from flaxsent.convert.torch_to_flax import convert_checkpoint

    from flaxsent.core import checkpoint as ckpt
    convert_checkpoint(folder, dst)
    params = {k: np.array(v) for k, v in ckpt.load_flax_params(dst).items()}
    changed = perturb(params)
    ckpt.save_flax_checkpoint(dst, ckpt.read_config(dst),
                              changed if isinstance(changed, dict) else params)
    return dst


def _thread_notes(records: list[dict[str, Any]], threads: int) -> list[str]:
    """A note for each timed pass or probe whose side ran with other than `threads` threads."""
    notes = []
    for r in records:
        probe = r.get("probe") or {}
        runs = [("timed", r.get("threads")),
                *((f"{w} probe", (probe.get(w) or {}).get("threads")) for w in ("cold", "warm"))]
        side = {"torch": "PyTorch", "ort": "ONNX Runtime"}.get(r["family"], "XLA's CPU pool")
        notes += [f"{r['key']} ({where}): {side} ran {seen} threads, not {threads}"
                  for where, seen in runs if seen not in (None, threads)]
    return notes


def _command() -> str:
    """How this run was started, for the reports."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program == "__main__.py":
        program = "python -m flaxsent.bench"
    return " ".join([program, *sys.argv[1:]])


def _accelerator_name(jax: Any, torch_device: str) -> str | None:
    """The accelerator's name for the peak-FLOPs table (None on a CPU-only host)."""
    if jax.default_backend() != "cpu":
        return jax.devices()[0].device_kind
    if torch_device == "cuda":
        import torch
        return torch.cuda.get_device_name()
    return None


def _prepare(strategy: Strategy, ctx: RunContext, prepared: dict[str, Any], work: Path,
             texts: Sequence[str], reference: np.ndarray) -> RunContext:
    """The context with the strategy's model files, made once per run (untimed; their seconds
    go to the record's peers.prepared). A failed preparation is re-raised for every strategy
    that needs it."""
    name = "onnxruntime" if strategy.family == "ort" else FLAX_ORT
    if name not in prepared:
        try:
            if name == "onnxruntime":
                models, info = peers.prepare_ort(ctx.torch_folder, work / "ort", texts,
                                                 reference, ctx.threads, ctx.ort_provider)
                info["models"] = models
            else:
                folder, info = peers.export_flax_onnx(ctx.flax_folder, work / "flax-ort")
                info["folder"] = folder
        except Exception as e:  # noqa: BLE001 - reported with each strategy that needed it
            info = {"error": f"{type(e).__name__}: {e}"}
        prepared[name] = info
    info = prepared[name]
    if "error" in info:
        raise RuntimeError(f"preparing {name} failed: {info['error']}")
    if name == "onnxruntime":
        return dataclasses.replace(ctx, ort_models=info["models"])
    return dataclasses.replace(ctx, flax_onnx_folder=info["folder"])


def run_harness(opts: BenchOptions) -> BenchResult:
    """Run the whole benchmark and write results.json, results.md and chart.png."""
    from tqdm import tqdm
    wall = time.perf_counter()
    # both sides get the cores this process may use; XLA reads its setting when jax starts
    threads = sysinfo.usable_cores()
    sysinfo.pin_xla_threads(threads)
    contention = sysinfo.CpuContention()
    load_before = sysinfo.load_average()
    mode = _mode(opts)
    plan_strategies(opts, mode)  # bad options fail before any model loads
    out_dir = results_folder(opts.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise FlaxsentError(f"--out {out_dir}: exists and is not a folder")
    folder, model_info = _model_folder(opts)

    import jax
    import torch
    from transformers.utils import logging as hf_logging

    from flaxsent.core import checkpoint as ckpt
    from flaxsent.core.classifier import length_limit
    from flaxsent.core.tokenizer import TextTokenizer
    CompileMeter.get()  # listen before the first compile
    accelerator = jax.default_backend() != "cpu"
    texts, corpus = _corpus(opts, mode, accelerator)  # larger on an accelerator
    torch_device = "cuda" if torch.cuda.is_available() else "cpu"  # where TorchRunner runs
    available = peers.detect(torch_device, accelerator)
    strategies = plan_strategies(opts, mode, accelerator, available)
    n_local = jax.local_device_count()
    if opts.devices is not None and not 1 <= opts.devices <= n_local:
        raise FlaxsentError(
            f"--devices {opts.devices}: this host has {n_local} local device(s) "
            f"({jax.default_backend()}); on a CPU, simulate more with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={opts.devices}")
    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()

    cfg = ckpt.read_config(folder)
    tokenizer = TextTokenizer.from_folder(folder)
    limit = length_limit(tokenizer, cfg)  # the max_length Classifier runs with by default
    _, raw = tokenizer.encode_batch(texts, truncation=True)
    raw = np.asarray(raw, np.int64)
    lengths = np.minimum(raw, limit)  # [N] tokens each sentence really runs, [CLS]/[SEP] in
    real_tokens = int(lengths.sum())
    corpus.update(length_stats=token_length_stats(raw.tolist()), real_tokens=real_tokens,
                  n_truncated=int((raw > limit).sum()), max_length=limit)
    model_info.update(config=cfg.to_hf_dict(),
                      default_config=opts.model is None and cfg == default_config(opts.quick))
    notes: list[str] = skipped_notes(opts, available)
    corpus_flops = flops.model_flops(cfg, lengths.tolist())
    accel_name = _accelerator_name(jax, torch_device)

    sweep = SORTED_BATCHES_GPU if accelerator else SORTED_BATCHES
    n_probes = sum(2 if s.jax else 1 for s in strategies
                   if not (s.sweeps_batches and s.batch_size != sweep[0]))
    bar = tqdm(total=len(strategies) + (n_probes if opts.probes else 0), desc="flaxsent bench",
               unit="step", file=sys.stderr, disable=not opts.progress, dynamic_ncols=True)
    records: list[dict[str, Any]] = []
    logits: dict[str, np.ndarray] = {}
    heavy: dict[str, list[str]] = {}
    prepared: dict[str, Any] = {}  # peers' one-time preparation (untimed): name -> figures
    with tempfile.TemporaryDirectory(prefix="flaxsent-bench-") as tmp, bar:
        flax_folder = folder if opts.perturb is None else \
            _perturbed_copy(folder, Path(tmp) / "perturbed", opts.perturb)
        if opts.perturb is not None:
            notes.append("the flaxsent side ran PERTURBED weights (test hook): parity must fail")
            model_info["perturbed_flax_side"] = True
        ctx = RunContext(torch_folder=str(folder), flax_folder=str(flax_folder),
                         naive_length=max(3, int(lengths.max())), dp_devices=opts.devices,
                         threads=threads, ort_provider=available.ort_provider)
        variants: dict[str, list[dict[str, Any]]] = {}  # torch-/ort-sorted keys: each batch size
        default_plan = None  # the plan flax-bucketed ran (parity is reported per its shapes)
        failed: list[str] = []
        for strategy in strategies:
            bar.set_postfix_str(f"timing {strategy.key}"
                                + (f" (batch {strategy.batch_size})" if strategy.batch_size
                                   else ""))
            try:
                if strategy.family == "ort" or strategy.name == FLAX_ORT:
                    bar.set_postfix_str(f"preparing {strategy.key} (untimed)")
                    ctx = _prepare(strategy, ctx, prepared, Path(tmp), texts,
                                   logits[REFERENCE])
                record, out, heavy_texts, plan = time_strategy(
                    strategy, ctx, texts, lengths, mode.repeats, mode.budget_s)
            except Exception as e:  # noqa: BLE001 - one broken strategy must not lose the rest
                if strategy.name == REFERENCE:
                    raise
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                batch = f" (batch {strategy.batch_size})" if strategy.batch_size else ""
                if strategy.key not in failed:  # one note a row, not one per batch size
                    notes.append(f"{strategy.key}{batch} FAILED here "
                                 f"({type(e).__name__}: {first})")
                # torch-compile is optional: it needs a toolchain
                if strategy.name != "torch-compile" and strategy.key not in failed:
                    failed.append(strategy.key)
                bar.update(2 if opts.probes else 1)
                continue
            add_figures(record, len(texts), real_tokens)
            flops.add_flops_figures(record, corpus_flops,
                                    accel_name if record["device"] != "cpu" else None)
            bar.update()
            if strategy.sweeps_batches:  # keep the fastest batch size (PyTorch / ORT at best)
                tried = variants.setdefault(strategy.key, [])
                tried.append(record)
                if max(tried, key=lambda r: r["sentences_per_s"]) is not record:
                    continue
                records = [r for r in records if r["key"] != strategy.key]
            records.append(record)
            logits[record["key"]] = out
            heavy[record["key"]] = heavy_texts
            if strategy.name == "flax-bucketed" and strategy.dtype == "float32" \
                    and not strategy.quantize:
                default_plan = plan
        for record in records:
            if record["key"] in variants:
                record["variants"] = [{"batch_size": v["batch_size"],
                                       "sentences_per_s": v["sentences_per_s"],
                                       "median_s": v["median_s"]}
                                      for v in variants[record["key"]]]
            if record["family"] == "flax" and record["engine_real_tokens"] != real_tokens:
                notes.append(f"{record['key']}: the engine counted {record['engine_real_tokens']}"
                             f" real tokens, the bench {real_tokens}")

        # cold starts, each in fresh processes, after every timing (nothing runs beside them)
        for record in records:
            probe = None
            if opts.probes:
                strategy = Strategy(record["name"], record["dtype"], record["batch_size"],
                                    record["precision"], record["quantize"])
                bar.set_postfix_str(f"cold start {record['key']}")
                probe = probe_strategy(strategy, ctx, texts[0], heavy[record["key"]])
                bar.update(2 if strategy.jax else 1)
            add_probe_figures(record, probe)
            if record["probe_error"]:
                notes.append(f"{record['key']}: cold-start probe failed: {record['probe_error']}")
        notes += _thread_notes(records, threads)

    # parity against PyTorch fp32, per shape of the engine's default plan
    if default_plan is None:
        default_plan = ShapePlan.build(limit, max_batch_tokens=batch_budget(jax.default_backend(),
                                                                            1))
    groups, labels = shape_groups(default_plan, lengths)
    reference = logits[REFERENCE]
    for record in records:
        if record["key"] == REFERENCE:
            record["parity"] = {"reference": True, "parity_ok": True, "max_abs": 0.0,
                                "mean_abs": 0.0, "argmax_agreement": 1.0, "per_shape": []}
        else:
            tolerance = parity.tolerance_for(record["dtype"], record["precision"],
                                             record["quantize"])
            record["parity"] = parity.compare(
                reference, logits[record["key"]], groups, labels, tolerance,
                random_weights=model_info["weights"] == "random")
        record["parity_ok"] = record["parity"]["parity_ok"]
    if mode.budget_s < math.inf and any(r["repeats"] < mode.repeats for r in records):
        notes.append(f"repeats stop once a strategy's timed passes would pass {mode.budget_s:g}"
                     " s (--budget); the 'runs' column says how many were timed")
    if not opts.probes:
        notes.append("compile, first-result and memory figures not measured (--no-probes)")
    if model_info["weights"] == "random" and any(r["quantize"] for r in records):
        notes.append("int8 agreement depends on the ranges of the weights and activations: on "
                     "random weights it says little about a trained checkpoint (--model), so "
                     f"there it is reported against the {100 * parity.INT8_MIN_ARGMAX:g}% floor "
                     "but does not fail the run")
    if n_local == 1 and any(r["name"] in ("flax-mesh-dp", "flax-pmap-dp") for r in records):
        notes.append("one local device: the data-parallel strategies run the bucketed plan on "
                     "that one device")

    machine = sysinfo.machine_info()
    other = contention.other_share()
    machine.update(load_average_before=load_before, load_average_after=sysinfo.load_average(),
                   other_processes_cpu_share=round(other, 3))
    if other > 0.1:
        notes.append(f"other processes used {100 * other:.0f}% of this machine's CPU time during "
                     "the run: timings are noisy (see each strategy's pass range)")
    record = {
        "schema": 1,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": _command(),
        "mode": dataclasses.asdict(mode),
        "machine": machine,
        "machine_label": sysinfo.machine_label(machine),
        "git": git_state(),
        "versions": versions(),
        "model": model_info,
        "corpus": corpus,
        "settings": {"dtype": opts.dtype, "devices": opts.devices, "probes": opts.probes,
                     "reference": REFERENCE, "plan": [str(s) for s in default_plan.shapes()],
                     "threads": threads, "torch_threads": torch.get_num_threads(),
                     "torch_device": torch_device,
                     "xla_threads": sysinfo.xla_cpu_threads(),
                     "xla_threads_set_by": f"{sysinfo.XLA_THREADS_ENV}={threads}"},
        "reference_logit_scale": parity.logit_scale(reference),
        "peers": {"available": available.to_dict(), "prepared": prepared},
        "model_flops": {"per_pass": corpus_flops,
                        "per_real_token": corpus_flops / real_tokens,
                        "encoder_matmul_params": flops.matmul_params(cfg),
                        "accelerator": accel_name},
        "tolerances": parity.TOLERANCES,
        "strategies": records,
        "parity_ok": all(r["parity_ok"] for r in records),
        "failed_strategies": failed,
        "main_process_peak_rss_mb": sysinfo.peak_rss_mb(),
        "notes": notes,
    }
    record["wall_s"] = time.perf_counter() - wall
    markdown = report.write_reports(record, out_dir)
    if opts.print_table:
        print(markdown)
    return BenchResult(record=record, logits=logits, out_dir=out_dir, markdown=markdown)
