"""Check: index files left behind by the old path bug (a bare `faiss_index` resolved against the working
directory); the fix renames each `<name>.stray-<timestamp>`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import ltms
from ltms.ops.doctor.repair import each, move_aside
from ltms.ops.doctor.report import OK, PROBLEM, Check, CheckResult, FixContext, Fixed, Problem
from ltms.ops.text import human_bytes
from ltms.records import iso_utc
from ltms.vector_store.faiss_config import DB_NAME, DEFAULT_INDEX_NAME, ResolvedPaths

STRAY_GLOB = DEFAULT_INDEX_NAME + "*"


def _move_stray_aside(context: FixContext, problem: Problem, path: Path) -> Fixed:
    return move_aside(problem, path, path.with_name(f"{path.name}.stray-{context.stamp}"), say_aside=False)


MOVE_STRAY_ASIDE = each(_move_stray_aside)


def default_scan_dirs() -> list[Path]:
    """Where the old bug left `faiss_index*` files: the working directory and next to the scripts."""
    dirs = [Path(ltms.__file__).resolve().parent.parent]
    with contextlib.suppress(OSError):
        dirs.insert(0, Path.cwd())
    if sys.argv and sys.argv[0] not in ("", "-c", "-m"):
        dirs.append(Path(sys.argv[0]).resolve().parent)
    return dirs


def find_strays(scan_dirs: Iterable[Path], paths: ResolvedPaths) -> list[Path]:
    own = {paths.index_path.parent.resolve(), paths.data_dir.resolve()}
    seen: set[Path] = set()
    found: list[Path] = []
    for directory in scan_dirs:
        directory = directory.resolve()
        if directory in seen or directory in own:
            continue
        seen.add(directory)
        try:
            entries = sorted(directory.glob(STRAY_GLOB))
        except OSError:
            continue
        found += [p for p in entries if ".stray-" not in p.name and p.suffix != ".py" and not _belongs_to_a_store(p)]
    return found


def _belongs_to_a_store(path: Path) -> bool:
    """Whether `path` can be a file of some LTMC store (another one than doctor's: those directories are skipped).
    The old path bug wrote index files with no manifest, no lock and no database beside them; a store always has
    a lock and a manifest beside its index, and its data directory holds the database."""
    directory, name = path.parent, path.name
    if (directory / DB_NAME).exists():
        return True
    if name.endswith((".manifest.json", ".lock")) or ".bad-" in name:
        return True
    return any((directory / f"{name}{suffix}").exists() for suffix in (".manifest.json", ".lock"))


def check_strays(paths: ResolvedPaths, scan_dirs: Sequence[Path]) -> CheckResult:
    strays = find_strays(scan_dirs, paths)
    searched = ", ".join(dict.fromkeys(str(d.resolve()) for d in scan_dirs))
    data = {"searched": list(dict.fromkeys(str(d.resolve()) for d in scan_dirs)), "found": [str(p) for p in strays]}
    if not strays:
        return Check("stray files", OK, f"no {STRAY_GLOB} in {searched}", data), []
    problems = []
    for path in strays:
        try:
            info = path.lstat()
            about = f"{human_bytes(info.st_size)}, modified {iso_utc(info.st_mtime)}"
        except OSError as exc:
            about = exc.strerror or str(exc)
        problems.append(
            Problem(
                "stray_index_file",
                f"{path} ({about}) looks like an index file left by the old path bug; LTMC does not "
                f"use it (its index is {paths.index_path})",
                f"move it aside to {path.name}.stray-<timestamp> (ltmc doctor --fix); nothing is deleted",
                MOVE_STRAY_ASIDE,
                str(path),
            )
        )
    return Check("stray files", PROBLEM, f"{len(strays)} stray file(s) in {searched}", data), problems
