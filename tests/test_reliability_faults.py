"""Faults under a running memory: the index snapshot replaced or deleted while it serves, the data directory deleted
while it serves, the disk filling up under store_memory. Each gives a clear error or recovers, and loses nothing
that was acknowledged. One case runs through a real server process killed with SIGKILL; the others run the same
service and tools in process, through the SDK's in-memory client where the point is the tool's answer.
(Service-level disk full, read-only mount, permission denied and failing fsync are in test_faults.py.)"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import Client

from bench.reliability.reliability_kit import Ledger, ToolFailed, call, http_client, store_acked, unique_text, verify
from ltms.errors import StorageError
from ltms.server.tools import build_server
from ltms.service import MemoryService
from tests.helpers import ServerProcess, child_env, hash_settings, health, wait_until

pytestmark = pytest.mark.anyio
StartServer = Callable[..., ServerProcess]
QUICK_SAVES = {"LTMC_SNAPSHOT_QUIET_SECONDS": "0.1"}
REPLACEMENTS = ["garbage", "another data dir's snapshot", "deleted"]


def foreign_snapshot(tmp_path: Path, count: int) -> Path:
    """Another data directory with as many memories (other texts) as ours: its snapshot matches ours in count,
    model, dimension and change number; only its vectors differ."""
    other = tmp_path / "other"
    with MemoryService(hash_settings(other), background_saves=False) as service:
        for i in range(count):
            service.store(f"an unrelated note number {i} about {'xyz' * (i + 1)} and nothing else")
    return other


def replace_snapshot(data_dir: Path, tmp_path: Path, replacement: str, count: int) -> None:
    index = data_dir / "faiss_index"
    if replacement == "garbage":
        index.write_bytes(b"this is not a faiss index" * 100)
    elif replacement == "deleted":
        index.unlink()
    else:
        other = foreign_snapshot(tmp_path, count)
        for name in ("faiss_index", "faiss_index.manifest.json"):
            shutil.copyfile(other / name, data_dir / name)


def moved_aside(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir() if ".bad-" in p.name)


@asynccontextmanager
async def tools(service: MemoryService) -> AsyncIterator[Client]:
    """The server's tools over the SDK's in-memory transport."""
    async with Client(build_server(service, service.settings)) as client:
        yield client


# -- the index snapshot replaced or deleted while serving ------------------------------------------------------------


@pytest.mark.parametrize("then", ["store, then stop", "kill"])
@pytest.mark.parametrize("replacement", REPLACEMENTS)
def test_snapshot_replaced_while_serving_loses_nothing(
    data_dir: Path, tmp_path: Path, replacement: str, then: str
) -> None:
    service = MemoryService(hash_settings(data_dir), background_saves=False)
    acked = {service.store(text).id: text for text in (unique_text("before", i) for i in range(5))}
    service.save_snapshot()
    replace_snapshot(data_dir, tmp_path, replacement, 5)
    for memory_id, text in acked.items():  # the running service still answers from its in-memory index
        assert service.get(memory_id).text == text
        assert service.retrieve(text, k=1)[0].memory.id == memory_id
    if then == "kill":
        service.storage.db.close()  # the process is gone: no final save over the bad file
    else:
        text = unique_text("after", 0)
        acked[service.store(text).id] = text
        service.close()  # the final save replaces the bad file with a good snapshot

    with MemoryService(hash_settings(data_dir), background_saves=False) as restarted:
        state = restarted.index_state
        assert restarted.storage.db.count() == restarted.storage.index.ntotal == len(acked)
        # Each memory is the top hit for its own text: the index holds this directory's vectors.
        for memory_id, text in acked.items():
            assert restarted.get(memory_id).text == text
            top = restarted.retrieve(text, k=1)[0]
            assert top.memory.id == memory_id and top.score > 0.99, (state, memory_id, top)
    if then == "kill":  # the restart moved the bad files aside, never deleted them, and rebuilt
        assert state == "rebuilt"
        assert any(name.startswith("faiss_index.manifest.json.bad-") for name in moved_aside(data_dir))
        if replacement != "deleted":
            assert any(name.startswith("faiss_index.bad-") for name in moved_aside(data_dir))
    else:
        assert state == "loaded"


async def test_snapshot_garbled_under_a_real_server_then_sigkill_loses_nothing(
    start_server: StartServer, data_dir: Path
) -> None:
    """The case above through a real server process and MCP: garbage over the snapshot, then SIGKILL."""
    server = start_server("http", env=child_env(data_dir, **QUICK_SAVES))
    ledger = Ledger()
    async with http_client(server.mcp_url) as client:
        for i in range(5):
            await store_acked(client, ledger, unique_text("before", i))
        wait_until(lambda: (health(server.base_url) or {}).get("index", {}).get("snapshot_last_change") == 5, "save")
        (data_dir / "faiss_index").write_bytes(b"this is not a faiss index" * 100)
        seen = await verify(client, ledger.acked)
        assert seen.lost == 0 and seen.memories == seen.vectors == 5
    server.kill()

    restarted = start_server("http", env=child_env(data_dir, **QUICK_SAVES))
    assert restarted.wait_healthy()["index"]["state"] == "rebuilt"
    async with http_client(restarted.mcp_url) as client:
        seen = await verify(client, ledger.acked)
    assert (seen.missing_get, seen.missing_retrieve) == ([], [])
    assert seen.memories == seen.vectors == len(ledger.acked)
    assert any(name.startswith("faiss_index.bad-") for name in moved_aside(data_dir))
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


# -- the data directory deleted while serving --------------------------------------------------------------------


async def test_data_directory_deleted_while_serving_refuses_writes_naming_the_path(data_dir: Path) -> None:
    with MemoryService(hash_settings(data_dir, **QUICK_SAVES)) as service:
        async with tools(service) as client:
            ledger = Ledger()
            await store_acked(client, ledger, unique_text("before", 0))
            shutil.rmtree(data_dir)
            # A store now would go into a file nobody can reach again: it must be refused, not acknowledged.
            with pytest.raises(ToolFailed) as refused:
                await store_acked(client, ledger, unique_text("after", 0))
            message = str(refused.value)
            assert str(data_dir / "ltmc.sqlite3") in message and "deleted" in message, message
            assert len(ledger.acked) == 1
            assert (await call(client, "memory_stats", {}))["memories"] == 1  # still answering


# -- disk full under store_memory ------------------------------------------------------------------------------------


async def test_disk_full_under_store_memory_is_a_clear_error_and_the_server_recovers(small_disk: Path) -> None:
    data = small_disk / "data"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024))
    ledger = Ledger()
    failure = None
    with MemoryService(hash_settings(data, LTMC_SNAPSHOT_QUIET_SECONDS="3600")) as service:
        async with tools(service) as client:
            for i in range(3000):  # about 3 KB a memory (text + embedding): ~1 MiB fills in a few hundred
                try:
                    await store_acked(client, ledger, unique_text("filling", i) + " " + "x" * 1500)
                except ToolFailed as exc:
                    failure = str(exc)
                    break
            assert failure is not None, "the disk never filled up"
            assert str(data / "ltmc.sqlite3") in failure and "full" in failure.lower(), failure
            assert "internal server error" not in failure

            # The tools still answer, and the refused store left nothing behind.
            stats = await call(client, "memory_stats", {})
            assert stats["memories"] == stats["index"]["vectors"] == len(ledger.acked)

            filler.unlink()  # space comes back: the same service carries on
            await store_acked(client, ledger, unique_text("after space came back", 0))
    # closed: the final snapshot save succeeded now
    with MemoryService(hash_settings(data)) as restarted:
        assert restarted.index_state == "loaded"
        async with tools(restarted) as client:
            seen = await verify(client, ledger.acked)
    assert (seen.missing_get, seen.missing_retrieve) == ([], [])
    assert seen.memories == seen.vectors == len(ledger.acked)
