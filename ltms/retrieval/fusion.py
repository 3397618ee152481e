"""Fusing the vector leg and the keyword leg into one ranking.

A weighted sum of min-max normalised scores: each leg's candidate scores are mapped to 0..1 (its best candidate
gets 1, its worst 0), a memory missing from a leg gets 0 there, and the two are mixed with `keyword_weight`.
Measured on a long-conversation benchmark (docs/retrieval.md) and on the project's own (bench/bench_retrieval.py),
this beat reciprocal-rank fusion (k=60 and k=10) and either leg alone. At 0.5 the keyword leg cost paraphrased
queries (tests/data/semantic_set.json: recall@1 1.00 -> 0.80); at 0.3 nothing was lost there.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltms.storage.base import KeywordHit, VectorHit

DEFAULT_KEYWORD_WEIGHT = 0.3


@dataclass(frozen=True)
class Fused:
    memory_id: int
    score: float  # 0..1, relative to this query's candidates
    vector: VectorHit | None
    keyword: KeywordHit | None


def normalised(scores: dict[int, float]) -> dict[int, float]:
    """Min-max to 0..1; a single candidate (or all equal) gets 1."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high - low < 1e-12:
        return dict.fromkeys(scores, 1.0)
    return {key: (value - low) / (high - low) for key, value in scores.items()}


def fuse(
    vector_hits: list[VectorHit], keyword_hits: list[KeywordHit], keyword_weight: float = DEFAULT_KEYWORD_WEIGHT
) -> list[Fused]:
    """Every candidate of either leg, best fused score first (ties: better similarity, then lower id)."""
    by_vector = {hit.memory_id: hit for hit in vector_hits}
    by_keyword = {hit.memory_id: hit for hit in keyword_hits}
    dense = normalised({i: hit.similarity for i, hit in by_vector.items()})
    sparse = normalised({i: hit.score for i, hit in by_keyword.items()})
    fused = [
        Fused(
            memory_id=i,
            score=(1 - keyword_weight) * dense.get(i, 0.0) + keyword_weight * sparse.get(i, 0.0),
            vector=by_vector.get(i),
            keyword=by_keyword.get(i),
        )
        for i in dict.fromkeys([*by_vector, *by_keyword])
    ]
    fused.sort(key=lambda f: (-f.score, -(f.vector.similarity if f.vector else -2.0), f.memory_id))
    return fused
