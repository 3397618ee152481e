"""Two processes on one PostgreSQL database at once: exact counts, no duplicates, every acknowledged write there.

Both open a brand-new database at the same moment (the migrations race), then store their own memories and the
same shared texts in the same order (the dedup races), update shared memories and delete some of their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from ltms.storage.base import Filter
from ltms.storage.postgres import PostgresStorage
from tests.helpers import child_env

DIM = 8
OWN = 60
SHARED = 60
DELETE_EVERY = 4

# One process: wait for "go" on stdin, open the store, then for i in 0..n-1: store its own memory i and the
# shared memory i, each in its own transaction with the service's dedup (find_by_hash, then insert); update
# shared memory i's metadata; delete every DELETE_EVERY-th own memory. Prints one JSON report at the end.
WORKER = """
import hashlib, json, sys, time
import numpy as np
from ltms.storage.base import Chunk, DuplicateMemory, MemoryChange, NewMemory
from ltms.storage.postgres import PostgresStorage
url, name, dim, own, shared, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:7])
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
storage = PostgresStorage.open(url, dim, pool_size=2)
storage.claim_model("m", dim)

def new(text, seed):
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    now = time.time()
    digest = hashlib.sha256(text.encode()).hexdigest()
    return NewMemory(text, "default", (), {}, now, now, digest, "m", (Chunk(0, len(text), v / np.linalg.norm(v)),))

def store(memory):  # what MemoryService.store does
    with storage.transaction() as tx:
        found = tx.find_by_hash(memory.namespace, memory.content_hash)
        if found is not None:
            return found, False
        try:
            return tx.insert(memory), True
        except DuplicateMemory as duplicate:  # stored by the other process since find_by_hash
            return duplicate.existing_id, False

report = {"applied": list(storage.applied_migrations), "own": {}, "shared": {}, "created_shared": 0, "deleted": []}
for i in range(max(own, shared)):
    if i < own:
        report["own"][i], _ = store(new(f"{name} private memory {i}", sum(map(ord, name)) * 10**6 + i))
    if i < shared:
        memory_id, created = store(new(f"shared memory {i}", i))
        report["shared"][i] = memory_id
        report["created_shared"] += created
        with storage.transaction() as tx:
            current = tx.get(memory_id)
            tx.update(memory_id, MemoryChange(current.text, (name,), {"by": name}, time.time(),
                                              current.content_hash, "m", None))
    if i < own and i % every == 0:
        with storage.transaction() as tx:
            assert tx.delete(report["own"][i])
        report["deleted"].append(report["own"][i])
storage.close()
print(json.dumps(report), flush=True)
"""


def test_two_processes_writing_at_once(pg_cluster: Any, tmp_path: Path) -> None:
    url = pg_cluster.url(pg_cluster.create_database("two"))
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, name, str(DIM), str(OWN), str(SHARED), str(DELETE_EVERY)],
            env=child_env(tmp_path / "unused"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    try:
        for worker in workers:  # both are up before either opens the database
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=240) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(30)
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    alpha, beta = (json.loads(out.strip().splitlines()[-1]) for out, _err in outputs)

    # The migrations ran exactly once between them; the shared texts got one id each, created by one process.
    assert sorted([alpha["applied"], beta["applied"]]) == [[], [1]]
    assert alpha["shared"] == beta["shared"]
    assert len(set(alpha["shared"].values())) == SHARED
    assert alpha["created_shared"] + beta["created_shared"] == SHARED

    deleted = set(alpha["deleted"]) | set(beta["deleted"])
    kept_own = (set(alpha["own"].values()) | set(beta["own"].values())) - deleted
    assert len(deleted) == 2 * len(range(0, OWN, DELETE_EVERY))
    expected = 2 * OWN - len(deleted) + SHARED
    storage = PostgresStorage.open(url, DIM)
    try:
        assert storage.count() == expected
        found = storage.get_many([*kept_own, *alpha["shared"].values(), *deleted])
        assert set(found) == kept_own | set(alpha["shared"].values())  # every acknowledged write, no deleted one
        for memory_id in alpha["shared"].values():  # the last update of either process, whole
            memory = found[memory_id]
            assert memory.tags in (("alpha",), ("beta",)) and memory.metadata == {"by": memory.tags[0]}
        stored = list(storage.iter_stored())
        assert all(len(s.chunks) == 1 for s in stored)  # a dedup loser never wrote chunks
        hits = storage.vector_search(np.ones(DIM, dtype=np.float32) / np.sqrt(DIM), 100, Filter())
        assert not {h.memory_id for h in hits} & deleted
        assert {h.memory_id for h in storage.keyword_search(["private"], 100, Filter())} == kept_own
    finally:
        storage.close()
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM memories GROUP BY namespace, content_hash HAVING count(*) > 1) d"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (expected,)
