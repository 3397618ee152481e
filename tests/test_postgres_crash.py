"""Crashes on PostgreSQL: nothing acknowledged is lost, nothing is half-written.

`kill -9` of the postmaster while a writer process stores memories, then a restart (crash recovery): every store
the writer saw acknowledged is there, and a store opened before the crash works again. `kill -9` of the writer
itself in the middle of multi-chunk stores: every memory has all of its chunks or does not exist.
Each test runs its own durable cluster (fsync on), so the session's cluster is never crashed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from ltms.errors import StorageError
from ltms.storage.base import Filter
from ltms.storage.postgres import PostgresStorage
from tests.helpers import child_env, close_pipes
from tests.postgres_server import PostgresCluster

DIM = 8
CHUNKS = 3

# A writer process: stores memory i (CHUNKS chunks each) and prints {"id", "i"} once the commit has returned;
# prints {"error": ...} and exits on the first failure.
WRITER = """
import hashlib, json, sys, time
import numpy as np
from ltms.storage.base import Chunk, NewMemory
from ltms.storage.postgres import PostgresStorage
url, dim, chunks, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
storage = PostgresStorage.open(url, dim, pool_size=1, connect_timeout=5)
storage.claim_model("m", dim)
print(json.dumps({"ready": True}), flush=True)
for i in range(first, 10**9):
    text = f"memory number {i}"
    rng = np.random.default_rng(i)
    vectors = rng.normal(size=(chunks, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    parts = tuple(Chunk(j, j + 1, vectors[j]) for j in range(chunks))
    now = time.time()
    digest = hashlib.sha256(text.encode()).hexdigest()
    memory = NewMemory(text, "default", ("t",), {"i": i}, now, now, digest, "m", parts)
    try:
        with storage.transaction() as tx:
            memory_id = tx.insert(memory)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(3)
    print(json.dumps({"id": memory_id, "i": i}), flush=True)
"""


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    made = PostgresCluster.create(durable=True)
    try:
        yield made
    finally:
        made.destroy()


def start_writer(url: str, tmp_path: Path, first: int = 0) -> subprocess.Popen[str]:
    """A writer storing memories number `first`, `first` + 1, ..."""
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(DIM), str(CHUNKS), str(first)],
        env=child_env(tmp_path / "unused"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def read_until(stream: IO[str], stop: str, acked: dict[int, int], limit: int | None = None) -> dict[str, object]:
    """Collect acknowledged (id -> i) lines until a line with key `stop` (or `limit` acks); returns that line."""
    for line in stream:
        record = json.loads(line)
        if "id" in record:
            acked[int(record["id"])] = int(record["i"])
            if limit is not None and len(acked) >= limit:
                return record
        elif stop in record:
            return record
    return {"eof": True}


def answers_again(storage: PostgresStorage, within: float = 60.0) -> None:
    """Wait until a store whose server restarted answers again (its pool reconnects with backoff)."""
    deadline = time.monotonic() + within
    while True:
        try:
            storage.count()
            return
        except StorageError:
            if time.monotonic() > deadline:
                raise


def check_acked_present(storage: PostgresStorage, acked: dict[int, int]) -> None:
    found = storage.get_many(list(acked))
    missing = sorted(set(acked) - set(found))
    assert not missing, f"{len(missing)} acknowledged memories lost: {missing[:10]}"
    for memory_id, i in acked.items():
        assert found[memory_id].text == f"memory number {i}" and found[memory_id].metadata == {"i": i}


def check_whole(storage: PostgresStorage) -> int:
    """Every memory has all CHUNKS chunks; returns the number of memories."""
    count = 0
    for stored in storage.iter_stored():
        assert len(stored.chunks) == CHUNKS, (stored.memory.id, len(stored.chunks))
        count += 1
    return count


def test_kill_9_of_the_postmaster_loses_nothing_acknowledged(cluster: PostgresCluster, tmp_path: Path) -> None:
    url = cluster.url(cluster.create_database("crash"))
    survivor = PostgresStorage.open(url, DIM, pool_size=2, connect_timeout=5)  # opened before the crash
    writer = start_writer(url, tmp_path)
    acked: dict[int, int] = {}
    try:
        assert writer.stdout is not None
        assert "ready" in read_until(writer.stdout, "ready", acked)
        read_until(writer.stdout, "error", acked, limit=40)
        cluster.kill(signal.SIGKILL)  # mid-stream: the writer is committing as fast as it can
        ending = read_until(writer.stdout, "error", acked)  # acks that raced the kill count too
        assert "error" in ending, ending
        assert "\n" not in str(ending["error"]) and ":***@" in str(ending["error"]), ending
        assert cluster.password not in str(ending["error"])
        writer.wait(30)

        with pytest.raises(StorageError) as caught:  # the server is down: one line, not a hang
            survivor.count()
        assert "\n" not in str(caught.value) and cluster.password not in str(caught.value)

        cluster.start()  # crash recovery
        assert len(acked) >= 40
        answers_again(survivor)  # the pool replaces its dead connections
        check_acked_present(survivor, acked)
        assert check_whole(survivor) >= len(acked)
        with survivor.transaction() as tx:  # and it writes again
            assert tx.delete(next(iter(acked)))
    finally:
        writer.kill()
        writer.wait(30)
        close_pipes(writer)
        survivor.close()


def test_kill_9_of_a_writer_leaves_no_half_written_memory(cluster: PostgresCluster, tmp_path: Path) -> None:
    url = cluster.url(cluster.create_database("writer"))
    acked: dict[int, int] = {}
    for round_number in range(3):
        writer = start_writer(url, tmp_path, first=round_number * 10**6)
        try:
            assert writer.stdout is not None
            read_until(writer.stdout, "error", acked, limit=len(acked) + 15)
            writer.send_signal(signal.SIGKILL)
            read_until(writer.stdout, "error", acked)
        finally:
            writer.kill()
            writer.wait(30)
            close_pipes(writer)
    storage = PostgresStorage.open(url, DIM, pool_size=1)
    try:
        check_acked_present(storage, acked)
        assert check_whole(storage) >= len(acked)
        # the HNSW index agrees with the table: each acknowledged memory finds itself
        memory_id, i = next(iter(acked.items()))
        rng = np.random.default_rng(i)
        vectors = rng.normal(size=(CHUNKS, DIM)).astype(np.float32)
        q = vectors[1] / np.linalg.norm(vectors[1])
        assert storage.vector_search(q, 1, Filter())[0].memory_id == memory_id
    finally:
        storage.close()
