"""The chunk index on its own: base + delta + tombstones, exact and HNSW, its snapshot file, the deferred check."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from ltms.vector_store.chunk_index import (
    _FOOTER,
    EXACT,
    HNSW,
    KEY_BITS,
    FaissIndex,
    HnswParams,
    SnapshotFormatError,
    read_snapshot,
)
from ltms.vector_store.faiss_store import SnapshotInvalid, SnapshotStore

DIM = 16
SMALL_GRAPH = HnswParams(m=8, ef_construction=40, ef_search=64)


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def keys_of(memory_ids: range | list[int], ordinal: int = 0) -> np.ndarray:
    return (np.asarray(list(memory_ids), dtype=np.int64) << KEY_BITS) | ordinal


def store_at(directory: Path) -> SnapshotStore:
    return SnapshotStore(directory / "faiss_index", directory / "faiss_index.manifest.json", directory / "lock")


def built(kind: str, n: int = 200) -> tuple[FaissIndex, np.ndarray]:
    vectors = unit_vectors(n)
    index = FaissIndex(DIM)
    index.add(keys_of(range(1, n + 1)), vectors)
    return index.compacted(kind, SMALL_GRAPH), vectors


@pytest.mark.parametrize("kind", [EXACT, HNSW])
def test_removed_vectors_never_come_back_from_base_or_delta(kind: str) -> None:
    index, vectors = built(kind)
    extra = unit_vectors(20, seed=5)
    index.add(keys_of(range(201, 221)), extra)  # in the delta
    gone = [3, 50, 77, 205, 219]
    index.remove_memories(np.asarray(gone))
    assert index.ntotal == 215 and index.live_memories == 215
    for memory_id in gone:
        query = vectors[memory_id - 1] if memory_id <= 200 else extra[memory_id - 201]
        found = [key >> KEY_BITS for key, _ in index.search(query, 10)]
        assert memory_id not in found and len(found) == 10
        assert memory_id not in [key >> KEY_BITS for key, _ in index.search(query, 10, exact=True)]
    assert set(gone).isdisjoint((index.ids() >> KEY_BITS).tolist())


def test_an_update_replaces_a_base_vector_under_the_same_key() -> None:
    index, vectors = built(HNSW)
    index.remove_memories(np.asarray([7]))
    index.add(keys_of([7]), vectors[100])  # memory 7 now says what memory 101 says
    hits = index.search(vectors[100], 2)
    assert {key >> KEY_BITS for key, _ in hits} == {7, 101}
    assert 7 not in [key >> KEY_BITS for key, _ in index.search(vectors[6], 5)]


def test_hnsw_finds_what_exact_search_finds_on_clustered_vectors() -> None:
    rng = np.random.default_rng(1)
    centres = unit_vectors(20, seed=2)
    vectors = centres[rng.integers(0, 20, 2000)] + rng.normal(size=(2000, DIM)).astype(np.float32) * 0.3
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = FaissIndex(DIM)
    index.add(keys_of(range(1, 2001)), vectors)
    exact, approx = index.compacted(EXACT, SMALL_GRAPH), index.compacted(HNSW, SMALL_GRAPH)
    assert approx.kind == HNSW
    overlap = [
        len({k for k, _ in approx.search(q, 10)} & {k for k, _ in exact.search(q, 10)}) / 10 for q in vectors[:50]
    ]
    assert np.mean(overlap) >= 0.95


def test_search_over_a_subset_of_memories_is_exact_and_one_hit_per_memory() -> None:
    index, vectors = built(HNSW)
    index.add(keys_of([5], ordinal=1), vectors[150])  # memory 5's second chunk is memory 151's vector
    hits = index.search_memories(vectors[150], 3, np.asarray([5, 9, 151, 999]))
    assert [key >> KEY_BITS for key, _ in hits][:2] in ([5, 151], [151, 5])
    assert len(hits) == 3 and len({key >> KEY_BITS for key, _ in hits}) == 3
    assert hits[0][1] == pytest.approx(1.0, abs=1e-3)  # vectors are kept at float16


def test_an_incremental_hnsw_compaction_keeps_positions_and_tombstones(tmp_path: Path) -> None:
    index, vectors = built(HNSW)
    index.remove_memories(np.asarray([10, 20]))
    index.add(keys_of(range(201, 211)), unit_vectors(10, seed=9))
    index.add(keys_of([15]), unit_vectors(1, seed=11))  # an updated memory: its key twice, once dead
    index.remove_memories(np.asarray([15]))
    index.add(keys_of([15]), unit_vectors(1, seed=12))
    merged = index.compacted(HNSW, SMALL_GRAPH)
    assert (merged.base_size, merged.dead, merged.delta_size, merged.ntotal) == (211, 3, 0, 208)
    keys = merged._base.keys[merged._base.order]
    assert np.all(np.diff(keys) >= 0)  # the merged key order is sorted
    assert [key >> KEY_BITS for key, _ in merged.search(unit_vectors(1, seed=12)[0], 1)] == [15]
    snapshots = store_at(tmp_path)
    snapshots.save(merged, merged.ntotal, DIM, "m", last_seq=1)
    loaded, _ = snapshots.load(DIM, "m")
    assert loaded.kind == HNSW and loaded.ntotal == 208 and loaded.dead == 3
    for memory_id in (10, 20):
        assert memory_id not in [key >> KEY_BITS for key, _ in loaded.search(vectors[memory_id - 1], 10)]
    query = vectors[33]
    assert loaded.search(query, 10) == merged.search(query, 10)


def test_many_dead_nodes_make_a_rebuild_that_drops_them() -> None:
    index, _ = built(HNSW)
    index.remove_memories(np.arange(1, 101))
    rebuilt = index.compacted(HNSW, SMALL_GRAPH)
    assert (rebuilt.base_size, rebuilt.dead, rebuilt.ntotal) == (100, 0, 100)


def test_a_large_snapshot_is_mapped_then_checked_and_adopted(tmp_path: Path) -> None:
    index, vectors = built(HNSW)
    snapshots = store_at(tmp_path)
    snapshots.save(index, index.ntotal, DIM, "m", last_seq=1)
    loaded, _ = snapshots.load(DIM, "m", check_later_above=0)
    assert loaded.mapped and loaded.pending_check is not None
    before = loaded.search(vectors[4], 5)
    owned = loaded.pending_check()
    assert loaded.adopt(owned) and not loaded.mapped
    assert loaded.search(vectors[4], 5) == before


def test_a_corrupt_large_snapshot_fails_its_deferred_check(tmp_path: Path) -> None:
    index, _ = built(EXACT)
    snapshots = store_at(tmp_path)
    snapshots.save(index, index.ntotal, DIM, "m", last_seq=1)
    data = bytearray((tmp_path / "faiss_index").read_bytes())
    data[len(data) // 3] ^= 0x40  # inside the vectors: faiss would load it silently
    (tmp_path / "faiss_index").write_bytes(bytes(data))
    loaded, _ = snapshots.load(DIM, "m", check_later_above=0)
    with pytest.raises(SnapshotInvalid, match="checksum"):
        loaded.pending_check()
    with pytest.raises(SnapshotInvalid, match="checksum"):
        snapshots.load(DIM, "m")  # checked at once when small


def test_a_damaged_graph_is_refused_before_any_search(tmp_path: Path) -> None:
    index, _ = built(HNSW)
    snapshots = store_at(tmp_path)
    snapshots.save(index, index.ntotal, DIM, "m", last_seq=1)
    path = tmp_path / "faiss_index"
    data = bytearray(path.read_bytes())
    graph = index._base.index.hnsw.neighbors  # where the file holds the neighbour ids: find their bytes
    at = data.find(faiss.rev_swig_ptr(graph.data(), 16).tobytes())
    assert at > 0
    data[at : at + 4] = np.int32(10**6).tobytes()  # a neighbour far outside the index: search would follow it
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotInvalid, match=r"out of range|outside the index"):  # faiss 1.15 checks too
        snapshots.load(DIM, "m", check_later_above=0)


def test_a_float32_snapshot_is_never_read_as_float16(tmp_path: Path) -> None:
    """Snapshots before float16 (layout 1, manifest format 3) held float32 vectors: faiss could map those bytes as
    codes of another type. Both the manifest and the file's footer refuse them, so the index is rebuilt instead."""
    index, _ = built(EXACT)
    snapshots = store_at(tmp_path)
    snapshots.save(index, index.ntotal, DIM, "m", last_seq=1)
    path = tmp_path / "faiss_index"
    data = bytearray(path.read_bytes())
    footer = len(data) - _FOOTER.size
    fields = list(_FOOTER.unpack(bytes(data[footer:])))
    fields[1] = 1  # the layout of a float32 snapshot
    data[footer:] = _FOOTER.pack(*fields)
    path.write_bytes(bytes(data))
    with open(path, "rb") as handle, pytest.raises(SnapshotFormatError, match="layout 1"):
        read_snapshot(handle.fileno(), DIM)
    manifest = json.loads((tmp_path / "faiss_index.manifest.json").read_text())
    manifest["format"] = 3
    (tmp_path / "faiss_index.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SnapshotInvalid, match="manifest format 3"):
        snapshots.load(DIM, "m")


def test_the_index_holds_exactly_the_float16_values_and_base_and_delta_score_alike() -> None:
    vectors = unit_vectors(300, seed=21)
    half = vectors.astype(np.float16).astype(np.float32)
    base = FaissIndex(DIM)
    base.add(keys_of(range(1, 301)), vectors)
    base = base.compacted(EXACT, SMALL_GRAPH)  # all 300 in the base
    delta = FaissIndex(DIM)
    delta.add(keys_of(range(1, 301)), vectors)  # all 300 in the delta
    keys, stored = base.gather(keys_of(range(1, 301)), keys_of(range(1, 301)) + 1)
    assert stored.dtype == np.float16 and np.array_equal(stored.astype(np.float32), half[np.argsort(keys)])
    query = unit_vectors(1, seed=22)[0]
    from_base, from_delta = base.search(query, 20), delta.search(query, 20)
    assert from_base == from_delta  # same keys, same scores, bit for bit
    assert from_base[0][1] == pytest.approx(float(np.max(half @ query)), abs=1e-6)


def test_the_copy_an_incremental_save_adds_to_has_the_same_graph_and_answers() -> None:
    index, vectors = built(HNSW, 500)
    base = index._base
    copy = base.copy_with_room(10)
    for name in ("levels", "offsets", "neighbors", "assign_probas", "cum_nneighbor_per_level"):
        source, copied = getattr(base.index.hnsw, name), getattr(copy.hnsw, name)
        assert np.array_equal(faiss.vector_to_array(copied), faiss.vector_to_array(source)), name
    assert (copy.hnsw.entry_point, copy.hnsw.max_level) == (base.index.hnsw.entry_point, base.index.hnsw.max_level)
    for query in vectors[:20]:
        assert (
            copy.search(query.reshape(1, -1), 10)[1].tolist() == base.index.search(query.reshape(1, -1), 10)[1].tolist()
        )
