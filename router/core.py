"""The router: contacts and groups in, one result per contact out."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self, overload

from config.contacts import Contact
from config.settings import Settings, load_settings
from router.model.channel import Channel
from router.model.clock import Clock, SystemClock
from router.model.errors import BadInput
from router.model.message import Message
from router.model.outcome import Outcome
from router.model.redact import RedactingFilter, Redactor, install, uninstall
from router.model.results import BroadcastResult, DeliveryResult, Queued
from router.model.tasks import cancel
from router.registry import ChannelSet, build_channels, probes_for
from router.rules.health import ChannelStatus, HealthBoard
from router.rules.ratelimit import Limit, RateLimiter, SharedRateLimiter
from router.rules.routing import Route, RoutePlanner
from router.sending.delivery import Deliverer
from router.sending.dispatch import Dispatcher, ResultHook
from router.sending.escalation import Escalator
from router.sending.outbox import LEASE, Heartbeat, new_owner, owner_is_alive
from router.sending.probes import HealthKeeper
from router.store import Store, open_store
from router.twoway.inbound import Inbound, ReplyHook
from router.twoway.listener import Listening

if TYPE_CHECKING:
    from telegram import Bot

log = logging.getLogger("backchannel")
Goal = Literal["accepted", "delivered", "acknowledged"]


class Router(Listening):
    """Routes messages to contacts over ranked channels.

    ``async with Router.from_config() as router:`` opens the store and the
    channels; ``send`` and ``broadcast`` return one result per contact.
    Channels, store and clock can be injected, for tests and embedding.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        channels: Mapping[str, Channel] | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        long_running: bool = False,
    ) -> None:
        """``long_running``: a server or worker, which also finishes work that crashed
        processes left on the store, at start and then every few seconds."""
        self.settings = settings
        self.long_running = long_running
        self._recovery: asyncio.Task[None] | None = None
        # The settings' own book, not a copy: 100,000 contacts are worth one dict only.
        self.contacts: Mapping[str, Contact] = settings.contacts
        self._injected = dict(channels) if channels is not None else None
        self._built: ChannelSet | None = None
        self.store: Store = store or open_store(settings.store)
        self.clock: Clock = clock or SystemClock()
        self.health = HealthBoard(settings.health, self.clock)
        self.limiter = RateLimiter({}, self.clock)
        self._keeper: HealthKeeper | None = None
        self.redact = Redactor(settings.secrets())
        self._log_filters: list[RedactingFilter] = []
        self._dispatch: Dispatcher | None = None
        self._reply_hooks: list[ReplyHook] = []
        self._heartbeat = Heartbeat(self.store, new_owner())

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Router:
        """Load ``path``, ``$BACKCHANNEL_CONFIG`` or ``./backchannel.toml``; raise ConfigError."""
        return cls(load_settings(path))

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._dispatch is not None:
            return
        self._log_filters = install(self.redact)
        await self.store.open()
        if self._injected is None:
            self._built = build_channels(self.settings)
            dependencies, probes = self._built.dependencies, self._built.probes
        else:
            dependencies, probes = {}, probes_for(self._injected, None)
        self.health = HealthBoard(self.settings.health, self.clock, dependencies)
        limits = {
            name: Limit(**self.settings.limit_for(name).model_dump()) for name in self.channels
        }
        # Several instances share one provider account: on PostgreSQL the budget is shared.
        shared = getattr(self.store, "dialect", "sqlite") == "postgres"
        self.limiter = (SharedRateLimiter(limits, self.clock, self.store) if shared
                        else RateLimiter(limits, self.clock))
        self._keeper = HealthKeeper(
            self.health, self.store, probes, self.settings.health, self.clock,
            lease=self._lease("probe"),
        )
        await self._keeper.load()
        self._keeper.start(probing=self.settings.health.background_probes)
        deliverer = Deliverer(
            channels=self.channels, store=self.store, health=self.health, limiter=self.limiter,
            clock=self.clock, routing=self.settings.routing, redact=self.redact,
        )
        self._heartbeat.start()
        self.escalator = Escalator(
            store=self.store, deliverer=deliverer, channels=self.channels,
            planner=self.planner, clock=self.clock, settings=self.settings.escalation,
            concurrency=self.settings.routing.concurrency,
        )
        self.inbound = Inbound(
            store=self.store, contacts=self.contacts, settings=self.settings.escalation,
            escalator=self.escalator, clock=self.clock,
        )
        self.inbound.opted_out = await self.store.opt_outs()
        self.inbound.hooks.extend(self._reply_hooks)
        self._dispatch = Dispatcher(
            store=self.store, deliverer=deliverer, channels=self.channels,
            planner=self.planner, check=self.check_fits, clock=self.clock,
            concurrency=self.settings.routing.concurrency, heartbeat=self._heartbeat,
            escalator=self.escalator,
        )
        self.services = self._services()
        if self.long_running:
            self.services.start(server=True)
            self._recovery = asyncio.create_task(self._recover(), name="backchannel-recovery")

    async def _recover(self) -> None:
        while True:
            try:
                await self.resume()
            except Exception:  # one bad message must not stop recovery of the others
                log.exception("resuming interrupted work failed; will retry")
            await asyncio.sleep(LEASE)

    async def probe(self) -> dict[str, Outcome]:
        """Probe every channel and shared dependency once; record and save the results."""
        if self._keeper is None:
            raise RuntimeError("router is not started: use 'async with router:'")
        return await self._keeper.probe_once()

    def health_report(self) -> list[ChannelStatus]:
        """Every enabled channel, then each shared dependency, as this process sees it."""
        names = self.ranking()
        shared = sorted({dep for name in names for dep in self.health.dependencies(name)})
        return [self.health.status(name) for name in [*names, *shared]]

    async def aclose(self) -> None:
        if self._dispatch is not None:
            await self.services.stop()
        recovery, self._recovery = self._recovery, None
        await cancel([recovery])
        self._dispatch = None
        await self._heartbeat.stop()
        if self._keeper is not None:
            keeper, self._keeper = self._keeper, None
            await keeper.stop()
        if self._built is not None:
            built, self._built = self._built, None
            await built.aclose()
        await self.store.close()
        uninstall(self._log_filters)
        self._log_filters = []

    @property
    def channels(self) -> Mapping[str, Channel]:
        if self._injected is not None:
            return self._injected
        return self._built.channels if self._built is not None else {}

    @property
    def telegram_bot(self) -> Bot | None:
        """The Bot API client, for webhook updates and answering button presses."""
        return self._built.telegram_bot if self._built is not None else None

    def ranking(self) -> list[str]:
        """Enabled channels, best first."""
        order: list[str] = list(self.settings.routing.order)
        return [name for name in order if name in self.channels] + [
            name for name in self.channels if name not in order
        ]

    # -- contacts ------------------------------------------------------------------------

    def contact(self, name: str) -> Contact:
        try:
            return self.contacts[name]
        except KeyError:
            raise BadInput(f"to: unknown contact {name!r}") from None

    def group(self, name: str) -> list[Contact]:
        try:
            members = self.settings.groups[name]
        except KeyError:
            raise BadInput(f"group: unknown group {name!r}") from None
        return [self.contacts[member] for member in members]

    # -- sending -------------------------------------------------------------------------

    @overload
    async def send(
        self, message: Message, to: str | Contact, *, idempotency_key: str | None = None,
        expires_after: float | None = None, until: Goal = "accepted",
        queue: Literal[False] = False,
    ) -> DeliveryResult: ...

    @overload
    async def send(
        self, message: Message, to: str | Contact, *, idempotency_key: str | None = None,
        expires_after: float | None = None, until: Goal = "accepted", queue: Literal[True],
    ) -> Queued: ...

    async def send(
        self,
        message: Message,
        to: str | Contact,
        *,
        idempotency_key: str | None = None,
        expires_after: float | None = None,
        until: Goal = "accepted",
        queue: bool = False,
    ) -> DeliveryResult | Queued:
        """Send to one contact, falling back along its channels; never raises for delivery.

        ``idempotency_key``: a repeat returns the first run's result and sends nothing.
        ``expires_after``: seconds after which an unsent message is dropped as expired.
        ``until``: ``delivered`` or ``acknowledged`` keep escalating to the next channel
        when no receipt or no person answers in time (see :meth:`wait_until_done`).
        ``queue``: record the work for ``backchannel worker`` processes and return at once.
        """
        contact = to if isinstance(to, Contact) else self.contact(to)
        options = {"idempotency_key": idempotency_key, "expires_after": expires_after,
                   "until": until}
        if queue:
            return Queued(await self._dispatcher().enqueue(
                message, [contact], audience={"to": contact.name}, **options  # type: ignore[arg-type]
            ))
        result = await self._dispatcher().run(
            message, [contact], audience={"to": contact.name}, **options  # type: ignore[arg-type]
        )
        return result.results[0]

    @overload
    async def broadcast(
        self, message: Message, group: str | None = None, *,
        to: Iterable[str | Contact] | None = None, on_result: ResultHook | None = None,
        idempotency_key: str | None = None, expires_after: float | None = None,
        until: Goal = "accepted", queue: Literal[False] = False,
    ) -> BroadcastResult: ...

    @overload
    async def broadcast(
        self, message: Message, group: str | None = None, *,
        to: Iterable[str | Contact] | None = None, on_result: ResultHook | None = None,
        idempotency_key: str | None = None, expires_after: float | None = None,
        until: Goal = "accepted", queue: Literal[True],
    ) -> Queued: ...

    async def broadcast(
        self,
        message: Message,
        group: str | None = None,
        *,
        to: Iterable[str | Contact] | None = None,
        on_result: ResultHook | None = None,
        idempotency_key: str | None = None,
        expires_after: float | None = None,
        until: Goal = "accepted",
        queue: bool = False,
    ) -> BroadcastResult | Queued:
        """Send to every member of ``group`` (or every contact in ``to``), concurrently.

        ``queue``: record the work for ``backchannel worker`` processes and return at once.
        """
        if (group is None) == (to is None):
            raise BadInput("broadcast: give exactly one of group or to")
        audience: dict[str, object]
        if group is not None:
            contacts, audience = self.group(group), {"group": group}
        else:
            assert to is not None
            contacts = [c if isinstance(c, Contact) else self.contact(c) for c in to]
            audience = {"to": [c.name for c in contacts]}
            names = [c.name for c in contacts]
            if len(set(names)) != len(names):
                raise BadInput("broadcast: to names a contact twice")
        if not contacts:
            raise BadInput("broadcast: no contacts")
        if queue:
            return Queued(await self._dispatcher().enqueue(
                message, contacts, audience=audience, idempotency_key=idempotency_key,
                expires_after=expires_after, until=until,
            ))
        return await self._dispatcher().run(
            message, contacts, audience=audience, on_result=on_result,
            idempotency_key=idempotency_key, expires_after=expires_after, until=until,
        )

    async def resume(self, on_result: ResultHook | None = None) -> list[BroadcastResult]:
        """Finish every message a crashed process left pending on this store."""
        dispatcher = self._dispatcher()
        finished = []
        for message_id in await self.store.orphaned_messages(owner_is_alive=owner_is_alive):
            if await self.store.take_over(
                message_id, owner=self._heartbeat.owner, owner_is_alive=owner_is_alive
            ):
                finished.append(await dispatcher.resume(message_id, on_result))
        return finished

    async def work_on(self, message_id: str, contact: str) -> DeliveryResult | None:
        """One leased delivery of a queued message (see :mod:`router.ops.worker`)."""
        return await self._dispatcher().work_on(message_id, contact)

    @property
    def owner(self) -> str:
        """This process, as it signs its claims on messages and leases."""
        return self._heartbeat.owner

    def _started(self) -> bool:
        return self._dispatch is not None

    def _dispatcher(self) -> Dispatcher:
        if self._dispatch is None:
            raise RuntimeError("router is not started: use 'async with router:'")
        return self._dispatch

    def planner(self, message: Message) -> RoutePlanner:
        """Routes for ``message``, contact by contact."""
        capabilities = {name: channel.capabilities for name, channel in self.channels.items()}
        opted_out = self.inbound.opted_out if self._dispatch is not None else set()
        return RoutePlanner(message, self.ranking(), capabilities, opted_out)

    def plan(self, message: Message, contacts: Sequence[Contact]) -> list[Route]:
        """The routes a message would take; raises BadInput if it fits no channel of a contact."""
        routes = list(map(self.planner(message), contacts))
        self._refuse_too_long(routes)
        return routes

    def check_fits(self, message: Message, contacts: Sequence[Contact]) -> None:
        """Raise BadInput if the message fits no channel of some contact; keeps no routes,
        so that a broadcast to 100,000 people does not hold them all at once."""
        route = self.planner(message)
        self._refuse_too_long(
            [r for r in map(route, contacts) if r.too_long_everywhere]
        )

    @staticmethod
    def _refuse_too_long(routes: Sequence[Route]) -> None:
        too_long = [route.contact.name for route in routes if route.too_long_everywhere]
        if too_long:
            raise BadInput(
                f"message: text too long for every channel of {', '.join(too_long[:5])}"
                + (f" and {len(too_long) - 5} more" if len(too_long) > 5 else "")
            )
