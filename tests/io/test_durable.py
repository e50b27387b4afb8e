"""Durable writes (`flaxsent.io.durable`): a file or folder is the old one or the new one, whole;
each write is fsynced with its folder; failures are one line; new things get umask permissions."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from flaxsent.errors import CheckpointError, FlaxsentError, WriteError
from flaxsent.io import durable


@pytest.fixture
def fsyncs(monkeypatch) -> list[tuple[str, int]]:
    """Every fsync, as (kind, inode): kind 'file' or 'folder'; the real fsync still runs."""
    seen: list[tuple[str, int]] = []
    real = os.fsync

    def counted(fd):
        info = os.fstat(fd)
        seen.append(("folder" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
        real(fd)
    monkeypatch.setattr(os, "fsync", counted)
    return seen


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _fail_at_fsync(monkeypatch, exc: BaseException) -> None:
    def failing(fd):
        raise exc
    monkeypatch.setattr(os, "fsync", failing)


def _beside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# ------------------------------------------------------------------------------------------ files

@pytest.mark.parametrize("kind", ["bytes", "text", "json"])
def test_a_write_replaces_the_file_with_the_new_content(tmp_path, kind):
    path = tmp_path / "record"
    path.write_text("old")
    if kind == "bytes":
        durable.write_bytes(path, b"new\x00")
        assert path.read_bytes() == b"new\x00"
    elif kind == "text":
        durable.write_text(path, "néw")
        assert path.read_text(encoding="utf-8") == "néw"
    else:
        durable.write_json(path, {"a": 1, "p": Path("x")})
        assert path.read_text() == json.dumps({"a": 1, "p": "x"}, indent=2) + "\n"
    assert _beside(path) == ["record"]  # no temporary file left


@pytest.mark.parametrize("failure", [OSError(errno.EIO, "Input/output error"),
                                     KeyboardInterrupt()])
def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch,
                                                                  failure):
    """The data is written, then its fsync fails (or the run is interrupted there): the old file
    is what stays, whole."""
    path = tmp_path / "record.json"
    path.write_text("old")
    _fail_at_fsync(monkeypatch, failure)
    with pytest.raises(WriteError if isinstance(failure, OSError) else KeyboardInterrupt) as err:
        durable.write_json(path, {"new": True})
    assert path.read_text() == "old"
    assert _beside(path) == ["record.json"]
    if isinstance(failure, OSError):  # one line, naming the file and the OS's reason
        assert str(err.value) == f"cannot write {path}: Input/output error"


def test_a_failed_replace_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "record"
    path.write_text("old")

    def failing(a, b):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(WriteError, match="cannot write .*record: No space left on device"):
        durable.write_text(path, "new")
    assert path.read_text() == "old" and _beside(path) == ["record"]


def test_the_error_class_is_the_callers(tmp_path):
    with pytest.raises(CheckpointError, match="cannot write .*no-such-folder"):
        durable.write_text(tmp_path / "no-such-folder" / "f", "x", error=CheckpointError)


def test_a_write_fsyncs_the_file_then_its_folder(tmp_path, fsyncs):
    path = tmp_path / "record"
    durable.write_bytes(path, b"data")
    assert fsyncs == [("file", path.stat().st_ino), ("folder", tmp_path.stat().st_ino)]


def test_replacing_fsyncs_what_a_path_writer_wrote_and_moves_it_in(tmp_path, fsyncs):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"old")
    with durable.replacing(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_bytes(b"new")
        assert path.read_bytes() == b"old"  # nothing moves before the block ends
    assert path.read_bytes() == b"new" and _beside(path) == ["weights.bin"]
    assert fsyncs == [("file", path.stat().st_ino), ("folder", tmp_path.stat().st_ino)]


def test_a_killed_writes_leftover_names_the_file_it_was_for(tmp_path, monkeypatch):
    """What a kill between the temporary file's creation and its move leaves is recognised as
    the target's, so a caller that knows its file names knows their leftovers."""
    class Killed(BaseException):
        pass

    def killed(src, dst):
        raise Killed  # stands in for a kill: the move never happens
    monkeypatch.setattr(os, "replace", killed)
    monkeypatch.setattr(os, "remove", lambda path: None)  # and nothing is cleaned up
    with pytest.raises(Killed):
        durable.write_text(tmp_path / "run.json", "{}")
    (leftover,) = [p.name for p in tmp_path.iterdir()]
    assert durable.leftover_of(leftover) == "run.json"
    assert durable.leftover_of("run.json") is None
    assert durable.leftover_of(".run.json.tmp-xyz") is None


def test_replacing_keeps_the_old_file_when_the_block_fails(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"old")
    with pytest.raises(WriteError, match="cannot write .*weights.bin: File too large"), \
            durable.replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.EFBIG, "File too large")
    with pytest.raises(CheckpointError, match="the writer's own"), durable.replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise CheckpointError("the writer's own one-line error")
    assert path.read_bytes() == b"old" and _beside(path) == ["weights.bin"]


def test_a_new_file_gets_the_umasks_permissions(tmp_path, umask_027):
    durable.write_text(tmp_path / "new", "x")
    with durable.replacing(tmp_path / "other") as tmp:
        tmp.write_text("x")
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "other").stat().st_mode) == 0o640


# ---------------------------------------------------------------------------------------- folders

def _folder(path: Path, content: dict[str, str]) -> Path:
    path.mkdir()
    for name, text in content.items():
        (path / name).write_text(text)
    return path


def _content(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in path.iterdir()}


def test_a_new_folder_appears_whole_with_every_file_fsynced(tmp_path, fsyncs):
    dst = tmp_path / "out"
    with durable.atomic_output_dir(dst) as tmp:
        assert tmp.parent == tmp_path and not dst.exists()
        (tmp / "a").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b").write_text("2")
    assert (dst / "a").read_text() == "1" and (dst / "sub" / "b").read_text() == "2"
    assert _beside(dst) == ["out"]
    files = {("file", (dst / "a").stat().st_ino), ("file", (dst / "sub" / "b").stat().st_ino)}
    folders = {("folder", p.stat().st_ino) for p in (dst, dst / "sub", tmp_path)}
    assert set(fsyncs) == files | folders
    assert fsyncs[-1] == ("folder", tmp_path.stat().st_ino)  # the move itself, last


def test_a_failed_block_leaves_no_folder(tmp_path):
    dst = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), durable.atomic_output_dir(dst) as tmp:
        (tmp / "a").write_text("1")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_needs_force(tmp_path):
    dst = _folder(tmp_path / "out", {"a": "old"})
    with pytest.raises(WriteError, match=r"out: already exists \(pass --force to overwrite it\)"):
        with durable.atomic_output_dir(dst):
            pass
    assert _content(dst) == {"a": "old"}


def test_force_never_replaces_a_file_and_asks_the_callers_policy(tmp_path):
    (tmp_path / "file").write_text("keep")
    with pytest.raises(CheckpointError, match="file: exists and is not a folder"), \
            durable.atomic_output_dir(tmp_path / "file", force=True, error=CheckpointError):
        pass
    dst = _folder(tmp_path / "out", {"precious": "keep"})
    seen = []

    def refuse(folder: Path) -> None:
        seen.append(folder)
        raise FlaxsentError(f"{folder}: not mine to replace")
    with pytest.raises(FlaxsentError, match="not mine to replace"), \
            durable.atomic_output_dir(dst, force=True, check=refuse):
        pass
    assert seen == [dst] and _content(dst) == {"precious": "keep"}
    assert (tmp_path / "file").read_text() == "keep" and _beside(dst) == ["file", "out"]


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_force_swaps_in_the_new_folder(tmp_path, monkeypatch, swap):
    if swap == "two renames":
        monkeypatch.setattr(durable, "_exchange", lambda a, b: False)
    dst = _folder(tmp_path / "out", {"a": "old", "b": "old"})
    with durable.atomic_output_dir(dst, force=True) as tmp:
        (tmp / "a").write_text("new")
    assert _content(dst) == {"a": "new"}  # the new folder, not a mix of both
    assert _beside(dst) == ["out"]  # the old one removed


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_a_failed_swap_keeps_the_old_folder(tmp_path, monkeypatch, swap):
    dst = _folder(tmp_path / "out", {"a": "old"})
    rename = os.rename

    def failing_exchange(a, b):
        raise OSError(errno.EIO, "Input/output error", str(b))

    def failing_second_rename(a, b, *args, **kwargs):
        if ".out.tmp-" in str(a):  # the new folder moving into place
            raise OSError(errno.EIO, "Input/output error")
        return rename(a, b, *args, **kwargs)
    if swap == "exchange":
        monkeypatch.setattr(durable, "_exchange", failing_exchange)
    else:
        monkeypatch.setattr(durable, "_exchange", lambda a, b: False)
        monkeypatch.setattr(os, "rename", failing_second_rename)
    with pytest.raises(WriteError, match=r"out: cannot write here \(Input/output error\)"), \
            durable.atomic_output_dir(dst, force=True) as tmp:
        (tmp / "a").write_text("new")
    assert _content(dst) == {"a": "old"} and _beside(dst) == ["out"]


@pytest.mark.skipif(not hasattr(os, "O_DIRECTORY"), reason="POSIX folders")
def test_the_exchange_is_one_step_that_swaps_both_names(tmp_path):
    a = _folder(tmp_path / "a", {"f": "A"})
    b = _folder(tmp_path / "b", {"f": "B"})
    if not durable._exchange(a, b):
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this system or file system")
    assert (a / "f").read_text() == "B" and (b / "f").read_text() == "A"


def test_a_new_folder_gets_the_umasks_permissions(tmp_path, umask_027):
    plain = tmp_path / "plain"
    plain.mkdir()  # what any other program would create here under this umask
    with durable.atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "out").stat().st_mode == plain.stat().st_mode
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750


def test_an_unwritable_parent_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=r"file/out: cannot write here \(\w[^()]*\)$"), \
            durable.atomic_output_dir(tmp_path / "file" / "out"):
        pass
