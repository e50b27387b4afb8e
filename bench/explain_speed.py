"""`python -m flaxsent.bench.explain_speed`: attributions per second, flaxsent against captum.

The same sentences, the same PyTorch checkpoint (flaxsent converts it in memory), in one
process and one sitting: captum's `LayerIntegratedGradients` over
`distilbert.embeddings.word_embeddings`, one sentence a call as transformers-interpret runs it,
each `internal_batch_size` asked for timed on the first `--pick-n` sentences and the fastest
timed on all of them; then `Classifier.explain`, every sentence in one call (its copies packed
through the shape plan). Both in fp32 and, by default, bf16 (captum under `torch.autocast`).
Both: the predicted label, the [PAD] baseline with [CLS]/[SEP] kept, `steps` Gauss-Legendre
points. A warm-up pass (a few sentences) runs first for each, so compiles and allocations are
not timed; every row's attributions are compared with captum fp32's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from flaxsent.bench.results_folder import write_record
from flaxsent.bench.sysinfo import CpuContention, machine_info, machine_label, usable_cores

from flaxsent.core.attribution import baseline_ids
from flaxsent.core.devices import pin_cpu_where_no_accelerator
from flaxsent.io.machine import git_state, versions
from flaxsent.io.readers import read_records


def sample_sentences(path: str, n: int, seed: int = 0) -> list[str]:
    """`n` sentences drawn without replacement (seeded) from a file's text column."""
    with read_records(path) as reader:
        texts = reader.texts()
    pick = np.random.default_rng(seed).choice(len(texts), size=min(n, len(texts)),
                                              replace=False)
    return [texts[i].strip() for i in pick]


def run_captum(model: Any, ids: list[list[int]], steps: int, internal_batch_size: int | None,
               pad_id: int, dtype: str = "float32") -> list[np.ndarray]:
    """captum's per-token attributions (summed over the features), one sentence a call; with
    dtype 'bfloat16' under `torch.autocast` (the fastest PyTorch path on a CPU with AMX)."""
    import contextlib

    import torch
    from captum.attr import LayerIntegratedGradients

    def logits(input_ids):
        return model(input_ids=input_ids).logits

    lig = LayerIntegratedGradients(logits, model.distilbert.embeddings.word_embeddings)
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else \
        contextlib.nullcontext()
    out = []
    for text_ids in ids:
        inputs = torch.tensor([text_ids])
        with precision:
            with torch.no_grad():
                target = int(logits(inputs).argmax())
            base = torch.tensor([baseline_ids(text_ids, pad_id).tolist()])
            attr = lig.attribute(inputs, baselines=base, target=target, n_steps=steps,
                                 internal_batch_size=internal_batch_size)
        out.append(attr.float().sum(-1)[0].detach().double().numpy())
    return out


def _timed_captum(model: Any, ids: list[list[int]], steps: int, size: int, pad_id: int,
                  warmup: int, dtype: str = "float32") -> tuple[dict[str, Any], list[np.ndarray]]:
    run_captum(model, ids[:warmup], steps, size, pad_id, dtype)
    start = time.perf_counter()
    out = run_captum(model, ids, steps, size, pad_id, dtype)
    seconds = time.perf_counter() - start
    engine = "captum LayerIntegratedGradients, a sentence a call" + \
        (" (torch.autocast bf16)" if dtype == "bfloat16" else "")
    return {"engine": engine, "dtype": dtype, "internal_batch_size": size, "n": len(ids),
            "seconds": seconds, "attributions_per_s": len(ids) / seconds}, out


def _timed_flaxsent(model_folder: str, texts: list[str], steps: int, dtype: str,
                    warmup: int) -> tuple[dict[str, Any], list[Any]]:
    from flaxsent import Classifier

    clf = Classifier.from_pretrained(model_folder, dtype=dtype)
    clf.explain(texts[:warmup], steps=steps)  # compiles the shapes the run will use
    clf.explain(texts[::-1][:warmup * 8], steps=steps)
    start = time.perf_counter()
    explained = clf.explain(texts, steps=steps)
    seconds = time.perf_counter() - start
    return {"engine": "flaxsent Classifier.explain, all sentences in one call", "dtype": dtype,
            "internal_batch_size": None, "n": len(texts), "seconds": seconds,
            "attributions_per_s": len(texts) / seconds,
            "compiled_shapes": [list(s) for s in clf.attribution_engine.compiled_shapes]}, \
        explained


def _agreement(attributions: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    """Max and median over sentences of max |difference| / max |reference attribution|."""
    rel = [float(np.abs(a - c).max() / np.abs(c).max())
           for a, c in zip(attributions, reference, strict=True)]
    return {"vs_captum_fp32_max_relative": max(rel),
            "vs_captum_fp32_median_relative": float(np.median(rel))}


def _gaps(explained: list[Any]) -> dict[str, Any]:
    """Completeness of flaxsent's attributions: |sum - delta logit| / |delta logit| per text."""
    gaps = [abs(e.gap) for e in explained]
    return {"gaps_abs_max": max(gaps), "gaps_abs_median": float(np.median(gaps)),
            "gaps_over_1_percent": int(sum(g > 0.01 for g in gaps)),
            "gaps_over_1_percent_abs_delta": [round(abs(e.delta), 4) for e in explained
                                              if abs(e.gap) > 0.01],
            "abs_delta_median": float(np.median([abs(e.delta) for e in explained])),
            "abs_gap_logits_max": max(abs(e.gap * e.delta) for e in explained)}


def measure(model_folder: str, texts: list[str], steps: int, batch_sizes: list[int],
            pick_n: int, dtypes: tuple[str, ...] = ("float32",), warmup: int = 4,
            ) -> dict[str, Any]:
    """Seconds and attributions/s of captum (each batch size on the first `pick_n` texts, the
    fastest on all) and of flaxsent, per dtype (bf16: captum under autocast at fp32's best
    batch size, flaxsent's bf16), each with its agreement with captum fp32 and, for flaxsent,
    its completeness gaps."""
    import torch
    import transformers

    from flaxsent.core.tokenizer import TextTokenizer

    torch.set_num_threads(usable_cores())
    model = transformers.DistilBertForSequenceClassification.from_pretrained(model_folder)
    model.eval()
    tokenizer = TextTokenizer.from_folder(model_folder)
    ids, _ = tokenizer.encode_batch(texts)
    pad = tokenizer.pad_id
    picks = [_timed_captum(model, ids[:pick_n], steps, size, pad, warmup)[0]
             for size in batch_sizes]
    best = max(picks, key=lambda r: r["attributions_per_s"])["internal_batch_size"]
    rows, reference = [], None
    for dtype in dtypes:  # float32 first: its captum attributions are the reference
        row, out = _timed_captum(model, ids, steps, best, pad, warmup, dtype)
        if reference is None:
            reference = out
        rows.append({**row, **_agreement(out, reference)})
        row, explained = _timed_flaxsent(model_folder, texts, steps, dtype, warmup)
        rows.append({**row, **_agreement([e.attributions for e in explained], reference),
                     **_gaps(explained)})
    for row in rows:
        row["vs_best_captum_fp32"] = row["attributions_per_s"] / rows[0]["attributions_per_s"]
        same = next(r for r in rows if r["dtype"] == row["dtype"])
        row["vs_captum_same_dtype"] = row["attributions_per_s"] / same["attributions_per_s"]
    return {"rows": rows, "captum_batch_size_pick": picks,
            "mean_tokens": float(np.mean([len(t) for t in ids]))}


def markdown(record: dict[str, Any]) -> str:
    """The speed table, agreement with captum fp32 and flaxsent's completeness gaps."""
    lines = ["captum's internal_batch_size, picked on the first sentences (fp32):", "",
             "| internal_batch_size | sentences | seconds | attributions/s |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {r['internal_batch_size']} | {r['n']} | {r['seconds']:.1f} | "
              f"{r['attributions_per_s']:.2f} |" for r in record["captum_batch_size_pick"]]
    lines += ["", f"Attributions/s, {record['n']} sentences of `{record['data']}` (mean "
             f"{record['mean_tokens']:.1f} tokens), {record['steps']} steps, "
             f"{record['machine_label']}, model `{record['model']}`", "",
             "| engine | dtype | internal_batch_size | seconds | attributions/s | "
             "vs captum fp32 | vs captum, same dtype | max / median relative |Δ| vs captum "
             "fp32 | completeness gap: median, max, texts over 1% |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in record["rows"]:
        gaps = (f"{r['gaps_abs_median']:.2%}, {r['gaps_abs_max']:.2%}, "
                f"{r['gaps_over_1_percent']}" if "gaps_abs_max" in r else "")
        lines.append(f"| {r['engine']} | {r['dtype']} | {r['internal_batch_size'] or '-'} | "
                     f"{r['seconds']:.1f} | {r['attributions_per_s']:.2f} | "
                     f"{r['vs_best_captum_fp32']:.2f}x | {r['vs_captum_same_dtype']:.2f}x | "
                     f"{r['vs_captum_fp32_max_relative']:.1e} / "
                     f"{r['vs_captum_fp32_median_relative']:.1e} | {gaps} |")
    lines += ["", "Relative |Δ|: per sentence, max |attribution - captum fp32's| over captum "
              "fp32's max |attribution|. Completeness gap: |Σ attributions - Δlogit| / "
              "|Δlogit| (the model's own logits, so bf16 is judged against bf16). Other "
              f"processes' CPU share: {record['cpu_contention']:.1%}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    pin_cpu_where_no_accelerator()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a PyTorch (HF) DistilBERT classifier folder")
    p.add_argument("--data", required=True, help="sentences: TSV/CSV/JSONL/txt")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--internal-batch-sizes", default="10,25,50",
                   help="captum's internal_batch_size values to time (comma-separated)")
    p.add_argument("--pick-n", type=int, default=40,
                   help="sentences each internal_batch_size is timed on (default 40)")
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="precisions to time, each for captum (bf16: torch.autocast) and "
                        "flaxsent (comma-separated; default float32,bfloat16)")
    p.add_argument("--out", required=True, help="folder for explain_speed.json and .md")
    args = p.parse_args(argv)
    texts = sample_sentences(args.data, args.n)
    sizes = [int(s) for s in args.internal_batch_sizes.split(",")]
    contention = CpuContention()
    dtypes = tuple(args.dtypes.split(","))
    if not set(dtypes) <= {"float32", "bfloat16"} or dtypes[0] != "float32":
        p.error("--dtypes: float32 first (the reference), then optionally bfloat16")
    result = measure(args.model, texts, args.steps, sizes, args.pick_n, dtypes)
    machine = machine_info()
    record = {"model": args.model, "data": args.data, "n": len(texts), "steps": args.steps,
              **result, "machine": machine, "machine_label": machine_label(machine),
              "versions": versions(), "git": git_state(),
              "cpu_contention": contention.other_share()}
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    write_record(folder, "explain_speed", record, markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
