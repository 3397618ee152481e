"""The index and its snapshots: atomic save, verified load, and saves that cannot fail silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ltms.errors import StorageError
from ltms.vector_store.faiss_store import FaissIndex, SnapshotInvalid, SnapshotMissing, SnapshotStore

DIM = 8


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def store_at(directory: Path) -> SnapshotStore:
    index = directory / "faiss_index"
    return SnapshotStore(index, directory / "faiss_index.manifest.json", directory / "faiss_index.lock")


def saved_index(tmp_path: Path, n: int = 20) -> tuple[SnapshotStore, FaissIndex]:
    index = FaissIndex(DIM)
    index.add(np.arange(1, n + 1), unit_vectors(n))
    snapshots = store_at(tmp_path)
    snapshots.save(index.serialize(), index.ntotal, DIM, "model-a", last_seq=n)
    return snapshots, index


def test_ids_are_the_given_ids_and_search_ranks_by_inner_product() -> None:
    index = FaissIndex(DIM)
    vectors = unit_vectors(10)
    index.add(np.arange(100, 110), vectors)
    best = index.search(vectors[3], 3)
    assert best[0][0] == 103
    assert best[0][1] == pytest.approx(1.0, abs=1e-3)  # vectors are kept at float16
    assert [score for _, score in best] == sorted((score for _, score in best), reverse=True)


def test_allowed_ids_compete_before_the_top_k_cut() -> None:
    index = FaissIndex(DIM)
    index.add(np.arange(1, 101), unit_vectors(100))
    allowed = np.array([5, 50, 77])
    hits = index.search(unit_vectors(1, seed=9)[0], 10, allowed)
    assert sorted(i for i, _ in hits) == [5, 50, 77]
    assert index.search(unit_vectors(1)[0], 10, np.array([], dtype=np.int64)) == []


def test_remove_takes_vectors_out_of_search() -> None:
    index = FaissIndex(DIM)
    vectors = unit_vectors(5)
    index.add(np.arange(1, 6), vectors)
    assert index.remove(np.array([3])) == 1
    assert index.ntotal == 4
    assert 3 not in [i for i, _ in index.search(vectors[2], 5)]


def test_save_and_load_round_trip_with_manifest(tmp_path: Path) -> None:
    snapshots, index = saved_index(tmp_path)
    manifest = json.loads((tmp_path / "faiss_index.manifest.json").read_text())
    assert manifest["count"] == 20
    assert manifest["dimension"] == DIM
    assert manifest["model"] == "model-a"
    assert manifest["last_seq"] == 20
    assert manifest["size"] == (tmp_path / "faiss_index").stat().st_size
    assert len(manifest["sha256"]) == 64
    loaded, loaded_manifest = snapshots.load(DIM, "model-a")
    assert loaded.ntotal == 20
    query = unit_vectors(1, seed=3)[0]
    assert loaded.search(query, 5) == index.search(query, 5)
    assert loaded_manifest.last_seq == 20
    # No temporary files are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "faiss_index",
        "faiss_index.lock",
        "faiss_index.manifest.json",
    ]


def test_missing_snapshot(tmp_path: Path) -> None:
    with pytest.raises(SnapshotMissing):
        store_at(tmp_path).load(DIM, "model-a")


def test_truncated_snapshot_is_rejected(tmp_path: Path) -> None:
    snapshots, _ = saved_index(tmp_path)
    data = (tmp_path / "faiss_index").read_bytes()
    (tmp_path / "faiss_index").write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotInvalid, match="truncated"):
        snapshots.load(DIM, "model-a")


def test_flipped_byte_is_caught_by_the_checksum(tmp_path: Path) -> None:
    """faiss itself loads such a file silently with wrong vectors; our checksum must not."""
    snapshots, _ = saved_index(tmp_path)
    data = bytearray((tmp_path / "faiss_index").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "faiss_index").write_bytes(bytes(data))
    with pytest.raises(SnapshotInvalid, match="checksum"):
        snapshots.load(DIM, "model-a")


def test_model_and_dimension_mismatch_are_rejected(tmp_path: Path) -> None:
    snapshots, _ = saved_index(tmp_path)
    with pytest.raises(SnapshotInvalid, match="model-a"):
        snapshots.load(DIM, "model-b")
    with pytest.raises(SnapshotInvalid, match="dimension"):
        snapshots.load(DIM * 2, "model-a")


def test_index_without_manifest_is_rejected(tmp_path: Path) -> None:
    snapshots, _ = saved_index(tmp_path)
    (tmp_path / "faiss_index.manifest.json").unlink()
    with pytest.raises(SnapshotInvalid, match="no manifest"):
        snapshots.load(DIM, "model-a")


def test_move_aside_keeps_both_files(tmp_path: Path) -> None:
    snapshots, _ = saved_index(tmp_path)
    before = (tmp_path / "faiss_index").read_bytes()
    moved = snapshots.move_aside("test")
    assert len(moved) == 2
    assert not (tmp_path / "faiss_index").exists()
    assert moved[0][1].read_bytes() == before
    assert ".bad-" in moved[0][1].name


def test_save_into_a_vanished_directory_names_the_path(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    index = FaissIndex(DIM)
    with pytest.raises(StorageError) as info:
        store_at(gone).save(index.serialize(), 0, DIM, "model-a", 0)
    assert str(gone) in str(info.value)


def test_a_newer_snapshot_from_another_process_is_not_overwritten_by_an_older_one(tmp_path: Path) -> None:
    snapshots, _ = saved_index(tmp_path, n=20)
    older = FaissIndex(DIM)
    older.add(np.arange(1, 6), unit_vectors(5))
    assert snapshots.save(older.serialize(), 5, DIM, "model-a", last_seq=5) is None
    assert snapshots.load(DIM, "model-a")[1].last_seq == 20
