"""Sustained load: N concurrent MCP clients (streamable HTTP, each its own session) against one real
`ltmc serve --transport http` for a fixed time, a mix of store_memory and retrieve_memory calls.

Reports requests/s, p50/p90/p99 latency per tool, errors (must be 0), the server's RSS (VmRSS from
/proc/PID/status) before and after the timed phase and its peak, and the CPU each side used. The clients run in
this one process (asyncio) on the same machine as the server, so on 2 cores they compete for CPU with it:
the figures are a floor, not the server's ceiling.

    PYTHONPATH=. python bench/reliability/load.py --clients 16 --seconds 60                    # hash embedder
    PYTHONPATH=. python bench/reliability/load.py --clients 16 --seconds 30 --embedder minilm  # the default model

Exit status 1 on any error or an unclean server shutdown.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import reliability_kit as kit

TOPICS = [
    "deploy",
    "database",
    "lunch",
    "vault",
    "release",
    "incident",
    "budget",
    "hiring",
    "backup",
    "laptop",
    "network",
    "printer",
    "roadmap",
    "meeting",
    "invoice",
    "certificate",
]


def memory_text(rng: random.Random, client: int, i: int) -> str:
    words = " ".join(rng.choice(TOPICS) for _ in range(8))
    return f"client {client} note {i}: the {rng.choice(TOPICS)} plan mentions {words} ({rng.getrandbits(40):x})"


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = kit.server_env(work / "data", args.embedder)
    ledger = kit.Ledger()
    errors: list[str] = []
    with kit.HttpServer(env, work / "server.log") as server:
        server.wait_healthy(timeout=300)
        pid = server.proc.pid
        rss_idle = kit.rss_kib(pid)
        warm = anyio.Event()
        warmed = 0
        start_at = stop_at = 0.0
        peak = 0

        async def client_task(n: int) -> None:
            nonlocal warmed
            rng = random.Random(n)
            try:
                async with kit.http_client(server.mcp_url, mode="legacy" if n % 2 else "auto") as client:
                    warm_up = kit.Ledger()  # not counted: session set-up and first calls
                    await kit.store_acked(client, warm_up, memory_text(rng, n, -1))
                    await kit.retrieve_ids(client, warm_up, rng.choice(TOPICS))
                    warmed += 1
                    if warmed == args.clients:
                        warm.set()
                    await warm.wait()
                    i = 0
                    while time.monotonic() < stop_at:
                        try:
                            if rng.random() < args.store_ratio:
                                await kit.store_acked(client, ledger, memory_text(rng, n, i))
                            else:
                                query = f"what about the {rng.choice(TOPICS)} {rng.choice(TOPICS)}"
                                await kit.retrieve_ids(client, ledger, query, k=5)
                        except Exception as exc:
                            errors.append(f"client {n}: {type(exc).__name__}: {exc}"[:300])
                        i += 1
            except Exception as exc:
                errors.append(f"client {n} session: {type(exc).__name__}: {exc}"[:300])
                warmed += 1
                if warmed >= args.clients:
                    warm.set()

        async def sample_rss() -> None:
            nonlocal peak
            await warm.wait()
            while time.monotonic() < stop_at:
                peak = max(peak, kit.rss_kib(pid))
                await anyio.sleep(0.5)

        async with anyio.create_task_group() as tg:
            for n in range(args.clients):
                tg.start_soon(client_task, n)
            tg.start_soon(sample_rss)
            with anyio.fail_after(300):
                await warm.wait()
            rss_start, cpu_start = kit.rss_kib(pid), cpu_seconds(pid)
            start_at = time.monotonic()
            stop_at = start_at + args.seconds
            self_start = resource.getrusage(resource.RUSAGE_SELF)
        elapsed = time.monotonic() - start_at
        self_end = resource.getrusage(resource.RUSAGE_SELF)
        rss_end, cpu_end = kit.rss_kib(pid), cpu_seconds(pid)
        health = kit.wait_for_health(server.base_url)
        status = server.terminate()
        tracebacks = server.log().count("Traceback")
    return {
        "ledger": ledger,
        "errors": errors,
        "elapsed": elapsed,
        "rss_idle": rss_idle,
        "rss_start": rss_start,
        "rss_end": rss_end,
        "rss_peak": max(peak, rss_end),
        "server_cpu": cpu_end - cpu_start,
        "client_cpu": (self_end.ru_utime + self_end.ru_stime) - (self_start.ru_utime + self_start.ru_stime),
        "memories": health["memories"],
        "shutdown_status": status,
        "tracebacks": tracebacks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--embedder", choices=["hash", "minilm"], default="hash")
    parser.add_argument("--store-ratio", type=float, default=0.3, help="share of calls that are stores")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ltmc-load-"))
    try:
        result = anyio.run(run, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ledger: kit.Ledger = result["ledger"]
    elapsed = result["elapsed"]
    requests = ledger.requests
    stores = len(ledger.latencies.get("store_memory", []))
    errors = result["errors"]
    growth = result["rss_end"] - result["rss_start"]
    kit.header(
        f"Load: {args.clients} concurrent MCP clients over streamable HTTP, {args.seconds:g} s, "
        f"embedder {args.embedder}"
    )
    print(
        kit.table(
            [
                "clients",
                "seconds",
                "requests",
                "req/s",
                "errors",
                "memories at end",
                "server CPU",
                "client CPU",
                "clean shutdown",
            ],
            [
                [
                    args.clients,
                    f"{elapsed:.1f}",
                    requests,
                    f"{requests / elapsed:.0f}",
                    f"**{len(errors)}**",
                    result["memories"],
                    f"{result['server_cpu'] / elapsed:.2f} cores",
                    f"{result['client_cpu'] / elapsed:.2f} cores",
                    "yes" if result["shutdown_status"] == 0 and not result["tracebacks"] else "NO",
                ]
            ],
        )
    )
    print()
    print(
        kit.table(
            ["tool", "calls", "calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            [
                [
                    tool,
                    len(s),
                    f"{len(s) / elapsed:.0f}",
                    kit.ms(kit.pct(s, 50)),
                    kit.ms(kit.pct(s, 90)),
                    kit.ms(kit.pct(s, 99)),
                    kit.ms(max(s)),
                ]
                for tool, s in sorted(ledger.latencies.items())
            ],
        )
    )
    print()
    per_1k = f"{growth / stores * 1000 / 1024:.1f} MiB" if stores else "-"
    print(
        kit.table(
            ["server RSS", "after start-up", "start of timed phase", "end", "peak", "growth", "growth per 1k stores"],
            [
                [
                    "MiB",
                    f"{result['rss_idle'] / 1024:.0f}",
                    f"{result['rss_start'] / 1024:.0f}",
                    f"{result['rss_end'] / 1024:.0f}",
                    f"{result['rss_peak'] / 1024:.0f}",
                    f"{growth / 1024:+.1f}",
                    per_1k,
                ]
            ],
        )
    )
    print(
        f"\nMix: {args.store_ratio:.0%} store_memory, the rest retrieve_memory (k=5). Half the clients negotiate the "
        "2026-07-28 protocol, half the handshake era. Latency is per call, measured in the client."
    )
    for error in errors[:20]:
        print(f"- ERROR: {error}")
    kit.write_json(
        args.json,
        {
            "clients": args.clients,
            "seconds": elapsed,
            "requests": requests,
            "errors": len(errors),
            "error_samples": errors[:20],
            "calls": {t: len(s) for t, s in ledger.latencies.items()},
            "rss_start_kib": result["rss_start"],
            "rss_end_kib": result["rss_end"],
            "memories": result["memories"],
            "shutdown_status": result["shutdown_status"],
            "tracebacks": result["tracebacks"],
        },
    )
    return 0 if not errors and result["shutdown_status"] == 0 and not result["tracebacks"] else 1


if __name__ == "__main__":
    sys.exit(main())
