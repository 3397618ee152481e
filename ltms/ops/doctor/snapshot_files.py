"""Check: the files around the snapshot that stop a server or waste space (a lock path that is not a file, temp
files of killed saves); the fixes move the lock aside and remove the temp files (partial copies, never read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ltms.errors import LTMCError
from ltms.ops.doctor.repair import each, move_aside
from ltms.ops.doctor.report import OK, PROBLEM, Check, CheckResult, FixContext, Fixed, Problem
from ltms.ops.readonly import ReadOnlySnapshotStore
from ltms.ops.text import human_bytes
from ltms.vector_store.faiss_config import ResolvedPaths
from ltms.vector_store.faiss_store import SnapshotStore


def _move_lock_aside(context: FixContext, problem: Problem, path: Path) -> Fixed:
    return move_aside(problem, path, path.with_name(f"{path.name}.bad-{context.stamp}"), say_aside=True)


def _remove_temp_files(context: FixContext, problem: Problem, path: Path) -> Fixed:
    paths = context.settings.paths
    try:
        removed = SnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path).remove_stale_temp_files()
    except (LTMCError, OSError) as exc:
        return Fixed(problem.code, f"remove temp files in {path}: {exc}", ok=False)
    total = human_bytes(sum(size for _, size in removed))
    return Fixed(problem.code, f"removed {len(removed)} temp file(s) ({total}) from {path}")


MOVE_LOCK_ASIDE = each(_move_lock_aside)
REMOVE_TEMP_FILES = each(_remove_temp_files)


def check_snapshot_files(paths: ResolvedPaths) -> CheckResult:
    problems: list[Problem] = []
    notes: list[str] = []
    lock = paths.lock_path
    if lock.is_symlink() or (lock.exists() and not lock.is_file()):
        kind = "symbolic link" if lock.is_symlink() else "directory" if lock.is_dir() else "special file"
        message = f"the snapshot lock {lock} is a {kind}, not a file: a server cannot take the lock and does not start"
        problems.append(
            Problem(
                "lock_not_a_file",
                message,
                f"move it aside to {lock.name}.bad-<timestamp> (ltmc doctor --fix); nothing is deleted",
                MOVE_LOCK_ASIDE,
                str(lock),
            )
        )
        notes.append(message)
    else:
        notes.append(f"lock {lock} {'is a file' if lock.exists() else 'not created yet'}")
    data: dict[str, Any] = {"lock_path": str(lock), "stale_temp_files": []}
    try:
        store = ReadOnlySnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path)
        stale = store.stale_temp_files() if not problems else []
    except (LTMCError, OSError) as exc:
        stale = []
        notes.append(f"temp files not checked ({exc})")
    if stale:
        total = sum(size for _, size in stale)
        data["stale_temp_files"] = [str(path) for path, _ in stale]
        message = (
            f"{len(stale)} temp file(s) left by snapshot saves that were killed ({human_bytes(total)}): "
            + ", ".join(path.name for path, _ in stale[:5])
            + (", ..." if len(stale) > 5 else "")
        )
        notes.append(message)
        problems.append(
            Problem(
                "stale_temp_files",
                message,
                "remove them (ltmc doctor --fix, or the next server start); no save is writing them",
                REMOVE_TEMP_FILES,
                str(paths.index_path.parent),
            )
        )
    else:
        notes.append("no temp files left by killed saves")
    return Check("snapshot files", PROBLEM if problems else OK, "; ".join(notes), data), problems
