"""Failure domains: which channels fail together, and which are independent.

Two channels are independent when their failure domains (design.md section 3) do not
intersect: WhatsApp, SMS and voice all hang on Twilio. Shared by the reachability run,
the audit and the crisis board.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence


def independent_channels(
    channels: Sequence[str], domains: Mapping[str, Collection[str]]
) -> tuple[str, ...]:
    """The largest set of ``channels`` pairwise sharing no domain; earlier ones win ties."""
    for size in range(len(channels), 0, -1):
        for combination in itertools.combinations(channels, size):
            sets = [frozenset(domains.get(name, ())) for name in combination]
            if all(not a & b for a, b in itertools.combinations(sets, 2)):
                return combination
    return ()


def failure_groups(
    channels: Sequence[str], domains: Mapping[str, Collection[str]]
) -> tuple[tuple[str, ...], ...]:
    """Channels linked by a shared domain, directly or through another channel."""
    groups: list[tuple[set[str], list[str]]] = []
    for name in channels:
        own = set(domains.get(name, ()))
        joined = [group for group in groups if group[0] & own]
        merged: tuple[set[str], list[str]] = (own, [])
        for group in joined:
            merged[0].update(group[0])
            merged[1].extend(group[1])
            groups.remove(group)
        merged[1].append(name)
        groups.append(merged)
    order = {name: index for index, name in enumerate(channels)}
    ranked = [tuple(sorted(names, key=order.__getitem__)) for _, names in groups]
    return tuple(sorted(ranked, key=lambda names: order[names[0]]))
