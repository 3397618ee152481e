"""The memory service behaves the same on every backend: the embedded store (a real SQLite file and FAISS index)
and PostgreSQL + pgvector (a real server started by the tests). Hash embedder: these are about behaviour, not
meaning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltms.config import Settings
from ltms.errors import InvalidInput, NotFound
from ltms.service import MemoryService
from tests.helpers import child_env, hash_settings


@pytest.fixture(params=["sqlite", "postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryService]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        settings = Settings.load(env=child_env(tmp_path / "data", LTMC_BACKEND="postgres", LTMC_DATABASE_URL=url))
    else:
        settings = hash_settings(tmp_path / "data")
    with MemoryService(settings, background_saves=False) as opened:
        yield opened


def test_store_dedup_get_update_delete(service: MemoryService) -> None:
    first = service.store("The deploy key rotates every Friday", tags=["ops"], metadata={"by": "me"}, namespace="w")
    again = service.store("The deploy key rotates every Friday", namespace="w")
    elsewhere = service.store("The deploy key rotates every Friday", namespace="home")
    assert first.created and not again.created and again.id == first.id and elsewhere.id != first.id
    memory = service.get(first.id)
    assert (memory.text, memory.tags, memory.metadata, memory.namespace) == (
        "The deploy key rotates every Friday",
        ("ops",),
        {"by": "me"},
        "w",
    )
    updated = service.update(first.id, tags=["ops", "keys"])
    assert updated.text == memory.text and updated.tags == ("ops", "keys")
    service.update(first.id, text="The deploy key rotates every Monday")
    assert [h.memory.id for h in service.retrieve("Monday", mode="keyword")] == [first.id]
    assert service.retrieve("Friday", mode="keyword", namespace="w") == []
    with pytest.raises(InvalidInput):  # the text of another memory in the same namespace
        service.update(service.store("other", namespace="w").id, text="The deploy key rotates every Monday")
    service.delete(first.id)
    with pytest.raises(NotFound):
        service.get(first.id)
    assert first.id not in {h.memory.id for h in service.retrieve("deploy key Monday", k=10)}


def test_retrieve_every_mode_and_filter(service: MemoryService) -> None:
    ids = {
        text: service.store(text, tags=tags, namespace=ns).id
        for text, tags, ns in [
            ("Error ERR-4711 means the cache is cold", ["errors"], "a"),
            ("The release train leaves on Tuesdays", ["process"], "a"),
            ("Ticket PROJ-1234 tracks the login bug", ["tickets", "errors"], "b"),
        ]
    }
    for mode in ("hybrid", "semantic", "keyword"):
        hits = service.retrieve("ERR-4711", k=3, mode=mode)
        assert hits[0].memory.id == ids["Error ERR-4711 means the cache is cold"], mode
        assert hits[0].similarity is not None and hits[0].passage is not None
    keyword = service.retrieve("PROJ-1234 login", mode="keyword")
    assert keyword[0].keyword_rank == 1 and keyword[0].memory.namespace == "b"
    assert {h.memory.namespace for h in service.retrieve("bug cache release", k=10, namespace="a")} == {"a"}
    tagged = service.retrieve("bug cache release", k=10, tags=["errors", "tickets"])
    assert [h.memory.id for h in tagged] == [ids["Ticket PROJ-1234 tracks the login bug"]]
    assert service.retrieve("cache", until="2000-01-01") == []
    assert service.retrieve("cache", min_score=1.0) == []


def test_list_pages_newest_first_and_stats(service: MemoryService) -> None:
    stored = [service.store(f"memory number {i}", namespace="n" if i % 2 else "m").id for i in range(7)]
    first = service.list(limit=3)
    assert [m.id for m in first.items] == stored[::-1][:3] and first.total == 7 and first.next_offset == 3
    last = service.list(limit=3, offset=6)
    assert [m.id for m in last.items] == [stored[0]] and last.next_offset is None
    assert service.list(namespace="n").total == 3
    stats = service.stats()
    assert stats["memories"] == 7 and stats["namespaces"] == {"m": 4, "n": 3}
    assert stats["backend"] == service.storage.name
    assert "password" not in json.dumps(stats).lower() or service.storage.name == "sqlite"


def test_a_long_memory_is_found_by_a_passage_past_its_start(service: MemoryService) -> None:
    filler = "The quick brown fox jumps over the lazy dog. " * 300  # every filler passage looks the same
    memory_id = service.store(f"{filler} The vault combination is 31-41-59. {filler}").id
    hit = service.retrieve("vault combination", k=1, mode="semantic")[0]
    assert hit.memory.id == memory_id and hit.passage is not None
    assert "vault combination" in hit.passage.text
    assert hit.passage.start > 10_000 and hit.passage.text == hit.memory.text[hit.passage.start : hit.passage.end]
