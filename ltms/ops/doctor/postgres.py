"""Checks of a PostgreSQL store (LTMC_BACKEND=postgres): reachable, pgvector >= 0.8, the indexes present and
valid, the HNSW settings in effect on a pooled connection, counts, and the model guard. Read-only: the store is
opened read-only (nothing is created or migrated) and nothing here has an automatic fix. The URL shown is
redacted and driver errors are scrubbed of the password (ltms.storage.pg_url) before they reach a message."""

from __future__ import annotations

from collections.abc import Iterable

from ltms.config import Settings
from ltms.embeddings import embedder_setting_for
from ltms.errors import LTMCError
from ltms.ops.doctor.embedder import check_embedder
from ltms.ops.doctor.report import INFO, OK, PROBLEM, Check, Problem, Report
from ltms.storage import pg_schema
from ltms.storage.base import BackendHealth
from ltms.storage.pg_url import redact_url

SETTINGS_FIX = (
    "the server refuses LTMC's per-connection settings: check that pgvector >= 0.8 is installed and that "
    "nothing (ALTER ROLE/DATABASE ... SET) overrides hnsw.* for this user"
)


def diagnose_postgres(settings: Settings) -> Report:
    """Every check of the configured PostgreSQL store, without changing anything."""
    from ltms.storage.postgres import SESSION_SETTINGS, PostgresStorage

    checks: list[Check] = []
    problems: list[Problem] = []

    def add(check: Check, found: Iterable[Problem] = ()) -> None:
        checks.append(check)
        problems.extend(found)

    embedder_check, embedder_problems, configured = check_embedder(settings)
    add(embedder_check, embedder_problems)
    url = settings.database_url or ""
    where = redact_url(url) if url else "(LTMC_DATABASE_URL is not set)"
    dimension = configured[1] if configured else 1
    try:
        try:
            storage = PostgresStorage.open(url, dimension, pool_size=1, read_only=True)
        except pg_schema.DimensionMismatch as exc:  # reported by the model guard below; open at the stored one
            storage = PostgresStorage.open(url, int(exc.stored), pool_size=1, read_only=True)
    except LTMCError as exc:  # unreachable, login refused, no pgvector or too old, schema missing: one line each
        message = str(exc)
        add(Check("database", PROBLEM, message), [Problem("database_unusable", message, _remedy(message), None)])
        return Report(settings=settings.diagnostics(), checks=checks, problems=problems)
    try:
        health = storage.health()
    except LTMCError as exc:
        storage.close()
        message = str(exc)
        add(Check("database", PROBLEM, message), [Problem("database_unusable", message, _remedy(message), None)])
        return Report(settings=settings.diagnostics(), checks=checks, problems=problems)
    storage.close()
    info = health.index
    add(
        Check(
            "database",
            OK,
            f"{where}: PostgreSQL {info.get('server_version')}, schema version {info.get('schema_version')}",
            {"location": where, "server_version": info.get("server_version"), "schema": info.get("schema_version")},
        )
    )
    add(*_check_pgvector(str(info.get("pgvector") or "")))
    add(*_check_listed(health, "indexes", "index ", "index_problem"))
    session = dict(info.get("settings") or {})
    wrong = {name: session.get(name) for name, wanted in SESSION_SETTINGS.items() if session.get(name) != wanted}
    if wrong:
        shown = ", ".join(f"{n}={v!r} (wanted {SESSION_SETTINGS[n]!r})" for n, v in wrong.items())
        message = f"on a pooled connection {shown}: filtered searches may return fewer than k memories"
        add(
            Check("hnsw settings", PROBLEM, message, {"settings": session}),
            [Problem("hnsw_settings", message, SETTINGS_FIX, None)],
        )
    else:
        shown = ", ".join(f"{n}={session.get(n)}" for n in SESSION_SETTINGS)
        add(Check("hnsw settings", OK, f"in effect on a pooled connection: {shown}", {"settings": session}))
    other = [p for p in health.problems if not p.startswith(("index ", "hnsw."))]
    chunks = int(info.get("chunks") or 0)
    counts = Check(
        "counts", INFO, f"{health.memories} memories, {chunks} chunks", {"memories": health.memories, "chunks": chunks}
    )
    add(counts, [Problem("database_state", p, "see the message", None) for p in other])
    add(*_check_model(info.get("model"), info.get("dimension"), configured, where))
    return Report(settings=settings.diagnostics(), checks=checks, problems=problems)


def _check_pgvector(version: str) -> tuple[Check, list[Problem]]:
    if version and pg_schema.pgvector_version(version)[:2] >= pg_schema.MIN_PGVECTOR:
        return Check("pgvector", OK, f"version {version}", {"version": version}), []
    message = f"pgvector {version or '(not installed)'} is older than 0.8: filtered searches return too few rows"
    remedy = "install pgvector >= 0.8 on the server, then run ALTER EXTENSION vector UPDATE"
    return Check("pgvector", PROBLEM, message, {"version": version}), [
        Problem("pgvector_too_old", message, remedy, None)
    ]


def _check_listed(health: BackendHealth, name: str, prefix: str, code: str) -> tuple[Check, list[Problem]]:
    """The backend's own problems that start with `prefix` (each names its statement) as one check."""
    found = [p for p in health.problems if p.startswith(prefix)]
    if not found:
        listed = ", ".join(sorted(pg_schema.INDEXES))
        return Check(name, OK, f"present and valid: {listed}, memories_namespace_hash"), []
    remedy = "run the statement named (as the database owner); CREATE INDEX CONCURRENTLY avoids blocking writers"
    return Check(name, PROBLEM, "; ".join(found)), [Problem(code, p, remedy, None) for p in found]


def _check_model(
    stored: object, stored_dimension: object, configured: tuple[str, int] | None, where: str
) -> tuple[Check, list[Problem]]:
    data = {"stored": stored, "stored_dimension": stored_dimension, "configured": configured[0] if configured else None}
    if stored is None:
        return Check("model", INFO, "no model has stored a memory here yet", data), []
    if configured is None or (str(stored), str(stored_dimension)) == (configured[0], str(configured[1])):
        return Check("model", OK, f"{stored}, {stored_dimension} dimensions", data), []
    setting = embedder_setting_for(str(stored))
    message = (
        f"the memories in {where} were embedded with {stored} ({stored_dimension} dimensions), "
        f"but the configured model is {configured[0]} ({configured[1]} dimensions): the server refuses to start"
    )
    remedy = (
        f"set LTMC_EMBEDDER={setting} again" if setting else f"configure the model {stored} again (LTMC_EMBEDDER)"
    ) + ", or point LTMC_DATABASE_URL at a new database and copy the memories over with ltmc export / ltmc import"
    return Check("model", PROBLEM, message, data), [Problem("model_mismatch", message, remedy, None)]


def _remedy(_message: str) -> str:
    # The backend's one-line errors name their fix themselves.
    return "do what the message names, then run ltmc doctor again"
