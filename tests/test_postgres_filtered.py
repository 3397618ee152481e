"""Filtered vector search on PostgreSQL: a 1 % filter still returns k memories, the nearest ones.

pgvector applies WHERE after the HNSW candidate list: with its defaults a 1 % filter returns about 0.5 of 10 rows,
with no error (shared/docs/postgres.md). These tests run on a real HNSW index, show the trap is real on this data,
and that the backend's path (iterative scans, exact search for few matches, exact fallback) returns k rows that
match an exact search.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from ltms.storage import postgres
from ltms.storage.base import Chunk, Filter, NewMemory
from ltms.storage.postgres import PostgresStorage

N = 2000
DIM = 32
K = 10
RARE_EVERY = 100  # namespace "rare": 1 % of the memories


@pytest.fixture(scope="module")
def loaded(pg_cluster: Any) -> Iterator[tuple[str, np.ndarray]]:
    """A database of N clustered vectors, 1 % of them in namespace 'rare', 30 % tagged 'thirty'."""
    url = pg_cluster.url(pg_cluster.create_database("filtered"))
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(40, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 40, N)] + 0.35 * rng.normal(size=(N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    storage = PostgresStorage.open(url, DIM)
    storage.claim_model("m", DIM)
    for start in range(0, N, 500):
        with storage.transaction() as tx:
            for i in range(start, min(N, start + 500)):
                text = f"memory {i}"
                tx.insert(
                    NewMemory(
                        text,
                        "rare" if i % RARE_EVERY == 7 else "common",
                        ("thirty",) if i % 10 < 3 else (),
                        {},
                        float(i),
                        float(i),
                        hashlib.sha256(text.encode()).hexdigest(),
                        "m",
                        (Chunk(0, len(text), vectors[i]),),
                    )
                )
    storage.close()
    yield url, vectors


def queries(n: int = 8) -> np.ndarray:
    """Query vectors in the crowd: near the cluster centres, where most neighbours are 'common'."""
    rng = np.random.default_rng(99)
    q = rng.normal(size=(n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_ids(vectors: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
    """Memory ids (1-based insertion order) of the k nearest among `allowed` row numbers, by brute force."""
    sims = vectors[allowed] @ q
    order = np.argsort(-sims, kind="stable")[:k]
    return [int(allowed[i]) + 1 for i in order]


RARE = np.array([i for i in range(N) if i % RARE_EVERY == 7])
THIRTY = np.array([i for i in range(N) if i % 10 < 3])


@pytest.fixture
def storage(loaded: tuple[str, np.ndarray]) -> Iterator[PostgresStorage]:
    opened = PostgresStorage.open(loaded[0], DIM, pool_size=2)
    yield opened
    opened.close()


def test_a_1_percent_filter_returns_k_memories_equal_to_exact_search(
    storage: PostgresStorage, loaded: tuple[str, np.ndarray]
) -> None:
    vectors = loaded[1]
    for q in queries():
        hits = storage.vector_search(q, K, Filter(namespace="rare"))
        assert [h.memory_id for h in hits] == exact_ids(vectors, q, RARE, K)


# Make the planner take the HNSW index even on this small table (it would rather sort exactly here).
_INDEX_ONLY = [("enable_seqscan", "off"), ("enable_sort", "off")]
_INDEX_SQL = (
    "SELECT c.memory_id FROM chunks c JOIN memories m ON m.id = c.memory_id{clause}"
    " ORDER BY c.embedding <=> %(q)s LIMIT %(limit)s"
)


def _index_only(conn: psycopg.Connection) -> None:
    for name, value in _INDEX_ONLY:
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))


def test_the_hnsw_path_itself_returns_k_at_1_percent_where_pgvector_defaults_return_fewer(
    storage: PostgresStorage, loaded: tuple[str, np.ndarray]
) -> None:
    url, vectors = loaded
    recalls = []
    for q in queries():
        clause, params = _with_q(Filter(namespace="rare"), q)
        with storage._read() as conn:
            _index_only(conn)
            plan = conn.execute(f"EXPLAIN {_INDEX_SQL.format(clause=clause)}", {**params, "limit": 28}).fetchall()
            assert "chunks_embedding_hnsw" in str(plan), plan
            hits = postgres._index_search(conn, clause, params, K)
        assert len(hits) == K
        recalls.append(len({h.memory_id for h in hits} & set(exact_ids(vectors, q, RARE, K))) / K)
    assert np.mean(recalls) >= 0.95, recalls

    # The same query with pgvector's defaults (no iterative scan, ef_search 40): the trap is real on this data.
    short = []
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        with conn.transaction():
            _index_only(conn)
            for q in queries():
                clause, params = _with_q(Filter(namespace="rare"), q)
                short.append(len(conn.execute(_INDEX_SQL.format(clause=clause), {**params, "limit": K}).fetchall()))
    assert np.mean(short) < K / 2, short


def test_a_30_percent_filter_on_the_index_path_keeps_recall(
    loaded: tuple[str, np.ndarray],
) -> None:
    url, vectors = loaded
    storage = PostgresStorage.open(url, DIM, pool_size=1, exact_limit=10)  # 600 matches: the index path
    try:
        recalls = []
        for q in queries():
            hits = storage.vector_search(q, K, Filter(tags=("thirty",)))
            assert len(hits) == K
            recalls.append(len({h.memory_id for h in hits} & set(exact_ids(vectors, q, THIRTY, K))) / K)
        assert np.mean(recalls) >= 0.95, recalls
    finally:
        storage.close()


def test_when_the_scan_budget_runs_out_the_exact_search_answers(
    loaded: tuple[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, vectors = loaded
    # A scan budget of 1 tuple: the iterative scan gives up long before 10 'rare' memories pass the filter;
    # and the planner is made to take the index on this small table.
    for name, value in [("hnsw.max_scan_tuples", "1"), ("hnsw.ef_search", "10"), *_INDEX_ONLY]:
        monkeypatch.setitem(postgres.SESSION_SETTINGS, name, value)
    storage = PostgresStorage.open(url, DIM, pool_size=1, exact_limit=0)
    try:
        for q in queries(3):
            with storage._read() as conn:
                assert len(postgres._index_search(conn, *_with_q(Filter(namespace="rare"), q), K)) < K
            hits = storage.vector_search(q, K, Filter(namespace="rare"))
            assert [h.memory_id for h in hits] == exact_ids(vectors, q, RARE, K)
    finally:
        storage.close()


def _with_q(where: Filter, q: np.ndarray) -> tuple[str, dict[str, Any]]:
    clause, params = postgres._where(where)
    return clause, {**params, "q": postgres._vector(q)}
