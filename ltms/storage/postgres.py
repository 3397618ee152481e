"""PostgreSQL + pgvector: the durable truth and its indexes in one transactional engine, shared by many hosts.

There is no cache to replay, snapshot or rebuild: a committed memory (synchronous_commit on) is fsynced, visible
to every connection at once, and already in the HNSW and GIN indexes. Dedup across any number of writers is the
UNIQUE (namespace, content_hash) constraint.

Vector search. pgvector applies WHERE after the HNSW candidate list, so by default a filtered search silently
returns fewer than k rows (measured: 0.54 of 10 at a 1 % filter). Every pooled connection therefore turns on
iterative index scans (relaxed order; results are re-sorted here) with a larger ef_search and scan budget, a filter
matching few memories is searched exactly instead (a bounded count decides), and if the index scan still ends
short of k memories the exact search answers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from pgvector.psycopg.vector import register_vector_info
from psycopg import sql
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from ltms.embeddings import embedder_setting_for
from ltms.errors import InvalidInput, ModelMismatch, StorageError
from ltms.records import Memory
from ltms.storage import pg_schema
from ltms.storage.base import (
    BackendHealth,
    Chunk,
    DuplicateMemory,
    Filter,
    KeywordHit,
    MemoryChange,
    NewMemory,
    StoredMemory,
    VectorHit,
)
from ltms.storage.pg_schema import DimensionMismatch, PostgresSetupError
from ltms.storage.pg_url import redact_url, scrub

log = logging.getLogger(__name__)
# psycopg_pool logs every connection checkout at INFO: keep LTMC's INFO log readable.
if logging.getLogger("psycopg.pool").level == logging.NOTSET:
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)

DEFAULT_POOL_SIZE = 10
CONNECT_TIMEOUT = 10.0
# A filter matching at most this many memories is searched exactly (every chunk of those memories compared):
# about what an HNSW scan costs at that size, and never approximate. Counting up to it costs ~1 ms; at 10,000 the
# count of a 30 % filter cost more than the search (bench_postgres). Above it the planner still chooses: it sorts
# exactly itself when it expects few rows to match.
EXACT_LIMIT = 2_000
# Per-connection settings for filtered HNSW searches (pgvector >= 0.8). relaxed_order lets the scan go on past
# ef_search until LIMIT rows pass the filter; results come back nearly sorted and are re-sorted here.
SESSION_SETTINGS = {
    "hnsw.iterative_scan": "relaxed_order",
    "hnsw.ef_search": "200",
    "hnsw.max_scan_tuples": "50000",
}

_COLUMNS = "m.id, m.text, m.namespace, m.tags, m.metadata, m.created_at, m.updated_at, m.content_hash"
_MIN_TIME = datetime.min.replace(tzinfo=UTC).timestamp() + 86_400
_MAX_TIME = datetime.max.replace(tzinfo=UTC).timestamp() - 86_400


class PostgresConnectError(StorageError):
    """The server cannot be reached or refuses the login; the message names the fix and never the password."""


@dataclass(frozen=True)
class CopyOutcome:
    """What `copy_stored` did with one source memory."""

    source_id: int
    target_id: int
    status: str  # "copied" (same id), "renumbered" (copied, the id was taken), "present" (already there)


class PostgresStorage:
    """The `Storage` protocol on PostgreSQL + pgvector, through a psycopg connection pool."""

    name = "postgres"

    def __init__(
        self,
        pool: ConnectionPool,
        url: str,
        dimension: int,
        *,
        exact_limit: int = EXACT_LIMIT,
        applied_migrations: Sequence[int] = (),
    ) -> None:
        self._pool = pool
        self._url = url
        self.location = redact_url(url)
        self.dimension = dimension
        self.exact_limit = exact_limit
        self.applied_migrations = tuple(applied_migrations)

    # -- opening ----------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        dimension: int,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        read_only: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT,
        exact_limit: int = EXACT_LIMIT,
    ) -> PostgresStorage:
        """Connect, check pgvector, apply pending migrations (unless `read_only`), check the dimension, and open a
        pool of up to `pool_size` connections. Every failure is one line naming the fix."""
        if not url.strip():
            raise PostgresSetupError(
                "LTMC_BACKEND=postgres needs LTMC_DATABASE_URL, e.g. postgresql://ltmc:PASSWORD@db-host:5432/ltmc"
            )
        where = redact_url(url)

        def configure(conn: psycopg.Connection) -> None:
            register_vector_info(conn, info)
            # Load pgvector first: its settings are then validated (an error) instead of being placeholders that
            # fall back to the defaults with only a warning when the library loads later.
            conn.execute("SELECT '[1]'::vector")
            for name, value in SESSION_SETTINGS.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            if read_only:
                conn.execute("SET default_transaction_read_only = on")
            # An acknowledged write must be durable: never let a server-wide `off` weaken it for LTMC.
            if conn.execute("SHOW synchronous_commit").fetchone() == ("off",):
                conn.execute("SET synchronous_commit = on")

        with _connect(url, connect_timeout) as conn:
            applied = _prepare(conn, url, dimension, read_only)
            info = TypeInfo.fetch(conn, "vector")
            if info is None:  # cannot happen after _prepare; keeps the type checker honest
                raise PostgresSetupError(f"the vector type is missing in {where}")
            try:  # the pool's sessions are set up the same way: a setting the server refuses fails here, loudly
                configure(conn)
            except psycopg.Error as exc:
                raise StorageError("configure a session on", where, _reason(exc, url)) from exc

        pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True, "connect_timeout": _timeout_arg(connect_timeout), "application_name": "ltmc"},
            configure=configure,
            check=ConnectionPool.check_connection,  # a connection broken by a restart or failover is replaced
            name="ltmc",
            timeout=max(connect_timeout, 5.0),  # how long a request waits for a connection before it fails
            # The pool retries a lost server with doubling delays (1, 2, 4 ... s) until this timeout, then a
            # request starts afresh: a short one means requests work again within seconds of a restart/failover.
            reconnect_timeout=max(connect_timeout, 5.0),
            open=False,
        )
        try:
            pool.open(wait=True, timeout=max(connect_timeout, 5.0))
        except PoolTimeout as exc:
            pool.close()
            raise PostgresConnectError(
                "open a connection pool to", where, f"no connection within {connect_timeout:g}s"
            ) from exc
        storage = cls(pool, url, dimension, exact_limit=exact_limit, applied_migrations=applied)
        if applied:
            log.info("PostgreSQL %s: applied schema migrations %s", where, applied)
        return storage

    def close(self) -> None:
        self._pool.close()

    def flush(self) -> None:
        """Nothing is cached outside PostgreSQL."""

    # -- connections --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self, action: str) -> Iterator[psycopg.Connection]:
        """A pooled connection; driver errors become one StorageError line naming the database and the reason."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StorageError(action, self.location, f"no database connection free or reachable: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(action, self.location, _reason(exc, self._url)) from exc

    @contextlib.contextmanager
    def _read(self, repeatable: bool = False) -> Iterator[psycopg.Connection]:
        """A read transaction; `repeatable` gives every statement inside the same snapshot."""
        with self._connection("read from") as conn, conn.transaction():
            if repeatable:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PgTransaction]:
        """A unit of work, committed when the block ends (acknowledge only after that)."""
        with self._connection("write to") as conn, conn.transaction():
            yield PgTransaction(self, conn)

    # -- the model guard --------------------------------------------------------------------------------

    def claim_model(self, model: str, dimension: int, allow_change: bool = False) -> None:
        """Record the embedding model on first use; a different one is refused unless `allow_change`
        (re-embedding), even on an empty store: another process may have claimed it a moment ago. The meta row is
        locked, so two processes cannot both claim."""
        if dimension != self.dimension:
            raise DimensionMismatch(self.dimension, dimension, self.location)
        with self.transaction() as tx:
            conn = tx.conn
            conn.execute("INSERT INTO meta (key, value) VALUES ('model', %s) ON CONFLICT (key) DO NOTHING", (model,))
            row = conn.execute("SELECT value FROM meta WHERE key = 'model' FOR UPDATE").fetchone()
            stored = str(row[0]) if row else model
            if stored == model:
                return
            if not allow_change:
                raise ModelMismatch(stored, model, self.location, embedder_setting_for(stored))
            conn.execute("UPDATE meta SET value = %s WHERE key = 'model'", (model,))
            log.info("PostgreSQL %s: embedding model %r replaces %r", self.location, model, stored)

    def meta(self) -> dict[str, str]:
        with self._read() as conn:
            return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta ORDER BY key")}

    # -- reads --------------------------------------------------------------------------------------------

    def get(self, memory_id: int) -> Memory | None:
        with self._read() as conn:
            return _get(conn, memory_id)

    def get_many(self, ids: Sequence[int]) -> dict[int, Memory]:
        if not ids:
            return {}
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM memories m WHERE m.id = ANY(%s)", (list(ids),)).fetchall()
        return {int(row[0]): _memory(row) for row in rows}

    def page(self, where: Filter, limit: int, offset: int) -> tuple[list[Memory], int]:
        """Newest first, and the total matching `where` (both from one snapshot)."""
        clause, params = _where(where)
        with self._read(repeatable=True) as conn:
            total = conn.execute(f"SELECT count(*) FROM memories m{clause}", params).fetchone()
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM memories m{clause} ORDER BY m.id DESC LIMIT %(limit)s OFFSET %(offset)s",
                {**params, "limit": limit, "offset": offset},
            ).fetchall()
        return [_memory(r) for r in rows], int(total[0]) if total else 0

    def find_by_hash(self, namespace: str, content_hash: str) -> int | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT id FROM memories WHERE namespace = %s AND content_hash = %s", (namespace, content_hash)
            ).fetchone()
        return int(row[0]) if row else None

    def count(self) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT count(*) FROM memories").fetchone()
        return int(row[0]) if row else 0

    def counts_by_namespace(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute("SELECT namespace, count(*) FROM memories GROUP BY namespace ORDER BY namespace")
            return {str(ns): int(n) for ns, n in rows}

    def iter_stored(self, batch: int = 1000) -> Iterator[StoredMemory]:
        """Every memory in id order with its model and chunks; each batch is read from one snapshot."""
        last = 0
        while True:
            with self._read(repeatable=True) as conn:
                rows = conn.execute(
                    f"SELECT {_COLUMNS}, m.model FROM memories m WHERE m.id > %s ORDER BY m.id LIMIT %s", (last, batch)
                ).fetchall()
                if not rows:
                    return
                chunks = _chunks_of(conn, [int(r[0]) for r in rows])
            for row in rows:
                yield StoredMemory(memory=_memory(row), model=str(row[8]), chunks=chunks.get(int(row[0]), ()))
            last = int(rows[-1][0])

    # -- search -------------------------------------------------------------------------------------------

    def vector_search(self, vector: np.ndarray, k: int, where: Filter) -> list[VectorHit]:
        """The k memories whose best chunk is closest to `vector`; never fewer than k when k memories match."""
        query = _vector(vector)
        clause, params = _where(where)
        params = {**params, "q": query}
        with self._read() as conn:
            if self._matching_at_most(conn, clause, params, self.exact_limit):
                return _exact_search(conn, clause, params, k)
            hits = _index_search(conn, clause, params, k)
            if len(hits) < k:  # the scan budget ran out before k memories passed the filter
                log.debug("HNSW scan found %d of %d memories: answering with the exact search", len(hits), k)
                return _exact_search(conn, clause, params, k)
            return hits

    def best_chunks(self, vector: np.ndarray, memory_ids: Sequence[int]) -> dict[int, VectorHit]:
        """The best chunk of each of `memory_ids` (for hits only the keyword leg found)."""
        if not memory_ids:
            return {}
        with self._read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (memory_id) memory_id, embedding <=> %(q)s AS distance, start_char, end_char"
                " FROM chunks WHERE memory_id = ANY(%(ids)s) ORDER BY memory_id, distance",
                {"q": _vector(vector), "ids": list(memory_ids)},
            ).fetchall()
        return {int(i): VectorHit(int(i), 1.0 - float(d), int(s), int(e)) for i, d, s, e in rows}

    @staticmethod
    def _matching_at_most(conn: psycopg.Connection, clause: str, params: dict[str, Any], limit: int) -> bool:
        """Whether at most `limit` memories match: a count that stops at limit + 1 rows, so it stays cheap. Without
        a filter the planner's row estimate answers when it is far above the limit (no scan at all)."""
        if not clause:
            estimate = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'memories'::regclass").fetchone()
            if estimate and float(estimate[0]) > 2 * limit:
                return False
        row = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM memories m{clause} LIMIT %(bound)s) s", {**params, "bound": limit + 1}
        ).fetchone()
        return row is not None and int(row[0]) <= limit

    def keyword_search(self, terms: Sequence[str], k: int, where: Filter) -> list[KeywordHit]:
        """Full-text relevance (ts_rank_cd over the English tsvector) for any of `terms`. Each term becomes a
        plainto_tsquery parameter: user text is never parsed as tsquery syntax."""
        terms = [t for t in terms if t]
        if not terms:
            return []
        clause, params = _where(where)
        query = " || ".join(f"plainto_tsquery('english', %(t{i})s)" for i in range(len(terms)))
        params = {**params, **{f"t{i}": term for i, term in enumerate(terms)}, "k": k}
        match = f"m.tsv @@ ({query})"
        clause = f"{clause} AND {match}" if clause else f" WHERE {match}"
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT m.id, ts_rank_cd(m.tsv, {query}, 1) AS score FROM memories m{clause}"
                " ORDER BY score DESC, m.id DESC LIMIT %(k)s",
                params,
            ).fetchall()
        return [KeywordHit(int(i), rank, float(score)) for rank, (i, score) in enumerate(rows, start=1)]

    # -- operations -------------------------------------------------------------------------------------

    def health(self) -> BackendHealth:
        """Counts, pgvector and index state, session settings and pool use; `problems` lists what is wrong."""
        problems: list[str] = []
        with self._read() as conn:
            counts = conn.execute("SELECT (SELECT count(*) FROM memories), (SELECT count(*) FROM chunks)").fetchone()
            memories, chunks = counts or (0, 0)
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            indexes = dict(
                conn.execute(
                    "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE i.indrelid IN ('memories'::regclass, 'chunks'::regclass)"
                ).fetchall()
            )
            settings = {
                name: str(conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()[0])  # type: ignore[index]
                for name in [*SESSION_SETTINGS, "synchronous_commit", "server_version"]
            }
            meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        for index, create in [*pg_schema.INDEXES.items(), ("memories_namespace_hash", "(the dedup constraint)")]:
            if index not in indexes:
                problems.append(f"index {index} is missing: {create}")
            elif not indexes[index]:
                problems.append(f"index {index} is invalid: REINDEX INDEX {index}")
        for name, wanted in SESSION_SETTINGS.items():
            if settings.get(name) != wanted:
                problems.append(f"{name} is {settings.get(name)!r}, not {wanted!r}: filtered searches may miss rows")
        if settings.get("synchronous_commit") == "off":
            problems.append("synchronous_commit is off: acknowledged writes may be lost in a crash")
        if int(meta.get("schema_version", "0")) != len(pg_schema.MIGRATIONS):
            problems.append(f"schema version {meta.get('schema_version')} != {len(pg_schema.MIGRATIONS)}")
        stats = self._pool.get_stats()
        return BackendHealth(
            backend=self.name,
            location=self.location,
            memories=int(memories),
            index={
                "kind": "hnsw (pgvector)",
                "chunks": int(chunks),
                "pgvector": str(version[0]) if version else None,
                "server_version": settings.get("server_version"),
                "schema_version": meta.get("schema_version"),
                "model": meta.get("model"),
                "dimension": meta.get("dimension"),
                "settings": {name: settings.get(name) for name in [*SESSION_SETTINGS, "synchronous_commit"]},
                "pool": {
                    "size": stats.get("pool_size", 0),
                    "max": self._pool.max_size,
                    "available": stats.get("pool_available", 0),
                    "waiting": stats.get("requests_waiting", 0),
                },
            },
            problems=tuple(problems),
        )

    # -- bulk copy (ltmc migrate) ---------------------------------------------------------------------------

    def copy_stored(self, items: Sequence[StoredMemory]) -> list[CopyOutcome]:
        """Copy memories from another store with their embeddings, in one transaction; one outcome per item, in
        order. A memory already here (same namespace and content hash) is left alone; a source id is kept unless
        another memory has it."""
        with self.transaction() as tx:
            conn = tx.conn
            ids = [item.memory.id for item in items]
            taken = {int(i) for (i,) in conn.execute("SELECT id FROM memories WHERE id = ANY(%s)", (ids,))}
            present = {
                (str(ns), str(h)): int(i)
                for ns, h, i in conn.execute(
                    "SELECT m.namespace, m.content_hash, m.id FROM memories m"
                    " JOIN unnest(%s::text[], %s::text[]) AS k(namespace, content_hash)"
                    " ON (m.namespace, m.content_hash) = (k.namespace, k.content_hash)",
                    ([i.memory.namespace for i in items], [i.memory.content_hash for i in items]),
                )
            }
            # Kept ids first, then move the sequence past them, then the renumbered ones: a new id from the
            # sequence can never collide with a source id of this batch, and none is ever reused later.
            fresh = [i for i in items if _key(i) not in present]
            keep = [i for i in fresh if i.memory.id not in taken]
            renumber = [i for i in fresh if i.memory.id in taken]
            outcomes = [CopyOutcome(i.memory.id, present[_key(i)], "present") for i in items if _key(i) in present]
            for status, group in (("copied", keep), ("renumbered", renumber)):
                for item in group:
                    try:
                        target = tx.insert(_new_memory(item), memory_id=item.memory.id if status == "copied" else None)
                    except DuplicateMemory as duplicate:  # a server stored it meanwhile
                        outcomes.append(CopyOutcome(item.memory.id, duplicate.existing_id, "present"))
                        continue
                    outcomes.append(CopyOutcome(item.memory.id, target, status))
                conn.execute(
                    "SELECT setval(pg_get_serial_sequence('memories', 'id'), top)"
                    " FROM (SELECT max(id) AS top FROM memories) s"
                    " WHERE top > (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM memories_id_seq)"
                )
        by_source = {outcome.source_id: outcome for outcome in outcomes}
        return [by_source[item.memory.id] for item in items]


class PgTransaction:
    """The unit of work on one pooled connection inside one PostgreSQL transaction."""

    def __init__(self, storage: PostgresStorage, conn: psycopg.Connection) -> None:
        self.storage = storage
        self.conn = conn

    def find_by_hash(self, namespace: str, content_hash: str) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM memories WHERE namespace = %s AND content_hash = %s", (namespace, content_hash)
        ).fetchone()
        return int(row[0]) if row else None

    def get(self, memory_id: int) -> Memory | None:
        return _get(self.conn, memory_id)

    def insert(self, memory: NewMemory, memory_id: int | None = None) -> int:
        """Insert with its chunks; returns the id. Should another writer have committed the same text in the same
        namespace since the caller's find_by_hash, ON CONFLICT leaves theirs and DuplicateMemory names its id
        (nothing written, the transaction usable). `memory_id` keeps a given id (copying from another store)."""
        values = {
            "namespace": memory.namespace,
            "text": memory.text,
            "tags": list(memory.tags),
            "metadata": Jsonb(memory.metadata),
            "created_at": _when(memory.created_at),
            "updated_at": _when(memory.updated_at),
            "content_hash": memory.content_hash,
            "model": memory.model,
        }
        columns = list(values)
        if memory_id is not None:
            values["id"] = memory_id
            columns.insert(0, "id")
        statement = sql.SQL(
            "INSERT INTO memories ({columns}) {overriding} VALUES ({values})"
            " ON CONFLICT (namespace, content_hash) DO NOTHING RETURNING id"
        ).format(
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            overriding=sql.SQL("OVERRIDING SYSTEM VALUE" if memory_id is not None else ""),
            values=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
        )
        row = self.conn.execute(statement, values).fetchone()
        if row is None:  # ON CONFLICT: another writer committed this text since the caller's find_by_hash
            existing = self.find_by_hash(memory.namespace, memory.content_hash)
            if existing is None:
                raise StorageError("write to", self.storage.location, "a concurrent insert vanished; try again")
            raise DuplicateMemory(existing)
        new_id = int(row[0])
        self._write_chunks(new_id, memory.chunks)
        return new_id

    def update(self, memory_id: int, change: MemoryChange) -> None:
        values: dict[str, Any] = {
            "id": memory_id,
            "text": change.text,
            "tags": list(change.tags),
            "metadata": Jsonb(change.metadata),
            "updated_at": _when(change.updated_at),
            "content_hash": change.content_hash,
            "model": change.model,
        }
        # The model names the chunks' embeddings: it changes only with them.
        model = ", model = %(model)s" if change.chunks is not None else ""
        try:
            with self.conn.transaction():  # a savepoint, so a duplicate leaves the transaction usable
                self.conn.execute(
                    "UPDATE memories SET text = %(text)s, tags = %(tags)s, metadata = %(metadata)s,"
                    f" updated_at = %(updated_at)s, content_hash = %(content_hash)s{model} WHERE id = %(id)s",
                    values,
                )
        except psycopg.errors.UniqueViolation:
            raise InvalidInput(f"another memory in the namespace of memory {memory_id} already has this text") from None
        if change.chunks is not None:
            self.conn.execute("DELETE FROM chunks WHERE memory_id = %s", (memory_id,))
            self._write_chunks(memory_id, change.chunks)

    def delete(self, memory_id: int) -> bool:
        """Chunks go with the row (ON DELETE CASCADE), the keyword entry is the row's own column."""
        return self.conn.execute("DELETE FROM memories WHERE id = %s", (memory_id,)).rowcount > 0

    def replace_chunks(self, memory_id: int, model: str, chunks: Sequence[Chunk]) -> None:
        self.conn.execute("UPDATE memories SET model = %s WHERE id = %s", (model, memory_id))
        self.conn.execute("DELETE FROM chunks WHERE memory_id = %s", (memory_id,))
        self._write_chunks(memory_id, chunks)

    def _write_chunks(self, memory_id: int, chunks: Sequence[Chunk]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO chunks (memory_id, ordinal, start_char, end_char, embedding) VALUES (%s, %s, %s, %s, %b)",
                [(memory_id, i, c.start, c.end, _vector(c.vector)) for i, c in enumerate(chunks)],
            )


# -- opening helpers ---------------------------------------------------------------------------------------


def _timeout_arg(seconds: float) -> int:
    return max(1, round(seconds))  # libpq takes whole seconds; 0 would mean "wait forever"


def _connect(url: str, timeout: float) -> psycopg.Connection:
    where = redact_url(url)
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=_timeout_arg(timeout), application_name="ltmc")
    except psycopg.ProgrammingError as exc:  # not a connection string libpq understands
        raise PostgresSetupError(
            f"LTMC_DATABASE_URL {where} is not a valid PostgreSQL URL ({_reason(exc, url)}): "
            f"use postgresql://user:password@host:5432/dbname"
        ) from None
    except psycopg.OperationalError as exc:
        raise _connect_error(exc, url) from None


def _connect_error(exc: psycopg.OperationalError, url: str) -> PostgresConnectError:
    """One line for each way a connection fails, naming the fix."""
    where = redact_url(url)
    reason = _reason(exc, url)
    lowered = reason.lower()
    if "password" in lowered or "authentication" in lowered:
        return PostgresConnectError(
            "log in to", where, f"{reason}: fix the user or password in LTMC_DATABASE_URL (or in ~/.pgpass)"
        )
    if "role" in lowered and "does not exist" in lowered:
        return PostgresConnectError("log in to", where, f"{reason}: create that user, or fix LTMC_DATABASE_URL")
    if "database" in lowered and "does not exist" in lowered:
        return PostgresConnectError(
            "open", where, f"{reason}: create it (createdb NAME), or fix the database name in LTMC_DATABASE_URL"
        )
    return PostgresConnectError(
        "connect to",
        where,
        f"{reason}: check that PostgreSQL is running and reachable, and the host and port in LTMC_DATABASE_URL",
    )


def _reason(exc: BaseException, url: str) -> str:
    """The driver's message as one line without the password: the server's primary message, or the first line
    of libpq's last 'failed: ' part (dropping its hints and the query excerpt)."""
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag is not None else None) or ""
    if not text:
        lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        failed = [line for line in lines if "failed: " in line]
        text = (failed[-1].rsplit("failed: ", 1)[1] if failed else lines[0]).strip()
    text = text.replace("FATAL:  ", "").replace("FATAL: ", "").strip()
    return scrub(" ".join(text.split()), url) or type(exc).__name__


def _prepare(conn: psycopg.Connection, url: str, dimension: int, read_only: bool) -> list[int]:
    """pgvector present and new enough, schema current, stored dimension equal to `dimension`."""
    where = redact_url(url)
    if read_only:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        if row is None:
            raise PostgresSetupError(f"the vector extension is not enabled in {where}: start LTMC once read-write")
        pg_schema.check_pgvector(str(row[0]), where)
        pg_schema.read_only_check(conn, where)
        _check_dimension(conn, dimension, where, may_change=False)
        return []
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (pg_schema.MIGRATION_LOCK,))
            pg_schema.ensure_pgvector(conn, where)
        applied = pg_schema.migrate(conn, dimension, where)
        _check_dimension(conn, dimension, where, may_change=True)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PostgresSetupError(
            f"cannot create LTMC's tables in {where} ({_reason(exc, url)}): grant this user CREATE on the "
            f"database's schema, or have the owner start LTMC once"
        ) from None
    except psycopg.errors.DuplicateTable as exc:
        raise StorageError(
            "set up",
            where,
            f"{_reason(exc, url)}: another application's table has the same name; give LTMC a database of its own",
        ) from exc
    except psycopg.Error as exc:
        raise StorageError("set up", where, _reason(exc, url)) from exc
    return applied


def _check_dimension(conn: psycopg.Connection, dimension: int, where: str, may_change: bool) -> None:
    """The chunk vectors' dimension is fixed by the column type: an empty store may change it, a full one not."""
    with conn.transaction():
        if may_change:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (pg_schema.MIGRATION_LOCK,))
        row = conn.execute("SELECT value FROM meta WHERE key = 'dimension'").fetchone()
        stored = int(row[0]) if row else dimension
        if stored == dimension:
            return
        if not may_change or conn.execute("SELECT EXISTS (SELECT 1 FROM memories)").fetchone() == (True,):
            raise DimensionMismatch(stored, dimension, where)
        conn.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw")
        conn.execute(
            sql.SQL("ALTER TABLE chunks ALTER COLUMN embedding TYPE vector({})").format(sql.Literal(dimension))
        )
        conn.execute(pg_schema.INDEXES["chunks_embedding_hnsw"])
        conn.execute("UPDATE meta SET value = %s WHERE key = 'dimension'", (str(dimension),))
        log.info("PostgreSQL %s: the empty store now takes %d-dimensional vectors (was %d)", where, dimension, stored)


# -- row helpers ----------------------------------------------------------------------------------------------


def _when(epoch: float) -> datetime:
    """Epoch seconds as a UTC timestamp (microseconds, as timestamptz keeps them); far values are clamped."""
    if epoch != epoch:  # NaN
        raise InvalidInput("a time must be a number, not NaN")
    return datetime.fromtimestamp(min(max(epoch, _MIN_TIME), _MAX_TIME), UTC)


def _vector(value: np.ndarray) -> Vector:
    return Vector(np.ascontiguousarray(value, dtype=np.float32).reshape(-1))


def _where(where: Filter) -> tuple[str, dict[str, Any]]:
    """The filter as ` WHERE ...` over `memories m`, and its parameters."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if where.namespace is not None:
        clauses.append("m.namespace = %(namespace)s")
        params["namespace"] = where.namespace
    if where.tags:
        clauses.append("m.tags @> %(tags)s::text[]")
        params["tags"] = list(where.tags)
    if where.since is not None:
        clauses.append("m.created_at >= %(since)s")
        params["since"] = _when(where.since)
    if where.until is not None:
        clauses.append("m.created_at <= %(until)s")
        params["until"] = _when(where.until)
    for i, phrase in enumerate(where.mentions):
        clauses.append(f"m.tsv @@ phraseto_tsquery('english', %(mention{i})s)")
        params[f"mention{i}"] = phrase
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _memory(row: Sequence[Any]) -> Memory:
    return Memory(
        id=int(row[0]),
        text=str(row[1]),
        namespace=str(row[2]),
        tags=list(row[3]),
        metadata=dict(row[4]),
        created_at=row[5].timestamp(),
        updated_at=row[6].timestamp(),
        content_hash=str(row[7]),
    )


def _get(conn: psycopg.Connection, memory_id: int) -> Memory | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM memories m WHERE m.id = %s", (memory_id,)).fetchone()
    return _memory(row) if row else None


def _chunks_of(conn: psycopg.Connection, ids: list[int]) -> dict[int, tuple[Chunk, ...]]:
    found: dict[int, list[Chunk]] = {}
    with conn.cursor(binary=True) as cur:
        cur.execute(
            "SELECT memory_id, start_char, end_char, embedding FROM chunks WHERE memory_id = ANY(%s)"
            " ORDER BY memory_id, ordinal",
            (ids,),
        )
        for memory_id, start, end, embedding in cur:
            found.setdefault(int(memory_id), []).append(Chunk(int(start), int(end), embedding.to_numpy()))
    return {memory_id: tuple(chunks) for memory_id, chunks in found.items()}


def _key(item: StoredMemory) -> tuple[str, str]:
    return item.memory.namespace, item.memory.content_hash


def _new_memory(item: StoredMemory) -> NewMemory:
    m = item.memory
    return NewMemory(
        text=m.text,
        namespace=m.namespace,
        tags=tuple(m.tags),
        metadata=m.metadata,
        created_at=m.created_at,
        updated_at=m.updated_at,
        content_hash=m.content_hash,
        model=item.model,
        chunks=item.chunks,
    )


# -- the two vector paths ---------------------------------------------------------------------------------------


def _exact_search(conn: psycopg.Connection, clause: str, params: dict[str, Any], k: int) -> list[VectorHit]:
    """Every chunk of every matching memory compared: the best chunk per memory, then the k best memories.
    DISTINCT ON orders by memory first, so the planner cannot answer it from the (approximate) HNSW index."""
    rows = conn.execute(
        "SELECT memory_id, distance, start_char, end_char FROM ("
        " SELECT DISTINCT ON (c.memory_id) c.memory_id, c.embedding <=> %(q)s AS distance, c.start_char, c.end_char"
        f" FROM memories m JOIN chunks c ON c.memory_id = m.id{clause}"
        " ORDER BY c.memory_id, distance"
        ") best ORDER BY distance, memory_id LIMIT %(k)s",
        {**params, "k": k},
    ).fetchall()
    return [VectorHit(int(i), 1.0 - float(d), int(s), int(e)) for i, d, s, e in rows]


def _index_search(conn: psycopg.Connection, clause: str, params: dict[str, Any], k: int) -> list[VectorHit]:
    """The HNSW path: fetch chunks nearest first (an iterative scan applies the filter as it goes), keep each
    memory's best chunk, and fetch more chunks while fewer than k memories came back and more may exist."""
    limit = k * 2 + 8
    while True:
        rows = conn.execute(
            "SELECT c.memory_id, c.embedding <=> %(q)s AS distance, c.start_char, c.end_char"
            f" FROM chunks c JOIN memories m ON m.id = c.memory_id{clause}"
            " ORDER BY c.embedding <=> %(q)s LIMIT %(limit)s",
            {**params, "limit": limit},
        ).fetchall()
        best: dict[int, tuple[float, int, int]] = {}
        for memory_id, distance, start, end in rows:
            if memory_id not in best or distance < best[memory_id][0]:
                best[memory_id] = (float(distance), int(start), int(end))
        if len(best) >= k or len(rows) < limit:
            break
        limit *= 4  # many chunks of the same memories: over-fetch harder
    # relaxed_order returns rows nearly sorted: sort strictly here.
    ranked = sorted(best.items(), key=lambda item: (item[1][0], item[0]))[:k]
    return [VectorHit(i, 1.0 - d, s, e) for i, (d, s, e) in ranked]
