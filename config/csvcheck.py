"""A big contact file checked by several processes, each taking every n-th row.

Checking a row's numbers and mailboxes is pure Python, about 60 µs: a million lines take a
minute on one core. The process validating the book reads the whole file itself (the header,
names defined twice, group sizes) and checks one share of the rows; helpers
(``python -m config.csvcheck``, fresh interpreters: no state, thread or ``__main__`` of the
caller is copied into them) check the other shares and send back what they found. A helper
that fails only costs time: the caller then checks its share itself.
"""

from __future__ import annotations

import heapq
import json
import os
import subprocess
import sys
from array import array
from collections.abc import Collection, Sequence
from pathlib import Path

from config.csvcontacts import RowChecker
from config.csvfile import CsvFile, Problem, Stamp

LISTED_LINES = 200
"""Bad lines listed in one report; the rest are counted."""
_ROOT = Path(__file__).resolve().parent.parent


class Findings:
    """What one reader found wrong in one file, added in line order: every bad line's
    number (4 bytes each), and the problems of the first :data:`LISTED_LINES` of them."""

    __slots__ = ("lines", "problems")

    def __init__(self) -> None:
        self.lines = array("L")
        self.problems: list[Problem] = []

    def add(self, problem: Problem) -> None:
        line = problem.line
        assert line is not None, "a problem of the whole file is not a line's"
        if not self.lines or self.lines[-1] != line:
            self.lines.append(line)
        if len(self.lines) <= LISTED_LINES:
            self.problems.append(problem)

    @classmethod
    def merged(cls, parts: Sequence[Findings]) -> Findings:
        """Several readers' findings in one file as one: each line once, in order."""
        if len(parts) == 1:
            return parts[0]
        whole = cls()
        for line in heapq.merge(*(part.lines for part in parts)):
            if not whole.lines or whole.lines[-1] != line:
                whole.lines.append(line)
        last = whole.lines[LISTED_LINES - 1] if len(whole.lines) >= LISTED_LINES else None
        whole.problems = sorted(
            (p for part in parts for p in part.problems
             if last is None or (p.line is not None and p.line <= last)),
            key=lambda p: (p.line or 0, p.column or 0),
        )
        return whole

    def to_json(self) -> dict[str, object]:
        return {"lines": self.lines.tolist(),
                "problems": [[p.line, p.column, p.field, p.text] for p in self.problems]}

    @classmethod
    def from_json(cls, data: dict[str, list[object]]) -> Findings:
        findings = cls()
        findings.lines = array("L", (int(str(line)) for line in data["lines"]))
        findings.problems = [Problem(*entry) for entry in data["problems"]]  # type: ignore[misc]
        return findings


def check_share(path: Path, groups: Collection[str], share: int,
                shares: int) -> tuple[Stamp | None, Findings]:
    """Check rows ``share``, ``share + shares``... of a file (counted from 0 after the
    header); the file's problems as a whole are its main reader's to report."""
    findings = Findings()
    with CsvFile(path, _ignore) as book:
        if book.header is not None:
            checker = RowChecker(book.header, groups)
            for index, row in enumerate(book):
                if index % shares == share:
                    for problem in checker.check(row, build=False).problems:
                        findings.add(problem)
    return book.stamp, findings


def helpers_for(size: int, parallel_from: int) -> int:
    """Helper processes worth starting for a file of ``size`` bytes: one per spare core
    (up to 7), none below ``parallel_from`` bytes (a helper takes about half a second to
    start)."""
    if size < parallel_from:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, 7))


class Helper:
    """One helper process checking one share of a file, started at once, read when done."""

    def __init__(self, path: Path, groups: Collection[str], share: int, shares: int) -> None:
        self._request = (path, sorted(groups), share, shares)
        self.answered = False
        """Whether the helper did its share (else the caller did)."""
        environment = dict(os.environ)
        # The caller may have found this package through its own sys.path.
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(_ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        request = {"path": str(path), "groups": sorted(groups), "share": share,
                   "shares": shares}
        try:
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "config.csvcheck", json.dumps(request)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=environment,
            )
        except OSError:
            self._process = None

    def result(self) -> tuple[Stamp | None, Findings]:
        """The share's findings: the helper's, or (if it failed) checked here and now."""
        if self._process is not None:
            out, _ = self._process.communicate()
            if self._process.returncode == 0:
                try:
                    answer = json.loads(out)
                    stamp = None if answer["stamp"] is None else Stamp(*answer["stamp"])
                    findings = Findings.from_json(answer["findings"])
                except (ValueError, KeyError, TypeError):
                    pass
                else:
                    self.answered = True
                    return stamp, findings
        path, groups, share, shares = self._request
        return check_share(path, groups, share, shares)

    def stop(self) -> None:
        """Give up on the helper (the caller is raising)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.communicate()


def _ignore(problem: Problem) -> None:
    """The main reader reports the file's own problems."""


def main() -> None:
    request = json.loads(sys.argv[1])
    stamp, findings = check_share(Path(request["path"]), request["groups"],
                                  request["share"], request["shares"])
    answer = {"stamp": None if stamp is None else [stamp.device, stamp.inode, stamp.size,
                                                   stamp.modified_ns],
              "findings": findings.to_json()}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
