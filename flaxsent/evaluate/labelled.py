"""Labelled files (text plus a gold label a row), for `flaxsent eval` and `flaxsent train`.

Any format predict reads except plain text: GLUE's SST-2 TSV (`sentence<TAB>label`) as it is,
CSV, JSONL or Parquet with a label column. Labels are class ids or label names. A bad row, a
missing column or an unknown label stops the read with one line naming the file and the row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from flaxsent.errors import LabelledFileError, MetricsError
from flaxsent.evaluate.metrics import parse_labels
from flaxsent.io.readers import input_format, read_records


class LabelledRows(NamedTuple):
    """A labelled file in memory: its texts, class ids, and each row's line (parquet: row)."""

    texts: list[str]
    labels: list[int]
    lines: list[int]
    unit: str  # "line", or "row" for parquet


def iter_labelled(path: str, label_names: Sequence[str], *, text_column: str | None = None,
                  label_column: str = "label", fmt: str | None = None,
                  ) -> Iterator[tuple[str, int]]:
    """(text, class id) per row of a labelled file, in file order."""
    for text, label, _ in _rows(path, label_names, text_column, label_column, fmt):
        yield text, label


def read_labelled(path: str, label_names: Sequence[str], *, text_column: str | None = None,
                  label_column: str = "label", fmt: str | None = None) -> LabelledRows:
    """Every row of a labelled file, for a caller that checks them all before any work
    (`flaxsent train`): the rows' lines let its messages name them."""
    rows = LabelledRows([], [], [], "row" if input_format(path, fmt) == "parquet" else "line")
    for text, label, line in _rows(path, label_names, text_column, label_column, fmt):
        rows.texts.append(text)
        rows.labels.append(label)
        rows.lines.append(line)
    return rows


def _rows(path: str, label_names: Sequence[str], text_column: str | None, label_column: str,
          fmt: str | None) -> Iterator[tuple[str, int, int]]:
    """(text, class id, line) per row; the first bad row stops the read with one line."""
    with read_records(path, text_column, fmt) as reader:
        if reader.fmt == "txt":
            raise LabelledFileError(
                f"{path!r} is plain text, which has no labels: give a TSV (GLUE SST-2: "
                "sentence<TAB>label), CSV, JSONL or Parquet file with a label column")
        if reader.columns is not None and label_column not in reader.columns:
            raise LabelledFileError(
                f"{path!r} has no label column {label_column!r}; its columns are "
                f"{', '.join(map(repr, reader.columns))}: choose one with --label-column")
        for record in reader:
            if record.error is not None:
                raise LabelledFileError(f"{reader.where(record.line)}: {record.error}")
            if label_column not in record.extra:
                raise LabelledFileError(f"{reader.where(record.line)}: no {label_column!r} "
                                        "field; choose the label column with --label-column")
            yield record.text, _label(record.extra[label_column], label_names,
                                      reader.where(record.line)), record.line


def _label(value: Any, label_names: Sequence[str], where: str) -> int:
    try:
        return int(parse_labels([value], label_names)[0])
    except MetricsError as e:
        raise LabelledFileError(f"{where}: {str(e).replace(' in row 1', '')}") from None
