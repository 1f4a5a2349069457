"""The GSM 03.38 alphabet an SMS is written in, when it can be (else UCS-2)."""

from __future__ import annotations

# The default alphabet (the escape 0x1B itself is not a character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs an escape septet plus itself.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


def is_gsm7(text: str) -> bool:
    """Whether ``text`` can travel in GSM-7; one other character makes the SMS UCS-2."""
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text)
