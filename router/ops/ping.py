"""Reporting to a dead man's switch (healthchecks-style), so a silent cron is noticed.

The bare URL means success; the URL with ``/fail`` appended means the run found a
problem. A switch that hears nothing for too long raises the alarm itself, which
is what catches a cron job that stopped running at all. The URL usually embeds a
secret token, so errors show only its scheme and host.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

from router.model.errors import BadInput

TIMEOUT = 10.0
TRIES = 2
PAUSE = 0.5


def check_ping_url(url: str) -> str:
    """The URL if it is http(s) with a host; BadInput otherwise (without echoing it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput("--ping-url: must be an http:// or https:// URL with a host")
    return url


def fail_url(url: str) -> str:
    """``https://hc.example/ping/UUID`` -> ``https://hc.example/ping/UUID/fail``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))


def masked(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


async def ping(url: str, *, ok: bool, body: str = "") -> str | None:
    """Tell the switch how the run went; return None, or why it could not be told.

    ``body`` (a one-line summary, no addresses) shows in the switch's event log.
    """
    import aiohttp  # only when pinging: it costs a tenth of a second at every CLI start

    target = url if ok else fail_url(url)
    problem = "no attempt"
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    for attempt in range(TRIES):
        if attempt:
            await asyncio.sleep(PAUSE)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                target, data=body.encode(), headers={"Content-Type": "text/plain; charset=utf-8"}
            ) as response:
                if response.status < 300:
                    return None
                problem = f"HTTP {response.status}"
                if response.status < 500 and response.status != 429:
                    break  # the switch refused this URL: asking again will not help
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}"
    return f"ping to {masked(target)} failed: {problem}"
