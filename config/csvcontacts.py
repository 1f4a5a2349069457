"""A contact file's rows checked with the contact book's own rules, as plain functions.

The normalisers are :mod:`config.contacts`'s, and each rule of :class:`ContactEntry` is
repeated here as it stands there (an address required, channel names, no repeats): a million
rows must not become a million pydantic models. ``tests/test_directory.py`` holds a row and
the same contact in TOML to the same verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from config.channels import CHANNEL_NAMES, PHONE_CHANNELS
from config.contacts import Contact, normalise_chat_id, normalise_email, normalise_phone
from config.csvfile import CONTROL, Header, Problem, Row, shown

NAME_LIMIT = 200
_PHONE_COLUMNS = ("phone", *PHONE_CHANNELS)
_Fail = Callable[[int | None, str | None, str], None]
"""Records a problem: the cell's position (from 0), its column's name, what is wrong."""


@dataclass(frozen=True, slots=True)
class Checked:
    """One row's verdict: its contact when every cell is good, else its problems."""

    name: str | None
    """The contact's name, when the name cell itself is good (duplicates are found by it)."""
    groups: tuple[str, ...]
    """The declared groups the row names."""
    contact: Contact | None
    """None when the row is bad, or was checked without building it."""
    problems: tuple[Problem, ...]


def split_list(text: str) -> list[str]:
    """A ``;``-separated cell: its items trimmed, empty ones (a trailing ``;``) dropped."""
    if ";" not in text:
        text = text.strip()
        return [text] if text else []
    return [item for item in (piece.strip() for piece in text.split(";")) if item]


def name_problem(name: str) -> str | None:
    """What is wrong with a contact's name (trimmed), or None."""
    if not name:
        return "is required"
    if len(name) > NAME_LIMIT:
        return f"is longer than {NAME_LIMIT} characters"
    if CONTROL.search(name):
        return "must not hold control characters or line breaks"
    return None


class RowChecker:
    """Checks the rows of one file, read against its header."""

    def __init__(self, header: Header, declared_groups: Collection[str]) -> None:
        index = header.index
        self._width = header.width
        self._name = index["name"]
        self._phones = tuple((index[name], name) for name in _PHONE_COLUMNS if name in index)
        self._telegram = index.get("telegram")
        self._email = index.get("email")
        self._order = index.get("order")
        self._groups = index.get("groups")
        self._declared = declared_groups

    def name(self, cells: list[str]) -> str:
        """The name cell, trimmed (a row is found by it without being checked)."""
        return cells[self._name].strip() if self._name < len(cells) else ""

    def valid_name(self, cells: list[str]) -> str | None:
        """The name, if the name cell is good: duplicates are found by it alone."""
        name = self.name(cells)
        return None if name_problem(name) else name

    def group_names(self, cells: list[str]) -> list[str]:
        """The groups cell's items, unchecked."""
        index = self._groups
        return split_list(cells[index]) if index is not None and index < len(cells) else []

    def declared_groups(self, cells: list[str]) -> tuple[str, ...]:
        """The declared groups the row names, once each (what :meth:`check` counts)."""
        declared = self._declared
        return tuple(dict.fromkeys(g for g in self.group_names(cells) if g in declared))

    def check(self, row: Row, *, build: bool = True) -> Checked:
        """Every cell of ``row`` against the book's rules; its contact too when ``build``
        (a validation pass needs only the verdict)."""
        cells = row.cells
        count = len(cells)
        problems: list[Problem] = []

        def fail(index: int | None, field: str | None, text: str) -> None:
            column = None if index is None else index + 1
            problems.append(Problem(row.line, column, field, text))

        name: str | None = self.name(cells)
        if problem := name_problem(name or ""):
            fail(self._name, "name", problem)
            name = None
        if count > self._width:
            fail(self._width, None, f"has {count} fields, the header {self._width}")

        numbers: dict[str, str] = {}
        for index, field in self._phones:
            text = cells[index].strip() if index < count else ""
            if text:
                try:
                    numbers[field] = normalise_phone(text)
                except ValueError as exc:
                    fail(index, field, str(exc))
        addresses: dict[str, str] = {}
        phone = numbers.get("phone")
        for channel in PHONE_CHANNELS:
            number = numbers.get(channel) or phone
            if number:
                addresses[channel] = number
        at = self._telegram
        if at is not None and at < count and (text := cells[at].strip()):
            try:
                addresses["telegram"] = str(normalise_chat_id(text))
            except ValueError as exc:
                fail(at, "telegram", str(exc))
        at = self._email
        if at is not None and at < count and (text := cells[at].strip()):
            try:
                addresses["email"] = normalise_email(text)
            except ValueError as exc:
                fail(at, "email", str(exc))

        order = self._check_order(cells, fail)
        groups = self._check_groups(cells, fail)
        if not problems and not addresses:
            fail(self._name, None, "has no address: give at least one of phone, telegram, email")
        if problems:
            if len(problems) > 1:
                problems.sort(key=lambda problem: problem.column or 0)
            return Checked(name, groups, None, tuple(problems))
        assert name is not None
        contact = Contact(name, addresses, order) if build else None
        return Checked(name, groups, contact, ())

    def _check_order(self, cells: list[str], fail: _Fail) -> tuple[str, ...] | None:
        index = self._order
        if index is None or index >= len(cells):
            return None
        channels = split_list(cells[index])
        if not channels:
            return None
        for channel in channels:
            if channel not in CHANNEL_NAMES:
                fail(index, "order",
                     f"{shown(channel)} is not a channel ({', '.join(CHANNEL_NAMES)})")
        if len(set(channels)) != len(channels):
            fail(index, "order", "names a channel twice")
        return tuple(channels)

    def _check_groups(self, cells: list[str], fail: _Fail) -> tuple[str, ...]:
        index = self._groups
        if index is None or index >= len(cells):
            return ()
        found: dict[str, None] = {}
        for group in split_list(cells[index]):
            if group not in self._declared:
                fail(index, "groups", f"{shown(group)} is not a group declared in [groups]")
            elif group in found:
                # One delivery per contact and message: a repeat cannot be sent.
                fail(index, "groups", f"names the group {shown(group)} twice")
            else:
                found[group] = None
        return tuple(found)
