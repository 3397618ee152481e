"""Check: the FAISS snapshot loads, verifies, and matches the database once the newer changes are replayed; its fix
moves a bad snapshot aside and rebuilds the index from the database."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltms.errors import LTMCError
from ltms.ops.doctor.database import DatabaseView
from ltms.ops.doctor.report import INFO, OK, PROBLEM, WARN, Check, CheckResult, Fix, FixContext, Fixed, Problem, Stage
from ltms.ops.readonly import ReadOnlySnapshotStore
from ltms.ops.text import human_age, human_bytes
from ltms.records import iso_utc
from ltms.storage.db import CHUNK_BITS
from ltms.vector_store.faiss_config import ResolvedPaths
from ltms.vector_store.faiss_store import Manifest, SnapshotInvalid, SnapshotMissing, SnapshotStore

MISSING = "snapshot_missing"  # the one snapshot problem whose fix has nothing to move aside


def _rebuild_index(context: FixContext, problems: list[Problem]) -> list[Fixed]:
    from ltms.service import MemoryService

    settings = context.settings
    paths = settings.paths
    codes = ", ".join(p.code for p in problems)
    actions = []
    try:
        if any(p.code != MISSING for p in problems):
            store = SnapshotStore(paths.index_path, paths.manifest_path, paths.lock_path)
            for old, new in store.move_aside(f"ltmc doctor --fix: {codes}"):
                actions.append(f"moved {old} aside to {new.name}")
        # With no snapshot to load, opening the service builds the index from the database and saves it.
        with MemoryService(settings, background_saves=False) as service:
            health = service.storage.health()
            vectors, error = health.index.get("vectors"), health.index.get("last_snapshot_error")
    except (LTMCError, OSError) as exc:
        return [Fixed(problems[0].code, "; ".join([*actions, f"rebuilding the index failed: {exc}"]), ok=False)]
    if error:
        return [
            Fixed(
                problems[0].code,
                "; ".join([*actions, f"rebuilt the index ({vectors} vectors) but could not save it: {error}"]),
                ok=False,
            )
        ]
    actions.append(f"rebuilt the index from the database: {vectors} vectors, saved to {paths.index_path}")
    return [Fixed(problems[0].code if len(problems) == 1 else codes, "; ".join(actions))]


REBUILD_INDEX = Fix(_rebuild_index, Stage.LAST, together=True)


@dataclass
class Snapshot:
    state: str  # missing | invalid | unreadable | loaded
    reason: str = ""
    code: str = ""
    manifest: Manifest | None = None
    ids: set[int] | None = None

    @classmethod
    def load(cls, paths: ResolvedPaths, expected: tuple[str, int] | None, database_id: str = "") -> Snapshot:
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
        return cls("loaded", manifest=manifest, ids=set((index.ids() >> CHUNK_BITS).tolist()))  # memory ids

    @property
    def last_seq(self) -> int | None:
        """The last change a loaded snapshot includes."""
        return self.manifest.last_seq if self.state == "loaded" and self.manifest is not None else None


REBUILD = "move it aside and rebuild the index from the database (ltmc doctor --fix)"


def check_snapshot(paths: ResolvedPaths, snapshot: Snapshot, db: DatabaseView) -> CheckResult:
    where = str(paths.index_path)
    leftovers = _leftovers(paths.index_path)
    data: dict[str, Any] = {"path": where, "state": snapshot.state, "moved_aside": [str(p) for p in leftovers]}
    extra = f"; {len(leftovers)} earlier file(s) moved aside are kept beside it" if leftovers else ""
    if snapshot.state == "missing":
        count = db.state.count
        if count:
            message = f"no index snapshot at {where} although the database holds {count} memories"
            problem = Problem(
                MISSING,
                message + " (the next start rebuilds it)",
                "build it from the database (ltmc doctor --fix)",
                REBUILD_INDEX,
                where,
            )
            return Check("index snapshot", PROBLEM, message + extra, data), [problem]
        return Check("index snapshot", INFO, f"no snapshot at {where} yet: it is written on first use{extra}", data), []
    if snapshot.state in ("invalid", "unreadable"):
        message = f"the index snapshot {where} cannot be used: {snapshot.reason}"
        if snapshot.state == "invalid":
            problem = Problem(snapshot.code, message, REBUILD, REBUILD_INDEX, where)
        else:
            remedy = "make it readable for this user (the index is rebuilt from the database)"
            problem = Problem(snapshot.code, message, remedy, None, where, blocks_rebuild=True)
        return Check("index snapshot", PROBLEM, message + extra, data), [problem]
    return _check_loaded(where, snapshot, db, data, extra)


def _check_loaded(where: str, snapshot: Snapshot, db: DatabaseView, data: dict[str, Any], extra: str) -> CheckResult:
    state, manifest = db.state, snapshot.manifest
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
            Problem("snapshot_ahead", message, REBUILD, REBUILD_INDEX, where)
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
            [Problem("snapshot_out_of_sync", message, REBUILD, REBUILD_INDEX, where)],
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
