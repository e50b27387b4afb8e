"""`python -m flaxsent.bench.explain_speed`: attributions per second, flaxsent against captum.

The same sentences, the same PyTorch checkpoint (flaxsent converts it in memory), fp32 both,
in one process and one sitting: captum's `LayerIntegratedGradients` over
`distilbert.embeddings.word_embeddings`, one sentence a call as transformers-interpret runs it,
each `internal_batch_size` asked for timed on the first `--pick-n` sentences and the fastest
timed on all of them; then `Classifier.explain`, every sentence in one call
(its copies packed through the shape plan). Both: the predicted label, the [PAD] baseline with
[CLS]/[SEP] kept, `steps` Gauss-Legendre points. A warm-up pass (a few sentences) runs first
for each, so compiles and allocations are not timed; the attributions of both are compared.
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
               pad_id: int) -> list[np.ndarray]:
    """captum's per-token attributions (summed over the features), one sentence a call."""
    import torch
    from captum.attr import LayerIntegratedGradients

    def logits(input_ids):
        return model(input_ids=input_ids).logits

    lig = LayerIntegratedGradients(logits, model.distilbert.embeddings.word_embeddings)
    out = []
    for text_ids in ids:
        inputs = torch.tensor([text_ids])
        with torch.no_grad():
            target = int(logits(inputs).argmax())
        base = torch.tensor([baseline_ids(text_ids, pad_id).tolist()])
        attr = lig.attribute(inputs, baselines=base, target=target, n_steps=steps,
                             internal_batch_size=internal_batch_size)
        out.append(attr.sum(-1)[0].detach().double().numpy())
    return out


def _timed_captum(model: Any, ids: list[list[int]], steps: int, size: int, pad_id: int,
                  warmup: int) -> tuple[dict[str, Any], list[np.ndarray]]:
    run_captum(model, ids[:warmup], steps, size, pad_id)
    start = time.perf_counter()
    out = run_captum(model, ids, steps, size, pad_id)
    seconds = time.perf_counter() - start
    return {"engine": "captum LayerIntegratedGradients, a sentence a call",
            "internal_batch_size": size, "n": len(ids), "seconds": seconds,
            "attributions_per_s": len(ids) / seconds}, out


def measure(model_folder: str, texts: list[str], steps: int, batch_sizes: list[int],
            pick_n: int, warmup: int = 4) -> dict[str, Any]:
    """Seconds and attributions/s of captum (each batch size on the first `pick_n` texts, the
    fastest on all) and of flaxsent, and their agreement (max |difference| relative to each
    sentence's largest |attribution|)."""
    import torch
    import transformers

    from flaxsent import Classifier

    torch.set_num_threads(usable_cores())
    model = transformers.DistilBertForSequenceClassification.from_pretrained(model_folder)
    model.eval()
    clf = Classifier.from_pretrained(model_folder)
    ids, _ = clf.tokenizer.encode_batch(texts)
    pad = clf.tokenizer.pad_id
    picks = [_timed_captum(model, ids[:pick_n], steps, size, pad, warmup)[0]
             for size in batch_sizes]
    best = max(picks, key=lambda r: r["attributions_per_s"])["internal_batch_size"]
    row, captum_out = _timed_captum(model, ids, steps, best, pad, warmup)
    rows = [row]
    clf.explain(texts[:warmup], steps=steps)  # compiles the shapes the run will use
    clf.explain(texts[::-1][:warmup * 8], steps=steps)
    start = time.perf_counter()
    explained = clf.explain(texts, steps=steps)
    seconds = time.perf_counter() - start
    rows.append({"engine": "flaxsent Classifier.explain, all sentences in one call",
                 "internal_batch_size": None, "n": len(texts), "seconds": seconds,
                 "attributions_per_s": len(texts) / seconds,
                 "compiled_shapes": [list(s) for s in clf.attribution_engine.compiled_shapes]})
    rows[-1]["vs_best_captum"] = rows[-1]["attributions_per_s"] / rows[0]["attributions_per_s"]
    rel = [float(np.abs(e.attributions - c).max() / np.abs(c).max())
           for e, c in zip(explained, captum_out, strict=True)]
    gaps = [abs(e.gap) for e in explained]
    return {"rows": rows, "captum_batch_size_pick": picks, "parity_max_relative": max(rel),
            "parity_median_relative": float(np.median(rel)), "gaps_abs_max": max(gaps),
            "gaps_abs_median": float(np.median(gaps)),
            "gaps_over_1_percent": int(sum(g > 0.01 for g in gaps)),
            "gaps_over_1_percent_abs_delta": [round(abs(e.delta), 4) for e in explained
                                              if abs(e.gap) > 0.01],
            "abs_delta_median": float(np.median([abs(e.delta) for e in explained])),
            "abs_gap_logits_max": max(abs(e.gap * e.delta) for e in explained),
            "mean_tokens": float(np.mean([len(t) for t in ids]))}


def markdown(record: dict[str, Any]) -> str:
    """The speed table and the parity figures."""
    lines = ["captum's internal_batch_size, picked on the first sentences:", "",
             "| internal_batch_size | sentences | seconds | attributions/s |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {r['internal_batch_size']} | {r['n']} | {r['seconds']:.1f} | "
              f"{r['attributions_per_s']:.2f} |" for r in record["captum_batch_size_pick"]]
    lines += ["", f"Attributions/s, {record['n']} sentences of `{record['data']}` (mean "
             f"{record['mean_tokens']:.1f} tokens), {record['steps']} steps, fp32, "
             f"{record['machine_label']}, model `{record['model']}`", "",
             "| engine | internal_batch_size | seconds | attributions/s | vs best captum |",
             "|---|---:|---:|---:|---:|"]
    for r in record["rows"]:
        vs = f"{r['vs_best_captum']:.2f}x" if "vs_best_captum" in r else ""
        lines.append(f"| {r['engine']} | {r['internal_batch_size'] or '-'} | "
                     f"{r['seconds']:.1f} | {r['attributions_per_s']:.2f} | {vs} |")
    lines += ["", f"Parity with captum (max |Δ| / max |attribution| per sentence): max "
              f"{record['parity_max_relative']:.1e}, median "
              f"{record['parity_median_relative']:.1e}. Completeness gap |Σ - Δlogit| / "
              f"|Δlogit|: max {record['gaps_abs_max']:.2%}, median "
              f"{record['gaps_abs_median']:.2%} ({record['gaps_over_1_percent']} of "
              f"{record['n']} over 1%, their |Δlogit| "
              f"{record['gaps_over_1_percent_abs_delta']} against a median of "
              f"{record['abs_delta_median']:.3f}; |Σ - Δlogit| at most "
              f"{record['abs_gap_logits_max']:.4f}). Other processes' CPU share: "
              f"{record['cpu_contention']:.1%}."]
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
    p.add_argument("--out", required=True, help="folder for explain_speed.json and .md")
    args = p.parse_args(argv)
    texts = sample_sentences(args.data, args.n)
    sizes = [int(s) for s in args.internal_batch_sizes.split(",")]
    contention = CpuContention()
    result = measure(args.model, texts, args.steps, sizes, args.pick_n)
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
