"""Issue 10.12: read-only commands (`ltmc stats`, `ltmc serve --read-only`) work on read-only media and never
create or write anything; a missing store is an error naming the path, not a new empty store."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mcp import Client

from tests.helpers import ServerProcess, child_env
from tests.ops_helpers import MEMORIES, build_store, corrupt_snapshot, listing, ltmc, one_line_error

StartServer = Callable[..., ServerProcess]


@pytest.mark.anyio
async def test_stats_and_a_read_only_server_on_a_read_only_mount(
    small_disk: Path, start_server: StartServer, tmp_path: Path
) -> None:
    data = small_disk / "data"
    build_store(data)
    corrupt_snapshot(data)  # the hard case: the index must be rebuilt, and cannot be saved
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    before = listing(data)

    result = ltmc("stats", "--json", data_dir=data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["memories"] == stats["index"]["vectors"] == len(MEMORIES)

    server = start_server("http", "--read-only", env=child_env(data))
    assert server.wait_healthy()["memories"] == len(MEMORIES)
    async with Client(f"{server.base_url}/mcp") as client:
        text = MEMORIES[2][0]
        found = await client.call_tool("retrieve_memory", {"query": text, "k": 1})
        assert not found.is_error and found.structured_content["results"][0]["text"] == text
        refused = await client.call_tool("store_memory", {"text": "cannot be stored"})
        assert refused.is_error
    assert listing(data) == before
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("state", ["no directory", "empty directory"])
def test_read_only_commands_never_create_a_store(tmp_path: Path, start_server: StartServer, state: str) -> None:
    typo = tmp_path / "dta"
    if state == "empty directory":
        typo.mkdir()
    error = one_line_error(ltmc("stats", data_dir=typo, cwd=tmp_path))
    assert str(typo) in error and "never creates" in error, error
    server = start_server("stdio", "--read-only", env=child_env(typo), wait=False)
    assert server.wait() == 1
    assert str(typo) in server.log() and "Traceback" not in server.log()
    assert (typo.exists(), list(typo.iterdir()) if typo.exists() else []) == (state == "empty directory", [])


def test_stats_changes_nothing_even_with_a_corrupt_snapshot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    corrupt_snapshot(data)
    before = listing(data)
    result = ltmc("stats", "--json", data_dir=data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["index"]["state"] == "rebuilt"
    assert listing(data) == before  # not moved aside, not saved: that is doctor --fix's or a server's job
