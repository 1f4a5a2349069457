"""Can every contact be reached on two independent paths? The cron check.

A run probes every enabled channel (nothing is sent to anyone), then checks
each selected contact against the channels its route would use. With
``send_test`` it also sends a short test message to the contact on *each* of
those channels, one channel after the other, through the router (so rate
limits, breakers and the store apply as to any message), and a channel counts
only if the provider accepted its test.

Two channels are independent when their failure domains (design.md section 3)
do not intersect: WhatsApp, SMS and voice all hang on Twilio, so a contact with
only a phone number is reachable but not redundant. The exit status is the run's
own: 0 every contact redundant, 1 someone on a single failure domain or a
channel down, 3 someone unreachable (2, bad config, comes from the CLI).
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from config.contacts import Contact
from router.core import Router
from router.model.errors import BadInput
from router.model.message import Message
from router.model.outcome import Outcome
from router.model.results import DeliveryResult
from router.ops.reachability_ack import await_acknowledgements
from router.rules.domains import failure_groups, independent_channels
from router.rules.routing import Route
from router.store.reachability_log import CheckRecord, ReachabilityLog, RunRecord

EXIT_REDUNDANT, EXIT_DEGRADED, EXIT_UNREACHABLE = 0, 1, 3
TEST_SUBJECT = "backchannel reachability test"


class Reach(enum.StrEnum):
    REDUNDANT = "redundant"
    """Reachable on at least two channels that share no failure domain."""
    SINGLE_DOMAIN = "single_domain"
    """Reachable, but every working channel hangs on one shared dependency."""
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class ChannelCheck:
    """One contact on one of its channels."""

    channel: str
    domains: frozenset[str]
    up: bool
    test: Outcome | None = None
    """The test message's outcome, when one was sent."""
    message_id: str | None = None
    acknowledged: bool | None = None
    """None: the test did not ask (asking needs the two-way issue's acknowledgements)."""
    providers: tuple[str, ...] = ()
    """Who carries the channel, best first."""

    @property
    def reachable(self) -> bool:
        if self.test is not None:
            return self.test.ok
        return self.up


@dataclass(frozen=True, slots=True)
class ContactReach:
    """One contact: its channels, how independent they are, and when tests last worked."""

    contact: str
    checks: tuple[ChannelCheck, ...]
    notes: tuple[str, ...] = ()
    last_success: Mapping[str, float] = field(default_factory=dict)

    @property
    def reachable(self) -> tuple[str, ...]:
        return tuple(check.channel for check in self.checks if check.reachable)

    @property
    def independent(self) -> tuple[str, ...]:
        """The most reachable channels that pairwise share no failure domain."""
        domains = {check.channel: check.domains for check in self.checks}
        return independent_channels(self.reachable, domains)

    @property
    def paths(self) -> tuple[tuple[str, ...], ...]:
        """Reachable channels grouped by shared failure domains (what fails together)."""
        domains = {check.channel: check.domains for check in self.checks}
        return failure_groups(self.reachable, domains)

    @property
    def reach(self) -> Reach:
        if not self.reachable:
            return Reach.UNREACHABLE
        return Reach.REDUNDANT if len(self.independent) >= 2 else Reach.SINGLE_DOMAIN

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for check in self.checks if check.reachable
                                   for p in check.providers))

    @property
    def survives_provider_outage(self) -> bool:
        """Reachable whichever one provider fails: provider redundancy, apart from domain
        independence (two SMS providers still share the recipient's carrier)."""
        carriers = {check.channel: check.providers for check in self.checks if check.reachable}
        return survives_provider_outage(list(carriers), carriers)

    @property
    def redundancy(self) -> str:
        if self.reach is not Reach.SINGLE_DOMAIN or not self.survives_provider_outage:
            return self.reach.value
        carrier = any("carrier" in check.domains for check in self.checks if check.reachable)
        return f"{count_words(len(self.providers))} providers, one " + (
            "carrier" if carrier else "failure domain")


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    """One enabled channel or shared dependency after the run's probes."""

    name: str
    up: bool
    blocked_by: str | None
    probe: Outcome | None
    """This run's probe of it; None when a shared dependency's probe covers it."""
    latency: float | None
    last_error: str
    probed_by: str
    """The probe that checks it: itself, or the shared dependency (twilio)."""


@dataclass(frozen=True, slots=True)
class SendTestOptions:
    """How ``--send-test`` sends."""

    skip: frozenset[str] = frozenset()
    """Channels not to test (a 3 a.m. test call is not always welcome)."""
    until: Literal["accepted", "acknowledged"] = "accepted"
    """What each test asks for: the provider's acceptance, or a person's answer."""
    ack_wait: float = 120.0
    """With ``until="acknowledged"``: how long the run waits for answers."""


@dataclass(frozen=True, slots=True)
class ReachabilityReport:
    """Everything one run found."""

    run_id: str
    started_at: float
    finished_at: float
    group: str | None
    send_test: bool
    channels: tuple[ChannelHealth, ...]
    contacts: tuple[ContactReach, ...]

    @property
    def down(self) -> tuple[str, ...]:
        return tuple(row.name for row in self.channels if not row.up)

    def count(self, reach: Reach) -> int:
        return sum(1 for contact in self.contacts if contact.reach is reach)

    @property
    def exit_status(self) -> int:
        if self.count(Reach.UNREACHABLE):
            return EXIT_UNREACHABLE
        if self.count(Reach.SINGLE_DOMAIN) or self.down:
            return EXIT_DEGRADED
        return EXIT_REDUNDANT

    def to_json(self) -> dict[str, object]:
        return {
            "run_id": self.run_id, "started_at": self.started_at,
            "finished_at": self.finished_at, "group": self.group, "send_test": self.send_test,
            "exit_status": self.exit_status,
            "summary": {"contacts": len(self.contacts),
                        "reachable": len(self.contacts) - self.count(Reach.UNREACHABLE),
                        "redundant": self.count(Reach.REDUNDANT),
                        "single_domain": self.count(Reach.SINGLE_DOMAIN),
                        "unreachable": self.count(Reach.UNREACHABLE),
                        "channels_down": list(self.down)},
            "channels": [_health_json(row) for row in self.channels],
            "contacts": [_contact_json(contact) for contact in self.contacts],
        }  # fmt: skip


def survives_provider_outage(
    channels: Sequence[str], carriers: Mapping[str, Sequence[str]]
) -> bool:
    """Whether any one provider may fail and some channel of the contact still has one."""
    everyone = {p for channel in channels for p in carriers.get(channel, ())}
    return len(everyone) > 1 and all(
        any(set(carriers.get(channel, ())) - {provider} for channel in channels)
        for provider in everyone
    )


def count_words(number: int) -> str:
    return {2: "two", 3: "three", 4: "four"}.get(number, str(number))


def check_message(channel: str) -> Message:
    """Short and plainly harmless, so that nobody acts on it."""
    if channel == "voice":
        return Message("This is a backchannel reachability test call. No action is needed.")
    return Message(f"backchannel reachability test ({channel}): no action needed.",
                   subject=TEST_SUBJECT)  # fmt: skip


def require_something_to_check(router: Router) -> None:
    """Raise BadInput for a config with no channel or no contact: an empty or truncated
    file must fail a CI gate, not pass it with "every contact has two channels"."""
    if not router.ranking():
        raise BadInput(
            "config: no channel is enabled ([telegram], [email] or [channels.whatsapp|sms|"
            "voice]): nobody can be reached; is this the right file, complete?"
        )
    if router.directory.summary().contacts == 0:
        raise BadInput(
            "config: no contact ([contacts.NAME]): nobody to check; is this the right file, "
            "complete?"
        )


async def check_reachability(
    router: Router,
    *,
    group: str | None = None,
    send_test: bool = False,
    options: SendTestOptions | None = None,
    on_test: Callable[[DeliveryResult], None] | None = None,
) -> ReachabilityReport:
    """Probe, check every selected contact, optionally test each channel; record the run."""
    require_something_to_check(router)
    options = options or SendTestOptions()
    started = time.time()
    contacts = router.group(group) if group is not None else list(router.everyone())
    probes = await router.probe()
    channels = _channel_health(router, probes)
    up = {row.name for row in channels if row.up}
    domains = {name: caps.failure_domains for name in router.ranking()
               if (caps := router.capabilities(name)) is not None}
    routes = {route.contact.name: route
              for route in router.plan(check_message("sms"), contacts)}  # fmt: skip
    tests: dict[tuple[str, str], DeliveryResult] = {}
    answered: set[tuple[str, str]] | None = None
    if send_test:
        tests = await _send_tests(router, contacts, routes, options, on_test)
        if options.until == "acknowledged":
            tested = {key for key, result in tests.items() if result.reached}
            answered = await await_acknowledgements(
                router, {r.message_id for r in tests.values()}, tested, since=started,
                wait=options.ack_wait,
            )
    log = ReachabilityLog.of(router.store)
    last = await log.last_successes() if log is not None else {}
    now = time.time()
    reaches = []
    for contact in contacts:
        checks = []
        for step in routes[contact.name].steps:
            result = tests.get((contact.name, step.channel))
            checks.append(ChannelCheck(
                step.channel, frozenset(domains.get(step.channel, ())), step.channel in up,
                test=_test_outcome(result) if result is not None else None,
                message_id=result.message_id if result is not None else None,
                acknowledged=None if answered is None or result is None
                else (contact.name, step.channel) in answered,
                providers=tuple(lane.provider for lane in router.lanes(step.channel)),
            ))
        accepted = {c.channel: now for c in checks if c.test is not None and c.test.ok}
        reaches.append(ContactReach(
            contact.name, tuple(checks), routes[contact.name].notes,
            {**{ch: at for (name, ch), at in last.items() if name == contact.name}, **accepted},
        ))
    report = ReachabilityReport(
        "rch_" + secrets.token_hex(8), started, time.time(), group, send_test,
        channels, tuple(reaches),
    )
    if log is not None:
        await log.record(_run_record(report), _check_records(report))
    return report


async def _send_tests(
    router: Router,
    contacts: Sequence[Contact],
    routes: Mapping[str, Route],
    options: SendTestOptions,
    on_test: Callable[[DeliveryResult], None] | None,
) -> dict[tuple[str, str], DeliveryResult]:
    """One broadcast per channel, channels one after the other: each person gets their
    tests spread out, and each channel's rate limit paces its own broadcast."""
    results: dict[tuple[str, str], DeliveryResult] = {}
    for channel in router.ranking():
        if channel in options.skip:
            continue
        # A contact narrowed to this one channel: the router cannot fall back elsewhere.
        targets = [
            Contact(contact.name, {channel: address}, order=(channel,))
            for contact in contacts
            if (address := contact.address(channel)) is not None
            and any(step.channel == channel for step in routes[contact.name].steps)
        ]
        if not targets:
            continue
        outcome = await router.broadcast(check_message(channel), to=targets, on_result=on_test,
                                         until=options.until)
        for result in outcome:
            results[(result.contact, channel)] = result
    return results


def _test_outcome(result: DeliveryResult) -> Outcome:
    if result.reached:
        accepted = next((a.outcome for a in result.attempts if a.outcome.ok), None)
        return accepted or Outcome.accepted()
    if result.attempts:
        return result.attempts[-1].outcome
    reason = "; ".join([skip.reason for skip in result.skipped] + list(result.notes))
    return Outcome.transient(f"not tried: {reason or 'channel unavailable'}")


def _channel_health(router: Router, probes: Mapping[str, Outcome]) -> tuple[ChannelHealth, ...]:
    rows = []
    for row in router.health_report():
        covered_by = next((dep for dep in router.health.dependencies(row.name) if dep in probes),
                          row.name)  # fmt: skip
        probed_by = row.name if row.name in probes else covered_by
        rows.append(ChannelHealth(row.name, row.up, row.blocked_by, probes.get(row.name),
                                  row.last_probe_latency, row.last_error, probed_by))  # fmt: skip
    return tuple(rows)


def _run_record(report: ReachabilityReport) -> RunRecord:
    return RunRecord(
        report.run_id, report.started_at, report.finished_at, report.group, report.send_test,
        report.exit_status, len(report.contacts), report.count(Reach.REDUNDANT),
        report.count(Reach.SINGLE_DOMAIN), report.count(Reach.UNREACHABLE), report.down,
    )


def _check_records(report: ReachabilityReport) -> list[CheckRecord]:
    return [
        CheckRecord(
            contact.contact, check.channel, check.up, check.test is not None,
            check.test.verdict.value if check.test is not None else None,
            check.test.detail if check.test is not None else None,
            check.message_id, report.finished_at,
        )
        for contact in report.contacts
        for check in contact.checks
    ]


def _health_json(row: ChannelHealth) -> dict[str, object]:
    return {
        "name": row.name, "up": row.up, "blocked_by": row.blocked_by,
        "probe": None if row.probe is None else row.probe.verdict.value,
        "latency_ms": None if row.latency is None else round(row.latency * 1000, 1),
        "probed_by": row.probed_by, "last_error": row.last_error or None,
    }


def _contact_json(contact: ContactReach) -> dict[str, object]:
    return {
        "contact": contact.contact,
        "reach": contact.reach.value,
        "reachable": list(contact.reachable),
        "independent": list(contact.independent),
        "failure_groups": [list(group) for group in contact.paths],
        "providers": list(contact.providers),
        "survives_provider_outage": contact.survives_provider_outage,
        "redundancy": contact.redundancy,
        "channels": [
            {"channel": c.channel, "providers": list(c.providers),
             "domains": sorted(c.domains), "up": c.up,
             "reachable": c.reachable,
             "test": None if c.test is None else {"outcome": c.test.verdict.value,
                                                  "detail": c.test.detail,
                                                  "message_id": c.message_id},
             "acknowledged": c.acknowledged,
             "last_success_at": contact.last_success.get(c.channel)}
            for c in contact.checks
        ],
        "notes": list(contact.notes),
    }  # fmt: skip
