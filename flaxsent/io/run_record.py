"""What a run depends on, recorded when it starts, so a resumed run can refuse to mix two runs.

A fingerprint is a flat JSON-able dict: the options that change the result, each input file's
size, modification time and a hash of its first MiB, and the model's identity (its folder,
config and weight files). `differences` names what changed between two of them, and
`check_or_record` is the one `--resume` guard (of predict and train): on resume it compares the
recorded run with this one and refuses a different one; otherwise it records this one durably.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flaxsent.errors import FlaxsentError, WriteError
from flaxsent.io import durable

HEAD_BYTES = 1 << 20  # hash this much of each input: enough to tell files apart, cheap on TBs


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Size, mtime (ns) and the SHA-256 of the first MiB of a file."""
    path = Path(path)
    stat = path.stat()
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "head_sha256": head}


def model_identity(folder: str | os.PathLike) -> dict[str, Any]:
    """The model folder, its config and the size and mtime of its weight files."""
    folder = Path(folder)
    config = (folder / "config.json").read_bytes() if (folder / "config.json").is_file() else b""
    weights = {p.name: [p.stat().st_size, p.stat().st_mtime_ns]
               for p in sorted(folder.iterdir())
               if p.suffix in (".safetensors", ".bin", ".onnx") and p.is_file()}
    return {"path": str(folder.resolve()), "config_sha256": hashlib.sha256(config).hexdigest(),
            "weights": weights}


def write_record(path: str | os.PathLike, info: Mapping[str, Any], *,
                 error: durable.ErrorType = WriteError) -> None:
    """Write `info` as JSON to `path` atomically and durably (`flaxsent.io.durable`): a record
    half written is never read back. A failure is `error("cannot write PATH: reason")`."""
    durable.write_json(path, dict(info), error=error)


def read_record(path: str | os.PathLike, *, error: durable.ErrorType = FlaxsentError,
                wrote: str | os.PathLike | None = None) -> dict[str, Any]:
    """The run record at `path`, or one line (`error`) naming the file and saying to start
    afresh with --force when it is missing, unreadable, empty, torn, not JSON or not an object.
    `wrote`: what the recorded run wrote (named when the record is missing)."""
    afresh = "start afresh with --force"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        what = f"the run that wrote {wrote}" if wrote is not None else "a run"
        raise error(f"--resume: no {path} records {what}, so it cannot be continued safely: "
                    f"{afresh}") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise error(f"--resume: {path} is unreadable ({reason}): {afresh}") from None
    if not text.strip():
        raise error(f"--resume: {path} is unreadable (empty): {afresh}")
    try:
        recorded = json.loads(text)
    except ValueError as e:  # torn, or not JSON at all
        raise error(f"--resume: {path} is unreadable (not JSON: {e}): {afresh}") from None
    if not isinstance(recorded, dict):
        raise error(f"--resume: {path} is unreadable (a JSON {type(recorded).__name__}, not a "
                    f"run record): {afresh}")
    return recorded


def check_or_record(path: str | os.PathLike, identity: Mapping[str, Any], *, resume: bool,
                    refusal: Callable[[str], str], error: durable.ErrorType = FlaxsentError,
                    compare: Callable[[dict[str, Any], dict[str, Any]], list[str]] | None = None,
                    wrote: str | os.PathLike | None = None) -> None:
    """The `--resume` guard of predict and train.

    On `resume`, read the record at `path` (`read_record`: a missing, torn, empty or foreign
    record is one line) and refuse a run whose `identity` differs from it under `compare`
    (default `differences`) with `error(refusal("what differs; what else differs"))`; a JSON
    object that shares no key with `identity` is no record of this kind of run. Otherwise
    record `identity` at `path` durably (a failure: WriteError "cannot write PATH: reason").
    """
    if not resume:
        write_record(path, identity)
        return
    recorded = read_record(path, error=error, wrote=wrote)
    current = json.loads(json.dumps(identity, default=str))  # as it reads back from the record
    if not set(recorded) & set(current):
        raise error(f"--resume: {path} is unreadable (a JSON object, but no run record of this "
                    "kind): start afresh with --force")
    diff = (compare or differences)(recorded, current)
    if diff:
        raise error(refusal("; ".join(diff)))


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'key: recorded -> current' for every key whose value differs (files by their parts)."""
    out = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key), current.get(key)
        if _canonical(old) == _canonical(new):
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            parts = [k for k in sorted(set(old) | set(new)) if _canonical(old.get(k)) !=
                     _canonical(new.get(k))]
            out.append(f"{key} ({', '.join(parts)} changed)")
        else:
            out.append(f"{key}: {old!r} -> {new!r}")
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
