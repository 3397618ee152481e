"""Embedders turn texts into unit-length float32 vectors."""

from __future__ import annotations

from ltms.embeddings.base import Embedder
from ltms.errors import InvalidInput, LTMCError

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


def embedder_setting_for(model: str) -> str | None:
    """The LTMC_EMBEDDER value whose embedder is `model`, if any (building one only locates its files)."""
    for choice in EMBEDDER_CHOICES:
        try:
            if make_embedder(choice).name == model:
                return choice
        except LTMCError:
            continue
    return None


__all__ = ["EMBEDDER_CHOICES", "Embedder", "embedder_setting_for", "make_embedder"]
