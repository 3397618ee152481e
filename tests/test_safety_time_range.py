"""Issue 10.8: `until` given as a bare date covers that whole day, and an inverted range is an error naming both
ends (it used to return nothing, silently)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from mcp import Client

from ltms.errors import InvalidInput
from ltms.server.tools import build_server
from ltms.service import MemoryService
from tests.helpers import hash_settings

STORED = {
    "at midnight": "2026-12-01T00:00:00",
    "at noon": "2026-12-01T12:00:00",
    "just before the day ends": "2026-12-01T23:59:59.999",
    "the next day": "2026-12-02T00:00:00",
    "the day before": "2026-11-30T23:59:59",
}


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


@pytest.mark.anyio
async def test_a_date_only_until_covers_the_whole_day(tmp_path: Path) -> None:
    with MemoryService(hash_settings(tmp_path / "data"), background_saves=False) as service:
        service.store_many(
            [(f"a memory stored {when}", None, None, None) for when in STORED],
            timestamps=[(epoch(at), None) for at in STORED.values()],
        )
        hits = service.retrieve("a memory stored", k=10, since="2026-12-01", until="2026-12-01")
        assert sorted(hit.memory.text for hit in hits) == sorted(
            f"a memory stored {when}" for when in ("at midnight", "at noon", "just before the day ends")
        )
        # A full date-time keeps its exact meaning.
        hits = service.retrieve("a memory stored", k=10, until="2026-12-01T00:00:00")
        assert {hit.memory.text for hit in hits} == {"a memory stored at midnight", "a memory stored the day before"}

        with pytest.raises(InvalidInput) as info:
            service.retrieve("a memory stored", since="2026-12-02", until="2026-12-01")
        assert "since '2026-12-02' is later than until '2026-12-01'" in str(info.value)
        # list_memories (and the web page) filter the same way.
        assert service.list(since="2026-12-01", until="2026-12-01").total == 3
        with pytest.raises(InvalidInput, match="is later than until"):
            service.list(since="2026-12-02", until="2026-12-01")

        async with Client(build_server(service, service.settings)) as client:
            result = await client.call_tool(
                "retrieve_memory", {"query": "memory", "since": "2026-12-02", "until": "2026-12-01"}
            )
            assert result.is_error and "is later than until" in result.content[0].text
            assert "\n" not in result.content[0].text
