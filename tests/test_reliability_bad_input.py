"""Bad input: raw JSON-RPC bodies through the HTTP app (in process), raw lines through a real stdio server process,
wrong types for every argument of every tool and a property-based fuzz of the tool arguments (through the SDK's
in-memory client). Every rejected call leaves the store unchanged, and the server answers the next call.

test_server_tools.py checks the error text of one bad value per bound; test_server_http_app.py checks non-JSON
and oversized HTTP bodies. Here: malformed JSON-RPC, lone surrogates and NUL bytes in every text field, wrong
types for every argument of every tool (taken from the published schemas), and the fuzz.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from starlette.testclient import TestClient

from bench.reliability.reliability_kit import call
from ltms.config import Settings
from ltms.server.tools import build_server
from ltms.service import MemoryService
from tests.helpers import asgi_app, child_env, hash_settings, serve_command

pytestmark = pytest.mark.anyio
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
PROTOCOL = "2025-06-18"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}


def tool_call(name: str, arguments: Any, request_id: int = 50) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def store(**arguments: Any) -> dict[str, Any]:
    return tool_call("store_memory", {"text": "a valid text", **arguments})


# Bodies that must be refused (JSON-RPC error, tool error or HTTP 4xx) without changing anything. json.dumps
# writes a lone surrogate as the escape "\ud800", which is how it travels in a JSON body.
REFUSED: dict[str, bytes | dict[str, Any] | list[Any]] = {
    "not JSON": b"{this is not json",
    "truncated JSON": b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "store_',
    "invalid UTF-8": b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "store_memory", '
    b'"arguments": {"text": "caf\xc3\x28 \xff\xfe"}}}',
    "JSON null": b"null",
    "JSON number": b"42",
    "missing method": {"jsonrpc": "2.0", "id": 2},
    "wrong jsonrpc version": {
        "jsonrpc": "1.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "store_memory", "arguments": {"text": "v1"}},
    },
    "no jsonrpc member": {
        "id": 3,
        "method": "tools/call",
        "params": {"name": "store_memory", "arguments": {"text": "no version"}},
    },
    "batch array": [store(), store(text="second in batch")],
    "empty batch": [],
    "params is a list": {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": ["store_memory", {}]},
    "params is a string": {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": "store_memory"},
    "params is a number": {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": 7},
    "arguments is a list": tool_call("store_memory", ["a valid text"]),
    "arguments is a string": tool_call("store_memory", "a valid text"),
    "unknown tool": tool_call("drop_all_memories", {}),
    "unknown method": {"jsonrpc": "2.0", "id": 5, "method": "memories/delete_all", "params": {}},
    "metadata nested 5000 deep": b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"store_memory",'
    b'"arguments":{"text":"deep","metadata":' + b'{"x":' * 5000 + b"1" + b"}" * 5000 + b"}}}",
    "lone surrogate in text": store(text="before \ud800 after"),
    "lone low surrogate in text": store(text="\udfff"),
    "lone surrogate in a tag": store(tags=["ok", "bad\udc80"]),
    "lone surrogate in a metadata key": store(metadata={"key\ud83d": 1}),
    "lone surrogate in a metadata value": store(metadata={"key": ["x", "\ud800"]}),
    "lone surrogate in the namespace": store(namespace="ns\ud800"),
    "lone surrogate in a query": tool_call("retrieve_memory", {"query": "find \ud800"}),
    "NUL in text": store(text="nul \x00 inside"),
    "NUL in a tag": store(tags=["a\x00b"]),
    "NUL in the namespace": store(namespace="ns\x00"),
    "NUL in a query": tool_call("retrieve_memory", {"query": "q\x00"}),
    "text too long": store(text="t" * 40_000),
    "metadata too large": store(metadata={"pad": "m" * 20_000}),
    "too many tags": store(tags=[f"tag{i}" for i in range(40)]),
    "tag too long": store(tags=["x" * 100]),
    "empty text": store(text=" \n\t "),
    "k = 0": tool_call("retrieve_memory", {"query": "q", "k": 0}),
    "k = 101": tool_call("retrieve_memory", {"query": "q", "k": 101}),
    "k = -1": tool_call("retrieve_memory", {"query": "q", "k": -1}),
    "k = 2**70": tool_call("retrieve_memory", {"query": "q", "k": 2**70}),
    "id = 2**70": tool_call("delete_memory", {"id": 2**70}),
    "id = true": tool_call("delete_memory", {"id": True}),
    'id = "1"': tool_call("delete_memory", {"id": "1"}),
    "min_score = NaN": b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"retrieve_memory",'
    b'"arguments":{"query":"q","min_score":NaN}}}',
    "update to a duplicate text": tool_call("update_memory", {"id": 2, "text": "first memory of the baseline"}),
    "update an unknown id": tool_call("update_memory", {"id": 999_999, "text": "new"}),
    "delete an unknown id": tool_call("delete_memory", {"id": 999_999}),
}


class RawSession:
    """A streamable-HTTP MCP session driven with raw JSON-RPC bodies."""

    def __init__(self, http: TestClient, url: str = "/mcp") -> None:
        self.http, self.url = http, url
        response = http.post(url, json=INIT, headers=HEADERS)
        assert response.status_code == 200, response.text
        self.headers = {
            **HEADERS,
            "mcp-session-id": response.headers["mcp-session-id"],
            "mcp-protocol-version": PROTOCOL,
        }
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, body: bytes | dict[str, Any] | list[Any]) -> tuple[int, list[dict[str, Any]]]:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = self.http.post(self.url, content=content, headers=self.headers)
        return response.status_code, parse_messages(response.text)

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        status, messages = self.post(tool_call(name, arguments, request_id=99))
        assert status == 200 and messages and not messages[-1]["result"].get("isError"), messages
        return messages[-1]["result"]["structuredContent"]

    def fingerprint(self) -> tuple[int, int]:
        stats = self.call("memory_stats", {})
        return stats["memories"], stats["index"]["applied_change"]


def parse_messages(text: str) -> list[dict[str, Any]]:
    """JSON-RPC messages from a JSON body or an SSE stream."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("{"):
        return [json.loads(text)]
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]


def refused(status: int, messages: list[dict[str, Any]]) -> bool:
    if 400 <= status < 500:
        return True
    if status == 202:  # taken as a notification: never executed, nothing answered
        return True
    return (
        status == 200 and bool(messages) and all("error" in m or m.get("result", {}).get("isError") for m in messages)
    )


@pytest.fixture
def service(data_dir: Path) -> Iterator[MemoryService]:
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        yield service


def test_malformed_json_rpc_and_bad_values_over_http_change_nothing(
    service: MemoryService, caplog: pytest.LogCaptureFixture
) -> None:
    app = asgi_app(service, service.settings)
    with TestClient(app, base_url="http://127.0.0.1:5050") as http:
        session = RawSession(http)
        session.call("store_memory", {"text": "first memory of the baseline"})
        session.call("store_memory", {"text": "second memory of the baseline"})
        baseline = session.fingerprint()
        assert baseline[0] == 2
        for name, body in REFUSED.items():
            status, messages = session.post(body)
            assert refused(status, messages), f"{name}: {status} {messages}"
            for message in messages:
                text = json.dumps(message)
                assert "internal server error" not in text and "Traceback" not in text, f"{name}: {text}"
            assert session.fingerprint() == baseline, f"{name} changed the store"
        assert http.get("/health").json()["memories"] == 2
    assert not [r for r in caplog.records if r.exc_info], "an exception was logged"


def wrong_values(name: str, schema: dict[str, Any]) -> list[Any]:
    """JSON values of a type the property's schema does not allow (and lax validation does not convert)."""
    allowed = {option.get("type") for option in schema.get("anyOf", [schema])}
    wrong: list[Any] = []
    if "string" not in allowed:
        wrong.append("not a number")
    if "number" not in allowed:
        wrong.append(1.5)
    if "object" not in allowed:
        wrong.append({"a": 1})
    wrong.append([1, 2] if "array" in allowed else ["x"])  # an array of numbers where strings are wanted
    if "null" not in allowed:
        wrong.append(None)
    # Lax validation reads true as 1 for k, limit, offset and min_score (harmless); an id must be strict.
    if name == "id" or not allowed & {"integer", "number"}:
        wrong.append(True)
    return wrong


async def test_wrong_types_for_every_argument_of_every_tool(service: MemoryService) -> None:
    async with Client(build_server(service, service.settings)) as client:
        text = "a memory that must survive every bad call"
        kept = await call(client, "store_memory", {"text": text})
        before = await call(client, "memory_stats", {})
        tools = (await client.list_tools()).tools
        valid = {"query": "anything", "id": kept["id"], "text": "a new valid text"}
        tried = 0
        for tool in tools:
            properties = tool.input_schema.get("properties", {})
            required = tool.input_schema.get("required", [])
            for name, schema in properties.items():
                for value in wrong_values(name, schema):
                    arguments = {r: valid[r] for r in required if r != name} | {name: value}
                    result = await client.call_tool(tool.name, arguments)
                    tried += 1
                    assert result.is_error, f"{tool.name}({arguments}) was accepted: {result.structured_content}"
                    message = result.content[0].text
                    assert name in message and "internal server error" not in message, message
                    after = await call(client, "memory_stats", {})
                    assert (after["memories"], after["index"]["applied_change"]) == (
                        before["memories"],
                        before["index"]["applied_change"],
                    ), f"{tool.name}({arguments})"
        assert tried >= 30
        assert (await call(client, "get_memory", {"id": kept["id"]}))["text"] == text


def test_malformed_lines_over_stdio_change_nothing_and_the_server_answers_after(data_dir: Path) -> None:
    lines: list[bytes] = [
        json.dumps(INIT).encode(),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode(),
    ]
    for n, body in enumerate(REFUSED.values(), start=100):  # one id per request: answers are told apart
        if isinstance(body, dict) and "id" in body:
            body = {**body, "id": n}
        lines.append(body if isinstance(body, bytes) else json.dumps(body).encode())
    lines.append(json.dumps(tool_call("memory_stats", {}, request_id=99)).encode())
    proc = subprocess.Popen(
        serve_command("stdio"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(data_dir),
    )
    answers: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: [answers.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"\n".join(lines) + b"\n")
        proc.stdin.flush()
        received: list[dict[str, Any]] = []
        while not any(a.get("id") == 99 for a in received):  # the last request is answered: the server is up
            received.append(json.loads(answers.get(timeout=60)))  # nothing but JSON-RPC on stdout
        proc.stdin.close()  # stdin EOF: a clean stop
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stderr = proc.stderr.read() if proc.stderr else b""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert next(a for a in received if a.get("id") == 99)["result"]["structuredContent"]["memories"] == 0
    for answer in received:
        if answer.get("id") not in (1, 99):
            assert "error" in answer or answer["result"].get("isError"), answer
            assert "internal server error" not in json.dumps(answer)
    assert b"not valid UTF-8" in stderr and b"Traceback" not in stderr
    with MemoryService(Settings.load(env=child_env(data_dir)), background_saves=False) as service:
        assert service.storage.db.count() == 0  # not one of the bad lines stored anything


# -- property-based fuzz of the tool arguments (in process) ----------------------------------------------------------

TOOLS = [
    "store_memory",
    "retrieve_memory",
    "get_memory",
    "list_memories",
    "update_memory",
    "delete_memory",
    "memory_stats",
]
ARG_NAMES = [
    "text",
    "query",
    "id",
    "k",
    "tags",
    "metadata",
    "namespace",
    "since",
    "until",
    "min_score",
    "limit",
    "offset",
    "bogus",
]
# Any encodable character, NUL and control characters included. Lone surrogates cannot be sent by the SDK client
# (it fails to encode them before sending); the raw HTTP and stdio tests above send them as JSON escapes.
any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
plausible = {
    "text": any_text | st.sampled_from(["a plain memory", "x" * 33_000, "  "]),
    "query": any_text,
    "id": st.integers(min_value=-3, max_value=8) | json_values,
    "k": st.integers(min_value=-2, max_value=120) | json_values,
    "tags": st.lists(any_text, max_size=40) | json_values,
    "metadata": st.dictionaries(any_text, json_values, max_size=5) | json_values,
    "namespace": st.sampled_from(["default", "proj-a", "a" * 65, "", "with space"]) | any_text,
    "since": st.sampled_from(["2020-01-01", "2999-12-31T00:00:00Z", "yesterday"]) | json_values,
    "until": st.sampled_from(["2020-01-01", "2999-12-31T00:00:00+02:00"]) | json_values,
    "min_score": st.floats(min_value=-2, max_value=2) | json_values,
    "limit": st.integers(min_value=-1, max_value=150) | json_values,
    "offset": st.integers(min_value=-1, max_value=2**63) | json_values,
    "bogus": json_values,
}
fuzz_calls = st.tuples(
    st.sampled_from(TOOLS),
    st.lists(st.sampled_from(ARG_NAMES), unique=True, max_size=5).flatmap(
        lambda names: st.fixed_dictionaries({name: plausible[name] for name in names})
    ),
)


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemoryService]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    settings_ = Settings.load(env={"LTMC_DATA_DIR": str(data), "LTMC_EMBEDDER": "hash"})
    with MemoryService(settings_, background_saves=False) as service:
        for i in range(5):
            service.store(f"seed memory {i}", tags=["seed"], namespace="default")
        yield service


@pytest.fixture
async def fuzz_client(fuzz_service: MemoryService) -> AsyncIterator[Client]:
    async with Client(build_server(fuzz_service, fuzz_service.settings)) as client:
        yield client


def store_state(service: MemoryService) -> tuple[int, int]:
    return service.storage.db.count(), service.storage.db.max_seq()


@settings(
    max_examples=250,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=fuzz_calls)
async def test_fuzzed_tool_arguments_fail_cleanly_and_change_nothing_when_refused(
    fuzz_client: Client, fuzz_service: MemoryService, case: tuple[str, dict[str, Any]]
) -> None:
    tool, arguments = case
    before = store_state(fuzz_service)
    result = await fuzz_client.call_tool(tool, arguments)
    if result.is_error:
        message = " ".join(getattr(c, "text", "") for c in result.content)
        assert message.strip(), (tool, arguments)
        assert "internal server error" not in message, (tool, arguments, message)
        assert store_state(fuzz_service) == before, (tool, arguments, message)
    else:
        assert result.structured_content is not None
        if tool in ("retrieve_memory", "get_memory", "list_memories", "memory_stats"):
            assert store_state(fuzz_service) == before
    stats = await fuzz_client.call_tool("memory_stats", {})  # still answering
    assert not stats.is_error and stats.structured_content["memories"] == fuzz_service.storage.db.count()
    assert stats.structured_content["index"]["vectors"] == fuzz_service.storage.db.count()
