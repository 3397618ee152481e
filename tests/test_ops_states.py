"""Every operator command on every kind of store the issue names: healthy, fresh (no directory yet), empty,
with a corrupt snapshot, with a stray `faiss_index` in the working directory, and read-only.

The expectations are one explicit table: (state, command) -> (exit status, files changed, memories after).
The commands run `ltms.cli.main` in this process (ops_helpers.ltmc_here), the function `python -m ltms` runs: as
child processes they were a third of the suite's time. test_ops_commands.py runs the CLI as a child where the
process is the point."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltms.vector_store.faiss_config import DB_NAME
from tests.ops_helpers import build_store, corrupt_snapshot, listing, ltmc_here, one_line_error, read_only

COMMANDS = {
    "doctor": ["doctor"],
    "doctor-fix": ["doctor", "--fix"],
    "reindex": ["reindex"],
    "export": ["export", "{tmp}/out.jsonl"],
    "import": ["import", "{tmp}/in.jsonl"],
    "stats": ["stats"],
}
IMPORTED = [{"text": "imported one", "namespace": "imports"}, {"text": "imported two", "tags": ["t"]}]

# Files changed, relative to the test's directory: "+" created, "-" removed, "~" rewritten. `*` stands for a
# timestamp. None for the count: there is no data directory afterwards.
NEW_STORE = ("+data/faiss_index", "+data/faiss_index.lock", "+data/faiss_index.manifest.json", "+data/ltmc.sqlite3")
REBUILT = ("+data/faiss_index.bad-*", "+data/faiss_index.manifest.json.bad-*", "~data/faiss_index")
EXPECTED: dict[tuple[str, str], tuple[int, tuple[str, ...], int | None]] = {
    ("healthy", "doctor"): (0, (), 6),
    ("healthy", "doctor-fix"): (0, (), 6),
    ("healthy", "reindex"): (0, ("~data/faiss_index", "~data/faiss_index.manifest.json"), 6),
    ("healthy", "export"): (0, ("+out.jsonl",), 6),
    ("healthy", "import"): (0, ("~data/faiss_index", "~data/faiss_index.manifest.json", "~data/ltmc.sqlite3"), 8),
    ("healthy", "stats"): (0, (), 6),
    ("fresh", "doctor"): (0, (), None),
    ("fresh", "doctor-fix"): (0, (), None),
    ("fresh", "reindex"): (0, NEW_STORE, 0),
    ("fresh", "export"): (0, ("+out.jsonl",), None),
    ("fresh", "import"): (0, NEW_STORE, 2),
    ("fresh", "stats"): (1, (), None),  # a reading command never creates a store: a missing one is an error
    ("empty", "doctor"): (0, (), 0),
    ("empty", "doctor-fix"): (0, (), 0),
    ("empty", "reindex"): (0, ("~data/faiss_index", "~data/faiss_index.manifest.json"), 0),
    ("empty", "export"): (0, ("+out.jsonl",), 0),
    ("empty", "import"): (0, ("~data/faiss_index", "~data/faiss_index.manifest.json", "~data/ltmc.sqlite3"), 2),
    ("empty", "stats"): (0, (), 0),
    ("corrupt", "doctor"): (1, (), 6),
    ("corrupt", "doctor-fix"): (0, (*REBUILT, "~data/faiss_index.manifest.json"), 6),
    ("corrupt", "reindex"): (0, (*REBUILT, "~data/faiss_index.manifest.json"), 6),
    ("corrupt", "export"): (0, ("+out.jsonl",), 6),
    ("corrupt", "import"): (0, (*REBUILT, "~data/faiss_index.manifest.json", "~data/ltmc.sqlite3"), 8),
    ("corrupt", "stats"): (0, (), 6),  # stats never writes: the index is rebuilt in memory
    ("stray", "doctor"): (1, (), 6),
    ("stray", "doctor-fix"): (0, ("+cwd/faiss_index.stray-*", "-cwd/faiss_index"), 6),
    ("stray", "reindex"): (0, ("~data/faiss_index", "~data/faiss_index.manifest.json"), 6),
    ("stray", "export"): (0, ("+out.jsonl",), 6),
    ("stray", "import"): (0, ("~data/faiss_index", "~data/faiss_index.manifest.json", "~data/ltmc.sqlite3"), 8),
    ("stray", "stats"): (0, (), 6),
    # Export and stats only read, so they work when the data directory cannot be written (export is the way to
    # rescue the memories); everything else refuses with one line naming the directory.
    ("read-only", "doctor"): (1, (), 6),
    ("read-only", "doctor-fix"): (1, (), 6),
    ("read-only", "reindex"): (1, (), 6),
    ("read-only", "export"): (0, ("+out.jsonl",), 6),
    ("read-only", "import"): (1, (), 6),
    ("read-only", "stats"): (0, (), 6),
}
DOCTOR_PROBLEM = {"corrupt": "snapshot_corrupt", "stray": "stray_index_file", "read-only": "data_dir_not_writable"}


def count(data: Path) -> int | None:
    """Memories in the store, read without opening the service (which would repair what it finds)."""
    if not data.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{data / DB_NAME}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM memories").fetchone()[0])


def changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], root: Path) -> tuple[str, ...]:
    def name(path: str) -> str:
        return re.sub(r"\.(bad|stray)-[^/]+$", r".\1-*", str(Path(path).relative_to(root)))

    found = {f"+{name(p)}" for p in after.keys() - before.keys()}
    found |= {f"-{name(p)}" for p in before.keys() - after.keys()}
    found |= {f"~{name(p)}" for p in before.keys() & after.keys() if before[p] != after[p]}
    return tuple(sorted(found))


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


@pytest.mark.parametrize(("state", "command"), list(EXPECTED))
def test_command_on_store(state: str, command: str, tmp_path: Path) -> None:
    status, changed, memories = EXPECTED[state, command]
    args = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    with prepared(state, tmp_path) as (data, cwd):
        before = listing(tmp_path)
        result = ltmc_here(*args, data_dir=data, cwd=cwd)
        after = listing(tmp_path)
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert changes(before, after, tmp_path) == tuple(sorted(changed))
    assert count(data) == memories
    if status and command.startswith("doctor"):
        assert f"{DOCTOR_PROBLEM[state]}:" in result.stdout
    elif status:
        assert str(data) in one_line_error(result)
    if command == "export":
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == (memories or 0)
    if command == "doctor-fix" and state == "stray":  # renamed, never deleted
        assert [p.read_bytes() for p in cwd.glob("faiss_index.stray-*")] == [b"stray"]
    if state == "corrupt":  # repaired by the commands that write the index, left as it was by the others
        repaired = command in ("doctor-fix", "reindex", "import")
        assert ltmc_here("doctor", data_dir=data, cwd=cwd).returncode == (0 if repaired else 1)
