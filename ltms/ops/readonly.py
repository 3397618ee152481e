"""Read-only access to a data directory, for commands that must not change it (doctor, export).

SQLite is opened with `mode=ro`: it takes the usual read locks (so a concurrent writer is safe) but never
writes the database. A reader of a WAL database needs the `-wal` and `-shm` files; SQLite creates them when
they are missing, as any reader would. In a directory nobody can write, where they cannot be created, the
database is opened `immutable=1` instead (no locking, which is safe because nothing can write there either).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ltms.config import Settings
from ltms.errors import ReadOnlyError, StorageError
from ltms.fsutil import unwritable_reason
from ltms.vector_store.faiss_store import SnapshotStore


def refuse_writes(settings: Settings, command: str) -> None:
    """Read-only means no command writes: refuse one that would, before it opens anything."""
    if settings.read_only:
        source = settings.sources.get("read_only", "LTMC_READ_ONLY")
        raise ReadOnlyError(
            f"`ltmc {command}` would write to the data directory {settings.paths.data_dir}, and read-only mode is on "
            f"({source}); nothing was changed"
        )


def connect_readonly(path: Path) -> tuple[sqlite3.Connection, str]:
    """A read-only connection to the database at `path` and how it was opened ("read-only" or "immutable")."""
    uri = path.absolute().as_uri()
    try:
        return _connect(uri + "?mode=ro"), "read-only"
    except sqlite3.OperationalError as first:
        if os.access(path.parent, os.W_OK | os.X_OK) and unwritable_reason(path.parent) is None:
            raise StorageError("open the database read-only", path, first) from first
        try:
            return _connect(uri + "?mode=ro&immutable=1"), "immutable (its directory is not writable)"
        except sqlite3.Error as exc:
            raise StorageError("open the database read-only", path, exc) from exc
    except sqlite3.Error as exc:
        raise StorageError("open the database read-only", path, exc) from exc


def _connect(uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the file is really opened here
    except BaseException:
        conn.close()
        raise
    return conn


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


class ReadOnlySnapshotStore(SnapshotStore):
    """A SnapshotStore that never creates its lock file: it takes the shared lock only if the file exists."""

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
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
