"""The storage seam: what the memory service needs from a backend, and the records that cross it.

The service owns validation, embedding, chunking, dedup policy and the public API; a backend owns the durable
truth and its indexes. Two backends implement `Storage`: the embedded one (SQLite + a FAISS cache, one machine)
and PostgreSQL + pgvector (many hosts). Neither sees MCP or HTTP; the service never sees a connection or an index.

Ids: a memory's id is an integer the backend assigns and never reuses. Chunk `ordinal`s number a memory's chunks
0, 1, 2 ... in text order; a memory short enough for one window is exactly one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ltms.errors import LTMCError
from ltms.records import Memory

# A single memory is split into at most this many chunks (the embedded index derives chunk keys from it).
MAX_CHUNKS_PER_MEMORY = 1 << 16


class DuplicateMemory(LTMCError):
    """`Transaction.insert` found the text already stored in its namespace, committed by another writer after the
    caller's find_by_hash. Nothing was written; the transaction stays usable; `existing_id` is the stored one."""

    def __init__(self, existing_id: int) -> None:
        super().__init__(f"memory {existing_id} already has this text in this namespace")
        self.existing_id = existing_id


@dataclass(frozen=True)
class Filter:
    """A declarative search filter; every backend applies it where that is fastest. Empty fields match all."""

    namespace: str | None = None
    tags: tuple[str, ...] = ()  # a memory must carry ALL of them
    since: float | None = None  # created_at >= since (epoch seconds)
    until: float | None = None  # created_at <= until
    # Words or phrases the text must ALL contain, as the keyword index matches them (any case, stemmed).
    mentions: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return (
            self.namespace is None and not self.tags and self.since is None and self.until is None and not self.mentions
        )


@dataclass(frozen=True)
class Chunk:
    """One embedded window of a memory's text: characters [start, end) and its unit-length float32 vector."""

    start: int
    end: int
    vector: np.ndarray


@dataclass(frozen=True)
class NewMemory:
    text: str
    namespace: str
    tags: tuple[str, ...]
    metadata: Mapping[str, Any]
    created_at: float
    updated_at: float
    content_hash: str
    model: str
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class MemoryChange:
    """The whole new state of an updated memory. `chunks` None keeps the stored chunks (the text is unchanged)."""

    text: str
    tags: tuple[str, ...]
    metadata: Mapping[str, Any]
    updated_at: float
    content_hash: str
    model: str
    chunks: tuple[Chunk, ...] | None


@dataclass(frozen=True)
class StoredMemory:
    """A memory with everything needed to copy it elsewhere without re-embedding (export, migrate)."""

    memory: Memory
    model: str
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class VectorHit:
    """A memory found by the vector leg: the cosine of its best chunk, and that chunk's character span."""

    memory_id: int
    similarity: float
    start: int
    end: int


@dataclass(frozen=True)
class KeywordHit:
    """A memory found by the keyword leg: its 1-based rank and its relevance score (higher is better)."""

    memory_id: int
    rank: int
    score: float


@dataclass(frozen=True)
class BackendHealth:
    """Backend-neutral state for /health, `memory_stats` and `doctor`. Never holds credentials."""

    backend: str  # "sqlite" or "postgres"
    location: str  # a path, or a URL with the password removed
    memories: int
    index: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


class Transaction(Protocol):
    """A unit of work: every call sees and changes one transaction, committed when the `with` block ends."""

    def find_by_hash(self, namespace: str, content_hash: str) -> int | None: ...

    def get(self, memory_id: int) -> Memory | None: ...

    def insert(self, memory: NewMemory) -> int:
        """Insert a memory with its chunks and keyword entry; returns its new id. Dedup is the caller's job
        (find_by_hash first, inside the same transaction); raises DuplicateMemory when another writer committed
        the same text in the same namespace after that (PostgreSQL's writers are not serialised)."""
        ...

    def update(self, memory_id: int, change: MemoryChange) -> None: ...

    def delete(self, memory_id: int) -> bool:
        """Remove a memory, all its chunks and its keyword entry. False when there was none."""
        ...

    def replace_chunks(self, memory_id: int, model: str, chunks: Sequence[Chunk]) -> None:
        """Re-embedded chunks for an unchanged text (reindex --reembed)."""
        ...


class Storage(Protocol):
    name: str

    def claim_model(self, model: str, dimension: int, allow_change: bool = False) -> None:
        """Record the embedding model on first use, atomically; raise ModelMismatch if another one holds it."""
        ...

    def transaction(self) -> AbstractContextManager[Transaction]: ...

    # -- reads --
    def get(self, memory_id: int) -> Memory | None: ...

    def get_many(self, ids: Sequence[int]) -> dict[int, Memory]: ...

    def page(self, where: Filter, limit: int, offset: int) -> tuple[list[Memory], int]:
        """Newest first, and the total matching `where`."""
        ...

    def find_by_hash(self, namespace: str, content_hash: str) -> int | None:
        """Outside a transaction, a hint only (dedup is decided inside one): lets a store skip embedding."""
        ...

    def count(self) -> int: ...

    def counts_by_namespace(self) -> dict[str, int]: ...

    def iter_stored(self, batch: int = 1000) -> Iterator[StoredMemory]:
        """Every memory in id order, with its model and chunks (vectors included)."""
        ...

    # -- search --
    def vector_search(self, vector: np.ndarray, k: int, where: Filter) -> list[VectorHit]:
        """The k memories (not chunks) whose best chunk is closest to `vector`, best first; never fewer than k
        when k memories match `where`."""
        ...

    def keyword_search(self, terms: Sequence[str], k: int, where: Filter) -> list[KeywordHit]:
        """The k memories matching any of `terms` best, by full-text relevance. `terms` come from
        ltms.retrieval.keywords.query_terms: plain words, no query syntax."""
        ...

    def best_chunks(self, vector: np.ndarray, memory_ids: Sequence[int]) -> dict[int, VectorHit]:
        """The best chunk of each of `memory_ids` for `vector` (for hits only the keyword leg found)."""
        ...

    # -- operations --
    def health(self) -> BackendHealth: ...

    def flush(self) -> None:
        """Persist anything cached (the embedded index snapshot); a no-op where there is nothing to cache."""
        ...

    def close(self) -> None: ...
