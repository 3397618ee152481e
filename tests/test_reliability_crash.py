"""Crash at the server level: a real `ltmc serve --transport http` receiving store_memory calls in a loop is
SIGKILLed at a random moment; after a restart every store the client saw acknowledged is there, through MCP.
And a kill at the one moment a snapshot save is torn (new index file, old manifest), made deterministic.

The service-level kill -9 trials are in test_concurrency_and_crash.py; the long runs (200 trials) are
bench/reliability/crash_trials.py, run here under `pytest -m slow`.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from bench.reliability.reliability_kit import Ledger, http_client, run_script, store_until_killed, verify
from ltms.service import MemoryService
from ltms.vector_store import faiss_store
from tests.helpers import REPO, ServerProcess, child_env, hash_settings

pytestmark = pytest.mark.anyio
StartServer = Callable[..., ServerProcess]

# Snapshots every few stores and after 0.1 s of quiet: kills land in the middle of snapshot saves too.
CRASH_ENV = {"LTMC_SNAPSHOT_EVERY": "20", "LTMC_SNAPSHOT_QUIET_SECONDS": "0.1"}


async def test_sigkill_of_an_http_server_mid_stores_loses_no_acknowledged_memory(
    start_server: StartServer, data_dir: Path
) -> None:
    env = child_env(data_dir, **CRASH_ENV)
    rng = random.Random(5)
    ledger = Ledger()
    server = start_server("http", env=env)
    for trial in range(1):  # 30 trials: pytest -m slow
        before = len(ledger.acked)
        # Killed after 1 to 60 acknowledged stores, while the next ones are in flight (snapshots every 20).
        acked = await store_until_killed(
            server.mcp_url, ledger, f"crash{trial}", server.proc.kill, after_acks=rng.randint(1, 60)
        )
        assert server.proc.wait(10) == -9
        assert acked > 0, "nothing was acknowledged before the kill"

        server = start_server("http", env=env)  # the restart: loads the snapshot or rebuilds it
        health = server.wait_healthy()
        assert health["index"]["state"] in ("loaded", "rebuilt", "created")
        async with http_client(server.mcp_url) as client:
            seen = await verify(client, ledger.acked)
        assert seen.checked == len(ledger.acked) == before + acked
        assert (seen.missing_get, seen.missing_retrieve) == ([], []), f"trial {trial}: acknowledged stores lost"
        assert seen.memories == seen.vectors, "the index and the database disagree after the restart"
        # At most the one store in flight at the kill may have committed without its answer reaching the client.
        assert 0 <= seen.memories - len(ledger.acked) <= trial + 1
    assert "Traceback" not in server.log()


class Killed(BaseException):
    """Stands for SIGKILL at one exact point: nothing after it runs (no except, no finally that saves)."""


def test_a_kill_between_writing_the_index_and_its_manifest_leaves_a_loadable_snapshot(
    tmp_path: Path, monkeypatch
) -> None:
    """A snapshot is two files, each replaced atomically. Killed between the two replacements, the directory holds
    the new index beside the old manifest: that must still load (seen in the 200-trial runs as 'rebuilt')."""
    data = tmp_path / "data"
    service = MemoryService(hash_settings(data), background_saves=False)
    texts = {service.store(f"before the torn save {i}").id: f"before the torn save {i}" for i in range(5)}
    service.save_snapshot()
    texts |= {service.store(f"in the torn save {i}").id: f"in the torn save {i}" for i in range(3)}
    real, written = faiss_store.atomic_write_bytes, []

    def dies_before_the_final_manifest(path: Path, payload: bytes | memoryview) -> None:
        if path == service.storage.snapshots.manifest_path and service.storage.snapshots.index_path in written:
            raise Killed
        real(path, payload)
        written.append(path)

    real_writer = faiss_store.atomic_writer

    @contextlib.contextmanager
    def recording_writer(path: Path) -> Iterator[BinaryIO]:  # the index file is streamed through this one
        with real_writer(path) as handle:
            yield handle
        written.append(path)

    monkeypatch.setattr(faiss_store, "atomic_write_bytes", dies_before_the_final_manifest)
    monkeypatch.setattr(faiss_store, "atomic_writer", recording_writer)
    with pytest.raises(Killed):
        service.save_snapshot()
    monkeypatch.undo()
    service.storage.db.close()  # the process is gone: no final save

    with MemoryService(hash_settings(data), background_saves=False) as restarted:
        assert restarted.index_state == "loaded"
        assert restarted.storage.index.ntotal == restarted.storage.db.count() == len(texts)
        for memory_id, text in texts.items():
            assert restarted.retrieve(text, k=1)[0].memory.id == memory_id
    assert not list(data.glob("*.bad-*"))


@pytest.mark.slow
def test_200_service_level_kill_9_trials_lose_nothing(tmp_path: Path) -> None:
    """`pytest -m slow`: the long run behind the README figure (several minutes on 2 cores)."""
    out = tmp_path / "crash.json"
    result = run_script(
        [
            sys.executable,
            str(REPO / "bench" / "reliability" / "crash_trials.py"),
            "--trials",
            "200",
            "--level",
            "service",
            "--json",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["trials"] == 200 and figures["lost"] == 0 and figures["acknowledged"] > 0


@pytest.mark.slow
def test_30_server_level_kill_9_trials_lose_nothing(tmp_path: Path) -> None:
    out = tmp_path / "crash.json"
    result = run_script(
        [
            sys.executable,
            str(REPO / "bench" / "reliability" / "crash_trials.py"),
            "--trials",
            "30",
            "--level",
            "server",
            "--json",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["trials"] == 30 and figures["lost"] == 0 and figures["acknowledged"] > 0
