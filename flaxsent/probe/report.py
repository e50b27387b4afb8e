"""What `flaxsent probe` shows and writes: the Markdown summary, probe.json, probe.csv and
probe.png (a sorted bar chart per template with the spread marked; for pairs, P(a) against P(b)).
With --explain, each sentence's attributions (flaxsent/probe/attribution.py) join all three."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from flaxsent.errors import ProbeError
from flaxsent.io import durable
from flaxsent.io.writers import open_writer, report_folder
from flaxsent.probe.attribution import SentenceAttribution
from flaxsent.probe.run import PairsResult, ProbeResult
from flaxsent.version import __version__

FILES = ("probe.json", "probe.csv", "probe.png")
_MAX_TICK_LABELS = 250  # more bars than this: only the extremes are named


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _share(count: int, n: int) -> str:
    return f"{count / n:.1%} ({count} of {n})"


# ------------------------------------------------------------------------------------- Markdown

def probe_markdown(result: ProbeResult, model: str) -> str:
    """The template probe's summary as a Markdown table, one row per template (and the mean)."""
    lists = "; ".join(f"{{{v.name}}}: {len(v.values)} values ({v.source})"
                      for v in result.plan.lists.values())
    lines = [f"**P({result.label})** of `{model}` over {len(result.plan.sentences)} sentences; "
             f"{lists}", "",
             "| template | n | min | max | spread | std | label ≠ majority |",
             "|---|---:|---|---|---:|---:|---|"]
    for g in result.groups:
        s = g.stats
        lines.append(f"| {_cell(g.name)} | {s.n} | {s.min_p:.4f} ({_cell(s.min_value)}) | "
                     f"{s.max_p:.4f} ({_cell(s.max_value)}) | {s.spread:.4f} | {s.std:.4f} | "
                     f"{_share(s.flipped, s.n)}; majority {s.majority} |")
    return "\n".join(lines)


def pairs_markdown(result: PairsResult, model: str, source: str, worst: int = 5) -> str:
    """The paired probe's summary (ΔP = P(a) - P(b)) and its `worst` pairs by |ΔP|."""
    a, b = result.columns
    d = result.delta
    n = len(d)
    lines = [f"**P({result.label})** of `{model}` on {n} pairs from `{source}`; "
             f"ΔP = P({a}) − P({b})", "",
             "| pairs | mean ΔP | mean \\|ΔP\\| | max \\|ΔP\\| | label differs |",
             "|---:|---:|---:|---:|---|",
             f"| {n} | {d.mean():+.4f} | {np.abs(d).mean():.4f} | {np.abs(d).max():.4f} | "
             f"{_share(result.label_differs, n)} |"]
    if worst > 0:
        lines += ["", f"worst {min(worst, n)} pair(s) by |ΔP|:", "",
                  f"| # | {_cell(a)} | {_cell(b)} | P({_cell(a)}) | P({_cell(b)}) | ΔP |",
                  "|---:|---|---|---:|---:|---:|"]
        for i in result.worst(worst):
            x, y = result.a[i], result.b[i]
            lines.append(f"| {i + 1} | {_cell(x.sentence)} | {_cell(y.sentence)} | "
                         f"{x.scores[result.label]:.4f} | {y.scores[result.label]:.4f} | "
                         f"{d[i]:+.4f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- JSON and CSV

def _header(kind: str, model: str, labels: tuple[str, ...], label: str) -> dict[str, Any]:
    return {"probe": kind, "model": model, "labels": list(labels), "label": label,
            "flaxsent": __version__,
            "created_utc": dt.datetime.now(dt.UTC).isoformat(
                timespec="seconds")}


def probe_record(result: ProbeResult, model: str,
                 explained: list[SentenceAttribution] | None = None) -> dict[str, Any]:
    """Everything probe.json holds for a template probe: lists, summary, every sentence (with
    its attributions when `explained`)."""
    plan = result.plan
    record = {
        **_header("templates", model, result.labels, result.label),
        "templates": [{"template": t.text, "placeholders": list(t.placeholders)}
                      for t in plan.templates],
        "values": {v.name: {"source": v.source, "values": list(v.values)}
                   for v in plan.lists.values()},
        "summary": [{"group": g.name, **vars(g.stats), "flip_share": g.stats.flip_share}
                    for g in result.groups],
        "sentences": [{"template": f.template,
                       "values": dict(zip(plan.templates[f.template].placeholders, f.values,
                                          strict=True)),
                       "sentence": s.sentence, "label": s.label, "scores": s.scores}
                      for f, s in zip(plan.sentences, result.scored, strict=True)],
    }
    for row, a in zip(record["sentences"], explained or (), strict=False):
        row["explain"] = a.as_dict()
    return record


def probe_rows(result: ProbeResult, explained: list[SentenceAttribution] | None = None,
               ) -> list[dict[str, Any]]:
    """probe.csv's rows: template, a `{NAME}` column per placeholder, sentence, predicted label,
    P(label) for every label; with `explained`, the value's attribution and the top words."""
    plan = result.plan
    names = list(plan.lists)
    rows = []
    for f, s in zip(plan.sentences, result.scored, strict=True):
        t = plan.templates[f.template]
        filled = dict(zip(t.placeholders, f.values, strict=True))
        rows.append({"template": t.text, **{f"{{{n}}}": filled.get(n) for n in names},
                     "sentence": s.sentence, "predicted": s.label,
                     **{f"P({k})": s.scores[k] for k in result.labels}})
    for row, a in zip(rows, explained or (), strict=False):
        row.update({"value attribution": a.value, "top words": a.top_text(), "gap": a.gap})
    return rows


def pairs_record(result: PairsResult, model: str, source: str,
                 explained: tuple[list[SentenceAttribution], list[SentenceAttribution]]
                 | None = None) -> dict[str, Any]:
    """Everything probe.json holds for a paired probe: the summary and every pair (sides `a`
    and `b`, whatever the file's columns are called; each side's attributions when
    `explained`)."""
    d = result.delta
    record = {
        **_header("pairs", model, result.labels, result.label),
        "pairs_file": source, "columns": list(result.columns),
        "summary": {"n": len(d), "mean_delta": float(d.mean()),
                    "mean_abs_delta": float(np.abs(d).mean()),
                    "max_abs_delta": float(np.abs(d).max()),
                    "label_differs": result.label_differs},
        "pairs": [{"a": x.sentence, "b": y.sentence, "label": [x.label, y.label],
                   "scores": [x.scores, y.scores], "delta": float(delta)}
                  for x, y, delta in zip(result.a, result.b, d, strict=True)],
    }
    if explained:
        for row, a, b in zip(record["pairs"], *explained, strict=True):
            row["explain"] = [a.as_dict(), b.as_dict()]
    return record


def pairs_rows(result: PairsResult,
               explained: tuple[list[SentenceAttribution], list[SentenceAttribution]]
               | None = None) -> list[dict[str, Any]]:
    """probe.csv's rows for pairs: both sentences (`a`, `b`), P(label | side) for every label,
    the predicted labels and ΔP; with `explained`, each side's top words."""
    rows = []
    for i, (x, y) in enumerate(zip(result.a, result.b, strict=True)):
        rows.append({"pair": i + 1, "a": x.sentence, "b": y.sentence,
                     **{f"P({k} | a)": x.scores[k] for k in result.labels},
                     **{f"P({k} | b)": y.scores[k] for k in result.labels},
                     "predicted a": x.label, "predicted b": y.label,
                     f"delta P({result.label})": float(result.delta[i])})
    if explained:
        for row, a, b in zip(rows, *explained, strict=True):
            row.update({"top words a": a.top_text(), "top words b": b.top_text()})
    return rows


# ---------------------------------------------------------------------------------------- charts

def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def plot_probe(result: ProbeResult, path: Path,
               explained: list[SentenceAttribution] | None = None) -> None:
    """One panel per group: P(label) per value, sorted, bars coloured by the predicted label,
    lines at the min and max and the spread between them marked; with `explained`, each
    template's values' own attributions as dots on a second axis."""
    Figure = _figure_class()
    n_max = max(g.stats.n for g in result.groups)
    width = min(max(8.0, 0.12 * n_max + 2.0), 40.0)
    fig = Figure(figsize=(width, 4.6 * len(result.groups)), layout="constrained")
    axes = fig.subplots(len(result.groups), 1, squeeze=False)[:, 0]
    colors = {k: f"C{i}" for i, k in enumerate(result.labels)}
    for i, (ax, g) in enumerate(zip(axes, result.groups, strict=True)):
        order = np.argsort(-g.p, kind="stable")
        x = np.arange(g.stats.n)
        ax.bar(x, g.p[order], width=0.8, color=[colors[g.predicted[i]] for i in order])
        from matplotlib.patches import Patch  # a legend entry per predicted label, its colour
        handles = [Patch(color=colors[k], label=f"predicted {k}")
                   for k in dict.fromkeys(g.predicted)]
        s = g.stats
        ax.axhspan(s.min_p, s.max_p, color="grey", alpha=0.15, lw=0, zorder=0)
        for y in (s.min_p, s.max_p):
            ax.axhline(y, color="black", lw=0.8, ls="--")
        right = g.stats.n + 0.5  # the spread's arrow, just right of the last bar
        ax.annotate("", xy=(right, s.max_p), xytext=(right, s.min_p),
                    arrowprops={"arrowstyle": "<->", "color": "black"}, annotation_clip=False)
        ax.text(right, (s.min_p + s.max_p) / 2, f" spread\n {s.spread:.3f}", va="center",
                ha="left", fontsize="small")
        if g.stats.n <= _MAX_TICK_LABELS:
            ax.set_xticks(x, [g.values[i] for i in order], rotation=90,
                          fontsize=6 if g.stats.n > 60 else 8)
        else:
            ax.set_xticks([0, g.stats.n - 1], [g.values[order[0]], g.values[order[-1]]])
        ax.set(xlim=(-1, right + max(6.0, 0.06 * g.stats.n)), ylim=(0, 1.05),
               ylabel=f"P({result.label})",
               title=f"{g.name}: max {s.max_p:.3f} ({s.max_value}), min {s.min_p:.3f} "
                     f"({s.min_value}), std {s.std:.3f}, n={s.n}")
        if explained and i < len(result.plan.templates):
            values = np.array([np.nan if a.value is None else a.value
                               for f, a in zip(result.plan.sentences, explained, strict=True)
                               if f.template == i])
            twin = ax.twinx()
            dots = twin.plot(x, values[order], "k.", ms=4,
                             label=f"attribution of the value to P({result.label})")
            twin.axhline(0, color="black", lw=0.5)
            twin.set_ylabel("value attribution")
            handles += dots
        ax.legend(handles=handles, loc="upper right", fontsize="small")
    fig.savefig(path, format="png", dpi=110)


def plot_pairs(result: PairsResult, path: Path, worst: int = 5) -> None:
    """P(label | a) against P(label | b) per pair, the diagonal, the worst pairs numbered."""
    Figure = _figure_class()
    a, b = result.columns
    pa = np.array([x.scores[result.label] for x in result.a])
    pb = np.array([y.scores[result.label] for y in result.b])
    differs = np.array([x.label != y.label for x, y in zip(result.a, result.b, strict=True)])
    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.scatter(pa[~differs], pb[~differs], s=14, color="C0", label="same label")
    ax.scatter(pa[differs], pb[differs], s=14, color="C3", label="label differs")
    for i in result.worst(worst):
        ax.annotate(str(i + 1), (pa[i], pb[i]), fontsize="small", xytext=(3, 3),
                    textcoords="offset points")
    d = result.delta
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel=f"P({result.label} | {a})",
           ylabel=f"P({result.label} | {b})",
           title=f"{len(d)} pairs: mean |ΔP| {np.abs(d).mean():.3f}, "
                 f"max |ΔP| {np.abs(d).max():.3f}")
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(path, format="png", dpi=110)


# --------------------------------------------------------------------------------------- output

def check_out(out: str, force: bool) -> Path:
    """The output folder, refusing to overwrite earlier probe files unless `force`."""
    return report_folder(out, FILES, force, ProbeError)


def write_outputs(record: dict[str, Any], rows: list[dict[str, Any]], plot: Any, out: str,
                  force: bool = False) -> list[str]:
    """Write probe.json, probe.csv and probe.png (`plot(path)`; skipped with a note when
    matplotlib is missing) into `out`; the paths written."""
    folder = check_out(out, force)
    folder.mkdir(parents=True, exist_ok=True)
    durable.write_text(folder / "probe.json",
                       json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    with open_writer(str(folder / "probe.csv")) as writer:
        writer.write_chunk(rows)
    written = [str(folder / "probe.json"), str(folder / "probe.csv")]
    if _figure_class() is None:
        print("flaxsent probe: probe.png skipped: pip install matplotlib to draw it",
              file=sys.stderr)
    else:
        plot(folder / "probe.png")
        written.append(str(folder / "probe.png"))
    return written
