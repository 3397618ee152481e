"""Index snapshots: atomic streamed save, verified memory-mapped load.

The index (ltms.vector_store.chunk_index.FaissIndex) is a derived cache of the chunk vectors stored in SQLite. A
snapshot is two files: the index file and a JSON manifest beside it (count, dimension, model, the last change
sequence it contains, the database it was built from, and a SHA-256 of the index file). faiss itself loads a file
with a flipped byte silently, so the checksum is what catches corruption.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ltms.errors import StorageError
from ltms.fsutil import atomic_write_bytes, atomic_writer
from ltms.vector_store.chunk_index import FaissIndex, SnapshotFormatError, read_faiss, read_snapshot

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 4  # 2: chunk keys (memory id << 16 | ordinal); 3: base + keys + tombstones (chunk_index.py);
# 4: float16 vectors (an older snapshot is foreign: rebuilt from SQLite, never read as float16)


class SnapshotMissing(Exception):
    """No snapshot has been saved yet."""


class SnapshotInvalid(Exception):
    """A snapshot exists but cannot be trusted: truncated, corrupt, or built for another model."""


@dataclass(frozen=True)
class Manifest:
    format: int
    count: int
    dimension: int
    model: str
    last_seq: int
    sha256: str
    size: int
    saved_at: float
    database_id: str = ""  # the database it was built from ("" in old snapshots: treated as foreign, rebuilt once)
    # While a save is under way: the manifest of the index bytes about to replace the current ones. A process
    # killed between the two file replacements leaves the new index beside this manifest, and it still loads.
    pending: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in known})  # newer fields are ignored


class SnapshotStore:
    """Saves and loads index snapshots at one path, guarded by a file lock shared across processes."""

    def __init__(self, index_path: Path, manifest_path: Path, lock_path: Path, read_only: bool = False) -> None:
        self.index_path = index_path
        self.manifest_path = manifest_path
        self.lock_path = lock_path
        self.read_only = read_only  # never creates the lock file, never takes the write lock (read-only media)
        # The names atomic_writer gives its temp files (mkstemp: 8 random characters) for the two snapshot files.
        names = "|".join(re.escape(p.name) for p in (index_path, manifest_path))
        self._temp_name = re.compile(rf"\.(?:{names})\.[A-Za-z0-9_]{{8}}\.tmp")

    def stale_temp_files(self) -> list[tuple[Path, int]]:
        """(path, size) of every temp file a killed save left behind. Listed under the shared lock, which no
        save holds the exclusive lock against: a temp file still there is not being written."""
        with self._locked(exclusive=False):
            return self._temp_files()

    def remove_stale_temp_files(self) -> list[tuple[Path, int]]:
        """Remove the temp files killed saves left behind (under the exclusive lock: no live save is writing
        one then). Returns what was removed; a file that cannot be removed raises StorageError naming it."""
        with self._locked(exclusive=True):
            found = self._temp_files()
            for path, _size in found:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise StorageError("remove the stale temp file", path, exc.strerror or exc) from exc
        for path, size in found:
            log.warning("removed %s (%d bytes), left by a snapshot save that was killed", path, size)
        return found

    def _temp_files(self) -> list[tuple[Path, int]]:
        try:
            entries = sorted(self.index_path.parent.iterdir())
        except OSError:
            return []
        found = []
        for path in entries:
            if self._temp_name.fullmatch(path.name):
                with contextlib.suppress(OSError):
                    found.append((path, path.lstat().st_size))
        return found

    def read_manifest(self) -> Manifest | None:
        try:
            raw = json.loads(self.manifest_path.read_text("utf-8"))
            return Manifest.from_dict(raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise SnapshotInvalid(f"unreadable manifest {self.manifest_path}: {exc}") from exc

    def save(
        self,
        data: np.ndarray | bytes | FaissIndex,
        count: int,
        dimension: int,
        model: str,
        last_seq: int,
        database_id: str = "",
    ) -> Manifest | None:
        """Write the index file and then the manifest, each atomically. `data` is the file's bytes, or a compacted
        FaissIndex streamed straight into the temp file (hashed on the way: no serialized copy in memory). Returns
        None when skipped because the snapshot on disk (written by another process) already contains everything
        this one does.

        The two files cannot be replaced in one step, so the manifest announces the new index (`pending`) after
        its bytes are written and before they replace the old ones: whichever index file a kill leaves behind,
        old or new, matches the manifest beside it."""
        with self._locked(exclusive=True):
            try:
                current = self.read_manifest()
            except SnapshotInvalid:
                current = None
            if (
                current is not None
                and current.model == model
                and current.dimension == dimension
                and current.last_seq > last_seq
                and current.database_id == database_id
                and self.index_path.exists()
            ):
                return None
            with atomic_writer(self.index_path) as handle:
                out = _HashingWriter(handle)
                if isinstance(data, FaissIndex):
                    data.write_to(out)
                else:
                    out.write(data.data if isinstance(data, np.ndarray) else data)  # a view: no copy
                manifest = Manifest(
                    format=MANIFEST_FORMAT,
                    count=count,
                    dimension=dimension,
                    model=model,
                    last_seq=last_seq,
                    sha256=out.digest.hexdigest(),
                    size=out.size,
                    saved_at=time.time(),
                    database_id=database_id,
                )
                if current is not None and self.index_path.exists():
                    announced = replace(current, pending=asdict(manifest))
                    atomic_write_bytes(self.manifest_path, json.dumps(asdict(announced), indent=1).encode())
            atomic_write_bytes(self.manifest_path, json.dumps(asdict(manifest), indent=1).encode())
            return manifest

    def load(
        self, dimension: int, model: str, database_id: str = "", *, check_later_above: int | None = None
    ) -> tuple[FaissIndex, Manifest]:
        """Load and verify the snapshot. Raises SnapshotMissing or SnapshotInvalid (with the reason).

        A file larger than `check_later_above` bytes is memory-mapped, not read, and checked at once only for the
        bounds faiss relies on: reading and hashing 1.5 GB (1M memories) would delay a restart by seconds. The
        caller must soon run `index.pending_check` on another thread: it hashes the file and returns an in-memory
        copy of its faiss index to adopt (`FaissIndex.adopt`), so that the server stops depending on the mapped
        file, which someone could truncate in place; it raises SnapshotInvalid on a checksum mismatch."""
        with self._locked(exclusive=False):
            if not self.index_path.exists():
                if self.manifest_path.exists():
                    raise SnapshotInvalid("the manifest exists but the index file is missing")
                raise SnapshotMissing(str(self.index_path))
            manifest = self.read_manifest()
            if manifest is None:
                raise SnapshotInvalid("the index file has no manifest beside it")
            _check_fits(manifest, dimension, model, database_id)
            try:
                fd = os.open(self.index_path, os.O_RDONLY)
            except OSError as exc:
                raise SnapshotInvalid(f"cannot read {self.index_path}: {exc}") from exc
            try:
                index, manifest = self._verified(fd, manifest, dimension, model, database_id, check_later_above)
            except BaseException:
                os.close(fd)
                raise
        if index.pending_check is None:
            os.close(fd)
        if index.ntotal != manifest.count:
            raise SnapshotInvalid(f"{index.ntotal} vectors, manifest says {manifest.count}")
        return index, manifest

    def _verified(
        self, fd: int, manifest: Manifest, dimension: int, model: str, database_id: str, check_later_above: int | None
    ) -> tuple[FaissIndex, Manifest]:
        size = os.fstat(fd).st_size
        pending = None
        if manifest.pending:
            try:
                pending = Manifest.from_dict(manifest.pending)
            except (TypeError, ValueError, AttributeError) as exc:
                raise SnapshotInvalid(f"unreadable pending entry in {self.manifest_path}: {exc}") from exc
        sizes = [m.size for m in (manifest, pending) if m is not None]
        later = check_later_above is not None and size > check_later_above and sizes.count(size) == 1
        digest = None if later else _fd_digest(fd, self.index_path)

        def matches(candidate: Manifest) -> bool:
            return size == candidate.size and digest in (None, candidate.sha256)

        if pending is not None and not matches(manifest) and matches(pending):
            log.info(
                "index snapshot %s: the last save stopped after writing the index, before its manifest; "
                "the index it wrote is complete and is used",
                self.index_path,
            )
            _check_fits(pending, dimension, model, database_id)
            manifest = pending
        if size != manifest.size:
            raise SnapshotInvalid(f"size {size} bytes, manifest says {manifest.size} (truncated?)")
        if digest is not None and digest != manifest.sha256:
            raise SnapshotInvalid("checksum mismatch: the index file is corrupt")
        try:
            index = read_snapshot(fd, dimension, mapped=later)
        except SnapshotFormatError as exc:
            raise SnapshotInvalid(str(exc)) from exc
        if later:
            index.pending_check = _DeferredCheck(fd, self.index_path, manifest.sha256)
        return index, manifest

    def move_aside(self, reason: str) -> list[tuple[Path, Path]]:
        """Rename the snapshot files to timestamped names (never delete them). Returns (old, new) pairs."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.time_ns() % 1_000_000_000:09d}"
        moved = []
        with self._locked(exclusive=True):
            for path in (self.index_path, self.manifest_path):
                if not path.exists():
                    continue
                target = path.with_name(f"{path.name}.bad-{stamp}")
                try:
                    path.rename(target)
                except OSError as exc:
                    raise StorageError("move aside", path, exc.strerror or exc) from exc
                moved.append((path, target))
        for old, new in moved:
            log.warning("index snapshot %s moved aside to %s (%s)", old, new, reason)
        return moved

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        if self.read_only:
            with self._shared_if_present(exclusive):
                yield
            return
        try:
            handle = os.fdopen(os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")
        except OSError as exc:
            raise StorageError("open lock file", self.lock_path, exc.strerror or exc) from exc
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _shared_if_present(self, exclusive: bool) -> Iterator[None]:
        if exclusive:
            raise StorageError("take the write lock", self.lock_path, "this is a read-only view of the snapshot")
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            yield  # nobody has ever saved a snapshot here through this lock
            return
        except OSError as exc:
            raise StorageError("open lock file", self.lock_path, exc.strerror or exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _fd_digest(fd: int, path: Path) -> str:
    """SHA-256 of an open file, read in chunks with pread (hashlib releases the GIL): never a whole copy."""
    digest = hashlib.sha256()
    offset = 0
    try:
        while chunk := os.pread(fd, 1 << 22, offset):
            digest.update(chunk)
            offset += len(chunk)
    except OSError as exc:
        raise SnapshotInvalid(f"cannot read {path}: {exc}") from exc
    return digest.hexdigest()


class _DeferredCheck:
    """Run once on another thread after a mapped load: hashes the very file that was mapped (its fd) while faiss
    reads it into memory, and returns that in-memory copy; raises SnapshotInvalid on a checksum mismatch.
    `close` it instead when the index is dropped unchecked."""

    def __init__(self, fd: int, path: Path, sha256: str) -> None:
        self.fd: int | None = fd
        self.path = path
        self.sha256 = sha256

    def __call__(self) -> Any:
        fd = self.fd
        if fd is None:
            raise SnapshotInvalid("the deferred check already ran")
        digest = hashlib.sha256()
        offset = 0

        def read(size: int) -> bytes:
            nonlocal offset
            chunk = os.pread(fd, size, offset)
            offset += len(chunk)
            digest.update(chunk)
            return chunk

        try:
            owned = read_faiss(read)
            while read(1 << 22):  # the keys, order and tombstones after the faiss part
                pass
        except (OSError, SnapshotFormatError) as exc:
            raise SnapshotInvalid(f"cannot read {self.path}: {exc}") from exc
        finally:
            self.close()
        if digest.hexdigest() != self.sha256:
            raise SnapshotInvalid("checksum mismatch: the index file is corrupt")
        return owned

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


class _HashingWriter:
    """Passes writes through to a file while feeding SHA-256 and counting bytes, and keeps the dirty data it leaves
    in the page cache bounded: a gigabyte of dirty pages flushed at once would stall every SQLite commit on the same
    disk (ext4 orders a journal commit after the data of newly allocated blocks).

    Every SYNC_EVERY bytes it starts the writeback of that step (sync_file_range, which neither waits nor commits
    the journal) and waits for the step before it, so at most two steps are ever dirty; without sync_file_range it
    fdatasyncs each step. The final fsync is atomic_writer's."""

    # bench_store.py --sync-steps 1000000 (stores back to back during saves, three runs): with sync_file_range the
    # longest store was 45-112 ms (24-98 without a save), with an fdatasync every 64 MiB 330-496 ms. 4 or 64 MiB steps
    # made no consistent difference; the smaller bounds what one commit can wait behind.
    SYNC_EVERY = 4 * 2**20
    ROLLING = True  # sync_file_range where the platform has it; False: fdatasync every step

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0
        self._unsynced = 0
        self._started = 0  # writeback started for [0, _started)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.handle.write(view)
        self.digest.update(view)
        self.size += len(view)
        self._unsynced += len(view)
        if self._unsynced >= self.SYNC_EVERY:
            self.handle.flush()
            self._sync_step()
            self._unsynced = 0
        return len(view)

    def _sync_step(self) -> None:
        fd = self.handle.fileno()
        rolling = _sync_file_range() if self.ROLLING else None
        if rolling is None:
            os.fdatasync(fd)
            return
        previous, self._started = self._started, self.size
        rolling(fd, previous, self.size - previous, _SYNC_FILE_RANGE_WRITE)
        if previous:  # the step before this one: wait until it is on the disk
            rolling(fd, 0, previous, _SYNC_FILE_RANGE_WAIT_ALL)


_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_ALL = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER


def _sync_file_range() -> Any:
    """libc's sync_file_range(fd, offset, nbytes, flags) raising OSError, or None off Linux."""
    global _SFR
    if _SFR is None:
        _SFR = False
        if sys.platform == "linux":
            with contextlib.suppress(OSError, AttributeError):
                function = ctypes.CDLL(None, use_errno=True).sync_file_range
                function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                function.restype = ctypes.c_int

                def call(fd: int, offset: int, nbytes: int, flags: int) -> None:
                    if function(fd, offset, nbytes, flags) != 0:
                        errno = ctypes.get_errno()
                        raise OSError(errno, os.strerror(errno))

                _SFR = call
    return _SFR or None


_SFR: Any = None


def _check_fits(manifest: Manifest, dimension: int, model: str, database_id: str) -> None:
    if manifest.format != MANIFEST_FORMAT:
        raise SnapshotInvalid(f"manifest format {manifest.format}, expected {MANIFEST_FORMAT}")
    if manifest.model != model:
        raise SnapshotInvalid(f"built with model {manifest.model!r}, configured model is {model!r}")
    if manifest.dimension != dimension:
        raise SnapshotInvalid(f"dimension {manifest.dimension}, expected {dimension}")
    # A snapshot that does not name this database is foreign, blank id included: a blank id matches anything,
    # and a copied snapshot with the id removed would otherwise answer every search with another store's memories.
    if database_id and manifest.database_id != database_id:
        if not str(manifest.database_id or "").strip():
            raise SnapshotInvalid(
                f"it records no database id, so it cannot be shown to come from this database (id {database_id})"
            )
        raise SnapshotInvalid(
            f"it was built from another database (id {manifest.database_id}; this one is {database_id})"
        )
