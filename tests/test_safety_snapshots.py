"""Issue 9.4: snapshots and store files trusted when they should not be.

- a snapshot whose manifest has a blank or missing database id is foreign: moved aside and rebuilt;
- a snapshot lock path that is a directory is a doctor problem, and --fix moves it aside;
- a database that fails SQLite's integrity check is refused at start (doctor calls it unreadable);
- `doctor --fix` run from inside another store's directory leaves that store's files alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ltms.errors import StorageError
from ltms.service import MemoryService
from tests.helpers import hash_settings
from tests.ops_helpers import MEMORIES, build_store, codes, doctor_json, listing, ltmc, one_line_error

PAGE = 4096


def copy_snapshot(source: Path, target: Path, **manifest_changes: object) -> None:
    shutil.copyfile(source / "faiss_index", target / "faiss_index")
    manifest = json.loads((source / "faiss_index.manifest.json").read_text())
    manifest.update(manifest_changes)
    for key in [k for k, v in manifest_changes.items() if v is None]:
        del manifest[key]
    (target / "faiss_index.manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("database_id", ["", "   ", None], ids=["blank", "spaces", "missing"])
def test_a_snapshot_without_a_database_id_is_foreign(tmp_path: Path, database_id: str | None) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    with MemoryService(hash_settings(ours), background_saves=False) as service:
        ids = {service.store(f"our own memory number {i}").id: f"our own memory number {i}" for i in range(4)}
    with MemoryService(hash_settings(theirs), background_saves=False) as service:
        for i in range(4):  # same count, model and change number: only the vectors differ
            service.store(f"an unrelated note {i} about {'xyz' * (i + 1)}")
    copy_snapshot(theirs, ours, database_id=database_id)

    status, report = doctor_json(ours, tmp_path)
    assert status == 1 and codes(report) == ["snapshot_corrupt"]
    assert "records no database id" in report["problems"][0]["message"]

    with MemoryService(hash_settings(ours), background_saves=False) as service:
        assert service.index_state == "rebuilt"
        for memory_id, text in ids.items():
            top = service.retrieve(text, k=1)[0]
            assert top.memory.id == memory_id and top.similarity is not None and top.similarity > 0.99
    assert len(list(ours.glob("faiss_index.bad-*"))) == 1  # moved aside, not deleted
    assert doctor_json(ours, tmp_path)[0] == 0


def test_a_lock_path_that_is_a_directory_is_found_and_fixed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    (data / "faiss_index.lock").unlink()
    (data / "faiss_index.lock").mkdir()
    with pytest.raises(StorageError) as info:  # a server cannot start, and says why
        MemoryService(hash_settings(data), background_saves=False)
    assert str(data / "faiss_index.lock") in str(info.value)

    status, report = doctor_json(data, tmp_path)
    assert status == 1 and codes(report) == ["lock_not_a_file"]
    assert "is a directory" in report["problems"][0]["message"]
    status, report = doctor_json(data, tmp_path, "--fix")
    assert status == 0, report
    assert (data / "faiss_index.lock").is_file() or not (data / "faiss_index.lock").exists()
    assert len([p for p in data.glob("faiss_index.lock.bad-*") if p.is_dir()]) == 1
    MemoryService(hash_settings(data), background_saves=False).close()


def test_a_database_doctor_calls_unreadable_is_refused_at_start(tmp_path: Path) -> None:
    """Each page of the database in turn is overwritten: wherever the damage is, the service does not start.
    Before, damage in a page start-up does not read (half of them here) went unnoticed until a read hit it."""
    pristine = tmp_path / "pristine"
    build_store(pristine)
    pages = (pristine / "ltmc.sqlite3").stat().st_size // PAGE
    started = []
    for page in range(2, pages + 1):  # page 1 is the header: nothing opens without it
        data = tmp_path / f"page-{page}"
        shutil.copytree(pristine, data)
        db = data / "ltmc.sqlite3"
        raw = bytearray(db.read_bytes())
        raw[(page - 1) * PAGE : page * PAGE] = b"\xa5" * PAGE
        db.write_bytes(bytes(raw))
        try:
            MemoryService(hash_settings(data), background_saves=False).close()
            started.append(page)
        except StorageError:
            pass
    assert started == [], f"started on a damaged database (pages {started} of {pages} overwritten)"

    # Through the command line: one line that names the file, the reason and what to do.
    error = one_line_error(ltmc("stats", data_dir=tmp_path / f"page-{pages}", cwd=tmp_path))
    assert "integrity check fails" in error and "ltmc doctor" in error and "ltmc.sqlite3" in error


def test_doctor_fix_inside_another_store_leaves_its_files_alone(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    build_store(ours)
    build_store(theirs, MEMORIES[:3])
    before = listing(theirs)
    status, report = doctor_json(ours, theirs, "--fix")  # run with the working directory inside `theirs`
    assert status == 0 and report["found"] == [], report["found"]
    assert listing(theirs) == before

    # Another store whose index lives in a directory of its own (no database beside it), with a real stray.
    index_dir = tmp_path / "index-dir"
    result = ltmc("reindex", data_dir=theirs, cwd=tmp_path, env={"FAISS_INDEX_PATH": str(index_dir / "faiss_index")})
    assert result.returncode == 0, result.stderr
    (index_dir / "faiss_index.pkl").write_bytes(b"left by the old path bug")
    kept = {name: listing(index_dir)[str(index_dir / name)] for name in ("faiss_index", "faiss_index.manifest.json")}
    status, report = doctor_json(ours, index_dir, "--fix")
    assert status == 0 and [p["path"] for p in report["found"]] == [str(index_dir / "faiss_index.pkl")]
    after = listing(index_dir)
    assert {name: after[str(index_dir / name)] for name in kept} == kept
    assert [p.name.split(".stray-")[0] for p in index_dir.glob("*.stray-*")] == ["faiss_index.pkl"]
