"""Issue 9.6: temp files of snapshot saves killed mid-write (13 kills at 100k memories left 863 MB).

A child process saves the way SnapshotStore does (the exclusive snapshot lock, then atomic_writer's temp file) and
is killed with SIGKILL in the middle of writing: a real leftover. Start-up removes it under the snapshot lock,
doctor reports it and --fix removes it. A save that is still running keeps its temp file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ltms.service import MemoryService
from tests.helpers import child_env, close_pipes, hash_settings, spawn_python
from tests.ops_helpers import build_store, codes, doctor_json

SAVER = """
import sys
from pathlib import Path
from ltms.config import Settings
from ltms.fsutil import atomic_writer
from ltms.vector_store.faiss_store import SnapshotStore
paths = Settings.load().paths
store = SnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path)
with store._locked(exclusive=True), atomic_writer(paths.index_path) as handle:
    handle.write(b"half of a snapshot" * 50_000)
    handle.flush()
    print("writing", flush=True)
    sys.stdin.readline()  # killed here, or told to finish
    handle.write(b"the rest")
print("saved", flush=True)
"""


def start_saver(data: Path) -> subprocess.Popen[str]:
    return spawn_python(SAVER, env=child_env(data), ready="writing")


def leave_a_temp_file(data: Path) -> Path:
    before = set(temp_files(data))
    proc = start_saver(data)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    close_pipes(proc)
    (temp,) = set(temp_files(data)) - before
    assert temp.stat().st_size == len(b"half of a snapshot") * 50_000
    return temp


def temp_files(data: Path) -> list[Path]:
    return sorted(data.glob(".faiss_index.*.tmp"))


def wait_until(condition: Callable[[], bool], what: str, proc: subprocess.Popen[str]) -> None:
    """Wait for a condition another process brings about (no fixed sleep); give up if that process ends."""
    event = threading.Event()
    while not condition():
        assert proc.poll() is None, f"{what}: the process ended ({proc.returncode})"
        event.wait(0.02)


def blocked_on_lock(lock: Path) -> bool:
    """Whether some process waits for the flock on `lock` (Linux: a '->' line in /proc/locks)."""
    inode = f":{lock.stat().st_ino} "
    return any("->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines())


def test_start_up_removes_a_killed_saves_temp_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    unrelated = data / ".notes.abcdefgh.tmp"
    unrelated.write_text("not ours")
    leave_a_temp_file(data)
    with MemoryService(hash_settings(data), background_saves=False) as service:
        assert service.index_state == "loaded"
    assert temp_files(data) == [] and unrelated.exists()


def test_doctor_reports_and_fix_removes_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    first, second = leave_a_temp_file(data), leave_a_temp_file(data)
    status, report = doctor_json(data, tmp_path)
    assert status == 1 and codes(report) == ["stale_temp_files"]
    assert "2 temp file(s)" in report["problems"][0]["message"] and first.name in report["problems"][0]["message"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["snapshot files"]["stale_temp_files"] == sorted([str(first), str(second)])
    status, report = doctor_json(data, tmp_path, "--fix")
    assert status == 0 and report["fixed"][0]["action"].startswith("removed 2 temp file(s)"), report
    assert temp_files(data) == []


def test_a_save_in_progress_keeps_its_temp_file(tmp_path: Path) -> None:
    """`doctor --fix` started while another process is writing a snapshot waits for the lock; the save then
    finishes (its temp file renamed into place) and doctor finds nothing to remove."""
    data = tmp_path / "data"
    build_store(data)
    saver = start_saver(data)
    doctor = subprocess.Popen(
        [sys.executable, "-m", "ltms", "doctor", "--fix", "--json"],
        cwd=tmp_path,
        env=child_env(data, LTMC_LOG_LEVEL="warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: blocked_on_lock(data / "faiss_index.lock"), "doctor never waited for the lock", doctor)
        assert len(temp_files(data)) == 1  # the live save's file is still there
        assert saver.stdin is not None and saver.stdout is not None
        saver.stdin.write("finish\n")
        assert saver.stdout.readline() == "saved\n", saver.communicate(timeout=30)[1]
        out, err = doctor.communicate(timeout=120)
    finally:
        for proc in (saver, doctor):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        close_pipes(doctor)
    assert saver.wait(timeout=30) == 0  # its rename found its temp file: nobody removed it under it
    close_pipes(saver)
    assert "stale_temp_files" not in [p["code"] for p in json.loads(out)["found"]], err
    # What it wrote is no valid snapshot: doctor moved it aside (not deleted) and rebuilt the index.
    assert [p.read_bytes()[-8:] for p in data.glob("faiss_index.bad-*")] == [b"the rest"]
    assert temp_files(data) == []
