"""`flaxsent predict`: a file of texts in, one prediction record per input row out, streamed.

Input rows come from `readers.read_records` (txt, jsonl, csv/tsv, parquet, `-` for stdin); output
is JSONL (default, stdout), CSV or parquet, one record per input row in input order, with every
extra input column carried through. Output is written in chunks of `--chunk-size` records, each
durable on return, so a killed run keeps whole chunks. `--resume` keeps the complete records up
to the last multiple of the classifier's window (`Classifier.window`: batches never span two
windows) and restarts there, so the resumed run forms the uninterrupted run's batches and its
output is byte-identical. A sharded run (`shards.Shard`) predicts only its own rows.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import hashlib
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from flaxsent.errors import NonFiniteLogitsError, PredictError, WriteError
from flaxsent.io import records
from flaxsent.io.readers import STDIO, Record, count_records, read_records
from flaxsent.io.writers import (
    ChunkedOutput,
    ParquetWriter,
    open_writer,
    output_format,
    trim_for_resume,
)
from flaxsent.predict.shards import ROW_FIELD, Shard, record_done, withdraw_done

if TYPE_CHECKING:
    import numpy as np

    from flaxsent.core.classifier import Classifier

PREDICTION_FIELDS = (*records.FIELDS, ROW_FIELD)  # input columns of these names: input_<name>
RUN_SUFFIX = ".run.json"  # beside an output: what the run that writes it depends on
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_MMAP_THRESHOLD = 128 * 1024  # glibc's own initial value, then held fixed


@dataclasses.dataclass
class PredictResult:
    """What one `predict_file` call wrote: rows (this call), rows kept from before (--resume)."""

    written: int = 0
    resumed_from: int = 0
    skipped_errors: int = 0
    truncated: int = 0  # texts cut to the model's max length (this call)
    output: str | None = None


# ------------------------------------------------------------------------------ formatting

class RowFormatter:
    """Turns (record, logits row) into an output record: extras, then the prediction fields."""

    def __init__(self, score: Callable[[np.ndarray], Any], *, top_k: int | None, logits: bool,
                 uniform: bool, row_index: bool):
        self.score = score  # the classifier's pipeline-style formatting of one logits row
        self.top_k = top_k  # None: all labels
        self.logits = logits
        self.uniform = uniform  # fixed-schema outputs (csv, parquet) need every key on every row
        self.row_index = row_index

    def columns(self, extras: list[str], errors_possible: bool, *, merged: bool = False,
                ) -> list[str]:
        """The keys of every output record, in order, given the input's other columns
        (`merged`: of a csv/parquet output that parts are merged into)."""
        names = [ROW_FIELD] if self.row_index and not merged else []
        names += [records.input_name(key, PREDICTION_FIELDS) for key in extras]
        names += records.prediction_fields(self.top_k, self.logits)
        names += [records.LINE, records.ERROR] if errors_possible and (self.uniform or merged) \
            else []
        return list(dict.fromkeys(names))

    def _extras(self, record: Record, index: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.row_index:
            out[ROW_FIELD] = index
        for key, value in record.extra.items():
            out[records.input_name(key, PREDICTION_FIELDS)] = value
        return out

    def ok(self, record: Record, index: int, logits: np.ndarray, errors_possible: bool,
           ) -> dict[str, Any]:
        """The output record of a row the classifier scored (`logits` [C])."""
        row = self._extras(record, index)
        row.update(records.good_row(self.score(logits), self.top_k,
                                    logits if self.logits else None))
        if errors_possible and self.uniform:
            row[records.LINE] = record.line
            row[records.ERROR] = ""  # not None: a parquet column must get its type from any chunk
        elif errors_possible and self.row_index:  # a part: merging into csv needs every line
            row[records.LINE] = record.line
        return row

    def bad(self, record: Record, index: int) -> dict[str, Any]:
        """The error record of a row that could not be read (--on-error skip)."""
        row = self._extras(record, index)
        row.update(records.bad_row(record.error, self.top_k, self.logits, line=record.line))
        return row


# ------------------------------------------------------------------------------ the run

def unmap_freed_blocks() -> None:
    """Hold glibc's mmap threshold at 128 KiB, so large freed blocks go back to the OS at once.

    glibc raises the threshold to the size of every large block freed (up to 32 MiB); after
    that, the XLA CPU runtime's per-batch buffers come from per-thread heaps that keep their
    pages, and a long run's peak RSS keeps growing (measured: bench/results/*/predict_rss.md).
    Mapped blocks cost page faults instead. Process-wide and idempotent: `flaxsent predict`
    calls it before the model loads, `predict_file` again. A no-op where libc is not glibc.
    """
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def _progress(total: int | None, enabled: bool) -> Any:
    """A tqdm bar on stderr counting sentences (a no-op object when disabled or not a TTY)."""
    from tqdm import tqdm
    return tqdm(total=total, unit="sent", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                disable=not enabled or not sys.stderr.isatty(), desc="predict")


def _check_options(output: str | None, *, resume: bool, force: bool, on_error: str,
                   chunk_size: int) -> None:
    """Refuse options that cannot work, before any file is touched."""
    if on_error not in ("fail", "skip"):
        raise PredictError(f"--on-error {on_error!r}: choose fail or skip")
    if chunk_size < 1:
        raise PredictError(f"--chunk-size {chunk_size}: must be a positive number of records")
    if output in (None, STDIO):
        return
    if os.path.exists(output) and not (resume or force):
        raise PredictError(f"output {output!r} already exists: pass --resume to continue it, "
                           "--force to overwrite it, or choose another -o")
    if os.path.isdir(output):
        raise PredictError(f"output {output!r} is a directory, not a file")


def run_identity(clf: Classifier, input_path: str, *, text_column: str | None,
                 input_fmt: str | None, top_k: int | None, logits: bool, on_error: str,
                 shard: Shard, csv_safe: bool | None = None) -> dict[str, Any]:
    """What an output's records depend on: the input file, the model, and every option that
    changes a record or a batch (--chunk-size does neither: it is only the write size)."""
    from flaxsent.io import run_record as fingerprint
    if clf.source is not None:
        model = fingerprint.model_identity(clf.source)
    else:  # built in memory: its config is what can be told
        config = json.dumps(clf.config.to_hf_dict(), sort_keys=True, default=str).encode()
        model = {"config_sha256": hashlib.sha256(config).hexdigest()}
    return {
        "input": fingerprint.file_identity(input_path) if input_path != STDIO
        and os.path.isfile(input_path) else {"path": input_path},
        "model": model,
        "dtype": clf.dtype,
        # ONNX Runtime's logits differ from JAX's in the last bits (its int8 graphs' more):
        # recorded only then, so older records match
        **({"runtime": clf.runtime, "graphs": clf.engine.files}
           if getattr(clf, "runtime", "jax") != "jax" else {}),
        # int8 logits differ from float ones; recorded only when on, so older records match
        **({"quantize": clf.quantize} if getattr(clf, "quantize", "none") != "none" else {}),
        "max_length": clf.tokenizer.max_length, "precision": clf.engine.precision,
        "platform": clf.engine.devices[0].platform, "window": clf.window,
        "batch_shapes": " ".join("x".join(map(str, shape)) for shape in clf.shapes()),
        "text_column": text_column, "input_format": input_fmt, "top_k": top_k,
        "logits": logits, "on_error": on_error, "shard": [shard.index, shard.count, shard.block],
        "csv_safe": csv_safe,  # None: not a csv output
    }


def _check_or_record_run(output: str, identity: dict[str, Any], resume: bool) -> None:
    """On --resume into an existing output, refuse a run that differs from the recorded one
    (saying what differs); otherwise record this run beside the output."""
    from flaxsent.io.run_record import check_or_record
    check_or_record(output + RUN_SUFFIX, identity, resume=resume and os.path.exists(output),
                    error=PredictError, wrote=output,
                    refusal=lambda diff: f"--resume: {output} was written by another run ({diff}): "
                    "rerun with the same input, model and options, or start afresh with --force")


def _lost(what: str) -> RuntimeError:
    return RuntimeError(f"internal error: {what}; the output is incomplete, please report this")


def predict_file(clf: Classifier, input_path: str, output: str | None, *,
                 text_column: str | None = None, input_fmt: str | None = None,
                 top_k: int | None = 1, logits: bool = False, resume: bool = False,
                 force: bool = False, on_error: str = "fail", chunk_size: int = 1024,
                 progress: bool = True, shard: Shard | None = None,
                 csv_safe: bool = True) -> PredictResult:
    """Predict every row of `input_path` (or of `shard`'s rows) into `output` (None: stdout),
    streamed, in durable chunks of `chunk_size` records (`csv_safe`: see `CsvWriter`)."""
    shard = shard or Shard(0, 1, clf.window)
    if shard.block % clf.window:
        raise PredictError(f"shard blocks of {shard.block} rows are not whole classifier "
                           f"windows of {clf.window}: sharded batches would differ")
    _check_options(output, resume=resume, force=force, on_error=on_error,
                   chunk_size=chunk_size)
    unmap_freed_blocks()  # or peak memory grows with the file
    fmt = output_format(output) if shard.count == 1 else "jsonl"
    part = shard.count > 1 and output not in (None, STDIO)
    if resume and fmt == "parquet":
        raise PredictError(f"cannot resume into {output!r}: parquet output cannot be appended "
                           "to; write JSONL or CSV to resume a run")
    if output not in (None, STDIO):  # before the output is touched (trimmed, appended to)
        _check_or_record_run(output, run_identity(
            clf, input_path, text_column=text_column, input_fmt=input_fmt, top_k=top_k,
            logits=logits, on_error=on_error, shard=shard,
            csv_safe=csv_safe if fmt == "csv" else None), resume)
    if part:  # an earlier run's completion no longer holds once the part is written again
        withdraw_done(output)
    # restart at a window boundary: the resumed run then forms the uninterrupted run's batches
    done = trim_for_resume(output, fmt, align=clf.window) if resume else 0
    start = shard.global_row(done)
    reader = read_records(input_path, text_column, input_fmt, start=start)
    uniform = fmt in ("csv", "parquet")  # fixed columns: every key on every row
    formatter = RowFormatter(
        lambda row: clf.format_scores(row, top_k=top_k), top_k=top_k, logits=logits,
        uniform=uniform, row_index=shard.count > 1)
    errors_possible = on_error == "skip"
    total = count_records(input_path, input_fmt)
    if total is not None:
        total = max(shard.rows_of(total) - done, 0)

    pending: collections.deque[tuple[int, Record]] = collections.deque()
    failed: list[Record] = []
    input_rows: int | None = None  # the input's record count, once every record was read

    def texts() -> Iterator[str | None]:
        """This shard's texts (None for a bad row: the classifier holds its place); under
        --on-error fail, a bad row ends the stream so that the rows before it finish."""
        nonlocal input_rows
        index = start
        for record in reader:
            index += 1
            if not shard.owns(index - 1):
                continue
            if record.error is not None and on_error == "fail":
                failed.append(record)
                return
            pending.append((index - 1, record))
            yield record.text
        input_rows = index

    writer = open_writer(output, fmt, append=resume and done > 0, csv_safe=csv_safe)
    result = PredictResult(resumed_from=done, output=output)
    bar = _progress(total, progress)
    # csv/parquet: the columns follow the input's (csv on --resume: the output's header); a
    # JSONL input says its columns with its first good row
    columns = getattr(writer, "fieldnames", None)
    extras = None if reader.fmt == "jsonl" else \
        [c for c in reader.columns or [] if c != reader.text_column]
    if columns is None and extras is not None:
        columns = formatter.columns(extras, errors_possible)
    chunks = ChunkedOutput(writer, chunk_size, uniform=uniform, columns=columns,
                           hold=fmt == "parquet" or columns is None)

    ok = False
    broken: tuple[Record, str] | None = None  # a row the model gave NaN or inf for
    try:
        try:
            for row in clf.stream_logits(texts()):
                if not pending:
                    raise _lost("more results than inputs")
                index, record = pending.popleft()
                if row is not None:
                    bar.update(chunks.add(formatter.ok(record, index, row, errors_possible),
                                          typed=True))
                else:
                    bar.update(chunks.add(formatter.bad(record, index), typed=False))
                    result.skipped_errors += 1
        except NonFiniteLogitsError as err:  # never a record: stop after the rows before it
            broken = pending[err.index - writer.rows_written - len(chunks.rows)][1], err.detail
        bar.update(chunks.flush())
        if not (broken or failed) and (pending or input_rows is None):
            raise _lost(f"{len(pending)} input(s) without a result" if pending else
                        "the classifier stopped reading the input before its end")
        ok = True
    except WriteError as e:  # a full disk, say: what was written stays
        again = "then rerun with --resume to continue it" if fmt != "parquet" and \
            output not in (None, STDIO) else "then run it again"
        raise PredictError(f"{e}; {done + writer.rows_written} record(s) were written before "
                           f"it: make room, {again}") from None
    finally:
        bar.close()
        reader.close()
        if isinstance(writer, ParquetWriter) and not ok and not failed:  # keep .partial
            writer.close(keep_partial=True)
        else:
            writer.close()
    result.written = writer.rows_written
    result.truncated = clf.last_run.n_truncated
    kept = f"; the {done + result.written} row(s) before it are in {output}" \
        if output not in (None, STDIO) else ""
    if broken:
        record, detail = broken
        raise PredictError(f"{reader.where(record.line)}: {detail}{kept}")
    if failed:
        record = failed[0]
        raise PredictError(f"{reader.where(record.line)}: {record.error}{kept}; fix the row, "
                           "or pass --on-error skip to write an error record for it and go on")
    if part and input_rows is not None:  # last: this part now holds all its rows
        merged = None if extras is None else formatter.columns(extras, errors_possible,
                                                               merged=True)
        record_done(output, shard, done + result.written, input_rows,
                    {"columns": merged, "errors_possible": errors_possible,
                     "chunk_size": chunk_size})
    return result
