"""`ltmc doctor [--fix] [--json]`: show the configuration, check the data directory, database and index
snapshot, find index files left behind by the old path bug, and (with --fix) repair what it found.

Without --fix nothing is changed: the database is opened read-only, the snapshot is verified without taking
the write lock, and the memory service (which would rebuild or move files) is not opened. The one thing doctor
writes is a probe file it removes at once, because only a real write tells whether a directory is writable
(root ignores mode bits; immutable directories and read-only mounts refuse root too).

--fix never deletes a memory or a file it cannot prove is garbage: stray index files are renamed
`<name>.stray-<timestamp>`, a bad snapshot is moved aside by SnapshotStore (`<name>.bad-<timestamp>`) and rebuilt
from SQLite, unreadable rows are moved to the quarantine table, and group/other permission bits are removed from the
data directory. The only files removed are temp files of snapshot saves that were killed (partial copies, never
read). A second run finds nothing to fix and changes nothing.

With LTMC_BACKEND=postgres the checks are the server's instead (postgres.py): reachable, pgvector, indexes,
HNSW settings, counts and the model guard, read-only, with nothing for --fix to repair.

Where things are: report.py (Problem, Check, Fixed, Report, Fix and the text rendering), diagnosis.py (diagnose: the
checks in order; a problem that blocks a rebuild holds the index rebuild back), one module per check with the fix
for what it finds beside it (embedder, directory, database, snapshot, snapshot_files, strays), and repair.py
(apply_fixes: runs the fix each problem carries, so renaming a problem code cannot disable its fix).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ltms.config import Settings
from ltms.ops.doctor.diagnosis import diagnose
from ltms.ops.doctor.repair import apply_fixes
from ltms.ops.doctor.report import Check, Fix, Fixed, Problem, Report, render
from ltms.ops.doctor.strays import default_scan_dirs, find_strays
from ltms.ops.readonly import refuse_writes
from ltms.storage.pg_url import redact_url


def run_doctor(
    settings: Settings, fix: bool = False, as_json: bool = False, scan_dirs: Sequence[Path] | None = None
) -> int:
    if fix:
        refuse_writes(settings, "doctor --fix")
    report = diagnose(settings, scan_dirs)
    if fix and report.problems:
        found = report.problems
        fixed = apply_fixes(settings, found)
        report = diagnose(settings, scan_dirs)
        report.found, report.fixed = found, fixed
    elif fix:
        report.found = []
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        where = (
            f"PostgreSQL store {redact_url(settings.database_url or '')}" if settings.backend == "postgres" else None
        )
        print(render(report, settings.paths, where))
    return 0 if report.ok else 1


__all__ = [
    "Check",
    "Fix",
    "Fixed",
    "Problem",
    "Report",
    "apply_fixes",
    "default_scan_dirs",
    "diagnose",
    "find_strays",
    "run_doctor",
]
