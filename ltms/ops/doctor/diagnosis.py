"""Run every check, in order, without changing anything (apart from a probe file removed at once)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ltms.config import Settings
from ltms.ops.doctor.database import DatabaseView, check_database
from ltms.ops.doctor.directory import check_directory
from ltms.ops.doctor.embedder import check_embedder
from ltms.ops.doctor.report import Check, Problem, Report
from ltms.ops.doctor.snapshot import REBUILD_INDEX, Snapshot, check_snapshot
from ltms.ops.doctor.snapshot_files import check_snapshot_files
from ltms.ops.doctor.strays import check_strays, default_scan_dirs


def diagnose(settings: Settings, scan_dirs: Sequence[Path] | None = None) -> Report:
    """Check everything without changing anything (apart from a removed probe file)."""
    if settings.backend == "postgres":  # no data directory, database file or snapshot: the server's checks
        from ltms.ops.doctor.postgres import diagnose_postgres

        return diagnose_postgres(settings)
    paths = settings.paths
    checks: list[Check] = []
    problems: list[Problem] = []

    def add(check: Check, found: Iterable[Problem] = ()) -> None:
        checks.append(check)
        problems.extend(found)

    embedder_check, embedder_problems, configured = check_embedder(settings)
    add(embedder_check, embedder_problems)
    add(*check_directory(paths.data_dir, "data directory", "data_dir"))
    if paths.index_path.parent != paths.data_dir:
        add(*check_directory(paths.index_path.parent, "index directory", "index_dir"))
    db = DatabaseView(paths.db_path)
    try:
        expected = db.model() or configured  # a snapshot is built for the store's model
        # The snapshot is loaded before the database is read: the database only moves forward, so a snapshot
        # that a running server saves meanwhile can never look ahead of it.
        snapshot = Snapshot.load(paths, expected, db.meta.get("database_id", ""))
        add(*check_database(db, configured, snapshot.last_seq))
        add(*check_snapshot(paths, snapshot, db))
    finally:
        db.close()
    add(*check_snapshot_files(paths))
    add(*check_strays(paths, default_scan_dirs() if scan_dirs is None else scan_dirs))
    _hold_rebuilds(problems)
    return Report(settings=settings.diagnostics(), checks=checks, problems=problems)


def _hold_rebuilds(problems: list[Problem]) -> None:
    """A rebuild from a database that cannot (or must not) be used waits until a person has acted."""
    blockers = sorted({p.code for p in problems if p.blocks_rebuild})
    if not blockers:
        return
    for problem in problems:
        if problem.fix == REBUILD_INDEX:
            problem.fix = None
            problem.remedy += f" (once {', '.join(blockers)} is resolved)"
