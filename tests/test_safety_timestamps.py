"""Issue 9.2: timestamps that no date can show (inf, 1e20, NaN, year 0 or 10000).

They are refused where they enter (import, the service), every read path still works on a row that holds one
(written by an older version or another tool), `ltmc doctor` reports such rows and `--fix` moves them whole into
the quarantine table (never deletes them).
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
from mcp import Client

from ltms.errors import InvalidInput
from ltms.server.tools import build_server
from ltms.service import MemoryService
from tests.helpers import hash_settings
from tests.ops_helpers import MEMORIES, build_store, codes, doctor_json, ltmc, one_line_error

GOOD = json.dumps({"text": "a good line", "created_at": "2024-05-01T10:00:00Z"})
BAD_CREATED_AT = ["Infinity", "-Infinity", "NaN", "1e20", "-1e20", '"10000-01-01T00:00:00"', '"0000-01-01"', "1" * 400]

# Values written straight into the database, as an older version or another tool could have left them.
BROKEN = {
    1: ("created_at", "9e999"),  # SQLite reads this as +Infinity
    2: ("created_at", "1e20"),
    3: ("updated_at", "'NaN'"),  # text in a REAL column: not a number at all
    4: ("tags", "'not json'"),
}


def break_rows(data: Path) -> None:
    with sqlite3.connect(data / "ltmc.sqlite3") as conn:
        for memory_id, (column, value) in BROKEN.items():
            conn.execute(f"UPDATE memories SET {column} = {value} WHERE id = ?", (memory_id,))


@pytest.mark.parametrize("created_at", BAD_CREATED_AT, ids=lambda value: value[:12])
def test_import_refuses_a_time_no_date_can_show(tmp_path: Path, created_at: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(GOOD + "\n" + '{"text": "a bad line", "created_at": ' + created_at + "}\n")
    data = tmp_path / "data"
    error = one_line_error(ltmc("import", str(source), data_dir=data, cwd=tmp_path))
    assert "line 2: created_at" in error and "nothing was imported" in error, error
    if not data.exists():
        return
    with MemoryService(hash_settings(data), background_saves=False) as service:
        assert service.stats()["memories"] == 0


def test_the_service_refuses_bad_times_and_keeps_the_epoch(tmp_path: Path) -> None:
    with MemoryService(hash_settings(tmp_path / "data"), background_saves=False) as service:
        for bad in (math.inf, -math.inf, math.nan, 1e20, 10**400):
            with pytest.raises(InvalidInput, match="years 1 to 9999"):
                service.store_many([("text", None, None, None)], timestamps=[(bad, None)])
            with pytest.raises(InvalidInput, match="since"):
                service.retrieve("text", since=bad)
        assert service.stats()["memories"] == 0
        # 0.0 is 1970-01-01, not "now" (it used to be replaced by the current time).
        memory_id = service.store_many([("at the epoch", None, None, None)], timestamps=[(0.0, 0.0)])[0].id
        assert service.get(memory_id).to_dict()["created_at"] == "1970-01-01T00:00:00.000Z"


@pytest.mark.anyio
async def test_every_read_path_works_on_rows_with_unreadable_values(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    break_rows(data)
    with MemoryService(hash_settings(data), background_saves=False) as service:
        async with Client(build_server(service, service.settings)) as client:
            listed = await client.call_tool("list_memories", {"limit": 100})
            assert not listed.is_error, listed.content
            items = {item["id"]: item for item in listed.structured_content["items"]}
            assert len(items) == len(MEMORIES)
            assert items[1]["created_at"] == "invalid time inf" and items[2]["created_at"] == "invalid time 1e+20"
            assert items[3]["updated_at"] == "invalid time nan" and items[4]["tags"] == []
            for memory_id, (text, *_rest) in enumerate(MEMORIES[:4], 1):
                got = await client.call_tool("get_memory", {"id": memory_id})
                assert not got.is_error and got.structured_content["text"] == text, got.content
                found = await client.call_tool("retrieve_memory", {"query": text, "k": 1})
                assert not found.is_error and found.structured_content["results"][0]["id"] == memory_id
            since = await client.call_tool("retrieve_memory", {"query": "cat", "since": "2000-01-01"})
            assert not since.is_error, since.content

    # Export keeps every memory, writes null for a time it cannot show, says so, and the file imports again.
    out = tmp_path / "out.jsonl"
    result = ltmc("export", str(out), data_dir=data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "4 memories have values no date or JSON can show (ids 1, 2, 3, 4)" in result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(MEMORIES) and lines[0]["created_at"] is None and lines[2]["updated_at"] is None
    result = ltmc("import", str(out), data_dir=tmp_path / "copy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"imported {len(MEMORIES)}," in result.stdout


def test_doctor_reports_unreadable_rows_and_fix_quarantines_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    break_rows(data)
    status, report = doctor_json(data, tmp_path)
    assert status == 1 and codes(report) == ["unreadable_rows"], report["problems"]
    message = report["problems"][0]["message"]
    assert "4 memories" in message and "id 1: created_at inf" in message and "id 4: tags 'not json'" in message

    status, report = doctor_json(data, tmp_path, "--fix")
    assert status == 0, report
    assert [f["code"] for f in report["fixed"]] == ["unreadable_rows"] and report["fixed"][0]["ok"]
    with sqlite3.connect(data / "ltmc.sqlite3") as conn:
        kept = conn.execute("SELECT id, created_at, updated_at, tags, text, reason FROM quarantine ORDER BY id")
        rows = kept.fetchall()
        remaining = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    assert [row[0] for row in rows] == [1, 2, 3, 4] and remaining == len(MEMORIES) - 4  # moved, not deleted
    assert rows[0][1] == math.inf and rows[1][1] == 1e20 and rows[2][2] == "NaN" and rows[3][3] == "not json"
    assert [row[4] for row in rows] == [m[0] for m in MEMORIES[:4]]
    assert "created_at inf" in rows[0][5]

    status, report = doctor_json(data, tmp_path)
    assert status == 0, report["problems"]
    with MemoryService(hash_settings(data), background_saves=False) as service:
        assert service.storage.index.ntotal == service.stats()["memories"] == len(MEMORIES) - 4
        assert {hit.memory.id for hit in service.retrieve(MEMORIES[0][0], k=10)} == {5, 6}
