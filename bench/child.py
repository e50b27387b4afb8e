"""Fresh-process measurements: `run_child`, and the cold-start figures measured through it.

`run_child(function, spec)` starts `python -m flaxsent.bench.child CALL OUT LAUNCHED`,
which calls the function with the JSON spec (plus 'launched', when the process was started) and
writes the dict it returns as JSON: one mechanism for every figure that needs a fresh process.

`probe_strategy` uses it once with an empty JAX persistent-cache folder (cold) and once more
reusing it (warm). The child loads the strategy's model, classifies one sentence (the first
result), then runs every shape the corpus needs once at full batch size (so its RSS high-water
mark is the strategy's), and returns what it saw.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flaxsent.bench import sysinfo
from flaxsent.bench.strategies import CompileMeter, RunContext, Strategy, make_runner

DEFAULT_TIMEOUT_S = 900.0


def run_child(function: Callable[[dict[str, Any]], dict[str, Any]], spec: dict[str, Any], *,
              timeout_s: float | None = DEFAULT_TIMEOUT_S,
              env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Call a module-level `function` on `spec` in a fresh Python; its dict, or {'error': ...}.

    `timeout_s` None waits as long as the child runs; `env` None passes this one's environment.
    """
    # the importable name, also when the function's module runs as a script (python -m)
    module = sys.modules[function.__module__].__spec__.name
    with tempfile.TemporaryDirectory(prefix="flaxsent-probe-") as tmp:
        call_path, out_path = Path(tmp) / "call.json", Path(tmp) / "out.json"
        call = {"module": module, "function": function.__name__, "spec": spec}
        call_path.write_text(json.dumps(call), encoding="utf-8")
        cmd = [sys.executable, "-m", "flaxsent.bench.child", str(call_path), str(out_path)]
        try:
            proc = subprocess.run([*cmd, repr(time.time())], capture_output=True, text=True,
                                  timeout=timeout_s, env=dict(os.environ if env is None else env))
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f} s"}
        if proc.returncode != 0 or not out_path.is_file():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
        return json.loads(out_path.read_text(encoding="utf-8"))


def probe_once(strategy: Strategy, ctx: RunContext, first_text: str, warm_texts: list[str],
               timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """One cold-start child with the bench's thread count; its figures, or {'error': ...}."""
    spec = {"strategy": strategy.to_dict(), "context": ctx.to_dict(),
            "first_text": first_text, "warm_texts": warm_texts}
    # before the child's jax starts: XLA sizes its pool once, when its CPU client is created
    env = {**os.environ, sysinfo.XLA_THREADS_ENV: str(ctx.threads)}
    return run_child(cold_start, spec, timeout_s=timeout_s, env=env)


def probe_strategy(strategy: Strategy, ctx: RunContext, first_text: str,
                   warm_texts: list[str], timeout_s: float = DEFAULT_TIMEOUT_S,
                   ) -> dict[str, Any]:
    """Cold and warm figures: flaxsent with an empty, then a filled compilation cache."""
    if not strategy.jax:  # nothing persists between PyTorch (or ONNX Runtime) processes
        cold = probe_once(strategy, ctx, first_text, warm_texts, timeout_s)
        return {"cold": cold, "warm": None}
    with tempfile.TemporaryDirectory(prefix="flaxsent-jax-cache-") as cache:
        ctx = RunContext(**{**ctx.to_dict(), "cache_dir": cache})
        cold = probe_once(strategy, ctx, first_text, warm_texts, timeout_s)
        warm = probe_once(strategy, ctx, first_text, warm_texts, timeout_s) \
            if "error" not in cold else None
    return {"cold": cold, "warm": warm}


def add_probe_figures(record: dict[str, Any], probe: dict[str, Any] | None) -> None:
    """Flatten `probe_strategy`'s cold/warm figures into a bench record (None: not measured)."""
    cold = (probe or {}).get("cold") or {}
    warm = (probe or {}).get("warm") or {}
    record["probe"] = probe
    record["compile_cold_s"] = cold.get("compile_s")
    record["compile_warm_s"] = warm.get("compile_s")
    record["first_result_cold_s"] = cold.get("first_result_s")
    record["first_result_warm_s"] = warm.get("first_result_s")
    record["peak_rss_mb"] = cold.get("peak_rss_mb")
    record["peak_device_mb"] = cold.get("peak_device_mb")
    errors = [p["error"] for p in (cold, warm) if p.get("error")]
    record["probe_error"] = "; ".join(errors) or None


def cold_start(spec: dict[str, Any]) -> dict[str, Any]:
    """The child side of `probe_once`: load, first result, every shape once; the figures."""
    launched = spec["launched"]
    strategy = Strategy(**spec["strategy"])
    ctx = RunContext(**spec["context"])
    meter = CompileMeter.get() if strategy.jax else None
    if strategy.family != "flax":
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    runner = make_runner(strategy, ctx)
    loaded = time.time()
    runner.run([spec["first_text"]])
    first = time.time()
    runner.run(spec["warm_texts"])
    warmed = time.time()
    out: dict[str, Any] = {
        "load_s": loaded - launched,  # interpreter start, imports, weights
        "first_result_s": first - launched,  # ... and one sentence classified
        "warmup_s": warmed - first,  # every shape the corpus needs, once
        "peak_rss_mb": sysinfo.peak_rss_mb(),
        "peak_device_mb": runner.device_peak_mb(),
        "n_devices": runner.n_devices,
        "threads": runner.threads,
        "compile_s": None,
        "n_compiles": None,
    }
    if meter is not None:
        out["compile_s"] = meter.seconds
        out["n_compiles"] = meter.count
    elif strategy.name == "torch-compile":  # compile = the same calls' excess over a rerun
        again = time.time()
        runner.run([spec["first_text"]])
        runner.run(spec["warm_texts"])
        out["compile_s"] = max(0.0, (warmed - loaded) - (time.time() - again))
    return out


def _main(call_path: str, out_path: str, launched: float) -> None:
    call = json.loads(Path(call_path).read_text(encoding="utf-8"))
    function = getattr(importlib.import_module(call["module"]), call["function"])
    out = function({**call["spec"], "launched": launched})
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
