"""Storage backends behind one protocol (ltms.storage.base): the embedded SQLite + FAISS store, and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from ltms.embeddings import embedder_setting_for
from ltms.errors import ModelMismatch
from ltms.storage.base import Storage

if TYPE_CHECKING:  # the backends import the records in ltms.storage.base: keep this package import light
    from ltms.config import Settings
    from ltms.embeddings.base import Embedder
    from ltms.retrieval.chunking import Chunker

__all__ = ["Storage", "open_storage"]


def open_storage(
    settings: Settings,
    embedder: Embedder,
    chunker: Chunker,
    *,
    allow_model_change: bool = False,
    background_saves: bool = True,
    read_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Storage:
    """The configured backend, opened, upgraded, its model claimed and its indexes ready. Closed again if any
    step fails, so a refused start leaves nothing open."""
    if settings.backend == "postgres":
        from ltms.storage.postgres import PostgresStorage

        remote = PostgresStorage.open(
            settings.database_url or "",
            embedder.dimension,
            pool_size=settings.database_pool_size,
            read_only=read_only,
        )
        with contextlib.ExitStack() as on_failure:
            on_failure.callback(remote.close)
            if read_only:  # nothing to claim with: refuse another model, accept one no model has claimed
                stored = remote.meta().get("model")
                if stored is not None and stored != embedder.name and not allow_model_change:
                    raise ModelMismatch(stored, embedder.name, remote.location, embedder_setting_for(stored))
            else:
                remote.claim_model(embedder.name, embedder.dimension, allow_model_change)
            on_failure.pop_all()
        return remote

    from ltms.storage.embedded import EmbeddedStorage

    storage = EmbeddedStorage(
        settings.paths,
        embedder.dimension,
        embedder.name,
        chunker=chunker,
        snapshot_every=settings.snapshot_every,
        snapshot_quiet_seconds=settings.snapshot_quiet_seconds,
        index_mode=settings.index,
        background_saves=background_saves,
        read_only=read_only,
        progress=progress,
    )
    with contextlib.ExitStack() as on_failure:
        on_failure.callback(storage.close)
        storage.claim_model(embedder.name, embedder.dimension, allow_model_change)
        storage.open_index()
        on_failure.pop_all()
    return storage
