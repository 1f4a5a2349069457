"""One Vonage account, shared by the SMS and voice adapters.

Vonage's official SDK is synchronous (requests), retries a POST whose connection
dropped (a second SMS on the same phone) and folds its error codes into message
text; ``bench/vonage_sdk.py`` measured it off the event loop against this module.
Here the documented HTTP APIs are called with the aiohttp already shipped, and
:func:`classify` is the one place where whatever happened becomes an outcome: a
transport failure (not sent, maybe sent), an HTTP answer, or an SMS API status code.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from channels._http import (
    MaybeSent,
    NotSent,
    RateLimited,
    TransportError,
    retry_after,
    transport_error,
)
from config.sections import VonageSettings
from router.model.outcome import Outcome, Scope, Verdict
from router.model.redact import mask_personal

# SMS API status codes (``messages[].status``), as Vonage documents them.
TRANSIENT_CODES: Mapping[int, str] = {
    1: "throttled: sending faster than the account allows",
    5: "internal error at Vonage",
    10: "too many simultaneous connections for the account",
}
PAUSE_CODES = frozenset({1, 10})
"""Transient codes that ask for a pause before the next request."""
THROTTLE_PAUSE = 1.0
RECIPIENT_CODES: Mapping[int, str] = {
    3: "invalid number or parameter",
    6: "invalid message: unrecognised number prefix",
    7: "the number is barred",
    12: "message too long",
    22: "invalid network code for this number",
    29: "non-whitelisted destination (the account is in demo mode)",
    33: "the number is deactivated",
}
# HTTP statuses that say "a gateway gave up waiting on Vonage", which may have acted.
MAYBE_SENT_STATUSES: Mapping[int, str] = {
    504: "gateway timeout: Vonage may have acted on the request",
}
CHANNEL_CODES: Mapping[int, str] = {
    2: "missing parameter",
    4: "Vonage rejected the credentials",
    8: "the Vonage account is barred",
    9: "no credit left on the Vonage account",
    11: "the account is not enabled for the SMS API",
    14: "invalid request signature",
    15: "the sender is not allowed for this account or country",
    23: "invalid callback URL",
    32: "a signed request may not carry the API secret",
}


class Refused(Exception):
    """A complete HTTP answer that is not a success (4xx, 5xx)."""

    def __init__(self, status: int, body: object) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class SmsRefused(Exception):
    """The SMS API's answer: some parts not taken (``accepted`` of ``parts`` were)."""

    def __init__(self, code: int, text: str, *, accepted: int, parts: int) -> None:
        super().__init__(f"Vonage SMS status {code}")
        self.code = code
        self.text = text
        self.accepted = accepted
        self.parts = parts


class VonageAccount:
    """The HTTP session and credentials for one Vonage account; opened once, shared by
    the SMS and voice adapters. Build it inside a running loop (aiohttp needs one)."""

    def __init__(
        self,
        settings: VonageSettings,
        *,
        pool_size: int = 64,
        sms_callback: str | None = None,
        voice_events: str | None = None,
    ) -> None:
        self.settings = settings
        self.sms_callback = sms_callback
        """Where Vonage posts SMS delivery receipts (``[webhooks] public_url``)."""
        self.voice_events = voice_events
        """Where Vonage posts call events and the key a callee pressed."""
        self.api_base = str(settings.api_base).rstrip("/")
        self.voice_api_base = str(settings.voice_api_base).rstrip("/")
        self._signing_key: Any = None
        self._secrets = [s.get_secret_value() for s in (settings.api_secret,
                                                          settings.signature_secret) if s]
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool_size, limit_per_host=pool_size),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=settings.connect_timeout, sock_read=settings.timeout
            ),
            raise_for_status=False,
        )

    # -- the one seam ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        form: Mapping[str, str] | bytes | None = None,
        params: Mapping[str, str] | None = None,
        body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One request; the parsed JSON of a 2xx answer, or a typed exception."""
        try:
            async with self._session.request(
                method, url, data=form, params=params, json=body, headers=headers,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise transport_error(exc, "Vonage") from None
        if response.status == 429:
            raise RateLimited("Vonage", retry_after(response.headers.get("Retry-After")))
        parsed = _json(raw)
        if 200 <= response.status < 300:
            if not isinstance(parsed, dict):
                # "OK" from something that is not Vonage (a gateway, a captive portal):
                # the request may have gone on.
                raise MaybeSent(f"HTTP {response.status} without Vonage's JSON body")
            return parsed
        raise Refused(response.status, parsed)

    async def call(self, method: str, url: str, **kwargs: Any) -> tuple[Any, Outcome | None]:
        """:meth:`request`, with any failure classified (and timed)."""
        started = time.monotonic()
        try:
            return await self.request(method, url, **kwargs), None
        except (TransportError, Refused) as exc:
            return None, self.scrub(classify(exc).timed(time.monotonic() - started))

    def scrub(self, outcome: Outcome) -> Outcome:
        """An answer may quote the request (a gateway, a proxy): never our secrets."""
        detail = outcome.detail
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        if detail == outcome.detail:
            return outcome
        return Outcome(outcome.verdict, outcome.scope, detail, outcome.provider_id,
                       outcome.retry_after, outcome.elapsed, outcome.warning)

    # -- credentials -----------------------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        """The SMS and account APIs take the key and secret as parameters."""
        return {"api_key": self.settings.api_key,
                "api_secret": self.settings.api_secret.get_secret_value()}

    def application_jwt(self) -> str:
        """A bearer token for the Voice API: RS256 with the application's private key."""
        import jwt  # PyJWT, which twilio already depends on

        settings = self.settings
        if settings.application_id is None or settings.private_key is None:
            raise RuntimeError("no Vonage application configured for voice")
        if self._signing_key is None:
            self._signing_key = _load_key(settings.private_key)
        now = int(time.time())
        claims = {"application_id": settings.application_id, "iat": now,
                  "exp": now + 900, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self._signing_key, algorithm="RS256")

    # -- the probe -------------------------------------------------------------------------

    async def check(self) -> Outcome:
        """Read the account balance: proves reachability and credentials, sends nothing.
        Zero is down (every message would fail with 'no credit'); a low balance warns."""
        started = time.monotonic()
        answer, failure = await self.call(
            "GET", f"{self.api_base}/account/get-balance", params=self.credentials()
        )
        if failure is not None:
            return failure
        elapsed = time.monotonic() - started
        value = answer.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            return Outcome.unknown("Vonage answered the balance without a value").timed(elapsed)
        if value <= 0:
            return Outcome.permanent(f"Vonage balance is {value:.2f}: no credit left",
                                     Scope.CHANNEL).timed(elapsed)
        detail = f"balance {value:.2f}"
        if value < self.settings.low_balance:
            return Outcome(Verdict.ACCEPTED, Scope.CHANNEL, detail, elapsed=elapsed,
                           warning=f"low balance: {value:.2f} (below"
                                   f" {self.settings.low_balance:.2f})")
        return Outcome.accepted(detail=detail).timed(elapsed)

    async def aclose(self) -> None:
        await self._session.close()


def classify(exc: TransportError | Refused | SmsRefused) -> Outcome:
    """The one place where a Vonage failure becomes an outcome (design.md section 4)."""
    if isinstance(exc, RateLimited):
        return Outcome.transient(str(exc), retry_after=exc.retry_after)
    if isinstance(exc, NotSent):
        return Outcome.transient(str(exc))
    if isinstance(exc, TransportError):  # MaybeSent, or anything else without an answer
        return Outcome.unknown(str(exc))
    if isinstance(exc, SmsRefused):
        return _sms_outcome(exc)
    label = f"Vonage HTTP {exc.status}"
    title = _problem_title(exc.body)
    if exc.status in MAYBE_SENT_STATUSES:
        return Outcome.unknown(f"{label}: {MAYBE_SENT_STATUSES[exc.status]}")
    if exc.status >= 500:
        return Outcome.transient(f"{label}: server error")
    if exc.status in (401, 403):
        return Outcome.permanent(f"{label}: Vonage rejected the credentials", Scope.CHANNEL)
    if exc.status == 402:
        return Outcome.permanent(f"{label}: no credit left on the Vonage account", Scope.CHANNEL)
    if exc.status in (400, 422) and _names_the_recipient(exc.body):
        return Outcome.permanent(f"{label}: {title or 'invalid number'}", Scope.RECIPIENT)
    # Anything else is about our request or account: every message would fail alike.
    return Outcome.permanent(f"{label}: {title or 'request refused'}", Scope.CHANNEL)


def _sms_outcome(exc: SmsRefused) -> Outcome:
    label = f"Vonage SMS status {exc.code}"
    if exc.accepted:
        # Some parts were taken: part of the text may reach the phone, and any resend
        # (on this provider or another) would repeat it.
        return Outcome.unknown(f"{label}: only {exc.accepted} of {exc.parts} parts taken")
    if exc.code in TRANSIENT_CODES:
        pause = THROTTLE_PAUSE if exc.code in PAUSE_CODES else None
        return Outcome.transient(f"{label}: {TRANSIENT_CODES[exc.code]}", retry_after=pause)
    if exc.code in RECIPIENT_CODES:
        return Outcome.permanent(f"{label}: {RECIPIENT_CODES[exc.code]}", Scope.RECIPIENT)
    reason = CHANNEL_CODES.get(exc.code) or mask_personal(exc.text)[:160] or "refused"
    return Outcome.permanent(f"{label}: {reason}", Scope.CHANNEL)


def _names_the_recipient(body: object) -> bool:
    """The Voice API's problem details list the fields it refused: ``to`` is the callee."""
    if not isinstance(body, dict):
        return False
    fields = body.get("invalid_parameters")
    if not isinstance(fields, list):
        return False
    names = {str(item.get("name", "")).split(".")[0].split("[")[0]
             for item in fields if isinstance(item, dict)}
    return "to" in names


def _problem_title(body: object) -> str:
    if not isinstance(body, dict):
        return ""
    title = body.get("title") or body.get("error_title") or ""
    return mask_personal(str(title))[:120]


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        return None


def _load_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(path.read_bytes(), password=None)
