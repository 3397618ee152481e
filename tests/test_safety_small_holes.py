"""Issue 9.10-9.12: a namespace ending in a newline, writes in read-only mode, and directories created for a custom
index path under a permissive umask."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import hash_settings
from test_ops_support import ltmc, one_line_error

from ltms.errors import InvalidInput
from ltms.service import MemoryService


@pytest.mark.parametrize("namespace", ["work\n", "work\r\n", "\nwork", "work\x00"])
def test_a_namespace_must_match_its_pattern_exactly(tmp_path: Path, namespace: str) -> None:
    with MemoryService(hash_settings(tmp_path / "data"), background_saves=False) as service:
        with pytest.raises(InvalidInput, match="namespace"):
            service.store("a memory", namespace=namespace)
        with pytest.raises(InvalidInput, match="namespace"):
            service.retrieve("a memory", namespace=namespace)
        with pytest.raises(InvalidInput, match="namespace"):
            service.list(namespace=namespace)
        assert service.stats()["memories"] == 0
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "imported", "namespace": namespace}) + "\n")
    error = one_line_error(ltmc("import", str(source), data_dir=tmp_path / "data", cwd=tmp_path))
    assert "line 1: namespace" in error
