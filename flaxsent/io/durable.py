"""Durable writes, in one place: a file or a folder is either the old one or the new one, whole,
after a kill or a power cut, never half of each.

A file is written to a temporary name in its own folder, flushed and fsynced, moved over the
target with `os.replace` (atomic on POSIX), and then the folder is fsynced so that the move
itself survives a power cut. A folder (`atomic_output_dir`) is built under a temporary name
beside its destination, every file in it fsynced, and moved into place whole; `--force` swaps an
existing folder out in one renameat2(RENAME_EXCHANGE) where Linux offers it. What may be
replaced is the caller's policy (`check`): this module knows nothing of what a folder holds.

Failures are one line: `error` (default `WriteError`) with the OS's words, never a traceback.
Every fsync goes through `os.fsync` (looked up at each call: tests count them).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flaxsent.errors import WriteError

ErrorType = Callable[[str], Exception]


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _sibling(dst: Path, kind: str) -> Path:
    """A fresh hidden name beside `dst`, e.g. `.model.tmp-1f2e...`."""
    return dst.parent / f".{dst.name}.{kind}-{secrets.token_hex(8)}"


_LEFTOVER = re.compile(r"\.(.+)\.(?:tmp|old)-[0-9a-f]{16}")  # a `_sibling` name


def leftover_of(name: str) -> str | None:
    """The name whose durable write a kill left `name` behind for (`.NAME.tmp-HEX`), else
    None: so a caller that knows the names it writes knows their leftovers too."""
    match = _LEFTOVER.fullmatch(name)
    return match[1] if match else None


def fsync_folder(folder: str | os.PathLike) -> None:
    """fsync a folder, so that the names made, moved or removed in it survive a power cut. A
    no-op where folders cannot be opened (Windows) or the file system does not sync them."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows, or a folder we may write but not read: nothing to sync with
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    """fsync a file written by someone else's code (a library that takes a path)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, error: ErrorType = WriteError) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the block to write (for code that takes a path,
    e.g. safetensors' `save_file`); when the block succeeds it is fsynced and replaces `path`,
    and the folder is fsynced. On failure `path` is untouched and the temporary file removed;
    an OSError of the block or of the move becomes `error("cannot write PATH: reason")`."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise error(f"cannot write {path}: {_reason(e)}") from None
        raise
    try:
        fsync_folder(path.parent)
    except OSError as e:
        raise error(f"cannot write {path}: {_reason(e)}") from None


def write_bytes(path: str | os.PathLike, data: bytes, *, error: ErrorType = WriteError) -> None:
    """Write `data` to `path` atomically and durably (all of it or, after any failure or kill,
    the old file). A new file gets the permissions any new file gets (the umask's)."""
    with replacing(path, error=error) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)


def write_text(path: str | os.PathLike, text: str, *, error: ErrorType = WriteError) -> None:
    """`write_bytes` of `text` as UTF-8."""
    write_bytes(path, text.encode("utf-8"), error=error)


def write_json(path: str | os.PathLike, value: Any, *, error: ErrorType = WriteError) -> None:
    """`write_bytes` of `value` as indented JSON and a newline (what is not JSON as its str)."""
    write_text(path, json.dumps(value, indent=2, default=str) + "\n", error=error)


# ------------------------------------------------------------------------------------- folders

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the
    system or file system cannot, so the caller falls back to two renames."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:  # glibc before 2.28, musl
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if done == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not offered here
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, deepest first, `folder` last."""
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _fsync_path(Path(root, name))
        fsync_folder(root)


@contextlib.contextmanager
def atomic_output_dir(dst: str | os.PathLike, force: bool = False, *,
                      check: Callable[[Path], None] | None = None,
                      error: ErrorType = WriteError) -> Iterator[Path]:
    """Yield a temporary folder beside `dst` that becomes `dst` only if the block succeeds.

    An existing `dst` is replaced only with `force`, only if it is a folder, and only if
    `check(dst)` (the caller's policy of what may be replaced) raises nothing. The swap is one
    renameat2(RENAME_EXCHANGE) where Linux offers it (a kill leaves the old folder or the new
    one), else two renames with the old folder put back if the second fails. Every file of the
    new folder is fsynced before it moves in, and the parent folder after. The new folder gets
    the permissions any new folder gets (the umask's), not a temporary folder's 0700.
    Failures are one-line `error`s: "DST: already exists (pass --force to overwrite it)",
    "DST: exists and is not a folder", "DST: cannot write here (reason)".
    """
    dst = Path(dst).expanduser()
    replacing_dst = dst.exists() or dst.is_symlink()
    if replacing_dst and not force:
        raise error(f"{dst}: already exists (pass --force to overwrite it)")
    if replacing_dst:
        if dst.is_symlink() or not dst.is_dir():
            raise error(f"{dst}: exists and is not a folder")
        if check is not None:
            check(dst)
    tmp = _sibling(dst, "tmp")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        raise error(f"{dst}: cannot write here ({_reason(e)})") from None
    try:
        yield tmp
    except BaseException:  # the block's own error, as it was raised
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        _fsync_tree(tmp)
        if replacing_dst and _exchange(tmp, dst):  # one atomic step: a kill leaves old or new
            fsync_folder(dst.parent)
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        elif replacing_dst:  # no renameat2: two renames, the old folder back if the second fails
            old = _sibling(dst, "old")
            os.rename(dst, old)
            try:
                os.rename(tmp, dst)
            except OSError:
                os.rename(old, dst)
                raise
            shutil.rmtree(old, ignore_errors=True)
            fsync_folder(dst.parent)
        else:
            os.rename(tmp, dst)
            fsync_folder(dst.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise error(f"{dst}: cannot write here ({_reason(e)})") from None
