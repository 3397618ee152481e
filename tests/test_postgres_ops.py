"""Operations on a PostgreSQL store through the real CLI (in process) against a real SQLite store and a real
PostgreSQL: `ltmc migrate --to URL`, export/import on both backends, and `ltmc doctor` on postgres."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ltms.service import MemoryService
from tests.helpers import hash_settings
from tests.ops_helpers import MEMORIES, build_store, ltmc_here, one_line_error

MODES = ("semantic", "keyword", "hybrid")


def pg_env(url: str) -> dict[str, str]:
    return {"LTMC_BACKEND": "postgres", "LTMC_DATABASE_URL": url}


def texts_by_namespace(service: MemoryService) -> set[tuple[str, str, tuple[str, ...], str]]:
    memories = service.list(limit=100).items
    return {(m.text, m.namespace, tuple(sorted(m.tags)), json.dumps(m.metadata, sort_keys=True)) for m in memories}


EXPECTED = {(t, ns, tuple(sorted(tags)), json.dumps(meta, sort_keys=True)) for t, tags, meta, ns in MEMORIES}


def finds_every_memory(data_dir: Path, url: str) -> None:
    """A MemoryService on the postgres backend finds each memory by its own text in every retrieval mode."""
    with MemoryService(hash_settings(data_dir, **pg_env(url)), background_saves=False) as service:
        assert texts_by_namespace(service) == EXPECTED
        for text, _tags, _meta, namespace in MEMORIES:
            for mode in MODES:
                hits = service.retrieve(text, k=10, namespace=namespace, mode=mode)
                assert text in [h.memory.text for h in hits], (mode, text)


def test_migrate_copies_the_embedded_store_and_a_second_run_copies_nothing(
    tmp_path: Path, data_dir: Path, pg_url: str, pg_cluster: Any
) -> None:
    build_store(data_dir)
    first = ltmc_here("migrate", "--to", pg_url, data_dir=data_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"copied {len(MEMORIES)} with their ids, 0 with new ids (id taken), 0 already there" in first.stdout
    assert "checked: counts" in first.stdout
    assert pg_cluster.password not in first.stdout + first.stderr and "***" in first.stdout
    finds_every_memory(data_dir, pg_url)

    again = ltmc_here("migrate", "--to", pg_url, data_dir=data_dir, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"copied 0 with their ids, 0 with new ids (id taken), {len(MEMORIES)} already there" in again.stdout


def test_migrate_errors_are_one_line_without_the_password(tmp_path: Path, data_dir: Path, pg_cluster: Any) -> None:
    build_store(data_dir)
    url = pg_cluster.url("postgres", password="wrong-secret-pw")
    error = one_line_error(ltmc_here("migrate", "--to", url, data_dir=data_dir, cwd=tmp_path))
    assert "password authentication failed" in error and "wrong-secret-pw" not in error and "***" in error

    empty = tmp_path / "empty"
    build_store(empty, [])
    nothing = ltmc_here("migrate", "--to", url, data_dir=empty, cwd=tmp_path)
    assert nothing.returncode == 0 and "holds no memories: nothing to migrate" in nothing.stdout, nothing.stderr

    missing = one_line_error(ltmc_here("migrate", "--to", url, data_dir=tmp_path / "none", cwd=tmp_path))
    assert "nothing to migrate" in missing and "wrong-secret-pw" not in missing


def test_export_import_round_trip_sqlite_to_postgres_and_back(tmp_path: Path, data_dir: Path, pg_url: str) -> None:
    build_store(data_dir)
    from_sqlite = tmp_path / "from-sqlite.jsonl"
    assert ltmc_here("export", str(from_sqlite), data_dir=data_dir, cwd=tmp_path).returncode == 0

    # The postgres side runs on another data directory: nothing it reads or writes can come from the SQLite store.
    pg_side = tmp_path / "pg-side"
    imported = ltmc_here("import", str(from_sqlite), data_dir=pg_side, cwd=tmp_path, env=pg_env(pg_url))
    assert imported.returncode == 0, imported.stderr
    assert f"imported {len(MEMORIES)}, already present 0" in imported.stdout
    finds_every_memory(pg_side, pg_url)

    from_postgres = tmp_path / "from-postgres.jsonl"
    exported = ltmc_here(
        "export", str(from_postgres), "--with-embeddings", data_dir=pg_side, cwd=tmp_path, env=pg_env(pg_url)
    )
    assert exported.returncode == 0, exported.stderr
    assert f"exported {len(MEMORIES)} memories" in exported.stdout
    lines = [json.loads(line) for line in from_postgres.read_text().splitlines()]
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        original_model = service.model
    originals = {json.loads(line)["text"]: json.loads(line) for line in from_sqlite.read_text().splitlines()}
    assert len(lines) == len(MEMORIES)
    for line in lines:  # the same format: every field, the same values and times (ids are new on import)
        original = originals[line["text"]]
        same = ("namespace", "tags", "metadata", "created_at", "updated_at")
        assert {k: line[k] for k in same} == {k: original[k] for k in same}
        assert line["model"] == original_model
        assert line["chunks"] and all(len(c["embedding"]) > 0 for c in line["chunks"])

    back = tmp_path / "back"
    again = ltmc_here("import", str(from_postgres), data_dir=back, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with MemoryService(hash_settings(back), background_saves=False) as service:
        assert texts_by_namespace(service) == EXPECTED
    # importing the same file into postgres again adds nothing
    twice = ltmc_here("import", str(from_postgres), data_dir=pg_side, cwd=tmp_path, env=pg_env(pg_url))
    assert f"imported 0, already present {len(MEMORIES)}" in twice.stdout, twice.stderr


# -- doctor --------------------------------------------------------------------------------------------------


def pg_doctor(tmp_path: Path, url: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """`ltmc doctor --json` on the postgres backend: (status, the report, everything printed)."""
    result = ltmc_here(
        "doctor", "--json", *extra, data_dir=tmp_path / "pg-side", cwd=tmp_path, env=pg_env(url) | (env or {})
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stdout + result.stderr


def a_postgres_store(tmp_path: Path, data_dir: Path, url: str) -> None:
    build_store(data_dir)
    assert ltmc_here("migrate", "--to", url, data_dir=data_dir, cwd=tmp_path).returncode == 0


def test_doctor_on_a_healthy_postgres_store(tmp_path: Path, data_dir: Path, pg_url: str, pg_cluster: Any) -> None:
    a_postgres_store(tmp_path, data_dir, pg_url)
    status, report, printed = pg_doctor(tmp_path, pg_url)
    assert status == 0 and report["ok"] and report["problems"] == [], report
    checks = {c["name"]: c for c in report["checks"]}
    assert [c["status"] for c in report["checks"]] == ["ok", "ok", "ok", "ok", "ok", "info", "ok"], report["checks"]
    assert tuple(int(p) for p in checks["pgvector"]["version"].split(".")[:2]) >= (0, 8)
    assert "chunks_embedding_hnsw" in checks["indexes"]["detail"] and "memories_tsv" in checks["indexes"]["detail"]
    assert checks["hnsw settings"]["settings"]["hnsw.iterative_scan"] == "relaxed_order"
    assert (checks["counts"]["memories"], checks["model"]["stored"]) == (len(MEMORIES), checks["model"]["configured"])
    assert pg_cluster.password not in printed

    table = ltmc_here("doctor", data_dir=tmp_path / "pg-side", cwd=tmp_path, env=pg_env(pg_url))
    assert table.returncode == 0 and "Healthy: no problems found." in table.stdout
    assert "ltmc doctor: PostgreSQL store postgresql://postgres:***@" in table.stdout
    assert "hnsw settings" in table.stdout and pg_cluster.password not in table.stdout + table.stderr


def test_doctor_names_a_missing_or_invalid_index(tmp_path: Path, data_dir: Path, pg_url: str, pg_cluster: Any) -> None:
    a_postgres_store(tmp_path, data_dir, pg_url)
    database = pg_url.rsplit("/", 1)[1]
    pg_cluster.execute("DROP INDEX chunks_embedding_hnsw", database)
    pg_cluster.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'memories_tsv'::regclass", database)
    status, report, printed = pg_doctor(tmp_path, pg_url)
    assert status == 1 and sorted(p["code"] for p in report["problems"]) == ["index_problem", "index_problem"]
    messages = " ".join(p["message"] for p in report["problems"])
    assert "index chunks_embedding_hnsw is missing: CREATE INDEX chunks_embedding_hnsw" in messages
    assert "index memories_tsv is invalid: REINDEX INDEX memories_tsv" in messages
    assert pg_cluster.password not in printed


def test_doctor_model_guard_on_postgres(tmp_path: Path, data_dir: Path, pg_url: str, pg_cluster: Any) -> None:
    a_postgres_store(tmp_path, data_dir, pg_url)
    pg_cluster.execute("UPDATE meta SET value = 'another-model' WHERE key = 'model'", pg_url.rsplit("/", 1)[1])
    status, report, _ = pg_doctor(tmp_path, pg_url)
    assert status == 1 and [p["code"] for p in report["problems"]] == ["model_mismatch"]
    assert "embedded with another-model" in report["problems"][0]["message"]


def test_doctor_on_an_unreachable_server_is_one_problem_without_the_password(tmp_path: Path) -> None:
    from tests.helpers import free_port

    url = f"postgresql://ltmc:hidden-secret-pw@127.0.0.1:{free_port()}/ltmc"
    status, report, printed = pg_doctor(tmp_path, url)
    assert status == 1 and [p["code"] for p in report["problems"]] == ["database_unusable"]
    assert "hidden-secret-pw" not in printed and "***" in report["problems"][0]["message"]
