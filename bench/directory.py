"""The file loader: validate a CSV contact file of N lines, then stream it; time and peak RSS.

    python -m bench.directory [--lines 1000000]

Writes a CSV like an HR export (name, phone, email, groups; a Telegram chat id on one row in
five, an own ranking on one in ten; numbers of six countries, all distinct) and a config
declaring its groups empty, in a temporary directory. A fresh child process
(``python -m bench.directory --child CONFIG``) loads the settings, then runs
``Directory.validate()`` (the one pass that checks every line), then iterates
``Directory.contacts()`` (the second reading a broadcast or a queue makes), and reports
``ru_maxrss``: the peak of the whole process, imports included, with the RSS before the
validation to tell the loader's own growth apart, and the helper processes' (files from
4 MB are checked by one helper per spare core too). CPU seconds are printed besides the
wall-clock time: on a machine shared with other work, they are the steadier figure.
Target (issue 17): 1,000,000 lines validated in under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GROUPS = 8
_NUMBERS = (("+336", 8, 10_000_000), ("+1415", 7, 2_000_000), ("+447", 9, 400_000_000),
            ("+4915", 9, 100_000_000), ("+34", 9, 600_000_000), ("+3906", 8, 10_000_000))
_DOMAINS = ("example.com", "staff.example.org", "mail.example.net", "example.co.uk")


def write_file(path: Path, lines: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "phone", "email", "telegram", "order", "groups"])
        for i in range(lines):
            prefix, digits, base = _NUMBERS[i % len(_NUMBERS)]
            writer.writerow([
                f"emp{i:07d}",
                f"{prefix}{base + i // len(_NUMBERS):0{digits}d}",
                f"first.last{i}@{_DOMAINS[i % len(_DOMAINS)]}",
                700_000_000 + i if i % 5 == 0 else "",
                "sms;email" if i % 10 == 0 else "",
                f"all;site-{i % GROUPS}",
            ])


def write_config(path: Path, csv_name: str) -> None:
    groups = "\n".join(f'"site-{n}" = []' for n in range(GROUPS))
    path.write_text(f'[groups]\nall = []\n{groups}\n\n[directory]\nfiles = ["{csv_name}"]\n')


def _rss_mb() -> float:
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu() -> tuple[float, float]:
    mine = resource.getrusage(resource.RUSAGE_SELF)
    helpers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime, helpers.ru_utime + helpers.ru_stime


def child(config: Path) -> None:
    from config import load_settings
    from config.directory import Directory

    directory = Directory(load_settings(config))
    before = _rss_mb()
    cpu = _cpu()
    started = time.perf_counter()
    summary = directory.validate()
    validate_seconds = time.perf_counter() - started
    after = _cpu()
    validate_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    streamed = sum(1 for _ in directory.contacts())
    stream_seconds = time.perf_counter() - started
    print(json.dumps({
        "lines": summary.contacts, "streamed": streamed, "all": summary.groups["all"],
        "processes": summary.files[0].processes,
        "validate_seconds": validate_seconds, "stream_seconds": stream_seconds,
        "cpu_seconds": after[0] - cpu[0], "helper_cpu_seconds": after[1] - cpu[1],
        "before_mb": before, "validate_peak_mb": validate_peak,
        "helper_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def measure(lines: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-directory-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        write_file(workdir / "staff.csv", lines)
        written = time.perf_counter() - started
        write_config(workdir / "backchannel.toml", "staff.csv")
        size = (workdir / "staff.csv").stat().st_size
        out = subprocess.run(
            [sys.executable, "-m", "bench.directory", "--child", str(workdir / "backchannel.toml")],
            check=True, capture_output=True, text=True,
        ).stdout
    data: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    if data["lines"] != lines or data["streamed"] != lines or data["all"] != lines:
        raise RuntimeError(f"the loader saw {data} for {lines} lines")
    return {**data, "write_seconds": written, "file_mb": size / 2**20}


def report(lines: int, data: dict[str, float]) -> str:
    cpu = data["cpu_seconds"] + data["helper_cpu_seconds"]
    helpers = int(data["processes"]) - 1
    return "\n".join([
        f"file: {lines:,} lines, {data['file_mb']:.0f} MB (written in"
        f" {data['write_seconds']:.1f} s); {os.cpu_count()} cores",
        f"validate: {data['validate_seconds']:.1f} s,"
        f" {lines / data['validate_seconds']:,.0f} lines/s, with {helpers} helper process"
        f"{'' if helpers == 1 else 'es'}; CPU {cpu:.1f} s ({cpu * 1e6 / lines:.0f} µs a line:"
        f" {data['cpu_seconds']:.1f} here, {data['helper_cpu_seconds']:.1f} in helpers)",
        f"  peak RSS {data['validate_peak_mb']:.0f} MB ({data['before_mb']:.0f} MB before:"
        f" imports and settings); each helper {data['helper_peak_mb']:.0f} MB at most",
        f"stream contacts(): {data['stream_seconds']:.1f} s,"
        f" {lines / data['stream_seconds']:,.0f} contacts/s;"
        f" peak RSS after both {data['peak_mb']:.0f} MB",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
    else:
        print(report(args.lines, measure(args.lines)))
