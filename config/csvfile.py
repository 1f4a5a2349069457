"""One CSV contact file, read row by row: its header, each row's cells, the line it began on.

The file is read as bytes and decoded a line at a time, so that a line that is not UTF-8 (or
holds a NUL byte) is named by its number and reading carries on: one report lists every bad
line. Nothing is kept once a row has been handed on.
"""

from __future__ import annotations

import csv
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from config.channels import PHONE_CHANNELS

ADDRESS_COLUMNS = ("phone", *PHONE_CHANNELS, "telegram", "email")
"""The columns that carry an address: ``phone`` is shorthand for whatsapp, sms and voice."""
COLUMNS = ("name", *ADDRESS_COLUMNS, "order", "groups")
"""Every column a contact file may have, as a contact has fields (``groups`` besides)."""

_BOM = b"\xef\xbb\xbf"
_SNIFF = 8192
_LINE_LIMIT = 2**20
_LONG_DIGITS = re.compile(r"\d{7,}")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a file: at a line (and a column, when one cell is to blame), or
    with the file as a whole (``line`` None)."""

    line: int | None
    column: int | None
    field: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the file was when it was opened: checked before it is read again."""

    device: int
    inode: int
    size: int
    modified_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> Stamp:
        return cls(status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Header:
    line: int
    index: Mapping[str, int]
    """Known column name to its position (from 0) in each row."""
    width: int


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    """The line the row begins on (a quoted field may carry it over several)."""
    cells: list[str]


Report = Callable[[Problem], None]


def shown(text: str, limit: int = 40) -> str:
    """A cell's text, safe to print in an error: control characters escaped, long runs of
    digits (a phone number in the wrong column) masked, cut at ``limit`` characters."""
    text = _LONG_DIGITS.sub(lambda m: "•" * (len(m.group(0)) - 2) + m.group(0)[-2:], text)
    text = CONTROL.sub(_escaped, text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"'{text}'"


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class CsvFile:
    """Reads one contact file; every problem goes to ``report`` and reading carries on.

    ``with CsvFile(path, report) as book``: ``book.header`` is the parsed header (None when
    the file cannot be read as a contact file: the reason was reported), then iterating
    ``book`` gives each non-blank row after it.
    """

    def __init__(self, path: Path, report: Report) -> None:
        self.path = path
        self._report = report
        self._handle: IO[bytes] | None = None
        self._flagged: list[tuple[int, str]] = []
        """Lines that were not UTF-8 or held a NUL byte, in order, until their row is read."""
        self._records: Iterator[Row] = iter(())
        self.stamp: Stamp | None = None
        self.header: Header | None = None

    def __enter__(self) -> CsvFile:
        handle = self._open()
        if handle is None:
            return self
        self._handle = handle
        self.stamp = Stamp.of(os.fstat(handle.fileno()))
        if self._sniff(handle.read(_SNIFF)):
            handle.seek(0)
            self._records = self._rows(handle)
            self.header = self._read_header()
        return self

    def _open(self) -> IO[bytes] | None:
        """The file, if it is a regular one: a FIFO would block until a writer came, a
        device might never end."""
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            self._report(Problem(None, None, None, "no such file"))
            return None
        except OSError as exc:
            self._report(Problem(None, None, None, f"cannot read: {exc.strerror}"))
            return None
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            os.close(descriptor)
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a file")  # fmt: skip
            self._report(Problem(None, None, None, f"is {kind}, not a CSV file"))
            return None
        return os.fdopen(descriptor, "rb")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.close()

    def __iter__(self) -> Iterator[Row]:
        return self._records

    def _sniff(self, start: bytes) -> bool:
        """Refuse at once what is plainly not a CSV text file, rather than line by line."""
        problem = None
        if start.startswith(b"PK\x03\x04"):
            problem = "is a zip file (an .xlsx workbook?), not CSV: export it as CSV UTF-8"
        elif start.startswith((b"\xff\xfe", b"\xfe\xff")):
            problem = "is UTF-16 text: save it as CSV UTF-8"
        elif b"\x00" in start.partition(b"\n")[0] or start.count(b"\x00") * 100 > len(start):
            # A stray NUL in a row is that line's problem; many, or one in the header, are
            # a binary file's (an .xls workbook, UTF-32 text).
            problem = "is a binary file, not CSV text: export it as CSV UTF-8"
        elif b"\r" in start and b"\n" not in start:
            problem = "has old Mac line ends (CR only): save it with LF or CRLF line ends"
        elif len(start) < _SNIFF and not start.removeprefix(_BOM).strip():
            problem = "is empty: its first line must be a header naming the columns"
        if problem is not None:
            self._report(Problem(None, None, None, problem))
        return problem is None

    def _read_header(self) -> Header | None:
        first = next(self._records, None)
        if first is None:
            # Only blank lines, or rows already reported as unreadable.
            self._report(Problem(None, None, None, "has no header line naming the columns"))
            return None
        return parse_header(first, self._report)

    def _lines(self, handle: IO[bytes]) -> Iterator[str]:
        number = 0
        while raw := handle.readline(_LINE_LIMIT):
            number += 1
            if len(raw) == _LINE_LIMIT and not raw.endswith(b"\n"):
                # Read in bounded pieces: one line may be the whole of a huge file.
                while (rest := handle.readline(_LINE_LIMIT)) and not rest.endswith(b"\n"):
                    pass
                self._flagged.append((number, "is longer than 1 MiB: is this a CSV file?"))
                yield "\n"
                continue
            if number == 1:
                raw = raw.removeprefix(_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                # Carry on with the line as best decoded, so that quoting stays in step.
                text = raw.decode("utf-8", "replace")
                self._flagged.append((number, "is not UTF-8 text: save the file as CSV UTF-8"))
            if "\x00" in text:
                self._flagged.append((number, "holds a NUL byte"))
            yield text

    def _rows(self, handle: IO[bytes]) -> Iterator[Row]:
        reader = csv.reader(self._lines(handle), strict=True, skipinitialspace=True)
        end = 0
        while True:
            start = end + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                end = reader.line_num
                self._drop_flags(end)
                self._report(Problem(start, None, None, _csv_problem(str(exc))))
                continue
            end = reader.line_num
            if self._flagged and self._flagged[0][0] <= end:
                self._report_flags(start, end, cells)
                continue
            if cells and (len(cells) > 1 or cells[0].strip()):
                yield Row(start, cells)

    def _drop_flags(self, end: int) -> None:
        while self._flagged and self._flagged[0][0] <= end:
            self._flagged.pop(0)

    def _report_flags(self, start: int, end: int, cells: list[str]) -> None:
        texts = []
        while self._flagged and self._flagged[0][0] <= end:
            texts.append(self._flagged.pop(0)[1])
        column = next((i for i, cell in enumerate(cells, 1) if "\ufffd" in cell or "\x00" in cell),
                      None)
        for text in dict.fromkeys(texts):
            self._report(Problem(start, column, None, text))


def _csv_problem(error: str) -> str:
    """The csv module's complaint, in the user's words (its own never quote the data)."""
    if "expected after" in error:
        return "a quoted field must end at its closing quote: write a quote inside as \"\""
    if "end of data" in error:
        return "a quote opened on this line is never closed"
    if "field larger than field limit" in error:
        return "a field is too long (a quote never closed?)"
    if "new-line character" in error:
        return "a line ends with a lone carriage return: save the file with LF or CRLF ends"
    return "cannot be read as CSV"


def parse_header(row: Row, report: Report) -> Header | None:
    """The columns a header names; None (reported) when it is not a header a row can be
    read against: no ``name`` column, or no address column."""
    names = [cell.strip() for cell in row.cells]
    if "name" not in names:
        # Likely a first contact rather than a header: its cells are not repeated.
        report(Problem(row.line, None, None, "is not a header: the first line must name the "
                       "columns, `name` among them (name,phone,email,groups for example)"))
        return None
    index: dict[str, int] = {}
    for position, name in enumerate(names):
        if name not in COLUMNS:
            what = shown(name) if name else "a column with no name"
            report(Problem(row.line, position + 1, None,
                           f"unknown column {what}; the columns are {', '.join(COLUMNS)}"))
        elif name in index:
            report(Problem(row.line, position + 1, name, "is a second column of that name"))
        else:
            index[name] = position
    if not any(column in index for column in ADDRESS_COLUMNS):
        report(Problem(row.line, None, None, "names no address column: give at least one of "
                       + ", ".join(ADDRESS_COLUMNS)))
        return None
    return Header(row.line, index, len(names))
