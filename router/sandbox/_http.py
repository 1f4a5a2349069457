"""What the HTTP peers share: listening in the caller's loop, refusing and restoring
connections on the same port, added latency, stalls and drops, the request log,
outbound webhooks and the ``/_sandbox/`` control API."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import aiohttp
from aiohttp import web

from router.sandbox._net import arm_reset, listen_socket
from router.sandbox._service import Service
from router.sandbox.faults import Fault, FaultBook, FaultSpec

log = logging.getLogger("router.sandbox")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request a peer received, and what it answered."""

    time: float
    channel: str
    """Fault channel key ("sms", "telegram"...); empty when none applies."""
    method: str
    path: str
    params: Mapping[str, str]
    answer: int | str
    """The HTTP status, or "stall" / "drop"."""

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time,
            "channel": self.channel,
            "method": self.method,
            "path": self.path,
            "params": dict(self.params),
            "answer": self.answer,
        }


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """One webhook the peer delivered (or failed to) to the application under test."""

    time: float
    url: str
    payload: Mapping[str, object]
    status: int | None
    """The application's HTTP status; None when no answer came."""
    error: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time,
            "url": self.url,
            "payload": dict(self.payload),
            "status": self.status,
            "error": self.error,
        }


@dataclass(slots=True)
class RequestState:
    """What a handler tells the request log and itself about one request."""

    channel: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    fault: Fault | None = None
    logged: bool = False


STATE = web.RequestKey("sandbox", RequestState)


class HttpPeer(Service):
    """Base class of the Twilio and Telegram peers (not used on its own)."""

    def __init__(
        self,
        faults: FaultBook,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        webhook_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.latency = latency
        """Seconds added before every API answer, to look like a real provider."""
        self.faults = faults
        self.requests: list[RequestRecord] = []
        self.outbound: list[OutboundRecord] = []
        """Every status callback or webhook delivery attempt, in order."""
        self.control_books: dict[str, FaultBook] = dict.fromkeys(faults.channels, faults)
        """Fault books the control API may script, by channel key; a Sandbox adds the
        other peers' so that one endpoint can script every channel."""
        self._port = port
        self._webhook_timeout = webhook_timeout
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    # Lifecycle -----------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._started:
            raise RuntimeError("the peer has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:41234``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def refused(self) -> bool:
        return self._started and self._runner is None

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("the peer is already started")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._webhook_timeout)
        )
        try:
            await self._listen()
        except BaseException:
            await self._session.close()
            raise
        self._started = True

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._unlisten()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def refuse(self) -> None:
        """Stop listening and drop every open connection, as if the provider went away."""
        await self._unlisten()

    async def restore(self) -> None:
        """Listen again, on the same port."""
        if self._runner is None and self._started:
            await self._listen()

    async def _listen(self) -> None:
        sock = listen_socket(self.host, self._port)
        self._port = sock.getsockname()[1]
        # handler_cancellation: a stalled handler must end when its client gives up.
        runner = web.AppRunner(
            self._make_app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner

    async def _unlisten(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        # A provider that goes away takes its connections with it. Aborting also cancels
        # stalled and long-polling handlers, which cleanup would otherwise wait for.
        for handler in runner.server.connections if runner.server else ():
            if handler.transport is not None:
                handler.transport.abort()
        await runner.cleanup()

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024**2)
        app.add_routes(
            [
                web.get("/_sandbox/requests", self._control_requests),
                web.get("/_sandbox/sent", self._control_sent),
                web.get("/_sandbox/outbound", self._control_outbound),
                web.get("/_sandbox/faults", self._control_faults),
                web.post("/_sandbox/faults", self._control_add_fault),
                web.delete("/_sandbox/faults", self._control_clear_faults),
                web.post("/_sandbox/inbound", self._control_inbound),
            ]
        )
        app.add_routes(self._routes())
        return app

    # Hooks for subclasses -------------------------------------------------------

    def _routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def _sent_json(self) -> list[dict[str, object]]:
        raise NotImplementedError

    async def _inbound_json(self, payload: Mapping[str, object]) -> dict[str, object]:
        raise NotImplementedError

    # Request handling helpers ---------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sandbox/"):
            return await handler(request)
        request[STATE] = RequestState()
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._log(request, exc.status)
            raise
        except Exception:
            self._log(request, 500)
            raise
        self._log(request, response.status)
        return response

    @staticmethod
    def tag(request: web.Request, channel: str, params: Mapping[str, str]) -> None:
        """Say which channel and parameters the request log should show for it."""
        state = request[STATE]
        state.channel, state.params = channel, params

    def _log(self, request: web.Request, answer: int | str) -> None:
        state = request[STATE]
        if state.logged:
            return
        state.logged = True
        self.requests.append(
            RequestRecord(time.time(), state.channel, request.method, request.path,
                          state.params, answer)
        )  # fmt: skip

    async def stall(self, request: web.Request) -> NoReturn:
        """Never answer: the handler ends when the client hangs up or the peer stops
        (either cancels it: the runner has handler_cancellation on)."""
        self._log(request, "stall")
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")  # pragma: no cover

    async def drop(self, request: web.Request) -> NoReturn:
        """Close the connection without a byte of answer."""
        self._log(request, "drop")
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        # RST rather than FIN: what a crashing provider or a middlebox sends.
        arm_reset(transport.get_extra_info("socket"))
        transport.abort()
        # The connection loss cancels this handler (handler_cancellation).
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")  # pragma: no cover

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background job that close() cancels."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def post_outbound(
        self,
        url: str,
        *,
        form: Mapping[str, str] | None = None,
        json_body: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
    ) -> int | None:
        """Deliver one webhook; failures are recorded and logged, never raised. ``raw``
        sends these exact bytes (a signature may cover them)."""
        if self._session is None:
            raise RuntimeError("the peer is not running")
        payload: Mapping[str, object] = form if form is not None else (json_body or {})
        if raw is not None:
            payload = {"raw": raw.decode("utf-8", "replace")}
        try:
            async with self._session.post(
                url, data=raw if raw is not None else form, json=json_body, headers=headers,
                allow_redirects=False,
            ) as response:
                await response.read()
                status: int | None = response.status
                error = "" if response.status < 400 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"
        self.outbound.append(OutboundRecord(time.time(), url, payload, status, error))
        if error:
            log.warning("sandbox webhook to %s failed: %s", url, error)
        return status

    # Control API ----------------------------------------------------------------

    async def _control_requests(self, request: web.Request) -> web.Response:
        return web.json_response([r.to_json() for r in self.requests])

    async def _control_sent(self, request: web.Request) -> web.Response:
        return web.json_response(self._sent_json())

    async def _control_outbound(self, request: web.Request) -> web.Response:
        return web.json_response([r.to_json() for r in self.outbound])

    async def _control_faults(self, request: web.Request) -> web.Response:
        books = {id(b): b for b in self.control_books.values()}.values()
        return web.json_response([rule for book in books for rule in book.to_json()])

    async def _control_add_fault(self, request: web.Request) -> web.Response:
        try:
            spec = FaultSpec.from_json(await _json_object(request))
            book = self.control_books.get(spec.channel)
            if book is None:
                raise ValueError(f"unknown channel {spec.channel!r}")
            book.apply(spec)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True}, status=201)

    async def _control_clear_faults(self, request: web.Request) -> web.Response:
        channel = request.query.get("channel")
        if channel is not None and channel not in self.control_books:
            return web.json_response({"error": f"unknown channel {channel!r}"}, status=400)
        for book in {id(b): b for b in self.control_books.values()}.values():
            if channel is None or channel in book.channels:
                book.clear(channel)
        return web.json_response({"ok": True})

    async def _control_inbound(self, request: web.Request) -> web.Response:
        try:
            result = await self._inbound_json(await _json_object(request))
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)


async def _json_object(request: web.Request) -> dict[str, object]:
    try:
        data = await request.json()
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data
