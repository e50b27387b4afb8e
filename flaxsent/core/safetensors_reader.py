"""A plain safetensors reader (numpy, no torch) that checks everything the format requires.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (an object that
starts with `{`, maybe padded with spaces), then a byte buffer. Each header entry names a tensor
by its dtype, shape and `data_offsets` [begin, end) into the buffer; `__metadata__` is an
optional string-to-string map. The reader refuses, with one `CheckpointError` line naming the
file, whatever the format does not allow (as the reference implementation does): a header past
100 MB or past the file's end, JSON that is not one object (duplicate names and nesting too deep
for the parser included), an unknown dtype, a negative or non-integer dimension, a byte length
that is not dtype x shape, offsets that overlap, leave holes or run past the buffer. A sharded
index may only name files inside the model folder.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path, PurePosixPath
from typing import Any

import ml_dtypes
import numpy as np

from flaxsent.errors import CheckpointError

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit
METADATA = "__metadata__"
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def _bad(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt? "
                           f"{why})")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict; a name given twice is an error, not a silent choice."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the header names {key!r} twice")
        out[key] = value
    return out


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entries(path: Path, header: dict[str, Any], buffer_len: int,
             ) -> list[tuple[str, np.dtype, tuple[int, ...], int]]:
    """(name, dtype, shape, buffer offset) per tensor, after checking the header's entries."""
    entries = []
    spans = []
    for name, info in header.items():
        if name == METADATA:
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise _bad(path, f"{METADATA} is not a map of strings")
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise _bad(path, f"tensor {name!r} lacks dtype, shape or data_offsets")
        dtype = DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise _bad(path, f"tensor {name!r} has dtype {info['dtype']!r}, not one of "
                             f"{', '.join(DTYPES)}")
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(map(_is_count, shape)):
            raise _bad(path, f"tensor {name!r} has shape {shape!r}, not a list of "
                             "non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
                and offsets[0] <= offsets[1]):
            raise _bad(path, f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end] "
                             "with 0 <= begin <= end")
        begin, end = offsets
        if (end - begin) != math.prod(shape) * dtype.itemsize:
            raise _bad(path, f"tensor {name!r}: {end - begin} bytes for {info['dtype']} "
                             f"{tuple(shape)}")
        spans.append((begin, end, name))
        entries.append((name, dtype, tuple(shape), begin))
    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            what = "overlaps the tensor before it" if begin < covered else "leaves a gap before it"
            raise _bad(path, f"tensor {name!r} at bytes {begin}-{end} {what}")
        covered = end
    if covered != buffer_len:
        raise _bad(path, f"the tensors cover {covered} bytes of a {buffer_len}-byte buffer")
    return entries


def _header(path: Path, f: Any, size: int) -> tuple[dict[str, Any], int]:
    """The parsed header and the buffer's start offset."""
    head = f.read(8)
    if len(head) < 8:
        raise _bad(path, f"{size} bytes, less than the 8-byte header length")
    (n,) = struct.unpack("<Q", head)
    if n > min(size - 8, MAX_HEADER_BYTES):
        raise _bad(path, f"header of {n} bytes in a {size}-byte file (at most "
                         f"{MAX_HEADER_BYTES} allowed)")
    raw = f.read(n)
    if raw[:1] != b"{":
        raise _bad(path, "the header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_object)
    except RecursionError:
        raise _bad(path, "the header nests too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a name given twice
        raise _bad(path, f"header: {str(e).splitlines()[0]}") from None
    if not isinstance(header, dict):
        raise _bad(path, "the header is not a JSON object")
    return header, 8 + n


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays (no torch), errors naming the file.

    Read tensor by tensor with plain reads rather than through a memory map: mapped pages count
    in the process's resident memory, which would double its peak while a model loads.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header, start = _header(path, f, size)
            tensors = {}
            for name, dtype, shape, offset in _entries(path, header, size - start):
                f.seek(start + offset)
                count = math.prod(shape)
                array = np.fromfile(f, dtype=dtype, count=count)
                if array.size != count:  # the file shrank while being read
                    raise _bad(path, f"tensor {name!r} ends past the end of the file")
                tensors[name] = array.reshape(shape)
            return tensors
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror or e})") from None


def shard_files(folder: Path, index: Path) -> dict[str, list[str]]:
    """The tensor names each shard file of a sharded index holds (shard name -> names); a file
    named outside the folder (absolute, or through `..`) is an error."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except RecursionError:
        raise CheckpointError(f"{index}: not a valid safetensors index (nested too deeply)") \
            from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{index}: not a valid safetensors index ({reason})") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: weight_map is not an object of tensor -> file")
    shards: dict[str, list[str]] = {}
    for tensor, name in weight_map.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"{index}: tensor {tensor!r} maps to {name!r}, not a file name")
        parts = PurePosixPath(name).parts
        if PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
            raise CheckpointError(f"{index}: shard {name!r} is outside the model folder "
                                  f"{folder}; shards must be files in it")
        shards.setdefault(name, []).append(tensor)
    return shards


def read_sharded(folder: Path, index: Path) -> dict[str, np.ndarray]:
    """Every tensor of a sharded safetensors checkpoint; each must be in the shard the index
    names for it, and in no other."""
    state: dict[str, np.ndarray] = {}
    for name, expected in sorted(shard_files(folder, index).items()):
        tensors = read_safetensors(folder / name)
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise CheckpointError(f"{folder / name}: lacks {missing[0]!r}, which {index.name} "
                                  f"places there ({len(missing)} missing)")
        extra = sorted(set(tensors) - set(expected))
        if extra:  # the index places each tensor in one shard: so in no two
            raise CheckpointError(f"{folder / name}: holds {extra[0]!r}, which {index.name} "
                                  "places in another shard or nowhere")
        state.update(tensors)
    return state
