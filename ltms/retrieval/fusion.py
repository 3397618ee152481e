"""Fusing the legs of hybrid retrieval into one ranking.

A weighted sum of normalised scores. Each leg's scores are mapped to 0..1 by min-max over its best
`REFERENCE_DEPTH` candidates (deeper candidates clip at 0, so asking for more hits never reorders the first ones),
a memory missing from a leg gets 0 there, and the legs are mixed with fixed weights:

- the vector leg (cosine of the best chunk), weight 1 - `keyword_weight`. Its min-max divides by at least
  `SIMILARITY_SPREAD`: when its candidates are nearly equally similar (none is really about the query), plain
  min-max would stretch that noise to 0..1 and bury the keyword leg's exact match under it; floored, a flat vector
  leg stays flat;
- the keyword leg (BM25 / ts_rank), weight `keyword_weight`;
- the names leg (ltms.retrieval.names: the query's topic among the memories that mention its names), weight
  `NAMES_WEIGHT`, its spread floored at `NAMES_SPREAD`. It is absent when the query names nothing.

Measured on the project's labelled set (bench/bench_retrieval.py, bench/README.md, MiniLM, recall@10, 350
questions), offline over the same candidates. Two legs: plain min-max at 0.3 gained 8.6 points over semantic but
lost a multi-hop question, and ranked identifiers only 95.6%; reciprocal-rank fusion (k = 1..60), z-scores,
dividing by a leg's max, a bonus for memories both legs found, and more keyword candidates all did worse or lost a
question type; the floor 0.2 with weight 0.2 gained most (+8.9) without losing any type, and kept
tests/data/semantic_set.json's paraphrases at recall@1 1.00. Only 92% of the questions had their evidence in the
union of the two legs' top 10s. The names leg added 6.5 points more (97.4: +15.4 over semantic), flat for its
weight between 0.5 and 1.5 (96.6-97.4) and its floor between 0.05 and 0.2; reciprocal-rank fusion of the three
lists reached 95.7, interleaving them 96.3.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltms.storage.base import KeywordHit, VectorHit

DEFAULT_KEYWORD_WEIGHT = 0.2
SIMILARITY_SPREAD = 0.2
NAMES_WEIGHT = 0.8
NAMES_SPREAD = 0.1
# Each leg's scale is set by its best this many candidates (the service fetches at least as many per leg).
REFERENCE_DEPTH = 20


@dataclass(frozen=True)
class Fused:
    memory_id: int
    score: float  # 0..1, relative to this query's candidates
    vector: VectorHit | None
    keyword: KeywordHit | None


def normalised(scores: dict[int, float], spread: float = 0.0, depth: int = REFERENCE_DEPTH) -> dict[int, float]:
    """Min-max to 0..1 over the best `depth` scores, dividing by at least `spread`; lower scores clip at 0.
    A single candidate (or all equal at the top) gets 1."""
    if not scores:
        return {}
    top = sorted(scores.values(), reverse=True)[:depth]
    low, high = top[-1], top[0]
    if high - low < 1e-12:
        return {key: 1.0 if value >= high else 0.0 for key, value in scores.items()}
    return {key: max(0.0, (value - low) / max(high - low, spread)) for key, value in scores.items()}


def fuse(
    vector_hits: list[VectorHit],
    keyword_hits: list[KeywordHit],
    names_hits: list[VectorHit] | None = None,
    keyword_weight: float = DEFAULT_KEYWORD_WEIGHT,
) -> list[Fused]:
    """Every candidate of any leg, best fused score first."""
    by_vector = {hit.memory_id: hit for hit in vector_hits}
    by_keyword = {hit.memory_id: hit for hit in keyword_hits}
    by_names = {hit.memory_id: hit for hit in names_hits or []}
    dense = normalised({i: hit.similarity for i, hit in by_vector.items()}, SIMILARITY_SPREAD)
    sparse = normalised({i: hit.score for i, hit in by_keyword.items()})
    named = normalised({i: hit.similarity for i, hit in by_names.items()}, NAMES_SPREAD)
    total = 1.0 + (NAMES_WEIGHT if by_names else 0.0)  # keeps the fused score within 0..1
    fused = [
        Fused(
            memory_id=i,
            score=(
                (1 - keyword_weight) * dense.get(i, 0.0)
                + keyword_weight * sparse.get(i, 0.0)
                + NAMES_WEIGHT * named.get(i, 0.0)
            )
            / total,
            vector=by_vector.get(i),
            keyword=by_keyword.get(i),
        )
        for i in dict.fromkeys([*by_vector, *by_keyword, *by_names])
    ]
    # Ties: the better cosine among the vector leg's reference candidates, then the lower id (never a cosine from
    # deeper in the leg: whether it was fetched depends on k).
    reference = {hit.memory_id: hit.similarity for hit in sorted(vector_hits, key=_by_similarity)[:REFERENCE_DEPTH]}
    fused.sort(key=lambda f: (-f.score, -reference.get(f.memory_id, -2.0), f.memory_id))
    return fused


def _by_similarity(hit: VectorHit) -> tuple[float, int]:
    return -hit.similarity, hit.memory_id
