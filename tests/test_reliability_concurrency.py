"""Two server processes on one data directory, under concurrent clients: a stdio server (the SDK client spawns
it) and an HTTP server, with 6 HTTP clients and the stdio client storing and retrieving at once. Every
acknowledged memory must be visible from both servers, during the run and after it.

The service-level two-writer test is in test_concurrency_and_crash.py; the long variant is
bench/reliability/concurrency.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from mcp import Client

from bench.reliability.reliability_kit import Ledger, http_client, mixed_client, run_script, stdio_params, verify
from tests.helpers import REPO, ServerProcess, child_env

pytestmark = pytest.mark.anyio
StartServer = Callable[..., ServerProcess]

HTTP_CLIENTS = 6
OPS = 10  # per client: a store, a retrieve of it, a get and a retrieve of another client's memory


async def test_stdio_and_http_servers_on_one_directory_with_concurrent_clients(
    start_server: StartServer, data_dir: Path
) -> None:
    # Frequent snapshot saves from both processes: they must take turns on the snapshot file.
    env = child_env(data_dir, LTMC_SNAPSHOT_EVERY="10", LTMC_SNAPSHOT_QUIET_SECONDS="0.2")
    http = start_server("http", env=env)
    shared: dict[int, str] = {}
    ledgers = [Ledger() for _ in range(HTTP_CLIENTS + 1)]
    with anyio.fail_after(240):
        async with Client(stdio_params(env)) as stdio:
            async with anyio.create_task_group() as tg:
                for n in range(HTTP_CLIENTS):

                    async def run_http(n: int = n) -> None:
                        async with http_client(f"{http.base_url}/mcp", mode="legacy" if n % 2 else "auto") as c:
                            await mixed_client(c, f"http{n}", ledgers[n], shared, OPS, rng_seed=n)

                    tg.start_soon(run_http)
                tg.start_soon(mixed_client, stdio, "stdio", ledgers[-1], shared, OPS, 99)

            errors = [e for ledger in ledgers for e in ledger.errors]
            assert errors == []
            acked = {k: v for ledger in ledgers for k, v in ledger.acked.items()}
            assert len(acked) == (HTTP_CLIENTS + 1) * OPS == len(shared)

            from_stdio = await verify(stdio, acked)
            async with http_client(f"{http.base_url}/mcp") as client:
                from_http = await verify(client, acked)
    for name, seen in (("stdio", from_stdio), ("http", from_http)):
        assert seen.checked == len(acked)
        assert (seen.missing_get, seen.missing_retrieve) == ([], []), f"lost as seen from the {name} server"
        assert seen.memories == seen.vectors == len(acked), name
    assert "Traceback" not in http.log()


@pytest.mark.slow
def test_long_run_8_http_clients_and_stdio_100_rounds_each(tmp_path: Path) -> None:
    """`pytest -m slow`: bench/reliability/concurrency.py, the README's concurrency figure."""
    out = tmp_path / "concurrency.json"
    result = run_script(
        [
            sys.executable,
            str(REPO / "bench" / "reliability" / "concurrency.py"),
            "--http-clients",
            "8",
            "--ops",
            "100",
            "--json",
            str(out),
        ],
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["errors"] == [] and figures["lost_stdio"] == figures["lost_http"] == 0
    assert figures["acked"] == 9 * 100
