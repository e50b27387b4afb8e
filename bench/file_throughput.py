"""`python -m flaxsent.bench.file_throughput`: `flaxsent predict` over a file vs in-memory logits.

Measures, on the same generated sentences: the engine's in-memory throughput (`clf.logits`),
streamed file prediction (`predict_file`: read, tokenize, predict, write JSONL), and the peak
RSS of file prediction in fresh processes at two file lengths (bounded memory means equal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flaxsent.bench.child import run_child
from flaxsent.bench.sysinfo import peak_rss_mb

from flaxsent.core.devices import pin_cpu_where_no_accelerator
from flaxsent.embedded.corpus import generate_corpus
from flaxsent.embedded.default_model import default_model_folder


def write_lines(path: Path, n: int, seed: int = 1) -> None:
    """A text file of n generated SST-2-like sentences, one per line."""
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n, 50_000):
            f.write("\n".join(generate_corpus(min(50_000, n - start), seed=seed + start)))
            f.write("\n")


def predict_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """`predict_file` over spec['input'] (run in a fresh process): its seconds and peak RSS."""
    from flaxsent import Classifier
    from flaxsent.predict.run import predict_file
    clf = Classifier.from_pretrained(spec["model"], cache_dir=spec["cache_dir"])
    clf.warmup()
    start = time.perf_counter()
    predict_file(clf, spec["input"], spec["input"] + ".out.jsonl", force=True, progress=False)
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


def _predict_peak_rss(model: str, input_path: Path, cache_dir: str) -> dict[str, Any]:
    """Run `predict_file` in a fresh process; its wall time and peak RSS (MiB)."""
    out = run_child(predict_in_child,
                    {"model": model, "input": str(input_path), "cache_dir": cache_dir},
                    timeout_s=None)  # a big file takes as long as it takes
    if "error" in out:
        raise RuntimeError(f"predict over {input_path.name} failed in its process: {out['error']}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print a JSON report (also written to --out when given)."""
    pin_cpu_where_no_accelerator()
    parser = argparse.ArgumentParser(prog="python -m flaxsent.bench.file_throughput")
    parser.add_argument("--model", default=None, help="model folder (default: embedded)")
    parser.add_argument("--lines", type=int, default=100_000, help="lines of the big file")
    parser.add_argument("--small-lines", type=int, default=10_000,
                        help="lines of the small file (peak-memory comparison)")
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)

    from flaxsent import Classifier
    model = args.model or str(default_model_folder())
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cache_dir = str(tmp_path / "jax-cache")
        big, small = tmp_path / "big.txt", tmp_path / "small.txt"
        write_lines(big, args.lines)
        write_lines(small, args.small_lines)
        texts = big.read_text(encoding="utf-8").splitlines()

        clf = Classifier.from_pretrained(model, cache_dir=cache_dir)
        clf.warmup()
        t0 = time.perf_counter()
        clf.logits(texts)
        in_memory_s = time.perf_counter() - t0
        del texts
        big_run = _predict_peak_rss(model, big, cache_dir)
        small_run = _predict_peak_rss(model, small, cache_dir)
    report = {
        "lines": args.lines,
        "in_memory_sentences_per_s": args.lines / in_memory_s,
        "predict_sentences_per_s": args.lines / big_run["seconds"],
        "predict_vs_in_memory": in_memory_s / big_run["seconds"],
        "predict_peak_rss_mib": {str(args.small_lines): small_run["peak_rss_mb"],
                                 str(args.lines): big_run["peak_rss_mb"]},
        "in_memory_process_peak_rss_mib": peak_rss_mb(),
        "cpu_count": os.cpu_count(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
