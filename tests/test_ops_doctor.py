"""`ltmc doctor [--fix] [--json]` and its thin wrapper `fix_faiss_persistence.py`, on real data directories."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from ltms.ops.doctor import apply_fixes, diagnose
from ltms.service import MemoryService
from tests.helpers import REPO, child_env, hash_settings
from tests.ops_helpers import (
    build_store,
    codes,
    corrupt_snapshot,
    doctor_json,
    listing,
    ltmc_here,
    search_results,
)


def test_healthy_store_table_and_json(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    result = ltmc_here("doctor", data_dir=data, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Healthy: no problems found." in out
    # Every setting with its value and the source that won.
    assert str(data) in out
    assert "environment LTMC_DATA_DIR" in out and "environment LTMC_EMBEDDER" in out
    for name in ("max_text_bytes", "snapshot_every", "http_port", "auth_token", "log_level"):
        assert name in out
    assert "integrity ok" in out and "journal wal" in out and "6 memories" in out
    assert "checksum ok" in out and "6 vectors for 6 memories" in out and "model hash-384-v1" in out

    status, report = doctor_json(data, tmp_path)
    assert status == 0 and report["ok"] is True and report["problems"] == [] and report["fixed"] == []
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["data directory"]["mode"] == "0700" and checks["data directory"]["writable"] is True
    assert checks["database"]["integrity"] == ["ok"] and checks["database"]["memories"] == 6
    assert checks["index snapshot"]["vectors"] == 6
    assert checks["index snapshot"]["last_change"] == checks["index snapshot"]["database_latest_change"]
    settings = {s["name"]: s for s in report["settings"]}
    assert settings["embedder"] == {"name": "embedder", "value": "hash", "source": "environment LTMC_EMBEDDER"}


def test_fresh_data_dir_is_healthy_and_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "not-yet"
    status, report = doctor_json(data, tmp_path)
    assert status == 0 and report["ok"], report
    assert {c["name"]: c["status"] for c in report["checks"]}["data directory"] == "info"
    status, report = doctor_json(data, tmp_path, "--fix")
    assert status == 0 and report["fixed"] == [] and report["found"] == []
    assert not data.exists(), "doctor must not create the data directory"
    assert "nothing to fix" in ltmc_here("doctor", "--fix", data_dir=data, cwd=tmp_path).stdout


def test_corrupt_snapshot_is_diagnosed_without_changes_then_fixed_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    expected = search_results(data)
    corrupt_snapshot(data)
    before = listing(data)
    status, report = doctor_json(data, tmp_path)
    assert status == 1 and codes(report) == ["snapshot_corrupt"]
    assert "checksum mismatch" in report["problems"][0]["message"]
    assert listing(data) == before, "doctor without --fix changed files"

    result = ltmc_here("doctor", "--fix", data_dir=data, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rebuilt the index from the database: 6 vectors" in result.stdout
    assert "Healthy: no problems found." in result.stdout
    aside = sorted(p.name for p in data.iterdir() if ".bad-" in p.name)
    assert len(aside) == 2 and aside[0].startswith("faiss_index.bad-"), aside  # kept, never deleted

    settled = listing(data)
    status, report = doctor_json(data, tmp_path, "--fix")
    assert status == 0 and report["found"] == [] and report["fixed"] == []
    assert listing(data) == settled, "a second --fix changed something"
    assert search_results(data) == expected


def test_stray_index_files_in_the_working_directory(tmp_path: Path) -> None:
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    cwd.mkdir()
    build_store(data)
    (cwd / "faiss_index").write_bytes(b"old index from the path bug")
    (cwd / "faiss_index.pkl").write_bytes(b"old metadata")
    (cwd / "faiss_index_helper.py").write_text("# a source file is not an index\n")
    status, report = doctor_json(data, cwd)
    assert status == 1 and codes(report) == ["stray_index_file", "stray_index_file"]
    assert {p["path"] for p in report["problems"]} == {str(cwd / "faiss_index"), str(cwd / "faiss_index.pkl")}
    assert str(cwd) in {c["name"]: c for c in report["checks"]}["stray files"]["searched"]

    result = ltmc_here("doctor", "--fix", data_dir=data, cwd=cwd)
    assert result.returncode == 0, result.stdout
    assert not (cwd / "faiss_index").exists() and not (cwd / "faiss_index.pkl").exists()
    moved = {p.name.split(".stray-")[0]: p.read_bytes() for p in cwd.iterdir() if ".stray-" in p.name}
    assert moved == {"faiss_index": b"old index from the path bug", "faiss_index.pkl": b"old metadata"}
    assert (cwd / "faiss_index_helper.py").exists()
    settled = listing(cwd, data)
    assert ltmc_here("doctor", "--fix", data_dir=data, cwd=cwd).returncode == 0
    assert listing(cwd, data) == settled


def test_index_file_in_the_data_dir_is_not_a_stray(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    status, report = doctor_json(data, data)  # working directory == data directory
    assert status == 0, report


def test_loose_permissions_are_fixed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    data.chmod(0o755)
    status, report = doctor_json(data, tmp_path)
    assert status == 1 and codes(report) == ["data_dir_permissions"]
    status, report = doctor_json(data, tmp_path, "--fix")
    assert status == 0 and report["fixed"][0]["action"] == f"chmod 700 {data} (was 0755)"
    assert data.stat().st_mode & 0o777 == 0o700


def test_snapshot_behind_the_database_is_info_not_a_problem(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    service = MemoryService(hash_settings(data), background_saves=False)
    service.store("stored after the last snapshot, not yet saved")
    service.storage.db.close()  # like a kill: no final snapshot
    status, report = doctor_json(data, tmp_path)
    assert status == 0, report
    check = {c["name"]: c for c in report["checks"]}["index snapshot"]
    assert check["status"] == "info" and "replayed" in check["detail"]
    assert check["last_change"] < check["database_latest_change"]


def test_snapshot_ahead_of_the_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data, [("first memory", [], {}, "default")])
    shutil.copy(data / "ltmc.sqlite3", tmp_path / "old.sqlite3")
    build_store(data)
    shutil.copy(tmp_path / "old.sqlite3", data / "ltmc.sqlite3")  # the database restored from an older copy
    status, report = doctor_json(data, tmp_path)
    assert status == 1 and codes(report) == ["snapshot_ahead"]
    status, report = doctor_json(data, tmp_path, "--fix")
    assert status == 0, report
    assert {c["name"]: c for c in report["checks"]}["index snapshot"]["vectors"] == 1


def test_snapshot_out_of_sync_with_the_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    with sqlite3.connect(data / "ltmc.sqlite3") as conn:  # a row removed behind the change log's back
        conn.execute("DELETE FROM memories WHERE id = 2")
    status, report = doctor_json(data, tmp_path)
    assert status == 1 and codes(report) == ["snapshot_out_of_sync"]
    assert "1 of deleted or unknown memories" in report["problems"][0]["message"]
    status, report = doctor_json(data, tmp_path, "--fix")
    assert status == 0, report


def test_model_mismatch_is_reported_not_fixed(tmp_path: Path) -> None:
    from ltms.embeddings.hashing import HashingEmbedder

    data = tmp_path / "data"
    build_store(data, embedder=HashingEmbedder(dimension=64))
    status, report = doctor_json(data, tmp_path, "--fix")
    assert status == 1 and codes(report) == ["model_mismatch"]
    assert "ltmc reindex --reembed" in report["problems"][0]["remedy"]
    assert report["fixed"] == []
    # The snapshot is judged against the model of the data it indexes, so it is fine.
    assert {c["name"]: c["status"] for c in report["checks"]}["index snapshot"] == "ok"


def test_damaged_database_blocks_the_rebuild(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    corrupt_snapshot(data)
    db = data / "ltmc.sqlite3"
    raw = bytearray(db.read_bytes())
    raw[4096:8192] = b"\xa5" * 4096  # a whole b-tree page overwritten
    db.write_bytes(bytes(raw))
    before = listing(data)
    status, report = doctor_json(data, tmp_path, "--fix")
    assert status == 1
    assert {"db_integrity", "db_unreadable"} & set(codes(report)), report["problems"]
    assert listing(data) == before, "--fix must not rebuild the index from a damaged database"


def test_wrapper_script_is_the_same_as_doctor(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_store(data)
    corrupt_snapshot(data)
    env = child_env(data, LTMC_LOG_LEVEL="warning")
    env.pop("PYTHONPATH")
    script = str(REPO / "fix_faiss_persistence.py")
    run = subprocess.run([sys.executable, script, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 1 and codes(json.loads(run.stdout)) == ["snapshot_corrupt"]
    run = subprocess.run([sys.executable, script, "--fix"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and "Healthy" in run.stdout, run.stdout + run.stderr
    assert len([line for line in script_lines(script) if line.strip() and not line.startswith("#")]) < 60


def script_lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines()


def copy_of_the_checkout(tmp_path: Path) -> Path:
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "ltms", checkout / "ltms", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "fix_faiss_persistence.py", checkout)
    return checkout


def run_with_a_bare_python(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python script ARGS` with a Python that lacks LTMC's dependencies, like the system's (-S: no site-packages)."""
    command = [sys.executable, "-S", str(script), *args]
    return subprocess.run(command, cwd="/", env=env, capture_output=True, text=True, timeout=120)


def test_wrapper_with_the_system_python_and_no_venv_says_to_run_setup(tmp_path: Path) -> None:
    checkout = copy_of_the_checkout(tmp_path)
    env = child_env(tmp_path / "data")
    env.pop("PYTHONPATH")
    run = run_with_a_bare_python(checkout / "fix_faiss_persistence.py", "--json", env=env)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert str(checkout / "scripts" / "setup.sh") in run.stderr and "No module named" in run.stderr
    assert not (tmp_path / "data").exists()


def test_wrapper_with_the_system_python_uses_the_project_venv(tmp_path: Path) -> None:
    """A checkout elsewhere with its .venv: the script re-executes itself with it, runs the copy's ltms, and scans
    the directory it lives in for strays."""
    checkout = copy_of_the_checkout(tmp_path)
    (checkout / ".venv").symlink_to(Path(sys.prefix))  # the environment setup.sh would have made
    (checkout / "faiss_index").write_bytes(b"left next to the scripts")
    env = child_env(tmp_path / "data", LTMC_LOG_LEVEL="warning")
    env.pop("PYTHONPATH")
    run = run_with_a_bare_python(checkout / "fix_faiss_persistence.py", "--json", env=env)
    report = json.loads(run.stdout)
    assert run.returncode == 1 and codes(report) == ["stray_index_file"], run.stderr
    assert report["problems"][0]["path"] == str(checkout / "faiss_index")
    searched = {c["name"]: c for c in report["checks"]}["stray files"]["searched"]
    assert str(checkout) in searched and str(REPO) not in searched  # ltms was imported from the copy


def test_data_dir_flag_before_or_after_the_command(tmp_path: Path) -> None:
    """`ltmc --data-dir X doctor` must check X, not the default directory (the flag used to be reset)."""
    flagged = tmp_path / "flagged"
    for argv in (["--data-dir", str(flagged), "doctor", "--json"], ["doctor", "--json", "--data-dir", str(flagged)]):
        result = ltmc_here(*argv, data_dir=tmp_path / "from-env", cwd=tmp_path)
        settings = {s["name"]: s for s in json.loads(result.stdout)["settings"]}
        assert settings["data_dir"]["value"] == str(flagged), argv
        assert settings["data_dir"]["source"] == "argument --data-dir"


def test_a_snapshot_from_another_data_directory_is_a_problem_and_fixed(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for data in (ours, theirs):
        with MemoryService(hash_settings(data)) as service:
            service.store("the same text in both directories")
    for name in ("faiss_index", "faiss_index.manifest.json"):
        shutil.copyfile(theirs / name, ours / name)
    status, report = doctor_json(ours, tmp_path)
    assert status == 1
    assert [p["code"] for p in report["problems"]] == ["snapshot_corrupt"]
    assert "another database" in report["problems"][0]["message"]
    status, _ = doctor_json(ours, tmp_path, "--fix")
    assert status == 0
    assert doctor_json(ours, tmp_path)[0] == 0


def test_a_problem_carries_its_fix_whatever_its_code(tmp_path: Path) -> None:
    """--fix runs the fix a problem carries, not one looked up by its code: renamed codes are still repaired,
    in one pass, loose permissions and a corrupt snapshot alike."""
    data = tmp_path / "data"
    build_store(data)
    data.chmod(0o755)
    corrupt_snapshot(data)
    settings = hash_settings(data)
    found = diagnose(settings, [tmp_path]).problems
    assert sorted(p.code for p in found) == ["data_dir_permissions", "snapshot_corrupt"] and all(
        p.fixable for p in found
    )
    for problem in found:
        problem.code = "renamed_" + problem.code
    fixed = apply_fixes(settings, found)
    assert [f.ok for f in fixed] == [True, True], fixed
    assert data.stat().st_mode & 0o777 == 0o700
    assert diagnose(settings, [tmp_path]).problems == []
