"""Kill -9 trials: a writer storing memories in a loop is SIGKILLed at a random moment, then restarted; every
acknowledged memory must be there, the index must load or be rebuilt, and its count must match the database.

Two levels:
- service: a child process runs MemoryService.store() in a loop and prints "ack <id> <n>" after each store
  returns (the acknowledgement). It is killed either during its start-up (imports, index load or rebuild,
  snapshot save) or while writing. The check after each kill opens the data directory in this process, as a
  restart would: index state, count == vectors, get() of every acknowledged memory of the data directory,
  retrieve() of every memory acknowledged in the trial.
- server: a real `ltmc serve --transport http`; an MCP client stores in a loop over streamable HTTP and records
  each store whose result (with its id) came back; the server is SIGKILLed, restarted, and every acknowledged
  memory is read back over MCP with get_memory and retrieve_memory. The restarted server is the next victim.

Snapshots are saved every 25 changes and after 0.1 s of quiet, so kills land in snapshot writes as well as in
SQLite commits. The data directory is replaced by a fresh one every --trials-per-dir trials (so snapshot
writes stay small and trials stay fast).

    PYTHONPATH=. python bench/reliability/crash_trials.py --trials 200                  # both levels, 200 trials each
    PYTHONPATH=. python bench/reliability/crash_trials.py --trials 200 --level service  # several minutes on 2 cores

Exit status 1 if any acknowledged write was lost or a count mismatched.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import reliability_kit as kit

WRITER = """
import itertools, os, sys
from ltms.config import Settings
from ltms.service import MemoryService
service = MemoryService(Settings.load())
print("ready", flush=True)
trial = os.environ["TRIAL"]
for i in itertools.count():
    result = service.store(f"crash trial {trial} memory {i} marker t{trial}m{i}")
    print("ack", result.id, i, flush=True)
"""

TRIAL_ENV = {"LTMC_SNAPSHOT_EVERY": "25", "LTMC_SNAPSHOT_QUIET_SECONDS": "0.1"}


@dataclass
class Figures:
    level: str
    trials: int = 0
    killed_in_startup: int = 0
    killed_writing: int = 0
    acknowledged: int = 0
    lost: int = 0
    unacknowledged_commits: int = 0  # committed, but the kill came before the answer: allowed (at most 1 a kill)
    count_mismatches: int = 0
    states: dict[str, int] = field(default_factory=dict)
    moved_aside: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def row(self) -> list[object]:
        return [
            self.level,
            self.trials,
            self.killed_in_startup,
            self.killed_writing,
            self.acknowledged,
            f"**{self.lost}**",
            self.unacknowledged_commits,
            self.count_mismatches,
            self.states.get("loaded", 0),
            self.states.get("rebuilt", 0),
            self.states.get("created", 0),
            self.states.get("none", 0),
            self.moved_aside,
            f"{self.seconds:.0f}",
        ]


HEADERS = [
    "level",
    "trials",
    "killed in start-up",
    "killed while writing",
    "acknowledged writes",
    "lost",
    "committed, unacknowledged",
    "count != vectors",
    "index loaded",
    "index rebuilt",
    "index created",
    "no data dir yet",
    "snapshots moved aside",
    "seconds",
]


def moved_aside(data: Path) -> int:
    return sum(1 for p in data.glob("*.bad-*")) if data.exists() else 0


# -- service level --------------------------------------------------------------------------------------------------


def writer_until_killed(data: Path, trial: int, rng: random.Random) -> tuple[dict[int, str], bool]:
    """Run the writer, kill it at a random moment; (acknowledged id -> text, whether it got past start-up)."""
    env = kit.server_env(data, **TRIAL_ENV, TRIAL=str(trial))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    acked: dict[int, str] = {}
    ready, first_ack = threading.Event(), threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if parts == ["ready"]:
                ready.set()
            elif len(parts) == 3 and parts[0] == "ack":
                acked[int(parts[1])] = f"crash trial {trial} memory {parts[2]} marker t{trial}m{parts[2]}"
                first_ack.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if rng.random() < 0.2:  # in start-up (~0.2 s): imports, opening the database, loading/rebuilding the index
            time.sleep(rng.uniform(0.02, 0.3))
        else:
            first_ack.wait(60)
            time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    reader.join(30)
    return acked, ready.is_set()


def service_trials(args: argparse.Namespace, work: Path) -> Figures:
    from ltms.config import Settings
    from ltms.service import MemoryService

    figures = Figures("service")
    rng = random.Random(args.seed)
    started = time.monotonic()
    data, dir_acked, dir_unacked = work / "service-0", {}, 0
    for trial in range(args.trials):
        if trial % args.trials_per_dir == 0:
            data, dir_acked, dir_unacked = work / f"service-{trial}", {}, 0
        aside_before = moved_aside(data)
        acked, got_ready = writer_until_killed(data, trial, rng)
        figures.trials += 1
        if got_ready:
            figures.killed_writing += 1
        else:
            figures.killed_in_startup += 1
        dir_acked.update(acked)
        figures.acknowledged += len(acked)
        if not data.exists():  # killed before it even created the directory: nothing to restart from
            figures.states["none"] = figures.states.get("none", 0) + 1
            continue
        settings = Settings.load(env=kit.server_env(data))
        with MemoryService(settings, background_saves=False) as service:  # the restart
            figures.states[service.index_state] = figures.states.get(service.index_state, 0) + 1
            count = service.storage.db.count()
            if service.storage.index.ntotal != count:
                figures.count_mismatches += 1
                figures.failures.append(f"trial {trial}: {service.storage.index.ntotal} vectors, {count} memories")
            lost = set()
            for memory_id, text in dir_acked.items():
                memory = service.storage.db.get(memory_id)
                if memory is None or memory.text != text:
                    lost.add(memory_id)
            for memory_id, text in acked.items():
                hits = service.retrieve(text, k=3)
                if memory_id not in [hit.memory.id for hit in hits]:
                    lost.add(memory_id)
            figures.unacknowledged_commits += count - len(dir_acked) - dir_unacked
            dir_unacked = count - len(dir_acked)
        if lost:
            figures.lost += len(lost)
            figures.failures.append(f"trial {trial}: lost {sorted(lost)[:10]}")
        figures.moved_aside += moved_aside(data) - aside_before
        if trial % 10 == 9:
            kit.progress(
                f"service trial {trial + 1}/{args.trials}: {figures.acknowledged} acknowledged, {figures.lost} lost"
            )
    figures.seconds = time.monotonic() - started
    return figures


# -- server level ---------------------------------------------------------------------------------------------------


async def server_trials_async(args: argparse.Namespace, work: Path) -> Figures:
    figures = Figures("server")
    rng = random.Random(args.seed + 1)
    started = time.monotonic()
    server: kit.HttpServer | None = None
    dir_acked, dir_unacked = kit.Ledger(), 0
    try:
        for trial in range(args.trials):
            if trial % args.trials_per_dir == 0:
                if server is not None:
                    server.stop()
                data, dir_acked, dir_unacked = work / f"server-{trial}", kit.Ledger(), 0
                data.parent.mkdir(parents=True, exist_ok=True)
                server = kit.HttpServer(kit.server_env(data, **TRIAL_ENV), work / f"server-{trial}.log")
                server.wait_healthy()
            assert server is not None
            aside_before = moved_aside(data)
            acked = await kit.store_until_killed(
                server.mcp_url, dir_acked, f"server trial {trial}", server.kill, delay=rng.uniform(0.0, 1.0)
            )
            figures.trials += 1
            figures.killed_writing += 1
            figures.acknowledged += acked
            server.stop()
            server = kit.HttpServer(kit.server_env(data, **TRIAL_ENV), work / f"server-{trial}.log")
            health = server.wait_healthy()
            state = health["index"]["state"]
            figures.states[state] = figures.states.get(state, 0) + 1
            async with kit.http_client(server.mcp_url) as client:
                seen = await kit.verify(client, dir_acked.acked)
            if seen.lost:
                figures.lost += seen.lost
                figures.failures.append(
                    f"trial {trial}: lost get={seen.missing_get[:10]} retrieve={seen.missing_retrieve[:10]}"
                )
            if seen.memories != seen.vectors:
                figures.count_mismatches += 1
                figures.failures.append(f"trial {trial}: {seen.vectors} vectors, {seen.memories} memories")
            figures.unacknowledged_commits += seen.memories - len(dir_acked.acked) - dir_unacked
            dir_unacked = seen.memories - len(dir_acked.acked)
            figures.moved_aside += moved_aside(data) - aside_before
            if trial % 10 == 9:
                kit.progress(
                    f"server trial {trial + 1}/{args.trials}: {figures.acknowledged} acknowledged, {figures.lost} lost"
                )
    finally:
        if server is not None:
            server.stop()
    figures.seconds = time.monotonic() - started
    return figures


# -- main -----------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200, help="kills per level")
    parser.add_argument("--level", choices=["service", "server", "both"], default="both")
    parser.add_argument("--trials-per-dir", type=int, default=10, help="trials on one data directory")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", help="where the data directories go (default: a temp dir, removed)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="ltmc-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    results: list[Figures] = []
    try:
        if args.level in ("service", "both"):
            results.append(service_trials(args, work))
        if args.level in ("server", "both"):
            results.append(anyio.run(server_trials_async, args, work))
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    kit.header("Kill -9 trials: acknowledged writes lost")
    print(kit.table(HEADERS, [f.row() for f in results]))
    print()
    print(
        "Every trial: SIGKILL at a random moment, restart, check every acknowledged memory (get and retrieve) "
        "and that the index holds exactly as many vectors as the database holds memories. 'Committed, "
        "unacknowledged': stores in flight at the kill that committed before their answer was sent (allowed: "
        "the client was never told either way). 'Index created': the restart found no snapshot yet; "
        "'no data dir yet': killed before it created its data directory."
    )
    failures = [line for f in results for line in f.failures]
    for line in failures:
        print(f"- FAILURE: {line}")
    total = {
        "trials": sum(f.trials for f in results),
        "acknowledged": sum(f.acknowledged for f in results),
        "lost": sum(f.lost for f in results),
        "count_mismatches": sum(f.count_mismatches for f in results),
        "levels": [f.__dict__ for f in results],
    }
    kit.write_json(args.json, total)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
