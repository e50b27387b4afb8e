"""What a run depends on, recorded when it starts, so a resumed run can refuse to mix two runs.

A fingerprint is a flat JSON-able dict: the options that change the result, each input file's
size, modification time and a hash of its first MiB, and the model's identity (its folder,
config and weight files). `differences` names what changed between two of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
               if p.suffix in (".safetensors", ".bin") and p.is_file()}
    return {"path": str(folder.resolve()), "config_sha256": hashlib.sha256(config).hexdigest(),
            "weights": weights}


def write_record(path: str | os.PathLike, info: Mapping[str, Any]) -> None:
    """Write `info` as JSON to `path` atomically and durably (a temporary file, then a rename):
    a record half written is never read back."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
