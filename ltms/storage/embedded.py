"""The embedded backend: SQLite holds the truth, an in-memory index over chunk vectors is its cache.

Consistency across processes: every write appends to the database's change log in the same transaction.
Before a search, and after each of its own writes, the backend replays change-log rows newer than the last
one its index has seen (`catch_up`), so memories stored by another process are found at once. The keyword leg
needs no replay: its FTS5 table is written in the memory's own transaction.

The index (ltms.vector_store.chunk_index) is an immutable base, exact or HNSW (approximate, above a size
threshold), plus an in-memory delta and tombstones: a store appends to the delta, an update or delete clears a
bit. A snapshot save folds the delta into a new base off the lock, streams it to disk, and swaps the file's
memory mapping in; a restart maps the snapshot instead of reading it. Searches run in parallel under the read
side of a readers-writer lock; index changes take the write side for microseconds.

After a save, change-log rows below the snapshot (less a margin) are pruned. A process whose index is older than
the pruned rows (idle through a prune) reloads the snapshot, or rebuilds from SQLite, before it answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ltms.errors import StorageError
from ltms.records import Memory
from ltms.retrieval.chunking import Chunker
from ltms.storage.base import (
    BackendHealth,
    Filter,
    KeywordHit,
    StoredMemory,
    VectorHit,
)
from ltms.storage.db import CHUNK_BITS, Database, SqliteTransaction
from ltms.vector_store.chunk_index import EXACT, HNSW, KEY_BITS, FaissIndex, HnswParams
from ltms.vector_store.faiss_config import ResolvedPaths, prepare_directories
from ltms.vector_store.faiss_store import (
    Manifest,
    SnapshotInvalid,
    SnapshotMissing,
    SnapshotStore,
)
from ltms.vector_store.rwlock import ReadWriteLock

assert KEY_BITS == CHUNK_BITS, "the index and the database must agree on chunk keys"

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
# The vector leg fetches this many chunks per wanted memory at first: a long memory can hold several of the
# nearest chunks, and memories, not chunks, are what is returned.
CHUNK_OVERFETCH = 3
# `auto`: an HNSW index from this many live vectors up (exact below half of it once HNSW: no flapping). Chosen by
# bench/bench_index.py: an exact scan costs ~0.1 ms per 1k vectors here (4.9 ms at 50k), HNSW 0.2-1 ms at any size.
HNSW_THRESHOLD = 50_000
# recall@10 against exact search, efSearch=128: 0.981 on 1M clustered vectors (0.962 at 96), 0.997 on MiniLM vectors
# of real sentences, 1.000 at 100k; p50 1.1 ms at 1M (bench/README.md). efSearch is read at search time, not from
# the snapshot, so it can change without a rebuild.
HNSW_PARAMS = HnswParams(m=32, ef_construction=64, ef_search=128)
# A filter matching at most this many memories is answered by an exact search over just their vectors; above it, by
# an unfiltered search that over-fetches and keeps the hits that pass (bench/bench_index.py, filtered retrieve).
EXACT_SUBSET_LIMIT = 10_000
# ... unless the filter keeps at least 1 in DENSE_FILTER_SHARE memories (and DENSE_FILTER_MIN or more): then the
# unfiltered search finds enough matches in a round or two, which costs less than gathering that many vectors (100k
# memories, HNSW, 5-10k matches: 4.5 ms against 11 ms for the exact subset; 100-500 matches: 1 s against 0.8 ms).
DENSE_FILTER_SHARE = 20
DENSE_FILTER_MIN = 2_000
# Snapshots bigger than this are checked (SHA-256) on a thread after the restart has mapped them and answers.
CHECK_LATER_BYTES = 128 * 2**20
# Change-log rows kept below the snapshot for other processes (one that is further behind reloads the snapshot).
PRUNE_MARGIN = 10_000
# Built at open (before answering) when the configured kind is HNSW and the store is small; larger: in the background.
SYNC_HNSW_BUILD = 50_000
RETRY_SAVE_SECONDS = 30.0
# A post-filtered search that has not found k matches among this many nearest chunks scans the matches instead.
MAX_POSTFILTER_FETCH = 50_000


def memory_of(keys: np.ndarray) -> np.ndarray:
    return np.asarray(keys, dtype=np.int64) >> CHUNK_BITS


@dataclass
class _Changes:
    """Change-log rows fetched from SQLite, ready to apply to an index."""

    modified: list[int]
    keys: np.ndarray
    vectors: np.ndarray

    def apply(self, index: FaissIndex) -> None:
        if self.modified:
            index.remove_memories(np.asarray(self.modified, dtype=np.int64))
        index.add(self.keys, self.vectors)

    @property
    def memories(self) -> int:
        return len(self.modified) + len(set((self.keys >> CHUNK_BITS).tolist()) - set(self.modified))


class EmbeddedStorage:
    name = "sqlite"

    def __init__(
        self,
        paths: ResolvedPaths,
        dimension: int,
        model: str,
        *,
        chunker: Chunker | None = None,
        snapshot_every: int = 1000,
        snapshot_quiet_seconds: float = 5.0,
        background_saves: bool = True,
        read_only: bool = False,
        progress: Progress | None = None,
        index_mode: str = "auto",
        hnsw_threshold: int = HNSW_THRESHOLD,
        hnsw_params: HnswParams = HNSW_PARAMS,
        prune_margin: int = PRUNE_MARGIN,
    ) -> None:
        """`read_only` opens an existing store without creating or writing anything, so it works on read-only
        media: the index is built in memory when the snapshot cannot be used, and nothing is saved, moved aside,
        pruned or cleaned up."""
        if index_mode not in ("auto", EXACT, HNSW):
            raise ValueError(f"index mode {index_mode!r}: expected auto, exact or hnsw")
        self.paths = paths
        self.dimension = dimension
        self.model = model
        self.snapshot_every = snapshot_every
        self.snapshot_quiet_seconds = snapshot_quiet_seconds
        self.index_mode = index_mode
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_params = hnsw_params
        self.prune_margin = prune_margin
        self.read_only = read_only
        if read_only:
            _require_existing_store(paths.data_dir, paths.db_path)
        else:
            prepare_directories(paths)
        self.db = Database(paths.db_path, chunker=chunker, progress=progress, read_only=read_only)
        self.snapshots = SnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path, read_only)
        self._rw = ReadWriteLock()  # searches read the index side by side; changes to it write
        self._apply_lock = threading.RLock()  # one thread at a time applies changes or swaps the index
        self._save_lock = threading.Lock()  # one snapshot write at a time from this process
        self._damaged: str | None = None  # what SQLite's integrity check found, once it has
        self._integrity: threading.Thread | None = None
        self._saved = threading.Condition(self._apply_lock)  # notified when a save ends
        self._saving = False
        self._unsaved_changes = 0
        self._last_change = time.monotonic()
        self._next_save_attempt = 0.0
        self.last_snapshot_error: str | None = None
        self.last_snapshot_at: float | None = None
        self._manifest: Manifest | None = None
        self.index_state = "unknown"
        self.index = FaissIndex(dimension)
        self._applied_seq = 0
        self._namespaces: tuple[int, float, dict[str, int]] | None = None  # (seq, monotonic time, counts)
        self._namespaces_cost = 0.0
        self._stop = threading.Event()
        self._saver: threading.Thread | None = None
        self._verifier: threading.Thread | None = None
        self._background_saves = background_saves

    # -- opening ----------------------------------------------------------------------------------------------

    def claim_model(self, model: str, dimension: int, allow_change: bool = False) -> None:
        self.db.claim_model(model, dimension, allow_change)

    def open_index(self) -> None:
        """Map the snapshot and replay newer changes, or rebuild it; then start the saver (and the deferred check).

        A database SQLite's integrity check finds damaged is refused rather than served: it gives wrong or failing
        answers for some memories, and writing into it can spread the damage. The check reads the whole file, so
        it runs on its own connection beside the snapshot load."""
        # A large database is checked on a thread after the start (a 5 GB one takes ~10 s to read: the restart
        # goal is 2 s); until it passes nothing is refused, and once it fails every call is (see _refuse_if_damaged).
        later = _file_size(self.paths.db_path) > CHECK_LATER_BYTES
        check = self._integrity = threading.Thread(target=self._integrity_check, name="ltmc-integrity", daemon=True)
        check.start()
        try:
            with self._apply_lock:
                index, seq, unsaved = self._load_or_build()
                self._install(index, seq)
        except StorageError:
            check.join()  # a read that hit a damaged page: report what the check found, the way every damage is
            if self._damaged is not None:
                raise StorageError("serve from", self.paths.db_path, self._damaged) from None
            raise
        finally:
            if not later:
                check.join()
        if self._damaged is not None:
            self._discard_check(index)
            raise StorageError("serve from", self.paths.db_path, self._damaged)
        if unsaved and not self.read_only:  # built from SQLite: save it now, so the next start maps it
            self._unsaved_changes = max(self._unsaved_changes, 1)
            self.save_snapshot(raise_errors=False, force=True, convert=False)
        self._start_check(index, seq)
        if self._background_saves and not self.read_only and self._saver is None:
            self._saver = threading.Thread(target=self._save_when_due, name="ltmc-snapshot", daemon=True)
            self._saver.start()

    def _load_or_build(self) -> tuple[FaissIndex, int, bool]:
        """The snapshot with newer changes replayed, or (missing or untrusted) an index built from SQLite; the
        change it is up to; whether it must be saved. Never saves itself: callers may hold the apply lock."""
        paths = self.paths
        try:  # left by saves killed mid-write: up to a snapshot's size each
            if not self.read_only:
                self.snapshots.remove_stale_temp_files()
        except StorageError as exc:  # worth a loud line, not a refusal to start: no memory depends on it
            log.error("%s", exc)
        latest = self.db.max_seq()
        try:
            index, manifest = self.snapshots.load(
                self.dimension, self.model, self.db.database_id, check_later_above=CHECK_LATER_BYTES
            )
            try:
                if manifest.last_seq > latest:
                    raise SnapshotInvalid(f"it includes change {manifest.last_seq}, the database only {latest}")
                if manifest.last_seq < self.db.pruned_through():
                    raise SnapshotInvalid(
                        f"it ends at change {manifest.last_seq}, and the change log was pruned past it "
                        f"(through {self.db.pruned_through()})"
                    )
            except SnapshotInvalid:
                self._discard_check(index)
                raise
        except SnapshotMissing:
            log.info("no index snapshot at %s yet: building the index from %s", paths.index_path, paths.db_path)
            return self._rebuilt("created")
        except SnapshotInvalid as exc:
            log.warning("index snapshot %s cannot be used: %s", paths.index_path, exc)
            self._move_aside(str(exc))
            return self._rebuilt("rebuilt")
        changes = self._fetch(manifest.last_seq, latest)
        changes.apply(index)
        if index.pending_check is None:  # small snapshot: the vector count is checked now (else on the thread)
            chunks = self.db.chunk_count()
            if index.ntotal != chunks:
                log.warning(
                    "index snapshot %s holds %d vectors after replay, the database %d chunks: rebuilding",
                    paths.index_path,
                    index.ntotal,
                    chunks,
                )
                self._move_aside("vector count does not match the database")
                return self._rebuilt("rebuilt")
        self.index_state = "loaded"
        self._manifest = manifest
        self.last_snapshot_at = manifest.saved_at
        log.info(
            "loaded index snapshot %s (%s, memory-mapped): %d vectors, replayed %d newer changes",
            paths.index_path,
            index.kind,
            index.ntotal,
            changes.memories,
        )
        self._unsaved_changes += changes.memories
        return self._converted_if_small(index), latest, False

    def _integrity_check(self) -> None:
        try:
            damage = self.db.integrity_problems()
        except Exception:  # the checker must never take the server down; the error is logged
            log.exception("the integrity check of %s could not run", self.paths.db_path)
            return
        if damage:
            self._damaged = (
                f"SQLite's integrity check fails ({'; '.join(damage)}); refusing to run on a damaged "
                "database. Stop, copy the data directory and run `ltmc doctor`"
            )
            log.error("%s: %s", self.paths.db_path, self._damaged)

    def _refuse_if_damaged(self) -> None:
        if self._damaged is not None:
            raise StorageError("serve from", self.paths.db_path, self._damaged)

    def _move_aside(self, reason: str) -> None:
        if self.read_only:
            log.warning("read-only: the snapshot is left as it is; the index is built in memory (%s)", reason)
            return
        self.snapshots.move_aside(reason)

    def _rebuilt(self, state: str) -> tuple[FaissIndex, int, bool]:
        index, seq = self.build_index()
        self.index_state = state
        return self._converted_if_small(index), seq, True

    def _install(self, index: FaissIndex, seq: int) -> FaissIndex:
        """Make `index` (up to change `seq`) the live index, with every change since replayed onto it first:
        most of them before taking the lock (the index is not live yet), the last few under it."""
        latest = self.db.max_seq()
        if latest > seq and self.db.pruned_through() <= seq:
            self._fetch(seq, latest).apply(index)
            seq = latest
        with self._apply_lock:
            target = max(seq, self._applied_seq)
            self._fetch(seq, target).apply(index)
            with self._rw.write():
                replaced, self.index, self._applied_seq = self.index, index, target
        return replaced  # the caller drops it, outside every lock

    def _start_check(self, index: FaissIndex, seq: int) -> None:
        """Run a mapped snapshot's deferred check (checksum, then adoption into memory) on a thread."""
        check, index.pending_check = index.pending_check, None
        if check is not None:
            self._verifier = threading.Thread(
                target=self._check_later, args=(check, seq), name="ltmc-verify", daemon=True
            )
            self._verifier.start()

    def _converted_if_small(self, index: FaissIndex) -> FaissIndex:
        """The index in the configured kind now, if that is quick; a large conversion is left to the saver."""
        kind = self._target_kind(index)
        if kind != index.kind and index.ntotal <= SYNC_HNSW_BUILD:
            return index.compacted(kind, self.hnsw_params)
        return index

    def build_index(self, progress: Progress | None = None) -> tuple[FaissIndex, int]:
        """A fresh exact index from every chunk vector in the database, and the change sequence it includes."""
        # Its own connection: the read transaction (rows and sequence from one consistent state) lasts minutes at
        # a million memories, and must not hold the shared connection that every search and store goes through.
        reader = Database(self.paths.db_path, read_only=self.read_only)
        try:
            with reader.read_transaction():
                seq = reader.max_seq()
                total = reader.chunk_count()

                def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                    done = 0
                    for keys, vectors in reader.iter_chunk_vectors(self.dimension):
                        yield keys, vectors
                        done += len(keys)
                        if progress:
                            progress(done, total)

                index = FaissIndex.exact_from(self.dimension, total, batches())
        finally:
            reader.close()
        log.info("built the index from %s: %d vectors", self.db.path, index.ntotal)
        return index, seq

    def _target_kind(self, index: FaissIndex) -> str:
        if self.index_mode != "auto":
            return self.index_mode
        live = index.ntotal
        if index.kind == HNSW:
            return HNSW if live >= self.hnsw_threshold // 2 else EXACT
        return HNSW if live >= self.hnsw_threshold else EXACT

    # -- keeping the index current ------------------------------------------------------------------------------

    def _fetch(self, after_seq: int, up_to_seq: int) -> _Changes:
        """The changes in (after_seq, up_to_seq] with the current vectors of every memory they touch."""
        if up_to_seq <= after_seq:
            return _Changes([], np.zeros(0, dtype=np.int64), np.zeros((0, self.dimension), dtype=np.float32))
        added, modified = self.db.changed_ids(after_seq, up_to_seq)
        keys, vectors = self.db.chunk_vectors_for(added + modified, self.dimension)
        return _Changes(modified, keys, vectors)

    def catch_up(self) -> None:
        """Bring the index up to date with every committed change, ours or another process's."""
        if self.db.max_seq() == self._applied_seq:
            return
        with self._apply_lock:
            latest = self.db.max_seq()
            applied = self._applied_seq
            if latest == applied:
                return
            if latest < applied or self.db.pruned_through() > applied:
                self._reload(latest, applied)
                return
            changes = self._fetch(applied, latest)  # SQLite reads: outside the index lock
            with self._rw.write():
                changes.apply(self.index)
                self._applied_seq = latest
            self._unsaved_changes += changes.memories
            self._last_change = time.monotonic()

    def _reload(self, latest: int, applied: int) -> None:
        """The change log cannot bring this index up to date (replaced database, or pruned past it)."""
        log.warning(
            "the index is at change %d and the change log cannot replay from there (latest %d, pruned through %d):"
            " reloading the index",
            applied,
            latest,
            self.db.pruned_through(),
        )
        index, seq, _ = self._load_or_build()
        with self._rw.write():
            self.index, self._applied_seq = index, seq
        self._start_check(index, seq)
        self._unsaved_changes += 1  # the saver (or close) writes it

    # -- the Storage protocol -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SqliteTransaction]:
        self._refuse_if_damaged()
        with self.db.transaction() as tx:
            yield tx
        self.catch_up()

    def get(self, memory_id: int) -> Memory | None:
        self._refuse_if_damaged()
        return self.db.get(memory_id)

    def get_many(self, ids: Sequence[int]) -> dict[int, Memory]:
        self._refuse_if_damaged()
        return self.db.get_many(ids)

    def page(self, where: Filter, limit: int, offset: int) -> tuple[list[Memory], int]:
        self._refuse_if_damaged()
        return self.db.page(where, limit, offset)

    def find_by_hash(self, namespace: str, content_hash: str) -> int | None:
        return self.db.id_for_hash(namespace, content_hash)

    def count(self) -> int:
        return self.db.count()

    def counts_by_namespace(self) -> dict[str, int]:
        """Cached: recomputed when something changed, and on a large store at most every few seconds (a GROUP BY
        over a million rows takes a tenth of a second)."""
        cached, seq, now = self._namespaces, self._applied_seq, time.monotonic()
        # Reused after a change only where counting is expensive (>= 10 ms: a large store), for a short while.
        stale_ok = self._namespaces_cost >= 0.01 and cached is not None and now - cached[1] < 50 * self._namespaces_cost
        if cached is not None and (cached[0] == seq or stale_ok):
            return dict(cached[2])
        started = time.monotonic()
        counts = self.db.counts_by_namespace()
        self._namespaces_cost = min(time.monotonic() - started, 0.2)
        self._namespaces = (seq, now, counts)
        return dict(counts)

    def iter_stored(self, batch: int = 1000) -> Iterator[StoredMemory]:
        return self.db.iter_stored(self.dimension, batch)

    def vector_search(self, vector: np.ndarray, k: int, where: Filter) -> list[VectorHit]:
        self._refuse_if_damaged()
        self.catch_up()
        best = self._search(vector, k) if where.is_empty else self._filtered_search(vector, k, where)
        assert best is not None
        spans = self.db.chunk_spans([key for key, _ in best])
        return [
            VectorHit(key >> CHUNK_BITS, _cosine(score), *spans[key])
            for key, score in best
            if key in spans  # deleted by another process since the search
        ]

    def _search(
        self, vector: np.ndarray, k: int, keep: Callable[[list[int]], set[int]] | None = None
    ) -> list[tuple[int, float]] | None:
        """(chunk key, similarity) of the best chunk of each of the k best memories, among those `keep` accepts
        (a post-filter). Over-fetches chunks until k memories pass, then falls back to an exact scan."""
        fetch = k * CHUNK_OVERFETCH * (4 if keep else 1)
        exact = False
        while True:
            with self._rw.read():
                index = self.index
                available = index.ntotal
                ranked = index.search(vector, min(fetch, available), exact=exact, ef_search=self.hnsw_params.ef_search)
            best: dict[int, tuple[int, float]] = {}
            for key, score in ranked:  # best first: the first chunk seen of a memory is its best
                best.setdefault(key >> CHUNK_BITS, (key, score))
            if keep is not None:
                passed = keep(list(best))
                best = {memory_id: hit for memory_id, hit in best.items() if memory_id in passed}
            if len(best) >= k:
                return list(best.values())[:k]
            if keep is not None and fetch >= MAX_POSTFILTER_FETCH:
                return None  # the matches are far from the query: the caller scans all of them exactly
            if fetch < available:
                fetch *= 4
            elif exact or index.kind == EXACT:
                return list(best.values())  # every live vector was ranked: fewer than k memories exist
            else:
                exact = True  # an approximate search came back short (dead nodes, small graph): scan

    def _filtered_search(self, vector: np.ndarray, k: int, where: Filter) -> list[tuple[int, float]]:
        """The planner: an exact search over just the matching memories when they are few; otherwise an
        unfiltered search whose hits are kept only if they match (one SQL query per round)."""
        matching = self.db.count_matching(where, EXACT_SUBSET_LIMIT + 1)
        dense = matching >= DENSE_FILTER_MIN and matching * DENSE_FILTER_SHARE >= self.index.live_memories
        if matching > EXACT_SUBSET_LIMIT or dense:
            found = self._search(vector, k, keep=lambda candidates: self.db.matching_among(candidates, where))
            if found is not None:
                return found
        ids = self.db.matching_ids(where)
        with self._rw.read():
            return self.index.search_memories(vector, k, ids)

    def best_chunks(self, vector: np.ndarray, memory_ids: Sequence[int]) -> dict[int, VectorHit]:
        """The best chunk of each given memory (for hits the keyword leg found and the vector leg did not)."""
        keys, vectors = self.db.chunk_vectors_for(list(memory_ids), self.dimension)
        if not len(keys):
            return {}
        scores = vectors @ np.asarray(vector, dtype=np.float32)
        best: dict[int, tuple[int, float]] = {}
        for key, score in zip(keys.tolist(), scores.tolist(), strict=True):
            memory_id = key >> CHUNK_BITS
            if memory_id not in best or score > best[memory_id][1]:
                best[memory_id] = (key, score)
        spans = self.db.chunk_spans([key for key, _ in best.values()])
        return {
            memory_id: VectorHit(memory_id, _cosine(score), *spans[key])
            for memory_id, (key, score) in best.items()
            if key in spans
        }

    def keyword_search(self, terms: Sequence[str], k: int, where: Filter) -> list[KeywordHit]:
        self._refuse_if_damaged()
        return self.db.keyword_search(terms, k, where)

    def health(self) -> BackendHealth:
        """From cached counters: no catch-up and no full-table query (it is polled)."""
        index, applied, unsaved = self.index, self._applied_seq, self._unsaved_changes
        manifest = self._manifest
        with contextlib.suppress(SnapshotInvalid):  # another process may have saved a newer one
            manifest = self.snapshots.read_manifest() or manifest
        return BackendHealth(
            backend=self.name,
            location=str(self.paths.db_path),
            memories=index.live_memories,
            index={
                "state": self.index_state,
                "kind": index.kind,
                "vectors": index.ntotal,
                "delta_vectors": index.delta_size,
                "dead_vectors": index.dead,
                "applied_change": applied,
                "unsaved_changes": unsaved,
                "snapshot_path": str(self.paths.index_path),
                "snapshot_saved_at": manifest.saved_at if manifest else None,
                "snapshot_last_change": manifest.last_seq if manifest else None,
                "snapshot_bytes": manifest.size if manifest else 0,
                "last_snapshot_error": self.last_snapshot_error,
            },
            problems=tuple(p for p in (self._damaged, self.last_snapshot_error) if p),
        )

    # -- snapshots ------------------------------------------------------------------------------------------------

    def flush(self) -> None:
        self.save_snapshot()

    def save_snapshot(self, raise_errors: bool = True, force: bool = False, convert: bool = True) -> bool:
        """Fold the delta into a new base and write it as the snapshot, if anything changed since the last one
        (or `force`, or the index should change kind and `convert`). Returns whether it wrote.

        Only a copy of the delta and the tombstones is taken under the lock; the new base is built and streamed
        to disk outside it (one extra copy of the index at the peak), then its mapping is swapped in and the
        changes made meanwhile are replayed onto it. The changes a save covers leave the unsaved count when it
        starts (and come back if it fails), so nobody sees a manifest on disk that holds changes the count still
        calls unsaved."""
        if self.read_only:
            return False
        with self._save_lock:
            with self._apply_lock:
                index = self.index
                kind = self._target_kind(index) if convert else index.kind
                pending = self._unsaved_changes
                if pending == 0 and not force and kind == index.kind:
                    return False
                with self._rw.read():
                    frozen = index.freeze()
                seq = self._applied_seq
                self._unsaved_changes -= pending
                self._saving = True
            try:
                compacted = frozen.compacted(kind, self.hnsw_params)
                del frozen
                manifest = self.snapshots.save(
                    compacted, compacted.ntotal, self.dimension, self.model, seq, self.db.database_id
                )
            except BaseException as exc:
                with self._saved:
                    self._unsaved_changes += pending
                    self._saving = False
                    self._saved.notify_all()
                if not isinstance(exc, StorageError):
                    raise
                self.last_snapshot_error = str(exc)
                self._next_save_attempt = time.monotonic() + RETRY_SAVE_SECONDS
                log.error(
                    "index snapshot not saved: %s (memories are safe in %s; the index will be rebuilt from it)",
                    exc,
                    self.paths.db_path,
                )
                if raise_errors:
                    raise
                return False
            del index
            try:
                replaced = self._install(compacted, seq)  # and the changes made meanwhile
            finally:
                with self._saved:
                    self._saving = False
                    self._saved.notify_all()
            replaced.release()  # gives its memory back in slices: freeing it at once stalls every thread
            del replaced
            self.last_snapshot_error = None
            if manifest is None:
                return False
            self._manifest = manifest
            self.last_snapshot_at = manifest.saved_at
            log.info(
                "saved index snapshot %s (%s): %d vectors up to change %d",
                self.paths.index_path,
                compacted.kind,
                compacted.ntotal,
                seq,
            )
            self._prune(manifest.last_seq)
            return True

    def wait_until_saved(self, timeout: float) -> bool:
        """Wait until every change applied so far is in a snapshot on disk and no save is under way (True), or
        until `timeout` seconds pass (False). For shutdown paths and tests: an event to wait on, not a sleep."""
        with self._saved:
            return self._saved.wait_for(lambda: self._unsaved_changes == 0 and not self._saving, timeout)

    def _prune(self, snapshot_seq: int) -> None:
        try:
            pruned = self.db.prune_changes(snapshot_seq - self.prune_margin)
        except StorageError as exc:  # the change log only grows: nothing is lost
            log.warning("change log not pruned: %s", exc)
            return
        if pruned:
            log.info("pruned %d change-log rows below change %d", pruned, snapshot_seq - self.prune_margin + 1)

    def _check_later(self, check: Callable[[], Any], seq: int) -> None:
        """Background thread after a restart from a large snapshot: its checksum, then its vector count."""
        try:
            owned = check()
            with self._rw.write():
                adopted = self.index.adopt(owned)
            del owned
            log.info("index snapshot %s: checksum verified%s", self.paths.index_path, ", now in memory" * adopted)
            with self._apply_lock:
                same = self._applied_seq == seq
            chunks = self.db.chunk_count() if same else None
            with self._apply_lock:
                if chunks is not None and self._applied_seq == seq and self.index.ntotal != chunks:
                    raise SnapshotInvalid(f"{self.index.ntotal} vectors after replay, the database {chunks} chunks")
        except SnapshotInvalid as exc:
            log.warning("index snapshot %s failed its check after loading: %s: rebuilding", self.paths.index_path, exc)
            self._move_aside(str(exc))
            index, seq = self.build_index()
            self.index_state = "rebuilt"
            self._install(self._converted_if_small(index), seq)
            self._unsaved_changes += 1
            self.save_snapshot(raise_errors=False, force=True, convert=False)
        except Exception:  # the checker must never take the server down; the error is logged
            log.exception("unexpected error while checking the index snapshot")

    @staticmethod
    def _discard_check(index: FaissIndex) -> None:
        """Close the file a deferred check holds open, when the index is dropped or already trusted."""
        check, index.pending_check = index.pending_check, None
        if check is not None:
            closer = getattr(check, "close", None)
            if closer is not None:
                closer()

    def _save_when_due(self) -> None:
        """Background thread: save after `snapshot_every` changes (more on a large index), once changes have been
        quiet a while, or when the index should change kind (exact <-> HNSW)."""
        while not self._stop.wait(0.25):
            if time.monotonic() < self._next_save_attempt:
                continue
            index = self.index
            pending = self._unsaved_changes
            quiet = time.monotonic() - self._last_change
            # A save rewrites the whole snapshot: on a large index, save after proportionally more changes
            # (replaying them from the change log at start-up stays cheap).
            every = max(self.snapshot_every, index.ntotal // 100)
            convert = self._target_kind(index) != index.kind
            if convert or (pending and (pending >= every or quiet >= self.snapshot_quiet_seconds)):
                try:
                    self.save_snapshot(raise_errors=False)
                except Exception:  # the saver must never die; the error is logged
                    self._next_save_attempt = time.monotonic() + RETRY_SAVE_SECONDS
                    log.exception("unexpected error while saving the index snapshot")

    def close(self) -> None:
        """Stop the background threads, save a final snapshot, close the database. Safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        for thread in (self._saver, self._verifier):
            if thread is None:
                continue
            thread.join(timeout=30)
            if thread.is_alive():  # still writing a snapshot: closing the database under it would crash it
                log.warning("the snapshot writer did not finish within 30 s; leaving %s open", self.paths.db_path)
                return
        self.save_snapshot(raise_errors=False, convert=False)
        self.db.close()


def _cosine(score: float) -> float:
    """A similarity within -1..1: float16 vectors are unit length only to ~1e-4, so a passage's similarity to its own
    text can come out at 1.0001."""
    return min(1.0, max(-1.0, score))


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _require_existing_store(data_dir: Path, db_path: Path) -> None:
    """A read-only open never creates a store: a missing one is an error naming what is missing."""
    never = "(a read-only open never creates one)"
    for path, kind in ((data_dir, stat.S_ISDIR), (db_path, stat.S_ISREG)):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            missing = "it does not exist" if path == data_dir else f"there is no {db_path.name}"
            raise StorageError("open the memory store in", data_dir, f"{missing} {never}") from None
        except OSError as exc:
            raise StorageError("open the memory store in", path, exc.strerror or exc) from exc
        if not kind(mode):
            raise StorageError(
                "open the memory store in", path, f"it is not a {'directory' if path == data_dir else 'file'}"
            )
