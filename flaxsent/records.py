"""Streaming input readers and crash-safe output writers for `flaxsent predict` / `eval`.

Readers yield one `Record` per input row, lazily, so memory stays bounded whatever the file size.
A bad row (invalid UTF-8, malformed JSON, a missing or non-string text value) is yielded as a
`Record` with `error` set, never raised, so the caller applies `--on-error fail|skip`; only
whole-file problems (missing file, unknown format, no text column) raise `RecordsError`.

Formats, by extension or `fmt`:
  txt      one text per line; only the line terminator (LF or CRLF) is stripped; a blank line is an
           empty-string input; the file's final newline does not make an extra record.
  jsonl    one JSON object per line (`.jsonl`, `.json`, `.ndjson`); whitespace-only lines are
           skipped; every field other than the text travels in `Record.extra`.
  csv/tsv  a header row, then rows (csv module). TSV follows the IANA convention: no quoting, one
           row per line, quote characters are literal text. Blank lines are skipped.
  parquet  read in record batches through pyarrow (never the whole file).
The text column is `text_column` when given, else `text`, else `sentence`. `-` reads stdin (text
lines unless `fmt` says otherwise; parquet needs a seekable file).

Writers append whole chunks: each chunk is one `write` followed by flush and fsync, so a killed
run leaves complete records plus at most one partial trailing line, which
`count_complete_records` cuts off before `--resume` appends. Parquet output is written to
`<path>.partial` and renamed on close; it cannot be appended to, so `--resume` is refused for it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import FlaxsentError

STDIO = "-"
DEFAULT_TEXT_COLUMNS: tuple[str, ...] = ("text", "sentence")
INPUT_FORMATS: dict[str, str] = {
    ".txt": "txt", ".text": "txt",
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".pq": "parquet",
}
OUTPUT_FORMATS: dict[str, str] = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}
PARTIAL_SUFFIX = ".partial"
_PARQUET_BATCH_ROWS = 4096
_READ_CHUNK = 1 << 20


class RecordsError(FlaxsentError, ValueError):
    """An input or output file that cannot be read or written as a whole (not a single bad row)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One input row: its 1-based line (parquet: row) number, its text, its other columns, or
    why it is unusable (`error`, without the location: prefix it with `line`; `text` is None)."""

    line: int
    text: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# --------------------------------------------------------------------------------------- formats

def _names(formats: dict[str, str]) -> str:
    return ", ".join(sorted(formats))


def input_format(path: str, fmt: str | None = None) -> str:
    """The reader format of `path` (from `fmt` or the extension), or a RecordsError listing the
    supported ones."""
    known = sorted(set(INPUT_FORMATS.values()))
    if fmt is not None:
        if fmt.lower() not in known:
            raise RecordsError(f"unknown input format {fmt!r}: use one of {', '.join(known)}")
        return fmt.lower()
    if path == STDIO:
        return "txt"
    ext = Path(path).suffix.lower()
    if ext not in INPUT_FORMATS:
        raise RecordsError(
            f"cannot tell the format of {path!r} from its extension {ext or '(none)'!r}: "
            f"supported input files are {_names(INPUT_FORMATS)} (or pass the format explicitly)")
    return INPUT_FORMATS[ext]


def output_format(path: str | None, fmt: str | None = None) -> str:
    """The writer format of `path` (JSONL for stdout or when `fmt` and the extension say nothing
    else), or a RecordsError listing the supported ones."""
    known = sorted(set(OUTPUT_FORMATS.values()))
    if fmt is not None:
        if fmt.lower() not in known:
            raise RecordsError(f"unknown output format {fmt!r}: use one of {', '.join(known)}")
        return fmt.lower()
    if path is None or path == STDIO:
        return "jsonl"
    ext = Path(path).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise RecordsError(
            f"cannot tell the output format of {path!r} from its extension {ext or '(none)'!r}: "
            f"supported output files are {_names(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[ext]


def _require_pyarrow(what: str) -> Any:
    """Import pyarrow.parquet, or explain how to install it."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise RecordsError(
            f"{what} needs pyarrow, which is not installed: pip install 'flaxsent[parquet]' "
            "(or pip install pyarrow), or use a JSONL/CSV file instead") from err
    return pq


def _check_file(path: str) -> None:
    """A clear error for a path that is missing or not a regular file."""
    p = Path(path)
    if not p.exists():
        raise RecordsError(f"input file {path!r} does not exist")
    if p.is_dir():
        raise RecordsError(f"input {path!r} is a directory, not a file")


# --------------------------------------------------------------------------------------- readers

def _lines(stream: IO[bytes], first: int = 1) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line with its terminator), streamed."""
    return zip(itertools.count(first), stream)


def _decode(raw: bytes, lineno: int) -> tuple[str | None, str | None]:
    """Strictly decode one raw line to text (a leading BOM on line 1 dropped), or say why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, (f"invalid UTF-8 at byte {err.start + 1} of the line "
                      f"({raw[err.start:err.start + 4]!r}); re-encode the file as UTF-8")
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    return text, None


def _strip_eol(text: str) -> str:
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return text


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text_value(value: Any, column: str) -> tuple[str | None, str | None]:
    """The text of a field, or why it is not usable as one."""
    if isinstance(value, str):
        return value, None
    return None, f"{column!r} is {_kind(value)}, not a string"


def _pick_column(columns: Sequence[str], text_column: str | None, where: str) -> str:
    """The text column among `columns`, or a RecordsError naming the columns there are."""
    wanted = [text_column] if text_column is not None else list(DEFAULT_TEXT_COLUMNS)
    for name in wanted:
        if name in columns:
            return name
    asked = (f"column {text_column!r}" if text_column is not None
             else " or ".join(repr(c) for c in DEFAULT_TEXT_COLUMNS) + " column")
    shown = ", ".join(repr(c) for c in columns[:20]) + (", ..." if len(columns) > 20 else "")
    raise RecordsError(f"{where} has no {asked}; its columns are {shown or '(none)'}: "
                       "choose one with --text-column")


def _read_txt(stream: IO[bytes], start: int) -> Iterator[Record]:
    if start:
        next(itertools.islice(stream, start, start), None)  # skip lines without decoding them
    for lineno, raw in _lines(stream, start + 1):
        text, error = _decode(raw, lineno)
        if error is not None:
            yield Record(lineno, None, {}, error)
        else:
            yield Record(lineno, _strip_eol(text), {})


def _read_jsonl(stream: IO[bytes], text_column: str | None) -> Iterator[Record]:
    column = text_column  # None until the first object naming a default column decides it
    for lineno, raw in _lines(stream):
        line, error = _decode(raw, lineno)
        if error is not None:
            yield Record(lineno, None, {}, error)
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield Record(lineno, None, {}, f"not valid JSON ({err.msg} at column {err.colno})")
            continue
        if not isinstance(obj, dict):
            yield Record(lineno, None, {}, f"expected a JSON object, found {_kind(obj)}")
            continue
        if column is None:
            column = next((c for c in DEFAULT_TEXT_COLUMNS if c in obj), None)
        if column is None or column not in obj:
            asked = repr(column) if column else " or ".join(map(repr, DEFAULT_TEXT_COLUMNS))
            keys = ", ".join(map(repr, list(obj)[:20])) or "(none)"
            yield Record(lineno, None, {},
                         f"no {asked} field (fields: {keys}); "
                         "choose one with --text-column")
            continue
        value = obj.pop(column)
        text, error = _text_value(value, column)
        yield Record(lineno, text, obj, error)


def _csv_lines(stream: IO[bytes], bad: dict[int, str],
               counter: list[int]) -> Iterator[str]:
    """Decoded physical lines for csv.reader; a line that is not UTF-8 is passed on (decoded with
    replacement, so the parser stays in step) and noted in `bad` so its row is reported, not
    used. `counter[0]` is the number of the last line handed out."""
    for lineno, raw in _lines(stream):
        counter[0] = lineno
        text, error = _decode(raw, lineno)
        if error is not None:
            bad[lineno] = error
            text = raw.decode("utf-8", errors="replace")
        yield text


def _read_delimited(stream: IO[bytes], fmt: str, text_column: str | None, where: str,
                    ) -> tuple[list[str], str, Iterator[Record]]:
    """Read the header now (so a missing column fails before any work), then stream the rows."""
    bad: dict[int, str] = {}
    counter = [0]
    if fmt == "tsv":
        reader = csv.reader(_csv_lines(stream, bad, counter), delimiter="\t",
                            quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(_csv_lines(stream, bad, counter))
    try:
        header = next(reader)
    except StopIteration:
        raise RecordsError(f"{where} is empty: expected a header row naming its columns") from None
    except csv.Error as err:
        raise RecordsError(f"{where}: cannot read the header row: {err}") from None
    if bad:
        raise RecordsError(f"{where}: the header row is not valid UTF-8: {bad[min(bad)]}")
    column = _pick_column(header, text_column, where)
    index = header.index(column)
    others = [(i, name) for i, name in enumerate(header) if i != index]

    def rows() -> Iterator[Record]:
        last = counter[0]
        while True:
            first = last + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                last = counter[0]
                yield Record(first, None, {}, f"malformed {fmt.upper()} row: {err}")
                continue
            last = counter[0]
            errors = [bad.pop(n) for n in range(first, last + 1) if n in bad]
            if errors:
                yield Record(first, None, {}, errors[0])
            elif not row:
                continue  # a blank line
            elif len(row) <= index:
                yield Record(first, None, {},
                             f"the row has {len(row)} field(s), no {column!r} "
                             f"(column {index + 1} of the header)")
            else:
                extra = {name: row[i] if i < len(row) else None for i, name in others}
                yield Record(first, row[index], extra)

    return header, column, rows()


def _read_parquet(path: str, text_column: str | None, start: int,
                  ) -> tuple[list[str], str, Iterator[Record], Any]:
    pq = _require_pyarrow("reading parquet")
    import pyarrow as pa

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise RecordsError(f"{path!r} is not a readable parquet file: {err}") from None
    schema = pf.schema_arrow
    names = list(schema.names)
    column = _pick_column(names, text_column, repr(path))
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
        raise RecordsError(f"{path!r}: column {column!r} holds {kind}, not strings; "
                           "choose a text column with --text-column")
    others = [n for n in names if n != column]

    def rows() -> Iterator[Record]:
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
                n = batch.num_rows
                if row + n <= start:  # resume: skip whole batches unconverted
                    row += n
                    continue
                lo = max(start - row, 0)
                if lo:
                    batch = batch.slice(lo)
                texts = batch.column(column).to_pylist()
                extras = {name: batch.column(name).to_pylist() for name in others}
                for j, value in enumerate(texts):
                    lineno = row + lo + j + 1
                    extra = {name: vals[j] for name, vals in extras.items()}
                    text, error = _text_value(value, column)
                    yield Record(lineno, text, extra, error)
                row += n
        except pa.ArrowException as err:
            raise RecordsError(f"{path!r}: cannot read the parquet data after row {row}: "
                               f"{err}") from None
        finally:
            pf.close()

    return names, column, rows(), pf


class RecordReader(Iterator[Record]):
    """An iterator of `Record`s over one input, holding the open file; usable as a context
    manager. `columns` and `text_column` say what was found (None for plain text)."""

    def __init__(self, source: str, fmt: str, records: Iterator[Record],
                 stream: Any, columns: list[str] | None,
                 text_column: str | None) -> None:
        self.source = source
        self.fmt = fmt
        self.columns = columns
        self.text_column = text_column
        self._records = records
        self._stream = stream

    def __next__(self) -> Record:
        try:
            return next(self._records)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        """Release the file (idempotent)."""
        closer = getattr(self._records, "close", None)
        if closer is not None:
            closer()
        if self._stream is not None and self._stream is not _stdin():
            self._stream.close()
        self._stream = None

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stdin() -> IO[bytes]:
    return sys.stdin.buffer


def read_records(path: str, text_column: str | None = None, fmt: str | None = None,
                 start: int = 0) -> RecordReader:
    """Stream the records of `path` (`-` for stdin), skipping the first `start` (for --resume);
    whole-file problems raise RecordsError now, bad rows arrive as Records with `error` set."""
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if path != STDIO:
        _check_file(path)
    kind = input_format(path, fmt)
    where = "stdin" if path == STDIO else repr(path)
    if kind == "parquet":
        if path == STDIO:
            raise RecordsError("parquet cannot be read from stdin (it needs a seekable file): "
                               "pass the file's path")
        columns, column, records, pf = _read_parquet(path, text_column, start)
        return RecordReader(path, kind, records, pf, columns, column)

    if path == STDIO:
        stream = _stdin()
    else:
        try:
            stream = open(path, "rb")  # owned and closed by the RecordReader
        except OSError as err:
            raise RecordsError(f"cannot open {where}: {err.strerror}") from None
    try:
        columns: list[str] | None = None
        column: str | None = None
        if kind == "txt":
            records = _read_txt(stream, start)
        elif kind == "jsonl":
            if path != STDIO and stream.peek(64).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"[":
                raise RecordsError(
                    f"{where} holds a JSON array; flaxsent reads JSON Lines (one object per "
                    "line): convert it, e.g. with `jq -c '.[]'`")
            records = _read_jsonl(stream, text_column)
            column = text_column
        else:
            columns, column, records = _read_delimited(stream, kind, text_column, where)
        if start and kind != "txt":
            records = itertools.islice(records, start, None)
    except BaseException:
        if stream is not _stdin():
            stream.close()
        raise
    return RecordReader(path, kind, records, stream, columns, column)


def skip_records(records: Iterable[Record], n: int) -> Iterator[Record]:
    """The records after the first `n` (bad ones count: one input row, one record)."""
    return itertools.islice(records, n, None)


def _count_lines(path: str) -> int:
    """Lines in a file, a final line without a newline included, read in fixed-size chunks."""
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def count_records(path: str, fmt: str | None = None) -> int | None:
    """How many records `path` holds, for a progress bar: exact for txt and parquet, a line count
    (an upper bound) for jsonl/csv/tsv, None for stdin."""
    if path == STDIO:
        return None
    _check_file(path)
    kind = input_format(path, fmt)
    if kind == "parquet":
        pq = _require_pyarrow("reading parquet")
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # the reader reports it properly; a progress bar can do without
            return None
    n = _count_lines(path)
    return max(n - 1, 0) if kind in ("csv", "tsv") else n


# --------------------------------------------------------------------------------------- writers

def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, dates and the like as JSON values."""
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _finite(value: Any) -> Any:
    """`value` with non-finite floats (NaN, inf; not JSON numbers) replaced by null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    return value


def to_json(row: Any) -> str:
    """One JSON line: UTF-8 kept as is, numpy values as plain numbers, NaN/inf as null."""
    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False, default=_json_default)
    except ValueError:
        return json.dumps(_finite(row), ensure_ascii=False, allow_nan=False,
                          default=_json_default)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
        if isinstance(value, (str, int, float)):
            return value
    return to_json(value)  # lists (top-k), dicts: a JSON string in one cell


class RecordWriter:
    """Writes output rows chunk by chunk; `close()` finishes the file. Base of the per-format
    writers, usable as a context manager."""

    fmt = ""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.rows_written = 0
        self._closed = False

    def write_chunk(self, rows: list[dict[str, Any]]) -> None:
        """Append `rows` as one unit, durable once this returns."""
        if self._closed:
            raise ValueError("write to a closed RecordWriter")
        if rows:
            self._write(rows)
            self.rows_written += len(rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output (idempotent)."""
        self._closed = True

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close()


class _StreamWriter(RecordWriter):
    """JSONL/CSV to a file (flush + fsync per chunk) or to stdout (flush per chunk)."""

    def __init__(self, path: str | None, append: bool) -> None:
        super().__init__(path)
        self._to_stdout = path is None or path == STDIO
        if self._to_stdout:
            sys.stdout.flush()
            self._file: IO[bytes] = sys.stdout.buffer
        else:
            try:
                self._file = open(path, "ab" if append else "wb")
            except OSError as err:
                raise RecordsError(f"cannot write {path!r}: {err.strerror}") from None

    def _emit(self, data: str) -> None:
        self._file.write(data.encode("utf-8"))
        self._file.flush()
        if not self._to_stdout:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._closed and not self._to_stdout:
            self._file.close()
        super().close()


class JsonlWriter(_StreamWriter):
    """One JSON object per line."""

    fmt = "jsonl"

    def _write(self, rows: list[dict[str, Any]]) -> None:
        self._emit("".join(to_json(row) + "\n" for row in rows))


class CsvWriter(_StreamWriter):
    """A header row from the first chunk's keys (kept from the file when appending), then rows;
    nested values (top-k lists) as JSON strings in one cell."""

    fmt = "csv"

    def __init__(self, path: str | None, append: bool) -> None:
        self.fieldnames: list[str] | None = None
        if append and path not in (None, STDIO) and os.path.exists(path):
            self.fieldnames = _csv_header(path)
        super().__init__(path, append)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        if self.fieldnames is None:
            names = dict.fromkeys(k for row in rows for k in row)
            self.fieldnames = list(names)
            out.writerow(self.fieldnames)
        known = set(self.fieldnames)
        for row in rows:
            unknown = [k for k in row if k not in known]
            if unknown:
                raise RecordsError(
                    f"{self.path or 'stdout'}: row has column(s) {unknown} that are not in the "
                    f"CSV header {self.fieldnames}; write JSONL for rows of varying shape")
            out.writerow([_csv_cell(row.get(k)) for k in self.fieldnames])
        self._emit(buf.getvalue())


def _csv_header(path: str) -> list[str] | None:
    """The header of an existing CSV output, or None when it has no complete header line."""
    with open(path, "rb") as f:
        first = f.readline()
    if not first.endswith(b"\n"):
        return None
    return next(csv.reader([first.decode("utf-8")]))


class ParquetWriter(RecordWriter):
    """A row group per chunk, written to `<path>.partial` and renamed to `path` on a clean close,
    so `path` never holds an unfinished file. Cannot append."""

    fmt = "parquet"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._pq = _require_pyarrow("writing parquet")
        self._partial = path + PARTIAL_SUFFIX
        self._writer: Any = None
        self._schema: Any = None

    def _write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        rows = [_finite(row) for row in rows]
        try:
            if self._writer is None:
                table = pa.Table.from_pylist(rows)
                self._schema = table.schema
                self._writer = self._pq.ParquetWriter(self._partial, self._schema)
            else:
                table = pa.Table.from_pylist(rows, schema=self._schema)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise RecordsError(f"{self.path}: rows do not fit one parquet schema ({err}); "
                               "write JSONL for rows of varying shape") from None
        self._writer.write_table(table)

    def close(self, *, keep_partial: bool = False) -> None:
        """Finish the file and move it into place (or leave `<path>.partial` on failure)."""
        if self._closed:
            return
        if self._writer is None:  # no rows: still an (empty) output
            import pyarrow as pa
            self._writer = self._pq.ParquetWriter(self._partial, pa.schema([]))
        self._writer.close()
        if not keep_partial:
            os.replace(self._partial, self.path)
        super().close()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(keep_partial=exc_type is not None)


def open_writer(path: str | None, fmt: str | None = None, append: bool = False) -> RecordWriter:
    """A writer for `path` (stdout JSONL for None or `-`); `append` continues an existing JSONL/CSV
    output after `count_complete_records` has trimmed it (parquet refuses it)."""
    kind = output_format(path, fmt)
    if kind == "parquet":
        if path is None or path == STDIO:
            raise RecordsError("parquet cannot be written to stdout: pass -o FILE.parquet")
        if append:
            raise RecordsError(
                f"cannot resume into {path!r}: a parquet file cannot be appended to; write "
                "JSONL or CSV to resume a run, or start a fresh parquet output")
        return ParquetWriter(path)
    if path not in (None, STDIO):
        parent = Path(path).parent
        if not parent.is_dir():
            raise RecordsError(f"cannot write {path!r}: folder {str(parent)!r} does not exist")
    return JsonlWriter(path, append) if kind == "jsonl" else CsvWriter(path, append)


# --------------------------------------------------------------------------------------- resume

def _truncate_after_last_newline(path: str) -> int:
    """Cut any bytes after the file's last newline; return the new size."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        pos = size
        while pos > 0:
            lo = max(pos - _READ_CHUNK, 0)
            f.seek(lo)
            chunk = f.read(pos - lo)
            i = chunk.rfind(b"\n")
            if i >= 0:
                end = lo + i + 1
                break
            pos = lo
        else:
            end = 0
        if end != size:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    return end


def _count_csv_rows(path: str) -> int:
    """Complete data rows of a CSV output; a trailing partial row (even one cut inside a quoted
    multi-line field) is truncated away."""
    _truncate_after_last_newline(path)
    offset = [0]

    def lines(f: IO[bytes]) -> Iterator[str]:
        for raw in f:
            offset[0] += len(raw)
            yield raw.decode("utf-8", errors="replace")

    rows = 0
    end = 0
    with open(path, "rb") as f:
        reader = csv.reader(lines(f), strict=True)
        try:
            for _ in reader:
                rows += 1
                end = offset[0]
        except csv.Error:
            pass  # ended inside a quoted field: the last row is partial
    if end != os.path.getsize(path):
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    return max(rows - 1, 0)  # the header is not a record


def truncate_records(path: str, n: int, fmt: str | None = None) -> None:
    """Keep only the first n records of a complete JSONL or CSV output (for --resume)."""
    kind = output_format(path, fmt)
    if kind not in ("jsonl", "csv"):
        raise RecordsError(f"cannot truncate {kind} output {path!r}")
    end = 0
    with open(path, "rb") as f:
        if kind == "jsonl":
            for _ in range(n):
                end += len(f.readline())
        else:
            offset = [0]

            def lines() -> Iterator[str]:
                for raw in f:
                    offset[0] += len(raw)
                    yield raw.decode("utf-8", errors="replace")

            reader = csv.reader(lines(), strict=True)
            for _ in itertools.islice(reader, n + 1):  # the header, then n records
                end = offset[0]
    with open(path, "r+b") as f:
        f.truncate(end)
        os.fsync(f.fileno())


def count_complete_records(path: str, fmt: str | None = None) -> int:
    """Complete records in an existing output (0 if it does not exist), first truncating a
    partial trailing record a killed run left, so appending continues cleanly (--resume)."""
    kind = output_format(path, fmt)
    if path is None or path == STDIO:
        raise RecordsError("--resume needs an output file (-o FILE), not stdout")
    if not os.path.exists(path):
        return 0
    if kind == "parquet":
        pq = _require_pyarrow("reading parquet")
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception as err:  # any failure means an unfinished file
            raise RecordsError(f"{path!r} is not a complete parquet file ({err}); parquet "
                               "output cannot be resumed: write JSONL or CSV to resume") from None
    if kind == "csv":
        return _count_csv_rows(path)
    end = _truncate_after_last_newline(path)
    n = 0
    with open(path, "rb") as f:
        remaining = end
        while remaining and (chunk := f.read(min(_READ_CHUNK, remaining))):
            n += chunk.count(b"\n")
            remaining -= len(chunk)
    return n
