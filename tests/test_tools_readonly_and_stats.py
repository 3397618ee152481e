"""A read-only server says so when asked to write (it used to answer `Unknown tool: store_memory`), and
memory_stats stays small however many namespaces there are (20,000 namespaces made a 2.66 MB response)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from ltms.ops.stats import NAMESPACE_LIMIT
from ltms.server.tools import build_server
from ltms.service import MemoryService
from tests.helpers import hash_settings

pytestmark = pytest.mark.anyio

WRITES = {
    "store_memory": {"text": "sneaky"},
    "update_memory": {"id": 1, "text": "changed"},
    "delete_memory": {"id": 1},
}


async def test_a_read_only_server_refuses_writes_saying_it_is_read_only(data_dir: Path) -> None:
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        service.store("stored before the read-only start")
    settings = hash_settings(data_dir, LTMC_READ_ONLY="1")
    with MemoryService(settings, background_saves=False) as service:
        async with Client(build_server(service, settings)) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            for name, args in WRITES.items():
                assert tools[name].description.startswith("Unavailable: this server is read-only"), name
                for arguments in (args, {}, {"bogus": 1}):  # whatever the arguments, the answer is the same
                    result = await client.call_tool(name, arguments)
                    assert result.is_error
                    assert result.content[0].text == (
                        f"Error executing tool {name}: this server is read-only (started with --read-only or "
                        "LTMC_READ_ONLY=1): memories can be searched and read here, not stored, changed or deleted"
                    )
            found = await client.call_tool("retrieve_memory", {"query": "stored"})
            assert found.structured_content["count"] == 1
        assert service.storage.db.count() == 1 and service.get(1).text == "stored before the read-only start"


async def test_memory_stats_lists_the_largest_namespaces_and_counts_the_rest(data_dir: Path) -> None:
    # namespace ns-i holds i + 1 memories: the largest are the highest numbers.
    count = NAMESPACE_LIMIT + 25
    items = [(f"memory {j} of {i}", None, None, f"ns-{i}") for i in range(count) for j in range(i + 1)]
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        service.store_many(items)
        async with Client(build_server(service, service.settings)) as client:
            result = await client.call_tool("memory_stats", {})
    stats = result.structured_content
    assert stats["memories"] == len(items)
    assert stats["namespace_count"] == count and stats["namespaces_omitted"] == 25
    assert list(stats["namespaces"].items()) == [(f"ns-{i}", i + 1) for i in reversed(range(25, count))]


async def test_memory_stats_at_20000_namespaces_stays_small(data_dir: Path) -> None:
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        service.store_many([(f"note {i}", None, None, f"namespace-{i:05d}") for i in range(20_000)])
        async with Client(build_server(service, service.settings)) as client:
            result = await client.call_tool("memory_stats", {})
    size = len(json.dumps(result.structured_content)) + len(result.content[0].text)
    assert result.structured_content["namespace_count"] == 20_000
    assert result.structured_content["namespaces_omitted"] == 20_000 - NAMESPACE_LIMIT
    assert size < 10_000, size  # was 2.66 MB
