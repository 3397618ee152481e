"""Issue 10.13: the model-mismatch error names an LTMC_EMBEDDER value that is accepted (it suggested
`LTMC_EMBEDDER='all-MiniLM-L6-v2'`, which is rejected). (`--port` named as typed is tested in test_cli_settings.py.)"""

from __future__ import annotations

from pathlib import Path

from ltms.embeddings.hashing import HashingEmbedder
from ltms.service import MemoryService
from tests.helpers import hash_settings
from tests.ops_helpers import build_store, ltmc, one_line_error


def test_the_model_mismatch_error_suggests_a_value_that_is_accepted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # An (empty) store claimed by the default model: opening it loads no weights.
    MemoryService(hash_settings(data, LTMC_EMBEDDER="minilm"), background_saves=False).close()
    error = one_line_error(ltmc("stats", data_dir=data, cwd=tmp_path))  # configured: hash
    assert "'all-MiniLM-L6-v2'" in error and "LTMC_EMBEDDER=minilm" in error, error
    assert "LTMC_EMBEDDER='all-MiniLM-L6-v2'" not in error
    # The suggestion works as printed.
    assert ltmc("stats", data_dir=data, cwd=tmp_path, env={"LTMC_EMBEDDER": "minilm"}).returncode == 0

    other = tmp_path / "other"
    build_store(other, embedder=HashingEmbedder(64))  # a model no LTMC_EMBEDDER value gives
    error = one_line_error(ltmc("stats", data_dir=other, cwd=tmp_path))
    assert "no LTMC_EMBEDDER value gives 'hash-64-v1'" in error and "ltmc reindex --reembed" in error, error
