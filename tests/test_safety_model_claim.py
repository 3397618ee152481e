"""Issue 9.5: two processes with different embedders open one empty store at once. The model is claimed in the
database inside a write transaction, so exactly one of them opens it and the other refuses with ModelMismatch
(before, both started and searches silently mixed the two models' vectors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ltms.embeddings.hashing import HashingEmbedder
from ltms.errors import ModelMismatch
from ltms.service import MemoryService
from tests.helpers import child_env, hash_settings

OPENER = """
import sys
from ltms.config import Settings
from ltms.embeddings.hashing import HashingEmbedder
from ltms.errors import ModelMismatch
from ltms.service import MemoryService
sys.stdin.readline()  # released by the test, both at once
try:
    service = MemoryService(Settings.load(), HashingEmbedder(int(sys.argv[1])), background_saves=False)
except ModelMismatch as exc:
    print("refused", exc, flush=True)
    sys.exit(0)
print("opened", service.model, flush=True)
sys.stdin.readline()  # stays open until the other one has decided
service.close()
"""


@pytest.mark.parametrize("trial", range(3))
def test_two_processes_with_different_models_on_an_empty_store(tmp_path: Path, trial: int) -> None:
    data = tmp_path / "data"
    env = child_env(data)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(dimension)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        for dimension in (384, 64)
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
    answers = []
    for proc in procs:
        assert proc.stdout is not None
        answers.append(proc.stdout.readline())
    for proc in procs:
        _, err = proc.communicate(timeout=60)  # closes stdin (the cue to stop) and reads to the end
        assert proc.returncode == 0, err
    kinds = sorted(answer.split()[0] for answer in answers)
    assert kinds == ["opened", "refused"], answers
    refusal = next(a for a in answers if a.startswith("refused"))
    assert "ltmc reindex --reembed" in refusal and "\n" not in refusal.rstrip("\n")
    winner = next(a for a in answers if a.startswith("opened")).split()[1]
    # The store keeps the winner's model: opening with it works, with the other one is refused.
    loser_dimension = 64 if winner == "hash-384-v1" else 384
    with pytest.raises(ModelMismatch):
        MemoryService(hash_settings(data), HashingEmbedder(loser_dimension), background_saves=False)
    with MemoryService(hash_settings(data), HashingEmbedder(448 - loser_dimension), background_saves=False) as svc:
        assert svc.model == winner


def test_reembed_reclaims_an_empty_store_for_another_model(tmp_path: Path) -> None:
    data = tmp_path / "data"
    MemoryService(hash_settings(data), HashingEmbedder(64), background_saves=False).close()
    with pytest.raises(ModelMismatch):
        MemoryService(hash_settings(data), background_saves=False)
    result = subprocess.run(
        [sys.executable, "-m", "ltms", "reindex", "--reembed"], env=child_env(data), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    with MemoryService(hash_settings(data), background_saves=False) as service:
        assert service.model == "hash-384-v1"
