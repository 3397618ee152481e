"""The chunk-vector index: an immutable base, an in-memory delta, and tombstones.

- The **base** is a faiss index over positions 0..n-1 (exact `IndexScalarQuantizer`, or approximate `IndexHNSWSQ`
  above a size threshold, both over float16 codes: exactly the values SQLite stores, see ltms.vector_store.halfvec),
  with the chunk key of every position beside it and the key order (an argsort) for lookups. It
  comes from the snapshot file, memory-mapped (`IO_FLAG_MMAP_IFC`: no copy, so a restart costs milliseconds), or
  from a build. It never changes: faiss aborts the process on an add to a mapped index, and HNSW cannot remove.
- The **delta** holds vectors added since the base was written, searched exactly by the same float16 kernel (it stays
  small: a snapshot save folds it into a new base).
- **Tombstones**: a bitmap of the base positions still alive (an update or delete clears bits: microseconds, where
  `remove_ids` on a flat index scans and compacts all of it), and a flag per delta row. Searches pass the bitmap to
  faiss as an `IDSelectorBitmap`, so a removed chunk never competes for a place.

Not thread-safe by itself: the embedded backend reads under the read side of a readers-writer lock and changes it
under the write side. Snapshot file layout (`write_to`, `read_snapshot`): the faiss index bytes (so faiss can map the
file from offset 0), then keys (int64), key order (int64), the alive bitmap, and a fixed footer that describes them.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import faiss as _faiss
import numpy as np

from ltms.vector_store import halfvec

# faiss-cpu's stubs describe the SWIG signatures, not the numpy-accepting wrappers faiss installs over them, and miss
# much of the API used here (IDSelectorBitmap(ndarray), SearchParametersHNSW, PyCallbackIOWriter, hnsw.neighbors).
faiss: Any = _faiss


class Sink(Protocol):
    def write(self, data: Any, /) -> Any: ...


# The low bits of a chunk key number a memory's chunks (ltms.storage.db.CHUNK_BITS: the backend checks they agree).
KEY_BITS = 16
EXACT = "exact"
HNSW = "hnsw"
_KINDS = {EXACT: 1, HNSW: 2}
_MAGIC = b"LTMCIDX1"
# 1: float32 (IndexFlatIP / IndexHNSWFlat); 2: float16 codes (IndexScalarQuantizer / IndexHNSWSQ, QT_fp16).
_LAYOUT = 2
# magic, layout version, kind, faiss bytes, positions, keys offset, order offset, alive offset, live, M, efC, efS
_FOOTER = struct.Struct("<8sIIQQQQQQIII4x")
_ALIGN = 64


class SnapshotFormatError(ValueError):
    """The snapshot file does not hold a well-formed index (the caller treats the snapshot as invalid)."""


@dataclass(frozen=True)
class HnswParams:
    m: int = 32
    ef_construction: int = 64
    ef_search: int = 128


class _Base:
    """An immutable faiss index over positions, with the key of each position and their sort order."""

    def __init__(
        self,
        index: Any,
        keys: np.ndarray,
        order: np.ndarray,
        kind: str,
        params: HnswParams,
        mapped: bool = False,
        owner: Any = None,
    ) -> None:
        self.index = index
        self.keys = keys
        self.order = order
        self.kind = kind
        self.params = params
        self.mapped = mapped  # faiss aborts on any add to a mapped index: copy it before changing it
        self._owner = owner  # keeps the mapping under `keys`/`order` alive
        self.n = int(index.ntotal)
        self.flat = index if kind == EXACT else faiss.downcast_index(index.storage)
        self.vectors = _codes(self.flat, self.n)  # float16, a view of faiss's storage

    @classmethod
    def empty(cls, dimension: int) -> _Base:
        none = np.zeros(0, dtype=np.int64)
        return cls(_new_index(EXACT, dimension, HnswParams()), none, none, EXACT, HnswParams())

    def copy_with_room(self, extra: int) -> Any:
        """An in-memory copy of an HNSW base whose storage already has room for `extra` more vectors: adding them to
        a plain copy would reallocate the storage and hold two copies of it for a moment (1.8x measured)."""
        if self.mapped:  # the graph of a mapped index copies as another mapping: read it instead
            return self.owned_copy()
        n = self.n
        index = _new_index(HNSW, self.index.d, self.params)
        _copy_graph(self.index.hnsw, index.hnsw)
        storage = faiss.downcast_index(index.storage)
        room = _codes(storage, n + extra, resize=True)
        for start in range(0, n, 65_536):
            stop = min(start + 65_536, n)
            room[start:stop] = self.vectors[start:stop]
        storage.ntotal = n
        index.ntotal = n
        return index

    def owned_copy(self) -> Any:
        """An in-memory copy that faiss can add to (a copy of a mapped index would still be a mapping)."""
        if not self.mapped:
            return faiss.clone_index(self.index)
        view = memoryview(self._owner)
        position = 0

        def read(size: int) -> bytes:
            nonlocal position
            chunk = bytes(view[position : position + size])
            position += len(chunk)
            return chunk

        try:
            return read_faiss(read)
        finally:
            view.release()

    def release_memory(self) -> None:
        """Give the pages of an owned index back to the system in slices, before it is freed: freeing 1.8 GB (1M
        vectors) in one go stalled every other thread here for 0.2-0.4 s (the free holds the GIL and the process's
        memory map). Only for an index nothing will read again."""
        if self.mapped or not self.n:
            return
        _drop_pages(self.vectors)
        if self.kind == HNSW:
            neighbors = self.index.hnsw.neighbors
            if neighbors.size():
                _drop_pages(faiss.rev_swig_ptr(neighbors.data(), neighbors.size()))

    def positions_in(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Positions whose key lies in any of the ranges [low[i], high[i])."""
        if not self.n or not len(low):
            return np.zeros(0, dtype=np.int64)
        lo = np.searchsorted(self.keys, low, sorter=self.order)
        hi = np.searchsorted(self.keys, high, sorter=self.order)
        return np.asarray(self.order[_concat_ranges(lo, hi)])


class FaissIndex:
    """Search over chunk keys: a base (exact or HNSW), a delta and tombstones. Scores are inner products."""

    def __init__(
        self,
        dimension: int,
        base: _Base | None = None,
        alive: np.ndarray | None = None,
        counts: tuple[int, int] | None = None,
    ) -> None:
        """`counts`: (live vectors, live memories) when the caller knows them (saves counting 1M bits)."""
        self.dimension = dimension
        self._base = base if base is not None else _Base.empty(dimension)
        n = self._base.n
        self._alive = alive if alive is not None else _all_alive(n)
        if counts is None:
            self._base_live = int(np.unpackbits(self._alive, count=n, bitorder="little").sum()) if n else 0
        else:
            self._base_live = counts[0]
        self._delta_keys = np.zeros(0, dtype=np.int64)
        self._delta = _new_index(EXACT, dimension, HnswParams())  # the base's codes and kernel: identical scores
        self._delta_alive = np.zeros(0, dtype=bool)
        self._nd = 0
        self._delta_live = 0
        self._live_memories = self._count_first_chunks() if counts is None else counts[1]
        # Set by SnapshotStore.load when the checksum is verified after the load (large snapshots): call it.
        self.pending_check: Callable[[], Any] | None = None

    @classmethod
    def exact_from(cls, dimension: int, total: int, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> FaissIndex:
        """An exact index of `total` vectors filled straight into faiss's storage from (keys, vectors) batches:
        one copy of the vectors, where adding batch by batch would grow (and copy) the storage as it goes."""
        flat = _new_index(EXACT, dimension, HnswParams())
        matrix = _codes(flat, total, resize=True)
        keys = np.zeros(total, dtype=np.int64)
        done = 0
        for batch_keys, vectors in batches:
            end = done + len(batch_keys)
            if end > total:
                raise ValueError(f"more vectors than the {total} announced")
            keys[done:end] = batch_keys
            matrix[done:end] = halfvec.as_stored(vectors)
            done = end
        if done != total:
            raise ValueError(f"{done} vectors, {total} announced")
        flat.ntotal = total
        return cls(dimension, _Base(flat, keys, np.argsort(keys, kind="stable"), EXACT, HnswParams()))

    # -- what it holds ----------------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Live vectors."""
        return self._base_live + self._delta_live

    @property
    def kind(self) -> str:
        return self._base.kind

    @property
    def params(self) -> HnswParams:
        return self._base.params

    @property
    def live_memories(self) -> int:
        """Memories with a live chunk (every memory has chunk 0)."""
        return self._live_memories

    @property
    def base_size(self) -> int:
        return self._base.n

    @property
    def delta_size(self) -> int:
        return self._delta_live

    @property
    def dead(self) -> int:
        """Removed vectors still taking room in the base (HNSW cannot drop them until a rebuild)."""
        return self._base.n - self._base_live

    @property
    def mapped(self) -> bool:
        return self._base.mapped

    def ids(self) -> np.ndarray:
        """Every live key (a copy)."""
        base = self._base
        alive = np.unpackbits(self._alive, count=base.n, bitorder="little").astype(bool)
        return np.concatenate([base.keys[alive], self._delta_keys[: self._nd][self._delta_alive[: self._nd]]])

    # -- changing it (under the caller's write lock) -------------------------------------------------------------

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if not len(keys):
            return
        vectors = halfvec.rounded(_as_matrix(vectors, self.dimension))  # numpy rounds, faiss then stores exactly
        need = self._nd + len(keys)
        if need > len(self._delta_keys):
            capacity = max(need, 2 * len(self._delta_keys), 1024)
            self._delta_keys = _grown(self._delta_keys, capacity, self._nd)
            self._delta_alive = _grown(self._delta_alive, capacity, self._nd)
        end = self._nd + len(keys)
        self._delta_keys[self._nd : end] = keys
        self._delta.add(vectors)
        self._delta_alive[self._nd : end] = True
        self._nd = end
        self._delta_live += len(keys)
        self._live_memories += int(np.count_nonzero(_ordinals(keys) == 0))

    def remove(self, keys: np.ndarray) -> int:
        """Remove the live vectors with these exact keys; returns how many."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        return self._remove_ranges(keys, keys + 1)

    def remove_memories(self, memory_ids: np.ndarray) -> int:
        """Remove every live chunk of these memories; returns how many vectors."""
        ids = np.asarray(memory_ids, dtype=np.int64).reshape(-1)
        return self._remove_ranges(ids << KEY_BITS, (ids + 1) << KEY_BITS)

    def _remove_ranges(self, low: np.ndarray, high: np.ndarray) -> int:
        if not len(low):
            return 0
        removed = 0
        positions = self._base.positions_in(low, high)
        if len(positions):
            positions = positions[_bits_set(self._alive, positions)]
            if len(positions):
                np.bitwise_and.at(self._alive, positions >> 3, ~(1 << (positions & 7)).astype(np.uint8))
                self._base_live -= len(positions)
                self._live_memories -= int(np.count_nonzero(_ordinals(self._base.keys[positions]) == 0))
                removed += len(positions)
        rows = self._delta_rows(low, high)
        if len(rows):
            self._delta_alive[rows] = False
            self._delta_live -= len(rows)
            self._live_memories -= int(np.count_nonzero(_ordinals(self._delta_keys[rows]) == 0))
            removed += len(rows)
        return removed

    def _delta_rows(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Live delta rows whose key lies in any of the ranges."""
        if not self._delta_live or not len(low):
            return np.zeros(0, dtype=np.int64)
        keys = self._delta_keys[: self._nd]
        order = np.argsort(low, kind="stable")
        low, high = low[order], high[order]
        at = np.searchsorted(low, keys, side="right") - 1  # the last range starting at or before each key
        inside = (at >= 0) & (keys < high[np.maximum(at, 0)])
        return np.flatnonzero(inside & self._delta_alive[: self._nd])

    # -- searching (under the caller's read lock) ---------------------------------------------------------------

    def search(
        self,
        query: np.ndarray,
        k: int,
        allowed_ids: np.ndarray | None = None,
        exact: bool = False,
        ef_search: int | None = None,
    ) -> list[tuple[int, float]]:
        """The k best live (key, score) pairs, best first. `allowed_ids`: only these keys compete (an exact search
        over just them). `exact`: scan every vector even when the base is HNSW."""
        if k <= 0 or self.ntotal == 0:
            return []
        q = _as_matrix(query, self.dimension)
        if allowed_ids is not None:
            keys = np.asarray(allowed_ids, dtype=np.int64).reshape(-1)
            found_keys, vectors = self.gather(keys, keys + 1)
            return _top(found_keys, _inner(vectors, q), k)
        base = self._base
        found: list[tuple[int, float]] = []
        if self._base_live:
            take = min(k, self._base_live)
            index = base.flat if exact else base.index
            selector = faiss.IDSelectorBitmap(self._alive) if self._base_live < base.n else None
            params: Any = None
            if index is base.index and base.kind == HNSW:
                params = faiss.SearchParametersHNSW()
                params.efSearch = max(ef_search or base.params.ef_search, take)
            elif selector is not None:
                params = faiss.SearchParameters()
            if selector is not None:
                params.sel = selector
            scores, positions = index.search(q, take, params=params)
            found = [(int(base.keys[p]), float(s)) for p, s in zip(positions[0], scores[0], strict=True) if p >= 0]
        if self._delta_live:
            take = min(k, self._delta_live)
            params = None
            if self._delta_live < self._nd:
                params = faiss.SearchParameters()
                params.sel = faiss.IDSelectorBitmap(np.packbits(self._delta_alive[: self._nd], bitorder="little"))
            scores, rows = self._delta.search(q, take, params=params)
            found += [(int(self._delta_keys[r]), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]
            found.sort(key=lambda pair: -pair[1])
        return found[:k]

    def gather(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of every live chunk whose key lies in one of the ranges [low[i], high[i])."""
        base = self._base
        positions = base.positions_in(low, high)
        positions = positions[_bits_set(self._alive, positions)] if len(positions) else positions
        rows = self._delta_rows(low, high)
        keys, vectors = base.keys[positions], np.take(base.vectors, positions, axis=0)
        if len(rows):
            keys = np.concatenate([keys, self._delta_keys[rows]])
            vectors = np.concatenate([vectors, self._delta_vectors()[rows]])
        return keys, vectors

    def search_memories(self, query: np.ndarray, k: int, memory_ids: np.ndarray) -> list[tuple[int, float]]:
        """Exact search restricted to the given memories: (key, score) of the best chunk of each of the k best."""
        ids = np.unique(np.asarray(memory_ids, dtype=np.int64))
        keys, vectors = self.gather(ids << KEY_BITS, (ids + 1) << KEY_BITS)
        if not len(keys):
            return []
        scores = _inner(vectors, _as_matrix(query, self.dimension))
        ranked = np.argsort(-scores, kind="stable")
        _, first = np.unique(keys[ranked] >> KEY_BITS, return_index=True)  # the best chunk of each memory
        best = ranked[np.sort(first)]
        return [(int(keys[i]), float(scores[i])) for i in best[:k]]

    # -- snapshots ----------------------------------------------------------------------------------------------

    def adopt(self, owned: Any) -> bool:
        """Swap a mapped base for an in-memory copy of the same file (positions, keys and tombstones unchanged), so
        nothing depends on the mapped file any more. False if the base is no longer the mapped one."""
        base = self._base
        if not base.mapped or owned.ntotal != base.n or type(owned) is not type(base.index):
            return False
        self._base = _Base(owned, np.array(base.keys), np.array(base.order), base.kind, base.params)
        return True

    def release(self) -> bool:
        """Drop the memory of a replaced index early (see `_Base.release_memory`), unless its base is still shared
        (a frozen copy, an index built on it). Returns whether it did; the index must not be used afterwards."""
        # References: this attribute and getrefcount's argument. Any other holder may still search it.
        if sys.getrefcount(self._base) > 2:
            return False
        base, self._base = self._base, _Base.empty(self.dimension)
        self._alive = _all_alive(0)
        self._base_live = 0
        base.release_memory()
        return True

    def freeze(self) -> FaissIndex:
        """A copy that later changes to this one do not touch (the base is shared: it never changes)."""
        copy = FaissIndex.__new__(FaissIndex)
        copy.dimension = self.dimension
        copy._base = self._base
        copy._alive = self._alive.copy()
        copy._base_live = self._base_live
        copy._delta_keys = self._delta_keys[: self._nd].copy()
        copy._delta = faiss.clone_index(self._delta)
        copy._delta_alive = self._delta_alive[: self._nd].copy()
        copy._nd = self._nd
        copy._delta_live = self._delta_live
        copy._live_memories = self._live_memories
        copy.pending_check = None
        return copy

    def clone(self) -> FaissIndex:
        return self.freeze()

    def compacted(self, kind: str, params: HnswParams, rebuild_dead_fraction: float = 0.2) -> FaissIndex:
        """A new index with one base holding every live vector and no delta. An HNSW base of the same shape takes
        the delta as an incremental add (to a copy: the one extra copy a save makes) while few of its nodes are
        dead; otherwise the base is built anew from the live vectors."""
        base = self._base
        rows = np.flatnonzero(self._delta_alive[: self._nd])
        total = base.n + len(rows)
        dead_after = base.n - self._base_live
        incremental = (
            kind == HNSW
            and base.kind == HNSW
            and (base.params.m, base.params.ef_construction) == (params.m, params.ef_construction)
            and base.n > 0
            and dead_after <= rebuild_dead_fraction * max(total, 1)
        )
        if incremental:
            index = base.copy_with_room(len(rows))
            if len(rows):
                index.add(self._delta_vectors()[rows].astype(np.float32))
            added = self._delta_keys[rows]
            keys = np.concatenate([np.asarray(base.keys), added])
            alive = _all_alive(total)
            alive[: len(self._alive)] = self._alive
            if base.n % 8:  # bits past the old base's last position belong to the new rows: alive
                last = base.n >> 3
                alive[last] = self._alive[last] | np.uint8((0xFF << (base.n & 7)) & 0xFF)
            # The new keys merged into the old order (no sort of a million keys while other threads want the GIL).
            sub = np.argsort(added, kind="stable")
            at = np.searchsorted(base.keys, added[sub], side="right", sorter=base.order)
            order = np.insert(np.asarray(base.order), at, base.n + sub)
            result_base = _Base(index, keys, order, HNSW, params)
            counts = (self._base_live + len(rows), self._live_memories)
            return FaissIndex(self.dimension, result_base, alive, counts)
        index = _new_index(kind, self.dimension, params)
        positions = np.flatnonzero(np.unpackbits(self._alive, count=base.n, bitorder="little"))
        for start in range(0, len(positions), 65_536):  # bounded temporaries: one copy of the index at its peak
            index.add(base.vectors[positions[start : start + 65_536]].astype(np.float32))
        if len(rows):
            index.add(self._delta_vectors()[rows].astype(np.float32))
        keys = np.concatenate([base.keys[positions], self._delta_keys[rows]])
        result_base = _Base(index, keys, np.argsort(keys, kind="stable"), kind, params)
        return FaissIndex(self.dimension, result_base, counts=(len(keys), self._live_memories))

    def write_to(self, handle: Sink) -> int:
        """Stream the snapshot file into `handle` (no serialized copy in memory); returns the bytes written.
        Only a compacted index (no delta) can be written."""
        if self._nd:
            raise ValueError("compact the index before writing it (its delta is not empty)")
        base = self._base
        written = 0

        def write(data: Any) -> None:
            nonlocal written
            view = memoryview(data).cast("B")
            handle.write(view)
            written += len(view)

        writer = faiss.PyCallbackIOWriter(write, 1 << 22)
        faiss.write_index(base.index, writer)
        del writer  # flushes its buffer
        faiss_bytes = written
        write(b"\0" * (-written % _ALIGN))
        keys_at = written
        write(np.ascontiguousarray(base.keys, dtype=np.int64))
        order_at = written
        write(np.ascontiguousarray(base.order, dtype=np.int64))
        alive_at = written
        write(self._alive)
        p = base.params
        write(
            _FOOTER.pack(
                _MAGIC,
                _LAYOUT,
                _KINDS[base.kind],
                faiss_bytes,
                base.n,
                keys_at,
                order_at,
                alive_at,
                self.ntotal,
                p.m,
                p.ef_construction,
                p.ef_search,
            )
        )
        return written

    def serialize(self) -> np.ndarray:
        """The snapshot file's bytes (tests, `ltmc reindex`); the server streams with write_to instead."""
        index = self if not self._nd else self.compacted(self.kind, self.params)
        out = _Bytes()
        index.write_to(out)
        return np.frombuffer(b"".join(out.parts), dtype=np.uint8)

    def _delta_vectors(self) -> np.ndarray:
        """A float16 view of the delta's vectors (valid until the next add)."""
        return _codes(self._delta, int(self._delta.ntotal))

    def _count_first_chunks(self) -> int:
        base = self._base
        if not base.n:
            return 0
        firsts = _ordinals(base.keys) == 0
        alive = np.unpackbits(self._alive, count=base.n, bitorder="little").astype(bool)
        return int(np.count_nonzero(firsts & alive))


def read_snapshot(fd: int, dimension: int, mapped: bool = True) -> FaissIndex:  # noqa: C901 - one bounds check per part
    """The index in the open snapshot file `fd` (layout: see the module doc). `mapped`: the faiss index and the key
    arrays stay in the page cache, shared with other processes, and the load costs milliseconds whatever the size.
    Raises SnapshotFormatError for anything malformed; checks what could make faiss read out of bounds."""
    size = os.fstat(fd).st_size
    if size < _FOOTER.size:
        raise SnapshotFormatError(f"{size} bytes: too short for an index snapshot")
    footer = os.pread(fd, _FOOTER.size, size - _FOOTER.size)
    magic, version, kind_code, faiss_bytes, n, keys_at, order_at, alive_at, _live, m, efc, efs = _FOOTER.unpack(footer)
    if magic != _MAGIC:
        raise SnapshotFormatError("not an LTMC index snapshot (unknown footer)")
    if version != _LAYOUT:  # 1 held float32 vectors: never read as float16 codes
        raise SnapshotFormatError(f"index layout {version}, this LTMC reads layout {_LAYOUT}")
    kinds = {code: name for name, code in _KINDS.items()}
    alive_bytes = (n + 7) // 8
    if (
        kind_code not in kinds
        or keys_at < faiss_bytes
        or order_at != keys_at + 8 * n
        or alive_at != order_at + 8 * n
        or alive_at + alive_bytes + _FOOTER.size != size
    ):
        raise SnapshotFormatError("inconsistent footer (offsets do not add up)")
    kind = kinds[kind_code]
    try:
        index = faiss.read_index(f"/dev/fd/{fd}", faiss.IO_FLAG_MMAP_IFC if mapped else 0)
    except RuntimeError as exc:
        raise SnapshotFormatError(f"faiss cannot read it: {exc}") from exc
    expected = faiss.IndexScalarQuantizer if kind == EXACT else faiss.IndexHNSWSQ
    if not isinstance(index, expected) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise SnapshotFormatError(f"unexpected index type {type(index).__name__} for a {kind} snapshot")
    storage = index if kind == EXACT else faiss.downcast_index(index.storage)
    if not isinstance(storage, faiss.IndexScalarQuantizer) or storage.sq.qtype != _FP16:
        raise SnapshotFormatError("its vectors are not float16 codes")
    if index.d != dimension:
        raise SnapshotFormatError(f"dimension {index.d}, expected {dimension}")
    if index.ntotal != n:
        raise SnapshotFormatError(f"{index.ntotal} vectors, the footer says {n}")
    if kind == HNSW:
        _check_graph(index, n)
    view: mmap.mmap | None = mmap.mmap(fd, size, prot=mmap.PROT_READ)  # size >= the footer: never empty
    assert view is not None
    keys = np.frombuffer(view, dtype=np.int64, count=n, offset=keys_at) if n else np.zeros(0, np.int64)
    order = np.frombuffer(view, dtype=np.int64, count=n, offset=order_at) if n else np.zeros(0, np.int64)
    if n and (int(order.min()) < 0 or int(order.max()) >= n):
        raise SnapshotFormatError("the key order points outside the index")
    alive = np.frombuffer(view, dtype=np.uint8, count=alive_bytes, offset=alive_at).copy()
    if not mapped:
        keys, order, view = keys.copy(), order.copy(), None
    base = _Base(index, keys, order, kind, HnswParams(m, efc, efs), mapped=mapped, owner=view)
    return FaissIndex(dimension, base, alive)


def read_faiss(read: Callable[[int], bytes]) -> Any:
    """An in-memory faiss index from a byte source (`read(n)` returns up to n bytes)."""
    reader = faiss.PyCallbackIOReader(read, 1 << 22)
    try:
        return faiss.read_index(reader)
    except RuntimeError as exc:
        raise SnapshotFormatError(f"faiss cannot read it: {exc}") from exc
    finally:
        del reader


def _copy_graph(source: Any, target: Any) -> None:
    """Copy an HNSW graph into the graph of a new index of the same M, a slice at a time. faiss's own copy
    (`index.hnsw = other.hnsw`) holds the GIL throughout: every store and search waited 145 ms for it at 1M vectors
    (up to 400 ms on a busy machine). Resizing releases the GIL; each slice holds it for about a millisecond."""
    for name in ("assign_probas", "cum_nneighbor_per_level", "levels", "offsets", "neighbors"):
        src, dst = getattr(source, name), getattr(target, name)
        size = src.size()
        dst.resize(size)
        if not size:
            continue
        into, out = faiss.rev_swig_ptr(dst.data(), size), faiss.rev_swig_ptr(src.data(), size)
        for start in range(0, size, 1 << 20):
            into[start : start + (1 << 20)] = out[start : start + (1 << 20)]
    for name in ("entry_point", "max_level", "efConstruction", "efSearch"):
        setattr(target, name, getattr(source, name))


def _check_graph(index: Any, n: int) -> None:
    """Bounds that HNSW search relies on without checking: a damaged graph must be refused, not followed."""
    hnsw = index.hnsw
    size = hnsw.neighbors.size()
    neighbors = faiss.rev_swig_ptr(hnsw.neighbors.data(), size) if size else np.zeros(0, np.int32)
    offsets = faiss.vector_to_array(hnsw.offsets).astype(np.int64)
    levels = faiss.vector_to_array(hnsw.levels).astype(np.int64)
    cumulative = faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int64)
    if len(offsets) != n + 1 or len(levels) != n:
        raise SnapshotFormatError("HNSW graph sizes do not match the vector count")
    if n == 0:
        return
    if int(levels.min()) < 1 or int(levels.max()) >= len(cumulative):
        raise SnapshotFormatError("HNSW node levels out of range")
    if offsets[0] != 0 or offsets[-1] != size or np.any(np.diff(offsets) != cumulative[levels]):
        raise SnapshotFormatError("HNSW neighbour offsets are inconsistent")
    if size and (int(neighbors.min()) < -1 or int(neighbors.max()) >= n):
        raise SnapshotFormatError("HNSW neighbour ids point outside the index")
    if not 0 <= hnsw.entry_point < n or hnsw.max_level != int(levels.max()) - 1:
        raise SnapshotFormatError("HNSW entry point or top level out of range")


def _drop_pages(array: np.ndarray, step: int = 8 << 20) -> None:
    """madvise(MADV_DONTNEED) over the whole pages of an array, a slice at a time (ctypes releases the GIL)."""
    madvise = _libc_madvise()
    if madvise is None:
        return
    page = mmap.PAGESIZE
    address = array.__array_interface__["data"][0]
    start = -(-address // page) * page
    end = (address + array.nbytes) // page * page
    for at in range(start, end, step):
        madvise(at, min(step, end - at), 4)  # MADV_DONTNEED


def _libc_madvise() -> Callable[[int, int, int], int] | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    function = libc.madvise
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_FP16 = faiss.ScalarQuantizer.QT_fp16


def _new_index(kind: str, dimension: int, params: HnswParams) -> Any:
    """An empty index over float16 codes (no training needed: QT_fp16 is a plain conversion)."""
    if kind == EXACT:
        return faiss.IndexScalarQuantizer(dimension, _FP16, faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexHNSWSQ(dimension, _FP16, params.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params.ef_construction
    index.hnsw.efSearch = params.ef_search
    return index


def _codes(flat: Any, n: int, resize: bool = False) -> np.ndarray:
    """The first n float16 vectors of an IndexScalarQuantizer's storage, as a writable view (no copy). `resize`:
    make the storage hold exactly n vectors first (then fill the view, and set ntotal)."""
    d = flat.d
    nbytes = n * d * halfvec.STORED.itemsize
    if resize:
        flat.codes.resize(nbytes)
    if not n:
        return np.zeros((0, d), dtype=halfvec.STORED)
    codes: np.ndarray = faiss.rev_swig_ptr(flat.codes.data(), nbytes)
    return codes.view(halfvec.STORED).reshape(n, d)


def _inner(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Inner products with faiss's own kernel over the float16 values widened to float32: the same scores, bit for
    bit, as a search of the base (faiss decodes float16 exactly and sums in the same order)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    out = np.empty(len(vectors), dtype=np.float32)
    if len(vectors):
        faiss.fvec_inner_products_ny(
            faiss.swig_ptr(out), faiss.swig_ptr(query), faiss.swig_ptr(vectors), query.shape[1], len(vectors)
        )
    return out


def _top(keys: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    if not len(keys):
        return []
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        keys, scores = keys[part], scores[part]
    ranked = np.argsort(-scores, kind="stable")
    return [(int(keys[i]), float(scores[i])) for i in ranked]


def _concat_ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The concatenation of arange(lo[i], hi[i]) for every i, without a Python loop."""
    lengths = np.maximum(hi - lo, 0)
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(lo - (np.cumsum(lengths) - lengths), lengths)
    return starts + np.arange(total)


def _bits_set(bitmap: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.asarray(((bitmap[positions >> 3] >> (positions & 7).astype(np.uint8)) & 1).astype(bool))


def _all_alive(n: int) -> np.ndarray:
    bits = np.packbits(np.ones(n, dtype=bool), bitorder="little")
    return bits if len(bits) else np.zeros(0, dtype=np.uint8)


def _ordinals(keys: np.ndarray) -> np.ndarray:
    return np.asarray(keys, dtype=np.int64) & ((1 << KEY_BITS) - 1)


def _grown(array: np.ndarray, capacity: int, used: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[:used] = array[:used]
    return grown


def _as_matrix(vectors: np.ndarray, dimension: int) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dimension)


class _Bytes:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(self.parts[-1])
