"""The memory service through real SQLite and FAISS files (hashing embedder for speed)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltms.embeddings.hashing import HashingEmbedder
from ltms.errors import InvalidInput, ModelMismatch, NotFound, ReadOnlyError
from ltms.service import MemoryService
from tests.helpers import hash_settings


@pytest.fixture
def service(tmp_path: Path) -> Iterator[MemoryService]:
    with MemoryService(hash_settings(tmp_path / "data")) as svc:
        yield svc


def test_store_then_get_returns_everything(service: MemoryService) -> None:
    result = service.store(
        "the deploy key lives in vault", tags=["ops", "secrets"], metadata={"source": "chat"}, namespace="work"
    )
    assert result.created
    memory = service.get(result.id)
    assert memory.text == "the deploy key lives in vault"
    assert memory.tags == ("ops", "secrets")
    assert memory.metadata == {"source": "chat"}
    assert memory.namespace == "work"
    assert memory.created_at == memory.updated_at
    assert memory.to_dict()["created_at"].endswith("Z")


def test_same_text_same_namespace_is_deduplicated(service: MemoryService) -> None:
    first = service.store("water boils at 100 degrees")
    again = service.store("water boils at 100 degrees", tags=["ignored"])
    elsewhere = service.store("water boils at 100 degrees", namespace="physics")
    assert again.id == first.id and not again.created
    assert elsewhere.id != first.id and elsewhere.created
    assert service.stats()["memories"] == 2
    assert service.storage.index.ntotal == 2


def test_retrieve_ranks_the_matching_memory_first(service: MemoryService) -> None:
    for text in ["apples are red fruit", "the server runs on port 5050", "my cat is called Miso"]:
        service.store(text)
    hits = service.retrieve("what port does the server run on", k=3)
    assert hits[0].memory.text == "the server runs on port 5050"
    assert hits[0].score > hits[1].score


def test_filters_apply_before_the_top_k_cut(service: MemoryService) -> None:
    for i in range(30):
        service.store(f"note about deployment pipelines number {i}", namespace="busy")
    for i in range(5):
        service.store(f"grocery list item {i}", namespace="quiet", tags=["home"] if i % 2 else ["home", "urgent"])
    hits = service.retrieve("deployment pipelines", k=5, namespace="quiet")
    assert len(hits) == 5
    assert {h.memory.namespace for h in hits} == {"quiet"}
    urgent = service.retrieve("deployment pipelines", k=5, tags=["home", "urgent"])
    assert sorted(h.memory.text for h in urgent) == [
        "grocery list item 0",
        "grocery list item 2",
        "grocery list item 4",
    ]


def test_time_window_and_min_score(service: MemoryService) -> None:
    old = service.store("an old memory about rockets", metadata={})
    old_time = service.get(old.id).created_at
    new = service.store("a new memory about rockets")
    since = service.get(new.id).created_at
    assert [h.memory.id for h in service.retrieve("rockets", k=5, since=since)] == [new.id]
    assert [h.memory.id for h in service.retrieve("rockets", k=5, until=old_time)] == [old.id]
    assert service.retrieve("rockets", k=5, since="2999-01-01T00:00:00Z") == []
    assert service.retrieve("zebra crossing", k=5, min_score=0.99) == []


def test_update_re_embeds_new_text(service: MemoryService) -> None:
    memory_id = service.store("the meeting is on monday").id
    updated = service.update(memory_id, text="the standup moved to friday", tags=["calendar"])
    assert updated.text == "the standup moved to friday"
    assert updated.tags == ("calendar",)
    assert updated.updated_at >= updated.created_at
    assert service.retrieve("standup friday", k=1)[0].memory.id == memory_id
    assert service.storage.index.ntotal == 1
    assert service.update(memory_id, metadata={"k": "v"}).text == "the standup moved to friday"


def test_update_to_a_duplicate_text_is_refused(service: MemoryService) -> None:
    a = service.store("alpha").id
    service.store("beta")
    with pytest.raises(InvalidInput, match="already has this text"):
        service.update(a, text="beta")
    assert service.get(a).text == "alpha"


def test_delete_removes_from_search_and_get(service: MemoryService) -> None:
    memory_id = service.store("temporary note").id
    service.delete(memory_id)
    with pytest.raises(NotFound, match=str(memory_id)):
        service.get(memory_id)
    assert service.retrieve("temporary note", k=5) == []
    with pytest.raises(NotFound):
        service.delete(memory_id)


def test_list_pages_newest_first(service: MemoryService) -> None:
    ids = [service.store(f"memory {i}").id for i in range(7)]
    first = service.list(limit=3)
    assert [m.id for m in first.items] == ids[::-1][:3]
    assert first.total == 7 and first.next_offset == 3
    last = service.list(limit=3, offset=6)
    assert [m.id for m in last.items] == [ids[0]] and last.next_offset is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": ""}, "must not be empty"),
        ({"text": "   "}, "must not be empty"),
        ({"text": 42}, "must be a string"),
        ({"text": "x" * (32 * 1024 + 1)}, "limit is 32768"),
        ({"text": "bad \ud800 surrogate"}, "lone surrogate"),
        ({"text": "nul\x00byte"}, "NUL"),
        ({"text": "ok", "metadata": {"blob": "x" * 17000}}, "limit is 16384"),
        ({"text": "ok", "metadata": {"f": {1, 2}}}, "not JSON-serialisable"),
        ({"text": "ok", "metadata": ["not", "a", "dict"]}, "JSON object"),
        ({"text": "ok", "tags": "not-a-list"}, "list of strings"),
        ({"text": "ok", "namespace": "has space"}, "namespace"),
    ],
)
def test_bad_store_input_is_refused_and_changes_nothing(service: MemoryService, kwargs: dict, message: str) -> None:
    service.store("existing memory")
    with pytest.raises(InvalidInput, match=message):
        service.store(**kwargs)
    assert service.stats()["memories"] == 1
    assert service.storage.index.ntotal == 1


@pytest.mark.parametrize("k", [0, 101, -1, "5", 2.5, True])
def test_k_out_of_range_is_refused(service: MemoryService, k: object) -> None:
    with pytest.raises(InvalidInput, match="k must"):
        service.retrieve("anything", k=k)  # type: ignore[arg-type]


def test_unknown_ids_and_bad_ids(service: MemoryService) -> None:
    with pytest.raises(NotFound, match="no memory with id 999"):
        service.get(999)
    with pytest.raises(InvalidInput, match="id must be"):
        service.get(0)
    with pytest.raises(NotFound):
        service.update(999, text="x")


def test_store_many_is_all_or_nothing(service: MemoryService) -> None:
    with pytest.raises(InvalidInput):
        service.store_many([("fine", None, None, None), ("", None, None, None)])
    assert service.stats()["memories"] == 0
    results = service.store_many([("one", None, None, None), ("two", None, None, None), ("one", None, None, None)])
    assert [r.created for r in results] == [True, True, False]
    assert results[0].id == results[2].id


def test_opening_with_another_model_names_both_and_the_fix(tmp_path: Path) -> None:
    settings = hash_settings(tmp_path / "data")
    with MemoryService(settings) as svc:
        svc.store("embedded with the 384-d hash model")
    with pytest.raises(ModelMismatch) as info:
        MemoryService(settings, embedder=HashingEmbedder(dimension=64))
    message = str(info.value)
    assert "hash-384-v1" in message and "hash-64-v1" in message and "ltmc reindex --reembed" in message


def _open_files_under(directory: Path) -> list[str]:
    """The files under `directory` this process holds open (its fds, as /proc shows them)."""
    targets = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # the fd of the listing itself is gone by now
            targets.append(os.readlink(fd))
    return [t for t in targets if t.startswith(str(directory))]


def test_a_refused_open_leaves_nothing_open(tmp_path: Path) -> None:
    """A model mismatch is found after the database is open: the open closes it again (no fd on any store file),
    so the next try, or a tool that needs the file to itself, is not held up."""
    settings = hash_settings(tmp_path / "data")
    with MemoryService(settings) as svc:
        svc.store("embedded with the 384-d hash model")
    assert _open_files_under(tmp_path) == []
    with pytest.raises(ModelMismatch):
        MemoryService(settings, embedder=HashingEmbedder(dimension=64))
    assert _open_files_under(tmp_path) == []
    # The file can be taken exclusively: no connection of ours (or its lock) is left behind.
    conn = sqlite3.connect(settings.paths.db_path, timeout=0)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_stats_reports_counts_and_index_state(service: MemoryService) -> None:
    service.store("a", namespace="one")
    service.store("b", namespace="two")
    service.store("c", namespace="two")
    stats = service.stats()
    assert stats["memories"] == 3
    assert stats["namespaces"] == {"one": 1, "two": 2}
    assert stats["index"]["vectors"] == 3
    assert stats["index"]["state"] == "created"
    assert stats["model"] == "hash-384-v1"


def test_a_read_only_service_refuses_writes_and_changes_nothing(tmp_path: Path) -> None:
    with MemoryService(hash_settings(tmp_path / "data")) as service:
        memory_id = service.store("written while writable").id
    with MemoryService(hash_settings(tmp_path / "data", LTMC_READ_ONLY="1")) as service:
        for attempt in (
            lambda: service.store("new"),
            lambda: service.update(memory_id, text="changed"),
            lambda: service.delete(memory_id),
        ):
            with pytest.raises(ReadOnlyError, match="read-only"):
                attempt()
        assert service.get(memory_id).text == "written while writable"
        assert service.retrieve("written", k=1)[0].memory.id == memory_id


def test_a_returned_memory_cannot_be_changed(service: MemoryService) -> None:
    """Memory is frozen all the way down; to_dict gives plain copies a caller may change."""
    memory_id = service.store("frozen", tags=["a"], metadata={"nested": {"list": [1, 2]}}).id
    memory = service.get(memory_id)
    assert memory.tags == ("a",) and memory.metadata == {"nested": {"list": [1, 2]}}
    with pytest.raises(TypeError):
        memory.metadata["new"] = 1
    with pytest.raises(TypeError):
        memory.metadata["nested"]["list"].append(3)
    with pytest.raises(TypeError):
        memory.metadata.update(new=1)
    plain = memory.to_dict()
    plain["tags"].append("b")
    plain["metadata"]["nested"]["list"].append(3)
    assert type(plain["metadata"]["nested"]) is dict and type(plain["metadata"]["nested"]["list"]) is list
    assert service.get(memory_id) == memory and memory.metadata == {"nested": {"list": [1, 2]}}
