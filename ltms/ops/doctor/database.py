"""Check: the database opens read-only, passes its integrity check, its rows are readable and embedded with the
configured model; its fix moves unreadable rows whole to the quarantine table."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from ltms.errors import LTMCError
from ltms.ops.doctor.report import INFO, OK, PROBLEM, WARN, Check, CheckResult, Fix, FixContext, Fixed, Problem, Stage
from ltms.ops.readonly import connect_readonly, table_names
from ltms.ops.text import human_bytes
from ltms.storage.db import CHUNK_BITS, Database, unreadable_rows


def _quarantine_rows(context: FixContext, _problems: list[Problem]) -> list[Fixed]:
    db_path = context.settings.paths.db_path
    try:
        db = Database(db_path)
        try:
            with db.write() as conn:  # found again inside the transaction: exactly what is moved
                moved = Database.quarantine(conn, unreadable_rows(conn), time.time())
        finally:
            db.close()
    except (LTMCError, OSError) as exc:
        return [Fixed("unreadable_rows", f"quarantining unreadable memories failed: {exc}", ok=False)]
    ids = ", ".join(map(str, moved))
    return [Fixed("unreadable_rows", f"moved {len(moved)} memories (ids {ids}) to the quarantine table in {db_path}")]


QUARANTINE_ROWS = Fix(_quarantine_rows, Stage.FIRST, together=True)


@dataclass
class DatabaseState:
    count: int = 0
    latest: int = 0
    ids: set[int] = field(default_factory=set)
    changed: set[int] = field(default_factory=set)  # memories changed after the snapshot's last change


@dataclass
class _Reading:
    """Everything read in the one read transaction."""

    integrity: list[str]
    state: DatabaseState
    groups: list[tuple[str, int, int]]  # (model, embedding bytes, memories)
    unreadable: list[tuple[int, str]]
    value_bytes: int = 4  # per vector component: 2 since schema 3 (float16), 4 before (float32)


class DatabaseView:
    """The database, read-only. Everything compared with the snapshot is read in one read transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.exists = path.exists()
        self.conn: sqlite3.Connection | None = None
        self.how = ""
        self.error: str | None = None
        self.tables: set[str] = set()
        self.meta: dict[str, str] = {}
        self.state = DatabaseState()  # filled by check_database
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


def check_database(db: DatabaseView, configured: tuple[str, int] | None, snapshot_seq: int | None) -> CheckResult:
    """`snapshot_seq`: the last change a loaded snapshot includes (None when none loaded); the memories changed
    since are read for the snapshot check."""
    if not db.exists:
        return Check(
            "database",
            INFO,
            f"{db.path} does not exist yet: it is created on first use",
            {"path": str(db.path), "exists": False, "memories": 0},
        ), []
    if db.conn is None:
        return _unreadable(db, str(db.error), "restore it from a backup or an export (the index cannot replace it)")
    try:
        reading = _read(db, db.conn, snapshot_seq)
    except sqlite3.Error as exc:
        db.error = str(exc)  # the snapshot is then not compared with figures that were never read
        return _unreadable(db, str(exc), "restore it from a backup or an export")
    db.state = reading.state
    return _assess(db, reading, configured)


def _unreadable(db: DatabaseView, error: str, remedy: str) -> CheckResult:
    message = f"cannot read the database {db.path}: {error}"
    problem = Problem("db_unreadable", message, remedy, None, str(db.path), blocks_rebuild=True)
    return Check("database", PROBLEM, message, {"path": str(db.path), "exists": True}), [problem]


def _read(db: DatabaseView, conn: sqlite3.Connection, snapshot_seq: int | None) -> _Reading:
    state = DatabaseState()
    groups: list[tuple[str, int, int]] = []
    unreadable: list[tuple[int, str]] = []
    half = False
    conn.execute("BEGIN")
    try:
        integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check(20)")]
        if {"memories", "changes"} <= db.tables:
            state.count = int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
            state.latest = int(conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0])
            unreadable = unreadable_rows(conn)
            half = "chunks" in db.tables and "key" in {str(r[1]) for r in conn.execute("PRAGMA table_info(chunks)")}
            groups = [(str(m), int(size), int(n)) for m, size, n in conn.execute(_vector_groups(db.tables, half))]
            if snapshot_seq is not None:
                state.ids = {int(r[0]) for r in conn.execute("SELECT id FROM memories")}
                state.changed = {
                    int(r[0])
                    for r in conn.execute("SELECT DISTINCT memory_id FROM changes WHERE seq > ?", (snapshot_seq,))
                }
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("COMMIT")
    return _Reading(integrity, state, groups, unreadable, 2 if half else 4)


def _vector_groups(tables: set[str], half: bool) -> str:
    """(model, embedding bytes, memories) for the store's schema: 3 (float16 chunks keyed by chunk key: walked in key
    order, each memory found by its id), 2 (float32 chunks), 1 (one float32 vector per memory)."""
    if half:
        return (
            f"SELECT m.model, length(c.embedding), count(DISTINCT m.id) FROM chunks c"
            f" JOIN memories m ON m.id = c.key >> {CHUNK_BITS} GROUP BY 1, 2 ORDER BY 3 DESC"
        )
    if "chunks" in tables:
        return (
            "SELECT m.model, length(c.embedding), count(DISTINCT m.id) FROM memories m"
            " JOIN chunks c ON c.memory_id = m.id GROUP BY 1, 2 ORDER BY 3 DESC"
        )
    return "SELECT model, length(embedding), count(*) FROM memories GROUP BY 1, 2 ORDER BY 3 DESC"


def _assess(db: DatabaseView, reading: _Reading, configured: tuple[str, int] | None) -> CheckResult:
    state, integrity, unreadable = reading.state, reading.integrity, reading.unreadable
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
    if unreadable:
        notes.append(f"{len(unreadable)} unreadable")
    status = OK
    if journal not in ("wal", "none yet"):
        status = WARN
        notes.append("the server switches it to WAL when it opens the database")
    problems = _integrity_problems(db.path, integrity, unreadable) + _model_problems(
        db.path, stored, configured, reading
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


def _integrity_problems(path: Path, integrity: list[str], unreadable: list[tuple[int, str]]) -> list[Problem]:
    problems: list[Problem] = []
    if integrity != ["ok"]:
        problems.append(
            Problem(
                "db_integrity",
                f"the integrity check of {path} failed: {'; '.join(integrity)}",
                "stop the servers, copy the data directory, `ltmc export` what can still be read "
                "and import it into a fresh data directory",
                None,
                str(path),
                blocks_rebuild=True,
            )
        )
    if unreadable:
        listed = "; ".join(f"id {memory_id}: {why}" for memory_id, why in unreadable[:5])
        more = f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        problems.append(
            Problem(
                "unreadable_rows",
                f"{len(unreadable)} memories hold values no read can show ({listed}{more})",
                "move them whole to the quarantine table in the database (ltmc doctor --fix); nothing is deleted",
                QUARANTINE_ROWS,
                str(path),
            )
        )
    return problems


def _model_problems(
    path: Path, stored: tuple[str, int] | None, configured: tuple[str, int] | None, reading: _Reading
) -> list[Problem]:
    problems: list[Problem] = []
    if stored and configured and stored != configured:  # even an empty store keeps its model
        problems.append(
            Problem(
                "model_mismatch",
                f"the memories were embedded with {stored[0]} ({stored[1]}-d) but the configured model "
                f"is {configured[0]} ({configured[1]}-d): the server refuses to start",
                _model_remedy(stored[0]),
                None,
                str(path),
                blocks_rebuild=True,
            )
        )
    want = (stored[0], reading.value_bytes * stored[1]) if stored else None
    odd = sum(n for model, size, n in reading.groups if want and (model, size) != want)
    if odd:
        problems.append(
            Problem(
                "mixed_embeddings",
                f"{odd} of {reading.state.count} memories have an embedding from another model or of "
                f"the wrong size (an interrupted re-embedding?)",
                "ltmc reindex --reembed",
                None,
                str(path),
                blocks_rebuild=True,
            )
        )
    return problems


def _model_remedy(stored: str) -> str:
    from ltms.embeddings import embedder_setting_for

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
