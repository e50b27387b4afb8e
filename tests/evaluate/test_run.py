"""`flaxsent eval`: the JSON metrics equal scikit-learn's on the same predictions, every input
format, label names, the table, the PNG plot, and bad rows named by line."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from flaxsent.cli import build_parser
from flaxsent.core.classifier import Classifier
from flaxsent.errors import FlaxsentError
from flaxsent.evaluate import run as evaluate
from tests.helpers import ROOT, WORDS


def examples(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    r = random.Random(seed)
    texts = [" ".join(r.choice(WORDS) for _ in range(r.randint(1, 25))) for _ in range(n)]
    return texts, [r.randint(0, 1) for _ in range(n)]


def write_sst2(path: Path, texts: list[str], labels: list) -> None:
    body = "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True))
    path.write_text("sentence\tlabel\n" + body, encoding="utf-8")


@pytest.fixture(scope="module")
def clf(tiny_flax) -> Classifier:
    return Classifier.from_pretrained(tiny_flax)


def run_eval(capsys, argv: list[str]) -> str:
    args = build_parser().parse_args(["eval", *argv])
    capsys.readouterr()
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_json_metrics_equal_sklearn(tiny_flax, tmp_path, capsys):
    sk = pytest.importorskip("sklearn.metrics")
    texts, labels = examples(200, seed=1)
    data = tmp_path / "dev.tsv"
    write_sst2(data, texts, labels)
    out = json.loads(run_eval(capsys, ["--model", str(tiny_flax), str(data), "--json"]))

    logits = Classifier.from_pretrained(tiny_flax).logits(texts).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model may never predict one class
        want = {"accuracy": sk.accuracy_score(labels, pred),
                "precision": sk.precision_score(labels, pred),
                "recall": sk.recall_score(labels, pred),
                "f1": sk.f1_score(labels, pred),
                "auc": sk.roc_auc_score(labels, probs[:, 1]),
                "loss": sk.log_loss(labels, probs)}
    for key, value in want.items():
        assert out[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert out["confusion_matrix"] == sk.confusion_matrix(labels, pred).tolist()
    assert out["n"] == 200


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_formats_and_label_names_agree(clf, tmp_path, fmt):
    texts, labels = examples(60, seed=2)
    names = [["negative", "POSITIVE"][y] for y in labels]  # names, any case
    rows = [{"text": t, "label": n, "id": i}
            for i, (t, n) in enumerate(zip(texts, names, strict=True))]
    data = tmp_path / f"dev.{fmt}"
    if fmt == "csv":
        with open(data, "w", newline="") as f:
            w = csv.DictWriter(f, ["id", "text", "label"])
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), data)
    tsv = tmp_path / "dev.tsv"
    write_sst2(tsv, texts, labels)
    got, y, probs = evaluate.evaluate_file(clf, str(data))
    want, _, _ = evaluate.evaluate_file(clf, str(tsv))
    assert got == want
    assert y.tolist() == labels and probs.shape == (60, 2)


def test_table_and_plot(tiny_flax, tmp_path, capsys):
    texts, labels = examples(40, seed=3)
    data = tmp_path / "dev.tsv"
    write_sst2(data, texts, labels)
    png = tmp_path / "metrics.png"
    table = run_eval(capsys, ["--model", str(tiny_flax), str(data), "--plot", str(png)])
    for word in ("accuracy", "precision", "recall", "f1", "auc", "loss", "confusion matrix",
                 "NEGATIVE", "POSITIVE"):
        assert word in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread
    image = imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_bad_rows_name_the_line(clf, tmp_path):
    texts, labels = examples(10, seed=4)
    data = tmp_path / "dev.tsv"
    write_sst2(data, texts, [*labels[:6], "maybe", *labels[7:]])
    with pytest.raises(FlaxsentError, match="dev.tsv, line 8: label 'maybe' is not a class"):
        evaluate.evaluate_file(clf, str(data))
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text('{"text": "fun", "label": 1}\n{oops\n')
    with pytest.raises(FlaxsentError, match=r"dev\.jsonl, line 2: not valid JSON"):
        evaluate.evaluate_file(clf, str(jsonl))
    jsonl.write_text('{"text": "fun", "label": 1}\n{"text": "dull"}\n')
    with pytest.raises(FlaxsentError, match=r"line 2: no 'label' field"):
        evaluate.evaluate_file(clf, str(jsonl))
    with pytest.raises(FlaxsentError, match="no label column 'gold'"):
        evaluate.evaluate_file(clf, str(data), label_column="gold")
    txt = tmp_path / "dev.txt"
    txt.write_text("fun\n")
    with pytest.raises(FlaxsentError, match="plain text"):
        evaluate.evaluate_file(clf, str(txt))


def test_subprocess_json_one_object(tiny_flax, tmp_path):
    texts, labels = examples(30, seed=5)
    data = tmp_path / "dev.tsv"
    write_sst2(data, texts, labels)
    code = "import sys; from flaxsent.cli import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, "eval", "--model", str(tiny_flax),
                           str(data), "--json"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert {"accuracy", "precision", "recall", "f1", "auc", "loss", "confusion_matrix",
            "n"} <= set(out)
