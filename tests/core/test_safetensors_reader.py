"""The plain safetensors reader: what the format forbids is one CheckpointError line, never a
wrong load or another exception; the sharded index stays inside the model folder."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import deserialize

from flaxsent.cli import main
from flaxsent.core import checkpoint as ckpt
from flaxsent.core.safetensors_reader import DTYPES
from flaxsent.errors import CheckpointError


def safetensors_bytes(header: dict | str | bytes, data: bytes = b"",
                      header_len: int | None = None) -> bytes:
    """A file made by hand: header length, header, buffer."""
    raw = header if isinstance(header, bytes) else (
        header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data


def load(tmp_path: Path, content: bytes) -> dict[str, np.ndarray]:
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    return ckpt.read_safetensors(path)


def tensor(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize("header, data, why", [
    # np.fromfile's count of -1 read the rest of the file as the tensor
    ({"t": tensor("F32", [-1], 4, 0)}, bytes(16), "shape"),
    ({"a": tensor("F32", [2], 0, 8), "b": tensor("F32", [2], 0, 8)}, bytes(8), "overlaps"),
    ({"a": tensor("F32", [1], 0, 4), "b": tensor("F32", [1], 8, 12)}, bytes(12), "gap"),
    ({"a": tensor("F32", [1], 0, 4)}, bytes(8), "cover 4 bytes of a 8-byte buffer"),
    ({"a": tensor("F32", [2.0], 0, 8)}, bytes(8), "shape"),
    ({"a": tensor("F32", [True], 0, 4)}, bytes(4), "shape"),
    ({"a": tensor("C64", [1], 0, 8)}, bytes(8), "dtype 'C64'"),
    ({"a": tensor("F32", [1], 0, 4), "__metadata__": {"n": 1}}, bytes(4), "map of strings"),
    ('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {}}', bytes(4),
     "names 'a' twice"),
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", b"", "nests too deeply"),
    ("[]", b"", "not a JSON object"),
], ids=["negative-dim", "overlap", "gap", "trailing-bytes", "float-dim", "bool-dim",
        "unknown-dtype", "metadata-not-strings", "duplicate-name", "deep-nesting", "array"])
def test_what_the_format_forbids_is_refused(tmp_path, header, data, why):
    with pytest.raises(CheckpointError, match=rf"x\.safetensors: not a readable .*{why}"):
        load(tmp_path, safetensors_bytes(header, data))


def test_header_over_the_format_limit_is_refused_unread(tmp_path):
    pad = 100_000_001 - len('{"__metadata__": {"x": ""}}')
    header = '{"__metadata__": {"x": "' + "a" * pad + '"}}'
    with pytest.raises(CheckpointError, match="header of 100000001 bytes.*at most 100000000"):
        load(tmp_path, safetensors_bytes(header))


def test_a_valid_file_of_every_dtype_loads_as_the_library_loads_it(tmp_path):
    import torch
    from safetensors.torch import load as reference
    from safetensors.torch import save
    gen = torch.Generator().manual_seed(0)
    dtypes = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]
    tensors = {str(d): (torch.rand((2, 3), generator=gen) * 100).to(d) for d in dtypes}
    tensors["empty"] = torch.zeros((0, 4))
    content = save(tensors, metadata={"format": "pt"})
    ours, theirs = load(tmp_path, content), reference(content)
    assert set(ours) == set(theirs)
    for name, t in theirs.items():
        assert ours[name].shape == tuple(t.shape)
        assert ours[name].dtype.itemsize == t.element_size()
        raw = t.view(torch.uint8) if t.dtype == torch.bool else t.view(
            {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
        assert ours[name].tobytes() == raw.numpy().tobytes()
    assert ours["torch.bfloat16"].dtype.name == "bfloat16"


def sharded_folder(tiny_hf: Path, folder: Path, name: str) -> None:
    """tiny_hf's folder with its weights as one shard that the index calls `name`."""
    shutil.copytree(tiny_hf, folder)
    keys = ckpt.read_safetensors(folder / "model.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": dict.fromkeys(keys, name)}))


@pytest.mark.parametrize("name", ["../outside/model.safetensors", "ABSOLUTE"])
def test_a_sharded_index_cannot_reach_outside_the_folder(tiny_hf, tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(tiny_hf / "model.safetensors", outside / "model.safetensors")
    if name == "ABSOLUTE":
        name = str(outside / "model.safetensors")
    folder = tmp_path / "model"
    sharded_folder(tiny_hf, folder, name)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="is outside the model folder"):
        ckpt.read_torch_state_dict(folder)


def test_a_shard_must_hold_what_the_index_places_there(tiny_hf, tmp_path):
    folder = tmp_path / "model"
    sharded_folder(tiny_hf, folder, "model-1.safetensors")
    (folder / "model.safetensors").rename(folder / "model-1.safetensors")
    state = ckpt.read_torch_state_dict(folder)
    assert set(state) == set(ckpt.read_safetensors(folder / "model-1.safetensors"))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["not.in.the.shard"] = "model-1.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="lacks 'not.in.the.shard'"):
        ckpt.read_torch_state_dict(folder)


def test_cli_says_one_line_for_a_header_nested_too_deeply(capsys, tiny_hf, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_hf, src)
    (src / "model.safetensors").write_bytes(
        safetensors_bytes('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"))
    capsys.readouterr()
    assert main(["convert", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "nests too deeply" in err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ properties (hypothesis)
# Whatever the bytes, the reader gives a correct load or one CheckpointError line; a load agrees
# with the reference parser (safetensors' own Rust `deserialize`), and a file the reference
# accepts in the dtypes flaxsent reads, flaxsent reads too.

PROPERTY = settings(max_examples=150, deadline=2000, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
NAMES = {np.dtype(v).str: k for k, v in DTYPES.items() if k != "BF16"}


def read_both(tmp_path: Path, content: bytes) -> dict | None:
    """Read `content` with flaxsent and with the reference; check they agree; flaxsent's load."""
    try:
        ours = load(tmp_path, content)
    except CheckpointError as e:
        assert "\n" not in str(e), str(e)
        ours = None
    try:
        theirs = {name: info for name, info in deserialize(content)}
    except Exception:  # noqa: BLE001 - the reference's error types are its own
        theirs = None
    if ours is not None:
        assert theirs is not None, "flaxsent loaded a file the format forbids"
        assert set(ours) == set(theirs)
        for name, info in theirs.items():
            assert NAMES[ours[name].dtype.str] == info["dtype"]
            assert list(ours[name].shape) == info["shape"]
            assert ours[name].tobytes() == bytes(info["data"])
    elif theirs is not None:
        header = content[8:8 + struct.unpack("<Q", content[:8])[0]]
        pairs: list = []
        json.loads(header, object_pairs_hook=lambda p: pairs.extend(p) or dict(p))
        names = [k for k, _ in pairs]
        assert len(names) != len(set(names)) or any(
            i["dtype"] not in DTYPES for i in theirs.values()), "a valid file was refused"
    return ours


ARRAYS = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.tuples(st.sampled_from(sorted(set(NAMES) - {"|b1"})),
              st.lists(st.integers(0, 3), max_size=3)),
    max_size=4)


def valid_file(spec: dict) -> bytes:
    from safetensors.numpy import save
    rng = np.random.default_rng(len(spec))
    arrays = {name: rng.integers(0, 100, shape).astype(dtype)
              for name, (dtype, shape) in spec.items()}
    return bytes(save(arrays, metadata={"format": "pt"}))


@PROPERTY
@given(st.binary(max_size=200) | st.tuples(st.integers(0, 300), st.binary(max_size=300)).map(
    lambda t: struct.pack("<Q", t[0]) + t[1]))
def test_property_random_bytes(tmp_path, content):
    read_both(tmp_path, content)


@PROPERTY
@given(ARRAYS, st.data())
def test_property_mutated_valid_files(tmp_path, spec, data):
    content = bytearray(valid_file(spec))
    assert read_both(tmp_path, bytes(content)) is not None
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length"]))
    at = data.draw(st.integers(0, len(content)))
    if kind == "flip" and at < len(content):
        content[at] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        del content[at:]
    elif kind == "insert":
        content[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    elif kind == "delete":
        del content[at:at + data.draw(st.integers(1, 8))]
    else:
        content[:8] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    read_both(tmp_path, bytes(content))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
                    | st.text(max_size=6) | st.sampled_from(list(DTYPES) + ["F8_E4M3", "C64"]),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)
ENTRY = st.fixed_dictionaries({
    "dtype": st.sampled_from(list(DTYPES) + ["F8_E4M3", "X"]) | JSON,
    "shape": st.lists(st.integers(-3, 4), max_size=3) | JSON,
    "data_offsets": st.lists(st.integers(-8, 40), min_size=2, max_size=2) | JSON})


@PROPERTY
@given(st.dictionaries(st.text(max_size=4), ENTRY | JSON, max_size=4), st.binary(max_size=48))
def test_property_random_headers(tmp_path, header, data):
    read_both(tmp_path, safetensors_bytes(json.dumps(header).encode(), data))
