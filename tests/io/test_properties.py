"""Property tests (hypothesis) for what must hold whatever the input: the record readers turn
every row into a record or an error record, never another exception, and lose or invent no row;
`--resume` after an output cut at any byte gives the uninterrupted run's output, byte for byte.

Each property says how many examples it tries; `pytest --hypothesis-show-statistics` counts
them. `derandomize=True`: the same examples every run, so CI cannot flake on a new one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flaxsent.core.classifier import Classifier
from flaxsent.errors import RecordsError
from flaxsent.io import readers
from flaxsent.io.readers import Record, read_records
from flaxsent.predict import run as predict
from tests.helpers import WORDS

BOM = b"\xef\xbb\xbf"
HUGE = 140_000  # past csv's default field limit (128 Ki characters)
SMALL_LINE = 48  # MAX_LINE_BYTES in the examples that test the long-line path


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


@contextlib.contextmanager
def line_limit(limit: int | None) -> Iterator[None]:
    """MAX_LINE_BYTES = `limit` (None: the real 512 MiB), read in 7-byte pieces past it, so
    that small examples reach the path a line of over 512 MiB takes."""
    if limit is None:
        yield
        return
    with mock.patch.object(readers, "MAX_LINE_BYTES", limit), \
            mock.patch.object(readers, "_READ_CHUNK", 7):
        yield


def read_all(path: Path, limit: int | None = None, **kwargs) -> list[Record]:
    with line_limit(limit), read_records(str(path), **kwargs) as reader:
        return list(reader)


def physical_lines(data: bytes) -> list[bytes]:
    """The lines of `data` with their LF (a last line without one included)."""
    pieces = data.split(b"\n")
    return [p + b"\n" for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def decoded(line: bytes, lineno: int) -> str | None:
    """A line's text as the readers' rules say (strict UTF-8, a BOM dropped on line 1)."""
    if lineno == 1 and line.startswith(BOM):
        line = line[len(BOM):]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


# Pieces of input: the line terminators, quotes, delimiters, NUL, a BOM, bytes that are not
# UTF-8 (a lone continuation, a truncated sequence, a surrogate's encoding), JSON punctuation.
TOKENS = [b"\n", b"\r\n", b"\r", b'"', b'""', b",", b"\t", b"\x00", b" ", BOM, b"\xff", b"\x80",
          b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", "é€".encode(), b"{", b"}", b"[", b"]", b":",
          b'"text"', b"text", b"good fun", b"null", b"1",
          b"a long run of text " * 2, b"," * 9, b'"' * 4, b'"' * 5]  # runs a long line shortens
PIECE = st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6),
                  st.text(max_size=4).map(str.encode))


@st.composite
def raw_bytes(draw, max_pieces: int = 40) -> bytes:
    """Random bytes from TOKENS; now and then one huge field."""
    pieces = draw(st.lists(PIECE, max_size=max_pieces))
    if pieces and draw(st.integers(0, 9)) == 0:
        pieces.insert(draw(st.integers(0, len(pieces))), b"h" * HUGE)
    if draw(st.integers(0, 7)) == 0:
        pieces.insert(0, BOM)
    return b"".join(pieces)


LIMITS = st.sampled_from([None, None, SMALL_LINE])


# ------------------------------------------------------------------------------------------ txt
# 150 examples: each line (LF-terminated; a last line without LF too) is one record, numbered in
# order; its text is the line without LF or CRLF (a lone CR is text), or an error record when it
# is not UTF-8 or is longer than MAX_LINE_BYTES.

@_settings(150)
@given(data=raw_bytes(), limit=LIMITS)
def test_txt_each_line_is_one_record_or_one_error(tmp_path, data, limit):
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    records = read_all(path, limit)
    lines = physical_lines(data)
    assert [r.line for r in records] == list(range(1, len(lines) + 1))
    for record, line in zip(records, lines, strict=True):
        assert (record.text is None) == (record.error is not None)
        if limit is not None and len(line) > limit:
            assert "longer than" in record.error
            continue
        body = line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\n")
        want = decoded(body, record.line)
        if want is None:
            assert "invalid UTF-8" in record.error
        else:
            assert record.text == want and record.error is None and record.extra == {}


# ---------------------------------------------------------------------------------------- jsonl

def _obj(text: st.SearchStrategy | None = None) -> st.SearchStrategy:
    text = st.text(max_size=12) if text is None else text
    return st.fixed_dictionaries({"text": text}, optional={"id": st.integers(), "n": st.none()})


JSONL_LINE = st.one_of(
    _obj().map(lambda o: json.dumps(o, ensure_ascii=False).encode()),
    _obj().map(lambda o: json.dumps(o).encode()),
    _obj(st.integers() | st.none() | st.lists(st.text(max_size=3), max_size=2)).map(
        lambda o: json.dumps(o).encode()),  # a text that is not a string
    st.fixed_dictionaries({"other": st.text(max_size=5)}).map(lambda o: json.dumps(o).encode()),
    st.sampled_from([b"", b"   ", b"\t", b"\r", b"[1, 2]", b'"s"', b"3", b"null", b"{broken",
                     b'{"text": "a\x00b"}', b'{"text": "a\\u0000b"}', b'{"text": "\xff"}',
                     b'{"text": "\xc3"}', b'{"text": "x"} trailing', b"\xff\xfe",
                     b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nested too deeply
                     b'{"text": "' + b"h" * HUGE + b'"}']),
    raw_bytes(8).filter(lambda b: b"\n" not in b),
)


@st.composite
def jsonl_file(draw) -> bytes:
    lines = draw(st.lists(st.tuples(JSONL_LINE, st.sampled_from([b"\n", b"\r\n"])), max_size=12))
    data = b"".join(line + end for line, end in lines)
    if data and draw(st.booleans()):
        data = data[:-1]  # no final newline (a CRLF file then ends in CR)
    return (BOM if draw(st.integers(0, 7)) == 0 else b"") + data


def expected_jsonl(data: bytes, limit: int | None) -> list[tuple[int, str | None, dict]]:
    """(line, text or None for an error, extra) for each row, by the documented rules: every
    line that is not whitespace-only is a row; a row that is not a UTF-8 JSON object with a
    string `text` is an error."""
    rows = []
    for lineno, line in enumerate(physical_lines(data), 1):
        if limit is not None and len(line) > limit:
            rows.append((lineno, None, {}))
            continue
        text = decoded(line, lineno)
        if text is None:
            rows.append((lineno, None, {}))
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            rows.append((lineno, None, {}))
            continue
        if isinstance(obj, dict) and isinstance(obj.get("text"), str):
            value = obj.pop("text")
            rows.append((lineno, value, obj))
        else:
            rows.append((lineno, None, {}))
    return rows


# 150 examples: lines of JSON objects with and without a string `text`, other JSON values,
# blank and whitespace-only lines, CRLF, no final newline, a BOM, NUL (raw: an error; escaped:
# text), invalid UTF-8, nesting past the recursion limit, a huge string, random bytes.

@_settings(150)
@given(data=jsonl_file(), limit=LIMITS)
def test_jsonl_each_non_blank_line_is_one_record_or_one_error(tmp_path, data, limit):
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    try:
        records = read_all(path, limit)
    except RecordsError as err:  # the one whole-file error: a JSON array, not JSON Lines
        assert data.lstrip(BOM + b" \t\r\n").startswith(b"[") and "JSON array" in str(err)
        return
    got = [(r.line, r.text, r.extra if r.error is None else {}) for r in records]
    assert got == expected_jsonl(data, limit)
    assert all((r.text is None) == (r.error is not None) for r in records)


# ------------------------------------------------------------------------------------ csv / tsv

FIELD_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10) | st.sampled_from(
    ['a,b', 'say "hi"', '"', "two\nlines", "cr\ronly", "crlf\r\nend", "nul\x00", "\t", " ",
     "h" * HUGE])


@st.composite
def delimited_file(draw, fmt: str) -> tuple[bytes, list[tuple[int, str | None, dict]]]:
    """A CSV/TSV file built row by row, and the records it must read as: (first line, text or
    None for an error, the other columns)."""
    sep = "," if fmt == "csv" else "\t"
    header = draw(st.permutations(["id", "text", "note"]))
    index = header.index("text")

    def field() -> tuple[bytes, str | None]:
        """A field's bytes and its value (None: not UTF-8)."""
        value = draw(FIELD_TEXT)
        if fmt == "tsv":  # no quoting: a field holds no tab, CR or LF
            value = value.replace("\t", " ").replace("\r", " ").replace("\n", " ")
        raw = value.encode()
        if draw(st.integers(0, 9)) == 0:
            at = draw(st.integers(0, len(raw)))
            raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + raw[at:]
            value = None
        if fmt == "csv" and (any(c in raw for c in b',"\r\n') or draw(st.booleans())):
            raw = b'"' + raw.replace(b'"', b'""') + b'"'
        return raw, value

    ends = st.sampled_from([b"\n", b"\r\n"])
    out = [sep.join(header).encode() + draw(ends)]
    rows: list[tuple[int, str | None, dict]] = []
    for _ in range(draw(st.integers(0, 8))):
        while draw(st.integers(0, 5)) == 0:
            out.append(draw(ends))  # a blank line: skipped
        first = b"".join(out).count(b"\n") + 1
        n = draw(st.integers(1, 4))
        fields = [field() for _ in range(n)]
        if n == 1 and fields[0][0] == b"":  # a row of one empty field would be a blank line
            fields[0] = (b'""', "") if fmt == "csv" else (b"-", "-")
        out.append(sep.encode().join(raw for raw, _ in fields) + draw(ends))
        values = [value for _, value in fields]
        if None in values or n <= index:
            rows.append((first, None, {}))
        else:
            extra = {name: values[i] if i < n else None
                     for i, name in enumerate(header) if i != index}
            rows.append((first, values[index], extra))
    data = b"".join(out)
    if rows and draw(st.booleans()):
        data = data.rstrip(b"\n")  # no final newline
        if data.endswith(b"\r"):
            data = data[:-1]
    return data, rows


# 150 examples each (CSV, TSV): rows of 1-4 fields (too few for the text column: an error)
# holding commas, quotes, CR, LF, CRLF, NUL, tabs, any Unicode, huge fields, invalid UTF-8
# (the row is an error), blank lines between rows, CRLF ends, no final newline. CSV is read
# again with MAX_LINE_BYTES at 16 and 48: a row with a long line becomes an error record, and
# the rows after it (a quoted field may span lines) stay where they were.

@_settings(150)
@given(case=delimited_file("csv"))
def test_csv_each_row_is_one_record_or_one_error(tmp_path, case):
    data, want = case
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    records = read_all(path)
    assert [(r.line, r.text, r.extra if r.error is None else {}) for r in records] == want
    assert all((r.text is None) == (r.error is not None) for r in records)
    for limit in (16, SMALL_LINE):  # long lines: error records, the other rows unmoved
        rows = _read_or_none(path, limit)
        if rows is not None:
            _same_rows_or_errors(rows, records)


@_settings(150)
@given(case=delimited_file("tsv"))
def test_tsv_each_row_is_one_record_or_one_error(tmp_path, case):
    data, want = case
    path = tmp_path / "in.tsv"
    path.write_bytes(data)
    records = read_all(path)
    assert [(r.line, r.text, r.extra if r.error is None else {}) for r in records] == want


def _read_or_none(path: Path, limit: int | None) -> list[Record] | None:
    try:
        return read_all(path, limit)
    except RecordsError as err:  # only where a long line's fields cannot be followed
        assert limit is not None and "cannot be followed" in str(err)
        return None


def _same_rows_or_errors(rows: list[Record], reference: list[Record]) -> None:
    """The same rows (by first line) as `reference`; each equal to it or an error record."""
    assert [r.line for r in rows] == [r.line for r in reference]
    for row, ref in zip(rows, reference, strict=True):
        assert row == ref or (row.text is None and row.error), (row, ref)


# 200 examples each (CSV, TSV): random bytes after a good header. Bytes that are not UTF-8 and
# lines past MAX_LINE_BYTES (here 8, 16 or 48 bytes) turn rows into error records but never
# move, merge or split rows: the rows start on the same lines as those of the same bytes made
# valid (U+FFFD) and read with no length limit. TSV, one row a line: every line holding more
# than CR/LF is exactly one row.

@_settings(200)
@pytest.mark.parametrize("fmt", ["csv", "tsv"])
@given(body=raw_bytes(60))
def test_bad_bytes_and_long_lines_never_move_a_row(tmp_path, fmt, body):
    sep = b"," if fmt == "csv" else b"\t"
    header = b"id" + sep + b"text\n"
    path, fixed = tmp_path / f"in.{fmt}", tmp_path / f"fixed.{fmt}"
    path.write_bytes(header + body)
    fixed.write_bytes(header + body.decode("utf-8", errors="replace").encode())
    reference = read_all(fixed)
    lines = physical_lines(header + body)
    for limit in (None, 8, 16, SMALL_LINE):
        rows = _read_or_none(path, limit)
        if rows is not None:
            _same_rows_or_errors(rows, reference)
            for row in rows:  # a row starting on a line that is not UTF-8 is an error
                assert row.error or decoded(lines[row.line - 1], row.line) is not None
    rows = reference
    assert all(r.line >= 2 and (r.text is None) == (r.error is not None) for r in rows)
    assert [r.line for r in rows] == sorted({r.line for r in rows})
    if fmt == "tsv":
        assert [r.line for r in rows] == [
            n for n, line in enumerate(lines, 1) if n > 1 and line.strip(b"\r\n")]
    else:
        assert len(rows) <= len(lines) - 1


# --------------------------------------------------------------------------------------- resume

@pytest.fixture(scope="module")
def clf4(tiny_flax) -> Classifier:
    """A window of 4: a resume restarts at a multiple of 4, so short inputs have many."""
    return Classifier.from_pretrained(tiny_flax, window=4)


INPUT_ROW = st.one_of(
    st.tuples(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join),
              st.text(max_size=8)),
    st.tuples(st.text(max_size=20), st.sampled_from(["", 'q"uote', "new\nline", "=1+1", "é"])),
    st.tuples(st.none(), st.just("")),  # a bad row (not JSON): an error record under skip
)


def cut_output(full: Path, part: Path, at: int) -> None:
    """`part` as a run killed `at` bytes into `full` leaves it, with the run's record beside it
    (what --resume checks it continues)."""
    part.write_bytes(full.read_bytes()[:at])
    suffix = predict.RUN_SUFFIX
    Path(str(part) + suffix).write_bytes(Path(str(full) + suffix).read_bytes())


def write_jsonl(path: Path, rows: list[tuple[str | None, str]]) -> None:
    """Rows of (text, note) with an `id`; a None text is a line that is not JSON."""
    path.write_text("".join(
        "{not json\n" if text is None else json.dumps({"id": i, "text": text, "note": note}) + "\n"
        for i, (text, note) in enumerate(rows)), encoding="utf-8")


# 50 examples, 3 cuts each (150 resumes): a random JSONL input (texts of words or any Unicode, a
# carried `note` with quotes, newlines and non-ASCII), CSV or JSONL output, random
# chunk sizes; the output of an uninterrupted run is cut at any byte or just after any LF (a
# torn record, a torn UTF-8 character, a CSV row cut inside a quoted field, the header) and
# `--resume` completes it.

@_settings(50)
@given(rows=st.lists(INPUT_ROW, max_size=30), fmt=st.sampled_from(["jsonl", "csv"]),
       chunk=st.sampled_from([1, 3, 64]),
       cuts=st.lists(st.tuples(st.booleans(), st.floats(0, 1)), min_size=3, max_size=3))
def test_resume_after_a_cut_at_any_byte_is_byte_identical(clf4, tmp_path, rows, fmt, chunk,
                                                          cuts):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, rows)
    full, part = tmp_path / f"full.{fmt}", tmp_path / f"part.{fmt}"
    options = dict(on_error="skip", chunk_size=chunk, progress=False)
    predict.predict_file(clf4, str(src), str(full), force=True, **options)
    want = full.read_bytes()
    line_ends = [i + 1 for i, byte in enumerate(want) if byte == ord("\n")]
    for at_line_end, where in cuts:  # at any byte, or just after any LF (a CSV one may be
        at = round(where * len(want))  # inside a quoted field)
        if at_line_end and line_ends:
            at = line_ends[min(int(where * len(line_ends)), len(line_ends) - 1)]
        cut_output(full, part, at)
        result = predict.predict_file(clf4, str(src), str(part), resume=True, **options)
        assert result.resumed_from % clf4.window == 0
        assert result.resumed_from + result.written == len(rows)
        assert part.read_bytes() == want, f"cut at byte {at} of {len(want)}"


def test_cut_inside_a_quoted_csv_field_resumes_before_it(clf4, tmp_path):
    """The case the property reaches only by chance: a CSV output row whose carried field
    spans lines, cut after a line of it; the resume must not take that line for a row."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": "good fun", "note": f"a\nb{i}\nc"}) + "\n"
                           for i in range(9)), encoding="utf-8")
    full, part = tmp_path / "full.csv", tmp_path / "part.csv"
    predict.predict_file(clf4, str(src), str(full), progress=False)
    want = full.read_bytes()
    rows = list(csv.reader(io.StringIO(want.decode(), newline="")))
    assert len(rows) == 10 and rows[5][0] == "a\nb4\nc"
    cut = want.index(b"b4\n") + 3  # inside row 5's quoted note, at a line end
    cut_output(full, part, cut)
    result = predict.predict_file(clf4, str(src), str(part), resume=True, progress=False)
    assert result.resumed_from == 4
    assert part.read_bytes() == want


def test_resume_after_a_bad_row_is_byte_identical(clf4, tmp_path):
    """What the property found when its inputs had bad rows (then shrunk)."""
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [("0:0", ""), ("the", ""), ("the", ""), (None, ""), ("the the", "")])
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    predict.predict_file(clf4, str(src), str(full), on_error="skip", progress=False)
    cut_output(full, part, len(full.read_bytes()))  # killed after the last record, say
    result = predict.predict_file(clf4, str(src), str(part), resume=True, on_error="skip",
                                  progress=False)
    assert result.resumed_from == 4
    assert part.read_bytes() == full.read_bytes()
