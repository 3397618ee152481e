"""Abandoned sessions: open many streamable-HTTP sessions and walk away from them, against a real
`ltmc serve --transport http`, while a normal client keeps working.

The attacker (a separate process) sends `initialize` `--sessions` times, `--concurrency` at a time, and never
uses or closes a session again. Meanwhile a normal client, every `--interval` seconds, connects as a new MCP
client (handshake era: a session of its own), calls memory_stats and leaves; and another keeps one session open
and calls retrieve_memory.

Reports the normal client's latency and errors before, during and after the flood, the sessions the attacker
got and was refused, the sessions open on the server (GET /health) at the end of the flood, the server's RSS,
and, with `--wait-idle`, how long the abandoned sessions took to end.

    python bench/reliability/sessions.py                        # 10,000 sessions, the default limits
    python bench/reliability/sessions.py --checkout /old/tree   # the same against another checkout

Exit status 1 if the normal client saw an error, or the server did not shut down cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import dos_kit
import httpx2
import reliability_kit as kit

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "abandoner", "version": "0"},
    },
}
POST_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


async def abandon_sessions(args: argparse.Namespace) -> None:
    """The attacker's process (`--attack-url`): open sessions and forget them; print the counts."""
    counts = {"opened": 0, "refused": 0, "failed": 0}
    deadline = time.monotonic() + args.seconds
    remaining = args.sessions
    clients = [
        httpx2.AsyncClient(
            timeout=30,
            transport=httpx2.AsyncHTTPTransport(local_address=f"127.0.0.{2 + n}" if args.addresses > 1 else None),
        )
        for n in range(args.addresses)
    ]

    async def worker(n: int) -> None:
        nonlocal remaining
        client = clients[n % len(clients)]
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            try:
                response = await client.post(args.attack_url, json=INITIALIZE, headers=POST_HEADERS)
            except httpx2.HTTPError:
                counts["failed"] += 1
                continue
            if response.status_code == 200 and response.headers.get("mcp-session-id"):
                counts["opened"] += 1
            elif response.status_code == 503:
                counts["refused"] += 1
            else:
                counts["failed"] += 1

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for n in range(args.concurrency):
            tg.start_soon(worker, n)
    for client in clients:
        await client.aclose()
    print(json.dumps({**counts, "seconds": time.monotonic() - started}), flush=True)


def attacker_command(args: argparse.Namespace, url: str) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--attack-url",
        url,
        "--sessions",
        str(args.sessions),
        "--concurrency",
        str(args.concurrency),
        "--seconds",
        str(args.seconds),
        "--addresses",
        str(args.addresses),
    ]


def open_sessions(base_url: str) -> int | None:
    """Sessions open on the server, from GET /health (None where the server does not report them)."""
    try:
        return httpx2.get(f"{base_url}/health", timeout=30).json().get("http_sessions")
    except httpx2.HTTPError:
        return None


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = {}
    for flag, variable in (
        ("idle", "LTMC_SESSION_IDLE_SECONDS"),
        ("max_sessions", "LTMC_MAX_SESSIONS"),
        ("per_client", "LTMC_MAX_SESSIONS_PER_CLIENT"),
    ):
        if getattr(args, flag) is not None:
            env[variable] = str(getattr(args, flag))
    server = dos_kit.LimitedServer(work, checkout=Path(args.checkout), env=env)
    normal = dos_kit.NormalClient()
    result: dict[str, Any] = {"normal": normal, "idle_end_seconds": None}
    try:
        server.wait_healthy()
        result["rss_before_kib"] = server.rss_kib()
        stop_all, flood_over = anyio.Event(), anyio.Event()
        peak_rss = 0
        async with kit.http_client(server.mcp_url, read_timeout=args.timeout) as client:
            await kit.call(client, "store_memory", {"text": "the build server is called hopper"})

        async def new_client() -> None:
            async with kit.http_client(server.mcp_url, mode="legacy", read_timeout=args.timeout) as client:
                await kit.call(client, "memory_stats", {}, timeout=args.timeout)

        async def retrieve(client: Any) -> None:
            await kit.call(client, "retrieve_memory", {"query": "build server", "k": 1}, timeout=args.timeout)

        async def sample() -> None:
            nonlocal peak_rss
            while not flood_over.is_set():
                peak_rss = max(peak_rss, server.rss_kib())
                with anyio.move_on_after(0.5):
                    await flood_over.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(
                normal.keep_calling, "new client + memory_stats", new_client, stop_all, args.interval, 2 * args.timeout
            )
            tg.start_soon(
                normal.keep_calling_in_session,
                "retrieve_memory, open session",
                server.mcp_url,
                retrieve,
                stop_all,
                args.interval,
                args.timeout,
            )
            with anyio.move_on_after(args.baseline):
                await stop_all.wait()
            normal.phase = "during the flood"
            tg.start_soon(sample)
            with anyio.fail_after(args.seconds + 120):
                attacker = await anyio.run_process(attacker_command(args, server.mcp_url), check=True)
            flood_over.set()
            flood_end = time.monotonic()
            normal.phase = "after"
            result["attack"] = json.loads(attacker.stdout)
            result["open_at_end"] = await anyio.to_thread.run_sync(open_sessions, server.base_url)
            result["rss_after_flood_kib"] = server.rss_kib()
            with anyio.move_on_after(args.baseline):
                await stop_all.wait()
            stop_all.set()
        result["rss_peak_kib"] = max(peak_rss, result["rss_after_flood_kib"])
        if args.wait_idle and result["open_at_end"] is not None:
            deadline = flood_end + 2 * float(args.idle or 300) + 30
            while time.monotonic() < deadline:
                if await anyio.to_thread.run_sync(open_sessions, server.base_url) == 0:
                    result["idle_end_seconds"] = time.monotonic() - flood_end
                    break
                await anyio.sleep(0.5)
            result["rss_after_idle_kib"] = server.rss_kib()
        result["shutdown_status"] = server.terminate()
        result["tracebacks"] = server.log().count("Traceback")
        return result
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions the attacker opens and abandons")
    parser.add_argument("--concurrency", type=int, default=16, help="the attacker's requests in flight")
    parser.add_argument("--addresses", type=int, default=1, help="loopback source addresses the attacker uses")
    parser.add_argument("--seconds", type=float, default=300, help="the flood stops after this long at most")
    parser.add_argument("--idle", type=float, help="LTMC_SESSION_IDLE_SECONDS for the server")
    parser.add_argument("--max-sessions", type=int, help="LTMC_MAX_SESSIONS for the server")
    parser.add_argument("--per-client", type=int, help="LTMC_MAX_SESSIONS_PER_CLIENT for the server")
    parser.add_argument("--wait-idle", action="store_true", help="then wait for the abandoned sessions to end")
    parser.add_argument("--attack-url", help=argparse.SUPPRESS)  # run as the attacker process
    dos_kit.add_trial_options(parser, interval=0.5, timeout=10)
    args = parser.parse_args()
    if args.attack_url:
        anyio.run(abandon_sessions, args)
        return 0
    result = dos_kit.run_trial(run, args, "ltmc-sessions-")

    normal: dos_kit.NormalClient = result["normal"]
    attack = result["attack"]
    mib = lambda kib: f"{kib / 1024:.0f}" if kib is not None else "-"  # noqa: E731
    kit.header(
        f"Abandoned sessions: {args.sessions} streamable-HTTP sessions opened and left, {args.concurrency} at a time"
    )
    print(kit.table(dos_kit.CALL_HEADERS, normal.rows()))
    print()
    idle = result["idle_end_seconds"]
    print(
        kit.table(
            [
                "sessions opened",
                "refused (503)",
                "failed",
                "flood seconds",
                "open on the server after the flood",
                "server RSS MiB (before, peak, after)",
                "all abandoned sessions ended after",
                "clean shutdown",
            ],
            [
                [
                    attack["opened"],
                    attack["refused"],
                    attack["failed"],
                    f"{attack['seconds']:.0f}",
                    result["open_at_end"] if result["open_at_end"] is not None else "(not reported)",
                    f"{mib(result['rss_before_kib'])}, {mib(result['rss_peak_kib'])}, "
                    f"{mib(result['rss_after_flood_kib'])}",
                    f"{idle:.0f} s" if idle is not None else "-",
                    "yes" if result["shutdown_status"] == 0 and not result["tracebacks"] else "NO",
                ]
            ],
        )
    )
    print(f"\n{dos_kit.latency_note()}")
    for error in normal.errors()[:10]:
        print(f"- ERROR: {error}")
    kit.write_json(
        args.json,
        {
            "attack": attack,
            "errors": len(normal.errors()),
            "errors_during": len(normal.errors("during the flood")),
            "error_samples": normal.errors()[:10],
            "answered_during": normal.answered("during the flood"),
            "open_at_end": result["open_at_end"],
            "idle_end_seconds": idle,
            "rss_before_kib": result["rss_before_kib"],
            "rss_peak_kib": result["rss_peak_kib"],
            "shutdown_status": result["shutdown_status"],
            "tracebacks": result["tracebacks"],
        },
    )
    clean = result["shutdown_status"] == 0 and not result["tracebacks"]
    return 0 if not normal.errors() and clean else 1


if __name__ == "__main__":
    sys.exit(main())
