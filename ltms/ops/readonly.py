"""Read-only access to a data directory, for commands that must not change it (doctor, export, stats), and the
refusal of writing commands in read-only mode.

`connect_readonly` (in ltms.storage.db; the memory service's read-only mode uses it too) opens SQLite with
`mode=ro`: it takes the usual read locks (so a concurrent writer is safe) but never writes the database. A reader
of a WAL database needs the `-wal` and `-shm` files; SQLite creates them when they are missing, as any reader
would. In a directory nobody can write, where they cannot be created, the database is opened `immutable=1`
instead (no locking, which is safe because nothing can write there either).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ltms.config import Settings
from ltms.errors import ReadOnlyError
from ltms.storage.db import connect_readonly
from ltms.vector_store.faiss_store import SnapshotStore


def refuse_writes(settings: Settings, command: str) -> None:
    """Read-only means no command writes: refuse one that would, before it opens anything."""
    if settings.read_only:
        source = settings.sources.get("read_only", "LTMC_READ_ONLY")
        raise ReadOnlyError(
            f"`ltmc {command}` would write to the data directory {settings.paths.data_dir}, and read-only mode is on "
            f"({source}); nothing was changed"
        )


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


class ReadOnlySnapshotStore(SnapshotStore):
    """A SnapshotStore that never creates its lock file: it takes the shared lock only if the file exists."""

    def __init__(self, index_path: Path, manifest_path: Path, lock_path: Path) -> None:
        super().__init__(index_path, manifest_path, lock_path, read_only=True)


__all__ = ["ReadOnlySnapshotStore", "connect_readonly", "refuse_writes", "table_names"]
