"""`ltmc stats [--json] [--all]`: memories per namespace, index size, snapshot age, model.

It opens the memory service read-only: it never creates a store (a missing one is an error naming the path) and
never writes, so it works on read-only media; a missing or unusable snapshot is rebuilt in memory, not saved.
"""

from __future__ import annotations

import json
from typing import Any

from ltms.config import Settings
from ltms.ops.text import human_age, human_bytes, table

# The memory_stats tool and `ltmc stats` list this many namespaces, the largest first (20,000 namespaces made a
# 2.66 MB tool response); `namespace_count` and `namespaces_omitted` say how many there are in all.
NAMESPACE_LIMIT = 50


def run_stats(settings: Settings, as_json: bool = False, everything: bool = False) -> int:
    from ltms.service import MemoryService

    with MemoryService(settings, background_saves=False, read_only=True) as service:  # stats never writes
        stats = limit_namespaces(service.stats(), None if everything else NAMESPACE_LIMIT)
    print(json.dumps(stats, indent=2) if as_json else render(stats))
    return 0


def limit_namespaces(stats: dict[str, Any], limit: int | None = NAMESPACE_LIMIT) -> dict[str, Any]:
    """`stats` with its namespaces ordered largest first and cut to `limit` (None: all), saying how many were cut."""
    ordered = sorted(stats["namespaces"].items(), key=lambda item: (-item[1], item[0]))
    shown = ordered if limit is None else ordered[:limit]
    return {
        **stats,
        "namespaces": dict(shown),
        "namespace_count": len(ordered),
        "namespaces_omitted": len(ordered) - len(shown),
    }


def render(stats: dict[str, Any]) -> str:
    index = stats["index"]
    age = index["snapshot_age_seconds"]
    snapshot = "none saved yet"
    if index["snapshot_saved_at"]:
        snapshot = (
            f"{human_bytes(index['snapshot_bytes'])}, saved {index['snapshot_saved_at']} "
            f"({human_age(age)} ago), includes change {index['snapshot_last_change']}"
        )
    rows = [
        ("memories", str(stats["memories"])),
        ("vectors", f"{index['vectors']} (index {index['state']})"),
        ("model", f"{stats['model']} ({stats['dimension']}-d)"),
        ("snapshot", snapshot),
        ("index path", index["snapshot_path"]),
        ("data dir", stats["data_dir"]),
    ]
    if index["last_snapshot_error"]:
        rows.append(("snapshot error", index["last_snapshot_error"]))
    namespaces = list(stats["namespaces"].items())
    heading = f"namespaces ({stats.get('namespace_count', len(namespaces))})"
    if stats.get("namespaces_omitted"):
        heading += f", the {len(namespaces)} largest (ltmc stats --all lists every one)"
    out = [table(rows, indent=0), "", heading]
    out.append(table([(ns, str(n)) for ns, n in namespaces], ("NAMESPACE", "MEMORIES")) if namespaces else "  (none)")
    return "\n".join(out)
