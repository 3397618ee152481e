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
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import sqlite3
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ltms
from ltms.config import Settings
from ltms.embeddings import make_embedder
from ltms.errors import LTMCError
from ltms.fsutil import unwritable_reason
from ltms.ops.readonly import ReadOnlySnapshotStore, connect_readonly, refuse_writes, table_names
from ltms.ops.text import human_age, human_bytes, table
from ltms.records import iso_utc
from ltms.storage.db import Database, unreadable_rows
from ltms.vector_store.faiss_config import DB_NAME, DEFAULT_INDEX_NAME, ResolvedPaths
from ltms.vector_store.faiss_store import Manifest, SnapshotInvalid, SnapshotMissing, SnapshotStore

OK, INFO, WARN, PROBLEM = "ok", "info", "warn", "problem"
MIN_FREE_BYTES = 64 * 1024 * 1024
STRAY_GLOB = DEFAULT_INDEX_NAME + "*"
SNAPSHOT_CODES = (
    "snapshot_missing",
    "snapshot_corrupt",
    "snapshot_model_mismatch",
    "snapshot_ahead",
    "snapshot_out_of_sync",
)
# With one of these the index cannot (or must not) be rebuilt from the database until a person acts.
REBUILD_BLOCKERS = (
    "embedder_unavailable",
    "model_mismatch",
    "mixed_embeddings",
    "db_unreadable",
    "db_integrity",
    "data_dir_not_writable",
    "data_dir_not_a_directory",
    "index_dir_not_writable",
    "index_dir_not_a_directory",
    "snapshot_unreadable",
)


@dataclass
class Problem:
    code: str
    message: str
    remedy: str
    fixable: bool
    path: str | None = None


@dataclass
class Check:
    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fixed:
    code: str
    action: str
    ok: bool = True


@dataclass
class Report:
    settings: list[tuple[str, str, str]]
    checks: list[Check]
    problems: list[Problem]
    fixed: list[Fixed] = field(default_factory=list)
    found: list[Problem] | None = None  # what --fix started from

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "ok": self.ok,
            "settings": [{"name": n, "value": v, "source": s} for n, v, s in self.settings],
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail, **c.data} for c in self.checks],
            "problems": [asdict(p) for p in self.problems],
            "fixed": [asdict(f) for f in self.fixed],
        }
        if self.found is not None:
            result["found"] = [asdict(p) for p in self.found]
        return result


# -- the command ----------------------------------------------------------------------------------------------


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
        print(render(report, settings.paths))
    return 0 if report.ok else 1


def render(report: Report, paths: ResolvedPaths) -> str:
    out = [
        f"ltmc doctor: data directory {paths.data_dir}",
        "",
        "Configuration",
        table(report.settings, ("SETTING", "VALUE", "SOURCE")),
        "",
        "Checks",
        table([(c.status, c.name, c.detail) for c in report.checks], ("STATUS", "CHECK", "DETAIL")),
    ]
    if report.found is not None:
        out += ["", "Fixed"]
        if report.fixed:
            out.append(table([(f.code, ("" if f.ok else "FAILED: ") + f.action) for f in report.fixed]))
        elif report.found:
            out.append("  nothing that --fix can repair")
        else:
            out.append("  nothing to fix")
    out.append("")
    if report.ok:
        out.append("Healthy: no problems found.")
        return "\n".join(out)
    out.append(f"Problems ({len(report.problems)})")
    for problem in report.problems:
        out.append(f"  {problem.code}: {problem.message}")
        out.append(f"    {'fix' if problem.fixable else 'to do'}: {problem.remedy}")
    fixable = sum(p.fixable for p in report.problems)
    if fixable and report.found is None:
        out += ["", f"`ltmc doctor --fix` repairs {fixable} of these {len(report.problems)} problems."]
    return "\n".join(out)


# -- diagnosis ------------------------------------------------------------------------------------------------


def diagnose(settings: Settings, scan_dirs: Sequence[Path] | None = None) -> Report:
    """Check everything without changing anything (apart from a removed probe file)."""
    paths = settings.paths
    checks: list[Check] = []
    problems: list[Problem] = []

    def add(check: Check, found: Iterable[Problem] = ()) -> None:
        checks.append(check)
        problems.extend(found)

    embedder_check, embedder_problems, configured = _check_embedder(settings)
    add(embedder_check, embedder_problems)
    add(*_check_directory(paths.data_dir, "data directory", "data_dir"))
    if paths.index_path.parent != paths.data_dir:
        add(*_check_directory(paths.index_path.parent, "index directory", "index_dir"))
    db = _DatabaseView(paths.db_path)
    try:
        expected = db.model() or configured  # a snapshot is built for the store's model
        # The snapshot is loaded before the database is read: the database only moves forward, so a snapshot
        # that a running server saves meanwhile can never look ahead of it.
        snapshot = _Snapshot.load(paths, expected, db.meta.get("database_id", ""))
        add(*_check_database(db, configured, snapshot))
        add(*_check_snapshot(paths, snapshot, db))
    finally:
        db.close()
    add(*_check_snapshot_files(paths))
    add(*_check_strays(paths, default_scan_dirs() if scan_dirs is None else scan_dirs))

    codes = {p.code for p in problems}
    blockers = sorted(codes.intersection(REBUILD_BLOCKERS))
    for problem in problems:
        if problem.code in SNAPSHOT_CODES and blockers:
            problem.fixable = False
            problem.remedy += f" (once {', '.join(blockers)} is resolved)"
    return Report(settings=settings.diagnostics(), checks=checks, problems=problems)


def _check_embedder(settings: Settings) -> tuple[Check, list[Problem], tuple[str, int] | None]:
    try:
        embedder = make_embedder(settings.embedder)  # construction only locates files; weights load lazily
        name, dimension = str(embedder.name), int(embedder.dimension)
    except LTMCError as exc:  # whatever stops it here stops the server too
        message = f"the configured embedder {settings.embedder!r} cannot be used: {exc}"
        return (
            Check("embedder", PROBLEM, message),
            [Problem("embedder_unavailable", message, "install the model, or configure another LTMC_EMBEDDER", False)],
            None,
        )
    return (
        Check(
            "embedder",
            OK,
            f"{name}, {dimension} dimensions (model not loaded by doctor)",
            {"model": name, "dimension": dimension},
        ),
        [],
        (name, dimension),
    )


def _check_directory(path: Path, what: str, prefix: str) -> tuple[Check, list[Problem]]:
    problems: list[Problem] = []
    if not path.exists():
        ancestor = path
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            message = f"{path} cannot be created: {ancestor} is not a directory"
            problems.append(
                Problem(f"{prefix}_not_a_directory", message, "configure another directory", False, str(path))
            )
            return Check(what, PROBLEM, message), problems
        writable, reason = _probe_writable(ancestor)
        if not writable:
            message = f"{path} cannot be created: {ancestor} is not writable ({reason})"
            problems.append(
                Problem(
                    f"{prefix}_not_writable", message, "configure a directory this user can write", False, str(path)
                )
            )
            return Check(what, PROBLEM, message), problems
        return Check(
            what,
            INFO,
            f"{path} does not exist yet: it is created (mode 0700) on first use",
            {"path": str(path), "exists": False},
        ), problems
    if not path.is_dir():
        message = f"{path} exists but is not a directory"
        problems.append(
            Problem(
                f"{prefix}_not_a_directory",
                message,
                "move the file away or configure another directory",
                False,
                str(path),
            )
        )
        return Check(what, PROBLEM, message, {"path": str(path), "exists": True}), problems

    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    me = os.geteuid()
    owner = _user(info.st_uid)
    status = OK
    notes = [f"owner {owner}", f"mode {mode:04o}"]
    if info.st_uid != me:
        status = WARN
        notes.append(f"doctor runs as {_user(me)}: the server must run as the owner")
    if mode & 0o077:
        notes[-1] += " (open to other users)"
        problems.append(
            Problem(
                f"{prefix}_permissions",
                f"{path} has mode {mode:04o}: other users can read the memories",
                "chmod 700 (ltmc doctor --fix)" if me in (0, info.st_uid) else f"chmod 700 {path} as {owner}",
                me in (0, info.st_uid),
                str(path),
            )
        )
    writable, reason = _probe_writable(path)
    notes.append("writable" if writable else f"NOT writable ({reason})")
    if not writable:
        problems.append(
            Problem(
                f"{prefix}_not_writable",
                f"{path} is not writable: {reason}",
                "make it writable for the user the server runs as, or configure another directory",
                False,
                str(path),
            )
        )
    if not os.access(path, os.R_OK | os.X_OK):
        problems.append(
            Problem(
                f"{prefix}_not_readable",
                f"{path} cannot be read by {_user(me)}",
                "run as the owner, or fix its permissions",
                False,
                str(path),
            )
        )
    free = shutil.disk_usage(path).free
    notes.append(f"{human_bytes(free)} free")
    if free < MIN_FREE_BYTES:
        problems.append(
            Problem(
                "low_disk_space",
                f"only {human_bytes(free)} free on the file system of {path}",
                f"free space: writes fail below a few MiB (doctor warns below {human_bytes(MIN_FREE_BYTES)})",
                False,
                str(path),
            )
        )
    data = {
        "path": str(path),
        "exists": True,
        "owner": owner,
        "uid": info.st_uid,
        "mode": f"{mode:04o}",
        "writable": writable,
        "free_bytes": free,
    }
    return Check(what, PROBLEM if problems else status, f"{path}: {', '.join(notes)}", data), problems


def _probe_writable(directory: Path) -> tuple[bool, str]:
    reason = unwritable_reason(directory)
    return reason is None, reason or ""


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


@dataclass
class _DatabaseState:
    count: int = 0
    latest: int = 0
    ids: set[int] = field(default_factory=set)
    changed: set[int] = field(default_factory=set)  # memories changed after the snapshot's last change


class _DatabaseView:
    """The database, read-only. Everything compared with the snapshot is read in one read transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.exists = path.exists()
        self.conn: sqlite3.Connection | None = None
        self.how = ""
        self.error: str | None = None
        self.tables: set[str] = set()
        self.meta: dict[str, str] = {}
        self.state = _DatabaseState()  # filled by _check_database
        if not self.exists:
            return
        try:
            self.conn, self.how = connect_readonly(path)
            self.tables = table_names(self.conn)
            if "meta" in self.tables:
                self.meta = {str(k): str(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}
        except (LTMCError, sqlite3.Error) as exc:
            self.error = str(exc)
            self.close()

    def model(self) -> tuple[str, int] | None:
        name, dimension = self.meta.get("model"), self.meta.get("dimension")
        if name is None or dimension is None or not dimension.isdigit():
            return None
        return name, int(dimension)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class _Snapshot:
    state: str  # missing | invalid | unreadable | loaded
    reason: str = ""
    code: str = ""
    manifest: Manifest | None = None
    ids: set[int] | None = None

    @classmethod
    def load(cls, paths: ResolvedPaths, expected: tuple[str, int] | None, database_id: str = "") -> _Snapshot:
        store = ReadOnlySnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path)
        try:
            manifest = store.read_manifest()
        except SnapshotInvalid:
            manifest = None
        if expected is None and manifest is not None:  # nothing to compare with: check it against itself
            expected = (manifest.model, manifest.dimension)
        try:
            name, dimension = expected or ("", 0)
            index, manifest = store.load(dimension, name, database_id)  # a foreign snapshot is invalid here too
        except SnapshotMissing:
            return cls("missing")
        except SnapshotInvalid as exc:
            wrong_model = manifest is not None and (manifest.model, manifest.dimension) != expected
            return cls("invalid", str(exc), "snapshot_model_mismatch" if wrong_model else "snapshot_corrupt", manifest)
        except (LTMCError, OSError) as exc:
            return cls("unreadable", str(exc), "snapshot_unreadable", manifest)
        return cls("loaded", manifest=manifest, ids=set(index.ids().tolist()))


def _check_database(
    db: _DatabaseView, configured: tuple[str, int] | None, snapshot: _Snapshot
) -> tuple[Check, list[Problem]]:
    if not db.exists:
        return Check(
            "database",
            INFO,
            f"{db.path} does not exist yet: it is created on first use",
            {"path": str(db.path), "exists": False, "memories": 0},
        ), []
    if db.conn is None:
        message = f"cannot read the database {db.path}: {db.error}"
        return (
            Check("database", PROBLEM, message, {"path": str(db.path), "exists": True}),
            [
                Problem(
                    "db_unreadable",
                    message,
                    "restore it from a backup or an export (the index cannot replace it)",
                    False,
                    str(db.path),
                )
            ],
        )
    conn = db.conn
    problems: list[Problem] = []
    state = _DatabaseState()
    groups: list[tuple[str, int, int]] = []
    unreadable: list[tuple[int, str]] = []
    conn.execute("BEGIN")
    try:
        integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check(20)")]
        if {"memories", "changes"} <= db.tables:
            state.count = int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
            state.latest = int(conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0])
            unreadable = unreadable_rows(conn)
            groups = [
                (str(m), int(size), int(n))
                for m, size, n in conn.execute(
                    "SELECT model, length(embedding), count(*) FROM memories GROUP BY 1, 2 ORDER BY 3 DESC"
                )
            ]
            if snapshot.state == "loaded" and snapshot.manifest is not None:
                state.ids = {int(r[0]) for r in conn.execute("SELECT id FROM memories")}
                state.changed = {
                    int(r[0])
                    for r in conn.execute(
                        "SELECT DISTINCT memory_id FROM changes WHERE seq > ?", (snapshot.manifest.last_seq,)
                    )
                }
    except sqlite3.Error as exc:
        db.error = str(exc)  # the snapshot is then not compared with figures that were never read
        message = f"cannot read the database {db.path}: {exc}"
        return (
            Check("database", PROBLEM, message, {"path": str(db.path), "exists": True}),
            [Problem("db_unreadable", message, "restore it from a backup or an export", False, str(db.path))],
        )
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("COMMIT")
    db.state = state

    journal = _journal_mode(db.path)
    wal = db.path.with_name(db.path.name + "-wal")
    wal_size = wal.stat().st_size if wal.exists() else None
    stored = db.model()
    notes = [
        f"opened {db.how}",
        "integrity ok" if integrity == ["ok"] else "INTEGRITY CHECK FAILED",
        f"journal {journal}" + (f" (wal file {human_bytes(wal_size)})" if wal_size is not None else ""),
        f"{state.count} memories",
        f"latest change {state.latest}",
        f"model {stored[0]} ({stored[1]}-d)" if stored else "no model recorded yet",
    ]
    status = OK
    if integrity != ["ok"]:
        problems.append(
            Problem(
                "db_integrity",
                f"the integrity check of {db.path} failed: {'; '.join(integrity)}",
                "stop the servers, copy the data directory, `ltmc export` what can still be read "
                "and import it into a fresh data directory",
                False,
                str(db.path),
            )
        )
    if unreadable:
        notes.append(f"{len(unreadable)} unreadable")
        listed = "; ".join(f"id {memory_id}: {why}" for memory_id, why in unreadable[:5])
        more = f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        problems.append(
            Problem(
                "unreadable_rows",
                f"{len(unreadable)} memories hold values no read can show ({listed}{more})",
                "move them whole to the quarantine table in the database (ltmc doctor --fix); nothing is deleted",
                True,
                str(db.path),
            )
        )
    if journal not in ("wal", "none yet"):
        status = WARN
        notes.append("the server switches it to WAL when it opens the database")
    if stored and configured and stored != configured:  # even an empty store keeps its model
        problems.append(
            Problem(
                "model_mismatch",
                f"the memories were embedded with {stored[0]} ({stored[1]}-d) but the configured model "
                f"is {configured[0]} ({configured[1]}-d): the server refuses to start",
                _model_remedy(stored[0]),
                False,
                str(db.path),
            )
        )
    if stored:
        odd = sum(n for model, size, n in groups if (model, size) != (stored[0], 4 * stored[1]))
        if odd:
            problems.append(
                Problem(
                    "mixed_embeddings",
                    f"{odd} of {state.count} memories have an embedding from another model or of "
                    f"the wrong size (an interrupted re-embedding?)",
                    "ltmc reindex --reembed",
                    False,
                    str(db.path),
                )
            )
    data = {
        "path": str(db.path),
        "exists": True,
        "opened": db.how,
        "integrity": integrity,
        "journal_mode": journal,
        "wal_bytes": wal_size,
        "memories": state.count,
        "latest_change": state.latest,
        "model": stored[0] if stored else None,
        "dimension": stored[1] if stored else None,
        "unreadable_count": len(unreadable),
        "unreadable": [{"id": memory_id, "reason": why} for memory_id, why in unreadable[:100]],
    }
    return Check("database", PROBLEM if problems else status, ", ".join(notes), data), problems


def _model_remedy(stored: str) -> str:
    from ltms.service import embedder_setting_for

    setting = embedder_setting_for(stored)
    back = f"configure it again (LTMC_EMBEDDER={setting})" if setting else f"no LTMC_EMBEDDER value gives {stored}"
    return f"{back}, or re-embed every memory: ltmc reindex --reembed"


def _journal_mode(path: Path) -> str:
    """From the file header (bytes 18-19 are 2 in WAL mode), so it is right however the file was opened."""
    try:
        with path.open("rb") as handle:
            header = handle.read(20)
    except OSError as exc:
        return f"unknown ({exc.strerror})"
    if len(header) < 20:
        return "none yet"
    return "wal" if header[18] == 2 and header[19] == 2 else "rollback"


def _check_snapshot(paths: ResolvedPaths, snapshot: _Snapshot, db: _DatabaseView) -> tuple[Check, list[Problem]]:
    state = db.state
    where = str(paths.index_path)
    leftovers = _leftovers(paths.index_path)
    data: dict[str, Any] = {"path": where, "state": snapshot.state, "moved_aside": [str(p) for p in leftovers]}
    extra = f"; {len(leftovers)} earlier file(s) moved aside are kept beside it" if leftovers else ""
    rebuild = "move it aside and rebuild the index from the database (ltmc doctor --fix)"
    if snapshot.state == "missing":
        if state.count:
            message = f"no index snapshot at {where} although the database holds {state.count} memories"
            return (
                Check("index snapshot", PROBLEM, message + extra, data),
                [
                    Problem(
                        "snapshot_missing",
                        message + " (the next start rebuilds it)",
                        "build it from the database (ltmc doctor --fix)",
                        True,
                        where,
                    )
                ],
            )
        return Check("index snapshot", INFO, f"no snapshot at {where} yet: it is written on first use{extra}", data), []
    if snapshot.state in ("invalid", "unreadable"):
        message = f"the index snapshot {where} cannot be used: {snapshot.reason}"
        fixable = snapshot.state == "invalid"
        remedy = rebuild if fixable else "make it readable for this user (the index is rebuilt from the database)"
        return (
            Check("index snapshot", PROBLEM, message + extra, data),
            [Problem(snapshot.code, message, remedy, fixable, where)],
        )

    manifest = snapshot.manifest
    assert manifest is not None and snapshot.ids is not None
    vectors = len(snapshot.ids)
    data.update(
        {
            "vectors": vectors,
            "dimension": manifest.dimension,
            "model": manifest.model,
            "last_change": manifest.last_seq,
            "database_latest_change": state.latest,
            "bytes": manifest.size,
            "saved_at": iso_utc(manifest.saved_at),
            "age_seconds": round(time.time() - manifest.saved_at, 1),
        }
    )
    notes = [
        f"loads, checksum ok, {manifest.dimension}-d, model {manifest.model}",
        f"{vectors} vectors for {state.count} memories",
        f"includes change {manifest.last_seq} of {state.latest}",
        human_bytes(manifest.size),
        f"saved {iso_utc(manifest.saved_at)} ({human_age(time.time() - manifest.saved_at)} ago)",
    ]
    if db.exists and (db.conn is None or db.error):
        return Check("index snapshot", WARN, ", ".join(notes) + "; not compared with the unreadable database", data), []
    if manifest.last_seq > state.latest:
        message = (
            f"the index snapshot {where} includes change {manifest.last_seq} but the database only "
            f"{state.latest} (was the database replaced or restored?)"
        )
        return Check("index snapshot", PROBLEM, message, data), [
            Problem("snapshot_ahead", message, rebuild, True, where)
        ]
    # What the server's start-up replay would make of it: changed memories are removed, then re-added if present.
    after_replay = (snapshot.ids - state.changed) | (state.ids & state.changed)
    if after_replay != state.ids:
        missing, unknown = len(state.ids - after_replay), len(after_replay - state.ids)
        message = (
            f"the index snapshot {where} does not match the database: after replaying the newer changes it "
            f"would hold {len(after_replay)} vectors for {state.count} memories ({missing} missing, "
            f"{unknown} of deleted or unknown memories)"
        )
        return (
            Check("index snapshot", PROBLEM, message, data),
            [Problem("snapshot_out_of_sync", message, rebuild, True, where)],
        )
    behind = state.latest - manifest.last_seq
    if behind:
        notes.append(f"{behind} newer change(s) are replayed from the database at start (normal)")
    return Check("index snapshot", INFO if behind else OK, ", ".join(notes) + extra, data), []


def _leftovers(index_path: Path) -> list[Path]:
    try:
        return sorted(
            p for p in index_path.parent.glob(index_path.name + "*") if ".bad-" in p.name or ".stray-" in p.name
        )
    except OSError:
        return []


def _check_snapshot_files(paths: ResolvedPaths) -> tuple[Check, list[Problem]]:
    """The files around the snapshot that stop a server or waste space: a lock path that is not a file."""
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
                True,
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
                True,
                str(paths.index_path.parent),
            )
        )
    else:
        notes.append("no temp files left by killed saves")
    return Check("snapshot files", PROBLEM if problems else OK, "; ".join(notes), data), problems


# -- stray index files ------------------------------------------------------------------------------------------


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


def _check_strays(paths: ResolvedPaths, scan_dirs: Sequence[Path]) -> tuple[Check, list[Problem]]:
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
                True,
                str(path),
            )
        )
    return Check("stray files", PROBLEM, f"{len(strays)} stray file(s) in {searched}", data), problems


# -- repair -----------------------------------------------------------------------------------------------------


def apply_fixes(settings: Settings, problems: Sequence[Problem]) -> list[Fixed]:
    """Repair the fixable problems. Never deletes: what is replaced is moved aside with a timestamp."""
    fixed: list[Fixed] = []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if any(p.code == "unreadable_rows" and p.fixable for p in problems):
        fixed.append(_quarantine_rows(settings))  # first: the index is then rebuilt without them
    for problem in problems:
        if not problem.fixable or problem.path is None:
            continue
        path = Path(problem.path)
        if problem.code.endswith("_permissions"):
            try:
                before = stat.S_IMODE(path.stat().st_mode)
                path.chmod(0o700)
                fixed.append(Fixed(problem.code, f"chmod 700 {path} (was {before:04o})"))
            except OSError as exc:
                fixed.append(Fixed(problem.code, f"chmod 700 {path}: {exc.strerror or exc}", ok=False))
        elif problem.code == "lock_not_a_file":
            target = _free_name(path.with_name(f"{path.name}.bad-{stamp}"))
            try:
                path.rename(target)
                fixed.append(Fixed(problem.code, f"moved {path} aside to {target}"))
            except OSError as exc:
                fixed.append(Fixed(problem.code, f"move {path} to {target}: {exc.strerror or exc}", ok=False))
        elif problem.code == "stale_temp_files":
            paths = settings.paths
            try:
                removed = SnapshotStore(
                    paths.index_path, paths.manifest_path, paths.lock_path
                ).remove_stale_temp_files()
                total = human_bytes(sum(size for _, size in removed))
                fixed.append(Fixed(problem.code, f"removed {len(removed)} temp file(s) ({total}) from {path}"))
            except (LTMCError, OSError) as exc:
                fixed.append(Fixed(problem.code, f"remove temp files in {path}: {exc}", ok=False))
        elif problem.code == "stray_index_file":
            target = _free_name(path.with_name(f"{path.name}.stray-{stamp}"))
            try:
                path.rename(target)
                fixed.append(Fixed(problem.code, f"moved {path} to {target}"))
            except OSError as exc:
                fixed.append(Fixed(problem.code, f"move {path} to {target}: {exc.strerror or exc}", ok=False))
    snapshot_problems = [p for p in problems if p.code in SNAPSHOT_CODES and p.fixable]
    if snapshot_problems:
        fixed.append(_rebuild_index(settings, snapshot_problems))
    return fixed


def _quarantine_rows(settings: Settings) -> Fixed:
    db_path = settings.paths.db_path
    try:
        db = Database(db_path)
        try:
            with db.write() as conn:  # found again inside the transaction: exactly what is moved
                moved = Database.quarantine(conn, unreadable_rows(conn), time.time())
        finally:
            db.close()
    except (LTMCError, OSError) as exc:
        return Fixed("unreadable_rows", f"quarantining unreadable memories failed: {exc}", ok=False)
    ids = ", ".join(map(str, moved))
    return Fixed("unreadable_rows", f"moved {len(moved)} memories (ids {ids}) to the quarantine table in {db_path}")


def _free_name(target: Path) -> Path:
    candidate, n = target, 1
    while candidate.exists() or candidate.is_symlink():
        candidate, n = target.with_name(f"{target.name}-{n}"), n + 1
    return candidate


def _rebuild_index(settings: Settings, problems: Sequence[Problem]) -> Fixed:
    from ltms.service import MemoryService

    paths = settings.paths
    codes = ", ".join(p.code for p in problems)
    actions = []
    try:
        if any(p.code != "snapshot_missing" for p in problems):
            store = SnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path)
            for old, new in store.move_aside(f"ltmc doctor --fix: {codes}"):
                actions.append(f"moved {old} aside to {new.name}")
        # With no snapshot to load, opening the service builds the index from the database and saves it.
        with MemoryService(settings, background_saves=False) as service:
            vectors, error = service.index.ntotal, service.last_snapshot_error
    except (LTMCError, OSError) as exc:
        return Fixed(problems[0].code, "; ".join([*actions, f"rebuilding the index failed: {exc}"]), ok=False)
    if error:
        return Fixed(
            problems[0].code,
            "; ".join([*actions, f"rebuilt the index ({vectors} vectors) but could not save it: {error}"]),
            ok=False,
        )
    actions.append(f"rebuilt the index from the database: {vectors} vectors, saved to {paths.index_path}")
    return Fixed(problems[0].code if len(problems) == 1 else codes, "; ".join(actions))


__all__ = ["Check", "Fixed", "Problem", "Report", "apply_fixes", "diagnose", "find_strays", "run_doctor"]
