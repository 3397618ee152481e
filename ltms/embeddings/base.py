"""The one interface every embedder implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    #: Stored beside every memory; opening a store built with another name is an error.
    name: str
    dimension: int
    #: The most content tokens one text may have before the model truncates it (special tokens excluded).
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dimension), every row L2-normalised."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for stored texts (chunks). Models that prefix documents and queries differently do it here."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """The vector of one search query, shape (dimension,)."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """The character span of every token of `text`, in order, without truncation (for chunking)."""
        ...
