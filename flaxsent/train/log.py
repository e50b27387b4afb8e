"""What a training run records: metrics.jsonl (per step and per epoch), curves.png, TensorBoard."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from flaxsent.io import durable

METRICS = "metrics.jsonl"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"  # the event files' folder (--tensorboard)


class TrainLog:
    """Appends one JSON line per step and per evaluation; flushed as written (a killed run keeps
    what it logged, and `truncate_after` drops what a resumed run will redo)."""

    def __init__(self, out: Path, tensorboard: bool = False) -> None:
        self.path = out / METRICS
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._writer = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise ImportError("--tensorboard needs tensorboardX: pip install "
                                  "'flaxsent[tensorboard]'") from None
            self._writer = SummaryWriter(str(out / TENSORBOARD))

    @staticmethod
    def truncate_after(out: Path, step: int) -> None:
        """Keep only the records of steps up to `step` (the checkpoint a resumed run starts at),
        replacing the file durably: a kill leaves the old records or the kept ones."""
        path = out / METRICS
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a torn last line of a killed run
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        durable.write_text(path, "".join(k + "\n" for k in kept))

    def write(self, record: dict[str, Any]) -> None:
        """One record: {'kind': 'step' | 'eval', 'step': N, ...numbers}."""
        self._file.write(json.dumps(record, allow_nan=False, default=_plain) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_log(out: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl (a torn last line skipped)."""
    records = []
    path = out / METRICS
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def plot_curves(out: Path, title: str) -> Path | None:
    """curves.png: training loss (each step, and its running mean) with the learning rate, and
    the evaluation metrics at each epoch. None (and a note) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("flaxsent train: curves.png skipped: pip install matplotlib to draw it",
              file=sys.stderr)
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    records = read_log(out)
    steps = [r for r in records if r["kind"] == "step"]
    evals = [r for r in records if r["kind"] == "eval"]
    fig, (ax1, ax3) = plt.subplots(1, 2, figsize=(13, 4.5))
    if steps:
        x = [r["step"] for r in steps]
        loss = [r["loss"] for r in steps]
        window = max(1, len(loss) // 50)
        mean = [sum(loss[max(0, i - window + 1):i + 1]) / len(loss[max(0, i - window + 1):i + 1])
                for i in range(len(loss))]
        ax1.plot(x, loss, color="#c6dbef", lw=0.6, label="loss (each step)")
        ax1.plot(x, mean, color="#1f77b4", lw=1.5, label=f"running mean ({window} steps)")
        ax1.set_xlabel("optimizer step")
        ax1.set_ylabel("cross-entropy")
        ax2 = ax1.twinx()
        ax2.plot(x, [r["learning_rate"] for r in steps], color="#ff7f0e", lw=1, label="lr")
        ax2.set_ylabel("learning rate", color="#ff7f0e")
        ax1.legend(loc="upper right", fontsize=8)
    ax1.set_title("training", fontsize=10)
    if evals:
        x = [r["step"] for r in evals]
        for key, style in (("accuracy", "o-"), ("f1", "s--"), ("auc", "^:")):
            values = [r.get(key) for r in evals]
            if all(v is not None and math.isfinite(v) for v in values):
                ax3.plot(x, values, style, label=key)
        ax3.set_xlabel("optimizer step")
        ax3.legend(fontsize=8)
        for r in evals:
            ax3.annotate(f"{r['accuracy']:.3f}", (r["step"], r["accuracy"]), fontsize=7,
                         textcoords="offset points", xytext=(0, 6), ha="center")
    ax3.set_title("evaluation (--eval), at the end of each epoch" if evals else
                  "no --eval file: no evaluation", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = out / CURVES
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
