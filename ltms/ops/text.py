"""Small formatting helpers shared by the operator commands."""

from __future__ import annotations

from collections.abc import Sequence


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 memory`, `3 memories`, `0 vectors`."""
    if count == 1:
        return f"{count} {singular}"
    if plural_form is None:
        plural_form = singular[:-1] + "ies" if singular.endswith("y") else singular + "s"
    return f"{count} {plural_form}"


def human_age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def table(rows: Sequence[Sequence[str]], headers: Sequence[str] | None = None, indent: int = 2) -> str:
    """Left-aligned columns; the last column is not padded (it may be long)."""
    all_rows = [list(headers)] if headers else []
    all_rows += [[str(cell) for cell in row] for row in rows]
    if not all_rows:
        return ""
    columns = max(len(row) for row in all_rows)
    widths = [max((len(row[i]) for row in all_rows if i < len(row)), default=0) for i in range(columns)]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append(" " * indent + "  ".join(cells).rstrip())
    return "\n".join(lines)
