"""The HTTP app in-process (real service, real data directory): Host and Origin checked on every route, exact host
and port; the 401 that says what is wrong; /health without the token says only that the server is up."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.http_app_support import INITIALIZE, JSON_POST, client_for, health, running_app

pytestmark = pytest.mark.anyio
TOKEN = "http-app-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:5050", "localhost:5050", "LOCALHOST:5050", "[::1]:5050", "localhost", "127.0.0.1"],
)
async def test_a_host_naming_this_server_is_accepted(data_dir: Path, host: str) -> None:
    async with running_app(data_dir) as (app, _), client_for(app, host) as client:
        assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "localhost:5051",  # another port on this machine: another server
        "127.0.0.1:8080",
        "localhost:5050.evil.example",  # prefix matching let these through
        "127.0.0.1:5050@evil.example",
        "localhost:50500",
        "evil.example:5050",
        "evil.example",
        "localhost:",
        "localhost:0",
        "localhost:99999",
        "localhost:*",
        "[::1]:5051",
    ],
)
async def test_any_other_host_is_421(data_dir: Path, host: str) -> None:
    async with running_app(data_dir) as (app, _), client_for(app, host) as client:
        response = await client.get("/health")
    assert response.status_code == 421 and response.text == "Invalid Host header"


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://localhost:5050", 200),
        ("https://127.0.0.1:5050", 200),
        ("http://[::1]:5050", 200),
        ("http://localhost:3000", 403),  # a page served from another local port
        ("http://localhost", 403),  # port 80 on this machine is another web server
        ("http://localhost:5050.evil.example", 403),
        ("http://evil.example:5050", 403),
        ("http://localhost:5050/path", 403),
        ("null", 403),
        ("file://", 403),
    ],
)
async def test_origin_must_be_this_server_exactly(data_dir: Path, origin: str, status: int) -> None:
    async with running_app(data_dir) as (app, _), client_for(app) as client:
        response = await client.get("/health", headers={"Origin": origin})
    assert response.status_code == status, response.text


async def test_every_route_is_checked_even_one_added_later(data_dir: Path) -> None:
    async with running_app(data_dir) as (app, _):
        app.router.routes.append(Route("/ui", lambda request: PlainTextResponse("the web page")))
        async with client_for(app, "evil.example:5050") as foreign, client_for(app) as local:
            for method, path in [
                ("GET", "/health"),
                ("POST", "/mcp"),
                ("GET", "/mcp"),
                ("GET", "/sse"),
                ("POST", "/messages/?session_id=00000000000000000000000000000000"),
                ("GET", "/ui"),
                ("GET", "/no-such-route"),
            ]:
                response = await foreign.request(method, path, headers=JSON_POST, content=b"{}")
                assert response.status_code == 421, (method, path, response.status_code)
                evil_origin = {**JSON_POST, "Origin": "http://evil.example"}
                response = await local.request(method, path, headers=evil_origin, content=b"{}")
                assert response.status_code == 403, (method, path, response.status_code)
            assert (await local.get("/ui")).text == "the web page"


async def test_the_listening_ports_are_the_allowed_ones(data_dir: Path) -> None:
    async with running_app(data_dir, ports=(6001, 6002), LTMC_HTTP_PORT="0") as (app, _):
        for host, status in [("127.0.0.1:6001", 200), ("localhost:6002", 200), ("127.0.0.1:5050", 421)]:
            async with client_for(app, host) as client:
                assert (await client.get("/health")).status_code == status, host


async def test_extra_hosts_and_origins_match_exactly(data_dir: Path) -> None:
    env = {
        "LTMC_ALLOWED_HOSTS": "memory.example.com,proxy.example.com:8443",
        "LTMC_ALLOWED_ORIGINS": "http://localhost:6274",
    }
    async with running_app(data_dir, **env) as (app, _):
        for host, status in [
            ("memory.example.com", 200),  # a reverse proxy on the default port
            ("memory.example.com:5050", 200),
            ("memory.example.com:9999", 421),
            ("proxy.example.com:8443", 200),
            ("proxy.example.com", 421),
            ("memory.example.com.evil.example", 421),
        ]:
            async with client_for(app, host) as client:
                assert (await client.get("/health")).status_code == status, host
        async with client_for(app) as client:
            for origin, status in [
                ("http://localhost:6274", 200),
                ("http://localhost:6275", 403),
                ("https://memory.example.com", 200),
                ("https://proxy.example.com:8443", 200),
                ("https://proxy.example.com", 403),
            ]:
                assert (await client.get("/health", headers={"Origin": origin})).status_code == status, origin


# -- the bearer token ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"bearer {TOKEN}x"])
@pytest.mark.parametrize(("method", "path"), [("POST", "/mcp"), ("GET", "/sse"), ("POST", "/messages/?session_id=0")])
async def test_401_says_the_token_is_missing_or_wrong(
    data_dir: Path, method: str, path: str, authorization: str | None
) -> None:
    headers = dict(JSON_POST)
    if authorization is not None:
        headers["Authorization"] = authorization
    async with running_app(data_dir, LTMC_AUTH_TOKEN=TOKEN) as (app, _), client_for(app) as client:
        response = await client.request(method, path, headers=headers, json=INITIALIZE)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error_description="bearer token missing or wrong"' in challenge
    error = response.json()["error"]
    assert error["message"].startswith("bearer token missing or wrong") and "Authorization: Bearer" in error["message"]


async def test_the_right_token_gets_through(data_dir: Path) -> None:
    async with running_app(data_dir, LTMC_AUTH_TOKEN=TOKEN) as (app, _), client_for(app, **BEARER) as client:
        response = await client.post("/mcp", json=INITIALIZE, headers=JSON_POST)
    assert response.status_code == 200 and response.headers["mcp-session-id"]


async def test_health_without_the_token_says_only_up(data_dir: Path) -> None:
    async with running_app(data_dir, LTMC_AUTH_TOKEN=TOKEN) as (app, _), client_for(app) as client:
        assert await health(client) == {"status": "ok"}
        assert await health(client, Authorization="Bearer wrong-token") == {"status": "ok"}
        full = await health(client, **BEARER)
    assert full["status"] == "ok" and full["version"] and full["memories"] == 0
    assert Path(full["data_dir"]).is_absolute() and full["http_sessions"] == 0


async def test_health_is_full_without_a_configured_token(data_dir: Path) -> None:
    async with running_app(data_dir) as (app, _), client_for(app) as client:
        full = await health(client)
    assert {"status", "version", "memories", "index", "data_dir", "http_sessions"} <= set(full)
