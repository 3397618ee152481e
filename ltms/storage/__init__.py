"""Storage backends behind one protocol (ltms.storage.base): the embedded SQLite + FAISS store, and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

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
    progress: Callable[[int, int], None] | None = None,
) -> Storage:
    """The configured backend, opened, upgraded, its model claimed and its indexes ready. Closed again if any
    step fails, so a refused start leaves nothing open."""
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
        progress=progress,
    )
    with contextlib.ExitStack() as on_failure:
        on_failure.callback(storage.close)
        storage.claim_model(embedder.name, embedder.dimension, allow_model_change)
        storage.open_index()
        on_failure.pop_all()
    return storage
