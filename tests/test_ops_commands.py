"""`ltmc reindex | export | import | stats`, and the progress bar, on real data directories."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from ltms.embeddings.hashing import HashingEmbedder
from ltms.errors import InvalidInput
from ltms.ops.progress import ProgressBar
from ltms.ops.reindex import run_reindex
from ltms.ops.transfer import parse_line
from ltms.service import MemoryService
from tests.helpers import child_env, hash_settings
from tests.ops_helpers import (
    MEMORIES,
    QUERIES,
    build_store,
    doctor_json,
    ltmc,
    ltmc_here,
    one_line_error,
    search_results,
)


def memories_of(data_dir: Path) -> list[tuple[str, str, list[str], dict, float]]:
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        rows = []
        for namespace in sorted(service.storage.db.counts_by_namespace()):
            page = service.list(namespace=namespace, limit=100)
            rows += [(m.namespace, m.text, m.tags, m.metadata, m.created_at) for m in page.items]
        return sorted(rows)


def assert_same_memories(
    a: list[tuple[str, str, list[str], dict, float]], b: list[tuple[str, str, list[str], dict, float]]
) -> None:
    """Equal in every field; created_at equal to the microsecond that export keeps."""
    assert [row[:4] for row in a] == [row[:4] for row in b]
    assert [row[4] for row in a] == pytest.approx([row[4] for row in b], abs=2e-6, rel=0)


# -- export / import -----------------------------------------------------------------------------------------


def test_export_import_round_trip_into_a_fresh_directory(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "fresh" / "target"
    build_store(source)
    with MemoryService(hash_settings(source), background_saves=False) as service:  # some history
        service.update(1, tags=["pets", "edited"], metadata={"edited": True})
        service.delete(4)
    dump = tmp_path / "memories.jsonl"
    result = ltmc_here("export", str(dump), data_dir=source, cwd=tmp_path)
    assert result.returncode == 0 and "exported 5 memories" in result.stdout, result.stderr
    lines = [json.loads(line) for line in dump.read_text("utf-8").splitlines()]
    assert len(lines) == 5
    assert set(lines[0]) == {"id", "text", "namespace", "tags", "metadata", "created_at", "updated_at"}
    assert lines[0]["tags"] == ["pets", "edited"] and lines[0]["created_at"].endswith("Z")

    result = ltmc_here("import", str(dump), data_dir=target, cwd=tmp_path)
    assert result.returncode == 0 and "imported 5, already present 0" in result.stdout, result.stderr
    assert_same_memories(memories_of(target), memories_of(source))
    assert search_results(target) == search_results(source)
    # Idempotent: the same file again adds nothing.
    result = ltmc_here("import", str(dump), data_dir=target, cwd=tmp_path)
    assert result.returncode == 0 and "imported 0, already present 5" in result.stdout
    assert_same_memories(memories_of(target), memories_of(source))
    status, report = doctor_json(target, tmp_path)
    assert status == 0, report


def test_export_with_embeddings_and_stdio(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    build_store(source)
    result = ltmc("export", "-", "--with-embeddings", data_dir=source, cwd=tmp_path)
    assert result.returncode == 0 and "exported 6 memories to stdout" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 6 and lines[0]["model"] == "hash-384-v1" and len(lines[0]["chunks"][0]["embedding"]) == 384
    result = ltmc("import", "-", data_dir=target, cwd=tmp_path, stdin=result.stdout)
    assert result.returncode == 0 and "imported 6, already present 0" in result.stdout, result.stderr
    assert search_results(target) == search_results(source)


def test_malformed_line_imports_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data, MEMORIES[:2])
    good = json.dumps({"text": "a new memory", "tags": ["x"]})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([good, json.dumps({"text": "another"}), "{not json", ""]) + "\n", "utf-8")
    error = one_line_error(ltmc_here("import", str(bad), data_dir=data, cwd=tmp_path))
    assert "line 3: not valid JSON" in error and "nothing was imported" in error
    assert len(memories_of(data)) == 2

    cases = {
        '{"text": ""}': "line 1: text must not be empty",
        '{"text": "x", "namespace": "no spaces"}': "line 1: namespace 'no spaces' is invalid",
        '{"text": "x", "tags": "pets"}': "line 1: tags must be a list",
        '{"text": "x", "created_at": "yesterday"}': "line 1: created_at 'yesterday' is not an ISO 8601",
        '{"txt": "x"}': "line 1: unknown field(s) 'txt'",
        "[1, 2]": "line 1: expected a JSON object",
    }
    settings = hash_settings(data)
    for line, expected in cases.items():  # the messages, in process; the CLI path is exercised above and below
        with pytest.raises(InvalidInput) as caught:
            parse_line(1, line.encode(), settings)
        assert expected in f"line 1: {caught.value}", line
    bad.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n{"text": 5}\n')
    result = ltmc_here("import", str(bad), data_dir=tmp_path / "never", cwd=tmp_path)
    error = one_line_error(result)
    assert "2 malformed lines" in error and "line 2: not valid UTF-8" in error
    assert "line 3: text must be a string" in result.stderr
    assert not (tmp_path / "never").exists(), "a rejected import must not even create the data directory"
    assert "cannot read" in one_line_error(
        ltmc_here("import", str(tmp_path / "missing.jsonl"), data_dir=data, cwd=tmp_path)
    )


def test_import_keeps_created_at_and_dedups_within_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dump = tmp_path / "in.jsonl"
    rows = [
        {"text": "same text", "created_at": "2020-01-02T03:04:05.123456Z"},
        {"text": "same text"},
        {"text": "same text", "namespace": "other", "created_at": 1577934245.5},
    ]
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    result = ltmc_here("import", str(dump), data_dir=data, cwd=tmp_path)
    assert "imported 2, already present 1" in result.stdout, result.stderr
    created = {m[0]: m[4] for m in memories_of(data)}
    assert created == {"default": pytest.approx(1577934245.123456, abs=1e-6), "other": 1577934245.5}


# -- reindex -------------------------------------------------------------------------------------------------


def test_reindex_rebuilds_from_the_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    expected = search_results(data)
    manifest_before = json.loads((data / "faiss_index.manifest.json").read_text())
    result = ltmc_here("reindex", data_dir=data, cwd=tmp_path)
    assert result.returncode == 0 and "reindexed 6 vectors (hash-384-v1, 384-d)" in result.stdout, result.stderr
    manifest = json.loads((data / "faiss_index.manifest.json").read_text())
    assert manifest["saved_at"] > manifest_before["saved_at"] and manifest["count"] == 6
    assert not [p for p in data.iterdir() if p.name.endswith(".tmp")], "atomic save left a temp file"
    assert search_results(data) == expected


def test_reembed_in_process_with_an_explicit_embedder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    small = HashingEmbedder(dimension=64)
    assert run_reindex(hash_settings(data), reembed=True, embedder=small) == 0
    with MemoryService(hash_settings(data), small, background_saves=False) as service:
        assert service.stats()["model"] == "hash-64-v1" and service.storage.index.ntotal == 6
        assert service.retrieve("the cat sat on the mat", k=1)[0].memory.text == "the cat sat on the mat"
    assert len(list(data.glob("faiss_index.bad-*"))) == 1  # the 384-d snapshot, moved aside


def test_reembed_is_the_way_out_of_a_model_mismatch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data, embedder=HashingEmbedder(dimension=64))  # stored with hash-64-v1; the CLI uses hash-384-v1
    error = one_line_error(ltmc_here("stats", data_dir=data, cwd=tmp_path))
    assert "'hash-64-v1'" in error and "ltmc reindex --reembed" in error
    assert "ltmc reindex --reembed" in one_line_error(ltmc_here("reindex", data_dir=data, cwd=tmp_path))
    result = ltmc_here("reindex", "--reembed", data_dir=data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "re-embedded 6 memories with hash-384-v1 (384-d)" in result.stdout
    stats = json.loads(ltmc_here("stats", "--json", data_dir=data, cwd=tmp_path).stdout)
    assert stats["model"] == "hash-384-v1" and stats["index"]["vectors"] == 6
    status, report = doctor_json(data, tmp_path)
    assert status == 0, report
    fresh = tmp_path / "fresh"
    build_store(fresh)
    assert search_results(data) == search_results(fresh)


# -- stats ---------------------------------------------------------------------------------------------------


def test_stats_table_and_json(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    result = ltmc_here("stats", data_dir=data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["memories", "6"]
    assert any(line.split() == ["default", "2"] for line in lines) and "hash-384-v1 (384-d)" in result.stdout
    assert "saved " in result.stdout and " ago" in result.stdout and str(data) in result.stdout
    stats = json.loads(ltmc_here("stats", "--json", data_dir=data, cwd=tmp_path).stdout)
    assert stats["namespaces"] == {"default": 2, "misc": 2, "work": 2}
    assert stats["index"]["vectors"] == 6 and stats["index"]["snapshot_bytes"] > 0
    assert stats["index"]["snapshot_age_seconds"] >= 0


# -- progress ------------------------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_only() -> None:
    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        with ProgressBar("work", total=200, stream=stream, min_interval=0) as bar:
            for done in range(0, 201, 50):
                bar(done, 200)
    assert pipe.getvalue() == ""
    drawn = terminal.getvalue()
    assert drawn.count("\r") >= 5 and drawn.endswith("\n")
    assert "work [" in drawn and "100% 200/200" in drawn and "#" * 24 in drawn
    unknown = _Terminal()
    with ProgressBar("counting", stream=unknown, min_interval=0) as bar:
        bar.advance(7)
    assert "counting 7" in unknown.getvalue()


def test_long_commands_show_progress_on_a_terminal_and_stay_quiet_in_pipes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    piped = ltmc("reindex", data_dir=data, cwd=tmp_path)
    assert piped.returncode == 0 and "\r" not in piped.stderr and "indexing" not in piped.stderr
    leader, follower = pty.openpty()
    try:
        env = child_env(data, LTMC_LOG_LEVEL="warning")
        run = subprocess.run(
            [sys.executable, "-m", "ltms", "reindex"],
            cwd=tmp_path,
            env=env,
            stderr=follower,
            stdout=subprocess.PIPE,
            text=True,
            timeout=60,
        )
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO once the terminal has no writer left
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert run.returncode == 0
    assert b"\rindexing [" in drawn and b"6/6" in drawn, drawn


def test_import_shows_progress_per_chunk() -> None:
    """The import wraps the embedder to advance the bar; checked in process with a fake terminal."""
    from ltms.ops.transfer import _ProgressEmbedder

    terminal = _Terminal()
    bar = ProgressBar("embedding", stream=terminal, min_interval=0)
    wrapped = _ProgressEmbedder(HashingEmbedder(), bar)
    vectors = wrapped.embed([f"text {i}" for i in range(600)] + QUERIES[:1])
    bar.close()
    assert vectors.shape == (601, 384) and wrapped.name == "hash-384-v1"
    assert "256/601" in terminal.getvalue() and "601/601" in terminal.getvalue()


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    build_store(tmp_path / "data")
    env = child_env(tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltms", "doctor", "--json"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # like `| head -c 10`
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=60)
    assert "Traceback" not in stderr, stderr
