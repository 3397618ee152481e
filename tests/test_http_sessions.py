"""Abandoned streamable-HTTP sessions (issue 9.8): idle sessions end after LTMC_SESSION_IDLE_SECONDS, a client over
its cap and a full server end an idle session (one never used after its handshake first) instead of refusing
the newcomer. In-process against the real app, and bench/reliability/sessions.py run small against a real server."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio
import pytest

from bench.reliability.reliability_kit import run_script
from tests.helpers import REPO
from tests.http_app_support import client_for, health, open_session, ping, running_app

pytestmark = pytest.mark.anyio


async def wait_for_sessions(client, count: int, timeout: float = 30) -> None:
    """Poll /health (which does not touch any session) until `count` sessions are open."""
    with anyio.fail_after(timeout):
        while (await health(client))["http_sessions"] != count:
            await anyio.sleep(0.05)


async def test_an_idle_session_ends_after_the_idle_time(data_dir: Path) -> None:
    async with running_app(data_dir, LTMC_SESSION_IDLE_SECONDS="0.5") as (app, _), client_for(app) as client:
        session = await open_session(client)
        assert (await ping(client, session)).status_code == 200
        await wait_for_sessions(client, 0)
        assert (await ping(client, session)).status_code == 404  # the client must start a new session


async def used_session(client) -> str:
    session = await open_session(client)
    for _ in range(2):
        assert (await ping(client, session)).status_code == 200
    return session


async def test_a_client_over_its_cap_loses_its_least_recently_used_idle_session(data_dir: Path) -> None:
    async with running_app(data_dir, LTMC_MAX_SESSIONS_PER_CLIENT="3") as (app, _), client_for(app) as client:
        sessions = [await used_session(client) for _ in range(3)]  # all in use, the first least recently
        newer = [await used_session(client) for _ in range(2)]  # each new one ends the least recently used
        assert (await ping(client, sessions[0])).status_code == 404
        assert (await ping(client, sessions[1])).status_code == 404
        for session in [sessions[2], *newer]:
            assert (await ping(client, session)).status_code == 200
        await wait_for_sessions(client, 3)


async def test_a_session_abandoned_after_its_handshake_goes_first(data_dir: Path) -> None:
    async with running_app(data_dir, LTMC_MAX_SESSIONS="3") as (app, _), client_for(app) as client:
        used = await open_session(client)
        for _ in range(2):
            assert (await ping(client, used)).status_code == 200
        abandoned = [await open_session(client) for _ in range(2)]  # more recent than `used`, never used
        newest = await open_session(client)
        assert (await ping(client, abandoned[0])).status_code == 404
        for session in [used, abandoned[1], newest]:
            assert (await ping(client, session)).status_code == 200


def test_the_session_trial_small(tmp_path: Path) -> None:
    """bench/reliability/sessions.py, 300 sessions against caps of 50 (40 per client) and a 2 s idle time: the
    normal client is served throughout, the server keeps to its caps, and the abandoned sessions all end."""
    out = tmp_path / "sessions.json"
    started = time.monotonic()
    caps = ["--max-sessions", "50", "--per-client", "40", "--idle", "2", "--wait-idle"]
    script = [sys.executable, str(REPO / "bench" / "reliability" / "sessions.py"), "--sessions", "300", *caps]
    result = run_script([*script, "--baseline", "1", "--interval", "0.3", "--json", str(out)], timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["errors"] == 0 and figures["answered_during"] > 0, figures["error_samples"]
    assert figures["attack"]["opened"] == 300 and figures["attack"]["refused"] == 0
    assert figures["open_at_end"] <= 50  # not 300: the cap held (openings that race each other may pass it by a few)
    assert figures["idle_end_seconds"] is not None, f"sessions still open {time.monotonic() - started:.0f}s in"
    assert figures["shutdown_status"] == 0 and figures["tracebacks"] == 0
    assert "| sessions opened | refused (503) |" in result.stdout
