"""Issue 9.3: `ltmc export` never destroys the store and never replaces a file it was not told to.

`ltmc export "$LTMC_DATA_DIR/ltmc.sqlite3"` used to exit 0 after replacing the database with JSON Lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ltms.errors import StorageError
from ltms.fsutil import atomic_writer
from tests.ops_helpers import MEMORIES, build_store, listing, ltmc, one_line_error


def assert_store_intact(data: Path, tmp_path: Path) -> None:
    stats = ltmc("stats", "--json", data_dir=data, cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["memories"] == len(MEMORIES)


@pytest.mark.parametrize(
    "name", ["ltmc.sqlite3", "ltmc.sqlite3-wal", "faiss_index", "faiss_index.manifest.json", "backup.jsonl"]
)
def test_export_into_the_data_directory_is_refused(tmp_path: Path, name: str) -> None:
    data = tmp_path / "data"
    build_store(data)
    before = listing(data)
    error = one_line_error(ltmc("export", str(data / name), "--force", data_dir=data, cwd=tmp_path))
    assert str(data / name) in error and ("data directory" in error or "store's own file" in error), error
    assert listing(data) == before
    assert_store_intact(data, tmp_path)


def test_export_onto_a_store_file_elsewhere_is_refused(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "index-dir"
    build_store(data)
    # A custom index path outside the data directory, and a hard link to the database.
    env = {"FAISS_INDEX_PATH": str(elsewhere / "my_index")}
    assert ltmc("reindex", data_dir=data, cwd=tmp_path, env=env).returncode == 0
    os.link(data / "ltmc.sqlite3", tmp_path / "linked.sqlite3")
    for target in (elsewhere / "my_index", elsewhere / "my_index.manifest.json", tmp_path / "linked.sqlite3"):
        before = target.read_bytes()
        error = one_line_error(ltmc("export", str(target), "--force", data_dir=data, cwd=tmp_path, env=env))
        assert "store's own file" in error, error
        assert target.read_bytes() == before
    assert_store_intact(data, tmp_path)


def test_an_existing_file_is_replaced_only_with_force(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out.jsonl"
    build_store(data)
    out.write_text("precious\n")
    error = one_line_error(ltmc("export", str(out), data_dir=data, cwd=tmp_path))
    assert "exists" in error and "--force" in error
    assert out.read_text() == "precious\n"
    result = ltmc("export", str(out), "--force", data_dir=data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == len(MEMORIES)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl")] == []


def test_a_failed_export_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out.jsonl"
    data.mkdir()
    (data / "ltmc.sqlite3").write_bytes(b"this is not a database" * 100)
    out.write_text("the previous export\n")
    error = one_line_error(ltmc("export", str(out), "--force", data_dir=data, cwd=tmp_path))
    assert "ltmc.sqlite3" in error
    assert out.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out.jsonl"]


def test_a_file_that_appears_while_exporting_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    with pytest.raises(StorageError, match="already exists"), atomic_writer(target, overwrite=False) as handle:
        handle.write(b"the export\n")
        target.write_text("written by someone else meanwhile\n")
    assert target.read_text() == "written by someone else meanwhile\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
