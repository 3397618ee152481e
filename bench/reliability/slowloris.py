"""Slowloris: hold many connections open that never finish their request headers, against a real
`ltmc serve --transport http` whose open-file limit is 1,024, while a normal client keeps calling.

The attacker opens `--connections` connections, sends the start of a request on each and one more header line
every `--drip` seconds, never the blank line that ends the headers; a connection the server closes is opened
again after `--reconnect` seconds. Meanwhile a normal client, every `--interval` seconds, GETs /health on a new
connection and calls retrieve_memory over an MCP session it opened before the attack.

Reports the normal client's latency and errors before and during the attack, the connections the attacker held,
the server's open files and RSS, and how much the server logged during the attack.

    python bench/reliability/slowloris.py                       # 1,500 connections for 30 s
    python bench/reliability/slowloris.py --checkout /old/tree  # the same against another checkout

Exit status 1 if the normal client saw an error during the attack or the server did not shut down cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import dos_kit
import reliability_kit as kit

REQUEST_START = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@dataclass
class Attack:
    opened: int = 0
    open_now: int = 0
    peak_open: int = 0
    closed_by_server: int = 0
    connect_failures: int = 0
    open_samples: list[int] | None = None


async def hold_connection(port: int, attack: Attack, stop: anyio.Event, drip: float, reconnect: float) -> None:
    while not stop.is_set():
        try:
            with anyio.fail_after(5):
                stream = await anyio.connect_tcp("127.0.0.1", port)
        except (OSError, TimeoutError):
            attack.connect_failures += 1
            with anyio.move_on_after(reconnect):
                await stop.wait()
            continue
        attack.opened += 1
        attack.open_now += 1
        attack.peak_open = max(attack.peak_open, attack.open_now)
        try:
            await stream.send(REQUEST_START)
            while not stop.is_set():
                with anyio.move_on_after(drip):
                    await stream.receive()  # anything back (a 408), or the end of the stream: closed on us
                    attack.closed_by_server += 1
                    break
                await stream.send(b"X-Padding: a\r\n")
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            attack.closed_by_server += 1
        finally:
            attack.open_now -= 1
            await stream.aclose()
        with anyio.move_on_after(reconnect):
            await stop.wait()


async def attack_for(args: argparse.Namespace) -> None:
    """The attacker's process (`--attack-port`): hold the connections for `--seconds`, then print its figures."""
    attack = Attack(open_samples=[])
    stop = anyio.Event()

    async def sample() -> None:
        while not stop.is_set():
            assert attack.open_samples is not None
            attack.open_samples.append(attack.open_now)
            with anyio.move_on_after(0.5):
                await stop.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sample)
        for _ in range(args.connections):
            tg.start_soon(hold_connection, args.attack_port, attack, stop, args.drip, args.reconnect)
        await anyio.sleep(args.seconds)
        stop.set()
        tg.cancel_scope.cancel()
    print(json.dumps(asdict(attack)), flush=True)


def attacker_command(args: argparse.Namespace, port: int) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--attack-port",
        str(port),
        "--connections",
        str(args.connections),
        "--seconds",
        str(args.seconds),
        "--drip",
        str(args.drip),
        "--reconnect",
        str(args.reconnect),
    ]


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = {"LTMC_HTTP_HEADER_TIMEOUT": str(args.header_timeout)} if args.header_timeout else {}
    if args.max_connections:
        env["LTMC_HTTP_MAX_CONNECTIONS"] = str(args.max_connections)
    server = dos_kit.LimitedServer(work, checkout=Path(args.checkout), fd_limit=args.fd_limit, env=env)
    normal = dos_kit.NormalClient()
    try:
        server.wait_healthy()
        rss_before, files_before = server.rss_kib(), server.open_files()
        stop_all, attack_over = anyio.Event(), anyio.Event()
        peak_files = peak_rss = 0
        async with kit.http_client(server.mcp_url, read_timeout=args.timeout) as client:
            await kit.call(client, "store_memory", {"text": "the build server is called hopper"})

        async def retrieve(client: Any) -> None:
            await kit.call(client, "retrieve_memory", {"query": "build server", "k": 1}, timeout=args.timeout)

        async def sample() -> None:
            nonlocal peak_files, peak_rss
            while not attack_over.is_set():
                peak_files, peak_rss = max(peak_files, server.open_files()), max(peak_rss, server.rss_kib())
                with anyio.move_on_after(0.5):
                    await attack_over.wait()

        async with anyio.create_task_group() as normal_tg:
            normal_tg.start_soon(
                normal.keep_calling,
                "GET /health, new connection",
                lambda: dos_kit.fresh_health(server.base_url, args.timeout),
                stop_all,
                args.interval,
                args.timeout,
            )
            normal_tg.start_soon(
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
            normal.phase = "during the attack"
            log_before = server.log_size()
            lines_before = server.log().count("\n")
            started = time.monotonic()
            normal_tg.start_soon(sample)
            # The attacker is another process, as it would be: its event loop is not the normal client's.
            with anyio.fail_after(args.seconds + 120):
                attacker = await anyio.run_process(attacker_command(args, server.port), check=True)
            attack_over.set()
            normal.phase = "after"
            attack = Attack(**json.loads(attacker.stdout))
            attack_seconds = time.monotonic() - started
            log_growth = server.log_size() - log_before
            log_lines = server.log().count("\n") - lines_before
            with anyio.move_on_after(args.baseline):
                await stop_all.wait()
            stop_all.set()
        try:
            health_after = server.wait_healthy(timeout=30)
        except AssertionError:
            health_after = {}
        status = server.terminate()
        tracebacks = server.log().count("Traceback")
        return {
            "normal": normal,
            "attack": attack,
            "attack_seconds": attack_seconds,
            "rss_before_kib": rss_before,
            "rss_peak_kib": max(peak_rss, rss_before),
            "files_before": files_before,
            "files_peak": peak_files,
            "log_bytes": log_growth,
            "log_lines": log_lines,
            "healthy_after": health_after.get("status") == "ok",
            "shutdown_status": status,
            "tracebacks": tracebacks,
        }
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1500, help="connections the attacker holds")
    parser.add_argument("--seconds", type=float, default=30, help="how long the attack lasts")
    parser.add_argument("--drip", type=float, default=5, help="seconds between two header lines on a connection")
    parser.add_argument("--reconnect", type=float, default=0.5, help="seconds before reopening a closed connection")
    parser.add_argument("--fd-limit", type=int, default=1024, help="the server's open-file limit (soft and hard)")
    parser.add_argument("--max-connections", type=int, help="LTMC_HTTP_MAX_CONNECTIONS for the server")
    parser.add_argument("--header-timeout", type=float, help="LTMC_HTTP_HEADER_TIMEOUT for the server")
    parser.add_argument("--attack-port", type=int, help=argparse.SUPPRESS)  # run as the attacker process
    dos_kit.add_trial_options(parser, interval=0.2, timeout=5)
    args = parser.parse_args()
    if args.attack_port:
        dos_kit.raise_own_file_limit(args.connections + 256)
        anyio.run(attack_for, args)
        return 0
    result = dos_kit.run_trial(run, args, "ltmc-slowloris-")

    normal: dos_kit.NormalClient = result["normal"]
    attack: Attack = result["attack"]
    seconds = result["attack_seconds"]
    held = sorted(attack.open_samples or [0])
    kit.header(
        f"Slowloris: {args.connections} connections that never finish their headers, {args.seconds:g} s, server "
        f"open-file limit {args.fd_limit}"
    )
    print(kit.table(dos_kit.CALL_HEADERS, normal.rows()))
    print()
    print(
        kit.table(
            [
                "attack connections opened",
                "held open (median, peak)",
                "closed by the server",
                "failed to connect",
                "server open files (before, peak)",
                "server RSS MiB (before, peak)",
                "server log during the attack",
                "clean shutdown",
            ],
            [
                [
                    attack.opened,
                    f"{held[len(held) // 2]}, {attack.peak_open}",
                    attack.closed_by_server,
                    attack.connect_failures,
                    f"{result['files_before']}, {result['files_peak']}",
                    f"{result['rss_before_kib'] / 1024:.0f}, {result['rss_peak_kib'] / 1024:.0f}",
                    f"{result['log_lines']} lines, {result['log_bytes'] / 1024:.0f} KiB "
                    f"({result['log_bytes'] / 1024 / max(seconds, 1e-9) * 60:.0f} KiB/min)",
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
            "connections": args.connections,
            "attack_seconds": seconds,
            "errors_during": len(normal.errors("during the attack")),
            "errors": len(normal.errors()),
            "error_samples": normal.errors()[:10],
            "answered_during": normal.answered("during the attack"),
            "opened": attack.opened,
            "peak_open": attack.peak_open,
            "closed_by_server": attack.closed_by_server,
            "log_lines": result["log_lines"],
            "log_bytes": result["log_bytes"],
            "healthy_after": result["healthy_after"],
            "shutdown_status": result["shutdown_status"],
            "tracebacks": result["tracebacks"],
        },
    )
    clean = result["shutdown_status"] == 0 and not result["tracebacks"]
    return 0 if not normal.errors() and clean else 1


if __name__ == "__main__":
    sys.exit(main())
