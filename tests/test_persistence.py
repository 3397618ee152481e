"""Persistence across real processes: accumulation, recovery from bad snapshots, batched saves, replay."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ltms.service import MemoryService
from tests.helpers import child_env, hash_settings, run_python

STORE_ONE_AND_CHECK = """
import logging, sys
from ltms.logs import configure_logging
configure_logging("INFO")
from ltms.config import Settings
from ltms.service import MemoryService
n = int(sys.argv[1]) if len(sys.argv) > 1 else int(__import__("os").environ["N"])
with MemoryService(Settings.load()) as service:
    print("before", service.storage.index.ntotal)
    service.store(f"progressive memory number {n}")
    for i in range(n + 1):
        hits = service.retrieve(f"progressive memory number {i}", k=1)
        assert hits and hits[0].memory.text == f"progressive memory number {i}", (i, hits)
    print("after", service.storage.index.ntotal)
"""


def test_vectors_accumulate_across_restarts(tmp_path: Path) -> None:
    """0 -> 1 -> 2 -> 3 -> 4 -> 5, one fresh process each, every restart a load and not a recreation."""
    data = tmp_path / "data"
    for n in range(5):
        result = run_python(STORE_ONE_AND_CHECK, child_env(data, N=str(n)), cwd=tmp_path)
        assert result.stdout.split() == ["before", str(n), "after", str(n + 1)]
        if n == 0:
            assert "no index snapshot" in result.stderr
        else:
            assert "loaded index snapshot" in result.stderr, result.stderr
            assert "building the index" not in result.stderr and "cannot be used" not in result.stderr
        manifest = json.loads((data / "faiss_index.manifest.json").read_text())
        assert manifest["count"] == n + 1


def corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif how == "flipped":
        data[-100] ^= 0x55
        path.write_bytes(bytes(data))
    elif how == "garbage":
        path.write_bytes(b"this is not a faiss index")
    elif how == "emptied":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "flipped", "garbage", "emptied"])
def test_a_bad_snapshot_is_moved_aside_and_rebuilt_with_nothing_lost(tmp_path: Path, how: str, caplog) -> None:
    data = tmp_path / "data"
    settings = hash_settings(data)
    with MemoryService(settings) as service:
        for i in range(25):
            service.store(f"fact number {i} about the system")
    corrupt(data / "faiss_index", how)
    with MemoryService(settings) as service:
        assert service.index_state == "rebuilt"
        assert service.storage.index.ntotal == 25
        best = service.retrieve("fact number 7 about the system", k=1)[0]
        assert best.memory.text == "fact number 7 about the system"
    aside = sorted(p.name for p in data.iterdir() if ".bad-" in p.name)
    assert len(aside) == 2, aside  # the index and its manifest, kept, never deleted
    assert any("moved aside" in r.getMessage() and str(data / "faiss_index") in r.getMessage() for r in caplog.records)
    with MemoryService(settings) as service:
        assert service.index_state == "loaded"


def test_a_snapshot_built_with_another_model_is_rebuilt(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = hash_settings(data)
    with MemoryService(settings) as service:
        service.store("one memory")
    manifest_path = data / "faiss_index.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"] = "some-other-model"
    manifest_path.write_text(json.dumps(manifest))
    with MemoryService(settings) as service:
        assert service.index_state == "rebuilt"
        assert service.storage.index.ntotal == 1


def saves_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("saved index snapshot")]


def test_saves_are_batched_not_one_rewrite_per_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Below `LTMC_SNAPSHOT_EVERY` changes nothing is saved however long the saver runs; at it, one save of all."""
    caplog.set_level("INFO", logger="ltms.storage.embedded")
    data = tmp_path / "data"
    settings = hash_settings(data, LTMC_SNAPSHOT_EVERY="30", LTMC_SNAPSHOT_QUIET_SECONDS="3600")
    with MemoryService(settings) as service:
        first = (data / "faiss_index").stat().st_mtime_ns  # the empty snapshot of a new store
        for i in range(29):
            service.store(f"batched memory {i}")
        assert (data / "faiss_index").stat().st_mtime_ns == first  # no store wrote the snapshot itself
        service.store("batched memory 29")
        assert service.wait_until_saved(timeout=60), "the saver never saved at 30 changes"
        assert json.loads((data / "faiss_index.manifest.json").read_text())["count"] == 30
    # The saver ran every 0.25 s while the 30 stores went in: had it saved below the threshold, it would show here.
    saves = saves_logged(caplog)
    assert len(saves) == 2 and " 0 vectors" in saves[0] and " 30 vectors" in saves[1], saves


def test_the_last_changes_are_saved_at_close(tmp_path: Path) -> None:
    data = tmp_path / "data"
    service = MemoryService(hash_settings(data, LTMC_SNAPSHOT_EVERY="1000", LTMC_SNAPSHOT_QUIET_SECONDS="3600"))
    for i in range(50):
        service.store(f"batched memory {i}")
    assert service.stats()["index"]["unsaved_changes"] == 50
    service.close()  # clean shutdown saves
    assert json.loads((data / "faiss_index.manifest.json").read_text())["count"] == 50


def test_background_saver_writes_after_n_changes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = hash_settings(data, LTMC_SNAPSHOT_EVERY="10", LTMC_SNAPSHOT_QUIET_SECONDS="3600")
    with MemoryService(settings) as service:
        for i in range(10):
            service.store(f"memory {i}")
        assert service.wait_until_saved(timeout=60), "the saver never saved at 10 changes"
        assert service.stats()["index"]["unsaved_changes"] == 0
        assert json.loads((data / "faiss_index.manifest.json").read_text())["count"] == 10


def test_background_saver_writes_after_a_quiet_period(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = hash_settings(data, LTMC_SNAPSHOT_EVERY="1000", LTMC_SNAPSHOT_QUIET_SECONDS="0.2")
    with MemoryService(settings) as service:
        for i in range(3):
            service.store(f"quiet memory {i}")
        assert service.wait_until_saved(timeout=60), "the saver never saved after the quiet period"
        assert json.loads((data / "faiss_index.manifest.json").read_text())["count"] == 3


def test_changes_newer_than_the_snapshot_are_replayed(tmp_path: Path) -> None:
    """A process that dies without saving leaves a stale snapshot; the next start replays the change log."""
    data = tmp_path / "data"
    env = child_env(data, LTMC_SNAPSHOT_EVERY="100000", LTMC_SNAPSHOT_QUIET_SECONDS="3600")
    run_python(
        "import os\nfrom ltms.config import Settings\nfrom ltms.service import MemoryService\n"
        "s = MemoryService(Settings.load())\n"
        "for i in range(12): s.store(f'unsaved memory {i}')\n"
        "s.delete(3)\n"
        "os._exit(0)  # no clean shutdown: the snapshot is not saved\n",
        env,
    )
    assert json.loads((data / "faiss_index.manifest.json").read_text())["count"] == 0
    with MemoryService(hash_settings(data)) as service:
        assert service.index_state == "loaded"
        assert service.storage.index.ntotal == 11
        texts = {h.memory.text for h in service.retrieve("unsaved memory", k=20)}
        assert texts == {f"unsaved memory {i}" for i in range(12)} - {"unsaved memory 2"}


def test_index_file_deleted_while_running_is_rewritten(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with MemoryService(hash_settings(data)) as service:
        service.store("survives the deletion")
        os.remove(data / "faiss_index")
        service.store("stored after the deletion")
        assert service.save_snapshot()
    with MemoryService(hash_settings(data)) as service:
        assert service.index_state == "loaded"
        assert service.storage.index.ntotal == 2
