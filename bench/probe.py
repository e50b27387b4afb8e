"""Cold-start figures measured in a fresh process: compile time, time to first result, peak RSS.

The parent (`probe_strategy`) launches `python -m flaxsent.bench.probe SPEC OUT LAUNCHED` once
with an empty JAX persistent-cache folder (cold) and once more reusing it (warm). The child
loads the strategy's model, classifies one sentence (the first result), then runs every shape
the corpus needs once at full batch size (so its RSS high-water mark is the strategy's), and
writes what it saw as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .strategies import CompileMeter, RunContext, Strategy, make_runner
from .sysinfo import peak_rss_mb

DEFAULT_TIMEOUT_S = 900.0


def probe_once(strategy: Strategy, ctx: RunContext, first_text: str, warm_texts: list[str],
               timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Run one child process; its figures, or {'error': ...} if it failed."""
    with tempfile.TemporaryDirectory(prefix="flaxsent-probe-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec = {"strategy": strategy.to_dict(), "context": ctx.to_dict(),
                "first_text": first_text, "warm_texts": warm_texts}
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        cmd = [sys.executable, "-m", "flaxsent.bench.probe", str(spec_path), str(out_path)]
        try:
            proc = subprocess.run([*cmd, repr(time.time())], capture_output=True, text=True,
                                  timeout=timeout_s, env=os.environ.copy())
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f} s"}
        if proc.returncode != 0 or not out_path.is_file():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
        return json.loads(out_path.read_text(encoding="utf-8"))


def probe_strategy(strategy: Strategy, ctx: RunContext, first_text: str,
                   warm_texts: list[str], timeout_s: float = DEFAULT_TIMEOUT_S,
                   ) -> dict[str, Any]:
    """Cold and warm figures: flaxsent with an empty, then a filled compilation cache."""
    if strategy.family == "torch":  # nothing persists between PyTorch processes
        cold = probe_once(strategy, ctx, first_text, warm_texts, timeout_s)
        return {"cold": cold, "warm": None}
    with tempfile.TemporaryDirectory(prefix="flaxsent-jax-cache-") as cache:
        ctx = RunContext(**{**ctx.to_dict(), "cache_dir": cache})
        cold = probe_once(strategy, ctx, first_text, warm_texts, timeout_s)
        warm = probe_once(strategy, ctx, first_text, warm_texts, timeout_s) \
            if "error" not in cold else None
    return {"cold": cold, "warm": warm}


def _child(spec_path: str, out_path: str, launched: float) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    strategy = Strategy(**spec["strategy"])
    ctx = RunContext(**spec["context"])
    meter = CompileMeter.get() if strategy.family == "flax" else None
    if strategy.family == "torch":
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
        "peak_rss_mb": peak_rss_mb(),
        "peak_device_mb": runner.device_peak_mb(),
        "n_devices": runner.n_devices,
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
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], float(sys.argv[3]))
