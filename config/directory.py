"""The whole contact book: ``[contacts]`` from the config file, then ``[directory] files``.

A million contacts are streamed from their files, never held at once. :meth:`Directory.validate`
reads every file once and raises one :class:`ConfigError` listing every bad line; afterwards
:meth:`Directory.contacts`, :meth:`Directory.group` and :meth:`Directory.find` read the files
again, row by row, refusing a file that changed since it was checked. Loading the settings
never opens these files: only a process that needs the book pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from config.contacts import Contact
from config.csvcontacts import Checked, RowChecker
from config.csvfile import CsvFile, Problem, Row, Stamp, shown
from config.settings import ConfigError, Settings

LISTED_LINES = 200
"""Bad lines listed in one report; the rest are counted."""


@dataclass(frozen=True, slots=True)
class FileSummary:
    path: Path
    contacts: int


@dataclass(frozen=True, slots=True)
class DirectorySummary:
    """What a validation pass found: the book is good, and this big."""

    contacts: int
    """Every contact: the config file's and the files'."""
    groups: Mapping[str, int]
    """Each declared group's size: its ``[groups]`` members and the rows that name it."""
    files: tuple[FileSummary, ...]


@dataclass(frozen=True, slots=True)
class _Entry:
    path: Path
    problem: Problem
    duplicate: str | None = None
    """The name a row repeats, when its first place is found after the pass."""


class _Report:
    """Every problem of one pass: each bad line counted, the first :data:`LISTED_LINES` listed."""

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.bad_lines = 0
        self.bad_files: set[Path] = set()
        self.empty_groups: list[str] = []
        self._last: tuple[Path, int] | None = None

    def add(self, path: Path, problem: Problem, duplicate: str | None = None) -> None:
        if problem.line is None:
            self.bad_files.add(path)
            self.entries.append(_Entry(path, problem))
            return
        if (path, problem.line) != self._last:
            self._last = (path, problem.line)
            self.bad_lines += 1
        if self.bad_lines <= LISTED_LINES:
            self.entries.append(_Entry(path, problem, duplicate))

    def __bool__(self) -> bool:
        return bool(self.entries or self.bad_lines or self.empty_groups)

    def wanted(self) -> set[str]:
        """The repeated names whose first place the listed entries name."""
        return {entry.duplicate for entry in self.entries if entry.duplicate is not None}

    def render(self, first: Mapping[str, _Place]) -> str:
        counts = [_plural(self.bad_lines, "bad line"),
                  _plural(len(self.bad_files), "unusable file"),
                  _plural(len(self.empty_groups), "empty group")]
        lines = ["contact directory: " + ", ".join(count for count in counts if count)]
        for entry in self.entries:
            problem = entry.problem
            text = problem.text
            if entry.duplicate is not None:
                place = first.get(entry.duplicate)
                text += f" at {place}" if place is not None else " above, or in a file before"
            where = _display(entry.path)
            if problem.line is not None:
                where += f":{problem.line}"
                if problem.column is not None:
                    where += f":{problem.column}"
            field = f"{problem.field}: " if problem.field else ""
            lines.append(f"  {where}: {field}{text}")
        listed = min(self.bad_lines, LISTED_LINES)
        if self.bad_lines > listed:
            lines.append(f"  and {self.bad_lines - listed} more bad lines")
        lines += [f"  groups.{group}: is empty: no contact in [contacts] or in the files "
                  "belongs to it" for group in self.empty_groups]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Place:
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{_display(self.path)}:{self.line}"


def _plural(count: int, what: str) -> str:
    return "" if not count else f"{count} {what}{'' if count == 1 else 's'}"


def _display(path: Path) -> str:
    """The path from here when it is below the working directory, else in full."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _ignore(problem: Problem) -> None:
    """Problems of a second pass: the first one reported them."""


class Directory:
    """Every contact: the config file's book, then the files', streamed, never all held at once.

    The files are checked once, by :meth:`validate` (or on first use); a group, a contact and
    the whole book are then read from them again each time they are asked for.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.files: tuple[Path, ...] = settings.directory.files
        self._summary: DirectorySummary | None = None
        self._stamps: dict[Path, Stamp] = {}

    # -- checking ------------------------------------------------------------------------

    def validate(self) -> DirectorySummary:
        """Read every file once; raise one :class:`ConfigError` naming every bad line
        (``file:line:column: field: problem``, never a value that may be a phone number or
        a secret) with their count, or return what the book holds."""
        settings = self._settings
        report = _Report()
        names: set[str] = set()
        sizes = {group: len(members) for group, members in settings.groups.items()}
        files: list[FileSummary] = []
        stamps: dict[Path, Stamp] = {}
        for path in self.files:
            count, stamp = self._validate_file(path, report, names, sizes)
            files.append(FileSummary(path, count))
            if stamp is not None:
                stamps[path] = stamp
        names.clear()
        report.empty_groups = [group for group, size in sizes.items() if size == 0]
        if report:
            wanted = report.wanted()
            raise ConfigError(report.render(self._first_places(wanted) if wanted else {}))
        self._stamps = stamps
        self._summary = DirectorySummary(
            contacts=len(settings.contacts) + sum(file.contacts for file in files),
            groups=sizes, files=tuple(files),
        )
        return self._summary

    def _validate_file(self, path: Path, report: _Report, names: set[str],
                       sizes: dict[str, int]) -> tuple[int, Stamp | None]:
        """Check one file's rows into ``report``; its number of good contacts, and what the
        file was when it was read (None if it could not be, or changed meanwhile)."""
        book_contacts = self._settings.contacts
        good = rows = 0
        with CsvFile(path, lambda problem: report.add(path, problem)) as book:
            header = book.header
            if header is None:
                return 0, None
            checker = RowChecker(header, sizes)
            for row in book:
                rows += 1
                checked = checker.check(row)
                for group in checked.groups:
                    sizes[group] += 1
                name = checked.name
                repeated = None
                if name is not None:
                    if name in book_contacts:
                        repeated = Problem(row.line, header.index["name"] + 1, "name",
                                           f"{shown(name)} is defined twice: first in the "
                                           "config file's [contacts]")
                    elif name in names:
                        repeated = Problem(row.line, header.index["name"] + 1, "name",
                                           f"{shown(name)} is defined twice: first")
                    else:
                        names.add(name)
                for problem in checked.problems:
                    report.add(path, problem)
                if repeated is not None:
                    duplicate = None if name in book_contacts else name
                    report.add(path, repeated, duplicate)
                elif not checked.problems:
                    good += 1
            if rows == 0:
                report.add(path, Problem(None, None, None, "has a header but no contacts"))
            if _stamp(path) != book.stamp:
                report.add(path, Problem(None, None, None,
                                         "changed while it was read: check it again"))
                return good, None
            return good, book.stamp

    def _first_places(self, wanted: set[str]) -> dict[str, _Place]:
        """Where each repeated name was first defined: one more reading, only of the names,
        and only when there are repeats (a place per name would cost more than the names)."""
        found: dict[str, _Place] = {}
        for path in self.files:
            with CsvFile(path, _ignore) as book:
                if book.header is None:
                    continue
                checker = RowChecker(book.header, ())
                for row in book:
                    name = checker.name(row.cells)
                    if name in wanted and name not in found:
                        found[name] = _Place(path, row.line)
                        if len(found) == len(wanted):
                            return found
        return found

    def summary(self) -> DirectorySummary:
        """The last validation's summary, validating first if it never was."""
        return self._summary if self._summary is not None else self.validate()

    # -- reading -------------------------------------------------------------------------

    def contacts(self) -> Iterator[Contact]:
        """Every contact: the config file's, then each file's, in file and line order."""
        self.summary()
        yield from self._settings.contacts.values()
        for path in self.files:
            for checker, row in self._rows(path):
                yield self._contact(path, checker.check(row))

    def group(self, name: str) -> Iterator[Contact]:
        """A group's members: its ``[groups]`` list, then the rows naming it in ``groups``.

        Raises KeyError for a group ``[groups]`` does not declare."""
        members = self._settings.groups[name]
        self.summary()
        book = self._settings.contacts
        yield from (book[member] for member in members)
        for path in self.files:
            for checker, row in self._rows(path):
                if name in checker.group_names(row.cells):
                    yield self._contact(path, checker.check(row))

    def group_size(self, name: str) -> int:
        """A group's size, from the validation pass. Raises KeyError for an unknown group."""
        return self.summary().groups[name]

    def find(self, name: str) -> Contact | None:
        """A contact by name: the config file's book first, else the first file row of it."""
        self.summary()
        if name in self._settings.contacts:
            return self._settings.contacts[name]
        for path in self.files:
            for checker, row in self._rows(path):
                if checker.name(row.cells) == name:
                    return self._contact(path, checker.check(row))
        return None

    def _rows(self, path: Path) -> Iterator[tuple[RowChecker, Row]]:
        """A checked file's rows, again; refuses the file if it changed since."""

        def changed(problem: Problem) -> None:
            raise ConfigError(f"{_display(path)}: changed since it was checked: check it again")

        with CsvFile(path, changed) as book:
            if book.stamp != self._stamps.get(path):
                changed(Problem(None, None, None, ""))
            assert book.header is not None
            checker = RowChecker(book.header, self._settings.groups)
            for row in book:
                yield checker, row

    @staticmethod
    def _contact(path: Path, checked: Checked) -> Contact:
        if checked.contact is None:
            raise ConfigError(f"{_display(path)}: changed since it was checked: check it again")
        return checked.contact


def _stamp(path: Path) -> Stamp | None:
    try:
        return Stamp.of(os.stat(path))
    except OSError:
        return None
