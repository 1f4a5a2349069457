"""Text that crosses a boundary: into a header line, into a provider's request, onto a
terminal.

Two directions, one module. Going out, :func:`header_problem` says why a string cannot
be one header line (Python's email package splits on every character that
``str.splitlines`` breaks at, and raises; a relay chokes on NUL and the other
controls), and :func:`text_problem` why a body cannot be sent at all (a lone
surrogate, left by bytes that were not UTF-8, cannot be encoded by any client).
Coming in, :func:`terminal_safe` turns text from outside (replies, provider errors,
names from a contact book) into text that cannot drive a terminal: no escape
sequence, no carriage return that overwrites a line, no bidirectional override.
"""

from __future__ import annotations

import re
import unicodedata

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
"""Every character at which ``str.splitlines`` (and so Python's email package) breaks."""

# C0 and C1 controls, DEL, line and paragraph separators, the bidirectional embeddings,
# overrides and isolates (which reorder what follows them on screen), lone surrogates
# (which no terminal encoding can print).
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_KEEPING_LINES = re.compile(f"[{_UNSAFE}]")
_UNSAFE_ON_ONE_LINE = re.compile(f"[{_UNSAFE}\n\t]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def terminal_safe(text: str, *, multiline: bool = True) -> str:
    """``text`` with every character that could act on a terminal written as an escape.

    ESC (colours, screen clears, window titles, OSC 52 clipboard writes), BEL, the
    8-bit C1 controls (``\\x9b`` is CSI on many terminals), carriage returns, the
    bidirectional overrides and lone surrogates become ``\\x1b``, ``\\u202e``... so the
    reader sees that they were there. Line breaks and tabs stay unless ``multiline``
    is false (a log line, a one-line error). Text with nothing to escape is returned
    as is.
    """
    pattern = _UNSAFE_KEEPING_LINES if multiline else _UNSAFE_ON_ONE_LINE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def describe_char(char: str) -> str:
    """``U+2028 LINE SEPARATOR``: how an error names a character it refuses."""
    name = unicodedata.name(char, "")
    if not name and unicodedata.category(char) == "Cc":
        name = "control character"
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def header_problem(text: str) -> str | None:
    """Why ``text`` cannot be one header line (an email subject), or None if it can.

    A tab is allowed (RFC 5322 folds on it); any other control character, a line or
    paragraph separator, or a lone surrogate is not.
    """
    for char in text:
        if char in LINE_BREAKS:
            return f"must be a single line (it holds {describe_char(char)})"
        category = unicodedata.category(char)
        if category == "Cc" and char != "\t":
            return f"must not hold control characters (it holds {describe_char(char)})"
        if category == "Cs":
            return _SURROGATE
    return None


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be sent on any channel, or None if it can."""
    if "\x00" in text:
        return "must not hold a NUL character (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE
    return None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """``text`` with lone surrogates (JSON allows ``"\\ud800"``) replaced by U+FFFD, so
    that it can be stored, logged and printed."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def header_safe(text: str) -> str:
    """``text`` made fit for one header line: controls and line breaks become spaces.

    For headers derived from a body (an email subject taken from the first line), where
    refusing would stop a message that is otherwise fine.
    """
    return "".join(
        " " if char in LINE_BREAKS or unicodedata.category(char) in ("Cc", "Cs") else char
        for char in text
    )


_SURROGATE = (
    "is not valid Unicode: it holds a lone surrogate (bytes that were not UTF-8, such as "
    "Latin-1 text given on a UTF-8 command line)"
)
