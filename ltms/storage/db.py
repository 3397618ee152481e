"""SQLite, the source of truth: memories, their chunk vectors, full-text search and a change log.

Durability: WAL with `synchronous=FULL`. A store is acknowledged only after COMMIT returns, and with FULL the
WAL is fsynced at every commit, so an acknowledged memory survives `kill -9` and power loss alike. (NORMAL
would survive `kill -9` too but may lose the last commits on power loss; the measured cost of FULL is a
fraction of a millisecond per commit, far below the cost of embedding the text.)

Every write transaction starts with BEGIN IMMEDIATE: a transaction that reads and then upgrades to a write
gets SQLITE_BUSY at once, whatever busy_timeout says, when another process writes.

The keyword leg is an FTS5 table over `memories.text`, kept current by triggers in the same transaction as the
memory itself, so another process's store is searchable the moment it commits, with nothing to replay.
Porter stemming over unicode61: on a long-conversation benchmark it beat plain unicode61 by 3 points of
recall@10 (docs/retrieval.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ltms import validation
from ltms.embeddings import embedder_setting_for
from ltms.errors import InvalidInput, ModelMismatch, StorageError
from ltms.fsutil import unwritable_reason
from ltms.records import Memory, epoch_or_nan
from ltms.retrieval import keywords
from ltms.retrieval.keywords import fts5_all, fts5_match, rare_terms
from ltms.storage.base import Chunk, DuplicateMemory, Filter, KeywordHit, MemoryChange, NewMemory, StoredMemory
from ltms.storage.migrations import Migration, Progress, latest, pending
from ltms.vector_store import halfvec

if TYPE_CHECKING:  # the service hands its chunker to the migrations that must embed
    from ltms.retrieval.chunking import Chunker

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
# A chunk's key in the vector index: its memory's id and its ordinal in one int64 (ids never exceed 2**47).
# Since schema 3 it is also the chunks table's rowid, so a memory's chunks are one key range.
CHUNK_BITS = 16


_COLUMNS = "id, text, namespace, tags, metadata, created_at, updated_at, content_hash"
_ALL_COLUMNS = "id, namespace, text, tags, metadata, created_at, updated_at, content_hash, model"

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
_MEMORY_COLUMNS = "m.id, m.text, m.namespace, m.tags, m.metadata, m.created_at, m.updated_at, m.content_hash"


# -- migrations -------------------------------------------------------------------------------------------------

_V1_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id INTEGER NOT NULL,
    op        TEXT NOT NULL CHECK (op IN ('add', 'update', 'delete')),
    at        REAL NOT NULL
);
"""

_V2_SCHEMA = """
-- Every memory is one or more chunks (token windows); the vector index holds chunk vectors.
CREATE TABLE chunks (
    memory_id  INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    ordinal    INTEGER NOT NULL,
    start_char INTEGER NOT NULL,
    end_char   INTEGER NOT NULL,
    embedding  BLOB NOT NULL,
    PRIMARY KEY (memory_id, ordinal)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE memory_fts USING fts5(
    text, content = 'memories', content_rowid = 'id', tokenize = 'porter unicode61 remove_diacritics 2'
);
-- Rows `ltmc doctor --fix` found unreadable, moved here whole (never deleted). No types or constraints: the
-- values are kept exactly as they were stored, whatever they are.
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, namespace, text, tags, metadata, created_at, updated_at, content_hash, model,
    reason         TEXT NOT NULL,
    quarantined_at REAL NOT NULL
);
CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memory_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memory_fts(memory_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER memories_fts_update AFTER UPDATE OF text ON memories BEGIN
    INSERT INTO memory_fts(memory_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO memory_fts(rowid, text) VALUES (new.id, new.text);
END;
"""


_V3_SCHEMA = f"""
-- A rowid table keyed by the chunk key (memory id << {CHUNK_BITS} | ordinal): a memory's chunks are one key range,
-- so lookups and deletes by memory are range seeks. The vector is little-endian float16 (ltms.vector_store.halfvec):
-- 768 bytes at 384 dimensions, five rows to a 4 KiB page, where float32 overflowed a page per row.
-- memory_id and ordinal are computed, not stored.
CREATE TABLE chunks_v3 (
    key        INTEGER PRIMARY KEY,
    start_char INTEGER NOT NULL,
    end_char   INTEGER NOT NULL,
    embedding  BLOB NOT NULL,
    memory_id  INTEGER GENERATED ALWAYS AS (key >> {CHUNK_BITS}) VIRTUAL,
    ordinal    INTEGER GENERATED ALWAYS AS (key & {(1 << CHUNK_BITS) - 1}) VIRTUAL
);
"""
# What ON DELETE CASCADE did, as a trigger: it fires whatever the connection's foreign_keys setting, and seeks the
# key range instead of needing an index on memory_id.
_V3_DELETE_TRIGGER = f"""
CREATE TRIGGER memories_chunks_delete AFTER DELETE ON memories BEGIN
    DELETE FROM chunks WHERE key >= old.id << {CHUNK_BITS} AND key < (old.id + 1) << {CHUNK_BITS};
END;
"""


def _v1_initial(context: MigrationContext, _progress: Progress | None) -> None:
    for statement in _statements(_V1_SCHEMA):
        context.conn.execute(statement)


def _v2_chunks_and_keywords(context: MigrationContext, progress: Progress | None) -> None:
    """Chunks (backfilled: a memory that fits the model keeps its stored vector; a longer one is embedded in
    windows, which needs the embedder), the FTS5 table (backfilled), and the per-memory embedding column dropped."""
    conn = context.conn
    for statement in _statements(_V2_SCHEMA):
        conn.execute(statement)
    total = int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
    done = 0
    last = 0
    while True:
        rows = conn.execute(
            "SELECT id, text, embedding FROM memories WHERE id > ? ORDER BY id LIMIT 256", (last,)
        ).fetchall()
        if not rows:
            break
        last = int(rows[-1][0])
        long_rows = []
        for memory_id, text, blob in rows:
            if context.chunker is None:
                raise StorageError(
                    "upgrade",
                    context.path,
                    "the upgrade needs the embedding model; open the store "
                    "with the server or an ltmc command that writes (e.g. ltmc reindex)",
                )
            spans = context.chunker.spans(text)
            if len(spans) == 1:
                conn.execute(
                    "INSERT INTO chunks(memory_id, ordinal, start_char, end_char, embedding) VALUES (?, 0, ?, ?, ?)",
                    (memory_id, 0, len(text), blob),
                )
            else:
                long_rows.append((memory_id, text))
        if long_rows:
            assert context.chunker is not None  # checked for every row above
            embedded = context.chunker.chunks([text for _, text in long_rows])
            for (memory_id, _), chunks in zip(long_rows, embedded, strict=True):
                conn.executemany(
                    "INSERT INTO chunks(memory_id, ordinal, start_char, end_char, embedding) VALUES (?, ?, ?, ?, ?)",
                    [(memory_id, i, c.start, c.end, _float32_blob(c.vector)) for i, c in enumerate(chunks)],
                )
        done += len(rows)
        if progress:
            progress(done, total)
    conn.execute("ALTER TABLE memories DROP COLUMN embedding")
    conn.execute("INSERT INTO memory_fts(memory_fts) VALUES ('rebuild')")


def _v3_half_precision_chunks(context: MigrationContext, progress: Progress | None) -> None:
    """Chunks move to a rowid table keyed by chunk key, their vectors rounded to float16, in key order (pages
    filled in order, full). The old table's rows are deleted batch by batch as they are copied, so the pages they
    free are reused by the next batches instead of the file growing by the new table's size."""
    conn = context.conn
    for statement in _statements(_V3_SCHEMA):
        conn.execute(statement)
    # secure_delete (on in many builds) would zero every freed page through the WAL: gigabytes at 1M memories, for
    # vectors that stay in the new table (and VACUUM drops the free pages afterwards).
    secure = conn.execute("PRAGMA secure_delete").fetchone()[0]
    conn.execute("PRAGMA secure_delete = FAST")
    try:
        _copy_chunks_to_v3(conn, context.path, progress)
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(secure)}")
    conn.execute("DROP TABLE chunks")
    conn.execute("ALTER TABLE chunks_v3 RENAME TO chunks")
    conn.execute(_V3_DELETE_TRIGGER.strip())


def _copy_chunks_to_v3(conn: sqlite3.Connection, path: Path, progress: Progress | None) -> None:
    total = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
    done = 0
    last = (-1, -1)
    while True:
        rows = conn.execute(
            "SELECT memory_id, ordinal, start_char, end_char, embedding FROM chunks"
            " WHERE (memory_id, ordinal) > (?, ?) ORDER BY memory_id, ordinal LIMIT 2048",
            last,
        ).fetchall()
        if not rows:
            break
        conn.executemany(
            "INSERT INTO chunks_v3(key, start_char, end_char, embedding) VALUES (?, ?, ?, ?)",
            [((int(m) << CHUNK_BITS) | int(o), s, e, _v2_to_v3_blob(blob, path)) for m, o, s, e, blob in rows],
        )
        first, last = (int(rows[0][0]), int(rows[0][1])), (int(rows[-1][0]), int(rows[-1][1]))
        conn.execute("DELETE FROM chunks WHERE (memory_id, ordinal) BETWEEN (?, ?) AND (?, ?)", (*first, *last))
        done += len(rows)
        if progress:
            progress(done, total)


def _v2_to_v3_blob(blob: bytes, path: Path) -> bytes:
    try:
        return halfvec.encode(np.frombuffer(blob, dtype="<f4"))
    except ValueError as exc:  # a float32 blob of odd length, or a value float16 cannot hold
        raise StorageError("upgrade the chunk vectors of", path, f"a stored vector cannot be converted: {exc}") from exc


MIGRATIONS = (
    Migration(1, "memories, tags and the change log", _v1_initial),
    Migration(2, "chunks of long texts and the full-text (keyword) index", _v2_chunks_and_keywords),
    Migration(3, "chunk vectors at half precision (float16), keyed by chunk key", _v3_half_precision_chunks),
)
SCHEMA_VERSION = latest(MIGRATIONS)
HALF_PRECISION_VERSION = 3


@dataclass(frozen=True)
class MigrationContext:
    conn: sqlite3.Connection
    path: Path
    chunker: Chunker | None


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (triggers contain ';' inside BEGIN ... END)."""
    statements: list[str] = []
    current = ""
    for line in script.strip().splitlines():
        if line.lstrip().startswith("--"):
            continue
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


# -- the database -----------------------------------------------------------------------------------------------


class Database:
    """One write connection, shared by the threads of one process under a lock, and one read connection per
    reading thread (`_ThreadConnections`), so reads run in parallel with each other and with a write transaction.
    A thread inside a write transaction reads on the write connection: it sees its own uncommitted changes.

    `read_only`: the file must exist already; it is opened with `connect_readonly` (never created, migrated or
    written; on read-only media it works too), and every write transaction fails."""

    def __init__(
        self,
        path: Path,
        chunker: Chunker | None = None,
        progress: Progress | None = None,
        read_only: bool = False,
    ) -> None:
        self.path = path
        self.read_only = read_only
        self.applied_migrations: tuple[int, ...] = ()  # the steps this open applied
        self._lock = threading.RLock()
        self._writer: int | None = None  # the thread inside a write transaction, if any
        if read_only:
            self._conn, self.how = connect_readonly(path)
            self._readers = _ThreadConnections(
                functools.partial(self._open_reader, functools.partial(_connect, _readonly_uri(path, self.how)))
            )
            self._identity = self._file_identity()
            try:
                found = self.schema_version()
                pending(MIGRATIONS, found, path)  # a newer database is refused here too
                if found < SCHEMA_VERSION:
                    raise StorageError(
                        "open",
                        path,
                        f"its schema version {found} needs an upgrade to {SCHEMA_VERSION}, which a read-only open "
                        "cannot do: start LTMC once without read-only mode",
                    )
            except BaseException:
                self._conn.close()
                raise
            return
        self.how = "read-write"
        self._readers = _ThreadConnections(
            functools.partial(self._open_reader, functools.partial(_connect_reader, path))
        )
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
            self._upgrade(chunker, progress)
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
        self._readers.close()
        with self._lock:
            self._conn.close()

    # -- schema -------------------------------------------------------------------------------------------------

    def schema_version(self) -> int:
        has_meta = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        if not has_meta:
            return 0
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _upgrade(self, chunker: Chunker | None, progress: Progress | None) -> None:
        """Apply every migration newer than the database, all in one write transaction with the new number, so
        a crash leaves the old schema or the new one, and two processes opening at once cannot split the steps."""
        with self._lock:
            if not pending(MIGRATIONS, self.schema_version(), self.path):
                return
        applied = []
        with self.write() as conn:
            # Another process may have applied them while we waited for the write lock: look again.
            for step in pending(MIGRATIONS, self.schema_version(), self.path):
                step.apply(MigrationContext(conn, self.path, chunker), progress)
                Database.set_meta(conn, "schema_version", str(step.version))
                applied.append(step.version)
            # Which database an index snapshot was built from: a snapshot copied in from another data directory
            # can match this one in count, model and change number, and only this tells them apart.
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('database_id', ?)", (uuid.uuid4().hex,))
        self.applied_migrations = tuple(applied)
        if HALF_PRECISION_VERSION in applied:
            self._return_free_pages()

    def _return_free_pages(self) -> None:
        """Schema 3 shrinks the chunks table to about a sixth: VACUUM gives the freed pages back to the file system
        (once, after the upgrade committed; VACUUM is atomic by itself). A failure only leaves the file larger."""
        with self._lock:
            free = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
            pages = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
            if free < pages // 4:
                return
            try:
                self._conn.execute("VACUUM")
                # The WAL grew to hold the whole upgrade: give that back too (the next writes start it small).
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("%s: the space the upgrade freed stays inside the file (VACUUM failed: %s)", self.path, exc)

    # -- transactions -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
        with self._lock, self._writing():
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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SqliteTransaction]:
        with self.write() as conn:
            yield SqliteTransaction(conn)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Mark this thread as the writer (under `_lock`): its reads go to the write connection meanwhile."""
        outer, self._writer = self._writer, threading.get_ident()
        try:
            yield
        finally:
            self._writer = outer

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
    def read_transaction(self) -> Iterator[None]:
        """Every query inside (on this thread) sees the same committed state (WAL snapshot isolation)."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield
            finally:
                conn.execute("COMMIT")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection this thread reads on (see `_pick`), held for the duration."""
        lock, conn = self._pick()
        with lock:
            yield conn

    def _pick(self) -> tuple[threading.RLock, sqlite3.Connection]:
        """The connection this thread reads on and the lock to hold while it does (close() waits for it): the write
        connection inside this thread's own write transaction, else the thread's own read connection."""
        if self._writer != threading.get_ident():  # only this thread sets it to its own id, under `_lock`
            reader = self._readers.reader()
            if reader is not None:
                return reader.lock, reader.conn
        return self._lock, self._conn

    def _open_reader(self, connect: Callable[[], sqlite3.Connection]) -> sqlite3.Connection | None:
        """A new read connection, or None when the file at `path` is no longer the one this process opened (deleted
        or replaced): reads then go on from the file it holds, on the write connection (writes are refused)."""
        if self._file_identity() != self._identity:
            return None
        conn = connect()
        if self._file_identity() != self._identity:  # replaced while opening
            conn.close()
            return None
        return conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            lock, conn = self._pick()  # not `_connection()`: a generator costs microseconds on every query
            with lock:
                return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError("read from", self.path, exc) from exc

    # -- meta -----------------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    @property
    def database_id(self) -> str:
        return self.get_meta("database_id") or ""

    @staticmethod
    def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @staticmethod
    def quarantine(conn: sqlite3.Connection, rows: Sequence[tuple[int, str]], at: float) -> list[int]:
        """Move each (id, reason) row whole into the quarantine table, out of every read path. Returns the ids
        moved; the change log records a delete, so every process drops them from its index."""
        moved = []
        tx = SqliteTransaction(conn)
        for memory_id, reason in rows:
            copied = conn.execute(
                f"INSERT INTO quarantine({_ALL_COLUMNS}, reason, quarantined_at)"
                f" SELECT {_ALL_COLUMNS}, ?, ? FROM memories WHERE id = ?",
                (reason, at, memory_id),
            ).rowcount
            if copied and tx.delete(memory_id):
                moved.append(memory_id)
        return moved

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

    def claim_model(self, model: str, dimension: int, allow_change: bool = False) -> None:
        """Record the model on first use, inside a write transaction, so two processes with different models
        cannot both claim an empty store (even an empty store keeps its model: another process may have claimed it
        a moment ago); a different model is refused unless `allow_change` (reindex --reembed). A read-only open
        claims nothing: it refuses another model and accepts a store no model has claimed yet."""
        current = (model, str(dimension))
        if self.read_only:
            stored = self.get_meta("model")
            if stored is not None and (stored, self.get_meta("dimension")) != current and not allow_change:
                raise ModelMismatch(stored, model, self.path, embedder_setting_for(stored))
            return
        with self.write() as conn:
            rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('model', 'dimension')").fetchall())
            stored = rows.get("model")
            if (stored, rows.get("dimension")) == current:
                return
            if stored is not None and not allow_change:
                raise ModelMismatch(stored, model, self.path, embedder_setting_for(stored))
            Database.set_meta(conn, "model", model)
            Database.set_meta(conn, "dimension", str(dimension))

    # -- reads ------------------------------------------------------------------------------------------------------

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
        for part in _parts(ids):
            marks = ",".join("?" * len(part))
            for row in self._query(f"SELECT {_COLUMNS} FROM memories WHERE id IN ({marks})", part):
                found[int(row[0])] = _memory(row)
        return found

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM memories")[0][0])

    def chunk_count(self) -> int:
        # Joined: chunks orphaned by a row deleted without foreign keys (by hand) never count or index.
        return int(self._query(f"SELECT count(*) FROM chunks c JOIN memories m ON m.id = c.key >> {CHUNK_BITS}")[0][0])

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

    def chunk_vectors_for(self, memory_ids: Sequence[int], dimension: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk keys, vectors) of every chunk of the memories among `memory_ids` that still exist."""
        keys: list[int] = []
        blobs: list[bytes] = []
        for part in _parts(memory_ids):
            marks = ",".join("?" * len(part))
            for key, blob in self._query(
                f"SELECT c.key, c.embedding FROM memories m CROSS JOIN chunks c ON {_CHUNKS_OF_M}"
                f" WHERE m.id IN ({marks})",
                part,
            ):
                keys.append(int(key))
                blobs.append(blob)
        return np.asarray(keys, dtype=np.int64), self._vectors(blobs, dimension)

    def iter_chunk_vectors(self, dimension: int, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (chunk keys, vectors) in key order, `batch` rows at a time (keyset pagination)."""
        last = -1
        while True:
            rows = self._query(
                f"SELECT c.key, c.embedding FROM chunks c JOIN memories m ON m.id = c.key >> {CHUNK_BITS}"
                " WHERE c.key > ? ORDER BY c.key LIMIT ?",
                (last, batch),
            )
            if not rows:
                return
            last = int(rows[-1][0])
            keys = np.asarray([int(r[0]) for r in rows], dtype=np.int64)
            yield keys, self._vectors([r[1] for r in rows], dimension)

    def _vectors(self, blobs: Sequence[bytes], dimension: int) -> np.ndarray:
        try:
            return halfvec.decode_many(blobs, dimension)
        except ValueError as exc:
            raise StorageError("read a chunk vector from", self.path, exc) from exc

    def chunk_spans(self, keys: Sequence[int]) -> dict[int, tuple[int, int]]:
        """key -> (start, end) character span."""
        spans: dict[int, tuple[int, int]] = {}
        for part in _parts(sorted({int(k) for k in keys})):  # the key is the rowid: one seek each
            marks = ",".join("?" * len(part))
            for key, start, end in self._query(
                f"SELECT key, start_char, end_char FROM chunks WHERE key IN ({marks})", part
            ):
                spans[int(key)] = (int(start), int(end))
        return spans

    def filter_chunk_keys(self, where: Filter) -> np.ndarray:
        """The chunk keys of every memory matching `where`."""
        clause, params = _filters(where, "m.id")
        rows = self._query(f"SELECT c.key FROM memories m CROSS JOIN chunks c ON {_CHUNKS_OF_M}{clause}", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_memory_batches(self, batch: int = 1000) -> Iterator[list[Memory]]:
        """Every memory in id order, `batch` at a time."""
        last = 0
        while True:
            rows = self._query(f"SELECT {_COLUMNS} FROM memories WHERE id > ? ORDER BY id LIMIT ?", (last, batch))
            if not rows:
                return
            last = int(rows[-1][0])
            yield [_memory(row) for row in rows]

    def iter_stored(self, dimension: int, batch: int = 1000) -> Iterator[StoredMemory]:
        """Every memory in id order with its model and chunks."""
        last = 0
        while True:
            rows = self._query(
                f"SELECT {_COLUMNS}, model FROM memories WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            )
            if not rows:
                return
            last = int(rows[-1][0])
            chunks: dict[int, list[Chunk]] = {}
            for key, start, end, blob in self._query(  # the batch's ids are one key range
                "SELECT key, start_char, end_char, embedding FROM chunks WHERE key >= ? AND key < ? ORDER BY key",
                _key_range(int(rows[0][0]), int(rows[-1][0])),
            ):
                vector = self._vectors([blob], dimension)[0]
                chunks.setdefault(int(key) >> CHUNK_BITS, []).append(Chunk(int(start), int(end), vector))
            for row in rows:
                memory = _memory(row)
                yield StoredMemory(memory, str(row[8]), tuple(chunks.get(memory.id, ())))

    def page(self, where: Filter, limit: int, offset: int) -> tuple[list[Memory], int]:
        """Newest first."""
        clause, params = _filters(where, "m.id")
        total = int(self._query(f"SELECT count(*) FROM memories m{clause}", params)[0][0])
        rows = self._query(
            f"SELECT {_MEMORY_COLUMNS} FROM memories m{clause} ORDER BY m.id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_memory(r) for r in rows], total

    def keyword_search(self, terms: Sequence[str], k: int, where: Filter) -> list[KeywordHit]:
        """BM25 over the FTS5 index, best first, with the filter in the same SQL. Only the query's rarer terms
        are ranked (keywords.rare_terms). Unfiltered, FTS5 ranks and cuts by itself (ORDER BY rank LIMIT on the
        FTS table: measured 2x faster than ranking through a join)."""
        frequencies = self._document_frequencies(terms)
        chosen = rare_terms(frequencies, too_common=keywords.MAX_TERM_ROWS)
        if where.is_empty:
            if not chosen:
                return []
            sql = "SELECT rowid, rank FROM memory_fts WHERE memory_fts MATCH ? ORDER BY rank LIMIT ?"
            return self._keyword_hits(sql, [fts5_match(chosen), k])
        clause, filters = _filters(where, "m.id")
        sql = (
            "SELECT m.id, memory_fts.rank FROM memory_fts JOIN memories m ON m.id = memory_fts.rowid"
            f" WHERE memory_fts MATCH ?{clause.replace(' WHERE ', ' AND ', 1)} ORDER BY memory_fts.rank LIMIT ?"
        )
        hits = self._keyword_hits(sql, [fts5_match(chosen), *filters, k]) if chosen else []
        every = [term for term, count in frequencies.items() if 0 < count < keywords.MAX_TERM_ROWS]
        if len(hits) < k and len(every) > len(chosen):  # the rare terms' rows may lie outside the filter
            hits = self._keyword_hits(sql, [fts5_match(every), *filters, k])
        return hits

    def _keyword_hits(self, sql: str, params: list[Any]) -> list[KeywordHit]:
        # FTS5's rank (bm25()) is negative, lower is better: flip it so a higher score is a better match.
        return [KeywordHit(int(i), rank, -float(score)) for rank, (i, score) in enumerate(self._query(sql, params), 1)]

    def _document_frequencies(self, terms: Sequence[str]) -> dict[str, int]:
        """How many memories hold each term (as the FTS tokenizer stems it), counted no further than
        keywords.MAX_TERM_ROWS (a word that common is never ranked; counting a word every memory holds cost ~4 ms
        a word at 100k). Counting a term's matches is cheap; ranking them is not."""
        if not terms:
            return {}
        counts = " UNION ALL ".join(
            f"SELECT {i}, count(*) FROM (SELECT 1 FROM memory_fts WHERE memory_fts MATCH ? LIMIT ?)"
            for i in range(len(terms))
        )
        params: list[Any] = []
        for term in terms:
            params += [fts5_match([term]), keywords.MAX_TERM_ROWS]
        rows = self._query(counts, params)
        return {terms[int(i)]: int(count) for i, count in rows}

    # -- for the index planner and change-log pruning (ltms.storage.embedded) ------------------------------------

    def count_matching(self, where: Filter, cap: int) -> int:
        """How many memories match `where`, counting no further than `cap` (cheap whatever the total)."""
        if _only_mentions(where):  # the full-text index alone answers: 10x faster than joining each row
            sql = "SELECT count(*) FROM (SELECT 1 FROM memory_fts WHERE memory_fts MATCH ? LIMIT ?)"
            return int(self._query(sql, [fts5_all(where.mentions), cap])[0][0])
        clause, params = _filters(where, "m.id")
        sql = f"SELECT count(*) FROM (SELECT 1 FROM memories m{clause} LIMIT ?)"
        return int(self._query(sql, [*params, cap])[0][0])

    def matching_ids(self, where: Filter) -> np.ndarray:
        """Ids of every memory matching `where`."""
        if _only_mentions(where):
            rows = self._query("SELECT rowid FROM memory_fts WHERE memory_fts MATCH ?", [fts5_all(where.mentions)])
        else:
            clause, params = _filters(where, "m.id")
            rows = self._query(f"SELECT m.id FROM memories m{clause}", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def matching_among(self, ids: Sequence[int], where: Filter) -> set[int]:
        """Which of `ids` match `where` (a post-filter for candidates from an unfiltered search). CROSS JOIN keeps
        the candidates as the outer loop: SQLite would otherwise walk a namespace index over every row."""
        clause, params = _filters(where, "m.id")
        condition = clause.replace(" WHERE ", " AND ", 1)
        rows = self._query(
            f"SELECT m.id FROM json_each(?) AS j CROSS JOIN memories m ON m.id = j.value WHERE 1{condition}",
            [json.dumps([int(i) for i in ids]), *params],
        )
        return {int(r[0]) for r in rows}

    def pruned_through(self) -> int:
        """Change-log rows up to this sequence number have been deleted (0: none)."""
        value = self.get_meta("changes_pruned_through")
        return int(value) if value else 0

    def prune_changes(self, through_seq: int, batch: int = 5000) -> int:
        """Delete change-log rows up to `through_seq`, always keeping the newest row (max(seq) is the current
        sequence number). In short transactions, so a writer never waits long. Returns how many were deleted."""
        deleted = 0
        while True:
            with self.write() as conn:
                latest = int(conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0])
                row = conn.execute("SELECT value FROM meta WHERE key = 'changes_pruned_through'").fetchone()
                done = int(row[0]) if row else 0
                target = min(through_seq, latest - 1, done + batch)
                if target <= done:
                    return deleted
                deleted += conn.execute("DELETE FROM changes WHERE seq <= ?", (target,)).rowcount
                Database.set_meta(conn, "changes_pruned_through", str(target))


class _Reader:
    """A thread's read connection and the lock its reads hold (close() takes it: it never closes a connection
    under a read)."""

    __slots__ = ("__weakref__", "conn", "lock")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.lock = threading.RLock()


class _ThreadConnections:
    """One read connection per thread, opened on the thread's first read. It is closed when the thread ends (its
    thread-local slot is dropped: a server's worker threads come and go) or by close(), whichever comes first."""

    def __init__(self, connect: Callable[[], sqlite3.Connection | None]) -> None:
        self._connect = connect
        self._local = threading.local()
        # What close() closes: id(reader) -> (its connection, its lock). Not the reader itself, whose only strong
        # reference must be the thread's slot, so that it dies with the thread.
        self._open: dict[int, tuple[sqlite3.Connection, threading.RLock]] = {}
        self._guard = threading.Lock()
        self._closed = False

    def reader(self) -> _Reader | None:
        """This thread's reader (opened now if it has none), or None if `connect` could not give one."""
        reader: _Reader | None = getattr(self._local, "reader", None)
        return reader if reader is not None else self._open_one()

    def _open_one(self) -> _Reader | None:
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        conn = self._connect()
        if conn is None:
            return None
        reader = _Reader(conn)
        with self._guard:
            if self._closed:
                reader.conn.close()
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            self._open[id(reader)] = (reader.conn, reader.lock)
        # Not a bound method: the finalizer must not keep this object (and so every thread's slot) alive.
        finalizer = weakref.finalize(reader, _close_reader, self._open, self._guard, id(reader))
        finalizer.atexit = False  # at exit the process closes its files anyway; a daemon thread may be reading
        self._local.reader = reader
        return reader

    def count(self) -> int:
        """How many read connections are open."""
        with self._guard:
            return len(self._open)

    def close(self) -> None:
        with self._guard:
            self._closed = True
            readers = list(self._open.values())
            self._open.clear()
        for conn, lock in readers:
            with lock:
                conn.close()


def _close_reader(
    registry: dict[int, tuple[sqlite3.Connection, threading.RLock]], guard: threading.Lock, key: int
) -> None:
    """The owning thread ended (or the pool was dropped): nothing can be reading on its connection any more."""
    with guard:
        entry = registry.pop(key, None)
    if entry is not None:
        entry[0].close()


class SqliteTransaction:
    """The embedded backend's unit of work (see ltms.storage.base.Transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def find_by_hash(self, namespace: str, content_hash: str) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM memories WHERE namespace = ? AND content_hash = ?", (namespace, content_hash)
        ).fetchone()
        return int(row[0]) if row else None

    def get(self, memory_id: int) -> Memory | None:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM memories WHERE id = ?", (memory_id,)).fetchone()
        return _memory(row) if row else None

    def insert(self, memory: NewMemory) -> int:
        row = (
            memory.namespace,
            memory.text,
            json.dumps(list(memory.tags)),
            json.dumps(memory.metadata),
            memory.created_at,
            memory.updated_at,
            memory.content_hash,
            memory.model,
        )
        try:
            cursor = self.conn.execute(
                "INSERT INTO memories(namespace, text, tags, metadata, created_at, updated_at, content_hash, model)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        except sqlite3.IntegrityError:  # the statement is undone, the transaction stays usable
            existing = self.find_by_hash(memory.namespace, memory.content_hash)
            if existing is None:
                raise
            raise DuplicateMemory(existing) from None
        memory_id = int(cursor.lastrowid or 0)
        self._set_tags(memory_id, memory.tags)
        _insert_chunks(self.conn, memory_id, memory.chunks)
        self._log(memory_id, "add", memory.updated_at)
        return memory_id

    def update(self, memory_id: int, change: MemoryChange) -> None:
        self.conn.execute(
            "UPDATE memories SET text = ?, tags = ?, metadata = ?, updated_at = ?, content_hash = ?, model = ?"
            " WHERE id = ?",
            (
                change.text,
                json.dumps(list(change.tags)),
                json.dumps(change.metadata),
                change.updated_at,
                change.content_hash,
                change.model,
                memory_id,
            ),
        )
        self._set_tags(memory_id, change.tags)
        if change.chunks is not None:
            self.conn.execute("DELETE FROM chunks WHERE key >= ? AND key < ?", _key_range(memory_id, memory_id))
            _insert_chunks(self.conn, memory_id, change.chunks)
        self._log(memory_id, "update", change.updated_at)

    def delete(self, memory_id: int) -> bool:
        deleted = self.conn.execute("DELETE FROM memories WHERE id = ?", (memory_id,)).rowcount
        if deleted:  # chunks (trigger) and tags (ON DELETE CASCADE) go with it, the FTS entry by trigger
            self._log(memory_id, "delete", time.time())
        return bool(deleted)

    def replace_chunks(self, memory_id: int, model: str, chunks: Sequence[Chunk]) -> None:
        self.conn.execute("UPDATE memories SET model = ? WHERE id = ?", (model, memory_id))
        self.conn.execute("DELETE FROM chunks WHERE key >= ? AND key < ?", _key_range(memory_id, memory_id))
        _insert_chunks(self.conn, memory_id, chunks)
        self._log(memory_id, "update", time.time())

    def _set_tags(self, memory_id: int, tags: Sequence[str]) -> None:
        self.conn.execute("DELETE FROM memory_tags WHERE memory_id = ?", (memory_id,))
        self.conn.executemany("INSERT INTO memory_tags(memory_id, tag) VALUES (?, ?)", [(memory_id, t) for t in tags])

    def _log(self, memory_id: int, op: str, at: float) -> None:
        self.conn.execute("INSERT INTO changes(memory_id, op, at) VALUES (?, ?, ?)", (memory_id, op, at))


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


def _readonly_uri(path: Path, how: str) -> str:
    """The URI `connect_readonly` opened `path` with, given how it did (see there)."""
    uri = path.absolute().as_uri() + "?mode=ro"
    return uri + "&immutable=1" if how.startswith("immutable") else uri


def _connect_reader(path: Path) -> sqlite3.Connection:
    """A read connection beside a read-write one: the file exists (never created here), and query_only makes
    certain nothing is ever written through it."""
    conn = _connect(path.absolute().as_uri() + "?mode=rw")
    try:
        conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


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


def _insert_chunks(conn: sqlite3.Connection, memory_id: int, chunks: Sequence[Chunk]) -> None:
    if len(chunks) > 1 << CHUNK_BITS:
        raise InvalidInput(f"{len(chunks)} chunks in one memory: at most {1 << CHUNK_BITS}")
    conn.executemany(
        "INSERT INTO chunks(key, start_char, end_char, embedding) VALUES (?, ?, ?, ?)",
        [((memory_id << CHUNK_BITS) | i, c.start, c.end, halfvec.encode(c.vector)) for i, c in enumerate(chunks)],
    )


# The chunks of memory `m`: its key range (SQLite seeks it on the rowid).
_CHUNKS_OF_M = f"c.key >= m.id << {CHUNK_BITS} AND c.key < (m.id + 1) << {CHUNK_BITS}"


def _key_range(first_memory: int, last_memory: int) -> tuple[int, int]:
    """[low, high) of the chunk keys of memories first_memory..last_memory."""
    return first_memory << CHUNK_BITS, (last_memory + 1) << CHUNK_BITS


def _parts(ids: Sequence[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def _float32_blob(embedding: np.ndarray) -> bytes:
    """Schema 2's vector format (float32), written only by its own migration step."""
    return np.ascontiguousarray(embedding, dtype=np.float32).tobytes()


def _filters(where: Filter, id_column: str) -> tuple[str, list[Any]]:
    """A WHERE clause over `memories m` (and `id_column`, the memory id of the row) for the filter."""
    clauses: list[str] = []
    params: list[Any] = []
    if where.namespace is not None:
        clauses.append("m.namespace = ?")
        params.append(where.namespace)
    if where.tags:
        marks = ",".join("?" * len(where.tags))
        clauses.append(
            f"{id_column} IN (SELECT memory_id FROM memory_tags WHERE tag IN ({marks})"
            " GROUP BY memory_id HAVING count(*) = ?)"
        )
        params.extend(where.tags)
        params.append(len(where.tags))
    if where.since is not None:
        clauses.append("m.created_at >= ?")
        params.append(where.since)
    if where.until is not None:
        clauses.append("m.created_at <= ?")
        params.append(where.until)
    if where.mentions:
        clauses.append(f"{id_column} IN (SELECT rowid FROM memory_fts WHERE memory_fts MATCH ?)")
        params.append(fts5_all(where.mentions))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _only_mentions(where: Filter) -> bool:
    return bool(where.mentions) and replace(where, mentions=()).is_empty


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
