"""`flaxsent bench --train`: training steps side by side on the same examples.

Four ways to run the card's step (AdamW, 32 examples, max length 128, dropout on): flaxsent
packed (its default), flaxsent padded to 128 (as transformers' run_flax_glue.py pads), PyTorch
padded to 128, and PyTorch at its best (dynamic padding over length-grouped batches, as the
Trainer's `group_by_length` forms them). Each runs the same steps twice: a warm-up pass (every
shape compiled, allocators warm), then a timed pass. Reports examples/s and real tokens/s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from flaxsent.bench import sysinfo
from flaxsent.bench.results_folder import results_folder, write_record

from flaxsent.embedded.corpus import generate_corpus
from flaxsent.embedded.default_model import default_model_folder
from flaxsent.io.machine import git_state, versions

STRATEGIES = ("flax-packed", "flax-padded", "torch-padded", "torch-grouped")
MEGA_BATCH = 50  # the Trainer's LengthGroupedSampler sorts mega-batches of 50 batches


@dataclasses.dataclass(frozen=True)
class TrainBenchOptions:
    """What the training benchmark runs."""

    model: str | None = None  # an HF PyTorch folder with a head; None: the embedded default
    data: str | None = None  # sentences (any predict format); None: the embedded corpus
    out: str | None = None
    steps: int = 6  # timed steps per strategy
    batch_size: int = 32
    max_length: int = 128
    quick: bool = False
    seed: int = 0
    progress: bool = True
    model_cache: str | None = None  # where the default model is kept (None: the user cache)


def _examples(opts: TrainBenchOptions, folder: Path) -> tuple[list[np.ndarray], np.ndarray,
                                                               dict[str, Any]]:
    """Token ids (truncated), random labels, and what the text was."""
    from flaxsent.core.tokenizer import TextTokenizer
    from flaxsent.io.readers import read_records
    n = opts.steps * opts.batch_size
    if opts.data:
        with read_records(opts.data) as reader:
            texts = reader.texts(limit=n)
        source = {"source": opts.data, "n": len(texts)}
    else:
        texts = generate_corpus(n, seed=opts.seed)
        source = {"source": "embedded SST-2-dev-like corpus", "n": len(texts)}
    if len(texts) < n:
        from flaxsent.errors import FlaxsentError
        raise FlaxsentError(f"--data {opts.data}: {len(texts)} sentences, fewer than "
                            f"{opts.steps} steps x {opts.batch_size}")
    tokenizer = TextTokenizer.from_folder(folder).with_max_length(opts.max_length)
    ids, _ = tokenizer.encode_batch(texts, truncation=True)
    arrays = [np.asarray(x, np.int32) for x in ids]
    lengths = [len(a) for a in arrays]
    source.update(mean_tokens=float(np.mean(lengths)), max_tokens=int(max(lengths)))
    labels = np.random.default_rng(opts.seed).integers(0, 2, n).astype(np.int32)
    return arrays, labels, source


def _batches(n: int, batch_size: int, lengths: list[int] | None = None) -> list[np.ndarray]:
    """Example indices per step: in order, or length-grouped (sorted within mega-batches)."""
    order = np.arange(n)
    if lengths is not None:
        size = MEGA_BATCH * batch_size
        order = np.concatenate([sorted(order[s:s + size], key=lambda i: -lengths[i])
                                for s in range(0, n, size)])
    return [order[s:s + batch_size] for s in range(0, n, batch_size)]


def run_flax(folder: Path, arrays, labels, opts: TrainBenchOptions, packed: bool,
             ) -> dict[str, Any]:
    """flaxsent's TrainStep over the steps, packed or padded to max_length."""
    import jax

    from flaxsent.core import checkpoint as ckpt
    from flaxsent.core.plan import StepPlan
    from flaxsent.train.recipe import Recipe
    from flaxsent.train.step import TrainStep
    model = ckpt.load_model(folder, dtype="float32")
    step = TrainStep(model, Recipe(total_steps=10 * opts.steps, warmup_steps=0), devices=1)
    plan = StepPlan.build(opts.max_length, opts.batch_size, 1, packed=packed)
    params, state = step.init(model)
    batches = [plan.batch(b.tolist(), [arrays[i] for i in b], 0)
               for b in _batches(len(arrays), opts.batch_size)]
    timed = []
    for _ in range(2):
        start = time.perf_counter()
        for k, batch in enumerate(batches):
            params, state, loss, _ = step(params, state, batch, labels[batch.positions],
                                          jax.random.key(k))
        float(loss)  # wait for the last step
        timed.append(time.perf_counter() - start)
    return {"seconds": timed[1], "warmup_s": timed[0], "device": jax.default_backend(),
            "computed_tokens": sum(b.computed_tokens for b in batches),
            "shapes": sorted({str(b.shape) for b in batches}),
            "compiled_shapes": [list(s) for s in step.compiled_shapes]}


def run_torch(folder: Path, arrays, labels, opts: TrainBenchOptions, grouped: bool,
              ) -> dict[str, Any]:
    """transformers' model with torch.optim.AdamW: padded to max_length, or grouped + dynamic."""
    import torch
    import transformers
    torch.set_num_threads(sysinfo.usable_cores())
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where users would train it
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).train()
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    lengths = [len(a) for a in arrays]
    batches = _batches(len(arrays), opts.batch_size, lengths if grouped else None)
    computed = 0
    timed = []
    for pass_ in range(2):
        start = time.perf_counter()
        for b in batches:
            width = max(lengths[i] for i in b) if grouped else opts.max_length
            ids = torch.zeros((len(b), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(b):
                ids[r, :lengths[i]] = torch.from_numpy(arrays[i].astype(np.int64))
                mask[r, :lengths[i]] = 1
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                        labels=torch.from_numpy(labels[b].astype(np.int64)).to(device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            if pass_:
                computed += ids.numel()
        if device == "cuda":
            torch.cuda.synchronize()
        timed.append(time.perf_counter() - start)
    return {"seconds": timed[1], "warmup_s": timed[0], "computed_tokens": computed,
            "device": device}


def run_train_bench(opts: TrainBenchOptions) -> dict[str, Any]:
    """Every strategy on the same examples; writes train.json, train.md and train.png."""
    from tqdm import tqdm
    sysinfo.pin_xla_threads(sysinfo.usable_cores())
    folder = Path(opts.model) if opts.model else default_model_folder(quick=opts.quick,
                                                                      root=opts.model_cache)
    arrays, labels, source = _examples(opts, folder)
    real = int(sum(len(a) for a in arrays))
    rows = []
    bar = tqdm(STRATEGIES, desc="train bench", file=sys.stderr, disable=not opts.progress)
    for name in bar:
        bar.set_postfix_str(name)
        if name.startswith("flax"):
            r = run_flax(folder, arrays, labels, opts, packed=name == "flax-packed")
        else:
            r = run_torch(folder, arrays, labels, opts, grouped=name == "torch-grouped")
        r.update(name=name, examples_per_s=len(arrays) / r["seconds"],
                 real_tokens_per_s=real / r["seconds"],
                 padding_efficiency=real / r["computed_tokens"])
        rows.append(r)
    machine = sysinfo.machine_info()
    record = {"created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "options": dataclasses.asdict(opts), "machine": machine,
              "machine_label": sysinfo.machine_label(machine), "versions": versions(),
              "git": git_state(), "threads": sysinfo.usable_cores(),
              "model": str(folder), "weights": "real" if opts.model else "random",
              "data": source, "real_tokens": real, "strategies": rows}
    by = {r["name"]: r for r in rows}
    record["ratios"] = {
        "flax_packed_vs_torch_padded": by["flax-packed"]["examples_per_s"]
        / by["torch-padded"]["examples_per_s"],
        "flax_packed_vs_torch_grouped": by["flax-packed"]["examples_per_s"]
        / by["torch-grouped"]["examples_per_s"]}
    out = results_folder(opts.out, "train-")
    out.mkdir(parents=True, exist_ok=True)
    write_record(out, "train", record, markdown(record))
    chart(record, out / "train.png")
    record["out"] = str(out)
    return record


def markdown(record: dict[str, Any]) -> str:
    """The table: examples/s, real tokens/s and padding per strategy, and the ratios."""
    o, d = record["options"], record["data"]
    lines = [f"## flaxsent bench --train: {o['steps']} steps of {o['batch_size']} examples, "
             f"max length {o['max_length']}",
             f"**machine:** {record['machine_label']}, {record['threads']} threads each side; "
             f"commit {record['git'].get('commit') or '?'}"
             + (" (dirty)" if record["git"].get("dirty") else ""),
             f"**model:** {record['model']} (weights: {record['weights']}); **data:** "
             f"{d['source']}, {d['n']} sentences, mean {d['mean_tokens']:.1f} tokens",
             "", "| strategy | examples/s | real tok/s | pad eff | timed pass (s) | warm-up (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in record["strategies"]:
        lines.append(f"| {r['name']} | {r['examples_per_s']:.2f} | {r['real_tokens_per_s']:,.0f}"
                     f" | {100 * r['padding_efficiency']:.0f}% | {r['seconds']:.1f} | "
                     f"{r['warmup_s']:.1f} |")
    ratios = record["ratios"]
    lines += ["", f"flaxsent packed vs PyTorch padded to {o['max_length']}: "
                  f"**{ratios['flax_packed_vs_torch_padded']:.2f}x**; vs PyTorch at its best "
                  "(length-grouped, dynamic padding): "
                  f"**{ratios['flax_packed_vs_torch_grouped']:.2f}x**"]
    return "\n".join(lines)


def chart(record: dict[str, Any], path: Path) -> None:
    """examples/s per strategy, with padding efficiency on each bar."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    rows = record["strategies"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    colors = ["#1f77b4" if r["name"].startswith("flax") else "#7f7f7f" for r in rows]
    ax.barh([r["name"] for r in rows], [r["examples_per_s"] for r in rows], color=colors)
    for i, r in enumerate(rows):
        ax.text(r["examples_per_s"], i, f"  {r['examples_per_s']:.1f}/s, pad "
                f"{100 * r['padding_efficiency']:.0f}%", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["examples_per_s"] for r in rows) * 1.4)
    ax.set_xlabel("training examples / s (timed pass after a warm-up pass)")
    ax.set_title(f"training steps — {record['machine_label']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
