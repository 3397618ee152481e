"""The memory service: the one API every transport and the CLI call.

It owns the database (the source of truth), the in-memory FAISS index (a cache of the database's vectors)
and the embedder. Data flows one way: callers -> service -> (embedder, database, index).

Consistency across processes: every write appends to the database's change log in the same transaction.
Before a search, and after each of its own writes, the service replays change-log rows newer than the last
one its index has seen (`_catch_up`), so memories stored by another process are found at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ltms import validation
from ltms.config import Settings
from ltms.embeddings import EMBEDDER_CHOICES, Embedder, make_embedder
from ltms.errors import InvalidInput, LTMCError, ModelMismatch, NotFound, ReadOnlyError, StorageError
from ltms.records import Memory, Page, SearchHit, StoreResult, iso_utc
from ltms.storage.db import Database, blobs_to_matrix
from ltms.vector_store.faiss_config import prepare_directories
from ltms.vector_store.faiss_store import FaissIndex, SnapshotInvalid, SnapshotMissing, SnapshotStore

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
_UPDATE_ATTEMPTS = 3  # the last one embeds inside the transaction rather than retry again


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class MemoryService:
    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None = None,
        *,
        allow_model_change: bool = False,
        background_saves: bool = True,
        read_only: bool | None = None,
    ) -> None:
        """`read_only` (default: the read_only setting) opens an existing store without creating or writing
        anything, so it works on read-only media: the index is built in memory when the snapshot cannot be used,
        and nothing is saved, moved aside or cleaned up."""
        self.settings = settings
        self.read_only = settings.read_only if read_only is None else read_only
        self.embedder = embedder if embedder is not None else make_embedder(settings.embedder)
        paths = settings.paths
        if self.read_only:
            _require_existing_store(paths.data_dir, paths.db_path)
        else:
            prepare_directories(paths)
        self.db = Database(paths.db_path, read_only=self.read_only)
        self.snapshots = SnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path, self.read_only)
        self._lock = threading.RLock()  # guards the index, _applied_seq and the counters below
        self._save_lock = threading.Lock()  # one snapshot write at a time from this process
        self._saved = threading.Condition(self._lock)  # notified when a save ends
        self._saving = False
        self._unsaved_changes = 0
        self._last_change = time.monotonic()
        self.last_snapshot_error: str | None = None
        self.last_snapshot_at: float | None = None
        self.index_state = "unknown"
        try:
            # The integrity check reads the whole database: it runs on its own connection beside the model
            # check and the snapshot load (which reads the whole index), so start-up takes the longer of the two.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltmc-integrity") as pool:
                check = pool.submit(self.db.integrity_problems)
                self._check_model(allow_model_change)
                self.index, self._applied_seq = self._open_index()
                damage = check.result()
            if damage:
                # Refuse rather than warn: a damaged database gives wrong or failing answers for some memories,
                # and writing into it can spread the damage. `ltmc doctor` says what to do.
                raise StorageError(
                    "serve from",
                    paths.db_path,
                    f"SQLite's integrity check fails ({'; '.join(damage)}); refusing to run on a damaged "
                    "database. Stop, copy the data directory and run `ltmc doctor`",
                )
        except BaseException:
            self.db.close()
            raise
        self._stop = threading.Event()
        self._saver: threading.Thread | None = None
        if background_saves and not self.read_only:
            self._saver = threading.Thread(target=self._save_when_due, name="ltmc-snapshot", daemon=True)
            self._saver.start()

    # -- opening --------------------------------------------------------------------------------------

    @property
    def model(self) -> str:
        return self.embedder.name

    def _check_model(self, allow_model_change: bool) -> None:
        """Claim the store for this model, or refuse another one. The check and the claim are one write
        transaction, so two processes opening an empty store with different models cannot both succeed."""
        current = (self.embedder.name, str(self.embedder.dimension))
        stored = self.db.get_meta("model")
        if (stored, self.db.get_meta("dimension")) == current:
            return
        if self.read_only:  # nothing to claim with: refuse another model, accept a store no model has claimed
            if stored is not None and not allow_model_change:
                raise ModelMismatch(stored, self.embedder.name, self.db.path, embedder_setting_for(stored))
            return
        with self.db.write() as conn:
            stored = Database.read_meta(conn, "model")
            if (stored, Database.read_meta(conn, "dimension")) == current:
                return
            # Even an empty store keeps its model: another process may have claimed it a moment ago.
            if stored is not None and not allow_model_change:
                raise ModelMismatch(stored, self.embedder.name, self.db.path, embedder_setting_for(stored))
            Database.set_meta(conn, "model", self.embedder.name)
            Database.set_meta(conn, "dimension", str(self.embedder.dimension))

    def _open_index(self) -> tuple[FaissIndex, int]:
        paths = self.settings.paths
        try:  # left by saves killed mid-write: up to a snapshot's size each
            if not self.read_only:
                self.snapshots.remove_stale_temp_files()
        except StorageError as exc:  # worth a loud line, not a refusal to start: no memory depends on it
            log.error("%s", exc)
        latest = self.db.max_seq()
        try:
            index, manifest = self.snapshots.load(self.embedder.dimension, self.model, self.db.database_id)
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
        count = self.db.count()
        if index.ntotal != count:
            log.warning(
                "index snapshot %s holds %d vectors after replay, the database %d memories: rebuilding",
                paths.index_path,
                index.ntotal,
                count,
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
        """A fresh index from every embedding in the database, and the change sequence it includes."""
        with self.db.snapshot():  # rows and sequence from one consistent state
            seq = self.db.max_seq()
            total = self.db.count()
            index = FaissIndex(self.embedder.dimension)
            done = 0
            for ids, blobs in self.db.iter_embeddings():
                index.add(ids, blobs_to_matrix(blobs, self.embedder.dimension))
                done += len(ids)
                if progress:
                    progress(done, total)
        log.info("built the index from %s: %d vectors", self.db.path, index.ntotal)
        return index, seq

    # -- keeping the index current ---------------------------------------------------------------------

    def _replay(self, after_seq: int, up_to_seq: int) -> int:
        """Apply every change in (after_seq, up_to_seq] to the index; returns how many memories changed."""
        if up_to_seq <= after_seq:
            return 0
        added, modified = self.db.changed_ids(after_seq, up_to_seq)
        if modified:  # removal scans the whole index: only pay for it when something was updated or deleted
            self.index.remove(np.asarray(modified, dtype=np.int64))
        present, blobs = self.db.embeddings_for(added + modified)
        self.index.add(present, blobs_to_matrix(blobs, self.embedder.dimension))
        return len(added) + len(modified)

    def _catch_up(self) -> None:
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

    # -- the API ------------------------------------------------------------------------------------------

    def store(
        self,
        text: str,
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        namespace: str | None = None,
    ) -> StoreResult:
        """Store a memory; the same text in the same namespace returns the existing id instead."""
        return self.store_many([(text, tags, metadata, namespace)])[0]

    def store_many(
        self,
        items: Sequence[tuple[str, Sequence[str] | None, dict[str, Any] | None, str | None]],
        timestamps: Sequence[tuple[float | None, float | None]] | None = None,
    ) -> list[StoreResult]:
        """Store several memories in one transaction: all are committed, or (on any error) none is.

        `timestamps` gives each item's (created_at, updated_at) in epoch seconds (import keeps them); None = now.
        """
        self._refuse_if_read_only()
        if timestamps is not None:
            if len(timestamps) != len(items):
                raise InvalidInput(f"{len(timestamps)} timestamp pairs for {len(items)} memories")
            timestamps = [
                (validation.timestamp(created, "created_at"), validation.timestamp(updated, "updated_at"))
                for created, updated in timestamps
            ]
        prepared = []
        for text, tags, metadata, namespace in items:
            clean_text = validation.text(text, "text", self.settings.max_text_bytes)
            clean_metadata = validation.metadata(metadata, self.settings.max_metadata_bytes)
            prepared.append(
                (
                    clean_text,
                    validation.tags(tags),
                    clean_metadata,
                    validation.namespace(namespace),
                    content_hash(clean_text),
                )
            )
        # Embed only what is new; dedup is checked again inside the transaction.
        new_texts = sorted({p[0] for p in prepared if self.db.id_for_hash(p[3], p[4]) is None})
        vectors = dict(zip(new_texts, self.embedder.embed(new_texts), strict=True)) if new_texts else {}
        results: list[StoreResult] = []
        now = time.time()
        with self._lock:
            with self.db.write() as conn:
                for position, (text, tags, metadata, namespace, digest) in enumerate(prepared):
                    existing = Database.find_by_hash(conn, namespace, digest)
                    if existing is not None:
                        results.append(StoreResult(existing, created=False))
                        continue
                    vector = vectors.get(text)
                    if vector is None:  # deleted by another process since we looked
                        vector = self.embedder.embed([text])[0]
                    created, updated = timestamps[position] if timestamps else (None, None)
                    created = now if created is None else created  # 0.0 is 1970, not "now"
                    memory_id = Database.insert(
                        conn,
                        text=text,
                        namespace=namespace,
                        tags=tags,
                        metadata=metadata,
                        created_at=created,
                        updated_at=created if updated is None else updated,
                        content_hash=digest,
                        embedding=vector,
                        model=self.model,
                    )
                    results.append(StoreResult(memory_id, created=True))
            self._catch_up()
        return results

    def retrieve(
        self,
        query: str,
        k: int = 5,
        namespace: str | None = None,
        tags: Sequence[str] | None = None,
        since: Any = None,
        until: Any = None,
        min_score: float | None = None,
    ) -> list[SearchHit]:
        """The k memories closest in meaning to `query`. Filters apply before the top-k cut."""
        query = validation.text(query, "query", validation.MAX_QUERY_BYTES)
        k = validation.integer_in(k, "k", 1, validation.MAX_K)
        namespace = validation.namespace(namespace, allow_none=True)
        wanted_tags = validation.tags(tags)
        start, end = validation.time_range(since, until)
        threshold = validation.score(min_score)
        vector = self.embedder.embed([query])[0]
        with self._lock:
            self._catch_up()
            allowed = None
            if namespace is not None or wanted_tags or start is not None or end is not None:
                allowed = self.db.filter_ids(namespace, wanted_tags, start, end)
            ranked = self.index.search(vector, k, allowed)
        memories = self.db.get_many([memory_id for memory_id, _ in ranked])
        hits = [SearchHit(memories[i], score) for i, score in ranked if i in memories]
        if threshold is not None:
            hits = [hit for hit in hits if hit.score >= threshold]
        return hits

    def get(self, memory_id: int) -> Memory:
        memory = self.db.get(validation.memory_id(memory_id))
        if memory is None:
            raise NotFound(f"no memory with id {memory_id}")
        return memory

    def list(
        self,
        namespace: str | None = None,
        tags: Sequence[str] | None = None,
        limit: int = 20,
        offset: int = 0,
        since: Any = None,
        until: Any = None,
    ) -> Page:
        """Memories newest first, `limit` at a time; `since`/`until` bound the creation time as in retrieve."""
        limit = validation.integer_in(limit, "limit", 1, validation.MAX_PAGE)
        offset = validation.integer_in(offset, "offset", 0, 2**62)
        start, end = validation.time_range(since, until)
        items, total = self.db.page(
            validation.namespace(namespace, allow_none=True), validation.tags(tags), limit, offset, start, end
        )
        next_offset = offset + len(items) if offset + len(items) < total else None
        return Page(items=items, total=total, offset=offset, next_offset=next_offset)

    def update(
        self,
        memory_id: int,
        text: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Memory:
        """Change a memory's text, tags or metadata (each left alone when None). New text is re-embedded.

        The merge happens inside the write transaction, from the row as it is then: a concurrent update of
        another field (from this or another process) is never written back over. Embedding is slow, so it
        happens before the transaction; if the stored text changed in between, the attempt is retried."""
        self._refuse_if_read_only()
        memory_id = validation.memory_id(memory_id)
        new_text = None if text is None else validation.text(text, "text", self.settings.max_text_bytes)
        new_tags = None if tags is None else validation.tags(tags)
        new_metadata = None if metadata is None else validation.metadata(metadata, self.settings.max_metadata_bytes)
        embedded: tuple[str, np.ndarray] | None = None  # (text, its vector)
        for attempt in range(_UPDATE_ATTEMPTS):
            if new_text is not None and (embedded is None or embedded[0] != new_text):
                stored = self.get(memory_id)
                if stored.text != new_text:
                    embedded = (new_text, self.embedder.embed([new_text])[0])
            with self._lock:
                with self.db.write() as conn:
                    current = Database.fetch(conn, memory_id)
                    if current is None:
                        raise NotFound(f"no memory with id {memory_id}")
                    final_text = current.text if new_text is None else new_text
                    vector = None
                    if final_text != current.text:
                        if embedded is None or embedded[0] != final_text:
                            if attempt + 1 < _UPDATE_ATTEMPTS:
                                continue  # the stored text changed since we looked: embed outside the lock
                            embedded = (final_text, self.embedder.embed([final_text])[0])
                        vector = embedded[1]
                    digest = content_hash(final_text)
                    duplicate = Database.find_by_hash(conn, current.namespace, digest)
                    if duplicate is not None and duplicate != current.id:
                        raise InvalidInput(
                            f"memory {duplicate} in namespace {current.namespace!r} already has this text"
                        )
                    Database.update(
                        conn,
                        current.id,
                        text=final_text,
                        tags=current.tags if new_tags is None else new_tags,
                        metadata=current.metadata if new_metadata is None else new_metadata,
                        updated_at=time.time(),
                        content_hash=digest,
                        embedding=vector,
                        model=self.model,
                    )
                self._catch_up()
            return self.get(memory_id)
        raise AssertionError("unreachable: the last attempt embeds inside the transaction")

    def delete(self, memory_id: int) -> None:
        self._refuse_if_read_only()
        memory_id = validation.memory_id(memory_id)
        with self._lock:
            with self.db.write() as conn:
                if not Database.delete(conn, memory_id, time.time()):
                    raise NotFound(f"no memory with id {memory_id}")
            self._catch_up()

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise ReadOnlyError(
                "this server is read-only (LTMC_READ_ONLY): memories cannot be stored, changed or deleted"
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._catch_up()
            vectors = self.index.ntotal
            applied = self._applied_seq
            unsaved = self._unsaved_changes
        paths = self.settings.paths
        manifest = None
        try:
            manifest = self.snapshots.read_manifest()
        except SnapshotInvalid as exc:
            log.warning("%s", exc)
        by_namespace = self.db.counts_by_namespace()
        return {
            "memories": sum(by_namespace.values()),
            "namespaces": by_namespace,
            "model": self.model,
            "dimension": self.embedder.dimension,
            "index": {
                "state": self.index_state,
                "vectors": vectors,
                "applied_change": applied,
                "unsaved_changes": unsaved,
                "snapshot_path": str(paths.index_path),
                "snapshot_saved_at": iso_utc(manifest.saved_at) if manifest else None,
                "snapshot_age_seconds": round(time.time() - manifest.saved_at, 1) if manifest else None,
                "snapshot_last_change": manifest.last_seq if manifest else None,
                "snapshot_bytes": manifest.size if manifest else 0,
                "last_snapshot_error": self.last_snapshot_error,
            },
            "data_dir": str(paths.data_dir),
            "db_path": str(paths.db_path),
        }

    # -- snapshots ------------------------------------------------------------------------------------------

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
                manifest = self.snapshots.save(
                    data, count, self.embedder.dimension, self.model, seq, self.db.database_id
                )
            except BaseException as exc:
                with self._lock:
                    self._unsaved_changes += pending
                if not isinstance(exc, StorageError):
                    raise
                self.last_snapshot_error = str(exc)
                log.error(
                    "index snapshot not saved: %s (memories are safe in %s; the index will be rebuilt from it)",
                    exc,
                    self.settings.paths.db_path,
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
                log.info(
                    "saved index snapshot %s: %d vectors up to change %d", self.settings.paths.index_path, count, seq
                )
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
            every = max(self.settings.snapshot_every, self.index.ntotal // 100)
            if pending and (pending >= every or quiet >= self.settings.snapshot_quiet_seconds):
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
        self.save_snapshot(raise_errors=False)
        self.db.close()

    def __enter__(self) -> MemoryService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def embedder_setting_for(model: str) -> str | None:
    """The LTMC_EMBEDDER value whose embedder is `model`, if any (building one only locates its files)."""
    for choice in EMBEDDER_CHOICES:
        try:
            if make_embedder(choice).name == model:
                return choice
        except LTMCError:
            continue
    return None
