"""Every operator command on every kind of store the issue names: healthy, fresh (no directory yet), empty,
with a corrupt snapshot, with a stray `faiss_index` in the working directory, and read-only."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import hash_settings
from test_ops_support import MEMORIES, build_store, corrupt_snapshot, listing, ltmc, one_line_error, read_only

from ltms.service import MemoryService

COMMANDS = {
    "doctor": ["doctor"],
    "doctor-fix": ["doctor", "--fix"],
    "reindex": ["reindex"],
    "export": ["export", "{tmp}/out.jsonl"],
    "import": ["import", "{tmp}/in.jsonl"],
    "stats": ["stats"],
}
# Exit status per (state, command). Export reads the database read-only, so it still works (and is the way
# to rescue the memories) when the data directory cannot be written.
FAILS = {
    ("corrupt", "doctor"),
    ("stray", "doctor"),
    *(("read-only", c) for c in ("doctor", "doctor-fix", "reindex", "import")),
    ("fresh", "stats"),  # a read-only command never creates a store: the missing one is an error
}
STATES = ["healthy", "fresh", "empty", "corrupt", "stray", "read-only"]
IMPORTED = [{"text": "imported one", "namespace": "imports"}, {"text": "imported two", "tags": ["t"]}]


def count(data: Path) -> int:
    with MemoryService(hash_settings(data), background_saves=False) as service:
        return service.storage.db.count()


@contextlib.contextmanager
def prepared(state: str, tmp: Path) -> Iterator[tuple[Path, Path]]:
    data, cwd = tmp / "data", tmp / "cwd"
    cwd.mkdir()
    (tmp / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in IMPORTED), "utf-8")
    if state == "empty":
        build_store(data, [])
    elif state != "fresh":
        build_store(data)
    if state == "corrupt":
        corrupt_snapshot(data)
    if state == "stray":
        (cwd / "faiss_index").write_bytes(b"stray")
    if state == "read-only":
        with read_only(data):
            yield data, cwd
    else:
        yield data, cwd


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_on_store(state: str, command: str, tmp_path: Path) -> None:
    args = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    stored = {
        "healthy": len(MEMORIES),
        "corrupt": len(MEMORIES),
        "stray": len(MEMORIES),
        "read-only": len(MEMORIES),
    }.get(state, 0)
    with prepared(state, tmp_path) as (data, cwd):
        before = listing(data)
        result = ltmc(*args, data_dir=data, cwd=cwd)
        if (state, command) in FAILS:
            assert result.returncode == 1, result.stdout + result.stderr
            assert "Traceback" not in result.stderr
            if command.startswith("doctor"):
                expected = {
                    "corrupt": "snapshot_corrupt",
                    "stray": "stray_index_file",
                    "read-only": "data_dir_not_writable",
                }[state]
                assert f"{expected}:" in result.stdout
            else:
                assert str(data) in one_line_error(result)
            if state == "read-only":
                assert listing(data) == before
        else:
            assert result.returncode == 0, result.stdout + result.stderr
        if state == "read-only":
            assert listing(data) == before
            if command == "export":
                assert len((tmp_path / "out.jsonl").read_text().splitlines()) == stored
            return

    if command == "export":
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == stored
    if command == "import":
        assert count(data) == stored + len(IMPORTED)
    if command in ("doctor", "export", "stats") and state == "fresh":
        assert not data.exists(), f"{command} created the data directory"
    if state == "stray":  # only doctor --fix touches it, and then only to rename it
        assert (cwd / "faiss_index").exists() == (command != "doctor-fix")
        if command == "doctor-fix":
            assert [p.read_bytes() for p in cwd.glob("faiss_index.stray-*")] == [b"stray"]
    if state == "corrupt" and command in ("doctor-fix", "reindex", "import"):  # stats never writes
        assert len(list(data.glob("faiss_index.bad-*"))) == 1  # moved aside, then rebuilt
        assert ltmc("doctor", data_dir=data, cwd=cwd).returncode == 0
