"""The web page under /ui: browse, search, read, edit and delete memories, and see the store's health.

Every view calls the same MemoryService methods as the MCP tools (list, retrieve, get, update, delete, stats), in a
worker thread; nothing here touches SQLite or FAISS. Pages are rendered on the server and use no JavaScript.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ltms import __version__, validation
from ltms.config import Settings
from ltms.errors import InvalidInput, LTMCError, NotFound, ReadOnlyError, StorageError
from ltms.ops.doctor import Report, diagnose
from ltms.ops.text import human_age, human_bytes
from ltms.records import iso_utc
from ltms.service import MemoryService
from ltms.web.forms import FormError, optional, read_form, tag_list, whole_number
from ltms.web.headers import SecurityHeaders
from ltms.web.session import COOKIE_NAME, Session, Sessions

log = logging.getLogger(__name__)

PREFIX = "/ui"
HERE = Path(__file__).resolve().parent
PAGE_SIZE = 20
DEFAULT_K = 10
K_CHOICES = (5, 10, 20, 50, 100)
EXCERPT_CHARS = 300
MAX_NAMESPACES_SHOWN = 50
HEALTH_SECONDS = 60  # how long the status page reuses the doctor's report

T = TypeVar("T")
Form = dict[str, str] | None
Handler = Callable[[Request, Form], Awaitable[Response]]


def web_routes(service: MemoryService, settings: Settings) -> list[BaseRoute]:
    """The routes to add to the HTTP app: the page, mounted at /ui."""
    return [Mount(PREFIX, app=WebUI(service, settings).app(), name="ui")]


def status_for(exc: LTMCError) -> int:
    if isinstance(exc, FormError):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ReadOnlyError):
        return 403
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, StorageError):
        return 503
    return 500


# -- template helpers --------------------------------------------------------------------------------------------


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def _iso(epoch_seconds: float) -> str:
    try:
        return iso_utc(epoch_seconds)
    except (ValueError, OverflowError, OSError):  # a damaged timestamp must not take the page down
        return f"invalid time {epoch_seconds!r}"


def _when(epoch_seconds: float) -> str:
    return _iso(epoch_seconds).replace("T", " ").replace("Z", " UTC")


def _passage(hit: Any) -> str | None:
    """The matching passage of a search hit (a string, or an object with `text`); None when it is the whole
    memory (a short memory is one passage), which the page shows anyway."""
    passage = getattr(hit, "passage", None)
    text = getattr(passage, "text", passage)
    whole = getattr(getattr(hit, "memory", None), "text", None)
    return text if isinstance(text, str) and text.strip() and text != whole else None


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped, whatever the template's name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        excerpt=_excerpt,
        when=_when,
        iso=_iso,
        pretty_json=lambda value: json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
        passage=_passage,
        lines=lambda items: "\n".join(items),
        age=human_age,
        size=human_bytes,
    )
    return env


def _safe_next(base: str, target: str | None) -> str:
    """Where to go after signing in: only a path on this page, never another site."""
    if target is None:
        return base + "/"
    local = target.startswith(base + "/") and not target.startswith("//")
    if local and target.isprintable() and "\\" not in target:
        return target
    return base + "/"


# -- the page ----------------------------------------------------------------------------------------------------


class WebUI:
    def __init__(self, service: MemoryService, settings: Settings, secret: bytes | None = None) -> None:
        self.service = service
        self.settings = settings
        self.sessions = Sessions(settings.auth_token, secret)
        # The edit form carries at most a whole text, percent-encoded (3 bytes per byte at worst), plus tags.
        self.max_form_bytes = 3 * settings.max_text_bytes + 64 * 1024
        self.templates = Jinja2Templates(env=_environment())
        self._health_lock = anyio.Lock()
        self._health_cache: tuple[float, float, Report | None, str | None] | None = None

    def app(self) -> Starlette:
        memory = "/memories/{memory_id:int}"
        routes: list[BaseRoute] = [
            Route("/", self._page(self.index), methods=["GET"]),
            Route(memory, self._page(self.memory), methods=["GET"]),
            Route(memory + "/edit", self._page(self.edit), methods=["POST"]),
            Route(memory + "/delete", self._page(self.confirm_delete), methods=["GET"]),
            Route(memory + "/delete", self._page(self.delete), methods=["POST"]),
            Route("/status", self._page(self.status), methods=["GET"]),
            Route("/login", self._page(self.login_form, public=True), methods=["GET"]),
            Route("/login", self._page(self.login, public=True), methods=["POST"]),
            Route("/logout", self._page(self.logout, public=True), methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(
            routes=routes, middleware=[Middleware(SecurityHeaders)], exception_handlers={404: self._not_found}
        )
        app.state.ui = self
        return app

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _page(self, handler: Handler, public: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a view: session cookie, sign-in, CSRF check and form reading for posts, errors as pages."""

        async def endpoint(request: Request) -> Response:
            session = self.sessions.read(request.cookies.get(COOKIE_NAME))
            fresh = session is None
            request.state.session = session = session or self.sessions.new()
            request.state.cookie_set = False
            try:
                if not public and not self.sessions.allows(session):
                    response: Response = self._to_login(request)
                elif request.method == "POST":
                    form = await read_form(request, self.max_form_bytes)
                    if self.sessions.csrf_matches(session, form.get("csrf")):
                        response = await handler(request, form)
                    else:
                        log.warning("web page: refused a form post to %s without a valid CSRF token", request.url.path)
                        response = self.error(
                            request,
                            403,
                            "This form's security token is missing or out of date, so nothing was changed. "
                            "Go back, reload the page and try again.",
                        )
                else:
                    response = await handler(request, None)
            except LTMCError as exc:
                response = self.error(request, status_for(exc), str(exc))
            except Exception:
                log.exception("web page: %s %s failed", request.method, request.url.path)
                response = self.error(request, 500, "Internal error: the server log has the details.")
            if fresh and not request.state.cookie_set:
                self._set_cookie(request, response, session)
            return response

        return endpoint

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # The service is synchronous and thread-safe; the event loop must not wait on SQLite or FAISS.
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    @staticmethod
    def _base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        session: Session | None = getattr(request.state, "session", None)
        context.update(
            base=self._base(request),
            csrf=self.sessions.csrf_token(session) if session else "",
            signed_in=bool(session and session.signed_in),
            token_required=self.sessions.token_required,
            writable=not self.settings.read_only,
            read_only=self.settings.read_only,
            version=__version__,
        )
        context.setdefault("nav", "")
        response = self.templates.TemplateResponse(request, template, context, status_code=status_code)
        response.headers["Cache-Control"] = "no-store"  # memories must not linger in caches
        return response

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "error.html", status, status=status, message=message)

    async def _not_found(self, request: Request, _exc: Exception) -> Response:
        return self.error(request, 404, "There is no such page here.")

    def _redirect(self, url: str) -> Response:
        return RedirectResponse(url, status_code=303)

    def _set_cookie(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE_NAME,
            self.sessions.cookie_value(session),
            max_age=max(0, session.expires - int(time.time())),
            path=self._base(request) or "/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        request.state.cookie_set = True

    def _to_login(self, request: Request) -> Response:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return self._redirect(f"{self._base(request)}/login?{urlencode({'next': here})}")

    # -- views ------------------------------------------------------------------------------------------------

    async def index(self, request: Request, _form: Form) -> Response:
        """The list (newest first, paged) or, with a query, the search results; the same filters apply to both."""
        params = request.query_params
        filters = {name: optional(params.get(name)) for name in ("namespace", "tags", "since", "until")}
        query = optional(params.get("q"))
        deleted = params.get("deleted", "")
        context: dict[str, Any] = {
            "nav": "memories",
            "query": query or "",
            "filters": {name: value or "" for name, value in filters.items()},
            "k": DEFAULT_K,
            "k_choices": K_CHOICES,
            "hits": None,
            "page": None,
            "error": None,
            "deleted": deleted if deleted.isdigit() else None,
            "prev_url": None,
            "next_url": None,
        }
        status = 200
        common = {
            "namespace": filters["namespace"],
            "tags": tag_list(filters["tags"]),
            "since": filters["since"],
            "until": filters["until"],
        }
        try:
            if query:
                context["k"] = k = whole_number(params.get("k"), "k", DEFAULT_K, 1, validation.MAX_K)
                context["hits"] = await self._call(self.service.retrieve, query, k=k, **common)
            else:
                offset = whole_number(params.get("offset"), "offset", 0, 0, 2**62)
                page = await self._call(self.service.list, limit=PAGE_SIZE, offset=offset, **common)
                context["page"] = page
                kept = {name: value for name, value in filters.items() if value}
                base = self._base(request)
                if offset > 0:
                    context["prev_url"] = f"{base}/?{urlencode({**kept, 'offset': max(0, offset - PAGE_SIZE)})}"
                if page.next_offset is not None:
                    context["next_url"] = f"{base}/?{urlencode({**kept, 'offset': page.next_offset})}"
        except InvalidInput as exc:
            context["error"] = str(exc)
            status = 400
        return self.render(request, "index.html", status, **context)

    async def memory(self, request: Request, _form: Form) -> Response:
        memory = await self._call(self.service.get, request.path_params["memory_id"])
        saved = request.query_params.get("saved") == "1"
        return self.render(request, "memory.html", memory=memory, saved=saved, error=None, draft=None)

    async def edit(self, request: Request, form: Form) -> Response:
        assert form is not None
        current = await self._call(self.service.get, request.path_params["memory_id"])
        text, tags = form.get("text"), form.get("tags")
        # Browsers send a textarea's line ends as CRLF: unchanged text must stay unchanged (and not be re-embedded).
        new_text = None if text is None else text.replace("\r\n", "\n")
        if new_text is not None and new_text == current.text.replace("\r\n", "\n"):
            new_text = None
        new_tags = None if tags is None else tag_list(tags, "\n")
        try:
            await self._call(self.service.update, current.id, text=new_text, tags=new_tags)
        except (InvalidInput, ReadOnlyError) as exc:
            draft = {"text": text if text is not None else current.text, "tags": tags or ""}
            return self.render(
                request, "memory.html", status_for(exc), memory=current, saved=False, error=str(exc), draft=draft
            )
        log.info("web page: memory %d updated", current.id)
        return self._redirect(f"{self._base(request)}/memories/{current.id}?saved=1")

    async def confirm_delete(self, request: Request, _form: Form) -> Response:
        memory = await self._call(self.service.get, request.path_params["memory_id"])
        return self.render(request, "delete.html", memory=memory)

    async def delete(self, request: Request, _form: Form) -> Response:
        memory_id = request.path_params["memory_id"]
        await self._call(self.service.delete, memory_id)
        log.info("web page: memory %d deleted", memory_id)
        return self._redirect(f"{self._base(request)}/?deleted={memory_id}")

    async def status(self, request: Request, _form: Form) -> Response:
        stats = await self._call(self.service.stats)
        report, checked_at, doctor_error = await self._health()
        namespaces = sorted(stats["namespaces"].items(), key=lambda item: (-item[1], item[0]))
        return self.render(
            request,
            "status.html",
            nav="status",
            stats=stats,
            namespaces=namespaces[:MAX_NAMESPACES_SHOWN],
            namespaces_left_out=max(0, len(namespaces) - MAX_NAMESPACES_SHOWN),
            report=report,
            checked_ago=time.time() - checked_at,
            doctor_error=doctor_error,
        )

    async def _health(self) -> tuple[Report | None, float, str | None]:
        """The doctor's report (read-only, as `ltmc doctor` without --fix), at most HEALTH_SECONDS old.

        Its checks read the whole database and snapshot (over a second at 100k memories): a page that is
        reloaded, or open in several tabs, must not run them again and again."""
        async with self._health_lock:
            cached = self._health_cache
            if cached is None or time.monotonic() - cached[0] > HEALTH_SECONDS:
                try:
                    report: Report | None = await self._call(diagnose, self.settings)
                    error = None
                except Exception as exc:
                    log.exception("web page: the health check failed")
                    report, error = None, f"the health check could not run: {exc}"
                cached = self._health_cache = (time.monotonic(), time.time(), report, error)
        return cached[2], cached[1], cached[3]

    async def login_form(self, request: Request, _form: Form) -> Response:
        base = self._base(request)
        target = _safe_next(base, request.query_params.get("next"))
        if not self.sessions.token_required or request.state.session.signed_in:
            return self._redirect(target)
        return self.render(request, "login.html", next=target, error=None)

    async def login(self, request: Request, form: Form) -> Response:
        assert form is not None
        target = _safe_next(self._base(request), form.get("next"))
        if not self.sessions.token_required:
            return self._redirect(target)
        client = request.client.host if request.client else "?"
        if not self.sessions.token_matches(form.get("token", "")):
            log.warning("web page: sign-in refused (wrong token) from %s", client)
            return self.render(
                request, "login.html", 401, next=target, error="That token is not right: nothing was signed in."
            )
        session = self.sessions.new(signed_in=True)  # a new id: a session fixed before sign-in is worthless
        log.info("web page: signed in from %s", client)
        request.state.session = session
        response = self._redirect(target)
        self._set_cookie(request, response, session)
        return response

    async def logout(self, request: Request, _form: Form) -> Response:
        self.sessions.end(request.state.session)
        base = self._base(request)
        response = self._redirect(f"{base}/login" if self.sessions.token_required else f"{base}/")
        self._set_cookie(request, response, self.sessions.new())
        return response
