"""retrieve_memory shows why a long memory matched: the passage, with its offsets, within the item's budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from ltms.server.tools import build_server, item_limit
from ltms.service import MemoryService
from tests.helpers import hash_settings

pytestmark = pytest.mark.anyio


async def test_a_deep_passage_is_shown_with_its_offsets(data_dir: Path) -> None:
    filler = "The quick brown fox jumps over the lazy dog. " * 300
    text = f"{filler}The vault combination is 31-41-59. {filler}"
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        service.store(text)
        short_id = service.store("a short note about the vault").id
        async with Client(build_server(service, service.settings)) as client:
            result = await client.call_tool("retrieve_memory", {"query": "vault combination", "k": 2})
    assert not result.is_error, result.content
    hits = {hit["id"]: hit for hit in result.structured_content["results"]}
    deep = next(hit for memory_id, hit in hits.items() if memory_id != short_id)
    passage = deep["passage"]
    assert text[passage["start"] : passage["end"]].startswith(passage["text"].removesuffix("… [truncated]"))
    assert "vault combination" in passage["text"] and passage["start"] > 10_000
    limit = item_limit(service.settings, 2)
    assert len(deep["text"]) + len(passage["text"]) < limit + 200  # text and passage share one item's budget
    assert deep["similarity"] is not None and deep["keyword_rank"] is not None
    short = hits[short_id]["passage"]  # a short memory is one passage, all of it, already shown
    assert short == {"start": 0, "end": len("a short note about the vault"), "text": None}
