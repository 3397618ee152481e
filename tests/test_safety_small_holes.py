"""Issue 9.10-9.12: a namespace ending in a newline, writes in read-only mode, and directories created for a custom
index path under a permissive umask."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from ltms.errors import InvalidInput
from ltms.service import MemoryService
from tests.helpers import child_env, hash_settings, run_python
from tests.ops_helpers import build_store, corrupt_snapshot, listing, ltmc, one_line_error


@pytest.mark.parametrize("namespace", ["work\n", "work\r\n", "\nwork", "work\x00"])
def test_a_namespace_must_match_its_pattern_exactly(tmp_path: Path, namespace: str) -> None:
    with MemoryService(hash_settings(tmp_path / "data"), background_saves=False) as service:
        with pytest.raises(InvalidInput, match="namespace"):
            service.store("a memory", namespace=namespace)
        with pytest.raises(InvalidInput, match="namespace"):
            service.retrieve("a memory", namespace=namespace)
        with pytest.raises(InvalidInput, match="namespace"):
            service.list(namespace=namespace)
        assert service.stats()["memories"] == 0
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "imported", "namespace": namespace}) + "\n")
    error = one_line_error(ltmc("import", str(source), data_dir=tmp_path / "data", cwd=tmp_path))
    assert "line 1: namespace" in error


# Every chunk vector with its memory and model: read-only commands must leave them exactly as they were.
VECTORS = "SELECT m.id, c.embedding, m.model FROM memories m JOIN chunks c ON c.memory_id = m.id ORDER BY 1, c.ordinal"


@pytest.mark.parametrize(
    "command",
    [["reindex", "--reembed"], ["reindex"], ["import", "{tmp}/in.jsonl"], ["doctor", "--fix"]],
    ids=" ".join,
)
def test_read_only_mode_means_no_command_writes(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "data"
    build_store(data)
    corrupt_snapshot(data)  # something doctor --fix would repair
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "would be imported"}) + "\n")
    with sqlite3.connect(data / "ltmc.sqlite3") as conn:
        embeddings = conn.execute(VECTORS).fetchall()
    before = listing(data)
    argv = [arg.format(tmp=tmp_path) for arg in command]
    error = one_line_error(ltmc(*argv, data_dir=data, cwd=tmp_path, env={"LTMC_READ_ONLY": "1"}))
    assert "read-only" in error and "LTMC_READ_ONLY" in error and "nothing was changed" in error, error
    assert listing(data) == before
    with sqlite3.connect(data / "ltmc.sqlite3") as conn:
        assert conn.execute(VECTORS).fetchall() == embeddings


def test_directories_created_for_custom_paths_are_owner_only_under_umask_000(tmp_path: Path) -> None:
    data, index = tmp_path / "a" / "b" / "data", tmp_path / "c" / "d" / "e" / "my_index"
    run_python(
        "import os\nos.umask(0)\nfrom ltms.config import Settings\nfrom ltms.service import MemoryService\n"
        "MemoryService(Settings.load(), background_saves=False).close()\n",
        child_env(data, FAISS_INDEX_PATH=str(index)),
    )
    created = [tmp_path / "a", tmp_path / "a" / "b", data, tmp_path / "c", tmp_path / "c" / "d", index.parent]
    modes = {str(d.relative_to(tmp_path)): oct(stat.S_IMODE(d.stat().st_mode)) for d in created}
    assert set(modes.values()) == {"0o700"}, modes
    files = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for d in (data, index.parent) for f in d.iterdir()}
    assert "my_index" in files and set(files.values()) == {"0o600"}, files
