"""One behaviour suite for every storage backend, at the `Storage` protocol (ltms/storage/base.py).

Each backend gets a harness that opens a real store (a real database file or a real PostgreSQL database) and can
reach under it for the two things the protocol does not offer: the schema version, and setting it by hand.
Adding a backend is one entry in BACKENDS and a harness class.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psycopg
import pytest

from ltms.errors import ModelMismatch
from ltms.retrieval.keywords import query_terms
from ltms.storage.base import Chunk, DuplicateMemory, Filter, MemoryChange, NewMemory, Storage
from ltms.storage.migrations import SchemaTooNew
from tests.helpers import hash_settings

DIM = 16
BACKENDS = ["sqlite", "postgres"]


class Harness(Protocol):
    def open(self, dimension: int = DIM) -> Storage: ...

    def schema_version(self) -> int: ...

    def set_schema_version(self, version: int) -> None: ...

    def migrations_applied_by(self, storage: Storage) -> tuple[int, ...]: ...

    def latest_schema(self) -> int: ...

    def close(self) -> None: ...


class PostgresHarness:
    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.dbname = cluster.create_database("contract")
        self.url = cluster.url(self.dbname)
        self.opened: list[Any] = []

    def open(self, dimension: int = DIM) -> Storage:
        from ltms.storage.postgres import PostgresStorage

        storage = PostgresStorage.open(self.url, dimension, pool_size=3)
        self.opened.append(storage)
        return storage

    def schema_version(self) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def set_schema_version(self, version: int) -> None:
        with psycopg.connect(self.url) as conn:
            conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(version),))

    def migrations_applied_by(self, storage: Storage) -> tuple[int, ...]:
        return tuple(storage.applied_migrations)  # type: ignore[attr-defined]

    def latest_schema(self) -> int:
        from ltms.storage.pg_schema import MIGRATIONS

        return len(MIGRATIONS)

    def close(self) -> None:
        for storage in self.opened:
            storage.close()


class SqliteHarness:
    """The embedded backend: a real SQLite file and a FAISS index in a temp data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.opened: list[Any] = []

    def open(self, dimension: int = DIM) -> Storage:
        from ltms.storage.embedded import EmbeddedStorage

        settings = hash_settings(self.data_dir)
        storage = EmbeddedStorage(settings.paths, dimension, "model-a", background_saves=False)
        self.opened.append(storage)
        storage.open_index()
        return storage

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "ltmc.sqlite3")

    def schema_version(self) -> int:
        with contextlib.closing(self._db()) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def set_schema_version(self, version: int) -> None:
        with contextlib.closing(self._db()) as conn, conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))

    def migrations_applied_by(self, storage: Storage) -> tuple[int, ...]:
        return tuple(storage.db.applied_migrations)  # type: ignore[attr-defined]

    def latest_schema(self) -> int:
        from ltms.storage.db import SCHEMA_VERSION

        return SCHEMA_VERSION

    def close(self) -> None:
        for storage in self.opened:
            storage.close()


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "sqlite":
        made: Harness = SqliteHarness(tmp_path / "data")
    elif request.param == "postgres":
        made = PostgresHarness(request.getfixturevalue("pg_cluster"))
    else:  # pragma: no cover - a backend listed without a harness
        raise AssertionError(f"no harness for backend {request.param!r}")
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def store(harness: Harness) -> Storage:
    storage = harness.open()
    storage.claim_model("model-a", DIM)
    return storage


# -- building records ---------------------------------------------------------------------------------------------

_rng = np.random.default_rng(12)


def storable(v: np.ndarray) -> np.ndarray:
    """float32 values every backend stores exactly: float16 ones (the embedded backend keeps vectors at float16, so
    its self-similarity is 1 within 1e-3, not 1e-5)."""
    return np.asarray(v, dtype=np.float16).astype(np.float32)


def unit(seed: int | None = None) -> np.ndarray:
    rng = _rng if seed is None else np.random.default_rng(seed)
    v = rng.normal(size=DIM).astype(np.float32)
    return storable(v / np.linalg.norm(v))


def near(v: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """A unit vector close to `v` (cosine falls as `noise` grows)."""
    w = v + noise * unit(seed)
    return storable(w / np.linalg.norm(w))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new(
    text: str,
    namespace: str = "default",
    tags: tuple[str, ...] = (),
    metadata: dict[str, Any] | None = None,
    created_at: float | None = None,
    vectors: list[np.ndarray] | None = None,
    model: str = "model-a",
) -> NewMemory:
    vectors = vectors if vectors is not None else [unit()]
    step = max(1, len(text) // len(vectors))
    chunks = tuple(Chunk(i * step, min(len(text), (i + 1) * step), v) for i, v in enumerate(vectors))
    when = created_at if created_at is not None else time.time()
    return NewMemory(text, namespace, tags, metadata or {}, when, when, digest(text), model, chunks)


def insert(store: Storage, *memories: NewMemory) -> list[int]:
    with store.transaction() as tx:
        return [tx.insert(m) for m in memories]


# -- the unit of work ---------------------------------------------------------------------------------------------


def test_insert_is_visible_inside_the_transaction_and_dedup_finds_it(store: Storage) -> None:
    with store.transaction() as tx:
        first = tx.insert(new("alpha"))
        assert tx.find_by_hash("default", digest("alpha")) == first
        assert tx.get(first) is not None and tx.get(first).text == "alpha"  # type: ignore[union-attr]
        assert tx.find_by_hash("other", digest("alpha")) is None  # dedup is per namespace
        second = tx.insert(new("alpha", namespace="other"))
    assert second != first
    with store.transaction() as tx:
        assert tx.find_by_hash("default", digest("alpha")) == first
    assert store.count() == 2


def test_inserting_a_stored_text_again_raises_duplicate_and_keeps_the_transaction(store: Storage) -> None:
    """What a writer meets when another one stored the same text after its find_by_hash."""
    [first] = insert(store, new("taken"))
    with store.transaction() as tx:
        with pytest.raises(DuplicateMemory) as caught:
            tx.insert(new("taken", vectors=[unit(1), unit(2)]))
        assert caught.value.existing_id == first
        second = tx.insert(new("still fine"))  # the transaction goes on
    assert store.count() == 2 and store.get(second) is not None
    [stored] = [s for s in store.iter_stored() if s.memory.id == first]
    assert len(stored.chunks) == 1  # the duplicate's chunks were not written


def test_a_failed_transaction_changes_nothing(store: Storage) -> None:
    [kept] = insert(store, new("kept"))
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as tx:
        tx.insert(new("lost"))
        tx.delete(kept)
        raise RuntimeError("boom")
    assert store.count() == 1
    assert store.get(kept) is not None
    with store.transaction() as tx:
        assert tx.find_by_hash("default", digest("lost")) is None


def test_stored_fields_come_back_as_given(store: Storage) -> None:
    metadata = {"source": "chat", "nested": {"list": [1, 2.5, "three", None, True]}, "ünï": "çødé ✓"}
    created = 1_700_000_000.123456
    [memory_id] = insert(
        store, new("Grüße 🌍 from the team", tags=("work", "émoji ✓"), metadata=metadata, created_at=created)
    )
    memory = store.get(memory_id)
    assert memory is not None
    assert (memory.text, memory.namespace, memory.tags, memory.metadata) == (
        "Grüße 🌍 from the team",
        "default",
        ("work", "émoji ✓"),
        metadata,
    )
    assert memory.created_at == pytest.approx(created, abs=1e-6)  # kept to the microsecond
    assert memory.updated_at == pytest.approx(created, abs=1e-6)
    assert memory.content_hash == digest("Grüße 🌍 from the team")


def test_get_and_get_many(store: Storage) -> None:
    ids = insert(store, new("one"), new("two"), new("three"))
    assert store.get(10**12) is None
    found = store.get_many([*ids, 10**12])
    assert set(found) == set(ids)
    assert {found[i].text for i in ids} == {"one", "two", "three"}
    assert store.get_many([]) == {}


def test_page_is_newest_first_with_filters_and_totals(store: Storage) -> None:
    ids = insert(
        store,
        new("a1", namespace="a", tags=("x",)),
        new("a2", namespace="a", tags=("x", "y")),
        new("b1", namespace="b", tags=("y",)),
        new("a3", namespace="a"),
        new("b2", namespace="b", tags=("x", "y")),
    )
    items, total = store.page(Filter(), limit=2, offset=0)
    assert total == 5 and [m.id for m in items] == [ids[4], ids[3]]
    items, total = store.page(Filter(), limit=2, offset=4)
    assert total == 5 and [m.id for m in items] == [ids[0]]
    items, total = store.page(Filter(namespace="a"), limit=10, offset=0)
    assert total == 3 and [m.text for m in items] == ["a3", "a2", "a1"]
    items, total = store.page(Filter(tags=("x", "y")), limit=10, offset=0)  # ALL tags
    assert total == 2 and [m.text for m in items] == ["b2", "a2"]
    items, total = store.page(Filter(namespace="b", tags=("x",)), limit=10, offset=0)
    assert total == 1 and [m.text for m in items] == ["b2"]
    items, total = store.page(Filter(namespace="none"), limit=10, offset=0)
    assert (items, total) == ([], 0)


def test_counts(store: Storage) -> None:
    assert store.count() == 0 and store.counts_by_namespace() == {}
    insert(store, new("a1", namespace="a"), new("a2", namespace="a"), new("b1", namespace="b"))
    assert store.count() == 3
    assert store.counts_by_namespace() == {"a": 2, "b": 1}


def test_update_without_new_chunks_keeps_the_vectors(store: Storage) -> None:
    v = unit(1)
    [memory_id] = insert(store, new("the old words about zebras", tags=("t",), vectors=[v], created_at=1000.0))
    with store.transaction() as tx:
        tx.update(
            memory_id,
            MemoryChange(
                "the old words about zebras",
                ("u", "v"),
                {"k": 1},
                2000.0,
                digest("the old words about zebras"),
                "model-a",
                None,
            ),
        )
    memory = store.get(memory_id)
    assert memory is not None
    assert (memory.tags, memory.metadata, memory.created_at, memory.updated_at) == (
        ("u", "v"),
        {"k": 1},
        1000.0,
        2000.0,
    )
    assert [h.memory_id for h in store.vector_search(v, 1, Filter())] == [memory_id]
    [stored] = list(store.iter_stored())
    assert stored.model == "model-a" and np.array_equal(stored.chunks[0].vector, v)


def test_update_with_new_chunks_replaces_vectors_text_and_keywords(store: Storage) -> None:
    old_v, new_v = unit(1), unit(2)
    [memory_id, other] = insert(store, new("zebras graze slowly", vectors=[old_v]), new("unrelated note"))
    with store.transaction() as tx:
        tx.update(
            memory_id,
            MemoryChange(
                "giraffes reach high",
                (),
                {},
                time.time(),
                digest("giraffes reach high"),
                "model-b",
                (Chunk(0, 19, new_v),),
            ),
        )
    assert store.get(memory_id).text == "giraffes reach high"  # type: ignore[union-attr]
    top = store.vector_search(new_v, 2, Filter())
    assert top[0].memory_id == memory_id and top[0].similarity == pytest.approx(1.0, abs=1e-3)
    assert all(h.similarity < 0.999 for h in store.vector_search(old_v, 2, Filter()))
    assert [h.memory_id for h in store.keyword_search(["giraffes"], 5, Filter())] == [memory_id]
    assert store.keyword_search(["zebras"], 5, Filter()) == []
    stored = {s.memory.id: s for s in store.iter_stored()}
    assert stored[memory_id].model == "model-b" and len(stored[memory_id].chunks) == 1
    assert stored[other].model == "model-a"
    with store.transaction() as tx:
        assert tx.find_by_hash("default", digest("giraffes reach high")) == memory_id
        assert tx.find_by_hash("default", digest("zebras graze slowly")) is None


def test_replace_chunks_re_embeds_an_unchanged_text(store: Storage) -> None:
    old_v, new_v = unit(3), unit(4)
    [memory_id] = insert(store, new("a text to re-embed", vectors=[old_v]))
    with store.transaction() as tx:
        tx.replace_chunks(memory_id, "model-b", [Chunk(0, 6, new_v), Chunk(6, 18, unit(5))])
    [stored] = list(store.iter_stored())
    assert stored.model == "model-b" and [(c.start, c.end) for c in stored.chunks] == [(0, 6), (6, 18)]
    assert np.array_equal(stored.chunks[0].vector, new_v)
    assert store.vector_search(new_v, 1, Filter())[0].similarity == pytest.approx(1.0, abs=1e-3)


def test_delete_removes_the_memory_its_chunks_and_its_keyword_entry(store: Storage) -> None:
    v = unit(6)
    [gone, kept] = insert(store, new("a walrus named Bob", vectors=[v, unit(7)]), new("a seal named Ann"))
    with store.transaction() as tx:
        assert tx.delete(gone) is True
        assert tx.delete(gone) is False
    assert store.get(gone) is None and store.count() == 1
    assert gone not in {h.memory_id for h in store.vector_search(v, 10, Filter())}
    assert store.keyword_search(["walrus"], 10, Filter()) == []
    assert [h.memory_id for h in store.keyword_search(["named"], 10, Filter())] == [kept]
    assert [s.memory.id for s in store.iter_stored()] == [kept]
    with store.transaction() as tx:
        assert tx.find_by_hash("default", digest("a walrus named Bob")) is None
    [again] = insert(store, new("a walrus named Bob"))
    assert again > max(gone, kept)  # ids are never reused


# -- vector search ------------------------------------------------------------------------------------------------


def test_vector_search_returns_memories_by_their_best_chunk(store: Storage) -> None:
    target = unit(10)
    chunks = [unit(11), near(target, 0.05, 12), unit(13)]
    [long_one, short_one, far_one] = insert(
        store,
        new("first part. second part. third part.", vectors=chunks),
        new("short", vectors=[near(target, 0.4, 14)]),
        new("far", vectors=[-target]),
    )
    hits = store.vector_search(target, 3, Filter())
    assert [h.memory_id for h in hits] == [long_one, short_one, far_one]  # each memory once
    # 1e-3: float16 vectors are unit only to ~1e-4, and PostgreSQL's cosine divides by the norms where SQLite does not
    assert hits[0].similarity == pytest.approx(float(chunks[1] @ target), abs=1e-3)
    stored = {s.memory.id: s for s in store.iter_stored()}
    assert (hits[0].start, hits[0].end) == (stored[long_one].chunks[1].start, stored[long_one].chunks[1].end)
    assert hits[0].similarity > hits[1].similarity > hits[2].similarity
    assert store.vector_search(target, 1, Filter())[0].memory_id == long_one


def test_vector_search_applies_every_filter_and_returns_k_when_k_match(store: Storage) -> None:
    q = unit(20)
    specs = []
    for i in range(40):
        specs.append(
            new(
                f"memory {i}",
                namespace="a" if i % 2 else "b",
                tags=("t",) if i % 3 == 0 else ("t", "u") if i % 3 == 1 else (),
                created_at=1000.0 + i,
                vectors=[near(q, 0.2 + i / 20, 100 + i)],
            )
        )
    ids = insert(store, *specs)
    by_id = dict(zip(ids, range(40), strict=True))

    def check(where: Filter, expected: set[int], k: int = 5) -> None:
        hits = store.vector_search(q, k, where)
        got = {by_id[h.memory_id] for h in hits}
        assert got <= expected, (where, got - expected)
        assert len(hits) == min(k, len(expected)), where
        # exactly the nearest ones among those that match
        sims = {by_id[h.memory_id]: h.similarity for h in hits}
        worst_in = min(sims.values()) if sims else 1.0
        best_out = max((float(specs[i].chunks[0].vector @ q) for i in expected - got), default=-1.0)
        assert worst_in >= best_out - 1e-6, where
        assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)

    check(Filter(), set(range(40)))
    check(Filter(namespace="a"), {i for i in range(40) if i % 2})
    check(Filter(tags=("t",)), {i for i in range(40) if i % 3 in (0, 1)})
    check(Filter(tags=("t", "u")), {i for i in range(40) if i % 3 == 1})
    check(Filter(since=1030.0), set(range(30, 40)))
    check(Filter(until=1004.0), set(range(5)), k=10)
    check(Filter(since=1010.0, until=1020.0, namespace="b", tags=("u",)), {10, 16})
    check(Filter(namespace="nowhere"), set())
    check(Filter(tags=("missing",)), set())


@pytest.mark.parametrize("planner", ["exact subset", "index + post-filter"])
def test_vector_search_keeps_only_memories_that_mention_every_name(
    store: Storage, planner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filter.mentions (the names leg of hybrid retrieval): every phrase must occur in the text, in any case and
    any inflection the keyword index folds, together with the other filters, on both planner paths."""
    from ltms.storage import embedded
    from ltms.storage.postgres import PostgresStorage

    if planner != "exact subset":  # every filter takes the approximate path
        if isinstance(store, PostgresStorage):
            store.exact_limit = 0
        else:
            monkeypatch.setattr(embedded, "EXACT_SUBSET_LIMIT", 0)
    q = unit(30)
    texts = [
        "Tomasz signed the lease for a cottage outside Bath",
        "tomasz: ha! classic.",
        "Grace is moving to Leith",
        "Tomasz and Grace met in Bath",
        "ERR-4711 means two jobs lock the same account",
        "err 4711 in lower case, apart",
        "ERR 4712 is another code",
    ]
    ids = insert(
        store, *[new(t, namespace="a" if i < 6 else "b", vectors=[near(q, 0.3, 200 + i)]) for i, t in enumerate(texts)]
    )
    everything = [new(f"filler {i}", vectors=[near(q, 0.1, 300 + i)]) for i in range(60)]
    insert(store, *everything)

    def found(mentions: tuple[str, ...], k: int = 10, **filters: Any) -> set[int]:
        return {h.memory_id for h in store.vector_search(q, k, Filter(mentions=mentions, **filters))}

    assert found(("Tomasz",)) == {ids[0], ids[1], ids[3]}
    assert found(("Tomasz", "Grace")) == {ids[3]}
    # The code's words in order (SQLite also finds "err 4711"; PostgreSQL's parser keeps "err-4711" one token too).
    assert ids[4] in found(("ERR-4711",)) <= {ids[4], ids[5]}
    assert found(("leases",)) == {ids[0]}  # the index's stemming applies
    assert found(("Tomasz",), k=1) <= {ids[0], ids[1], ids[3]} and len(found(("Tomasz",), k=1)) == 1
    assert found(("Tomasz",), namespace="b") == set()
    assert found(("nobody",)) == set()
    for hostile in ('"', "a:* OR b", "NEAR(x y)", "(", "\u200b"):
        assert found((hostile,)) <= set(ids)  # never a syntax error


# -- keyword search -----------------------------------------------------------------------------------------------


def test_keyword_search_ranks_matches_and_applies_filters(store: Storage) -> None:
    [both, one, other_ns, none] = insert(
        store,
        new("the postgres migration plan covers postgres replicas"),
        new("a plan for the garden"),
        new("postgres in another namespace", namespace="elsewhere"),
        new("nothing relevant here"),
    )
    hits = store.keyword_search(["postgres", "plan"], 10, Filter(namespace="default"))
    assert [h.memory_id for h in hits] == [both, one]
    assert [h.rank for h in hits] == [1, 2] and hits[0].score > hits[1].score > 0
    assert {h.memory_id for h in store.keyword_search(["postgres"], 10, Filter())} == {both, other_ns}
    assert len(store.keyword_search(["postgres", "plan"], 1, Filter())) == 1
    assert store.keyword_search([], 10, Filter()) == []
    assert none not in {h.memory_id for h in store.keyword_search(["relevant", "garden"], 10, Filter(tags=("x",)))}


@pytest.mark.parametrize(
    "query",
    [
        "'",
        '"',
        "\\",
        "a:* & b | !c",
        "(unbalanced",
        "<-> <2>",
        "OR AND NOT NEAR",
        "'; DROP TABLE memories; --",
        "col:value*",
        "-minus +plus ~tilde ^caret",
        "café naïve 北京 🌍",
        "x" * 2000,
        "\u200b\ufeff",
    ],
)
def test_keyword_search_survives_hostile_terms(store: Storage, query: str) -> None:
    [memory_id] = insert(store, new("drop table memories col value minus plus café naïve 北京 unbalanced"))
    terms = query_terms(query) or [query]
    hits = store.keyword_search(terms, 10, Filter())
    assert all(h.memory_id == memory_id for h in hits)
    assert store.count() == 1 and store.get(memory_id) is not None
    raw = store.keyword_search([query, "'", '"', "&", "|", "!", ":*"], 10, Filter())  # raw text, not query_terms
    assert all(h.memory_id == memory_id for h in raw)


# -- the model guard ----------------------------------------------------------------------------------------------


def test_claim_model_refuses_another_model(harness: Harness) -> None:
    store = harness.open()
    store.claim_model("model-a", DIM)
    store.claim_model("model-a", DIM)  # the same again: fine
    with pytest.raises(ModelMismatch):  # even an empty store keeps its model: another process may be using it
        store.claim_model("model-b", DIM)
    store.claim_model("model-b", DIM, allow_change=True)
    insert(store, new("something", model="model-b"))
    with pytest.raises(ModelMismatch) as caught:
        store.claim_model("model-c", DIM)
    assert "model-b" in str(caught.value) and "model-c" in str(caught.value)
    store.claim_model("model-c", DIM, allow_change=True)  # re-embedding
    with pytest.raises(ModelMismatch):
        store.claim_model("model-b", DIM)
    with pytest.raises(ModelMismatch):
        store.claim_model("model-c", DIM + 1)  # the dimension is part of the claim


def test_claim_model_is_atomic_between_two_claimants(harness: Harness) -> None:
    first, second = harness.open(), harness.open()
    insert(first, new("seed", model="x"))  # a non-empty store: the first claim wins, the other is refused
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def claim(storage: Storage, model: str) -> None:
        barrier.wait()
        try:
            storage.claim_model(model, DIM)
            outcomes.append(f"won:{model}")
        except ModelMismatch:
            outcomes.append(f"refused:{model}")

    threads = [threading.Thread(target=claim, args=(s, m)) for s, m in ((first, "m1"), (second, "m2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(o.split(":")[0] for o in outcomes) == ["refused", "won"], outcomes


# -- export / migrations ------------------------------------------------------------------------------------------


def test_iter_stored_round_trips_everything_needed_to_copy(store: Storage) -> None:
    originals = [
        new("one chunk", tags=("a",), metadata={"n": 1}, created_at=1_600_000_000.5),
        new("three chunks here", namespace="ns", vectors=[unit(31), unit(32), unit(33)], model="model-a"),
        new("ünïcode ✓", metadata={"deep": {"x": [1, 2]}}),
    ]
    ids = insert(store, *originals)
    stored = list(store.iter_stored(batch=2))  # across batches
    assert [s.memory.id for s in stored] == sorted(ids)
    for original, memory_id, s in zip(originals, ids, stored, strict=True):
        assert s.memory.id == memory_id
        assert (s.memory.text, s.memory.namespace, tuple(s.memory.tags), s.memory.metadata) == (
            original.text,
            original.namespace,
            original.tags,
            original.metadata,
        )
        assert s.memory.created_at == pytest.approx(original.created_at, abs=1e-6)
        assert s.memory.content_hash == original.content_hash and s.model == original.model
        assert len(s.chunks) == len(original.chunks)
        for got, want in zip(s.chunks, original.chunks, strict=True):
            assert (got.start, got.end) == (want.start, want.end)
            assert got.vector.dtype == np.float32 and np.array_equal(got.vector, want.vector)  # bit for bit


def test_migrations_are_applied_once_and_a_newer_schema_is_refused(harness: Harness) -> None:
    first = harness.open()
    assert harness.migrations_applied_by(first) == tuple(range(1, harness.latest_schema() + 1))
    assert harness.schema_version() == harness.latest_schema()
    first.claim_model("model-a", DIM)
    insert(first, new("survives reopening"))
    second = harness.open()
    assert harness.migrations_applied_by(second) == ()
    assert second.count() == 1

    harness.set_schema_version(harness.latest_schema() + 1)
    with pytest.raises(SchemaTooNew, match="newer LTMC"):
        harness.open()
    assert harness.schema_version() == harness.latest_schema() + 1  # refused, not "downgraded"
    harness.set_schema_version(harness.latest_schema())
    assert harness.open().count() == 1


def test_two_stores_open_a_new_database_at_once(harness: Harness) -> None:
    opened: list[Storage] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(harness.open())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(opened) == 3
    assert sorted(len(harness.migrations_applied_by(s)) for s in opened) == [0, 0, harness.latest_schema()]


def test_health_counts_and_never_shows_credentials(store: Storage, harness: Harness) -> None:
    insert(store, new("one"), new("two"))
    health = store.health()
    assert health.memories == 2 and health.problems == ()
    assert health.backend == store.name
    password = getattr(getattr(harness, "cluster", None), "password", None)
    if password:  # the harness connected with one
        assert password not in repr(health)
