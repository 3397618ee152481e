"""Issue 9.1: two processes race `update(text=...)` against `update(tags=...)` on one memory.

Each round the test releases both writers at once and waits for both acknowledgements, then checks that both
changes are there and that the stored vector is the vector of the stored text (searching the text finds the
memory at score ~1). Before the fix the tags-only update merged from a copy read before its transaction and
wrote the old text back over the new one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ltms.service import MemoryService
from tests.helpers import child_env, close_pipes, hash_settings, spawn_python

ROUNDS = 300

UPDATER = """
import sys
from ltms.config import Settings
from ltms.service import MemoryService
kind, memory_id = sys.argv[1], int(sys.argv[2])
with MemoryService(Settings.load(), background_saves=False) as service:
    print("ready", flush=True)
    for line in sys.stdin:
        round_ = int(line)
        if kind == "text":
            service.update(memory_id, text=f"the text written in round {round_}")
        else:
            service.update(memory_id, tags=[f"tag-{round_}"])
        print("ok", round_, flush=True)
"""


def start_updater(kind: str, memory_id: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return spawn_python(UPDATER, kind, str(memory_id), env=env, ready="ready")


def test_text_and_tags_updates_racing_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = child_env(data, LTMC_SNAPSHOT_EVERY="100000", LTMC_SNAPSHOT_QUIET_SECONDS="3600")
    with MemoryService(hash_settings(data), background_saves=False) as service:
        memory_id = service.store("the text written in round -1").id
    updaters = [start_updater(kind, memory_id, env) for kind in ("text", "tags")]
    lost: list[str] = []
    try:
        with MemoryService(hash_settings(data), background_saves=False) as service:
            for round_ in range(ROUNDS):
                for proc in updaters:  # release both writers before waiting for either
                    assert proc.stdin is not None
                    proc.stdin.write(f"{round_}\n")
                for proc in updaters:
                    assert proc.stdout is not None
                    answer = proc.stdout.readline()
                    assert answer == f"ok {round_}\n", answer + proc.communicate(timeout=30)[1]
                memory = service.get(memory_id)
                text = f"the text written in round {round_}"
                if memory.text != text or memory.tags != (f"tag-{round_}",):
                    lost.append(f"round {round_}: text {memory.text!r}, tags {memory.tags}")
                    continue
                hits = service.retrieve(memory.text, k=1)
                if hits[0].memory.id != memory_id or hits[0].score < 0.9999:
                    lost.append(f"round {round_}: the vector is not the text's (score {hits[0].score:.4f})")
    finally:
        for proc in updaters:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in updaters:
            proc.wait(timeout=60)
            err = proc.stderr.read() if proc.stderr else ""
            close_pipes(proc)
            assert proc.returncode == 0, err
    assert lost == [], f"{len(lost)} of {ROUNDS} rounds lost a change: {lost[:5]}"
