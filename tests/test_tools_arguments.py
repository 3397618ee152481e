"""Tool arguments are strict, through a real MCP client (in process): unknown names are an error naming them and
the valid ones, JSON types are never converted, each rejected call is one line naming the argument, the problem and
the bound, and a rejected call changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from ltms.server.tools import build_server
from ltms.service import MemoryService
from tests.helpers import hash_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def service(data_dir: Path) -> Iterator[MemoryService]:
    with MemoryService(hash_settings(data_dir), background_saves=False) as svc:
        yield svc


@pytest.fixture
async def client(service: MemoryService) -> AsyncIterator[Client]:
    async with Client(build_server(service, service.settings)) as c:
        yield c


async def refused(client: Client, service: MemoryService, tool: str, args: dict[str, Any]) -> str:
    """The one-line message of a refused call, after checking it changed nothing."""
    before = (service.storage.db.count(), service.storage.db.max_seq())
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    message = result.content[0].text
    assert "\n" not in message and "pydantic" not in message and "http" not in message, message
    assert message.startswith(f"Error executing tool {tool}: "), message
    assert (service.storage.db.count(), service.storage.db.max_seq()) == before
    return message


async def test_every_published_schema_is_closed(client: Client) -> None:
    tools = (await client.list_tools()).tools
    assert len(tools) == 7
    for tool in tools:
        assert tool.input_schema["additionalProperties"] is False, tool.name


async def test_misspelled_arguments_are_named_with_the_valid_ones(client: Client, service: MemoryService) -> None:
    # Before: stored into `default` with no tags and answered created: true.
    message = await refused(client, service, "store_memory", {"text": "a note", "tag": ["x"], "namespce": "proj"})
    assert "unknown arguments 'tag' (did you mean 'tags'?), 'namespce' (did you mean 'namespace'?)" in message
    assert message.endswith("the valid arguments are text, tags, metadata, namespace")
    assert service.storage.db.count() == 0

    # Before: top_k was ignored and 5 results came back.
    message = await refused(client, service, "retrieve_memory", {"query": "note", "top_k": 1})
    assert "unknown argument 'top_k'" in message and "query, k, namespace, tags, since, until, min_score" in message
    assert "takes no arguments" in await refused(client, service, "memory_stats", {"verbose": True})


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        # Before, "5" was read as 5 for k while "1" was refused for id: now a string is never a number anywhere.
        ("retrieve_memory", {"query": "x", "k": "5"}, "argument 'k' must be an integer, got the string '5'"),
        ("get_memory", {"id": "1"}, "argument 'id' must be an integer, got the string '1'"),
        ("retrieve_memory", {"query": "x", "k": True}, "argument 'k' must be an integer, got true"),
        ("list_memories", {"offset": 2.5}, "argument 'offset' must be an integer, got 2.5"),
        ("retrieve_memory", {"query": "x", "min_score": "0.5"}, "argument 'min_score' must be a number"),
        ("retrieve_memory", {"query": "x", "k": 500}, "argument 'k' must be less than or equal to 100, got 500"),
        ("list_memories", {"limit": 0}, "argument 'limit' must be greater than or equal to 1, got 0"),
        ("store_memory", {"text": 42}, "argument 'text' must be a string, got 42"),
        ("store_memory", {"text": "ok", "tags": ["a", 3]}, "argument 'tags[1]' must be a string, got 3"),
        ("store_memory", {"text": "ok", "metadata": "plain"}, "argument 'metadata' must be an object"),
        ("store_memory", {"tags": ["a"]}, "missing required argument 'text'"),
        # Unbounded before: a 5,000-digit integer reached the service and failed as an internal error.
        ("delete_memory", {"id": 10**5000}, "'id' must be less than or equal to 9223372036854775807, got a very large"),
        ("list_memories", {"offset": 10**5000}, "argument 'offset' must be less than or equal to 4611686018427387904"),
    ],
)
async def test_each_rejected_argument_is_one_line_with_its_bound(
    client: Client, service: MemoryService, tool: str, args: dict[str, Any], expected: str
) -> None:
    assert expected in await refused(client, service, tool, args)


async def test_several_problems_share_the_one_line(client: Client, service: MemoryService) -> None:
    message = await refused(client, service, "retrieve_memory", {"k": 0, "nmespace": "a"})
    assert "unknown argument 'nmespace' (did you mean 'namespace'?)" in message
    assert (
        "missing required argument 'query'" in message and "argument 'k' must be greater than or equal to 1" in message
    )


async def test_arrays_and_objects_may_arrive_json_encoded_but_text_is_never_decoded(
    client: Client, service: MemoryService
) -> None:
    stored = await client.call_tool("store_memory", {"text": "note", "tags": '["a", "b"]', "metadata": '{"k": 1}'})
    assert not stored.is_error, stored.content
    memory = service.get(stored.structured_content["id"])
    assert (memory.tags, memory.metadata) == (("a", "b"), {"k": 1})
    # Before, the SDK decoded any JSON-looking string: this text became a list and the update was refused, and
    # the text "null" became None (keep the old text).
    for text in ("[1, 2]", '{"a": 1}', "null", "42"):
        updated = await client.call_tool("update_memory", {"id": memory.id, "text": text})
        assert not updated.is_error, updated.content
        assert service.get(memory.id).text == text
    message = await refused(client, service, "store_memory", {"text": "x", "tags": "null"})
    assert "argument 'tags' must be an array, got the string 'null'" in message
