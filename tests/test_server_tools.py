"""The MCP tools, in process (the SDK's in-memory client): names, schemas, annotations, results, truncation,
read-only mode and error messages. The real transports are in test_server_transports.py."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from ltms.config import Settings
from ltms.server.tools import RESPONSE_TEXT_BUDGET, build_server
from ltms.service import MemoryService
from tests.helpers import ALL_TOOLS

pytestmark = pytest.mark.anyio

READING_TOOLS = {"retrieve_memory", "get_memory", "list_memories", "memory_stats"}


def make_settings(data_dir: Path, **env: str) -> Settings:
    return Settings.load(env={"LTMC_DATA_DIR": str(data_dir), "LTMC_EMBEDDER": "hash", **env})


@pytest.fixture
def service(data_dir: Path) -> Iterator[MemoryService]:
    with MemoryService(make_settings(data_dir), background_saves=False) as svc:
        yield svc


@pytest.fixture
async def client(service: MemoryService) -> AsyncIterator[Client]:
    async with Client(build_server(service, service.settings)) as c:
        yield c


async def ok(client: Client, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await client.call_tool(tool, args or {})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return result.content[0].text


async def test_tools_have_names_descriptions_schemas_and_annotations(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == ALL_TOOLS
    for tool in tools.values():
        assert tool.description and tool.title and tool.output_schema
        assert "\n        " not in tool.description  # source indentation removed
        for name, schema in tool.input_schema.get("properties", {}).items():
            assert schema.get("description"), f"{tool.name}.{name} has no description"
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (tool.name in READING_TOOLS)
        assert tool.annotations.open_world_hint is False
    assert tools["delete_memory"].annotations.destructive_hint is True
    assert tools["update_memory"].annotations.destructive_hint is True
    assert tools["store_memory"].annotations.destructive_hint is False
    k = tools["retrieve_memory"].input_schema["properties"]["k"]
    assert (k["minimum"], k["maximum"], k["default"]) == (1, 100, 5)
    assert tools["retrieve_memory"].input_schema["required"] == ["query"]


async def test_store_retrieve_get_update_delete(client: Client) -> None:
    stored = await ok(
        client,
        "store_memory",
        {
            "text": "The deploy key lives in the vault under ops/deploy.",
            "tags": ["ops", "secrets"],
            "metadata": {"source": "chat"},
            "namespace": "proj-a",
        },
    )
    assert stored["created"] is True and stored["namespace"] == "proj-a" and stored["created_at"].endswith("Z")
    again = await ok(
        client, "store_memory", {"text": "The deploy key lives in the vault under ops/deploy.", "namespace": "proj-a"}
    )
    assert again["id"] == stored["id"] and again["created"] is False
    await ok(client, "store_memory", {"text": "Lunch is at noon on Fridays."})

    found = await ok(client, "retrieve_memory", {"query": "where is the deploy key", "k": 5})
    assert found["count"] == len(found["results"]) == 2
    top = found["results"][0]
    assert top["id"] == stored["id"] and top["tags"] == ["ops", "secrets"] and top["metadata"] == {"source": "chat"}
    assert top["truncated"] is False and -1 <= top["score"] <= 1
    assert set(top) >= {"id", "score", "text", "truncated", "namespace", "tags", "metadata", "created_at", "updated_at"}

    filtered = await ok(client, "retrieve_memory", {"query": "deploy key", "namespace": "default"})
    assert [hit["namespace"] for hit in filtered["results"]] == ["default"]
    tagged = await ok(client, "retrieve_memory", {"query": "anything", "tags": ["ops", "secrets"]})
    assert [hit["id"] for hit in tagged["results"]] == [stored["id"]]
    later = await ok(client, "retrieve_memory", {"query": "deploy", "since": "2999-01-01"})
    assert later["count"] == 0

    updated = await ok(client, "update_memory", {"id": stored["id"], "tags": ["ops"]})
    assert updated["tags"] == ["ops"] and updated["text"].startswith("The deploy key")
    assert (await ok(client, "get_memory", {"id": stored["id"]}))["tags"] == ["ops"]

    assert await ok(client, "delete_memory", {"id": stored["id"]}) == {"id": stored["id"], "deleted": True}
    assert "no memory with id" in await error(client, "get_memory", {"id": stored["id"]})
    assert "no memory with id" in await error(client, "delete_memory", {"id": stored["id"]})


async def test_list_pages_newest_first(client: Client) -> None:
    ids = [(await ok(client, "store_memory", {"text": f"note number {i}"}))["id"] for i in range(5)]
    first = await ok(client, "list_memories", {"limit": 2})
    assert [m["id"] for m in first["items"]] == ids[::-1][:2]
    assert (first["total"], first["next_offset"]) == (5, 2)
    last = await ok(client, "list_memories", {"limit": 2, "offset": 4})
    assert [m["id"] for m in last["items"]] == [ids[0]] and last["next_offset"] is None


async def test_long_texts_are_truncated_with_a_marker_but_get_returns_all(
    client: Client, service: MemoryService
) -> None:
    limit = service.settings.max_result_chars
    text = "Remember this long story. " + "x" * (limit * 3)
    stored = await ok(client, "store_memory", {"text": text, "metadata": {"blob": "y" * (limit * 2)}})
    hit = (await ok(client, "retrieve_memory", {"query": "long story"}))["results"][0]
    assert hit["truncated"] is True and hit["text_chars"] == len(text)
    assert hit["text"].startswith(text[:limit]) and len(hit["text"]) < limit + 200
    assert f"get_memory with id {stored['id']}" in hit["text"]
    assert hit["metadata"] == {} and hit["metadata_truncated"] is True
    listed = (await ok(client, "list_memories"))["items"][0]
    assert listed["truncated"] is True and listed["metadata_truncated"] is True
    whole = await ok(client, "get_memory", {"id": stored["id"]})
    assert whole["text"] == text and whole["truncated"] is False and whole["metadata"]["blob"] == "y" * (limit * 2)


async def test_a_retrieve_at_k_100_stays_small(client: Client, service: MemoryService) -> None:
    service.store_many([(f"memory {i}: " + "z" * 8_000, None, {"pad": "p" * 4_000}, None) for i in range(100)])
    result = await client.call_tool("retrieve_memory", {"query": "memory", "k": 100})
    assert result.structured_content["count"] == 100
    size = len(json.dumps(result.structured_content)) + sum(len(c.text) for c in result.content)
    assert size < 4 * RESPONSE_TEXT_BUDGET, size  # uncut, twice (structured and text) 100 x 12 KB: 2.4 MB


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("retrieve_memory", {"query": "x", "k": 0}, "greater than or equal to 1"),
        ("retrieve_memory", {"query": "x", "k": 101}, "less than or equal to 100"),
        ("retrieve_memory", {"query": "x", "k": "many"}, "must be an integer"),
        ("retrieve_memory", {"query": "   "}, "query must not be empty"),
        ("retrieve_memory", {}, "query"),
        ("retrieve_memory", {"query": "x", "since": "yesterday"}, "not an ISO 8601"),
        ("retrieve_memory", {"query": "x", "min_score": 2}, "less than or equal to 1"),
        ("store_memory", {"text": ""}, "text must not be empty"),
        ("store_memory", {"text": "a" * 40_000}, "the limit is 32768"),
        ("store_memory", {"text": "ok", "tags": "not-a-list"}, "tags"),
        ("store_memory", {"text": "ok", "metadata": [1, 2]}, "metadata"),
        ("store_memory", {"text": "ok", "namespace": "no spaces allowed"}, "namespace 'no spaces allowed' is invalid"),
        ("store_memory", {"text": "nul \x00 inside"}, "NUL"),
        ("get_memory", {"id": 0}, "greater than or equal to 1"),
        ("get_memory", {"id": 12345}, "no memory with id 12345"),
        ("update_memory", {"id": 12345, "text": "new"}, "no memory with id 12345"),
        ("list_memories", {"limit": 1000}, "less than or equal to 100"),
    ],
)
async def test_bad_input_is_an_error_naming_the_problem(
    client: Client, service: MemoryService, tool: str, args: dict[str, Any], expected: str
) -> None:
    message = await error(client, tool, args)
    assert expected in message, message
    assert service.storage.db.count() == 0  # nothing changed
    assert (await ok(client, "memory_stats"))["memories"] == 0  # and the server still answers


async def test_read_only_mode_refuses_the_writing_tools(data_dir: Path) -> None:
    with MemoryService(make_settings(data_dir), background_saves=False) as svc:
        svc.store("stored before the read-only start")
    settings = make_settings(data_dir, LTMC_READ_ONLY="1")
    with MemoryService(settings, background_saves=False) as svc:
        async with Client(build_server(svc, settings)) as c:
            assert {tool.name for tool in (await c.list_tools()).tools} == ALL_TOOLS  # listed, to say why they fail
            assert "this server is read-only" in await error(c, "store_memory", {"text": "sneaky"})
            assert (await ok(c, "retrieve_memory", {"query": "stored"}))["count"] == 1
            assert (await ok(c, "memory_stats"))["read_only"] is True
        assert svc.storage.db.count() == 1


async def test_unexpected_errors_are_logged_not_leaked(
    client: Client, service: MemoryService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("secret detail /home/someone/.ssh")

    monkeypatch.setattr(service, "stats", broken)
    with caplog.at_level(logging.ERROR, logger="ltms.server.tools"):
        message = await error(client, "memory_stats", {})
    assert "secret" not in message and "internal server error" in message
    assert "secret detail" in caplog.text


async def test_stats_reports_counts_and_index(client: Client) -> None:
    await ok(client, "store_memory", {"text": "one", "namespace": "a"})
    await ok(client, "store_memory", {"text": "two", "namespace": "b"})
    stats = await ok(client, "memory_stats")
    assert stats["memories"] == 2 and stats["namespaces"] == {"a": 1, "b": 1}
    assert stats["index"]["vectors"] == 2 and stats["read_only"] is False and stats["version"]
