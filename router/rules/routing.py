"""Pure planning: which channels to try for a contact, and what a run of attempts means.

Nothing here does I/O, so the rules can be read and tested on their own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from config.contacts import Contact
from router.model.channel import Lane, Rendered
from router.model.errors import BadInput
from router.model.message import Message
from router.model.outcome import Capabilities, Outcome, Verdict
from router.model.results import Attempt, Status


@dataclass(frozen=True, slots=True)
class Step:
    """One channel to try, with the address and words it will carry, and the providers
    that carry it, best first."""

    channel: str
    address: str
    rendered: Rendered
    lanes: tuple[Lane, ...] = ()


def combined(lanes: Sequence[Lane]) -> Capabilities:
    """What a channel carries, whichever of its providers takes it: the longest text one
    of them accepts, and every domain one of them depends on (a channel is independent of
    another only if no provider of either shares a domain with the other)."""
    lengths = [lane.capabilities.max_length for lane in lanes]
    return Capabilities(
        max_length=None if None in lengths else max(n for n in lengths if n is not None),
        failure_domains=frozenset().union(*(lane.capabilities.failure_domains for lane in lanes)),
        reports_delivery=any(lane.capabilities.reports_delivery for lane in lanes),
        reports_acknowledgement=any(lane.capabilities.reports_acknowledgement for lane in lanes),
    )


def single_lanes(capabilities: Mapping[str, Capabilities]) -> dict[str, tuple[Lane, ...]]:
    """Channels each carried by one provider named after it (built elsewhere, injected)."""
    return {name: (Lane(name, name, name, caps),) for name, caps in capabilities.items()}


def _fitting(lanes: Sequence[Lane], length: int) -> tuple[Lane, ...]:
    return tuple(lane for lane in lanes
                 if lane.capabilities.max_length is None or length <= lane.capabilities.max_length)


@dataclass(frozen=True, slots=True)
class Route:
    """The channels to try for one contact, best first, and why others were left out."""

    contact: Contact
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()
    too_long_everywhere: bool = False


def plan_route(
    contact: Contact,
    message: Message,
    ranking: Sequence[str],
    capabilities: Mapping[str, Capabilities],
    opted_out: Collection[str] = (),
    rendered: Mapping[str, Rendered] | None = None,
    lanes: Mapping[str, Sequence[Lane]] | None = None,
) -> Route:
    """Rank the enabled channels this contact can be reached on.

    ``ranking`` is the deployment's order of enabled channels; a contact's own
    order replaces it (channels it leaves out are not used for that contact).
    """
    order = contact.order if contact.order is not None else tuple(ranking)
    steps: list[Step] = []
    notes: list[str] = []
    too_long = 0
    for channel in order:
        caps = capabilities.get(channel)
        if caps is None:
            notes.append(f"{channel}: not enabled in this deployment")
            continue
        address = contact.address(channel)
        if address is None:
            continue
        if channel in opted_out:
            notes.append(f"{channel}: the contact opted out (replied STOP)")
            continue
        words = rendered[channel] if rendered is not None else message.render(channel)
        if caps.max_length is not None and len(words.text) > caps.max_length:
            too_long += 1
            notes.append(
                f"{channel}: text too long ({len(words.text)} > {caps.max_length} characters)"
            )
            continue
        own = lanes[channel] if lanes is not None and channel in lanes else (
            Lane(channel, channel, channel, caps),)
        steps.append(Step(channel, address, words, _fitting(own, len(words.text))))
    if not steps and not too_long:
        notes.append("no enabled channel has an address for this contact")
    unreachable_by_length = not steps and too_long > 0
    return Route(contact, tuple(steps), tuple(notes), too_long_everywhere=unreachable_by_length)


class RoutePlanner:
    """Routes for one message, with what every contact shares worked out once: the
    ranking, each channel's words, whether they fit it, and who opted out of what."""

    __slots__ = ("_capabilities", "_fits", "_lanes", "_message", "_opted_out", "_ranking",
                 "_rendered")

    def __init__(
        self,
        message: Message,
        ranking: Sequence[str],
        capabilities: Mapping[str, Capabilities],
        opted_out: Mapping[str, Collection[str]],
        lanes: Mapping[str, Sequence[Lane]] | None = None,
    ) -> None:
        self._message = message
        self._lanes = lanes
        self._ranking = tuple(ranking)
        self._capabilities = capabilities
        self._rendered = {channel: message.render(channel) for channel in capabilities}
        self._fits = {
            channel: caps.max_length is None or len(self._rendered[channel].text) <= caps.max_length
            for channel, caps in capabilities.items()
        }
        self._opted_out = opted_out

    def __call__(self, contact: Contact) -> Route:
        return plan_route(
            contact, self._message, self._ranking, self._capabilities,
            opted_out=self._opted_out.get(contact.name, ()), rendered=self._rendered,
            lanes=self._lanes,
        )

    @property
    def fits_everywhere(self) -> bool:
        """The words fit every enabled channel: then no contact can be too long for all of
        theirs, and nobody needs checking."""
        return all(self._fits.values())

    def too_long_everywhere(self, contact: Contact) -> bool:
        """What :func:`plan_route` would say, without building the route: the check before
        anything is recorded, so that each contact is planned once, when its turn comes."""
        order = contact.order if contact.order is not None else self._ranking
        opted_out = self._opted_out.get(contact.name, ())
        too_long = False
        for channel in order:
            if channel not in self._fits or channel in opted_out:
                continue
            if contact.address(channel) is None:
                continue
            if self._fits[channel]:
                return False
            too_long = True
        return too_long


class Routing:
    """The deployment's routing decisions, handed down to whoever sends: the ranking,
    what each channel carries, and who opted out of what (kept current by replies)."""

    def __init__(
        self,
        ranking: Sequence[str],
        capabilities: Mapping[str, Capabilities],
        opted_out: Collection[tuple[str, str]] = (),
        lanes: Mapping[str, Sequence[Lane]] | None = None,
    ) -> None:
        """``lanes``: each channel's providers, best first (default: one per channel)."""
        self.ranking: tuple[str, ...] = tuple(ranking)
        self._capabilities = dict(capabilities)
        self.lanes: dict[str, tuple[Lane, ...]] = (
            {name: tuple(own) for name, own in lanes.items()} if lanes is not None
            else single_lanes(capabilities)
        )
        self._opted_out: dict[str, set[str]] = {}
        for contact, channel in opted_out:
            self.opt_out(contact, channel)

    def opt_out(self, contact: str, channel: str) -> None:
        self._opted_out.setdefault(contact, set()).add(channel)

    def opted_out(self, contact: str) -> frozenset[str]:
        return frozenset(self._opted_out.get(contact, ()))

    def capabilities(self, channel: str) -> Capabilities | None:
        return self._capabilities.get(channel)

    def planner(self, message: Message) -> RoutePlanner:
        """Routes for ``message``, contact by contact."""
        return RoutePlanner(message, self.ranking, self._capabilities, self._opted_out,
                            self.lanes)

    def refuse_unfit(self, planner: RoutePlanner, contacts: Iterable[Contact]) -> None:
        """BadInput if the message fits no channel of some contact; keeps no routes, so that
        a broadcast to 100,000 people does not hold them all at once; and reads nobody when
        the words fit every channel (the usual case: a million need not be read twice)."""
        if planner.fits_everywhere:
            return
        too_long = [c.name for c in contacts if planner.too_long_everywhere(c)]
        if too_long:
            raise unfit(too_long)

    def plan(self, message: Message, contacts: Sequence[Contact]) -> list[Route]:
        """The routes a message would take (a dry run); BadInput if it fits no channel of
        some contact."""
        planner = self.planner(message)
        self.refuse_unfit(planner, contacts)
        return [planner(contact) for contact in contacts]


def unfit(names: Sequence[str]) -> BadInput:
    """The error for a message too long for every channel of these contacts."""
    return BadInput(f"message: text too long for every channel of {', '.join(names[:5])}"
                    + (f" and {len(names) - 5} more" if len(names) > 5 else ""))


def worth_retrying(outcome: Outcome, max_retry_after: float) -> bool:
    """Transient failures certainly did not send: try the same channel again, unless
    the provider asks for a longer pause than we are willing to wait."""
    if outcome.verdict is not Verdict.TRANSIENT:
        return False
    return outcome.retry_after is None or outcome.retry_after <= max_retry_after


def final_status(
    attempts: Sequence[Attempt], *, expired: bool = False
) -> tuple[Status, str | None]:
    """Accepted on some channel; else unknown if any attempt may have been sent; else
    expired if time ran out; else failed."""
    for attempt in attempts:
        if attempt.outcome.verdict is Verdict.ACCEPTED:
            return Status.ACCEPTED, attempt.channel
    if any(attempt.outcome.verdict is Verdict.UNKNOWN for attempt in attempts):
        return Status.UNKNOWN, None
    return (Status.EXPIRED if expired else Status.FAILED), None
