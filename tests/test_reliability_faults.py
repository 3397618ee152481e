"""Faults under a running MCP server: the index snapshot replaced or deleted while it serves, the data directory
deleted while it serves, the disk filling up under store_memory. Each gives a clear error or recovers, and loses
nothing that was acknowledged. (Service-level disk full, read-only mount, permission denied and failing fsync
are in test_faults.py.)"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from support import hash_settings
from test_server_support import REPO, ServerProcess, child_env

from ltms.errors import StorageError
from ltms.service import MemoryService

sys.path.insert(0, str(REPO / "bench" / "reliability"))
from reliability_kit import Ledger, ToolFailed, call, http_client, store_acked, unique_text, verify

pytestmark = pytest.mark.anyio
StartServer = Callable[..., ServerProcess]
QUICK_SAVES = {"LTMC_SNAPSHOT_QUIET_SECONDS": "0.1"}


def health(server: ServerProcess) -> dict:
    response = httpx2.get(f"{server.base_url}/health", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_saved(server: ServerProcess, through_change: int) -> None:
    """Until the snapshot on disk includes change `through_change` (bounded)."""
    deadline = time.monotonic() + 30
    while (health(server)["index"]["snapshot_last_change"] or 0) < through_change:
        assert time.monotonic() < deadline, health(server)
        time.sleep(0.05)


def foreign_snapshot(tmp_path: Path, count: int) -> Path:
    """Another data directory with as many memories (other texts) as ours: its snapshot matches ours in count,
    model, dimension and change number; only its vectors differ."""
    other = tmp_path / "other"
    with MemoryService(hash_settings(other), background_saves=False) as service:
        for i in range(count):
            service.store(f"an unrelated note number {i} about {'xyz' * (i + 1)} and nothing else")
    return other


# -- the index snapshot replaced or deleted while the server runs -----------------------------------------------------


@pytest.mark.parametrize("then", ["store, then stop", "kill"])
@pytest.mark.parametrize("replacement", ["garbage", "another data dir's snapshot", "deleted"])
async def test_snapshot_replaced_while_serving_loses_nothing(
    start_server: StartServer, data_dir: Path, tmp_path: Path, replacement: str, then: str
) -> None:
    server = start_server("http", env=child_env(data_dir, **QUICK_SAVES))
    ledger = Ledger()
    async with http_client(f"{server.base_url}/mcp") as client:
        for i in range(5):
            await store_acked(client, ledger, unique_text("before", i))
        wait_saved(server, 5)

        index = data_dir / "faiss_index"
        if replacement == "garbage":
            index.write_bytes(b"this is not a faiss index" * 100)
        elif replacement == "deleted":
            index.unlink()
        else:
            other = foreign_snapshot(tmp_path, 5)
            for name in ("faiss_index", "faiss_index.manifest.json"):
                shutil.copyfile(other / name, data_dir / name)
        # The running server still answers from its in-memory index.
        seen = await verify(client, ledger.acked)
        assert seen.lost == 0 and seen.memories == seen.vectors == 5

        if then == "store, then stop":
            await store_acked(client, ledger, unique_text("after", 0))
            wait_saved(server, 6)
    if then == "kill":
        server.proc.kill()
    else:
        server.signal(signal.SIGTERM)
    server.wait()

    restarted = start_server("http", env=child_env(data_dir, **QUICK_SAVES))
    state = restarted.wait_healthy()["index"]["state"]
    async with http_client(f"{restarted.base_url}/mcp") as client:
        seen = await verify(client, ledger.acked)
        assert (seen.missing_get, seen.missing_retrieve) == ([], []), f"lost after restart (index {state})"
        assert seen.memories == seen.vectors == len(ledger.acked)
        # Each memory is the top hit for its own text: the index holds this directory's vectors.
        for memory_id, text in ledger.acked.items():
            top = (await call(client, "retrieve_memory", {"query": text, "k": 1}))["results"][0]
            assert top["id"] == memory_id and top["score"] > 0.99, (state, memory_id, top)
    moved = sorted(p.name for p in data_dir.iterdir() if ".bad-" in p.name)
    if then == "kill":  # nothing new was saved over the bad file: the restart moved it aside, never deleted it
        assert state == "rebuilt"
        assert any(name.startswith("faiss_index.manifest.json.bad-") for name in moved), moved
        if replacement != "deleted":
            assert any(name.startswith("faiss_index.bad-") for name in moved), moved
    else:  # the next save replaced the bad file with a good snapshot
        assert state == "loaded"
    assert "Traceback" not in server.log() + restarted.log()


def test_a_snapshot_from_another_data_directory_is_never_loaded(tmp_path: Path) -> None:
    """Service level, the case above in miniature: same count, same model, same change number, other vectors."""
    ours = tmp_path / "ours"
    with MemoryService(hash_settings(ours), background_saves=False) as service:
        ids = {service.store(f"our own memory number {i}").id: f"our own memory number {i}" for i in range(4)}
    other = foreign_snapshot(tmp_path, 4)
    for name in ("faiss_index", "faiss_index.manifest.json"):
        shutil.copyfile(other / name, ours / name)
    with MemoryService(hash_settings(ours), background_saves=False) as service:
        assert service.index_state == "rebuilt"
        for memory_id, text in ids.items():
            assert service.retrieve(text, k=1)[0].memory.id == memory_id
    assert len(list(ours.glob("faiss_index.bad-*"))) == 1  # moved aside, not deleted


def test_writes_to_a_deleted_database_are_refused(tmp_path: Path) -> None:
    """Service level: SQLite itself would keep writing into the unlinked file and report success."""
    data = tmp_path / "data"
    with MemoryService(hash_settings(data), background_saves=False) as service:
        kept = service.store("stored before the directory went away")
        shutil.rmtree(data)
        with pytest.raises(StorageError, match="deleted or replaced"):
            service.store("would be acknowledged and then lost")
        data.mkdir()
        (data / "ltmc.sqlite3").write_bytes(b"")  # replaced by another file: refused too
        with pytest.raises(StorageError, match="deleted or replaced"):
            service.delete(kept.id)
        assert service.get(kept.id).text == "stored before the directory went away"  # reads still work


# -- the data directory deleted while the server runs --------------------------------------------------------------


async def test_data_directory_deleted_while_serving_refuses_writes_naming_the_path(
    start_server: StartServer, data_dir: Path
) -> None:
    server = start_server("http", env=child_env(data_dir, **QUICK_SAVES))
    ledger = Ledger()
    async with http_client(f"{server.base_url}/mcp") as client:
        await store_acked(client, ledger, unique_text("before", 0))
        shutil.rmtree(data_dir)
        # A store now would go into a file nobody can reach again: it must be refused, not acknowledged.
        with pytest.raises(ToolFailed) as refused:
            await store_acked(client, ledger, unique_text("after", 0))
        message = str(refused.value)
        assert str(data_dir / "ltmc.sqlite3") in message and "deleted" in message, message
        assert len(ledger.acked) == 1
        # The server stays up and says what is wrong.
        assert health(server)["status"] in ("ok", "degraded")
        assert (await call(client, "memory_stats", {}))["memories"] == 1
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()


# -- disk full through the MCP server --------------------------------------------------------------------------------


async def test_disk_full_under_store_memory_is_a_clear_error_and_the_server_recovers(
    start_server: StartServer, small_disk: Path
) -> None:
    data = small_disk / "data"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024))
    env = child_env(data, LTMC_SNAPSHOT_QUIET_SECONDS="3600")
    server = start_server("http", env=env)
    ledger = Ledger()
    failure = None
    async with http_client(f"{server.base_url}/mcp") as client:
        for i in range(3000):  # about 3 KB a memory (text + embedding): ~1 MiB fills in a few hundred
            try:
                await store_acked(client, ledger, unique_text("filling", i) + " " + "x" * 1500)
            except ToolFailed as exc:
                failure = str(exc)
                break
        assert failure is not None, "the disk never filled up"
        assert str(data / "ltmc.sqlite3") in failure and "full" in failure.lower(), failure
        assert "internal server error" not in failure

        # The server stays up, answers reads, and the refused store left nothing behind.
        assert health(server)["memories"] == len(ledger.acked)
        stats = await call(client, "memory_stats", {})
        assert stats["memories"] == stats["index"]["vectors"] == len(ledger.acked)

        filler.unlink()  # space comes back: the same server carries on
        await store_acked(client, ledger, unique_text("after space came back", 0))
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.log()  # the final snapshot save succeeds now

    restarted = start_server("http", env=env)
    assert restarted.wait_healthy()["index"]["state"] == "loaded"
    async with http_client(f"{restarted.base_url}/mcp") as client:
        seen = await verify(client, ledger.acked)
    assert (seen.missing_get, seen.missing_retrieve) == ([], [])
    assert seen.memories == seen.vectors == len(ledger.acked)
    assert "Traceback" not in server.log()
