"""Assembling a router: every part built once, in dependency order, from the settings
and the providers the registry opened. Nothing here is replaced later, and no part calls
back up into :class:`router.core.Router`, which holds what this returns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from config.directory import Directory
from config.settings import Settings
from router.incidents import Incidents
from router.model.channel import Channel
from router.model.clock import Clock
from router.model.redact import Redactor
from router.registry import Providers
from router.rules.health import HealthBoard
from router.rules.ratelimit import Limit, RateLimiter, SharedRateLimiter
from router.rules.routing import Routing, combined
from router.sending.delivery import Deliverer
from router.sending.dispatch import Dispatcher
from router.sending.escalation import Escalator
from router.sending.outbox import named_lease
from router.sending.ownership import Heartbeat
from router.sending.probes import HealthKeeper
from router.store import Store
from router.twoway.inbound import Inbound, ReplyHook
from router.twoway.listener import Listener
from router.twoway.polling import ReceiptPoller, UpdatePoller
from router.twoway.services import Services


@dataclass(frozen=True, slots=True)
class Parts:
    """Everything a started router is made of, each complete once built."""

    providers: Providers
    routing: Routing
    health: HealthBoard
    keeper: HealthKeeper
    limiter: RateLimiter
    deliverer: Deliverer
    escalator: Escalator
    inbound: Inbound
    dispatcher: Dispatcher
    services: Services
    listener: Listener
    incidents: Incidents



async def assemble(
settings: Settings,
providers: Providers,
*,
store: Store,
clock: Clock,
heartbeat: Heartbeat,
redact: Redactor,
directory: Directory,
reply_hooks: Iterable[ReplyHook],
) -> Parts:
    """Build every part once, in dependency order, each handed what it needs."""
    owner = heartbeat.owner
    lanes = providers.lanes
    routing = Routing(
        _ranking(settings.routing.order, lanes),
        {name: combined(own) for name, own in lanes.items()},
        await store.opt_outs(),
        lanes,
    )
    health = HealthBoard(settings.health, clock, providers.dependencies,
                         lanes=providers.split)
    keeper = HealthKeeper(health, store, providers.probes, settings.health, clock,
                          lease=named_lease(store, "probe", owner))
    await keeper.load()
    # Each provider of a channel has its own limit, under its lane's name.
    limits = {lane.key: Limit(**settings.limit_for(lane.channel, lane.provider).model_dump())
              for own in lanes.values() for lane in own}
    # Several instances share one provider account: on PostgreSQL the budget is shared.
    limiter = (SharedRateLimiter(limits, clock, store) if store.dialect == "postgres"
               else RateLimiter(limits, clock))
    deliverer = Deliverer(channels=providers.adapters, store=store, health=health,
                          limiter=limiter,
                          clock=clock, routing=settings.routing, redact=redact)
    escalator = Escalator(store=store, deliverer=deliverer, routing=routing, clock=clock,
                          settings=settings.escalation,
                          concurrency=settings.routing.concurrency)
    inbound = Inbound(store=store, book=directory.contacts, settings=settings.escalation,
                      escalator=escalator, routing=routing, clock=clock)
    inbound.hooks.extend(reply_hooks)
    dispatcher = Dispatcher(store=store, deliverer=deliverer,
                            channels=_by_provider(providers),
                            routing=routing, clock=clock,
                            concurrency=settings.routing.concurrency,
                            heartbeat=heartbeat, escalator=escalator)
    incidents = Incidents(store=store, dispatcher=dispatcher, routing=routing,
                          contacts=settings.contacts, directory=directory,
                          groups=settings.groups, settings=settings.incidents, clock=clock)
    services = Services(
        store=store, escalator=escalator, instance_id=owner,
        timers=[("incident-timers", incidents.timers.run)],
        updates=[UpdatePoller(feed, inbound.apply, store,
                              lease=named_lease(store, feed.name, owner))
                 for feed in providers.feeds
                 if settings.webhooks.telegram_updates == "polling"],
        # Without a public URL no provider can call back: statuses are asked for.
        receipts=None if settings.webhooks.public_url is not None or not providers.statuses
        else ReceiptPoller(providers.statuses, inbound, store,
                           interval=settings.escalation.receipt_poll_interval,
                           lease=named_lease(store, "receipts", owner)),
    )
    listener = Listener(store=store, inbound=inbound, services=services)
    return Parts(providers, routing, health, keeper, limiter, deliverer, escalator, inbound,
                 dispatcher, services, listener, incidents)

def _by_provider(providers: Providers) -> dict[str, Channel]:
    """Adapters by ``<channel>.<provider>`` (what an attempt records), and by channel for
    its first provider."""
    found = {f"{lane.channel}.{lane.provider}": providers.adapters[lane.key]
             for lanes in providers.lanes.values() for lane in lanes}
    return {**providers.channels, **found}


def _ranking(order: Sequence[str], channels: Mapping[str, object]) -> list[str]:
    """Enabled channels in the configured order, then any enabled but not ranked."""
    return [name for name in order if name in channels] + [
        name for name in channels if name not in order
    ]

