"""A deterministic, dependency-free embedder for tests and tiny machines.

It hashes words and character trigrams into a fixed number of signed buckets. It finds shared words,
never paraphrases: it must only ever be chosen explicitly (LTMC_EMBEDDER=hash).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class HashingEmbedder:
    # Words stand in for tokens: long texts are chunked the same way as with a real model.
    max_tokens = 254

    def __init__(self, dimension: int = 384) -> None:
        self.dimension = dimension
        self.name = f"hash-{dimension}-v1"

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = self.embed([text])[0]
        return vector

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for match in _TOKEN.finditer(text)]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, weight in _features(text):
                digest = hashlib.blake2b(feature.encode("utf-8", "surrogatepass"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                sign = 1.0 if value & 1 else -1.0
                out[row, (value >> 1) % self.dimension] += sign * weight
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
            else:  # no features at all: a fixed unit vector keeps every row unit length
                out[row, 0] = 1.0
        return out


def _features(text: str) -> list[tuple[str, float]]:
    words = _WORD.findall(text.lower())
    features = [(f"w:{word}", 1.0) for word in words]
    for word in words:
        padded = f"<{word}>"
        features.extend((f"c:{padded[i : i + 3]}", 0.3) for i in range(len(padded) - 2))
    return features
