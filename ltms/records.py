"""Plain records the memory service returns. No storage or protocol types leak past the service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn


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


def _read_only(self: object, *_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError(f"{type(self).__name__} is read-only: a returned memory is a snapshot, change it with update")


class FrozenDict(dict[str, Any]):
    """A dict nothing can change. Still a dict, so json.dumps and psycopg's Jsonb take it and it equals a dict."""

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:  # copy/pickle rebuild it whole, never item by item
        return type(self), (dict(self),)


class FrozenList(list[Any]):
    """A list nothing can change (inside metadata); equals a list, so JSON values compare as they read."""

    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = clear = extend = insert = pop = remove = _read_only
    reverse = sort = _read_only

    def __reduce__(self) -> tuple[type, tuple[list[Any]]]:
        return type(self), (list(self),)


def freeze(value: Any) -> Any:
    """A JSON value with every dict and list in it read-only."""
    if isinstance(value, dict):
        return FrozenDict({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return FrozenList(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain (mutable) copy of a frozen JSON value."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Memory:
    """A memory as read. Immutable all the way down (tags a tuple, metadata a FrozenDict), so a caller that keeps
    one, or a cache that shares one, never sees it change; to_dict gives plain lists and dicts."""

    id: int
    text: str
    namespace: str
    tags: Sequence[str]  # a tuple once built: __post_init__ freezes whatever storage passed
    metadata: Mapping[str, Any]  # a FrozenDict once built
    created_at: float
    updated_at: float
    content_hash: str

    def __post_init__(self) -> None:  # storage builds it from lists and dicts: freeze them here, once
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "metadata", freeze(dict(self.metadata)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "namespace": self.namespace,
            "tags": list(self.tags),
            "metadata": thaw(self.metadata),
            "created_at": iso_utc(self.created_at),
            "updated_at": iso_utc(self.updated_at),
            "content_hash": self.content_hash,
        }


@dataclass(frozen=True)
class StoreResult:
    id: int
    created: bool  # False when the same text already existed in the namespace (deduplicated)


@dataclass(frozen=True)
class Passage:
    """The part of a memory's text that matched best: characters [start, end)."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class SearchHit:
    memory: Memory
    score: float  # the ranking score of the retrieval mode (see MemoryService.retrieve)
    similarity: float | None = None  # cosine of the best-matching chunk, -1..1
    keyword_rank: int | None = None  # 1-based rank in the keyword leg; None when that leg did not find it
    passage: Passage | None = None


@dataclass(frozen=True)
class Page:
    items: list[Memory]
    total: int
    offset: int
    next_offset: int | None = None
