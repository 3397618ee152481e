"""Durable file writes. Every failure names the path and the reason; nothing fails silently.

This module exists because of the original bug: a save that failed (makedirs('') on a bare file name) was
swallowed, and the index was silently rebuilt on every operation.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ltms.errors import StorageError


def ensure_directory(path: Path) -> None:
    """Create `path` and any missing parents (each owner-only) and prove it is writable with a probe file."""
    missing = []
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    # One by one: mkdir(parents=True) gives the parents it creates the umask's mode (0777 under umask 000).
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile by another process, or not a directory: checked below
        except OSError as exc:
            raise StorageError("create directory", directory, exc.strerror or exc) from exc
    if not path.is_dir():
        raise StorageError("use directory", path, "it exists but is not a directory")
    reason = unwritable_reason(path)
    if reason is not None:
        raise StorageError("write to directory", path, reason)


def unwritable_reason(directory: Path) -> str | None:
    """Why a file cannot be created in `directory`, or None if it can. Writing a probe file is the only test
    that holds for root (who ignores mode bits) and for read-only mounts alike."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".ltmc-probe-"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def fsync(fd: int) -> None:
    """`os.fsync` under LTMC's own name: the one place a test injects a failing fsync into LTMC's writes (patching
    `os.fsync` would fail every fsync in the process)."""
    os.fsync(fd)


def fsync_directory(path: Path) -> None:
    """Make a rename inside `path` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise StorageError("open directory", path, exc.strerror or exc) from exc
    try:
        fsync(fd)
    except OSError as exc:
        raise StorageError("fsync directory", path, exc.strerror or exc) from exc
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yield a file that replaces `path` only if the whole block succeeds.

    A temp file in the same directory is written, flushed, fsynced and its size checked, then renamed over
    `path` and the directory fsynced. On any failure the temp file is removed and `path` is untouched.
    With `overwrite=False` the finished file is linked into place instead, which fails if `path` appeared
    meanwhile: an existing file is never replaced.
    """
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError("create a temporary file in", directory, exc.strerror or exc) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            expected = handle.tell()
            handle.flush()
            fsync(handle.fileno())
            # A full disk has been seen to leave a short file without an exception: check the size.
            actual = os.fstat(handle.fileno()).st_size
            if actual != expected:
                raise StorageError("write", tmp, f"wrote {actual} of {expected} bytes")
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except StorageError:
        _discard(tmp)
        raise
    except OSError as exc:
        _discard(tmp)
        raise StorageError("write", path, exc.strerror or exc) from exc
    except BaseException:
        _discard(tmp)
        raise
    fsync_directory(directory)


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def _link_new(tmp: Path, path: Path) -> None:
    """Put `tmp` at `path` only if nothing is there (link(2) never replaces), then drop the temp name."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise StorageError("write", path, "a file already exists there and is left as it was") from None
    except OSError:  # a file system without hard links: the check and the rename are then two steps
        if os.path.lexists(path):
            raise StorageError("write", path, "a file already exists there and is left as it was") from None
        os.replace(tmp, path)
        return
    _discard(tmp)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()
