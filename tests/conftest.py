"""Fixtures shared by the test suite: a temporary data directory, server processes that are always stopped at
teardown (helpers in tests/helpers.py), a small real tmpfs for disk-full trials, the anyio backend, and the
PostgreSQL cluster fixtures of tests/postgres_server.py."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, child_env, serve_command

# The throwaway PostgreSQL cluster's fixtures (tests/postgres_server.py), registered once for every module.
pytest_plugins = ["tests.postgres_server"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory that does not exist yet (the code under test must create it)."""
    return tmp_path / "data"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """`start_server(transport, *args, env=None, wait=True)` starts `python -m ltms serve`.

    HTTP transports listen on port 0 unless `args` name a port; the port is read back from the log and, with
    `wait`, the call returns once /health answers. The default environment uses `tmp_path / "data"` (the
    `data_dir` fixture) and the hashing embedder. Every process started is killed at teardown."""
    started: list[ServerProcess] = []

    def start(
        transport: str = "http", *args: str, env: dict[str, str] | None = None, wait: bool = True
    ) -> ServerProcess:
        server = ServerProcess(
            serve_command(transport, *args),
            env if env is not None else child_env(tmp_path / "data"),
            tmp_path / f"server-{len(started)}.log",
        )
        started.append(server)
        if wait and transport != "stdio":
            server.wait_healthy()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs mounted for the test (needs root, as in CI here), for disk-full trials."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=700", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
