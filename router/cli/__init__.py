"""Command-line interface. Exit status: 0 all reached, 1 some unreached, 2 bad input."""

from __future__ import annotations

from router.cli import messaging, sandbox
from router.cli.app import app

__all__ = ["app", "main", "messaging", "sandbox"]


def main() -> None:
    app()
