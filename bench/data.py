"""`--data` loaders: a text file (a sentence a line), TSV/CSV with a header, or JSON Lines.

The bench reads the whole file into memory (a benchmark corpus is small); every error names the
file, the line and what to do instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from flaxsent.errors import FlaxsentError

TEXT_COLUMNS = ("sentence", "text")  # looked for in this order (GLUE SST-2 uses "sentence")
_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_HINT = ("--data takes a text file (one sentence a line), a .tsv/.csv file with a 'sentence' or "
         "'text' column, or a .jsonl file with a 'text' or 'sentence' field")


def load_texts(path: str | os.PathLike) -> tuple[list[str], dict[str, Any]]:
    """The sentences of a data file, and a description of where they came from, for reports."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FlaxsentError(f"{path}: no such file ({_HINT})")
    if not p.is_file():
        raise FlaxsentError(f"{path}: not a file ({_HINT})")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise FlaxsentError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise FlaxsentError(f"{path}: not UTF-8 text (line {line}, byte {e.start}: "
                            f"{raw[e.start:e.start + 1]!r}); re-encode the file as UTF-8") from None
    fmt = _FORMATS.get(p.suffix.lower(), "lines")
    description: dict[str, Any] = {"source": str(p), "format": fmt}
    if fmt == "lines":
        texts = _read_lines(text)
    elif fmt == "jsonl":
        texts, description["field"] = _read_jsonl(text, path)
    else:
        texts, description["column"] = _read_table(text, path, "\t" if fmt == "tsv" else ",")
    if not texts:
        raise FlaxsentError(f"{path}: holds no sentences ({_HINT})")
    description["n"] = len(texts)
    return texts, description


def _read_lines(text: str) -> list[str]:
    """Every line that is not blank, without its line ending."""
    return [line for line in text.splitlines() if line.strip()]


def _read_table(text: str, path: str | os.PathLike, delimiter: str) -> tuple[list[str], str]:
    """The 'sentence' (else 'text') column of a delimited file with a header row."""
    # GLUE's TSV files hold bare quote characters inside sentences: no quoting for TSV.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    try:
        header = next(rows, None)
        if header is None:
            raise FlaxsentError(f"{path}: empty file ({_HINT})")
        names = [h.strip().lower() for h in header]
        column = next((c for c in TEXT_COLUMNS if c in names), None)
        if column is None:
            shown = ", ".join(repr(h) for h in header) or "none"
            raise FlaxsentError(f"{path}: no 'sentence' or 'text' column in the header "
                                f"(columns: {shown}); rename the column that holds the text")
        index = names.index(column)
        texts = []
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue
            if index >= len(row):
                raise FlaxsentError(f"{path}: line {rows.line_num} has {len(row)} field(s), no "
                                    f"'{column}' (field {index + 1}); check the delimiter")
            if not row[index].strip():
                raise FlaxsentError(f"{path}: line {rows.line_num}: empty '{column}'")
            texts.append(row[index])
    except csv.Error as e:
        raise FlaxsentError(f"{path}: line {rows.line_num}: not valid "
                            f"{'TSV' if delimiter == chr(9) else 'CSV'} ({e})") from None
    return texts, column


def _read_jsonl(text: str, path: str | os.PathLike) -> tuple[list[str], str]:
    """One JSON object per line, its 'text' (else 'sentence') field; or one JSON string a line."""
    texts: list[str] = []
    fields: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise FlaxsentError(f"{path}: line {number} is not valid JSON ({e.msg})") from None
        if isinstance(item, str):
            value, field = item, "(string)"
        elif isinstance(item, dict):
            field = next((f for f in ("text", "sentence") if f in item), None)
            if field is None:
                keys = ", ".join(repr(k) for k in item) or "none"
                raise FlaxsentError(f"{path}: line {number} has no 'text' or 'sentence' field "
                                    f"(fields: {keys})")
            value = item[field]
        else:
            raise FlaxsentError(f"{path}: line {number} holds a JSON {type(item).__name__}, "
                                "not an object with a 'text' field")
        if not isinstance(value, str):
            raise FlaxsentError(f"{path}: line {number}: '{field}' is a "
                                f"{type(value).__name__}, not a string")
        if not value.strip():
            raise FlaxsentError(f"{path}: line {number}: empty '{field}'")
        fields.add(field)
        texts.append(value)
    return texts, "/".join(sorted(fields))
