"""`ltmc migrate --to postgresql://...`: copy every memory of a store into PostgreSQL, embeddings included.

Nothing is re-embedded: each memory goes over with its model name and its chunks' vectors, read through the
source's `iter_stored`. Batches commit one by one, so an interrupted run keeps what it copied, and running it
again resumes: a memory already in the target (same namespace and text) is skipped. Ids are kept, so agents'
references stay valid; a source id already used in the target by another memory gets a new id instead
(reported as "renumbered"). At the end the counts are checked and a sample of memories is fetched and searched
for in the target by its own vector.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ltms.config import Settings
from ltms.errors import LTMCError, StorageError
from ltms.storage.base import Filter, Storage, StoredMemory
from ltms.storage.postgres import PostgresStorage

if TYPE_CHECKING:
    from ltms.storage.db import Database

Progress = Callable[[int, int], None]

BATCH = 500
SAMPLE = 50
SAMPLE_K = 10
# A memory searched by its own chunk vector comes back with this similarity or more (float32 rounding only).
SELF_SIMILARITY = 0.999
_Sampled = tuple[StoredMemory, int]  # (source memory, its id in the target)


class MigrationFailed(LTMCError):
    """The copy finished but the check found a difference; the message names the first ones."""


@dataclass
class MigrationReport:
    source: str
    target: str
    source_count: int = 0
    copied: int = 0  # with the source's id
    renumbered: int = 0  # the id was taken in the target by another memory
    present: int = 0  # already in the target (an earlier run, or the same text stored there)
    target_count: int = 0
    sampled: int = 0
    models: set[str] = field(default_factory=set)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return self.copied + self.renumbered + self.present

    def lines(self) -> list[str]:
        rate = self.seen / self.seconds if self.seconds > 0 else 0.0
        return [
            f"source: {self.source} ({self.source_count} memories, model {', '.join(sorted(self.models)) or '-'})",
            f"target: {self.target} ({self.target_count} memories now)",
            f"copied {self.copied} with their ids, {self.renumbered} with new ids (id taken), "
            f"{self.present} already there; {self.seconds:.1f} s, {rate:.0f} memories/s",
            f"checked: counts, and {self.sampled} sampled memories fetched and found by their own vectors",
        ]


def migrate(
    source: Storage,
    target: PostgresStorage,
    *,
    batch: int = BATCH,
    sample: int = SAMPLE,
    progress: Progress | None = None,
    seed: int = 0,
    source_name: str | None = None,
) -> MigrationReport:
    """Copy every memory of `source` into `target` (see the module docstring); raise MigrationFailed when the
    check at the end finds a difference. Safe to run again after an interruption or a failure."""
    started = time.monotonic()
    report = MigrationReport(source=source_name or _where(source), target=target.location, source_count=source.count())
    rng = random.Random(seed)
    sampled: list[_Sampled] = []  # a reservoir
    pending: list[StoredMemory] = []
    claimed = False

    def flush() -> None:
        nonlocal claimed
        if not pending:
            return
        if not claimed:  # the first memory names the model; the target refuses another one (and its dimension)
            first = pending[0]
            target.claim_model(first.model, _dimension(first, target.dimension))
            claimed = True
        for item, outcome in zip(pending, target.copy_stored(pending), strict=True):
            setattr(report, outcome.status, getattr(report, outcome.status) + 1)
            _reservoir(sampled, (item, outcome.target_id), report.seen, sample, rng)
        pending.clear()
        if progress:
            progress(report.seen, report.source_count)

    for stored in source.iter_stored(batch):
        report.models.add(stored.model)
        pending.append(stored)
        if len(pending) >= batch:
            flush()
    flush()
    report.sampled = len(sampled)
    report.target_count = target.count()
    report.problems = _check(source, target, report, sampled)
    report.seconds = time.monotonic() - started
    if report.problems:
        shown = "; ".join(report.problems[:5])
        more = f" (and {len(report.problems) - 5} more)" if len(report.problems) > 5 else ""
        raise MigrationFailed(
            f"the copy into {target.location} does not match {report.source}: {shown}{more}. "
            f"Nothing was deleted; run ltmc migrate again to resume"
        )
    return report


def _reservoir(kept: list[_Sampled], item: _Sampled, seen: int, size: int, rng: random.Random) -> None:
    """Keep a uniform sample of `size` of the `seen` items so far (reservoir sampling)."""
    if len(kept) < size:
        kept.append(item)
    elif (slot := rng.randrange(seen)) < size:
        kept[slot] = item


def _check(source: Storage, target: PostgresStorage, report: MigrationReport, sampled: list[_Sampled]) -> list[str]:
    problems: list[str] = []
    if report.seen < report.source_count:
        problems.append(f"{report.seen} of {report.source_count} source memories were read")
    source_ns, target_ns = source.counts_by_namespace(), target.counts_by_namespace()
    for namespace, count in source_ns.items():
        if target_ns.get(namespace, 0) < count:
            problems.append(f"namespace {namespace!r}: {count} memories in the source, {target_ns.get(namespace, 0)}")
    copies = target.get_many([target_id for _, target_id in sampled])
    for item, target_id in sampled:
        m, copy = item.memory, copies.get(target_id)
        if copy is None:
            problems.append(f"memory {m.id} is not in the target (expected id {target_id})")
            continue
        if (copy.text, copy.namespace, sorted(copy.tags), copy.metadata) != (
            m.text,
            m.namespace,
            sorted(m.tags),
            m.metadata,
        ) or not math.isclose(copy.created_at, m.created_at, abs_tol=1e-3):
            problems.append(f"memory {m.id} differs in the target (id {target_id})")
            continue
        if item.chunks:
            hits = target.vector_search(item.chunks[0].vector, SAMPLE_K, Filter(namespace=m.namespace))
            if not any(h.memory_id == target_id and h.similarity >= SELF_SIMILARITY for h in hits):
                problems.append(f"memory {m.id} is not found by its own vector in the target (id {target_id})")
    return problems


def _dimension(stored: StoredMemory, default: int) -> int:
    return int(stored.chunks[0].vector.shape[0]) if stored.chunks else default


def _where(storage: Storage) -> str:
    location = getattr(storage, "location", None)
    return str(location) if location else storage.health().location


# -- the command ------------------------------------------------------------------------------------------------


def run_migrate(settings: Settings, url: str) -> int:
    """`ltmc migrate --to URL`: the configured embedded store, opened read-only, copied into PostgreSQL at URL."""
    from ltms.ops.progress import ProgressBar
    from ltms.storage.db import Database
    from ltms.storage.embedded import EmbeddedStorage

    paths = settings.paths
    if not paths.db_path.exists():
        raise StorageError("migrate from", paths.db_path, "there is no memory store there (nothing to migrate)")
    stored = _stored_model(Database(paths.db_path, read_only=True))
    if stored is None:  # nothing to copy: leave the target untouched rather than create tables of a guessed size
        print(f"the store at {paths.db_path} holds no memories: nothing to migrate")
        return 0
    model, dimension = stored
    # No model is loaded: iter_stored carries each chunk's vector, and the index is never opened.
    source = EmbeddedStorage(paths, dimension, model, read_only=True)
    try:
        target = PostgresStorage.open(url, dimension, pool_size=settings.database_pool_size)
        try:
            with ProgressBar("migrating", source.count()) as bar:
                report = migrate(source, target, progress=bar.update, source_name=str(paths.db_path))
        finally:
            target.close()
    finally:
        source.close()
    print("\n".join(report.lines()))
    return 0


def _stored_model(db: Database) -> tuple[str, int] | None:
    """The model and dimension the store's memories were embedded with; None for a store without memories."""
    try:
        model, dimension = db.get_meta("model"), db.get_meta("dimension")
        empty = db.count() == 0
    finally:
        db.close()
    if empty or model is None or dimension is None or not dimension.isdigit():
        return None
    return model, int(dimension)
