"""Chunk vectors are kept at half precision: little-endian IEEE float16, in SQLite and in the index alike.

Half the bytes of float32 (768 for 384 dimensions: about five rows per 4 KiB SQLite page, no overflow pages), and
the index searches exactly the values SQLite holds. For unit vectors each component keeps ~11 significant bits: a
cosine moves by ~1e-4, well under any difference that changes which memory is nearer (pgvector's halfvec and
Qdrant's float16 make the same trade). Everything that writes a chunk vector goes through `encode`; everything that
reads one through `decode`, so rounding happens in exactly one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STORED = np.dtype("<f2")
# The largest float16: a component beyond it would be stored as infinity.
LIMIT = float(np.finfo(np.float16).max)


class VectorRangeError(ValueError):
    """A vector holds a value float16 cannot store (not finite, or beyond +-65504)."""


def rounded(vectors: np.ndarray) -> np.ndarray:
    """float32 values exactly as they will be stored (each component rounded to the nearest float16)."""
    return as_stored(vectors).astype(np.float32)


def as_stored(vectors: np.ndarray) -> np.ndarray:
    """The float16 array for `vectors` (any float array); refuses values float16 cannot hold."""
    values = np.asarray(vectors)
    half = values.astype(STORED)
    if not np.isfinite(half).all():
        bad = values[~np.isfinite(half)].reshape(-1)[0]
        raise VectorRangeError(f"a vector component {float(bad)!r} cannot be stored (float16 holds +-{LIMIT:g})")
    return half


def encode(vector: np.ndarray) -> bytes:
    """One vector as the bytes stored in SQLite."""
    return as_stored(np.asarray(vector).reshape(-1)).tobytes()


def decode(blob: bytes, dimension: int) -> np.ndarray:
    """One stored vector as float32; ValueError if the blob is not `dimension` float16 values."""
    if len(blob) != dimension * STORED.itemsize:
        raise ValueError(f"{len(blob)} bytes, not {dimension} float16 values")
    return np.frombuffer(blob, dtype=STORED).astype(np.float32)


def decode_many(blobs: Sequence[bytes], dimension: int) -> np.ndarray:
    """Stored vectors as one float32 matrix (len(blobs) x dimension)."""
    joined = b"".join(blobs)
    if len(joined) != len(blobs) * dimension * STORED.itemsize:
        raise ValueError(f"{len(joined)} bytes for {len(blobs)} vectors of {dimension} float16 values")
    return np.frombuffer(joined, dtype=STORED).astype(np.float32).reshape(len(blobs), dimension)
