"""Splitting a memory's text into token windows the embedding model can see whole.

A model embeds at most `max_tokens` tokens; whatever follows is cut off silently. A memory that fits is one chunk,
its whole text, so short memories cost nothing extra. A longer one is split into windows of WINDOW_TOKENS tokens
that overlap by OVERLAP_TOKENS, so a fact that straddles a boundary is whole in one of them. Windows shorter than
the model's limit match a focused question better than a window diluted by unrelated text around the fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ltms.embeddings.base import Embedder
from ltms.storage.base import Chunk

WINDOW_TOKENS = 128
OVERLAP_TOKENS = 32


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of the text."""

    start: int
    end: int


def split(
    text: str,
    offsets: list[tuple[int, int]],
    max_tokens: int,
    window: int = WINDOW_TOKENS,
    overlap: int = OVERLAP_TOKENS,
) -> list[Span]:
    """The spans to embed for `text`, given its tokens' character offsets (from the embedder's tokenizer)."""
    if len(offsets) <= max_tokens:
        return [Span(0, len(text))]
    window = min(window, max_tokens)
    stride = max(1, window - overlap)
    spans: list[Span] = []
    for first in range(0, len(offsets), stride):
        last = min(first + window, len(offsets)) - 1
        # Start at the text's start for the first window and end at its end for the last, so every character
        # (leading spaces, trailing punctuation the tokenizer drops) belongs to some chunk.
        start = 0 if first == 0 else offsets[first][0]
        end = len(text) if last == len(offsets) - 1 else offsets[last][1]
        spans.append(Span(start, end))
        if last == len(offsets) - 1:
            break
    return spans


class Chunker:
    """Splits texts with an embedder's tokenizer and embeds every window of a batch of texts in one call."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def spans(self, text: str) -> list[Span]:
        return split(text, self.embedder.token_offsets(text), self.embedder.max_tokens)

    def chunks(self, texts: Sequence[str]) -> list[tuple[Chunk, ...]]:
        """Each text's chunks with their vectors; all windows of all texts are embedded as one batch."""
        planned = [self.spans(text) for text in texts]
        windows = [text[s.start : s.end] for text, spans in zip(texts, planned, strict=True) for s in spans]
        vectors = self.embedder.embed_documents(windows) if windows else np.zeros((0, self.embedder.dimension))
        result: list[tuple[Chunk, ...]] = []
        position = 0
        for spans in planned:
            result.append(tuple(Chunk(s.start, s.end, vectors[position + i]) for i, s in enumerate(spans)))
            position += len(spans)
        return result
