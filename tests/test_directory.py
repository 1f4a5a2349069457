"""Contact books from CSV files (``[directory] files``): one report naming every bad line and
none of the good ones, the config book's own rules, the union with ``[contacts]`` and
``[groups]``, and reading that streams rather than holds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from config import ConfigError, Contact, Settings, load_settings, make_contact
from config.csvcheck import LISTED_LINES, helpers_for
from config.directory import Directory
from config.settings import settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent
NEVER = 10**15
"""``parallel_from`` that keeps every file in one process."""


@pytest.fixture(autouse=True)
def no_backchannel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("BACKCHANNEL_"):
            monkeypatch.delenv(name)


def book(tmp_path: Path, files: Mapping[str, str | bytes], **sections: Any) -> Settings:
    """Settings over ``files`` (written into ``tmp_path``; text as is, line ends included)."""
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        (tmp_path / name).write_bytes(data)
    config: dict[str, Any] = {
        "contacts": {"alice": {"phone": "+33612345678"}, "bob": {"email": "bob@example.com"}},
        "groups": {"ops": ["alice"], "all": [], "oncall": ["bob"]},
        "directory": {"files": list(files)},
    }
    config.update(sections)
    return settings_from_mapping(config, source="bc.toml", base_dir=tmp_path)


def report_of(settings: Settings, **options: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        Directory(settings, **options).validate()
    return str(caught.value)


PLACE = re.compile(r"^  (?P<path>/[^:]+):(?P<line>\d+)(?::(?P<column>\d+))?: ")


def places(report: str) -> set[tuple[str, int, int | None]]:
    """(file name, line, column) of every line the report names."""
    found = set()
    for text in report.splitlines():
        if match := PLACE.match(text):
            column = match["column"]
            found.add((Path(match["path"]).name, int(match["line"]),
                       None if column is None else int(column)))
    return found


# -- the acceptance: every kind of bad line, in one report, among tricky good ones ---------

STAFF = (
    "\ufeffname,phone,email,telegram,order,groups\r\n"          # 1  BOM, CRLF
    "ann,+33612345601,ann@example.com,,,ops\r\n"                # 2  good
    '"Martin, Jean",+33 6 12 34 56 02,"jean@example.com",,"sms; email",ops;all\r\n'  # 3 good
    '"multi line",+33612345603,,,,"ops;\r\nall"\r\n'           # 4-5 good: a quoted newline
    "bad-number,+3361234,,,,ops\r\n"                            # 6
    "national,0612345678,,,,ops\r\n"                            # 7  no country code
    "bad-email,,not-an-email,,,ops\r\n"                         # 8
    "bad-chat,,,@alice,,ops\r\n"                                # 9  a @username
    "no-address,,,,,ops\r\n"                                    # 10
    "unknown-group,+33612345604,,,,opz\r\n"                     # 11
    "group-twice,+33612345605,,,,ops;ops\r\n"                   # 12
    "bad-order,+33612345606,,,fax,ops\r\n"                      # 13
    "order-twice,+33612345607,,,sms;sms,ops\r\n"                # 14
    ",+33612345608,,,,ops\r\n"                                  # 15 no name
    "too-many,+33612345609,,,,ops,extra\r\n"                    # 16
    "ann,+33612345610,,,,ops\r\n"                               # 17 ann again
    "alice,+33612345611,,,,ops\r\n"                             # 18 alice is in [contacts]
    'bad-quote,"+336"12345612,,,,ops\r\n'                       # 19
    "nul\x00byte,+33612345613,,,,ops\r\n"                       # 20
).encode() + b"caf\xe9,+33612345614,,,,ops\r\n" + (            # 21 Latin-1, not UTF-8
    '"line\nbreak",+33612345615,,,,ops\r\n'                     # 22-23 a name over two lines
    + "x" * 201 + ",+33612345616,,,,ops\r\n"                    # 24 a name too long
    "shifted,+33612345617,,,,+33612345618\r\n"                  # 25 a number as a group
    "wa,whatsapp:+33612345619,,,,\r\n"                          # 26 good, in no group
    "  padded  ,  +33612345620  ,,,,ops\r\n"                   # 27 good: spaces trimmed
    "\r\n"                                                      # 28 blank: skipped
    "last,+33612345621,,,,all"                                  # 29 good, no final line end
).encode()
CLIENTS = (
    "name,phone,whatsapp,email,groups\n"                        # 1
    "carl,+14155552671,,carl@example.com,all\n"                 # 2  good
    "ann,+14155552672,,,all\n"                                  # 3  ann, a third time
    "zed,+14155552673,+1415555,,all\n"                          # 4  a bad WhatsApp number
    "old-mac,+14155552674,,,all\rnext,+14155552675,,,all\n"     # 5  a lone carriage return
    "dora,+14155552676,,dora@example.com,all\n"                 # 6  good
)
ODD_HEADER = (
    "name,phone,mobile,phone,\n"                                # 1 unknown, twice, unnamed
    "erin,+33612345630,,,\n"                                    # 2 good (read by name, phone)
    "fay,+33612345631,x,+1,\n"                                  # 3 good: unknown columns unread
)
NO_HEADER = "dave,+33612345699,dave@example.com\nemma,+33612345698,emma@example.com\n"
UNCLOSED = "name,email\ngil,gil@example.com\nhal,\"hal@example.com\nivy,ivy@example.com\n"

BAD_PLACES = {
    ("staff.csv", 6, 2), ("staff.csv", 7, 2), ("staff.csv", 8, 3), ("staff.csv", 9, 4),
    ("staff.csv", 10, 1), ("staff.csv", 11, 6), ("staff.csv", 12, 6), ("staff.csv", 13, 5),
    ("staff.csv", 14, 5), ("staff.csv", 15, 1), ("staff.csv", 16, 7), ("staff.csv", 17, 1),
    ("staff.csv", 18, 1), ("staff.csv", 19, None), ("staff.csv", 20, 1), ("staff.csv", 21, 1),
    ("staff.csv", 22, 1), ("staff.csv", 24, 1), ("staff.csv", 25, 6),
    ("clients.csv", 3, 1), ("clients.csv", 4, 3), ("clients.csv", 5, None),
    ("odd.csv", 1, 3), ("odd.csv", 1, 4), ("odd.csv", 1, 5),
    ("noheader.csv", 1, None), ("unclosed.csv", 3, None),
}  # fmt: skip
BAD_LINES = len({(name, line) for name, line, _ in BAD_PLACES})
FILES: dict[str, str | bytes] = {
    "staff.csv": STAFF, "clients.csv": CLIENTS, "odd.csv": ODD_HEADER,
    "noheader.csv": NO_HEADER, "unclosed.csv": UNCLOSED,
    "empty.csv": b"\xef\xbb\xbf\r\n", "header-only.csv": "name,email\n",
    "sheet.xlsx": b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)),
}
NIGHT = {"ops": ["alice"], "all": [], "oncall": ["bob"], "night": []}


def test_one_report_names_every_bad_line_and_none_of_the_good(tmp_path: Path) -> None:
    report = report_of(book(tmp_path, FILES, groups=NIGHT))
    lines = report.splitlines()

    assert BAD_LINES == 25
    assert lines[0] == "contact directory: 25 bad lines, 3 unusable files, 1 empty group"
    assert places(report) == BAD_PLACES  # so no good line (2-5, 26, 27, 29...) is named
    staff, clients = tmp_path / "staff.csv", tmp_path / "clients.csv"
    expected = [
        f"  {staff}:6:2: phone: is not a valid phone number for its country code",
        f"  {staff}:7:2: phone: must be in international format, starting with + and the"
        " country code",
        f"  {staff}:8:3: email: is not a valid email address",
        f"  {staff}:9:4: telegram: must be a numeric Telegram chat id (a bot cannot message a"
        " @username)",
        f"  {staff}:10:1: has no address: give at least one of phone, telegram, email",
        f"  {staff}:11:6: groups: 'opz' is not a group declared in [groups]",
        f"  {staff}:12:6: groups: names the group 'ops' twice",
        f"  {staff}:13:5: order: 'fax' is not a channel (whatsapp, telegram, sms, voice, email)",
        f"  {staff}:14:5: order: names a channel twice",
        f"  {staff}:15:1: name: is required",
        f"  {staff}:16:7: has 7 fields, the header 6",
        f"  {staff}:17:1: name: 'ann' is defined twice: first at {staff}:2",
        f"  {staff}:18:1: name: 'alice' is defined twice: first in the config file's [contacts]",
        f"  {staff}:19: a quoted field must end at its closing quote: write a quote inside as \"\"",
        f"  {staff}:20:1: holds a NUL byte",
        f"  {staff}:21:1: is not UTF-8 text: save the file as CSV UTF-8",
        f"  {staff}:22:1: name: must not hold control characters or line breaks",
        f"  {staff}:24:1: name: is longer than 200 characters",
        f"  {staff}:25:6: groups: '+•••••••••18' is not a group declared in [groups]",
        f"  {clients}:3:1: name: 'ann' is defined twice: first at {staff}:2",
        f"  {clients}:4:3: whatsapp: is not a valid phone number for its country code",
        f"  {clients}:5: a line ends with a lone carriage return: save the file with LF or"
        " CRLF ends",
        f"  {tmp_path / 'odd.csv'}:1:3: unknown column 'mobile'; the columns are name, phone,"
        " whatsapp, sms, voice, telegram, email, order, groups",
        f"  {tmp_path / 'odd.csv'}:1:4: phone: is a second column of that name",
        f"  {tmp_path / 'odd.csv'}:1:5: unknown column a column with no name; the columns are"
        " name, phone, whatsapp, sms, voice, telegram, email, order, groups",
        f"  {tmp_path / 'noheader.csv'}:1: is not a header: the first line must name the"
        " columns, `name` among them (name,phone,email,groups for example)",
        f"  {tmp_path / 'unclosed.csv'}:3: a quote opened on this line is never closed",
        f"  {tmp_path / 'empty.csv'}: is empty: its first line must be a header naming the"
        " columns",
        f"  {tmp_path / 'header-only.csv'}: has a header but no contacts",
        f"  {tmp_path / 'sheet.xlsx'}: is a zip file (an .xlsx workbook?), not CSV: export it"
        " as CSV UTF-8",
        "  groups.night: is empty: no contact in [contacts] or in the files belongs to it",
    ]
    assert sorted(lines[1:]) == sorted(expected)
    # Never a full phone number, whatever column it was found in.
    assert not re.search(r"\d{7,}", report)


def test_helper_processes_give_the_same_report(tmp_path: Path) -> None:
    settings = book(tmp_path, FILES, groups=NIGHT)
    assert report_of(settings, parallel_from=0) == report_of(settings, parallel_from=NEVER)


def test_a_failed_helper_costs_time_not_findings(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings = book(tmp_path, FILES, groups=NIGHT)
    serial = report_of(settings, parallel_from=NEVER)
    false = shutil.which("false")
    assert false is not None
    for broken in (str(tmp_path / "no-such-python"), false):
        monkeypatch.setattr(sys, "executable", broken)
        assert report_of(settings, parallel_from=0) == serial
    good = book(tmp_path, {"staff.csv": "name,phone,groups\nann,+33612345601,all\n"})
    summary = Directory(good, parallel_from=0).validate()
    assert [file.processes for file in summary.files] == [1]


def test_helpers_check_their_share_of_a_good_file(tmp_path: Path) -> None:
    rows = "".join(f"p{i},+3361234{i:04d},,{'ops;' if i % 3 else ''}all\n" for i in range(300))
    settings = book(tmp_path, {"staff.csv": "name,phone,email,groups\n" + rows})
    serial = Directory(settings, parallel_from=NEVER).validate()
    shared = Directory(settings, parallel_from=0).validate()
    size = (tmp_path / "staff.csv").stat().st_size
    assert [f.processes for f in shared.files] == [1 + helpers_for(size, 0)]
    assert (shared.contacts, dict(shared.groups)) == (serial.contacts, dict(serial.groups))
    assert dict(serial.groups) == {"ops": 1 + 200, "all": 300, "oncall": 1}
    assert serial.contacts == 302


def test_every_bad_line_is_counted_and_the_first_few_hundred_listed(tmp_path: Path) -> None:
    rows = "".join(f"p{i},\n" for i in range(LISTED_LINES + 50))
    settings = book(tmp_path, {"staff.csv": "name,phone\n" + rows}, groups={})
    for parallel_from in (NEVER, 0):
        report = report_of(settings, parallel_from=parallel_from)
        lines = report.splitlines()
        assert lines[0] == f"contact directory: {LISTED_LINES + 50} bad lines"
        assert len(lines) == 1 + LISTED_LINES + 1
        assert lines[-1] == "  and 50 more bad lines"
        assert {line for _, line, _ in places(report)} == set(range(2, LISTED_LINES + 2))


# -- as strict as the config file's book -------------------------------------------------

CASES: list[dict[str, Any]] = [
    {"phone": "+33612345678"}, {"phone": "0612345678"}, {"phone": "+3361234"},
    {"phone": "00 33 6 12 34 56 78"}, {"phone": "+33 6 12 34 56 78", "sms": "+14155552671"},
    {"whatsapp": "whatsapp:+33612345678"}, {"voice": "+33140000000", "order": ["voice"]},
    {"telegram": "123456789"}, {"telegram": "-1001234567890"}, {"telegram": "@bob"},
    {"telegram": "12a"}, {"telegram": "²"}, {"telegram": "--5"},
    {"email": "alice@example.com"}, {"email": "Alice@EXAMPLE.com"}, {"email": "alice"},
    {"email": "alice@localhost"}, {"phone": "+33612345678", "order": ["sms", "email"]},
    {"phone": "+33612345678", "order": ["sms", "sms"]}, {"phone": "+33612345678", "order": ["fax"]},
    {"sms": "+33612345678", "email": "bad"}, {},
]  # fmt: skip
COLUMNS = ("name", "phone", "whatsapp", "sms", "voice", "telegram", "email", "order")


@pytest.mark.parametrize("fields", CASES, ids=lambda fields: repr(fields))
def test_a_row_gets_the_verdict_its_contact_gets_in_the_config_file(
    tmp_path: Path, fields: dict[str, Any]
) -> None:
    try:
        expected: Contact | None = make_contact("x", **fields)
    except ValueError:
        expected = None
    cells = {"name": "x", **{k: ";".join(v) if isinstance(v, list) else v
                             for k, v in fields.items()}}
    row = ",".join(str(cells.get(column, "")) for column in COLUMNS)
    settings = book(tmp_path, {"people.csv": ",".join(COLUMNS) + "\n" + row + "\n"},
                    groups={})
    directory = Directory(settings)
    if expected is None:
        with pytest.raises(ConfigError, match=r"people\.csv:2:"):
            directory.validate()
    else:
        directory.validate()
        assert directory.find("x") == expected


# -- the book: the config's and the files', once each -----------------------------------

UNION = {
    "staff.csv": "name,phone,email,groups\n"
                 "carl,+33612345601,,ops;all\n"
                 "dana,,dana@example.com,all\n"
                 "erin,+33612345603,,ops\n",
    "clients.csv": "groups,telegram,name\n"
                   "all,1001,fred\n"
                   "ops ; all,1002,gina\n",
}  # fmt: skip


def names(contacts: Any) -> list[str]:
    return [contact.name for contact in contacts]


def test_the_book_is_the_union_of_the_config_and_the_files(tmp_path: Path) -> None:
    settings = book(tmp_path, UNION)
    directory = Directory(settings)
    summary = directory.validate()

    assert names(directory.contacts()) == ["alice", "bob", "carl", "dana", "erin", "fred", "gina"]
    assert names(directory.group("ops")) == ["alice", "carl", "erin", "gina"]
    assert names(directory.group("all")) == ["carl", "dana", "fred", "gina"]
    assert names(directory.group("oncall")) == ["bob"]
    assert summary.contacts == 7
    assert dict(summary.groups) == {"ops": 4, "all": 4, "oncall": 1}
    assert [(f.path, f.contacts) for f in summary.files] == [
        (tmp_path / "staff.csv", 3), (tmp_path / "clients.csv", 2)]
    assert [directory.group_size(g) for g in ("ops", "all", "oncall")] == [4, 4, 1]
    with pytest.raises(KeyError):
        directory.group("nobody")
    with pytest.raises(KeyError):
        directory.group_size("nobody")


def test_find_looks_in_the_config_then_the_files(tmp_path: Path) -> None:
    settings = book(tmp_path, UNION)
    directory = Directory(settings)
    assert directory.find("alice") is settings.contacts["alice"]
    assert directory.find("dana") == make_contact("dana", email="dana@example.com")
    assert directory.find("gina") == make_contact("gina", telegram=1002)
    assert directory.find("nobody") is None


def test_reading_a_bad_book_raises_its_report_at_once(tmp_path: Path) -> None:
    directory = Directory(book(tmp_path, {"staff.csv": "name,phone,groups\nx,+331,all\n"}))
    for read in (directory.contacts, lambda: directory.group("ops"),
                 lambda: directory.find("x"), lambda: directory.group_size("ops")):
        with pytest.raises(ConfigError, match=r"staff\.csv:2:2: phone: "):
            read()


def test_without_files_the_book_is_the_config_s(tmp_path: Path) -> None:
    settings = book(tmp_path, {}, groups={"ops": ["alice"]})
    directory = Directory(settings)
    assert directory.validate().contacts == 2
    assert names(directory.contacts()) == ["alice", "bob"]
    assert names(directory.group("ops")) == ["alice"]


def test_a_group_declared_empty_must_be_filled_from_the_files(tmp_path: Path) -> None:
    # Without files, the config file alone says it (as before).
    with pytest.raises(ConfigError, match=r"groups\.all: is empty"):
        settings_from_mapping({"contacts": {"a": {"phone": "+33612345678"}},
                               "groups": {"all": []}})
    settings = book(tmp_path, {"staff.csv": "name,phone\ncarl,+33612345601\n"})
    assert report_of(settings).splitlines() == [
        "contact directory: 1 empty group",
        "  groups.all: is empty: no contact in [contacts] or in the files belongs to it",
    ]


def test_a_file_named_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"directory\.files: names a file twice"):
        book(tmp_path, {}, directory={"files": ["a.csv", "a.csv"]})


# -- files: where they are, when they are read -----------------------------------------------


def test_files_are_relative_to_the_config_and_not_opened_by_loading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "etc"
    (home / "data").mkdir(parents=True)
    (home / "data" / "staff.csv").write_text("name,phone,groups\ncarl,+33612345601,all\n")
    config = home / "backchannel.toml"
    config.write_text('[groups]\nall = []\n\n[directory]\nfiles = ["data/staff.csv",'
                      ' "data/later.csv"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = load_settings(config)  # data/later.csv does not exist: nobody looked
    assert settings.directory.files == (home / "data" / "staff.csv", home / "data" / "later.csv")
    report = report_of(settings)
    assert report.splitlines()[1:] == [f"  {home / 'data' / 'later.csv'}: no such file"]
    (home / "data" / "later.csv").write_text("name,phone\ndana,+33612345602\n")
    directory = Directory(settings)
    assert directory.validate().groups == {"all": 1}
    assert names(directory.contacts()) == ["carl", "dana"]


def test_the_environment_can_name_the_files(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_DIRECTORY__FILES", "staff.csv, /srv/clients.csv")
    settings = book(tmp_path, {})
    assert settings.directory.files == (tmp_path / "staff.csv", Path("/srv/clients.csv"))


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "plain").write_text("name\n")
    os.mkfifo(tmp_path / "fifo.csv")  # opened plainly, it would wait for a writer for ever
    files = ["folder.csv", "plain/under.csv", "fifo.csv", "/dev/zero"]
    if os.geteuid() != 0:  # root reads whatever the mode says
        (tmp_path / "locked.csv").write_text("name,phone\ncarl,+33612345601\n")
        (tmp_path / "locked.csv").chmod(0)
        files.append("locked.csv")
    report = report_of(book(tmp_path, {}, directory={"files": files}, groups={}))
    assert report.splitlines()[1:] == [
        f"  {tmp_path / 'folder.csv'}: is a directory, not a CSV file",
        f"  {tmp_path / 'plain' / 'under.csv'}: cannot read: Not a directory",
        f"  {tmp_path / 'fifo.csv'}: is a FIFO, not a CSV file",
        "  /dev/zero: is a device, not a CSV file",
        *([f"  {tmp_path / 'locked.csv'}: cannot read: Permission denied"]
          if len(files) == 5 else []),
    ]


def test_what_is_not_a_csv_text_file_is_refused_whole(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "mac.csv": "name,phone\rcarl,+33612345601\r",
        "utf16.csv": "name,phone\ncarl,+33612345601\n".encode("utf-16"),
        "sheet.xls": b"\xd0\xcf\x11\xe0" + bytes(64) + b"name,phone\n",
        "header-nul.csv": b"name,ph\x00one\ncarl,+33612345601\n",
        "huge-line.csv": b"name,phone\ncarl," + b"9" * (3 * 2**20) + b"\ndana,+33612345602\n",
    }
    report = report_of(book(tmp_path, files, groups={}))
    assert report.splitlines() == [
        "contact directory: 1 bad line, 4 unusable files",
        f"  {tmp_path / 'mac.csv'}: has old Mac line ends (CR only): save it with LF or CRLF"
        " line ends",
        f"  {tmp_path / 'utf16.csv'}: is UTF-16 text: save it as CSV UTF-8",
        f"  {tmp_path / 'sheet.xls'}: is a binary file, not CSV text: export it as CSV UTF-8",
        f"  {tmp_path / 'header-nul.csv'}: is a binary file, not CSV text: export it as CSV"
        " UTF-8",
        f"  {tmp_path / 'huge-line.csv'}:2: is longer than 1 MiB: is this a CSV file?",
    ]


def test_a_file_changed_after_its_check_is_not_read(tmp_path: Path) -> None:
    settings = book(tmp_path, UNION)
    directory = Directory(settings)
    directory.validate()
    with (tmp_path / "clients.csv").open("a") as handle:
        handle.write("all,1003,hugo\n")
    with pytest.raises(ConfigError, match=r"clients\.csv: changed since it was checked"):
        list(directory.contacts())
    with pytest.raises(ConfigError, match=r"clients\.csv: changed since it was checked"):
        directory.find("nobody")
    assert Directory(settings).validate().contacts == 8


# -- streaming ------------------------------------------------------------------------------


def test_a_big_file_is_streamed_not_held(tmp_path: Path) -> None:
    lines = 200_000
    with (tmp_path / "big.csv").open("w") as handle:
        handle.write("name,telegram,groups\n")
        handle.writelines(f"p{i},{100_000 + i},all\n" for i in range(lines))
    directory = Directory(book(tmp_path, {}, directory={"files": ["big.csv"]}),
                          parallel_from=NEVER)

    summary = directory.validate()  # its peak is bench/directory.py's to measure
    tracemalloc.start()
    try:
        count = sum(1 for _ in directory.contacts())
        streamed_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        members = sum(1 for _ in directory.group("all"))
        group_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (summary.contacts, count, members) == (lines + 2, lines + 2, lines)
    # 200,000 Contacts held at once would take well over 60 MB.
    assert streamed_peak < 2 * 2**20, streamed_peak
    assert group_peak < 2 * 2**20, group_peak


def test_the_benchmark_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.directory", "--lines", "500"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "validate:" in done.stdout and "lines/s" in done.stdout and "peak RSS" in done.stdout
