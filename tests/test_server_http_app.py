"""HTTP behaviour in process, against the app `ltmc serve` runs (starlette's TestClient runs its lifespan):
bearer auth (401), DNS-rebinding protection (421/403), malformed and oversized bodies (400/413), the open /health,
extra allowed hosts, a wildcard listen address. The real server processes and the SDK clients over the wire are in
test_server_transports.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ltms.config import Settings
from ltms.server.runner import StartupError, check_exposure, serve
from ltms.service import MemoryService
from tests.helpers import asgi_app, child_env

TOKEN = "test-token-0123456789abcdef"
BASE_URL = "http://127.0.0.1:5050"  # the Host header a local client sends
JSON_POST = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
AUTHORIZED = {**JSON_POST, "Authorization": f"Bearer {TOKEN}"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}


def settings_for(data_dir: Path, **env: str) -> Settings:
    return Settings.load(env=child_env(data_dir, **env))


def app_client(settings: Settings) -> Iterator[TestClient]:
    # The SDK's /sse endpoint raises after sending its 421 (a real server logs it): the status is what counts.
    with (
        MemoryService(settings, background_saves=False) as service,
        TestClient(asgi_app(service, settings), base_url=BASE_URL, raise_server_exceptions=False) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app with bearer auth for the module."""
    yield from app_client(settings_for(tmp_path_factory.mktemp("http") / "data", LTMC_AUTH_TOKEN=TOKEN))


# -- bearer auth ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("POST", "/mcp"), ("GET", "/sse"), ("POST", "/messages/?session_id=0")])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer"])
def test_a_missing_or_wrong_token_is_401(client: TestClient, method: str, path: str, authorization: str | None) -> None:
    headers = dict(JSON_POST)
    if authorization is not None:
        headers["Authorization"] = authorization
    response = client.request(method, path, headers=headers, content=b"{}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "presented",
    [
        TOKEN[:-1],  # a prefix
        TOKEN + "x",  # an extension
        "X" + TOKEN[1:],  # the first character changed
        TOKEN[:-1] + "X",  # the last character changed
        TOKEN.upper(),
        f" {TOKEN}",
        "é" * len(TOKEN),
        "",
    ],
    ids=["prefix", "extension", "first-changed", "last-changed", "upper", "padded", "non-ascii", "empty"],
)
def test_only_the_exact_token_is_accepted(client: TestClient, presented: str) -> None:
    """The comparison is all-or-nothing: every near miss is refused like a wrong token, the exact token is not."""
    headers = {**JSON_POST, "Authorization": f"Bearer {presented}"}
    response = client.post("/mcp", json=INITIALIZE, headers={k: v.encode() for k, v in headers.items()})
    assert response.status_code == 401, presented
    assert client.post("/mcp", json=INITIALIZE, headers=AUTHORIZED).status_code == 200


def test_health_is_open_and_reports_the_service_to_the_token_holder(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}  # no token needed; without it, only "up"
    response = client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok" and health["version"]
    assert isinstance(health["memories"], int) and health["index"]["state"] in ("created", "loaded", "rebuilt")
    assert Path(health["data_dir"]).is_absolute()


# -- DNS-rebinding protection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/mcp", {"Host": "evil.example"}, 421),
        ("/mcp", {"Host": "evil.example:80"}, 421),
        ("/mcp", {"Origin": "http://evil.example"}, 403),
        ("/sse", {"Host": "attacker.test:1234"}, 421),
        ("/health", {"Host": "evil.example"}, 421),
    ],
)
def test_a_foreign_host_or_origin_is_refused(
    client: TestClient, path: str, headers: dict[str, str], status: int
) -> None:
    all_headers = {**AUTHORIZED, **headers}
    if path == "/mcp":
        response = client.post(path, headers=all_headers, content=b"{}")
    else:
        response = client.get(path, headers=all_headers)
    assert response.status_code == status


def test_a_local_origin_is_accepted(client: TestClient) -> None:
    response = client.post("/mcp", json=INITIALIZE, headers={**AUTHORIZED, "Origin": "http://localhost:5050"})
    assert response.status_code == 200


def test_extra_allowed_hosts_are_accepted_behind_a_proxy(data_dir: Path) -> None:
    for client in app_client(settings_for(data_dir, LTMC_ALLOWED_HOSTS="memory.example.com")):
        assert client.get("/health", headers={"Host": "memory.example.com"}).status_code == 200
        assert client.get("/health", headers={"Host": "other.example.com"}).status_code == 421


# -- bodies -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status"), [(b"this is not json", 400), (b"[" * 100, 400), (b" " * (5 * 1024 * 1024), 413)]
)
def test_malformed_and_oversized_requests_are_refused(client: TestClient, body: bytes, status: int) -> None:
    assert client.post("/mcp", content=body, headers=AUTHORIZED).status_code == status
    assert client.get("/health").status_code == 200


# -- listening beyond loopback --------------------------------------------------------------------------------------


def test_a_non_loopback_host_without_a_token_is_refused_before_anything_starts(data_dir: Path) -> None:
    settings = settings_for(data_dir, LTMC_HTTP_HOST="0.0.0.0")
    with pytest.raises(StartupError, match=r"LTMC_AUTH_TOKEN.*--allow-insecure"):
        serve(settings, "http")
    assert not data_dir.exists()  # refused before the store was opened


def test_a_non_loopback_host_with_a_token_serves_local_clients(data_dir: Path) -> None:
    settings = settings_for(data_dir, LTMC_HTTP_HOST="0.0.0.0", LTMC_AUTH_TOKEN=TOKEN)
    check_exposure(settings)  # no StartupError
    for client in app_client(settings):
        assert client.get("/health").json()["status"] == "ok"
        assert client.post("/mcp", json=INITIALIZE, headers=AUTHORIZED).status_code == 200
        assert client.get("/health", headers={"Host": "evil.example"}).status_code == 421
