"""One Twilio account, shared by the WhatsApp, SMS and voice adapters.

The twilio SDK has no base-URL setting, reads no response headers into its
exceptions and cannot tell "not sent" from "maybe sent". :class:`_RelayHttpClient`
is the one seam where all three are fixed: it sends the SDK's requests to
``api_base``, reads ``Retry-After``, and raises typed transport errors that
:func:`classify` turns into outcomes, once for all three channels.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from channels._http import (
    MaybeSent,
    NotSent,
    RateLimited,
    TransportError,
    retry_after,
    transport_error,
)
from config.sections import TwilioSettings
from router.model.channel import text_with_ack
from router.model.outcome import Outcome, Scope
from router.model.redact import mask_personal

__all__ = ["TwilioAccount", "classify", "text_with_ack"]

# Twilio error codes that say "this recipient, not this channel": other contacts still work.
RECIPIENT_CODES: dict[int, str] = {
    21211: "invalid 'To' number",
    21214: "'To' number cannot be reached",
    21408: "no permission to send to this region",
    21610: "recipient has opted out (replied STOP)",
    21612: "'To' number cannot be reached from this sender",
    21614: "'To' number is not a mobile number",
    21617: "message body too long",
    63016: "outside the WhatsApp 24-hour window: send an approved template",
    63024: "invalid WhatsApp recipient",
}
# Codes that say the account or sender is wrong: every message on the channel will fail.
CHANNEL_CODES: dict[int, str] = {
    20003: "Twilio rejected the credentials",
    20404: "Twilio account or resource not found",
    21606: "the 'From' number is not a valid sender for this account",
    21659: "the 'From' number is not a Twilio number",
    63007: "the WhatsApp sender is not registered with this account",
}
# HTTP statuses that say "a gateway gave up waiting on Twilio", which may have acted.
MAYBE_SENT_STATUSES: dict[int, str] = {
    504: "gateway timeout: Twilio may have acted on the request",
}


ATTEMPT_PARAMETER = "attempt"
"""The query parameter of our status callback URL that names the attempt."""
CLOCK_SKEW = 5.0
"""Seconds Twilio's clock may be behind ours when matching messages to an attempt."""


class _RelayHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's async client, pointed at ``api_base`` and with typed transport errors.

    The SDK's own retries stay off: retries are the router's decision.
    """

    def __init__(self, settings: TwilioSettings, *, pool_size: int) -> None:
        super().__init__(pool_connections=False)
        base = urlsplit(str(settings.api_base))
        self._scheme, self._netloc = base.scheme, base.netloc
        self._prefix = base.path.rstrip("/")
        credentials = f"{settings.account_sid}:{settings.auth_token.get_secret_value()}"
        # Precomputed once: aiohttp's BasicAuth is deprecated and costs a little per request.
        self._authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool_size, limit_per_host=pool_size),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=settings.connect_timeout, sock_read=settings.timeout
            ),
            raise_for_status=False,
        )

    def _relay(self, url: str) -> str:
        parts = urlsplit(url)
        return urlunsplit(
            (self._scheme, self._netloc, self._prefix + parts.path, parts.query, parts.fragment)
        )

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's signature; ours is per session
        allow_redirects: bool = False,
    ) -> Response:
        request_headers = dict(headers or {})
        request_headers["Authorization"] = self._authorization
        try:
            async with self._session.request(
                method.upper(),
                self._relay(url),
                params=_flatten(params),
                data=_flatten(data),
                headers=request_headers,
                allow_redirects=allow_redirects,
            ) as response:
                body = await response.text()
        except (aiohttp.ClientError, OSError) as exc:
            raise transport_error(exc, "Twilio") from None
        if response.status == 429:
            raise RateLimited("Twilio", retry_after(response.headers.get("Retry-After")))
        if 200 <= response.status < 300 and not _is_json_object(body):
            # Something answered "OK" without Twilio's JSON (a gateway, a captive portal):
            # the SDK would raise a bare JSONDecodeError, and the request may have gone on.
            raise MaybeSent(f"HTTP {response.status} without Twilio's JSON body")
        return Response(response.status, body, response.headers)

    async def close(self) -> None:
        await self._session.close()


def _flatten(values: dict[str, object] | None) -> list[tuple[str, str]] | None:
    """The SDK passes lists for repeated parameters (StatusCallbackEvent); aiohttp wants pairs."""
    if values is None:
        return None
    pairs: list[tuple[str, str]] = []
    for key, value in values.items():
        if isinstance(value, list | tuple):
            pairs.extend((key, str(item)) for item in value)
        else:
            pairs.append((key, str(value)))
    return pairs


def _is_json_object(body: str) -> bool:
    # The SDK parses it again right after: a shape check is enough here (anything
    # malformed inside the braces still fails there, and counts as maybe sent).
    text = body.strip()
    return text.startswith("{") and text.endswith("}")


class TwilioAccount:
    """The Twilio SDK client for one account; opened once, shared by three channels."""

    def __init__(
        self,
        settings: TwilioSettings,
        *,
        pool_size: int = 64,
        status_callback: str | None = None,
        gather_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.status_callback = status_callback
        """Where Twilio posts message and call statuses (``[webhooks] public_url``)."""
        self.gather_url = gather_url
        """Where Twilio posts the key a callee pressed."""
        self._http = _RelayHttpClient(settings, pool_size=pool_size)
        self.client = Client(
            settings.account_sid,
            settings.auth_token.get_secret_value(),
            http_client=self._http,
        )

    async def call(self, request: Callable[[], Awaitable[Any]]) -> tuple[Any, Outcome | None]:
        """Run one SDK call; return its result, or None and the classified failure."""
        started = time.monotonic()
        try:
            result = await request()
        except (TransportError, TwilioRestException, TwilioServiceException) as exc:
            return None, classify(exc).timed(time.monotonic() - started)
        return result, None

    def callback(self, attempt_id: str) -> dict[str, str]:
        """The StatusCallback parameter, when a public URL is configured. It names the
        attempt, so that a status for a request whose answer was lost (a crash, a read
        timeout) still says which attempt it belongs to."""
        if not self.status_callback:
            return {}
        return {"status_callback": f"{self.status_callback}?{ATTEMPT_PARAMETER}={attempt_id}"}

    async def check(self) -> Outcome:
        """Fetch the account resource: proves reachability and credentials, sends nothing."""
        started = time.monotonic()
        account, failure = await self.call(
            lambda: self.client.api.v2010.accounts(self.settings.account_sid).fetch_async()
        )
        if failure is not None:
            return failure
        status = getattr(account, "status", "active")
        elapsed = time.monotonic() - started
        if status != "active":
            return Outcome.permanent(f"Twilio account is {status}", Scope.CHANNEL).timed(elapsed)
        return Outcome.accepted(detail="account active").timed(elapsed)

    async def status_of(self, sid: str) -> str | None:
        """The current status of one of our messages or calls; None if Twilio cannot say."""
        resource = self.client.calls(sid) if sid.startswith("CA") else self.client.messages(sid)
        record, failure = await self.call(lambda: resource.fetch_async())
        return None if failure is not None else str(record.status)

    async def sent_since(
        self, *, to: str, from_: str, since: float, body: str
    ) -> list[str] | None:
        """After a crash: the messages this sender created to ``to`` with this ``body``
        since an attempt began, oldest first; None when Twilio cannot say. (A call cannot
        be matched this way: Twilio does not return what it spoke.)

        Not filtering on DateSent: a message still queued has none yet. The router, not
        this function, decides which of them (if any) the lost request created.
        """
        resource = self.client.messages
        records, failure = await self.call(
            lambda: resource.list_async(to=to, from_=from_, page_size=50, limit=50)
        )
        if failure is not None:
            return None
        found = []
        for record in records:
            created = getattr(record, "date_created", None)
            # Twilio's clock and ours may differ a little; a minute would take in messages
            # sent for something else just before.
            if created is not None and created.timestamp() < since - CLOCK_SKEW:
                continue
            if getattr(record, "body", None) != body:
                continue
            found.append((created.timestamp() if created is not None else since, record.sid))
        return [sid for _, sid in sorted(found)]

    async def aclose(self) -> None:
        await self._http.close()


def classify(exc: TransportError | TwilioRestException | TwilioServiceException) -> Outcome:
    """The one place where a Twilio failure becomes an outcome (design.md section 4).

    Twilio answers errors in its legacy JSON (TwilioRestException) or, on newer
    services, as RFC 9457 problem details (TwilioServiceException, not a subclass).
    """
    if isinstance(exc, RateLimited):
        return Outcome.transient(str(exc), retry_after=exc.retry_after)
    if isinstance(exc, NotSent):
        return Outcome.transient(str(exc))
    if isinstance(exc, TransportError):  # MaybeSent, or anything else without an answer
        return Outcome.unknown(str(exc))
    code = exc.code
    label = f"Twilio {exc.status}" + (f" error {code}" if code else "")
    if exc.status in MAYBE_SENT_STATUSES:
        return Outcome.unknown(f"{label}: {MAYBE_SENT_STATUSES[exc.status]}")
    if exc.status >= 500:
        return Outcome.transient(f"{label}: server error")
    if code in CHANNEL_CODES or exc.status in (401, 403):
        reason = CHANNEL_CODES.get(code or 0, "request refused")
        return Outcome.permanent(f"{label}: {reason}", Scope.CHANNEL)
    text = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
    reason = RECIPIENT_CODES.get(code or 0, _short(str(text or "")))
    return Outcome.permanent(f"{label}: {reason}", Scope.RECIPIENT)


def _short(text: str) -> str:
    # The SDK prefixes "Unable to create record: "; Twilio's own text can quote the number.
    reason = text.rpartition("record: ")[2].strip()
    return mask_personal(reason)[:160] or "rejected"
