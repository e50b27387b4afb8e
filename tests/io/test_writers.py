"""Tests for flaxsent.io.writers: every output format, durable chunks, append, and the trimming
that lets --resume continue at a record (or window) boundary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flaxsent.errors import RecordsError
from flaxsent.io.readers import read_records
from flaxsent.io.writers import open_writer, trim_for_resume


@pytest.fixture
def pa():
    return pytest.importorskip("pyarrow")


ROWS = [
    {"line": 1, "label": "POSITIVE", "score": np.float32(0.875), "text": "naïve ✓"},
    {"line": 2, "label": "NEGATIVE", "score": 0.25, "text": "a, \"quoted\"\nline"},
]


def test_jsonl_writer_round_trip(tmp_path):
    path = str(tmp_path / "out.jsonl")
    with open_writer(path) as writer:
        writer.write_chunk(ROWS)
        writer.write_chunk([])
        writer.write_chunk([{"line": 3, "score": float("nan"), "logits": np.array([1.5, -2.0])}])
    text = Path(path).read_text(encoding="utf-8")
    assert "naïve ✓" in text  # ensure_ascii=False
    got = [json.loads(line) for line in text.splitlines()]
    assert got[0] == {"line": 1, "label": "POSITIVE", "score": 0.875, "text": "naïve ✓"}
    assert got[1]["text"] == ROWS[1]["text"]
    assert got[2] == {"line": 3, "score": None, "logits": [1.5, -2.0]}
    assert "NaN" not in text
    assert writer.rows_written == 3


def test_jsonl_writer_to_stdout(capsys):
    writer = open_writer(None)
    writer.write_chunk([{"label": "POSITIVE", "score": 1.0}])
    writer.close()
    writer = open_writer("-")
    writer.write_chunk([{"text": "é"}])
    writer.close()
    assert capsys.readouterr().out == '{"label": "POSITIVE", "score": 1.0}\n{"text": "é"}\n'


def test_each_chunk_is_one_write_and_durable(tmp_path, monkeypatch):
    import os
    path = str(tmp_path / "out.jsonl")
    writer = open_writer(path)
    writes, syncs = [], []
    real_write = writer._file.write
    monkeypatch.setattr(writer._file, "write", lambda b: writes.append(b) or real_write(b),
                        raising=False)
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd))
    writer.write_chunk([{"i": i} for i in range(100)])
    assert len(writes) == 1 and len(syncs) == 1
    assert Path(path).read_text().count("\n") == 100  # on disk before close
    writer.close()


def test_csv_writer_round_trip_and_nested_values(tmp_path):
    import csv
    path = str(tmp_path / "out.csv")
    with open_writer(path) as writer:
        writer.write_chunk(ROWS)
        writer.write_chunk([{"line": 3, "label": None, "score": 0.5}])
    with open(path, newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert [r["text"] for r in got[:2]] == [ROWS[0]["text"], ROWS[1]["text"]]
    assert got[0]["score"] == "0.875" and got[2]["label"] == ""
    path2 = str(tmp_path / "topk.csv")
    with open_writer(path2) as writer:
        writer.write_chunk([{"line": 1, "top_k": [{"label": "A", "score": 0.5}]}])
    with open(path2, newline="", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    assert json.loads(row["top_k"]) == [{"label": "A", "score": 0.5}]


def test_csv_writer_rejects_new_columns(tmp_path):
    writer = open_writer(str(tmp_path / "out.csv"))
    writer.write_chunk([{"a": 1}])
    with pytest.raises(RecordsError, match="'b'"):
        writer.write_chunk([{"a": 2, "b": 3}])
    writer.close()


def test_append_mode_jsonl_and_csv(tmp_path):
    for name in ("out.jsonl", "out.csv"):
        path = str(tmp_path / name)
        with open_writer(path) as writer:
            writer.write_chunk([{"line": 1, "label": "A"}])
        with open_writer(path, append=True) as writer:
            writer.write_chunk([{"line": 2, "label": "B"}])
        assert trim_for_resume(path) == 2
        if name.endswith(".csv"):
            assert Path(path).read_text() == "line,label\n1,A\n2,B\n"  # header written once
    fresh = str(tmp_path / "fresh.csv")
    with open_writer(fresh, append=True) as writer:  # append to a missing file: header needed
        writer.write_chunk([{"x": 1}])
    assert Path(fresh).read_text() == "x\n1\n"


def test_parquet_writer_round_trip(tmp_path, pa):
    import pyarrow.parquet as pq
    path = str(tmp_path / "out.parquet")
    rows = [{"line": i, "label": "POSITIVE", "score": np.float32(0.5),
             "top_k": [{"label": "POSITIVE", "score": 0.5}]} for i in range(5)]
    with open_writer(path) as writer:
        writer.write_chunk(rows[:3])
        assert not Path(path).exists()  # written to .partial until closed
        writer.write_chunk(rows[3:])
    table = pq.read_table(path)
    assert table.num_rows == 5 and table.column("line").to_pylist() == list(range(5))
    assert table.column("top_k").to_pylist()[0] == [{"label": "POSITIVE", "score": 0.5}]
    assert not Path(path + ".partial").exists()
    # as an input, the output reads back
    with read_records(path, text_column="label") as reader:
        assert [r.text for r in reader] == ["POSITIVE"] * 5


def test_parquet_refuses_append_and_stdout_and_keeps_failed_runs_partial(tmp_path, pa):
    path = str(tmp_path / "out.parquet")
    with pytest.raises(RecordsError, match="cannot resume.*JSONL or CSV"):
        open_writer(path, append=True)
    with pytest.raises(RecordsError, match="stdout"):
        open_writer(None, fmt="parquet")
    with pytest.raises(KeyError), open_writer(path) as writer:
        writer.write_chunk([{"a": 1}])
        raise KeyError("boom")
    assert not Path(path).exists() and Path(path + ".partial").exists()
    with pytest.raises(RecordsError, match="cannot resume.*JSONL or CSV"):
        trim_for_resume(path)


def test_unknown_output_extension(tmp_path):
    with pytest.raises(RecordsError, match=r"\.csv.*\.jsonl.*\.parquet"):
        open_writer(str(tmp_path / "out.xlsx"))
    with pytest.raises(RecordsError, match="does not exist"):
        open_writer(str(tmp_path / "no" / "out.jsonl"))


# --------------------------------------------------------------------------------------- resume

def test_trim_cuts_a_partial_jsonl_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"line": 1}\n{"line": 2}\n{"line": 3, "sco')
    assert trim_for_resume(str(path)) == 2
    assert path.read_bytes() == b'{"line": 1}\n{"line": 2}\n'
    assert trim_for_resume(str(path)) == 2  # idempotent
    with open_writer(str(path), append=True) as writer:
        writer.write_chunk([{"line": 3}])
    assert [json.loads(x)["line"] for x in path.read_text().splitlines()] == [1, 2, 3]


def test_trim_edge_cases(tmp_path):
    assert trim_for_resume(str(tmp_path / "missing.jsonl")) == 0
    only_partial = tmp_path / "p.jsonl"
    only_partial.write_bytes(b'{"li')
    assert trim_for_resume(str(only_partial)) == 0
    assert only_partial.read_bytes() == b""
    with pytest.raises(RecordsError, match="output file"):
        trim_for_resume("-")
    with pytest.raises(RecordsError, match="output file"):
        trim_for_resume(None)


def test_trim_csv_cut_inside_a_quoted_field(tmp_path):
    path = tmp_path / "out.csv"
    full = b'line,text\n1,plain\n2,"two\nlines"\n'
    path.write_bytes(full + b'3,"cut after\nan embedded newline')
    assert trim_for_resume(str(path)) == 2
    assert path.read_bytes() == full
    path.write_bytes(full + b'3,"cut\n')
    assert trim_for_resume(str(path)) == 2
    assert path.read_bytes() == full
    path.write_bytes(b"line,te")
    assert trim_for_resume(str(path)) == 0
    assert path.read_bytes() == b""


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_trim_to_the_last_multiple_of_align(tmp_path, fmt):
    path = tmp_path / f"out.{fmt}"
    with open_writer(str(path)) as writer:
        writer.write_chunk([{"i": i, "text": f"row\n{i}"} for i in range(23)])
    whole = path.read_bytes()
    header = 1 if fmt == "csv" else 0
    per_row = 2 if fmt == "csv" else 1  # the csv text spans two lines
    lines = whole.splitlines(keepends=True)
    path.write_bytes(whole + lines[-1][:4])  # torn inside a 24th record
    assert trim_for_resume(str(path), align=10) == 20
    assert path.read_bytes() == b"".join(lines[:header + 20 * per_row])
    assert trim_for_resume(str(path), align=7) == 14
    assert trim_for_resume(str(path), align=20) == 0
    assert path.read_bytes() == b"".join(lines[:header])  # a csv keeps its header
    with open_writer(str(path), append=True) as writer:
        writer.write_chunk([{"i": 0, "text": "again"}])
    assert trim_for_resume(str(path)) == 1


FORMULAS = {  # cell -> as a safe CSV writes it (OWASP's CSV injection starts; numbers stay)
    "=1+2": "'=1+2", "+1+1": "'+1+1", "-2+3": "'-2+3", "@SUM(A1:A2)": "'@SUM(A1:A2)",
    "\tx": "'\tx", "\rx": "'\rx", "=HYPERLINK(\"http://x\")": "'=HYPERLINK(\"http://x\")",
    "-0.5": "-0.5", "+3": "+3", "-1e-5": "-1e-5", "plain": "plain", "'=kept": "'=kept",
    "a=b": "a=b", "": "",
}


@pytest.mark.parametrize("safe", [True, False])
def test_csv_cells_that_would_run_as_formulas_are_neutralised(tmp_path, safe):
    """Carried-through cells starting with a formula character are neutralised, so a
    spreadsheet opening the output shows `=...` cells as text."""
    import csv
    path = tmp_path / "out.csv"
    rows = [{"=cmd|' /C calc'!A0": cell, "label": "-1+1", "score": -0.25} for cell in FORMULAS]
    with open_writer(str(path), csv_safe=safe) as writer:
        writer.write_chunk(rows)
    with open(path, newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    if safe:
        assert got[0] == ["'=cmd|' /C calc'!A0", "label", "score"]
        assert [r[0] for r in got[1:]] == list(FORMULAS.values())
        assert {r[1] for r in got[1:]} == {"'-1+1"} and {r[2] for r in got[1:]} == {"-0.25"}
    else:
        assert got[0][0] == "=cmd|' /C calc'!A0" and [r[0] for r in got[1:]] == list(FORMULAS)
    # appending (--resume) reads the neutralised header back as the names it stands for
    with open_writer(str(path), append=True, csv_safe=safe) as writer:
        writer.write_chunk(rows[:1])
    assert path.read_text(encoding="utf-8").count("cmd|") == 1
