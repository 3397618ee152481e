"""The web page (/ui): how long its pages take to render over 100k memories, and a search page against the
retrieve_memory tool call it mirrors.

- In process: the real HTTP app (`build_http_app`) through httpx2's ASGI transport. A figure is routing, the
  session cookie, the service call (in a worker thread) and the template: what "renders server-side" means.
- Over HTTP: a real `python -m ltms serve --transport http` process, one keep-alive connection (http.client);
  adds the socket and uvicorn. The tool call goes through the mcp SDK's Client over streamable HTTP.

Data: a cached data directory of N memories (common.cached_data_dir: one namespace, no tags, one memory a second),
opened read-only, so nothing is written to the cache. Queries are embedded by the hashing embedder (~0.3 ms), so
a search figure is the index search and the page, not a model.

    PYTHONPATH=. python bench/bench_ui.py              # 100k memories, 100 requests a row
    PYTHONPATH=. python bench/bench_ui.py --quick      # 10k memories, 20 requests a row
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from common import HASH_NAME, ROOT, cached_data_dir, emit, header, human, log, ms, p50, pct, settings_for, table

QUERY = "the deploy of service 42 moved to region 7"
SEARCH_PATH = f"/ui/?q={QUERY.replace(' ', '+')}&k=10"
WARMUP = 3

Call = Callable[[], Awaitable[int]]  # one request; returns the size of the answer in bytes


def row(where: str, label: str, samples: list[float], size: int | None) -> list[object]:
    kib = f"{size / 1024:.1f}" if size is not None else ""
    return [where, label, len(samples), ms(p50(samples)), ms(pct(samples, 95)), kib]


async def timed(count: int, *calls: Call) -> tuple[list[list[float]], list[int]]:
    """WARMUP untimed rounds, then `count` timed ones; the calls take turns in each round, so a load that comes
    and goes on this shared machine falls on each of them alike. Returns the durations and last size of each."""
    samples: list[list[float]] = [[] for _ in calls]
    sizes = [0 for _ in calls]
    for round_number in range(WARMUP + count):
        for i, call in enumerate(calls):
            start = time.perf_counter()
            sizes[i] = await call()
            if round_number >= WARMUP:
                samples[i].append(time.perf_counter() - start)
    return samples, sizes


def pages(n: int) -> list[tuple[str, str]]:
    middle = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - n // 2))
    last_offset = max(0, (n - 1) // 20 * 20)
    return [
        ("list, newest first (page 1)", "/ui/"),
        (f"list, page {n // 2 // 20 + 1:,} (offset {n // 2:,})", f"/ui/?offset={n // 2}"),
        (f"list, last page (offset {last_offset:,})", f"/ui/?offset={last_offset}"),
        ("list, time range (newer half)", f"/ui/?since={middle}"),
        ("list, tag filter (no match)", "/ui/?tags=nothing-has-this"),
        ("memory page", f"/ui/memories/{n // 2}"),
        ("status page (doctor's report reused)", "/ui/status"),
    ]


async def measure(
    where: str, n: int, count: int, get: Callable[[str], Awaitable[int]], tool: Call
) -> list[list[object]]:
    rows: list[list[object]] = []
    start = time.perf_counter()
    size = await get("/ui/status")  # the first status page runs the doctor's checks
    rows.append(row(where, "status page, first load (runs the doctor's checks)", [time.perf_counter() - start], size))
    for label, path in pages(n):
        log(f"  {where}: {label}")

        async def page(path: str = path) -> int:
            return await get(path)

        (samples,), (size,) = await timed(count, page)
        rows.append(row(where, label, samples, size))
    log(f"  {where}: search page and tool call")

    async def search() -> int:
        return await get(SEARCH_PATH)

    (page_samples, tool_samples), (size, _) = await timed(count, search, tool)
    rows.append(row(where, "search page, k=10", page_samples, size))
    rows.append(row(where, "retrieve_memory tool call, k=10 (same query, MCP client)", tool_samples, None))
    return rows


# -- in process --------------------------------------------------------------------------------------------------


async def in_process(data_dir: Path, n: int, count: int) -> list[list[object]]:
    import httpx2
    from mcp import Client

    from ltms.server.http_app import build_http_app
    from ltms.server.tools import build_server
    from ltms.service import MemoryService

    settings = settings_for(data_dir, embedder="hash", read_only=True)
    with MemoryService(settings, background_saves=False) as service:
        server = build_server(service, settings)
        app = build_http_app(server, service, settings)
        transport = httpx2.ASGITransport(app=app)
        async with (
            httpx2.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{settings.http_port}") as client,
            Client(server) as mcp_client,
        ):

            async def get(path: str) -> int:
                response = await client.get(path)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
                return len(response.content)

            async def tool() -> int:
                result = await mcp_client.call_tool("retrieve_memory", {"query": QUERY, "k": 10})
                assert not result.is_error
                return 0

            return await measure("in process", n, count, get, tool)


# -- over HTTP --------------------------------------------------------------------------------------------------


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTMC_", "FAISS_"))}
    env.update(LTMC_DATA_DIR=str(data_dir), LTMC_EMBEDDER="hash", LTMC_READ_ONLY="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltms", "serve", "--transport", "http", "--port", "0"],
        env=env,
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    for line in proc.stderr:  # the server logs the address it bound: "HTTP on http://127.0.0.1:PORT: ..."
        if "HTTP on http://" in line:
            port = int(line.split("HTTP on http://", 1)[1].split(":", 2)[1])
            break
        if time.monotonic() > deadline:
            break
    else:
        raise SystemExit(f"the server exited with {proc.wait()} before listening")
    stderr = proc.stderr
    threading.Thread(target=lambda: stderr.read(), daemon=True).start()  # a full pipe would block the server
    while time.monotonic() < deadline:  # the port is bound before uvicorn listens: wait for /health
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                connection.close()
                return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server never answered /health")


async def over_http(data_dir: Path, n: int, count: int) -> list[list[object]]:
    from mcp import Client

    proc, port = start_server(data_dir)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    cookie = ""
    try:
        async with Client(f"http://127.0.0.1:{port}/mcp", cache=None) as mcp_client:

            async def get(path: str) -> int:
                nonlocal cookie
                connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
                response = connection.getresponse()
                body = response.read()
                assert response.status == 200, (path, response.status, body[:300])
                cookie = (response.getheader("set-cookie") or cookie).split(";", 1)[0]
                return len(body)

            async def tool() -> int:
                result = await mcp_client.call_tool("retrieve_memory", {"query": QUERY, "k": 10})
                assert not result.is_error
                return 0

            return await measure("HTTP", n, count, get, tool)
    finally:
        connection.close()
        proc.terminate()
        proc.wait(timeout=60)


async def main_async(args: argparse.Namespace) -> list[list[object]]:
    data_dir = cached_data_dir(args.memories, HASH_NAME)
    rows = await in_process(data_dir, args.memories, args.requests)
    if not args.no_http:
        rows += await over_http(data_dir, args.memories, args.requests)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100, help="timed requests per row (after 3 warm-up ones)")
    parser.add_argument("--quick", action="store_true", help="10k memories, 20 requests a row")
    parser.add_argument("--no-http", action="store_true", help="only the in-process figures")
    args = parser.parse_args()
    if args.quick:
        args.memories, args.requests = 10_000, 20
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one log line per request otherwise
    header(f"Web page (/ui) over {human(args.memories)} memories")
    rows: Any = anyio.run(main_async, args)
    emit(table(["where", "page", "requests", "p50 ms", "p95 ms", "KiB"], rows))
    emit()
    emit("Server-side render budget (issue 14): a list page over 100k memories under 200 ms p50.")


if __name__ == "__main__":
    main()
