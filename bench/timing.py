"""Timing one strategy: warm-up, then full passes until the repeats or the time budget run out.

Used by the harness (`harness.run_harness`) for every strategy, and for flaxsent's default plan
also per shape: each shape's sentences run alone, with their padding.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import numpy as np
from flaxsent.bench.strategies import CompileMeter, RunContext, Strategy, describe, make_runner

from flaxsent.core.plan import ShapePlan


def time_strategy(strategy: Strategy, ctx: RunContext, texts: list[str], lengths: np.ndarray,
                  repeats: int, budget_s: float,
                  ) -> tuple[dict[str, Any], np.ndarray, list[str], ShapePlan | None]:
    """Warm up, then time up to `repeats` full passes within `budget_s` (median); also the
    strategy's heaviest-batch texts and, for flaxsent, its shape plan."""
    meter = CompileMeter.get()
    start = time.perf_counter()
    runner = make_runner(strategy, ctx)
    setup_s = time.perf_counter() - start
    lengths_list = lengths.tolist()
    warm_texts = runner.warmup_texts(texts, lengths_list)
    heavy = runner.heaviest_batch(texts, lengths_list)
    start = time.perf_counter()
    runner.run(warm_texts)
    warmup_s = time.perf_counter() - start
    times: list[float] = []
    discarded = 0
    compiled_in_timing = False
    while True:
        compiles = meter.count
        start = time.perf_counter()
        logits, computed = runner.run(texts)
        seconds = time.perf_counter() - start
        if meter.count > compiles:  # a shape the warm-up missed: that pass was warm-up
            if discarded < 2:
                discarded += 1
                continue
            compiled_in_timing = True
        times.append(seconds)
        if len(times) >= repeats or sum(times) + statistics.median(times) > budget_s:
            break
    record: dict[str, Any] = {
        **strategy.to_dict(),
        "key": strategy.key,
        "family": strategy.family,
        "n_devices": runner.n_devices,
        "threads": runner.threads,
        "device": runner.device,
        "setup_s": setup_s,
        "warmup_s": warmup_s,
        "repeats": len(times),
        "seconds": times,
        "median_s": statistics.median(times),
        "computed_tokens": int(computed),
        "discarded_passes": discarded,
        "compiled_during_timing": compiled_in_timing,
    }
    plan = None
    if strategy.family == "flax":
        clf = runner.clf
        plan = clf.plan
        record.update(
            engine_real_tokens=int(clf.last_run.real_tokens),
            plan=[str(shape) for shape in plan.shapes()])
        # shapes compiled (ONNX Runtime: planned at their first run)
        record["compiled_shapes"] = [list(s) for s in clf.compiled_shapes]
        if strategy.jax:  # the engine's matmul precision ('highest', 'default')
            record["precision"] = clf.engine.precision
        if strategy.name == "flax-bucketed" and not strategy.quantize:
            record["per_shape"] = _time_per_shape(runner, texts, lengths, repeats, budget_s)
    record["description"] = describe(strategy, runner.n_devices, ctx.naive_length)
    del runner
    gc.collect()
    return record, logits, heavy, plan


def _time_per_shape(runner: Any, texts: list[str], lengths: np.ndarray, repeats: int,
                    budget_s: float) -> list[dict[str, Any]]:
    """Throughput of the texts of each shape run alone (median pass), with their padding."""
    plan = runner.clf.plan
    shape_of = [plan.shape_for(min(int(n), plan.max_length)) for n in lengths]
    out = []
    for shape in plan.shapes():
        rows = [i for i, s in enumerate(shape_of) if s == shape]
        if not rows:
            continue
        subset = [texts[i] for i in rows]
        times = []
        while True:
            start = time.perf_counter()
            _, computed = runner.run(subset)
            times.append(time.perf_counter() - start)
            if len(times) >= min(repeats, 3) or sum(times) > budget_s / 4:
                break
        real = int(np.minimum(lengths[rows], plan.max_length).sum())
        median = statistics.median(times)
        out.append({"shape": str(shape), "packed": shape.packed, "n": len(rows),
                    "batches": runner.clf.last_run.n_batches, "sentences_per_s": len(rows) / median,
                    "real_tokens_per_s": real / median, "padding_efficiency": real / computed})
    return out


def shape_groups(plan: ShapePlan, lengths: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each sentence's shape (an index) in `plan`, and a label per shape, for parity tables."""
    shapes = plan.shapes()
    labels, low = [], 1
    for shape in shapes:
        kind = "packed" if shape.packed else "bucket"
        labels.append(f"{kind} {shape} ({low}-{shape.length} tok)")
        low = shape.length + 1
    index = {shape: i for i, shape in enumerate(shapes)}
    groups = np.array([index[plan.shape_for(min(int(n), plan.max_length))] for n in lengths])
    return groups, labels


def add_figures(record: dict[str, Any], n_texts: int, real_tokens: int) -> None:
    """Sentences/s, real tokens/s and padding efficiency from a timed record's median pass."""
    median = record["median_s"]
    record["sentences_per_s"] = n_texts / median
    record["real_tokens_per_s"] = real_tokens / median
    record["real_tokens"] = real_tokens
    record["padding_efficiency"] = real_tokens / record["computed_tokens"] \
        if record["computed_tokens"] else 1.0
