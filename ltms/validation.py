"""Bounds and types for every input the memory service accepts. A rejected input changes nothing."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any, Literal, overload

from ltms.errors import InvalidInput

MAX_K = 100
MAX_PAGE = 100
MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_QUERY_BYTES = 8 * 1024
DEFAULT_NAMESPACE = "default"
_NAMESPACE = re.compile(r"[A-Za-z0-9_.:@/-]{1,64}")  # fullmatch: "$" alone lets a final "\n" through


def text(value: object, what: str, max_bytes: int) -> str:
    """Non-empty, valid UTF-8 (no lone surrogates), no NUL bytes, at most `max_bytes` when encoded."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInput(f"{what} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} is not valid Unicode (a lone surrogate at position {exc.start})") from exc
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character (at position {value.index(chr(0))})")
    if size > max_bytes:
        raise InvalidInput(f"{what} is {size} bytes of UTF-8; the limit is {max_bytes}")
    return value


@overload
def namespace(value: object, allow_none: Literal[False] = False) -> str: ...
@overload
def namespace(value: object, allow_none: bool) -> str | None: ...
def namespace(value: object, allow_none: bool = False) -> str | None:
    """A namespace; None means the default one, or with `allow_none` (a filter) no namespace at all."""
    if value is None:
        if allow_none:
            return None
        return DEFAULT_NAMESPACE
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value):
        raise InvalidInput(f"namespace {value!r} is invalid: use 1-64 characters from letters, digits and _ . : @ / -")
    return value


def tags(value: object) -> list[str]:
    """A list of distinct non-empty tags, order kept, surrounding whitespace removed."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidInput(f"tags must be a list of strings, got {type(value).__name__}")
    result: list[str] = []
    for item in value:
        tag = text(item, "a tag", MAX_TAG_CHARS * 4).strip()
        if len(tag) > MAX_TAG_CHARS:
            raise InvalidInput(f"tag {tag[:20]!r}... is longer than {MAX_TAG_CHARS} characters")
        if tag not in result:
            result.append(tag)
    if len(result) > MAX_TAGS:
        raise InvalidInput(f"{len(result)} tags given; the limit is {MAX_TAGS}")
    return result


def metadata(value: object, max_bytes: int) -> dict[str, Any]:
    """A JSON object of at most `max_bytes` (compact encoding)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"metadata must be a JSON object, got {type(value).__name__}")
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(encoded.encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"metadata is not JSON-serialisable: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise InvalidInput("metadata contains invalid Unicode (a lone surrogate)") from exc
    if size > max_bytes:
        raise InvalidInput(f"metadata is {size} bytes as JSON; the limit is {max_bytes}")
    clean: dict[str, Any] = json.loads(encoded)
    return clean


def integer_in(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low} and {high}, got {value}")
    return value


def memory_id(value: object) -> int:
    return integer_in(value, "id", 1, 2**63 - 1)


def score(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidInput(f"min_score must be a number, got {value!r}")
    if not -1.0 <= value <= 1.0:
        raise InvalidInput(f"min_score must be between -1 and 1, got {value}")
    return float(value)


# The times every read path can show: datetime (and so ISO 8601 output) covers the years 1 to 9999.
MIN_EPOCH = datetime(1, 1, 1, tzinfo=UTC).timestamp()
MAX_EPOCH = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC).timestamp()


def timestamp(value: object, what: str, end_of_day: bool = False) -> float | None:
    """An ISO 8601 date or date-time (UTC when no offset is given), or epoch seconds, in the years 1 to 9999.

    A date alone means the start of that day, or with `end_of_day` (for `until`) its last microsecond, so
    since = until = one date covers that whole day."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, datetime | str):
        moment = value if isinstance(value, datetime) else _parse_iso(value, what)
        if end_of_day and isinstance(value, str) and _is_date_only(value):
            moment = datetime.combine(moment.date(), time.max)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            seconds = moment.timestamp()
        except (OverflowError, ValueError):  # an offset that pushes it past year 1 or 9999
            seconds = math.inf
    else:
        raise InvalidInput(f"{what} must be an ISO 8601 string or epoch seconds, got {type(value).__name__}")
    return in_time_range(seconds, what, value)


def in_time_range(seconds: float, what: str, shown: object = None) -> float:
    if math.isnan(seconds) or not MIN_EPOCH <= seconds <= MAX_EPOCH:
        raise InvalidInput(
            f"{what} {_short(seconds if shown is None else shown)} is not a time in the years 1 to 9999 "
            f"(epoch seconds {MIN_EPOCH:.0f} to {MAX_EPOCH:.0f})"
        )
    return seconds


def _parse_iso(value: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidInput(f"{what} {_short(value)} is not an ISO 8601 date or date-time") from exc


def _is_date_only(value: str) -> bool:
    try:
        date.fromisoformat(value.strip())
    except ValueError:
        return False
    return True


def time_range(since: object, until: object) -> tuple[float | None, float | None]:
    """`since` and `until` as epoch seconds; an inverted range is an error rather than a silent empty result."""
    start = timestamp(since, "since")
    end = timestamp(until, "until", end_of_day=True)
    if start is not None and end is not None and start > end:
        raise InvalidInput(f"since {_short(since)} is later than until {_short(until)}: no memory can match")
    return start, end


def _short(value: object) -> str:
    try:
        shown = repr(value)
    except ValueError:  # an integer beyond Python's digit limit for str()
        return "(a number too large to show)"
    return shown if len(shown) <= 40 else shown[:37] + "..."
