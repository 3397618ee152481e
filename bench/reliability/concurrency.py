"""Two servers on one data directory under concurrent clients: a stdio server (spawned by the MCP SDK's client)
and an HTTP server (`ltmc serve --transport http`), with N HTTP clients and the stdio client each doing --ops
rounds of: store a memory, retrieve it at once by its text, get and retrieve a memory another client was told
was stored. At the end every acknowledged memory is checked from BOTH servers (get_memory + retrieve_memory),
and each server's memory count must equal its index's vector count.

    PYTHONPATH=. python bench/reliability/concurrency.py --http-clients 8 --ops 100
    PYTHONPATH=. python bench/reliability/concurrency.py --http-clients 16 --ops 100 --embedder minilm

Exit status 1 on any lost write or error.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio
import reliability_kit as kit
from mcp import Client


async def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    data = work / "data"
    env = kit.server_env(data, args.embedder, LTMC_SNAPSHOT_EVERY="50", LTMC_SNAPSHOT_QUIET_SECONDS="0.5")
    shared: dict[int, str] = {}
    ledgers = [kit.Ledger() for _ in range(args.http_clients + 1)]
    with kit.HttpServer(env, work / "http-server.log") as http:
        http.wait_healthy()
        started = time.monotonic()
        async with Client(kit.stdio_params(env), read_timeout_seconds=kit.CALL_TIMEOUT) as stdio:
            async with anyio.create_task_group() as tg:
                for n in range(args.http_clients):

                    async def run_http(n: int = n) -> None:
                        try:
                            async with kit.http_client(http.mcp_url, mode="legacy" if n % 2 else "auto") as c:
                                await kit.mixed_client(c, f"http{n}", ledgers[n], shared, args.ops, rng_seed=n)
                        except Exception as exc:
                            ledgers[n].errors.append(f"http{n}: session failed: {exc!r}"[:300])

                    tg.start_soon(run_http)
                tg.start_soon(kit.mixed_client, stdio, "stdio", ledgers[-1], shared, args.ops, 10_000)
            elapsed = time.monotonic() - started
            acked = {k: v for ledger in ledgers for k, v in ledger.acked.items()}
            kit.progress(f"{len(acked)} stores acknowledged in {elapsed:.1f}s; checking from both servers")
            from_stdio = await kit.verify(stdio, acked)
        async with kit.http_client(http.mcp_url) as client:
            from_http = await kit.verify(client, acked)
        log = http.log()
    errors = [e for ledger in ledgers for e in ledger.errors]
    latencies: dict[str, list[float]] = {}
    for ledger in ledgers:
        for tool, samples in ledger.latencies.items():
            latencies.setdefault(tool, []).extend(samples)
    return {
        "acked": len(acked),
        "errors": errors,
        "from_stdio": from_stdio,
        "from_http": from_http,
        "seconds": elapsed,
        "latencies": latencies,
        "tracebacks": log.count("Traceback"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http-clients", type=int, default=8)
    parser.add_argument("--ops", type=int, default=100, help="rounds per client")
    parser.add_argument("--embedder", choices=["hash", "minilm"], default="hash")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ltmc-concurrency-"))
    try:
        result = anyio.run(run, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    kit.header("Two servers, one data directory, concurrent clients")
    stdio_view, http_view = result["from_stdio"], result["from_http"]
    requests = sum(len(v) for v in result["latencies"].values())
    print(
        kit.table(
            [
                "servers",
                "clients",
                "rounds per client",
                "acknowledged writes",
                "lost (seen from stdio)",
                "lost (seen from HTTP)",
                "errors",
                "memories = vectors (both)",
                "tool calls",
                "seconds",
            ],
            [
                [
                    "stdio + HTTP",
                    f"{args.http_clients} HTTP + 1 stdio",
                    args.ops,
                    result["acked"],
                    f"**{stdio_view.lost}**",
                    f"**{http_view.lost}**",
                    f"**{len(result['errors'])}**",
                    "yes"
                    if stdio_view.memories
                    == stdio_view.vectors
                    == http_view.memories
                    == http_view.vectors
                    == result["acked"]
                    else "NO",
                    requests,
                    f"{result['seconds']:.1f}",
                ]
            ],
        )
    )
    print()
    print(
        kit.table(
            ["tool (during the run)", "calls", "p50 ms", "p99 ms"],
            [
                [tool, len(s), kit.ms(kit.pct(s, 50)), kit.ms(kit.pct(s, 99))]
                for tool, s in sorted(result["latencies"].items())
            ],
        )
    )
    print(
        f"\nEmbedder: {args.embedder}. Each round: store, retrieve it at once (read-your-writes), get + retrieve a "
        "memory acknowledged to another client (often through the other server)."
    )
    for error in result["errors"][:20]:
        print(f"- ERROR: {error}")
    kit.write_json(
        args.json,
        {
            "acked": result["acked"],
            "errors": result["errors"],
            "lost_stdio": stdio_view.lost,
            "lost_http": http_view.lost,
        },
    )
    ok = (
        not result["errors"]
        and stdio_view.lost == http_view.lost == 0
        and stdio_view.memories == http_view.memories == result["acked"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
