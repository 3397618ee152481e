"""What retrieve_memory's description (and the README) says about scores holds for the default model: the figures
are measured again here through the tool, on tests/data/semantic_set.json (20 paraphrased questions).

"No answer stored" is the same question asked with its own memory filtered out: each memory carries the tag
`not-<i>` for every other question i, so `tags: ["not-<i>"]` searches everything but memory i."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from ltms.embeddings.minilm import MiniLMEmbedder
from ltms.server.tools import NO_MATCH_ADVICE, SCORE_MEANING, build_server
from ltms.service import MemoryService
from tests.helpers import REPO, hash_settings

pytestmark = pytest.mark.anyio

PAIRS = json.loads((Path(__file__).parent / "data" / "semantic_set.json").read_text())["pairs"]
FLOOR = 0.4


async def test_the_documented_score_figures_hold(data_dir: Path) -> None:
    memories = [
        (memory, [f"not-{i}" for i in range(len(PAIRS)) if i != j], None, None) for j, (memory, _) in enumerate(PAIRS)
    ]
    with MemoryService(hash_settings(data_dir), embedder=MiniLMEmbedder(), background_saves=False) as service:
        ids = [result.id for result in service.store_many(memories)]
        async with Client(build_server(service, service.settings)) as client:
            description = {t.name: t.description for t in (await client.list_tools()).tools}["retrieve_memory"]

            async def top(query: str, **filters: object) -> dict:
                result = await client.call_tool("retrieve_memory", {"query": query, "k": 1, **filters})
                assert not result.is_error, result.content
                return result.structured_content

            right, no_answer, kept, dropped, let_through = [], [], 0, 0, 0
            for i, (_, question) in enumerate(PAIRS):
                best = (await top(question))["results"][0]
                assert best["id"] == ids[i], question  # recall@1 is 1.00 with the default model
                right.append(best["similarity"])
                no_answer.append((await top(question, tags=[f"not-{i}"]))["results"][0]["similarity"])
                kept += (await top(question, min_score=FLOOR))["count"] == 1
                dropped += (await top(question, tags=[f"not-{i}"], min_score=FLOOR))["count"] == 0
                let_through += (await top(question, tags=[f"not-{i}"], min_score=0.3))["count"] == 1

    assert SCORE_MEANING in description and NO_MATCH_ADVICE in description
    assert f"right answers to paraphrased questions had similarity {min(right):.2f}-{max(right):.2f}" in description
    assert f"question whose answer was not stored {min(no_answer):.2f}-{max(no_answer):.2f}" in description
    assert f"min_score {FLOOR} kept {kept} of 20 right answers and dropped {dropped} of 20 non-answers" in description
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"right answers scored {min(right):.2f}-{max(right):.2f}" in readme
    assert f"answer was not stored scored {min(no_answer):.2f}-{max(no_answer):.2f}" in readme
    assert f"`min_score: {FLOOR}` kept {kept} of 20 right answers" in readme
    assert min(right) >= 0.3 and f"0.3 kept all 20 but let {let_through} non-answers through" in readme
