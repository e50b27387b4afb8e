"""Streaming input readers for `flaxsent predict`, `eval` and the bench's `--data`.

Readers yield one `Record` per input row, lazily, so memory stays bounded whatever the file size.
A bad row (invalid UTF-8, malformed JSON, a missing or non-string text value) is yielded as a
`Record` with `error` set, never raised, so the caller applies `--on-error fail|skip`; only
whole-file problems (missing file, unknown format, no text column) raise `RecordsError`. A CSV or
TSV row with invalid UTF-8 keeps its readable cells in `extra` (None for the others), so results
still join back to the input by an id column.

Formats, by extension or `fmt`:
  txt      one text per line; only the line terminator (LF or CRLF) is stripped; a blank line is an
           empty-string input; the file's final newline does not make an extra record.
  jsonl    one JSON object per line (`.jsonl`, `.json`, `.ndjson`); whitespace-only lines are
           skipped; every field other than the text travels in `Record.extra`.
  csv/tsv  a header row, then rows (csv module). TSV follows the IANA convention: no quoting, one
           row per line, quote characters are literal text. Blank lines are skipped.
  parquet  read in record batches through pyarrow (never the whole file).
The text column is `text_column` when given, else `text`, else `sentence`. `-` reads stdin (text
lines unless `fmt` says otherwise; parquet needs a seekable file). A line longer than
`MAX_LINE_BYTES` (512 MiB) is a bad row, skipped without being held in memory (in CSV the rows
after it stay in step); a CSV field may be as long as a line.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flaxsent.errors import RecordsError

STDIO = "-"
DEFAULT_TEXT_COLUMNS: tuple[str, ...] = ("text", "sentence")
INPUT_FORMATS: dict[str, str] = {
    ".txt": "txt", ".text": "txt",
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".pq": "parquet",
}
_PARQUET_BATCH_ROWS = 4096
_READ_CHUNK = 1 << 20
# A line longer than this (its newline included) is a bad row; it is read in pieces and dropped,
# never held whole. The longest line read costs about twice its size in memory while decoded.
MAX_LINE_BYTES = 512 << 20
# csv's parser goes through the same states on a run of ordinary characters as on one of them,
# on a run of delimiters as on one, on a run of quotes as on one or two (the run's parity)
_CSV_RUNS = re.compile(r'[^",\r\n]+|,+|"+')
_ESCAPED = re.compile("[\udc80-\udcff]")  # the invalid bytes of a line, surrogate-escaped


@dataclass(frozen=True, slots=True)
class Record:
    """One input row: its 1-based line (parquet: row) number, its text, its other columns, or
    why it is unusable (`error`, without the location: prefix it with `line`; `text` is None)."""

    line: int
    text: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# --------------------------------------------------------------------------------------- formats

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
            f"supported input files are {', '.join(sorted(INPUT_FORMATS))} "
            "(or pass the format explicitly)")
    return INPUT_FORMATS[ext]


def require_pyarrow(what: str) -> Any:
    """Import pyarrow.parquet, or explain how to install it."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise RecordsError(
            f"{what} needs pyarrow, which is not installed: pip install 'flaxsent[parquet]' "
            "(or pip install pyarrow), or use a JSONL/CSV file instead") from err
    return pq


def check_input_file(path: str) -> None:
    """A clear error for a path that is missing or not a regular file."""
    p = Path(path)
    if not p.exists():
        raise RecordsError(f"input file {path!r} does not exist")
    if p.is_dir():
        raise RecordsError(f"input {path!r} is a directory, not a file")


# --------------------------------------------------------------------------------------- readers

def _too_long() -> str:
    return (f"the line is longer than {MAX_LINE_BYTES} bytes (MAX_LINE_BYTES); split it or "
            "cut it: a text is truncated to the model's limit anyway")


def _next_line(stream: IO[bytes]) -> bytes | None:
    """The next raw line with its terminator (b"" at the end of the input), or None for a line
    past MAX_LINE_BYTES, whose rest is read in pieces and dropped."""
    raw = stream.readline(MAX_LINE_BYTES + 1)
    if len(raw) <= MAX_LINE_BYTES:
        return raw
    if not raw.endswith(b"\n"):
        del raw
        while (rest := stream.readline(_READ_CHUNK)) and not rest.endswith(b"\n"):
            pass
    return None


def _decode(raw: bytes, lineno: int, strip_eol: bool = False) -> tuple[str | None, str | None]:
    """Strictly decode one raw line to text (a leading BOM on line 1 dropped; its terminator
    too with `strip_eol`), or say why not; never copies the bytes (lines may be huge)."""
    start = 3 if lineno == 1 and raw.startswith(b"\xef\xbb\xbf") else 0
    end = len(raw)
    if strip_eol and raw.endswith(b"\n"):
        end -= 2 if raw.endswith(b"\r\n") else 1
    try:
        return str(memoryview(raw)[start:end], "utf-8"), None
    except UnicodeDecodeError as err:
        at = start + err.start
        return None, (f"invalid UTF-8 at byte {at + 1} of the line "
                      f"({raw[at:at + 4]!r}); re-encode the file as UTF-8")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def unicode_problem(text: str) -> str | None:
    """What makes a string invalid Unicode, which no tokenizer takes: a lone UTF-16 surrogate
    (JSON's "\\ud800" carries one); None for valid text."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone UTF-16 surrogate (U+{ord(text[e.start]):04X}) at character {e.start}"
    return None


def _text_value(value: Any, column: str) -> tuple[str | None, str | None]:
    """The text of a field, or why it is not usable as one."""
    if not isinstance(value, str):
        return None, f"{column!r} is {_kind(value)}, not a string"
    problem = unicode_problem(value)
    if problem is not None:
        return None, f"{column!r} holds {problem}: not valid Unicode text"
    return value, None


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
    lineno = 0
    while (raw := _next_line(stream)) != b"":
        lineno += 1
        if lineno <= start:  # skipped (--resume) without decoding
            continue
        text, error = _decode(raw, lineno, strip_eol=True) if raw is not None \
            else (None, _too_long())
        raw = None  # not held while the record is out: a line may be huge
        yield Record(lineno, text, {}, error)


def _read_jsonl(stream: IO[bytes], text_column: str | None) -> Iterator[Record]:
    column = text_column  # None until the first object naming a default column decides it
    lineno = 0
    while (raw := _next_line(stream)) != b"":
        lineno += 1
        if raw is None:
            yield Record(lineno, None, {}, _too_long())
            continue
        line, error = _decode(raw, lineno)
        raw = None
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
        except RecursionError:
            yield Record(lineno, None, {}, "not valid JSON (nested too deeply)")
            continue
        line = None
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


def _csv_stand_in(raw: bytes, stream: IO[bytes], fmt: str) -> str:
    """What csv's parser reads for a line past MAX_LINE_BYTES (its row is reported bad): for
    TSV (one row a line) any one-field row; for CSV the line with its runs shortened, read in
    pieces, so that quoted fields and rows end where they would have."""
    if fmt == "tsv":
        if not raw.endswith(b"\n"):
            while (rest := stream.readline(_READ_CHUNK)) and not rest.endswith(b"\n"):
                pass
        return "-\n"
    pieces = []
    size = 0
    piece = raw
    while True:
        short = _CSV_RUNS.sub(lambda m: m[0][0] if m[0][0] != '"' else '"' * (2 - len(m[0]) % 2),
                              piece.decode("utf-8", errors="replace"))
        pieces.append(short)
        size += len(short)
        if size > MAX_LINE_BYTES:
            raise RecordsError(f"a line of over {MAX_LINE_BYTES} bytes (MAX_LINE_BYTES) whose "
                               "fields cannot be followed: the rows after it cannot be read")
        if not piece or piece.endswith(b"\n"):
            return "".join(pieces)
        piece = stream.readline(_READ_CHUNK)


def _csv_lines(stream: IO[bytes], fmt: str, bad: dict[int, tuple[str, bool]],
               counter: list[int]) -> Iterator[str]:
    """Decoded physical lines for csv.reader; a line that is not UTF-8 is passed on (its invalid
    bytes as lone surrogates, so the parser stays in step and the cells without them stay
    readable) and noted in `bad` (why, and True: its cells are the file's) so its row is
    reported, not used; so is a line past MAX_LINE_BYTES, as a short stand-in (False: its cells
    are not the file's). `counter[0]` is the number of the last line handed out."""
    lineno = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        counter[0] = lineno
        if len(raw) > MAX_LINE_BYTES:
            bad[lineno] = _too_long(), False
            text = _csv_stand_in(raw, stream, fmt)
        else:
            text, error = _decode(raw, lineno)
            if error is not None:
                bad[lineno] = error, True
                text = raw.decode("utf-8", errors="surrogateescape")
        raw = None
        yield text


def _readable(cell: str) -> str | None:
    """A cell of a line that is not all UTF-8: itself if its bytes were, else None."""
    return None if _ESCAPED.search(cell) else cell


def _read_delimited(stream: IO[bytes], fmt: str, text_column: str | None, where: str,
                    ) -> tuple[list[str], str, Iterator[Record]]:
    """Read the header now (so a missing column fails before any work), then stream the rows."""
    bad: dict[int, tuple[str, bool]] = {}
    counter = [0]
    # a field may be as long as a line (csv's default limit is 128 Ki characters)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
    if fmt == "tsv":
        reader = csv.reader(_csv_lines(stream, fmt, bad, counter), delimiter="\t",
                            quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(_csv_lines(stream, fmt, bad, counter))
    try:
        header = next(reader)
    except StopIteration:
        raise RecordsError(f"{where} is empty: expected a header row naming its columns") from None
    except csv.Error as err:
        raise RecordsError(f"{where}: cannot read the header row: {err}") from None
    if bad:
        raise RecordsError(f"{where}: the header row is not valid UTF-8: {bad[min(bad)][0]}")
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
            if errors:  # the cells that are whole UTF-8 still travel, so results join back
                extra = {name: _readable(row[i]) if i < len(row) else None
                         for i, name in others} if all(ok for _, ok in errors) else {}
                yield Record(first, None, extra, errors[0][0])
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
    pq = require_pyarrow("reading parquet")
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

    def where(self, line: int) -> str:
        """'FILE, line N' (parquet: 'row N'; stdin for `-`): where a record is, for a message."""
        unit = "row" if self.fmt == "parquet" else "line"
        return f"{'stdin' if self.source == STDIO else self.source}, {unit} {line}"

    def texts(self, limit: int | None = None) -> list[str]:
        """The first `limit` texts (None: all) in memory, for a caller that needs the whole
        corpus at once (the bench); the first bad row raises RecordsError naming its line."""
        texts: list[str] = []
        for record in itertools.islice(self, limit):
            if record.error is not None:
                raise RecordsError(f"{self.where(record.line)}: {record.error}")
            texts.append(record.text)
        return texts

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
        check_input_file(path)
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


# ------------------------------------------------------------------ counting, for progress bars

_COUNT_CHUNK = 1 << 20  # bytes read at a time when counting lines


def _count_lines(path: str) -> int:
    """Lines in a file, a final line without a newline included, read in fixed-size chunks."""
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_COUNT_CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def count_records(path: str, fmt: str | None = None) -> int | None:
    """How many records `path` holds, for a progress bar: exact for txt and parquet, a line count
    (an upper bound) for jsonl/csv/tsv, None for stdin."""
    if path == STDIO:
        return None
    check_input_file(path)
    kind = input_format(path, fmt)
    if kind == "parquet":
        pq = require_pyarrow("reading parquet")
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # the reader reports it properly; a progress bar can do without
            return None
    n = _count_lines(path)
    return max(n - 1, 0) if kind in ("csv", "tsv") else n
