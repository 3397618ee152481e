"""Issue 13, concurrency: every reading thread has its own SQLite read connection, so reads run side by side and
beside a write transaction; writes keep the one write connection per process. Through the real parts: a real
SQLite file, the real index, and another process writing to the same store."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import pytest

from ltms.service import MemoryService
from ltms.storage.db import Database
from ltms.storage.embedded import EmbeddedStorage
from tests.helpers import child_env, close_pipes, hash_settings, spawn_python
from tests.ops_helpers import MEMORIES, build_store

T = TypeVar("T")
WAIT = 30.0  # seconds a thread may take before the test calls it stuck (behind a lock)


class InThread(Generic[T]):
    """`fn` run on a thread of its own; result() waits for it, and fails the test if it is still blocked."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> T:
        assert self._done.wait(WAIT), "the thread is still blocked (waiting for another thread's lock?)"
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def open_fds(under: Path) -> int:
    """This process's open file descriptors on files under `under` (a database, its -wal and -shm)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is closed by now
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(f"{under}{os.sep}")
    return count


def embedded(service: MemoryService) -> EmbeddedStorage:
    assert isinstance(service.storage, EmbeddedStorage)
    return service.storage


def set_probe(db: Database, value: str) -> None:
    with db.write() as conn:
        Database.set_meta(conn, "probe", value)


# -- one connection per reading thread ------------------------------------------------------------------------------


def test_reads_go_on_beside_an_open_write_transaction_and_only_the_writer_sees_inside_it(tmp_path: Path) -> None:
    """Before, one connection served every thread under a lock: a read waited for the whole write transaction."""
    db = Database(tmp_path / "ltmc.sqlite3")
    try:
        inside, release = threading.Event(), threading.Event()

        def write() -> str | None:
            with db.write() as conn:
                Database.set_meta(conn, "probe", "uncommitted")
                seen = db.get_meta("probe")  # a read inside the transaction: on the write connection
                inside.set()
                assert release.wait(WAIT)
            return seen

        writer = InThread(write)
        assert inside.wait(WAIT)
        try:
            assert InThread(lambda: db.get_meta("probe")).result() is None  # not blocked, and not inside
        finally:
            release.set()
        assert writer.result() == "uncommitted"
        assert InThread(lambda: db.get_meta("probe")).result() == "uncommitted"
    finally:
        db.close()


def test_two_threads_read_transactions_run_side_by_side_each_on_its_own_snapshot(tmp_path: Path) -> None:
    db = Database(tmp_path / "ltmc.sqlite3")
    try:
        set_probe(db, "before")
        started, release = threading.Event(), threading.Event()

        def long_read() -> tuple[str | None, str | None]:
            with db.read_transaction():
                first = db.get_meta("probe")
                started.set()
                assert release.wait(WAIT)
                return first, db.get_meta("probe")

        reader = InThread(long_read)
        assert started.wait(WAIT)
        try:
            InThread(lambda: set_probe(db, "after")).result()  # commits while the read transaction is open
            assert InThread(lambda: db.get_meta("probe")).result() == "after"  # a new read sees the commit
        finally:
            release.set()
        assert reader.result() == ("before", "before")  # the open one kept its snapshot
    finally:
        db.close()


def test_a_threads_connection_closes_when_it_ends_and_every_one_on_close(tmp_path: Path) -> None:
    """A server's worker threads come and go: their connections must go with them (SQLite keeps a closed
    connection's database descriptor for the next connection to reuse, so descriptors stay bounded by the most
    threads reading at once), and close() leaves nothing open."""
    data = tmp_path / "data"
    data.mkdir()
    db = Database(data / "ltmc.sqlite3")
    db.count()
    readers = 8
    peaks = []
    for _ in range(4):
        together = threading.Barrier(readers + 1, timeout=WAIT)

        def read(together: threading.Barrier = together) -> None:
            db.count()
            together.wait()  # every reader holds its connection now
            together.wait()  # then they end

        threads = [threading.Thread(target=read) for _ in range(readers)]
        for thread in threads:
            thread.start()
        together.wait()
        assert db._readers.count() == readers + 1  # theirs and this thread's
        peaks.append(open_fds(data))
        together.wait()
        for thread in threads:
            thread.join()
        assert db._readers.count() == 1
    assert max(peaks[1:]) <= peaks[0], f"descriptors grow with every round of threads: {peaks}"
    db.close()
    assert db._readers.count() == 0
    assert open_fds(data) == 0
    with pytest.raises(Exception, match="closed database"):
        InThread(db.count).result()  # a new thread after close opens nothing


def test_a_thread_that_first_reads_after_the_file_was_replaced_reads_the_file_this_process_holds(
    tmp_path: Path,
) -> None:
    """A new connection would open whatever file is at the path now: another store's rows beside this one's index.
    Like reads on the old connection, it reads on the file this process opened (writes are refused meanwhile)."""
    data = tmp_path / "data"
    with MemoryService(hash_settings(data), background_saves=False) as service:
        kept = service.store("stored before the file was replaced")
        path = data / "ltmc.sqlite3"
        path.rename(tmp_path / "moved.sqlite3")
        path.write_bytes(b"")  # another, empty file
        found = InThread(lambda: service.retrieve("stored before the file was replaced", k=1)[0].memory)
        assert found.result() == service.get(kept.id)


def test_a_read_only_store_on_read_only_media_answers_from_many_threads(small_disk: Path) -> None:
    """Every thread's connection is opened as the store was (here immutable: nothing may be created beside it)."""
    data = small_disk / "data"
    build_store(data)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    service = MemoryService(hash_settings(data, LTMC_READ_ONLY="1"))
    texts = [memory[0] for memory in MEMORIES]
    try:
        assert embedded(service).db.how.startswith("immutable")

        def search() -> list[str]:
            return [service.retrieve(text, k=1, mode="hybrid")[0].memory.text for text in texts]

        searches = [InThread(search) for _ in range(4)]
        assert [s.result() for s in searches] == [texts] * 4
    finally:
        service.close()
    assert open_fds(small_disk) == 0


# -- readers, a writer thread and a writer process at once -----------------------------------------------------------


def churn(service: MemoryService, name: str, count: int, seed: int, ack: Callable[[str, int, str], None]) -> None:
    """Store, update and delete memories of `name`, calling `ack(op, id, text)` once each call has returned. The i-th
    stored memory is kept for good when i % 3 == 0 (readers may always expect it once acknowledged); the others
    are later rewritten or deleted at random."""
    rng = random.Random(seed)
    doomed: list[int] = []
    for i in range(count):
        roll = rng.random()
        if doomed and roll < 0.25:
            memory_id = doomed.pop(rng.randrange(len(doomed)))
            service.delete(memory_id)
            ack("delete", memory_id, "")
        elif doomed and roll < 0.45:
            memory_id = rng.choice(doomed)
            text = f"{name} rewrote {memory_id} at step {i}"
            service.update(memory_id, text=text)
            ack("update", memory_id, text)
        else:
            text = f"{name} stored item {i} kept" if i % 3 == 0 else f"{name} stored item {i}"
            memory_id = service.store(text).id
            ack("store", memory_id, text)
            if i % 3:
                doomed.append(memory_id)


CHURN = """
import sys
from ltms.config import Settings
from ltms.service import MemoryService
from tests.test_storage_readers import churn
with MemoryService(Settings.load()) as service:
    print("ready", flush=True)
    churn(service, "process", int(sys.argv[1]), 2, lambda op, i, text: print("ack", op, i, text, flush=True))
"""


@dataclass
class Ledger:
    """What the writers acknowledged so far: memory id -> its text (live), the memories kept for good, the deleted
    ids, and (id, text) of every text a rewrite replaced."""

    live: dict[int, str] = field(default_factory=dict)
    kept: list[int] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    replaced: set[tuple[int, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, op: str, memory_id: int, text: str) -> None:
        with self.lock:
            if op == "delete":
                del self.live[memory_id]
                self.deleted.add(memory_id)
                return
            if op == "update":
                self.replaced.add((memory_id, self.live[memory_id]))
            self.live[memory_id] = text
            if op == "store" and text.endswith(" kept"):
                self.kept.append(memory_id)

    def view(self) -> Ledger:
        with self.lock:
            return Ledger(dict(self.live), list(self.kept), set(self.deleted), set(self.replaced))


def check_one_retrieve(service: MemoryService, ledger: Ledger, rng: random.Random) -> None:
    """One retrieve against what was acknowledged before it started: a kept memory is found by its text, an
    acknowledged delete or rewrite never shows, a hit's text is the memory's current one or a newer one."""
    before = ledger.view()
    mode = rng.choice(["semantic", "hybrid"])
    if before.deleted and rng.random() < 0.3:  # words of the deleted and rewritten ones
        target, text = None, f"{rng.choice(['process', 'thread'])} stored item {rng.randrange(150)}"
    else:
        target = rng.choice(before.kept)
        text = before.live[target]
    hits = service.retrieve(text, k=5, mode=mode)
    ids = [hit.memory.id for hit in hits]
    assert not set(ids) & before.deleted, f"{mode} {text!r}: deleted memories {set(ids) & before.deleted} returned"
    stale = {(hit.memory.id, hit.memory.text) for hit in hits} & before.replaced
    assert not stale, f"{mode} {text!r}: texts rewritten before the retrieve returned: {stale}"
    if target is not None:
        assert target in ids, f"{mode} {text!r}: acknowledged memory {target} missing from {ids}"
        if mode == "semantic":
            assert ids[0] == target and hits[0].memory.text == text


@pytest.mark.parametrize("readers_store", ["read-write", "read-only"])
def test_threads_retrieve_consistent_answers_while_a_thread_and_a_process_write(
    tmp_path: Path, readers_store: str
) -> None:
    """Six threads retrieve while a thread of this process and another process store, rewrite and delete. The
    readers share the writing thread's store, or (read-only) open their own read-only one."""
    data = tmp_path / "data"
    saves = {"LTMC_SNAPSHOT_EVERY": "15", "LTMC_SNAPSHOT_QUIET_SECONDS": "0.1"}  # saves run meanwhile too
    writing = MemoryService(hash_settings(data, **saves))
    reading = writing if readers_store == "read-write" else MemoryService(hash_settings(data, LTMC_READ_ONLY="1"))
    ledger = Ledger()
    errors: list[str] = []
    stop = threading.Event()
    child: subprocess.Popen[str] | None = None
    try:
        for i in range(10):
            text = f"seed memory {i} kept"
            ledger.ack("store", writing.store(text).id, text)
        child = spawn_python(CHURN, "150", env=child_env(data, **saves), ready="ready")

        def read_child_acks() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                _ack, op, memory_id, *words = line.split()
                ledger.ack(op, int(memory_id), " ".join(words))

        def reader(seed: int) -> int:
            rng = random.Random(seed)
            done = 0
            while not stop.is_set() or done < 20:
                try:
                    check_one_retrieve(reading, ledger, rng)
                except Exception as exc:  # every failure is reported, and the others go on
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return done
                done += 1
            return done

        assert child.stderr is not None
        acks, log = InThread(read_child_acks), InThread(child.stderr.read)
        readers = [InThread(lambda seed=seed: reader(seed)) for seed in range(6)]
        churn(writing, "thread", 150, 1, ledger.ack)
        assert child.wait(timeout=120) == 0, log.result()
        acks.result()
        assert "locked" not in log.result() and "Traceback" not in log.result(), log.result()
        stop.set()
        retrieves = sum(r.result() for r in readers)
        assert errors == [], errors[:5]

        final = ledger.view()
        assert retrieves >= 120 and len(final.deleted) >= 20  # reads really met every kind of write
        for memory_id, text in final.live.items():
            assert reading.get(memory_id).text == text
        assert reading.stats()["memories"] == len(final.live)
        storage = embedded(reading)
        storage.catch_up()
        assert storage.index.live_memories == len(final.live)  # nothing lost or doubled in the index either
    finally:
        stop.set()
        if child is not None:
            child.kill()
            child.wait(timeout=30)
            close_pipes(child)
        if reading is not writing:
            reading.close()
        writing.close()
    assert open_fds(data) == 0
