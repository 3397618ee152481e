"""The embedded backend: SQLite holds the truth, an in-memory FAISS index over chunk vectors is its cache.

Consistency across processes: every write appends to the database's change log in the same transaction.
Before a search, and after each of its own writes, the backend replays change-log rows newer than the last
one its index has seen (`catch_up`), so memories stored by another process are found at once. The keyword leg
needs no replay: its FTS5 table is written in the memory's own transaction.

The index is saved as a verified snapshot (ltms.vector_store.faiss_store) after a batch of changes or a quiet
period and at close, never on every write; a snapshot that cannot be trusted is moved aside and rebuilt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
from ltms.vector_store.faiss_config import ResolvedPaths, prepare_directories
from ltms.vector_store.faiss_store import FaissIndex, SnapshotInvalid, SnapshotMissing, SnapshotStore

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
# The vector leg fetches this many chunks per wanted memory at first: a long memory can hold several of the
# nearest chunks, and memories, not chunks, are what is returned.
CHUNK_OVERFETCH = 3


def memory_of(keys: np.ndarray) -> np.ndarray:
    return np.asarray(keys, dtype=np.int64) >> CHUNK_BITS


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
    ) -> None:
        """`read_only` opens an existing store without creating or writing anything, so it works on read-only
        media: the index is built in memory when the snapshot cannot be used, and nothing is saved, moved aside or
        cleaned up."""
        self.paths = paths
        self.dimension = dimension
        self.model = model
        self.read_only = read_only
        self.snapshot_every = snapshot_every
        self.snapshot_quiet_seconds = snapshot_quiet_seconds
        if read_only:
            _require_existing_store(paths.data_dir, paths.db_path)
        else:
            prepare_directories(paths)
        self.db = Database(paths.db_path, chunker=chunker, progress=progress, read_only=read_only)
        self.snapshots = SnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path, read_only)
        self._lock = threading.RLock()  # guards the index, _applied_seq and the counters below
        self._save_lock = threading.Lock()  # one snapshot write at a time from this process
        self._saved = threading.Condition(self._lock)  # notified when a save ends
        self._saving = False
        self._unsaved_changes = 0
        self._last_change = time.monotonic()
        self.last_snapshot_error: str | None = None
        self.last_snapshot_at: float | None = None
        self.index_state = "unknown"
        self.index = FaissIndex(dimension)
        self._applied_seq = 0
        self._stop = threading.Event()
        self._saver: threading.Thread | None = None
        self._background_saves = background_saves

    # -- opening ----------------------------------------------------------------------------------------------

    def claim_model(self, model: str, dimension: int, allow_change: bool = False) -> None:
        self.db.claim_model(model, dimension, allow_change)

    def open_index(self) -> None:
        """Load the snapshot (verified) and replay newer changes, or rebuild it; then start the saver.

        A database SQLite's integrity check finds damaged is refused rather than served: it gives wrong or failing
        answers for some memories, and writing into it can spread the damage. The check reads the whole file, so
        it runs on its own connection beside the snapshot load (which reads the whole index)."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltmc-integrity") as pool:
            check = pool.submit(self.db.integrity_problems)
            self.index, self._applied_seq = self._open_index()
            damage = check.result()
        if damage:
            raise StorageError(
                "serve from",
                self.paths.db_path,
                f"SQLite's integrity check fails ({'; '.join(damage)}); refusing to run on a damaged "
                "database. Stop, copy the data directory and run `ltmc doctor`",
            )
        if self._background_saves and not self.read_only and self._saver is None:
            self._saver = threading.Thread(target=self._save_when_due, name="ltmc-snapshot", daemon=True)
            self._saver.start()

    def _open_index(self) -> tuple[FaissIndex, int]:
        paths = self.paths
        try:  # left by saves killed mid-write: up to a snapshot's size each
            if not self.read_only:
                self.snapshots.remove_stale_temp_files()
        except StorageError as exc:  # worth a loud line, not a refusal to start: no memory depends on it
            log.error("%s", exc)
        latest = self.db.max_seq()
        try:
            index, manifest = self.snapshots.load(self.dimension, self.model, self.db.database_id)
            if manifest.last_seq > latest:
                raise SnapshotInvalid(f"it includes change {manifest.last_seq}, the database only {latest}")
        except SnapshotMissing:
            log.info("no index snapshot at %s yet: building the index from %s", paths.index_path, paths.db_path)
            return self._rebuild_and_save("created")
        except SnapshotInvalid as exc:
            log.warning("index snapshot %s cannot be used: %s", paths.index_path, exc)
            self._move_aside(str(exc))
            return self._rebuild_and_save("rebuilt")
        self.index = index
        replayed = self._replay(manifest.last_seq, latest)
        chunks = self.db.chunk_count()
        if index.ntotal != chunks:
            log.warning(
                "index snapshot %s holds %d vectors after replay, the database %d chunks: rebuilding",
                paths.index_path,
                index.ntotal,
                chunks,
            )
            self._move_aside("vector count does not match the database")
            return self._rebuild_and_save("rebuilt")
        self.index_state = "loaded"
        self.last_snapshot_at = manifest.saved_at
        log.info(
            "loaded index snapshot %s: %d vectors, replayed %d newer changes", paths.index_path, index.ntotal, replayed
        )
        self._unsaved_changes = replayed
        return index, latest

    def _move_aside(self, reason: str) -> None:
        if self.read_only:
            log.warning("read-only: the snapshot is left as it is; the index is built in memory (%s)", reason)
            return
        self.snapshots.move_aside(reason)

    def _rebuild_and_save(self, state: str) -> tuple[FaissIndex, int]:
        index, seq = self.build_index()
        self.index_state = state
        self.index, self._applied_seq = index, seq
        self.save_snapshot(raise_errors=False, force=True)
        return index, seq

    def build_index(self, progress: Progress | None = None) -> tuple[FaissIndex, int]:
        """A fresh index from every chunk vector in the database, and the change sequence it includes."""
        with self.db.read_transaction():  # rows and sequence from one consistent state
            seq = self.db.max_seq()
            total = self.db.chunk_count()
            index = FaissIndex(self.dimension)
            done = 0
            for keys, vectors in self.db.iter_chunk_vectors(self.dimension):
                index.add(keys, vectors)
                done += len(keys)
                if progress:
                    progress(done, total)
        log.info("built the index from %s: %d vectors", self.db.path, index.ntotal)
        return index, seq

    # -- keeping the index current ------------------------------------------------------------------------------

    def _replay(self, after_seq: int, up_to_seq: int) -> int:
        """Apply every change in (after_seq, up_to_seq] to the index; returns how many memories changed."""
        if up_to_seq <= after_seq:
            return 0
        added, modified = self.db.changed_ids(after_seq, up_to_seq)
        if modified:  # removal scans the whole index: only pay for it when something was updated or deleted
            existing = self.index.ids()
            stale = existing[np.isin(memory_of(existing), np.asarray(modified, dtype=np.int64))]
            self.index.remove(stale)
        keys, vectors = self.db.chunk_vectors_for(added + modified, self.dimension)
        self.index.add(keys, vectors)
        return len(added) + len(modified)

    def catch_up(self) -> None:
        """Bring the index up to date with every committed change, ours or another process's."""
        with self._lock:
            latest = self.db.max_seq()
            if latest == self._applied_seq:
                return
            if latest < self._applied_seq:  # the database was replaced under us
                log.warning(
                    "the database's change log went backwards (%d < %d): rebuilding the index",
                    latest,
                    self._applied_seq,
                )
                self.index, self._applied_seq = self.build_index()
                self._unsaved_changes += 1
                return
            changed = self._replay(self._applied_seq, latest)
            self._applied_seq = latest
            self._unsaved_changes += changed
            self._last_change = time.monotonic()

    # -- the Storage protocol -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SqliteTransaction]:
        with self._lock:
            with self.db.transaction() as tx:
                yield tx
            self.catch_up()

    def get(self, memory_id: int) -> Memory | None:
        return self.db.get(memory_id)

    def get_many(self, ids: Sequence[int]) -> dict[int, Memory]:
        return self.db.get_many(ids)

    def page(self, where: Filter, limit: int, offset: int) -> tuple[list[Memory], int]:
        return self.db.page(where, limit, offset)

    def find_by_hash(self, namespace: str, content_hash: str) -> int | None:
        return self.db.id_for_hash(namespace, content_hash)

    def count(self) -> int:
        return self.db.count()

    def counts_by_namespace(self) -> dict[str, int]:
        return self.db.counts_by_namespace()

    def iter_stored(self, batch: int = 1000) -> Iterator[StoredMemory]:
        return self.db.iter_stored(self.dimension, batch)

    def vector_search(self, vector: np.ndarray, k: int, where: Filter) -> list[VectorHit]:
        with self._lock:
            self.catch_up()
            allowed = None if where.is_empty else self.db.filter_chunk_keys(where)
            best = self._best_chunk_per_memory(vector, k, allowed)
        spans = self.db.chunk_spans([key for key, _ in best])
        return [
            VectorHit(key >> CHUNK_BITS, score, *spans[key])
            for key, score in best
            if key in spans  # deleted by another process since the search
        ]

    def _best_chunk_per_memory(self, vector: np.ndarray, k: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        """(chunk key, similarity) of the best chunk of each of the k best memories."""
        available = self.index.ntotal if allowed is None else len(allowed)
        fetch = k * CHUNK_OVERFETCH
        while True:
            ranked = self.index.search(vector, min(fetch, available), allowed)
            best: dict[int, tuple[int, float]] = {}
            for key, score in ranked:  # best first: the first chunk seen of a memory is its best
                best.setdefault(key >> CHUNK_BITS, (key, score))
            if len(best) >= k or fetch >= available:
                return list(best.values())[:k]
            fetch *= 4

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
            memory_id: VectorHit(memory_id, score, *spans[key])
            for memory_id, (key, score) in best.items()
            if key in spans
        }

    def keyword_search(self, terms: Sequence[str], k: int, where: Filter) -> list[KeywordHit]:
        return self.db.keyword_search(terms, k, where)

    def health(self) -> BackendHealth:
        with self._lock:
            self.catch_up()
            vectors, applied, unsaved = self.index.ntotal, self._applied_seq, self._unsaved_changes
        manifest = None
        try:
            manifest = self.snapshots.read_manifest()
        except SnapshotInvalid as exc:
            log.warning("%s", exc)
        return BackendHealth(
            backend=self.name,
            location=str(self.paths.db_path),
            memories=self.db.count(),
            index={
                "state": self.index_state,
                "vectors": vectors,
                "applied_change": applied,
                "unsaved_changes": unsaved,
                "snapshot_path": str(self.paths.index_path),
                "snapshot_saved_at": manifest.saved_at if manifest else None,
                "snapshot_last_change": manifest.last_seq if manifest else None,
                "snapshot_bytes": manifest.size if manifest else 0,
                "last_snapshot_error": self.last_snapshot_error,
            },
            problems=(self.last_snapshot_error,) if self.last_snapshot_error else (),
        )

    # -- snapshots ------------------------------------------------------------------------------------------------

    def flush(self) -> None:
        self.save_snapshot()

    def save_snapshot(self, raise_errors: bool = True, force: bool = False) -> bool:
        """Write the index snapshot if anything changed since the last one (or `force`). Returns whether it wrote.

        The changes a save covers leave the unsaved count when the save starts (and come back if it fails), so
        nobody sees a manifest on disk that holds changes the count still calls unsaved."""
        if self.read_only:
            return False
        with self._save_lock:
            with self._lock:
                if self._unsaved_changes == 0 and not force:
                    return False
                # Clone under the lock (fast), serialize outside it: at 1M vectors serializing took 7 s, and
                # every store and search waited for it.
                copy = self.index.clone()
                count, seq, pending = self.index.ntotal, self._applied_seq, self._unsaved_changes
                self._unsaved_changes -= pending
                self._saving = True
            try:
                data = copy.serialize()
                del copy
                manifest = self.snapshots.save(data, count, self.dimension, self.model, seq, self.db.database_id)
            except BaseException as exc:
                with self._lock:
                    self._unsaved_changes += pending
                if not isinstance(exc, StorageError):
                    raise
                self.last_snapshot_error = str(exc)
                log.error(
                    "index snapshot not saved: %s (memories are safe in %s; the index will be rebuilt from it)",
                    exc,
                    self.paths.db_path,
                )
                if raise_errors:
                    raise
                return False
            finally:
                with self._saved:
                    self._saving = False
                    self._saved.notify_all()
            self.last_snapshot_error = None
            if manifest is not None:
                self.last_snapshot_at = manifest.saved_at
                log.info("saved index snapshot %s: %d vectors up to change %d", self.paths.index_path, count, seq)
            return manifest is not None

    def wait_until_saved(self, timeout: float) -> bool:
        """Wait until every change applied so far is in a snapshot on disk and no save is under way (True), or
        until `timeout` seconds pass (False). For shutdown paths and tests: an event to wait on, not a sleep."""
        with self._saved:
            return self._saved.wait_for(lambda: self._unsaved_changes == 0 and not self._saving, timeout)

    def _save_when_due(self) -> None:
        """Background thread: save after `snapshot_every` changes, or once changes have been quiet a while."""
        while not self._stop.wait(0.25):
            with self._lock:
                pending = self._unsaved_changes
                quiet = time.monotonic() - self._last_change
            # A save rewrites the whole snapshot: on a large index, save after proportionally more changes
            # (replaying them from the change log at start-up stays cheap).
            every = max(self.snapshot_every, self.index.ntotal // 100)
            if pending and (pending >= every or quiet >= self.snapshot_quiet_seconds):
                try:
                    self.save_snapshot(raise_errors=False)
                except Exception:  # the saver must never die; the error is logged
                    log.exception("unexpected error while saving the index snapshot")

    def close(self) -> None:
        """Stop the background saver, save a final snapshot, close the database. Safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._saver is not None:
            self._saver.join(timeout=30)
            if self._saver.is_alive():  # still writing a snapshot: closing the database under it would crash it
                log.warning("the snapshot writer did not finish within 30 s; leaving %s open", self.paths.db_path)
                return
        self.save_snapshot(raise_errors=False)
        self.db.close()


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
