"""How many records an input holds, for a progress bar's total, without parsing it: a line count
in fixed-size chunks (an upper bound for JSONL/CSV/TSV), Parquet's own row count."""

from __future__ import annotations

from flaxsent.io.readers import STDIO, check_input_file, input_format, require_pyarrow

_CHUNK = 1 << 20  # bytes read at a time


def _count_lines(path: str) -> int:
    """Lines in a file, a final line without a newline included, read in fixed-size chunks."""
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
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
