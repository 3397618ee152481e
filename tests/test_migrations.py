"""Upgrading a data directory written by an earlier release (schema 1: release 0.1; schema 2: float32 chunks), a kill
-9 in the middle of it, and a database newer than the code.

The schema-1 fixture is written with plain sqlite3 and faiss the way release 0.1 (`main` before the storage seam)
wrote it: one row per memory with its whole-text embedding in `memories.embedding`, no chunks and no full-text
table, `meta.schema_version` = 1, and an index snapshot whose keys are memory ids (manifest format 1). The DDL is
frozen here on purpose: it is what is on users' disks, whatever the current code's migrations say.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ltms.embeddings.hashing import HashingEmbedder
from ltms.retrieval.chunking import Chunker
from ltms.service import MODES, MemoryService, content_hash
from ltms.storage import db as sqlite_db
from ltms.storage.migrations import SchemaTooNew
from ltms.vector_store import halfvec
from ltms.vector_store.faiss_store import FaissIndex, SnapshotStore
from tests.helpers import child_env, close_pipes, hash_settings
from tests.ops_helpers import ltmc

# Release 0.1's schema (ltms/storage/db.py on main, SCHEMA_VERSION = 1), verbatim.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
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
CREATE TABLE IF NOT EXISTS changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id INTEGER NOT NULL,
    op        TEXT NOT NULL CHECK (op IN ('add', 'update', 'delete')),
    at        REAL NOT NULL
);
"""

TOPICS = ("billing", "search", "deploys", "onboarding", "the garden", "the choir", "holidays", "the bike")


def short_text(i: int) -> str:
    return f"Note {i}: a reminder about {TOPICS[i % len(TOPICS)]}, filed by team {i % 13} in week {i % 52}."


def long_text(i: int) -> str:
    """Over the hashing embedder's 254-token window, with a sentence only this memory has past the first chunk."""
    lead = " ".join(f"Section {j} of handbook {i} repeats the usual guidance on {TOPICS[j % 8]}." for j in range(40))
    return f"{lead} The secret word for handbook {i} is heliotrope{i}. {lead}"


@dataclass(frozen=True)
class V1Store:
    data_dir: Path
    texts: list[str]
    tags: dict[int, list[str]]


def write_v1_store(data_dir: Path, texts: list[str], tags: dict[int, list[str]] | None = None) -> V1Store:
    """A data directory as release 0.1 left it: memories 1..n with their whole-text vectors, a change log, tags,
    and a saved index snapshot of memory-id keys."""
    tags = tags or {}
    embedder = HashingEmbedder()
    paths = hash_settings(data_dir).paths
    data_dir.mkdir(mode=0o700, parents=True)
    conn = sqlite3.connect(str(paths.db_path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_SCHEMA)
    conn.execute("BEGIN")
    for key, value in (
        ("schema_version", "1"),
        ("database_id", uuid.uuid4().hex),
        ("model", embedder.name),
        ("dimension", str(embedder.dimension)),
    ):
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (key, value))
    vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
    for start in range(0, len(texts), 500):
        vectors[start : start + 500] = embedder.embed(texts[start : start + 500])
    now = time.time() - len(texts)
    for i, text in enumerate(texts, 1):
        conn.execute(
            "INSERT INTO memories(id, namespace, text, tags, metadata, created_at, updated_at, content_hash,"
            " embedding, model) VALUES (?, 'default', ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                i,
                text,
                json.dumps(tags.get(i, [])),
                json.dumps({"n": i}),
                now + i,
                now + i,
                content_hash(text),
                vectors[i - 1].tobytes(),
                embedder.name,
            ),
        )
        conn.executemany("INSERT INTO memory_tags(memory_id, tag) VALUES (?, ?)", [(i, t) for t in tags.get(i, [])])
        conn.execute("INSERT INTO changes(memory_id, op, at) VALUES (?, 'add', ?)", (i, now + i))
    conn.execute("COMMIT")
    database_id = conn.execute("SELECT value FROM meta WHERE key = 'database_id'").fetchone()[0]
    conn.close()
    index = FaissIndex(embedder.dimension)
    index.add(np.arange(1, len(texts) + 1, dtype=np.int64), vectors)
    snapshots = SnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path)
    snapshots.save(index.serialize(), len(texts), embedder.dimension, embedder.name, len(texts), database_id)
    manifest = json.loads(paths.manifest_path.read_text())
    manifest["format"] = 1  # release 0.1's manifest: its keys are memory ids
    paths.manifest_path.write_text(json.dumps(manifest, indent=1))
    return V1Store(data_dir, texts, tags)


@dataclass(frozen=True)
class State:
    version: int
    tables: set[str]
    memory_columns: set[str]
    memories: int
    memories_with_chunks: int
    chunk_columns: set[str]


def inspect(data_dir: Path) -> State:
    """The database as it is on disk, read with plain sqlite3 (opening it with ltms would migrate it)."""
    conn = sqlite3.connect(f"file:{hash_settings(data_dir).paths.db_path}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        columns = {row[1] for row in conn.execute("PRAGMA table_info(memories)")}
        memories = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
        with_chunks = (
            conn.execute("SELECT count(DISTINCT memory_id) FROM chunks").fetchone()[0] if "chunks" in tables else 0
        )
        chunk_columns = {row[1] for row in conn.execute("PRAGMA table_info(chunks)")}
    finally:
        conn.close()
    return State(version, tables, columns, memories, with_chunks, chunk_columns)


def is_v1(state: State, memories: int) -> bool:
    return (
        state.version == 1
        and "chunks" not in state.tables
        and not any(t.startswith("memory_fts") for t in state.tables)
        and "embedding" in state.memory_columns
        and state.memories == memories
    )


def is_v2(state: State, memories: int) -> bool:
    return (
        state.version == 2
        and "chunks" in state.tables
        and "chunks_v3" not in state.tables
        and "key" not in state.chunk_columns
        and "memory_fts" in state.tables
        and "embedding" not in state.memory_columns
        and state.memories == state.memories_with_chunks == memories
    )


def is_v3(state: State, memories: int) -> bool:
    """The current schema: chunks keyed by chunk key (float16 vectors), full-text index, no per-memory vector."""
    return (
        state.version == 3
        and "key" in state.chunk_columns
        and "chunks_v3" not in state.tables
        and "memory_fts" in state.tables
        and "embedding" not in state.memory_columns
        and state.memories == state.memories_with_chunks == memories
    )


def assert_upgraded_and_searchable(store: V1Store) -> None:
    """Open the store (completing any upgrade): every memory kept as it was, with chunks and FTS backfilled, found
    in every mode (and by the right id)."""
    n = len(store.texts)
    with MemoryService(hash_settings(store.data_dir)) as service:
        assert is_v3(inspect(store.data_dir), n), inspect(store.data_dir)
        assert service.stats()["memories"] == n
        for memory_id in (1, n // 2, n):
            memory = service.get(memory_id)
            assert memory.text == store.texts[memory_id - 1] and memory.metadata == {"n": memory_id}
            assert memory.tags == tuple(store.tags.get(memory_id, []))
        long_ids = [i for i, text in enumerate(store.texts, 1) if "heliotrope" in text]
        assert long_ids
        for memory_id in (long_ids[0], long_ids[-1]):
            secret = f"The secret word for handbook {memory_id - 1} is heliotrope{memory_id - 1}."
            for mode in MODES:  # past the first chunk: found only because the upgrade chunked it
                hits = service.retrieve(secret, k=1, mode=mode)
                assert [h.memory.id for h in hits] == [memory_id], (mode, secret)
                assert hits[0].passage is not None and secret in hits[0].passage.text
        short_id = next(i for i, text in enumerate(store.texts, 1) if "heliotrope" not in text)
        for mode in MODES:
            hits = service.retrieve(store.texts[short_id - 1], k=1, mode=mode)
            assert [h.memory.id for h in hits] == [short_id], mode
        tagged = [i for i, tags in store.tags.items() if "pinned" in tags]
        hits = service.retrieve("reminder", k=50, tags=["pinned"], mode="keyword")
        assert sorted(h.memory.id for h in hits) == sorted(tagged)


# -- upgrading in place ---------------------------------------------------------------------------------------------


def test_a_release_0_1_data_directory_is_upgraded_in_place(data_dir: Path) -> None:
    texts = [long_text(i) if i % 10 == 3 else short_text(i) for i in range(60)]
    store = write_v1_store(data_dir, texts, tags={2: ["pinned"], 7: ["pinned", "work"], 40: ["work"]})
    old_vectors = {
        row[0]: row[1]
        for row in sqlite3.connect(hash_settings(data_dir).paths.db_path).execute("SELECT id, embedding FROM memories")
    }
    assert is_v1(inspect(data_dir), len(texts))
    progress: list[tuple[int, int]] = []
    MemoryService(hash_settings(data_dir), progress=lambda done, total: progress.append((done, total))).close()
    assert (len(texts), len(texts)) in progress  # every memory went through the chunking step
    # A memory that fits one window keeps the vector release 0.1 stored, at float16 (no re-embedding); a long one is
    # chunked.
    conn = sqlite3.connect(hash_settings(data_dir).paths.db_path)
    chunks = conn.execute("SELECT memory_id, count(*), min(embedding) FROM chunks GROUP BY memory_id").fetchall()
    conn.close()
    for memory_id, count, first in chunks:
        if "heliotrope" in texts[memory_id - 1]:
            assert count > 1
        else:
            assert count == 1 and first == halfvec.encode(np.frombuffer(old_vectors[memory_id], dtype=np.float32))
    # The old snapshot (memory-id keys) was moved aside, never trusted, never deleted.
    assert list(data_dir.glob("*.bad-*")), sorted(p.name for p in data_dir.iterdir())
    assert_upgraded_and_searchable(store)


def test_a_second_open_after_the_upgrade_changes_nothing(data_dir: Path) -> None:
    texts = [long_text(i) if i % 10 == 3 else short_text(i) for i in range(30)]
    store = write_v1_store(data_dir, texts)
    MemoryService(hash_settings(data_dir)).close()
    db = hash_settings(data_dir).paths.db_path
    before = sqlite3.connect(db).execute("SELECT count(*), max(seq) FROM changes").fetchone()
    progress: list[tuple[int, int]] = []
    MemoryService(hash_settings(data_dir), progress=lambda d, t: progress.append((d, t))).close()
    assert progress == []
    assert sqlite3.connect(db).execute("SELECT count(*), max(seq) FROM changes").fetchone() == before
    assert_upgraded_and_searchable(store)


# -- kill -9 in the middle of the upgrade ---------------------------------------------------------------------------

UPGRADE = """
import sys
from ltms.config import Settings
from ltms.service import MemoryService

pause_at = sys.argv[1]

def progress(done, total):
    print(f"progress {done} {total}", flush=True)
    if pause_at == "first" or (pause_at == "last" and done == total):
        sys.stdin.readline()  # wait here, inside the upgrade's transaction, until killed

MemoryService(Settings.load(), progress=progress).close()
print("upgraded", flush=True)
"""


@pytest.fixture(scope="module")
def big_v1_store(tmp_path_factory: pytest.TempPathFactory) -> V1Store:
    """Big enough that the upgrade takes a while (several batches, long memories to embed). Tests copy it."""
    texts = [long_text(i) if i % 25 == 3 else short_text(i) for i in range(3000)]
    return write_v1_store(tmp_path_factory.mktemp("big") / "data", texts, tags={5: ["pinned"], 6: ["pinned"]})


def copy_store(store: V1Store, target: Path) -> V1Store:
    target.mkdir(mode=0o700, parents=True)
    for path in store.data_dir.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return V1Store(target, store.texts, store.tags)


def start_upgrade(data_dir: Path, pause_at: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", UPGRADE, pause_at],
        env=child_env(data_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def kill_at_progress(child: subprocess.Popen[str], want: str) -> str:
    """Read the child's progress lines until `want` ('first' line, or the 'last' one: done == total); kill -9."""
    assert child.stdout is not None
    try:
        for line in child.stdout:
            if not line.startswith("progress"):
                continue
            _, done, total = line.split()
            if want == "first" or done == total:
                os.kill(child.pid, signal.SIGKILL)
                return line.strip()
        raise AssertionError(f"the upgrade ended (status {child.wait()}) without the progress line wanted")
    finally:
        child.wait(timeout=60)
        close_pipes(child)


def kill_mid_upgrade(
    source: V1Store, tmp_path: Path, pause_at: str, kill_at: str, old_state: Callable[[State, int], bool]
) -> None:
    """Upgrade a copy of `source` in a child killed with SIGKILL at `kill_at`'s progress line: the database is in
    `old_state` or fully upgraded, and the next open completes the upgrade."""
    store = copy_store(source, tmp_path / "data")
    n = len(store.texts)
    child = start_upgrade(store.data_dir, pause_at)
    line = kill_at_progress(child, kill_at)
    assert child.returncode == -signal.SIGKILL, line
    state = inspect(store.data_dir)
    if pause_at == "never":
        assert old_state(state, n) or is_v3(state, n), state
    else:  # killed inside the transaction: none of it may be visible
        assert old_state(state, n), state
    assert_upgraded_and_searchable(store)  # the next open completes the upgrade


@pytest.mark.parametrize(
    ("pause_at", "kill_at"),
    [
        ("first", "first"),  # paused after the first batch of chunks: killed mid-backfill
        ("last", "last"),  # paused after the last batch: killed before the column drop, FTS rebuild and commit
        ("never", "first"),  # running freely: killed wherever it is when its first progress line is read
    ],
)
def test_a_kill_9_during_the_upgrade_leaves_the_old_state_or_the_new_one(
    big_v1_store: V1Store, tmp_path: Path, pause_at: str, kill_at: str
) -> None:
    kill_mid_upgrade(big_v1_store, tmp_path, pause_at, kill_at, old_state=is_v1)


# -- schema 2 -> 3: chunk vectors at float16, keyed by chunk key -------------------------------------------------


def upgrade_to_v2(store: V1Store) -> V1Store:
    """Apply schema 2 only (with that step's own code, which never changes), as release 0.2 left a store."""
    paths = hash_settings(store.data_dir).paths
    current = sqlite_db.MIGRATIONS
    sqlite_db.MIGRATIONS = current[:2]
    try:
        sqlite_db.Database(paths.db_path, chunker=Chunker(HashingEmbedder())).close()
    finally:
        sqlite_db.MIGRATIONS = current
    assert is_v2(inspect(store.data_dir), len(store.texts))
    return store


V2_CHUNKS = "SELECT memory_id, ordinal, start_char, end_char, embedding FROM chunks ORDER BY memory_id, ordinal"


def test_a_schema_2_store_moves_to_float16_chunks_in_place(data_dir: Path) -> None:
    texts = [long_text(i) if i % 10 == 3 else short_text(i) for i in range(300)]
    store = upgrade_to_v2(write_v1_store(data_dir, texts, tags={2: ["pinned"]}))
    db = hash_settings(data_dir).paths.db_path
    with contextlib.closing(sqlite3.connect(db)) as conn:
        old = conn.execute(V2_CHUNKS).fetchall()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size_before = db.stat().st_size
    progress: list[tuple[int, int]] = []
    with MemoryService(hash_settings(data_dir), progress=lambda done, total: progress.append((done, total))):
        wal = db.with_name(db.name + "-wal")  # it held the whole upgrade: truncated afterwards, not left that size
        assert not wal.exists() or wal.stat().st_size < size_before // 4
    assert progress[-1] == (len(old), len(old))  # counted in chunks
    with contextlib.closing(sqlite3.connect(db)) as conn:
        new = conn.execute(V2_CHUNKS).fetchall()
        keys = [row[0] for row in conn.execute("SELECT key FROM chunks ORDER BY key")]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # Every chunk kept: same memory, ordinal and span; its float32 vector rounded to float16, nothing else.
    assert new == [(m, o, s, e, halfvec.encode(np.frombuffer(blob, dtype=np.float32))) for m, o, s, e, blob in old]
    assert keys == [(m << sqlite_db.CHUNK_BITS) | o for m, o, *_ in old]
    assert free == 0 and db.stat().st_size < size_before  # the pages the old table held went back to the disk
    assert_upgraded_and_searchable(store)


def test_deleting_a_memory_deletes_its_chunks_by_key_range(data_dir: Path) -> None:
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        gone = service.store(long_text(1)).id
        kept = service.store(long_text(2)).id
        service.delete(gone)
        assert [h.memory.id for h in service.retrieve("heliotrope1", k=5, mode="semantic")] == [kept]
    with contextlib.closing(sqlite3.connect(hash_settings(data_dir).paths.db_path)) as conn:
        left = {row[0] for row in conn.execute("SELECT memory_id FROM chunks")}
        trigger = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'memories_chunks_delete'").fetchone()[0]
        body = trigger.split("BEGIN", 1)[1].rsplit("END", 1)[0].strip().rstrip(";").replace("old.id", "?")
        plan = " ".join(str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {body}", (gone, gone)))
    assert left == {kept}
    assert "SEARCH chunks USING INTEGER PRIMARY KEY" in plan, plan  # a range seek, never a scan of every chunk


@pytest.fixture(scope="module")
def big_v2_store(big_v1_store: V1Store, tmp_path_factory: pytest.TempPathFactory) -> V1Store:
    return upgrade_to_v2(copy_store(big_v1_store, tmp_path_factory.mktemp("big2") / "data"))


@pytest.mark.parametrize(
    ("pause_at", "kill_at"),
    [("first", "first"), ("last", "last"), ("never", "first")],  # as for schema 1 above
)
def test_a_kill_9_during_the_float16_upgrade_leaves_schema_2_or_3(
    big_v2_store: V1Store, tmp_path: Path, pause_at: str, kill_at: str
) -> None:
    kill_mid_upgrade(big_v2_store, tmp_path, pause_at, kill_at, old_state=is_v2)


# -- newer than the code --------------------------------------------------------------------------------------------


def test_a_database_newer_than_the_code_is_refused_with_one_clear_line(data_dir: Path) -> None:
    with MemoryService(hash_settings(data_dir)) as service:
        service.store("written by a newer LTMC")
    db = hash_settings(data_dir).paths.db_path
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    before = db.read_bytes()

    with pytest.raises(SchemaTooNew) as caught:
        MemoryService(hash_settings(data_dir))
    message = str(caught.value)
    assert "\n" not in message and "99" in message and str(db) in message

    result = subprocess.run(
        [sys.executable, "-m", "ltms", "stats"], env=child_env(data_dir), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "schema version" in line]
    assert len(errors) == 1 and "99" in errors[0] and errors[0].startswith("ltmc: error:"), result.stderr
    assert "Traceback" not in result.stderr
    assert db.read_bytes() == before and inspect(data_dir).version == 99  # nothing was changed


def exported(data_dir: Path, target: Path) -> list[dict[str, Any]]:
    result = ltmc("export", str(target), "--with-embeddings", data_dir=data_dir, cwd=target.parent)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in target.read_text().splitlines()]


def test_export_writes_the_same_lines_before_and_after_the_float16_upgrade(data_dir: Path, tmp_path: Path) -> None:
    """The file format does not change: a schema-2 store (exported read-only, not upgraded) and the same store after
    the upgrade give the same memories and spans; each vector is the float32 one rounded to float16."""
    texts = [long_text(i) if i % 10 == 3 else short_text(i) for i in range(20)]
    upgrade_to_v2(write_v1_store(data_dir, texts))
    before = exported(data_dir, tmp_path / "before.jsonl")
    assert is_v2(inspect(data_dir), len(texts))  # export never upgrades
    MemoryService(hash_settings(data_dir)).close()
    after = exported(data_dir, tmp_path / "after.jsonl")
    assert len(after) == len(before) == len(texts)
    for old, new in zip(before, after, strict=True):
        old_vectors = [chunk.pop("embedding") for chunk in old["chunks"]]
        new_vectors = [chunk.pop("embedding") for chunk in new["chunks"]]
        assert new == old
        rounded = [np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32).tolist() for v in old_vectors]
        assert new_vectors == rounded
