"""Helpers for the operator-command tests (test_ops_*.py). No tests here.

Commands run against real files, with the fast hashing embedder, in a temporary working directory: either as the
real CLI in a child process (`ltmc`: `python -m ltms ...`), where the process is the point (exit on a closed pipe,
a terminal, stdin, another user), or by calling `ltms.cli.main` in this process (`ltmc_here`), the function the
child would run, with the environment, working directory and output streams a child would have.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ltms.embeddings import Embedder
from ltms.service import MemoryService
from tests.helpers import child_env, hash_settings

MEMORIES: list[tuple[str, list[str], dict[str, Any], str]] = [
    ("the cat sat on the mat", ["pets"], {"source": "test", "n": 1}, "default"),
    ("dogs love long walks in the park", ["pets", "outdoor"], {}, "default"),
    ("the quarterly report is due on friday", ["work"], {"priority": "high"}, "work"),
    ("remember to rotate the api keys", ["work", "security"], {}, "work"),
    ("unicode text: café, naïve, 日本語, emoji 🙂", [], {"lang": ["fr", "ja"]}, "misc"),
    ('a line\nwith a newline and a "quote"', ["tricky"], {"nested": {"a": [1, 2, None]}}, "misc"),
]
QUERIES = ["cat on a mat", "report due friday", "api keys", "walks in the park", "café"]


def ltmc(
    *args: str,
    data_dir: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m ltms ARGS` on `data_dir` with the hashing embedder."""
    full_env = child_env(data_dir, LTMC_LOG_LEVEL="warning")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ltms", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )


def ltmc_here(
    *args: str, data_dir: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`ltmc ARGS` in this process: `ltms.cli.main` with the environment and working directory `ltmc` would give a
    child, stdout and stderr captured; the process's environment, directory and logging set-up are put back."""
    from ltms.cli import main

    full_env = child_env(data_dir, LTMC_LOG_LEVEL="warning")
    full_env.update(env or {})
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    loggers = [logging.getLogger(name) for name in ("", "faiss", "faiss.loader")]
    saved_logging = [(logger, logger.handlers[:], logger.level) for logger in loggers]
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(full_env)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        for logger, handlers, level in saved_logging:
            logger.handlers[:] = handlers
            logger.setLevel(level)
    return subprocess.CompletedProcess(["ltmc", *args], status, out.getvalue(), err.getvalue())


def doctor_json(data_dir: Path, cwd: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = ltmc_here("doctor", "--json", *extra, data_dir=data_dir, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def codes(report: dict[str, Any]) -> list[str]:
    return sorted(p["code"] for p in report["problems"])


def build_store(
    data_dir: Path,
    memories: Sequence[tuple[str, list[str], dict[str, Any], str]] = MEMORIES,
    embedder: Embedder | None = None,
) -> None:
    with MemoryService(hash_settings(data_dir), embedder, background_saves=False) as service:
        service.store_many(list(memories))


def search_results(data_dir: Path, queries: Sequence[str] = QUERIES) -> list[list[tuple[float, str, str]]]:
    """Every hit for each query, best first; equal scores in a fixed order (FAISS orders ties by index position,
    which legitimately differs between two stores holding the same memories)."""
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        return [
            sorted((-round(hit.score, 5), hit.memory.namespace, hit.memory.text) for hit in service.retrieve(q, k=20))
            for q in queries
        ]


def corrupt_snapshot(data_dir: Path) -> None:
    """Flip bytes in the middle of the index file, keeping its size: only the checksum can tell."""
    index = data_dir / "faiss_index"
    data = bytearray(index.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    index.write_bytes(bytes(data))


def listing(*dirs: Path) -> dict[str, tuple[int, int]]:
    """name -> (size, mtime) of every file, leaving out SQLite's -wal/-shm (any reader may create them)."""
    found = {}
    for directory in dirs:
        if not directory.exists():
            continue
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.name.endswith(("-wal", "-shm")):
                info = path.stat()
                found[str(path)] = (info.st_size, info.st_mtime_ns)
    return found


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed: exactly one `ltmc: error:` line and no traceback."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ltmc: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _immutable_works(path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        return False
    try:
        (path / ".probe").write_text("x")
    except OSError:
        return True
    (path / ".probe").unlink()
    subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    return False


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[str]:
    """Make `path` unwritable for this user, for real; yields how. Skips the test if that is impossible.

    Not root: remove the write bits. Root ignores mode bits, so as root the directory is made immutable
    (`chattr +i`, refused even to root) where the file system supports it.
    """
    import pytest

    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o500)
        try:
            yield "chmod 500"
        finally:
            path.chmod(mode)
        return
    if not _immutable_works(path):
        pytest.skip(
            "running as root and `chattr +i` is unavailable here: no way to make a directory read-only "
            "for root (see test_readonly_as_unprivileged_user and test_data_dir_is_a_file)"
        )
    try:
        yield "chattr +i"
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


__all__ = [
    "MEMORIES",
    "QUERIES",
    "build_store",
    "codes",
    "corrupt_snapshot",
    "doctor_json",
    "listing",
    "ltmc",
    "ltmc_here",
    "one_line_error",
    "read_only",
    "search_results",
]
