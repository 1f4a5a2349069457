"""Ids for messages, attempts and inbound events."""

from __future__ import annotations

import itertools
import secrets
import time

_PROCESS = secrets.token_hex(4)
_SEQUENCE = itertools.count()


def new_id(prefix: str) -> str:
    """Time-ordered, unique across processes: ``att_18790f3c2a1b4c5d9e8f7a6b0001f3``.

    Microseconds, then a random per-process part, then a counter: as unique as random
    bits per id, for a fraction of the cost on the hot path.
    """
    return f"{prefix}_{time.time_ns() // 1000:013x}{_PROCESS}{next(_SEQUENCE) & 0xFFFFFF:06x}"
