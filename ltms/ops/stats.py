"""`ltmc stats [--json]`: memories per namespace, index size, snapshot age, model.

It opens the memory service (like a server start: a missing or unusable snapshot is rebuilt from the database).
"""

from __future__ import annotations

import json
from typing import Any

from ltms.config import Settings
from ltms.ops.text import human_age, human_bytes, table


def run_stats(settings: Settings, as_json: bool = False) -> int:
    from ltms.service import MemoryService

    with MemoryService(settings, background_saves=False) as service:
        stats = service.stats()
    print(json.dumps(stats, indent=2) if as_json else render(stats))
    return 0


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
    namespaces = sorted(stats["namespaces"].items(), key=lambda item: (-item[1], item[0]))
    out = [table(rows, indent=0), "", f"namespaces ({len(namespaces)})"]
    out.append(table([(ns, str(n)) for ns, n in namespaces], ("NAMESPACE", "MEMORIES")) if namespaces else "  (none)")
    return "\n".join(out)
