"""`python -m flaxsent.bench.file_throughput`: `flaxsent predict` over a file vs in-memory logits.

Measures, on the same generated sentences: the engine's in-memory throughput (`clf.logits`),
streamed file prediction (`predict_file`: read, tokenize, predict, write JSONL), and the peak
RSS of file prediction in fresh processes at two file lengths (bounded memory means equal).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .corpus import generate_corpus
from .default_model import default_model_folder


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def write_lines(path: Path, n: int, seed: int = 1) -> None:
    """A text file of n generated SST-2-like sentences, one per line."""
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n, 50_000):
            f.write("\n".join(generate_corpus(min(50_000, n - start), seed=seed + start)))
            f.write("\n")


def _predict_peak_rss(model: str, input_path: Path, cache_dir: str) -> dict:
    """Run `predict_file` in a fresh process; its wall time and peak RSS (MiB)."""
    code = (
        "import json, resource, sys, time\n"
        "from flaxsent import Classifier\n"
        "from flaxsent.predict import predict_file\n"
        f"clf = Classifier.from_pretrained({model!r}, cache_dir={cache_dir!r})\n"
        "clf.warmup()\n"
        "t0 = time.perf_counter()\n"
        f"predict_file(clf, {str(input_path)!r}, {str(input_path) + '.out.jsonl'!r}, "
        "force=True, progress=False)\n"
        "dt = time.perf_counter() - t0\n"
        # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss starts at the parent's peak
        "rss = [int(l.split()[1]) for l in open('/proc/self/status')\n"
        "       if l.startswith('VmHWM:')][0] / 1024\n"
        "print(json.dumps({'seconds': dt, 'peak_rss_mib': rss}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Measure and print a JSON report (also written to --out when given)."""
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
        "predict_peak_rss_mib": {str(args.small_lines): small_run["peak_rss_mib"],
                                 str(args.lines): big_run["peak_rss_mib"]},
        "in_memory_process_peak_rss_mib": peak_rss_mib(),
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
