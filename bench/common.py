"""What the benchmarks share: contacts, router configs against the peers, a worker pool."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from config import Settings, settings_from_mapping
from config.sections import StoreSettings

T = TypeVar("T")
CHANNELS = ("telegram", "sms", "sms-vonage", "email")
"""``sms`` is SMS through Twilio, ``sms-vonage`` SMS through Vonage (the second provider)."""
CONCURRENCY = 64
"""The router's default ``[routing] concurrency``; the direct loops use the same."""
TEXT = "Benchmark: the primary database is down, failover in progress."
SUBJECT = "Benchmark"
UNLIMITED = {"per_second": 1e9, "per_recipient_per_second": 1e9, "burst": 1}


def address(channel: str, index: int) -> str | int:
    """A distinct, valid address per contact (French mobile numbers, chat ids, mailboxes)."""
    if channel == "telegram":
        return 700_000_000 + index
    if channel == "email":
        return f"user{index:06d}@example.com"
    return f"+336{10_000_000 + index:08d}"


def people(channel: str, count: int) -> dict[str, dict[str, object]]:
    key = "sms" if channel in ("sms", "sms-vonage", "whatsapp", "voice") else channel
    return {f"c{i:06d}": {key: address(channel, i)} for i in range(count)}


def router_config(
    peers_config: dict[str, Any],
    channel: str,
    count: int,
    store: Path,
    *,
    limits: dict[str, object] | None = None,
    concurrency: int = CONCURRENCY,
) -> dict[str, Any]:
    """A config with only ``channel`` enabled, ``count`` contacts in group ``all``."""
    base = peers_config
    routed = "sms" if channel == "sms-vonage" else channel
    config: dict[str, Any] = {
        "routing": {"order": [routed], "concurrency": concurrency},
        "store": {"path": str(store)},
        "limits": {routed: dict(limits if limits is not None else UNLIMITED)},
        "health": {"cooldown": 60, "max_cooldown": 60},
    }
    if channel == "sms-vonage":
        config["vonage"] = dict(base["vonage"])
        config["channels"] = {"sms": {"providers": ["vonage"],
                                      "vonage": dict(base["channels"]["sms"]["vonage"])}}
    elif channel in ("sms", "whatsapp", "voice"):
        config["twilio"] = dict(base["twilio"])
        own = {k: v for k, v in base["channels"][channel].items() if k != "vonage"}
        config["channels"] = {channel: own}
    else:
        config[channel] = dict(base[channel])
    contacts = people(channel, count)
    config["contacts"], config["groups"] = contacts, {"all": list(contacts)}
    return config


def from_csv(config: dict[str, Any], channel: str, count: int, folder: Path) -> dict[str, Any]:
    """The same config with its contacts in a CSV file (``[directory]``), as a company's
    export would hold them: the group ``all`` is declared empty and filled from the file."""
    field = "telegram" if channel == "telegram" else "email" if channel == "email" else "sms"
    csv = folder / f"contacts-{count}.csv"
    if not csv.exists():
        with csv.open("w", encoding="utf-8") as out:
            out.write(f"name,{field},groups\n")
            for index in range(count):
                out.write(f"c{index:07d},{address(channel, index)},all\n")
    return {**config, "contacts": {}, "groups": {"all": []}, "directory": {"files": [str(csv)]}}


def router_settings(config: dict[str, Any]) -> Settings:
    return settings_from_mapping(config)


def with_store(settings: Settings, store: Path) -> Settings:
    """The same (already validated) settings on another store file: validating
    100,000 contacts again for every run would cost more than the run."""
    return settings.model_copy(update={"store": StoreSettings(path=store)})


async def pool(
    concurrency: int, items: Iterable[T], work: Callable[[T], Awaitable[bool]]
) -> int:
    """Run ``work`` over ``items`` with a fixed pool of workers; return how many succeeded.

    The router runs a broadcast the same way (one iterator, a fixed pool), so the
    direct loops pay no more and no less scheduling than it does.
    """
    pending = iter(items)
    done = 0

    async def worker() -> None:
        nonlocal done
        for item in pending:
            if await work(item):
                done += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return done


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """min-max, to show how noisy the runs were."""
    return f"{min(values):.0f}-{max(values):.0f}" if values else "-"
