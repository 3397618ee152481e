"""The web page (/ui) over HTTP, in-process: the real HTTP app (build_http_app) on a real data directory (SQLite +
FAISS, hashing embedder), spoken to with an HTTP client. Security headers, escaping, CSRF, the session cookie,
sign-in, read-only mode, bad input, and the list's time range. The flows in a real browser are in
test_web_browser.py."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import httpx2
import pytest

from ltms.config import Settings
from ltms.server.http_app import build_http_app
from ltms.server.tools import build_server
from ltms.service import MemoryService
from ltms.web.app import WebUI
from ltms.web.session import COOKIE_NAME, SESSION_SECONDS, Sessions
from tests.helpers import hash_settings

pytestmark = pytest.mark.anyio

TOKEN = "web-test-token-0123456789abcdef"
FORM = {"content-type": "application/x-www-form-urlencoded"}
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="alert(1)"><b>bold</b> & "quotes"'


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., MemoryService]]:
    """`make_service(**env)`: a MemoryService on tmp_path/data with extra LTMC_* variables; closed at teardown."""
    opened: list[MemoryService] = []

    def make(**env: str) -> MemoryService:
        service = MemoryService(hash_settings(tmp_path / "data", **env), background_saves=False)
        opened.append(service)
        return service

    yield make
    for service in opened:
        service.close()


@asynccontextmanager
async def client_for(service: MemoryService, settings: Settings | None = None) -> AsyncIterator[httpx2.AsyncClient]:
    settings = settings or service.settings
    app = build_http_app(build_server(service, settings), service, settings)
    transport = httpx2.ASGITransport(app=app)
    # The Host header names the port the settings say the server listens on (the Host check compares it).
    base_url = f"http://127.0.0.1:{settings.http_port}"
    async with httpx2.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


# -- headers and escaping -------------------------------------------------------------------------------------------


async def test_every_ui_response_carries_the_security_headers(make_service: Callable[..., MemoryService]) -> None:
    service = make_service()
    memory_id = service.store("a plain memory").id
    async with client_for(service) as client:
        for path, status in [
            ("/ui/", 200),
            (f"/ui/memories/{memory_id}", 200),
            ("/ui/status", 200),
            ("/ui/static/style.css", 200),
            ("/ui/no-such-page", 404),
            ("/ui/memories/999999", 404),
            ("/ui/login", 303),
        ]:
            response = await client.get(path)
            assert response.status_code == status, path
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
            assert "script-src" not in csp and "unsafe-inline" not in csp, path  # no script may run at all
            assert response.headers["x-frame-options"] == "DENY", path
            assert response.headers["x-content-type-options"] == "nosniff", path
        page = await client.get("/ui/")
        assert page.headers["cache-control"] == "no-store"
        assert "<script" not in page.text.lower()


async def test_html_in_a_memory_is_escaped_everywhere_it_is_shown(make_service: Callable[..., MemoryService]) -> None:
    service = make_service()
    memory_id = service.store(HOSTILE, tags=["<i>tag</i>"], metadata={"note": "</pre><script>x()</script>"}).id
    async with client_for(service) as client:
        pages = [
            (await client.get("/ui/")).text,
            (await client.get("/ui/", params={"q": "bold quotes"})).text,
            (await client.get(f"/ui/memories/{memory_id}")).text,
            (await client.get(f"/ui/memories/{memory_id}/delete")).text,
        ]
    for html in pages:
        assert "<script" not in html.lower() and "<img" not in html.lower() and "<b>" not in html
        assert "&lt;script&gt;" in html
    memory_page = pages[2]
    assert "&lt;i&gt;tag&lt;/i&gt;" in memory_page
    assert "&lt;/pre&gt;&lt;script&gt;x()&lt;/script&gt;" in memory_page


# -- CSRF --------------------------------------------------------------------------------------------------------------


async def test_a_form_post_without_the_right_csrf_token_changes_nothing(
    make_service: Callable[..., MemoryService],
) -> None:
    service = make_service()
    memory_id = service.store("keep me").id
    delete = f"/ui/memories/{memory_id}/delete"
    async with client_for(service) as client:
        page = await client.get(delete)
        token = csrf_of(page.text)
        assert client.cookies.get(COOKIE_NAME)
        for fields in ({"other": "1"}, {"csrf": ""}, {"csrf": "forged"}, {"csrf": token[:-2] + "xx"}):
            refused = await client.post(delete, data=fields)
            assert refused.status_code == 403, fields
            assert "security token" in refused.text
        edit = await client.post(f"/ui/memories/{memory_id}/edit", data={"text": "changed"})
        assert edit.status_code == 403
        # A token is bound to its session: another visitor's token does not work with this cookie.
        async with client_for(service) as other:
            other_token = csrf_of((await other.get(delete)).text)
        assert other_token != token
        assert (await client.post(delete, data={"csrf": other_token})).status_code == 403
        # Without the session cookie (a cross-site post carries none: SameSite=Strict), the right token fails too.
        async with client_for(service) as stranger:
            assert (await stranger.post(delete, data={"csrf": token})).status_code == 403
        assert service.get(memory_id).text == "keep me"
        done = await client.post(delete, data={"csrf": token})
        assert done.status_code == 303 and done.headers["location"] == f"/ui/?deleted={memory_id}"
    assert service.list().total == 0


# -- sessions and sign-in -------------------------------------------------------------------------------------------


async def test_with_a_token_the_page_asks_for_it_and_sets_a_strict_httponly_cookie(
    make_service: Callable[..., MemoryService],
) -> None:
    service = make_service(LTMC_AUTH_TOKEN=TOKEN)
    memory_id = service.store("behind the token").id
    async with client_for(service) as client:
        away = await client.get(f"/ui/memories/{memory_id}")
        assert away.status_code == 303
        assert away.headers["location"] == f"/ui/login?next={quote(f'/ui/memories/{memory_id}', safe='')}"
        assert (await client.get("/ui/status")).status_code == 303
        login = await client.get("/ui/login", params={"next": f"/ui/memories/{memory_id}"})
        assert login.status_code == 200 and 'type="password"' in login.text
        token_field = csrf_of(login.text)

        wrong = await client.post(
            "/ui/login", data={"csrf": token_field, "token": TOKEN + "x", "next": f"/ui/memories/{memory_id}"}
        )
        assert wrong.status_code == 401 and "not right" in wrong.text
        assert (await client.get(f"/ui/memories/{memory_id}")).status_code == 303

        right = await client.post(
            "/ui/login", data={"csrf": token_field, "token": TOKEN, "next": f"/ui/memories/{memory_id}"}
        )
        assert right.status_code == 303 and right.headers["location"] == f"/ui/memories/{memory_id}"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        max_age = re.search(r"Max-Age=(\d+)", cookie)
        assert max_age and SESSION_SECONDS - 60 <= int(max_age.group(1)) <= SESSION_SECONDS  # it expires
        assert TOKEN not in cookie
        page = await client.get(f"/ui/memories/{memory_id}")
        assert page.status_code == 200 and "behind the token" in page.text and "Sign out" in page.text

        signed_in_cookie = client.cookies[COOKIE_NAME]
        out = await client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert (await client.get(f"/ui/memories/{memory_id}")).status_code == 303
        # Signing out ends the session on the server: replaying the old cookie does not get in again.
        client.cookies.clear()
        client.cookies.set(COOKIE_NAME, signed_in_cookie)
        assert (await client.get(f"/ui/memories/{memory_id}")).status_code == 303


async def test_sign_in_never_redirects_to_another_site(make_service: Callable[..., MemoryService]) -> None:
    service = make_service(LTMC_AUTH_TOKEN=TOKEN)
    for target in ("https://evil.example/", "//evil.example/ui/", "/elsewhere", "/ui/\\evil"):
        async with client_for(service) as client:  # a new visitor each time: signing in starts a new session
            token_field = csrf_of((await client.get("/ui/login")).text)
            response = await client.post("/ui/login", data={"csrf": token_field, "token": TOKEN, "next": target})
            assert response.status_code == 303 and response.headers["location"] == "/ui/", target


def test_session_cookies_cannot_be_forged_or_outlive_their_expiry() -> None:
    now = [1_000_000.0]
    sessions = Sessions(TOKEN, secret=b"s" * 32, clock=lambda: now[0])
    session = sessions.new(signed_in=True)
    cookie = sessions.cookie_value(session)
    assert TOKEN not in cookie
    assert sessions.read(cookie) == session
    sid, flag, expires, mac = cookie.split(".")
    assert sessions.read(f"{sid}.{flag}.{int(expires) + 3600}.{mac}") is None  # a later expiry: signature breaks
    assert sessions.read(f"other.{flag}.{expires}.{mac}") is None
    assert sessions.read(cookie + "x") is None and sessions.read("") is None and sessions.read("é.1.2.3") is None
    anonymous = sessions.new()
    forged = sessions.cookie_value(anonymous).split(".")
    assert sessions.read(".".join([forged[0], "1", *forged[2:]])) is None  # cannot sign itself in
    # The same secret with another token (the token changed): every cookie is void.
    assert Sessions(TOKEN + "2", secret=b"s" * 32, clock=lambda: now[0]).read(cookie) is None
    now[0] += SESSION_SECONDS + 1
    assert sessions.read(cookie) is None


# -- read-only ----------------------------------------------------------------------------------------------------


async def test_read_only_shows_no_write_controls_and_refuses_writes(
    make_service: Callable[..., MemoryService],
) -> None:
    writer = make_service()
    memory_id = writer.store("read me, do not change me", tags=["ro"]).id
    writer.close()
    service = make_service(LTMC_READ_ONLY="1")
    async with client_for(service) as client:
        for path in ("/ui/", f"/ui/memories/{memory_id}", f"/ui/memories/{memory_id}/delete", "/ui/status"):
            html = (await client.get(path)).text
            assert 'method="post"' not in html and "<textarea" not in html, path
            assert "/delete" not in html or path.endswith("/delete"), path
        assert "read-only" in (await client.get("/ui/")).text
        # A hand-made post with a valid CSRF token: the service refuses it.
        sessions = _sessions_of(client)
        session = sessions.read(client.cookies[COOKIE_NAME])
        assert session is not None
        csrf = sessions.csrf_token(session)
        edit = await client.post(f"/ui/memories/{memory_id}/edit", data={"csrf": csrf, "text": "changed"})
        assert edit.status_code == 403 and "read-only" in edit.text
        delete = await client.post(f"/ui/memories/{memory_id}/delete", data={"csrf": csrf})
        assert delete.status_code == 403 and "read-only" in delete.text
    assert service.get(memory_id).text == "read me, do not change me"


def _sessions_of(client: httpx2.AsyncClient) -> Sessions:
    """The sessions of the /ui app the client talks to (to make a valid CSRF token for a hand-made post)."""
    app = client._transport.app  # type: ignore[attr-defined]
    mount = next(route for route in app.routes if getattr(route, "path", None) == "/ui")
    return mount.app.state.ui.sessions


# -- editing ----------------------------------------------------------------------------------------------------------


async def test_editing_tags_keeps_the_text_exactly_and_bad_text_changes_nothing(
    make_service: Callable[..., MemoryService],
) -> None:
    service = make_service()
    text = "\nfirst line\r\nsecond line"  # a leading newline and a CRLF: a textarea would mangle both
    memory_id = service.store(text, tags=["old"]).id
    async with client_for(service) as client:
        page = await client.get(f"/ui/memories/{memory_id}")
        csrf = csrf_of(page.text)
        # What a browser sends back: the textarea's value (first newline after the tag dropped), CRLF line ends.
        shown = re.search(r'<textarea id="text"[^>]*>\n(.*?)</textarea>', page.text, re.S)
        assert shown is not None
        sent_text = shown.group(1).replace("\n", "\r\n")
        saved = await client.post(
            f"/ui/memories/{memory_id}/edit", data={"csrf": csrf, "text": sent_text, "tags": "new\r\ntwo, words\r\n"}
        )
        assert saved.status_code == 303 and saved.headers["location"] == f"/ui/memories/{memory_id}?saved=1"
        memory = service.get(memory_id)
        assert memory.text == text and memory.tags == ("new", "two, words")

        empty = await client.post(f"/ui/memories/{memory_id}/edit", data={"csrf": csrf, "text": "  ", "tags": "x"})
        assert empty.status_code == 400 and "text must not be empty" in empty.text
        assert service.get(memory_id) == memory


# -- bad input -------------------------------------------------------------------------------------------------------


async def test_bad_input_gets_one_clear_message_and_changes_nothing(make_service: Callable[..., MemoryService]) -> None:
    service = make_service()
    memory_id = service.store("still here").id
    edit = f"/ui/memories/{memory_id}/edit"
    max_bytes = service.settings.max_text_bytes
    async with client_for(service) as client:
        csrf = csrf_of((await client.get(f"/ui/memories/{memory_id}")).text)
        cases = [
            (await client.get("/ui/", params={"offset": "x"}), 400, "offset must be a whole number"),
            (await client.get("/ui/", params={"since": "yesterday"}), 400, "is not an ISO 8601 date"),
            (await client.get("/ui/", params={"namespace": "no spaces"}), 400, "namespace"),
            (await client.get("/ui/", params={"q": "x", "k": "1000"}), 400, "k must be between 1 and 100"),
            (await client.get("/ui/memories/99999999999999999999"), 400, "id must be between"),
            (await client.post(edit, content=b'{"csrf": "x"}', headers={"content-type": "application/json"}), 415, ""),
            (await client.post(edit, content=b"csrf=" + csrf.encode() + b"&text=%ff%fe", headers=FORM), 400, "UTF-8"),
            (await client.post(edit, content=b"text=" + b"a" * (6 * max_bytes), headers=FORM), 413, "limit"),
            (await client.post(edit, content="&".join(f"f{i}=1" for i in range(100)).encode(), headers=FORM), 400, ""),
        ]
        for response, status, message in cases:
            assert response.status_code == status, response.text[:200]
            assert message in response.text
        assert (await client.get(f"/ui/memories/{memory_id}")).status_code == 200
    assert service.get(memory_id).text == "still here"


# -- the list's filters and pages ---------------------------------------------------------------------------------


def test_list_filters_by_creation_time(make_service: Callable[..., MemoryService]) -> None:
    service = make_service()
    day = 86400.0
    start = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    results = service.store_many(
        [(f"memory of day {i}", None, None, None) for i in range(5)],
        timestamps=[(start + i * day, None) for i in range(5)],
    )
    ids = [r.id for r in results]
    page = service.list(since="2026-01-02", until="2026-01-03T12:00:00Z")
    assert [m.id for m in page.items] == [ids[2], ids[1]] and page.total == 2
    assert service.list(since=start + 4 * day).total == 1


async def test_list_pages_newest_first_and_keeps_filters_in_its_links(
    make_service: Callable[..., MemoryService],
) -> None:
    service = make_service()
    ids = [service.store(f"paged memory {i}", tags=["p"], namespace="pages").id for i in range(45)]
    service.store("another namespace", tags=["p"], namespace="elsewhere")
    async with client_for(service) as client:
        first = await client.get("/ui/", params={"namespace": "pages", "tags": "p"})
        assert "1–20 of 45 memories" in first.text
        shown = [int(i) for i in re.findall(r'class="open" href="/ui/memories/(\d+)"', first.text)]
        assert shown == ids[::-1][:20]
        older = re.search(r'rel="next" href="([^"]+)"', first.text)
        assert older is not None
        second = await client.get(older.group(1).replace("&amp;", "&"))
        assert "21–40 of 45 memories" in second.text and "namespace=pages" in older.group(1)
        last = await client.get("/ui/", params={"namespace": "pages", "tags": "p", "offset": "40"})
        assert "41–45 of 45 memories" in last.text and 'rel="next"' not in last.text


# -- robustness and what is coming --------------------------------------------------------------------------------


async def test_a_damaged_timestamp_does_not_take_the_page_down(make_service: Callable[..., MemoryService]) -> None:
    service = make_service()
    memory_id = service.store("a memory whose creation time was damaged on disk").id
    with sqlite3.connect(service.settings.paths.db_path) as conn:
        conn.execute("UPDATE memories SET created_at = 1e20 WHERE id = ?", (memory_id,))
    async with client_for(service) as client:
        for path in ("/ui/", f"/ui/memories/{memory_id}"):
            response = await client.get(path)
            assert response.status_code == 200 and "invalid time 1e+20" in response.text, path


def test_search_results_show_the_matching_passage_once_hits_carry_one(
    make_service: Callable[..., MemoryService],
) -> None:
    service = make_service()
    memory = service.get(service.store("a long memory; the part that matched is <here>").id)
    summary = WebUI(service, service.settings).templates.env.get_template("_memory.html").module.summary
    with_passage = str(summary(memory, "/ui", SimpleNamespace(memory=memory, score=0.5, passage="the <here> part")))
    assert "Matching passage:</span> the &lt;here&gt; part" in with_passage and "score 0.500" in with_passage
    as_object = SimpleNamespace(memory=memory, score=0.5, passage=SimpleNamespace(text="an object's text"))
    assert "an object&#39;s text" in str(summary(memory, "/ui", as_object))
    hit = service.retrieve("the part that matched", k=1)[0]  # a short memory is one passage: all of it
    assert hit.passage is not None and hit.passage.text == memory.text
    assert "Matching passage" not in str(summary(hit.memory, "/ui", hit))


async def test_the_page_is_covered_by_the_host_and_origin_checks(make_service: Callable[..., MemoryService]) -> None:
    service = make_service()
    memory_id = service.store("reachable only from this machine's own pages").id
    async with client_for(service) as client:
        assert (await client.get("/ui/", headers={"host": "evil.example"})).status_code == 421
        csrf = csrf_of((await client.get(f"/ui/memories/{memory_id}")).text)
        edit = f"/ui/memories/{memory_id}/edit"
        response = await client.post(edit, data={"csrf": csrf, "text": "x"}, headers={"origin": "http://evil.example"})
        assert response.status_code == 403
    assert service.get(memory_id).text == "reachable only from this machine's own pages"
