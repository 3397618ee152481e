"""Data directories this user cannot write, made unwritable in ways that hold for root too.

Root ignores mode bits, so `chmod 500` proves nothing when the tests run as root. Used here:
- `chattr +i` (immutable: refused even to root) in test_ops_states.py's read-only cases, or chmod when not root;
- the real CLI run as the unprivileged user `nobody` (via `setpriv`) on a root-owned directory;
- a data directory path that is a regular file, or lies under one (fails for everyone, needs nothing).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import REPO, child_env
from tests.ops_helpers import build_store, codes, doctor_json, ltmc_here, one_line_error


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or _nobody() is None,
    reason="needs root, setpriv and a `nobody` user to run the CLI unprivileged",
)
def test_readonly_as_unprivileged_user() -> None:
    nobody = _nobody()
    assert nobody is not None
    base = Path(tempfile.mkdtemp(prefix="ltmc-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        data = base / "data"
        build_store(data)
        data.chmod(0o755)  # readable, not writable, for nobody
        for path in data.iterdir():
            path.chmod(0o644)
        env = child_env(data, LTMC_LOG_LEVEL="warning", HOME=str(base))

        def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
            command = [
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                sys.executable,
                "-m",
                "ltms",
                *args,
            ]
            return subprocess.run(command, cwd=base, env=env, capture_output=True, text=True, timeout=60)

        probe = as_nobody("--version")
        if probe.returncode != 0:
            pytest.skip(f"nobody cannot run this interpreter or read {REPO}: {probe.stderr.strip()[:200]}")
        result = as_nobody("doctor", "--json")
        report = json.loads(result.stdout)
        assert result.returncode == 1
        assert "data_dir_not_writable" in codes(report), report["problems"]
        problem = next(p for p in report["problems"] if p["code"] == "data_dir_not_writable")
        assert "Permission denied" in problem["message"]
        database = {c["name"]: c for c in report["checks"]}["database"]
        assert database["memories"] == 6, database  # still fully diagnosed, read-only
        result = as_nobody("doctor", "--fix")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        for args in (["reindex"], ["import", "/dev/null"]):
            error = one_line_error(as_nobody(*args))
            assert f"cannot write to directory {data}: Permission denied" in error, (args, error)
        stats = as_nobody("stats", "--json")  # a read-only command: it works without writing anything
        assert stats.returncode == 0 and json.loads(stats.stdout)["memories"] == 6, stats.stderr
        exported = as_nobody("export", "-")
        assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 6, exported.stderr
    finally:
        shutil.rmtree(base)


def test_data_dir_is_a_file(tmp_path: Path) -> None:
    occupied = tmp_path / "occupied"
    occupied.write_text("not a directory")
    status, report = doctor_json(occupied, tmp_path)
    assert status == 1 and codes(report) == ["data_dir_not_a_directory"]
    for args in (["stats"], ["reindex"], ["doctor", "--fix"]):
        result = ltmc_here(*args, data_dir=occupied, cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(occupied) in one_line_error(ltmc_here("stats", data_dir=occupied, cwd=tmp_path))

    below = occupied / "data"
    status, report = doctor_json(below, tmp_path)
    assert status == 1 and codes(report) == ["data_dir_not_a_directory"]
    assert f"{occupied} is not a directory" in report["problems"][0]["message"]
    assert "Not a directory" in one_line_error(ltmc_here("reindex", data_dir=below, cwd=tmp_path))
    assert occupied.read_text() == "not a directory"
