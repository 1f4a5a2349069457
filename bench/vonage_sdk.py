"""Measured before choosing: Vonage's official SDK off the event loop, against the adapter.

    python -m bench.vonage_sdk [--messages 2000] [--runs 3]

The official ``vonage`` SDK (4.x) is synchronous (requests). An asyncio router can only
use it from threads: ``asyncio.to_thread`` (the default executor, min(32, cores + 4)
threads) or an executor as wide as the router's concurrency. Against the same Vonage
peer (in its own process) and at the same concurrency, this compares:

- ``aiohttp direct``: a bare form POST loop (the row-1 baseline, ``bench/direct.py``);
- ``adapter``: ``channels/vonage/sms.py`` as the router builds it (aiohttp);
- ``SDK, default executor`` and ``SDK, 64 threads``: ``vonage_sms.Sms.send`` with
  ``SmsMessage`` models, each call in a thread.

The SDK only speaks https to a host name; here its requests session is pointed at the
peer's plain-http port (the one change, the same path and form). Beyond speed, the SDK
resends a POST whose connection dropped (up to its pool size), which could send an SMS
twice, and reports a status code only inside its error text: the adapter keeps the
SDK's documented fields and codes and none of that.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import CONCURRENCY, TEXT, address, median, pool, router_config
from bench.direct import DirectVonageSms
from bench.peerproc import Peers, cpu_seconds, peer_process


async def _timed(send: Callable[[], Awaitable[int]], messages: int) -> tuple[float, float]:
    """Messages per second and CPU microseconds per message."""
    cpu, started = cpu_seconds(), time.perf_counter()
    done = await send()
    seconds = time.perf_counter() - started
    if done != messages:
        raise RuntimeError(f"only {done} of {messages} sent")
    return messages / seconds, (cpu_seconds() - cpu) / messages * 1e6


def _sdk(config: dict[str, Any], pool_size: int) -> tuple[Any, Any, str]:
    """``vonage_sms.Sms`` on an HttpClient whose session goes to the peer over http."""
    import requests
    from requests.adapters import HTTPAdapter
    from vonage_http_client import Auth, HttpClient
    from vonage_sms import Sms, SmsMessage

    vonage = config["vonage"]
    base = str(vonage["api_base"]).rstrip("/")
    host = base.removeprefix("http://")

    class PlainSession(requests.Session):
        def request(self, method: str | bytes, url: str | bytes, *args: Any,
                    **kwargs: Any) -> requests.Response:
            return super().request(method, str(url).replace("https://", "http://", 1), *args,
                                   **kwargs)

    client = HttpClient(Auth(api_key=vonage["api_key"], api_secret=vonage["api_secret"]),
                        http_client_options={"rest_host": host, "pool_connections": pool_size,
                                             "pool_maxsize": pool_size, "max_retries": 0})
    session = PlainSession()
    session.mount("http://", HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size))
    client._session = session
    sender = str(config["channels"]["sms"]["vonage"]["sender"]).removeprefix("+")
    return Sms(client), SmsMessage, sender


async def compare(peers: Peers, workdir: Path, messages: int, runs: int) -> dict[str, list[Any]]:
    from config import settings_from_mapping
    from router.model.channel import Rendered
    from router.registry import build_providers

    numbers = [str(address("sms", i)) for i in range(messages)]
    settings = settings_from_mapping(
        router_config(peers.config, "sms-vonage", 1, workdir / "unused.db")
    )
    built = build_providers(settings)
    adapter = built.adapters["sms"]
    sms, model, sender = _sdk(peers.config, CONCURRENCY)
    wide = ThreadPoolExecutor(CONCURRENCY)
    loop = asyncio.get_running_loop()

    async def adapter_send(item: tuple[int, str]) -> bool:
        index, number = item
        outcome = await adapter.send(number, Rendered(TEXT), attempt_id=f"att_{index}")
        return outcome.ok

    def sdk_call(item: tuple[int, str]) -> bool:
        index, number = item
        answer = sms.send(model(to=number.removeprefix("+"), from_=sender, text=TEXT,
                                client_ref=f"att_{index}"))
        return all(part.status == "0" for part in answer.messages)

    async def sdk_default(item: tuple[int, str]) -> bool:
        return await asyncio.to_thread(sdk_call, item)

    async def sdk_wide(item: tuple[int, str]) -> bool:
        return await loop.run_in_executor(wide, sdk_call, item)

    found: dict[str, list[Any]] = {}
    try:
        async with DirectVonageSms(peers.config, CONCURRENCY) as direct:
            sides: dict[str, Callable[[], Awaitable[int]]] = {
                "aiohttp direct": lambda: direct.run(numbers, TEXT, CONCURRENCY),
                "adapter": lambda: pool(CONCURRENCY, enumerate(numbers), adapter_send),
                "SDK, default executor": lambda: pool(CONCURRENCY, enumerate(numbers),
                                                      sdk_default),
                "SDK, 64 threads": lambda: pool(CONCURRENCY, enumerate(numbers), sdk_wide),
            }
            for side in sides.values():  # warm-up: connections, imports, thread pools
                await side()
            for run in range(runs):
                order = list(sides) if run % 2 == 0 else list(reversed(sides))
                for name in order:
                    found.setdefault(name, []).append(await _timed(sides[name], messages))
    finally:
        wide.shutdown()
        await built.aclose()
    return found


def report(found: dict[str, list[Any]], messages: int) -> str:
    lines = [f"{'Vonage SMS, ' + str(messages) + ' messages':<28}{'msgs/s':>9}{'CPU us/msg':>12}"]
    for name, samples in found.items():
        rate = median([s[0] for s in samples])
        cpu = median([s[1] for s in samples])
        lines.append(f"{name:<28}{rate:>9.0f}{cpu:>12.0f}")
    return "\n".join(lines)


async def main(messages: int, runs: int) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-vonage-sdk-") as tmp:
        async with peer_process(Path(tmp)) as peers:
            return report(await compare(peers, Path(tmp), messages, runs), messages)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(asyncio.run(main(args.messages, args.runs)))
