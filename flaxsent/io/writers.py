"""Crash-safe output writers for `flaxsent predict`, and the trimming that lets `--resume` append.

Writers append whole chunks: each chunk is one `write` followed by flush and fsync, so a killed
run leaves complete records plus at most one partial trailing record. `trim_for_resume` cuts that
off (and, for alignment, any complete records after the last multiple of `align`) before a
resumed run appends. Parquet output is written to `<path>.partial` and renamed on close; it
cannot be appended to, so `--resume` is refused for it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from flaxsent.errors import FlaxsentError, RecordsError, WriteError
from flaxsent.io.readers import STDIO, require_pyarrow

OUTPUT_FORMATS: dict[str, str] = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}
PARTIAL_SUFFIX = ".partial"


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
            f"supported output files are {', '.join(sorted(OUTPUT_FORMATS))}")
    return OUTPUT_FORMATS[ext]


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


# OWASP's CSV injection list: a cell starting so may run as a formula in a spreadsheet
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")  # -0.5, +3, -1e-5


def neutralise_formula(cell: str) -> str:
    """`cell` with a leading `'` when a spreadsheet would take it for a formula (it starts with
    =, +, -, @, tab or CR), so it shows as text (OWASP); plain numbers such as -0.5 stay."""
    if cell.startswith(_FORMULA_START) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


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
            try:
                self._write(rows)
            except BrokenPipeError:
                raise  # stdout's reader went away: the command line ends quietly (cli.main)
            except OSError as e:
                raise WriteError(f"cannot write {self.path or 'stdout'}: "
                                 f"{e.strerror or e}") from None
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
            try:  # unbuffered: a failed write leaves nothing behind to fail again on close
                self._file = open(path, "ab" if append else "wb", buffering=0)
            except OSError as err:
                raise WriteError(f"cannot write {path!r}: {err.strerror}") from None

    def _emit(self, data: str) -> None:
        view = memoryview(data.encode("utf-8"))
        while view:  # an unbuffered write may take only part (the last bytes a disk holds)
            view = view[self._file.write(view):]
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
    nested values (top-k lists) as JSON strings in one cell. With `safe` (the default), a text
    cell a spreadsheet would run as a formula gets a leading `'` (`neutralise_formula`)."""

    fmt = "csv"

    def __init__(self, path: str | None, append: bool, safe: bool = True) -> None:
        self.fieldnames: list[str] | None = None
        self.safe = safe
        self._row = io.StringIO()
        self._row_writer = csv.writer(self._row, lineterminator="\r\n")  # quotes a CR cell too
        if append and path not in (None, STDIO) and os.path.exists(path):
            self.fieldnames = _csv_header(path, safe)
        super().__init__(path, append)

    def _cells(self, values: list[Any]) -> list[Any]:
        if not self.safe:
            return values
        return [neutralise_formula(v) if isinstance(v, str) else v for v in values]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        lines = []
        if self.fieldnames is None:
            names = dict.fromkeys(k for row in rows for k in row)
            self.fieldnames = list(names)
            lines.append(self._line(self.fieldnames))
        known = set(self.fieldnames)
        for row in rows:
            unknown = [k for k in row if k not in known]
            if unknown:
                raise RecordsError(
                    f"{self.path or 'stdout'}: row has column(s) {unknown} that are not in the "
                    f"CSV header {self.fieldnames}; write JSONL for rows of varying shape")
            lines.append(self._line([_csv_cell(row.get(k)) for k in self.fieldnames]))
        self._emit("".join(lines))

    def _line(self, values: list[Any]) -> str:
        """One CSV row ending in LF, a cell holding a bare CR quoted: with "\\n" as its line
        terminator, the csv module leaves such a cell bare, and readers split the row there."""
        self._row.seek(0)
        self._row.truncate()
        self._row_writer.writerow(self._cells(values))
        return self._row.getvalue()[:-2] + "\n"


def _csv_header(path: str, safe: bool) -> list[str] | None:
    """The header of an existing CSV output (its names as written before `safe` neutralised
    them), or None when it has no complete header line."""
    with open(path, "rb") as f:
        first = f.readline()
    if not first.endswith(b"\n"):
        return None
    names = next(csv.reader([first.decode("utf-8")]))
    if safe:
        names = [n[1:] if n.startswith("'") and neutralise_formula(n[1:]) == n else n
                 for n in names]
    return names


class ParquetWriter(RecordWriter):
    """A row group per chunk, written to `<path>.partial` and renamed to `path` on a clean close,
    so `path` never holds an unfinished file. Cannot append."""

    fmt = "parquet"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._pq = require_pyarrow("writing parquet")
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
        except OSError:  # pyarrow's IO errors are OSErrors: not a schema problem
            raise
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise RecordsError(f"{self.path}: rows do not fit one parquet schema ({err}); "
                               "write JSONL for rows of varying shape") from None
        self._writer.write_table(table)

    def close(self, *, keep_partial: bool = False) -> None:
        """Finish the file and move it into place (or leave `<path>.partial` on failure)."""
        if self._closed:
            return
        super().close()
        try:
            if self._writer is None:  # no rows: still an (empty) output
                import pyarrow as pa
                self._writer = self._pq.ParquetWriter(self._partial, pa.schema([]))
            self._writer.close()
            if not keep_partial:
                os.replace(self._partial, self.path)
        except OSError as e:
            raise WriteError(f"cannot write {self.path}: {e.strerror or e}") from None

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(keep_partial=exc_type is not None)


class ChunkedOutput:
    """Rows to a writer in chunks of `size` records, each one durable write.

    In a fixed-column format (`uniform`: csv, parquet) every row gets every column, None where
    it has none: the columns are `columns` when known, else the first chunk's (a good row's
    keys first). With `hold`, the first chunk waits for a typed row (one without an `error`):
    parquet types its columns from the first chunk, and a csv of unknown columns fixes its
    header there.
    """

    def __init__(self, writer: RecordWriter, size: int, *, uniform: bool,
                 columns: list[str] | None, hold: bool) -> None:
        self.writer = writer
        self.size = size
        self.uniform = uniform
        self.columns = columns
        self.holding = hold
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any], typed: bool) -> int:
        """Take one row (`typed`: a good row); return how many rows this wrote (0 or a chunk)."""
        self.rows.append(row)
        self.holding = self.holding and not typed
        return self.flush() if len(self.rows) >= self.size and not self.holding else 0

    def flush(self) -> int:
        """Write the rows taken so far as one chunk; return how many."""
        rows, self.rows = self.rows, []
        if self.uniform and rows:
            if self.columns is None:  # a good row's keys first: a bad JSON row has no extras
                good = [r for r in rows if not r.get("error")]
                self.columns = list(dict.fromkeys(k for r in good + rows for k in r))
            rows = [{**dict.fromkeys(self.columns), **r} for r in rows]
        self.writer.write_chunk(rows)
        return len(rows)


def open_writer(path: str | None, fmt: str | None = None, append: bool = False, *,
                csv_safe: bool = True) -> RecordWriter:
    """A writer for `path` (stdout JSONL for None or `-`); `append` continues an existing JSONL/CSV
    output after `trim_for_resume` has trimmed it (parquet refuses it); `csv_safe`: CSV cells
    that would run as spreadsheet formulas get a leading `'`."""
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
    return JsonlWriter(path, append) if kind == "jsonl" else CsvWriter(path, append, csv_safe)


# --------------------------------------------------------------------------------------- resume

def _record_ends(f: IO[bytes], kind: str) -> Iterator[int]:
    """The byte offset just after each complete record of a JSONL or CSV output (CSV: the header
    row first); a trailing partial record, even one cut inside a quoted field, ends the walk."""
    offset = 0
    last = b"\n"

    def lines() -> Iterator[str]:
        nonlocal offset, last
        for raw in f:
            offset += len(raw)
            last = raw[-1:]
            yield raw.decode("utf-8", errors="replace")

    if kind == "jsonl":
        for _ in lines():
            if last == b"\n":
                yield offset
        return
    rows = csv.reader(lines(), strict=True)
    try:
        for _ in rows:
            if last == b"\n":
                yield offset
    except csv.Error:
        return  # ended inside a quoted field: the last row is partial


def trim_for_resume(path: str | None, fmt: str | None = None, align: int = 1) -> int:
    """Keep the complete records of an existing JSONL/CSV output up to the last multiple of
    `align` at or below their count (cutting off the rest: a killed run's torn record, and the
    records a restart at that multiple recomputes); return how many are kept (0: no file)."""
    kind = output_format(path, fmt)
    if path is None or path == STDIO:
        raise RecordsError("--resume needs an output file (-o FILE), not stdout")
    if kind == "parquet":
        raise RecordsError(f"cannot resume into {path!r}: parquet output cannot be appended "
                           "to; write JSONL or CSV to resume a run")
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    if not os.path.exists(path):
        return 0
    header = 1 if kind == "csv" else 0
    count, end = 0, 0
    with open(path, "rb") as f:
        for i, offset in enumerate(_record_ends(f, kind)):
            if i < header:
                end = offset  # a header alone is kept (appending continues under it)
                continue
            count = i + 1 - header
            if count % align == 0:
                end = offset
    kept = count - count % align
    if end != os.path.getsize(path):
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    return kept


def report_folder(out: str, files: Sequence[str], force: bool,
                  error: type[FlaxsentError]) -> Path:
    """A command's output folder, refusing (with `error`, one line) a file in its place, or
    earlier copies of `files` in it unless `force`: checked before any work."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise error(f"--out {out!r} is a file, not a folder")
    existing = [name for name in files if (folder / name).exists()]
    if existing and not force:
        raise error(f"--out {out!r} already holds {', '.join(existing)}: pass --force "
                    "to replace them, or choose another folder")
    return folder
