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
from config.csvcheck import LISTED_LINES, Findings, Helper, helpers_for
from config.csvcontacts import Checked, RowChecker
from config.csvfile import CsvFile, Header, Problem, Row, Stamp, shown
from config.settings import ConfigError, Settings

PARALLEL_FROM = 4 * 2**20
"""Files from this size (about 50,000 lines) are checked by helper processes too."""


@dataclass(frozen=True, slots=True)
class FileSummary:
    path: Path
    contacts: int
    processes: int = 1
    """The processes that checked its rows: this one and the helpers that answered."""


@dataclass(frozen=True, slots=True)
class DirectorySummary:
    """What a validation pass found: the book is good, and this big."""

    contacts: int
    """Every contact: the config file's and the files'."""
    groups: Mapping[str, int]
    """Each declared group's size: its ``[groups]`` members and the rows that name it."""
    files: tuple[FileSummary, ...]


@dataclass(frozen=True, slots=True)
class _Repeat(Problem):
    """A name defined a second time in the files: where first is found after the pass."""

    name: str = ""


@dataclass(frozen=True, slots=True)
class _FileVerdict:
    path: Path
    rows: int
    stamp: Stamp | None
    """What the file was when read; None if it could not be read, or changed meanwhile."""
    troubles: tuple[str, ...]
    """What is wrong with the file as a whole."""
    findings: Findings
    processes: int = 1


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
    """Problems of a second reading: the first one reported them."""


def _changed(path: Path) -> ConfigError:
    return ConfigError(f"{_display(path)}: changed since it was checked: check it again")


class Directory:
    """Every contact: the config file's book, then the files', streamed, never all held at once.

    The files are checked once, by :meth:`validate` (or on first use); a group, a contact and
    the whole book are then read from them again each time they are asked for.
    """

    def __init__(self, settings: Settings, *, parallel_from: int = PARALLEL_FROM) -> None:
        self._settings = settings
        self.files: tuple[Path, ...] = settings.directory.files
        self._parallel_from = parallel_from
        self._summary: DirectorySummary | None = None
        self._stamps: dict[Path, Stamp] = {}

    # -- checking ------------------------------------------------------------------------

    def validate(self) -> DirectorySummary:
        """Read every file once; raise one :class:`ConfigError` naming every bad line
        (``file:line:column: field: problem``, never a value that may be a phone number or
        a secret) with their count, or return what the book holds."""
        settings = self._settings
        names: set[str] = set()
        sizes = {group: len(members) for group, members in settings.groups.items()}
        verdicts = [self._check_file(path, names, sizes) for path in self.files]
        names.clear()
        empty = [group for group, size in sizes.items() if size == 0]
        if empty or any(v.troubles or v.findings.lines for v in verdicts):
            raise ConfigError(self._report(verdicts, empty))
        self._stamps = {v.path: v.stamp for v in verdicts if v.stamp is not None}
        self._summary = DirectorySummary(
            contacts=len(settings.contacts) + sum(v.rows for v in verdicts), groups=sizes,
            files=tuple(FileSummary(v.path, v.rows, v.processes) for v in verdicts),
        )
        return self._summary

    def _check_file(self, path: Path, names: set[str], sizes: dict[str, int]) -> _FileVerdict:
        troubles: list[str] = []
        mine = Findings()

        def report(problem: Problem) -> None:
            if problem.line is None:
                troubles.append(problem.text)
            else:
                mine.add(problem)

        with CsvFile(path, report) as book:
            if book.header is None or book.stamp is None:
                return _FileVerdict(path, 0, None, tuple(troubles), mine)
            shares = 1 + helpers_for(book.stamp.size, self._parallel_from)
            helpers = [Helper(path, sizes, share, shares) for share in range(1, shares)]
            try:
                rows = self._read(book, book.header, shares, mine, names, sizes)
            except BaseException:
                for helper in helpers:
                    helper.stop()
                raise
            stamps: set[Stamp | None] = {book.stamp}
            parts = [mine]
            for helper in helpers:
                stamp, findings = helper.result()
                stamps.add(stamp)
                parts.append(findings)
            if rows == 0:
                troubles.append("has a header but no contacts")
            stamp = book.stamp
            if stamps != {_stamp(path)}:
                troubles.append("changed while it was read: check it again")
                stamp = None
            processes = 1 + sum(helper.answered for helper in helpers)
            return _FileVerdict(path, rows, stamp, tuple(troubles), Findings.merged(parts),
                                processes)

    def _read(self, book: CsvFile, header: Header, shares: int, mine: Findings,
              names: set[str], sizes: dict[str, int]) -> int:
        """Every row: its name and groups; every ``shares``-th row (the others are the
        helpers'), in full. The number of rows."""
        book_contacts = self._settings.contacts
        checker = RowChecker(header, sizes)
        column = header.index["name"] + 1
        rows = 0
        for rows, row in enumerate(book, 1):
            if (rows - 1) % shares == 0:
                checked = checker.check(row, build=False)
                for problem in checked.problems:
                    mine.add(problem)
                name, groups = checked.name, checked.groups
            else:
                name, groups = checker.valid_name(row.cells), checker.declared_groups(row.cells)
            for group in groups:
                sizes[group] += 1
            if name is None:
                continue
            if name in book_contacts:
                mine.add(_Repeat(row.line, column, "name", f"{shown(name)} is defined twice: "
                                 "first in the config file's [contacts]"))
            elif name in names:
                mine.add(_Repeat(row.line, column, "name",
                                 f"{shown(name)} is defined twice: first", name))
            else:
                names.add(name)
        return rows

    def _report(self, verdicts: list[_FileVerdict], empty: list[str]) -> str:
        bad_lines = sum(len(v.findings.lines) for v in verdicts)
        unusable = sum(1 for v in verdicts if v.troubles)
        counts = [_plural(bad_lines, "bad line"), _plural(unusable, "unusable file"),
                  _plural(len(empty), "empty group")]
        listed: list[list[Problem]] = []
        lines = 0
        for verdict in verdicts:
            listed.append([])
            last = None
            for problem in sorted(verdict.findings.problems,
                                  key=lambda p: (p.line or 0, p.column or 0)):
                if problem.line != last:
                    last = problem.line
                    lines += 1
                if lines > LISTED_LINES:
                    break
                listed[-1].append(problem)
        wanted = {p.name for ps in listed for p in ps if isinstance(p, _Repeat) and p.name}
        first = self._first_places(wanted) if wanted else {}
        text = ["contact directory: " + ", ".join(count for count in counts if count)]
        for verdict, problems in zip(verdicts, listed, strict=True):
            shown_path = _display(verdict.path)
            text += [f"  {shown_path}: {trouble}" for trouble in verdict.troubles]
            for problem in problems:
                what = problem.text
                if isinstance(problem, _Repeat) and problem.name:
                    place = first.get(problem.name)
                    what += f" at {place}" if place is not None else " above, or in a file before"
                where = f"{shown_path}:{problem.line}"
                if problem.column is not None:
                    where += f":{problem.column}"
                field = f"{problem.field}: " if problem.field else ""
                text.append(f"  {where}: {field}{what}")
        if bad_lines > LISTED_LINES:
            text.append(f"  and {bad_lines - LISTED_LINES} more bad lines")
        text += [f"  groups.{group}: is empty: no contact in [contacts] or in the files "
                 "belongs to it" for group in empty]
        return "\n".join(text)

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
        """Every contact: the config file's, then each file's, in file and line order.

        Checks the files first (raising :class:`ConfigError`) if they never were."""
        self.summary()
        return self._every()

    def _every(self) -> Iterator[Contact]:
        yield from self._settings.contacts.values()
        for path in self.files:
            for checker, row in self._rows(path):
                yield self._contact(path, checker.check(row))

    def group(self, name: str) -> Iterator[Contact]:
        """A group's members: its ``[groups]`` list, then the rows naming it in ``groups``.

        Raises KeyError at once for a group ``[groups]`` does not declare."""
        members = self._settings.groups[name]
        self.summary()
        return self._members(name, members)

    def _members(self, name: str, members: list[str]) -> Iterator[Contact]:
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
            raise _changed(path)

        with CsvFile(path, changed) as book:
            if book.stamp != self._stamps.get(path) or book.header is None:
                raise _changed(path)
            checker = RowChecker(book.header, self._settings.groups)
            for row in book:
                yield checker, row

    @staticmethod
    def _contact(path: Path, checked: Checked) -> Contact:
        if checked.contact is None:
            raise _changed(path)
        return checked.contact


def _stamp(path: Path) -> Stamp | None:
    try:
        return Stamp.of(os.stat(path))
    except OSError:
        return None
