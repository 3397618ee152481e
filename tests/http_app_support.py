"""The real HTTP app (build_http_app) in-process, on a real data directory, for the tests/test_http_*.py files: an
httpx2 client over ASGI with the app's lifespan running (the streamable session manager needs it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx2
from starlette.applications import Starlette

from ltms.config import Settings
from ltms.server.http_app import build_http_app, build_mcp
from ltms.service import MemoryService
from tests.helpers import hash_settings

PORT = 5050
JSON_POST = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}


@contextlib.asynccontextmanager
async def running_app(
    data_dir: Path, ports: Sequence[int] = (PORT,), **env: str
) -> AsyncIterator[tuple[Starlette, Settings]]:
    """The app for a service on `data_dir` with extra LTMC_* variables, its lifespan entered."""
    settings = hash_settings(data_dir, **env)
    service = MemoryService(settings)
    try:
        app = build_http_app(build_mcp(service, settings, http=True), service, settings, ports)
        async with app.router.lifespan_context(app):
            yield app, settings
    finally:
        service.close()


def client_for(app: Starlette, host: str = f"127.0.0.1:{PORT}", **headers: str) -> httpx2.AsyncClient:
    """A client whose requests carry `host` as their Host header (any string, as an attacker could send)."""
    return httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app),
        base_url=f"http://127.0.0.1:{PORT}",
        headers={"Host": host, **headers},
        timeout=30,
    )


async def open_session(client: httpx2.AsyncClient, **headers: str) -> str:
    response = await client.post("/mcp", json=INITIALIZE, headers={**JSON_POST, **headers})
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


async def ping(client: httpx2.AsyncClient, session_id: str, **headers: str) -> httpx2.Response:
    return await client.post("/mcp", json=PING, headers={**JSON_POST, "mcp-session-id": session_id, **headers})


async def health(client: httpx2.AsyncClient, **headers: str) -> dict[str, Any]:
    response = await client.get("/health", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()
