"""`ltmc migrate`: every memory copied into PostgreSQL with its embeddings, resumable, verified.

The source here is another PostgreSQL database of the same cluster (the migration reads any Storage through
iter_stored; the embedded store's source is wired by the CLI).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ltms.errors import ModelMismatch
from ltms.ops.migrate import MigrationFailed, migrate
from ltms.storage.base import Chunk, Filter, NewMemory
from ltms.storage.postgres import PostgresStorage

DIM = 12
N = 120


def memory(i: int, namespace: str | None = None, metadata: dict[str, Any] | None = None) -> NewMemory:
    text = f"memory {i}: " + "word " * (i % 7)
    rng = np.random.default_rng(i)
    vectors = rng.normal(size=(1 + i % 3, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = tuple(Chunk(j, j + 2, v) for j, v in enumerate(vectors))
    return NewMemory(
        text,
        namespace or ("team" if i % 4 else "solo"),
        ("even",) if i % 2 == 0 else ("odd", "x"),
        metadata if metadata is not None else {"i": i, "nested": {"k": [i, "v"]}},
        1_700_000_000.0 + i + 0.25,
        1_700_000_100.0 + i,
        hashlib.sha256(text.encode()).hexdigest(),
        "model-x",
        chunks,
    )


@pytest.fixture
def source(pg_cluster: Any) -> Iterator[PostgresStorage]:
    storage = PostgresStorage.open(pg_cluster.url(pg_cluster.create_database("source")), DIM, pool_size=2)
    storage.claim_model("model-x", DIM)
    with storage.transaction() as tx:
        ids = [tx.insert(memory(i)) for i in range(N + 10)]
        for memory_id in ids[::13]:  # gaps in the ids, as deletions leave them
            tx.delete(memory_id)
    yield storage
    storage.close()


@pytest.fixture
def target(pg_cluster: Any) -> Iterator[PostgresStorage]:
    storage = PostgresStorage.open(pg_cluster.url(pg_cluster.create_database("target")), DIM, pool_size=2)
    yield storage
    storage.close()


def same_everything(source: PostgresStorage, target: PostgresStorage) -> None:
    """Every source memory is in the target with the same id, fields, model and vectors (bit for bit)."""
    copies = {s.memory.id: s for s in target.iter_stored()}
    for original in source.iter_stored():
        copy = copies[original.memory.id]
        assert copy.memory == original.memory and copy.model == original.model
        assert [(c.start, c.end) for c in copy.chunks] == [(c.start, c.end) for c in original.chunks]
        assert all(np.array_equal(a.vector, b.vector) for a, b in zip(copy.chunks, original.chunks, strict=True))


def test_every_memory_is_copied_with_its_id_and_embeddings(source: PostgresStorage, target: PostgresStorage) -> None:
    report = migrate(source, target, batch=40, sample=30)
    assert (report.copied, report.renumbered, report.present) == (source.count(), 0, 0)
    assert report.target_count == source.count() and report.sampled == 30 and report.models == {"model-x"}
    assert target.counts_by_namespace() == source.counts_by_namespace()
    same_everything(source, target)
    assert "copied" in "\n".join(report.lines())
    # the target's own ids continue after the copied ones: none is ever reused
    with target.transaction() as tx:
        assert tx.insert(memory(10_000)) > max(s.memory.id for s in source.iter_stored())
    # and search works the same: the same top hits for the same query
    q = next(iter(source.iter_stored())).chunks[0].vector
    assert [h.memory_id for h in target.vector_search(q, 5, Filter(namespace="team"))] == [
        h.memory_id for h in source.vector_search(q, 5, Filter(namespace="team"))
    ]


class Interrupted(Exception):
    pass


def test_an_interrupted_migration_resumes_without_duplicates(source: PostgresStorage, target: PostgresStorage) -> None:
    def stop_after_two_batches(done: int, total: int) -> None:
        if done >= 80:
            raise Interrupted

    with pytest.raises(Interrupted):
        migrate(source, target, batch=40, progress=stop_after_two_batches)
    assert target.count() == 80  # two committed batches

    report = migrate(source, target, batch=40)
    assert report.present == 80 and report.copied == source.count() - 80 and report.renumbered == 0
    assert target.count() == source.count()
    same_everything(source, target)
    again = migrate(source, target, batch=40)  # a third run changes nothing
    assert (again.copied, again.present) == (0, source.count())


def test_ids_taken_in_the_target_are_renumbered(source: PostgresStorage, target: PostgresStorage) -> None:
    target.claim_model("model-x", DIM)
    with target.transaction() as tx:  # the target already holds other memories with ids 1 and 2
        assert [tx.insert(memory(5000 + i, namespace="other")) for i in range(2)] == [1, 2]
    source_ids = {s.memory.id for s in source.iter_stored()}
    assert 1 not in source_ids and 2 in source_ids  # id 1 was deleted in the source
    report = migrate(source, target)
    assert report.renumbered == 1 and report.copied == source.count() - 1
    assert target.count() == source.count() + 2
    second = source.get(2)
    assert second is not None
    everything = target.get_many(range(1, 1000))
    copies = [m for m in everything.values() if m.text == second.text]
    assert len(copies) == 1 and copies[0].id > 2 and copies[0].metadata == second.metadata
    assert everything[2].namespace == "other"  # the target's own memory 2 is untouched
    highest = max(everything)
    with target.transaction() as tx:
        assert tx.insert(memory(10_001)) > highest  # the sequence moved past every copied id


def test_a_target_with_another_model_or_dimension_is_refused(pg_cluster: Any, source: PostgresStorage) -> None:
    other = PostgresStorage.open(pg_cluster.url(pg_cluster.create_database("other")), DIM + 4)
    try:
        with pytest.raises(ModelMismatch, match="16-dimensional"):
            migrate(source, other)
        assert other.count() == 0
    finally:
        other.close()


def test_a_difference_found_by_the_check_fails_loudly(source: PostgresStorage, target: PostgresStorage) -> None:
    target.claim_model("model-x", DIM)
    with target.transaction() as tx:  # the same text, stored there with other metadata: it counts as present
        tx.insert(memory(3, metadata={"other": True}))
    with pytest.raises(MigrationFailed) as caught:
        migrate(source, target, sample=N + 10)
    assert "differs in the target" in str(caught.value) and "run ltmc migrate again" in str(caught.value)
    assert "\n" not in str(caught.value)
