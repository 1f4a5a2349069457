"""SMS part counting at every boundary of GSM-7 and UCS-2."""

from __future__ import annotations

import pytest

from router.rules.segments import GSM7_BASIC, GSM7_EXTENSION, sms_segments


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),  # 2 x 153
        ("a" * 307, "GSM-7", 307, 3),
        # Accented letters of the GSM alphabet stay GSM-7.
        ("é" * 160, "GSM-7", 160, 1),
        # Extension characters cost two septets each.
        ("€" * 80, "GSM-7", 160, 1),
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 159 + "^", "GSM-7", 161, 2),
        ("{}[]~|\\^", "GSM-7", 16, 1),
        # One character outside GSM-7 makes the whole text UCS-2.
        ("ж" * 70, "UCS-2", 70, 1),
        ("ж" * 71, "UCS-2", 71, 2),
        ("a" * 69 + "ç", "UCS-2", 70, 1),  # ç is not GSM-7 (only Ç is)
        ("ж" * 134, "UCS-2", 134, 2),  # 2 x 67
        ("ж" * 135, "UCS-2", 135, 3),
        # An emoji is a surrogate pair: two UTF-16 units.
        ("😀", "UCS-2", 2, 1),
        ("😀" * 35, "UCS-2", 70, 1),
        ("😀" * 35 + "a", "UCS-2", 71, 2),
        ("", "GSM-7", 0, 0),
    ],
)
def test_encoding_units_and_parts(text: str, encoding: str, units: int, segments: int) -> None:
    found = sms_segments(text)
    assert (found.encoding, found.units, found.segments) == (encoding, units, segments)


def test_a_pair_is_never_split_across_parts() -> None:
    # 152 septets, then an escape pair: it does not fit in the 1 left of part one.
    gsm = sms_segments("a" * 152 + "€" + "a" * 152)
    assert (gsm.units, gsm.segments) == (306, 3)
    # Same for a surrogate pair at the end of a 67-unit UCS-2 part.
    ucs = sms_segments("ж" * 66 + "😀" + "ж" * 66)
    assert (ucs.units, ucs.segments) == (134, 3)


def test_room_per_part_and_description() -> None:
    assert sms_segments("a" * 160).per_segment == 160
    assert sms_segments("a" * 161).per_segment == 153
    assert sms_segments("ж").per_segment == 70
    assert sms_segments("ж" * 71).per_segment == 67
    assert sms_segments("ж" * 71).describe() == "2 parts, UCS-2, 71 UTF-16 units"
    assert sms_segments("hi").to_json() == {"encoding": "GSM-7", "units": 2, "segments": 1}


def test_alphabet_tables_match_gsm_03_38() -> None:
    # 128 code points, minus the escape; the extension table of the default alphabet.
    assert len(GSM7_BASIC) == 127
    assert frozenset("\f^{}\\[~]|€") == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert "`" not in GSM7_BASIC and "ç" not in GSM7_BASIC and "Ç" in GSM7_BASIC
