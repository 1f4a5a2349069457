"""The redundancy audit: who would be cut off by one provider's outage, and what to add.

Read from the config alone (the contacts, their routes and each enabled
channel's failure domains), so it can run in CI on a config change: nothing is
probed and nothing is sent. A contact is redundant when two of its channels
share no failure domain (design.md section 3).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from config.contacts import Contact, is_internal_email
from router.core import Router
from router.ops.reachability import (
    check_message,
    count_words,
    require_something_to_check,
    survives_provider_outage,
)
from router.rules.domains import failure_groups, independent_channels

# The contact fields to fill in (config section 7), and what goes there.
ADDRESS_FIELD = {
    "whatsapp": "phone or whatsapp (a number)",
    "sms": "phone or sms (a mobile number)",
    "voice": "phone or voice (a number)",
    "telegram": "telegram (a chat id)",
    "email": "email (an address)",
}


class Finding(enum.StrEnum):
    NO_CHANNEL = "no_channel"
    WHATSAPP_ONLY = "whatsapp_only"
    ONE_CARRIER_PATH = "one_carrier_path"
    """SMS and/or voice only: the same carrier network (and the same provider, unless a
    second one carries them)."""
    SINGLE_DOMAIN = "single_domain"
    """Several channels, all hanging on one shared dependency (a phone number alone)."""


FINDING_TEXT = {
    Finding.NO_CHANNEL: "no channel at all",
    Finding.WHATSAPP_ONLY: "WhatsApp only",
    Finding.ONE_CARRIER_PATH: "one carrier path",
    Finding.SINGLE_DOMAIN: "one failure domain",
}


@dataclass(frozen=True, slots=True)
class ContactAudit:
    """One contact's channels and what they have in common."""

    contact: str
    channels: tuple[str, ...]
    independent: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    shared: tuple[str, ...]
    """Failure domains every channel of the contact depends on."""
    finding: Finding | None
    advice: tuple[str, ...]
    providers: tuple[str, ...] = ()
    """Every provider carrying one of its channels."""
    survives_provider_outage: bool = False
    """Still reachable whichever one provider fails (provider redundancy, which is not
    domain independence: two SMS providers still share the recipient's carrier)."""

    redundancy: str = ""
    """How the contact stands, in words: ``two providers, one carrier``."""
    internal_email: bool = False
    """Its email address is on a private network's domain (``.local``, ``.internal``...):
    only the company's own relay delivers it, so it is no help when that network is down."""

    def to_json(self) -> dict[str, object]:
        return {
            "contact": self.contact, "channels": list(self.channels),
            "independent": list(self.independent),
            "failure_groups": [list(group) for group in self.groups],
            "shared_domains": list(self.shared),
            "finding": None if self.finding is None else self.finding.value,
            "providers": list(self.providers),
            "survives_provider_outage": self.survives_provider_outage,
            "redundancy": self.redundancy,
            "internal_email": self.internal_email,
            "advice": list(self.advice),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class GroupAudit:
    """A group is as reachable as its least reachable member."""

    group: str
    members: int
    weakest: tuple[str, ...]
    independent: int
    """Independent channels of the weakest member(s)."""

    def to_json(self) -> dict[str, object]:
        return {"group": self.group, "members": self.members, "weakest": list(self.weakest),
                "independent": self.independent, "redundant": self.independent >= 2}  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditReport:
    enabled: tuple[str, ...]
    contacts: tuple[ContactAudit, ...]
    groups: tuple[GroupAudit, ...]

    @property
    def findings(self) -> tuple[ContactAudit, ...]:
        return tuple(contact for contact in self.contacts if contact.finding is not None)

    @property
    def internal_email(self) -> tuple[str, ...]:
        """Contacts whose email address is on an internal domain."""
        return tuple(contact.contact for contact in self.contacts if contact.internal_email)

    @property
    def exit_status(self) -> int:
        """0 every contact redundant, 1 otherwise."""
        return 1 if self.findings else 0

    def to_json(self) -> dict[str, object]:
        return {
            "enabled_channels": list(self.enabled), "exit_status": self.exit_status,
            "findings": [contact.to_json() for contact in self.findings],
            "contacts": [contact.to_json() for contact in self.contacts],
            "groups": [group.to_json() for group in self.groups],
            "internal_email": list(self.internal_email),
        }  # fmt: skip


def audit(router: Router, *, group: str | None = None) -> AuditReport:
    """Audit every contact (or one group's) against the enabled channels; BadInput when
    the config enables no channel or names no contact."""
    require_something_to_check(router)
    contacts = router.group(group) if group is not None else list(router.everyone())
    domains = {name: caps.failure_domains for name in router.ranking()
               if (caps := router.capabilities(name)) is not None}
    enabled = tuple(router.ranking())
    routes = router.plan(check_message("sms"), contacts)
    carriers = {name: tuple(lane.provider for lane in router.lanes(name)) for name in enabled}
    audits = {
        route.contact.name: audit_contact(
            route.contact, tuple(step.channel for step in route.steps), domains, enabled,
            carriers,
        )
        for route in routes
    }
    names = [group] if group is not None else list(router.settings.groups)
    groups = tuple(_group(name, [c.name for c in router.members(name)()], audits)
                   for name in names)
    return AuditReport(enabled, tuple(audits.values()), groups)


def audit_contact(
    contact: Contact,
    channels: Sequence[str],
    domains: Mapping[str, frozenset[str]],
    enabled: Sequence[str],
    carriers: Mapping[str, Sequence[str]] | None = None,
) -> ContactAudit:
    """``carriers``: each channel's providers (default: the channel carries itself)."""
    carriers = carriers or {}
    independent = independent_channels(channels, domains)
    groups = failure_groups(channels, domains)
    # What takes every channel down whichever provider carries it: a provider only when
    # it is a channel's only one.
    own = [fatal_domains(domains.get(channel, frozenset()), carriers.get(channel, ()))
           for channel in channels]
    shared = tuple(sorted(frozenset.intersection(*own))) if own else ()
    providers = tuple(dict.fromkeys(p for channel in channels for p in carriers.get(channel, ())))
    finding = None
    if not channels:
        finding = Finding.NO_CHANNEL
    elif len(independent) < 2:
        if set(channels) == {"whatsapp"}:
            finding = Finding.WHATSAPP_ONLY
        elif set(channels) <= {"sms", "voice"}:
            finding = Finding.ONE_CARRIER_PATH
        else:
            finding = Finding.SINGLE_DOMAIN
    advice = _advice(contact, channels, domains, enabled) if finding is not None else ()
    survives = survives_provider_outage(channels, carriers)
    email = contact.address("email")
    return ContactAudit(contact.name, tuple(channels), independent, groups, shared, finding,
                        advice, providers, survives,
                        _redundancy(finding, independent, providers, survives, channels,
                                    domains),
                        internal_email=email is not None and is_internal_email(email))  # fmt: skip


def _redundancy(
    finding: Finding | None, independent: Sequence[str], providers: Sequence[str],
    survives: bool, channels: Sequence[str], domains: Mapping[str, frozenset[str]],
) -> str:
    if finding is None:
        return f"{len(independent)} independent channels"
    if survives:
        # Better than one provider, still one failure domain: an operator outage like
        # 6 July 2012 takes every channel a phone number gives.
        carrier = any("carrier" in domains.get(channel, ()) for channel in channels)
        return f"{count_words(len(providers))} providers, one " + (
            "carrier" if carrier else "failure domain")
    return FINDING_TEXT[finding]


def fatal_domains(domains: frozenset[str], providers: Sequence[str]) -> frozenset[str]:
    """A channel's domains less the providers it can do without: with two providers, a
    provider outage leaves the other (the recipient's carrier stays)."""
    return domains - set(providers) if len(providers) > 1 else domains


def _advice(
    contact: Contact,
    channels: Sequence[str],
    domains: Mapping[str, frozenset[str]],
    enabled: Sequence[str],
) -> tuple[str, ...]:
    used = frozenset().union(*(domains.get(channel, frozenset()) for channel in channels))
    independent = [name for name in enabled
                   if name not in channels and not domains.get(name, frozenset()) & used]
    # One suggestion per failure group: a phone number adds WhatsApp, SMS and voice at
    # once, and all three fall together.
    suggested = [group[0] for group in failure_groups(independent, domains)]
    advice = []
    for name in suggested:
        if contact.address(name) is not None:
            # The address is there but the contact's own order leaves the channel out.
            advice.append(f"add {name} to this contact's order")
        else:
            advice.append(f"add {ADDRESS_FIELD.get(name, f'an address for {name}')}")
    if not independent:
        depends = ", ".join(sorted(used)) or "nothing yet"
        missing = [name for name in ("telegram", "email") if name not in enabled]
        hint = f" such as {' or '.join(missing)}" if missing else ""
        advice.append(f"enable a channel that does not depend on {depends}{hint}")
    return tuple(advice)


def _group(name: str, members: Sequence[str], audits: Mapping[str, ContactAudit]) -> GroupAudit:
    counts = {member: len(audits[member].independent) for member in members}
    lowest = min(counts.values())
    weakest = tuple(member for member, count in counts.items() if count == lowest)
    return GroupAudit(name, len(members), weakest, lowest)
