"""What the providers spoken to with aiohttp share: one error tree for requests that got
no usable HTTP answer, telling "certainly not sent" from "maybe sent" (httpx's
distinction), and the reading of ``Retry-After``. Each provider's ``classify`` turns
these into outcomes; this module only says which is which.
"""

from __future__ import annotations

import math

import aiohttp


class TransportError(Exception):
    """A request that got no usable HTTP answer; subclasses say whether it was acted on."""


class NotSent(TransportError):
    """The request certainly did not reach the provider (refused, connect timeout, DNS, TLS)."""


class MaybeSent(TransportError):
    """The request was written but no answer came back: the provider may have acted on it."""


class RateLimited(TransportError):
    """HTTP 429, with the wait the provider asked for (SDKs' exceptions drop the header)."""

    def __init__(self, provider: str, retry_after: float | None) -> None:
        super().__init__(f"rate limited by {provider} (HTTP 429)")
        self.retry_after = retry_after


def transport_error(exc: aiohttp.ClientError | OSError, provider: str) -> TransportError:
    """What an aiohttp failure says about a request to ``provider``: before the request
    left (connecting) it was certainly not sent; after, it may have been."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return NotSent(f"connect timeout ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return NotSent(f"cannot connect to {provider}: {exc.os_error or type(exc).__name__}")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return MaybeSent(f"no answer from {provider} before the read timeout")
    return MaybeSent(f"connection lost after the request: {type(exc).__name__}")


def retry_after(header: str | None) -> float | None:
    """``Retry-After`` in seconds, if it is a usable number of them."""
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
