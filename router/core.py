"""The router: contacts and groups in, one result per contact out.

:class:`Router` is a composition: it builds its parts once, in :meth:`Router.start`,
in dependency order, and holds them; each part gets the decisions it needs handed
down (the routing, the health board, the store) and nothing calls back up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Literal, Self, Unpack, overload

from config.contacts import Contact
from config.directory import Directory, DirectorySummary
from config.settings import Settings, load_settings
from router.assembly import Parts, assemble
from router.incidents import Incidents
from router.model.channel import Channel, Lane
from router.model.clock import Clock, SystemClock
from router.model.errors import BadInput
from router.model.health import ChannelStatus
from router.model.inbound import Endpoint, Reply
from router.model.message import Message
from router.model.options import SendKeywords, SendOptions
from router.model.outcome import Capabilities, Outcome
from router.model.redact import RedactingFilter, Redactor, install, uninstall
from router.model.results import BroadcastResult, DeliveryResult, Queued
from router.model.tasks import cancel
from router.registry import Providers, build_providers
from router.rules.health import HealthBoard
from router.rules.routing import Route
from router.sending.dispatch import ResultHook
from router.sending.escalation import Escalator
from router.sending.ownership import Claimed, Heartbeat, new_owner
from router.store import Store, open_store, unusable
from router.store.base import StoreFailure
from router.twoway.inbound import Inbound, ReplyHook
from router.twoway.services import Services

log = logging.getLogger("backchannel")


class Router:
    """Routes messages to contacts over ranked channels.

    ``async with Router.from_config() as router:`` opens the store and the
    channels; ``send`` and ``broadcast`` return one result per contact.
    Channels, store and clock can be injected, for tests and embedding.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        channels: Mapping[str, Channel | Sequence[Channel]] | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        long_running: bool = False,
    ) -> None:
        """``long_running``: a server or worker, which also finishes work that crashed
        processes left on the store, at start and then every few seconds."""
        self.settings = settings
        self.long_running = long_running
        # The settings' own book, not a copy: 100,000 contacts are worth one dict only.
        self.contacts: Mapping[str, Contact] = settings.contacts
        """The config's own contacts; with ``[directory] files``, :attr:`directory` has
        everyone (streamed from the files)."""
        self.directory = Directory(settings)
        self._book: DirectorySummary | None = None
        self.store: Store = store or open_store(settings.store)
        self.clock: Clock = clock or SystemClock()
        self.redact = Redactor(settings.secrets())
        self._injected = dict(channels) if channels is not None else None
        self._heartbeat = Heartbeat(self.store, new_owner(), lease=settings.store.lease)
        self._reply_hooks: list[ReplyHook] = []
        self._parts: Parts | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._log_filters: list[RedactingFilter] = []

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
        """Open the store (a store that cannot be opened is a ConfigError), then build
        and start every part."""
        if self._parts is not None:
            return
        try:
            await self.store.open()
        except Exception as exc:
            await self.store.close()
            problem = unusable(exc, self.settings.store)
            if problem is None:
                raise
            raise problem from None
        self._log_filters = install(self.redact)
        try:
            self._parts = await self._assemble()
        except BaseException:
            # A store that fails on its first reads (damaged, gone): nothing stays open.
            await self.store.close()
            uninstall(self._log_filters)
            self._log_filters = []
            raise
        self._heartbeat.start()
        self._parts.keeper.start(probing=self.settings.health.background_probes)
        if self.long_running:
            self._parts.services.start(server=True)
            self._recovery = asyncio.create_task(self._recover(), name="backchannel-recovery")

    async def _assemble(self) -> Parts:
        providers = (build_providers(self.settings) if self._injected is None
                     else Providers.of(self._injected))
        try:
            return await assemble(
                self.settings, providers, store=self.store, clock=self.clock,
                heartbeat=self._heartbeat, redact=self.redact, directory=self.directory,
                reply_hooks=self._reply_hooks,
            )
        except BaseException:
            await providers.aclose()  # their connection pools, opened in this loop
            raise

    async def _recover(self) -> None:
        while True:
            try:
                await self.resume()
            except StoreFailure as exc:  # it explains itself: no traceback each time
                log.error("resuming interrupted work failed: %s; will retry", exc)
            except Exception:  # one bad message must not stop recovery of the others
                log.exception("resuming interrupted work failed; will retry")
            await asyncio.sleep(self._heartbeat.lease)

    async def aclose(self) -> None:
        parts, self._parts = self._parts, None
        recovery, self._recovery = self._recovery, None
        await cancel([recovery])
        if parts is not None:
            await parts.services.stop()
            with contextlib.suppress(Exception):  # what a failed write costs is in doubt
                await parts.deliverer.flush()
            await self._heartbeat.stop()
            await parts.keeper.stop()
            await parts.providers.aclose()
        await self.store.close()
        uninstall(self._log_filters)
        self._log_filters = []

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise RuntimeError("router is not started: use 'async with router:'")
        return self._parts

    # -- the parts, read-only ------------------------------------------------------------

    @property
    def channels(self) -> Mapping[str, Channel]:
        return self._parts.providers.channels if self._parts is not None else {}

    @property
    def health(self) -> HealthBoard:
        return self.parts.health

    @property
    def inbound(self) -> Inbound:
        return self.parts.inbound

    @property
    def escalator(self) -> Escalator:
        return self.parts.escalator

    @property
    def services(self) -> Services:
        return self.parts.services

    @property
    def incidents(self) -> Incidents:
        """Open, update and resolve incidents (see :mod:`router.incidents`)."""
        return self.parts.incidents

    @property
    def webhooks(self) -> list[Endpoint]:
        """The enabled providers' webhook endpoints, for the server to route to."""
        return self.parts.providers.endpoints

    @property
    def owner(self) -> str:
        """This process, as it signs its claims on messages and leases."""
        return str(self._heartbeat.owner)

    # -- health --------------------------------------------------------------------------

    async def probe(self) -> dict[str, Outcome]:
        """Probe every channel and shared dependency once; record and save the results."""
        return await self.parts.keeper.probe_once()

    def health_report(self) -> list[ChannelStatus]:
        """Every enabled channel (followed by its providers' lanes when it has several),
        then each shared provider account, as this process sees it."""
        health = self.parts.health
        names = [name for channel in self.ranking()
                 for name in dict.fromkeys((channel, *health.lanes(channel)))]
        shared = sorted({dep for name in names for dep in health.dependencies(name)})
        return [health.status(name) for name in [*names, *shared]]

    def capabilities(self, channel: str) -> Capabilities | None:
        """What an enabled channel carries and depends on, whichever provider takes it."""
        return self.parts.routing.capabilities(channel)

    def lanes(self, channel: str) -> tuple[Lane, ...]:
        """The providers carrying an enabled channel, best first."""
        return self.parts.routing.lanes.get(channel, ())

    def ranking(self) -> list[str]:
        """Enabled channels, best first."""
        return list(self.parts.routing.ranking)

    # -- contacts ------------------------------------------------------------------------

    async def book(self) -> DirectorySummary:
        """Check the contact book's files, once (in a thread: a million lines take a while);
        a ConfigError lists every bad line. The config's own contacts need no checking."""
        if self._book is None:
            self._book = await asyncio.to_thread(self.directory.summary)
        return self._book

    def contact(self, name: str) -> Contact:
        """A contact by name: the config's, else the files' (after :meth:`book`)."""
        found = self.contacts.get(name)
        if found is None and self.directory.files:
            found = self.directory.find(name)
        if found is None:
            raise BadInput(f"to: unknown contact {name!r}")
        return found

    def members(self, name: str) -> Callable[[], Iterable[Contact]]:
        """A group's members, read again (streamed from the files) each time it is called."""
        if name not in self.settings.groups:
            raise BadInput(f"group: unknown group {name!r}")
        return lambda: self.directory.group(name)

    def group(self, name: str) -> list[Contact]:
        """A group's members, all at once: for a small group (a large one: :meth:`members`)."""
        return list(self.members(name)())

    def group_size(self, name: str) -> int:
        if name not in self.settings.groups:
            raise BadInput(f"group: unknown group {name!r}")
        return self.directory.group_size(name)

    def everyone(self) -> Iterable[Contact]:
        """Every contact: the config's, then the files' (streamed)."""
        return self.directory.contacts()

    def plan(self, message: Message, contacts: Sequence[Contact]) -> list[Route]:
        """The routes a message would take; raises BadInput if it fits no channel of a contact."""
        return self.parts.routing.plan(message, contacts)

    # -- sending -------------------------------------------------------------------------

    @overload
    async def send(self, message: Message, to: str | Contact, *,
                   queue: Literal[False] = False,
                   **options: Unpack[SendKeywords]) -> DeliveryResult: ...

    @overload
    async def send(self, message: Message, to: str | Contact, *, queue: Literal[True],
                   **options: Unpack[SendKeywords]) -> Queued: ...

    async def send(self, message: Message, to: str | Contact, *, queue: bool = False,
                   **options: Unpack[SendKeywords]) -> DeliveryResult | Queued:
        """Send to one contact, falling back along its channels; never raises for delivery.

        Options (:class:`~router.model.options.SendOptions`): ``idempotency_key`` (a repeat
        returns the first run's result and sends nothing), ``expires_after`` (seconds after
        which an unsent message is dropped as expired), ``until`` (``delivered`` or
        ``acknowledged`` keep escalating to the next channel when no receipt or no person
        answers in time; see :meth:`wait_until_done`). ``queue``: record the work for
        ``backchannel worker`` processes and return at once.
        """
        if not isinstance(to, Contact) and to not in self.contacts:
            await self.book()
        contact = to if isinstance(to, Contact) else self.contact(to)
        chosen = _options(options)
        dispatcher = self.parts.dispatcher
        audience = {"to": contact.name}
        if queue:
            return Queued(await dispatcher.enqueue(message, lambda: (contact,),
                                                   audience=audience, options=chosen))
        result = await dispatcher.run(message, lambda: (contact,), audience=audience,
                                      options=chosen)
        return result.results[0]

    @overload
    async def broadcast(self, message: Message, group: str | None = None, *,
                        to: Iterable[str | Contact] | None = None,
                        on_result: ResultHook | None = None, queue: Literal[False] = False,
                        **options: Unpack[SendKeywords]) -> BroadcastResult: ...

    @overload
    async def broadcast(self, message: Message, group: str | None = None, *,
                        to: Iterable[str | Contact] | None = None,
                        on_result: ResultHook | None = None, queue: Literal[True],
                        **options: Unpack[SendKeywords]) -> Queued: ...

    async def broadcast(self, message: Message, group: str | None = None, *,
                        to: Iterable[str | Contact] | None = None,
                        on_result: ResultHook | None = None, queue: bool = False,
                        **options: Unpack[SendKeywords]) -> BroadcastResult | Queued:
        """Send to every member of ``group`` (or every contact in ``to``), concurrently.

        Options as for :meth:`send`; ``on_result`` is called with each contact's result
        as it comes.
        """
        contacts, audience = await self._audience(group, to)
        chosen = _options(options)
        dispatcher = self.parts.dispatcher
        if queue:
            return Queued(await dispatcher.enqueue(message, contacts,
                                                   audience=audience, options=chosen))
        return await dispatcher.run(message, contacts, audience=audience,
                                    options=chosen, on_result=on_result)

    async def _audience(
        self, group: str | None, to: Iterable[str | Contact] | None
    ) -> tuple[Callable[[], Iterable[Contact]], dict[str, object]]:
        if (group is None) == (to is None):
            raise BadInput("broadcast: give exactly one of group or to")
        await self.book()
        if group is not None:
            if self.group_size(group) == 0:
                raise BadInput("broadcast: no contacts")
            return self.members(group), {"group": group}
        assert to is not None
        contacts = [c if isinstance(c, Contact) else self.contact(c) for c in to]
        names = [c.name for c in contacts]
        if len(set(names)) != len(names):
            raise BadInput("broadcast: to names a contact twice")
        if not contacts:
            raise BadInput("broadcast: no contacts")
        return lambda: contacts, {"to": names}

    async def resume(self, on_result: ResultHook | None = None) -> list[BroadcastResult]:
        """Finish every message a crashed process left pending on this store."""
        dispatcher, alive = self.parts.dispatcher, self._heartbeat.liveness
        finished = []
        for message_id in await self.store.orphaned_messages(owner_is_alive=alive):
            epoch = await self.store.take_over(message_id, owner=self.owner, owner_is_alive=alive)
            if epoch is not None:
                finished.append(await dispatcher.resume(message_id, epoch, on_result))
        return finished

    async def work_on(self, message_id: str, contact: str,
                      claimed: Claimed) -> DeliveryResult | None:
        """One leased delivery of a queued message (see :mod:`router.ops.worker`); raises
        LostOwnership if the lease was taken over meanwhile."""
        return await self.parts.dispatcher.work_on(message_id, contact, claimed)

    # -- what comes back -----------------------------------------------------------------

    def replies(self) -> AsyncIterator[Reply]:
        """Replies, acknowledgements and opt-outs as they arrive in this process."""
        return self.parts.listener.replies()

    def on_reply(self, hook: Callable[[Reply], None]) -> None:
        """Call ``hook`` for every reply this process receives."""
        self._reply_hooks.append(hook)
        if self._parts is not None:
            self._parts.listener.on_reply(hook)

    async def wait_until_done(
        self, message_id: str, *, on_change: Callable[[BroadcastResult], None] | None = None,
        interval: float = 0.5,
    ) -> BroadcastResult:
        """Wait until every delivery of a message has reached its goal or given up,
        escalating meanwhile unless a ``backchannel serve`` on the store already does."""
        return await self.parts.listener.wait_until_done(message_id, on_change=on_change,
                                                         interval=interval)




def _options(keywords: SendKeywords) -> SendOptions:
    try:
        return SendOptions(**keywords)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
