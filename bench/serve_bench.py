"""`python -m flaxsent.bench.serve_bench`: `flaxsent serve` under HTTP load, against
transformers' pipeline behind FastAPI on PyTorch, same machine, same run, same requests.

Closed-loop clients (1, 8, 64, 256 by default) each send requests of 1-8 SST-2-like sentences
to POST /score; for each server and client count: sentences/s and latency p50/p95/p99. Also a
direct `Classifier` call on the same requests (the floor for one client), the device batches
the flaxsent server formed, and the two servers' answers compared. Writes serve.json, serve.md
and serve.png. One server runs at a time; the load generator shares the machine with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from flaxsent.bench import sysinfo
from flaxsent.bench.results_folder import results_folder, write_record
from flaxsent.bench.serve_load import percentiles, run_level, server_process

from flaxsent.core.devices import pin_cpu_where_no_accelerator
from flaxsent.embedded.corpus import generate_corpus
from flaxsent.embedded.default_model import default_model_folder
from flaxsent.errors import FlaxsentError
from flaxsent.io.machine import git_state, versions

SERVERS = ("flaxsent", "pipeline")


@dataclasses.dataclass(frozen=True)
class ServeBenchOptions:
    """What to run: model, data, client counts, window lengths, the server's wait."""

    model: str | None = None
    data: str | None = None
    out: str | None = None
    clients: tuple[int, ...] = (1, 8, 64, 256)
    duration_s: float = 20.0
    warmup_s: float = 5.0
    max_level_s: float = 180.0
    max_wait_ms: float = 2.0
    parity_requests: int = 32  # sent one by one to each server; their answers are compared
    quick: bool = False
    seed: int = 0


class RequestStream:
    """The same sequence of requests (1-8 sentences drawn from the corpus) for every server."""

    def __init__(self, texts: Sequence[str], seed: int, most: int = 8):
        self._texts = list(texts)
        self._rng = random.Random(seed)
        self._most = most

    def __call__(self) -> list[str]:
        return self._rng.sample(self._texts, self._rng.randint(1, min(self._most,
                                                                     len(self._texts))))


def _model_and_texts(opts: ServeBenchOptions) -> tuple[Path, dict[str, Any], list[str]]:
    from flaxsent.core import checkpoint as ckpt
    if opts.model is None:
        folder = default_model_folder(quick=opts.quick)
        model = {"source": "embedded default", "weights": "random",
                 "label": ("tiny (--quick)" if opts.quick else "DistilBERT-base SST-2")
                 + " architecture, seeded random weights, NOT a trained model"}
    else:
        folder = ckpt.resolve_source(opts.model)
        if ckpt.checkpoint_kind(folder) != "torch":
            raise FlaxsentError(f"--model {opts.model}: the baseline needs the HF PyTorch folder; "
                                "pass the original, or run `flaxsent export` first")
        model = {"source": opts.model, "weights": "real", "label": f"{opts.model} (real weights)"}
    if opts.data is None:
        texts = generate_corpus(872, seed=opts.seed)
        model["corpus"] = f"embedded SST-2-like corpus (872 sentences, seed {opts.seed})"
    else:
        from flaxsent.io.readers import read_records
        with read_records(opts.data) as reader:
            texts = reader.texts(None)
        if not texts:
            raise FlaxsentError(f"--data {opts.data}: holds no sentences")
        model["corpus"] = f"{opts.data} ({len(texts)} sentences)"
    return folder, model, texts


def direct_latency(folder: Path, texts: list[str], seed: int, budget_s: float,
                   ) -> dict[str, Any]:
    """Latency of `Classifier.__call__` on the bench's requests, one after another, in this
    process: what one client could get without HTTP."""
    from flaxsent import Classifier
    clf = Classifier.from_pretrained(folder)
    clf.warmup()
    stream = RequestStream(texts, seed)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < budget_s or len(times) < 5:
        texts = stream()
        t = time.perf_counter()
        clf(texts)
        times.append(1000 * (time.perf_counter() - t))
    return {"requests": len(times), "latency_ms": percentiles(times)}


def _scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if not s.labels}


def _batching(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The flaxsent server's device batches during one level, from its /metrics."""
    def d(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)
    batches, computed = d("flaxsent_batch_size_count"), d("flaxsent_computed_tokens_total")
    return {"device_batches": int(batches),
            "texts_per_batch": d("flaxsent_batch_size_sum") / batches if batches else None,
            "padding_efficiency": d("flaxsent_batch_tokens_sum") / computed if computed else None}


def _server_argv(name: str, folder: Path, opts: ServeBenchOptions) -> list[str]:
    if name == "flaxsent":
        return [sys.executable, "-m", "flaxsent", "serve", str(folder), "--port", "0",
                "--max-wait-ms", str(opts.max_wait_ms), "--max-concurrent-requests",
                str(max(512, 2 * max(opts.clients)))]
    return [sys.executable, "-m", "flaxsent.bench.pipeline_server", str(folder), "--port", "0"]


def bench_server(name: str, folder: Path, texts: list[str], opts: ServeBenchOptions,
                 log: Path) -> dict[str, Any]:
    """Start one server, keep its first answers for parity, run every client count."""
    with server_process(_server_argv(name, folder, opts), log) as server:
        stream = RequestStream(texts, opts.seed)
        with httpx.Client(base_url=server.url, timeout=120) as client:
            answers = [client.post("/score", json={"input_data": stream()}).json()
                       for _ in range(opts.parity_requests)]
        levels = []
        for clients in opts.clients:
            before = _scrape(server.url) if name == "flaxsent" else None
            level = run_level(server.url, RequestStream(texts, opts.seed + clients), clients,
                              warmup_s=opts.warmup_s, duration_s=opts.duration_s,
                              min_requests=2 * clients, max_s=opts.max_level_s)
            if before is not None:
                level["batching"] = _batching(before, _scrape(server.url))
            levels.append(level)
            print(f"  {name:8s} {clients:4d} clients: {level['sentences_per_s'] or 0:8.1f} "
                  f"sentences/s, p50 {level['latency_ms']['p50'] or 0:8.1f} ms",
                  file=sys.stderr)
        return {"name": name, "command": _server_argv(name, folder, opts)[1:],
                "startup_s": server.startup_s, "levels": levels, "answers": answers}


def parity(a: list, b: list) -> dict[str, Any]:
    """Labels and scores of two servers' answers to the same requests."""
    pairs = [(x, y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    return {"sentences": len(pairs),
            "labels_agree": sum(x["label"] == y["label"] for x, y in pairs),
            "max_abs_score_diff": max((abs(x["score"] - y["score"]) for x, y in pairs),
                                      default=None)}


def goals(record: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, computed from this run (None where a level was not run)."""
    by = {s["name"]: {lv["clients"]: lv for lv in s["levels"]} for s in record["servers"]}
    out: dict[str, Any] = {}
    flax, pipe = by.get("flaxsent", {}), by.get("pipeline", {})
    if 64 in flax and 64 in pipe and pipe[64]["sentences_per_s"]:
        ratio = flax[64]["sentences_per_s"] / pipe[64]["sentences_per_s"]
        lower = flax[64]["latency_ms"]["p99"] < pipe[64]["latency_ms"]["p99"]
        out["throughput_ratio_64"] = {"value": ratio, "goal": ">= 2.5", "met": ratio >= 2.5}
        out["p99_lower_at_64"] = {"value": lower, "goal": "flaxsent lower", "met": lower}
    direct = record["direct_classifier"]["latency_ms"]["p50"]
    if 1 in flax and direct:
        ratio = flax[1]["latency_ms"]["p50"] / direct
        out["p50_vs_direct_at_1"] = {"value": ratio, "goal": "<= 1.2", "met": ratio <= 1.2}
    return out


def _row(level: dict[str, Any]) -> list[str]:
    """The table cells of one server at one client count."""
    lat, b = level["latency_ms"], level.get("batching") or {}
    cells = [f"{level['sentences_per_s'] or 0:,.1f}"]
    cells += [f"{lat[k]:,.0f}" if lat[k] is not None else "-" for k in ("p50", "p95", "p99")]
    cells.append(f"{level['errors']}" + (" (stopped at --max-level)" if level["hit_max_s"] else ""))
    cells.append(f"{b['texts_per_batch']:.1f}" if b.get("texts_per_batch") else "-")
    cells.append(f"{100 * b['padding_efficiency']:.0f}%" if b.get("padding_efficiency") else "-")
    return cells


def markdown(record: dict[str, Any]) -> str:
    """The table and the goals, as printed and written to serve.md."""
    o, m = record["options"], record["model"]
    client_share = max(lv["client_cpu_share"] for s in record["servers"] for lv in s["levels"])
    lines = ["## flaxsent serve vs transformers pipeline behind FastAPI (PyTorch): "
             "requests of 1-8 sentences",
             f"**machine:** {record['machine_label']}; "
             f"commit {record['git'].get('commit') or '?'}"
             + (" (dirty)" if record["git"].get("dirty") else "")
             + f"; other processes used {100 * record['cpu_other_share']:.0f}% of the CPU",
             f"**model:** {m['label']}; **sentences:** {m['corpus']}",
             f"**load:** closed-loop httpx clients, {o['warmup_s']:g} s warm-up, then a window of "
             f"at least {o['duration_s']:g} s and 2 answers per client; flaxsent "
             f"--max-wait-ms {o['max_wait_ms']:g}; the pipeline server: one call at a time, "
             f"pipeline defaults; the clients took up to {100 * client_share:.0f}% of the CPU",
             "",
             "| clients | server | sentences/s | p50 ms | p95 ms | p99 ms | errors | "
             "device batch (texts) | padding eff |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for clients in o["clients"]:
        for server in record["servers"]:
            lv = next(x for x in server["levels"] if x["clients"] == clients)
            lines.append(f"| {clients} | {server['name']} | " + " | ".join(_row(lv)) + " |")
    d = record["direct_classifier"]
    lines += ["", f"Direct `Classifier` call on the same requests, one after another: p50 "
                  f"{d['latency_ms']['p50']:.1f} ms ({d['requests']} requests)."]
    p = record.get("parity")
    if p:
        lines.append(f"Answers of the two servers to the same {p['sentences']} sentences: labels "
                     f"agree on {p['labels_agree']}, max |Δscore| {p['max_abs_score_diff']:.2e}.")
    for name, g in record["goals"].items():
        value = f"{g['value']:.2f}" if isinstance(g["value"], float) else str(g["value"])
        verdict = "met" if g["met"] else "NOT met"
        lines.append(f"- {name}: {value} (goal {g['goal']}): **{verdict}**")
    return "\n".join(lines)


def chart(record: dict[str, Any], path: Path) -> None:
    """Sentences/s and p99 latency against the client count, one line per server."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for s in record["servers"]:
        xs = [lv["clients"] for lv in s["levels"]]
        ax1.plot(xs, [lv["sentences_per_s"] or 0 for lv in s["levels"]], "o-", label=s["name"])
        ax2.plot(xs, [lv["latency_ms"]["p99"] or float("nan") for lv in s["levels"]], "o-",
                 label=s["name"])
    for ax, label in ((ax1, "sentences / s"), (ax2, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(record["options"]["clients"], [str(c) for c in record["options"]["clients"]])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax2.set_yscale("log")
    fig.suptitle(f"flaxsent serve vs pipeline + FastAPI — {record['machine_label']}\n"
                 f"{record['model']['label']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_serve_bench(opts: ServeBenchOptions) -> dict[str, Any]:
    """Run everything; write serve.json, serve.md and serve.png; return the record."""
    contention = sysinfo.CpuContention()
    began = time.perf_counter()

    def stage(what: str) -> None:
        print(f"serve bench [{time.perf_counter() - began:5.0f} s]: {what}", file=sys.stderr)

    folder, model, texts = _model_and_texts(opts)
    out = results_folder(opts.out, "serve-")
    out.mkdir(parents=True, exist_ok=True)
    stage("direct Classifier calls")
    direct = direct_latency(folder, texts, opts.seed, budget_s=min(opts.duration_s, 20.0))
    servers = []
    with tempfile.TemporaryDirectory(prefix="flaxsent-serve-bench-") as tmp:
        for name in SERVERS:
            stage(f"{name} server")
            servers.append(bench_server(name, folder, texts, opts, Path(tmp) / f"{name}.log"))
    machine = sysinfo.machine_info()
    record = {"created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "options": dataclasses.asdict(opts), "machine": machine,
              "machine_label": sysinfo.machine_label(machine), "versions": versions(),
              "git": git_state(), "model": model, "direct_classifier": direct,
              "parity": parity(*(s.pop("answers") for s in servers)), "servers": servers,
              "cpu_other_share": contention.other_share()}
    record["goals"] = goals(record)
    stage("done")
    write_record(out, "serve", record, markdown(record))
    chart(record, out / "serve.png")
    record["out"] = str(out)
    return record


def _clients(value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: comma-separated client counts") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: client counts must be >= 1")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the serving bench; user errors print one line and exit 2."""
    pin_cpu_where_no_accelerator()
    p = argparse.ArgumentParser(prog="python -m flaxsent.bench.serve_bench",
                                description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF PyTorch folder or Hub id (default: the "
                   "embedded DistilBERT-base SST-2 architecture with seeded RANDOM weights)")
    p.add_argument("--data", default=None, help="sentences file (default: embedded corpus)")
    p.add_argument("--out", default=None, help="output folder (default: bench/results/serve-UTC)")
    p.add_argument("--clients", type=_clients, default=None,
                   help="client counts (default 1,8,64,256; --quick 1,8)")
    p.add_argument("--duration", type=float, default=None, dest="duration_s",
                   help="shortest measured window per level, s (default 20; --quick 2)")
    p.add_argument("--warmup", type=float, default=None, dest="warmup_s",
                   help="unmeasured seconds before each window (default 5; --quick 0.5)")
    p.add_argument("--max-level", type=float, default=180.0, dest="max_level_s",
                   help="longest a level may run, s (default 180)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="flaxsent serve's wait")
    p.add_argument("--quick", action="store_true", help="tiny model, short windows (smoke test)")
    p.add_argument("--seed", type=int, default=0, help="corpus and request mix seed")
    args = p.parse_args(argv)
    for flag, value in (("--duration", args.duration_s), ("--warmup", args.warmup_s),
                        ("--max-level", args.max_level_s), ("--max-wait-ms", args.max_wait_ms)):
        if value is not None and not value >= 0:
            p.error(f"{flag} {value}: must be >= 0")
    opts = ServeBenchOptions(
        model=args.model, data=args.data, out=args.out,
        clients=args.clients or ((1, 8) if args.quick else (1, 8, 64, 256)),
        duration_s=args.duration_s if args.duration_s is not None else 2.0 if args.quick else 20.0,
        warmup_s=args.warmup_s if args.warmup_s is not None else 0.5 if args.quick else 5.0,
        max_level_s=args.max_level_s, max_wait_ms=args.max_wait_ms,
        parity_requests=8 if args.quick else 32, quick=args.quick, seed=args.seed)
    try:
        record = run_serve_bench(opts)
    except FlaxsentError as e:
        print(f"flaxsent serve bench: error: {e}", file=sys.stderr)
        return 2
    print(markdown(record))
    print(f"reports: {record['out']}/serve.json, serve.md, serve.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
