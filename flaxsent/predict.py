"""`flaxsent predict`: a file of texts in, one prediction record per input row out, streamed.

Input rows come from `records.read_records` (txt, jsonl, csv/tsv, parquet, `-` for stdin); output
is JSONL (default, stdout), CSV or parquet, one record per input row in input order, with every
extra input column carried through. Output is written in chunks of `--chunk-size` records, each
durable on return, so a killed run keeps whole chunks and `--resume` continues after them. The
classifier's tokenize window equals the chunk size, so a resumed run forms exactly the batches the
uninterrupted run would have and its output is byte-identical.

With `--distributed` (or `--num-processes N --process-id P`) process P predicts the rows i with
i % N == P into `OUTPUT.part-P-of-N` (JSONL, each row with its global index in `_row`); process 0
writes `OUTPUT.manifest.json` once every part is done, and `--merge MANIFEST -o OUTPUT` joins the
parts in input order.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FlaxsentError
from .records import (
    STDIO,
    ParquetWriter,
    Record,
    count_complete_records,
    count_records,
    open_writer,
    output_format,
    read_records,
    truncate_records,
)

ROW_FIELD = "_row"
MANIFEST_SUFFIX = ".manifest.json"
PREDICTION_FIELDS = ("label", "score", "labels", "logits", "line", "error", ROW_FIELD)


class PredictError(FlaxsentError):
    """A bad input row under --on-error fail, or options that cannot work together."""


@dataclasses.dataclass
class Shard:
    """Which rows this process predicts: whole blocks of `block` rows, dealt out in turn.

    Blocks are the classifier's tokenizer windows, so each process forms exactly the batches a
    single process would: the merged output is byte-identical to a single-process run.
    """

    index: int = 0
    count: int = 1
    block: int = 1

    def part_path(self, output: str) -> str:
        return f"{output}.part-{self.index}-of-{self.count}"

    def owns(self, row: int) -> bool:
        return (row // self.block) % self.count == self.index

    def global_row(self, k: int) -> int:
        """The input row of this shard's k-th row."""
        blocks, within = divmod(k, self.block)
        return (blocks * self.count + self.index) * self.block + within

    def rows_of(self, total: int) -> int:
        """How many of `total` input rows this shard owns."""
        first_blocks = range(self.index * self.block, total, self.count * self.block)
        return sum(min(self.block, total - b) for b in first_blocks)


@dataclasses.dataclass
class PredictResult:
    """What one `predict_file` call wrote: rows (this call), rows kept from before (--resume)."""

    written: int = 0
    resumed_from: int = 0
    skipped_errors: int = 0
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

    def _extras(self, record: Record, index: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.row_index:
            out[ROW_FIELD] = index
        for key, value in record.extra.items():
            # an input column named like an output field keeps its value under input_<name>
            out[f"input_{key}" if key in PREDICTION_FIELDS else key] = value
        return out

    def ok(self, record: Record, index: int, logits: np.ndarray, errors_possible: bool,
           ) -> dict[str, Any]:
        row = self._extras(record, index)
        result = self.score(logits)
        if self.top_k == 1:
            row.update(result)  # label, score
        else:
            row["labels"] = result
        if self.logits:
            row["logits"] = [float(v) for v in logits]
        if errors_possible and self.uniform:
            row["line"] = record.line
            row["error"] = ""  # not None: a parquet column must get its type from any chunk
        return row

    def bad(self, record: Record, index: int) -> dict[str, Any]:
        row = self._extras(record, index)
        if self.top_k == 1:
            row["label"] = None
            row["score"] = None
        else:
            row["labels"] = None
        if self.logits:
            row["logits"] = None
        row["line"] = record.line
        row["error"] = record.error
        return row


# ------------------------------------------------------------------------------ the run

def _progress(total: int | None, enabled: bool):
    """A tqdm bar on stderr counting sentences (a no-op object when disabled or not a TTY)."""
    from tqdm import tqdm
    return tqdm(total=total, unit="sent", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                disable=not enabled or not sys.stderr.isatty(), desc="predict")


def _where(path: str, record: Record) -> str:
    """'FILE, line N' (parquet: row N) for an error message."""
    unit = "row" if path.lower().endswith((".parquet", ".pq")) else "line"
    return f"{'stdin' if path == STDIO else path}, {unit} {record.line}"


def predict_file(clf: Any, input_path: str, output: str | None, *,
                 text_column: str | None = None, input_fmt: str | None = None,
                 top_k: int | None = 1, logits: bool = False, resume: bool = False,
                 force: bool = False, on_error: str = "fail", chunk_size: int = 1024,
                 progress: bool = True, shard: Shard | None = None) -> PredictResult:
    """Predict every row of `input_path` into `output` (None: stdout), streamed in chunks."""
    # deal out whole tokenizer windows, so each shard forms a single process's batches
    shard = dataclasses.replace(shard or Shard(), block=clf.window)
    if on_error not in ("fail", "skip"):
        raise PredictError(f"--on-error {on_error!r}: choose fail or skip")
    if chunk_size < 1:
        raise PredictError(f"--chunk-size {chunk_size}: must be a positive number of records")
    to_file = output not in (None, STDIO)
    fmt = output_format(output) if shard.count == 1 else "jsonl"
    if resume and not to_file:
        raise PredictError("--resume needs an output file (-o FILE), not stdout")
    if resume and fmt == "parquet":
        raise PredictError(f"cannot resume into {output!r}: parquet output cannot be appended "
                           "to; write JSONL or CSV to resume a run")
    if to_file and os.path.exists(output) and not (resume or force):
        raise PredictError(f"output {output!r} already exists: pass --resume to continue it, "
                           "--force to overwrite it, or choose another -o")
    if to_file and os.path.isdir(output):
        raise PredictError(f"output {output!r} is a directory, not a file")

    done = count_complete_records(output, fmt) if resume else 0
    # Texts share batches only within one tokenizer window, and a text's logits can differ in
    # the last bits with its batch-mates: restart at a window boundary so the resumed run
    # forms the uninterrupted run's batches and its output is byte-identical.
    aligned = done - done % clf.window
    if aligned != done:
        truncate_records(output, aligned, fmt)
        done = aligned
    start = shard.global_row(done)
    reader = read_records(input_path, text_column, input_fmt, start=start)
    formatter = RowFormatter(
        lambda row: clf.format_scores(row, top_k=top_k), top_k=top_k, logits=logits,
        uniform=fmt in ("csv", "parquet"), row_index=shard.count > 1)
    errors_possible = on_error == "skip"

    total = count_records(input_path, input_fmt) if input_path != STDIO else None
    if total is not None:
        total = max(shard.rows_of(total) - done, 0)

    pending: collections.deque[tuple[int, Record]] = collections.deque()
    failed: list[Record] = []

    def texts() -> Iterator[str]:
        """The texts of this shard's records; a bad row feeds "" (keeps batches aligned with
        chunks) or, under --on-error fail, ends the stream so that rows before it finish."""
        for offset, record in enumerate(reader):
            index = start + offset
            if not shard.owns(index):
                continue
            if record.error is not None and on_error == "fail":
                failed.append(record)
                return
            pending.append((index, record))
            yield "" if record.error is not None else record.text

    result = PredictResult(resumed_from=done, output=output)
    writer = open_writer(output, fmt, append=resume and done > 0)
    bar = _progress(total, progress)
    chunk: list[dict[str, Any]] = []
    uniform = fmt in ("csv", "parquet")
    # csv/parquet fix their columns at the first write (csv: the existing header on --resume)
    columns: list[str] | None = getattr(writer, "fieldnames", None)
    # parquet also fixes the column types then: hold the first chunk until a good row types them
    typed = fmt != "parquet"

    def flush(rows: list[dict[str, Any]]) -> None:
        nonlocal columns
        if uniform:
            if columns is None:  # a good row's keys first: a bad JSON row has no extras
                good = [r for r in rows if not r.get("error")]
                columns = list(dict.fromkeys(k for r in good + rows for k in r))
            rows = [{**dict.fromkeys(columns), **r} for r in rows]
        writer.write_chunk(rows)
        result.written += len(rows)
        bar.update(len(rows))

    ok = False
    try:
        for row in clf.stream_logits(texts()):
            index, record = pending.popleft()
            if record.error is None:
                chunk.append(formatter.ok(record, index, row, errors_possible))
                typed = True
            else:
                chunk.append(formatter.bad(record, index))
                result.skipped_errors += 1
            if len(chunk) >= chunk_size and typed:
                cut = len(chunk) - len(chunk) % chunk_size  # whole chunks keep --resume aligned
                flush(chunk[:cut])
                chunk = chunk[cut:]
        if chunk:
            flush(chunk)
        ok = True
    finally:
        bar.close()
        reader.close()
        if isinstance(writer, ParquetWriter) and not ok and not failed:  # keep .partial
            writer.close(keep_partial=True)
        else:
            writer.close()
    if failed:
        record = failed[0]
        kept = f"; the {done + result.written} row(s) before it are in {output}" if to_file else ""
        raise PredictError(f"{_where(input_path, record)}: {record.error}{kept}; fix the row, or "
                           "pass --on-error skip to write an error record for it and go on")
    return result


# ------------------------------------------------------------------------------ distributed

def _distributed_setup(args: argparse.Namespace) -> Shard:
    """Start jax.distributed (--distributed) or take --num-processes/--process-id as given."""
    env = os.environ
    coordinator = args.coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    n = args.num_processes if args.num_processes is not None else env.get("JAX_NUM_PROCESSES")
    pid = args.process_id if args.process_id is not None else env.get("JAX_PROCESS_ID")
    if args.distributed:
        if coordinator is None or n is None or pid is None:
            raise PredictError("--distributed needs --coordinator HOST:PORT, --num-processes N "
                               "and --process-id P (or JAX_COORDINATOR_ADDRESS, "
                               "JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
        import jax
        try:
            jax.distributed.initialize(coordinator_address=coordinator, num_processes=int(n),
                                       process_id=int(pid))
        except Exception as err:  # connection refused, timeout, already initialized
            raise PredictError(f"jax.distributed.initialize({coordinator}, {n}, {pid}) "
                               f"failed: {err}") from None
        shard = Shard(jax.process_index(), jax.process_count())
    elif n is None and pid is None:
        return Shard()
    else:
        try:
            shard = Shard(int(pid if pid is not None else 0), int(n if n is not None else 1))
        except ValueError:
            raise PredictError(f"--num-processes {n!r} / --process-id {pid!r}: "
                               "must be integers") from None
    if shard.count < 1 or not 0 <= shard.index < shard.count:
        raise PredictError(f"--process-id {shard.index} must be from 0 to "
                           f"--num-processes - 1 ({shard.count - 1})")
    return shard


def _barrier(name: str) -> None:
    """Wait for every process (when jax.distributed runs), so the manifest means 'all done'."""
    import jax
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def write_manifest(output: str, shard: Shard, input_path: str) -> str:
    """Write `OUTPUT.manifest.json` naming the parts (relative to the manifest's folder)."""
    path = output + MANIFEST_SUFFIX
    parts = [Path(Shard(i, shard.count).part_path(output)).name for i in range(shard.count)]
    manifest = {"format": "flaxsent-predict-parts", "version": 1, "input": input_path,
                "output": Path(output).name, "num_processes": shard.count, "parts": parts,
                "block": shard.block, "row_field": ROW_FIELD}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def merge_parts(manifest_path: str, output: str | None, *, force: bool = False) -> int:
    """Join the parts a manifest lists into `output` in input order, dropping `_row`; returns
    the number of records. Checks that the parts interleave exactly (row i in part
    (i // block) % N)."""
    try:
        manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
        names = list(manifest["parts"])
        n = int(manifest["num_processes"])
        block = int(manifest["block"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PredictError(f"{manifest_path!r} is not a readable predict manifest: {err}") \
            from None
    if len(names) != n or n < 1:
        raise PredictError(f"{manifest_path!r}: lists {len(names)} part(s) for {n} processes")
    if output not in (None, STDIO) and os.path.exists(output) and not force:
        raise PredictError(f"output {output!r} already exists: pass --force to overwrite it")
    folder = Path(manifest_path).parent
    paths = [folder / name for name in names]
    for p in paths:
        if not p.is_file():
            raise PredictError(f"part {str(p)!r} listed in {manifest_path!r} does not exist")
    files = [open(p, "rb") for p in paths]
    writer = open_writer(output, output_format(output))
    chunk: list[dict[str, Any]] = []
    i = 0
    try:
        while True:
            part = (i // block) % n
            raw = files[part].readline()
            if not raw:
                extra = [str(paths[j]) for j in range(n) if j != part and files[j].readline()]
                if extra:
                    raise PredictError(f"part {str(paths[part])!r} ends at row {i} but "
                                       f"{', '.join(extra)} go(es) on: a part is incomplete; "
                                       "rerun that process with --resume")
                break
            if not raw.endswith(b"\n"):
                raise PredictError(f"part {str(paths[part])!r} ends with a partial record: "
                                   "rerun that process with --resume")
            row = json.loads(raw)
            if row.pop(ROW_FIELD, None) != i:
                raise PredictError(f"part {str(paths[part])!r}: expected row {i} next; the "
                                   "parts do not belong to one run")
            chunk.append(row)
            if len(chunk) >= 1024:
                writer.write_chunk(chunk)
                chunk = []
            i += 1
        writer.write_chunk(chunk)
    finally:
        writer.close()
        for f in files:
            f.close()
    return i


# ------------------------------------------------------------------------------ the command

def _top_k(value: str) -> int | None:
    if value.lower() == "all":
        return None
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: a positive integer or 'all'") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a positive integer or 'all'")
    return k


def run(args: argparse.Namespace) -> int:
    """The `predict` subcommand."""
    if args.merge:
        n = merge_parts(args.merge, args.output, force=args.force)
        print(f"merged {n} record(s) into {args.output or 'stdout'}", file=sys.stderr)
        return 0
    if args.input is None or args.model is None:
        raise PredictError("predict needs --model M and an INPUT file (or --merge MANIFEST)")
    shard = _distributed_setup(args)
    output = args.output
    if shard.count > 1:
        if output in (None, STDIO):
            raise PredictError("a sharded run needs -o OUTPUT: each process writes "
                               "OUTPUT.part-P-of-N")
        output_format(output)  # fail now on an unusable extension
        output = shard.part_path(output)

    from .classifier import Classifier
    options: dict[str, Any] = {"window": args.chunk_size}
    if args.devices is not None:
        options["devices"] = args.devices
    if args.max_length is not None:
        options["max_length"] = args.max_length
    clf = Classifier.from_pretrained(args.model, dtype=args.dtype, **options)
    shard = dataclasses.replace(shard, block=clf.window)
    top_k = args.top_k
    if top_k is not None and top_k > len(clf.labels):
        top_k = None if len(clf.labels) > 1 else 1
    result = predict_file(clf, args.input, output, text_column=args.text_column,
                          input_fmt=args.input_format, top_k=top_k, logits=args.logits,
                          resume=args.resume, force=args.force, on_error=args.on_error,
                          chunk_size=args.chunk_size, progress=not args.no_progress, shard=shard)
    if shard.count > 1:
        if args.distributed:
            _barrier("flaxsent-predict-done")
            if shard.index == 0:
                write_manifest(args.output, shard, args.input)
        elif shard.index == 0:
            write_manifest(args.output, shard, args.input)
    note = f" ({result.skipped_errors} bad row(s) as error records)" if result.skipped_errors \
        else ""
    resumed = f", after {result.resumed_from} kept" if result.resumed_from else ""
    print(f"predicted {result.written} record(s){resumed} -> {output or 'stdout'}{note}",
          file=sys.stderr)
    return 0


def add_parser(subparsers: Any) -> None:
    """Add the `predict` subcommand to a `parser.add_subparsers()` object."""
    p = subparsers.add_parser(
        "predict", help="classify every row of a file (txt, jsonl, csv, tsv, parquet, -)",
        description="Classify every row of INPUT; write one record per row, in order.")
    p.add_argument("input", nargs="?", help="txt/jsonl/csv/tsv/parquet file, or - for stdin")
    p.add_argument("--model", "-m", help="converted flaxsent folder, HF folder or Hub id")
    p.add_argument("-o", "--output", default=None,
                   help="output file: .jsonl (default, stdout when absent), .csv or .parquet")
    p.add_argument("--text-column", default=None,
                   help="input column holding the text (default: text, else sentence)")
    p.add_argument("--input-format", default=None,
                   choices=["txt", "jsonl", "csv", "tsv", "parquet"],
                   help="input format when the extension does not say (stdin: txt)")
    p.add_argument("--top-k", type=_top_k, default=1,
                   help="labels per row: 1 (label, score) or K / 'all' (a labels list)")
    p.add_argument("--logits", action="store_true", help="add the raw logits to each record")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="a bad row stops the run (fail, default) or gets an error record (skip)")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run: keep OUTPUT's complete records, append the rest")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUTPUT")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--devices", type=int, default=None,
                   help="use the first N local devices (default: all)")
    p.add_argument("--max-length", type=int, default=None,
                   help="truncate texts to N tokens (default: the model's limit)")
    p.add_argument("--chunk-size", type=int, default=1024,
                   help="records per durable output write (default 1024)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g = p.add_argument_group("multi-process runs")
    g.add_argument("--distributed", action="store_true",
                   help="start jax.distributed; each process predicts rows i %% N == P")
    g.add_argument("--coordinator", default=None,
                   help="HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=int, default=None,
                   help="N processes (or JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None,
                   help="this process, 0..N-1 (or JAX_PROCESS_ID)")
    g.add_argument("--merge", metavar="MANIFEST", default=None,
                   help="join the parts of a finished sharded run into -o OUTPUT")
    p.set_defaults(func=run)
