"""`flaxsent predict`: every format in and out, order, extras, top-k, bad rows, --resume after a
SIGKILL (byte-identical), overwrite protection and a 2-process jax.distributed run."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flaxsent import predict
from flaxsent.classifier import Classifier
from flaxsent.errors import FlaxsentError

from .conftest import WORDS

ROOT = Path(__file__).resolve().parent.parent
# the CLI as a subprocess, through this module's own parser (cli.py wires it in separately)
CLI = ("import sys, argparse; from flaxsent import predict; from flaxsent.errors import "
       "FlaxsentError; p = argparse.ArgumentParser(prog='flaxsent'); "
       "predict.add_parser(p.add_subparsers(dest='command', required=True)); "
       "a = p.parse_args(sys.argv[1:]);\n"
       "try: sys.exit(a.func(a))\n"
       "except FlaxsentError as e: print('flaxsent predict: error:', e, file=sys.stderr); "
       "sys.exit(2)")


def texts(n: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(1, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def clf(tiny_flax) -> Classifier:
    return Classifier.from_pretrained(tiny_flax, window=64)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flaxsent")
    predict.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def cli(argv: list[str]) -> int:
    args = parse(["predict", *argv])
    return args.func(args)


def subprocess_cli(argv: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           **kwargs.pop("env", {})}
    return subprocess.Popen([sys.executable, "-c", CLI, "predict", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def write_input(path: Path, rows: list[dict]) -> None:
    """rows of {'text', 'id'} in the format of the path's extension."""
    kind = path.suffix
    if kind == ".txt":
        path.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    elif kind == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t" if kind == ".tsv" else ",", lineterminator="\n")
            w.writerow(["id", "text"])
            w.writerows([[r["id"], r["text"]] for r in rows])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), path)


def read_output(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            for key in ("labels", "logits"):
                if row.get(key):
                    row[key] = json.loads(row[key])
            if row.get("score"):
                row["score"] = float(row["score"])
        return rows
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fmt_in", ["txt", "jsonl", "csv", "tsv", "parquet"])
def test_input_formats_keep_order_and_extras(clf, tmp_path, fmt_in):
    items = [{"id": f"r{i}", "text": t} for i, t in enumerate(texts(150, seed=1))]
    src = tmp_path / f"in.{fmt_in}"
    write_input(src, items)
    out = tmp_path / "out.jsonl"
    result = predict.predict_file(clf, str(src), str(out), chunk_size=40, progress=False)
    assert result.written == 150
    want = list(clf.stream([r["text"] for r in items]))
    got = read_output(out)
    assert [{"label": r["label"], "score": r["score"]} for r in got] == want
    if fmt_in != "txt":
        assert [r["id"] for r in got] == [r["id"] for r in items]


@pytest.mark.parametrize("fmt_out", ["jsonl", "csv", "parquet"])
def test_output_formats_with_top_k_and_logits(clf, tmp_path, fmt_out):
    items = [{"id": i, "text": t} for i, t in enumerate(texts(90, seed=2))]
    src = tmp_path / "in.jsonl"
    write_input(src, items)
    out = tmp_path / f"out.{fmt_out}"
    predict.predict_file(clf, str(src), str(out), top_k=None, logits=True, chunk_size=32,
                         progress=False)
    got = read_output(out)
    plain = [r["text"] for r in items]
    assert [r["labels"] for r in got] == clf(plain, top_k=None)
    logits = np.array([r["logits"] for r in got], dtype=np.float32)
    np.testing.assert_array_equal(logits, clf.logits(plain))
    assert [int(r["id"]) for r in got] == list(range(90))


def test_top_k_cli_value_and_stdin_stdout(tiny_flax, tmp_path, monkeypatch, capsysbinary):
    lines = texts(12, seed=3)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        "".join(t + "\n" for t in lines).encode())))
    assert cli(["--model", str(tiny_flax), "-", "--top-k", "2", "--no-progress"]) == 0
    out = capsysbinary.readouterr().out.decode().splitlines()
    got = [json.loads(line) for line in out]
    want = Classifier.from_pretrained(tiny_flax)(lines, top_k=2)
    assert [r["labels"] for r in got] == want
    with pytest.raises(SystemExit):
        parse(["predict", "x.txt", "--model", "m", "--top-k", "0"])


def bad_jsonl(path: Path, n: int, bad: set[int]) -> list[str]:
    """n JSONL rows with an `id`; the 1-based lines in `bad` are not JSON."""
    items = texts(n, seed=4)
    path.write_text("".join(("{broken\n" if i + 1 in bad else
                             json.dumps({"id": i, "text": t}) + "\n")
                            for i, t in enumerate(items)), encoding="utf-8")
    return items


def test_bad_row_fails_after_writing_the_rows_before_it(clf, tmp_path):
    src = tmp_path / "in.jsonl"
    items = bad_jsonl(src, 20, {11})
    out = tmp_path / "out.jsonl"
    with pytest.raises(FlaxsentError, match=r"in\.jsonl, line 11: not valid JSON"):
        predict.predict_file(clf, str(src), str(out), chunk_size=4, progress=False)
    got = read_output(out)
    assert [r["id"] for r in got] == list(range(10))  # every row before the bad one
    assert [{"label": r["label"], "score": r["score"]} for r in got] == list(
        clf.stream(items[:10]))


@pytest.mark.parametrize("fmt_out,chunk_size", [("jsonl", 3), ("csv", 3), ("parquet", 1)])
def test_bad_rows_skipped_as_error_records(clf, tmp_path, fmt_out, chunk_size):
    src = tmp_path / "in.jsonl"
    items = bad_jsonl(src, 20, {1, 7, 20})
    out = tmp_path / f"out.{fmt_out}"
    result = predict.predict_file(clf, str(src), str(out), on_error="skip",
                                  chunk_size=chunk_size, progress=False)
    assert result.skipped_errors == 3 and result.written == 20
    got = read_output(out)
    assert len(got) == 20
    good = [i for i in range(20) if i + 1 not in {1, 7, 20}]
    want = list(clf.stream([items[i] for i in good]))
    for i, row in enumerate(got):
        if i + 1 in {1, 7, 20}:
            assert int(row["line"]) == i + 1 and "not valid JSON" in row["error"]
            assert row["label"] in (None, "")
        else:
            assert int(row["id"]) == i and not row.get("error")
            assert {"label": row["label"], "score": row["score"]} == want.pop(0)


def test_existing_output_refused_without_force_or_resume(clf, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("good fun\nbad film\n")
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(FlaxsentError, match="already exists.*--resume.*--force"):
        predict.predict_file(clf, str(src), str(out), progress=False)
    assert out.read_text() == "keep me\n"
    predict.predict_file(clf, str(src), str(out), force=True, progress=False)
    assert len(read_output(out)) == 2
    with pytest.raises(FlaxsentError, match="stdout"):
        predict.predict_file(clf, str(src), None, resume=True, progress=False)


def test_sigkill_then_resume_is_byte_identical(tiny_flax, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(3000, seed=5)), encoding="utf-8")
    full, killed = tmp_path / "full.jsonl", tmp_path / "killed.jsonl"
    common = ["--model", str(tiny_flax), str(src), "--chunk-size", "64", "--no-progress"]
    reference = subprocess_cli([*common, "-o", str(full)])
    proc = subprocess_cli([*common, "-o", str(killed)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if killed.exists() and killed.stat().st_size > 0:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    kept = killed.read_bytes()
    assert 0 < kept.count(b"\n") < 3000  # killed mid-run
    killed.write_bytes(kept + b'{"label": "POSI')  # and as if torn inside a write
    _, err = reference.communicate(timeout=60)
    assert reference.returncode == 0, err.decode()
    resumed = subprocess_cli([*common, "-o", str(killed), "--resume"])
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err.decode()
    assert b"after %d kept" % kept.count(b"\n") in err
    assert killed.read_bytes() == full.read_bytes()


def test_resume_csv_and_refuse_parquet(clf, tiny_flax, tmp_path):
    src = tmp_path / "in.jsonl"
    write_input(src, [{"id": i, "text": t} for i, t in enumerate(texts(50, seed=6))])
    full, part = tmp_path / "full.csv", tmp_path / "part.csv"
    clf = Classifier.from_pretrained(tiny_flax, window=10)
    predict.predict_file(clf, str(src), str(full), chunk_size=10, progress=False)
    lines = full.read_bytes().splitlines(keepends=True)
    # header + 25 rows + a torn row: the resume restarts at the window boundary, row 20
    part.write_bytes(b"".join(lines[:26]) + lines[26][:5])
    result = predict.predict_file(clf, str(src), str(part), resume=True, chunk_size=10,
                                  progress=False)
    assert result.resumed_from == 20 and result.written == 30
    assert part.read_bytes() == full.read_bytes()
    with pytest.raises(FlaxsentError, match="parquet"):
        predict.predict_file(clf, str(src), str(tmp_path / "o.parquet"), resume=True,
                             progress=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_distributed_run_merges_to_single_process_output(tiny_flax, tmp_path):
    src = tmp_path / "in.jsonl"
    write_input(src, [{"id": i, "text": t} for i, t in enumerate(texts(301, seed=7))])
    single, sharded, merged = (tmp_path / n for n in ("single.jsonl", "out.jsonl",
                                                      "merged.jsonl"))
    common = ["--model", str(tiny_flax), str(src), "--chunk-size", "50", "--no-progress"]
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [subprocess_cli([*common, "-o", str(sharded), "--distributed"],
                            env={"JAX_COORDINATOR_ADDRESS": coordinator,
                                 "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(pid)})
             for pid in (0, 1)]
    assert cli([*common, "-o", str(single)]) == 0
    for proc in procs:
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err.decode()[-2000:]
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["parts"] == ["out.jsonl.part-0-of-2", "out.jsonl.part-1-of-2"]
    part1 = read_output(tmp_path / "out.jsonl.part-1-of-2")
    # whole windows of 50 rows (the chunk size) are dealt out in turn
    assert [r["_row"] for r in part1] == [i for i in range(301) if (i // 50) % 2 == 1]
    assert cli(["--merge", str(tmp_path / "out.jsonl.manifest.json"), "-o", str(merged)]) == 0
    assert "_row" not in read_output(merged)[0]
    assert merged.read_bytes() == single.read_bytes()


def test_merge_detects_an_incomplete_part(clf, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("".join(t + "\n" for t in texts(300, seed=8)))
    out = tmp_path / "o.jsonl"
    for pid in (0, 1, 2):
        predict.predict_file(clf, str(src), predict.Shard(pid, 3).part_path(str(out)),
                             shard=predict.Shard(pid, 3), progress=False)
    manifest = predict.write_manifest(str(out), predict.Shard(0, 3, block=clf.window), str(src))
    assert predict.merge_parts(manifest, str(tmp_path / "m.jsonl")) == 300
    part0 = Path(predict.Shard(0, 3).part_path(str(out)))
    part0.write_bytes(b"".join(part0.read_bytes().splitlines(keepends=True)[:2]))
    with pytest.raises(FlaxsentError, match="incomplete"):
        predict.merge_parts(manifest, str(tmp_path / "m2.jsonl"))


@pytest.mark.parametrize("count, block, total", [(1, 1, 10), (2, 50, 301), (3, 7, 100)])
def test_shards_cover_every_row_once(count, block, total):
    shards = [predict.Shard(i, count, block) for i in range(count)]
    owners = [[s.index for s in shards if s.owns(row)] for row in range(total)]
    assert all(len(o) == 1 for o in owners)
    for s in shards:
        mine = [row for row in range(total) if s.owns(row)]
        assert s.rows_of(total) == len(mine)
        assert [s.global_row(k) for k in range(len(mine))] == mine
