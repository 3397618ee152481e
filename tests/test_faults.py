"""Faults: disk full, read-only and forbidden data directories, failing fsync. Each gives a clear error naming
the path and the reason, and loses nothing that was acknowledged."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ltms import fsutil
from ltms.errors import StorageError
from ltms.service import MemoryService
from tests.helpers import child_env, hash_settings


def test_disk_full_gives_a_clear_error_and_loses_nothing_acknowledged(small_disk: Path) -> None:
    data = small_disk / "data"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024))
    service = MemoryService(hash_settings(data, LTMC_SNAPSHOT_QUIET_SECONDS="3600"))
    acknowledged: dict[int, str] = {}
    failure: StorageError | None = None
    for i in range(5000):
        text = f"memory {i} " + "x" * 1500
        try:
            acknowledged[service.store(text).id] = text
        except StorageError as exc:
            failure = exc
            break
    assert failure is not None, "the disk never filled up"
    assert str(data / "ltmc.sqlite3") in str(failure)
    assert "full" in str(failure).lower()
    with pytest.raises(StorageError) as snapshot_failure:
        service.save_snapshot()
    assert str(data) in str(snapshot_failure.value)
    assert "No space left on device" in str(snapshot_failure.value)
    assert not [p for p in data.iterdir() if p.name.endswith(".tmp")], "a temp file was left behind"
    assert service.stats()["index"]["last_snapshot_error"] is not None

    filler.unlink()  # space comes back: the same process carries on
    acknowledged[service.store("stored after space came back").id] = "stored after space came back"
    service.close()
    with MemoryService(hash_settings(data)) as reopened:
        assert reopened.stats()["memories"] == len(acknowledged)
        assert reopened.storage.index.ntotal == len(acknowledged)
        for memory_id, text in acknowledged.items():
            assert reopened.get(memory_id).text == text


def test_read_only_data_directory_is_a_clear_error(small_disk: Path) -> None:
    data = small_disk / "data"
    with MemoryService(hash_settings(data)) as service:
        service.store("written before the disk became read-only")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(StorageError) as info:
        MemoryService(hash_settings(data))
    assert str(data) in str(info.value)
    assert "Read-only file system" in str(info.value)


def test_permission_denied_names_the_directory(tmp_path: Path) -> None:
    """An unprivileged user pointed at a data directory it may not enter."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run a child as another user")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    env = child_env(data)
    command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "ltms", "stats"]
    probe = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", "import ltms"],
        env=env,
        capture_output=True,
        text=True,
        cwd="/",
    )
    if probe.returncode != 0:
        pytest.skip(f"the unprivileged user cannot run this checkout's Python: {probe.stderr.strip()[-200:]}")
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/", timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ltmc: error: cannot")
    assert str(data) in lines[-1] and "Permission denied" in lines[-1]


def test_failing_fsync_keeps_the_old_snapshot_and_says_why(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    with MemoryService(hash_settings(data)) as service:
        service.store("in the first snapshot")
        service.save_snapshot()
        before = (data / "faiss_index").read_bytes()
        service.store("not in any snapshot yet")

        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(fsutil, "fsync", no_space)
        with pytest.raises(StorageError) as info:
            service.save_snapshot()
        monkeypatch.undo()
        assert str(data / "faiss_index") in str(info.value) and "No space left on device" in str(info.value)
        assert (data / "faiss_index").read_bytes() == before
        assert not [p for p in data.iterdir() if p.name.endswith(".tmp")]
    with MemoryService(hash_settings(data)) as service:  # the change log fills the gap
        assert service.storage.index.ntotal == 2


def test_files_are_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with MemoryService(hash_settings(data)) as service:
        service.store("private")
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_memory_text_never_reaches_the_logs_at_the_default_level(tmp_path: Path, caplog) -> None:
    caplog.set_level("INFO")
    secret = "the launch code is 0000-swordfish"
    with MemoryService(hash_settings(tmp_path / "data")) as service:
        service.store(secret)
        service.retrieve("what is the launch code", k=1)
    assert caplog.records, "expected some log output"
    assert all("swordfish" not in record.getMessage() for record in caplog.records)
