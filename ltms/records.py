"""Plain records the memory service returns. No storage or protocol types leak past the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def iso_utc(epoch_seconds: float, timespec: str = "milliseconds") -> str:
    """ISO 8601 in UTC. A stored value no date can show (inf, 1e20, not a number) reads as "invalid time ..." rather
    than breaking every read of its memory; `ltmc doctor` reports such rows and --fix quarantines them."""
    try:
        return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError, TypeError):
        return f"invalid time {epoch_seconds!r}"  # the web page shows the same words


def epoch_or_nan(value: object) -> float:
    """A stored timestamp as a float; NaN when it is not a number at all (e.g. text written by another tool)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


@dataclass(frozen=True)
class Memory:
    id: int
    text: str
    namespace: str
    tags: list[str]
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    content_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "namespace": self.namespace,
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "created_at": iso_utc(self.created_at),
            "updated_at": iso_utc(self.updated_at),
            "content_hash": self.content_hash,
        }


@dataclass(frozen=True)
class StoreResult:
    id: int
    created: bool  # False when the same text already existed in the namespace (deduplicated)


@dataclass(frozen=True)
class SearchHit:
    memory: Memory
    score: float  # cosine similarity, -1..1


@dataclass(frozen=True)
class Page:
    items: list[Memory]
    total: int
    offset: int
    next_offset: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
