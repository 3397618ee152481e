"""`ltmc reindex [--reembed]`: rebuild the index from the database, optionally re-embedding every memory.

Without --reembed the stored embeddings are read back and a fresh index replaces the snapshot (written
atomically by SnapshotStore). With --reembed every memory is embedded again with the configured model first,
64 memories at a time (their chunks in one batch), one transaction per batch; the store's model is recorded
once all are done. This is the way out of "the memories were embedded with model X but the configured model is
Y", so it works without opening the memory service (which refuses exactly that situation). Stop the servers on
this data directory before re-embedding: a server still running the old model cannot use vectors of the new one.
"""

from __future__ import annotations

import logging

from ltms.config import Settings
from ltms.embeddings import Embedder, make_embedder
from ltms.ops.progress import ProgressBar
from ltms.ops.readonly import refuse_writes
from ltms.ops.text import human_bytes, plural
from ltms.records import Memory
from ltms.retrieval.chunking import Chunker
from ltms.storage.db import Database
from ltms.storage.embedded import EmbeddedStorage
from ltms.vector_store.faiss_config import prepare_directories

log = logging.getLogger(__name__)

REEMBED_BATCH = 64


def run_reindex(settings: Settings, reembed: bool = False, embedder: Embedder | None = None) -> int:
    from ltms.service import MemoryService

    refuse_writes(settings, "reindex --reembed" if reembed else "reindex")
    embedder = embedder if embedder is not None else make_embedder(settings.embedder)
    if reembed:
        count = reembed_all(settings, embedder)
        print(f"re-embedded {plural(count, 'memory')} with {embedder.name} ({embedder.dimension}-d)")
    with MemoryService(settings, embedder, allow_model_change=reembed, background_saves=False) as service:
        storage = service.storage
        if not isinstance(storage, EmbeddedStorage):
            print(f"nothing to reindex: the {storage.name} backend keeps its index inside the database")
            return 0
        if storage.index_state in ("created", "rebuilt"):
            # The snapshot was missing or unusable (after --reembed: built for the old model), so opening the
            # service has just built the index from the database and saved it.
            if storage.last_snapshot_error:
                storage.save_snapshot(force=True)  # raises the StorageError, naming the path and the reason
            vectors = storage.index.ntotal
        else:
            storage.save_snapshot()  # flush what was replayed at open, so closing writes nothing more
            with ProgressBar("indexing") as bar:
                index, seq = storage.build_index(bar)
            manifest = storage.snapshots.save(
                index.serialize(), index.ntotal, embedder.dimension, embedder.name, seq, storage.db.database_id
            )
            vectors = index.ntotal
            if manifest is None:
                log.info("another process saved a newer snapshot meanwhile; it was kept")
    size = settings.paths.index_path.stat().st_size
    print(
        f"reindexed {plural(vectors, 'vector')} ({embedder.name}, {embedder.dimension}-d) "
        f"into {settings.paths.index_path} ({human_bytes(size)})"
    )
    return 0


def reembed_all(settings: Settings, embedder: Embedder, batch: int = REEMBED_BATCH) -> int:
    """Embed every memory again with `embedder` (every chunk of it), then record it as the store's model."""
    prepare_directories(settings.paths)
    chunker = Chunker(embedder)
    db = Database(settings.paths.db_path, chunker=chunker)
    try:
        total = db.count()
        done = 0
        with ProgressBar("re-embedding", total) as bar:
            for memories in db.iter_memory_batches(batch):
                done += _embed_batch(db, chunker, memories)
                bar.update(done, max(total, done))
        db.claim_model(embedder.name, embedder.dimension, allow_change=True)
        log.info("re-embedded %d memories in %s with %s", done, db.path, embedder.name)
        return done
    finally:
        db.close()


def _embed_batch(db: Database, chunker: Chunker, memories: list[Memory]) -> int:
    embedded = chunker.chunks([memory.text for memory in memories])
    with db.transaction() as tx:
        for memory, chunks in zip(memories, embedded, strict=True):
            # Skip a memory deleted or given new text by another process since it was read.
            if tx.find_by_hash(memory.namespace, memory.content_hash) == memory.id:
                tx.replace_chunks(memory.id, chunker.embedder.name, chunks)
    return len(memories)
