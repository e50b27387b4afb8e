"""Multi-process `flaxsent predict`: which rows each process owns, the manifest, and the merge.

The input's rows are cut into blocks of `block` rows (whole classifier windows) and the blocks are
dealt out in turn: process P of N predicts blocks P, P + N, P + 2N, ... into
`OUTPUT.part-P-of-N` (JSONL, each row with its input index in `_row`). Because a block is a whole
number of windows, each process forms exactly the batches one process would, so the merged
output is byte-identical to a single-process run. Each process, as the last thing it does,
records its part's completion in `PART.done.json` (rows written, input rows seen; withdrawn when
the part is started again); process 0 writes `OUTPUT.manifest.json`, which only names the parts.
`merge_parts` joins the parts in input order, and only when every part is recorded complete and
every input row 0..N-1 is present exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from flaxsent.errors import ShardError
from flaxsent.io import durable
from flaxsent.io.readers import STDIO
from flaxsent.io.writers import (
    PARTIAL_SUFFIX,
    ChunkedOutput,
    ParquetWriter,
    open_writer,
    output_format,
)

ROW_FIELD = "_row"
MANIFEST_SUFFIX = ".manifest.json"
DONE_SUFFIX = ".done.json"  # beside each part: written last, when the part is complete
MERGING_SUFFIX = ".merging"  # beside a merge output while it is written


@dataclasses.dataclass(frozen=True)
class Shard:
    """Which rows this process predicts: whole blocks of `block` rows, dealt out in turn."""

    index: int
    count: int
    block: int  # rows per block: a multiple of the classifier's window

    def part_path(self, output: str) -> str:
        """This process's part of `output`."""
        return f"{output}.part-{self.index}-of-{self.count}"

    def owns(self, row: int) -> bool:
        """Whether input row `row` (0-based) is this shard's."""
        return (row // self.block) % self.count == self.index

    def global_row(self, k: int) -> int:
        """The input row of this shard's k-th row."""
        blocks, within = divmod(k, self.block)
        return (blocks * self.count + self.index) * self.block + within

    def rows_of(self, total: int) -> int:
        """How many of `total` input rows this shard owns."""
        first_rows = range(self.index * self.block, total, self.count * self.block)
        return sum(min(self.block, total - b) for b in first_rows)


def process_shard(distributed: bool, coordinator: str | None, num_processes: int | None,
                  process_id: int | None) -> tuple[int, int]:
    """(this process's index, process count): from jax.distributed (started here when
    `distributed`), else from the options or JAX_NUM_PROCESSES / JAX_PROCESS_ID, else (0, 1)."""
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    n = num_processes if num_processes is not None else env.get("JAX_NUM_PROCESSES")
    pid = process_id if process_id is not None else env.get("JAX_PROCESS_ID")
    if distributed:
        if coordinator is None or n is None or pid is None:
            raise ShardError("--distributed needs --coordinator HOST:PORT, --num-processes N "
                             "and --process-id P (or JAX_COORDINATOR_ADDRESS, "
                             "JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
        import jax
        try:
            jax.distributed.initialize(coordinator_address=coordinator, num_processes=int(n),
                                       process_id=int(pid))
        except Exception as err:  # connection refused, timeout, already initialized
            raise ShardError(f"jax.distributed.initialize({coordinator}, {n}, {pid}) "
                             f"failed: {err}") from None
        index, count = jax.process_index(), jax.process_count()
    elif n is None and pid is None:
        return 0, 1
    else:
        try:
            index, count = int(pid if pid is not None else 0), int(n if n is not None else 1)
        except ValueError:
            raise ShardError(f"--num-processes {n!r} / --process-id {pid!r}: "
                             "must be integers") from None
    if count < 1 or not 0 <= index < count:
        raise ShardError(f"--process-id {index} must be from 0 to --num-processes - 1 "
                         f"({count - 1})")
    return index, count


def finish_part(shard: Shard, output: str, input_path: str, *, wait: bool) -> str | None:
    """After this process's part: wait for every process (when `wait`, under jax.distributed),
    then process 0 writes the manifest; returns its path (None on other processes)."""
    if wait:
        import jax
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("flaxsent-predict-done")
    return write_manifest(output, shard, input_path) if shard.index == 0 else None


def write_manifest(output: str, shard: Shard, input_path: str) -> str:
    """Write `OUTPUT.manifest.json` naming the parts (relative to the manifest's folder); it
    claims nothing about their completion, which each part's `.done.json` records."""
    path = output + MANIFEST_SUFFIX
    parts = [Path(dataclasses.replace(shard, index=i).part_path(output)).name
             for i in range(shard.count)]
    durable.write_json(path, {"format": "flaxsent-predict-parts", "version": 2,
                              "input": input_path, "output": Path(output).name,
                              "num_processes": shard.count, "parts": parts,
                              "block": shard.block, "row_field": ROW_FIELD,
                              "done_suffix": DONE_SUFFIX}, error=ShardError)
    return path


def withdraw_done(part: str) -> None:
    """Remove a part's completion record before the part is written again, so a rerun that
    stops early never leaves an earlier run's claim behind."""
    try:
        os.remove(part + DONE_SUFFIX)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ShardError(f"cannot remove {part + DONE_SUFFIX}: {e.strerror or e}") from None


def record_done(part: str, shard: Shard, rows: int, input_rows: int,
                layout: dict[str, Any]) -> None:
    """Record that `part` is complete: it holds `rows` records and its process read all
    `input_rows` rows of the input; `layout` says how a merge lays the records out as one
    process would (csv/parquet columns, None: from the first chunk; errors_possible;
    chunk_size). Written last, atomically."""
    durable.write_json(part + DONE_SUFFIX, {"part": Path(part).name, "process": shard.index,
                                            "num_processes": shard.count, "block": shard.block,
                                            "rows": rows, "input_rows": input_rows,
                                            "layout": layout}, error=ShardError)


def _completion(path: Path, shard: Shard) -> dict[str, Any]:
    """A complete part's record (its `input_rows`, its `layout`), or a ShardError naming the
    part: not finished, unreadable, from other process options, or holding other than its
    rows' count."""
    done = Path(str(path) + DONE_SUFFIX)
    again = f"run process {shard.index} of {shard.count} (again, with --resume) before merging"
    if not done.is_file():
        raise ShardError(f"part {str(path)!r} is not complete (no {done.name}): {again}")
    try:
        info = json.loads(done.read_text(encoding="utf-8"))
        rows, total = int(info["rows"]), int(info["input_rows"])
        same = (int(info["process"]), int(info["num_processes"]), int(info["block"])) == (
            shard.index, shard.count, shard.block)
        layout = info["layout"]
        if not (isinstance(layout["errors_possible"], bool) and int(layout["chunk_size"]) > 0
                and (layout["columns"] is None or isinstance(layout["columns"], list))):
            raise ValueError(f"an unusable layout {layout!r}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ShardError(f"{str(done)!r} is not a readable completion record ({err}): "
                         f"{again}") from None
    if not same:
        raise ShardError(f"part {str(path)!r} was written by another process layout than the "
                         "manifest's: the parts do not belong to one run")
    if rows != shard.rows_of(total):
        raise ShardError(f"part {str(path)!r} records {rows} row(s), but process "
                         f"{shard.index} owns {shard.rows_of(total)} of the {total} input rows: "
                         f"{again}")
    return info


def merge_parts(manifest_path: str, output: str | None, *, force: bool = False,
                csv_safe: bool = True) -> int:
    """Join the parts a manifest lists into `output` in input order, dropping `_row`; returns
    the number of records. Refuses unless every part is recorded complete and the parts hold
    every input row 0..N-1 exactly once, interleaved as dealt (row i in part (i // block) % N)."""
    try:
        manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
        names = list(manifest["parts"])
        n = int(manifest["num_processes"])
        block = int(manifest["block"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ShardError(f"{manifest_path!r} is not a readable predict manifest: {err}") \
            from None
    if len(names) != n or n < 1:
        raise ShardError(f"{manifest_path!r}: lists {len(names)} part(s) for {n} processes")
    if output not in (None, STDIO) and os.path.exists(output) and not force:
        raise ShardError(f"output {output!r} already exists: pass --force to overwrite it")
    folder = Path(manifest_path).parent
    paths = [folder / name for name in names]
    for p in paths:
        if not p.is_file():
            raise ShardError(f"part {str(p)!r} listed in {manifest_path!r} does not exist")
    done = [_completion(p, Shard(i, n, block)) for i, p in enumerate(paths)]
    total, layout = int(done[0]["input_rows"]), done[0]["layout"]
    if any(int(d["input_rows"]) != total for d in done):
        seen = ", ".join(f"part {i}: {d['input_rows']}" for i, d in enumerate(done))
        raise ShardError(f"the parts saw inputs of different lengths ({seen} rows): the input "
                         "changed between processes; rerun them all with --force")
    for key in ("columns", "errors_possible"):
        if any(d["layout"][key] != layout[key] for d in done):
            raise ShardError(f"the parts were written with different options ({key} differ): "
                             "they do not belong to one run; rerun them all with --force")
    fmt = output_format(output)
    to_file = output not in (None, STDIO)
    # a file output is written beside it and moved into place whole: a merge that fails or is
    # killed leaves no partial output behind, so a rerun needs no --force
    target = f"{output}{MERGING_SUFFIX}" if to_file else output
    files = [open(p, "rb") for p in paths]
    writer = open_writer(target, fmt, csv_safe=csv_safe)
    uniform = fmt in ("csv", "parquet")
    columns = layout["columns"] if uniform else None
    # as one process: a fixed-column output holds its first chunk for a good row
    chunks = ChunkedOutput(writer, int(layout["chunk_size"]), uniform=uniform, columns=columns,
                           hold=fmt == "parquet" or (uniform and columns is None))
    lines = [0] * n  # lines read from each part
    i = 0
    ok = False
    try:
        while i < total:
            part = (i // block) % n
            raw = files[part].readline()
            if not raw:
                raise ShardError(f"part {str(paths[part])!r} ends before input row {i} of "
                                 f"{total}: the part is incomplete; rerun process {part} "
                                 "with --resume")
            if not raw.endswith(b"\n"):
                raise ShardError(f"part {str(paths[part])!r} ends with a partial record: "
                                 "rerun that process with --resume")
            try:
                row = json.loads(raw)
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__}, not an object")
            except (ValueError, RecursionError) as err:  # JSON, UTF-8 or nesting
                where = f"{paths[part]}, line {lines[part] + 1}"
                raise ShardError(f"{where}: not a predict record ({str(err).splitlines()[0]}): "
                                 "rerun that process's part with --force") from None
            lines[part] += 1
            if row.pop(ROW_FIELD, None) != i:
                raise ShardError(f"part {str(paths[part])!r}: expected row {i} next; the "
                                 "parts do not belong to one run")
            good = "error" not in row
            if layout["errors_possible"] and good:  # a part's good row carries its line
                if uniform:
                    row["error"] = ""
                else:
                    row.pop("line", None)  # a JSONL output's good records have none
            chunks.add(row, typed=good)
            i += 1
        extra = [str(paths[j]) for j in range(n) if files[j].readline()]
        if extra:
            raise ShardError(f"{', '.join(extra)} go(es) on past the {total} input rows: the "
                             "parts do not belong to one run")
        chunks.flush()
        ok = True
    finally:
        for f in files:
            f.close()
        if ok:
            writer.close()
            if to_file:
                os.replace(target, output)
                durable.fsync_folder(Path(output).parent)  # the rename itself survives a crash
        else:  # the partial merge goes; the parts stay as they were
            if isinstance(writer, ParquetWriter):
                writer.close(keep_partial=True)
            else:
                writer.close()
            if to_file:
                for leftover in (target, target + PARTIAL_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(leftover)
    return writer.rows_written
