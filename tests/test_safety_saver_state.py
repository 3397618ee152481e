"""Issue 10.15 (the cause of a flaky test): a snapshot save wrote the manifest before it took the changes it saved
off the unsaved count, so for a moment the manifest on disk held changes the count still called unsaved.

The moment is made to last: the test holds the snapshot file lock so the save waits inside its write, takes the
service's lock, lets the write go on, and looks at both once the manifest is on disk.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ltms.service import MemoryService
from ltms.vector_store.faiss_store import SnapshotStore
from tests.helpers import hash_settings
from tests.test_safety_temp_files import blocked_on_lock


def manifest_count(data: Path) -> int:
    return int(json.loads((data / "faiss_index.manifest.json").read_text())["count"])


def test_a_manifest_on_disk_is_never_counted_as_unsaved(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = hash_settings(data)
    with MemoryService(settings, background_saves=False) as service:
        for i in range(10):
            service.store(f"memory {i}")
        assert manifest_count(data) == 0 and service.stats()["index"]["unsaved_changes"] == 10
        paths = settings.paths
        other_writer = SnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path)
        saver = threading.Thread(target=service.save_snapshot)
        tick = threading.Event()
        with other_writer._locked(exclusive=True):  # the save will wait for this lock, inside its write
            saver.start()
            while not blocked_on_lock(paths.lock_path):  # it has cloned the index and waits for the file lock
                assert saver.is_alive()
                tick.wait(0.01)
            service.storage._apply_lock.acquire()
        try:
            while manifest_count(data) != 10:  # the write goes on now; the count is read with its lock held
                assert saver.is_alive()
                tick.wait(0.01)
            assert service.storage._unsaved_changes == 0, "the manifest holds 10 changes the count still calls unsaved"
        finally:
            service.storage._apply_lock.release()
        saver.join(timeout=30)
        assert service.wait_until_saved(timeout=30)
        assert service.stats()["index"]["unsaved_changes"] == 0
