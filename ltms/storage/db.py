"""SQLite, the source of truth: memories, their embeddings, and a change log other processes catch up from.

Durability: WAL with `synchronous=FULL`. A store is acknowledged only after COMMIT returns, and with FULL the
WAL is fsynced at every commit, so an acknowledged memory survives `kill -9` and power loss alike. (NORMAL
would survive `kill -9` too but may lose the last commits on power loss; the measured cost of FULL is a
fraction of a millisecond per commit, far below the cost of embedding the text.)

Every write transaction starts with BEGIN IMMEDIATE: a transaction that reads and then upgrades to a write
gets SQLITE_BUSY at once, whatever busy_timeout says, when another process writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ltms import validation
from ltms.errors import InvalidInput, StorageError
from ltms.fsutil import unwritable_reason
from ltms.records import Memory, epoch_or_nan

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- AUTOINCREMENT: ids are never reused, so a stale index entry can never point at a newer memory.
CREATE TABLE IF NOT EXISTS memories (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace    TEXT NOT NULL,
    text         TEXT NOT NULL,
    tags         TEXT NOT NULL DEFAULT '[]',
    metadata     TEXT NOT NULL DEFAULT '{}',
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    content_hash TEXT NOT NULL,
    embedding    BLOB NOT NULL,
    model        TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS memories_namespace_hash ON memories(namespace, content_hash);
CREATE INDEX IF NOT EXISTS memories_created_at ON memories(created_at);
CREATE TABLE IF NOT EXISTS memory_tags (
    memory_id INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    tag       TEXT NOT NULL,
    PRIMARY KEY (tag, memory_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_tags_memory ON memory_tags(memory_id);
-- The change log: every process replays rows newer than the last one its in-memory index has seen.
-- Rows `ltmc doctor --fix` found unreadable, moved here whole (never deleted). No types or constraints: the
-- values are kept exactly as they were stored, whatever they are.
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, namespace, text, tags, metadata, created_at, updated_at, content_hash, embedding, model,
    reason         TEXT NOT NULL,
    quarantined_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id INTEGER NOT NULL,
    op        TEXT NOT NULL CHECK (op IN ('add', 'update', 'delete')),
    at        REAL NOT NULL
);
"""

_COLUMNS = "id, text, namespace, tags, metadata, created_at, updated_at, content_hash"
_ALL_COLUMNS = "id, namespace, text, tags, metadata, created_at, updated_at, content_hash, embedding, model"

# Rows no read path can show as they are: a time outside the years 1-9999 (inf, 1e20, text), text that is not
# text, tags that are not a JSON list of strings, metadata that is not a JSON object. CASE keeps the JSON
# functions away from malformed JSON (they raise on it).
_UNREADABLE = """
SELECT id, text, tags, metadata, created_at, updated_at FROM memories WHERE
    typeof(created_at) NOT IN ('real', 'integer') OR created_at NOT BETWEEN ?1 AND ?2
    OR typeof(updated_at) NOT IN ('real', 'integer') OR updated_at NOT BETWEEN ?1 AND ?2
    OR typeof(text) != 'text'
    OR CASE WHEN json_valid(tags) THEN json_type(tags) != 'array'
        OR EXISTS (SELECT 1 FROM json_each(memories.tags) WHERE type != 'text') ELSE 1 END
    OR CASE WHEN json_valid(metadata) THEN json_type(metadata) != 'object' ELSE 1 END
ORDER BY id
"""


class Database:
    """One connection, shared by the threads of one process under a lock.

    `read_only`: the file must exist already; it is opened with `connect_readonly` (never created, migrated or
    written; on read-only media it works too), and every write transaction fails."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.RLock()
        if read_only:
            self._conn, self.how = connect_readonly(path)
            self._identity = self._file_identity()
            tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"meta", "memories", "changes"} <= tables:
                self._conn.close()
                raise StorageError("open", path, "it holds no LTMC memory store (its tables are missing)")
            return
        self.how = "read-write"
        try:
            # Owner-only from the start; SQLite gives the -wal and -shm files the database file's mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StorageError("create database file", path, exc.strerror or exc) from exc
        try:
            self._conn = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self._identity = self._file_identity()
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._enable_wal()
            if mode.lower() != "wal":
                raise StorageError("enable WAL mode on", path, f"journal_mode stayed {mode!r}")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StorageError("open database", path, exc) from exc

    def _enable_wal(self) -> str:
        """Switch to WAL. Two processes opening a new database at once can make this fail at once with
        "database is locked": the busy timeout does not cover it, so retry within the same bound."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- transactions -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError("start a write transaction on", self.path, exc) from exc
            if self._file_identity() != self._identity:
                # SQLite would go on writing into the open, unlinked file: acknowledged and then lost for good.
                self._rollback()
                raise StorageError(
                    "write to",
                    self.path,
                    "the database file was deleted or replaced while this "
                    "process had it open; nothing was written (restart to open the current file)",
                )
            try:
                yield self._conn
            except sqlite3.Error as exc:  # e.g. SQLITE_FULL: name the file and the reason
                self._rollback()
                raise StorageError("write to", self.path, exc) from exc
            except BaseException:
                self._rollback()
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError("commit to", self.path, exc) from exc

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file now at `path`, None if there is none."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _rollback(self) -> None:
        # SQLite may already have rolled back by itself (after SQLITE_FULL, for example).
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same committed state (WAL snapshot isolation)."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError("read from", self.path, exc) from exc

    def _migrate(self) -> None:
        with self._lock:
            self._conn.executescript(_SCHEMA)
        with self.write() as conn:
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            # Which database an index snapshot was built from: a snapshot copied in from another data directory
            # can match this one in count, model and change number, and only this tells them apart.
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('database_id', ?)", (uuid.uuid4().hex,))

    # -- meta -----------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    @property
    def database_id(self) -> str:
        return self.get_meta("database_id") or ""

    @staticmethod
    def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    @staticmethod
    def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- writes (call inside `with db.write() as conn`) -------------------------------------------------

    @staticmethod
    def find_by_hash(conn: sqlite3.Connection, namespace: str, content_hash: str) -> int | None:
        row = conn.execute(
            "SELECT id FROM memories WHERE namespace = ? AND content_hash = ?", (namespace, content_hash)
        ).fetchone()
        return int(row[0]) if row else None

    @staticmethod
    def fetch(conn: sqlite3.Connection, memory_id: int) -> Memory | None:
        """The memory as this transaction sees it (an update merges from this, never from an earlier read)."""
        row = conn.execute(f"SELECT {_COLUMNS} FROM memories WHERE id = ?", (memory_id,)).fetchone()
        return _memory(row) if row else None

    @staticmethod
    def insert(
        conn: sqlite3.Connection,
        *,
        text: str,
        namespace: str,
        tags: list[str],
        metadata: dict[str, Any],
        created_at: float,
        updated_at: float,
        content_hash: str,
        embedding: np.ndarray,
        model: str,
    ) -> int:
        cursor = conn.execute(
            "INSERT INTO memories(namespace, text, tags, metadata, created_at, updated_at, content_hash, embedding,"
            " model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                namespace,
                text,
                json.dumps(tags),
                json.dumps(metadata),
                created_at,
                updated_at,
                content_hash,
                _blob(embedding),
                model,
            ),
        )
        memory_id = int(cursor.lastrowid or 0)
        conn.executemany("INSERT INTO memory_tags(memory_id, tag) VALUES (?, ?)", [(memory_id, t) for t in tags])
        Database.log_change(conn, memory_id, "add", updated_at)
        return memory_id

    @staticmethod
    def update(
        conn: sqlite3.Connection,
        memory_id: int,
        *,
        text: str,
        tags: list[str],
        metadata: dict[str, Any],
        updated_at: float,
        content_hash: str,
        embedding: np.ndarray | None,
        model: str,
    ) -> None:
        if embedding is None:
            conn.execute(
                "UPDATE memories SET text = ?, tags = ?, metadata = ?, updated_at = ?, content_hash = ? WHERE id = ?",
                (text, json.dumps(tags), json.dumps(metadata), updated_at, content_hash, memory_id),
            )
        else:
            conn.execute(
                "UPDATE memories SET text = ?, tags = ?, metadata = ?, updated_at = ?, content_hash = ?,"
                " embedding = ?, model = ? WHERE id = ?",
                (
                    text,
                    json.dumps(tags),
                    json.dumps(metadata),
                    updated_at,
                    content_hash,
                    _blob(embedding),
                    model,
                    memory_id,
                ),
            )
        conn.execute("DELETE FROM memory_tags WHERE memory_id = ?", (memory_id,))
        conn.executemany("INSERT INTO memory_tags(memory_id, tag) VALUES (?, ?)", [(memory_id, t) for t in tags])
        Database.log_change(conn, memory_id, "update", updated_at)

    @staticmethod
    def set_embedding(conn: sqlite3.Connection, memory_id: int, embedding: np.ndarray, model: str, at: float) -> None:
        conn.execute("UPDATE memories SET embedding = ?, model = ? WHERE id = ?", (_blob(embedding), model, memory_id))
        Database.log_change(conn, memory_id, "update", at)

    @staticmethod
    def delete(conn: sqlite3.Connection, memory_id: int, at: float) -> bool:
        deleted = conn.execute("DELETE FROM memories WHERE id = ?", (memory_id,)).rowcount
        if deleted:
            Database.log_change(conn, memory_id, "delete", at)
        return bool(deleted)

    @staticmethod
    def quarantine(conn: sqlite3.Connection, rows: Sequence[tuple[int, str]], at: float) -> list[int]:
        """Move each (id, reason) row whole into the quarantine table, out of every read path. Returns the ids
        moved; the change log records a delete, so every process drops them from its index."""
        moved = []
        for memory_id, reason in rows:
            copied = conn.execute(
                f"INSERT INTO quarantine({_ALL_COLUMNS}, reason, quarantined_at)"
                f" SELECT {_ALL_COLUMNS}, ?, ? FROM memories WHERE id = ?",
                (reason, at, memory_id),
            ).rowcount
            if copied and Database.delete(conn, memory_id, at):
                moved.append(memory_id)
        return moved

    @staticmethod
    def log_change(conn: sqlite3.Connection, memory_id: int, op: str, at: float) -> None:
        conn.execute("INSERT INTO changes(memory_id, op, at) VALUES (?, ?, ?)", (memory_id, op, at))

    # -- reads ------------------------------------------------------------------------------------------

    def id_for_hash(self, namespace: str, content_hash: str) -> int | None:
        rows = self._query(
            "SELECT id FROM memories WHERE namespace = ? AND content_hash = ?", (namespace, content_hash)
        )
        return int(rows[0][0]) if rows else None

    def get(self, memory_id: int) -> Memory | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM memories WHERE id = ?", (memory_id,))
        return _memory(rows[0]) if rows else None

    def get_many(self, ids: Sequence[int]) -> dict[int, Memory]:
        found: dict[int, Memory] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT {_COLUMNS} FROM memories WHERE id IN ({marks})", chunk):
                found[int(row[0])] = _memory(row)
        return found

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM memories")[0][0])

    def counts_by_namespace(self) -> dict[str, int]:
        rows = self._query("SELECT namespace, count(*) FROM memories GROUP BY namespace ORDER BY namespace")
        return {str(ns): int(n) for ns, n in rows}

    def max_seq(self) -> int:
        return int(self._query("SELECT coalesce(max(seq), 0) FROM changes")[0][0])

    def changed_ids(self, after_seq: int, up_to_seq: int) -> tuple[list[int], list[int]]:
        """Memories changed in (after_seq, up_to_seq]: (only added, also updated or deleted).

        Ids are never reused, so a memory whose only change is its 'add' cannot be in an index built before it.
        """
        rows = self._query(
            "SELECT memory_id, min(op = 'add') FROM changes WHERE seq > ? AND seq <= ? GROUP BY memory_id",
            (after_seq, up_to_seq),
        )
        added = [int(memory_id) for memory_id, only_added in rows if only_added]
        modified = [int(memory_id) for memory_id, only_added in rows if not only_added]
        return added, modified

    def embeddings_for(self, ids: Sequence[int]) -> tuple[np.ndarray, list[bytes]]:
        """The ids among `ids` that still exist, and their embedding blobs."""
        found_ids: list[int] = []
        blobs: list[bytes] = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for memory_id, blob in self._query(f"SELECT id, embedding FROM memories WHERE id IN ({marks})", chunk):
                found_ids.append(int(memory_id))
                blobs.append(blob)
        return np.asarray(found_ids, dtype=np.int64), blobs

    def iter_embeddings(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, list[bytes]]]:
        """Every (ids, embedding blobs) in id order, `batch` rows at a time (keyset pagination)."""
        last = 0
        while True:
            rows = self._query("SELECT id, embedding FROM memories WHERE id > ? ORDER BY id LIMIT ?", (last, batch))
            if not rows:
                return
            last = int(rows[-1][0])
            yield np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def iter_memories(self, batch: int = 1000) -> Iterator[tuple[Memory, bytes, str]]:
        """Every memory in id order with its embedding blob and model name."""
        last = 0
        while True:
            rows = self._query(
                f"SELECT {_COLUMNS}, embedding, model FROM memories WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            )
            if not rows:
                return
            last = int(rows[-1][0])
            for row in rows:
                yield _memory(row), row[8], row[9]

    def filter_ids(
        self, namespace: str | None, tags: Sequence[str], since: float | None, until: float | None
    ) -> np.ndarray:
        where, params = _filters(namespace, tags, since, until)
        rows = self._query(f"SELECT id FROM memories{where}", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def page(
        self,
        namespace: str | None,
        tags: Sequence[str],
        limit: int,
        offset: int,
        since: float | None = None,
        until: float | None = None,
    ) -> tuple[list[Memory], int]:
        """Newest first."""
        where, params = _filters(namespace, tags, since, until)
        total = int(self._query(f"SELECT count(*) FROM memories{where}", params)[0][0])
        rows = self._query(
            f"SELECT {_COLUMNS} FROM memories{where} ORDER BY id DESC LIMIT ? OFFSET ?", [*params, limit, offset]
        )
        return [_memory(r) for r in rows], total

    def integrity_problems(self, limit: int = 3) -> list[str]:
        """What SQLite's integrity check finds wrong ([] when healthy), on a connection of its own so it can run
        while this one is in use. A database too damaged to check reports why."""
        try:
            conn, _how = connect_readonly(self.path)
            try:
                found = [str(row[0]) for row in conn.execute(f"PRAGMA integrity_check({int(limit)})")]
            finally:
                conn.close()
        except (sqlite3.Error, StorageError) as exc:
            return [str(exc.reason if isinstance(exc, StorageError) else exc)]
        if found == ["ok"]:
            return []
        # One row may hold several lines: keep the error message one line.
        return [" / ".join(line.strip() for line in row.splitlines() if line.strip())[:200] for row in found]

    def integrity_check(self) -> str:
        return str(self._query("PRAGMA integrity_check")[0][0])

    def journal_mode(self) -> str:
        return str(self._query("PRAGMA journal_mode")[0][0])


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
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the file is really opened here
    except BaseException:
        conn.close()
        raise
    return conn


def unreadable_rows(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """(id, what is wrong) for every memory row no read path can show as stored. Works on any connection
    (doctor's read-only one included)."""
    rows = conn.execute(_UNREADABLE, (validation.MIN_EPOCH, validation.MAX_EPOCH)).fetchall()
    return [(int(row[0]), _what_is_wrong(row)) for row in rows]


def _what_is_wrong(row: Sequence[Any]) -> str:
    _id, text, tags, metadata, created, updated = row
    found = []
    for name, value in (("created_at", created), ("updated_at", updated)):
        try:
            validation.in_time_range(epoch_or_nan(value), name, value)
        except InvalidInput as exc:
            found.append(str(exc).split(" (epoch")[0])
    if not isinstance(text, str):
        found.append(f"text is stored as {type(text).__name__}")
    if stored_tags(tags) is None:
        found.append(f"tags {_short(tags)} are not a JSON list of strings")
    if stored_metadata(metadata) is None:
        found.append(f"metadata {_short(metadata)} is not a JSON object")
    return "; ".join(found) or "unreadable"


def stored_tags(raw: object) -> list[str] | None:
    """The tags stored as JSON, or None when they are not a JSON list of strings."""
    value = _json_or_none(raw)
    return value if isinstance(value, list) and all(isinstance(t, str) for t in value) else None


def stored_metadata(raw: object) -> dict[str, Any] | None:
    value = _json_or_none(raw)
    return value if isinstance(value, dict) else None


def _json_or_none(raw: object) -> Any:
    try:
        return json.loads(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def embedding_from_blob(blob: bytes, dimension: int) -> np.ndarray:
    vector = np.frombuffer(blob, dtype=np.float32)
    if vector.shape != (dimension,):
        raise StorageError("decode an embedding from", "the database", f"{vector.size} floats, expected {dimension}")
    return vector


def blobs_to_matrix(blobs: Sequence[bytes], dimension: int) -> np.ndarray:
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32)
    return matrix.reshape(len(blobs), dimension)


def _blob(embedding: np.ndarray) -> bytes:
    return np.ascontiguousarray(embedding, dtype=np.float32).tobytes()


def _filters(
    namespace: str | None, tags: Sequence[str], since: float | None, until: float | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if namespace is not None:
        clauses.append("namespace = ?")
        params.append(namespace)
    if tags:
        marks = ",".join("?" * len(tags))
        clauses.append(
            f"id IN (SELECT memory_id FROM memory_tags WHERE tag IN ({marks}) GROUP BY memory_id HAVING count(*) = ?)"
        )
        params.extend(tags)
        params.append(len(tags))
    if since is not None:
        clauses.append("created_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("created_at <= ?")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _memory(row: Sequence[Any]) -> Memory:
    return Memory(
        id=int(row[0]),
        text=row[1],
        namespace=row[2],
        tags=stored_tags(row[3]) or [],  # unreadable values read as empty; doctor reports the row
        metadata=stored_metadata(row[4]) or {},
        created_at=epoch_or_nan(row[5]),
        updated_at=epoch_or_nan(row[6]),
        content_hash=row[7],
    )
