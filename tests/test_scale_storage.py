"""The embedded store at scale, through the service: approximate search and the filter planner, tombstones, restarts,
change-log pruning with a second process, and kill -9 during saves and prunes. Correctness only, never timing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ltms.errors import StorageError
from ltms.service import MemoryService
from ltms.storage import embedded
from tests.helpers import child_env, close_pipes, hash_settings

TOPICS = ["database", "network", "kitchen", "garden", "invoice", "rocket"]


def text_of(i: int) -> str:
    return f"note {i} about the {TOPICS[i % len(TOPICS)]} and item {i * 7919 % 1009} with code word w{i}"


def filled(data: Path, n: int = 240, **env: str) -> tuple[MemoryService, dict[int, dict]]:
    """A store with memories spread over namespaces, tags and creation times; returns what each one is."""
    service = MemoryService(hash_settings(data, **env), background_saves=False)
    items = [(text_of(i), [TOPICS[i % 6], f"g{i % 4}"], None, "work" if i % 3 else "home") for i in range(n)]
    stamps = [(1_600_000_000.0 + 3600 * i, None) for i in range(n)]
    results = service.store_many(items, timestamps=stamps)
    truth = {
        r.id: {"tags": set(items[i][1]), "namespace": items[i][3], "created": stamps[i][0], "text": items[i][0]}
        for i, r in enumerate(results)
    }
    return service, truth


FILTERS = [
    {"namespace": "home"},
    {"tags": ["garden"]},
    {"tags": ["garden", "g2"]},
    {"namespace": "work", "tags": ["g1"]},
    {"since": 1_600_000_000 + 3600 * 200},
    {"until": 1_600_000_000 + 3600 * 5},
    {"namespace": "home", "since": 1_600_000_000 + 3600 * 100, "until": 1_600_000_000 + 3600 * 160},
    {"tags": ["no-such-tag"]},
]


def matches(memory: dict, where: dict) -> bool:
    return (
        ("namespace" not in where or memory["namespace"] == where["namespace"])
        and set(where.get("tags", [])) <= memory["tags"]
        and memory["created"] >= where.get("since", 0)
        and memory["created"] <= where.get("until", 1e18)
    )


@pytest.mark.parametrize("planner", ["exact subset", "post-filter"])
def test_approximate_results_respect_every_filter(tmp_path: Path, monkeypatch, planner: str) -> None:
    if planner == "post-filter":  # every filter takes the over-fetch + post-filter path
        monkeypatch.setattr(embedded, "EXACT_SUBSET_LIMIT", 0)
    service, truth = filled(tmp_path / "data", LTMC_INDEX="hnsw")
    try:
        assert service.storage.index.kind == "hnsw"
        for where in FILTERS:
            wanted = {i for i, m in truth.items() if matches(m, where)}
            for query in ("the garden and the rocket", text_of(17), text_of(130)):
                hits = service.retrieve(query, k=10, mode="semantic", **where)
                ids = [hit.memory.id for hit in hits]
                assert set(ids) <= wanted, (where, query)
                assert len(ids) == min(10, len(wanted)), (where, query)  # never fewer than k when k exist
    finally:
        service.close()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_a_deleted_memory_is_never_returned(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    service, truth = filled(data, LTMC_INDEX=kind)
    deleted = sorted(truth)[::3]
    updated = sorted(truth)[1::7]
    for memory_id in deleted[: len(deleted) // 2]:
        service.delete(memory_id)
    service.save_snapshot()  # tombstones in the snapshot
    for memory_id in deleted[len(deleted) // 2 :]:
        service.delete(memory_id)  # tombstones in memory only
    for memory_id in updated:
        if memory_id not in deleted:
            service.update(memory_id, text=f"replaced text {memory_id} about a lighthouse")

    def check(svc: MemoryService) -> None:
        for memory_id in deleted:
            hits = svc.retrieve(truth[memory_id]["text"], k=20, mode="semantic")
            assert memory_id not in [hit.memory.id for hit in hits]
            assert len(hits) == 20
        for memory_id in updated:
            if memory_id not in deleted:  # the old text no longer finds it at the top with its old vector
                top = svc.retrieve(f"replaced text {memory_id} about a lighthouse", k=1, mode="semantic")[0]
                assert top.memory.id == memory_id and top.similarity == pytest.approx(1.0, abs=1e-3)

    check(service)
    service.close()
    with MemoryService(hash_settings(data, LTMC_INDEX=kind), background_saves=False) as restarted:
        assert restarted.storage.index.ntotal == restarted.storage.db.chunk_count()
        check(restarted)


def ranking(service: MemoryService, queries: list[str], **where: object) -> list[list[tuple[int, float]]]:
    return [
        [(hit.memory.id, round(hit.score, 5)) for hit in service.retrieve(q, k=8, mode="semantic", **where)]
        for q in queries
    ]


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
@pytest.mark.parametrize("stop", ["clean close", "crash after more stores"])
def test_a_restart_gives_the_same_results(tmp_path: Path, kind: str, stop: str) -> None:
    data = tmp_path / "data"
    service, _ = filled(data, LTMC_INDEX=kind)
    service.save_snapshot()
    for i in range(240, 260):  # after the snapshot: replayed from the change log at restart
        service.store(text_of(i), tags=["late"])
    service.delete(5)
    queries = [text_of(i) for i in (3, 5, 77, 250)] + ["kitchen invoice", "rocket garden network"]
    before = ranking(service, queries), ranking(service, queries, tags=["late"])
    if stop == "clean close":
        service.close()
    else:
        service.storage.db.close()  # no final save: the process is gone
    with MemoryService(hash_settings(data, LTMC_INDEX=kind), background_saves=False) as restarted:
        assert restarted.storage.index.kind == kind
        assert (ranking(restarted, queries), ranking(restarted, queries, tags=["late"])) == before


def test_a_large_snapshot_is_mapped_at_start_and_a_corrupt_one_rebuilt(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(embedded, "CHECK_LATER_BYTES", 0)  # every snapshot counts as large
    data = tmp_path / "data"
    service, truth = filled(data, LTMC_INDEX="hnsw")
    service.close()
    with MemoryService(hash_settings(data, LTMC_INDEX="hnsw"), background_saves=False) as restarted:
        restarted.storage._verifier.join(timeout=60)
        assert not restarted.storage.index.mapped  # checked, then copied into memory
        assert restarted.retrieve(text_of(9), k=1)[0].memory.id == min(truth) + 9
    index_file = data / "faiss_index"
    raw = bytearray(index_file.read_bytes())
    raw[len(raw) // 3] ^= 0x10  # a flipped bit among the vectors: only the checksum sees it
    index_file.write_bytes(bytes(raw))
    with MemoryService(hash_settings(data, LTMC_INDEX="hnsw"), background_saves=False) as restarted:
        restarted.storage._verifier.join(timeout=60)
        assert restarted.index_state == "rebuilt"
        assert list(data.glob("faiss_index.bad-*"))
        for i in (1, 100, 200):
            assert restarted.retrieve(text_of(i), k=1)[0].memory.id == min(truth) + i


CHILD = r"""
import json, sys
from ltms.config import Settings
from ltms.errors import StorageError
from ltms.service import MemoryService
service = MemoryService(Settings.load(), background_saves=False)
service.retrieve("warm up", k=1)  # the index is now at the current change
print(json.dumps({"ready": service.storage._applied_seq}), flush=True)
texts = json.loads(sys.stdin.readline())  # waits, idle, while the parent stores, saves and prunes
found = {}
for memory_id, text in texts.items():
    hit = service.retrieve(text, k=1, mode="semantic")[0]
    found[memory_id] = hit.memory.id
print(json.dumps({"found": found, "vectors": service.storage.index.ntotal, "state": service.index_state}), flush=True)
service.close()
"""


@pytest.mark.parametrize("snapshot", ["kept", "moved aside"])
def test_a_process_idle_through_a_prune_still_catches_up(tmp_path: Path, snapshot: str) -> None:
    data = tmp_path / "data"
    service, truth = filled(data, n=30)
    service.close()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        env=child_env(data),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = json.loads(child.stdout.readline())["ready"]
        writer = MemoryService(hash_settings(data), background_saves=False)
        writer.storage.prune_margin = 0
        texts = {writer.store(text_of(i)).id: text_of(i) for i in range(300, 340)}
        for memory_id in list(truth)[:5]:
            writer.delete(memory_id)
        writer.save_snapshot()
        assert writer.storage.db.pruned_through() > ready  # the child cannot replay from where it is
        writer.close()
        if snapshot == "moved aside":
            (data / "faiss_index").rename(data / "faiss_index.elsewhere")
        texts |= {memory_id: truth[memory_id]["text"] for memory_id in list(truth)[5:]}
        out, err = child.communicate(json.dumps({str(k): v for k, v in texts.items()}) + "\n", timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        close_pipes(child)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["found"] == {str(memory_id): memory_id for memory_id in texts}, err
    assert result["vectors"] == len(texts)
    assert "reloading the index" in err


KILLED_CHILD = r"""
import itertools, sys, threading
from ltms.config import Settings
from ltms.errors import StorageError
from ltms.service import MemoryService
service = MemoryService(Settings.load(), background_saves=False)
service.storage.prune_margin = 0

def save_forever():
    while True:  # a save (and a prune after it) is almost always under way when the kill comes
        service.save_snapshot(force=True)

threading.Thread(target=save_forever, daemon=True).start()
for i in itertools.count():
    memory_id = service.store(f"acknowledged memory {sys.argv[1]}-{i} about the harbour crane w{i}").id
    print(memory_id, i, flush=True)
"""


def test_kill_9_during_saves_and_prunes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked: dict[int, str] = {}
    for trial in range(4):
        env = child_env(data, LTMC_INDEX="hnsw" if trial % 2 else "exact")
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_CHILD, str(trial)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for _ in range(40 + 25 * trial):  # kill at a different point each time
                line = child.stdout.readline()
                assert line, child.stderr.read()
                memory_id, i = map(int, line.split())
                acked[memory_id] = f"acknowledged memory {trial}-{i} about the harbour crane w{i}"
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            close_pipes(child)
        with MemoryService(hash_settings(data), background_saves=False) as restarted:
            assert restarted.storage.index.ntotal == restarted.storage.db.chunk_count()
            for memory_id, text in acked.items():
                assert restarted.get(memory_id).text == text
                assert restarted.retrieve(text, k=1, mode="semantic")[0].memory.id == memory_id


def test_a_large_database_is_checked_after_the_start_and_refused_once_found_damaged(
    tmp_path: Path, monkeypatch
) -> None:
    """The integrity check reads the whole file (seconds at a million memories), so a large database answers first
    and is checked on a thread; damage found there makes every later call fail with the same one line."""
    monkeypatch.setattr(embedded, "CHECK_LATER_BYTES", 0)  # every database counts as large
    # The check of this small file takes a millisecond: held until the start is over (or has failed), so that it
    # finds the damage after the start, as it would in a large database.
    start_over: dict[int, threading.Event] = {}
    check, load, start_check = (
        embedded.EmbeddedStorage._integrity_check,
        embedded.EmbeddedStorage._load_or_build,
        embedded.EmbeddedStorage._start_check,
    )

    def over(storage: embedded.EmbeddedStorage) -> threading.Event:
        return start_over.setdefault(id(storage), threading.Event())

    def held_check(storage: embedded.EmbeddedStorage) -> None:
        over(storage).wait(timeout=60)
        check(storage)

    def load_or_fail(storage: embedded.EmbeddedStorage) -> object:
        try:
            return load(storage)
        except BaseException:
            over(storage).set()
            raise

    def started(storage: embedded.EmbeddedStorage, *args: object) -> None:
        over(storage).set()
        start_check(storage, *args)

    monkeypatch.setattr(embedded.EmbeddedStorage, "_integrity_check", held_check)
    monkeypatch.setattr(embedded.EmbeddedStorage, "_load_or_build", load_or_fail)
    monkeypatch.setattr(embedded.EmbeddedStorage, "_start_check", started)
    pristine = tmp_path / "pristine"
    service, _ = filled(pristine, n=60)
    service.close()
    page = 4096
    pages = (pristine / "ltmc.sqlite3").stat().st_size // page
    for damaged_page in range(pages, 1, -1):  # the first damaged page start-up itself does not read
        data = tmp_path / f"page-{damaged_page}"
        shutil.copytree(pristine, data)
        db = data / "ltmc.sqlite3"
        raw = bytearray(db.read_bytes())
        raw[(damaged_page - 1) * page : damaged_page * page] = b"\xa5" * page
        db.write_bytes(bytes(raw))
        try:
            started = MemoryService(hash_settings(data), background_saves=False)
        except StorageError:
            continue
        break
    else:
        pytest.fail("every damaged page stopped the start")
    try:
        started.storage._integrity.join(timeout=60)
        with pytest.raises(StorageError, match="integrity check fails"):
            started.retrieve("note about the garden", k=3)
        with pytest.raises(StorageError, match="integrity check fails"):
            started.store("a new memory")
        assert any("integrity check fails" in p for p in started.storage.health().problems)
    finally:
        started.close()
