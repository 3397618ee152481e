"""The web page in a real browser: Debian's headless Chromium, driven by Selenium through /usr/bin/chromedriver
(nothing is downloaded), against a real `ltmc serve --transport http` process on a seeded data directory.

One browser for the module. Each test signs in if it must and uses its own memories, so the tests do not depend
on their order. Screenshots go to $LTMC_SCREENSHOT_DIR, or to a pytest temporary directory."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ltms.service import MemoryService
from tests.helpers import ServerProcess, child_env, hash_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="Chromium is not installed: run scripts/install-browser.sh (scripts/setup.sh --dev does)",
)

TOKEN = "browser-test-token-0123456789abcdef"
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'"><b>bold</b> text'
GARDEN = {
    "tomatoes": ("tomatoes need deep watering every evening in july", ["plants", "summer"]),
    "roses": ("roses are pruned in early spring before the buds open", ["plants", "spring"]),
    "shed": ("the shed key hangs on a hook behind the garage door", ["house"]),
}
OTHERS = {
    "deploy": ("the deploy pipeline runs every night at two and posts to the ops channel", "work", ["ops"]),
    "edit": ("the wifi password is written on the fridge", "house", ["wifi"]),
    "delete": ("an obsolete note about the old laser printer in the hallway", "house", ["old"]),
    "forged": ("a memory that a forged form on another page tries to delete", "house", []),
    "hostile": (HOSTILE, "html", ["<i>tag</i>"]),
}
PAGED = 45


# -- fixtures ---------------------------------------------------------------------------------------------------------


def seed(data_dir: Path) -> dict[str, Any]:
    """Memories stored through the real service before the server starts; returns their ids by name."""
    with MemoryService(hash_settings(data_dir), background_saves=False) as service:
        ids: dict[str, Any] = {
            "paged": [
                service.store(f"paging memory number {i}", tags=["page"], namespace="paging").id for i in range(PAGED)
            ]
        }
        for name, (text, tags) in GARDEN.items():
            ids[name] = service.store(text, tags=tags, namespace="garden").id
        for name, (text, namespace, tags) in OTHERS.items():
            ids[name] = service.store(text, tags=tags, namespace=namespace).id
    return ids


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("LTMC_SCREENSHOT_DIR")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # runs as root in CI
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(argument)
    # An explicit driver path: Selenium Manager is skipped and nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """A real server with a token, on a seeded data directory: (its base URL, the seeded ids)."""
    root = tmp_path_factory.mktemp("web")
    ids = seed(root / "data")
    server = ServerProcess(
        [*_serve_command(), "--port", "0"], child_env(root / "data", LTMC_AUTH_TOKEN=TOKEN), root / "server.log"
    )
    try:
        server.wait_healthy()
        yield server.base_url, ids
    finally:
        server.stop()


def _serve_command() -> list[str]:
    return [sys.executable, "-m", "ltms", "serve", "--transport", "http"]


# -- helpers ----------------------------------------------------------------------------------------------------------


def wait_until(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 30) -> Any:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    # While a page is being replaced, chromedriver may answer with transient errors: look again.
    wait = WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,))
    return wait.until(condition, message=f"waited for {what}")


def loads_a_page(driver: Any, action: Callable[[], None]) -> None:
    """Do something that loads a new page, and wait until the new page (not the old one) is complete."""
    driver.execute_script("document.documentElement.dataset.left = 'yes'")  # marks the old page
    action()
    wait_until(
        driver,
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && document.documentElement.dataset.left !== 'yes'"
        ),
        "the next page",
    )


def click_and_load(driver: Any, element: Any) -> None:
    loads_a_page(driver, element.click)


def css(driver: Any, selector: str) -> list[Any]:
    return driver.find_elements("css selector", selector)


def shown_ids(driver: Any) -> list[int]:
    return [int(link.get_attribute("href").rsplit("/", 1)[1]) for link in css(driver, "li.memory a.open")]


def sign_in(driver: Any, base: str) -> None:
    driver.get(f"{base}/ui/")
    if "/ui/login" in driver.current_url:
        css(driver, "#token")[0].send_keys(TOKEN)
        click_and_load(driver, css(driver, "form.login button[type=submit]")[0])
    assert driver.current_url.startswith(f"{base}/ui/") and "/login" not in driver.current_url


def fill(driver: Any, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        element = css(driver, f"#{name}")[0]
        element.clear()
        if value:
            element.send_keys(value)


# -- the flows ---------------------------------------------------------------------------------------------------------


def test_sign_in_refuses_a_wrong_token_and_accepts_the_right_one(
    browser: Any, site: tuple[str, dict[str, Any]], shots: Path
) -> None:
    base, ids = site
    browser.get(f"{base}/ui/status")
    browser.delete_all_cookies()
    browser.get(f"{base}/ui/memories/{ids['roses']}")
    assert "/ui/login" in browser.current_url
    assert css(browser, "label[for=token]")[0].text == "Access token"
    css(browser, "#token")[0].send_keys("not-the-token")
    click_and_load(browser, css(browser, "form.login button[type=submit]")[0])
    assert "not right" in css(browser, ".error")[0].text
    assert "/ui/login" in browser.current_url and not css(browser, "#memory-text")
    browser.save_screenshot(str(shots / "login-refused.png"))

    css(browser, "#token")[0].send_keys(TOKEN)
    click_and_load(browser, css(browser, "form.login button[type=submit]")[0])
    assert browser.current_url == f"{base}/ui/memories/{ids['roses']}"  # back where it was going
    assert css(browser, "#memory-text")[0].text == GARDEN["roses"][0]
    cookie = browser.get_cookie("ltmc_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]


def test_list_pages_newest_first(browser: Any, site: tuple[str, dict[str, Any]], shots: Path) -> None:
    base, ids = site
    sign_in(browser, base)
    browser.get(f"{base}/ui/?namespace=paging")
    newest_first = ids["paged"][::-1]
    assert "1–20 of 45 memories" in css(browser, ".summary")[0].text
    assert shown_ids(browser) == newest_first[:20]
    browser.save_screenshot(str(shots / "list.png"))
    click_and_load(browser, css(browser, "a[rel=next]")[0])
    assert "21–40 of 45" in css(browser, ".summary")[0].text and shown_ids(browser) == newest_first[20:40]
    click_and_load(browser, css(browser, "a[rel=next]")[0])
    assert shown_ids(browser) == newest_first[40:] and not css(browser, "a[rel=next]")
    click_and_load(browser, css(browser, "a[rel=prev]")[0])
    assert shown_ids(browser) == newest_first[20:40]


def test_filter_by_namespace_and_tag(browser: Any, site: tuple[str, dict[str, Any]]) -> None:
    base, ids = site
    sign_in(browser, base)
    browser.get(f"{base}/ui/")
    fill(browser, {"q": "", "namespace": "garden", "tags": "plants"})
    click_and_load(browser, css(browser, "form.filters button[type=submit]")[0])
    assert sorted(shown_ids(browser)) == sorted([ids["tomatoes"], ids["roses"]])
    assert css(browser, "#namespace")[0].get_attribute("value") == "garden"  # the filters stay filled in
    spring = next(link for link in css(browser, "a.tag") if link.text == "spring")
    click_and_load(browser, spring)
    assert shown_ids(browser) == [ids["roses"]]


def test_search_shows_the_expected_memory_first(browser: Any, site: tuple[str, dict[str, Any]], shots: Path) -> None:
    base, ids = site
    sign_in(browser, base)
    browser.get(f"{base}/ui/")
    fill(browser, {"q": "deep watering for tomatoes in july", "namespace": "", "tags": ""})
    click_and_load(browser, css(browser, "form.filters button[type=submit]")[0])
    assert shown_ids(browser)[0] == ids["tomatoes"]
    first = css(browser, "li.memory")[0]
    assert first.find_element("css selector", ".score").text.startswith("score ")
    assert GARDEN["tomatoes"][0] in first.text
    browser.save_screenshot(str(shots / "search.png"))


def test_edit_text_then_a_fresh_search_finds_the_change(browser: Any, site: tuple[str, dict[str, Any]]) -> None:
    base, ids = site
    new_text = "the guest network password is written inside the kitchen cupboard"
    sign_in(browser, base)
    browser.get(f"{base}/ui/memories/{ids['edit']}")
    assert css(browser, "label[for=text]") and css(browser, "label[for=edit-tags]")
    fill(browser, {"text": new_text})
    click_and_load(browser, css(browser, "form.edit button[type=submit]")[0])
    assert css(browser, ".notice")[0].text == "Saved."
    assert css(browser, "#memory-text")[0].text == new_text

    browser.get(f"{base}/ui/")
    fill(browser, {"q": "guest network password kitchen cupboard"})
    click_and_load(browser, css(browser, "form.filters button[type=submit]")[0])
    assert shown_ids(browser)[0] == ids["edit"]
    assert new_text in css(browser, "li.memory")[0].text


def test_delete_asks_for_confirmation_then_the_memory_is_gone(
    browser: Any, site: tuple[str, dict[str, Any]], shots: Path
) -> None:
    base, ids = site
    memory_id = ids["delete"]
    sign_in(browser, base)
    browser.get(f"{base}/ui/memories/{memory_id}")
    click_and_load(browser, css(browser, "a.danger")[0])
    assert css(browser, "h1")[0].text == f"Delete memory #{memory_id}?"
    browser.save_screenshot(str(shots / "delete-confirm.png"))
    click_and_load(browser, css(browser, "form.confirm button[type=submit]")[0])
    assert css(browser, ".notice")[0].text == f"Memory #{memory_id} was deleted."

    browser.get(f"{base}/ui/memories/{memory_id}")
    assert css(browser, "h1")[0].text == "Not found"
    browser.get(f"{base}/ui/?q=obsolete+note+old+laser+printer+hallway")
    assert memory_id not in shown_ids(browser)
    browser.get(f"{base}/ui/?namespace=house")
    assert memory_id not in shown_ids(browser)


def test_a_memory_containing_html_renders_as_text(browser: Any, site: tuple[str, dict[str, Any]], shots: Path) -> None:
    base, ids = site
    sign_in(browser, base)
    for url in (f"{base}/ui/memories/{ids['hostile']}", f"{base}/ui/?namespace=html"):
        browser.get(url)
        assert "pwned" not in browser.title
        assert not css(browser, "main script, main img, main b")
    browser.get(f"{base}/ui/memories/{ids['hostile']}")
    assert css(browser, "#memory-text")[0].text == HOSTILE
    assert any(tag.text == "<i>tag</i>" for tag in css(browser, "a.tag"))
    browser.save_screenshot(str(shots / "html-inert.png"))


def test_a_cross_site_form_post_without_the_csrf_token_is_refused(
    browser: Any, site: tuple[str, dict[str, Any]]
) -> None:
    """A page elsewhere (another origin; same site, so the session cookie does go along) posts a delete form."""
    base, ids = site
    memory_id = ids["forged"]
    target = f"{base}/ui/memories/{memory_id}/delete"
    page = (
        f'<!doctype html><title>prize</title><form method="post" action="{target}">'
        f'<input type="hidden" name="csrf" value="guessed"><button id="go">Win a prize</button></form>'
    ).encode()

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    sign_in(browser, base)
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://127.0.0.1:{attacker.server_address[1]}/")
        click_and_load(browser, css(browser, "#go")[0])
    finally:
        attacker.shutdown()
        attacker.server_close()
        thread.join()
    refusal = browser.page_source
    assert "was deleted" not in refusal
    assert "security token" in refusal or "Origin" in refusal  # the CSRF check, or the app-wide Origin check
    browser.get(f"{base}/ui/memories/{memory_id}")
    assert css(browser, "#memory-text")[0].text == OTHERS["forged"][0]


def test_read_only_mode_shows_no_write_controls(
    browser: Any, start_server: Callable[..., ServerProcess], tmp_path: Path, shots: Path
) -> None:
    with MemoryService(hash_settings(tmp_path / "ro"), background_saves=False) as service:
        memory_id = service.store("a memory to read, not to change", tags=["ro"]).id
    server = start_server("http", env=child_env(tmp_path / "ro", LTMC_READ_ONLY="1"))
    base = server.base_url
    for path in ("/ui/", f"/ui/memories/{memory_id}", f"/ui/memories/{memory_id}/delete", "/ui/status"):
        browser.get(base + path)
        assert not css(browser, "form[method=post], textarea, button.danger, a.danger"), path
    browser.get(f"{base}/ui/memories/{memory_id}")
    assert css(browser, "#memory-text")[0].text == "a memory to read, not to change"
    assert css(browser, ".badge")[0].text == "read-only"
    browser.save_screenshot(str(shots / "read-only.png"))


def test_a_phone_sized_screen_labelled_fields_and_the_keyboard(
    browser: Any, site: tuple[str, dict[str, Any]], shots: Path
) -> None:
    base, ids = site
    sign_in(browser, base)
    browser.set_window_size(390, 844)
    try:
        for path, name in (
            ("/ui/", "phone-list"),
            (f"/ui/memories/{ids['tomatoes']}", "phone-memory"),
            ("/ui/status", "phone-status"),
        ):
            browser.get(base + path)
            assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), path
            unlabelled = browser.execute_script(
                "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
                ".filter(e => e.labels.length === 0).map(e => e.name)"
            )
            assert unlabelled == [], path
            browser.save_screenshot(str(shots / f"{name}.png"))
        # The keyboard: the first Tab reaches the skip link, Enter jumps to the content, and the search field
        # can be reached and used without a mouse.
        from selenium.webdriver.common.keys import Keys

        browser.get(f"{base}/ui/")
        body = css(browser, "body")[0]
        body.send_keys(Keys.TAB)
        assert browser.switch_to.active_element.text == "Skip to content"
        for _ in range(10):
            if browser.switch_to.active_element.get_attribute("id") == "q":
                break
            browser.switch_to.active_element.send_keys(Keys.TAB)
        field = browser.switch_to.active_element
        assert field.get_attribute("id") == "q"
        loads_a_page(browser, lambda: field.send_keys("roses pruned in spring", Keys.ENTER))
        assert shown_ids(browser)[0] == ids["roses"]
    finally:
        browser.set_window_size(1280, 900)
