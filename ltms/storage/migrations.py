"""Numbered schema migrations, the same mechanism for every backend.

A backend keeps an ordered list of `Migration`s and the number of the last one applied, recorded in its own
database. Opening a store applies every newer step, each in its own transaction together with the new number, so
a crash mid-way leaves the old state or the new one, never a mix. A database whose number is higher than the
code knows was written by a newer LTMC: it is refused, never "downgraded" by guesswork.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ltms.errors import LTMCError

Progress = Callable[[int, int], None]


class SchemaTooNew(LTMCError):
    """The database was written by a newer version of LTMC."""

    def __init__(self, where: object, found: int, known: int) -> None:
        super().__init__(
            f"{where} has schema version {found}, but this LTMC knows versions up to {known}: it was written by a "
            f"newer LTMC. Upgrade LTMC (pip install -U ltmc) to open it; nothing was changed"
        )


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    # Runs inside the backend's transaction; `context` is what the backend passes (a connection, and whatever
    # a step needs, such as the embedder for steps that must embed); `progress` reports (done, total).
    apply: Callable[[Any, Progress | None], None]


def pending(migrations: Sequence[Migration], applied: int, where: object) -> list[Migration]:
    """The steps newer than `applied`, in order. Raises SchemaTooNew for a database newer than the code."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise AssertionError(f"migrations must be numbered 1..n without gaps, got {versions}")
    if applied > len(migrations):
        raise SchemaTooNew(where, applied, len(migrations))
    return list(migrations[applied:])


def latest(migrations: Sequence[Migration]) -> int:
    return len(migrations)
