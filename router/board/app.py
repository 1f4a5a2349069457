"""The board's routes: the page, its login, its live events, and the JSON API under it.

Every route but the login form and the static files needs a session cookie (or, for
``/api/...``, ``Authorization: Bearer <[board] api_token>``): a page request without one
is redirected to the login, an API or event request gets 401, and neither gets data.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from config.board import BoardSettings
from router.board import views
from router.board.auth import (
    LoginThrottle,
    Session,
    Signer,
    check_password,
    client_address,
)
from router.board.feed import Watcher
from router.board.pages import (
    CONTACTS_PER_PAGE,
    MESSAGES_PER_PAGE,
    PARTS,
    BadParam,
    Pages,
    ViewParams,
    parse_params,
)
from router.board.views import Planner, Topology
from router.store.board_view import BoardReader, DeliveryFilter
from router.store.sqlstore import SqlStore

SESSION_COOKIE = "bc_session"
LOGIN_COOKIE = "bc_login"
KEEPALIVE = 15.0
_STATIC = {"board.js": "text/javascript; charset=utf-8", "board.css": "text/css; charset=utf-8"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_MAX_FORM = 4096
Handler = Callable[[Request], Awaitable[Response]]


class Board:
    """The crisis board over one store. ``start`` before serving, ``aclose`` after."""

    def __init__(self, settings: BoardSettings, store: SqlStore,
                 describe: Callable[[], tuple[Topology, Planner]], *,
                 secure_cookies: bool = False, clock: Callable[[], float] = time.time) -> None:
        """``describe`` tells, once the router is started, its channels and how it plans."""
        self.settings = settings
        self._describe = describe
        self.topology = Topology(())
        self._planner: Planner = _no_plan
        self._secure = secure_cookies
        self._clock = clock
        self.reader = BoardReader(store)
        self.pages = Pages()
        self.throttle = LoginThrottle(settings, clock)
        self._signer: Signer | None = None
        self._watcher: Watcher | None = None
        self._starting: asyncio.Lock | None = None

    async def start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._watcher is not None:
                return
            self.topology, self._planner = self._describe()
            await self.reader.open()
            self._signer = Signer(await self.reader.secret("board.session_key"), self.settings)
            watcher = Watcher(self.reader.cursor(), self.settings.update_interval, self._clock)
            watcher.start()
            self._watcher = watcher

    def hang_up(self) -> None:
        """End the live streams, so that a stopping server need not wait for viewers."""
        if self._watcher is not None:
            self._watcher.hang_up()

    async def aclose(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.close()
        await self.reader.close()

    @property
    def signer(self) -> Signer:
        assert self._signer is not None, "the board is not started"
        return self._signer

    @property
    def watcher(self) -> Watcher:
        assert self._watcher is not None, "the board is not started"
        return self._watcher

    def routes(self) -> list[BaseRoute]:
        page, api = self._page_auth, self._api_auth
        return [
            Route("/board", page(self._board), methods=["GET"]),
            Route("/board/", page(self._board), methods=["GET"]),
            Route("/board/login", self._started(self._login_form), methods=["GET"]),
            Route("/board/login", self._started(self._login), methods=["POST"]),
            Route("/board/logout", page(self._logout), methods=["POST"]),
            Route("/board/events", api(self._events), methods=["GET"]),
            Route("/board/static/{name}", _static, methods=["GET"]),
            Route("/api/health", api(self._api_health), methods=["GET"]),
            Route("/api/messages", api(self._api_messages), methods=["GET"]),
            Route("/api/messages/{message_id}", api(self._api_message), methods=["GET"]),
            Route("/api/reachability", api(self._api_reachability), methods=["GET"]),
            Route("/api/inbox", api(self._api_inbox), methods=["GET"]),
            Route("/api/incidents", api(self._api_incidents), methods=["GET"]),
        ]

    # -- authentication -------------------------------------------------------------------

    def _started(self, handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            if self._watcher is None:  # served without the app's lifespan (embedded)
                await self.start()
            return _hardened(await handler(request))

        return wrapped

    def session(self, request: Request) -> Session | None:
        return self.signer.session(request.cookies.get(SESSION_COOKIE), self._clock())

    def _page_auth(self, handler: Callable[[Request, Session], Awaitable[Response]]) -> Handler:
        async def wrapped(request: Request) -> Response:
            session = self.session(request)
            if session is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/board/login?next={quote(target)}", status_code=303)
            return await handler(request, session)

        return self._started(wrapped)

    def _api_auth(self, handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            authorization = request.headers.get("authorization", "")
            scheme, _, token = authorization.partition(" ")
            allowed = (scheme.lower() == "bearer" and self.signer.token_matches(token.strip())
                       ) or self.session(request) is not None
            if not allowed:
                return JSONResponse(
                    {"error": "authentication required: log in at /board/login, or send"
                              " Authorization: Bearer <[board] api_token>"},
                    status_code=401, headers={"WWW-Authenticate": 'Bearer realm="backchannel"'},
                )
            try:
                return await handler(request)
            except BadParam as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)

        return self._started(wrapped)

    def _cookie(self, response: Response, name: str, value: str, max_age: int,
                path: str = "/") -> None:
        response.set_cookie(name, value, max_age=max_age, path=path, httponly=True,
                            samesite="strict", secure=self._secure)

    async def _login_form(self, request: Request, *, problem: str = "", status: int = 200,
                          user: str = "", headers: dict[str, str] | None = None) -> Response:
        if self.session(request) is not None and request.method == "GET":
            return RedirectResponse(_safe_next(request.query_params.get("next")), 303)
        nonce = secrets.token_hex(16)
        target = request.query_params.get("next") if request.method == "GET" else None
        html = self.pages.login(
            csrf=self.signer.login_csrf(nonce), problem=problem, user=user,
            next=_safe_next(target or _form_next(request)),
            users_required=self.settings.password is None,
        )
        response = HTMLResponse(html, status_code=status, headers=headers)
        self._cookie(response, LOGIN_COOKIE, nonce, 3600, path="/board")
        return response

    async def _login(self, request: Request) -> Response:
        if not _same_origin(request):
            return HTMLResponse("cross-site login refused", status_code=403)
        form = await _small_form(request)
        if form is None:
            return HTMLResponse("login form too large", status_code=413)
        request.state.next = form.get("next", "")
        user = form.get("user", "").strip()[:64]
        if not self.signer.check_login_csrf(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
            return await self._login_form(
                request, status=403, user=user,
                problem="This login form expired or did not come from this board: try again.")
        client = client_address(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"), self.settings.proxy_networks())
        wait = self.throttle.wait(client)
        if wait > 0:
            seconds = max(1, round(wait + 0.49))
            return await self._login_form(
                request, status=429, user=user, headers={"Retry-After": str(seconds)},
                problem=f"Too many wrong passwords from your address: try again in {seconds} s.")
        who = await check_password(self.settings, user, form.get("password", ""),
                                   asyncio.to_thread)
        if who is None:
            delay = self.throttle.failed(client)
            headers = {"Retry-After": str(max(1, round(delay + 0.49)))} if delay else None
            return await self._login_form(request, status=401, user=user, headers=headers,
                                          problem="Wrong name or password.")
        self.throttle.succeeded(client)
        response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
        self._cookie(response, SESSION_COOKIE, self.signer.session_cookie(who, self._clock()),
                     int(self.settings.session_hours * 3600))
        response.delete_cookie(LOGIN_COOKIE, path="/board", httponly=True, samesite="strict")
        return response

    async def _logout(self, request: Request, session: Session) -> Response:
        form = await _small_form(request)
        token = (form or {}).get("csrf", "")
        if not _same_origin(request) or not secrets.compare_digest(
                token, self.signer.csrf(session)):
            return HTMLResponse("logout refused: missing or forged token", status_code=403)
        response = RedirectResponse("/board/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # -- the page and its live parts ------------------------------------------------------

    def _params(self, request: Request) -> ViewParams:
        return parse_params(request.query_params, self.topology.channels)

    async def _board(self, request: Request, session: Session) -> Response:
        try:
            params = self._params(request)
        except BadParam as exc:
            return HTMLResponse(f"bad query: {exc}", status_code=400)
        data = await self._data(params)
        html = self.pages.board(data, params, csrf=self.signer.csrf(session), user=session.user,
                                channels=self.topology.channels)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def _data(self, params: ViewParams) -> dict[str, Any]:
        """Everything one view shows; the parts every viewer shares are computed once per
        version of the store, whoever asks first."""
        shared = self.watcher.shared
        health, messages, inbox, reach, incidents = await asyncio.gather(
            shared("health", self.health), shared(("messages", params.mp),
                                                  lambda: self.messages(params.mp)),
            shared("inbox", self.inbox), shared("reach", self.reachability),
            shared("incidents", self.incidents),
        )
        selected = params.m or (messages["messages"][0]["message_id"]
                                if messages["messages"] else "")
        chosen = DeliveryFilter(params.q, params.status, params.channel)
        detail = await shared(("detail", selected, chosen, params.p),
                              lambda: self.detail(selected, chosen, params.p)) \
            if selected else None
        return {"health": health, "messages": messages, "inbox": inbox, "reach": reach,
                "incidents": incidents, "detail": detail, "selected": selected,
                "days": self.settings.days}

    async def health(self) -> list[dict[str, Any]]:
        return views.health(await self.reader.health(), self.topology)

    async def messages(self, page: int = 1, limit: int = MESSAGES_PER_PAGE) -> dict[str, Any]:
        since = self._clock() - self.settings.days * 86400
        return views.messages(await self.reader.messages(
            since=since, limit=limit, offset=(page - 1) * limit))

    async def detail(self, message_id: str, chosen: DeliveryFilter, page: int = 1,
                     limit: int = CONTACTS_PER_PAGE) -> dict[str, Any] | None:
        summary = await self.reader.message(message_id)
        if summary is None:
            return None
        deliveries = await self.reader.deliveries(message_id, chosen, limit=limit,
                                                  offset=(page - 1) * limit)
        return views.deliveries(deliveries, summary, self._planner, self.topology)

    async def incidents(self, limit: int = 20) -> dict[str, Any]:
        """Open incidents and those resolved in the board's days. A promise that falls due
        makes the owner's reminder, and so a change: the overdue flag comes with it."""
        now = self._clock()
        return views.incidents(await self.reader.incidents(
            resolved_since=now - self.settings.days * 86400, limit=limit), now)

    async def inbox(self, limit: int = 30) -> dict[str, Any]:
        return views.inbox(await self.reader.inbox(limit), await self.reader.opt_outs(limit))

    async def reachability(self, limit: int = 30) -> dict[str, Any]:
        runs = await self.reader.runs(limit)
        last = await self.reader.last_run() if runs else None
        passed = await self.reader.last_passed(self.topology.channels)
        return views.reachability(runs, last, passed, self.topology)

    async def _events(self, request: Request) -> Response:
        params = self._params(request)
        return StreamingResponse(self._stream(request, params), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _stream(self, request: Request, params: ViewParams) -> AsyncIterator[str]:
        watcher, sent = self.watcher, dict[str, bytes]()
        seen = -1
        yield "retry: 2000\n\n"
        while not watcher.closed:
            if self.session(request) is None and not request.headers.get("authorization"):
                yield "event: logout\ndata: {}\n\n"
                return
            if watcher.version != seen:
                seen = watcher.version
                data = await self._data(params)
                for part in PARTS:
                    html = await watcher.shared(("html", part, params, seen),
                                                self._renderer(part, data, params))
                    digest = hashlib.blake2b(html.encode(), digest_size=16).digest()
                    if sent.get(part) != digest:
                        sent[part] = digest
                        yield f"event: part\ndata: {json.dumps({'id': part, 'html': html})}\n\n"
                stamp = {"version": seen, "changed_at": watcher.changed_at}
                yield f"event: version\ndata: {json.dumps(stamp)}\n\n"
            elif not await watcher.newer_than(seen, KEEPALIVE):
                yield ": keepalive\n\n"

    def _renderer(self, part: str, data: dict[str, Any],
                  params: ViewParams) -> Callable[[], Awaitable[str]]:
        async def render() -> str:
            return self.pages.part(part, data, params)

        return render

    # -- the JSON API ---------------------------------------------------------------------

    async def _api_health(self, request: Request) -> Response:
        return _json({"channels": await self.health()})

    async def _api_messages(self, request: Request) -> Response:
        limit = _int_param(request, "limit", 50, 1, 500)
        offset = _int_param(request, "offset", 0, 0, 10_000_000)
        since = self._clock() - _int_param(request, "days", self.settings.days, 1, 366) * 86400
        return _json(views.messages(await self.reader.messages(
            since=since, limit=limit, offset=offset)))

    async def _api_message(self, request: Request) -> Response:
        params = self._params(request)
        limit = _int_param(request, "limit", 100, 1, 1000)
        offset = _int_param(request, "offset", 0, 0, 10_000_000)
        message_id = request.path_params["message_id"]
        summary = await self.reader.message(message_id)
        if summary is None:
            return JSONResponse({"error": "no such message"}, status_code=404)
        chosen = DeliveryFilter(params.q, params.status, params.channel)
        deliveries = await self.reader.deliveries(message_id, chosen, limit=limit, offset=offset)
        return _json(views.deliveries(deliveries, summary, self._planner, self.topology))

    async def _api_reachability(self, request: Request) -> Response:
        return _json(await self.reachability(_int_param(request, "limit", 30, 1, 1000)))

    async def _api_incidents(self, request: Request) -> Response:
        return _json(await self.incidents(_int_param(request, "limit", 50, 1, 1000)))

    async def _api_inbox(self, request: Request) -> Response:
        return _json(await self.inbox(_int_param(request, "limit", 100, 1, 1000)))


def _no_plan(body_json: str, contact: str, addresses_json: str) -> list[str]:
    return []


def _json(payload: dict[str, Any]) -> Response:
    return JSONResponse(payload, headers={"Cache-Control": "no-store"})


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise BadParam(f"{name}: must be a whole number from {low} to {high}")
    return int(text)


def _hardened(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", _CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cache-Control", "no-store")
    return response


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _STATIC:
        return Response("not found", status_code=404)
    body = resources.files("router.board").joinpath("static", name).read_bytes()
    return _hardened(Response(body, media_type=_STATIC[name],
                              headers={"Cache-Control": "max-age=300"}))


async def _small_form(request: Request) -> dict[str, str] | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > _MAX_FORM:
        return None
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_FORM:
            return None
        chunks.append(chunk)
    pairs = parse_qsl(b"".join(chunks).decode("utf-8", "replace"), keep_blank_values=True)
    return {key: value for key, value in pairs}


def _same_origin(request: Request) -> bool:
    """A POST whose Origin (when the browser sends one) is this very site."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _safe_next(target: str | None) -> str:
    """Only a path on the board itself: never an open redirect."""
    if not target or not target.startswith("/board") or target.startswith("/board/login"):
        return "/board"
    if "\\" in target or "//" in target or any(ord(c) < 0x20 for c in target):
        return "/board"
    return target


def _form_next(request: Request) -> str | None:
    return getattr(request.state, "next", None)
