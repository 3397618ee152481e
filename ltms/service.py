"""The memory service: the one API every transport and the CLI call.

It owns validation, embedding (long texts split into chunks), the dedup policy and the retrieval pipeline; a
storage backend (ltms.storage) owns the durable truth and its indexes. Data flows one way:
callers -> service -> (embedder, storage).

Retrieval has three modes. `semantic`: memories ranked by the cosine of their best chunk. `keyword`: full-text
relevance (BM25 on SQLite, ts_rank on PostgreSQL). `hybrid` (the default): both legs fetch candidates, and when
the query names someone or something, a third leg searches for the rest of the query among the memories that
mention those names (ltms.retrieval.names); the legs are fused (ltms.retrieval.fusion). Every hit carries its
`similarity` (the best chunk's cosine, whatever the mode), its keyword rank, and the passage that matched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from ltms import validation
from ltms.config import Settings
from ltms.embeddings import Embedder, make_embedder
from ltms.errors import InvalidInput, NotFound, ReadOnlyError
from ltms.records import Memory, Page, Passage, SearchHit, StoreResult, iso_utc
from ltms.retrieval.chunking import Chunker
from ltms.retrieval.fusion import fuse, normalised
from ltms.retrieval.keywords import query_terms
from ltms.retrieval.names import NamedQuery, split_names
from ltms.storage import Storage, open_storage
from ltms.storage.base import Chunk, DuplicateMemory, Filter, KeywordHit, MemoryChange, NewMemory, VectorHit

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
MODES = ("hybrid", "semantic", "keyword")
# Each leg fetches at least this many candidates for fusion; more changed nothing on the benchmark.
MIN_CANDIDATES = 20
# Hybrid retrieves run their keyword and names legs on a small pool of threads: two retrieves' legs at once.
LEG_THREADS = 4


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
        progress: Progress | None = None,
    ) -> None:
        """`read_only` (default: the read_only setting) opens an existing store without creating or writing
        anything, so it works on read-only media."""
        self.settings = settings
        self.read_only = settings.read_only if read_only is None else read_only
        self.embedder = embedder if embedder is not None else make_embedder(settings.embedder)
        self.chunker = Chunker(self.embedder)
        self.storage: Storage = open_storage(
            settings,
            self.embedder,
            self.chunker,
            allow_model_change=allow_model_change,
            background_saves=background_saves,
            read_only=self.read_only,
            progress=progress,
        )
        self._legs: ThreadPoolExecutor | None = None  # started by the first hybrid retrieve
        self._legs_lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.embedder.name

    # -- writing ----------------------------------------------------------------------------------------------

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
                    tuple(validation.tags(tags)),
                    clean_metadata,
                    str(validation.namespace(namespace)),
                    content_hash(clean_text),
                )
            )
        # Embed only what is new (all of a batch's chunks in one call); dedup is decided inside the transaction.
        new_texts = sorted({p[0] for p in prepared if self.storage.find_by_hash(p[3], p[4]) is None})
        chunked = dict(zip(new_texts, self.chunker.chunks(new_texts), strict=True)) if new_texts else {}
        results: list[StoreResult] = []
        now = time.time()
        with self.storage.transaction() as tx:
            for position, (text, tags, metadata, namespace, digest) in enumerate(prepared):
                existing = tx.find_by_hash(namespace, digest)
                if existing is not None:
                    results.append(StoreResult(existing, created=False))
                    continue
                chunks = chunked.get(text)
                if chunks is None:  # deleted by another process since we looked
                    chunks = self.chunker.chunks([text])[0]
                created, updated = timestamps[position] if timestamps else (None, None)
                created = now if created is None else created  # 0.0 is 1970, not "now"
                memory = NewMemory(
                    text=text,
                    namespace=namespace,
                    tags=tags,
                    metadata=metadata,
                    created_at=created,
                    updated_at=created if updated is None else updated,
                    content_hash=digest,
                    model=self.model,
                    chunks=chunks,
                )
                try:
                    results.append(StoreResult(tx.insert(memory), created=True))
                except DuplicateMemory as exc:  # another writer stored it after find_by_hash (PostgreSQL)
                    results.append(StoreResult(exc.existing_id, created=False))
        return results

    def update(
        self,
        memory_id: int,
        text: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Memory:
        """Change a memory's text, tags or metadata (each left alone when None). New text is re-embedded.

        The merge with the stored state happens inside the write transaction, and chunks change only together
        with the text they were embedded from: a tags-only update racing a text update can neither bring the old
        text back nor leave the new text with the old vectors."""
        self._refuse_if_read_only()
        memory_id = validation.memory_id(memory_id)
        new_text = None if text is None else validation.text(text, "text", self.settings.max_text_bytes)
        new_tags = None if tags is None else tuple(validation.tags(tags))
        new_metadata = None if metadata is None else validation.metadata(metadata, self.settings.max_metadata_bytes)
        new_chunks: tuple[Chunk, ...] | None = None
        if new_text is not None:
            current = self.storage.get(memory_id)
            if current is None:
                raise NotFound(f"no memory with id {memory_id}")
            if new_text != current.text:
                new_chunks = self.chunker.chunks([new_text])[0]
        with self.storage.transaction() as tx:
            current = tx.get(memory_id)
            if current is None:
                raise NotFound(f"no memory with id {memory_id}")
            final_text = current.text if new_text is None else new_text
            chunks = None
            if final_text != current.text:  # only ever when new_text was given
                chunks = new_chunks if new_chunks is not None else self.chunker.chunks([final_text])[0]
            digest = content_hash(final_text)
            duplicate = tx.find_by_hash(current.namespace, digest)
            if duplicate is not None and duplicate != memory_id:
                raise InvalidInput(f"memory {duplicate} in namespace {current.namespace!r} already has this text")
            change = MemoryChange(
                text=final_text,
                tags=tuple(current.tags) if new_tags is None else new_tags,
                metadata=current.metadata if new_metadata is None else new_metadata,
                updated_at=time.time(),
                content_hash=digest,
                model=self.model,
                chunks=chunks,
            )
            tx.update(memory_id, change)
        return self.get(memory_id)

    def delete(self, memory_id: int) -> None:
        self._refuse_if_read_only()
        memory_id = validation.memory_id(memory_id)
        with self.storage.transaction() as tx:
            if not tx.delete(memory_id):
                raise NotFound(f"no memory with id {memory_id}")

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise ReadOnlyError(
                "this server is read-only (LTMC_READ_ONLY): memories cannot be stored, changed or deleted"
            )

    # -- reading ------------------------------------------------------------------------------------------------

    def retrieve(
        self,
        query: str,
        k: int = 5,
        namespace: str | None = None,
        tags: Sequence[str] | None = None,
        since: Any = None,
        until: Any = None,
        min_score: float | None = None,
        mode: str | None = None,
    ) -> list[SearchHit]:
        """The k memories that best match `query`. Filters apply before the top-k cut.

        `score` ranks the hits: the cosine in `semantic` mode, 0..1 relative to this query's candidates in
        `keyword` and `hybrid` mode. `min_score` drops hits whose `similarity` (the cosine of their best
        passage, an absolute measure comparable across queries) is below it, in every mode."""
        query = validation.text(query, "query", validation.MAX_QUERY_BYTES)
        k = validation.integer_in(k, "k", 1, validation.MAX_K)
        mode = self._mode(mode)
        start, end = validation.time_range(since, until)
        where = Filter(
            namespace=validation.namespace(namespace, allow_none=True),
            tags=tuple(validation.tags(tags)),
            since=start,
            until=end,
        )
        threshold = validation.score(min_score)
        vector = self.embedder.embed_query(query)
        keyword_hits: list[KeywordHit] = []
        if mode == "semantic":
            vector_hits = self.storage.vector_search(vector, k, where)
            ranked = [(hit.memory_id, hit.similarity) for hit in vector_hits]
        elif mode == "keyword":
            vector_hits = []
            keyword_hits = self.storage.keyword_search(query_terms(query), k, where)
            scores = normalised({hit.memory_id: hit.score for hit in keyword_hits}, depth=len(keyword_hits))
            ranked = [(hit.memory_id, scores[hit.memory_id]) for hit in keyword_hits]
        else:
            vector_hits, keyword_hits, names_hits = self._hybrid_legs(query, vector, max(MIN_CANDIDATES, 2 * k), where)
            ranked = [(fused.memory_id, fused.score) for fused in fuse(vector_hits, keyword_hits, names_hits)]
        ranked = ranked[:k]
        best = {hit.memory_id: hit for hit in vector_hits}
        missing = [memory_id for memory_id, _ in ranked if memory_id not in best]
        if missing:
            best.update(self.storage.best_chunks(vector, missing))
        keyword_ranks = {hit.memory_id: hit.rank for hit in keyword_hits}
        memories = self.storage.get_many([memory_id for memory_id, _ in ranked])
        hits = [
            self._hit(memories[memory_id], score, best.get(memory_id), keyword_ranks.get(memory_id))
            for memory_id, score in ranked
            if memory_id in memories  # deleted by another process since the search
        ]
        if threshold is not None:
            hits = [hit for hit in hits if hit.similarity is not None and hit.similarity >= threshold]
        return hits

    def _hybrid_legs(
        self, query: str, vector: np.ndarray, pool: int, where: Filter
    ) -> tuple[list[VectorHit], list[KeywordHit], list[VectorHit]]:
        """The three legs at once: the keyword and names legs on the service's two leg threads, the vector leg on
        this one. Their work is SQLite, faiss and the model, which release the GIL, so a retrieve takes about as
        long as its slowest leg (bench/README.md, retrieval cost)."""
        legs = self._leg_threads()
        named = split_names(query)  # a query without names has no names leg: no thread is woken for it
        keyword = legs.submit(self.storage.keyword_search, query_terms(query), pool, where)
        names = legs.submit(self._names_leg, named, pool, where) if named is not None else None
        running: list[Future[Any]] = [keyword] if names is None else [keyword, names]
        try:
            vector_hits = self.storage.vector_search(vector, pool, where)
        finally:
            wait(running)  # never leave a leg running behind an error
        return vector_hits, keyword.result(), names.result() if names is not None else []

    def _leg_threads(self) -> ThreadPoolExecutor:
        with self._legs_lock:
            if self._legs is None:
                self._legs = ThreadPoolExecutor(max_workers=LEG_THREADS, thread_name_prefix="ltmc-leg")
            return self._legs

    def _names_leg(self, named: NamedQuery, pool: int, where: Filter) -> list[VectorHit]:
        """The query's topic among the memories that mention all of its names (ltms.retrieval.names)."""
        scoped = dataclasses.replace(where, mentions=named.names)
        return self.storage.vector_search(self.embedder.embed_query(named.topic), pool, scoped)

    def _mode(self, mode: str | None) -> str:
        if mode is None:
            return self.settings.retrieval_mode
        if mode not in MODES:
            raise InvalidInput(f"mode {mode!r} is invalid: choose one of {', '.join(MODES)}")
        return mode

    @staticmethod
    def _hit(memory: Memory, score: float, vector: VectorHit | None, keyword_rank: int | None) -> SearchHit:
        passage = None
        if vector is not None:
            passage = Passage(vector.start, vector.end, memory.text[vector.start : vector.end])
        return SearchHit(
            memory=memory,
            score=float(score),
            similarity=None if vector is None else float(vector.similarity),
            keyword_rank=keyword_rank,
            passage=passage,
        )

    def get(self, memory_id: int) -> Memory:
        memory = self.storage.get(validation.memory_id(memory_id))
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
        where = Filter(
            namespace=validation.namespace(namespace, allow_none=True),
            tags=tuple(validation.tags(tags)),
            since=start,
            until=end,
        )
        items, total = self.storage.page(where, limit, offset)
        next_offset = offset + len(items) if offset + len(items) < total else None
        return Page(items=items, total=total, offset=offset, next_offset=next_offset)

    def stats(self) -> dict[str, Any]:
        health = self.storage.health()
        by_namespace = self.storage.counts_by_namespace()
        index = dict(health.index)
        saved_at = index.get("snapshot_saved_at")
        if isinstance(saved_at, float):
            index["snapshot_saved_at"] = iso_utc(saved_at)
            index["snapshot_age_seconds"] = round(time.time() - saved_at, 1)
        elif "snapshot_saved_at" in index:
            index["snapshot_age_seconds"] = None
        return {
            "memories": sum(by_namespace.values()),
            "namespaces": by_namespace,
            "model": self.model,
            "dimension": self.embedder.dimension,
            "backend": health.backend,
            "index": index,
            "data_dir": str(self.settings.paths.data_dir),
            "db_path": health.location,
        }

    # -- the embedded backend's cache, for operator commands and tests ------------------------------------------

    @property
    def index_state(self) -> str:
        return str(self.storage.health().index.get("state", "n/a"))

    def save_snapshot(self, raise_errors: bool = True, force: bool = False) -> bool:
        save = getattr(self.storage, "save_snapshot", None)
        return bool(save(raise_errors=raise_errors, force=force)) if save else False

    def wait_until_saved(self, timeout: float) -> bool:
        """Every change applied so far is in a snapshot on disk (True), or `timeout` passed (False)."""
        wait = getattr(self.storage, "wait_until_saved", None)
        return bool(wait(timeout)) if wait else True

    # -- lifetime -------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Flush the backend's caches and close it. Safe to call twice."""
        with self._legs_lock:
            legs, self._legs = self._legs, None
        if legs is not None:
            legs.shutdown(wait=True)
        self.storage.close()

    def __enter__(self) -> MemoryService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
