"""Tests for flaxsent.io.readers: every input format, bad rows, whole-file errors, counting, the
bench's in-memory texts, and locations in messages."""

from __future__ import annotations

import io
import json
import sys
import tracemalloc
from pathlib import Path

import pytest

from flaxsent.errors import FlaxsentError, RecordsError
from flaxsent.io.readers import Record, count_records, read_records


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _read(path: str, **kwargs) -> list[Record]:
    with read_records(path, **kwargs) as reader:
        return list(reader)


def _texts(records: list[Record]) -> list[str | None]:
    return [r.text for r in records]


# ------------------------------------------------------------------------------------------ txt

def test_txt_lines_blank_lines_and_final_newline(tmp_path):
    path = _write(tmp_path / "in.txt", b"first\n\nthird  \n")
    records = _read(path)
    assert _texts(records) == ["first", "", "third  "]  # only the terminator is stripped
    assert [r.line for r in records] == [1, 2, 3]
    assert all(r.error is None and r.extra == {} for r in records)


def test_txt_crlf_no_final_newline_and_bom(tmp_path):
    path = _write(tmp_path / "in.txt", "\ufeffa\r\nb\r\n\r\nlast".encode())
    assert _texts(_read(path)) == ["a", "b", "", "last"]


def test_txt_empty_file_and_single_newline(tmp_path):
    assert _read(_write(tmp_path / "empty.txt", b"")) == []
    assert _texts(_read(_write(tmp_path / "nl.txt", b"\n"))) == [""]


def test_txt_invalid_utf8_is_a_bad_row_and_reading_goes_on(tmp_path):
    path = _write(tmp_path / "in.txt", "ok\nbad \xff\xfe byte\nstill ok é\n".encode("latin-1"))
    records = _read(path)
    assert [r.line for r in records] == [1, 2, 3]
    assert records[0].text == "ok"
    assert records[1].text is None and "invalid UTF-8" in records[1].error
    assert records[2].text is None and "invalid UTF-8" in records[2].error  # latin-1 é


def test_txt_start_skips_lines(tmp_path):
    path = _write(tmp_path / "in.txt", b"".join(b"line %d\n" % i for i in range(1, 11)))
    records = _read(path, start=7)
    assert _texts(records) == ["line 8", "line 9", "line 10"]
    assert [r.line for r in records] == [8, 9, 10]
    assert _read(path, start=50) == []


# ---------------------------------------------------------------------------------------- jsonl

def test_jsonl_text_extras_and_blank_lines(tmp_path):
    rows = [{"id": 7, "text": "héllo ✓", "meta": {"a": 1}}, {"text": "two", "id": 8}]
    data = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n  \n"
    records = _read(_write(tmp_path / "in.jsonl", data.encode()))
    assert _texts(records) == ["héllo ✓", "two"]
    assert records[0].extra == {"id": 7, "meta": {"a": 1}}
    assert records[1].extra == {"id": 8}


def test_jsonl_sentence_fallback_and_text_column(tmp_path):
    path = _write(tmp_path / "in.json", b'{"sentence": "s1", "label": 1, "body": "b1"}\r\n')
    (rec,) = _read(path)
    assert rec.text == "s1" and rec.extra == {"label": 1, "body": "b1"}
    (rec,) = _read(path, text_column="body")
    assert rec.text == "b1" and rec.extra == {"sentence": "s1", "label": 1}


def test_jsonl_bad_rows_have_errors_and_line_numbers(tmp_path):
    lines = [
        b'{"text": "good"}',
        b'{"text": "bad \xff"}',
        b'{"text": 12}',
        b'{"text": null}',
        b'{"other": "x"}',
        b"{not json",
        b'["a list"]',
        b'"a string"',
        b'{"text": "also good"}',
    ]
    records = _read(_write(tmp_path / "in.jsonl", b"\n".join(lines) + b"\n"))
    assert [r.line for r in records] == list(range(1, 10))
    assert _texts(records) == ["good", None, None, None, None, None, None, None, "also good"]
    errors = [r.error for r in records]
    assert errors[0] is None and errors[-1] is None
    assert "invalid UTF-8" in errors[1]
    assert "'text' is int" in errors[2]
    assert "'text' is null" in errors[3]
    assert "no 'text' field" in errors[4] and "'other'" in errors[4]
    assert "not valid JSON" in errors[5]
    assert "found list" in errors[6] and "found str" in errors[7]


def test_a_lone_surrogate_is_a_bad_row_not_a_tokenizer_crash(tmp_path):
    lines = [b'{"id": 1, "text": "fine"}', b'{"id": 2, "text": "bad \\ud800 text"}',
             b'{"id": 3, "text": "\\ud83d\\ude00 a valid pair"}']
    records = _read(_write(tmp_path / "in.jsonl", b"\n".join(lines) + b"\n"))
    assert _texts(records) == ["fine", None, "\U0001f600 a valid pair"]
    assert "lone UTF-16 surrogate (U+D800) at character 4" in records[1].error
    assert records[1].extra == {"id": 2}  # the row's other fields are kept


def test_jsonl_missing_chosen_column_is_a_bad_row(tmp_path):
    path = _write(tmp_path / "in.jsonl", b'{"review": "a"}\n{"text": "b"}\n')
    records = _read(path, text_column="review")
    assert records[0].text == "a"
    assert records[1].text is None and "'review'" in records[1].error


def test_json_array_file_is_a_whole_file_error(tmp_path):
    path = _write(tmp_path / "in.json", b'[{"text": "a"}, {"text": "b"}]')
    with pytest.raises(RecordsError, match="JSON array.*JSON Lines"):
        read_records(path)


def test_jsonl_start_counts_records_not_blank_lines(tmp_path):
    path = _write(tmp_path / "in.jsonl", b'{"text": "a"}\n\n{"text": "b"}\nnope\n{"text": "c"}\n')
    records = _read(path, start=2)
    assert [(r.line, r.text) for r in records] == [(4, None), (5, "c")]


# ------------------------------------------------------------------------------------- csv, tsv

def test_csv_columns_quoting_multiline_and_line_numbers(tmp_path):
    data = (b'id,text,label\r\n'
            b'1,"hello, world",pos\r\n'
            b'\r\n'
            b'2,"two\nlines",neg\r\n'
            b'3,"say ""hi""",pos\r\n')
    with read_records(_write(tmp_path / "in.csv", data)) as reader:
        assert reader.columns == ["id", "text", "label"] and reader.text_column == "text"
        records = list(reader)
    assert _texts(records) == ["hello, world", "two\nlines", 'say "hi"']
    assert [r.line for r in records] == [2, 4, 6]  # the physical line each row starts on
    assert records[0].extra == {"id": "1", "label": "pos"}


def test_csv_sentence_column_and_text_column(tmp_path):
    path = _write(tmp_path / "in.csv", "\ufeffsentence,review\nA,B\n".encode())
    assert _texts(_read(path)) == ["A"]  # BOM stripped from the header
    assert _texts(_read(path, text_column="review")) == ["B"]


def test_csv_bad_rows(tmp_path):
    data = (b"id,text\n"
            b"1,good\n"
            b"2\n"              # short row: no text column
            b"3,caf\xe9\n"      # latin-1
            b"4,fine\n")
    records = _read(_write(tmp_path / "in.csv", data))
    assert [r.line for r in records] == [2, 3, 4, 5]
    assert _texts(records) == ["good", None, None, "fine"]
    assert "no 'text'" in records[1].error
    assert "invalid UTF-8" in records[2].error


@pytest.mark.parametrize("ext", ["csv", "tsv"])
def test_a_row_with_invalid_bytes_keeps_its_readable_cells(tmp_path, ext):
    """The row is still an error, but its id (and every cell that is whole UTF-8) travels, so
    results join back to the input by id; a cell holding the bad bytes is None."""
    sep = b"," if ext == "csv" else b"\t"
    rows = [[b"id", b"text", b"note"], [b"1", b"\xff\xfe bad", b"ok \xe2\x9c\x93"],
            [b"2", b"fine", b"caf\xe9"], [b"3", b"good", b"x"]]
    records = _read(_write(tmp_path / f"in.{ext}", b"".join(sep.join(r) + b"\n" for r in rows)))
    assert [(r.line, r.text, r.extra) for r in records] == [
        (2, None, {"id": "1", "note": "ok \u2713"}), (3, None, {"id": "2", "note": None}),
        (4, "good", {"id": "3", "note": "x"})]
    assert all("invalid UTF-8" in r.error for r in records[:2])


def test_a_quoted_multiline_row_with_invalid_bytes_keeps_its_readable_cells(tmp_path):
    data = b'id,text\n7,"line one\nbad \xff here"\n8,next\n'
    records = _read(_write(tmp_path / "in.csv", data))
    assert [(r.line, r.text, r.extra) for r in records] == [(2, None, {"id": "7"}),
                                                            (4, "next", {"id": "8"})]


def test_csv_missing_column_is_a_whole_file_error_naming_the_columns(tmp_path):
    path = _write(tmp_path / "in.csv", b"id,review\n1,x\n")
    with pytest.raises(RecordsError, match="'id', 'review'.*--text-column"):
        read_records(path)
    with pytest.raises(RecordsError, match="no column 'body'"):
        read_records(path, text_column="body")
    with pytest.raises(RecordsError, match="empty"):
        read_records(_write(tmp_path / "empty.csv", b""))


def test_tsv_quotes_are_literal_text(tmp_path):
    data = b'sentence\tlabel\nit \'s a "gem\t1\nplain\t0\n'
    records = _read(_write(tmp_path / "in.tsv", data))
    assert _texts(records) == ['it \'s a "gem', "plain"]
    assert [r.extra["label"] for r in records] == ["1", "0"]
    assert [r.line for r in records] == [2, 3]


def test_csv_start(tmp_path):
    path = _write(tmp_path / "in.csv", b"text\na\nb\nc\n")
    assert _texts(_read(path, start=2)) == ["c"]


# -------------------------------------------------------------------------------------- parquet

@pytest.fixture
def pa():
    return pytest.importorskip("pyarrow")


def test_parquet_batches_extras_nulls_and_start(tmp_path, pa):
    import pyarrow.parquet as pq
    n = 10_000  # more than one record batch
    texts = [f"t{i}" if i % 1000 else None for i in range(n)]
    path = str(tmp_path / "in.parquet")
    pq.write_table(pa.table({"id": list(range(n)), "sentence": texts}), path, row_group_size=3000)
    with read_records(path) as reader:
        assert reader.text_column == "sentence"
        records = list(reader)
    assert len(records) == n and [r.line for r in records] == list(range(1, n + 1))
    assert records[1].text == "t1" and records[1].extra == {"id": 1}
    assert records[0].text is None and "null" in records[0].error
    tail = _read(path, start=8999)
    assert [(r.line, r.text, r.extra["id"]) for r in tail[:2]] == [(9000, "t8999", 8999),
                                                                   (9001, None, 9000)]
    assert len(tail) == 1001
    assert count_records(path) == n


def test_parquet_column_errors(tmp_path, pa):
    import pyarrow.parquet as pq
    path = str(tmp_path / "in.parquet")
    pq.write_table(pa.table({"review": ["x"], "stars": [5]}), path)
    with pytest.raises(RecordsError, match="'review', 'stars'"):
        read_records(path)
    with pytest.raises(RecordsError, match="'stars' holds int64, not strings"):
        read_records(path, text_column="stars")
    assert _texts(_read(path, text_column="review")) == ["x"]
    bad = _write(tmp_path / "bad.parquet", b"not parquet at all")
    with pytest.raises(RecordsError, match="not a readable parquet"):
        read_records(bad)


# ---------------------------------------------------------------------------------------- stdin

class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


def test_stdin_text_lines(monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Stdin(b"one\r\ntwo\n\xff\n"))
    records = _read("-")
    assert _texts(records) == ["one", "two", None]
    assert records[2].line == 3
    assert count_records("-") is None


def test_stdin_with_a_format(monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Stdin(b'{"text": "j", "id": 1}\n'))
    (rec,) = _read("-", fmt="jsonl")
    assert rec.text == "j" and rec.extra == {"id": 1}
    monkeypatch.setattr(sys, "stdin", _Stdin(b"text\nc\n"))
    assert _texts(_read("-", fmt="csv")) == ["c"]
    with pytest.raises(RecordsError, match="stdin"):
        read_records("-", fmt="parquet")


# ------------------------------------------------------------------------------ whole-file errors

def test_whole_file_errors_are_clear(tmp_path):
    with pytest.raises(FlaxsentError, match="does not exist"):
        read_records(str(tmp_path / "missing.txt"))
    with pytest.raises(FlaxsentError, match="directory"):
        read_records(str(tmp_path))
    with pytest.raises(FlaxsentError, match=r"\.csv.*\.jsonl.*\.parquet.*\.tsv.*\.txt"):
        read_records(_write(tmp_path / "in.xlsx", b"x"))
    with pytest.raises(FlaxsentError, match="unknown input format 'xml'"):
        read_records(_write(tmp_path / "in.txt", b"x"), fmt="xml")
    assert _texts(_read(_write(tmp_path / "noext", b"a\n"), fmt="txt")) == ["a"]


def test_count_records(tmp_path):
    assert count_records(_write(tmp_path / "a.txt", b"a\nb\n\nc")) == 4
    assert count_records(_write(tmp_path / "b.txt", b"a\nb\n")) == 2
    assert count_records(_write(tmp_path / "e.txt", b"")) == 0
    assert count_records(_write(tmp_path / "c.csv", b"text\nx\ny\n")) == 2
    assert count_records(_write(tmp_path / "d.jsonl", b'{"text":"x"}\n')) == 1


def test_where_names_file_and_line_or_parquet_row(tmp_path, monkeypatch, pa):
    import pyarrow.parquet as pq
    path = _write(tmp_path / "in.csv", b"text\na\n")
    with read_records(path) as reader:
        assert reader.where(3) == f"{path}, line 3"
    data = str(tmp_path / "table.data")  # parquet by --input-format, not by extension
    pq.write_table(pa.table({"text": ["x"]}), data)
    with read_records(data, fmt="parquet") as reader:
        assert reader.where(1) == f"{data}, row 1"
    monkeypatch.setattr(sys, "stdin", _Stdin(b"x\n"))
    with read_records("-") as reader:
        assert reader.where(1) == "stdin, line 1"


def test_texts_in_memory_stop_at_the_first_bad_row(tmp_path):
    path = _write(tmp_path / "in.jsonl", b'{"text": "a"}\n\n{"text": "b"}\n{"text": 1}\n')
    with read_records(path) as reader:
        assert reader.texts(limit=2) == ["a", "b"]
    with read_records(path) as reader, \
            pytest.raises(RecordsError, match=r"in\.jsonl, line 4: 'text' is int"):
        reader.texts()


@pytest.mark.parametrize("ext,line", [
    ("txt", b"sentence number %d is a fairly typical line\n"),
    ("jsonl", b'{"id": %d, "text": "a fairly typical line"}\n'),
])
def test_reading_streams_in_bounded_memory(tmp_path, ext, line):
    n = 200_000
    path = tmp_path / f"big.{ext}"
    with open(path, "wb") as f:
        for i in range(0, n, 1000):
            f.write(b"".join(line % j for j in range(i, i + 1000)))
    assert path.stat().st_size > 8_000_000
    tracemalloc.start()
    try:
        count = 0
        with read_records(str(path)) as reader:
            for rec in reader:
                count += rec.error is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < 2_000_000, f"peak Python allocations {peak} bytes: not streaming"


# ------------------------------------------------------------------------ lines past the limit

LONG = b"word " * 600  # 3000 bytes


@pytest.mark.parametrize("ext, rows", [
    ("txt", [b"good fun\n", LONG + b"\n", b"bad film\n"]),
    ("jsonl", [b'{"text": "good fun"}\n', b'{"text": "' + LONG + b'"}\n',
               b'{"text": "bad film"}\n']),
    ("tsv", [b"text\n", b"good fun\n", LONG + b"\n", b"bad film\n"]),
    # the long line holds quotes and commas, and the field it starts goes on to the next line
    ("csv", [b"id,text\n", b'1,good fun\n', b'2,"' + LONG + b'"",, "" ,' + LONG + b'\n',
             b' the field ends here",x\n', b'3,bad film\n']),
])
def test_a_line_past_the_limit_is_a_bad_row_and_the_rest_is_read(tmp_path, monkeypatch, ext,
                                                                  rows):
    import flaxsent.io.readers as readers
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 1000, raising=False)
    path = _write(tmp_path / f"in.{ext}", b"".join(rows))
    records = _read(path)
    assert [r.text for r in records] == ["good fun", None, "bad film"]
    assert "longer than 1000 bytes" in records[1].error
    first = 2 if ext in ("csv", "tsv") else 1
    assert [r.line for r in records] == [first, first + 1, len(rows)]


def test_a_line_past_the_limit_is_never_held_whole(tmp_path, monkeypatch):
    import flaxsent.io.readers as readers
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 1 << 20, raising=False)
    path = _write(tmp_path / "in.txt", b"ok\n" + b"x" * (40 << 20) + b"\nok\n")
    tracemalloc.start()
    try:
        records = _read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _texts(records) == ["ok", None, "ok"]
    assert peak < 8 << 20, f"peak Python allocations {peak} bytes"
