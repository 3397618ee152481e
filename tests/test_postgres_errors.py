"""Opening a PostgreSQL store that cannot work: one line naming the fix, never the password, nothing changed.

Server unreachable, authentication failed, no such database, pgvector missing or older than 0.8, a user who may
not create tables, the dimension differing from the stored one, a read-only open; and the settings that select
the backend.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from ltms.config import Settings
from ltms.errors import LTMCError, ModelMismatch, StorageError
from ltms.storage.base import Chunk, NewMemory
from ltms.storage.pg_schema import DimensionMismatch, PostgresSetupError, check_pgvector, pgvector_version
from ltms.storage.pg_url import redact_url, scrub, secrets_of
from ltms.storage.postgres import PostgresConnectError, PostgresStorage
from tests.helpers import free_port

DIM = 8


def open_fails(url: str, *secrets: str, dimension: int = DIM, **options: Any) -> LTMCError:
    """Open `url`, expect an LTMCError, and check it is one line without any of `secrets`."""
    with pytest.raises(LTMCError) as caught:
        PostgresStorage.open(url, dimension, connect_timeout=5, **options)
    message = str(caught.value)
    assert "\n" not in message, message
    for secret in secrets:
        assert secret not in message, message
    return caught.value


def memory(text: str, dim: int = DIM) -> NewMemory:
    v = np.ones(dim, dtype=np.float32) / np.sqrt(dim)
    return NewMemory(text, "default", (), {}, time.time(), time.time(), f"h-{text}", "m", (Chunk(0, len(text), v),))


def test_an_unreachable_server_says_so_and_names_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://ltmc:hunter2-secret@127.0.0.1:{free_port()}/ltmc"
    error = open_fails(url, "hunter2-secret")
    assert isinstance(error, PostgresConnectError) and isinstance(error, StorageError)
    assert str(error).startswith("cannot connect to postgresql://ltmc:***@127.0.0.1:")
    assert "Connection refused" in str(error) and "LTMC_DATABASE_URL" in str(error)
    assert "hunter2-secret" not in caplog.text


def test_a_wrong_password_says_authentication_failed(pg_cluster: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = pg_cluster.url("postgres", password="wrong-password-xyz")
    error = open_fails(url, "wrong-password-xyz", pg_cluster.password)
    assert isinstance(error, PostgresConnectError)
    assert "password authentication failed" in str(error) and "fix the user or password" in str(error)
    assert "wrong-password-xyz" not in caplog.text and pg_cluster.password not in caplog.text


def test_a_missing_database_says_how_to_create_it(pg_cluster: Any) -> None:
    error = open_fails(pg_cluster.url("no_such_db"), pg_cluster.password)
    assert 'database "no_such_db" does not exist' in str(error) and "createdb" in str(error)


def test_a_malformed_url_is_refused_without_echoing_it() -> None:
    error = open_fails("postgresql://u:pw-secret-1@host:notaport/db", "pw-secret-1")
    assert "postgresql://" in str(error)
    assert "LTMC_DATABASE_URL" in str(open_fails("   "))


@pytest.fixture
def limited_user(pg_cluster: Any) -> tuple[str, str]:
    """A database without pgvector (made from template0) and a user who may connect but not create anything."""
    suffix = secrets.token_hex(3)
    name, user = f"bare_{suffix}", f"limited_{suffix}"
    pg_cluster.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    pg_cluster.execute(f"CREATE ROLE {user} LOGIN PASSWORD 'limited-secret-pw'")
    return name, user


def test_pgvector_not_enabled_and_not_allowed_to_enable_it(pg_cluster: Any, limited_user: tuple[str, str]) -> None:
    name, user = limited_user
    url = pg_cluster.url(name, user=user, password="limited-secret-pw")
    error = open_fails(url, "limited-secret-pw")
    assert isinstance(error, PostgresSetupError)
    assert "CREATE EXTENSION vector" in str(error) and "superuser" in str(error)

    # Once the extension is there, the same user still may not create LTMC's tables: that is one line too.
    pg_cluster.execute("CREATE EXTENSION vector", dbname=name)
    error = open_fails(url, "limited-secret-pw")
    assert "cannot create LTMC's tables" in str(error) and "grant this user CREATE" in str(error)
    with pg_cluster.connect(name) as conn:  # nothing was created
        assert conn.execute("SELECT to_regclass('memories'), to_regclass('meta')").fetchone() == (None, None)

    pg_cluster.execute(f"GRANT CREATE ON SCHEMA public TO {user}", dbname=name)
    PostgresStorage.open(url, DIM).close()


def test_a_pgvector_older_than_0_8_is_refused(pg_cluster: Any) -> None:
    name = pg_cluster.create_database("old")
    with pg_cluster.connect(name) as conn:  # what an old install reports (the wheel ships only 0.8.5)
        conn.execute("UPDATE pg_extension SET extversion = '0.7.4' WHERE extname = 'vector'")
    error = open_fails(pg_cluster.url(name), pg_cluster.password)
    assert "pgvector 0.7.4" in str(error) and "0.8 or newer" in str(error)
    assert "ALTER EXTENSION vector UPDATE" in str(error)
    with pg_cluster.connect(name) as conn:
        assert conn.execute("SELECT to_regclass('memories')").fetchone() == (None,)


@pytest.mark.parametrize(("version", "ok"), [("0.8.0", True), ("0.8.5", True), ("1.0", True), ("0.7.4", False)])
def test_pgvector_version_check(version: str, ok: bool) -> None:
    if ok:
        check_pgvector(version, "db")
    else:
        with pytest.raises(PostgresSetupError):
            check_pgvector(version, "db")
    assert pgvector_version("0.8.0-dev") == (0, 8, 0)


def test_a_different_dimension_is_refused_once_memories_exist(pg_url: str) -> None:
    storage = PostgresStorage.open(pg_url, DIM)
    storage.close()
    wider = PostgresStorage.open(pg_url, DIM * 2)  # still empty: the column takes the new dimension
    with wider.transaction() as tx:
        tx.insert(memory("sixteen", DIM * 2))
    wider.close()
    error = open_fails(pg_url, dimension=DIM)
    assert isinstance(error, DimensionMismatch) and isinstance(error, ModelMismatch)
    assert "16-dimensional" in str(error) and "8-dimensional" in str(error) and "LTMC_EMBEDDER" in str(error)
    again = PostgresStorage.open(pg_url, DIM * 2)
    assert again.count() == 1
    again.close()


def test_read_only_opens_refuse_writes_and_never_migrate(pg_url: str) -> None:
    assert "start LTMC once without read-only mode" in str(open_fails(pg_url, read_only=True))
    PostgresStorage.open(pg_url, DIM).close()
    reader = PostgresStorage.open(pg_url, DIM, read_only=True)
    try:
        assert reader.count() == 0
        with pytest.raises(StorageError, match="read-only"), reader.transaction() as tx:
            tx.insert(memory("nope"))
        assert reader.count() == 0
    finally:
        reader.close()


def test_health_and_errors_after_open_never_show_the_password(pg_url: str, pg_cluster: Any) -> None:
    storage = PostgresStorage.open(pg_url, DIM)
    try:
        assert pg_cluster.password not in repr(storage.health()) and pg_cluster.password not in storage.location
        with pytest.raises(StorageError) as caught, storage.transaction() as tx:
            tx.conn.execute("SELECT * FROM no_such_table")
        assert "no_such_table" in str(caught.value) and pg_cluster.password not in str(caught.value)
        assert str(caught.value).startswith("cannot write to postgresql://postgres:***@")
    finally:
        storage.close()


@pytest.mark.parametrize(
    ("url", "shown", "secrets"),
    [
        (
            "postgresql://bob:s3cr%40t@db:5432/x?sslmode=require",
            "postgresql://bob:***@db:5432/x?sslmode=require",
            ["s3cr@t"],
        ),
        ("postgres://bob@db/x?password=qwerty123", "postgres://bob@db/x?password=***", ["qwerty123"]),
        ("postgresql://db/x", "postgresql://db/x", []),
        ("postgresql://u:pw@h1:5432,h2:5433/x", "postgresql://u:***@h1:5432,h2:5433/x", ["pw"]),
        ("host=db password='it is secret' dbname=x", "host=db password=*** dbname=x", ["it is secret"]),
        ("host=db user=u password=abc123", "host=db user=u password=***", ["abc123"]),
    ],
)
def test_redact_url(url: str, shown: str, secrets: list[str]) -> None:
    assert redact_url(url) == shown
    assert secrets_of(url) == secrets
    for secret in secrets:
        if len(secret) >= 4:
            assert secret not in scrub(f"failed for {secret}", url)


def test_settings_select_the_backend_and_never_show_the_database_password(tmp_path: Path) -> None:
    env = {
        "LTMC_DATA_DIR": str(tmp_path),
        "LTMC_BACKEND": "postgres",
        "LTMC_DATABASE_URL": "postgresql://ltmc:pa55word-x@db:5432/ltmc",
        "LTMC_DATABASE_POOL_SIZE": "4",
    }
    settings = Settings.load(env=env)
    assert (settings.backend, settings.database_url, settings.database_pool_size) == (
        "postgres",
        "postgresql://ltmc:pa55word-x@db:5432/ltmc",
        4,
    )
    rows = {name: value for name, value, _ in settings.diagnostics()}
    assert rows["database_url"] == "postgresql://ltmc:***@db:5432/ltmc"
    assert all("pa55word-x" not in value for value in rows.values())
    assert Settings.load(env={"LTMC_DATA_DIR": str(tmp_path)}).backend == "sqlite"
    with pytest.raises(LTMCError, match="LTMC_BACKEND='mysql' is invalid: must be one of sqlite, postgres"):
        Settings.load(env={**env, "LTMC_BACKEND": "mysql"})


def test_a_connection_is_checked_before_use(pg_url: str, pg_cluster: Any) -> None:
    """A pooled connection the server dropped (restart, failover, idle kill) is replaced, not handed out."""
    storage = PostgresStorage.open(pg_url, DIM, pool_size=1)
    try:
        assert storage.count() == 0
        with pg_cluster.connect() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'ltmc'"
                " AND datname = %s",
                (pg_url.rsplit("/", 1)[1],),
            )
        assert storage.count() == 0
    finally:
        storage.close()


def test_setup_sql_errors_name_the_database(pg_cluster: Any) -> None:
    name = pg_cluster.create_database("broken")
    with pg_cluster.connect(name) as conn:  # a foreign table squatting on LTMC's name
        conn.execute("CREATE TABLE memories (x int)")
    error = open_fails(pg_cluster.url(name), pg_cluster.password)
    assert "memories" in str(error) and f"/{name}" in str(error)
    with pytest.raises(psycopg.Error), pg_cluster.connect(name) as conn:
        conn.execute("SELECT 1 FROM chunks")  # the failed step left nothing behind


def test_a_session_setting_the_server_refuses_fails_the_open_loudly(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pgvector only warns and falls back to `off` for a bad value set before it loads: filtered searches would
    silently come back short. Loading it first makes the bad value an error at open."""
    from ltms.storage import postgres

    monkeypatch.setitem(postgres.SESSION_SETTINGS, "hnsw.iterative_scan", "sideways")
    error = open_fails(pg_url)
    assert str(error).startswith("cannot configure a session on postgresql://postgres:***@")
    assert 'invalid value for parameter "hnsw.iterative_scan": "sideways"' in str(error)


def test_health_names_a_missing_index_with_the_statement_that_makes_it(pg_url: str, pg_cluster: Any) -> None:
    storage = PostgresStorage.open(pg_url, DIM)
    try:
        health = storage.health()
        assert health.problems == () and health.index["pgvector"] == "0.8.5"
        assert health.index["settings"]["hnsw.iterative_scan"] == "relaxed_order"
        with pg_cluster.connect(pg_url.rsplit("/", 1)[1]) as conn:
            conn.execute("DROP INDEX chunks_embedding_hnsw")
        [problem] = storage.health().problems
        assert problem == (
            "index chunks_embedding_hnsw is missing: "
            "CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)"
        )
    finally:
        storage.close()
