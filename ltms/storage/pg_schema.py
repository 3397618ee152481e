"""The PostgreSQL schema: pgvector checks, the numbered migrations, and the one-line errors for a bad database.

Tables: `meta` (schema_version, model, dimension), `memories` (the records, a generated English `tsvector` with a
GIN index for the keyword leg) and `chunks` (character spans and their `vector(dim)`, an HNSW cosine index).
Migrations run under a transaction-scoped advisory lock, so two servers opening a new database at once apply each
step exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ltms.errors import LTMCError, ModelMismatch
from ltms.storage.migrations import Migration, Progress, latest, pending

MIN_PGVECTOR = (0, 8)
# pg_advisory_xact_lock key for "LTMC is changing its schema in this database" (any constant unique to LTMC).
MIGRATION_LOCK = 0x4C544D43_00000001


class PostgresSetupError(LTMCError):
    """The database cannot hold LTMC's memories yet; the message names the fix."""


class DimensionMismatch(ModelMismatch):
    """The stored embeddings have another dimension than the configured model makes."""

    def __init__(self, stored: int, configured: int, where: str) -> None:
        LTMCError.__init__(
            self,
            f"the memories in {where} have {stored}-dimensional embeddings, but the configured model makes "
            f"{configured}-dimensional ones: configure the model that made them again (LTMC_EMBEDDER), or point "
            f"LTMC_DATABASE_URL at a new database and copy the memories over with ltmc export / ltmc import",
        )
        self.stored = str(stored)
        self.configured = str(configured)


# Every index by name, with the statement that makes it (health names the statement when one is missing).
INDEXES = {
    "memories_namespace_id": "CREATE INDEX memories_namespace_id ON memories (namespace, id)",
    "memories_created_at": "CREATE INDEX memories_created_at ON memories (created_at)",
    "memories_tags": "CREATE INDEX memories_tags ON memories USING gin (tags)",
    "memories_tsv": "CREATE INDEX memories_tsv ON memories USING gin (tsv)",
    "chunks_embedding_hnsw": "CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)",
}


@dataclass(frozen=True)
class MigrationContext:
    """What a PostgreSQL migration step gets: the connection (inside the step's transaction) and the dimension."""

    conn: psycopg.Connection
    dimension: int


def _v1_initial(context: MigrationContext, progress: Progress | None) -> None:
    conn = context.conn
    conn.execute(
        """
        CREATE TABLE memories (
            -- ALWAYS AS IDENTITY: ids come from the sequence and are never reused
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            namespace    text NOT NULL,
            text         text NOT NULL,
            tags         text[] NOT NULL DEFAULT '{}',
            metadata     jsonb NOT NULL DEFAULT '{}',
            created_at   timestamptz NOT NULL,
            updated_at   timestamptz NOT NULL,
            content_hash text NOT NULL,
            model        text NOT NULL,
            tsv          tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED,
            CONSTRAINT memories_namespace_hash UNIQUE (namespace, content_hash)
        )"""
    )
    for name in ("memories_namespace_id", "memories_created_at", "memories_tags", "memories_tsv"):
        conn.execute(INDEXES[name])
    conn.execute(
        sql.SQL(
            """
        CREATE TABLE chunks (
            memory_id  bigint NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
            ordinal    integer NOT NULL,
            start_char integer NOT NULL,
            end_char   integer NOT NULL,
            embedding  vector({dim}) NOT NULL,
            PRIMARY KEY (memory_id, ordinal)
        )"""
        ).format(dim=sql.Literal(context.dimension))
    )
    conn.execute(INDEXES["chunks_embedding_hnsw"])
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('dimension', %s) ON CONFLICT (key) DO NOTHING",
        (str(context.dimension),),
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "memories, chunks (vector + HNSW), keyword tsvector + GIN, meta", _v1_initial),
)


def pgvector_version(text: str) -> tuple[int, ...]:
    """'0.8.5' -> (0, 8, 5); a suffix such as '0.8.0-dev' keeps its numeric part."""
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_pgvector(installed: str, where: str) -> None:
    """Refuse a pgvector older than 0.8: iterative index scans (filtered search that still returns k rows) came
    with 0.8."""
    if pgvector_version(installed)[:2] < MIN_PGVECTOR:
        raise PostgresSetupError(
            f"{where} has pgvector {installed}, but LTMC needs 0.8 or newer (filtered searches return too few "
            f"rows before 0.8): install pgvector >= 0.8 on the server, then run ALTER EXTENSION vector UPDATE"
        )


def ensure_pgvector(conn: psycopg.Connection, where: str) -> str:
    """Create the vector extension if it is missing and we may; returns its version. Inside a transaction."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        available = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        if available is None:
            raise PostgresSetupError(
                f"the PostgreSQL server of {where} does not have pgvector: install pgvector >= 0.8 on it "
                f"(e.g. the postgresql-16-pgvector package), then restart LTMC"
            )
        check_pgvector(str(available[0]), where)
        try:
            with conn.transaction():  # a savepoint: keep the outer transaction usable to report the error
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege:
            raise PostgresSetupError(
                f"the vector extension is not enabled in {where}, and this user may not enable it: "
                f"run CREATE EXTENSION vector; in that database as a superuser (or the database owner)"
            ) from None
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    version = str(row[0]) if row else "?"
    check_pgvector(version, where)
    return version


def schema_version(conn: psycopg.Connection) -> int:
    """The number of the last migration applied here; 0 for a database LTMC has never used."""
    exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(
    conn: psycopg.Connection,
    dimension: int,
    where: str,
    migrations: Sequence[Migration] = MIGRATIONS,
    progress: Progress | None = None,
) -> list[int]:
    """Apply every pending step, each in its own transaction with its new number; returns the versions applied.

    Raises SchemaTooNew for a database written by a newer LTMC, before changing anything."""
    applied: list[int] = []
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            if schema_version(conn) == 0:  # only then: CREATE needs a privilege a later open may not have
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)")
            steps = pending(migrations, schema_version(conn), where)
            if not steps:
                return applied
            step = steps[0]
            step.apply(MigrationContext(conn, dimension), progress)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(step.version),),
            )
            applied.append(step.version)


def read_only_check(conn: psycopg.Connection, where: str, migrations: Sequence[Migration] = MIGRATIONS) -> None:
    """A read-only open changes nothing: the schema must already be current."""
    found = schema_version(conn)
    pending(migrations, found, where)  # SchemaTooNew when newer
    if found < latest(migrations):
        raise PostgresSetupError(
            f"{where} has schema version {found}, this LTMC needs {latest(migrations)}: start LTMC once without "
            f"read-only mode to upgrade it"
        )
