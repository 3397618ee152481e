"""Two processes on one data directory, and kill -9 in the middle of a stream of stores."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ltms.service import MemoryService
from tests.helpers import child_env, hash_settings

WRITER = """
import os, sys, time
from pathlib import Path
from ltms.config import Settings
from ltms.service import MemoryService
name, count, barrier = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
with MemoryService(Settings.load()) as service:
    for i in range(count):
        result = service.store(f"{name} wrote memory {i}")
        print("ack", result.id, flush=True)
    (barrier / name).touch()
    while len(list(barrier.iterdir())) < 2:  # the other writer is still writing
        time.sleep(0.02)
    found = 0
    for writer in ("alpha", "beta"):
        for i in range(count):
            text = f"{writer} wrote memory {i}"
            hits = service.retrieve(text, k=1)
            found += bool(hits) and hits[0].memory.text == text
    print("found", found, flush=True)
"""


def test_two_processes_write_at_once_and_each_sees_everything(tmp_path: Path) -> None:
    data, barrier = tmp_path / "data", tmp_path / "barrier"
    barrier.mkdir()
    count = 40
    env = child_env(data, LTMC_SNAPSHOT_EVERY="7", LTMC_SNAPSHOT_QUIET_SECONDS="0.2")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(count), str(barrier)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        lines = out.split("\n")
        assert sum(line.startswith("ack") for line in lines) == count
        assert f"found {2 * count}" in lines, out
    with MemoryService(hash_settings(data)) as service:
        assert service.stats()["memories"] == 2 * count
        assert service.storage.index.ntotal == 2 * count


STREAM = """
import itertools, os
from ltms.config import Settings
from ltms.service import MemoryService
service = MemoryService(Settings.load())
for i in itertools.count():
    i = f"r{os.environ['ROUND']}n{i}"  # one word: the hashing embedder would confuse 1-0 with 0-1
    result = service.store(f"crash trial memory {i}")
    print("ack", result.id, i, flush=True)
"""


def run_until_killed(data: Path, after_acks: int, round_: int) -> list[tuple[int, str]]:
    """Start a writer, SIGKILL it once it has acknowledged `after_acks` stores (it goes on storing meanwhile, so
    the kill lands mid-store), return every (id, i) it acknowledged. Counting acknowledgements instead of seconds
    makes the kill land after start-up however loaded the machine is."""
    env = child_env(data, LTMC_SNAPSHOT_EVERY="25", LTMC_SNAPSHOT_QUIET_SECONDS="0.1", ROUND=str(round_))
    errors = data.parent / f"writer-{round_}.log"
    with open(errors, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", STREAM], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    acked: list[tuple[int, str]] = []
    enough = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                parts = line.split()
                if len(parts) == 3 and parts[0] == "ack":
                    acked.append((int(parts[1]), parts[2]))
                    if len(acked) >= after_acks:
                        enough.set()
        finally:
            enough.set()  # the writer ended on its own: the check below says so

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert enough.wait(timeout=120), "the writer acknowledged too little within 120 s"
        assert proc.poll() is None, f"the writer died before the kill:\n{errors.read_text()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    assert len(acked) >= after_acks
    return acked


def check_every_acknowledged_memory(data: Path, acked: list[tuple[int, str]]) -> None:
    with MemoryService(hash_settings(data)) as service:
        count = service.stats()["memories"]
        assert service.storage.index.ntotal == count
        for memory_id, i in acked:
            assert service.get(memory_id).text == f"crash trial memory {i}"
        for memory_id, i in random.sample(acked, min(10, len(acked))):
            assert service.retrieve(f"crash trial memory {i}", k=1)[0].memory.id == memory_id


@pytest.mark.parametrize("trial", range(3))
def test_kill_9_loses_no_acknowledged_memory(tmp_path: Path, trial: int) -> None:
    data = tmp_path / "data"
    rng = random.Random(trial)
    total_acked: list[tuple[int, str]] = []
    for round_ in range(2):  # kill, restart and kill again on the same data
        # 1 to 80 acknowledged stores: kills land before and after the first snapshot saves (every 25 changes).
        total_acked.extend(run_until_killed(data, after_acks=rng.randint(1, 80), round_=round_))
        check_every_acknowledged_memory(data, total_acked)
