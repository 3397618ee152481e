"""Embedders turn texts into unit-length float32 vectors."""

from __future__ import annotations

from ltms.embeddings.base import Embedder
from ltms.errors import InvalidInput

EMBEDDER_CHOICES = ("minilm", "hash")


def make_embedder(kind: str) -> Embedder:
    """The embedder named by LTMC_EMBEDDER. The hashing embedder is only ever an explicit choice."""
    if kind == "minilm":
        from ltms.embeddings.minilm import MiniLMEmbedder

        return MiniLMEmbedder()
    if kind == "hash":
        from ltms.embeddings.hashing import HashingEmbedder

        return HashingEmbedder()
    raise InvalidInput(f"unknown embedder {kind!r}: choose one of {', '.join(EMBEDDER_CHOICES)}")


__all__ = ["EMBEDDER_CHOICES", "Embedder", "make_embedder"]
