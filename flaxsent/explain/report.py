"""What `flaxsent explain` writes: attributions.jsonl (a record a text), explain.html (each text's
words shaded green for the target label, red against it, as transformers-interpret renders them)
and, for up to `MAX_PNG_TEXTS` texts, explain.png (the same shading)."""

from __future__ import annotations

import html
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flaxsent.core.attribution import Explanation
from flaxsent.errors import ExplainError
from flaxsent.io import durable
from flaxsent.io.writers import report_folder, to_json

FILES = ("attributions.jsonl", "explain.html", "explain.png")
MAX_PNG_TEXTS = 40  # more texts than this: the HTML only (a PNG that tall is unreadable)
_GREEN, _RED = (0, 160, 60), (220, 30, 30)


def record(e: Explanation) -> dict[str, Any]:
    """One line of attributions.jsonl: the text, its tokens and words with their attributions,
    the target, its probability, the logit difference and the convergence gap."""
    return {"text": e.text, "target": e.target, "predicted": e.predicted,
            "probability": e.probability, "method": e.method, "steps": e.steps,
            "tokens": list(e.tokens), "attributions": e.attributions.tolist(),
            "words": list(e.words), "word_attributions": e.word_attributions.tolist(),
            "delta": e.delta, "gap": e.gap}


def shades(values: np.ndarray) -> list[tuple[tuple[int, int, int], float]]:
    """(colour, opacity) per word: green toward the target, red against it, opacity scaled to
    the text's largest |attribution| (transformers-interpret's normalisation per text)."""
    top = float(np.abs(values).max()) if values.size else 0.0
    return [(_GREEN if v >= 0 else _RED, abs(float(v)) / top if top else 0.0) for v in values]


def render_html(explanations: Sequence[Explanation], model: str) -> str:
    """A self-contained page: a table row per text, its words shaded by attribution."""
    rows = []
    for i, e in enumerate(explanations):
        words = " ".join(
            f'<span class="w" style="background:rgba({r},{g},{b},{0.85 * a:.3f})" '
            f'title="{v:+.4f}">{html.escape(w)}</span>'
            for w, v, ((r, g, b), a) in zip(e.words, e.word_attributions,
                                            shades(e.word_attributions), strict=True))
        gap = "" if e.gap is None else f"{e.gap:+.2%}"
        rows.append(f"<tr><td>{i + 1}</td><td>{html.escape(e.predicted)}</td>"
                    f"<td>{html.escape(e.target)} ({e.probability:.3f})</td>"
                    f"<td>{e.word_attributions.sum():+.3f}</td><td>{gap}</td>"
                    f"<td class=\"t\">{words}</td></tr>")
    method = explanations[0].method if explanations else ""
    steps = f", {explanations[0].steps} steps" if explanations and method != \
        "gradient-x-input" else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>flaxsent explain</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 6px 10px; text-align: left; }}
td {{ vertical-align: top; }}
td.t {{ line-height: 2; }}
.w {{ padding: 2px 3px; border-radius: 3px; }}
</style></head><body>
<h2>Word attributions of {html.escape(model)}</h2>
<p>{html.escape(method)}{html.escape(steps)}. <span class="w"
style="background:rgba({','.join(map(str, _GREEN))},0.6)">green</span>: toward the target
label; <span class="w" style="background:rgba({','.join(map(str, _RED))},0.6)">red</span>:
against it; shade: |attribution| relative to the text's largest (hover for the value).</p>
<table><tr><th>#</th><th>predicted</th><th>target (probability)</th>
<th>attribution sum</th><th>gap</th><th>words</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


def plot_explanations(explanations: Sequence[Explanation], path: Path) -> None:
    """The HTML's shading as a PNG: each text's words in boxes shaded by attribution, wrapped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    width_in, dpi = 12.0, 110
    fig = Figure(figsize=(width_in, 1.0), dpi=dpi)
    renderer = FigureCanvasAgg(fig).get_renderer()
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    line = 0.0  # in text lines, down from the top
    margin, right, space = 0.01, 0.99, 0.004  # in figure widths
    for i, e in enumerate(explanations):
        ax.text(margin, -line, f"{i + 1}. {e.target} ({e.probability:.2f})", va="center",
                fontsize=9, fontweight="bold")
        line += 1
        x = margin
        for word, (color, alpha) in zip(e.words, shades(e.word_attributions), strict=True):
            face = (*(c / 255 for c in color), 0.85 * alpha)
            t = ax.text(x, -line, word, va="center", fontsize=9,
                        bbox={"facecolor": face, "edgecolor": "none", "pad": 1.5})
            w = t.get_window_extent(renderer).width / (width_in * dpi)
            if x > margin and x + w > right:  # wrap: the word starts the next line
                line += 1
                x = margin
                t.set_position((x, -line))
            x += w + space
        line += 1.5
    fig.set_size_inches(width_in, 0.28 * line + 0.3)
    ax.set(xlim=(0, 1), ylim=(-line, 1))
    with durable.replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def check_out(out: str, force: bool) -> Path:
    """The output folder, refusing to overwrite earlier explain files unless `force`."""
    return report_folder(out, FILES, force, ExplainError)


def write_outputs(explanations: Sequence[Explanation], model: str, out: str,
                  force: bool = False) -> list[str]:
    """attributions.jsonl, explain.html and (up to MAX_PNG_TEXTS texts, with matplotlib)
    explain.png in `out`; the paths written."""
    folder = check_out(out, force)
    folder.mkdir(parents=True, exist_ok=True)
    durable.write_text(folder / FILES[0], "".join(to_json(record(e)) + "\n"
                                                  for e in explanations))
    durable.write_text(folder / FILES[1], render_html(explanations, model))
    written = [str(folder / FILES[0]), str(folder / FILES[1])]
    (folder / FILES[2]).unlink(missing_ok=True)  # never an earlier run's chart beside these
    if len(explanations) > MAX_PNG_TEXTS:
        print(f"flaxsent explain: explain.png skipped: {len(explanations)} texts, over "
              f"{MAX_PNG_TEXTS} (see explain.html)", file=sys.stderr)
        return written
    try:
        import matplotlib  # noqa: F401 - only to know whether it is there
    except ImportError:
        print("flaxsent explain: explain.png skipped: pip install matplotlib to draw it",
              file=sys.stderr)
        return written
    plot_explanations(explanations, folder / FILES[2])
    return written + [str(folder / FILES[2])]
