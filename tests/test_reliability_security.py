"""Security: odd bearer tokens are refused without an exception; a real server's log (stderr, default level) never
carries memory text, whatever the calls; every file the server creates is owner-only.

401s (and that only the exact token passes), foreign Host/Origin and the non-loopback refusal are in
test_server_http_app.py; owner-only files and logs at the service level in test_faults.py.
"""

from __future__ import annotations

import signal
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.reliability.reliability_kit import call, http_client
from ltms.server.http_app import StaticTokenVerifier
from tests.helpers import ServerProcess, child_env

pytestmark = pytest.mark.anyio
StartServer = Callable[..., ServerProcess]
TOKEN = "reliability-token-0123456789abcdef"


async def test_odd_tokens_are_refused_without_an_exception() -> None:
    verifier = StaticTokenVerifier(TOKEN)
    for token in ["é" * 40, "\x00" * 40, "Bearer " + TOKEN, TOKEN.upper(), "\udcff" * 3]:
        assert await verifier.verify_token(token) is None


async def test_no_memory_text_in_the_server_log_and_owner_only_files(start_server: StartServer, data_dir: Path) -> None:
    server = start_server("http", env=child_env(data_dir, LTMC_AUTH_TOKEN=TOKEN, LTMC_SNAPSHOT_QUIET_SECONDS="0.1"))
    secret = "zebra-kumquat-7731 is the vault combination"
    async with http_client(server.mcp_url, TOKEN) as client:
        stored = await call(
            client,
            "store_memory",
            {"text": secret, "tags": ["zebra-tag-7731"], "metadata": {"note": "zebra-meta-7731"}, "namespace": "vault"},
        )
        await call(client, "retrieve_memory", {"query": "zebra-kumquat-7731 combination", "k": 3})
        await call(client, "get_memory", {"id": stored["id"]})
        await call(client, "list_memories", {"namespace": "vault"})
        await call(client, "update_memory", {"id": stored["id"], "text": secret + " (updated)"})
        # Refused calls carrying the secret: their error messages go to the client, not into the log.
        for bad in [
            {"text": secret, "namespace": "not valid!"},
            {"text": secret, "tags": "zebra-kumquat-7731"},
            {"text": secret, "metadata": ["zebra-kumquat-7731"]},
            {"text": secret + "\x00"},
            {"text": [secret]},
            {"text": secret * 2000},
        ]:
            assert (await client.call_tool("store_memory", bad)).is_error
        assert (await client.call_tool("retrieve_memory", {"query": secret, "k": 0})).is_error
        assert (await client.call_tool("update_memory", {"id": stored["id"], "text": 7731})).is_error
        await call(client, "store_memory", {"text": "another zebra-kumquat-7731 note"})
        await call(client, "delete_memory", {"id": stored["id"]})
    server.signal(signal.SIGTERM)
    assert server.wait() == 0

    log = server.log()
    assert "serving over http" in log  # the log is there, at the default level
    for fragment in ("zebra", "kumquat", "7731", "vault combination"):
        assert fragment not in log, f"{fragment!r} leaked into the server log"

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    created = sorted(data_dir.iterdir())
    assert {p.name for p in created} >= {"ltmc.sqlite3", "faiss_index", "faiss_index.manifest.json", "faiss_index.lock"}
    for path in created:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path.name} is readable by others"
