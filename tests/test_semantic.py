"""Semantic retrieval with the default model: a paraphrased query finds its memory (tests/data/semantic_set.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltms.embeddings.base import Embedder
from ltms.embeddings.hashing import HashingEmbedder
from ltms.embeddings.minilm import MiniLMEmbedder
from ltms.service import MemoryService
from tests.helpers import hash_settings

PAIRS = json.loads((Path(__file__).parent / "data" / "semantic_set.json").read_text())["pairs"]


def recall(tmp_path: Path, embedder: Embedder) -> tuple[float, float]:
    """(recall@1, recall@5) of the paraphrased queries over a store of all the memories."""
    with MemoryService(hash_settings(tmp_path / embedder.name), embedder=embedder) as service:
        ids = [r.id for r in service.store_many([(memory, None, None, None) for memory, _ in PAIRS])]
        at_1 = at_5 = 0
        for memory_id, (_, query) in zip(ids, PAIRS, strict=True):
            found = [hit.memory.id for hit in service.retrieve(query, k=5)]
            at_1 += found[0] == memory_id
            at_5 += memory_id in found
    return at_1 / len(PAIRS), at_5 / len(PAIRS)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_paraphrased_queries_find_their_memories(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    at_1, at_5 = recall(tmp_path, minilm)
    assert at_1 >= 0.85, f"recall@1 {at_1:.2f}"
    assert at_5 >= 0.95, f"recall@5 {at_5:.2f}"


def test_the_model_beats_word_hashing_on_paraphrases(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    model_at_1, _ = recall(tmp_path, minilm)
    hashing_at_1, _ = recall(tmp_path, HashingEmbedder())
    assert model_at_1 > hashing_at_1 + 0.2, (model_at_1, hashing_at_1)
