"""How many SMS parts a text costs, and in which encoding.

An SMS carries 140 bytes: 160 GSM-7 characters, or 70 UCS-2 code units. A longer
text is split into parts that each lose room to the concatenation header (153
GSM-7 characters, 67 UCS-2 units). Characters of the GSM-7 extension table take
two septets (an escape, then the character), and one character outside GSM-7
turns the whole text into UCS-2, where a character outside the Basic
Multilingual Plane (most emoji) is a surrogate pair: two units. Neither an
escape sequence nor a surrogate pair is ever split across two parts, which is
why parts are packed one character at a time rather than divided arithmetically.
No maintained package counts this; the tests check it against the GSM 03.38
tables at every boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from router.model.gsm import GSM7_BASIC, GSM7_EXTENSION

Encoding = Literal["GSM-7", "UCS-2"]


SINGLE_LIMIT: dict[Encoding, int] = {"GSM-7": 160, "UCS-2": 70}
PART_LIMIT: dict[Encoding, int] = {"GSM-7": 153, "UCS-2": 67}


@dataclass(frozen=True, slots=True)
class SmsSegments:
    """What one SMS text costs."""

    encoding: Encoding
    units: int
    """GSM-7 septets or UCS-2 (UTF-16) code units."""
    segments: int
    """Parts the carrier bills for; 0 for an empty text."""

    @property
    def per_segment(self) -> int:
        """Room in each part at this length: 160/70 for one part, 153/67 when split."""
        limit = SINGLE_LIMIT if self.segments <= 1 else PART_LIMIT
        return limit[self.encoding]

    def describe(self) -> str:
        parts = "part" if self.segments == 1 else "parts"
        unit = "characters" if self.encoding == "GSM-7" else "UTF-16 units"
        return f"{self.segments} {parts}, {self.encoding}, {self.units} {unit}"

    def to_json(self) -> dict[str, object]:
        return {"encoding": self.encoding, "units": self.units, "segments": self.segments}


def is_gsm7(text: str) -> bool:
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text)


def _cost(char: str, encoding: Encoding) -> int:
    if encoding == "GSM-7":
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def sms_segments(text: str) -> SmsSegments:
    """Encoding, length in units and number of parts of ``text`` sent as one SMS."""
    encoding: Encoding = "GSM-7" if is_gsm7(text) else "UCS-2"
    costs = [_cost(char, encoding) for char in text]
    units = sum(costs)
    if units == 0:
        return SmsSegments(encoding, 0, 0)
    if units <= SINGLE_LIMIT[encoding]:
        return SmsSegments(encoding, units, 1)
    room = PART_LIMIT[encoding]
    parts, used = 1, 0
    for cost in costs:
        if used + cost > room:  # an escape pair or a surrogate pair stays whole
            parts, used = parts + 1, 0
        used += cost
    return SmsSegments(encoding, units, parts)
